"""ARD-VAE: finding the relevant latent dimensions of a variational autoencoder.

Saha, Joshi, Whitaker. "ARD-VAE: A Statistical Formulation to Find the Relevant Latent
Dimensions of Variational Autoencoders" (arXiv:2501.10901, 2025). Documentation:
``docs/zoo/ard_vae.md``.

A hierarchical prior ``z_l ~ N(0, α_l⁻¹)``, ``α_l ~ Gamma(0, 0)``, whose posterior given
encoded held-aside data is (for large ``n``) ``N(0, σ̂_l²)`` with ``σ̂_l²`` the mean square
of the encodings; ``σ̂²`` is re-estimated every epoch from a freshly drawn held-aside
subset and held fixed within the epoch, in which the β-ELBO against it is maximized
with ``ppl.fit``. After training, axis ``l`` is scored by ``r_l = w_l σ̂_l²`` with ``w_l``
the decoder's Jacobian weight, and the fewest top axes holding 99 % of ``Σ r`` are the
active ones. A plain N(0, I) VAE counted by the same rule is the baseline. Data with a
known number of factors are generated offline (linear-Gaussian k = 3, a non-linear
manifold k = 5, 16×16 sprites k = 4) plus scikit-learn's digits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

import ppl_zoo
from ppl_zoo.ard_vae._data import (
    DATASETS,
    SPRITE_FACTORS,
    Dataset,
    digits,
    linear_gaussian,
    make_dataset,
    nonlinear_manifold,
    read_array,
    sprites,
)
from ppl_zoo.ard_vae._evaluate import DigitsFeatures, evaluate_model, generate
from ppl_zoo.ard_vae._metrics import (
    active_mask,
    count_active,
    jacobian_weights,
    mean_and_standard_error,
    median_bandwidth,
    mmd,
    mutual_information_gap,
    reconstruction_error,
    relevance,
)
from ppl_zoo.ard_vae._model import ard_elbo, decode_mean, encode, guide, init_vae, mlp, model
from ppl_zoo.ard_vae._train import estimate_prior_variance, train_vae

__all__ = [
    "CITATION",
    "DATASETS",
    "DATASET_DEFAULTS",
    "DEFAULT_CONFIG",
    "SPRITE_FACTORS",
    "Dataset",
    "DigitsFeatures",
    "active_mask",
    "ard_elbo",
    "count_active",
    "decode_mean",
    "digits",
    "encode",
    "estimate_prior_variance",
    "evaluate",
    "evaluate_model",
    "generate",
    "guide",
    "init_vae",
    "jacobian_weights",
    "linear_gaussian",
    "load_data",
    "make_dataset",
    "mean_and_standard_error",
    "median_bandwidth",
    "mlp",
    "mmd",
    "model",
    "mutual_information_gap",
    "nonlinear_manifold",
    "read_array",
    "reconstruction_error",
    "relevance",
    "resolve_config",
    "sprites",
    "train",
    "train_vae",
]

CITATION = (
    "Saha, Joshi, Whitaker. ARD-VAE: A Statistical Formulation to Find the Relevant "
    "Latent Dimensions of Variational Autoencoders. arXiv:2501.10901, 2025."
)

# Per data set: network widths, likelihood scale s (log p = -||x - x̂||² / 2s² + c;
# s² = 1/2 is the paper's plain SSE), β, epochs, |X_α| and the Adam learning rate.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": {
        "hidden": [],
        "obs_scale": 0.7071,
        "beta": 1.0,
        "epochs": 60,
        "num_alpha": 1000,
        "learning_rate": 1e-2,
    },
    "manifold": {
        "hidden": [128, 128],
        "obs_scale": 0.7071,
        "beta": 1.0,
        "epochs": 40,
        "num_alpha": 1000,
        "learning_rate": 2e-3,
    },
    "sprites": {
        "hidden": [256, 128],
        "obs_scale": 1.0,  # unused: Bernoulli likelihood
        "beta": 1.0,
        "epochs": 40,
        "num_alpha": 1000,
        "learning_rate": 2e-3,
    },
    "digits": {
        "hidden": [128],
        "obs_scale": 0.15,
        "beta": 1.0,
        "epochs": 60,
        "num_alpha": 300,
        "learning_rate": 2e-3,
    },
}

DEFAULT_CONFIG: dict[str, Any] = {
    "dataset": "manifold",  # linear | manifold | sprites | digits (ignored with --data)
    "data_seed": 0,
    "model": "ard",  # or "vae": the plain N(0, I) baseline
    "latent": 10,  # the nominal dimension L
    "batch_size": 100,
    "threshold": 0.99,  # the cumulative-relevance rule
    # None: the data set's value from DATASET_DEFAULTS
    "hidden": None,
    "obs_scale": None,
    "beta": None,
    "epochs": None,
    "num_alpha": None,
    "learning_rate": None,
}


def resolve_config(config: Mapping[str, Any], data: Dataset | None = None) -> dict:
    """``config`` with every ``None`` filled from `DATASET_DEFAULTS` and the likelihood set.

    Raises:
        ValueError: for an unknown data set or model kind.
    """
    name = config["dataset"]
    if name not in DATASET_DEFAULTS:
        raise ValueError(f"config['dataset'] must be one of {DATASETS}, got {name!r}.")
    if config.get("model", "ard") not in ("ard", "vae"):
        raise ValueError(f"config['model'] must be 'ard' or 'vae', got {config['model']!r}.")
    resolved = dict(config)
    for key, value in DATASET_DEFAULTS[name].items():
        if resolved.get(key) is None:
            resolved[key] = value
    resolved["hidden"] = tuple(int(h) for h in resolved["hidden"])
    if data is not None:
        resolved["likelihood"] = data.likelihood
    return resolved


def load_data(config: Mapping[str, Any], path: Path | None) -> Dataset:
    """The configured generated data set, or a user's ``.npy``/``.npz`` array at ``path``."""
    return make_dataset(config["dataset"], int(config["data_seed"]), path)


