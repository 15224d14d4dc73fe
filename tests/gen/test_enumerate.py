"""Discrete model sites summed out in ppl.density: exact values, gradients, errors."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.contrib.control_flow import scan
from numpyro.contrib.funsor import config_enumerate, markov

import ppl

X = jnp.array([-2.1, -0.3, 0.4, 2.8, 3.3, 1.0])
LOCS = jnp.array([-2.0, 0.5, 3.0])
LOGITS = jnp.array([0.3, -0.2, 0.1])


def gmm(x):
    """3-component Gaussian mixture with the weights and scale as parameters."""
    logits = numpyro.param("logits", jnp.zeros(3))
    scale = numpyro.param("scale", 1.0, constraint=dist.constraints.positive)
    locs = numpyro.sample("locs", dist.Normal(jnp.zeros(3), 3.0).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        c = numpyro.sample("c", dist.Categorical(logits=logits))
        numpyro.sample("x", dist.Normal(locs[c], scale), obs=x)


def gmm_exact(locs, logits, scale, x):
    log_prior = dist.Normal(jnp.zeros(3), 3.0).to_event(1).log_prob(locs)
    terms = jax.nn.log_softmax(logits) + dist.Normal(locs, scale).log_prob(x[:, None])
    return log_prior + jnp.sum(jax.nn.logsumexp(terms, axis=-1))


PARAMS = {"logits": LOGITS, "scale": jnp.log(0.8)}


@pytest.mark.parametrize("how", ["argument", "config_enumerate", "infer"])
def test_gaussian_mixture_equals_logsumexp(how):
    model, names = gmm, ()
    if how == "argument":
        names = ("c",)
    elif how == "config_enumerate":
        model = config_enumerate(gmm)
    else:
        model = numpyro.handlers.infer_config(gmm, lambda site: {"enumerate": "parallel"})
    got = ppl.density(model, {"locs": LOCS}, X, params=PARAMS, enumerate=names)
    np.testing.assert_allclose(got, gmm_exact(LOCS, LOGITS, 0.8, X), rtol=1e-6)


def test_gradient_equals_grad_of_brute_force_sum():
    def marginal(params, locs):
        return ppl.density(gmm, {"locs": locs}, X, params=params, enumerate=["c"])

    def exact(params, locs):
        return gmm_exact(locs, params["logits"], jnp.exp(params["scale"]), X)

    got = jax.grad(marginal, argnums=(0, 1))(PARAMS, LOCS)
    want = jax.grad(exact, argnums=(0, 1))(PARAMS, LOCS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


def delta_guide(x):
    numpyro.sample("locs", dist.Delta(numpyro.param("m", jnp.zeros(3))).to_event(1))


OBJECTIVES = {
    "elbo": lambda model, guide: ppl.objectives.elbo(model, guide),
    "iwae": lambda model, guide: ppl.objectives.iwae(model, guide, num_particles=3),
    "renyi": lambda model, guide: ppl.objectives.renyi(model, guide, alpha=0.5, num_particles=2),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objectives_with_a_delta_guide_are_the_exact_marginal_under_jit(name):
    objective = OBJECTIVES[name](config_enumerate(gmm), delta_guide)
    params = {**PARAMS, "m": LOCS}
    key = jax.random.key(0)
    value, (grads, _) = jax.jit(objective.value_and_grad_estimate)(key, params, X)
    np.testing.assert_allclose(value, gmm_exact(LOCS, LOGITS, 0.8, X), rtol=1e-6)

    def exact(p):
        return gmm_exact(p["m"], p["logits"], jnp.exp(p["scale"]), X)

    want = jax.grad(exact)(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads, want)


def test_continuous_guide_sites_keep_their_strategy():
    def guide(x):
        loc = numpyro.param("m", jnp.zeros(3))
        numpyro.sample("locs", dist.Normal(loc, 0.1).to_event(1))

    objective = ppl.objectives.elbo(config_enumerate(gmm), guide)
    params = {**PARAMS, "m": LOCS}
    keys = jax.random.split(jax.random.key(1), 1000)
    grads = jax.jit(jax.vmap(objective.grad_estimate, (0, None, None)))(keys, params, X)[0]
    mean = jax.tree.map(lambda g: g.mean(0), grads)
    sem = jax.tree.map(lambda g: g.std(0) / np.sqrt(g.shape[0]), grads)

    def exact(p):  # E_q[log p(x, locs)] + H[q] by quadrature-free Monte Carlo identity
        eps = jax.random.normal(jax.random.key(2), (20000, 3))
        locs = p["m"] + 0.1 * eps
        log_q = dist.Normal(p["m"], 0.1).to_event(1).log_prob(locs)
        values = jax.vmap(gmm_exact, (0, None, None, None))(
            locs, p["logits"], jnp.exp(p["scale"]), X
        )
        return jnp.mean(values - log_q)

    want = jax.grad(exact)(params)
    for name in params:
        assert np.all(np.abs(mean[name] - want[name]) < 5 * sem[name] + 0.05), name


# --- HMMs in scan -------------------------------------------------------------------

K = 3
TRANS = jnp.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
INIT = jnp.array([0.5, 0.3, 0.2])
MEANS = jnp.array([-1.5, 0.0, 2.0])


def hmm(ys, params_in_model=False):
    trans, init, means = TRANS, INIT, MEANS
    if params_in_model:
        trans = numpyro.param("trans", TRANS, constraint=dist.constraints.simplex)
        means = numpyro.param("means", MEANS)
    z0 = numpyro.sample("z0", dist.Categorical(init), infer={"enumerate": "parallel"})

    def step(z, y):
        z = numpyro.sample("z", dist.Categorical(trans[z]))
        numpyro.sample("y", dist.Normal(means[z], 0.7), obs=y)
        return z, None

    scan(step, z0, ys)


def forward(ys, trans, init, means, scale=0.7):
    """Log-likelihood of the HMM above by the forward algorithm (z0 has no emission)."""
    alpha = jnp.log(init)
    for y in ys:
        alpha = jax.nn.logsumexp(alpha[:, None] + jnp.log(trans), axis=0)
        alpha = alpha + dist.Normal(means, scale).log_prob(y)
    return jax.nn.logsumexp(alpha)


def _sequence(key, length):
    z, ys = 0, []
    keys = jax.random.split(key, 2 * length)
    for t in range(length):
        z = int(jax.random.categorical(keys[2 * t], jnp.log(TRANS[z])))
        ys.append(float(MEANS[z] + 0.7 * jax.random.normal(keys[2 * t + 1])))
    return jnp.array(ys)


def test_hmm_in_scan_equals_forward_algorithm_float64():
    with jax.enable_x64(True):
        ys = _sequence(jax.random.key(3), 25).astype(jnp.float64)
        trans, init, means = (a.astype(jnp.float64) for a in (TRANS, INIT, MEANS))
        got = jax.jit(lambda ys: ppl.density(hmm, {}, ys))(ys)
        want = forward(ys, trans, init, means)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def hmm_emitting_first(ys):
    """The HMM of dynamax: z_1 ~ INIT emits y_1 too."""

    def step(z, y):
        z = numpyro.sample("z", dist.Categorical(TRANS[z]))
        numpyro.sample("y", dist.Normal(MEANS[z], 0.7), obs=y)
        return z, None

    z1 = numpyro.sample("z1", dist.Categorical(INIT), infer={"enumerate": "parallel"})
    numpyro.sample("y1", dist.Normal(MEANS[z1], 0.7), obs=ys[0])
    scan(step, z1, ys[1:])


@pytest.mark.slow  # importing dynamax (tensorflow_probability) alone takes seconds
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # tensorflow_probability's jax substrate
def test_hmm_equals_the_dynamax_forward_filter_float64():
    hidden_markov_model = pytest.importorskip("dynamax.hidden_markov_model")
    with jax.enable_x64(True):
        ys = _sequence(jax.random.key(10), 30).astype(jnp.float64)
        hmm_dynamax = hidden_markov_model.GaussianHMM(K, 1)
        params, _ = hmm_dynamax.initialize(
            jax.random.key(0),
            initial_probs=INIT.astype(jnp.float64),
            transition_matrix=TRANS.astype(jnp.float64),
            emission_means=MEANS.astype(jnp.float64)[:, None],
            emission_covariances=jnp.full((K, 1, 1), 0.49, jnp.float64),
        )
        want = hmm_dynamax.marginal_log_prob(params, ys[:, None])
        got = jax.jit(lambda ys: ppl.density(hmm_emitting_first, {}, ys))(ys)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_hmm_gradient_inside_an_expectation_equals_grad_of_forward():
    ys = _sequence(jax.random.key(4), 6)
    objective = ppl.objectives.elbo(functools.partial(hmm, params_in_model=True), lambda ys: None)
    unconstrained = {
        "trans": dist.biject_to(dist.constraints.simplex).inv(TRANS),
        "means": MEANS + 0.3,
    }
    value, (grads, _) = jax.jit(objective.value_and_grad_estimate)(
        jax.random.key(0), unconstrained, ys
    )

    def exact(p):
        trans = dist.biject_to(dist.constraints.simplex)(p["trans"])
        return forward(ys, trans, INIT, p["means"])

    np.testing.assert_allclose(value, exact(unconstrained), rtol=1e-5)
    want = jax.grad(exact)(unconstrained)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads, want)


def factorial_hmm(ys):
    """Two independent chains (2 and 3 states); y_t ~ Normal(a[u_t] + b[v_t], 0.5)."""
    trans_u = jnp.array([[0.9, 0.1], [0.3, 0.7]])
    trans_v = TRANS

    def step(carry, y):
        u, v = carry
        u = numpyro.sample("u", dist.Categorical(trans_u[u]))
        v = numpyro.sample("v", dist.Categorical(trans_v[v]))
        loc = jnp.array([-1.0, 1.0])[u] + MEANS[v]
        numpyro.sample("y", dist.Normal(loc, 0.5), obs=y)
        return (u, v), None

    scan(step, (0, 0), ys)


def test_factorial_hmm_equals_forward_on_the_product_chain():
    ys = _sequence(jax.random.key(5), 10)
    trans_u = jnp.array([[0.9, 0.1], [0.3, 0.7]])
    trans = jnp.kron(trans_u, TRANS)  # state (u, v) -> 3 u + v
    means = (jnp.array([-1.0, 1.0])[:, None] + MEANS[None, :]).reshape(-1)
    init = jnp.zeros(6).at[0].set(1.0)
    want = forward(ys, trans, init, means, scale=0.5)
    got = jax.jit(lambda ys: ppl.density(factorial_hmm, {}, ys))(ys)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def nested(y):
    """c per group, d per (group, item) depending on c; y depends on both."""
    with numpyro.plate("groups", 2, dim=-2):
        c = numpyro.sample("c", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
        with numpyro.plate("items", 3, dim=-1):
            probs = jnp.array([[0.6, 0.4, 0.0], [0.1, 0.2, 0.7]])[c.astype(jnp.int32)]
            d = numpyro.sample("d", dist.Categorical(probs), infer={"enumerate": "parallel"})
            loc = c + jnp.array([0.0, 1.0, -1.0])[d]
            numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)


def test_nested_plates_equal_the_brute_force_sum():
    y = jnp.array([[0.3, -0.8, 1.2], [2.0, 0.1, -0.5]])
    probs = jnp.array([[0.6, 0.4, 0.0], [0.1, 0.2, 0.7]])
    total = 0.0
    for g in range(2):
        per_c = []
        for c in (0, 1):
            log_c = jnp.log(jnp.array([0.7, 0.3])[c])
            for i in range(3):
                terms = [
                    jnp.log(probs[c, d])
                    + dist.Normal(c + [0.0, 1.0, -1.0][d], 1.0).log_prob(y[g, i])
                    for d in range(3)
                ]
                log_c = log_c + jax.nn.logsumexp(jnp.array(terms))
            per_c.append(log_c)
        total = total + jax.nn.logsumexp(jnp.array(per_c))
    got = jax.jit(lambda y: ppl.density(nested, {}, y))(y)
    np.testing.assert_allclose(got, total, rtol=1e-5)


def test_brute_force_over_the_joint_support():
    """Two enumerated sites outside plates, one depending on the other."""

    def model(y):
        a = numpyro.sample("a", dist.Categorical(jnp.array([0.2, 0.5, 0.3])))
        b = numpyro.sample("b", dist.Bernoulli(jnp.array([0.1, 0.6, 0.9])[a]))
        numpyro.sample("y", dist.Normal(a - 2.0 * b, 1.0), obs=y)

    y = 0.7
    terms = []
    for a, b in itertools.product(range(3), range(2)):
        log_p = jnp.log(jnp.array([0.2, 0.5, 0.3])[a])
        log_p += dist.Bernoulli(jnp.array([0.1, 0.6, 0.9])[a]).log_prob(b)
        terms.append(log_p + dist.Normal(a - 2.0 * b, 1.0).log_prob(y))
    got = ppl.density(model, {}, y, enumerate=["a", "b"])
    np.testing.assert_allclose(got, jax.nn.logsumexp(jnp.array(terms)), rtol=1e-6)


# --- fitting and decoding -----------------------------------------------------------


def test_fit_recovers_mixture_parameters():
    true_locs = jnp.array([-3.0, 0.0, 4.0])
    key_c, key_x = jax.random.split(jax.random.key(6))
    c = jax.random.categorical(key_c, jnp.log(jnp.array([0.3, 0.5, 0.2])), shape=(600,))
    x = true_locs[c] + 0.5 * jax.random.normal(key_x, (600,))

    def model(x):
        logits = numpyro.param("logits", jnp.zeros(3))
        locs = numpyro.param("locs", jnp.array([-1.0, 0.0, 1.0]))
        scale = numpyro.param("scale", 1.0, constraint=dist.constraints.positive)
        with numpyro.plate("data", x.shape[0]):
            c = numpyro.sample(
                "c", dist.Categorical(logits=logits), infer={"enumerate": "parallel"}
            )
            numpyro.sample("x", dist.Normal(locs[c], scale), obs=x)

    objective = ppl.objectives.elbo(model, lambda x: None)
    params = {
        "logits": jnp.zeros(3),
        "locs": jnp.array([-1.0, 0.0, 1.0]),
        "scale": jnp.asarray(0.0),
    }
    result = ppl.fit(
        jax.random.key(7),
        objective,
        params,
        x,
        optimizer=optax.adam(0.05),
        num_steps=600,
        progress=False,
    )
    fitted = result.params
    np.testing.assert_allclose(fitted["locs"], true_locs, atol=0.15)
    np.testing.assert_allclose(jnp.exp(fitted["scale"]), 0.5, atol=0.05)
    np.testing.assert_allclose(jax.nn.softmax(fitted["logits"]), [0.3, 0.5, 0.2], atol=0.06)


def test_infer_discrete_map_and_samples_in_a_mixture():
    got = ppl.infer_discrete(
        jax.random.key(0), gmm, {"locs": LOCS}, X, params=PARAMS, temperature=0, enumerate=["c"]
    )
    terms = jax.nn.log_softmax(LOGITS) + dist.Normal(LOCS, 0.8).log_prob(X[:, None])
    np.testing.assert_array_equal(got["c"], jnp.argmax(terms, -1))
    keys = jax.random.split(jax.random.key(1), 4000)
    decode = jax.vmap(
        lambda k: ppl.infer_discrete(k, gmm, {"locs": LOCS}, X, params=PARAMS, enumerate=["c"])
    )
    draws = jax.jit(decode)(keys)["c"]
    freq = jnp.mean(draws[:, :, None] == jnp.arange(3), axis=0)
    np.testing.assert_allclose(freq, jax.nn.softmax(terms, -1), atol=0.035)


def hmm_markov(ys):
    """The HMM above as a Python loop over ``markov`` (decodable by infer_discrete)."""
    z = numpyro.sample("z0", dist.Categorical(INIT), infer={"enumerate": "parallel"})
    for t in markov(range(ys.shape[0])):
        z = numpyro.sample(f"z_{t}", dist.Categorical(TRANS[z]), infer={"enumerate": "parallel"})
        numpyro.sample(f"y_{t}", dist.Normal(MEANS[z], 0.7), obs=ys[t])


def _viterbi_path(ys, init=INIT):
    """The MAP path (z0, z_1..z_T) of the HMM above by the max-product recursion."""
    log_trans = jnp.log(TRANS)
    delta, back = jnp.log(init), []
    for y in ys:
        scores = delta[:, None] + log_trans
        back.append(jnp.argmax(scores, 0))
        delta = jnp.max(scores, 0) + dist.Normal(MEANS, 0.7).log_prob(y)
    path = [int(jnp.argmax(delta))]
    for pointers in back[::-1]:
        path.append(int(pointers[path[-1]]))
    return path[-1], path[-2::-1]


@pytest.mark.parametrize("version", ["scan", "markov"])
def test_infer_discrete_decodes_an_hmm_by_viterbi(version):
    ys = _sequence(jax.random.key(8), 8)
    model = hmm if version == "scan" else hmm_markov
    decode = jax.jit(lambda key, ys: ppl.infer_discrete(key, model, {}, ys, temperature=0))
    got = decode(jax.random.key(0), ys)
    z0, path = _viterbi_path(ys)
    states = got["z"].tolist() if version == "scan" else [int(got[f"z_{t}"]) for t in range(8)]
    assert states == path
    assert int(got["z0"]) == z0


def sequences_hmm(ys):
    """Many sequences: a plate inside the scan body, as NumPyro's HMM examples write it."""

    def step(z, y):
        with numpyro.plate("sequences", ys.shape[1]):
            z = numpyro.sample("z", dist.Categorical(TRANS[z]))
            numpyro.sample("y", dist.Normal(MEANS[z], 0.7), obs=y)
        return z, None

    scan(step, jnp.zeros(ys.shape[1], jnp.int32), ys)


