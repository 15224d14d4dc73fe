"""VBLE: variational Bayes image restoration in the latent space of a compressive autoencoder.

Biquard, Genin, Latry, Chabert, Oberlin. "Variational Bayes image restoration with
compressive autoencoders" (arXiv:2311.17744; v2 titled "Variational Bayesian latent
estimation with compressive autoencoders"). Documentation:
``docs/zoo/vble.md``.

A small mean-scale-hyperprior compressive autoencoder (Ballé et al., ICLR 2018), trained
with the rate-distortion objective on crops of scikit-image's bundled photographs (or a
folder of the user's images), is the image prior. For a degraded image ``y = A x + ε``
(Gaussian blur, 4x down-sampling, random inpainting mask), VBLE fits a uniform
posterior ``q(z, h)`` on both latent levels by maximizing the ELBO, written as a
``ppl.expectation`` with reparameterized ``Uniform`` sites and optimized with
``ppl.fit``; decoding posterior samples gives the MMSE estimate and a per-pixel
standard deviation. VBLE-xz (arXiv:2412.04130) adds the CAE's Gaussian decoder noise
``p(x | z) = N(g_s(z), γ² I)``, ``γ² = 1/(2 ln 2 · α · 255²)``, with the exact
conditional ``q(x | z) = p(x | z, y)``: calibrated pixel intervals. Baselines: MAP-z
(the same loss at a point), Wiener/Tikhonov and total-variation restoration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

import ppl_zoo
from ppl_zoo.vble._baselines import (
    coverage,
    divergence,
    gradient,
    psnr,
    spearman,
    ssim,
    tikhonov,
    tv_restore,
    wiener,
)
from ppl_zoo.vble._cae import CAE, bits_per_pixel, init_cae, log_prior, rate_distortion, train_cae
from ppl_zoo.vble._data import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    VALIDATION_IMAGES,
    Images,
    center_crops,
    random_crops,
    read_image_folder,
    skimage_images,
    split_images,
)
from ppl_zoo.vble._operators import Blur, Downsample, Mask, gaussian_kernel, random_mask
from ppl_zoo.vble._restore import (
    LatentPosterior,
    conditional_mean,
    conditional_variance,
    decoder_std,
    fit_map,
    fit_vble,
    fit_vble_xz,
    init_latents,
    map_objective,
    posterior_samples,
    posterior_samples_xz,
    summarize_samples,
    vble_objective,
    vble_xz_objective,
)
from ppl_zoo.vble._tasks import (
    METHODS,
    TASKS,
    degrade,
    evaluate_restoration,
    gamma_of,
    initial_image,
    make_task,
    run_method,
)

__all__ = [
    "CITATION",
    "DEFAULT_CONFIG",
    "CAE",
    "Images",
    "LatentPosterior",
    "Blur",
    "Downsample",
    "Mask",
    "METHODS",
    "TASKS",
    "TRAIN_IMAGES",
    "VALIDATION_IMAGES",
    "TEST_IMAGES",
    "bits_per_pixel",
    "center_crops",
    "conditional_mean",
    "conditional_variance",
    "coverage",
    "decoder_std",
    "degrade",
    "divergence",
    "evaluate",
    "evaluate_restoration",
    "fit_map",
    "fit_vble",
    "fit_vble_xz",
    "gamma_of",
    "gaussian_kernel",
    "gradient",
    "init_cae",
    "init_latents",
    "initial_image",
    "load_cae",
    "load_data",
    "log_prior",
    "make_task",
    "map_objective",
    "posterior_samples",
    "posterior_samples_xz",
    "psnr",
    "random_crops",
    "random_mask",
    "rate_distortion",
    "read_image_folder",
    "run_method",
    "skimage_images",
    "spearman",
    "split_images",
    "ssim",
    "summarize_samples",
    "tikhonov",
    "train",
    "train_cae",
    "tv_restore",
    "vble_objective",
    "vble_xz_objective",
    "wiener",
]

CITATION = (
    "Biquard, Genin, Latry, Chabert, Oberlin. Variational Bayes image restoration with "
    "compressive autoencoders. arXiv:2311.17744 (2023-2025)."
)

DEFAULT_CONFIG: dict[str, Any] = {
    "data_seed": 0,
    # the compressive autoencoder and its rate-distortion training
    "channels": 32,
    "latent": 32,
    "hyper": 16,
    "alpha": 0.0067,  # λ_rd, the bitrate parameter (one of the reference's pretrained α)
    "crop_size": 32,
    "num_crops": 8000,
    "cae_steps": 3000,
    "cae_batch_size": 8,
    "cae_learning_rate": 2e-3,
    # restoration
    "tasks": "deblur,sr4,inpaint",
    "test_size": 64,  # held-out crops (multiple of 16)
    "crops_per_image": 2,
    "blur_std": 3.0,
    "deblur_noise": 7.65 / 255,
    "noise": 2.55 / 255,  # super-resolution and inpainting
    "inpaint_keep": 0.5,
    "vble_steps": 300,
    "num_samples": 100,
    "decoder_std": None,  # γ of VBLE-xz's p(x | z); None: the value α implies
    "lam": 1.0,  # λ of VBLE, VBLE-xz and MAP-z in `ppl zoo train` (the benchmark tunes it)
    "wiener_weight": 0.1,  # Wiener balance (deblurring) / Tikhonov β (other tasks)
    "tv_weight": 0.01,
}


def load_data(config: Mapping[str, Any], path: Path | None) -> Images:
    """scikit-image's bundled images (``path=None``) or a folder of images, split by image."""
    if path is None:
        return Images(
            skimage_images(TRAIN_IMAGES),
            skimage_images(VALIDATION_IMAGES),
            skimage_images(TEST_IMAGES),
        )
    size = max(int(config["crop_size"]), int(config["test_size"]))
    return split_images(read_image_folder(path, min_size=size), int(config["data_seed"]))


