"""Gradient-estimation strategies for sample sites.

A strategy says how ``d/dθ E_{x ~ p_θ}[f(x)]`` is estimated at one site, where ``f`` is
the rest of the program (the *continuation*). Every rule is written as a **surrogate**:
a scalar JAX expression whose value is an unbiased estimate of ``E[f(x)]`` and whose
JAX derivative is an unbiased estimate of its gradient. ``stop_gradient`` (``sg``)
marks the parts that are constants for differentiation. JAX then gives forward mode
(``jax.jvp``) and reverse mode (``jax.grad``) of the same estimator.

Two kinds of rules:

* `LocalStrategy` draws a value and returns a *score* (a zero-valued term whose
  gradient is ``∇ log p_θ(x)``) and an optional baseline; the interpreter multiplies the
  score by the value of the rest of the program. These work everywhere, loops included.
* `Strategy` (``estimate``) receives the continuation ``kont`` itself and may call
  it on any values (enumeration, measure-valued derivatives). At sites under
  ``jax.vmap``/``ppl.particles`` and inside ``lax.scan`` the interpreter lifts
  ``estimate`` lane by lane (each step of a loop is a lane): ``kont`` then returns the
  value of the rest of the program with that lane changed, without derivative, and the
  derivative of the lane's estimate is kept (see ``_interpreter._lane_terms``).
  ``while_loop`` refuses such sites.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist

from ppl._numpyro import mask_of
from ppl.adev._log_prob import log_prob

sg = jax.lax.stop_gradient

_REGISTRY: dict[str, type[Strategy]] = {}

Continuation = Callable[..., jax.Array]  # kont(value, salt=None, primal=False) -> scalar


_scores = threading.local()  # .elementwise: score() keeps the batch dimensions


def score(distribution: Any, value: jax.Array) -> jax.Array:
    """The zero-valued REINFORCE term ``log p_θ(x) - sg(log p_θ(x))`` for ``value``.

    Its value is 0 and its gradient is ``∇_θ log p_θ(x)``, summed over the batch (exact
    also where NumPyro's own derivative is not, see `ppl.log_prob`). Inside a
    `LocalStrategy`'s ``draw`` it keeps the batch dimensions instead (one term per
    element), which lets the interpreter multiply each element's score by the costs
    that element can change (see `ppl.plate`); sum it there if a rule needs a scalar.
    """
    log_p = log_prob(distribution, sg(value))
    if not getattr(_scores, "elementwise", False):
        log_p = jnp.sum(log_p)
    return log_p - sg(log_p)


@contextlib.contextmanager
def elementwise_scores() -> Iterator[None]:
    """`score` keeps the batch dimensions while this is active (the interpreter's draws)."""
    before = getattr(_scores, "elementwise", False)
    _scores.elementwise = True
    try:
        yield
    finally:
        _scores.elementwise = before


class Strategy(eqx.Module):
    """Base class of gradient-estimation strategies.

    Subclasses implement `estimate`: given a key, the site's distribution and the
    continuation ``kont`` (a function from a value of the site to the scalar surrogate
    of the rest of the program), return a scalar whose value is an unbiased estimate
    of ``E_{x ~ distribution}[kont(x)]`` and whose gradient is an unbiased estimate of
    that expectation's gradient.

    A strategy is an ``equinox.Module``: array fields (a baseline value, learned
    parameters) travel as data, other fields must be marked ``eqx.field(static=True)``.
    """

    needs_continuation: ClassVar[bool] = True

    #: The strategy's name: its text form (``ppl compare`` variant files and command
    #: line, `ppl.comparison.parse_strategy`) and the name of its constructor in ``ppl``. A
    #: subclass that sets it is registered in `STRATEGIES` and exported by ``ppl``.
    name: ClassVar[str | None] = None
    #: The written forms listed in parse errors; empty: the bare name.
    text_forms: ClassVar[tuple[str, ...]] = ()
    #: Whether ``ppl.sim`` may draw the site in place, as ``distribution.rsample(key)``,
    #: instead of rewriting it into a ``ppl.sample`` site (pathwise strategies only).
    draws_in_place: ClassVar[bool] = False
    #: Whether the strategy forms per-element coefficients from the costs after the
    #: site (`LeaveOneOut`): ``ppl.sim`` then keeps the log weight split by site.
    per_element_costs: ClassVar[bool] = False
    #: Whether the value drawn carries no derivative (score-function and detached
    #: draws): ``ppl.sim`` then checks that nothing differentiates through it.
    score_only: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is not None:
            if name in _REGISTRY and _REGISTRY[name].__qualname__ != cls.__qualname__:
                raise ValueError(
                    f"strategy name {name!r} is taken by {_REGISTRY[name].__qualname__}."
                )
            _REGISTRY[name] = cls
        if "draws_in_place" not in cls.__dict__ and {"draw", "estimate"} & set(cls.__dict__):
            cls.draws_in_place = False  # a subclass that draws its own way is not rsample

    @classmethod
    def from_text(cls, *args: Any, **kwargs: Any) -> Strategy:
        """The strategy that the text ``name(*args, **kwargs)`` (or ``name``) denotes.

        The arguments are already read: numbers, booleans and strategies. The default
        takes none and returns ``cls()``.

        Raises:
            ValueError: saying what is wrong with the arguments.
        """
        if args or kwargs:
            raise ValueError(f"{cls.name} takes no arguments")
        return cls()

    def to_text(self) -> str:
        """The text that `ppl.comparison.parse_strategy` reads back as this strategy.

        Raises:
            ValueError: if the strategy holds a value that text cannot write (an
                array-valued baseline).
        """
        if self.name is None:
            raise ValueError(f"{type(self).__name__} has no text form (no name).")
        return self.name

    def check(self, distribution: Any, site: Any) -> None:
        """Raise ``ValueError`` naming ``site`` if this strategy cannot apply."""

    def estimate(self, key: jax.Array, distribution: Any, kont: Continuation) -> jax.Array:
        """The surrogate estimate of ``E_{x ~ distribution}[kont(x)]`` at this site.

        Args:
            key: a PRNG key for this site.
            distribution: the site's NumPyro distribution (its parameters may carry
                gradients).
            kont: the rest of the program as a function of the site's value; it
                returns a scalar surrogate and may be called (or ``jax.vmap``-ed) on
                any number of values. Calls share the random draws of the rest of the
                program (common random numbers); ``kont(value, salt)`` with distinct
                integers ``salt`` gives each call independent draws instead.
                ``kont(value, primal=True)`` evaluates the rest of the program for its
                value only: every later site draws a plain sample (no estimator,
                no nested continuations), so it costs one run of the program; use it
                where the rule discards the gradient (``sg``) of that call.
                Where ``kont.elementwise`` is true (a site outside lanes and loops),
                ``kont(value, salt, elementwise=True)`` returns ``(f, D)``: ``f`` as
                ``kont(value, salt)`` and ``D`` (no derivative, the shape of the site's
                batch) the part of ``f``'s value that element ``e`` of the site can
                change, by data flow and plates (see `ppl.plate`); a score-function
                rule may multiply element ``e``'s score by ``D_e`` minus a baseline
                instead of by ``f`` (Rao-Blackwellization).
                At a site in lanes (``jax.vmap``, ``ppl.particles``) or in a loop,
                ``estimate`` runs once per lane and ``kont`` is that lane's view: the
                rest of the program with only this lane changed, in primal mode,
                without derivative; the rule's derivative must then come from the
                distribution's parameters.

        Returns:
            A scalar: an unbiased estimate of the expectation whose JAX derivative is
            an unbiased estimate of the expectation's derivative.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement estimate().")


class Draw(NamedTuple):
    """What a `LocalStrategy` returns: the value, its score term and baseline."""

    value: jax.Array
    score: jax.Array | None = None
    baseline: jax.Array | None = None


class LocalStrategy(Strategy):
    """A strategy that needs no continuation: it returns a `Draw`.

    The estimate at the site is ``f(x) + sg(f(x) - b) * score`` where ``f`` is the value
    of the rest of the program (``b = 0`` without a baseline): the interpreter collects
    scores instead of calling the continuation, so these sites may sit in loops.
    """

    needs_continuation: ClassVar[bool] = False

    def draw(self, key: jax.Array, distribution: Any) -> Draw:
        """Draw the site's value.

        Args:
            key: a PRNG key for this site.
            distribution: the site's NumPyro distribution.

        Returns:
            A `Draw`: the value (carrying gradients for a pathwise rule), an optional
            zero-valued score term (such as `ppl.score(distribution, value)`) that the
            interpreter multiplies by the value of the rest of the program, and an
            optional baseline subtracted from that value.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement draw().")

    def estimate(self, key: jax.Array, distribution: Any, kont: Continuation) -> jax.Array:
        value, score_term, b = self.draw(key, distribution)
        f = kont(value)
        if score_term is None:
            return f
        b = 0.0 if b is None else jnp.sum(b)
        return f + sg(f - b) * jnp.sum(score_term)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _require(condition: bool, site: Any, message: str) -> None:
    if not condition:
        raise ValueError(f"{site.describe()}: {message}")


class Reparam(LocalStrategy):
    """Reparameterization (pathwise) gradient.

    ``x = g_θ(ε)`` with ``ε`` drawn independently of ``θ``, and
    ``∇_θ E[f(x)] = E[∇_θ f(g_θ(ε))]`` (Kingma & Welling 2014, eq. 7; Rezende et al.
    2014). Uses the distribution's ``rsample``; Gamma, Beta and Dirichlet use NumPyro's
    implicit reparameterization (Figurnov et al. 2018).
    """

    name: ClassVar[str] = "reparam"
    draws_in_place: ClassVar[bool] = True

    def check(self, distribution: Any, site: Any) -> None:
        _require(
            bool(getattr(distribution, "has_rsample", False)),
            site,
            f"strategy reparam needs a reparameterizable distribution (has_rsample), "
            f"and {type(distribution).__name__} is not"
            + (" (it is discrete)" if distribution.support.is_discrete else "")
            + ". Use ppl.reinforce, ppl.baseline(ppl.reinforce, b)"
            + (", ppl.enum or ppl.mvd" if distribution.support.is_discrete else "")
            + " at this site.",
        )

    def draw(self, key: jax.Array, distribution: Any) -> Draw:
        return Draw(distribution.rsample(key))


class Reinforce(LocalStrategy):
    """Score-function (REINFORCE) gradient.

    ``∇_θ E[f(x)] = E[f(x) ∇_θ log p_θ(x)]`` (Williams 1992; Glynn 1990). Works for any
    distribution with a ``log_prob``; ``x`` itself carries no gradient.
    """

    name: ClassVar[str] = "reinforce"
    score_only: ClassVar[bool] = True

    def check(self, distribution: Any, site: Any) -> None:
        _require(hasattr(distribution, "log_prob"), site, "reinforce needs a log_prob.")

    def draw(self, key: jax.Array, distribution: Any) -> Draw:
        value = sg(distribution.sample(key))
        return Draw(value, score(distribution, value))


class Baseline(LocalStrategy):
    """A control variate ``b`` for a score-function strategy.

    ``∇_θ E[f(x)] = E[(f(x) - b) ∇_θ log p_θ(x)]`` for any ``b`` that does not depend on
    ``x`` (Williams 1992; Mnih & Gregor 2014, sec. 3.2). ``b`` may be a constant, a
    value computed from the program's inputs, or a parameter in the objective's
    arguments. With ``learn=True`` the gradient that ``b`` itself receives is
    ``f(x) - b``, the gradient of ``-½ (f(x) - b)²``: ascending it (or descending the
    negated objective, the usual ``loss = -objective``) fits ``b`` to the expected value
    of the rest of the program. With ``learn=False`` (the default) ``b`` gets no gradient.
    """

    strategy: LocalStrategy
    value: jax.Array
    learn: bool = eqx.field(static=True, default=False)

    name: ClassVar[str] = "baseline"
    text_forms: ClassVar[tuple[str, ...]] = (
        "baseline(STRATEGY, VALUE)",
        "baseline(STRATEGY, VALUE, learn=true)",
    )

    @classmethod
    def from_text(cls, strategy: Any, value: Any, learn: Any = False) -> Baseline:
        if not isinstance(strategy, LocalStrategy):
            raise ValueError(
                f"baseline wraps a score-function strategy such as reinforce, not "
                f"{_text_of(strategy)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if not isinstance(learn, bool):
            raise ValueError(f"expected true or false, got {learn!r}")
        return baseline(strategy, float(value), learn=learn)

    @property
    def score_only(self) -> bool:  # type: ignore[override]
        return self.strategy.score_only

    def to_text(self) -> str:
        if jnp.ndim(self.value) != 0 or isinstance(self.value, jax.core.Tracer):
            raise ValueError("a baseline whose value is an array or traced has no text form.")
        learn = ", learn=true" if self.learn else ""
        return f"baseline({self.strategy.to_text()}, {float(self.value)!r}{learn})"

    def check(self, distribution: Any, site: Any) -> None:
        if not isinstance(self.strategy, LocalStrategy):
            raise ValueError(
                f"{site.describe()}: ppl.baseline wraps a score-function strategy such as "
                f"ppl.reinforce, not {type(self.strategy).__name__}."
            )
        self.strategy.check(distribution, site)

    def draw(self, key: jax.Array, distribution: Any) -> Draw:
        value, score_term, _ = self.strategy.draw(key, distribution)
        b = jnp.asarray(self.value, dtype=jnp.result_type(float))
        if self.learn:
            # spread over the score's elements, so that b's gradient is the mean over
            # them of (cost - b), whether or not the scores are kept per element
            share = 1 if score_term is None else max(jnp.size(score_term) // max(jnp.size(b), 1), 1)
            learned = (b - sg(b)) / share
            score_term = learned if score_term is None else score_term + learned
        return Draw(value, score_term, sg(b))


class Enum(Strategy):
    """Exact enumeration of the site's support.

    ``E[f(x)] = Σ_{v ∈ support} p_θ(v) f(v)``, so ``∇_θ E[f(x)] = Σ_v ∇p_θ(v) f(v) +
    p_θ(v) ∇f(v)`` with no sampling at the site (Lew et al. 2023, the ``enum`` rule).
    The continuation runs once per joint value, in parallel (``vmap``); a site with
    batch shape ``B`` and ``n`` values has ``n^|B|`` joint values (at most
    ``max_values``).
    """

    max_values: int = eqx.field(static=True, default=4096)

    name: ClassVar[str] = "enum"
    text_forms: ClassVar[tuple[str, ...]] = ("enum", "enum(max_values=N)")

    @classmethod
    def from_text(cls, max_values: Any = None) -> Enum:
        if max_values is None:
            return cls()
        return cls(max_values=_positive_int(max_values, "max_values"))

    def to_text(self) -> str:
        default = type(self)().max_values
        return "enum" if self.max_values == default else f"enum(max_values={self.max_values})"

    def check(self, distribution: Any, site: Any) -> None:
        _require(
            bool(getattr(distribution, "has_enumerate_support", False)),
            site,
            f"strategy enum needs a finite support (enumerate_support), and "
            f"{type(distribution).__name__} has none. Use ppl.mvd (Poisson, Geometric), "
            f"ppl.reinforce or ppl.baseline(ppl.reinforce, b).",
        )
        support = distribution.enumerate_support(expand=False).shape[0]
        count = support ** math.prod(distribution.batch_shape)
        _require(
            count <= self.max_values,
            site,
            f"enumerating batch shape {distribution.batch_shape} with {support} values "
            f"each gives {count} joint values (more than max_values={self.max_values}). "
            f"Use ppl.mvd or ppl.reinforce, or ppl.Enum(max_values=...) to allow it.",
        )

    def estimate(self, key: jax.Array, distribution: Any, kont: Continuation) -> jax.Array:
        values = _joint_support(distribution)
        log_p = jax.vmap(lambda v: jnp.sum(log_prob(distribution, v)))(values)
        f = jax.vmap(kont)(values)
        return jnp.sum(jnp.exp(log_p) * f)


def _joint_support(distribution: Any) -> jax.Array:
    support = distribution.enumerate_support(expand=False)  # (n, 1, ..., 1, *event)
    n = support.shape[0]
    flat = support.reshape(n, -1) if distribution.event_shape else support.reshape(n)
    batch = distribution.batch_shape
    size = math.prod(batch)
    index = np.array(list(itertools.product(range(n), repeat=size)), dtype=np.int32)
    index = index.reshape(-1, *batch)  # (n**size, *batch)
    return jnp.take(flat, jnp.asarray(index), axis=0)


def _unit(shape: tuple[int, ...], j: jax.Array) -> jax.Array:
    return jnp.zeros(shape, bool).reshape(-1).at[j].set(True).reshape(shape)


class MVD(Strategy):
    """Measure-valued derivatives (weak derivatives).

    ``∂_θ p_θ = c_θ (p⁺_θ - p⁻_θ)`` for two distributions ``p⁺, p⁻``, so
    ``∂_θ E[f(x)] = c_θ (E_{p⁺}[f] - E_{p⁻}[f])`` (Pflug 1989; Mohamed et al. 2020,
    sec. 6, "Monte Carlo Gradient Estimation in Machine Learning", JMLR). Per coordinate
    of the site:

    * Bernoulli(p): ``∂_p E f = f(1) - f(0)``; the sampled value gives one of the two.
    * Categorical(π): ``Σ_i dπ_i (f(i) - f(x))``, using ``Σ_i dπ_i = 0``.
    * Poisson(λ): ``∂_λ E f = E[f(x + 1) - f(x)]``.
    * Geometric(p): ``∂_p E f = (E[f(x)] - E[f(x + x' + 1)]) / p`` with ``x'`` an
      independent Geometric(p) (the negative part is a shifted NegativeBinomial(2, p)).
    * Normal(μ, σ): ``∂_μ E f = E[f(μ + σw) - f(μ - σw)] / (σ√(2π))`` with
      ``w ~ Weibull(√2, 2)``; ``∂_σ E f = (E[f(m)] - E[f(x)]) / σ`` with ``m`` from the
      double-sided Maxwell(μ, σ) (Mohamed et al. 2020, table 2).

    The values off the sample are evaluated without gradient (``sg``), in parallel and
    in primal mode (``kont(v, primal=True)``: later sites just sample), so ``k``
    sequential MVD sites cost ``O(k)`` runs of the program rather than ``2^k``.
    A masked site (``numpyro.handlers.mask``) is drawn from its base distribution and
    its masked-out coordinates get no derivative, as their zero score gives them under
    REINFORCE; an expanded distribution differentiates its base's parameters.
    """

    name: ClassVar[str] = "mvd"

    _kinds: ClassVar[tuple] = (
        dist.BernoulliProbs,
        dist.BernoulliLogits,
        dist.CategoricalProbs,
        dist.CategoricalLogits,
        dist.Poisson,
        dist.GeometricProbs,
        dist.GeometricLogits,
        dist.Normal,
    )

    def check(self, distribution: Any, site: Any) -> None:
        base, _ = _unwrap_mask_and_expand(distribution)
        _require(
            isinstance(base, self._kinds) and not base.event_shape,
            site,
            f"strategy mvd supports Bernoulli, Categorical, Poisson, Geometric and Normal "
            f"(with an empty event shape), not {type(base).__name__}. Use "
            f"ppl.reinforce or ppl.baseline(ppl.reinforce, b).",
        )

    def estimate(self, key: jax.Array, distribution: Any, kont: Continuation) -> jax.Array:
        key_x, key_extra = jax.random.split(key)
        x = getattr(kont, "sample", None)  # a lane's drawn value, whose f is known
        if x is None:
            x = sg(distribution.sample(key_x))
        shape = x.shape
        size = math.prod(shape)
        coords = jnp.arange(size)
        d, mask = _unwrap_mask_and_expand(distribution)
        if isinstance(d, (dist.BernoulliProbs, dist.BernoulliLogits)):
            alts = jax.vmap(lambda j: jnp.where(_unit(shape, j), 1 - x, x))(coords)
            f, f_alt = kont(x), _primal_values(kont, alts)
            sign = jnp.where(x.reshape(-1) > 0, 1.0, -1.0)
            weights = {"probs": sign * (sg(f) - f_alt)}
            params = {"probs": jnp.broadcast_to(d.probs, shape).reshape(-1)}
        elif isinstance(d, (dist.CategoricalProbs, dist.CategoricalLogits)):
            n = d.probs.shape[-1]
            alts = jax.vmap(
                lambda j: jax.vmap(lambda i: jnp.where(_unit(shape, j), i, x))(jnp.arange(n))
            )(coords).reshape(size * n, *shape)
            f, f_alt = kont(x), _primal_values(kont, alts.astype(x.dtype))
            weights = {"probs": f_alt - sg(f)}
            params = {"probs": jnp.broadcast_to(d.probs, (*shape, n)).reshape(-1)}
        elif isinstance(d, dist.Poisson):
            alts = jax.vmap(lambda j: x + _unit(shape, j))(coords)
            f, f_alt = kont(x), _primal_values(kont, alts.astype(x.dtype))
            weights = {"rate": f_alt - sg(f)}
            params = {"rate": jnp.broadcast_to(d.rate, shape).reshape(-1)}
        elif isinstance(d, (dist.GeometricProbs, dist.GeometricLogits)):
            extra = sg(distribution.sample(key_extra))
            alts = jax.vmap(lambda j: x + _unit(shape, j) * (extra + 1))(coords)
            f, f_alt = kont(x), _primal_values(kont, alts.astype(x.dtype))
            p = jnp.broadcast_to(d.probs, shape).reshape(-1)
            weights = {"probs": (sg(f) - f_alt) / sg(p)}
            params = {"probs": p}
        else:  # Normal
            key_w, key_m, key_s = jax.random.split(key_extra, 3)
            loc = jnp.broadcast_to(d.loc, shape)
            scale = jnp.broadcast_to(d.scale, shape)
            w = jnp.sqrt(2.0) * jnp.sqrt(-jnp.log(jax.random.uniform(key_w, shape, minval=1e-38)))
            maxwell = jnp.linalg.norm(jax.random.normal(key_m, (*shape, 3)), axis=-1)
            sign = jnp.where(jax.random.bernoulli(key_s, 0.5, shape), 1.0, -1.0)
            mu, sd = sg(loc), sg(scale)

            def replaced(j: jax.Array, v: jax.Array) -> jax.Array:
                return jnp.where(_unit(shape, j), v, x)

            plus = jax.vmap(lambda j: replaced(j, mu + sd * w))(coords)
            minus = jax.vmap(lambda j: replaced(j, mu - sd * w))(coords)
            dsm = jax.vmap(lambda j: replaced(j, mu + sd * sign * maxwell))(coords)
            f = kont(x)
            f_plus, f_minus, f_dsm = jnp.split(
                _primal_values(kont, jnp.concatenate([plus, minus, dsm])), 3
            )
            sd_flat = sd.reshape(-1)
            weights = {
                "loc": (f_plus - f_minus) / (sd_flat * jnp.sqrt(2.0 * jnp.pi)),
                "scale": (f_dsm - sg(f)) / sd_flat,
            }
            params = {"loc": loc.reshape(-1), "scale": scale.reshape(-1)}
        if mask is not None:
            keep = jnp.broadcast_to(mask, shape).reshape(-1)
            repeat = {k: params[k].shape[0] // size for k in params}  # Categorical: n each
            weights = {k: w * jnp.repeat(keep, repeat[k]) for k, w in weights.items()}
        correction = sum(jnp.sum((params[k] - sg(params[k])) * weights[k]) for k in params)
        return f + correction


def _primal_values(kont: Continuation, values: jax.Array) -> jax.Array:
    """``sg(kont(v, primal=True))`` for each ``v`` in ``values``, in parallel."""
    return sg(jax.vmap(lambda v: kont(v, primal=True))(values))


def _unwrap_mask_and_expand(distribution: Any) -> tuple[Any, Any]:
    """The distribution under NumPyro's mask and expand wrappers, and the mask (or None).

    Neither wrapper changes how a value is drawn: a mask scales the log density (its
    boolean array, or None where the mask is a Python ``True``) and an expanded
    distribution broadcasts its base's parameters.
    """
    mask = None
    while isinstance(distribution, dist.MaskedDistribution | dist.ExpandedDistribution):
        if isinstance(distribution, dist.MaskedDistribution):
            given = mask_of(distribution)
            if given is False:
                given = jnp.asarray(False)
            if given is not True:
                mask = given if mask is None else mask & given
        distribution = distribution.base_dist
    return distribution, mask


class LeaveOneOut(Strategy):
    """REINFORCE over ``num_particles`` particles with leave-one-out baselines.

    Draws ``x_1..x_K`` independently, runs the continuation on each (in parallel) and
    returns ``(1/K) Σ_k [f(x_k) + sg(f(x_k) - b_k) ∇log p_θ(x_k)]`` with
    ``b_k = (1/(K-1)) Σ_{j≠k} f(x_j)`` (Mnih & Rezende 2016, VIMCO, eq. 9; Kool et al.
    2019, "Buy 4 REINFORCE samples, get a baseline for free!").

    Per element where the continuation tells what each element can change (a site
    inside a plate, outside lanes and loops): element ``e``'s score is multiplied by
    ``D_e(x_k) - (1/(K-1)) Σ_{j≠k} D_e(x_j)``, ``D_e`` the costs after the site that
    depend on element ``e`` (see `ppl.plate`).
    """

    num_particles: int = eqx.field(static=True, default=2)

    name: ClassVar[str] = "leave_one_out"
    text_forms: ClassVar[tuple[str, ...]] = ("leave_one_out(N)",)
    per_element_costs: ClassVar[bool] = True
    score_only: ClassVar[bool] = True

    @classmethod
    def from_text(cls, num_particles: Any) -> LeaveOneOut:
        return leave_one_out(_positive_int(num_particles, "leave_one_out's number of particles"))

    def to_text(self) -> str:
        return f"leave_one_out({self.num_particles})"

    def check(self, distribution: Any, site: Any) -> None:
        _require(self.num_particles >= 2, site, "leave_one_out needs num_particles >= 2.")

    def estimate(self, key: jax.Array, distribution: Any, kont: Continuation) -> jax.Array:
        k = self.num_particles
        xs = sg(distribution.sample(key, (k,)))
        salts = jnp.arange(k)  # independent draws of the rest for each particle
        if getattr(kont, "elementwise", False):
            fs, ds = jax.vmap(lambda v, s: kont(v, s, elementwise=True))(xs, salts)
            with elementwise_scores():
                scores = jax.vmap(lambda v: score(distribution, v))(xs)
        else:
            fs = jax.vmap(kont)(xs, salts)
            scores, ds = jax.vmap(lambda v: score(distribution, v))(xs), sg(fs)
        others = (jnp.sum(ds, axis=0) - ds) / (k - 1)
        terms = (ds - others) * scores
        return jnp.mean(fs + jnp.sum(terms.reshape(k, -1), axis=1))


class Detached(LocalStrategy):
    """No gradient estimator: the value is drawn and then treated as data.

    ``x = sg(sample)`` and no score term: the site contributes nothing to the gradient.
    Correct only where the distribution does not depend on differentiated values, or
    where the objective adds the site's score terms itself (as VIMCO does with
    ``Trace.log_density``); resampling indices of SIR use it.
    """

    name: ClassVar[str] = "detached"
    score_only: ClassVar[bool] = True

    def draw(self, key: jax.Array, distribution: Any) -> Draw:
        return Draw(sg(distribution.sample(key)))


reparam = Reparam()
detached = Detached()
reinforce = Reinforce()
enum = Enum()
mvd = MVD()


def baseline(strategy: LocalStrategy, value: Any, *, learn: bool = False) -> Baseline:
    """Wrap a score-function strategy with the control variate ``value``.

    See `Baseline`. ``value`` may be a number, an array computed inside the
    program, or a parameter among the objective's arguments.
    """
    return Baseline(strategy, jnp.asarray(value), learn)


def leave_one_out(num_particles: int) -> LeaveOneOut:
    """REINFORCE over ``num_particles`` particles with leave-one-out baselines."""
    return LeaveOneOut(num_particles)


def default_strategy(distribution: Any) -> Strategy:
    """``reparam`` where the distribution has ``rsample``, otherwise ``reinforce``."""
    return reparam if getattr(distribution, "has_rsample", False) else reinforce


def _text_of(strategy: Any) -> str:
    try:
        return strategy.to_text()
    except (AttributeError, ValueError):
        return type(strategy).__name__


#: The registered strategies, name -> class, in the order they are defined.
STRATEGIES: types.MappingProxyType[str, type[Strategy]] = types.MappingProxyType(_REGISTRY)

# The public names: the base classes, and each registered strategy's class and
# constructor (tests/adev/test_registry.py checks this list against the registry).
__all__ = [
    "Strategy",
    "LocalStrategy",
    "Draw",
    "STRATEGIES",
    "default_strategy",
    "score",
    "Reparam",
    "reparam",
    "Reinforce",
    "reinforce",
    "Baseline",
    "baseline",
    "Enum",
    "enum",
    "MVD",
    "mvd",
    "LeaveOneOut",
    "leave_one_out",
    "Detached",
    "detached",
]