def test_infer_discrete_decodes_each_sequence_of_a_plate_in_scan():
    ys = jnp.stack([_sequence(jax.random.key(k), 6) for k in (11, 12, 13)], axis=1)
    got = jax.jit(
        lambda ys: ppl.infer_discrete(jax.random.key(0), sequences_hmm, {}, ys, temperature=0)
    )(ys)
    assert got["z"].shape == (6, 3)
    for n in range(3):  # each sequence starts in state 0
        assert got["z"][:, n].tolist() == _viterbi_path(ys[:, n], jnp.eye(K)[0])[1]


def _hmm_joint(ys, init=INIT):
    """Paths (z0, z_1..z_T) of the HMM above and their exact posterior probabilities."""
    paths = list(itertools.product(range(K), repeat=len(ys) + 1))
    log_p = []
    for path in paths:
        terms = [jnp.log(init[path[0]])]
        for t, y in enumerate(ys):
            terms.append(jnp.log(TRANS[path[t], path[t + 1]]))
            terms.append(dist.Normal(MEANS[path[t + 1]], 0.7).log_prob(y))
        log_p.append(sum(terms))
    return np.array(paths), np.asarray(jax.nn.softmax(jnp.array(log_p)))


def _factorial_joint(ys):
    """Paths ((u_1, v_1), ..., (u_T, v_T)) of factorial_hmm and their posterior."""
    trans_u = jnp.array([[0.9, 0.1], [0.3, 0.7]])
    paths = list(itertools.product(*[range(2), range(3)] * len(ys)))
    log_p = []
    for path in paths:
        u, v, terms = [0, *path[0::2]], [0, *path[1::2]], []
        for t, y in enumerate(ys):
            terms.append(jnp.log(trans_u[u[t], u[t + 1]]) + jnp.log(TRANS[v[t], v[t + 1]]))
            loc = jnp.array([-1.0, 1.0])[u[t + 1]] + MEANS[v[t + 1]]
            terms.append(dist.Normal(loc, 0.5).log_prob(y))
        log_p.append(sum(terms))
    return np.array(paths), np.asarray(jax.nn.softmax(jnp.array(log_p)))


