"""Exact log-density derivatives where NumPyro's are wrong (``ppl.log_prob``).

NumPyro 0.22 differentiates ``Bernoulli(logits=a).log_prob`` and
``Binomial(n, logits=a).log_prob`` wrongly at ``a = 0`` (``max``/``abs`` at 0), clips
``probs`` so that the derivative vanishes at 0 and 1, and returns NaN for
``Poisson(0).log_prob(0)``'s derivative. Every score term, enumeration weight and
``ppl.density`` must still be exact there; these tests check them against closed forms.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import ppl

sigmoid = jax.nn.sigmoid

# (name, log_prob(parameter) at a fixed value, parameter, exact derivative)
CASES = [
    ("Bernoulli logits=0, x=1", lambda a: ppl.log_prob(dist.Bernoulli(logits=a), 1.0), 0.0, 0.5),
    ("Bernoulli logits=0, x=0", lambda a: ppl.log_prob(dist.Bernoulli(logits=a), 0.0), 0.0, -0.5),
    (
        "Binomial(5) logits=0, x=2",
        lambda a: ppl.log_prob(dist.Binomial(5, logits=a), 2.0),
        0.0,
        2.0 - 5 * 0.5,
    ),
    (
        "Binomial(5) logits=0, x=0",
        lambda a: ppl.log_prob(dist.Binomial(5, logits=a), 0.0),
        0.0,
        -2.5,
    ),
    (
        "Binomial(5) logits=0, x=5",
        lambda a: ppl.log_prob(dist.Binomial(5, logits=a), 5.0),
        0.0,
        2.5,
    ),
    ("Bernoulli probs=1, x=1", lambda p: ppl.log_prob(dist.Bernoulli(probs=p), 1.0), 1.0, 1.0),
    ("Bernoulli probs=0, x=0", lambda p: ppl.log_prob(dist.Bernoulli(probs=p), 0.0), 0.0, -1.0),
    ("Binomial(5) probs=1, x=5", lambda p: ppl.log_prob(dist.Binomial(5, probs=p), 5.0), 1.0, 5.0),
    ("Binomial(5) probs=0, x=0", lambda p: ppl.log_prob(dist.Binomial(5, probs=p), 0.0), 0.0, -5.0),
    ("Geometric probs=1, x=0", lambda p: ppl.log_prob(dist.GeometricProbs(p), 0.0), 1.0, 1.0),
    ("Poisson rate=0, x=0", lambda r: ppl.log_prob(dist.Poisson(r), 0.0), 0.0, -1.0),
    (
        "masked, expanded, to_event Bernoulli logits=0",
        lambda a: ppl.log_prob(
            dist.Bernoulli(logits=a).expand([3]).mask(jnp.array([True, False, True])).to_event(1),
            jnp.array([1.0, 0.0, 1.0]),
        ),
        0.0,
        1.0,
    ),
]


@pytest.mark.parametrize("name,fn,at,exact", CASES, ids=[c[0] for c in CASES])
def test_log_prob_derivative_is_exact_at_awkward_points(name, fn, at, exact):
    np.testing.assert_allclose(float(jax.grad(fn)(at)), exact, rtol=1e-6, err_msg=name)


def test_numpyro_still_has_the_defect_the_workaround_is_for():
    """Fails once NumPyro differentiates these correctly: then drop ppl/adev/_log_prob.py's
    replacements (and this test), and say so in the changelog."""
    fixed = {
        "BernoulliLogits": float(jax.grad(lambda a: dist.Bernoulli(logits=a).log_prob(1.0))(0.0))
        == 0.5,
        "BinomialLogits": float(jax.grad(lambda a: dist.Binomial(5, logits=a).log_prob(2.0))(0.0))
        == -0.5,
    }
    assert not any(fixed.values()), (
        f"NumPyro {numpyro.__version__} now differentiates {sorted(k for k in fixed if fixed[k])} "
        f"correctly at logits = 0: ppl's workaround in ppl/adev/_log_prob.py can go."
    )


@settings(max_examples=40, deadline=None)
@given(
    logit=st.floats(-30.0, 30.0),
    prob=st.floats(0.0, 1.0),
    rate=st.floats(0.0, 20.0),
    count=st.integers(0, 6),
)
# NumPyro's float32 BinomialLogits gives +1.5e-5 here, 1.5e-5 from its own float64 value
@example(logit=21.869246251922362, prob=0.0, rate=0.0, count=6)
def test_values_equal_numpyro_everywhere(logit, prob, rate, count):
    """ppl's values are NumPyro's up to float32 rounding: each equals NumPyro's float32
    value or, where NumPyro's own formula loses digits (large ``|logits|``), NumPyro's
    value computed in float64, both to 1e-5."""
    n = 6

    def pairs():
        return [
            (dist.Bernoulli(logits=logit), float(count % 2)),
            (dist.Bernoulli(probs=prob), float(count % 2)),
            (dist.Binomial(n, logits=logit), float(count)),
            (dist.Binomial(n, probs=prob), float(count)),
            (dist.GeometricProbs(max(prob, 1e-3)), float(count)),
            (dist.Poisson(rate), float(count)),
        ]

    with jax.enable_x64(True):
        float64 = [float(d.log_prob(x)) for d, x in pairs()]
    for (d, x), precise in zip(pairs(), float64, strict=True):
        ours, theirs = float(ppl.log_prob(d, x)), float(d.log_prob(x))
        if math.isinf(theirs) and isinstance(d, dist.GeometricProbs):
            continue  # NumPyro: log_prob of Geometric(1) at 0 is -inf, exact is 0
        if np.allclose(ours, theirs, rtol=1e-5, atol=1e-5):
            continue
        np.testing.assert_allclose(
            ours, precise, rtol=1e-5, atol=1e-5, err_msg=f"{d!r}: NumPyro's float32 {theirs}"
        )


@settings(max_examples=60, deadline=None)
@given(logit=st.floats(-20.0, 20.0).filter(lambda a: abs(a) > 1e-3), x=st.integers(0, 5))
def test_derivatives_equal_numpyro_away_from_the_defect(logit, x):
    for make, value in ((lambda a: dist.Bernoulli(logits=a), float(x % 2)),
                        (lambda a: dist.Binomial(5, logits=a), float(x))):  # fmt: skip
        ours = float(jax.grad(lambda a, m=make, v=value: ppl.log_prob(m(a), v))(logit))
        theirs = float(jax.grad(lambda a, m=make, v=value: m(a).log_prob(v))(logit))
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


# ------------------------------------------------- estimators at logits exactly 0

F = {0.0: 1.5, 1.0: -2.0}  # f(b), an arbitrary cost of the sampled bit


def _bit_objective(strategy):
    @ppl.expectation
    def objective(params):
        b = ppl.sample(dist.Bernoulli(logits=params["a"]), strategy, name="b")
        return jnp.where(b > 0, F[1.0], F[0.0])

    return objective


EXACT_GRADIENT = 0.25 * (F[1.0] - F[0.0])  # sigmoid'(0) (f(1) - f(0))


def test_enum_gradient_at_logits_zero_is_exact():
    grads = _bit_objective(ppl.enum).grad_estimate(jax.random.key(0), {"a": jnp.zeros(())})
    np.testing.assert_allclose(float(grads[0]["a"]), EXACT_GRADIENT, rtol=1e-6)


@pytest.mark.parametrize(
    "strategy", [ppl.reinforce, ppl.leave_one_out(3)], ids=["reinforce", "leave_one_out"]
)
def test_score_function_gradient_at_logits_zero_is_exact(strategy):
    objective = _bit_objective(strategy)
    keys = jax.random.split(jax.random.key(1), 20_000)
    grads = jax.vmap(lambda k: objective.grad_estimate(k, {"a": jnp.zeros(())})[0]["a"])(keys)
    grads = np.asarray(grads, np.float64)
    se = grads.std(ddof=1) / math.sqrt(grads.size)
    # NumPyro's score (1 at b = 1, 0 at b = 0) would give 0.5 f(1) = -1.0 here
    assert abs(grads.mean() - EXACT_GRADIENT) <= 4 * se, (grads.mean(), EXACT_GRADIENT, se)


def test_density_and_sim_log_density_are_exact_at_logits_zero():
    def program(a):
        numpyro.sample("b", dist.Bernoulli(logits=a))
        numpyro.sample("k", dist.Binomial(4, logits=a), obs=3.0)

    def log_density(a):
        return ppl.density(program, {"b": jnp.asarray(1.0)}, a)

    # d/da [log sigmoid(a) + 3 a - 4 softplus(a)] at 0 = 0.5 + 3 - 2
    np.testing.assert_allclose(float(jax.grad(log_density)(0.0)), 1.5, rtol=1e-6)

    @ppl.expectation
    def negative_log_density(params):
        return -ppl.sim(program, params["a"], strategies={"b": ppl.enum}).log_density

    # E[-log q(b)] - log p(k | a): the entropy is flat at 0, the observed term gives -(3 - 2)
    grads = negative_log_density.grad_estimate(jax.random.key(2), {"a": jnp.zeros(())})
    np.testing.assert_allclose(float(grads[0]["a"]), -1.0, rtol=1e-6, atol=1e-7)
