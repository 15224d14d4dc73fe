"""Error regression (Ahmadi & Tani 2019, Sec. 2.4) and the VRNN's filter-then-predict.

Error regression is PV-RNN's online recognition: as each observation arrives, the
weights stay frozen and only the adaptive vectors of a sliding window of the last
``W`` steps are optimised (Adam, a few iterations) to maximise the window's
meta-prior-weighted lower bound; the state entering the window is carried over from
the previous step, the newest slot starts at the prior's pre-activations, and the
prediction of the next ``H`` steps is a prior-mean rollout from the end of the window.
The whole online loop is one compiled ``lax.scan`` (no recompilation per step).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from ppl_zoo.pv_rnn import _model

__all__ = ["error_regression", "vrnn_predictions", "future_targets"]


def _mean_run(net, taus, state, adaptive, first):
    """Run the window with ``z = tanh A_µ``; returns the final state and the outputs."""
    inputs = (jnp.zeros(first.shape), [jnp.swapaxes(a, 0, 1) for a in adaptive])
    state, (x_mean, _, _) = _model.unroll(
        net, taus, state, inputs, first, _model._adaptive_latent(False)
    )
    return state, x_mean


@functools.partial(
    jax.jit, static_argnames=("taus", "window", "horizon", "iterations", "first_iterations")
)
def error_regression(
    key: jax.Array,
    net: dict,
    x: jax.Array,
    weights: jax.Array,
    learning_rate: float | jax.Array,
    *,
    taus: tuple[float, ...],
    window: int,
    horizon: int,
    iterations: int,
    first_iterations: int,
):
    """Online prediction of ``x`` by error regression with a sliding window.

    Args:
        key: PRNG key for the reparameterized draws inside the window objective.
        net: the trained generative network (frozen).
        x: the observed sequences ``(B, T, dim x)``, revealed one step at a time.
        weights: the meta-prior per layer (as in training).
        learning_rate: Adam's step size for the adaptive vectors.
        taus: the time constants.
        window: ``W``, the number of most recent steps whose vectors are optimised.
        horizon: ``H``, how many steps ahead to predict.
        iterations: Adam iterations per new observation.
        first_iterations: Adam iterations when the first window is complete.

    Returns:
        ``(predictions, losses)``: ``predictions[b, i]`` is the ``(H, dim x)``
        prediction of ``x[b, t : t + H]`` made after seeing ``x[b, :t]``, for
        ``t = W, …, T - H``; ``losses`` the windowed negative bound before and after the
        iterations at every such ``t``, ``(T - H - W + 1, 2)``.
    """
    batch, length, _ = x.shape
    if length < window + horizon:
        raise ValueError(
            f"sequences of length {length} are shorter than window + horizon = "
            f"{window} + {horizon}."
        )
    objective = _model.window_objective(taus)
    optimizer = optax.adam(learning_rate)

    def negative_bound(step_key, adaptive, x_window, first, state):
        return -objective(step_key, adaptive, net, x_window, first, state, weights)

    def optimize(step_key, adaptive, x_window, first, state, num_iterations):
        def body(carry, index):
            adaptive, opt_state = carry
            loss, grads = jax.value_and_grad(negative_bound, argnums=1)(
                jax.random.fold_in(step_key, index), adaptive, x_window, first, state
            )
            updates, opt_state = optimizer.update(grads, opt_state, adaptive)
            return (optax.apply_updates(adaptive, updates), opt_state), loss

        (adaptive, _), losses = jax.lax.scan(
            body, (adaptive, optimizer.init(adaptive)), jnp.arange(num_iterations)
        )
        return adaptive, jnp.stack([losses[0], losses[-1]])

    def predict(state, adaptive, first):
        end_state, _ = _mean_run(net, taus, state, adaptive, first)
        return _model.prior_mean_rollout(net, taus, end_state, horizon)

    # The first complete window: vectors from a prior-mean run, many iterations.
    state = _model.zero_state(net, batch)
    adaptive = [
        jnp.broadcast_to(a, (batch,) + a.shape[1:])
        for a in _model.init_adaptive(net, taus, 1, window)
    ]
    first = jnp.arange(window) == 0
    key_first, key_online = jax.random.split(key)
    adaptive, losses0 = optimize(key_first, adaptive, x[:, :window], first, state, first_iterations)
    prediction0 = predict(state, adaptive, first)

    def online(carry, t):
        state, adaptive = carry
        # Slide: the oldest slot (time t - 1 - W) moves into the carried state.
        oldest = [a[:, :1] for a in adaptive]
        state, _ = _mean_run(net, taus, state, oldest, jnp.array([t - 1 - window == 0]))
        kept = [a[:, 1:] for a in adaptive]
        inner_state, _ = _mean_run(net, taus, state, kept, jnp.zeros(window - 1, bool))
        newest = [
            _model.prior_preactivation(layer, d, False)[:, None]
            for layer, (_, d) in zip(net["layers"], inner_state)
        ]
        adaptive = [jnp.concatenate([k, n], axis=1) for k, n in zip(kept, newest)]
        x_window = jax.lax.dynamic_slice_in_dim(x, t - window, window, axis=1)
        first = (t - window + jnp.arange(window)) == 0
        adaptive, losses = optimize(
            jax.random.fold_in(key_online, t), adaptive, x_window, first, state, iterations
        )
        return (state, adaptive), (predict(state, adaptive, first), losses)

    steps = jnp.arange(window + 1, length - horizon + 1)
    _, (predictions, losses) = jax.lax.scan(online, (state, adaptive), steps)
    predictions = jnp.concatenate([prediction0[None], predictions], axis=0)
    losses = jnp.concatenate([losses0[None], losses], axis=0)
    return jnp.swapaxes(predictions, 0, 1), losses


@functools.partial(jax.jit, static_argnames=("taus", "window", "horizon"))
def vrnn_predictions(params: dict, x: jax.Array, *, taus, window: int, horizon: int):
    """The VRNN baseline: filter ``x[:, :t]`` with the encoder's means, then predict
    ``H`` steps with prior means; for ``t = W, …, T - H`` (the error-regression times)."""
    length = x.shape[1]
    _, states = _model.vrnn_filter(params, taus, x)
    times = jnp.arange(window, length - horizon + 1)
    states_at = jax.tree.map(lambda s: s[times - 1], states)

    def from_state(state):
        return _model.prior_mean_rollout(params["net"], taus, state, horizon)

    return jnp.swapaxes(jax.vmap(from_state)(states_at), 0, 1)


def future_targets(x, window: int, horizon: int):
    """``x[:, t : t + H]`` for ``t = W, …, T - H``: ``(B, T - H - W + 1, H, dim x)``."""
    length = x.shape[1]
    return jnp.stack([x[:, t : t + horizon] for t in range(window, length - horizon + 1)], 1)
