"""Rao-Blackwellized score functions: a site sees only the costs it can change.

Every score-function strategy must stay unbiased on plated programs (against
exhaustive enumeration, within 4 standard errors, fixed seeds), and element ``e`` of a
site in a plate must not be multiplied by the costs of other elements, nor by costs
that cannot depend on it: the variance must fall to NumPyro's ``TraceGraph_ELBO``'s.
"""

from __future__ import annotations

import contextlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpyro.handlers import substitute
from numpyro.infer import TraceGraph_ELBO

import ppl
from tests.adev.test_unbiased import _keys, _within

sg = jax.lax.stop_gradient


class HalfScore(ppl.LocalStrategy):
    """A user-written score-function rule (docs/developer/writing-a-strategy.md): the
    score of REINFORCE with a fixed baseline of 0.5, written with ``ppl.score``."""

    def draw(self, key, distribution):
        x = sg(distribution.sample(key))
        return ppl.Draw(x, score=ppl.score(distribution, x), baseline=0.5)


A = jnp.array([1.0, -2.0, 0.5, 3.0])
D = jnp.array([0.3, 0.1, -0.4, 2.0])
THETA = jnp.array([0.4, -0.3, 0.0, 1.2])

SCORE_STRATEGIES = {
    "reinforce": ppl.reinforce,
    "baseline": ppl.baseline(ppl.reinforce, 1.0),
    "baseline-per-element": ppl.baseline(ppl.reinforce, jnp.array([0.5, -1.0, 0.0, 2.0])),
    "leave_one_out": ppl.leave_one_out(3),
    "custom": HalfScore(),
}


def _one_plate(strategy, plated=True):
    def program(theta):
        with ppl.plate("data", 4) if plated else contextlib.nullcontext():
            z = ppl.sample(dist.BernoulliLogits(theta), strategy, name="z")
            ppl.add_cost(A * z + D)  # element e's cost depends on z[e] only
        ppl.add_cost((jnp.sum(z) - 1.5) ** 2)  # outside the plate, on every element
        ppl.add_cost(3.0 + 0.0 * theta[0])  # cannot depend on z
        return 2.0 * z[0]  # the return value depends on z (element 0 only, unknown to ppl)

    return ppl.expectation(program)


def _enumerate(shape):
    n = int(np.prod(shape))
    return jnp.array(list(itertools.product([0.0, 1.0], repeat=n))).reshape(-1, *shape)


def _one_plate_exact(theta):
    zs = _enumerate((4,))
    log_p = jnp.sum(jax.vmap(lambda z: ppl.log_prob(dist.BernoulliLogits(theta), z))(zs), -1)
    f = jnp.sum(A * zs + D, -1) + (jnp.sum(zs, -1) - 1.5) ** 2 + 3.0 + 2.0 * zs[:, 0]
    return jnp.sum(jnp.exp(log_p) * f)


@pytest.mark.parametrize("name", list(SCORE_STRATEGIES))
def test_every_score_strategy_is_unbiased_in_a_plate(name):
    objective = _one_plate(SCORE_STRATEGIES[name])
    values, (grads,) = jax.vmap(objective.value_and_grad_estimate, (0, None))(_keys(0), THETA)
    _within(values, np.asarray(_one_plate_exact(THETA)), f"{name} value")
    _within(grads, np.asarray(jax.grad(_one_plate_exact)(THETA)), f"{name} gradient")


@pytest.mark.parametrize("name", ["reinforce", "leave_one_out"])
def test_the_plate_lowers_the_variance_and_keeps_the_values(name):
    strategy = SCORE_STRATEGIES[name]
    plated, plain = _one_plate(strategy), _one_plate(strategy, plated=False)
    keys = _keys(1)
    v1, (g1,) = jax.vmap(plated.value_and_grad_estimate, (0, None))(keys, THETA)
    v2, (g2,) = jax.vmap(plain.value_and_grad_estimate, (0, None))(keys, THETA)
    np.testing.assert_array_equal(v1, v2)  # values are unchanged, draw for draw
    # each element's score no longer multiplies the other elements' costs
    var1, var2 = np.var(g1, 0), np.var(g2, 0)
    assert np.all(var1 < var2), (var1, var2)
    if name == "reinforce":  # leave_one_out's baselines already remove part of it
        assert np.sum(var1) < 0.5 * np.sum(var2), (var1, var2)


