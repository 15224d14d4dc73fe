"""Changing a program's strategies changes the variance of its estimates, not their mean."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import ppl

NUM_SAMPLES = 4000


def _stats(program, theta, seed=0):
    objective = ppl.expectation(program)
    keys = jax.random.split(jax.random.key(seed), NUM_SAMPLES)
    values, (grads,) = jax.vmap(objective.value_and_grad_estimate, (0, None))(keys, theta)
    samples = np.concatenate([np.asarray(values)[:, None], np.asarray(grads)], axis=1)
    samples = samples.astype(np.float64)
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / np.sqrt(NUM_SAMPLES)
    return mean, se, samples.var(0, ddof=1)


def _discrete_chain(sa, sb):
    def program(theta):
        a = ppl.sample(dist.Bernoulli(logits=theta[0]), sa, name="a")
        b = ppl.sample(dist.Categorical(logits=theta[1:4] * (1.0 + a)), sb, name="b")
        return (b - 1.0) ** 2 + 3.0 * a * b

    return program


def _hybrid(sz, sx):
    def program(theta):
        z = ppl.sample(dist.Bernoulli(logits=theta[0]), sz, name="z")
        x = ppl.sample(dist.Normal(theta[1] + z, 1.0), sx, name="x")
        ppl.add_cost(-0.5 * x)
        return jnp.tanh(x) + z * x**2

    return program


def _loop(s):
    def program(theta):
        def step(carry, _):
            b = ppl.sample(dist.Bernoulli(logits=theta[0] + carry), s, name="b")
            return carry + 0.5 * b, b

        carry, bs = jax.lax.scan(step, 0.0, None, length=5)
        return carry**2 + jnp.sum(bs) * theta[1]

    return program


PROGRAMS = {
    "discrete-chain": (
        _discrete_chain,
        [
            (ppl.enum, ppl.enum),
            (ppl.reinforce, ppl.reinforce),
            (ppl.mvd, ppl.mvd),
            (ppl.baseline(ppl.reinforce, 2.0), ppl.enum),
            (ppl.leave_one_out(3), ppl.reinforce),
        ],
        jnp.array([0.3, 0.2, -0.4, 0.6]),
    ),
    "hybrid": (
        _hybrid,
        [
            (ppl.enum, ppl.reparam),
            (ppl.reinforce, ppl.reinforce),
            (ppl.mvd, ppl.mvd),
            (ppl.enum, ppl.mvd),
            (ppl.reinforce, ppl.baseline(ppl.reinforce, 1.0)),
        ],
        jnp.array([-0.2, 0.5]),
    ),
    "loop": (
        lambda s: _loop(s),
        [
            (ppl.reinforce,),
            (ppl.baseline(ppl.reinforce, 4.0),),
            (ppl.baseline(ppl.reinforce, -3.0),),
        ],
        jnp.array([0.1, 0.8]),
    ),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_strategies_change_variance_not_expectation(name):
    make, strategy_sets, theta = PROGRAMS[name]
    results = [
        _stats(make(*strategies), theta, seed=i) for i, strategies in enumerate(strategy_sets)
    ]
    reference_mean, reference_se, _ = results[0]
    for strategies, (mean, se, _) in zip(strategy_sets[1:], results[1:]):
        combined = np.sqrt(se**2 + reference_se**2)
        gap = np.abs(mean - reference_mean)
        assert np.all(gap <= 4 * combined + 1e-4 * (1 + np.abs(reference_mean))), (
            f"{name}: strategies {strategies} moved the mean by {gap / combined} standard errors"
        )
    variances = np.array([var.sum() for _, _, var in results])
    assert variances.max() > 1.5 * variances.min(), (
        f"{name}: the strategies should differ in variance, got {variances}"
    )
