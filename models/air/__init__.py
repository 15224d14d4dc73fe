"""AIR: Attend, Infer, Repeat, trained with every gradient estimator of the PLDI 2024 paper.

Eslami, Heess, Weber, Tassa, Szepesvari, Kavukcuoglu, Hinton. "Attend, Infer, Repeat:
Fast Scene Understanding with Generative Models". NeurIPS 2016 (arXiv:1603.08575).
The estimator benchmark (REINFORCE with a baseline, enumeration, MVD, the MVD/enum
hybrid, IWAE(2) with REINFORCE and with MVD, reweighted wake-sleep; timings against
Pyro) is that of Becker, Lew, Wang, Ghavami, Huot, Rinard, Mansinghka. "Probabilistic
Programming with Programmable Variational Inference". PLDI 2024 (arXiv:2406.15742),
Table 2 and Figure 7. Documentation:
``docs/zoo/air.md``.

The model and guide are NumPyro programs (`model`, `guide`); `make_objective` writes
each estimator's objective with ``ppl.sim`` / ``ppl.density`` and a strategy map for
the ``z_pres`` sites, and `train_air` trains it with ``ppl.fit``. ``ppl zoo train air
--set estimator=mvd`` trains on generated canvases (scikit-learn digits on a 50x50
canvas), ``--data PATH`` on a multi-MNIST ``.npz`` the user supplies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

import ppl_zoo
from ppl_zoo.air._data import (
    Canvases,
    Split,
    digit_windows,
    generate,
    load_multi_mnist,
    make_split,
    window_overlap,
)
from ppl_zoo.air._model import (
    ESTIMATORS,
    Sizes,
    batch_objective,
    decoded_windows,
    guide,
    infer_counts,
    init_params,
    make_objective,
    model,
    z_pres_strategies,
)
from ppl_zoo.air._nets import image_to_window, window_to_image
from ppl_zoo.air._train import Evaluator, config_optimizer, model_options, optimizer, train_air

__all__ = [
    "CITATION",
    "DEFAULT_CONFIG",
    "ESTIMATORS",
    "Canvases",
    "Evaluator",
    "Sizes",
    "Split",
    "batch_objective",
    "config_optimizer",
    "decoded_windows",
    "digit_windows",
    "evaluate",
    "generate",
    "guide",
    "image_to_window",
    "infer_counts",
    "init_params",
    "load_data",
    "load_multi_mnist",
    "make_objective",
    "make_split",
    "model_options",
    "model",
    "optimizer",
    "train",
    "train_air",
    "window_overlap",
    "window_to_image",
    "z_pres_strategies",
]

CITATION = (
    "Eslami et al. Attend, Infer, Repeat: Fast Scene Understanding with Generative Models. "
    "NeurIPS 2016 (arXiv:1603.08575); estimator benchmark of Becker et al., PLDI 2024."
)

DEFAULT_CONFIG: dict[str, Any] = {
    "estimator": "enum",  # one of ESTIMATORS
    "data_seed": 0,
    "num_train": 10000,
    "num_test": 1000,
    "num_validation": 1000,  # checkpoint chosen by count accuracy on these
    "canvas_size": 50,
    "window_size": 20,
    "max_objects": 3,
    "z_what": 50,
    "lstm": 256,
    "decoder": 200,
    "encoder": 200,
    "pres_prior": 0.5,
    "scale_prior_loc": 2.8,
    "scale_prior_sd": 0.3,
    "rws_particles": 10,
    "num_steps": 3000,
    "batch_size": 64,
    "residual": False,  # True: the guide's LSTM reads the unexplained canvas (DAIR)
    "learning_rate": 1e-4,
    "decay_steps": 0,  # > 0: cosine decay of the rate to final_learning_rate
    "final_learning_rate": 1e-5,
    "baseline_learning_rate": 1e-3,
    "eval_every": 100,
}


def load_data(config: Mapping[str, Any], path: Path | None) -> Split:
    """Generated canvases (``path=None``) or a multi-MNIST ``.npz`` (see `load_multi_mnist`)."""
    if config["estimator"] not in ESTIMATORS:
        raise ValueError(
            f"estimator must be one of {', '.join(ESTIMATORS)}; got {config['estimator']!r}."
        )
    if path is None:
        return make_split(
            int(config["data_seed"]),
            int(config["num_train"]),
            int(config["num_test"]),
            int(config["canvas_size"]),
            int(config["window_size"]),
            int(config["max_objects"]),
            int(config["num_validation"]),
        )
    split = load_multi_mnist(
        path, int(config["num_test"]), int(config["max_objects"]), int(config["num_validation"])
    )
    if split.train.images.shape[1] != int(config["canvas_size"]):
        raise ValueError(
            f"{path}: canvases are {split.train.images.shape[1]} pixels wide; "
            f"set canvas_size={split.train.images.shape[1]}."
        )
    return split


def train(key: jax.Array, data: Split, config: Mapping[str, Any], out_dir: Path) -> dict:
    """Train with ``config["estimator"]``; write ``params.npz``, ``curve.json`` and plots.

    With validation canvases the saved parameters are those of the evaluation with the
    best validation count accuracy (the test set is never used to choose).
    """
    evaluator = Evaluator(data.test, config)
    validation = None if data.validation is None else Evaluator(data.validation, config)
    params, curve = train_air(key, data.train, evaluator, config, validation=validation)
    leaves = jax.tree.leaves(params)
    np.savez(out_dir / "params.npz", *[np.asarray(leaf) for leaf in leaves])
    (out_dir / "curve.json").write_text(
        json.dumps({k: np.asarray(v).tolist() for k, v in curve.items()})
    )
    _plot_curve(curve, config["estimator"], out_dir / "training.png")
    _plot_reconstructions(params, data.test, config, out_dir / "reconstructions.png")
    metrics = evaluator(params)
    metrics["train_seconds"] = float(curve["seconds"][-1])
    metrics["seconds_per_step"] = float(curve["seconds"][-1] / max(curve["step"][-1], 1))
    if "selected_step" in curve:
        metrics["selected_step"] = int(curve["selected_step"])
    return metrics


def evaluate(key: jax.Array, data: Split, config: Mapping[str, Any], out_dir: Path) -> dict:
    """Count accuracy and held-out ELBO of the parameters ``train`` wrote into ``out_dir``."""
    path = out_dir / "params.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint; run ppl zoo train air first.")
    template = init_params(jax.random.key(0), Sizes.from_config(config))
    with np.load(path) as saved:
        leaves = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(leaves) != len(jax.tree.leaves(template)):
        raise ValueError(f"{path}: the checkpoint does not match the configured network sizes.")
    params = jax.tree.unflatten(jax.tree.structure(template), leaves)
    return Evaluator(data.test, config)(params, key)


def _figure(width: float, height: float, columns: int, rows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False)


def _plot_curve(curve: Mapping[str, np.ndarray], label: str, path: Path) -> None:
    figure, axes = _figure(10.0, 3.2, 3)
    history = np.asarray(curve["history"])
    axes[0, 0].plot(np.arange(1, history.size + 1), history, lw=0.4)
    axes[0, 0].set(xlabel="step", ylabel="objective (minibatch)", title=f"training ({label})")
    axes[0, 1].plot(curve["seconds"], curve["count_accuracy"], marker=".")
    axes[0, 1].set(xlabel="training seconds", ylabel="count accuracy", ylim=(0, 1))
    axes[0, 2].plot(curve["seconds"], curve["test_elbo"], marker=".")
    axes[0, 2].set(xlabel="training seconds", ylabel="held-out ELBO per canvas")
    figure.savefig(path, dpi=100)


def _plot_reconstructions(params, test: Canvases, config, path: Path, count: int = 8) -> None:
    images = test.images[:count]
    presence, where, canvas = jax.device_get(
        decoded_windows(params, images, int(config["max_objects"]), bool(config["residual"]))
    )
    figure, axes = _figure(1.4 * count, 3.0, count, 2)
    size = images.shape[-1]
    for i in range(count):
        axes[0, i].imshow(images[i], cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(f"true {int(test.counts[i])}", fontsize=8)
        axes[1, i].imshow(np.clip(canvas[i], 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[1, i].set_title(f"inferred {int(presence[i].sum())}", fontsize=8)
        for t in range(where.shape[1]):
            if presence[i, t] > 0:
                s, x, y = where[i, t]
                half = size / (2 * s)
                centre_x, centre_y = (1 - x / s) * size / 2, (1 - y / s) * size / 2
                for ax in axes[:, i]:
                    ax.add_patch(
                        _rectangle(centre_x - half - 0.5, centre_y - half - 0.5, 2 * half, f"C{t}")
                    )
        for ax in axes[:, i]:
            ax.set_axis_off()
    figure.savefig(path, dpi=100)


def _rectangle(x, y, side, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), side, side, fill=False, edgecolor=color, lw=1)


ppl_zoo.register(
    ppl_zoo.ZooModel(
        name="air",
        description="Attend-Infer-Repeat on multi-digit canvases, every z_pres estimator",
        citation=CITATION,
        load_data=load_data,
        default_config=DEFAULT_CONFIG,
        train=train,
        evaluate=evaluate,
    )
)
