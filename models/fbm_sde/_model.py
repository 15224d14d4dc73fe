"""The MA-fBM latent SDE, its controlled posterior, and the ELBO as a ppl expectation.

Prior (one latent dimension, K OU processes sharing one Brownian motion W):

    dY_k = -γ_k Y_k dt + dW,        dX = b(X) dt + σ Σ_k ω_k(H) dY_k,

posterior: ``dW → dW + u_φ(t, X, Y, context) dt``. By Girsanov the path KL is
``E ½ ∫ u² dt`` (Daems et al., ICLR 2024, Sec. 4), so

    ELBO = E_Q[Σ_i log N(o_i; X(t_i), noise²)] - E_Q[½ ∫ u² dt] - KL(q(Y(0) | o) || p(Y(0)))

where X(0) = 0, and the type I initial OU states Y(0),
which carry the fBM's infinite past, get an amortized Gaussian posterior (the paper
keeps them at the stationary prior, which leaves an H-dependent gap that a smaller
step barely reduces; ``learn_initial=False`` restores that).

Integrators (a `lax.scan` over steps of size h, the control held fixed over a step):

* ``"exp_euler"``: exact for the OU part, ``Y ← e^(-γh) Y + u (1 - e^(-γh))/γ + ξ`` with
  ``(ΔW, ξ)`` jointly Gaussian (``Var ΔW = h``, ``Cov(ξ_k, ΔW) = (1 - e^(-γ_k h))/γ_k``,
  ``Cov(ξ_i, ξ_j) = (1 - e^(-(γ_i+γ_j)h))/(γ_i+γ_j)``), stable for any γ_max·h. The control
  shifts the mean of this vector by ``u`` times its covariance with ΔW, a shift whose
  KL is exactly ``½ u² h``.
* ``"euler"``: ``Y ← Y + (-γY + u) h + ΔW`` as the official code's ``solve_vector``
  (needs γ_max·h < 0.5).

Then ``X ← X + b(X) h + σ ωᵀ ΔY``. The standard normal draws behind ``(ΔW, ξ)`` are
``ppl.sample`` sites (``ppl.reparam``) inside the scan.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

import ppl
from ppl_zoo.fbm_sde._markov import markov_weights

__all__ = ["SDESetup", "init_params", "hurst_of", "make_elbo", "simulate", "control_net"]


class SDESetup(NamedTuple):
    """Static description of the latent SDE and its observation grid.

    Attributes:
        gammas: OU speeds ``γ_k`` (tuple of floats); ``(0.0,)`` with ``brownian=True``.
        horizon: ``T``; the weights minimize the error on [0, T] and the scan covers it.
        kind: ``"I"`` (stationary Y(0)) or ``"II"`` (Y(0) = 0).
        num_steps: integration steps over [0, T] (h = T / num_steps).
        obs_steps: step index (1..num_steps) after which each observation is taken.
        noise: observation noise standard deviation.
        scheme: ``"exp_euler"`` or ``"euler"``.
        window: how many upcoming observations the control sees.
        hurst: a fixed Hurst index, or ``None`` to learn ``H = sigmoid(raw_hurst)``.
        brownian: plain Brownian motion (no H): ``X = σ W``.
        drift: ``"none"`` (b = 0) or ``"ou"`` (b = -θX, θ = softplus(raw_theta) learned).
        learn_scale: learn ``σ = exp(log_scale)``; otherwise σ = 1.
        hidden: width of the control network's two hidden layers (``control="mlp"``).
        control: ``"linear"``: ``u = c_jᵀ f`` with a free gain vector ``c_j`` per step ``j``
            on the features ``f = (1, X, Y, Y(0), (o_next - X)/time-to-it, ...)``; the
            optimal control of a linear-Gaussian model has exactly this form. ``"mlp"``:
            the paper's tanh MLP on ``(t, time to next observation, f)``.
        learn_initial: type I only: an amortized Gaussian ``q(Y(0) | o)`` (mean linear
            in the path's observations, a shared full covariance) instead of the
            stationary prior; its KL is added to the path KL. ``False``: Y(0) keeps the
            prior law in the posterior, as in the paper.
    """

    gammas: tuple
    horizon: float
    kind: Literal["I", "II"]
    num_steps: int
    obs_steps: tuple
    noise: float
    scheme: Literal["exp_euler", "euler"] = "exp_euler"
    window: int = 3
    hurst: float | None = None
    brownian: bool = False
    drift: Literal["none", "ou"] = "none"
    learn_scale: bool = True
    hidden: int = 64
    control: Literal["linear", "mlp"] = "linear"
    learn_initial: bool = True


def _check(setup: SDESetup) -> None:
    if setup.control not in ("linear", "mlp"):
        raise ValueError(f"control must be 'linear' or 'mlp', got {setup.control!r}.")
    if setup.scheme not in ("exp_euler", "euler"):
        raise ValueError(f"scheme must be 'exp_euler' or 'euler', got {setup.scheme!r}.")
    if setup.drift not in ("none", "ou"):
        raise ValueError(f"drift must be 'none' or 'ou', got {setup.drift!r}.")
    steps = np.asarray(setup.obs_steps)
    if (
        steps.size == 0
        or np.any(np.diff(steps) <= 0)
        or steps[0] < 1
        or steps[-1] > setup.num_steps
    ):
        raise ValueError(
            f"obs_steps must increase within 1..num_steps={setup.num_steps}, got {setup.obs_steps}."
        )
    h = setup.horizon / setup.num_steps
    if setup.scheme == "euler" and max(setup.gammas) * h >= 0.5:
        raise ValueError(
            f"scheme='euler' needs gamma_max * h < 0.5, got {max(setup.gammas)} * {h:.4g}; "
            "use more num_steps or scheme='exp_euler'."
        )


def _phi(rate, h):
    rate = np.asarray(rate, np.float64)
    safe = np.where(rate == 0.0, 1.0, rate)
    return np.where(rate == 0.0, h, -np.expm1(-safe * h) / safe)


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """A square root ``L`` with ``L Lᵀ = cov`` for a PSD (possibly singular) matrix, float64."""
    values, vectors = np.linalg.eigh(0.5 * (cov + cov.T))
    return vectors * np.sqrt(np.clip(values, 0.0, None))


class _Constants(NamedTuple):
    decay: np.ndarray
    phi: np.ndarray
    noise_sqrt: np.ndarray
    y0_sqrt: np.ndarray
    next_obs: np.ndarray
    to_next: np.ndarray


def _constants(setup: SDESetup) -> _Constants:
    g = np.asarray(setup.gammas, np.float64)
    h = setup.horizon / setup.num_steps
    total = g[:, None] + g[None, :]
    joint = np.zeros((g.size + 1, g.size + 1))
    joint[0, 0] = h
    joint[0, 1:] = joint[1:, 0] = _phi(g, h)
    joint[1:, 1:] = _phi(total, h)
    if setup.kind == "I" and not setup.brownian:
        y0_sqrt = _psd_sqrt(1.0 / total)
    else:
        y0_sqrt = np.zeros((g.size, g.size))
    steps = np.asarray(setup.obs_steps)
    j = np.arange(setup.num_steps)
    next_obs = np.minimum(np.searchsorted(steps, j + 1), steps.size - 1)
    interval = setup.horizon / steps.size
    to_next = (steps[next_obs] - j) * h / interval
    f32 = np.float32
    return _Constants(
        np.exp(-g * h).astype(f32),
        _phi(g, h).astype(f32),
        _psd_sqrt(joint).astype(f32),
        y0_sqrt.astype(f32),
        next_obs.astype(np.int32),
        to_next.astype(f32),
    )


def _learns_initial(setup: SDESetup) -> bool:
    return setup.learn_initial and setup.kind == "I" and not setup.brownian


def _lower(raw: jax.Array) -> jax.Array:
    """Lower-triangular with a positive (exp) diagonal from an unconstrained square matrix."""
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diag(raw)))


def _num_features(setup: SDESetup) -> int:
    return 2 + 2 * len(setup.gammas) + setup.window


def init_params(key: jax.Array, setup: SDESetup) -> dict[str, Any]:
    """Initial parameters: H = 0.5 (raw 0), σ = 1, θ = 1, the control and q(Y(0) | o).

    The control starts at u = 0 (zero gains, or an MLP with a zero last layer, the
    paper's "Glow trick") and q(Y(0) | o) at the prior, so the posterior starts at the
    prior.
    """
    _check(setup)
    params: dict[str, Any] = {}
    if setup.control == "linear":
        params["gains"] = jnp.zeros((setup.num_steps, _num_features(setup)))
    else:
        params["control"] = _mlp_init(key, [_num_features(setup) + 2, setup.hidden, setup.hidden])
    if _learns_initial(setup):
        k = len(setup.gammas)
        params["initial_weights"] = jnp.zeros((len(setup.obs_steps), k))
        params["initial_bias"] = jnp.zeros(k)
        params["initial_scale"] = jnp.zeros((k, k))
    if setup.hurst is None and not setup.brownian:
        params["raw_hurst"] = jnp.zeros(())
    if setup.learn_scale:
        params["log_scale"] = jnp.zeros(())
    if setup.drift == "ou":
        params["raw_theta"] = jnp.asarray(np.log(np.expm1(1.0)), jnp.float32)
    return params


def _mlp_init(key, sizes):
    """tanh layers of ``sizes`` then a zero-initialized output layer of width 1."""
    keys = jax.random.split(key, len(sizes))
    layers = []
    for k, (n_in, n_out) in zip(keys, zip(sizes[:-1], sizes[1:])):
        layers.append((jax.random.normal(k, (n_in, n_out)) / np.sqrt(n_in), jnp.zeros(n_out)))
    layers.append((jnp.zeros((sizes[-1], 1)), jnp.zeros(1)))
    return layers


def hurst_of(params, setup: SDESetup) -> jax.Array:
    """The Hurst index of ``params``: ``sigmoid(raw_hurst)``, the fixed value, or 0.5 (BM)."""
    if setup.brownian:
        return jnp.asarray(0.5)
    if setup.hurst is not None:
        return jnp.asarray(setup.hurst, jnp.float32)
    return jax.nn.sigmoid(params["raw_hurst"])


def control_net(layers, features: jax.Array) -> jax.Array:
    """The control ``u``: tanh MLP on ``(..., features)`` -> ``(...)``."""
    hidden = features
    for weight, bias in layers[:-1]:
        hidden = jnp.tanh(hidden @ weight + bias)
    weight, bias = layers[-1]
    return (hidden @ weight + bias)[..., 0]


def _rollout(params, setup: SDESetup, observations: jax.Array, draw):
    """Integrate the controlled SDE for each row of ``observations``.

    ``draw(name, shape, step)`` returns standard normal draws. Returns the states X at every
    step ``(num_steps, B)`` and the path KL ``½ Σ u² h`` per path ``(B,)``.
    """
    const = _constants(setup)
    num_paths = observations.shape[0]
    k = len(setup.gammas)
    h = setup.horizon / setup.num_steps
    if setup.brownian:
        weights = jnp.ones(1)
    else:
        weights = markov_weights(hurst_of(params, setup), setup.gammas, setup.horizon, setup.kind)
    scale = jnp.exp(params["log_scale"]) if setup.learn_scale else 1.0
    theta = jax.nn.softplus(params["raw_theta"]) if setup.drift == "ou" else 0.0
    white = draw("y0", (num_paths, k))
    if _learns_initial(setup):
        # q(Y(0) | o) = L0 N(W o + c, S Sᵀ) with L0 the prior square root: N(0, I) in
        # whitened coordinates, so KL(q || p) = ½ (tr SSᵀ + |m|² - K - 2 log det S).
        tril = _lower(params["initial_scale"])
        mean = observations @ params["initial_weights"] + params["initial_bias"]
        white = mean + white @ tril.T
        initial_kl = 0.5 * (
            jnp.sum(tril**2) + jnp.sum(mean**2, 1) - k - 2.0 * jnp.sum(jnp.log(jnp.diag(tril)))
        )
    else:
        initial_kl = jnp.zeros(num_paths)
    y0 = white @ jnp.asarray(const.y0_sqrt).T
    padded = jnp.concatenate([observations, jnp.zeros((num_paths, setup.window))], 1)
    num_obs = observations.shape[1]
    offsets = jnp.arange(setup.window)
    y_scale = jnp.sqrt(2.0 * jnp.maximum(jnp.asarray(setup.gammas, jnp.float32), 0.05))
    interval = setup.horizon / len(setup.obs_steps)

    def step(carry, inputs):
        x, y, kl = carry
        j, next_obs, to_next = inputs
        upcoming = jax.lax.dynamic_slice_in_dim(padded, next_obs, setup.window, axis=1)
        mask = (next_obs + offsets < num_obs).astype(x.dtype)
        # time left to each upcoming observation, plus one step (the pinning scale)
        left = (to_next + offsets) * interval + h
        features = jnp.concatenate(
            [
                jnp.ones((num_paths, 1)),
                x[:, None],
                y * y_scale,
                y0 * y_scale,
                (upcoming - x[:, None]) * mask / left,
            ],
            axis=1,
        )
        if setup.control == "linear":
            u = jnp.sum(params["gains"][j] * features, axis=1)
        else:
            times = jnp.broadcast_to(jnp.stack([j * h / setup.horizon, to_next]), (num_paths, 2))
            u = control_net(params["control"], jnp.concatenate([times, features], 1))
        if setup.scheme == "euler":
            d_w = jnp.sqrt(h) * draw("dW", (num_paths, 1), j)[:, 0]
            y_new = y + (-jnp.asarray(setup.gammas) * y + u[:, None]) * h + d_w[:, None]
        else:
            joint = draw("dW", (num_paths, k + 1), j) @ jnp.asarray(const.noise_sqrt).T
            y_new = const.decay * y + u[:, None] * const.phi + joint[:, 1:]
        x_new = x - theta * x * h + scale * ((y_new - y) @ weights)
        return (x_new, y_new, kl + 0.5 * u**2 * h), x_new

    inputs = (jnp.arange(setup.num_steps), const.next_obs, const.to_next)
    start = (jnp.zeros(num_paths), y0, jnp.zeros(num_paths))
    (_, _, kl), xs = jax.lax.scan(step, start, inputs)
    return xs, kl + initial_kl


@functools.lru_cache(maxsize=32)
def make_elbo(setup: SDESetup) -> ppl.Expectation:
    """The per-path ELBO ``elbo(key, params, observations)`` as a `ppl.Expectation`.

    ``observations`` is ``(B, num_obs)``; the value is the mean over the B paths of
    ``Σ_i log N(o_i; X(t_i), noise²) - ½ ∫ u² dt - KL(q(Y(0) | o) || p(Y(0)))``. Cached
    per ``setup``, so repeated calls reuse one compiled expectation.
    """
    _check(setup)
    obs_index = np.asarray(setup.obs_steps) - 1

    def draw(name, shape, j=None):
        return ppl.sample(dist.Normal(jnp.zeros(shape), 1.0).to_event(len(shape)), name=name)

    @ppl.expectation
    def elbo(params, observations):
        if observations.ndim != 2 or observations.shape[1] != len(setup.obs_steps):
            raise ValueError(
                f"observations must be (paths, {len(setup.obs_steps)}), got {observations.shape}."
            )
        xs, kl = _rollout(params, setup, observations, draw)
        log_lik = dist.Normal(xs[obs_index].T, setup.noise).log_prob(observations).sum(-1)
        return jnp.mean(log_lik - kl)

    return elbo


def simulate(key: jax.Array, params, setup: SDESetup, observations: jax.Array):
    """Posterior paths: ``(xs (num_steps, B), kl (B,))``, one path per row of observations.

    Plain JAX (no ppl sites): the draws of step ``j`` come from ``fold_in(key, j)``.
    With a zero control (fresh `init_params`) these are prior paths.
    """
    _check(setup)
    key_y0, key_steps = jax.random.split(key)

    def draw(name, shape, j=None):
        if name == "y0":
            return jax.random.normal(key_y0, shape)
        return jax.random.normal(jax.random.fold_in(key_steps, j), shape)

    return _rollout(params, setup, jnp.asarray(observations, jnp.float32), draw)
