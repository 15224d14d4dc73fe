"""The subspace (γ) step of SSVI: removal by a weight-distribution score, addition by
the largest ``|∂L/∂µ|``, a cosine-decayed exchange fraction.

Li, Miao, Qiu, Zhang, ICLR 2024, §3.2-3.3 and Algorithm 1. Everything here runs inside
``jit`` with a traced number of exchanged entries: ranks come from ``argsort`` and the
new masks from ``rank < k``, so no shape depends on how many entries move and nothing
is recompiled when that number changes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import erf, ndtr

__all__ = [
    "CRITERIA",
    "removal_score",
    "criterion_index",
    "exchange_fraction",
    "exchange",
    "random_masks",
    "top_masks",
]


def _mean_abs(loc, scale):
    """``E|θ|`` of ``θ ~ N(µ, σ²)`` (the folded normal mean)."""
    return loc * erf(loc / (scale * math.sqrt(2.0))) + scale * math.sqrt(2.0 / math.pi) * jnp.exp(
        -jnp.square(loc) / (2.0 * jnp.square(scale))
    )


def _exp_mean_abs(loc, scale, lam):
    """``E[exp(λ|θ|)]`` of ``θ ~ N(µ, σ²)``."""
    base = jnp.square(lam * scale) / 2.0
    return jnp.exp(base + lam * loc) * ndtr(loc / scale + lam * scale) + jnp.exp(
        base - lam * loc
    ) * ndtr(-loc / scale + lam * scale)


def _snr_mean_abs(loc, scale, lam):
    mean = _mean_abs(loc, scale)
    return mean / jnp.sqrt(jnp.maximum(jnp.square(loc) + jnp.square(scale) - mean**2, 1e-30))


def _snr_exp_mean_abs(loc, scale, lam):
    first = _exp_mean_abs(loc, scale, lam)
    second = _exp_mean_abs(loc, scale, 2.0 * lam)
    return first / jnp.sqrt(jnp.maximum(second - first**2, 1e-30))


CRITERIA = {
    "mean": lambda loc, scale, lam: jnp.abs(loc),
    "snr": lambda loc, scale, lam: jnp.abs(loc) / scale,
    "E_mean_abs": lambda loc, scale, lam: _mean_abs(loc, scale),
    "SNR_mean_abs": _snr_mean_abs,
    "E_exp_mean_abs": _exp_mean_abs,
    "SNR_exp_mean_abs": _snr_exp_mean_abs,
}
"""Removal scores of the reference code (``--drop_criteria``), higher is kept:
``|µ|``, ``|µ|/σ``, ``E|θ|``, ``SNR(|θ|) = E|θ| / sd|θ|`` (the default),
``E[exp(λ|θ|)]`` and its SNR ``E[e^{λ|θ|}] / sd(e^{λ|θ|})``."""


def criterion_index(criterion: str) -> int:
    """The position of ``criterion`` in `CRITERIA` (a traced selector for the γ-step).

    Raises:
        ValueError: for an unknown criterion (listing the known ones).
    """
    if criterion not in CRITERIA:
        raise ValueError(
            f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r} "
            f"(the reference code's --drop_criteria)."
        )
    return list(CRITERIA).index(criterion)


def removal_score(criterion, loc, scale, mask, lam: float = 1.0):
    """The removal score of every entry; inactive and non-finite scores are ``-inf``.

    ``criterion`` is a name of `CRITERIA` or its (possibly traced) `criterion_index`;
    with an index every score is computed and one is selected, so switching criteria
    does not recompile.

    Raises:
        ValueError: for an unknown criterion name (listing the known ones).
    """
    if isinstance(criterion, str):
        score = CRITERIA[list(CRITERIA)[criterion_index(criterion)]](loc, scale, lam)
    else:
        scores = jnp.stack([fn(loc, scale, lam) for fn in CRITERIA.values()])
        score = scores[criterion]
    return jnp.where(mask & jnp.isfinite(score), score, -jnp.inf)


def exchange_fraction(step, alpha: float, end_step: int):
    """``α_t = (α/2)(1 + cos(π t / T_end))`` for ``t < T_end``, else 0 (RigL's cosine)."""
    step = jnp.asarray(step, jnp.float32)
    fraction = 0.5 * alpha * (1.0 + jnp.cos(jnp.pi * step / end_step))
    return jnp.where(step < end_step, fraction, 0.0)


def _rank(values):
    """The rank of each entry when sorted in decreasing order (0 = largest)."""
    flat = values.ravel()
    order = jnp.argsort(-flat)
    return jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))


def exchange(mask, loc, scale, grad_loc, num_drop, criterion, lam: float = 1.0):
    """One layer's removal and addition at a fixed number of active entries.

    Keeps the ``nnz - num_drop`` active entries with the highest `removal_score`, then
    activates the ``num_drop`` entries outside the kept set with the largest dense
    ``|∂L/∂µ|`` (``grad_loc``). ``num_drop`` may be traced.

    Returns:
        ``(new_mask, kept, grown)``: boolean arrays shaped like ``mask``; ``kept`` are
        the surviving entries, ``grown`` the newly activated ones (``new_mask = kept |
        grown``, so ``nnz(new_mask) == nnz(mask)``).
    """
    nnz = jnp.sum(mask)
    score = removal_score(criterion, loc, scale, mask, lam)
    kept = (_rank(score) < nnz - num_drop).reshape(mask.shape)
    growth = jnp.where(kept, -jnp.inf, jnp.abs(grad_loc))
    grown = (_rank(growth) < num_drop).reshape(mask.shape)
    return kept | grown, kept, grown


def random_masks(key: jax.Array, arch: tuple, counts: dict) -> dict:
    """Uniformly random supports with ``counts[name]`` active entries per layer."""
    masks = {}
    for key_layer, layer in zip(jax.random.split(key, len(arch)), arch):
        size = math.prod(layer.shape)
        order = jax.random.permutation(key_layer, size)
        masks[layer.name] = (
            jnp.zeros(size, bool).at[order[: counts[layer.name]]].set(True).reshape(layer.shape)
        )
    return masks


def top_masks(scores: dict, counts: dict) -> dict:
    """The ``counts[name]`` highest-scoring entries of each layer (post-hoc pruning)."""
    return {name: (_rank(s) < counts[name]).reshape(s.shape) for name, s in scores.items()}
