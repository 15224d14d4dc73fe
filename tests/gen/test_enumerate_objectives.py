"""Models with summed-out discrete sites in the HVI family and in ppl.comparison.

Each objective's estimates are compared with the same objective written by hand in
plain JAX, with the discrete sites summed out by brute force (logsumexp over the
components): values and reparameterized gradients, within standard errors.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.contrib.funsor import config_enumerate

import ppl
import ppl.comparison
from tests.gen.test_enumerate import LOCS, LOGITS, X, gmm_exact
from tests.gen.test_enumerate import gmm as gmm_plain

PARAMS = {"logits": LOGITS, "scale": jnp.log(0.8), "m": LOCS + 0.1}
SPREAD, NOISE = 0.3, 0.2  # the family: locs = m + SPREAD u + NOISE eps, u ~ N(0, I)
gmm = config_enumerate(gmm_plain)  # the mixture with its components c summed out


def family(x):
    """A hierarchical family: auxiliary u, kept locs | u."""
    u = numpyro.sample("u", dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    m = numpyro.param("m", jnp.zeros(3))
    numpyro.sample("locs", dist.Normal(m + SPREAD * u, NOISE).to_event(1))


def by_hand(params, key, num_particles, inner_particles):
    """One estimate of IWAE(num_particles) over the IWHVI(inner_particles) marginal.

    ``log (1/K) Σ_k exp(log p(x, z_k) - log q̂(z_k))`` with ``z_k = m + SPREAD u_k1 +
    NOISE eps_k`` and ``q̂(z) = (1/M) Σ_i q(z | u_ki)``, ``u_k2..u_kM ~ N(0, I)``
    (conditional importance sampling), all reparameterized.
    """
    key_u, key_eps = jax.random.split(key)
    u = jax.random.normal(key_u, (num_particles, inner_particles, 3))
    eps = jax.random.normal(key_eps, (num_particles, 3))
    z = params["m"] + SPREAD * u[:, 0] + NOISE * eps
    log_q = dist.Normal(params["m"] + SPREAD * u, NOISE).to_event(1).log_prob(z[:, None])
    log_q_hat = jax.nn.logsumexp(log_q, axis=1) - jnp.log(inner_particles)
    log_p = jax.vmap(gmm_exact, (0, None, None, None))(
        z, params["logits"], jnp.exp(params["scale"]), X
    )
    return jax.nn.logsumexp(log_p - log_q_hat) - jnp.log(num_particles)


def _moments(values, grads):
    n = values.shape[0]
    mean = jax.tree.map(lambda a: np.mean(a, 0), (values, grads))
    se = jax.tree.map(lambda a: np.std(a, 0) / np.sqrt(n), (values, grads))
    return mean, se


OBJECTIVES = {
    "hvi": (lambda: ppl.objectives.hvi(gmm, family, ["locs"]), 1, 1),
    "iwhvi": (lambda: ppl.objectives.iwhvi(gmm, family, ["locs"], inner_particles=4), 1, 4),
    "diwhvi": (
        lambda: ppl.objectives.diwhvi(gmm, family, ["locs"], num_particles=3, inner_particles=4),
        3,
        4,
    ),
}


@pytest.mark.parametrize(
    "name",
    ["hvi", "iwhvi", pytest.param("diwhvi", marks=pytest.mark.slow)],  # diwhvi: 50 s loaded
)
def test_hvi_family_with_summed_out_sites_matches_the_brute_force_objective(name):
    make, num_particles, inner_particles = OBJECTIVES[name]
    objective = make()
    keys = jax.random.split(jax.random.key(0), 2000)
    values, (grads, _) = jax.jit(jax.vmap(objective.value_and_grad_estimate, (0, None, None)))(
        keys, PARAMS, X
    )
    (value, grad), (value_se, grad_se) = _moments(values, grads)

    one = functools.partial(by_hand, num_particles=num_particles, inner_particles=inner_particles)
    ref_keys = jax.random.split(jax.random.key(1), 20000)
    ref_values, ref_grads = jax.jit(jax.vmap(jax.value_and_grad(one), (None, 0)))(PARAMS, ref_keys)
    (ref_value, ref_grad), (ref_value_se, ref_grad_se) = _moments(ref_values, ref_grads)

    assert abs(value - ref_value) < 4.5 * np.hypot(value_se, ref_value_se)
    for site in PARAMS:
        bound = 4.5 * np.hypot(grad_se[site], ref_grad_se[site])
        np.testing.assert_array_less(np.abs(grad[site] - ref_grad[site]), bound, err_msg=site)


# --- ppl.compare ----------------------------------------------------------------------


@config_enumerate
def mixture_and_shift(x, y):
    """c per point summed out; w continuous with a conjugate observation y."""
    logits = numpyro.param("logits", jnp.zeros(3))
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(w, 1.0), obs=y)
    with numpyro.plate("data", x.shape[0]):
        c = numpyro.sample("c", dist.Categorical(logits=logits))
        numpyro.sample("x", dist.Normal(LOCS[c], 0.8), obs=x)


def shift_guide(x, y):
    scale = jnp.exp(numpyro.param("log_s", 0.0))
    numpyro.sample("w", dist.Normal(numpyro.param("w_loc", 0.0), scale))


def exact_elbo(params, x, y):
    """The ELBO in closed form: the mixture by logsumexp, the Gaussian part by moments."""
    m, s = params["w_loc"], jnp.exp(params["log_s"])
    terms = jax.nn.log_softmax(params["logits"]) + dist.Normal(LOCS, 0.8).log_prob(x[:, None])
    mixture = jnp.sum(jax.nn.logsumexp(terms, axis=-1))
    log_2pi = jnp.log(2 * jnp.pi)
    prior = -0.5 * log_2pi - 0.5 * (m**2 + s**2)
    likelihood = -0.5 * log_2pi - 0.5 * ((y - m) ** 2 + s**2)
    entropy = 0.5 * (log_2pi + 1.0) + jnp.log(s)
    return mixture + prior + likelihood + entropy


def test_compare_measures_estimators_of_an_objective_with_summed_out_sites():
    params = {
        "logits": jnp.array([0.3, -0.2, 0.1]),
        "w_loc": jnp.asarray(0.4),
        "log_s": jnp.asarray(-0.5),
    }
    y = jnp.asarray(1.3)
    make = ppl.comparison.from_objective(ppl.objectives.elbo, mixture_and_shift, shift_guide)
    result = ppl.compare(
        make,
        {"reparam": {"w": ppl.reparam}, "reinforce": {"w": ppl.reinforce}},
        jax.random.key(0),
        params,
        X,
        y,
        num_samples=2000,
        reference=jax.grad(exact_elbo)(params, X, y),
        timing_calls=2,
        progress=False,
    )
    exact = float(exact_elbo(params, X, y))
    for label, row in result.results.items():
        assert not row.biased, (label, row.bias_z)
        assert abs(row.value_mean - exact) < 4.5 * row.value_se, label
        # the summed-out part's gradient is exact in every estimate, whatever w's strategy
        assert row.parameter_variances["params['logits']"] == 0.0, label
