"""Variational inference for SDEs driven by fractional noise (MA-fBM).

Daems, Opper, Crevecoeur, Birdal. "Variational Inference for SDEs Driven by Fractional
Noise". ICLR 2024 (arXiv:2310.12975). Documentation:
``docs/zoo/fbm_sde.md``.

Fractional Brownian motion is approximated by a weighted sum of Ornstein-Uhlenbeck
processes driven by one Brownian motion, with the closed-form optimal weights ω*(H)
(type I and II, float64, differentiable in H); the latent SDE and its controlled
posterior are integrated by a ``lax.scan`` whose Brownian increments are ``ppl.sample``
sites, and the Girsanov ELBO is a ``ppl.expectation`` trained with ``ppl.fit``, with
H = sigmoid(raw) learned. Baselines: the exact fBM Gaussian MLE of H, the Kalman-filter
MLE under the MA-fBM prior, and a plain Brownian-motion SDE. ``ppl zoo train fbm_sde``
fits H on generated noisy fBM paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import ppl_zoo
from ppl_zoo.fbm_sde._baselines import (
    Estimate,
    conditioned_std,
    exact_mle,
    fbm_bridge_std,
    fbm_log_likelihood,
    kalman_log_likelihood,
    kalman_mle,
    ma_fbm_covariance,
)
from ppl_zoo.fbm_sde._data import HurstData, fbm_covariance, make_data, sample_fbm
from ppl_zoo.fbm_sde._markov import (
    gamma_grid,
    gammaincc_ez,
    kernel_error_by_quadrature,
    mandelbrot_van_ness_variance,
    markov_weights,
    optimal_weights,
    quadratic_cost,
    relative_error,
    weights_and_derivative,
)
from ppl_zoo.fbm_sde._model import SDESetup, hurst_of, init_params, make_elbo, simulate
from ppl_zoo.fbm_sde._train import bridge_setup, fit_bridge, fit_hurst, hurst_setup, optimizer_for

__all__ = [
    "CITATION",
    "DEFAULT_CONFIG",
    "Estimate",
    "HurstData",
    "SDESetup",
    "bridge_setup",
    "conditioned_std",
    "evaluate",
    "exact_mle",
    "fbm_bridge_std",
    "fbm_covariance",
    "fbm_log_likelihood",
    "fit_bridge",
    "fit_hurst",
    "gamma_grid",
    "gammaincc_ez",
    "hurst_of",
    "hurst_setup",
    "init_params",
    "kalman_log_likelihood",
    "kernel_error_by_quadrature",
    "kalman_mle",
    "load_data",
    "ma_fbm_covariance",
    "make_data",
    "make_elbo",
    "mandelbrot_van_ness_variance",
    "markov_weights",
    "optimal_weights",
    "optimizer_for",
    "quadratic_cost",
    "relative_error",
    "sample_fbm",
    "simulate",
    "train",
    "weights_and_derivative",
]

CITATION = (
    "Daems, Opper, Crevecoeur, Birdal. Variational Inference for SDEs Driven by Fractional "
    "Noise. ICLR 2024 (arXiv:2310.12975)."
)

DEFAULT_CONFIG: dict[str, Any] = {
    # data: noisy observations of standard fBM (theta > 0: fractional OU)
    "data_seed": 0,
    "hurst": 0.3,
    "num_paths": 128,
    "num_obs": 20,
    "noise": 0.3,
    "theta": 0.0,
    # MA-fBM prior
    "kind": "I",
    "num_processes": 5,
    "gamma_max": 20.0,
    # integrator and control
    "substeps": 30,  # integration steps per observation interval
    "scheme": "exp_euler",
    "control": "linear",
    "window": 20,  # upcoming observations the control sees
    "hidden": 64,
    # training (ppl.fit)
    "num_steps": 1000,
    "warmup": 100,  # steps with H and sigma frozen while the control learns
    "learning_rate": 0.05,  # the control and q(Y(0) | o)
    "model_learning_rate": 0.15,  # H, sigma (theta)
    "clip": 100.0,
    "batch_size": 64,
    "num_samples": 1,
    # fractional OU bridge (theta = 0): X(0) = 0, X(horizon) = value +- noise
    "bridge_horizon": 2.0,
    "bridge_steps": 200,
    "bridge_noise": 0.1,
    "bridge_value": 0.0,
    "bridge_num_processes": 5,
    "bridge_gamma_max": 20.0,
    "bridge_control": "linear",
    "bridge_hidden": 64,
    "bridge_train_steps": 1000,
    "bridge_paths": 64,
    "bridge_eval_paths": 256,
}


def load_data(config: Mapping[str, Any], path: Path | None) -> HurstData:
    """Generated noisy fBM (or fOU) paths; there is no external data set."""
    if path is not None:
        raise ValueError(
            f"fbm_sde generates its data (fBM paths with known H); got --data {path}. "
            "Set the data with --set hurst=0.7 --set num_paths=... instead."
        )
    return make_data(
        int(config["data_seed"]),
        float(config["hurst"]),
        num_paths=int(config["num_paths"]),
        num_obs=int(config["num_obs"]),
        noise=float(config["noise"]),
        theta=float(config["theta"]),
        substeps=int(config["substeps"]),
    )


def _baselines(data: HurstData, config: Mapping[str, Any]) -> dict:
    """Exact fBM MLE and MA-fBM Kalman MLE of H (fBM data only: both assume no drift)."""
    out: dict[str, Any] = {"hurst_true": data.hurst}
    if data.theta > 0.0:
        return out
    gammas = gamma_grid(int(config["num_processes"]), float(config["gamma_max"]))
    kalman = kalman_mle(
        data.observations, data.times, data.noise, gammas, data.times[-1], config["kind"]
    )
    out.update(
        hurst_kalman=kalman.hurst,
        kalman_log_likelihood_per_path=kalman.log_likelihood / len(data.observations),
        hurst_exact=exact_mle(data.observations, data.times, data.noise).hurst,
    )
    return out


def _metrics(key, params, setup: SDESetup, data: HurstData, config) -> dict:
    elbo = make_elbo(setup)
    observations = jnp.asarray(data.observations)
    values = [float(elbo.estimate(k, params, observations)) for k in jax.random.split(key, 8)]
    hurst = float(hurst_of(params, setup))
    scale = float(jnp.exp(params["log_scale"]))
    out = {"hurst_vi": hurst, "scale_vi": scale, "elbo_per_path": float(np.mean(values))}
    if setup.drift == "ou":
        out["theta_vi"] = float(jax.nn.softplus(params["raw_theta"]))
    else:
        gammas = np.asarray(setup.gammas)
        weights = optimal_weights(hurst, gammas, setup.horizon, setup.kind)
        log_lik = kalman_log_likelihood(
            data.observations, data.times, weights, scale, gammas, data.noise, setup.kind
        )
        out["ma_fbm_log_likelihood_per_path_at_vi"] = log_lik / len(data.observations)
    return {**out, **_baselines(data, config)}


def train(key: jax.Array, data: HurstData, config: Mapping[str, Any], out_dir: Path) -> dict:
    """Fit H by VI (``ppl.fit``, checkpointed in ``out_dir``); plots and metrics."""
    out_dir = Path(out_dir)
    key_fit, key_eval = jax.random.split(key)
    params, setup, result, _ = fit_hurst(key_fit, data, config, checkpoint_dir=out_dir / "fit")
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(params)]
    np.savez(out_dir / "params.npz", *leaves)
    result.plot(out_dir / "objective.png")
    _plot_posterior(key_eval, params, setup, data, out_dir / "posterior.png")
    return _metrics(key_eval, params, setup, data, config)


def evaluate(key: jax.Array, data: HurstData, config: Mapping[str, Any], out_dir: Path) -> dict:
    """Metrics of the parameters ``train`` wrote into ``out_dir``."""
    path = Path(out_dir) / "params.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint; run ppl zoo train fbm_sde first.")
    setup = hurst_setup(config, data)
    template = init_params(jax.random.key(0), setup)
    with np.load(path) as saved:
        leaves = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    params = jax.tree.unflatten(jax.tree.structure(template), leaves)
    _, key_eval = jax.random.split(key)
    return _metrics(key_eval, params, setup, data, config)


def _plot_posterior(key, params, setup: SDESetup, data: HurstData, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = min(3, data.observations.shape[0])
    repeat = 32
    observations = np.repeat(data.observations[:shown], repeat, axis=0)
    xs, _ = simulate(key, params, setup, observations)
    xs = np.asarray(xs).reshape(setup.num_steps, shown, repeat)
    grid = setup.horizon * np.arange(1, setup.num_steps + 1) / setup.num_steps
    figure = Figure(figsize=(9.0, 3.2), layout="constrained")
    FigureCanvasAgg(figure)
    for i, axis in enumerate(figure.subplots(1, shown, sharey=True)):
        mean, std = xs[:, i].mean(-1), xs[:, i].std(-1)
        axis.fill_between(grid, mean - 2 * std, mean + 2 * std, alpha=0.3, label="posterior ±2 sd")
        axis.plot(grid, mean, lw=1)
        axis.plot(data.times, data.clean[i], "k-", lw=0.8, label="true path")
        axis.plot(data.times, data.observations[i], "r.", ms=4, label="observations")
        axis.set(xlabel="t", title=f"path {i}")
    axis.legend(fontsize=7)
    figure.savefig(path, dpi=100)


ppl_zoo.register(
    ppl_zoo.ZooModel(
        name="fbm_sde",
        description="MA-fBM latent SDE: Hurst index by Girsanov VI (fBM paths, H recovery)",
        citation=CITATION,
        load_data=load_data,
        default_config=DEFAULT_CONFIG,
        train=train,
        evaluate=evaluate,
    )
)
