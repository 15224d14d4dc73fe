"""ppl's ELBO gradients against Pyro's and against exact gradients.

On a conjugate Normal model (reparameterized guide; Pyro's ``Trace_ELBO``) and on a
model with a Bernoulli latent (score-function gradient; Pyro's ``TraceGraph_ELBO``, whose
surrogate gives score-function gradients for non-reparameterizable sites), the Monte
Carlo means of ppl's and Pyro's gradient estimates agree with the exact gradient
(closed form or enumeration) and with each other, within 4 combined standard errors.
"""

from __future__ import annotations

import math

import pytest

pyro = pytest.importorskip("pyro")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import pyro.distributions as pdist  # noqa: E402
import torch  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

import ppl  # noqa: E402

K_SE = 4.0
NUM_DRAWS = 2000
PYRO_BATCHES = 100  # Pyro's draws: PYRO_BATCHES vectorized batches of NUM_DRAWS / PYRO_BATCHES

# ---------------------------------------------------------------- the two models

Y = [0.9, 1.3, 1.1, 0.4]
NOISE = 0.5
NORMAL_PARAMS = {"mu": 0.2, "loc": 0.3, "log_scale": -0.5}

B_Y = 0.6
B_PRIOR = 0.3
BERNOULLI_PARAMS = {"mu": 0.8, "theta": 0.4}


