"""ARD-VAE training (Algorithm 2 of the paper) with ``ppl.Trainer``, and the plain VAE.

Every epoch: draw a fresh held-aside subset ``X_α`` of the training data, encode it
(one reparameterized sample per example) and set ``σ̂_l² = mean_i (z_l^(i))²``
(``b_l / a_l`` with ``a0 = b0 = 0``, paper eqs. 8-12); then run one pass of minibatch
Adam over ``X_sgd = X_train - X_α`` with that ``σ̂²`` held fixed. Each epoch is one
`ppl.Trainer.run` call, so the Adam state and the step count carry over and the
compiled step is reused; ``σ̂²`` is the objective's extra argument, and the minibatch
order of epoch ``e`` is drawn from the key and ``e`` as in ``ppl.fit``. The plain VAE
runs the same loop with ``σ̂² = 1`` fixed (same data, same number of updates).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import ppl
from ppl_zoo.ard_vae import _model

__all__ = ["estimate_prior_variance", "train_vae"]


@jax.jit
def _encoded_second_moment(key, params, x):
    loc, scale = _model.encode(params, x)
    z = loc + scale * jax.random.normal(key, loc.shape)
    return jnp.mean(z**2, axis=0)


def estimate_prior_variance(key: jax.Array, params, x: np.ndarray) -> jax.Array:
    """``σ̂_l² = (1/n) Σ_i (z_l^(i))²`` with ``z^(i) = µ(x_i) + σ(x_i) ε_i`` (``µ_α = 0``)."""
    return _encoded_second_moment(key, params, jnp.asarray(x))


@functools.cache
def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)  # one object per rate: the compiled step is reused


def train_vae(
    key: jax.Array,
    train: np.ndarray,
    config: Mapping[str, Any],
    ard: bool = True,
    progress: bool = False,
) -> tuple[dict, dict]:
    """Train an ARD-VAE (``ard=True``) or the plain N(0, I) VAE on ``train``.

    ``config`` keys: ``latent`` (L), ``hidden`` (tuple of widths), ``likelihood``,
    ``obs_scale``, ``beta``, ``epochs``, ``batch_size``, ``num_alpha`` (|X_α|),
    ``learning_rate``.

    Returns:
        ``(params, info)``; ``info`` has the per-step objective ``history``, the
        ``prior_variance`` used in each epoch (``(epochs, L)``) and the final one.

    Raises:
        ValueError: if ``num_alpha`` leaves fewer than ``batch_size`` examples for SGD.
    """
    n = train.shape[0]
    num_alpha, batch_size = int(config["num_alpha"]), int(config["batch_size"])
    if n - num_alpha < batch_size:
        raise ValueError(
            f"num_alpha={num_alpha} leaves {n - num_alpha} of the {n} training examples "
            f"for SGD, fewer than batch_size={batch_size}; lower num_alpha or batch_size."
        )
    latent = int(config["latent"])
    key_init, key_fit, key_split, key_prior = jax.random.split(key, 4)
    params = _model.init_vae(key_init, train.shape[1], latent, tuple(config["hidden"]))
    objective = _model.ard_elbo(
        config["likelihood"], float(config["obs_scale"]), float(config["beta"])
    )
    optimizer = _adam(float(config["learning_rate"]))
    steps_per_epoch = (n - num_alpha) // batch_size
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key_split)).ravel())
    variances = []
    prior_variance = jnp.ones((latent,))
    trainer = ppl.Trainer(objective, optimizer, batch_size=batch_size, chunk_size=steps_per_epoch)
    state = trainer.init(key_fit, params)
    history = []
    for epoch in tqdm(range(int(config["epochs"])), disable=not progress, desc="epochs"):
        order = rng.permutation(n)
        alpha, sgd = order[:num_alpha], order[num_alpha:]
        if ard:
            prior_variance = estimate_prior_variance(
                jax.random.fold_in(key_prior, epoch), state.params, train[alpha]
            )
        variances.append(np.asarray(prior_variance))
        state, values = trainer.run(state, steps_per_epoch, prior_variance, data=train[sgd])
        history.append(values)
    params = state.params
    # after training, σ̂² from the whole training set (for the plain VAE: its aggregate
    # posterior variance, so that both are counted by the same rule)
    final = estimate_prior_variance(jax.random.fold_in(key_prior, 2**30), params, train)
    info = {
        "history": np.concatenate(history),
        "prior_variance": np.stack(variances),
        "final_variance": np.asarray(final),
    }
    return params, info
