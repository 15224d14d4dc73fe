"""Mult-VAE and Mult-DAE (Liang et al., WWW 2018) as NumPyro programs and ppl objectives.

Generative model, per user ``u``: ``z_u ~ N(0, I_K)``, ``π(z_u) = softmax(f_θ(z_u))``,
``x_u ~ Multinomial(N_u, π(z_u))``. Guide: ``q_φ(z_u | x_u) = N(µ_φ(x̃_u), diag σ²_φ(x̃_u))``
with ``x̃_u`` the L2-normalized click vector under input dropout (training only).

The partially regularized objective ``E_q[log p(x | z)] - β KL(q || p)`` is the ordinary
ELBO of the two programs once the latent site ``z`` is put under
``numpyro.handlers.scale(scale=β)`` in *both* of them: then
``log p_β(x, z) - log q_β(z) = log p(x | z) + β (log p(z) - log q(z | x))``, whose
expectation is the β-ELBO. `annealed_elbo` writes it with ``ppl.sim``/``ppl.density``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

import ppl

__all__ = [
    "init_mlp",
    "mlp",
    "normalize_and_drop",
    "model",
    "guide",
    "annealed_elbo",
    "dae_objective",
    "vae_scores",
    "dae_scores",
    "init_vae",
    "init_dae",
    "beta_schedule",
]


def init_mlp(key: jax.Array, sizes: list[int]) -> list[tuple[jax.Array, jax.Array]]:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]``: Xavier-uniform weights and biases
    drawn from a normal truncated at two standard deviations with std 0.001 (as in the
    reference notebook)."""
    layers = []
    for key_layer, (fan_in, fan_out) in zip(
        jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])
    ):
        key_w, key_b = jax.random.split(key_layer)
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        weight = jax.random.uniform(key_w, (fan_in, fan_out), minval=-limit, maxval=limit)
        bias = 0.001 * jax.random.truncated_normal(key_b, -2.0, 2.0, (fan_out,))
        layers.append((weight, bias))
    return layers


def mlp(layers, inputs: jax.Array) -> jax.Array:
    """tanh between layers, no activation after the last (logits)."""
    for index, (weight, bias) in enumerate(layers):
        inputs = inputs @ weight + bias
        if index < len(layers) - 1:
            inputs = jnp.tanh(inputs)
    return inputs


def normalize_and_drop(key: jax.Array | None, x: jax.Array, keep_prob: float) -> jax.Array:
    """L2-normalize each row; with a key, inverted dropout keeping ``keep_prob``."""
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    if key is None:
        return x
    keep = jax.random.bernoulli(key, keep_prob, x.shape)
    return jnp.where(keep, x / keep_prob, 0.0)


def model(decoder, x: jax.Array, beta: jax.Array) -> None:
    """``z ~ N(0, I)`` (log density weighted by ``beta``), ``x ~ Multinomial(N, softmax(f(z)))``.

    The latent dimensions are a plate rather than an event dimension: the site's support
    is then plain ``real``, which ``ppl.density`` needs no run-time check for.
    """
    latent = decoder[0][0].shape[0]
    with numpyro.plate("users", x.shape[0], dim=-2), numpyro.plate("latent", latent, dim=-1):
        with handlers.scale(scale=beta):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    logits = mlp(decoder, z)
    with numpyro.plate("clicks", x.shape[0]):
        numpyro.sample("x", dist.Multinomial(total_count=x.sum(-1), logits=logits), obs=x)


def guide(encoder, x: jax.Array, beta: jax.Array, keep_prob: float = 0.5) -> jax.Array:
    """``z ~ N(µ(x̃), σ²(x̃))`` with ``x̃`` the normalized, dropped-out ``x`` (log density
    weighted by ``beta``); returns ``µ``."""
    x_tilde = normalize_and_drop(numpyro.prng_key(), x, keep_prob)
    loc, log_variance = jnp.split(mlp(encoder, x_tilde), 2, axis=-1)
    with numpyro.plate("users", x.shape[0], dim=-2), numpyro.plate("latent", loc.shape[-1], dim=-1):
        with handlers.scale(scale=beta):
            numpyro.sample("z", dist.Normal(loc, jnp.exp(0.5 * log_variance)))
    return loc