def _within_standard_errors(draws, paths, probs, k=4.5):
    """Joint frequencies of the drawn paths within k standard errors of probs.

    Paths expected fewer than 10 times are pooled into one cell, where the normal
    approximation of the binomial that the standard error assumes holds.
    """
    n = draws.shape[0]
    index = {tuple(path): i for i, path in enumerate(paths.tolist())}
    counts = np.bincount([index[tuple(d)] for d in draws.tolist()], minlength=len(paths))
    rare = n * probs < 10
    counts = np.append(counts[~rare], counts[rare].sum())
    probs = np.append(probs[~rare], probs[rare].sum())
    standard_error = np.sqrt(probs * (1 - probs) / n)
    np.testing.assert_array_less(np.abs(counts / n - probs), k * standard_error + 1e-9)


@pytest.mark.parametrize(
    "version",
    [
        "scan",
        pytest.param("markov", marks=pytest.mark.slow),
        pytest.param("factorial", marks=pytest.mark.slow),
    ],
)
def test_infer_discrete_samples_the_exact_joint_posterior_of_a_chain(version):
    """Forward filtering, backward sampling (also in scan): joint frequencies of 4000
    draws against the brute-force posterior over all paths, within 4.5 standard errors,
    and the per-step marginals too."""
    ys = jnp.array([-1.2, 0.3, 2.5]) if version != "factorial" else jnp.array([0.2, 1.1])
    model = {"scan": hmm, "markov": hmm_markov, "factorial": factorial_hmm}[version]
    keys = jax.random.split(jax.random.key(14), 4000)
    decoded = jax.jit(jax.vmap(lambda key: ppl.infer_discrete(key, model, {}, ys)))(keys)
    if version == "scan":
        draws = np.concatenate([decoded["z0"][:, None], decoded["z"]], axis=1)
    elif version == "markov":
        draws = np.stack([decoded["z0"]] + [decoded[f"z_{t}"] for t in range(3)], axis=1)
    else:
        draws = np.stack([decoded["u"], decoded["v"]], axis=-1).reshape(4000, -1)
    paths, probs = (_factorial_joint if version == "factorial" else _hmm_joint)(ys)
    _within_standard_errors(draws, paths, probs)
    for position in range(paths.shape[1]):  # the posterior marginal of each site
        marginal = np.array([probs[paths[:, position] == k].sum() for k in range(K)])
        _within_standard_errors(draws[:, position : position + 1], np.arange(K)[:, None], marginal)