def load_cae(path: Path, config: Mapping[str, Any]) -> CAE:
    """The CAE saved by `train` at ``path`` (``cae.eqx``), for the shapes in ``config``."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no checkpoint; run ppl zoo train vble first.")
    template = init_cae(jax.random.key(0), config["channels"], config["latent"], config["hyper"])
    return eqx.tree_deserialise_leaves(path, template)


def _tasks(config) -> list[str]:
    tasks = [t.strip() for t in str(config["tasks"]).split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks: unknown {unknown}; expected a comma list from {TASKS}.")
    return tasks


def restoration_metrics(cae: CAE, data: Images, config, out_dir: Path | None = None) -> dict:
    """Every method on the test crops at the configured weights; mean metrics per task."""
    crops = center_crops(data.test, int(config["test_size"]), int(config["crops_per_image"]))
    weights = {"VBLE": config["lam"], "VBLE-xz": config["lam"], "MAP-z": config["lam"]}
    weights.update({"Wiener": config["wiener_weight"], "TV": config["tv_weight"]})
    metrics = {}
    for task in _tasks(config):
        rows = {method: [] for method in METHODS}
        for index, x in enumerate(crops.values()):
            operator, sigma = make_task(task, x.shape, config, seed=index)
            y = degrade(index, x, operator, sigma)
            for method in METHODS:
                key = jax.random.fold_in(jax.random.key(0), index)
                out = run_method(method, key, task, cae, operator, y, sigma, weights[method],
                                 config, x.shape)  # fmt: skip
                rows[method].append(evaluate_restoration(x, out))
                if out_dir is not None and index == 0 and method == "VBLE":
                    _plot_example(out_dir / f"restoration_{task}.png", x, y, out, task)
        for method, values in rows.items():
            for metric in values[0]:
                if metric != "seconds":
                    mean = float(np.mean([v[metric] for v in values]))
                    metrics[f"{task}/{method}/{metric}"] = mean
    return metrics


def train(key: jax.Array, data: Images, config: Mapping[str, Any], out_dir: Path) -> dict:
    """Train the CAE (rate-distortion, ``ppl.fit``), save ``cae.eqx`` and plots, and
    restore the test crops with every method."""
    crops = random_crops(
        int(config["data_seed"]), data.train, int(config["num_crops"]), int(config["crop_size"])
    )
    cae, result = train_cae(key, crops, config)
    eqx.tree_serialise_leaves(out_dir / "cae.eqx", cae)
    result.plot(out_dir / "rate_distortion.png")
    return restoration_metrics(cae, data, config, out_dir)


def evaluate(key: jax.Array, data: Images, config: Mapping[str, Any], out_dir: Path) -> dict:
    """The restoration metrics of the CAE that `train` saved in ``out_dir``."""
    cae = load_cae(out_dir / "cae.eqx", config)
    return restoration_metrics(cae, data, config)


def _plot_example(path: Path, x, y, out, task: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 2.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 5)
    panels = [
        ("truth", x, "gray"),
        ("degraded", y, "gray"),
        ("VBLE mean", out["mean"], "gray"),
        ("|error|", np.abs(x - out["mean"]), "magma"),
        ("posterior std", out["std"], "magma"),
    ]
    for ax, (title, image, cmap) in zip(axes, panels):
        vmax = None if cmap == "magma" else 1.0
        ax.imshow(np.asarray(image), cmap=cmap, vmin=0.0, vmax=vmax)
        ax.set_title(f"{task}: {title}" if title == "truth" else title, fontsize=9)
        ax.axis("off")
    figure.savefig(path, dpi=90)


ppl_zoo.register(
    ppl_zoo.ZooModel(
        name="vble",
        description="VBLE: variational Bayes restoration in a compressive autoencoder's latents",
        citation=CITATION,
        load_data=load_data,
        default_config=DEFAULT_CONFIG,
        train=train,
        evaluate=evaluate,
    )
)
