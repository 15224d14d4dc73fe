"""Continuation strategies in lanes and loops, against exact answers.

``enum``, ``mvd``, ``leave_one_out(K)`` and a custom continuation strategy at sites under
``jax.vmap``/``ppl.particles`` (with code across the lanes after the map) and inside
``lax.scan``/``fori_loop``. Exact values come from exhaustive enumeration or a forward
recursion over a small state space; their gradients from ``jax.grad``. Monte Carlo
means must lie within 4 standard errors computed from the same fixed-seed samples.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.scipy.special import logsumexp

import ppl

sg = jax.lax.stop_gradient
sigmoid = jax.nn.sigmoid
K_SE = 4.0


class PairedReinforce(ppl.Strategy):
    """A user's continuation strategy: REINFORCE whose control variate is the rest of
    the program at an independent draw, ``(f(x) - sg f(x')) ∇log p(x)``."""

    def estimate(self, key, distribution, kont):
        key_x, key_other = jax.random.split(key)
        x = sg(distribution.sample(key_x))
        f = kont(x)
        b = sg(kont(sg(distribution.sample(key_other)), primal=True))
        return f + sg(f - b) * ppl.score(distribution, x)


STRATEGIES = {
    "enum": ppl.enum,
    "mvd": ppl.mvd,
    "leave_one_out": ppl.leave_one_out(3),
    "custom": PairedReinforce(),
}
FOR_ANY_SUPPORT = {  # a strategy for a Poisson site next to each of the above
    "enum": ppl.reinforce,
    "mvd": ppl.mvd,
    "leave_one_out": ppl.leave_one_out(3),
    "custom": PairedReinforce(),
}


def _slow_except(*fast):
    """Every strategy label, those not in ``fast`` marked slow (the default run stays short)."""
    return [s if s in fast else pytest.param(s, marks=pytest.mark.slow) for s in STRATEGIES]


def _within(samples, exact, what: str) -> None:
    samples = np.asarray(samples, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    tol = K_SE * se + 1e-4 * (1.0 + np.abs(exact))
    bad = np.abs(mean - exact) > tol
    assert np.all(np.isfinite(samples)), f"{what}: non-finite estimates"
    assert not bad.any(), (
        f"{what}: Monte Carlo mean {mean} vs exact {exact}; standard error {se}; "
        f"off by {np.abs(mean - exact) / np.maximum(se, 1e-12)} standard errors"
    )


def _check(program, exact, theta, seed: int, num_samples: int, what: str) -> None:
    objective = ppl.expectation(program)
    keys = jax.random.split(jax.random.key(seed), num_samples)
    estimate = jax.jit(jax.vmap(objective.value_and_grad_estimate, (0, None)))
    values, (grads,) = estimate(keys, theta)
    _within(values, exact(theta), f"{what} value")
    _within(grads, jax.grad(exact)(theta), f"{what} gradient")


def _bits(n: int) -> jax.Array:
    return jnp.array(list(itertools.product([0.0, 1.0], repeat=n)))


# ------------------------------------------------------------------------- vmap


def _across_lanes(b, theta):
    """Code after the map that mixes the lanes: a product, a logsumexp and a mean."""
    return jnp.prod(1.0 + b) + logsumexp(2.0 * b * theta) + jnp.mean(b) ** 2


@pytest.mark.parametrize("label", list(STRATEGIES))
def test_vmapped_site_with_code_across_lanes(label):
    strategy = STRATEGIES[label]

    def program(theta):
        sample = lambda logit: ppl.sample(dist.Bernoulli(logits=logit), strategy, name="b")
        b = jax.vmap(sample)(theta)
        return _across_lanes(b, theta)

    def exact(theta):
        values = _bits(theta.shape[0])
        p = sigmoid(theta)
        weights = jnp.prod(jnp.where(values > 0, p, 1 - p), axis=1)
        return jnp.sum(weights * jax.vmap(lambda b: _across_lanes(b, theta))(values))

    _check(program, exact, jnp.array([0.3, -0.5, 1.0]), 0, 2000, f"vmap {label}")


def test_vmapped_categorical_and_poisson_sites_under_mvd():
    table = jnp.array([1.0, -2.0, 0.5])

    def program(theta):
        c = jax.vmap(lambda t: ppl.sample(dist.Categorical(logits=t), ppl.mvd, name="c"))(
            jnp.stack([theta[:3], theta[1:4]])
        )
        n = jax.vmap(lambda r: ppl.sample(dist.Poisson(jnp.exp(r)), ppl.mvd, name="n"))(theta[3:])
        return jnp.max(table[c]) * jnp.sum(n) + jnp.min(n) ** 2

    def exact(theta):
        p0, p1 = jax.nn.softmax(theta[:3]), jax.nn.softmax(theta[1:4])
        tops = jnp.maximum(table[:, None], table[None, :])
        mean_top = jnp.sum(p0[:, None] * p1[None, :] * tops)
        rates = jnp.exp(theta[3:])
        support = jnp.arange(40.0)
        pmf = jnp.exp(jax.vmap(lambda r: dist.Poisson(r).log_prob(support))(rates))
        survival = 1.0 - jnp.cumsum(pmf, axis=1)  # P(n > k) per lane
        minimum = jnp.prod(survival, axis=0)  # P(min > k)
        min_sq = jnp.sum((2 * support + 1) * minimum)  # E[min²] = Σ_k (2k + 1) P(min > k)
        return mean_top * jnp.sum(rates) + min_sq

    _check(program, exact, jnp.array([0.2, -0.3, 0.4, 0.1]), 1, 2000, "vmap mvd Categorical")


def test_one_lane_is_the_unbatched_strategy():
    """With one particle, enum is exact again (no sampled value, no variance)."""

    def program(theta):
        b = ppl.particles(lambda: ppl.sample(dist.Bernoulli(logits=theta), ppl.enum), 1)()
        return (3.0 * b[0] + 1.0) ** 2

    objective = ppl.expectation(program)
    keys = jax.random.split(jax.random.key(2), 8)
    values, (grads,) = jax.vmap(objective.value_and_grad_estimate, (0, None))(keys, 0.3)
    p = sigmoid(0.3)
    np.testing.assert_allclose(values, 1 + 15 * p, rtol=1e-5)
    np.testing.assert_allclose(grads, 15 * p * (1 - p), rtol=1e-5)


def test_forward_mode_at_a_vmapped_site():
    def program(theta):
        b = jax.vmap(lambda t: ppl.sample(dist.Bernoulli(logits=t), ppl.mvd))(theta)
        return logsumexp(b * theta)

    def exact(theta):
        values = _bits(2)
        p = sigmoid(theta)
        weights = jnp.prod(jnp.where(values > 0, p, 1 - p), axis=1)
        return jnp.sum(weights * logsumexp(values * theta, axis=1))

    theta, direction = jnp.array([0.4, -0.2]), jnp.array([1.0, -2.0])
    objective = ppl.expectation(program)
    keys = jax.random.split(jax.random.key(3), 2000)
    _, tangents = jax.vmap(objective.jvp_estimate, (0, None, None))(keys, (theta,), (direction,))
    _within(tangents, jax.jvp(exact, (theta,), (direction,))[1], "vmap mvd forward mode")


# -------------------------------------------------------------------- particles

PRIOR_LOGITS = jnp.array([0.1, -0.4, 0.5])


def _model():
    b = numpyro.sample("b", dist.Bernoulli(0.3))
    c = numpyro.sample("c", dist.Categorical(logits=PRIOR_LOGITS))
    numpyro.sample("y", dist.Normal(b + c, 1.0), obs=1.5)


def _guide():
    b = numpyro.sample("b", dist.Bernoulli(logits=numpyro.param("lb", 0.0)))
    numpyro.sample("c", dist.Categorical(logits=numpyro.param("lc", jnp.zeros(3)) + b))


def _log_weight(params, b, c):
    q_b = sigmoid(params["lb"])
    log_q = jnp.where(b > 0, jnp.log(q_b), jnp.log1p(-q_b))
    log_q = log_q + jax.nn.log_softmax(params["lc"] + b)[c]
    log_p = jnp.where(b > 0, jnp.log(0.3), jnp.log(0.7)) + jax.nn.log_softmax(PRIOR_LOGITS)[c]
    return log_p + dist.Normal(b + c, 1.0).log_prob(1.5) - log_q


def _exact_iwae(params, num_particles):
    pairs = jnp.array([(b, c) for b in (0, 1) for c in range(3)])  # (6, 2)
    index = jnp.array(list(itertools.product(range(6), repeat=num_particles)))
    joint = pairs[index]  # (6**K, K, 2)

    def one(particles):
        b, c = particles[:, 0], particles[:, 1]
        log_w = jax.vmap(lambda b, c: _log_weight(params, b, c))(b, c)
        q_b = sigmoid(params["lb"])
        q = jnp.where(b > 0, q_b, 1 - q_b) * jax.vmap(
            lambda b, c: jax.nn.softmax(params["lc"] + b)[c]
        )(b, c)
        return jnp.prod(q) * (logsumexp(log_w) - jnp.log(num_particles))

    return jnp.sum(jax.vmap(one)(joint))


@pytest.mark.parametrize("label", _slow_except("enum", "mvd"))
def test_particles_in_iwae(label):
    strategy = STRATEGIES[label]
    objective = ppl.objectives.iwae(
        _model, _guide, num_particles=3, strategies={"b": strategy, "c": strategy}
    )
    params = {"lb": jnp.asarray(0.2), "lc": jnp.array([0.3, -0.2, 0.1])}
    keys = jax.random.split(jax.random.key(4), 2000)
    values, (grads,) = jax.jit(jax.vmap(objective.value_and_grad_estimate, (0, None)))(keys, params)
    exact_value, exact_grads = jax.value_and_grad(_exact_iwae)(params, 3)
    _within(values, exact_value, f"iwae {label} value")
    for name in params:
        _within(grads[name], exact_grads[name], f"iwae {label} gradient of {name}")


@pytest.mark.slow
@pytest.mark.parametrize("make", ["elbo", "renyi"])
def test_other_particle_objectives_take_mvd(make):
    params = {"lb": jnp.asarray(0.2), "lc": jnp.array([0.3, -0.2, 0.1])}
    strategies = {"b": ppl.mvd, "c": ppl.mvd}
    if make == "elbo":
        objective = ppl.objectives.elbo(_model, _guide, num_particles=2, strategies=strategies)
        exact = lambda params: _exact_iwae(params, 1)
    else:  # alpha = 0 is IWAE
        objective = ppl.objectives.renyi(
            _model, _guide, alpha=0.0, num_particles=2, strategies=strategies
        )
        exact = lambda params: _exact_iwae(params, 2)
    keys = jax.random.split(jax.random.key(5), 2000)
    _, (grads,) = jax.jit(jax.vmap(objective.value_and_grad_estimate, (0, None)))(keys, params)
    exact_grads = jax.grad(exact)(params)
    for name in params:
        _within(grads[name], exact_grads[name], f"{make} mvd gradient of {name}")


# ------------------------------------------------------------------------ loops


def _switching(bernoulli, poisson, steps):
    """A count ``c`` of Bernoulli successes drives each step's Bernoulli; a Poisson per
    step is scored against the carry after the step."""

    def program(theta):
        def step(count, _):
            logit = theta[0] + theta[1] * jnp.sin(count)
            b = ppl.sample(dist.Bernoulli(logits=logit), bernoulli, name="b")
            n = ppl.sample(dist.Poisson(jnp.exp(theta[2] + 0.3 * b)), poisson, name="n")
            count = count + b
            return count, n * jnp.cos(count)

        count, terms = jax.lax.scan(step, 0.0, None, length=steps)
        return (count - 0.4 * steps) ** 2 / steps + jnp.sum(terms) / steps

    return program


def _switching_exact(theta, steps):
    """A forward recursion over the distribution of the count (0..steps)."""
    counts = jnp.arange(steps + 1.0)
    rate0, rate1 = jnp.exp(theta[2]), jnp.exp(theta[2] + 0.3)

    def step(state, _):
        probs, total = state
        q = sigmoid(theta[0] + theta[1] * jnp.sin(counts))
        after = q * rate1 * jnp.cos(counts + 1) + (1 - q) * rate0 * jnp.cos(counts)
        total = total + jnp.sum(probs * after)
        probs = probs * (1 - q) + jnp.roll(probs * q, 1)
        return (probs, total), None

    start = (jnp.zeros(steps + 1).at[0].set(1.0), 0.0)
    (probs, total), _ = jax.lax.scan(step, start, None, length=steps)
    return jnp.sum(probs * (counts - 0.4 * steps) ** 2) / steps + total / steps


@pytest.mark.slow
@pytest.mark.parametrize("label", list(STRATEGIES))
def test_scan_of_20_steps(label):
    program = _switching(STRATEGIES[label], FOR_ANY_SUPPORT[label], 20)
    exact = lambda theta: _switching_exact(theta, 20)
    _check(program, exact, jnp.array([-0.2, 0.8, 0.1]), 6, 1000, f"scan {label}")


@pytest.mark.slow
def test_scan_of_5_steps_mvd():
    program = _switching(ppl.mvd, ppl.mvd, 5)
    exact = lambda theta: _switching_exact(theta, 5)
    _check(program, exact, jnp.array([-0.2, 0.8, 0.1]), 6, 500, "scan mvd")


@pytest.mark.parametrize("label", _slow_except("enum"))
def test_fori_loop(label):
    strategy = STRATEGIES[label]

    def program(theta):
        def body(i, state):
            total, last = state
            b = ppl.sample(dist.Bernoulli(logits=theta[0] + theta[1] * last), strategy, name="b")
            return total + (i + 1.0) * b, b * 1.0

        total, _ = jax.lax.fori_loop(0, 5, body, (0.0, 0.0))
        return jnp.sqrt(1.0 + total)

    def exact(theta):
        values = _bits(5)

        def one(bits):
            last = jnp.concatenate([jnp.zeros(1), bits[:-1]])
            p = sigmoid(theta[0] + theta[1] * last)
            weight = jnp.prod(jnp.where(bits > 0, p, 1 - p))
            return weight * jnp.sqrt(1.0 + jnp.sum(jnp.arange(1.0, 6.0) * bits))

        return jnp.sum(jax.vmap(one)(values))

    _check(program, exact, jnp.array([0.3, -0.9]), 7, 2000, f"fori_loop {label}")


@pytest.mark.parametrize("label", _slow_except("custom"))
def test_vmap_inside_scan(label):
    strategy = STRATEGIES[label]
    offsets = jnp.array([0.0, 0.7])

    def program(theta):
        def step(count, _):
            logits = theta[0] + theta[1] * jnp.sin(count) + offsets
            sample = lambda logit: ppl.sample(dist.Bernoulli(logits=logit), strategy, name="b")
            b = jax.vmap(sample)(logits)
            return count + jnp.sum(b), jnp.prod(b) * count

        count, terms = jax.lax.scan(step, 0.0, None, length=4)
        return jnp.sqrt(1.0 + count) + jnp.sum(terms)

    def exact(theta):
        values = _bits(8).reshape(-1, 4, 2)

        def one(bits):
            count, weight, total = 0.0, 1.0, 0.0
            for t in range(4):
                p = sigmoid(theta[0] + theta[1] * jnp.sin(count) + offsets)
                weight = weight * jnp.prod(jnp.where(bits[t] > 0, p, 1 - p))
                total = total + jnp.prod(bits[t]) * count
                count = count + jnp.sum(bits[t])
            return weight * (jnp.sqrt(1.0 + count) + total)

        return jnp.sum(jax.vmap(one)(values))

    _check(program, exact, jnp.array([0.2, -0.6]), 8, 1000, f"vmap in scan {label}")


def test_reverse_scan_and_code_between_sites():
    """``reverse=True``, a cost added in the body before the site and a reparameterized
    site after it."""

    def program(theta):
        def step(carry, x):
            ppl.add_cost(0.1 * carry)
            b = ppl.sample(dist.Bernoulli(logits=theta[0] - carry), ppl.mvd, name="b")
            z = ppl.sample(dist.Normal(theta[1] * b, 1.0), ppl.reparam, name="z")
            return carry + b * x, z**2

        carry, squares = jax.lax.scan(step, 0.0, jnp.array([1.0, 0.5, 2.0]), reverse=True)
        return carry**2 + jnp.sum(squares)

    def exact(theta):
        xs = jnp.array([1.0, 0.5, 2.0])

        def one(bits):  # bits in execution order: steps 2, 1, 0
            carry, weight, total = 0.0, 1.0, 0.0
            for t, b in zip((2, 1, 0), bits):
                total = total + 0.1 * carry
                p = sigmoid(theta[0] - carry)
                weight = weight * jnp.where(b > 0, p, 1 - p)
                total = total + (theta[1] * b) ** 2 + 1.0
                carry = carry + b * xs[t]
            return weight * (total + carry**2)

        return jnp.sum(jax.vmap(one)(_bits(3)))

    _check(program, exact, jnp.array([0.4, 0.9]), 9, 2000, "reverse scan mvd")


# ---------------------------------------------------------------------- property

_MIX = ["reinforce", "enum", "mvd", "leave_one_out", "custom"]


def _mixed(strategies):
    by_name = {**STRATEGIES, "reinforce": ppl.reinforce}
    first, second, third = (by_name[s] for s in strategies)

    def program(theta):
        a = jax.vmap(lambda t: ppl.sample(dist.Bernoulli(logits=t), first, name="a"))(theta[:2])

        def step(count, _):
            b = ppl.sample(dist.Bernoulli(logits=theta[2] - count), second, name="b")
            return count + b, None

        count, _ = jax.lax.scan(step, jnp.sum(a) * 1.0, None, length=2)
        c = ppl.sample(dist.Categorical(logits=jnp.array([theta[0], count, 0.0])), third)
        return logsumexp(a * theta[:2]) + (count - c) ** 2

    def exact(theta):
        total = 0.0
        pa = sigmoid(theta[:2])
        for bits in itertools.product([0.0, 1.0], repeat=4):
            a, b = jnp.array(bits[:2]), bits[2:]
            weight = jnp.prod(jnp.where(a > 0, pa, 1 - pa))
            count = jnp.sum(a)
            for bt in b:
                pb = sigmoid(theta[2] - count)
                weight = weight * (pb if bt else 1 - pb)
                count = count + bt
            pc = jax.nn.softmax(jnp.array([theta[0], count, 0.0]))
            value = logsumexp(a * theta[:2]) + jnp.sum(pc * (count - jnp.arange(3.0)) ** 2)
            total = total + weight * value
        return total

    return program, exact


@pytest.mark.slow
@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_MIX), min_size=3, max_size=3))
def test_every_strategy_mix_has_the_same_expectation(strategies):
    program, exact = _mixed(strategies)
    _check(program, exact, jnp.array([0.3, -0.4, 0.5]), 10, 2000, f"mix {strategies}")
