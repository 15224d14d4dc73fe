"""PV-RNN (Ahmadi & Tani, Neural Computation 2019) and a VRNN baseline, written with ppl.

Layer ``l = 1 … L`` (bottom to top) has deterministic leaky-integrator units ``d^l``
with time constant ``τ^l`` and Gaussian latent units ``z^l`` (the paper's Eqs. 1-4):

* prior ``p(z^l_t | d^l_{t-1}) = N(tanh(u_µ), exp(u_σ)²)``, ``u = W^l_p d^l_{t-1} + b^l_p``,
  and ``N(0, I)`` at ``t = 1``;
* ``h^l_t = (1 - 1/τ^l) h^l_{t-1} + (1/τ^l)(W^l_dd d^l_{t-1} + W^l_zd z^l_t
  + W^l_td d^{l+1}_t + b^l)``, ``d^l_t = tanh(h^l_t)``, computed from the top layer down;
* output ``x̄_t = tanh(W_out d^1_t + b_out)``.

The approximate posterior has no encoder: ``q(z^l_t) = N(tanh(A^l_µ), exp(A^l_σ)²)``
with a free *adaptive vector* ``A^l_{n,t}`` per training sequence ``n``, step and layer.
The meta-prior-weighted lower bound (per step, the reference code's normalisation)

    L = (1/T) Σ_t [ -‖x_t - x̄_t‖² / dim x - Σ_l w^l KL(q(z^l_t) ‖ p(z^l_t | d^l_{t-1})) / dim z^l ]

is a ``ppl.expectation``: each ``z^l_t`` is a ``ppl.sample`` reparameterized site inside
the ``lax.scan`` over time, and the KL is the Gaussian closed form.

The VRNN baseline (Chung et al., NeurIPS 2015) has the same generative network and an
encoder ``q(z^l_t | d^l_{t-1}, x_t)`` (a one-hidden-layer MLP per layer) instead of the
adaptive vectors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

import ppl

__all__ = [
    "init_network",
    "init_encoder",
    "init_adaptive",
    "gaussian_kl",
    "cell",
    "unroll",
    "pvrnn_objective",
    "window_objective",
    "vrnn_objective",
    "posterior_means",
    "vrnn_filter",
    "generate",
    "prior_mean_rollout",
    "zero_state",
]


def _dense(key: jax.Array, fan_in: int, fan_out: int, scale: float = 1.0) -> jax.Array:
    return scale * jax.random.normal(key, (fan_in, fan_out)) / jnp.sqrt(fan_in)


def _gaussian_bias(z_size: int, scale: float) -> jax.Array:
    """The bias of a ``(mean, log σ)`` head: mean 0, ``σ = scale``."""
    if scale <= 0:
        raise ValueError(f"prior_scale must be positive, got {scale}.")
    return jnp.concatenate([jnp.zeros(z_size), jnp.full(z_size, jnp.log(scale))])


def init_network(
    key: jax.Array,
    hidden: Sequence[int],
    latent: Sequence[int],
    output_dim: int = 2,
    prior_scale: float = 1.0,
) -> dict:
    """The generative network: per layer recurrent, latent, top-down and prior weights.

    The prior's ``log σ^p`` starts near ``log prior_scale`` (its bias; the weights from
    ``d`` are small), its mean near 0.
    """
    if len(hidden) != len(latent) or not hidden:
        raise ValueError(
            f"hidden {list(hidden)} and latent {list(latent)} must be non-empty lists of "
            "the same length (one entry per layer, bottom first)."
        )
    layers = []
    keys = jax.random.split(key, len(hidden) + 1)
    for index, (size, z_size) in enumerate(zip(hidden, latent)):
        k_dd, k_zd, k_td, k_prior = jax.random.split(keys[index], 4)
        layer = {
            "w_dd": _dense(k_dd, size, size),
            "w_zd": _dense(k_zd, z_size, size),
            "b": jnp.zeros(size),
            "w_prior": _dense(k_prior, size, 2 * z_size, 0.1),
            "b_prior": _gaussian_bias(z_size, prior_scale),
        }
        if index < len(hidden) - 1:
            layer["w_td"] = _dense(k_td, hidden[index + 1], size)
        layers.append(layer)
    return {
        "layers": layers,
        "w_out": _dense(keys[-1], hidden[0], output_dim),
        "b_out": jnp.zeros(output_dim),
    }


def init_encoder(
    key: jax.Array,
    hidden: Sequence[int],
    latent: Sequence[int],
    output_dim: int = 2,
    width=32,
    prior_scale: float = 1.0,
) -> list:
    """VRNN encoder, per layer ``[d^l_{t-1}, x_t] -> width -> 2 dim z^l``.

    Its ``log σ^q`` starts near ``log prior_scale``, as PV-RNN's adaptive vectors start
    at the prior (`init_network` with the same ``prior_scale``), so neither posterior
    starts away from its prior's scale.
    """
    encoder = []
    for key_layer, size, z_size in zip(jax.random.split(key, len(hidden)), hidden, latent):
        k1, k2 = jax.random.split(key_layer)
        encoder.append(
            {
                "w1": _dense(k1, size + output_dim, width),
                "b1": jnp.zeros(width),
                "w2": _dense(k2, width, 2 * z_size, 0.1),
                "b2": _gaussian_bias(z_size, prior_scale),
            }
        )
    return encoder


def zero_state(net: dict, batch: int) -> tuple:
    """``(h^l, d^l) = 0`` for every layer."""
    return tuple(
        (jnp.zeros((batch, layer["b"].size)), jnp.zeros((batch, layer["b"].size)))
        for layer in net["layers"]
    )


def gaussian_kl(loc_q, log_scale_q, loc_p, log_scale_p) -> jax.Array:
    """``KL(N(loc_q, e^{2 log_scale_q}) ‖ N(loc_p, e^{2 log_scale_p}))`` averaged over the
    last (latent) axis: the reference code's ``KL / dim z``."""
    ratio = jnp.exp(2.0 * (log_scale_q - log_scale_p))
    mahalanobis = (loc_q - loc_p) ** 2 * jnp.exp(-2.0 * log_scale_p)
    kl = log_scale_p - log_scale_q + 0.5 * (ratio + mahalanobis) - 0.5
    return jnp.mean(kl, axis=-1)


