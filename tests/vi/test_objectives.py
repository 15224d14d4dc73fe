"""The objective library and ``ppl.marginal`` against exact answers.

Monte Carlo means are compared with closed forms or exhaustive enumeration at a
tolerance of 4 standard errors computed from the same draws (fixed seeds).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import multivariate_normal, norm

import ppl

objectives = ppl.objectives
K_SE = 4.0  # tolerance, in standard errors
NUM_DRAWS = 4000

# ---------------------------------------------------------------- conjugate model
# z ~ Normal(mu, 1), y_i ~ Normal(z, 0.5); guide z ~ Normal(loc, exp(log_scale)).

Y = jnp.array([0.9, 1.3, 1.1, 0.4])
NOISE = 0.5
PARAMS = {"mu": jnp.asarray(0.2), "loc": jnp.asarray(0.3), "log_scale": jnp.asarray(-0.5)}


def model(y):
    mu = numpyro.param("mu", 0.0)
    z = numpyro.sample("z", dist.Normal(mu, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(z, NOISE), obs=y)


def guide(y):
    loc = numpyro.param("loc", 0.0)
    log_scale = numpyro.param("log_scale", 0.0)
    numpyro.sample("z", dist.Normal(loc, jnp.exp(log_scale)))


def exact_elbo(params, y=Y):
    """``E_q[log p(y, z) - log q(z)]`` in closed form."""
    m, s2 = params["loc"], jnp.exp(2 * params["log_scale"])
    log_prior = -0.5 * math.log(2 * math.pi) - 0.5 * ((m - params["mu"]) ** 2 + s2)
    log_lik = jnp.sum(
        -0.5 * math.log(2 * math.pi * NOISE**2) - ((y - m) ** 2 + s2) / (2 * NOISE**2)
    )
    entropy = 0.5 * jnp.log(2 * math.pi * math.e * s2)
    return log_prior + log_lik + entropy


def exact_log_evidence(params, y=Y):
    """``log p(y)``: ``y ~ Normal(mu 1, noise² I + 1 1ᵀ)``."""
    n = y.shape[0]
    cov = NOISE**2 * jnp.eye(n) + jnp.ones((n, n))
    return multivariate_normal.logpdf(y, params["mu"] * jnp.ones(n), cov)


def exact_posterior(mu, y=Y):
    """Mean and log standard deviation of ``p(z | y)``."""
    precision = 1.0 + y.shape[0] / NOISE**2
    return (mu + float(jnp.sum(y)) / NOISE**2) / precision, -0.5 * math.log(precision)


def draws(objective, params, *args, n=NUM_DRAWS, seed=0):
    """``n`` independent (value, gradient w.r.t. params) estimates, as numpy arrays."""
    keys = jax.random.split(jax.random.key(seed), n)

    def one(key):
        value, grads = objective.value_and_grad_estimate(key, params, *args)
        return value, grads[0]

    values, grads = jax.jit(jax.vmap(one))(keys)
    return np.asarray(values, np.float64), {k: np.asarray(v, np.float64) for k, v in grads.items()}


def assert_mean_close(samples, exact, what=""):
    samples = np.asarray(samples, np.float64)
    se = samples.std(ddof=1) / math.sqrt(samples.shape[0])
    err = abs(samples.mean() - float(exact))
    assert err <= K_SE * max(se, 1e-6), f"{what}: mean {samples.mean()} vs {exact} (se {se})"


def standard_error(samples):
    return float(np.std(samples, ddof=1) / math.sqrt(len(samples)))


# ---------------------------------------------------------------- identities


def test_iwae_with_one_particle_is_the_elbo():
    key = jax.random.key(3)
    v_elbo, (g_elbo, _) = objectives.elbo(model, guide).value_and_grad_estimate(key, PARAMS, Y)
    v_iwae, (g_iwae, _) = objectives.iwae(model, guide, num_particles=1).value_and_grad_estimate(
        key, PARAMS, Y
    )
    np.testing.assert_allclose(v_iwae, v_elbo, rtol=1e-6, atol=1e-6)
    for name in PARAMS:
        np.testing.assert_allclose(g_iwae[name], g_elbo[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_particles", [1, 5])
def test_renyi_alpha_zero_is_iwae(num_particles):
    key = jax.random.key(4)
    v_iwae, (g_iwae, _) = objectives.iwae(
        model, guide, num_particles=num_particles
    ).value_and_grad_estimate(key, PARAMS, Y)
    renyi = objectives.renyi(model, guide, alpha=0.0, num_particles=num_particles)
    v_renyi, (g_renyi, _) = renyi.value_and_grad_estimate(key, PARAMS, Y)
    np.testing.assert_allclose(v_renyi, v_iwae, rtol=1e-6, atol=1e-6)
    for name in PARAMS:
        np.testing.assert_allclose(g_renyi[name], g_iwae[name], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- conjugate model


def test_elbo_value_and_gradient_are_unbiased():
    values, grads = draws(objectives.elbo(model, guide), PARAMS, Y, seed=10)
    assert_mean_close(values, exact_elbo(PARAMS), "ELBO value")
    exact_grads = jax.grad(exact_elbo)(PARAMS)
    for name in PARAMS:
        assert_mean_close(grads[name], exact_grads[name], f"ELBO gradient {name}")


def test_iwae_increases_with_particles_and_stays_below_the_log_evidence():
    log_evidence = float(exact_log_evidence(PARAMS))
    means, ses = [], []
    for i, k in enumerate((1, 2, 5, 20)):
        values, _ = draws(objectives.iwae(model, guide, num_particles=k), PARAMS, Y, seed=20 + i)
        means.append(values.mean())
        ses.append(standard_error(values))
        # An upper bound is one-sided: the mean may not exceed log p(y) beyond noise.
        assert values.mean() <= log_evidence + K_SE * ses[-1], (k, values.mean(), log_evidence)
    for i in range(len(means) - 1):  # each step up in K is a significant increase here
        gap = means[i + 1] - means[i]
        assert gap > K_SE * math.hypot(ses[i], ses[i + 1]), (means, ses)
    assert log_evidence - means[-1] < 0.1  # K = 20 is close to log p(y) here (guide is wide)


def test_dreg_matches_iwae_in_expectation_with_lower_variance():
    k = 5
    _, g_iwae = draws(objectives.iwae(model, guide, num_particles=k), PARAMS, Y, seed=30)
    _, g_dreg = draws(objectives.dreg(model, guide, num_particles=k), PARAMS, Y, seed=31)
    for name in PARAMS:
        diff = g_dreg[name].mean() - g_iwae[name].mean()
        se = math.hypot(standard_error(g_dreg[name]), standard_error(g_iwae[name]))
        assert abs(diff) <= K_SE * se, (name, g_dreg[name].mean(), g_iwae[name].mean(), se)
    # Measured at these parameters: variance ratio dreg/iwae about 0.29 for log_scale and
    # 0.37 for loc; the model parameter's estimator is the same (ratio about 1).
    for name in ("log_scale", "loc"):
        ratio = g_dreg[name].var() / g_iwae[name].var()
        assert ratio < 0.6, (name, ratio)


def test_dreg_and_iwae_are_unbiased_for_the_iwae_gradient_where_it_is_known():
    # With the guide equal to the posterior every weight is p(y): the IWAE bound has its
    # maximum over the guide there, so its guide gradient is zero; the model gradient
    # is that of log p(y).
    loc, log_scale = exact_posterior(float(PARAMS["mu"]))
    params = {**PARAMS, "loc": jnp.asarray(loc), "log_scale": jnp.asarray(log_scale)}
    exact_mu = jax.grad(exact_log_evidence)(params)["mu"]
    for seed, objective in enumerate(
        (
            objectives.iwae(model, guide, num_particles=5),
            objectives.dreg(model, guide, num_particles=5),
        )
    ):
        values, grads = draws(objective, params, Y, n=1000, seed=40 + seed)
        np.testing.assert_allclose(values, float(exact_log_evidence(params)), atol=2e-4)
        assert_mean_close(grads["mu"], exact_mu, "model gradient")
        assert_mean_close(grads["loc"], 0.0, "guide gradient loc")
        assert_mean_close(grads["log_scale"], 0.0, "guide gradient log_scale")


# ---------------------------------------------------------------- hierarchical families
# family: u ~ Normal(loc, 0.15), z ~ Normal(u, exp(log_scale)), so z ~ Normal(loc, √(0.15² + s²));
# its parameters put it near the posterior (mean 0.88, sd 0.24), where the estimates
# vary little and the bounds are clearly separated.

U_SCALE = 0.15
FAMILY_PARAMS = {"mu": jnp.asarray(0.2), "loc": jnp.asarray(0.8), "log_scale": jnp.log(0.2)}


def family(y):
    loc = numpyro.param("loc", 0.0)
    log_scale = numpyro.param("log_scale", 0.0)
    u = numpyro.sample("u", dist.Normal(loc, U_SCALE))
    numpyro.sample("z", dist.Normal(u, jnp.exp(log_scale)))


def exact_hvi(params, y=Y):
    """HVI with r(u | z) = q(u): ``E[log p(y, z)] + E[-log q(z | u)]``, closed form."""
    s2 = jnp.exp(2 * params["log_scale"])
    marginal_sd = jnp.sqrt(U_SCALE**2 + s2)
    gaussian = {**params, "log_scale": jnp.log(marginal_sd)}
    # E_q[log p(y, z)] is the ELBO of the Gaussian marginal minus its entropy.
    cross = exact_elbo(gaussian, y) - 0.5 * jnp.log(2 * math.pi * math.e * marginal_sd**2)
    return cross + 0.5 * jnp.log(2 * math.pi * math.e * s2)


def test_hvi_value_and_gradient_are_unbiased():
    values, grads = draws(objectives.hvi(model, family, ["z"]), FAMILY_PARAMS, Y, seed=50)
    assert_mean_close(values, exact_hvi(FAMILY_PARAMS), "HVI value")
    exact_grads = jax.grad(exact_hvi)(FAMILY_PARAMS)
    for name in FAMILY_PARAMS:
        assert_mean_close(grads[name], exact_grads[name], f"HVI gradient {name}")


def test_hierarchical_bounds_are_ordered():
    # HVI <= IWHVI(m = 5) <= ELBO of the exact marginal, and IWHVI <= DIWHVI <= log p(y).
    params = FAMILY_PARAMS
    marginal_sd = jnp.sqrt(U_SCALE**2 + jnp.exp(2 * params["log_scale"]))
    exact_marginal_elbo = float(exact_elbo({**params, "log_scale": jnp.log(marginal_sd)}))
    bounds = [
        objectives.hvi(model, family, ["z"]),
        objectives.iwhvi(model, family, ["z"], inner_particles=5),
        objectives.diwhvi(model, family, ["z"], num_particles=5, inner_particles=5),
    ]
    stats = []
    for seed, objective in enumerate(bounds):
        values, _ = draws(objective, params, Y, seed=60 + seed)
        stats.append((values.mean(), standard_error(values)))
    (hvi, se_h), (iwhvi, se_i), (diwhvi, se_d) = stats
    assert iwhvi - hvi > K_SE * math.hypot(se_h, se_i), stats
    assert iwhvi <= exact_marginal_elbo + K_SE * se_i, (iwhvi, exact_marginal_elbo)
    assert diwhvi - iwhvi > K_SE * math.hypot(se_i, se_d), stats
    assert diwhvi <= float(exact_log_evidence(params)) + K_SE * se_d


# ---------------------------------------------------------------- VIMCO, Bernoulli latent
# b ~ Bernoulli(0.3), y ~ Normal(mu (2b - 1), 1); guide b ~ Bernoulli(logits=theta).

B_PARAMS = {"mu": jnp.asarray(0.8), "theta": jnp.asarray(0.4)}
B_Y = jnp.asarray(0.6)


def bernoulli_model(y):
    mu = numpyro.param("mu", 0.5)
    b = numpyro.sample("b", dist.Bernoulli(probs=0.3))
    numpyro.sample("y", dist.Normal(mu * (2 * b - 1), 1.0), obs=y)


def bernoulli_guide(y):
    theta = numpyro.param("theta", 0.0)
    numpyro.sample("b", dist.Bernoulli(logits=theta))


def exact_iwae_bernoulli(params, num_particles, y=B_Y):
    """The IWAE bound by enumerating all 2^K joint values of the K particles."""
    guide_dist = dist.Bernoulli(logits=params["theta"])
    total = 0.0
    for values in itertools.product([0.0, 1.0], repeat=num_particles):
        b = jnp.asarray(values)
        log_q = guide_dist.log_prob(b)
        log_p = dist.Bernoulli(probs=0.3).log_prob(b) + norm.logpdf(y, params["mu"] * (2 * b - 1))
        bound = logsumexp(log_p - log_q) - math.log(num_particles)
        total = total + jnp.exp(jnp.sum(log_q)) * bound
    return total


def test_vimco_is_unbiased_for_the_iwae_bound_and_its_gradient():
    k = 3
    values, grads = draws(
        objectives.vimco(bernoulli_model, bernoulli_guide, num_particles=k), B_PARAMS, B_Y
    )
    assert_mean_close(values, exact_iwae_bernoulli(B_PARAMS, k), "VIMCO value")
    exact_grads = jax.grad(exact_iwae_bernoulli)(B_PARAMS, k)
    for name in B_PARAMS:
        assert_mean_close(grads[name], exact_grads[name], f"VIMCO gradient {name}")


# ---------------------------------------------------------------- reweighted wake-sleep


def test_wake_phases_move_only_their_own_parameters():
    for objective, fixed, moved in (
        (objectives.wake_p(model, guide, num_particles=5), ("loc", "log_scale"), ("mu",)),
        (objectives.wake_q(model, guide, num_particles=5), ("mu",), ("loc", "log_scale")),
    ):
        _, grads = draws(objective, PARAMS, Y, n=200, seed=70)
        for name in fixed:
            np.testing.assert_array_equal(grads[name], 0.0)
        for name in moved:
            assert np.all(np.isfinite(grads[name])) and np.any(grads[name] != 0.0)


def exact_bernoulli_posterior_logit(mu, y=B_Y):
    """``logit p(b = 1 | y)`` of ``bernoulli_model``."""
    return math.log(0.3) + norm.logpdf(y, mu, 1.0) - math.log(0.7) - norm.logpdf(y, -mu, 1.0)


def bernoulli_log_evidence(params, y=B_Y):
    mu = params["mu"]
    return jnp.logaddexp(
        math.log(0.3) + norm.logpdf(y, mu, 1.0), math.log(0.7) + norm.logpdf(y, -mu, 1.0)
    )


WAKE_CASES = {
    # (model, guide, params at the exact posterior, data, guide names, evidence)
    "discrete guide": (
        bernoulli_model,
        bernoulli_guide,
        {"mu": B_PARAMS["mu"], "theta": exact_bernoulli_posterior_logit(B_PARAMS["mu"])},
        B_Y,
        ("theta",),
        bernoulli_log_evidence,
    ),
    "continuous guide": (
        model,
        guide,
        dict(zip(("mu", "loc", "log_scale"), map(jnp.asarray, (0.2, *exact_posterior(0.2))))),
        Y,
        ("loc", "log_scale"),
        exact_log_evidence,
    ),
}


@pytest.mark.parametrize("case", sorted(WAKE_CASES))
def test_wake_q_gradient_is_zero_at_the_exact_posterior(case):
    # Its gradient is the SIR (self-normalized) estimate of -grad KL(p || q) with the
    # draws held fixed: zero when q is the posterior. A score term through the draws
    # (reinforce, the default for the discrete guide) gave -0.179 +- 0.004 here.
    model_, guide_, params, y, guide_names, _ = WAKE_CASES[case]
    _, grads = draws(objectives.wake_q(model_, guide_, num_particles=4), params, y, n=20_000)
    for name in guide_names:
        assert_mean_close(grads[name], 0.0, f"wake_q gradient {name} ({case})")


@pytest.mark.parametrize("case", sorted(WAKE_CASES))
def test_wake_p_gradient_is_the_fisher_identity_at_the_exact_posterior(case):
    # With q the posterior the weights are equal, so the model gradient is
    # E_p(z|x)[grad log p(x, z)] = grad log p(x); the guide's parameters get none.
    model_, guide_, params, y, guide_names, log_evidence = WAKE_CASES[case]
    _, grads = draws(objectives.wake_p(model_, guide_, num_particles=4), params, y, n=20_000)
    assert_mean_close(grads["mu"], jax.grad(log_evidence)(params, y)["mu"], f"wake_p ({case})")
    for name in guide_names:
        np.testing.assert_array_equal(grads[name], 0.0)


def test_wake_phases_refuse_strategies_that_would_bias_them():
    for wake in (objectives.wake_p, objectives.wake_q):
        with pytest.raises(ValueError, match="holds the draws fixed"):
            wake(bernoulli_model, bernoulli_guide, num_particles=4, strategies={"b": ppl.enum})
        with pytest.raises(ValueError, match="holds the draws fixed"):
            wake(bernoulli_model, bernoulli_guide, num_particles=4, strategies=ppl.reinforce)
        wake(bernoulli_model, bernoulli_guide, num_particles=4, strategies={"b": ppl.detached})


def test_reweighted_wake_sleep_brings_the_guide_to_the_posterior():
    wake_p = objectives.wake_p(model, guide, num_particles=10)
    wake_q = objectives.wake_q(model, guide, num_particles=10)
    optimizer = optax.adam(optax.exponential_decay(0.05, transition_steps=300, decay_rate=0.1))

    def loss(params, key):
        key_p, key_q = jax.random.split(key)
        keys_p, keys_q = jax.random.split(key_p, 16), jax.random.split(key_q, 16)
        p_term = jnp.mean(jax.vmap(wake_p, (0, None, None))(keys_p, params, Y))
        q_term = jnp.mean(jax.vmap(wake_q, (0, None, None))(keys_q, params, Y))
        return -(p_term + q_term)

    @jax.jit
    def train(key, params):
        def step(carry, key):
            params, state = carry
            updates, state = optimizer.update(jax.grad(loss)(params, key), state, params)
            return (optax.apply_updates(params, updates), state), None

        carry = (params, optimizer.init(params))
        (params, _), _ = jax.lax.scan(step, carry, jax.random.split(key, 300))
        return params

    start = {name: jnp.asarray(0.0) for name in PARAMS}
    final = train(jax.random.key(80), start)
    loc, log_scale = exact_posterior(float(final["mu"]))
    # wake-p climbs log p(y): its maximum over mu is the mean of y.
    assert abs(float(final["mu"]) - float(jnp.mean(Y))) < 0.1
    assert abs(float(final["loc"]) - loc) < 0.1
    assert abs(float(final["log_scale"]) - log_scale) < 0.15


# ---------------------------------------------------------------- ppl.marginal
# family: u ~ Normal(a, 0.5), z ~ Normal(u, 1), so z ~ Normal(a, √1.25). (A prior on u
# as wide as q(z | u) would give the reciprocal estimator infinite variance.)

SIMPLE_U_SCALE = 0.5
M_SCALE = math.sqrt(SIMPLE_U_SCALE**2 + 1.0)
Z0 = jnp.asarray(0.7)


def simple_family():
    a = numpyro.param("a", 0.0)
    u = numpyro.sample("u", dist.Normal(a, SIMPLE_U_SCALE))
    numpyro.sample("z", dist.Normal(u, 1.0))


def g(z):
    """A normalized density, so ``∫ g = 1``."""
    return jnp.exp(norm.logpdf(z, 0.5, 0.7))


@pytest.mark.parametrize("particles", [1, 5])
def test_marginal_density_is_unbiased(particles):
    family_marginal = ppl.marginal(simple_family, ["z"], num_particles=particles)

    @ppl.expectation
    def density_estimate(params, z):
        return jnp.exp(ppl.density(family_marginal, {"z": z}, params=params))

    def exact(params, z):
        return jnp.exp(norm.logpdf(z, params["a"], M_SCALE))

    params = {"a": jnp.asarray(0.2)}
    values, grads = draws(density_estimate, params, Z0, seed=90 + particles)
    assert_mean_close(values, exact(params, Z0), "marginal density")
    assert_mean_close(grads["a"], jax.grad(exact)(params, Z0)["a"], "marginal density gradient")


@pytest.mark.parametrize("particles", [1, 5])
def test_marginal_sim_gives_an_unbiased_reciprocal_density(particles):
    # E_{z ~ q}[g(z) / q̂(z)] = ∫ g = 1 when 1/q̂(z) is unbiased for 1/q(z), for any a.
    family_marginal = ppl.marginal(simple_family, ["z"], num_particles=particles)

    @ppl.expectation
    def weighted(params):
        trace = ppl.sim(family_marginal, params=params)
        return jnp.exp(-trace.log_density) * g(trace.choices["z"])

    values, grads = draws(weighted, {"a": jnp.asarray(0.2)}, seed=95 + particles)
    assert_mean_close(values, 1.0, "reciprocal density")
    assert_mean_close(grads["a"], 0.0, "gradient of a constant")


# ---------------------------------------------------------------- errors


def test_marginal_with_a_site_the_program_does_not_sample():
    family_marginal = ppl.marginal(simple_family, ["w"])

    @ppl.expectation
    def simulate(params):
        return ppl.sim(family_marginal, params=params).log_density

    @ppl.expectation
    def score(params):
        return ppl.density(family_marginal, {"w": jnp.asarray(0.0)}, params=params)

    params = {"a": jnp.asarray(0.0)}
    for objective in (simulate, score):
        with pytest.raises(ValueError, match=r"'w'.*not sampled"):
            objective.estimate(jax.random.key(0), params)
    with pytest.raises(ValueError, match="not sampled"):
        objectives.hvi(model, family, ["w"]).estimate(jax.random.key(0), PARAMS, Y)


@pytest.mark.parametrize("num_particles", [0, 1])
def test_vimco_needs_two_particles(num_particles):
    with pytest.raises(ValueError, match="num_particles >= 2"):
        objectives.vimco(bernoulli_model, bernoulli_guide, num_particles=num_particles)


def test_single_particle_objectives_accept_continuation_strategies():
    def model():
        numpyro.sample("b", dist.Bernoulli(0.3))

    def guide():
        numpyro.sample("b", dist.Bernoulli(logits=numpyro.param("logit", 0.0)))

    params = {"logit": jnp.asarray(0.2)}
    q = jax.nn.sigmoid(0.2)
    exact = q * (jnp.log(0.3) - jnp.log(q)) + (1 - q) * (jnp.log(0.7) - jnp.log(1 - q))
    for strategy in (ppl.enum, ppl.mvd, ppl.leave_one_out(3)):
        objective = ppl.objectives.elbo(model, guide, strategies={"b": strategy})
        values = jax.vmap(objective.estimate, (0, None))(
            jax.random.split(jax.random.key(0), 2000), params
        )
        assert abs(float(values.mean()) - float(exact)) < 4 * float(values.std()) / 44.7 + 1e-5


# ---------------------------------------------------------------- uniform arguments


def test_strategies_as_a_function_of_the_arguments_is_the_mapping_it_returns():
    """A function of (params, *args) gives exactly the estimate of the mapping it
    returns at those arguments, value and gradient, for every particle objective."""

    def chosen(params, y):
        return {"b": ppl.baseline(ppl.reinforce, params["mu"] * y)}

    mapping = chosen(B_PARAMS, B_Y)
    key = jax.random.key(3)
    for make in (
        lambda s: objectives.elbo(bernoulli_model, bernoulli_guide, strategies=s),
        lambda s: objectives.elbo(bernoulli_model, bernoulli_guide, num_particles=3, strategies=s),
        lambda s: objectives.iwae(bernoulli_model, bernoulli_guide, num_particles=3, strategies=s),
        lambda s: objectives.renyi(
            bernoulli_model, bernoulli_guide, alpha=0.5, num_particles=3, strategies=s
        ),
    ):
        by_function = make(chosen).value_and_grad_estimate(key, B_PARAMS, B_Y)
        by_mapping = make(mapping).value_and_grad_estimate(key, B_PARAMS, B_Y)
        jax.tree.map(np.testing.assert_array_equal, by_function, by_mapping)


def test_a_params_dependent_baseline_is_learned():
    """``learn=True`` on a baseline computed from the parameters gives that parameter
    the gradient ``(f - b) · db/dv``: the baseline moves towards the rest's value."""

    def chosen(params, y):
        return {"b": ppl.baseline(ppl.reinforce, params["v"], learn=True)}

    objective = objectives.elbo(bernoulli_model, bernoulli_guide, strategies=chosen)
    params = {**B_PARAMS, "v": jnp.asarray(-50.0)}  # far below any log weight here
    _, grads = draws(objective, params, B_Y, n=200, seed=5)
    assert np.all(grads["v"] > 0.0)


