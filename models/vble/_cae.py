"""A small compressive autoencoder with a mean-scale hyperprior (Ballé et al. 2018).

``z̄ = g_a(x)`` (stride 8), ``h̄ = h_a(z̄)`` (a further stride 2), ``x = g_s(z)``; the
prior on the latents is continuous because each density is convolved with U(-½, ½):

* ``p(z | h) = Π_i Φ((z_i - μ_i + ½)/σ_i) - Φ((z_i - μ_i - ½)/σ_i)`` with
  ``(μ, σ) = h_s(h)``;
* ``p(h) = Π_j F_c(h_j + ½) - F_c(h_j - ½)``, ``F_c`` the CDF of a per-channel mixture
  of three logistics (a parametric stand-in for Ballé's non-parametric density).

Training is the rate-distortion objective ``α·255²·MSE + bpp`` with additive uniform
noise on both latent levels, i.e. the ELBO of a VAE with the uniform encoder
``q(z | x) = U(g_a(x) ± ½)`` (the entropy of a unit uniform is 0). It is written as a
``ppl.expectation`` whose two uniform sites are reparameterized, and fitted with
``ppl.fit``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax
from jax.scipy.special import ndtr

import ppl

__all__ = ["CAE", "init_cae", "rate_distortion", "train_cae", "log_prior", "bits_per_pixel"]

LIKELIHOOD_FLOOR = 1e-9
SCALE_FLOOR = 0.11
NUM_MIXTURE = 3


def _conv(key, cin, cout, k, stride):
    return eqx.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, key=key)


class SubpixelConv(eqx.Module):
    """Up-sampling by ``stride``: a convolution to ``stride²·cout`` channels, then a
    pixel shuffle (Shi et al. 2016). Used instead of a transposed convolution, whose
    weight gradient is an order of magnitude slower on XLA's CPU backend."""

    conv: eqx.nn.Conv2d
    stride: int = eqx.field(static=True)

    def __call__(self, x):
        y = self.conv(x)
        s = self.stride
        c, height, width = y.shape[0] // (s * s), y.shape[1], y.shape[2]
        y = y.reshape(c, s, s, height, width).transpose(0, 3, 1, 4, 2)
        return y.reshape(c, height * s, width * s)


def _deconv(key, cin, cout, k, stride):
    return SubpixelConv(_conv(key, cin, cout * stride * stride, k, 1), stride)


class CAE(eqx.Module):
    """Analysis/synthesis transforms, hyper-transforms and the hyper-latent density.

    All convolutions act on one image ``(C, H, W)``; batches go through ``jax.vmap``.
    Image sides must be multiples of 16 (the total stride of ``h_a``).
    """

    g_a: list
    g_s: list
    h_a: list
    h_s: list
    h_logits: jax.Array  # (N, K) mixture weights of the hyper-latent density
    h_locs: jax.Array  # (N, K)
    h_log_scales: jax.Array  # (N, K)

    def encode(self, x):
        """``z̄ = g_a(x)`` for ``x`` of shape (1, H, W)."""
        return _run(self.g_a, x)

    def hyper_encode(self, z):
        return _run(self.h_a, z)

    def decode(self, z):
        """``g_s(z)``: the image (1, H, W)."""
        return _run(self.g_s, z)

    def hyper_decode(self, h):
        """``(μ, σ)`` of ``p(z | h)``."""
        out = _run(self.h_s, h)
        loc, raw_scale = jnp.split(out, 2, axis=0)
        return loc, jnp.maximum(jax.nn.softplus(raw_scale), SCALE_FLOOR)


def _run(layers, x):
    for index, layer in enumerate(layers):
        x = layer(x)
        if index < len(layers) - 1:
            x = jax.nn.leaky_relu(x, 0.1)
    return x