def _split(vector: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pre-activations ``u = (u_µ, u_σ)`` -> ``(tanh u_µ, log σ = u_σ)``."""
    u_loc, u_scale = jnp.split(vector, 2, axis=-1)
    return jnp.tanh(u_loc), u_scale


def prior_preactivation(layer: dict, d_prev: jax.Array, first) -> jax.Array:
    """``u = W_p d_{t-1} + b_p``, and ``0`` (i.e. ``N(0, I)``) at the first step."""
    u = d_prev @ layer["w_prior"] + layer["b_prior"]
    return jnp.where(first, 0.0, u)


def cell(net: dict, taus: Sequence[float], state: tuple, first, latent: Callable):
    """One time step, layers from the top down.

    Args:
        net: the generative network.
        taus: the time constants, bottom first.
        state: ``((h^1, d^1), …, (h^L, d^L))`` at ``t - 1``.
        first: whether this is the sequence's first step (prior ``N(0, I)``).
        latent: ``latent(l, prior_u, d_prev) -> (z, kl)`` chooses ``z^l_t`` given the
            prior's pre-activations.

    Returns:
        ``(state, x_mean, kls, prior_us)`` at ``t`` (``kls``/``prior_us`` bottom first).
    """
    num_layers = len(net["layers"])
    new_state, kls, prior_us = [None] * num_layers, [None] * num_layers, [None] * num_layers
    above = None
    for index in reversed(range(num_layers)):
        layer, (h, d) = net["layers"][index], state[index]
        prior_u = prior_preactivation(layer, d, first)
        z, kl = latent(index, prior_u, d)
        drive = d @ layer["w_dd"] + z @ layer["w_zd"] + layer["b"]
        if above is not None:
            drive = drive + above @ layer["w_td"]
        rate = 1.0 / taus[index]
        h = (1.0 - rate) * h + rate * drive
        d = jnp.tanh(h)
        new_state[index], kls[index], prior_us[index] = (h, d), kl, prior_u
        above = d
    x_mean = jnp.tanh(new_state[0][1] @ net["w_out"] + net["b_out"])
    return tuple(new_state), x_mean, kls, prior_us


def unroll(net, taus, state, inputs, first, latent_fn):
    """``lax.scan`` of `cell` over time; ``latent_fn(step_inputs, l, prior_u, d_prev)``.

    ``inputs`` is a pytree with a leading time axis; ``first`` is ``(T,)`` bool.
    Returns ``(final_state, (x_mean, kls, prior_us))`` stacked over time.
    """

    def body(carry, step):
        step_inputs, is_first = step

        def latent(index, prior_u, d_prev):
            return latent_fn(step_inputs, index, prior_u, d_prev)

        carry, x_mean, kls, prior_us = cell(net, taus, carry, is_first, latent)
        return carry, (x_mean, kls, prior_us)

    return jax.lax.scan(body, state, (inputs, first))


def _posterior_latent(posterior_u, index, prior_u, sample: bool):
    """``z ~ q = N(µ, exp(log σ)²)`` from ``posterior_u = (µ, log σ)`` (a reparameterized
    ppl site), or ``z = µ``; with ``KL(q || prior)``."""
    loc_q, log_scale_q = _split(posterior_u)
    if sample:
        z = ppl.sample(dist.Normal(loc_q, jnp.exp(log_scale_q)), ppl.reparam, name=f"z{index}")
    else:
        z = loc_q
    return z, gaussian_kl(loc_q, log_scale_q, *_split(prior_u))


def _adaptive_latent(sample: bool):
    """``z ~ q = N(tanh A_µ, exp(A_σ)²)`` (a reparameterized ppl site) or ``z = tanh A_µ``."""

    def latent_fn(step_inputs, index, prior_u, d_prev):
        return _posterior_latent(step_inputs[1][index], index, prior_u, sample)

    return latent_fn


def _bound_terms(x_mean, x, kls, weights):
    """Per step and sequence: ``‖x - x̄‖² / dim x`` and ``Σ_l w^l KL^l / dim z^l``."""
    error = jnp.mean((x - x_mean) ** 2, axis=-1)
    complexity = sum(w * kl for w, kl in zip(weights, kls))
    return error, complexity


def _time_major(x):
    return jnp.swapaxes(x, 0, 1)


@functools.cache
def pvrnn_objective(taus: tuple[float, ...]) -> ppl.Expectation:
    """The meta-prior-weighted lower bound per step, averaged over the training sequences.

    An expectation of ``(params, x, weights)``: ``params = {"net", "adaptive"}``, ``x``
    ``(N, T, dim x)``, ``weights`` the per-layer meta-priors ``w^l`` (an array, so
    sweeping ``w`` does not recompile). One reparameterized draw of every ``z^l_t``.
    """

    @ppl.expectation
    def objective(params, x, weights):
        net, adaptive = params["net"], params["adaptive"]
        length = x.shape[1]
        first = jnp.arange(length) == 0
        inputs = (_time_major(x), [_time_major(a) for a in adaptive])
        state0 = zero_state(net, x.shape[0])
        _, (x_mean, kls, _) = unroll(net, taus, state0, inputs, first, _adaptive_latent(True))
        error, complexity = _bound_terms(x_mean, inputs[0], kls, weights)
        return -jnp.mean(jnp.sum(error + complexity, axis=0)) / length

    return objective


@functools.cache
def window_objective(taus: tuple[float, ...]) -> ppl.Expectation:
    """Error regression's windowed bound, an expectation of the window's adaptive vectors.

    ``objective(key, adaptive, net, x, first, state, weights)``: ``adaptive`` per layer
    ``(B, W, 2 dim z)``, ``x`` ``(B, W, dim x)``, ``state`` the network state entering
    the window. Summed over the window and the sequences (each has its own vectors).
    """

    @ppl.expectation
    def objective(adaptive, net, x, first, state, weights):
        inputs = (_time_major(x), [_time_major(a) for a in adaptive])
        _, (x_mean, kls, _) = unroll(net, taus, state, inputs, first, _adaptive_latent(True))
        error, complexity = _bound_terms(x_mean, inputs[0], kls, weights)
        return -jnp.sum(error + complexity)

    return objective


def _encode(encoder_layer, d_prev, x_t):
    hidden = jnp.tanh(
        jnp.concatenate([d_prev, x_t], -1) @ encoder_layer["w1"] + encoder_layer["b1"]
    )
    return hidden @ encoder_layer["w2"] + encoder_layer["b2"]


def _encoder_latent(encoder, sample: bool):
    def latent_fn(x_t, index, prior_u, d_prev):
        return _posterior_latent(_encode(encoder[index], d_prev, x_t), index, prior_u, sample)

    return latent_fn


@functools.cache
def vrnn_objective(taus: tuple[float, ...]) -> ppl.Expectation:
    """The VRNN's bound, the same as `pvrnn_objective` with ``q(z^l_t | d^l_{t-1}, x_t)``.

    An expectation of ``(params, x, weights)`` with ``params = {"net", "encoder"}``.
    """

    @ppl.expectation
    def objective(params, x, weights):
        net = params["net"]
        length = x.shape[1]
        first = jnp.arange(length) == 0
        xs = _time_major(x)
        latent = _encoder_latent(params["encoder"], True)
        _, (x_mean, kls, _) = unroll(net, taus, zero_state(net, x.shape[0]), xs, first, latent)
        error, complexity = _bound_terms(x_mean, xs, kls, weights)
        return -jnp.mean(jnp.sum(error + complexity, axis=0)) / length

    return objective


@functools.partial(jax.jit, static_argnums=1)
def posterior_means(params: dict, taus: tuple[float, ...], x: jax.Array):
    """Reconstruction with ``z = tanh A_µ`` (no sampling) from a zero state.

    Returns ``(x_mean, prior_log_scales)``: ``(N, T, dim x)`` and, per layer,
    ``(N, T, dim z)`` (the prior's ``log σ^p`` along the posterior trajectory).
    """
    net = params["net"]
    first = jnp.arange(x.shape[1]) == 0
    inputs = (_time_major(x), [_time_major(a) for a in params["adaptive"]])
    _, (x_mean, _, prior_us) = unroll(
        net, taus, zero_state(net, x.shape[0]), inputs, first, _adaptive_latent(False)
    )
    return _time_major(x_mean), [_time_major(_split(u)[1]) for u in prior_us]


@functools.partial(jax.jit, static_argnums=1)
def vrnn_filter(params: dict, taus: tuple[float, ...], x: jax.Array):
    """Run the VRNN over ``x`` with ``z`` at the encoder's mean.

    Returns ``(x_mean, states)``: ``states`` is the network state after every step,
    stacked along a leading time axis.
    """
    net = params["net"]
    first = jnp.arange(x.shape[1]) == 0
    latent = _encoder_latent(params["encoder"], False)

    def body(carry, step):
        x_t, is_first = step

        def choose(index, prior_u, d_prev):
            return latent(x_t, index, prior_u, d_prev)

        carry, x_mean, _, _ = cell(net, taus, carry, is_first, choose)
        return carry, (x_mean, carry)

    _, (x_mean, states) = jax.lax.scan(body, zero_state(net, x.shape[0]), (_time_major(x), first))
    return _time_major(x_mean), states


def prior_mean_rollout(net, taus, state, length: int, first_step: bool = False):
    """``length`` steps with ``z = µ^p`` from ``state``; returns ``(B, length, dim x)``."""

    def latent_fn(_, index, prior_u, d_prev):
        return _split(prior_u)[0], jnp.zeros(prior_u.shape[:-1])

    first = (jnp.arange(length) == 0) & first_step
    _, (x_mean, _, _) = unroll(net, taus, state, jnp.zeros(length), first, latent_fn)
    return _time_major(x_mean)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def generate(key: jax.Array, net: dict, taus: tuple[float, ...], batch: int, length: int):
    """Free-running generation with ``z ~ p(z | d_{t-1})`` from ``N(0, I)`` at ``t = 1``.

    Returns ``(x_mean, prior_log_scales)``: ``(B, T, dim x)`` and per layer
    ``(B, T, dim z)``.
    """

    def latent_fn(step_key, index, prior_u, d_prev):
        loc, log_scale = _split(prior_u)
        noise = jax.random.normal(jax.random.fold_in(step_key, index), loc.shape)
        return loc + jnp.exp(log_scale) * noise, jnp.zeros(loc.shape[:-1])

    first = jnp.arange(length) == 0
    keys = jax.random.split(key, length)
    _, (x_mean, _, prior_us) = unroll(net, taus, zero_state(net, batch), keys, first, latent_fn)
    return _time_major(x_mean), [_time_major(_split(u)[1]) for u in prior_us]


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def init_adaptive(net: dict, taus: tuple[float, ...], num_sequences: int, length: int) -> list:
    """Adaptive vectors initialised to the prior's pre-activations along a prior-mean run
    (the reference code copies the prior into ``A`` at the first epoch)."""

    def latent_fn(_, index, prior_u, d_prev):
        return _split(prior_u)[0], jnp.zeros(prior_u.shape[:-1])

    first = jnp.arange(length) == 0
    _, (_, _, prior_us) = unroll(
        net, taus, zero_state(net, num_sequences), jnp.zeros(length), first, latent_fn
    )
    return [_time_major(u) for u in prior_us]
