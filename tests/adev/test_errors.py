"""Bad programs get errors that name the site, the distribution and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import pytest

import ppl

KEY = jax.random.key(0)


def _estimate(program, *args):
    return ppl.expectation(program).estimate(KEY, *args)


def test_reparam_on_a_discrete_distribution():
    def program(p):
        return ppl.sample(dist.Bernoulli(probs=p), ppl.reparam, name="coin") * 1.0

    with pytest.raises(
        ValueError,
        match=r"site 'coin' \(BernoulliProbs at .*test_errors.py:\d+\).*reparam.*discrete.*enum",
    ):
        _estimate(program, 0.3)


def test_enum_on_an_infinite_support():
    def program(rate):
        return ppl.sample(dist.Poisson(rate), ppl.enum, name="count") * 1.0

    with pytest.raises(
        ValueError, match=r"site 'count' \(Poisson.*enum needs a finite support.*ppl.mvd"
    ):
        _estimate(program, 2.0)


def test_enum_with_too_many_joint_values():
    def program(logits):
        return jnp.sum(ppl.sample(dist.Bernoulli(logits=logits), ppl.enum, name="bits"))

    with pytest.raises(ValueError, match=r"site 'bits'.*4096"):
        _estimate(program, jnp.zeros(13))


def test_mvd_on_an_unsupported_distribution():
    def program(a):
        return ppl.sample(dist.Gamma(a, 1.0), ppl.mvd, name="g")

    with pytest.raises(ValueError, match=r"site 'g' \(Gamma.*mvd supports"):
        _estimate(program, 2.0)


def test_strategy_of_the_wrong_type():
    with pytest.raises(TypeError, match="must be a ppl.Strategy"):
        _estimate(lambda m: ppl.sample(dist.Normal(m, 1.0), "reparam"), 0.0)


def test_sample_outside_an_expectation():
    with pytest.raises(RuntimeError, match=r"site 'x'.*outside an expectation.*@ppl.expectation"):
        ppl.sample(dist.Normal(0.0, 1.0), name="x")
    with pytest.raises(RuntimeError, match=r"site 'y'.*outside an expectation"):
        jax.jit(lambda m: ppl.sample(dist.Normal(m, 1.0), name="y"))(0.0)
    with pytest.raises(RuntimeError, match="ppl.add_cost.*outside an expectation"):
        ppl.add_cost(1.0)


def test_sample_differentiated_before_estimation():
    def program(m):
        return jax.grad(lambda m: ppl.sample(dist.Normal(m, 1.0), name="inner"))(m)

    with pytest.raises(RuntimeError, match=r"site 'inner'.*differentiated.*grad_estimate"):
        _estimate(program, 0.0)


def test_unsupported_primitive_is_named():
    def program(m):
        def solve(matvec, b):
            return b / ppl.sample(dist.Normal(m, 1.0), name="noise")

        return jax.lax.custom_linear_solve(lambda x: 2.0 * x, jnp.ones(()), solve)

    with pytest.raises(TypeError, match=r"JAX primitive 'custom_linear_solve'.*site 'noise'"):
        _estimate(program, 0.0)


def test_continuation_strategy_inside_a_while_loop():
    def program(p):
        def body(c):
            return c + ppl.sample(dist.Bernoulli(probs=p), ppl.enum, name="flip")

        return jax.lax.while_loop(lambda c: c < 3, body, 0) * 1.0

    with pytest.raises(ValueError, match=r"site 'flip'.*Enum needs the rest.*while_loop.*bound"):
        _estimate(program, 0.3)


def test_continuation_strategy_in_a_scan_inside_a_scan():
    def program(p):
        def inner(c, _):
            return c + ppl.sample(dist.Bernoulli(probs=p), ppl.mvd, name="flip"), None

        def outer(c, _):
            return jax.lax.scan(inner, c, None, length=2)[0], None

        return jax.lax.scan(outer, 0, None, length=3)[0] * 1.0

    with pytest.raises(ValueError, match=r"site 'flip'.*MVD.*'scan' inside lax.scan"):
        _estimate(program, 0.3)


def test_continuation_strategy_in_a_cond_inside_a_scan():
    def program(p):
        def step(c, _):
            def yes(c):
                return c + ppl.sample(dist.Bernoulli(probs=p), ppl.enum, name="flip")

            return jax.lax.cond(c < 2, yes, lambda c: c, c), None

        return jax.lax.scan(step, 0, None, length=3)[0] * 1.0

    with pytest.raises(ValueError, match=r"site 'flip'.*inside 'cond' inside lax.scan.*move"):
        _estimate(program, 0.3)


def test_random_choice_in_a_while_condition():
    def program(p):
        def cond(c):
            return ppl.sample(dist.Bernoulli(probs=p), name="stop") < 1

        return jax.lax.while_loop(cond, lambda c: c + 1, 0) * 1.0

    with pytest.raises(TypeError, match=r"condition of a while_loop.*site 'stop'"):
        _estimate(program, 0.3)


def test_non_scalar_return():
    with pytest.raises(TypeError, match=r"must return one real scalar.*float32\[3\]"):
        _estimate(lambda m: ppl.sample(dist.Normal(m, 1.0)), jnp.zeros(3))


def test_bad_key():
    objective = ppl.expectation(lambda m: ppl.sample(dist.Normal(m, 1.0)))
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        objective.estimate(jnp.zeros(3), 0.0)


def test_not_a_distribution():
    with pytest.raises(TypeError, match="expects a NumPyro distribution"):
        _estimate(lambda m: ppl.sample(m), 0.0)


def test_reparameterized_value_carried_through_a_while_loop():
    def program(theta):
        def body(state):
            n, total = state
            return n + 1, total + ppl.sample(dist.Normal(theta, 1.0), name="step")

        return jax.lax.while_loop(lambda s: s[0] < 3, body, (0, 0.0))[1] ** 2

    objective = ppl.expectation(program)
    with pytest.raises(ValueError, match=r"carried from one iteration of a while_loop.*lax.scan"):
        objective.grad_estimate(KEY, 0.5)
    # forward mode works: d/dθ E[(Σ_3 x)²] = 18θ, estimated by 2 (Σ x) * 3
    value, tangent = objective.jvp_estimate(KEY, (0.5,), (1.0,))
    assert jnp.isclose(tangent, 6.0 * jnp.sqrt(value), rtol=1e-4) or jnp.isclose(
        tangent, -6.0 * jnp.sqrt(value), rtol=1e-4
    )