@pytest.mark.slow  # compiles a vmapped decoder besides the export (about 40 s loaded)
def test_to_inference_data_exports_summed_out_sites_of_a_scan_body():
    ys = jnp.stack([jnp.array([-1.2, 0.3, 2.5]), jnp.array([2.2, 1.9, -0.4])], axis=1)
    idata = ppl.to_inference_data(
        jax.random.key(0), lambda ys: None, {}, ys, model=sequences_hmm, num_samples=2000
    )
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "z_dim_0", "sequences") and z.shape == (1, 2000, 3, 2)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "y_dim_0", "sequences")
    for n in range(2):  # each sequence's posterior, z0 fixed at state 0
        paths, probs = _hmm_joint(ys[:, n], init=jnp.eye(K)[0])
        draws = np.concatenate([np.zeros((2000, 1), int), z.values[0, :, :, n]], axis=1)
        _within_standard_errors(draws, paths, probs)


# --- errors -------------------------------------------------------------------------


def test_infer_discrete_names_a_key_that_is_not_a_jax_key():
    def mixture(x):
        c = numpyro.sample("c", dist.Categorical(jnp.array([0.3, 0.7])))
        numpyro.sample("x", dist.Normal(jnp.array([-1.0, 1.0])[c], 1.0), obs=x)

    with pytest.raises(TypeError, match="infer_discrete: the key must be one PRNG key"):
        ppl.infer_discrete(np.random.default_rng(0), mixture, {}, 0.5, enumerate=["c"])


