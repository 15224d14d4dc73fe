"""Mult-VAE: variational autoencoders for collaborative filtering.

Liang, Krishnan, Hoffman, Jebara. "Variational Autoencoders for Collaborative
Filtering". WWW 2018 (arXiv:1802.05814). Documentation:
``docs/zoo/mult_vae.md``.

A multinomial likelihood over items, an amortized Gaussian guide on the L2-normalized,
dropped-out click vector, and the partially regularized β-ELBO with β annealed per
update to a cap of 0.2, written as NumPyro programs and trained with ``ppl.fit``;
Mult-DAE, popularity and EASE baselines; the paper's strong-generalization protocol
and metrics. ``ppl zoo train mult_vae`` trains on generated clicks, ``--data PATH``
on a MovieLens ratings file the user supplies (``u.data``, ``ratings.dat``,
``ratings.csv``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

import ppl_zoo
from ppl_zoo.mult_vae._data import (
    Split,
    dense_batches,
    read_movielens,
    strong_generalization_split,
    synthetic_clicks,
)
from ppl_zoo.mult_vae._metrics import (
    exclude_fold_in,
    mean_and_standard_error,
    ndcg_at_k,
    recall_at_k,
)
from ppl_zoo.mult_vae._model import (
    annealed_elbo,
    beta_schedule,
    dae_objective,
    dae_scores,
    guide,
    init_dae,
    init_vae,
    mlp,
    model,
    vae_scores,
)
from ppl_zoo.mult_vae._train import (
    AnnealedBatches,
    ease_scores,
    ease_weights,
    evaluate_scores,
    popularity_scores,
    score_in_batches,
    select_ease,
    train_autoencoder,
)

__all__ = [
    "AnnealedBatches",
    "CITATION",
    "DEFAULT_CONFIG",
    "Split",
    "annealed_elbo",
    "beta_schedule",
    "dae_objective",
    "dae_scores",
    "dense_batches",
    "ease_scores",
    "ease_weights",
    "evaluate_scores",
    "exclude_fold_in",
    "guide",
    "init_dae",
    "init_vae",
    "load_data",
    "mean_and_standard_error",
    "mlp",
    "model",
    "ndcg_at_k",
    "popularity_scores",
    "read_movielens",
    "recall_at_k",
    "score_in_batches",
    "select_ease",
    "strong_generalization_split",
    "synthetic_clicks",
    "train",
    "evaluate",
    "train_autoencoder",
    "vae_scores",
]

CITATION = (
    "Liang, Krishnan, Hoffman, Jebara. Variational Autoencoders for Collaborative "
    "Filtering. WWW 2018 (arXiv:1802.05814)."
)

DEFAULT_CONFIG: dict[str, Any] = {
    "data_seed": 0,  # the generated clicks and the user split
    "num_users": 3000,
    "num_items": 500,
    "heldout_users": 500,  # validation and test users each (MovieLens: min(10000, 10 %))
    "model": "vae",  # or "dae"
    "epochs": 100,
    "batch_size": 100,
    "hidden": 600,
    "latent": 200,
    "dae_hidden": 200,
    "dae_weight_decay": 0.01,  # divided by batch_size, as in the notebook
    "keep_prob": 0.5,
    "learning_rate": 1e-3,
    "total_anneal_steps": 8500,  # β reaches the cap at 85 % of the 2000 updates
    "anneal_cap": 0.2,
}


def load_data(config: Mapping[str, Any], path: Path | None) -> Split:
    """Generated clicks (``path=None``) or a MovieLens ratings file, split as in the paper."""
    seed = int(config["data_seed"])
    if path is None:
        clicks, log_probs = synthetic_clicks(seed, config["num_users"], config["num_items"])
        return strong_generalization_split(
            seed, clicks, int(config["heldout_users"]), log_probs=log_probs
        )
    pairs = read_movielens(path)
    _, clicks_per_user = np.unique(pairs[:, 0], return_counts=True)
    kept_users = int(np.sum(clicks_per_user >= 5))
    heldout = min(10_000, kept_users // 10)  # the paper's 10,000; smaller sets 10 %
    return strong_generalization_split(seed, pairs, heldout)


def _score_fn(kind: str):
    return vae_scores if kind == "vae" else dae_scores


def _init(config: Mapping[str, Any], num_items: int):
    if config["model"] == "vae":
        return init_vae(jax.random.key(0), num_items, config["hidden"], config["latent"])
    return init_dae(jax.random.key(0), num_items, config["dae_hidden"])


def train(key: jax.Array, data: Split, config: Mapping[str, Any], out_dir: Path) -> dict:
    """Train, keep the best-validation parameters, write them and plots; test metrics."""
    params, info = train_autoencoder(key, data, config)
    leaves = jax.tree.leaves(params)
    np.savez(out_dir / "params.npz", *[np.asarray(leaf) for leaf in leaves])
    _plot(info, out_dir / "training.png")
    metrics = _test_metrics(params, data, config)
    metrics["best_epoch"] = int(info["best_epoch"])
    (out_dir / "validation.json").write_text(json.dumps(info["valid_ndcg@100"].tolist()))
    return metrics


def evaluate(key: jax.Array, data: Split, config: Mapping[str, Any], out_dir: Path) -> dict:
    """Test metrics of the parameters ``train`` wrote into ``out_dir``."""
    path = out_dir / "params.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint; run ppl zoo train mult_vae first.")
    template = _init(config, data.num_items)
    with np.load(path) as saved:
        leaves = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    params = jax.tree.unflatten(jax.tree.structure(template), leaves)
    return _test_metrics(params, data, config)


def _test_metrics(params, data: Split, config) -> dict:
    scores = score_in_batches(_score_fn(config["model"]), params, data.test_in)
    return evaluate_scores(scores, data.test_in, data.test_out)


def _plot(info: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.plot(info["history"], lw=0.5)
    left.set(xlabel="update", ylabel="objective per user", title="training objective")
    right.plot(np.arange(1, info["valid_ndcg@100"].size + 1), info["valid_ndcg@100"])
    right.set(xlabel="epoch", ylabel="NDCG@100", title="validation")
    figure.savefig(path, dpi=110)


ppl_zoo.register(
    ppl_zoo.ZooModel(
        name="mult_vae",
        description="Mult-VAE / Mult-DAE for collaborative filtering (clicks, NDCG@100)",
        citation=CITATION,
        load_data=load_data,
        default_config=DEFAULT_CONFIG,
        train=train,
        evaluate=evaluate,
    )
)
