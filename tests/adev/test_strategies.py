"""User-defined strategies, learned baselines, and less common control flow."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

import ppl
from tests.adev.test_unbiased import _keys, _within

sg = jax.lax.stop_gradient


class ControlVariateReinforce(ppl.Strategy):
    """REINFORCE with the control variate ``c(x) = a x`` whose mean ``a E[x]`` is known."""

    slope: float = 1.0

    def estimate(self, key, distribution, kont):
        x = sg(distribution.sample(key))
        f = kont(x)
        control = self.slope * x
        return (
            f
            + sg(f - control) * ppl.score(distribution, x)
            + self.slope * (distribution.mean - sg(distribution.mean))
        )


def test_user_defined_strategy_is_unbiased_and_reduces_variance():
    def make(strategy):
        def program(theta):
            x = ppl.sample(dist.Normal(theta[0], 1.0), strategy, name="x")
            return 2.0 * x + 0.1 * x**2

        return ppl.expectation(program)

    theta = jnp.array([0.7])
    exact_grad = np.array([2.0 + 0.2 * 0.7])
    custom = jax.vmap(make(ControlVariateReinforce(2.0)).grad_estimate, (0, None))(_keys(3), theta)[
        0
    ]
    plain = jax.vmap(make(ppl.reinforce).grad_estimate, (0, None))(_keys(3), theta)[0]
    _within(custom, exact_grad, "custom strategy gradient")
    assert np.var(custom) < 0.5 * np.var(plain)


def test_learned_baseline_gets_the_fitting_gradient():
    """With learn=True, b's gradient estimates E[f] - b, f the costs that depend on the
    site; θ's stays unbiased."""

    def program(theta, b):
        x = ppl.sample(
            dist.Bernoulli(logits=theta[0]), ppl.baseline(ppl.reinforce, b, learn=True), name="x"
        )
        ppl.add_cost(100.0)  # cannot depend on x: not part of what b fits
        ppl.add_cost(10.0 * x)  # depends on x: part of it
        return 4.0 * x + 1.0

    objective = ppl.expectation(program)
    theta, b = jnp.array([0.2]), jnp.asarray(0.5)
    _, (g_theta, g_b) = jax.vmap(objective.value_and_grad_estimate, (0, None, None))(
        _keys(4), theta, b
    )
    p = jax.nn.sigmoid(0.2)
    _within(g_theta, np.array([14.0 * p * (1 - p)]), "θ gradient with a learned baseline")
    _within(g_b, np.array(14.0 * p + 1.0 - 0.5), "baseline gradient")

    def fixed(theta, b):
        return program(theta, jax.lax.stop_gradient(b))

    _, (_, g_fixed) = ppl.expectation(fixed).value_and_grad_estimate(jax.random.key(0), theta, b)
    assert g_fixed == 0.0


def test_switch_on_an_enumerated_categorical():
    def program(theta):
        c = ppl.sample(dist.Categorical(logits=theta[:3]), ppl.enum, name="c")
        branches = [
            lambda t: ppl.sample(dist.Normal(t[3], 1.0), name="x") ** 2,
            lambda t: 2.0 * t[3],
            lambda t: jnp.asarray(5.0) + ppl.sample(dist.Bernoulli(logits=t[3]), ppl.mvd),
        ]
        return jax.lax.switch(c, branches, theta)

    def exact(t):
        w = jax.nn.softmax(t[:3])
        return w[0] * (t[3] ** 2 + 1) + w[1] * 2 * t[3] + w[2] * (5 + jax.nn.sigmoid(t[3]))

    theta = jnp.array([0.1, -0.3, 0.4, 0.8])
    objective = ppl.expectation(program)
    values, (grads,) = jax.vmap(objective.value_and_grad_estimate, (0, None))(_keys(5), theta)
    _within(values, np.asarray(exact(theta)), "switch value")
    _within(grads, np.asarray(jax.grad(exact)(theta)), "switch gradient")