@pytest.mark.parametrize("name", ["reinforce", "leave_one_out"])
def test_costs_that_cannot_depend_on_a_site_are_left_out(name):
    """A cost added after the site from other values only (a later independent draw):
    the site's gradient has the variance it has without that cost."""

    def make(extra):
        def program(theta):
            z = ppl.sample(dist.BernoulliLogits(theta[0]), SCORE_STRATEGIES[name], name="z")
            u = ppl.sample(dist.Normal(0.0, 1.0), name="u")
            ppl.add_cost(extra * (10.0 + u) ** 2)
            return 3.0 * z

        return ppl.expectation(program)

    theta = jnp.array([0.3])
    (with_cost,) = jax.vmap(make(1.0).grad_estimate, (0, None))(_keys(2), theta)
    (without,) = jax.vmap(make(0.0).grad_estimate, (0, None))(_keys(2), theta)
    np.testing.assert_allclose(with_cost, without, rtol=1e-6)
    p = jax.nn.sigmoid(0.3)
    _within(with_cost, np.array([3.0 * p * (1 - p)]), "gradient beside an independent cost")


def test_learned_per_element_baselines_fit_each_elements_costs():
    def program(theta, b):
        with ppl.plate("data", 4):
            z = ppl.sample(
                dist.BernoulliLogits(theta), ppl.baseline(ppl.reinforce, b, learn=True), name="z"
            )
            ppl.add_cost(A * z + D)
        return 0.0

    objective = ppl.expectation(program)
    b = jnp.array([0.0, 1.0, -1.0, 0.5])
    _, (g_theta, g_b) = jax.vmap(objective.value_and_grad_estimate, (0, None, None))(
        _keys(3), THETA, b
    )
    p = jax.nn.sigmoid(THETA)
    # element e's baseline fits E[A_e z_e + D_e], the cost of element e alone
    _within(g_b, np.asarray(A * p + D - b), "per-element baseline gradient")
    _within(g_theta, np.asarray(A * p * (1 - p)), "θ gradient")


def _nested(strategy):
    a = jnp.arange(6.0).reshape(2, 3) - 2.0

    def program(theta):
        with ppl.plate("outer", 2, dim=-2):
            with ppl.plate("inner", 3, dim=-1):
                z = ppl.sample(dist.BernoulliLogits(theta), strategy, name="z")
                ppl.add_cost(a * z)
            # one cost per outer element, shaped (2, 1) as the plate's dimension says
            ppl.add_cost((jnp.sum(z, -1, keepdims=True) - 1.0) ** 2)
        return jnp.prod(1.0 + 0.1 * z)  # depends on every element

    def exact(theta):
        zs = _enumerate((2, 3))
        log_p = jnp.sum(
            jax.vmap(lambda z: ppl.log_prob(dist.BernoulliLogits(theta), z))(zs), (-1, -2)
        )
        f = (
            jnp.sum(a * zs, (-1, -2))
            + jnp.sum((jnp.sum(zs, -1) - 1.0) ** 2, -1)
            + jnp.prod(1.0 + 0.1 * zs, (-1, -2))
        )
        return jnp.sum(jnp.exp(log_p) * f)

    return ppl.expectation(program), exact


def test_nested_plates_are_unbiased():
    objective, exact = _nested(ppl.reinforce)
    theta = jnp.array([[0.2, -0.5, 1.0], [0.0, 0.7, -1.1]])
    (grads,) = jax.vmap(objective.grad_estimate, (0, None))(_keys(4), theta)
    _within(grads, np.asarray(jax.grad(exact)(theta)), "nested plates gradient")


