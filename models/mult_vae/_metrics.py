"""Ranking metrics of Liang et al. (2018): Recall@K and NDCG@K with fold-in items excluded."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["exclude_fold_in", "recall_at_k", "ndcg_at_k", "mean_and_standard_error"]


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def exclude_fold_in(scores: np.ndarray, fold_in) -> np.ndarray:
    """``scores`` with the fold-in items set to ``-inf`` (they are never recommended)."""
    return np.where(_dense(fold_in) > 0, -np.inf, np.asarray(scores, dtype=np.float64))


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(scores: np.ndarray, held_out, k: int) -> np.ndarray:
    """Per-user Recall@K: hits among the top K over ``min(K, |held-out|)``.

    ``scores`` must already exclude fold-in items (`exclude_fold_in`); users without
    held-out items get NaN.
    """
    held_out = _dense(held_out) > 0
    hits = np.take_along_axis(held_out, _top_k(scores, k), axis=1).sum(axis=1)
    denominator = np.minimum(k, held_out.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, hits / denominator, np.nan)


def ndcg_at_k(scores: np.ndarray, held_out, k: int) -> np.ndarray:
    """Per-user NDCG@K with binary gains ``1/log2(rank + 1)``; IDCG over ``min(K, |held-out|)``."""
    held_out = _dense(held_out) > 0
    top = _top_k(scores, k)
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = (np.take_along_axis(held_out, top, axis=1) * discounts).sum(axis=1)
    ideal_counts = np.minimum(held_out.sum(axis=1), top.shape[1])
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_counts]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal_counts > 0, dcg / ideal, np.nan)


def mean_and_standard_error(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error over the finite entries (users with held-out items)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float(values.mean()) if values.size else float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))