def _features(data: Dataset):
    if data.name == "digits" and data.train_factors is not None:
        return DigitsFeatures(data.train, data.train_factors)
    return None


def train(key: jax.Array, data: Dataset, config: Mapping[str, Any], out_dir: Path) -> dict:
    """Train (with a per-epoch progress bar), write ``params.npz`` and plots; metrics."""
    config = resolve_config(config, data)
    ard = config["model"] == "ard"
    params, info = train_vae(key, data.train, config, ard=ard, progress=True)
    leaves = jax.tree.leaves(params)
    np.savez(out_dir / "params.npz", *[np.asarray(leaf) for leaf in leaves])
    np.save(out_dir / "prior_variance_per_epoch.npy", info["prior_variance"])
    metrics = evaluate_model(params, data, config, ard, _features(data))
    _plot(info, metrics, out_dir / "training.png")
    (out_dir / "history.json").write_text(json.dumps(info["history"].tolist()))
    return metrics


def evaluate(key: jax.Array, data: Dataset, config: Mapping[str, Any], out_dir: Path) -> dict:
    """The metrics of the parameters ``train`` wrote into ``out_dir``."""
    config = resolve_config(config, data)
    path = Path(out_dir) / "params.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint; run ppl zoo train ard_vae first.")
    template = init_vae(
        jax.random.key(0), data.train.shape[1], int(config["latent"]), config["hidden"]
    )
    with np.load(path) as saved:
        leaves = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    shapes = [leaf.shape for leaf in jax.tree.leaves(template)]
    if [leaf.shape for leaf in leaves] != shapes:
        raise ValueError(
            f"{path}: the saved parameters do not match the configuration (latent, hidden, "
            f"data dimension); pass the same --set values as for training."
        )
    params = jax.tree.unflatten(jax.tree.structure(template), leaves)
    return evaluate_model(params, data, config, config["model"] == "ard", _features(data))


def _plot(info: dict, metrics: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.0, 3.3), layout="constrained")
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    left.plot(info["history"], lw=0.4)
    left.set(xlabel="update", ylabel="objective per example", title="training objective")
    middle.semilogy(np.arange(1, len(info["prior_variance"]) + 1), info["prior_variance"])
    middle.set(xlabel="epoch", ylabel="σ̂² per axis", title="prior variances")
    share = np.asarray(metrics["relevance_share"])
    right.bar(np.arange(1, share.size + 1), share, color="C0")
    right.axvline(metrics["active"] + 0.5, color="C3", ls=":")
    right.set(
        xlabel="axis (sorted)",
        ylabel="share of Σ r",
        yscale="log",
        title=f"relevance: {metrics['active']} active",
    )
    figure.savefig(path, dpi=100)


ppl_zoo.register(
    ppl_zoo.ZooModel(
        name="ard_vae",
        description="ARD-VAE: data-driven prior variances find the relevant latent axes",
        citation=CITATION,
        load_data=load_data,
        default_config=DEFAULT_CONFIG,
        train=train,
        evaluate=evaluate,
    )
)
