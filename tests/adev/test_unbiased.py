"""The shared unbiasedness suite: every strategy against exact answers.

For each case, the Monte Carlo means of the value estimate and of the gradient estimate
(reverse mode, and forward mode along a fixed direction) must lie within 4 standard
errors of the exact values, computed from the same fixed-seed samples. A small
floating-point slack (1e-4 relative) covers estimators with zero variance (enum).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from tests.adev._cases import all_cases

CASES = all_cases()
NUM_SAMPLES = 4000
K_SE = 4.0


def _within(samples: np.ndarray, exact: np.ndarray, what: str) -> None:
    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    tol = K_SE * se + 1e-4 * (1.0 + np.abs(exact))
    bad = np.abs(mean - exact) > tol
    assert not bad.any(), (
        f"{what}: Monte Carlo mean {mean} vs exact {exact}; standard error {se}; "
        f"off by {np.abs(mean - exact) / np.maximum(se, 1e-12)} standard errors"
    )
    assert np.all(np.isfinite(samples)), f"{what}: non-finite estimates"


def _keys(seed: int, n: int = NUM_SAMPLES):
    return jax.random.split(jax.random.key(seed), n)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_value_and_gradient_are_unbiased(case):
    objective = ppl.expectation(case.program)
    values, (grads,) = jax.vmap(objective.value_and_grad_estimate, (0, None))(_keys(0), case.theta)
    exact_value = np.asarray(case.exact(case.theta))
    exact_grad = np.asarray(jax.grad(case.exact)(case.theta))
    _within(values, exact_value, f"{case.name} value")
    _within(grads, exact_grad, f"{case.name} gradient (reverse mode)")


@pytest.mark.parametrize("case", CASES[::3], ids=[c.name for c in CASES[::3]])
def test_forward_mode_is_unbiased(case):
    objective = ppl.expectation(case.program)
    direction = jnp.linspace(1.0, -0.5, case.theta.shape[0])
    _, tangents = jax.vmap(objective.jvp_estimate, (0, None, None))(
        _keys(1), (case.theta,), (direction,)
    )
    exact = np.asarray(jax.jvp(case.exact, (case.theta,), (direction,))[1])
    _within(tangents, exact, f"{case.name} directional derivative (forward mode)")


def test_minibatch_mean_is_unbiased_without_per_example_gradients():
    """jax.grad of the mean of a vmapped Expectation estimates the mean's gradient."""

    @ppl.expectation
    def objective(theta, x):
        b = ppl.sample(ppl_bernoulli(theta[0] + x), ppl.reinforce)
        z = ppl.sample(ppl_normal(theta[1] * x), ppl.reparam)
        return (b + z) ** 2

    data = jnp.array([0.5, -1.0, 2.0])

    def loss(theta, key):
        keys = jax.random.split(key, data.shape[0])
        return jnp.mean(jax.vmap(objective, (0, None, 0))(keys, theta, data))

    theta = jnp.array([0.2, 0.7])
    grads = jax.vmap(jax.grad(loss), (None, 0))(theta, _keys(2))

    def exact(t):
        p = jax.nn.sigmoid(t[0] + data)
        m = t[1] * data
        return jnp.mean(p + 2 * p * m + m**2 + 1.0)

    _within(grads, np.asarray(jax.grad(exact)(theta)), "minibatch gradient")


def ppl_bernoulli(logits):
    import numpyro.distributions as dist

    return dist.Bernoulli(logits=logits)


def ppl_normal(loc):
    import numpyro.distributions as dist

    return dist.Normal(loc, 1.0)
