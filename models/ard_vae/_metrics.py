"""Relevance of the latent axes (paper Sec. 3.4), MIG, kernel MMD and reconstruction error.

Relevance (eq. 19, in the form of the official code's ``get_encoded_statistics.py``):
``w_l = Σ_k ((1/N) Σ_i |J_i[k, l]|)²`` with ``J_i = ∂ x̂ / ∂ µ`` the Jacobian of the
decoder mean at the encoder mean of example ``i`` (``N = 100``), ``r_l = w_l σ̂_l²``; the
active axes are the fewest top-ranked ones whose share of ``Σ r`` reaches 99 %.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ppl_zoo.ard_vae import _model

__all__ = [
    "jacobian_weights",
    "relevance",
    "count_active",
    "active_mask",
    "reconstruction_error",
    "mutual_information_gap",
    "mmd",
    "median_bandwidth",
    "mean_and_standard_error",
]


@functools.partial(jax.jit, static_argnames="likelihood")
def _jacobian_weights(params, x, likelihood):
    loc, _ = _model.encode(params, x)
    decode = lambda z: _model.decode_mean(params, z, likelihood)  # noqa: E731
    jacobians = jax.vmap(jax.jacfwd(decode))(loc)  # (N, D, L)
    return jnp.sum(jnp.mean(jnp.abs(jacobians), axis=0) ** 2, axis=0)


def jacobian_weights(params, x: np.ndarray, likelihood: str, num_samples: int = 100):
    """``w_l = Σ_k ((1/N) Σ_i |∂ x̂_k / ∂ z_l|(µ(x_i)))²`` over the first ``N`` rows of ``x``.

    This is the official code's form; the paper's text writes ``Σ_k (1/N) Σ_i J_i[k, l]²``.
    """
    return np.asarray(_jacobian_weights(params, jnp.asarray(x[:num_samples]), likelihood))


def relevance(params, x: np.ndarray, prior_variance, likelihood: str, num_samples: int = 100):
    """``r_l = w_l · σ̂_l²`` (paper eq. 19)."""
    return jacobian_weights(params, x, likelihood, num_samples) * np.asarray(prior_variance)


def count_active(scores, threshold: float = 0.99) -> int:
    """The smallest ``m`` such that the ``m`` largest scores hold ``>= threshold`` of the sum.

    Raises:
        ValueError: for negative or non-finite scores, or a threshold outside (0, 1].
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}.")
    if (
        scores.ndim != 1
        or scores.size == 0
        or np.any(scores < 0)
        or not np.all(np.isfinite(scores))
    ):
        raise ValueError("scores must be a non-empty 1-D array of finite non-negative numbers.")
    total = scores.sum()
    if total == 0.0:
        return 0
    share = np.cumsum(np.sort(scores)[::-1]) / total
    return int(np.searchsorted(share, threshold - 1e-12) + 1)


def active_mask(scores, threshold: float = 0.99) -> np.ndarray:
    """Boolean mask of the `count_active` top-ranked axes."""
    scores = np.asarray(scores)
    mask = np.zeros(scores.shape, bool)
    mask[np.argsort(-scores, kind="stable")[: count_active(scores, threshold)]] = True
    return mask


@functools.partial(jax.jit, static_argnames="likelihood")
def _reconstruction_error(params, x, likelihood):
    loc, _ = _model.encode(params, x)
    return jnp.mean(jnp.sum((x - _model.decode_mean(params, loc, likelihood)) ** 2, axis=-1))


def reconstruction_error(params, x: np.ndarray, likelihood: str) -> float:
    """Mean over examples of ``||x - x̂(µ(x))||²`` (reconstruction at the encoder mean)."""
    return float(_reconstruction_error(params, jnp.asarray(x), likelihood))


def _discrete_mi(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (nats) between two integer label arrays, from their histogram."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))


def mutual_information_gap(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> float:
    """MIG (Chen et al., NeurIPS 2018), as in ``disentanglement_lib``.

    Each code axis is cut into ``bins`` equal-width bins; for factor ``k`` with
    entropy ``H_k``, ``MIG = mean_k (I(z_(1); v_k) - I(z_(2); v_k)) / H_k`` over the two
    code axes with the largest mutual information with ``v_k``.

    Args:
        codes: ``(N, L)`` encoder means.
        factors: ``(N, K)`` integer factor indices.
    """
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    if codes.shape[0] != factors.shape[0] or codes.shape[1] < 2:
        raise ValueError(
            f"codes {codes.shape} and factors {factors.shape} need the same number of "
            f"rows and at least two code axes."
        )
    binned = []
    for column in codes.T:
        edges = np.histogram_bin_edges(column, bins)
        binned.append(np.digitize(column, edges[1:-1]))
    gaps = []
    for factor in factors.T:
        _, factor = np.unique(factor, return_inverse=True)
        entropy = _discrete_mi(factor, factor)
        info = np.sort([_discrete_mi(b, factor) for b in binned])[::-1]
        gaps.append((info[0] - info[1]) / entropy)
    return float(np.mean(gaps))


def mmd(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased squared MMD with ``k(a, b) = exp(-||a - b||² / (2 bandwidth²))``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def gram(a, b):
        d2 = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None] - 2 * a @ b.T
        return np.exp(-np.maximum(d2, 0.0) / (2 * bandwidth**2))

    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    m, n = x.shape[0], y.shape[0]
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def median_bandwidth(x: np.ndarray) -> float:
    """The median pairwise distance between rows of ``x`` (the median heuristic)."""
    x = np.asarray(x, np.float64)
    d2 = np.sum(x**2, 1)[:, None] + np.sum(x**2, 1)[None] - 2 * x @ x.T
    return float(np.sqrt(np.median(np.maximum(d2[np.triu_indices(len(x), 1)], 0.0))))


def mean_and_standard_error(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    error = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else 0.0
    return float(values.mean()), float(error)