def normal_model(y):
    mu = numpyro.param("mu", 0.0)
    z = numpyro.sample("z", dist.Normal(mu, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(z, NOISE), obs=y)


def normal_guide(y):
    loc = numpyro.param("loc", 0.0)
    log_scale = numpyro.param("log_scale", 0.0)
    numpyro.sample("z", dist.Normal(loc, jnp.exp(log_scale)))


def bernoulli_model(y):
    mu = numpyro.param("mu", 0.0)
    b = numpyro.sample("b", dist.Bernoulli(probs=B_PRIOR))
    numpyro.sample("y", dist.Normal(mu * (2 * b - 1), 1.0), obs=y)


def bernoulli_guide(y):
    theta = numpyro.param("theta", 0.0)
    numpyro.sample("b", dist.Bernoulli(logits=theta))


def exact_normal_elbo(params):
    """``E_q[log p(y, z) - log q(z)]`` in closed form."""
    y = jnp.asarray(Y)
    m, s2 = params["loc"], jnp.exp(2 * params["log_scale"])
    log_prior = -0.5 * math.log(2 * math.pi) - 0.5 * ((m - params["mu"]) ** 2 + s2)
    log_lik = jnp.sum(
        -0.5 * math.log(2 * math.pi * NOISE**2) - ((y - m) ** 2 + s2) / (2 * NOISE**2)
    )
    return log_prior + log_lik + 0.5 * jnp.log(2 * math.pi * math.e * s2)


def exact_bernoulli_elbo(params):
    """``Σ_b q(b) [log p(b, y) - log q(b)]`` by enumeration."""
    total = 0.0
    for b in (0.0, 1.0):
        log_q = dist.Bernoulli(logits=params["theta"]).log_prob(b)
        log_p = dist.Bernoulli(probs=B_PRIOR).log_prob(b) + norm.logpdf(
            B_Y, params["mu"] * (2 * b - 1)
        )
        total = total + jnp.exp(log_q) * (log_p - log_q)
    return total


# ---------------------------------------------------------------- ppl's draws


def ppl_gradients(model, guide, params, y, seed):
    """``NUM_DRAWS`` ELBO gradient estimates from ppl, a dict of arrays."""
    objective = ppl.objectives.elbo(model, guide)
    params = {name: jnp.asarray(value) for name, value in params.items()}
    keys = jax.random.split(jax.random.key(seed), NUM_DRAWS)
    grads = jax.jit(jax.vmap(lambda key: objective.grad_estimate(key, params, y)[0]))(keys)
    return {name: np.asarray(value, np.float64) for name, value in grads.items()}


# ---------------------------------------------------------------- Pyro's draws


def pyro_normal_model(y):
    mu = pyro.param("mu", torch.tensor(NORMAL_PARAMS["mu"]))
    z = pyro.sample("z", pdist.Normal(mu, 1.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", pdist.Normal(z, NOISE), obs=y)


def pyro_normal_guide(y):
    loc = pyro.param("loc", torch.tensor(NORMAL_PARAMS["loc"]))
    log_scale = pyro.param("log_scale", torch.tensor(NORMAL_PARAMS["log_scale"]))
    pyro.sample("z", pdist.Normal(loc, log_scale.exp()))


def pyro_bernoulli_model(y):
    mu = pyro.param("mu", torch.tensor(BERNOULLI_PARAMS["mu"]))
    b = pyro.sample("b", pdist.Bernoulli(probs=torch.tensor(B_PRIOR)))
    pyro.sample("y", pdist.Normal(mu * (2 * b - 1), 1.0), obs=y)


def pyro_bernoulli_guide(y):
    theta = pyro.param("theta", torch.tensor(BERNOULLI_PARAMS["theta"]))
    pyro.sample("b", pdist.Bernoulli(logits=theta))


def pyro_gradients(elbo_class, model, guide, y, seed):
    """Pyro's ELBO gradient: ``PYRO_BATCHES`` estimates, each a vectorized mean of
    ``NUM_DRAWS / PYRO_BATCHES`` particles (the batch means give the standard error)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    elbo = elbo_class(
        num_particles=NUM_DRAWS // PYRO_BATCHES, vectorize_particles=True, max_plate_nesting=1
    )
    elbo.loss(model, guide, y)  # creates the parameters
    names, tensors = zip(*pyro.get_param_store().named_parameters())
    batches = []
    for _ in range(PYRO_BATCHES):
        for tensor in tensors:
            tensor.grad = None
        elbo.loss_and_grads(model, guide, y)  # Pyro's surrogate loss, backpropagated
        batches.append([-float(tensor.grad) for tensor in tensors])  # loss = -ELBO
    batches = np.asarray(batches, np.float64)
    return {name: batches[:, i] for i, name in enumerate(names)}


# ---------------------------------------------------------------- the comparisons


def mean_and_se(samples):
    return float(np.mean(samples)), float(np.std(samples, ddof=1) / math.sqrt(len(samples)))


def check(ppl_grads, pyro_grads, exact_grads):
    for name, exact in exact_grads.items():
        exact = float(exact)
        ppl_mean, ppl_se = mean_and_se(ppl_grads[name])
        pyro_mean, pyro_se = mean_and_se(pyro_grads[name])
        report = f"{name}: ppl {ppl_mean} ± {ppl_se}, pyro {pyro_mean} ± {pyro_se}, exact {exact}"
        assert abs(ppl_mean - exact) <= K_SE * ppl_se, report
        assert abs(pyro_mean - exact) <= K_SE * pyro_se, report
        assert abs(ppl_mean - pyro_mean) <= K_SE * math.hypot(ppl_se, pyro_se), report


def test_normal_model_matches_pyro_trace_elbo():
    ppl_grads = ppl_gradients(normal_model, normal_guide, NORMAL_PARAMS, jnp.asarray(Y), seed=0)
    pyro_grads = pyro_gradients(
        pyro.infer.Trace_ELBO, pyro_normal_model, pyro_normal_guide, torch.tensor(Y), seed=0
    )
    exact = jax.grad(exact_normal_elbo)({k: jnp.asarray(v) for k, v in NORMAL_PARAMS.items()})
    check(ppl_grads, pyro_grads, exact)


def test_bernoulli_model_matches_pyro_tracegraph_elbo():
    ppl_grads = ppl_gradients(
        bernoulli_model, bernoulli_guide, BERNOULLI_PARAMS, jnp.asarray(B_Y), seed=1
    )
    pyro_grads = pyro_gradients(
        pyro.infer.TraceGraph_ELBO,
        pyro_bernoulli_model,
        pyro_bernoulli_guide,
        torch.tensor(B_Y),
        seed=1,
    )
    exact = jax.grad(exact_bernoulli_elbo)({k: jnp.asarray(v) for k, v in BERNOULLI_PARAMS.items()})
    check(ppl_grads, pyro_grads, exact)
    # The score-function term is what moves theta: it must not vanish.
    assert abs(float(exact["theta"])) > 0.05
