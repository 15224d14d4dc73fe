"""The restoration tasks and one function that runs every method on one image.

Tasks (``TASKS``): Gaussian deblurring (standard deviation ``blur_std``, noise
``deblur_noise``), 4x super-resolution by area down-sampling and inpainting of a
random 50 % mask (noise ``noise``); the noise levels are the reference's 7.65/255 and
2.55/255.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl_zoo.vble._baselines import coverage, psnr, spearman, ssim, tikhonov, tv_restore, wiener
from ppl_zoo.vble._operators import Blur, Downsample, Mask, gaussian_kernel, random_mask
from ppl_zoo.vble._restore import (
    conditional_variance,
    decoder_std,
    fit_map,
    fit_vble,
    fit_vble_xz,
    posterior_samples,
    posterior_samples_xz,
    summarize_samples,
)

__all__ = [
    "TASKS",
    "METHODS",
    "make_task",
    "degrade",
    "initial_image",
    "run_method",
    "evaluate_restoration",
]

TASKS = ("deblur", "sr4", "inpaint")
METHODS = ("VBLE", "VBLE-xz", "MAP-z", "Wiener", "TV")


def make_task(task: str, shape, config: Mapping[str, Any], seed: int = 0):
    """``(operator, sigma)`` of ``task`` for images of ``shape``."""
    if task == "deblur":
        return Blur(jnp.asarray(gaussian_kernel(config["blur_std"]))), config["deblur_noise"]
    if task == "sr4":
        return Downsample(4), config["noise"]
    if task == "inpaint":
        return Mask(jnp.asarray(random_mask(seed, shape, config["inpaint_keep"]))), config["noise"]
    raise ValueError(f"unknown task '{task}'; expected one of {TASKS}.")


def degrade(seed: int, x, operator, sigma: float) -> np.ndarray:
    """``y = A x + σ ε`` with a fixed ``seed``."""
    noise = np.random.default_rng(seed).standard_normal(operator.output_shape(x.shape))
    return np.asarray(operator(jnp.asarray(x))) + sigma * noise.astype(np.float32)


def initial_image(task: str, y, operator, shape) -> np.ndarray:
    """The reference's initializations: y (deblurring), bicubic up-sampling (SR),
    normalized-convolution interpolation (inpainting)."""
    if task == "deblur":
        return np.clip(y, 0.0, 1.0)
    if task == "sr4":
        from skimage.transform import resize

        return np.clip(resize(np.asarray(y), shape, order=3, mode="reflect"), 0.0, 1.0)
    smooth = Blur(jnp.asarray(gaussian_kernel(2.0)))
    mask = jnp.asarray(operator.mask)
    filled = smooth(jnp.asarray(y) * mask) / jnp.maximum(smooth(mask), 1e-3)
    return np.clip(np.asarray(jnp.where(mask > 0, jnp.asarray(y), filled)), 0.0, 1.0)


def gamma_of(config: Mapping[str, Any]) -> float:
    """γ of VBLE-xz: ``config["decoder_std"]`` if set, else the one α implies."""
    value = config.get("decoder_std")
    return float(value) if value is not None else decoder_std(float(config["alpha"]))


def run_method(method, key, task, cae, operator, y, sigma, weight, config, shape):
    """One method on one degraded image: a dict with ``mean`` (and ``std``, ``low``,
    ``high`` for VBLE and VBLE-xz) and ``seconds``. ``weight`` is λ (VBLE, VBLE-xz,
    MAP-z), the Wiener balance / Tikhonov β, or the TV μ."""
    start = time.perf_counter()
    if method == "VBLE-xz":
        x_init = initial_image(task, y, operator, shape)
        key_fit, key_samples = jax.random.split(key)
        gamma, steps = gamma_of(config), int(config["vble_steps"])
        q, _ = fit_vble_xz(key_fit, cae, operator, y, sigma, weight, gamma, x_init, steps)
        samples, means = posterior_samples_xz(
            key_samples, cae, q, operator, y, sigma, gamma, int(config["num_samples"])
        )
        out = {k: np.asarray(v) for k, v in summarize_samples(samples).items()}
        out["mean"] = np.clip(np.asarray(jnp.mean(means, 0)), 0.0, 1.0)
        variance = jnp.var(means, 0) + conditional_variance(operator, shape, sigma, gamma)
        out["std"] = np.asarray(jnp.sqrt(variance))
        out["samples"] = np.asarray(samples)
    elif method in ("VBLE", "MAP-z"):
        x_init = initial_image(task, y, operator, shape)
        fit = fit_vble if method == "VBLE" else fit_map
        key_fit, key_samples = jax.random.split(key)
        q, _ = fit(key_fit, cae, operator, y, sigma, weight, x_init, int(config["vble_steps"]))
        if method == "VBLE":
            samples = posterior_samples(key_samples, cae, q, int(config["num_samples"]))
            out = {k: np.asarray(v) for k, v in summarize_samples(samples).items()}
            out["samples"] = np.asarray(samples)
        else:
            out = {"mean": np.clip(np.asarray(cae.decode(q.z)[0]), 0.0, 1.0)}
    elif method == "Wiener":
        if isinstance(operator, Blur):
            out = {"mean": wiener(operator, y, weight)}
        else:
            out = {"mean": tikhonov(operator, y, weight, shape)}
    elif method == "TV":
        x_init = initial_image(task, y, operator, shape)
        out = {"mean": tv_restore(operator, y, weight, shape, x_init)}
    else:
        raise ValueError(f"unknown method '{method}'; expected one of {METHODS}.")
    jax.block_until_ready(out["mean"])
    out["seconds"] = time.perf_counter() - start
    return out


def evaluate_restoration(x_true, out) -> dict:
    """PSNR, SSIM (and for a posterior: 90 % coverage, Spearman(std, |error|), mean std)."""
    metrics = {"psnr": psnr(x_true, out["mean"]), "ssim": ssim(x_true, out["mean"])}
    metrics["seconds"] = float(out["seconds"])
    if "std" in out:
        error = np.abs(np.asarray(x_true) - out["mean"])
        metrics["coverage90"] = coverage(x_true, out["low"], out["high"])
        metrics["spearman_std_error"] = spearman(out["std"], error)
        metrics["mean_std"] = float(np.mean(out["std"]))
    return metrics