def test_infinite_support_is_an_error_naming_the_site():
    def model():
        n = numpyro.sample("n", dist.Poisson(3.0), infer={"enumerate": "parallel"})
        numpyro.sample("y", dist.Normal(n, 1.0), obs=2.0)

    with pytest.raises(ValueError, match="'n'.*Poisson.*no finite support"):
        ppl.density(model, {})


def test_support_product_too_large_says_how_large():
    def model(y):
        with numpyro.plate("data", 2000):
            a = numpyro.sample("a", dist.Categorical(logits=jnp.zeros(100)))
            b = numpyro.sample("b", dist.Categorical(logits=jnp.zeros(100)))
            c = numpyro.sample("c", dist.Categorical(logits=jnp.zeros(100)))
            numpyro.sample("y", dist.Normal(a + b + c, 1.0), obs=y)

    y = jnp.zeros(2000)
    with pytest.raises(ValueError, match=r"site 'y'.*\(100, 100, 100, 2000\).*GiB"):
        jax.jit(lambda y: ppl.density(model, {}, y, enumerate=["a", "b", "c"]))(y)


def test_enumerated_site_that_the_guide_samples_is_an_error():
    with pytest.raises(ValueError, match=r"\['c'\].*enumerate=.*guide samples"):
        ppl.density(
            gmm, {"locs": LOCS, "c": jnp.zeros(6, jnp.int32)}, X, params=PARAMS, enumerate="c"
        )


