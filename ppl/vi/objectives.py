"""The objective library: each objective is a few lines on the public constructs.

Every function takes a ``model`` and a ``guide`` (NumPyro programs, or families built
with ``ppl.marginal`` / ``ppl.normalize``) and returns a `ppl.Expectation` of
``(params, *args)`` to be **maximized**. ``params`` is one pytree shared by model and
guide, as in NumPyro's SVI: each program reads its own ``numpyro.param`` names.
``strategies`` is passed to the guide's ``ppl.sim``: one strategy for every site, a
mapping site name -> strategy, or a function of the objective's arguments
``(params, *args, **kwargs)`` returning either (for strategies that depend on the
parameters, such as a learned baseline ``ppl.baseline(ppl.reinforce, b(params, x),
learn=True)``). Particle objectives take ``num_particles``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ppl._util import log_mean_exp
from ppl.adev import (
    Detached,
    Expectation,
    Reparam,
    Strategy,
    add_cost,
    detached,
    expectation,
    particles,
)
from ppl.adev._primitives import _plate_frames
from ppl.gen import Family, density, sim
from ppl.gen._program import density_terms, sim_with_terms
from ppl.parallel import PARTICLES, axis_size, constrain_particles
from ppl.vi._constructs import marginal, normalize

__all__ = [
    "log_weights",
    "resolve_strategies",
    "rws",
    "elbo",
    "iwae",
    "hvi",
    "iwhvi",
    "diwhvi",
    "wake_p",
    "wake_q",
    "vimco",
    "renyi",
    "dreg",
]

sg = jax.lax.stop_gradient

#: A NumPyro program (a function of the model's arguments) or a ``ppl.marginal`` /
#: ``ppl.normalize`` family.
Program = Callable[..., Any] | Family
#: What ``strategies=`` accepts (see the module's docstring).
Strategies = Strategy | Mapping[str, Strategy] | Callable[..., Any] | None


def resolve_strategies(strategies: Strategies, params: Any, *args: Any, **kwargs: Any) -> Any:
    """``strategies`` at these arguments: a function of ``(params, *args, **kwargs)`` is
    called; a strategy, a mapping or ``None`` is returned as it is.

    Raises:
        TypeError: if ``strategies`` is none of those.
    """
    if strategies is None or isinstance(strategies, Strategy | Mapping):
        return strategies
    if callable(strategies):
        return strategies(params, *args, **kwargs)
    raise TypeError(
        f"strategies must be a strategy, a mapping site name -> strategy, a function "
        f"(params, *args, **kwargs) -> either, or None; got {type(strategies).__name__}."
    )


def log_weights(
    model: Program,
    guide: Program,
    params: Any,
    *args: Any,
    num_particles: int = 1,
    strategies: Strategies = None,
    **kwargs: Any,
) -> jax.Array:
    """``log p(x, z_k) - log q(z_k)`` for ``num_particles`` independent draws from the guide.

    The helper every particle objective shares; returns an array ``(num_particles,)``.
    The particles are drawn with ``ppl.particles`` (a ``vmap``); every strategy works
    there, continuation strategies (enum, mvd, leave_one_out) lane by lane (see
    "Particles" in the expectations guide).
    """

    strategies = resolve_strategies(strategies, params, *args, **kwargs)

    def one() -> Any:
        trace = sim(guide, *args, params=params, strategies=strategies, **kwargs)
        return density(model, trace.choices, *args, params=params, **kwargs) - trace.log_density

    # on a mesh with a "particles" axis, the particles are sharded across its devices
    return constrain_particles(particles(one, num_particles)())


def elbo(
    model: Program, guide: Program, *, num_particles: int = 1, strategies: Strategies = None
) -> Expectation:
    """The evidence lower bound, ``E_{z ~ q}[log p(x, z) - log q(z)]``.

    Averaged over ``num_particles`` draws (Jordan et al. 1999; Kingma & Welling 2014,
    eq. 3). Each site's gradient comes from its strategy. Each site's log density is
    added as a cost per ``numpyro.plate`` element, so a score-function site's element
    sees only the terms that depend on it (as ``TraceGraph_ELBO``; see "Plates" in the
    strategies guide).
    """
    options = {"num_particles": num_particles, "strategies": strategies}

    @expectation
    def objective(params: Any, *args: Any, **kwargs: Any) -> jax.Array:
        if num_particles > 1 and axis_size(PARTICLES) > 1:  # sharded: the log weights
            return jnp.mean(log_weights(model, guide, params, *args, **options, **kwargs))
        chosen = resolve_strategies(strategies, params, *args, **kwargs)

        def one() -> Any:
            trace, log_q = sim_with_terms(guide, *args, params=params, strategies=chosen, **kwargs)
            if log_q is None:  # continuation sites: the log weight, one value
                log_p = density(model, trace.choices, *args, params=params, **kwargs)
                return log_p - trace.log_density
            # the ELBO is a sum of log densities: each site's (per plate element) is a
            # cost, so a score-function site's element sees only the terms it can change
            log_p = density_terms(model, trace.choices, *args, params=params, **kwargs)
            for sign, terms in ((1.0, log_p), (-1.0, log_q)):
                for value, plates in terms:
                    with _plate_frames(plates):
                        add_cost(sign * value / num_particles)
            return jnp.zeros(())

        return jnp.mean(particles(one, num_particles)())

    return objective


def iwae(
    model: Program, guide: Program, *, num_particles: int, strategies: Strategies = None
) -> Expectation:
    """The importance-weighted bound, ``E[log (1/K) Σ_k p(x, z_k) / q(z_k)]``.

    ``z_1..z_K ~ q`` independently (Burda et al. 2016, eq. 8). ``K = 1`` is the ELBO.
    """

    @expectation
    def objective(params: Any, *args: Any, **kwargs: Any) -> jax.Array:
        return log_mean_exp(
            log_weights(
                model,
                guide,
                params,
                *args,
                num_particles=num_particles,
                strategies=strategies,
                **kwargs,
            )
        )

    return objective


def hvi(
    model: Program,
    family: Program,
    keep: Sequence[str],
    *,
    inverse: Program | None = None,
    strategies: Strategies = None,
) -> Expectation:
    """Hierarchical VI: the ELBO with the guide ``marginal(family, keep)``, 1 particle.

    ``E[log p(x, z) + log r(u | z) - log q(z, u)]`` (Ranganath et al. 2016, eq. 4).
    """
    guide = marginal(family, keep, inverse=inverse, num_particles=1)
    return elbo(model, guide, strategies=strategies)


def iwhvi(
    model: Program,
    family: Program,
    keep: Sequence[str],
    *,
    inner_particles: int = 5,
    inverse: Program | None = None,
    strategies: Strategies = None,
) -> Expectation:
    """Importance-weighted HVI: the ELBO with an ``inner_particles`` marginal.

    ``E[log p(x, z) - log (1/m) Σ_i q(z, u_i) / r(u_i | z)]``, ``u_1 ~ q(u | z)``
    (Sobolev & Vetrov 2019, eq. 9).
    """
    guide = marginal(family, keep, inverse=inverse, num_particles=inner_particles)
    return elbo(model, guide, strategies=strategies)


def diwhvi(
    model: Program,
    family: Program,
    keep: Sequence[str],
    *,
    num_particles: int = 5,
    inner_particles: int = 5,
    inverse: Program | None = None,
    strategies: Strategies = None,
) -> Expectation:
    """Doubly importance-weighted HVI: IWAE with ``num_particles`` over an IWHVI marginal.

    (Sobolev & Vetrov 2019, sec. 4; Becker et al. 2024, Table 4's DIWHVI.)
    """
    guide = marginal(family, keep, inverse=inverse, num_particles=inner_particles)
    return iwae(model, guide, num_particles=num_particles, strategies=strategies)


def wake_p(
    model: Program, guide: Program, *, num_particles: int, strategies: Strategies = None
) -> Expectation:
    """Reweighted wake-sleep, wake phase for the model: ``E[log p(x, z)]``, ``z ~ SIR``.

    ``z`` is resampled from ``num_particles`` guide draws (``ppl.normalize``) that are
    held fixed: the gradient is ``Σ_k w̃_k ∇_θ log p(x, z_k)``, the self-normalized
    importance-sampling estimate of ``E_{p(z|x)}[∇_θ log p(x, z)]``, and the guide's
    parameters get none (Bornschein & Bengio 2015, eq. 5). ``strategies`` cannot change
    this gradient: only ``None`` or ``ppl.detached`` is accepted.
    """
    return _wake("wake_p", model, model, guide, num_particles, strategies)


def wake_q(
    model: Program, guide: Program, *, num_particles: int, strategies: Strategies = None
) -> Expectation:
    """Reweighted wake-sleep, wake phase for the guide: ``E[log q(z)]``, ``z ~ SIR``.

    The draws are held fixed, so the gradient is ``Σ_k w̃_k ∇_φ log q(z_k)``, the
    self-normalized importance-sampling estimate of ``-∇_φ KL(p(z|x) || q_φ(z))``
    (Bornschein & Bengio 2015, eq. 9; Le et al. 2019, "Revisiting reweighted
    wake-sleep", eq. 4). It is zero in expectation when the guide is the exact
    posterior, whatever the guide's sites are. ``strategies`` cannot change this
    gradient: only ``None`` or ``ppl.detached`` is accepted.
    """
    return _wake("wake_q", guide, model, guide, num_particles, strategies)


def rws(
    model: Program, guide: Program, *, num_particles: int, strategies: Strategies = None
) -> Expectation:
    """Reweighted wake-sleep, both wake phases from one draw: ``E[log p(x, z) + log q(z)]``.

    ``z`` is resampled from ``num_particles`` guide draws (``ppl.normalize``) held fixed,
    as in `wake_p` and `wake_q`: the model's parameters get the wake-p gradient
    ``Σ_k w̃_k ∇_θ log p(x, z_k)`` and the guide's the wake-q gradient
    ``Σ_k w̃_k ∇_φ log q(z_k)``, from the same draws (Bornschein & Bengio 2015, eqs. 5
    and 9; Le et al. 2019). With a fixed key it equals `wake_p` plus `wake_q`. Only
    ``None`` or ``ppl.detached`` is accepted as ``strategies``.
    """
    return _wake("rws", (model, guide), model, guide, num_particles, strategies)


def _only(name: str, strategies: Strategies, allowed: type, why: str) -> Callable[..., None]:
    """Refuse ``strategies`` unless every strategy in it is an ``allowed``: now when it
    is a strategy or a mapping, and through the returned ``check(params, *args,
    **kwargs)`` at call time when it is a function of the arguments."""

    def refuse(given: Any) -> None:
        if given is None:
            return
        chosen = [given] if isinstance(given, Strategy) else dict(given).values()
        if any(not isinstance(s, allowed) for s in chosen):
            raise ValueError(f"{name}: strategies={given!r} {why}")

    if strategies is None or isinstance(strategies, Strategy | Mapping):
        refuse(strategies)  # refused when the objective is built

    def check(params: Any, *args: Any, **kwargs: Any) -> None:
        refuse(resolve_strategies(strategies, params, *args, **kwargs))

    return check


_WAKE_WHY = (
    "would give the SIR draws an estimator of their own, but the wake-phase gradient "
    "holds the draws fixed (the self-normalized importance-sampling estimate of "
    "Bornschein & Bengio 2015): a score-function or enumeration term there would bias "
    "it. Leave strategies out (every proposal site is drawn with ppl.detached)."
)


def _wake(
    name: str,
    scored: Program | tuple[Program, ...],
    model: Program,
    guide: Program,
    num_particles: int,
    strategies: Strategies,
) -> Expectation:
    """``E[Σ log scored(z)]`` with ``z`` from SIR over ``num_particles`` guide draws, the
    draws held fixed (every proposal site ``ppl.detached``); ``scored`` is one program or
    a tuple of them."""
    check = _only(name, strategies, Detached, _WAKE_WHY)
    programs = scored if isinstance(scored, tuple) else (scored,)

    @expectation
    def objective(params: Any, *args: Any, **kwargs: Any) -> jax.Array:
        check(params, *args, **kwargs)
        trace = sim(
            normalize(model, guide, num_particles=num_particles),
            *args,
            params=params,
            strategies=detached,
            **kwargs,
        )
        return sum(
            density(program, trace.choices, *args, params=params, **kwargs) for program in programs
        )

    return objective


def vimco(
    model: Program, guide: Program, *, num_particles: int, strategies: Strategies = None
) -> Expectation:
    """IWAE with VIMCO's leave-one-out score-function gradient for every guide site.

    ``L = log (1/K) Σ_k w_k``; the gradient is ``∇L|_z + Σ_k (L - L_{-k}) ∇log q(z_k)``
    with ``L_{-k}`` the bound with ``log w_k`` replaced by the mean of the others
    (Mnih & Rezende 2016, eqs. 8-10). Every guide site is drawn without an estimator
    of its own (``ppl.detached``); the objective adds the scores. Only ``None`` or
    ``ppl.detached`` is accepted as ``strategies``.
    """
    if num_particles < 2:
        raise ValueError("vimco needs num_particles >= 2.")
    why = "would add an estimator to VIMCO's own scores; leave strategies out."
    check = _only("vimco", strategies, Detached, why)

    @expectation
    def objective(params: Any, *args: Any, **kwargs: Any) -> jax.Array:
        check(params, *args, **kwargs)

        def one() -> Any:
            trace = sim(guide, *args, params=params, strategies=detached, **kwargs)
            return density(
                model, trace.choices, *args, params=params, **kwargs
            ) - trace.log_density, trace.log_density

        log_w, log_q = constrain_particles(particles(one, num_particles)())
        k = num_particles
        bound = log_mean_exp(log_w)
        others = (jnp.sum(log_w) - log_w) / (k - 1)
        replaced = log_w[None, :] * (1 - jnp.eye(k)) + jnp.diag(others)
        leave_out = jax.vmap(log_mean_exp)(replaced)
        return bound + jnp.sum(sg(bound - leave_out) * (log_q - sg(log_q)))

    return objective


def renyi(
    model: Program,
    guide: Program,
    *,
    alpha: float,
    num_particles: int,
    strategies: Strategies = None,
) -> Expectation:
    """The variational Rényi bound, ``E[1/(1-α) log (1/K) Σ_k w_k^{1-α}]``.

    (Li & Turner 2016, eq. 13.) ``α = 0`` is IWAE; ``α → 1`` the ELBO.
    """
    if alpha == 1.0:
        return elbo(model, guide, num_particles=num_particles, strategies=strategies)

    @expectation
    def objective(params: Any, *args: Any, **kwargs: Any) -> jax.Array:
        log_w = log_weights(
            model,
            guide,
            params,
            *args,
            num_particles=num_particles,
            strategies=strategies,
            **kwargs,
        )
        return log_mean_exp((1.0 - alpha) * log_w) / (1.0 - alpha)

    return objective


def dreg(
    model: Program, guide: Program, *, num_particles: int, strategies: Strategies = None
) -> Expectation:
    """IWAE with the doubly reparameterized gradient for the guide (Tucker et al. 2019).

    Guide parameters get ``Σ_k w̃_k² ∂log w_k/∂z_k ∂z_k/∂φ`` (eq. 7, ``w̃`` the
    normalized weights, the score term of ``log q`` dropped); model parameters get
    IWAE's ``Σ_k w̃_k ∇_θ log p(x, z_k)``. Every guide site must be reparameterizable;
    only ``None`` or ``ppl.reparam`` is accepted as ``strategies``.
    """
    why = "cannot apply: the doubly reparameterized gradient draws every site by reparam."
    check = _only("dreg", strategies, Reparam, why)

    @expectation
    def objective(params: Any, *args: Any, **kwargs: Any) -> jax.Array:
        check(params, *args, **kwargs)

        def one() -> Any:
            trace = sim(guide, *args, params=params, strategies=Reparam(), **kwargs)
            frozen = sg(params)
            path = density(model, trace.choices, *args, params=frozen, **kwargs) - density(
                guide, trace.choices, *args, params=frozen, **kwargs
            )
            choices = sg(trace.choices)
            model_term = density(model, choices, *args, params=params, **kwargs)
            return path, model_term

        path, model_term = constrain_particles(particles(one, num_particles)())
        log_w = sg(path)
        normalized = jax.nn.softmax(log_w)
        value = log_mean_exp(log_w)
        return (
            value
            + jnp.sum(sg(normalized**2) * (path - sg(path)))
            + jnp.sum(sg(normalized) * (model_term - sg(model_term)))
        )

    return objective
