"""The paper-shaped measurements of a trained PV-RNN or VRNN, and the plots."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl_zoo.pv_rnn import _metrics, _model, _regression
from ppl_zoo.pv_rnn._data import Data, templates
from ppl_zoo.pv_rnn._train import layer_weights, taus_of

__all__ = [
    "effective_log_scales",
    "pvrnn_metrics",
    "vrnn_metrics",
    "plot_generation",
    "plot_predictions",
]


def effective_log_scales(net: dict, log_scales) -> list:
    """``log`` of the prior noise as the network feels it, per layer ``(N, T, 1)``.

    ``z^l`` enters the units only through ``W^l_zd``, so ``σ^p`` and the scale of
    ``W^l_zd`` trade off (the bound is nearly invariant to rescaling both). The noise
    the prior injects into the units is ``σ^p ⊙ ε`` mapped by ``W^l_zd``; its root-mean-
    square standard deviation over the ``d`` units is
    ``sqrt(Σ_j σ_j² ‖W^l_zd[j]‖² / dim d)``.
    """
    out = []
    for layer, log_scale in zip(net["layers"], log_scales):
        row_norms = jnp.sum(layer["w_zd"] ** 2, axis=1) / layer["w_zd"].shape[1]
        variance = jnp.sum(jnp.exp(2.0 * log_scale) * row_norms, axis=-1, keepdims=True)
        out.append(0.5 * jnp.log(variance))
    return out


def _er_settings(config):
    return {
        "window": int(config["er_window"]),
        "horizon": int(config["er_horizon"]),
    }


def pvrnn_metrics(
    key: jax.Array, params: dict, data: Data, config: Mapping[str, Any], return_outputs=False
):
    """Training reconstruction error, free-running statistics, prior σ, error regression.

    Returns a dict: ``recon_mse`` (posterior means on the training set), ``tv_distance``
    and ``malformed_fraction`` of cycles generated from the prior, ``sigma_branch`` and
    ``sigma_inside`` (prior σ along the training posteriors; ``effective_*``: the same
    for the noise it injects into the units, see `effective_log_scales`), ``er_mse`` (error
    regression's ``H``-step prediction error on the test set), ``filter_mse`` (the
    same for `filter_predictions`, the Bayes-optimal predictor: the achievable floor),
    ``oracle_mse`` (for `oracle_predictions`, which also knows the hidden state) and
    ``er_loss_drop`` (the mean windowed loss before minus after the iterations).
    """
    taus = taus_of(config)
    key_generate, key_regress = jax.random.split(key)
    x_train = jnp.asarray(data.train.x)
    x_mean, log_scales = _model.posterior_means(params, taus, x_train)
    sigma_branch, sigma_inside = _metrics.branch_prior_scale(
        log_scales, data.train.labels, data.train.phase
    )
    effective_branch, effective_inside = _metrics.branch_prior_scale(
        effective_log_scales(params["net"], log_scales), data.train.labels, data.train.phase
    )
    generated, _ = _model.generate(
        key_generate,
        params["net"],
        taus,
        int(config["generate_sequences"]),
        int(config["generate_length"]),
    )
    generated = np.asarray(generated)
    labels = [_metrics.classify_cycles(g, data.period) for g in generated]
    counts = _metrics.transition_counts(labels)
    all_labels = np.concatenate(labels)
    settings = _er_settings(config)
    x_test = jnp.asarray(data.test.x)
    predictions, losses = _regression.error_regression(
        key_regress,
        params["net"],
        x_test,
        layer_weights(config["w"], len(taus)),
        float(config["er_learning_rate"]),
        taus=taus,
        iterations=int(config["er_iterations"]),
        first_iterations=int(config["er_first_iterations"]),
        **settings,
    )
    targets = _regression.future_targets(x_test, **settings)
    oracle = _metrics.oracle_predictions(
        data.test.states, data.test.phase, data.period, transitions=data.transitions, **settings
    )
    best = _metrics.filter_predictions(
        data.test.x, data.period, data.noise, transitions=data.transitions, **settings
    )
    metrics = {
        "recon_mse": float(jnp.mean((x_mean - x_train) ** 2)),
        "tv_distance": _metrics.total_variation(counts, data.transitions),
        "malformed_fraction": float(np.mean(all_labels < 0)),
        "p_b_after_a": float(counts[0, 1] / max(counts[0].sum(), 1.0)),
        "p_c_after_a2": float(counts[2, 2] / max(counts[2].sum(), 1.0)),
        "sigma_branch": sigma_branch,
        "sigma_inside": sigma_inside,
        "effective_sigma_branch": effective_branch,
        "effective_sigma_inside": effective_inside,
        "er_mse": float(jnp.mean((predictions - targets) ** 2)),
        "filter_mse": float(np.mean((best - np.asarray(targets)) ** 2)),
        "oracle_mse": float(np.mean((oracle - np.asarray(targets)) ** 2)),
        "er_loss_drop": float(jnp.mean(losses[:, 0] - losses[:, 1])),
    }
    if return_outputs:
        return metrics, {"generated": generated, "predictions": np.asarray(predictions)}
    return metrics


def vrnn_metrics(params: dict, data: Data, config: Mapping[str, Any]) -> dict:
    """The VRNN's training reconstruction (encoder means) and its test prediction error."""
    taus = taus_of(config)
    x_train = jnp.asarray(data.train.x)
    x_mean, _ = _model.vrnn_filter(params, taus, x_train)
    settings = _er_settings(config)
    x_test = jnp.asarray(data.test.x)
    predictions = _regression.vrnn_predictions(params, x_test, taus=taus, **settings)
    targets = _regression.future_targets(x_test, **settings)
    return {
        "vrnn_recon_mse": float(jnp.mean((x_mean - x_train) ** 2)),
        "vrnn_mse": float(jnp.mean((predictions - targets) ** 2)),
    }


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_generation(panels: Mapping[str, np.ndarray], period: int, path: Path, steps=160):
    """One column per model: a generated ``(T, 2)`` trajectory in the plane and in time."""
    figure = _figure(3.0 * len(panels), 5.0)
    axes = figure.subplots(2, len(panels), squeeze=False)
    shapes = templates(period)
    for column, (title, trajectory) in enumerate(panels.items()):
        top, bottom = axes[0, column], axes[1, column]
        for shape in shapes:
            top.plot(*np.vstack([shape, shape[:1]]).T, color="0.85", lw=3)
        top.plot(*trajectory[:steps].T, lw=0.8)
        top.set(title=title, xlim=(-0.9, 0.9), ylim=(-0.95, 0.95), aspect="equal")
        bottom.plot(trajectory[:steps, 0], lw=0.8, label="x")
        bottom.plot(trajectory[:steps, 1], lw=0.8, label="y")
        for boundary in range(0, steps, period):
            bottom.axvline(boundary, color="0.9", lw=0.5)
        bottom.set(xlabel="step", ylim=(-1, 1))
    axes[1, 0].legend(loc="lower left", fontsize=7)
    figure.savefig(path, dpi=90)
    return path


def plot_predictions(x, predictions, window: int, path: Path, times=(30, 60, 90)):
    """A test sequence (first coordinate) and the ``H``-step predictions made at ``times``."""
    figure = _figure(8.0, 3.0)
    axis = figure.subplots()
    axis.plot(x[:, 0], color="0.6", lw=1, label="observed x")
    for t in times:
        index = t - window
        if 0 <= index < predictions.shape[0]:
            horizon = predictions.shape[1]
            axis.plot(np.arange(t, t + horizon), predictions[index, :, 0], lw=1.5)
            axis.axvline(t, color="0.85", lw=0.5)
    axis.set(xlabel="step", title="error regression: predictions from the marked times")
    axis.legend(loc="upper right", fontsize=7)
    figure.savefig(path, dpi=90)
    return path
