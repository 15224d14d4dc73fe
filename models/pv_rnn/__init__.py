"""PV-RNN: the predictive-coding-inspired variational RNN with a meta-prior.

Ahmadi, Tani. "A Novel Predictive-Coding-Inspired Variational RNN Model for Online
Prediction and Recognition". Neural Computation 31(11):2025-2074, 2019
(arXiv:1811.01339). Documentation:
``docs/zoo/pv_rnn.md``.

Multiple-timescale deterministic units and Gaussian latent units per layer; the prior
on the latents comes from the previous deterministic state; the posterior is a free
*adaptive vector* per training sequence, step and layer, learned from prediction
errors alone (no encoder); the meta-prior ``w`` weights the KL term. Each latent is a
reparameterized ``ppl.sample`` site inside a ``lax.scan``, the bound is a
``ppl.expectation`` trained with ``ppl.fit``, and *error regression* (optimising the
adaptive vectors of a sliding window at test time) predicts online. A VRNN with an
encoder network is the baseline. ``ppl zoo train pv_rnn`` trains on generated
Lissajous primitives that switch by a probabilistic finite-state machine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

import ppl_zoo
from ppl_zoo.pv_rnn._data import (
    EMISSIONS,
    PRIMITIVES,
    STATES,
    TRUE_TRANSITIONS,
    Data,
    Sequences,
    chain_transitions,
    lissajous_sequences,
    load_data,
    templates,
)
from ppl_zoo.pv_rnn._evaluate import (
    plot_generation,
    plot_predictions,
    pvrnn_metrics,
    vrnn_metrics,
)
from ppl_zoo.pv_rnn._metrics import (
    branch_prior_scale,
    classify_cycles,
    cycle_states,
    filter_predictions,
    mean_and_standard_error,
    oracle_predictions,
    total_variation,
    transition_counts,
)
from ppl_zoo.pv_rnn._model import (
    gaussian_kl,
    generate,
    init_adaptive,
    init_encoder,
    init_network,
    posterior_means,
    pvrnn_objective,
    vrnn_objective,
    window_objective,
)
from ppl_zoo.pv_rnn._regression import error_regression, future_targets, vrnn_predictions
from ppl_zoo.pv_rnn._train import (
    fit_pvrnn,
    fit_vrnn,
    init_pvrnn,
    init_vrnn,
    layer_weights,
    taus_of,
)

__all__ = [
    "CITATION",
    "DEFAULT_CONFIG",
    "EMISSIONS",
    "PRIMITIVES",
    "STATES",
    "TRUE_TRANSITIONS",
    "Data",
    "Sequences",
    "branch_prior_scale",
    "chain_transitions",
    "classify_cycles",
    "cycle_states",
    "error_regression",
    "evaluate",
    "filter_predictions",
    "fit_pvrnn",
    "fit_vrnn",
    "future_targets",
    "gaussian_kl",
    "generate",
    "init_adaptive",
    "init_encoder",
    "init_network",
    "init_pvrnn",
    "init_vrnn",
    "layer_weights",
    "lissajous_sequences",
    "load_data",
    "mean_and_standard_error",
    "oracle_predictions",
    "plot_generation",
    "plot_predictions",
    "posterior_means",
    "pvrnn_metrics",
    "pvrnn_objective",
    "taus_of",
    "templates",
    "total_variation",
    "train",
    "transition_counts",
    "vrnn_metrics",
    "vrnn_objective",
    "vrnn_predictions",
    "window_objective",
]

CITATION = (
    "Ahmadi, Tani. A Novel Predictive-Coding-Inspired Variational RNN Model for Online "
    "Prediction and Recognition. Neural Computation 31(11), 2019 (arXiv:1811.01339)."
)

DEFAULT_CONFIG: dict[str, Any] = {
    "data_seed": 0,
    "num_train": 16,
    "num_test": 16,
    "length": 128,  # training sequences: 8 primitives of 16 steps
    "test_length": 120,
    "period": 16,
    "noise": 0.02,
    "branch_probability": 0.8,  # P(B | A) = P(C | A') (see lissajous_sequences)
    "hidden": [20, 8],  # d units per layer, bottom first
    "latent": [2, 1],  # z units per layer
    "tau": [2.0, 16.0],  # time constants per layer (the top one spans a period)
    "prior_scale": 0.1,  # the prior's σ^p at initialisation (see init_network)
    "w": 0.01,  # meta-prior: one number, or one per layer
    "vrnn_w": 0.01,  # the VRNN baseline's KL weight (same normalisation)
    "num_steps": 4000,
    "learning_rate": 3e-3,
    "clip": 10.0,
    "er_window": 12,
    "er_horizon": 10,
    "er_iterations": 40,
    "er_first_iterations": 50,
    "er_learning_rate": 0.05,
    "generate_sequences": 8,
    "generate_length": 400,
    "vrnn": True,  # also train and measure the VRNN baseline
}


def _load_checked(config: Mapping[str, Any], path: Path | None) -> Data:
    """`load_data`, after checking the model settings (so the CLI reports them cleanly)."""
    layer_weights(config["w"], len(taus_of(config)))
    layer_weights(config["vrnn_w"], len(config["tau"]))
    return load_data(config, path)


def _save(params, path: Path) -> None:
    np.savez(path, *[np.asarray(leaf) for leaf in jax.tree.leaves(params)])


def _load(template, path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint; run ppl zoo train pv_rnn first.")
    with np.load(path) as saved:
        leaves = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    structure = jax.tree.structure(template)
    if len(leaves) != structure.num_leaves:
        raise ValueError(
            f"{path}: {len(leaves)} arrays, but the configuration's model has "
            f"{structure.num_leaves}; evaluate with the settings it was trained with."
        )
    return jax.tree.unflatten(structure, leaves)


def train(key: jax.Array, data: Data, config: Mapping[str, Any], out_dir: Path) -> dict:
    """Train PV-RNN (and the VRNN baseline), write checkpoints and plots; the metrics."""
    key_fit, key_vrnn, key_eval = jax.random.split(key, 3)
    params, result = fit_pvrnn(key_fit, data.train.x, config)
    _save(params, out_dir / "params.npz")
    result.plot(out_dir / "objective.png")
    if config["vrnn"]:
        vrnn_params, vrnn_result = fit_vrnn(key_vrnn, data.train.x, config)
        _save(vrnn_params, out_dir / "vrnn_params.npz")
        vrnn_result.plot(out_dir / "vrnn_objective.png")
    return _measure(key_eval, data, config, out_dir, params, plots=True)


def evaluate(key: jax.Array, data: Data, config: Mapping[str, Any], out_dir: Path) -> dict:
    """The metrics of the checkpoints ``train`` wrote into ``out_dir``."""
    _, _, key_eval = jax.random.split(key, 3)
    template = init_pvrnn(jax.random.key(0), config, data.train.x.shape[0], data.train.x.shape[1])
    params = _load(template, out_dir / "params.npz")
    return _measure(key_eval, data, config, out_dir, params, plots=False)


def _measure(key, data, config, out_dir, params, plots: bool) -> dict:
    metrics, outputs = pvrnn_metrics(key, params, data, config, return_outputs=True)
    if config["vrnn"]:
        vrnn_params = _load(init_vrnn(jax.random.key(0), config), out_dir / "vrnn_params.npz")
        metrics.update(vrnn_metrics(vrnn_params, data, config))
    if plots:
        plot_generation(
            {f"PV-RNN w={config['w']}": outputs["generated"][0]},
            data.period,
            out_dir / "generated.png",
        )
        plot_predictions(
            data.test.x[0],
            outputs["predictions"][0],
            int(config["er_window"]),
            out_dir / "predictions.png",
        )
        (out_dir / "config.json").write_text(json.dumps(dict(config), indent=1))
    return metrics


ppl_zoo.register(
    ppl_zoo.ZooModel(
        name="pv_rnn",
        description="PV-RNN with a meta-prior and error regression (Lissajous switching)",
        citation=CITATION,
        load_data=_load_checked,
        default_config=DEFAULT_CONFIG,
        train=train,
        evaluate=evaluate,
    )
)
