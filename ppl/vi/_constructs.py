"""Approximate marginalization and normalization (Becker et al., PLDI 2024, sec. 5).

Both build a program-like `ppl.gen.Family` from NumPyro programs, so objectives use
them exactly like a guide: ``ppl.sim(family, *args, params=...)`` and
``ppl.density(family, choices, *args, params=...)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ppl._util import log_mean_exp
from ppl.adev import detached, particles, sample
from ppl.gen import Family, Trace, density, sim, site_log_densities

__all__ = ["Marginal", "Normalize", "marginal", "normalize"]

sg = jax.lax.stop_gradient


class Marginal(Family):
    """The marginal of ``program`` over the sites in ``keep`` (see `marginal`)."""

    def __init__(
        self,
        program: Callable,
        keep: Sequence[str],
        inverse: Callable | None = None,
        num_particles: int = 1,
    ) -> None:
        if num_particles < 1:
            raise ValueError(f"marginal: num_particles must be >= 1, got {num_particles}.")
        self.program = program
        self.keep = tuple(keep)
        self.inverse = inverse
        self.num_particles = num_particles

    def _split(self, choices: Mapping) -> tuple[dict, dict]:
        missing = [k for k in self.keep if k not in choices]
        if missing:
            raise ValueError(
                f"marginal: sites {missing} in keep= are not sampled by the program "
                f"(it samples {sorted(choices)})."
            )
        kept = {k: choices[k] for k in self.keep}
        return kept, {k: v for k, v in choices.items() if k not in self.keep}

    def _log_weight(
        self, kept: dict, others: dict, params: Any, args: tuple, kwargs: dict
    ) -> jax.Array:
        """log q(kept, u) - log r(u | kept): importance weight of one auxiliary draw."""
        if self.inverse is None:  # r = the program's own distribution of u
            sites = site_log_densities(
                self.program, {**kept, **others}, *args, params=params, **kwargs
            )
            return sum(sites[k] for k in self.keep)
        log_joint = density(self.program, {**kept, **others}, *args, params=params, **kwargs)
        return log_joint - density(self.inverse, others, kept, *args, params=params)

    def _propose(self, kept: dict, params: Any, strategies: Any, args: tuple, kwargs: dict) -> dict:
        if self.inverse is None:
            return self._split(
                sim(self.program, *args, params=params, strategies=strategies, **kwargs).choices
            )[1]
        return sim(self.inverse, kept, *args, params=params, strategies=strategies).choices

    def _fresh_weights(
        self, kept: dict, params: Any, strategies: Any, args: tuple, kwargs: dict, count: int
    ) -> jax.Array:
        def one() -> Any:
            others = self._propose(kept, params, strategies, args, kwargs)
            return self._log_weight(kept, others, params, args, kwargs)

        return particles(one, count)()

    def simulate(self, params: Any, strategies: Any, *args: Any, **kwargs: Any) -> Trace:
        trace = sim(self.program, *args, params=params, strategies=strategies, **kwargs)
        kept, others = self._split(trace.choices)
        log_weights = self._log_weight(kept, others, params, args, kwargs)[None]
        if self.num_particles > 1:
            fresh = self._fresh_weights(
                kept, params, strategies, args, kwargs, self.num_particles - 1
            )
            log_weights = jnp.concatenate([log_weights, fresh])
        return Trace(kept, log_mean_exp(log_weights), trace.retval, {**trace.auxiliary, **others})

    def log_density(self, choices: Mapping, params: Any, *args: Any, **kwargs: Any) -> jax.Array:
        kept, extra = self._split(choices)
        if extra:
            raise ValueError(
                f"marginal: choices {sorted(extra)} are not in keep={list(self.keep)}."
            )
        log_weights = self._fresh_weights(kept, params, None, args, kwargs, self.num_particles)
        return log_mean_exp(log_weights)


def marginal(
    program: Callable,
    keep: Sequence[str],
    *,
    inverse: Callable | None = None,
    num_particles: int = 1,
    particles: int | None = None,
) -> Marginal:
    """The marginal of ``program`` over the sites in ``keep``, by importance sampling.

    ``program`` samples the kept sites ``z`` and auxiliary sites ``u``; the marginal
    density ``q(z) = ∫ q(z, u) du`` is estimated with ``num_particles`` draws
    ``u_i ~ r(u | z)`` and weights ``w_i = q(z, u_i) / r(u_i | z)``, where ``r`` is
    ``inverse(z, *args)`` (a NumPyro program sampling the ``u`` sites) or, without
    ``inverse``, the program's own distribution of ``u`` (then ``w_i = q(z | u_i)``;
    this needs the kept sites to come after the others in the program).

    * ``ppl.density(marginal, {z}, ...)`` is ``log (1/N) Σ_i w_i``: an unbiased
      estimate of ``q(z)`` in the exponent.
    * ``ppl.sim(marginal, ...)`` draws ``(z, u_1) ~ q`` jointly and returns ``z`` with
      ``log_density = log (1/N) Σ_i w_i`` where ``u_2..u_N ~ r``: the reciprocal of its
      exponent is an unbiased estimate of ``1/q(z)`` (conditional importance sampling),
      so objectives that subtract it stay lower bounds.

    With one particle this is hierarchical VI (Ranganath et al. 2016, HVI); with
    ``num_particles=m`` the importance-weighted HVI of Sobolev & Vetrov (2019, IWHVI,
    eq. 9). Becker et al. (PLDI 2024) call this construct ``marginal``. (``particles=``
    is the deprecated spelling of ``num_particles=``.)
    """
    num_particles = _renamed("marginal", particles, num_particles)
    return Marginal(program, keep, inverse, num_particles)


class Normalize(Family):
    """Sampling-importance-resampling approximation of a posterior (see `normalize`)."""

    def __init__(self, target: Callable, proposal: Callable, num_particles: int) -> None:
        if num_particles < 1:
            raise ValueError(f"normalize: num_particles must be >= 1, got {num_particles}.")
        self.target = target
        self.proposal = proposal
        self.num_particles = num_particles

    def _particles(
        self, params: Any, strategies: Any, args: tuple, kwargs: dict
    ) -> tuple[dict, jax.Array]:
        def one() -> Any:
            trace = sim(self.proposal, *args, params=params, strategies=strategies, **kwargs)
            log_p = density(self.target, trace.choices, *args, params=params, **kwargs)
            return trace.choices, log_p - trace.log_density

        return particles(one, self.num_particles)()

    def simulate(self, params: Any, strategies: Any, *args: Any, **kwargs: Any) -> Trace:
        choices, log_weights = self._particles(params, strategies, args, kwargs)
        index = sample(dist.Categorical(logits=sg(log_weights)), detached, name="resample")
        chosen = jax.tree.map(lambda c: sg(c[index]), choices)
        log_z = log_mean_exp(log_weights)
        log_p = density(self.target, chosen, *args, params=params, **kwargs)
        return Trace(chosen, log_p - log_z, None, {})

    def log_density(self, choices: Mapping, params: Any, *args: Any, **kwargs: Any) -> jax.Array:
        raise TypeError(
            "normalize: the density of a resampled particle is not available; use "
            "ppl.sim(normalize(...)) (its log_density is log p(x, z) - log Ẑ)."
        )


def normalize(
    target: Callable,
    proposal: Callable,
    *,
    num_particles: int | None = None,
    particles: int | None = None,
) -> Normalize:
    """A sampling-importance-resampling approximation of ``target``'s posterior.

    Draws ``z_1..z_N`` from ``proposal``, weights ``w_i = p(x, z_i) / q(z_i)`` with
    ``target`` the model (observations fixed by ``obs=``), and resamples one ``z`` in
    proportion to ``w`` (Rubin 1988). ``ppl.sim(normalize(...))`` returns that ``z``
    (without gradient) with ``log_density = log p(x, z) - log Ẑ``, ``Ẑ = (1/N) Σ w_i``:
    an ELBO with this proposal equals IWAE with ``N`` particles. Used by reweighted
    wake-sleep (Bornschein & Bengio 2015) and as the inner level of nested objectives
    (Becker et al., PLDI 2024). (``particles=`` is the deprecated spelling of
    ``num_particles=``.)
    """
    num_particles = _renamed("normalize", particles, num_particles)
    if num_particles is None:
        raise TypeError("normalize() needs num_particles, the number of proposal draws.")
    return Normalize(target, proposal, num_particles)


def _renamed(where: str, particles: int | None, num_particles: int | None) -> int | None:
    """``num_particles``, or the deprecated ``particles=`` with a warning."""
    if particles is None:
        return num_particles
    warnings.warn(
        f"{where}(particles=...) is deprecated: write num_particles={particles}, as the "
        f"objectives do.",
        DeprecationWarning,
        stacklevel=3,
    )
    return particles