def test_bad_strategies_argument_names_what_it_accepts():
    objective = objectives.elbo(bernoulli_model, bernoulli_guide, strategies="reinforce")
    with pytest.raises(TypeError, match="strategies must be a strategy, a mapping"):
        objective(jax.random.key(0), B_PARAMS, B_Y)


def test_rws_is_both_wake_phases_from_one_draw():
    """With the same key, rws's value and gradient are wake_p's plus wake_q's."""
    rws = objectives.rws(model, guide, num_particles=5)
    wake_p = objectives.wake_p(model, guide, num_particles=5)
    wake_q = objectives.wake_q(model, guide, num_particles=5)
    for seed in range(3):
        key = jax.random.key(seed)
        value, (grads, _) = rws.value_and_grad_estimate(key, PARAMS, Y)
        value_p, (grads_p, _) = wake_p.value_and_grad_estimate(key, PARAMS, Y)
        value_q, (grads_q, _) = wake_q.value_and_grad_estimate(key, PARAMS, Y)
        np.testing.assert_allclose(value, value_p + value_q, rtol=1e-6)
        for name in PARAMS:
            np.testing.assert_allclose(grads[name], grads_p[name] + grads_q[name], rtol=1e-6)
    with pytest.raises(ValueError, match="holds the draws fixed"):
        objectives.rws(bernoulli_model, bernoulli_guide, num_particles=4, strategies=ppl.enum)


