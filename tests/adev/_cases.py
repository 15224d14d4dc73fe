"""Programs with exactly known expectations, shared by the ADEV test modules.

Each case is a program ``fn(theta) -> scalar`` using ``ppl.sample`` and a function
``exact(theta)`` giving ``E[fn(theta)]`` in closed form or by exhaustive enumeration;
the exact gradient is ``jax.grad(exact)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

import ppl

sigmoid = jax.nn.sigmoid
softplus = jax.nn.softplus


class Case(NamedTuple):
    name: str
    program: Callable
    exact: Callable
    theta: jnp.ndarray


def _f_bern(b):
    return (3.0 * b + 1.0) ** 2


def _normal_square(strategy):
    def program(theta):
        x = ppl.sample(dist.Normal(theta[0], jnp.exp(theta[1])), strategy, name="x")
        return x**2 + x

    return program, lambda t: t[0] ** 2 + jnp.exp(2 * t[1]) + t[0]


def _bernoulli(strategy):
    def program(theta):
        b = ppl.sample(dist.Bernoulli(logits=theta[0]), strategy, name="b")
        return _f_bern(b)

    def exact(t):
        p = sigmoid(t[0])
        return p * _f_bern(1.0) + (1 - p) * _f_bern(0.0)

    return program, exact


_TABLE = jnp.array([1.0, -2.0, 4.0, 0.5])


def _categorical(strategy):
    def program(theta):
        c = ppl.sample(dist.Categorical(logits=theta), strategy, name="c")
        return _TABLE[c]

    return program, lambda t: jnp.sum(jax.nn.softmax(t) * _TABLE)


def _poisson(strategy):
    def program(theta):
        n = ppl.sample(dist.Poisson(jnp.exp(theta[0])), strategy, name="n")
        return n**2

    def exact(t):
        rate = jnp.exp(t[0])
        return rate + rate**2

    return program, exact


def _geometric(strategy):
    def program(theta):
        n = ppl.sample(dist.Geometric(probs=sigmoid(theta[0])), strategy, name="n")
        return n + 0.5 * n**2

    def exact(t):
        p = sigmoid(t[0])  # failures before the first success
        mean = (1 - p) / p
        second = (1 - p) * (2 - p) / p**2
        return mean + 0.5 * second

    return program, exact


def _binomial(strategy):
    def program(theta):
        n = ppl.sample(dist.Binomial(4, probs=sigmoid(theta[0])), strategy, name="n")
        return n**2

    def exact(t):
        p = sigmoid(t[0])
        return 4 * p * (1 - p) + (4 * p) ** 2

    return program, exact


def _vector_bernoulli(strategy):
    """A site with batch shape (3,): enum enumerates the 8 joint values."""

    def program(theta):
        b = ppl.sample(dist.Bernoulli(logits=theta), strategy, name="b")
        return jnp.sum(b) ** 2 + b[0] * b[2]

    def exact(t):
        p = sigmoid(t)
        mean, var = jnp.sum(p), jnp.sum(p * (1 - p))
        return var + mean**2 + p[0] * p[2]

    return program, exact


def _reparam_family():
    cases = []

    def mvn(theta):
        scale_tril = jnp.array([[jnp.exp(theta[2]), 0.0], [theta[3], 1.0]])
        x = ppl.sample(dist.MultivariateNormal(theta[:2], scale_tril=scale_tril), ppl.reparam)
        return jnp.sum(x**2)

    def mvn_exact(t):
        scale_tril = jnp.array([[jnp.exp(t[2]), 0.0], [t[3], 1.0]])
        return jnp.sum(t[:2] ** 2) + jnp.trace(scale_tril @ scale_tril.T)

    cases.append(
        Case("reparam-MultivariateNormal", mvn, mvn_exact, jnp.array([0.3, -0.5, 0.2, 0.4]))
    )

    def lowrank(theta):
        d = dist.LowRankMultivariateNormal(theta[:2], theta[2:4].reshape(2, 1), jnp.exp(theta[4:6]))
        return jnp.sum(ppl.sample(d, ppl.reparam) ** 2)

    def lowrank_exact(t):
        factor = t[2:4].reshape(2, 1)
        return jnp.sum(t[:2] ** 2) + jnp.sum(factor**2) + jnp.sum(jnp.exp(t[4:6]))

    cases.append(
        Case(
            "reparam-LowRankMultivariateNormal",
            lowrank,
            lowrank_exact,
            jnp.array([0.3, -0.5, 0.7, 0.2, 0.1, -0.3]),
        )
    )

    def uniform(theta):
        x = ppl.sample(dist.Uniform(theta[0], theta[0] + jnp.exp(theta[1])), ppl.reparam)
        return x**2

    def uniform_exact(t):
        a, b = t[0], t[0] + jnp.exp(t[1])
        return (a**2 + a * b + b**2) / 3

    cases.append(Case("reparam-Uniform", uniform, uniform_exact, jnp.array([0.4, 0.1])))

    def lognormal(theta):
        return ppl.sample(dist.LogNormal(theta[0], jnp.exp(theta[1])), ppl.reparam)

    cases.append(
        Case(
            "reparam-LogNormal",
            lognormal,
            lambda t: jnp.exp(t[0] + jnp.exp(2 * t[1]) / 2),
            jnp.array([0.2, -0.7]),
        )
    )

    def student(theta):
        x = ppl.sample(dist.StudentT(5.0, theta[0], jnp.exp(theta[1])), ppl.reparam)
        return x**2

    cases.append(
        Case(
            "reparam-StudentT",
            student,
            lambda t: t[0] ** 2 + jnp.exp(2 * t[1]) * 5 / 3,
            jnp.array([0.5, -0.4]),
        )
    )

    def gamma(theta):
        x = ppl.sample(dist.Gamma(jnp.exp(theta[0]), jnp.exp(theta[1])), ppl.reparam)
        return x**2

    def gamma_exact(t):
        a, b = jnp.exp(t[0]), jnp.exp(t[1])
        return a * (a + 1) / b**2

    cases.append(Case("reparam-Gamma", gamma, gamma_exact, jnp.array([0.8, 0.3])))

    def beta(theta):
        x = ppl.sample(dist.Beta(jnp.exp(theta[0]), jnp.exp(theta[1])), ppl.reparam)
        return x**2

    def beta_exact(t):
        a, b = jnp.exp(t[0]), jnp.exp(t[1])
        return a * (a + 1) / ((a + b) * (a + b + 1))

    cases.append(Case("reparam-Beta", beta, beta_exact, jnp.array([0.5, 0.2])))

    def dirichlet(theta):
        x = ppl.sample(dist.Dirichlet(jnp.exp(theta)), ppl.reparam)
        return x[0] ** 2 + x[1]

    def dirichlet_exact(t):
        a = jnp.exp(t)
        total = jnp.sum(a)
        return a[0] * (a[0] + 1) / (total * (total + 1)) + a[1] / total

    cases.append(Case("reparam-Dirichlet", dirichlet, dirichlet_exact, jnp.array([0.5, 0.1, -0.2])))

    def transformed(theta):
        base = dist.Normal(theta[0], jnp.exp(theta[1]))
        d = dist.TransformedDistribution(base, dist.transforms.ExpTransform())
        return ppl.sample(d, ppl.reparam)

    cases.append(
        Case(
            "reparam-TransformedDistribution",
            transformed,
            lambda t: jnp.exp(t[0] + jnp.exp(2 * t[1]) / 2),
            jnp.array([0.2, -0.7]),
        )
    )

    def independent(theta):
        x = ppl.sample(dist.Normal(theta, 1.0).to_event(1), ppl.reparam)
        return jnp.sum(x**2)

    cases.append(
        Case(
            "reparam-Independent",
            independent,
            lambda t: jnp.sum(t**2) + 3.0,
            jnp.array([0.1, -0.3, 0.6]),
        )
    )
    return cases


def _programs():
    """Programs with structure: dependent sites, cond, scan, while, particles."""
    cases = []

    def dependent(strategy):
        def program(theta):
            z = ppl.sample(dist.Bernoulli(logits=theta[0]), strategy, name="z")
            x = ppl.sample(dist.Normal(jnp.where(z > 0, theta[1], -1.0), 1.0), ppl.reparam)
            return x**2 + z

        def exact(t):
            p = sigmoid(t[0])
            return p * (t[1] ** 2 + 2.0) + (1 - p) * 2.0

        return program, exact

    for label, s in [("enum", ppl.enum), ("reinforce", ppl.reinforce), ("mvd", ppl.mvd)]:
        cases.append(Case(f"dependent-sites-{label}", *dependent(s), jnp.array([0.3, 1.2])))

    def branch(strategy, inner):
        def program(theta):
            z = ppl.sample(dist.Bernoulli(logits=theta[0]), strategy, name="z")

            def yes(t):
                x = ppl.sample(dist.Normal(t[1], 1.0), ppl.reparam, name="x")
                w = ppl.sample(dist.Bernoulli(logits=t[0] - 1.0), inner, name="w")
                return x**2 + 2.0 * w

            def no(t):
                return 3.0 + t[1]

            return jax.lax.cond(z > 0, yes, no, theta)

        def exact(t):
            p, q = sigmoid(t[0]), sigmoid(t[0] - 1.0)
            return p * (t[1] ** 2 + 1.0 + 2.0 * q) + (1 - p) * (3.0 + t[1])

        return program, exact

    for label, outer, inner in [
        ("enum-enum", ppl.enum, ppl.enum),
        ("reinforce-reinforce", ppl.reinforce, ppl.reinforce),
        ("mvd-reinforce", ppl.mvd, ppl.reinforce),
        ("reinforce-mvd", ppl.reinforce, ppl.mvd),
    ]:
        cases.append(
            Case(f"cond-sampled-branch-{label}", *branch(outer, inner), jnp.array([0.2, 0.8]))
        )

    def scan(strategy):
        def program(theta):
            def step(total, _):
                x = ppl.sample(dist.Normal(theta[1], 1.0), ppl.reparam, name="x")
                b = ppl.sample(dist.Bernoulli(logits=theta[0]), strategy, name="b")
                return total + b, x**2

            total, squares = jax.lax.scan(step, 0.0, None, length=10)
            return total**2 + jnp.sum(squares)

        def exact(t):
            p = sigmoid(t[0])
            return 10 * p * (1 - p) + (10 * p) ** 2 + 10 * (t[1] ** 2 + 1.0)

        return program, exact

    cases.append(Case("scan-10-reinforce", *scan(ppl.reinforce), jnp.array([-0.3, 0.5])))
    cases.append(
        Case("scan-10-baseline", *scan(ppl.baseline(ppl.reinforce, 20.0)), jnp.array([-0.3, 0.5]))
    )

    def geometric_loop(strategy):
        def program(theta):
            def body(state):
                n, _ = state
                b = ppl.sample(dist.Bernoulli(logits=theta[0]), strategy, name="flip")
                return n + 1.0, b

            n, _ = jax.lax.while_loop(lambda s: s[1] < 1, body, (0.0, 0))
            return n**2 + theta[1] * n

        def exact(t):
            p = sigmoid(t[0])  # n = number of trials until the first success
            return (2 - p) / p**2 + t[1] / p

        return program, exact

    cases.append(
        Case("while-geometric-reinforce", *geometric_loop(ppl.reinforce), jnp.array([0.4, 0.7]))
    )
    cases.append(
        Case(
            "while-geometric-baseline",
            *geometric_loop(ppl.baseline(ppl.reinforce, 3.0)),
            jnp.array([0.4, 0.7]),
        )
    )

    def particles_reparam(theta):
        xs = ppl.particles(lambda: ppl.sample(dist.Normal(theta[0], jnp.exp(theta[1]))), 4)()
        return jnp.mean(xs) ** 2

    cases.append(
        Case(
            "particles-reparam",
            particles_reparam,
            lambda t: t[0] ** 2 + jnp.exp(2 * t[1]) / 4,
            jnp.array([0.5, -0.2]),
        )
    )

    def particles_reinforce(theta):
        bs = ppl.particles(lambda: ppl.sample(dist.Bernoulli(logits=theta[0]), ppl.reinforce), 4)()
        return jnp.mean(bs) ** 2

    def particles_reinforce_exact(t):
        p = sigmoid(t[0])
        return p * (1 - p) / 4 + p**2

    cases.append(
        Case(
            "particles-reinforce", particles_reinforce, particles_reinforce_exact, jnp.array([0.3])
        )
    )

    def vmapped(theta):
        xs = jax.vmap(lambda m: ppl.sample(dist.Normal(m, 1.0)))(theta)
        bs = jax.vmap(lambda m: ppl.sample(dist.Bernoulli(logits=m), ppl.reinforce))(theta)
        return jnp.sum(xs**2) + jnp.sum(bs) ** 2

    def vmapped_exact(t):
        p = sigmoid(t)
        return jnp.sum(t**2 + 1.0) + jnp.sum(p * (1 - p)) + jnp.sum(p) ** 2

    cases.append(Case("vmap-batched-params", vmapped, vmapped_exact, jnp.array([0.3, -0.6, 1.1])))

    def mixed(theta):
        z = ppl.sample(dist.Bernoulli(logits=theta[0]), ppl.enum, name="z")
        c = ppl.sample(dist.Categorical(logits=theta[1:4]), ppl.reinforce, name="c")
        x = ppl.sample(dist.Normal(theta[4] * z, 1.0), ppl.reparam, name="x")
        n = ppl.sample(dist.Poisson(jnp.exp(theta[5])), ppl.mvd, name="n")
        return _TABLE[c] * x**2 + z + n * x

    def mixed_exact(t):
        p = sigmoid(t[0])
        table = jnp.sum(jax.nn.softmax(t[1:4]) * _TABLE[:3])
        second = p * (t[4] ** 2 + 1.0) + (1 - p) * 1.0
        mean_x = p * t[4]
        return table * second + p + jnp.exp(t[5]) * mean_x

    cases.append(
        Case("mixed-strategies", mixed, mixed_exact, jnp.array([0.2, 0.1, -0.4, 0.3, 0.9, -0.5]))
    )

    def costs(theta):
        ppl.add_cost(theta[1] * 2.0)
        b = ppl.sample(dist.Bernoulli(logits=theta[0]), ppl.reinforce, name="b")
        ppl.add_cost(b * theta[1])
        return 1.0 + b

    def costs_exact(t):
        p = sigmoid(t[0])
        return 2.0 * t[1] + p * t[1] + 1.0 + p

    cases.append(Case("add-cost", costs, costs_exact, jnp.array([0.4, 1.5])))

    def nested(theta):
        @jax.jit
        def inner(t):
            x = ppl.sample(dist.Normal(t[0], 1.0), name="x")
            b = ppl.sample(dist.Bernoulli(logits=t[1]), ppl.enum, name="b")
            return softplus(x) * 0.0 + x**2 + b

        return inner(theta) + jax.nn.relu(theta[0])

    def nested_exact(t):
        return t[0] ** 2 + 1.0 + sigmoid(t[1]) + jax.nn.relu(t[0])

    cases.append(Case("nested-jit-custom-jvp", nested, nested_exact, jnp.array([0.6, -0.3])))

    def two_enum(theta):
        a = ppl.sample(dist.Bernoulli(logits=theta[0]), ppl.enum, name="a")
        b = ppl.sample(dist.Bernoulli(logits=theta[1] + a), ppl.enum, name="b")
        return (a + 2.0 * b) ** 2

    def two_enum_exact(t):
        pa = sigmoid(t[0])
        total = 0.0
        for a in (0.0, 1.0):
            pb = sigmoid(t[1] + a)
            wa = pa if a else 1 - pa
            total += wa * (pb * (a + 2.0) ** 2 + (1 - pb) * a**2)
        return total

    cases.append(Case("sequential-enum", two_enum, two_enum_exact, jnp.array([0.3, -0.8])))

    def three_mvd(theta):
        a = ppl.sample(dist.Bernoulli(logits=theta[0]), ppl.mvd, name="a")
        b = ppl.sample(dist.Bernoulli(logits=theta[1] - a), ppl.mvd, name="b")
        c = ppl.sample(dist.Bernoulli(logits=theta[0] + a * b), ppl.mvd, name="c")
        x = ppl.sample(dist.Normal(theta[1] * c, 1.0), ppl.reparam, name="x")
        return (a + 2.0 * b - c) ** 2 + x**2

    def three_mvd_exact(t):
        total = 0.0
        for a in (0.0, 1.0):
            for b in (0.0, 1.0):
                for c in (0.0, 1.0):
                    pa, pb, pc = sigmoid(t[0]), sigmoid(t[1] - a), sigmoid(t[0] + a * b)
                    w = (pa if a else 1 - pa) * (pb if b else 1 - pb) * (pc if c else 1 - pc)
                    total += w * ((a + 2.0 * b - c) ** 2 + (t[1] * c) ** 2 + 1.0)
        return total

    cases.append(Case("sequential-mvd", three_mvd, three_mvd_exact, jnp.array([0.3, -0.5])))

    def mvd_then_structure(theta):
        """The off-sample values of the first site run every later construct in primal
        mode: an enum site in a jit, a scan, a cond holding an enum site, a while loop."""
        z = ppl.sample(dist.Bernoulli(logits=theta[0]), ppl.mvd, name="z")

        @jax.jit
        def inner(t, z):
            return ppl.sample(dist.Bernoulli(logits=t[1] + z), ppl.enum, name="b")

        b = inner(theta, z)

        def step(total, _):
            w = ppl.sample(dist.Bernoulli(logits=theta[0] - z), ppl.reinforce, name="w")
            return total + w, None

        total, _ = jax.lax.scan(step, 0.0, None, length=3)

        def yes(t):
            return 2.0 * ppl.sample(dist.Bernoulli(logits=t[1]), ppl.enum, name="e")

        c = jax.lax.cond(z > 0, yes, lambda t: 0.5 * t[1], theta)

        def body(state):
            n, _ = state
            flip = ppl.sample(dist.Bernoulli(logits=theta[1]), ppl.reinforce, name="flip")
            return n + 1.0, flip

        n, _ = jax.lax.while_loop(lambda s: s[1] < 1, body, (0.0, 0))
        return (z + b) ** 2 + total**2 + c + n * (1.0 + z)

    def mvd_then_structure_exact(t):
        p, s = sigmoid(t[0]), sigmoid(t[1])
        total = 0.0
        for z in (0.0, 1.0):
            q, r = sigmoid(t[1] + z), sigmoid(t[0] - z)
            value = z**2 + 2 * z * q + q + 3 * r * (1 - r) + 9 * r**2
            value += 2.0 * s if z else 0.5 * t[1]
            value += (1.0 + z) / s
            total += (p if z else 1 - p) * value
        return total

    cases.append(
        Case(
            "mvd-then-structure",
            mvd_then_structure,
            mvd_then_structure_exact,
            jnp.array([0.2, 0.6]),
        )
    )
    return cases


def all_cases() -> list[Case]:
    """Every (strategy, distribution) pair and structured program in the suite."""
    cases = []
    for label, strategy in [
        ("reparam", ppl.reparam),
        ("reinforce", ppl.reinforce),
        ("baseline", ppl.baseline(ppl.reinforce, 1.0)),
        ("mvd", ppl.mvd),
    ]:
        cases.append(Case(f"{label}-Normal", *_normal_square(strategy), jnp.array([0.4, -0.3])))
    for label, strategy in [
        ("reinforce", ppl.reinforce),
        ("baseline", ppl.baseline(ppl.reinforce, 5.0)),
        ("enum", ppl.enum),
        ("mvd", ppl.mvd),
        ("leave_one_out", ppl.leave_one_out(4)),
    ]:
        cases.append(Case(f"{label}-Bernoulli", *_bernoulli(strategy), jnp.array([0.3])))
    for label, strategy in [("reinforce", ppl.reinforce), ("enum", ppl.enum), ("mvd", ppl.mvd)]:
        cases.append(
            Case(f"{label}-Categorical", *_categorical(strategy), jnp.array([0.2, -0.5, 0.1, 0.4]))
        )
        cases.append(
            Case(
                f"{label}-Bernoulli-batch",
                *_vector_bernoulli(strategy),
                jnp.array([0.2, -0.5, 0.7]),
            )
        )
    for label, strategy in [("reinforce", ppl.reinforce), ("enum", ppl.enum)]:
        cases.append(Case(f"{label}-Binomial", *_binomial(strategy), jnp.array([0.3])))
    for label, strategy in [("reinforce", ppl.reinforce), ("mvd", ppl.mvd)]:
        cases.append(Case(f"{label}-Poisson", *_poisson(strategy), jnp.array([0.5])))
        cases.append(Case(f"{label}-Geometric", *_geometric(strategy), jnp.array([0.6])))
    cases.append(
        Case("leave_one_out-Normal", *_normal_square(ppl.leave_one_out(3)), jnp.array([0.4, -0.3]))
    )
    return cases + _reparam_family() + _programs()
