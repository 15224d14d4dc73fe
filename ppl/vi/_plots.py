"""The training-curve plot of `ppl.FitResult.plot` (matplotlib, Agg, no pyplot)."""

from __future__ import annotations

import os

import numpy as np

from ppl._util import running_mean

__all__ = ["plot_history"]


def plot_history(
    path: str | os.PathLike, history: np.ndarray, num_bad_steps: int, window: int | None
) -> str | os.PathLike:
    """Save a PNG of ``history`` against the step with a trailing running mean."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "FitResult.plot needs matplotlib: pip install matplotlib (or ppl[zoo])."
        ) from err
    history = np.asarray(history, dtype=float)
    if history.size == 0:
        raise ValueError("FitResult.plot: the history is empty (no steps were taken).")
    window = max(1, history.size // 50) if window is None else window
    if window < 1:
        raise ValueError(f"FitResult.plot: window must be at least 1, got {window}.")
    steps = np.arange(history.size)
    finite = np.isfinite(history)
    figure = Figure(figsize=(7.0, 4.0), layout="constrained")
    FigureCanvasAgg(figure)  # an explicit Agg canvas: no pyplot, no global backend
    axes = figure.add_subplot()
    axes.plot(steps, history, lw=0.6, alpha=0.35, color="C0", label="estimate")
    axes.plot(
        steps,
        running_mean(history, window),
        lw=1.6,
        color="C1",
        label=f"running mean ({window} steps)",
    )
    if finite.any():  # keep the first, far-off steps from flattening the rest
        low, high = np.percentile(history[finite], [2.0, 100.0])
        pad = 0.05 * (high - low) or 1.0
        axes.set_ylim(low - pad, high + pad)
    title = "objective"
    if num_bad_steps:
        title += f" ({num_bad_steps} non-finite steps skipped)"
    axes.set(xlabel="step", ylabel="objective estimate", title=title)
    axes.legend(loc="lower right")
    figure.savefig(path, format="png", dpi=120)
    return path
