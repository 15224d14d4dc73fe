"""Metrics: free-running transition statistics, prior σ at branch points, errors."""

from __future__ import annotations

import numpy as np

from models.pv_rnn._data import TRUE_TRANSITIONS, templates

__all__ = [
    "classify_cycles",
    "transition_counts",
    "total_variation",
    "branch_prior_scale",
    "mean_and_standard_error",
    "oracle_predictions",
]


def classify_cycles(
    trajectory: np.ndarray, period: int, threshold: float = 0.15, max_shift: int = 1
) -> np.ndarray:
    """Cut a generated ``(T, 2)`` trajectory into cycles and name each by nearest template.

    Cycles are read one after another; each starts ``period + s`` steps after the last,
    with the shift ``s ∈ [-max_shift, max_shift]`` (``0`` for the first cycle) that best
    matches a template, so a slowly drifting phase is followed. A cycle whose best
    root-mean-square distance exceeds ``threshold`` is malformed (label ``-1``).
    """
    shapes = templates(period)
    labels, start = [], 0
    while start + period + max_shift <= trajectory.shape[0]:
        shifts = [0] if not labels else range(-max_shift, max_shift + 1)
        best = None
        for shift in shifts:
            cycle = trajectory[start + shift : start + shift + period]
            rms = np.sqrt(np.mean((cycle[None] - shapes) ** 2, axis=(1, 2)))
            if best is None or rms.min() < best[0]:
                best = (rms.min(), int(rms.argmin()), shift)
        labels.append(best[1] if best[0] <= threshold else -1)
        start += best[2] + period
    return np.asarray(labels, dtype=np.int64)


def transition_counts(label_sequences) -> np.ndarray:
    """``counts[i, j]``: well-formed primitive ``i`` followed by ``j`` (``j = 3``: malformed)."""
    counts = np.zeros((3, 4))
    for labels in label_sequences:
        for current, following in zip(labels[:-1], labels[1:]):
            if current >= 0:
                counts[current, following if following >= 0 else 3] += 1
    return counts


def total_variation(counts: np.ndarray, truth: np.ndarray = TRUE_TRANSITIONS) -> float:
    """Mean over the three rows of ``½ Σ_j |P̂(j | i) - P(j | i)|``.

    Malformed successors count as a fourth outcome the truth never has; a row never
    visited scores 1 (nothing of that row's statistics was reproduced).
    """
    truth = np.concatenate([truth, np.zeros((3, 1))], axis=1)
    distances = []
    for row, true_row in zip(counts, truth):
        total = row.sum()
        distances.append(1.0 if total == 0 else 0.5 * np.abs(row / total - true_row).sum())
    return float(np.mean(distances))


def branch_prior_scale(log_scales, labels: np.ndarray, phase: np.ndarray) -> tuple[float, float]:
    """Mean prior ``σ^p`` at branch points and inside primitives.

    Branch points are the first two steps of a B or C (the steps right after an A, where
    the data are random); every other step but the first is "inside". ``log_scales``
    is per layer ``(N, T, dim z)`` (all layers' latent units are averaged).
    """
    scales = np.concatenate([np.exp(np.asarray(s)) for s in log_scales], axis=-1).mean(-1)
    branch = (labels > 0) & (phase <= 1)
    inside = ~branch
    inside[:, 0] = False
    return float(scales[branch].mean()), float(scales[inside].mean())


def mean_and_standard_error(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def oracle_predictions(
    labels: np.ndarray,
    phase: np.ndarray,
    period: int,
    window: int,
    horizon: int,
    transitions: np.ndarray = TRUE_TRANSITIONS,
) -> np.ndarray:
    """The best predictor that knows the true primitive and phase of the last observed step.

    It continues the current primitive, and after it the probability-weighted mean of the
    next primitives (``transitions``), which minimises the expected squared error given
    the state: the floor no model can beat on average. Same layout as
    ``error_regression``'s predictions: ``(B, T - H - W + 1, H, 2)``.
    """
    shapes = templates(period)
    batch, length = labels.shape
    out = np.zeros((batch, length - horizon - window + 1, horizon, 2), dtype=np.float32)
    for b in range(batch):
        for i, t in enumerate(range(window, length - horizon + 1)):
            belief = np.eye(3)[labels[b, t - 1]]
            step = phase[b, t - 1]
            for k in range(horizon):
                step += 1
                if step == period:
                    step, belief = 0, belief @ transitions
                out[b, i, k] = belief @ shapes[:, step]
    return out