def test_fixed_strategy_objectives_refuse_others_also_from_a_function():
    with pytest.raises(ValueError, match="vimco: .*leave strategies out"):
        objectives.vimco(bernoulli_model, bernoulli_guide, num_particles=3, strategies=ppl.enum)
    with pytest.raises(ValueError, match="dreg: .*draws every site by reparam"):
        objectives.dreg(model, guide, num_particles=3, strategies={"z": ppl.reinforce})
    objectives.vimco(bernoulli_model, bernoulli_guide, num_particles=3, strategies=ppl.detached)
    objectives.dreg(model, guide, num_particles=3, strategies=ppl.reparam)
    late = objectives.wake_q(
        bernoulli_model, bernoulli_guide, num_particles=3, strategies=lambda p, y: ppl.reinforce
    )
    with pytest.raises(ValueError, match="holds the draws fixed"):
        late(jax.random.key(0), B_PARAMS, B_Y)


@pytest.mark.parametrize("construct", ["marginal", "normalize"])
def test_particles_keyword_is_deprecated_for_num_particles(construct):
    make = {
        "marginal": lambda **kw: ppl.marginal(simple_family, ["z"], **kw),
        "normalize": lambda **kw: ppl.normalize(model, guide, **kw),
    }[construct]
    with pytest.warns(DeprecationWarning, match=f"{construct}\\(particles=...\\) is deprecated"):
        old = make(particles=3)
    assert old.num_particles == make(num_particles=3).num_particles == 3