def test_nested_plates_take_distinct_dimensions():
    with ppl.plate("outer", 2), ppl.plate("inner", 3):
        from ppl.adev._primitives import _current_plates

        assert _current_plates() == (("outer", -1), ("inner", -2))
    with pytest.raises(ValueError, match="already uses that name"):
        with ppl.plate("data", 2), ppl.plate("data", 3, dim=-2):
            pass
    with pytest.raises(ValueError, match="negative integer"):
        with ppl.plate("data", 2, dim=0):
            pass

    def program(theta):
        with ppl.plate("data", 5):
            return ppl.sample(dist.BernoulliLogits(theta), ppl.reinforce, name="z").sum()

    with pytest.raises(ValueError, match=r"site 'z'.*ppl.plate\('data', 5, dim=-1\)"):
        ppl.expectation(program)(jax.random.key(0), jnp.zeros(4))


def test_a_plate_inside_scan_is_unbiased():
    steps, width = 3, 2
    coef = jnp.array([1.0, -1.5])

    def program(theta):
        def step(carry, _):
            with ppl.plate("data", width):
                z = ppl.sample(dist.BernoulliLogits(theta + carry), ppl.reinforce, name="z")
                ppl.add_cost(coef * z - 0.3 * carry * z)
            return carry + 0.5 * jnp.mean(z), None

        carry, _ = jax.lax.scan(step, jnp.zeros(()), None, length=steps)
        return carry**2

    def exact(theta):
        total = 0.0
        for bits in itertools.product([0.0, 1.0], repeat=steps * width):
            zs = jnp.array(bits).reshape(steps, width)
            carry, log_p, f = 0.0, 0.0, 0.0
            for t in range(steps):
                log_p = log_p + jnp.sum(ppl.log_prob(dist.BernoulliLogits(theta + carry), zs[t]))
                f = f + jnp.sum(coef * zs[t] - 0.3 * carry * zs[t])
                carry = carry + 0.5 * jnp.mean(zs[t])
            total = total + jnp.exp(log_p) * (f + carry**2)
        return total

    theta = jnp.array([0.3, -0.6])
    objective = ppl.expectation(program)
    (grads,) = jax.vmap(objective.grad_estimate, (0, None))(_keys(5), theta)
    _within(grads, np.asarray(jax.grad(exact)(theta)), "plate inside scan gradient")


# ------------------------------------------------------------------- NumPyro programs

Y = jnp.array([1.2, -0.4, 0.8, 2.1, -1.3, 0.2, 1.7, 0.5])


def _model(y, subsample=None):
    with numpyro.plate("data", y.shape[0], subsample_size=subsample) as idx:
        z = numpyro.sample("z", dist.Bernoulli(0.3))
        numpyro.sample("y", dist.Normal(2.0 * z - 1.0, 1.0), obs=y[idx])


def _guide(y, subsample=None):
    w, b = numpyro.param("w", 0.5), numpyro.param("b", -0.2)
    with numpyro.plate("data", y.shape[0], subsample_size=subsample) as idx:
        numpyro.sample("z", dist.Bernoulli(logits=w * y[idx] + b))


def _exact_elbo(params, y):
    q = jax.nn.sigmoid(params["w"] * y + params["b"])
    one = jnp.log(0.3) + dist.Normal(1.0, 1.0).log_prob(y) - jnp.log(q)
    zero = jnp.log(0.7) + dist.Normal(-1.0, 1.0).log_prob(y) - jnp.log1p(-q)
    return jnp.sum(q * one + (1 - q) * zero)


PARAMS = {"w": jnp.array(0.5), "b": jnp.array(-0.2)}


def _stack(grads):
    return np.stack([grads["w"], grads["b"]], -1)