def annealed_elbo(keep_prob: float = 0.5) -> ppl.Expectation:
    """The β-ELBO per user, an expectation of ``(params, batch)`` with ``batch = (x, β)``.

    ``(1/B) Σ_u [log p(x_u | z_u) + β (log p(z_u) - log q(z_u | x_u))]``, one
    reparameterized ``z_u ~ q`` per user; its expectation is the paper's
    ``E_q[log p(x|z)] - β KL(q || N(0, I))`` averaged over the minibatch. ``β`` travels
    with the minibatch, so the schedule ``β_t = min(cap, t / total_anneal_steps)`` is
    per gradient update, exactly as in the reference notebook.
    """

    @ppl.expectation
    def objective(params, batch):
        x, beta = batch
        trace = ppl.sim(guide, params["encoder"], x, beta, keep_prob)
        log_joint = ppl.density(model, trace.choices, params["decoder"], x, beta)
        return (log_joint - trace.log_density) / x.shape[0]

    return objective


def dae_objective(weight_decay: float, keep_prob: float = 0.5):
    """Mult-DAE: ``(1/B) Σ_u Σ_i x_ui log softmax(f(g(x̃_u)))_i - λ Σ ||W||²`` (to maximize).

    A plain function of ``(key, params, batch)``: ``ppl.fit`` accepts any function of a
    key that returns a differentiable estimate; the only randomness is the dropout.
    """

    def objective(key, params, batch):
        x, _ = batch
        hidden = mlp(params["encoder"], normalize_and_drop(key, x, keep_prob))
        log_probs = jax.nn.log_softmax(mlp(params["decoder"], jnp.tanh(hidden)), axis=-1)
        penalty = sum(jnp.sum(w**2) for w, _ in params["encoder"] + params["decoder"])
        return jnp.mean(jnp.sum(x * log_probs, axis=-1)) - weight_decay * penalty

    return objective


@jax.jit
def vae_scores(params, x: jax.Array) -> jax.Array:
    """Item logits at ``z = µ(x)`` (no dropout, no sampling), as the paper scores."""
    loc, _ = jnp.split(mlp(params["encoder"], normalize_and_drop(None, x, 1.0)), 2, axis=-1)
    return mlp(params["decoder"], loc)


@jax.jit
def dae_scores(params, x: jax.Array) -> jax.Array:
    """Mult-DAE item logits without dropout."""
    hidden = jnp.tanh(mlp(params["encoder"], normalize_and_drop(None, x, 1.0)))
    return mlp(params["decoder"], hidden)


def init_vae(key: jax.Array, num_items: int, hidden: int = 600, latent: int = 200) -> dict:
    """Mult-VAE [I-600-200-600-I]: encoder I -> 600 -> 2·200, decoder 200 -> 600 -> I."""
    key_encoder, key_decoder = jax.random.split(key)
    return {
        "encoder": init_mlp(key_encoder, [num_items, hidden, 2 * latent]),
        "decoder": init_mlp(key_decoder, [latent, hidden, num_items]),
    }


def init_dae(key: jax.Array, num_items: int, hidden: int = 200) -> dict:
    """Mult-DAE [I-200-I] (tanh on the hidden layer)."""
    key_encoder, key_decoder = jax.random.split(key)
    return {
        "encoder": init_mlp(key_encoder, [num_items, hidden]),
        "decoder": init_mlp(key_decoder, [hidden, num_items]),
    }


def beta_schedule(step: int, total_anneal_steps: int, anneal_cap: float) -> float:
    """``β_t = min(anneal_cap, t / total_anneal_steps)``, ``t`` = gradient updates so far."""
    return min(anneal_cap, step / total_anneal_steps)