def test_unknown_enumerated_name_is_an_error():
    with pytest.raises(ValueError, match=r"enumerate= names \['nope'\]"):
        ppl.density(gmm, {"locs": LOCS}, X, params=PARAMS, enumerate=["c", "nope"])


def test_site_log_densities_refuses_a_summed_out_site():
    with pytest.raises(ValueError, match="'c'.*marked for enumeration.*ppl.density"):
        ppl.gen.site_log_densities(config_enumerate(gmm), {"locs": LOCS}, X, params=PARAMS)


def test_dependence_beyond_the_markov_order_is_an_error():
    def second_order(ys):
        def step(carry, y):
            z_prev, z_prev_prev = carry
            z = numpyro.sample("z", dist.Categorical(TRANS[(z_prev + z_prev_prev) % K]))
            numpyro.sample("y", dist.Normal(MEANS[z], 0.7), obs=y)
            return (z, z_prev), None

        scan(step, (0, 0), ys)  # history=1, but z_t depends on z_{t-2}

    ys = _sequence(jax.random.key(9), 6)
    with pytest.raises(ValueError, match="Markov order.*history="):
        ppl.density(second_order, {}, ys)


def test_to_inference_data_exports_the_summed_out_sites():
    def guide(x):
        numpyro.sample("locs", dist.Normal(numpyro.param("m", jnp.zeros(3)), 0.05).to_event(1))

    params = {**PARAMS, "m": LOCS}
    idata = ppl.to_inference_data(
        jax.random.key(0), guide, params, X, model=config_enumerate(gmm), num_samples=300
    )
    c = idata.posterior["c"]
    assert c.dims == ("chain", "draw", "data") and c.shape == (1, 300, 6)
    terms = jax.nn.log_softmax(LOGITS) + dist.Normal(LOCS, 0.8).log_prob(X[:, None])
    freq = (c.values[0][:, :, None] == np.arange(3)).mean(0)
    np.testing.assert_allclose(freq, jax.nn.softmax(terms, -1), atol=0.1)
    assert idata.posterior_predictive["x"].shape == (1, 300, 6)