def init_cae(key, channels: int = 32, latent: int = 32, hyper: int = 16) -> CAE:
    """A CAE with ``channels`` hidden, ``latent`` z channels and ``hyper`` h channels."""
    keys = iter(jax.random.split(key, 16))
    c, m, n = channels, latent, hyper
    g_a = [_conv(next(keys), 1, c, 5, 2), _conv(next(keys), c, c, 3, 2)]
    g_a.append(_conv(next(keys), c, m, 3, 2))
    g_s = [_deconv(next(keys), m, c, 3, 2), _deconv(next(keys), c, c, 3, 2)]
    g_s.append(_deconv(next(keys), c, 1, 5, 2))
    h_a = [_conv(next(keys), m, c, 3, 1), _conv(next(keys), c, n, 3, 2)]
    h_s = [_deconv(next(keys), n, c, 3, 2), _conv(next(keys), c, 2 * m, 3, 1)]
    locs = jnp.tile(jnp.linspace(-2.0, 2.0, NUM_MIXTURE), (n, 1))
    return CAE(
        g_a=g_a,
        g_s=g_s,
        h_a=h_a,
        h_s=h_s,
        h_logits=jnp.zeros((n, NUM_MIXTURE)),
        h_locs=locs,
        h_log_scales=jnp.zeros((n, NUM_MIXTURE)),
    )


def _gaussian_conditional(z, loc, scale):
    """log of N(loc, scale²) ∗ U(-½, ½) at ``z``, elementwise (symmetric, stable form)."""
    distance = jnp.abs(z - loc)
    upper = ndtr((0.5 - distance) / scale)
    lower = ndtr((-0.5 - distance) / scale)
    return jnp.log(jnp.maximum(upper - lower, LIKELIHOOD_FLOOR))


def _hyper_density(cae: CAE, h):
    """log of (mixture of logistics per channel) ∗ U(-½, ½) at ``h`` of shape (N, H, W)."""
    weights = jax.nn.softmax(cae.h_logits, axis=-1)[:, :, None, None]  # (N, K, 1, 1)
    locs = cae.h_locs[:, :, None, None]
    scales = jnp.exp(cae.h_log_scales)[:, :, None, None]
    centered = h[:, None] - locs
    upper = jax.nn.sigmoid((centered + 0.5) / scales)
    lower = jax.nn.sigmoid((centered - 0.5) / scales)
    mass = jnp.sum(weights * (upper - lower), axis=1)
    return jnp.log(jnp.maximum(mass, LIKELIHOOD_FLOOR))


def log_prior(cae: CAE, z, h):
    """``log p(z | h) + log p(h)`` in nats for one image's latents (summed)."""
    loc, scale = cae.hyper_decode(h)
    return jnp.sum(_gaussian_conditional(z, loc, scale)) + jnp.sum(_hyper_density(cae, h))


def bits_per_pixel(cae: CAE, z, h, num_pixels: int):
    return -log_prior(cae, z, h) / (math.log(2.0) * num_pixels)


@ppl.expectation
def rate_distortion(cae: CAE, x, alpha):
    """``-(α·255²·MSE + bpp)`` on a batch ``x`` (B, 1, H, W), with uniform latent noise.

    This is the negative rate-distortion loss of Ballé et al. (2018, eq. 3 with a
    hyperprior) as trained in VBLE's ``cae/train.py``; maximized by ``ppl.fit``.
    """
    z_mean = jax.vmap(cae.encode)(x)
    h_mean = jax.vmap(cae.hyper_encode)(z_mean)
    z = ppl.sample(dist.Uniform(z_mean - 0.5, z_mean + 0.5), ppl.reparam, name="z")
    h = ppl.sample(dist.Uniform(h_mean - 0.5, h_mean + 0.5), ppl.reparam, name="h")
    x_hat = jax.vmap(cae.decode)(z)
    mse = jnp.mean((x - x_hat) ** 2)
    num_pixels = x.shape[0] * x.shape[-1] * x.shape[-2]
    bpp = -jnp.sum(jax.vmap(lambda zi, hi: log_prior(cae, zi, hi))(z, h))
    bpp = bpp / (math.log(2.0) * num_pixels)
    return -(alpha * 255.0**2 * mse + bpp)


def train_cae(key, crops, config, progress: bool = True):
    """Fit a CAE to ``crops`` (N, 1, S, S) with ``ppl.fit``; returns ``(cae, FitResult)``."""
    key_init, key_fit = jax.random.split(key)
    cae = init_cae(key_init, config["channels"], config["latent"], config["hyper"])
    steps = int(config["cae_steps"])
    schedule = optax.cosine_decay_schedule(config["cae_learning_rate"], steps, alpha=0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    result = ppl.fit(
        key_fit,
        rate_distortion,
        cae,
        jnp.float32(config["alpha"]),
        optimizer=optimizer,
        num_steps=steps,
        data=jnp.asarray(crops),
        batch_size=int(config["cae_batch_size"]),
        progress=progress,
    )
    return result.params, result
