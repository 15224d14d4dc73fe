"""VBLE and MAP-z: restoration in the latent space of the compressive autoencoder.

For ``y = A x + ε``, ``ε ~ N(0, σ² I)``, the latent posterior is
``p(z, h | y) ∝ N(y; A g_s(z), σ² I) p(z | h) p(h)``. VBLE (Biquard et al., 2023/2024)
fits, per image, the mean-field uniform family
``q(z, h) = Π_i U(z̄_i ± a_i/2) Π_j U(h̄_j ± a^h_j/2)`` by maximizing

    -[ E_q ‖A g_s(z) - y‖² / (2σ²) + λ (-Σ log a - Σ log a^h - E_q log p(z, h)) ] / n,

the ELBO (up to constants) when λ = 1, divided by the number of pixels ``n``. It is a
``ppl.expectation`` with two reparameterized uniform sites, optimized with
``ppl.fit`` (Adam, learning rate 0.1, gradient-norm clip 20, one sample per step, as
in the official ``vble.py``). MAP-z is the same loss at a point mass (no entropy, the
prior evaluated at z̄, h̄). Decoding posterior samples gives the MMSE-x estimate and
the per-pixel standard deviation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

import ppl
from models.vble._cae import CAE, log_prior

__all__ = [
    "LatentPosterior",
    "vble_objective",
    "map_objective",
    "init_latents",
    "fit_vble",
    "fit_map",
    "posterior_samples",
    "summarize_samples",
]

LOG_WIDTH_BOUNDS = (math.log(1.5e-5), math.log(20.0))
DATA_CLIP = (-0.1, 1.1)
OPTIMIZER = optax.chain(optax.clip_by_global_norm(20.0), optax.adam(0.1))


class LatentPosterior(NamedTuple):
    """Parameters of q: the centers and log-widths of the uniforms on z and h."""

    z: jax.Array  # (M, H/8, W/8)
    log_width_z: jax.Array
    h: jax.Array  # (N, H/16, W/16)
    log_width_h: jax.Array


def _widths(log_width):
    return jnp.exp(jnp.clip(log_width, *LOG_WIDTH_BOUNDS))


def _data_term(cae: CAE, operator, z, y, sigma):
    x = jnp.clip(cae.decode(z)[0], *DATA_CLIP)
    return jnp.sum((operator(x) - y) ** 2) / (2.0 * sigma**2), x.size


@ppl.expectation
def vble_objective(q: LatentPosterior, cae: CAE, operator, y, sigma, lam):
    """The VBLE ELBO per pixel (λ = 1: the ELBO; maximized)."""
    width_z, width_h = _widths(q.log_width_z), _widths(q.log_width_h)
    z = ppl.sample(dist.Uniform(q.z - width_z / 2, q.z + width_z / 2), ppl.reparam, name="z")
    h = ppl.sample(dist.Uniform(q.h - width_h / 2, q.h + width_h / 2), ppl.reparam, name="h")
    data, num_pixels = _data_term(cae, operator, z, y, sigma)
    entropy = jnp.sum(jnp.log(width_z)) + jnp.sum(jnp.log(width_h))
    kl = -entropy - log_prior(cae, z, h)
    return -(data + lam * kl) / num_pixels


def map_objective(key, q: LatentPosterior, cae: CAE, operator, y, sigma, lam):
    """The MAP-z loss per pixel at the point (z̄, h̄), negated (deterministic; ``key`` unused)."""
    del key
    data, num_pixels = _data_term(cae, operator, q.z, y, sigma)
    return -(data - lam * log_prior(cae, q.z, q.h)) / num_pixels


def init_latents(cae: CAE, x_init) -> LatentPosterior:
    """``z̄ = g_a(x_init)``, ``h̄ = h_a(z̄)``, unit widths (the reference's initialization)."""
    z = cae.encode(jnp.asarray(x_init)[None])
    h = cae.hyper_encode(z)
    return LatentPosterior(z, jnp.zeros_like(z), h, jnp.zeros_like(h))


def _fit_latents(objective, key, cae, operator, y, sigma, lam, x_init, num_steps):
    result = ppl.fit(
        key,
        objective,
        init_latents(cae, x_init),
        cae,
        operator,
        jnp.asarray(y),
        jnp.float32(sigma),
        jnp.float32(lam),
        optimizer=OPTIMIZER,
        num_steps=num_steps,
        progress=False,
    )
    return result.params, result


def fit_vble(key, cae, operator, y, sigma, lam, x_init, num_steps: int = 300):
    """Fit q for one degraded image; returns ``(LatentPosterior, FitResult)``."""
    return _fit_latents(vble_objective, key, cae, operator, y, sigma, lam, x_init, num_steps)


def fit_map(key, cae, operator, y, sigma, lam, x_init, num_steps: int = 300):
    """MAP-z for one degraded image; returns ``(LatentPosterior, FitResult)`` (widths unused)."""
    return _fit_latents(map_objective, key, cae, operator, y, sigma, lam, x_init, num_steps)


@eqx.filter_jit
def _decode_samples(key, cae: CAE, q: LatentPosterior, num_samples: int = 100):
    width_z = _widths(q.log_width_z)

    def one(key):
        u = jax.random.uniform(key, q.z.shape)
        return cae.decode(q.z + width_z * (u - 0.5))[0]

    keys = jax.random.split(key, num_samples)
    return jax.lax.map(one, keys, batch_size=4)


def posterior_samples(key, cae: CAE, q: LatentPosterior, num_samples: int = 100):
    """``num_samples`` images ``g_s(z)``, ``z ~ q`` (S, H, W), clipped to [0, 1].

    Only z is sampled: the decoder does not read h (h enters through the prior).
    """
    samples = _decode_samples(key, cae, q, num_samples)
    return jnp.clip(samples, 0.0, 1.0)


def summarize_samples(samples):
    """MMSE-x (the sample mean), the per-pixel standard deviation and the 5 %/95 % quantiles."""
    quantiles = jnp.quantile(samples, jnp.array([0.05, 0.95]), axis=0)
    return {
        "mean": jnp.mean(samples, 0),
        "std": jnp.std(samples, 0),
        "low": quantiles[0],
        "high": quantiles[1],
    }
