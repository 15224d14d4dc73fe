"""Property tests (hypothesis) over parameter values and shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from hypothesis import given, settings
from hypothesis import strategies as st

import ppl

floats = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False, width=32)


def _program(params, x):
    z = ppl.sample(dist.Normal(params["loc"], jnp.exp(params["log_scale"])), name="z")
    b = ppl.sample(dist.Bernoulli(logits=params["logits"]), ppl.reinforce, name="b")
    c = ppl.sample(dist.Bernoulli(logits=params["nested"]["w"]), ppl.enum, name="c")
    return jnp.sum((z - x) ** 2) + jnp.sum(b * z) + c


OBJECTIVE = ppl.expectation(_program)


def _params(size, values):
    return {
        "loc": jnp.full((size,), values[0]),
        "log_scale": jnp.full((size,), values[1] / 3.0),
        "logits": jnp.full((size,), values[2]),
        "nested": {"w": jnp.asarray(values[3])},
    }


@settings(max_examples=15, deadline=None)
@given(
    size=st.integers(1, 4),
    values=st.tuples(floats, floats, floats, floats),
    seed=st.integers(0, 2**16),
)
def test_estimates_are_finite_and_gradients_shaped_like_args(size, values, seed):
    params = _params(size, values)
    x = jnp.linspace(-1.0, 1.0, size)
    value, grads = OBJECTIVE.value_and_grad_estimate(jax.random.key(seed), params, x)
    assert np.isfinite(value)
    assert jax.tree.structure(grads) == jax.tree.structure((params, x))
    for g, a in zip(jax.tree.leaves(grads), jax.tree.leaves((params, x))):
        assert g.shape == a.shape and g.dtype == a.dtype
        assert np.all(np.isfinite(g))


@settings(max_examples=10, deadline=None)
@given(values=st.tuples(floats, floats, floats, floats), seed=st.integers(0, 2**16))
def test_same_key_same_result_with_and_without_jit(values, seed):
    params = _params(3, values)
    x = jnp.zeros(3)
    key = jax.random.key(seed)
    eager = OBJECTIVE(key, params, x)
    jitted = OBJECTIVE.estimate(key, params, x)
    np.testing.assert_allclose(eager, jitted, rtol=1e-4, atol=1e-5)
    grads_eager = jax.grad(OBJECTIVE, argnums=1)(key, params, x)
    grads_jit = OBJECTIVE.grad_estimate(key, params, x)[0]
    for a, b in zip(jax.tree.leaves(grads_eager), jax.tree.leaves(grads_jit)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_no_recompilation_on_repeated_calls():
    traces = []

    @ppl.expectation
    def objective(theta):
        traces.append(1)
        x = ppl.sample(dist.Normal(theta, 1.0))
        b = ppl.sample(dist.Bernoulli(logits=theta), ppl.mvd)
        return jnp.sum(x * b)

    def call_all(i, size=3):
        theta = jnp.full(size, 0.1 * i)
        objective.grad_estimate(jax.random.key(i), theta)
        objective.estimate(jax.random.key(i), theta)
        objective.value_and_grad_estimate(jax.random.key(i), theta)

    call_all(0)
    first = len(traces)
    assert 1 <= first <= 2
    for i in range(1, 5):
        call_all(i)
    assert len(traces) == first, "repeated calls with new values retraced the program"
    call_all(0, size=4)  # a new shape traces again
    assert len(traces) > first


def test_raw_uint32_keys_are_accepted():
    a = OBJECTIVE.estimate(jax.random.PRNGKey(3), _params(2, (0.1, 0.2, 0.3, 0.4)), jnp.zeros(2))
    b = OBJECTIVE.estimate(jax.random.key(3), _params(2, (0.1, 0.2, 0.3, 0.4)), jnp.zeros(2))
    np.testing.assert_allclose(a, b)


def test_sequential_enumeration_traces_linearly():
    """k enumerated sites run 2^k continuation values in parallel, but the traced
    program grows linearly in k (the known 2^k trace blow-up is avoided)."""

    def make(k):
        def program(theta):
            total = 0.0
            for i in range(k):
                b = ppl.sample(dist.Bernoulli(logits=theta + i), ppl.enum)
                total = total + b * (i + 1)
            return total**2

        return ppl.expectation(program)

    def size(k):
        jaxpr = jax.make_jaxpr(make(k))(jax.random.key(0), 0.1)
        return len(str(jaxpr))

    assert size(8) < 3 * size(4)


def test_sequential_mvd_costs_polynomially():
    """MVD evaluates its off-sample values in primal mode (later sites just sample), so
    k sequential MVD sites cost O(k^2) continuation steps, not the 2^k of running the
    full estimator at every value (which enumeration does, by design)."""
    weights = jnp.full((32, 32), 0.01)

    def flops(k, strategy):
        def program(theta):
            h = jnp.ones(32) * theta
            for i in range(k):
                b = ppl.sample(dist.Bernoulli(logits=0.01 * jnp.sum(h) + i), strategy)
                h = jnp.tanh(weights @ h + b)
            return jnp.sum(h)

        grad = jax.jit(ppl.expectation(program).grad_estimate)
        cost = grad.lower(jax.random.key(0), 0.1).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    # quadratic growth gives a ratio near 36/10; exponential growth gives about 16
    assert flops(8, ppl.mvd) < 5 * flops(4, ppl.mvd)
    assert flops(8, ppl.enum) > 10 * flops(4, ppl.enum)  # the check can tell them apart
