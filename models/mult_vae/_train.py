"""Training (through ``ppl.fit``), the baselines (popularity, EASE, oracle) and evaluation."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp
from tqdm.auto import tqdm

import ppl
from ppl_zoo.mult_vae import _model
from ppl_zoo.mult_vae._data import Split, dense_batches
from ppl_zoo.mult_vae._metrics import (
    exclude_fold_in,
    mean_and_standard_error,
    ndcg_at_k,
    recall_at_k,
)

__all__ = [
    "AnnealedBatches",
    "train_autoencoder",
    "score_in_batches",
    "popularity_scores",
    "ease_scores",
    "evaluate_scores",
    "select_ease",
]


class AnnealedBatches:
    """One epoch of shuffled dense minibatches ``(x, β_t)`` for ``ppl.fit``.

    ``β_t = min(cap, t / total_anneal_steps)`` with ``t`` the global update count
    (``first_step`` + batches yielded so far), so the KL weight is annealed per update
    as in the reference notebook while the data stays sparse until each minibatch.
    """

    def __init__(self, seed, matrix, batch_size, first_step, total_anneal_steps, cap):
        self.seed, self.matrix, self.batch_size = seed, matrix, batch_size
        self.first_step, self.total, self.cap = first_step, total_anneal_steps, cap

    def __len__(self) -> int:
        return self.matrix.shape[0] // self.batch_size

    def __iter__(self):
        for index, x in enumerate(dense_batches(self.seed, self.matrix, self.batch_size)):
            beta = _model.beta_schedule(self.first_step + index, self.total, self.cap)
            yield x, np.float32(beta)


def score_in_batches(score: Callable, params, matrix: sp.csr_matrix, batch_size: int = 2000):
    """``score(params, x)`` over the rows of a CSR matrix, densified a batch at a time."""
    return np.concatenate(
        [
            np.asarray(score(params, jnp.asarray(x)))
            for x in dense_batches(0, matrix, batch_size, False)
        ]
    )


def popularity_scores(train: sp.csr_matrix, fold_in: sp.csr_matrix) -> np.ndarray:
    """Every user gets the training click counts of the items."""
    counts = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
    return np.broadcast_to(counts, fold_in.shape)


def ease_weights(train: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE (Steck, WWW 2019) in closed form.

    ``P = (XᵀX + λI)⁻¹``, ``B = -P / diag(P)`` with ``diag(B) = 0``; scores are ``X B``.
    """
    gram = (train.T @ train).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights


def ease_scores(weights: np.ndarray, fold_in: sp.csr_matrix) -> np.ndarray:
    return np.asarray(fold_in @ weights)


def evaluate_scores(scores, fold_in, held_out, ks=(20, 50, 100)) -> dict[str, float]:
    """NDCG@K and Recall@K (means and standard errors over users with held-out items)."""
    scores = exclude_fold_in(scores, fold_in)
    out = {}
    for k in ks:
        for name, metric in (("ndcg", ndcg_at_k), ("recall", recall_at_k)):
            mean, error = mean_and_standard_error(metric(scores, held_out, k))
            out[f"{name}@{k}"], out[f"{name}@{k}_se"] = mean, error
    return out


def select_ease(split: Split, grid=(10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)):
    """The EASE weights whose λ gives the best validation NDCG@100; returns ``(weights, λ)``."""
    best = None
    for l2 in grid:
        weights = ease_weights(split.train, l2)
        ndcg = evaluate_scores(
            ease_scores(weights, split.valid_in), split.valid_in, split.valid_out
        )
        if best is None or ndcg["ndcg@100"] > best[0]:
            best = (ndcg["ndcg@100"], weights, l2)
    return best[1], best[2]


def train_autoencoder(
    key: jax.Array,
    split: Split,
    config: Mapping[str, Any],
    progress: bool = True,
) -> tuple[dict, dict]:
    """Train Mult-VAE (``config["model"] == "vae"``) or Mult-DAE with ``ppl.Trainer``.

    Each epoch is one `ppl.Trainer.run` call on an `AnnealedBatches` iterator (the Adam
    state and the step count carry over); after each epoch the validation NDCG@100 is
    measured and the best parameters are kept (the paper's model selection).

    Returns:
        ``(best_params, info)`` with the per-step objective history, the validation
        NDCG@100 per epoch and the best epoch.
    """
    kind = config["model"]
    key_init, key_fit = jax.random.split(key)
    num_items = split.num_items
    batch_size = int(config["batch_size"])
    if kind == "vae":
        params = _model.init_vae(key_init, num_items, config["hidden"], config["latent"])
        objective = _model.annealed_elbo(config["keep_prob"])
        score = _model.vae_scores
    elif kind == "dae":
        params = _model.init_dae(key_init, num_items, config["dae_hidden"])
        objective = _model.dae_objective(
            config["dae_weight_decay"] / batch_size, config["keep_prob"]
        )
        score = _model.dae_scores
    else:
        raise ValueError(f"config['model'] must be 'vae' or 'dae', got {kind!r}.")
    optimizer = optax.adam(config["learning_rate"])
    steps_per_epoch = split.train.shape[0] // batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {split.train.shape[0]} training users."
        )
    seed = int(jax.random.randint(key_fit, (), 0, 2**31 - 1))
    history, valid_ndcg = [], []
    best = (-np.inf, params, 0)
    trainer = ppl.Trainer(objective, optimizer)
    state = trainer.init(key_fit, params)
    for epoch in tqdm(
        range(int(config["epochs"])), desc=f"Mult-{kind.upper()}", disable=not progress
    ):
        batches = AnnealedBatches(
            seed + epoch,
            split.train,
            batch_size,
            epoch * steps_per_epoch,
            config["total_anneal_steps"],
            config["anneal_cap"],
        )
        state, values = trainer.run(state, steps_per_epoch, data=batches)
        params = state.params
        history.append(values)
        scores = score_in_batches(score, params, split.valid_in)
        ndcg = evaluate_scores(scores, split.valid_in, split.valid_out, ks=(100,))["ndcg@100"]
        valid_ndcg.append(ndcg)
        if ndcg > best[0]:
            best = (ndcg, copy.deepcopy(jax.device_get(params)), epoch)
    info = {
        "history": np.concatenate(history),
        "valid_ndcg@100": np.asarray(valid_ndcg),
        "best_epoch": best[2],
    }
    return best[1], info
