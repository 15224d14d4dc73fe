"""Training PV-RNN and the VRNN baseline with ``ppl.fit`` (full batch, Adam)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ppl
from ppl_zoo.pv_rnn import _model

__all__ = ["layer_weights", "taus_of", "init_pvrnn", "init_vrnn", "fit_pvrnn", "fit_vrnn"]


def taus_of(config: Mapping[str, Any]) -> tuple[float, ...]:
    """The time constants as a (hashable, static) tuple, checked against the layers."""
    taus = tuple(float(t) for t in config["tau"])
    if len(taus) != len(config["hidden"]) or len(config["latent"]) != len(config["hidden"]):
        raise ValueError(
            f"config: hidden {list(config['hidden'])}, latent {list(config['latent'])} and "
            f"tau {list(config['tau'])} need one entry per layer (bottom first)."
        )
    if any(t < 1.0 for t in taus):
        raise ValueError(f"config['tau'] = {list(taus)}: time constants must be >= 1.")
    return taus


def layer_weights(w, num_layers: int) -> jax.Array:
    """The meta-prior per layer: a number (the same for every layer) or one per layer."""
    weights = np.atleast_1d(np.asarray(w, dtype=np.float32))
    if weights.size == 1:
        weights = np.repeat(weights, num_layers)
    if weights.shape != (num_layers,) or np.any(weights < 0):
        raise ValueError(
            f"meta-prior w={w!r}: give one non-negative number or one per layer ({num_layers})."
        )
    return jnp.asarray(weights)


def init_pvrnn(key: jax.Array, config: Mapping[str, Any], num_sequences: int, length: int):
    """Network weights and the adaptive vectors (from the prior's pre-activations)."""
    taus = taus_of(config)
    net = _model.init_network(
        key, list(config["hidden"]), list(config["latent"]), prior_scale=config["prior_scale"]
    )
    adaptive = _model.init_adaptive(net, taus, num_sequences, length)
    return {"net": net, "adaptive": adaptive}


def init_vrnn(key: jax.Array, config: Mapping[str, Any]):
    key_net, key_encoder = jax.random.split(key)
    hidden, latent = list(config["hidden"]), list(config["latent"])
    return {
        "net": _model.init_network(key_net, hidden, latent, prior_scale=config["prior_scale"]),
        "encoder": _model.init_encoder(
            key_encoder, hidden, latent, prior_scale=config["prior_scale"]
        ),
    }


def _optimizer(config):
    return _cached_optimizer(float(config["clip"]), float(config["learning_rate"]))


@functools.cache
def _cached_optimizer(clip: float, learning_rate: float) -> optax.GradientTransformation:
    """One optimizer object per setting, so ``ppl.fit`` reuses its compiled steps."""
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(learning_rate))


def _fit(key_fit, objective, params, x, weights, config, progress):
    result = ppl.fit(
        key_fit,
        objective,
        params,
        jnp.asarray(x),
        weights,
        optimizer=_optimizer(config),
        num_steps=int(config["num_steps"]),
        progress=progress,
    )
    return result.params, result


def fit_pvrnn(
    key: jax.Array, x: np.ndarray, config: Mapping[str, Any], progress: bool = True
) -> tuple[dict, ppl.FitResult]:
    """Train PV-RNN's weights and adaptive vectors jointly on the full batch ``x``.

    Maximises `pvrnn_objective` (one reparameterized draw per step) with Adam.
    """
    taus = taus_of(config)
    key_init, key_fit = jax.random.split(key)
    params = init_pvrnn(key_init, config, x.shape[0], x.shape[1])
    weights = layer_weights(config["w"], len(taus))
    return _fit(key_fit, _model.pvrnn_objective(taus), params, x, weights, config, progress)


def fit_vrnn(
    key: jax.Array, x: np.ndarray, config: Mapping[str, Any], progress: bool = True
) -> tuple[dict, ppl.FitResult]:
    """Train the VRNN baseline (network and encoder) on the same data and bound."""
    taus = taus_of(config)
    key_init, key_fit = jax.random.split(key)
    params = init_vrnn(key_init, config)
    weights = layer_weights(config["vrnn_w"], len(taus))
    return _fit(key_fit, _model.vrnn_objective(taus), params, x, weights, config, progress)
