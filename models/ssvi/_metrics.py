"""Predictive metrics: accuracy, NLL, 15-bin ECE and the debiased marginal L2 calibration
error the SSVI reference code reports.

The last is Kumar, Liang, Ma, "Verified Uncertainty Calibration", NeurIPS 2019, as
computed by their ``uncertainty-calibration`` package's
``get_calibration_error(probs, labels, p=2, debias=True, mode="marginal")`` on
continuous probabilities: for each class, 15 equal-mass bins of that class's predicted
probability, the debiased squared bin error ``(mean p - mean y)² - ȳ(1-ȳ)/(n_b-1)``
(0 for bins of fewer than 2 points) weighted by bin mass and clipped at 0, the square
root, then the root mean square over classes. Re-implemented here with NumPy.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "accuracy",
    "nll",
    "ece",
    "debiased_marginal_l2_ce",
    "classification_metrics",
    "mean_and_standard_error",
]


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (n, classes) and labels (n,), got {probs.shape} and {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
    return probs, labels


def accuracy(probs, labels) -> float:
    """Fraction of examples whose most probable class is the label."""
    probs, labels = _check(probs, labels)
    return float(np.mean(np.argmax(probs, 1) == labels))


def nll(probs, labels) -> float:
    """Mean negative log probability of the label (probabilities floored at 1e-12)."""
    probs, labels = _check(probs, labels)
    return float(-np.mean(np.log(np.maximum(probs[np.arange(labels.size), labels], 1e-12))))


def ece(probs, labels, num_bins: int = 15) -> float:
    """Top-label expected calibration error with ``num_bins`` equal-width bins.

    ``Σ_b (n_b / n) |acc_b - conf_b|`` with bins ``(k/B, (k+1)/B]`` of the confidence
    (Guo et al., ICML 2017; Naeini et al., AAAI 2015).
    """
    probs, labels = _check(probs, labels)
    confidence = probs.max(1)
    correct = np.argmax(probs, 1) == labels
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    total = 0.0
    for b in range(num_bins):
        members = bins == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def _equal_mass_boundaries(values: np.ndarray, num_bins: int) -> np.ndarray:
    ordered = np.sort(values)
    parts = np.array_split(ordered, min(num_bins, ordered.size))
    cuts = [(parts[i][-1] + parts[i + 1][0]) / 2.0 for i in range(len(parts) - 1)]
    return np.asarray(sorted(set(cuts + [1.0])))


def _debiased_l2_1d(probs: np.ndarray, labels: np.ndarray, num_bins: int) -> float:
    boundaries = _equal_mass_boundaries(probs, num_bins)
    which = np.searchsorted(boundaries, probs)  # a boundary belongs to the left bin
    total = 0.0
    for b in np.unique(which):
        members = which == b
        size = int(members.sum())
        if size < 2:
            continue
        mean_label = labels[members].mean()
        bias = (probs[members].mean() - mean_label) ** 2
        total += size / probs.size * (bias - mean_label * (1.0 - mean_label) / (size - 1.0))
    return max(total, 0.0) ** 0.5


def debiased_marginal_l2_ce(probs, labels, num_bins: int = 15) -> float:
    """Debiased marginal L2 calibration error (Kumar et al., NeurIPS 2019), see module."""
    probs, labels = _check(probs, labels)
    one_hot = np.eye(probs.shape[1])[labels]
    per_class = [
        _debiased_l2_1d(probs[:, k], one_hot[:, k], num_bins) ** 2 for k in range(probs.shape[1])
    ]
    return float(np.mean(per_class) ** 0.5)


def classification_metrics(probs, labels) -> dict[str, float]:
    """``accuracy``, ``nll``, ``ece`` (15 bins) and ``l2_ce`` (debiased marginal L2)."""
    return {
        "accuracy": accuracy(probs, labels),
        "nll": nll(probs, labels),
        "ece": ece(probs, labels),
        "l2_ce": debiased_marginal_l2_ce(probs, labels),
    }


def mean_and_standard_error(values) -> tuple[float, float]:
    """Mean and standard error ``sd / sqrt(n)`` (``ddof=1``; 0 for one value)."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))
