"""Metrics: free-running transition statistics, prior σ at branch points, errors."""

from __future__ import annotations

import numpy as np

from ppl_zoo.pv_rnn._data import EMISSIONS, TRUE_TRANSITIONS, templates

__all__ = [
    "classify_cycles",
    "cycle_states",
    "transition_counts",
    "total_variation",
    "branch_prior_scale",
    "mean_and_standard_error",
    "oracle_predictions",
    "filter_predictions",
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


def cycle_states(labels: np.ndarray) -> np.ndarray:
    """The hidden state (``0 A, 1 B, 2 A', 3 C``) of each classified cycle, or ``-1``.

    A circle is ``A'`` after a B and ``A`` after a C or at the start; after a malformed
    cycle or another circle (which the chain never draws) its state is unknown.
    """
    states = np.full(len(labels), -1, dtype=np.int64)
    for i, label in enumerate(labels):
        previous = labels[i - 1] if i else None
        if label == 1:
            states[i] = 1
        elif label == 2:
            states[i] = 3
        elif label == 0 and previous in (None, 2):
            states[i] = 0
        elif label == 0 and previous == 1:
            states[i] = 2
    return states


def transition_counts(label_sequences) -> np.ndarray:
    """``counts[s, j]``: a cycle in hidden state ``s`` followed by primitive ``j``.

    ``s`` indexes ``A B A' C`` (`cycle_states`); ``j`` is ``A, B, C`` or ``3`` for a
    malformed cycle. Cycles whose hidden state is unknown are not counted.
    """
    counts = np.zeros((4, 4))
    for labels in label_sequences:
        states = cycle_states(np.asarray(labels))
        for state, following in zip(states[:-1], labels[1:]):
            if state >= 0:
                counts[state, following if following >= 0 else 3] += 1
    return counts


def total_variation(counts: np.ndarray, truth: np.ndarray = TRUE_TRANSITIONS) -> float:
    """Mean over the four hidden states of ``½ Σ_j |P̂(j | s) - P(j | s)|``.

    ``truth`` is the state transition matrix; the successor's primitive ``j`` has the
    true probability ``Σ_{s'} truth[s, s'] [EMISSIONS[s'] = j]``. Malformed successors
    count as a fourth outcome the truth never has; a state never visited scores 1
    (nothing of that row's statistics was reproduced).
    """
    truth = truth @ np.eye(3)[EMISSIONS]
    truth = np.concatenate([truth, np.zeros((truth.shape[0], 1))], axis=1)
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


def _rollout_mean(belief, phase, period, horizon, transitions):
    """The predicted mean of the next ``horizon`` steps from a belief over the hidden
    states (``(B, S)``) at the step whose phase is ``phase`` (``(B,)``)."""
    means = templates(period)[EMISSIONS]  # (S, period, 2)
    out = np.zeros((belief.shape[0], horizon, 2))
    belief, step = belief.copy(), phase.copy()
    for k in range(horizon):
        step = step + 1
        wrap = step == period
        step[wrap] = 0
        belief[wrap] = belief[wrap] @ transitions
        out[:, k] = np.einsum("bs,bsc->bc", belief, means[:, step].swapaxes(0, 1))
    return out


def oracle_predictions(
    states: np.ndarray,
    phase: np.ndarray,
    period: int,
    window: int,
    horizon: int,
    transitions: np.ndarray = TRUE_TRANSITIONS,
) -> np.ndarray:
    """The predictor that knows the true hidden state and phase of the last observed step.

    It continues the current primitive, and after it the probability-weighted mean of the
    next primitives (``transitions``): the best prediction given the state, which is
    more than any predictor can know from the observations (at a branch point the first
    steps of B and C are close to each other). Same layout as ``error_regression``'s
    predictions: ``(B, T - H - W + 1, H, 2)``.
    """
    length = states.shape[1]
    eye = np.eye(transitions.shape[0])
    out = [
        _rollout_mean(eye[states[:, t - 1]], phase[:, t - 1], period, horizon, transitions)
        for t in range(window, length - horizon + 1)
    ]
    return np.stack(out, axis=1).astype(np.float32)


def filter_predictions(
    x: np.ndarray,
    period: int,
    noise: float,
    window: int,
    horizon: int,
    transitions: np.ndarray = TRUE_TRANSITIONS,
) -> np.ndarray:
    """The Bayes-optimal predictor from the observations ``x[:, :t]`` alone.

    The exact forward filter of the data's generative process (the hidden state, every
    sequence starting in A at phase 0, Gaussian noise of std ``noise``) gives the
    belief over the hidden state at ``t - 1``; the prediction is the belief-weighted
    mean of the future. It minimises the expected squared error given the observed
    prefix, so no model can beat it on average: the achievable floor. Same layout as
    `oracle_predictions`.
    """
    batch, length, _ = x.shape
    means = templates(period)[EMISSIONS]
    belief = np.zeros((batch, transitions.shape[0]))
    belief[:, 0] = 1.0
    beliefs = []
    for t in range(length):
        if t and t % period == 0:
            belief = belief @ transitions
        log_like = -0.5 * np.sum((x[:, t, None] - means[None, :, t % period]) ** 2, -1)
        log_like = log_like / noise**2
        weights = belief * np.exp(log_like - log_like.max(axis=1, keepdims=True))
        belief = weights / weights.sum(axis=1, keepdims=True)
        beliefs.append(belief)
    phase = np.arange(length) % period
    out = [
        _rollout_mean(beliefs[t - 1], np.full(batch, phase[t - 1]), period, horizon, transitions)
        for t in range(window, length - horizon + 1)
    ]
    return np.stack(out, axis=1).astype(np.float32)