def test_sites_inside_checkpoint_and_custom_vjp_are_inlined():
    @jax.custom_vjp
    def noisy_square(m):
        return ppl.sample(dist.Normal(m, 1.0), name="inside_vjp") ** 2

    noisy_square.defvjp(lambda m: (noisy_square(m), None), lambda _, g: (g,))

    def program(theta):
        a = jax.checkpoint(lambda t: ppl.sample(dist.Normal(t[0], 1.0), name="in_remat") ** 2)(
            theta
        )
        return a + noisy_square(theta[1])

    def exact(t):
        return t[0] ** 2 + 1 + t[1] ** 2 + 1

    theta = jnp.array([0.3, -0.6])
    objective = ppl.expectation(program)
    values, (grads,) = jax.vmap(objective.value_and_grad_estimate, (0, None))(_keys(6), theta)
    _within(values, np.asarray(exact(theta)), "inlined value")
    _within(grads, np.asarray(jax.grad(exact)(theta)), "inlined gradient")


def test_fori_loop_with_traced_bounds_is_a_while_loop():
    def program(theta, steps):
        def body(i, total):
            b = ppl.sample(dist.Bernoulli(logits=theta[0]), ppl.reinforce, name="b")
            ppl.add_cost(theta[1] * b)
            return total + b

        total = jax.lax.fori_loop(0, steps, body, 0)
        return (total * 1.0) ** 2

    def exact(t):
        p = jax.nn.sigmoid(t[0])
        return 4 * p * (1 - p) + (4 * p) ** 2 + 4 * p * t[1]

    theta = jnp.array([0.3, 0.5])
    objective = ppl.expectation(program)
    values, (grads, _) = jax.vmap(objective.value_and_grad_estimate, (0, None, None))(
        _keys(7), theta, jnp.asarray(4)
    )
    _within(values, np.asarray(exact(theta)), "fori_loop value")
    _within(grads, np.asarray(jax.grad(exact)(theta)), "fori_loop gradient")


def test_leave_one_out_particles_draw_the_rest_independently():
    """Each particle runs the rest of the program with its own randomness."""

    def program(p):
        a = ppl.sample(dist.Bernoulli(probs=p), ppl.leave_one_out(8), name="a")

        @jax.jit  # the continuation crosses a nested jit
        def rest(a):
            return a + ppl.sample(dist.Normal(0.0, 1.0), ppl.reinforce, name="b")

        return rest(a)

    values = jax.vmap(ppl.expectation(program).estimate, (0, None))(_keys(8), 0.5)
    # independent particles: Var = (0.25 + 1) / 8; shared draws of b would give 1 + 0.25/8
    variance, n = float(np.var(values)), values.shape[0]
    assert abs(variance - 1.25 / 8) < 4 * (1.25 / 8) * np.sqrt(2 / (n - 1)) * 1.5


def test_mvd_on_masked_and_expanded_sites_agrees_with_reinforce():
    """A mask gives its masked-out coordinates no derivative under every strategy."""
    import numpyro
    from numpyro import handlers

    weights = jnp.array([1.0, 2.0, 4.0])

    def objective(strategy):
        def guide(params):
            with handlers.mask(mask=jnp.array([True, False, True])):
                numpyro.sample("b", dist.Bernoulli(params["q"]).expand([3]),
                               infer={"strategy": strategy})  # fmt: skip
            with handlers.mask(mask=jnp.array([False, True])):
                numpyro.sample("n", dist.Normal(params["m"], 1.0).expand([2]),
                               infer={"strategy": strategy})  # fmt: skip

        @ppl.expectation
        def expected(params):
            choices = ppl.sim(guide, params).choices
            return jnp.sum(choices["b"] * weights) + jnp.sum(choices["n"] ** 2)

        return expected

    params = {"q": jnp.asarray(0.3), "m": jnp.asarray(0.5)}
    exact = {"q": 1.0 + 4.0, "m": 2 * 0.5}  # only the kept coordinates: d/dq, d/dm of E f
    for strategy in (ppl.mvd, ppl.reinforce):
        grads = jax.vmap(objective(strategy).grad_estimate, (0, None))(_keys(5), params)
        for name in params:
            _within(grads[0][name], np.asarray(exact[name]), f"{strategy} {name}")
