"""Training with ``ppl.fit``: Hurst-index recovery and the fractional OU bridge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ppl
from ppl_zoo.fbm_sde._data import HurstData
from ppl_zoo.fbm_sde._markov import gamma_grid
from ppl_zoo.fbm_sde._model import SDESetup, hurst_of, init_params, make_elbo, simulate

__all__ = ["hurst_setup", "fit_hurst", "bridge_setup", "fit_bridge", "optimizer_for"]


def hurst_setup(config: Mapping[str, Any], data: HurstData, model: str = "fbm") -> SDESetup:
    """The SDE for Hurst recovery: ``model`` is ``"fbm"`` (H learned) or ``"bm"`` (H = 1/2)."""
    if model not in ("fbm", "bm"):
        raise ValueError(f"model must be 'fbm' or 'bm', got {model!r}.")
    num_obs = data.observations.shape[1]
    substeps = int(config["substeps"])
    gammas = (
        (0.0,) if model == "bm" else tuple(gamma_grid(config["num_processes"], config["gamma_max"]))
    )
    return SDESetup(
        gammas=gammas,
        horizon=float(data.times[-1]),
        kind=config["kind"],
        num_steps=num_obs * substeps,
        obs_steps=tuple(int(i) for i in substeps * np.arange(1, num_obs + 1)),
        noise=float(data.noise),
        scheme=config["scheme"],
        window=int(config["window"]),
        brownian=model == "bm",
        drift="ou" if data.theta > 0 else "none",
        hidden=int(config["hidden"]),
        control=config["control"],
    )


MODEL_PARAMETERS = ("raw_hurst", "log_scale", "raw_theta")


def optimizer_for(config: Mapping[str, Any], params) -> optax.GradientTransformation:
    """Adam with cosine-decayed learning rates and global-norm clipping.

    The model parameters (H, σ, θ) are held fixed for the first ``warmup`` steps, while
    the control alone learns to follow the data (from u = 0 the ELBO is the prior's
    expected log-likelihood, which pulls H towards the smoothest prior); then both are
    trained, the model parameters at ``model_learning_rate``.
    """
    steps, warmup = int(config["num_steps"]), int(config.get("warmup", 0))
    control = optax.cosine_decay_schedule(config["learning_rate"], steps, alpha=0.05)
    model_rate = optax.cosine_decay_schedule(
        config.get("model_learning_rate", config["learning_rate"]),
        max(1, steps - warmup),
        alpha=0.05,
    )
    model = optax.join_schedules([optax.constant_schedule(0.0), model_rate], [warmup])
    labels = {name: ("model" if name in MODEL_PARAMETERS else "control") for name in params}
    return optax.chain(
        optax.clip_by_global_norm(config["clip"]),
        optax.multi_transform({"control": optax.adam(control), "model": optax.adam(model)}, labels),
    )


def fit_hurst(
    key: jax.Array,
    data: HurstData,
    config: Mapping[str, Any],
    model: str = "fbm",
    progress: bool = True,
    checkpoint_dir=None,
) -> tuple[dict, SDESetup, ppl.FitResult, dict]:
    """Fit (H, σ[, θ]) and the control by maximizing the ELBO with ``ppl.fit``.

    Returns ``(params, setup, result, summary)`` with the learned H, σ and the mean
    ELBO per path of the last tenth of the steps.
    """
    setup = hurst_setup(config, data, model)
    key_init, key_fit = jax.random.split(key)
    params = init_params(key_init, setup)
    if "raw_hurst" in params and config.get("init_hurst") is not None:
        params["raw_hurst"] = jnp.asarray(
            np.log(config["init_hurst"] / (1 - config["init_hurst"])), jnp.float32
        )
    observations = jnp.asarray(data.observations)
    batch = int(config["batch_size"])
    result = ppl.fit(
        key_fit,
        make_elbo(setup),
        params,
        optimizer=optimizer_for(config, params),
        num_steps=int(config["num_steps"]),
        data=observations,
        batch_size=min(batch, observations.shape[0]),
        num_samples=int(config["num_samples"]),
        chunk_size=min(100, int(config["num_steps"])),
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    tail = result.history[-max(1, len(result.history) // 10) :]
    summary = {
        "hurst": float(hurst_of(result.params, setup)),
        "scale": float(jnp.exp(result.params["log_scale"])),
        "elbo_per_path": float(np.nanmean(tail)),
    }
    return result.params, setup, result, summary


def bridge_setup(config: Mapping[str, Any], hurst: float) -> SDESetup:
    """The fractional OU (θ = 0) bridge: X(0) = 0, one observation at the horizon."""
    num_steps = int(config["bridge_steps"])
    return SDESetup(
        gammas=tuple(gamma_grid(config["bridge_num_processes"], config["bridge_gamma_max"])),
        horizon=float(config["bridge_horizon"]),
        kind="I",
        num_steps=num_steps,
        obs_steps=(num_steps,),
        noise=float(config["bridge_noise"]),
        scheme="exp_euler",
        window=1,
        hurst=float(hurst),
        learn_scale=False,
        hidden=int(config["bridge_hidden"]),
        control=config["bridge_control"],
    )


def fit_bridge(
    key: jax.Array, config: Mapping[str, Any], hurst: float, progress: bool = True
) -> tuple[dict, SDESetup, ppl.FitResult, np.ndarray]:
    """Learn the bridge's control; returns the pointwise std of posterior paths.

    ``config["bridge_paths"]`` paths per step, ``config["bridge_eval_paths"]`` for the std.
    """
    setup = bridge_setup(config, hurst)
    key_init, key_fit, key_eval = jax.random.split(key, 3)
    params = init_params(key_init, setup)
    target = jnp.full((int(config["bridge_paths"]), 1), float(config["bridge_value"]))
    bridge_config = {**config, "num_steps": config["bridge_train_steps"]}
    result = ppl.fit(
        key_fit,
        make_elbo(setup),
        params,
        target,
        optimizer=optimizer_for(bridge_config, params),
        num_steps=int(config["bridge_train_steps"]),
        chunk_size=min(100, int(config["bridge_train_steps"])),
        progress=progress,
    )
    eval_target = jnp.full((int(config["bridge_eval_paths"]), 1), float(config["bridge_value"]))
    xs, _ = simulate(key_eval, result.params, setup, eval_target)
    return result.params, setup, result, np.std(np.asarray(xs), axis=1)