@pytest.mark.parametrize(
    "name, subsample, particles",
    [("reinforce", None, 1), ("reinforce", 3, 1), ("leave_one_out", None, 1),
     ("leave_one_out", 3, 1), ("leave_one_out", None, 2)],
)  # fmt: skip
def test_elbo_on_a_numpyro_plate_is_unbiased(name, subsample, particles):
    objective = ppl.objectives.elbo(
        _model, _guide, num_particles=particles, strategies={"z": SCORE_STRATEGIES[name]}
    )
    values, (grads, *_) = jax.vmap(objective.value_and_grad_estimate, (0, None, None, None))(
        _keys(6), PARAMS, Y, subsample
    )
    _within(values, np.asarray(_exact_elbo(PARAMS, Y)), "ELBO value")
    _within(_stack(grads), _stack(jax.grad(_exact_elbo)(PARAMS, Y)), "ELBO gradient")


def test_elbo_reinforce_variance_is_at_most_numpyros_tracegraph():
    """Same program, same number of draws: ppl's REINFORCE variance is not above
    NumPyro's ``TraceGraph_ELBO``'s (one-sided, 4 standard errors of the ratio)."""
    n = 2000
    y = jax.random.normal(jax.random.key(7), (100,)) + 1.0
    objective = ppl.objectives.elbo(_model, _guide, strategies={"z": ppl.reinforce})
    ours = jax.jit(jax.vmap(objective.grad_estimate, (0, None, None)))(_keys(8, n), PARAMS, y)
    ours = _stack(ours[0])

    def numpyro_grad(key):
        def loss(params):
            return TraceGraph_ELBO().loss(key, {}, _model, substitute(_guide, data=params), y)

        return jax.grad(loss)(PARAMS)

    theirs = -_stack(jax.jit(jax.vmap(numpyro_grad))(_keys(9, n)))
    exact = _stack(jax.grad(_exact_elbo)(PARAMS, y))
    _within(ours, exact, "ppl gradient")
    _within(theirs, exact, "NumPyro gradient")
    # the variance ratio and its standard error by the delta method
    c1, c2 = ours - ours.mean(0), theirs - theirs.mean(0)
    v1, v2 = (c1**2).mean(0), (c2**2).mean(0)
    se = (v1 / v2) * np.sqrt(((c1**2).var(0) / v1**2 + (c2**2).var(0) / v2**2) / n)
    assert np.all(v1 / v2 <= 1.0 + 4.0 * se), (v1, v2, se)


@settings(max_examples=5, deadline=None, derandomize=True)
@given(
    width=st.integers(2, 3),
    slope=st.floats(-2.0, 2.0),
    couple=st.floats(0.0, 1.0),
    logits=st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3),
)
def test_plated_and_plain_reinforce_have_the_same_mean(width, slope, couple, logits):
    theta = jnp.array(logits[:width])

    def make(plated):
        def program(theta):
            with ppl.plate("data", width) if plated else contextlib.nullcontext():
                z = ppl.sample(dist.BernoulliLogits(theta), ppl.reinforce, name="z")
                ppl.add_cost(slope * z * jnp.arange(1.0, width + 1.0))
            ppl.add_cost(couple * jnp.sum(z) ** 2)
            return 0.0

        return ppl.expectation(program)

    def exact(theta):
        zs = _enumerate((width,))
        log_p = jnp.sum(jax.vmap(lambda z: ppl.log_prob(dist.BernoulliLogits(theta), z))(zs), -1)
        f = jnp.sum(slope * zs * jnp.arange(1.0, width + 1.0), -1) + couple * jnp.sum(zs, -1) ** 2
        return jnp.sum(jnp.exp(log_p) * f)

    want = np.asarray(jax.grad(exact)(theta))
    for plated in (True, False):
        (grads,) = jax.vmap(make(plated).grad_estimate, (0, None))(_keys(10, 3000), theta)
        _within(grads, want, f"{'plated' if plated else 'plain'} gradient")
