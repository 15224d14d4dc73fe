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

VBLE-xz (Biquard et al., arXiv:2412.04130) reads the CAE as the VAE it was trained as:
the rate-distortion loss ``α·255²·MSE + bpp`` is, up to constants and a factor ln 2,
the negative ELBO of a Gaussian decoder ``p(x | z) = N(g_s(z), γ² I)`` with
``γ² = 1 / (2 ln 2 · α · 255²)`` (`decoder_std`, the value deepinv's port uses). The
posterior then lives on ``(x, z, h)``, with ``q(x, z, h) = q(x | z) q(z, h)``. The
authors' ``q(x | z)`` is a diagonal Gaussian around ``g_s(z)``; here it is the exact
conditional ``p(x | z, y)``, Gaussian because ``A`` is linear, so the optimal member of
every family of conditionals. Optimizing it out leaves the latent objective with the
marginal likelihood ``N(y; A g_s(z), σ² I + γ² A A^T)`` in place of ``N(y; A g_s(z),
σ² I)`` (`vble_xz_objective`, the VBLE-z objective at γ = 0), and posterior samples
are drawn by Matheron's rule: ``x₀ ~ N(g_s(z), γ² I)``, ``e ~ N(0, σ² I)``,
``x = x₀ + γ² A^T (σ² I + γ² A A^T)^{-1} (y - A x₀ - e)``. λ weighs the latent KL only.
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
from ppl_zoo.vble._cae import CAE, log_prior

__all__ = [
    "LatentPosterior",
    "vble_objective",
    "map_objective",
    "init_latents",
    "fit_vble",
    "fit_map",
    "posterior_samples",
    "decoder_std",
    "vble_xz_objective",
    "fit_vble_xz",
    "posterior_samples_xz",
    "conditional_mean",
    "conditional_variance",
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


def _residual(cae: CAE, operator, z, y):
    mean = jnp.clip(cae.decode(z)[0], *DATA_CLIP)
    return y - operator(mean), mean


def _data_term(cae: CAE, operator, z, y, sigma):
    r, x = _residual(cae, operator, z, y)
    return jnp.sum(r**2) / (2.0 * sigma**2), x.size


def _latent_elbo(q: LatentPosterior, cae: CAE, operator, y, sigma, lam, gamma=None):
    """The ELBO per pixel over ``q(z, h)``; ``gamma`` set: VBLE-xz's marginal likelihood."""
    width_z, width_h = _widths(q.log_width_z), _widths(q.log_width_h)
    z = ppl.sample(dist.Uniform(q.z - width_z / 2, q.z + width_z / 2), ppl.reparam, name="z")
    h = ppl.sample(dist.Uniform(q.h - width_h / 2, q.h + width_h / 2), ppl.reparam, name="h")
    if gamma is None:
        data, num_pixels = _data_term(cae, operator, z, y, sigma)
    else:
        r, mean = _residual(cae, operator, z, y)
        data = 0.5 * jnp.sum(r * operator.solve_gram(r, sigma**2, gamma**2))
        num_pixels = mean.size
    entropy = jnp.sum(jnp.log(width_z)) + jnp.sum(jnp.log(width_h))
    kl = -entropy - log_prior(cae, z, h)
    return -(data + lam * kl) / num_pixels


@ppl.expectation
def vble_objective(q: LatentPosterior, cae: CAE, operator, y, sigma, lam):
    """The VBLE ELBO per pixel (λ = 1: the ELBO; maximized)."""
    return _latent_elbo(q, cae, operator, y, sigma, lam)


def decoder_std(alpha: float) -> float:
    """γ of the Gaussian decoder ``p(x | z) = N(g_s(z), γ² I)`` that the rate-distortion
    loss ``α·255²·MSE + bpp`` implies: ``γ² = 1 / (2 ln 2 · α · 255²)``."""
    return float((2.0 * math.log(2.0) * alpha * 255.0**2) ** -0.5)


@ppl.expectation
def vble_xz_objective(q: LatentPosterior, cae: CAE, operator, y, sigma, lam, gamma):
    """The VBLE-xz ELBO per pixel with ``q(x | z) = p(x | z, y)`` optimized out (maximized).

    The data term is ``½ rᵀ (σ² I + γ² A A^T)^{-1} r`` with ``r = y - A g_s(z)``
    (``-log N(y; A g_s(z), σ² I + γ² A A^T)`` up to a constant); at γ = 0 this is
    `vble_objective`.
    """
    return _latent_elbo(q, cae, operator, y, sigma, lam, gamma)


def conditional_mean(cae: CAE, operator, z, y, sigma, gamma):
    """``E[x | z, y] = g_s(z) + γ² A^T (σ² I + γ² A A^T)^{-1} (y - A g_s(z))``."""
    r, mean = _residual(cae, operator, z, y)
    return mean + gamma**2 * operator.transpose(operator.solve_gram(r, sigma**2, gamma**2))


def conditional_variance(operator, shape, sigma, gamma):
    """The per-pixel variance of ``p(x | z, y)``, the same for every z:
    ``diag(γ² I - γ⁴ A^T (σ² I + γ² A A^T)^{-1} A)``."""
    return gamma**2 - gamma**4 * operator.gram_diag(shape, sigma**2, gamma**2)


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


def _fit_latents(objective, key, cae, operator, y, sigma, lam, x_init, num_steps, *extra):
    result = ppl.fit(
        key,
        objective,
        init_latents(cae, x_init),
        cae,
        operator,
        jnp.asarray(y),
        jnp.float32(sigma),
        jnp.float32(lam),
        *(jnp.float32(e) for e in extra),
        optimizer=OPTIMIZER,
        num_steps=num_steps,
        progress=False,
    )
    return result.params, result


def fit_vble(key, cae, operator, y, sigma, lam, x_init, num_steps: int = 300):
    """Fit q for one degraded image; returns ``(LatentPosterior, FitResult)``."""
    return _fit_latents(vble_objective, key, cae, operator, y, sigma, lam, x_init, num_steps)


def fit_vble_xz(key, cae, operator, y, sigma, lam, gamma, x_init, num_steps: int = 300):
    """Fit q(z, h) of VBLE-xz for one degraded image; returns ``(LatentPosterior, FitResult)``."""
    return _fit_latents(
        vble_xz_objective, key, cae, operator, y, sigma, lam, x_init, num_steps, gamma
    )


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


@eqx.filter_jit
def _decode_samples_xz(key, cae: CAE, q: LatentPosterior, operator, y, sigma, gamma, num):
    width_z = _widths(q.log_width_z)

    def one(key):
        key_z, key_x, key_e = jax.random.split(key, 3)
        z = q.z + width_z * (jax.random.uniform(key_z, q.z.shape) - 0.5)
        mean = jnp.clip(cae.decode(z)[0], *DATA_CLIP)
        x0 = mean + gamma * jax.random.normal(key_x, mean.shape)
        e = sigma * jax.random.normal(key_e, y.shape)
        gain = lambda r: (
            gamma**2
            * operator.transpose(  # noqa: E731
                operator.solve_gram(r, sigma**2, gamma**2)
            )
        )
        return x0 + gain(y - operator(x0) - e), mean + gain(y - operator(mean))

    keys = jax.random.split(key, num)
    return jax.lax.map(one, keys, batch_size=4)


def posterior_samples_xz(key, cae, q, operator, y, sigma, gamma, num_samples: int = 100):
    """VBLE-xz posterior: ``num_samples`` images ``x ~ p(x | z, y)``, ``z ~ q`` (S, H, W),
    clipped to [0, 1], and their conditional means ``E[x | z, y]`` (S, H, W).

    The mean of the conditional means is the MMSE-x estimate with less Monte Carlo noise
    than the sample mean, and the variance of the conditional means plus
    `conditional_variance` is the posterior variance (Rao-Blackwellized: the 100
    samples' own variance is too noisy to rank pixels when the decoder noise
    dominates); the intervals come from the samples.
    """
    samples, means = _decode_samples_xz(
        key, cae, q, operator, jnp.asarray(y), jnp.float32(sigma), jnp.float32(gamma), num_samples
    )
    return jnp.clip(samples, 0.0, 1.0), means


def summarize_samples(samples):
    """MMSE-x (the sample mean), the per-pixel standard deviation and the 5 %/95 % quantiles."""
    quantiles = jnp.quantile(samples, jnp.array([0.05, 0.95]), axis=0)
    return {
        "mean": jnp.mean(samples, 0),
        "std": jnp.std(samples, 0),
        "low": quantiles[0],
        "high": quantiles[1],
    }
