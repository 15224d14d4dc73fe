"""ARD-VAE (Saha, Joshi, Whitaker 2025) as NumPyro programs and a ppl objective.

Generative model for one example ``x ∈ R^D`` with nominal latent dimension ``L``:
``z_l ~ N(0, σ̂_l²)`` (the data-driven prior, paper eqs. 8-12 in the large-``n``
Gaussian limit), ``x ~ N(f_θ(z), s² I)`` (``likelihood="normal"``) or
``x ~ Bernoulli(sigmoid f_θ(z))`` (``likelihood="bernoulli"``). Guide:
``q_φ(z | x) = N(µ_φ(x), diag σ_φ²(x))``.

The objective (paper eqs. 14-16)

    E_q[log p_θ(x | z)] - β KL(q_φ(z | x) || N(0, diag σ̂²))

is the ordinary ELBO of the two programs once the latent site ``z`` carries
``numpyro.handlers.scale(scale=β)`` in both of them:
``log p_β(x, z) - log q_β(z) = log p(x | z) + β (log p(z) - log q(z | x))``. The prior
variances ``σ̂²`` are an *argument* of the objective, wrapped in ``stop_gradient``: they
are held constant within an epoch and re-estimated between epochs (`ppl_zoo.ard_vae._train`).
With ``σ̂² = 1`` the same objective is the plain N(0, I) β-VAE, the baseline.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

import ppl

__all__ = [
    "LIKELIHOODS",
    "init_mlp",
    "mlp",
    "init_vae",
    "encode",
    "decode_mean",
    "model",
    "guide",
    "ard_elbo",
]

LIKELIHOODS = ("normal", "bernoulli")
VARIANCE_FLOOR = 1e-8  # the σ̂² floor inside the KL: keeps log σ̂² finite on a collapsed axis


def init_mlp(key: jax.Array, sizes: list[int]) -> list[tuple[jax.Array, jax.Array]]:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]``: Glorot-uniform weights, zero biases."""
    layers = []
    for key_layer, (fan_in, fan_out) in zip(
        jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])
    ):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        weight = jax.random.uniform(key_layer, (fan_in, fan_out), minval=-limit, maxval=limit)
        layers.append((weight, jnp.zeros((fan_out,))))
    return layers


def mlp(layers, inputs: jax.Array) -> jax.Array:
    """ELU between layers, nothing after the last (a linear map when there is one layer)."""
    for index, (weight, bias) in enumerate(layers):
        inputs = inputs @ weight + bias
        if index < len(layers) - 1:
            inputs = jax.nn.elu(inputs)
    return inputs


def init_vae(key: jax.Array, data_dim: int, latent: int, hidden: tuple[int, ...] = ()) -> dict:
    """Encoder ``D -> hidden -> 2L`` (mean, log-variance), decoder ``L -> reversed(hidden) -> D``.

    ``hidden=()`` gives the linear encoder and decoder of the linear-Gaussian check
    (variational PCA with ARD). The log-variance head starts at ``log σ² ≈ 0``.
    """
    key_encoder, key_decoder = jax.random.split(key)
    hidden = tuple(int(h) for h in hidden)
    encoder = init_mlp(key_encoder, [data_dim, *hidden, 2 * latent])
    weight, bias = encoder[-1]
    encoder[-1] = (weight.at[:, latent:].multiply(0.1), bias)
    decoder = init_mlp(key_decoder, [latent, *reversed(hidden), data_dim])
    return {"encoder": encoder, "decoder": decoder}


def encode(params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(µ_φ(x), σ_φ(x))``, each ``(..., L)``."""
    loc, log_variance = jnp.split(mlp(params["encoder"], x), 2, axis=-1)
    return loc, jnp.exp(0.5 * jnp.clip(log_variance, -18.0, 10.0))


def decode_mean(params, z: jax.Array, likelihood: str) -> jax.Array:
    """The mean of ``p_θ(x | z)``: ``f_θ(z)`` (normal) or ``sigmoid f_θ(z)`` (Bernoulli)."""
    out = mlp(params["decoder"], z)
    return jax.nn.sigmoid(out) if likelihood == "bernoulli" else out


def model(decoder, x, prior_variance, beta, likelihood: str = "normal", obs_scale=1.0):
    """``z ~ N(0, diag σ̂²)`` (log density weighted by ``beta``), ``x ~ p_θ(x | z)``.

    The latent axes are a plate (not an event dimension), so the site's support is plain
    ``real`` and per-axis variances broadcast over the batch.
    """
    batch, latent = x.shape[0], prior_variance.shape[-1]
    scale = jnp.sqrt(jnp.maximum(jax.lax.stop_gradient(prior_variance), VARIANCE_FLOOR))
    with numpyro.plate("data", batch, dim=-2), numpyro.plate("latent", latent, dim=-1):
        with handlers.scale(scale=beta):
            z = numpyro.sample("z", dist.Normal(0.0, scale))
    out = mlp(decoder, z)
    with numpyro.plate("examples", batch):
        if likelihood == "bernoulli":
            numpyro.sample("x", dist.Bernoulli(logits=out).to_event(1), obs=x)
        else:
            numpyro.sample("x", dist.Normal(out, obs_scale).to_event(1), obs=x)


def guide(encoder, x, prior_variance, beta, likelihood: str = "normal", obs_scale=1.0):
    """``z ~ N(µ_φ(x), diag σ_φ²(x))`` (log density weighted by ``beta``); returns ``µ``."""
    loc, scale = encode({"encoder": encoder}, x)
    with numpyro.plate("data", x.shape[0], dim=-2), numpyro.plate("latent", loc.shape[-1], dim=-1):
        with handlers.scale(scale=beta):
            numpyro.sample("z", dist.Normal(loc, scale))
    return loc


@functools.cache
def ard_elbo(likelihood: str, obs_scale: float, beta: float) -> ppl.Expectation:
    """The ARD-VAE objective per example, an expectation of ``(params, batch, σ̂²)``.

    ``(1/B) Σ_i [log p(x_i | z_i) + β (log N(z_i; 0, diag σ̂²) - log q(z_i | x_i))]`` with
    one reparameterized ``z_i ~ q(· | x_i)`` per example: an unbiased estimate of the
    minibatch mean of the paper's eq. 16 (its KL is eq. 15). ``σ̂²`` (shape ``(L,)``)
    gets no gradient. Cached, so every run with the same settings hands ``ppl.fit`` the
    same objective object and reuses its compiled step.

    Raises:
        ValueError: for an unknown ``likelihood``.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")

    @ppl.expectation
    def objective(params, x, prior_variance):
        args = (x, prior_variance, beta, likelihood, obs_scale)
        trace = ppl.sim(guide, params["encoder"], *args)
        log_joint = ppl.density(model, trace.choices, params["decoder"], *args)
        return (log_joint - trace.log_density) / x.shape[0]

    return objective
