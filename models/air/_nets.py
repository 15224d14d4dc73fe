"""The networks of AIR and a differentiable spatial transformer, in plain JAX.

Parameters are dicts of arrays (pytrees). The spatial transformer (Jaderberg et al.
2015) is restricted, as in AIR, to a scale and a shift, ``z_where = (s, x, y)``; its
bilinear sampling is then separable and is written as two small matrix products,
``out = A_y · image · A_xᵀ``, whose weights ``A[i, j] = max(0, 1 - |c_i - j|)`` are
the bilinear weights of input pixel ``j`` at the (continuous) input coordinate ``c_i``
of output pixel ``i``. This is exactly ``torch.nn.functional.grid_sample`` (bilinear,
zero padding, ``align_corners=False``) on the grid ``affine_grid([[s, 0, x], [0, s,
y]])`` used by Pyro's AIR example, and it is differentiable in ``z_where``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "init_linear",
    "linear",
    "init_mlp",
    "mlp",
    "init_lstm",
    "lstm",
    "interpolation_matrix",
    "window_to_image",
    "image_to_window",
]


def init_linear(key: jax.Array, fan_in: int, fan_out: int, bias: float = 0.0) -> dict:
    """A dense layer, weights uniform in ``±1/sqrt(fan_in)`` (PyTorch's default)."""
    limit = 1.0 / math.sqrt(fan_in)
    weight = jax.random.uniform(key, (fan_in, fan_out), minval=-limit, maxval=limit)
    return {"w": weight, "b": jnp.full((fan_out,), bias, jnp.float32)}


def linear(layer: dict, inputs: jax.Array) -> jax.Array:
    return inputs @ layer["w"] + layer["b"]


def init_mlp(key: jax.Array, sizes: list[int], last_bias: float = 0.0) -> list[dict]:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]`` (ReLU between them)."""
    keys = jax.random.split(key, len(sizes) - 1)
    layers = [init_linear(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
    layers[-1]["b"] = layers[-1]["b"] + last_bias
    return layers


def mlp(layers: list[dict], inputs: jax.Array) -> jax.Array:
    """ReLU hidden layers, no activation after the last."""
    for index, layer in enumerate(layers):
        inputs = linear(layer, inputs)
        if index < len(layers) - 1:
            inputs = jax.nn.relu(inputs)
    return inputs


def init_lstm(key: jax.Array, input_size: int, hidden: int, projected_size: int = 0) -> dict:
    """An LSTM cell: an ``(input + hidden) x 4 hidden`` matrix (gates i, f, g, o).

    With ``projected_size > 0``, the rows of the first ``projected_size`` inputs are a
    leaf of their own, ``"w_projected"``, for `lstm_input_projection` (the same values
    as the rows of one matrix: the split only changes how they are stored). Kept in
    one matrix, every step would slice it into its two parts and the gradient would
    pad each part's contribution back to the whole matrix: on AIR's 2.9 M-entry cell
    that is several full passes over it per step, more than Adam's update.
    """
    layer = init_linear(key, input_size + hidden, 4 * hidden)
    cell = {"w": layer["w"], "b": layer["b"].at[hidden : 2 * hidden].set(1.0)}
    if projected_size:
        cell["w_projected"], cell["w"] = cell["w"][:projected_size], cell["w"][projected_size:]
    return cell


def lstm(cell: dict, inputs: jax.Array, state: tuple[jax.Array, jax.Array]):
    """One LSTM step (Hochreiter & Schmidhuber 1997); returns the new ``(h, c)``."""
    if "w_projected" in cell:
        size = cell["w_projected"].shape[0]
        projected = lstm_input_projection(cell, inputs[..., :size])
        return lstm_projected(cell, projected, inputs[..., size:], state)
    h, c = state
    gates = jnp.concatenate([inputs, h], axis=-1) @ cell["w"] + cell["b"]
    return _gates(gates, c)


def _gates(gates: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def lstm_input_projection(cell: dict, x: jax.Array) -> jax.Array:
    """The part of the LSTM's gates that depends on ``x`` alone, ``x @ W[:len(x)]``
    (``cell["w_projected"]`` of a cell from ``init_lstm(..., projected_size=len(x))``).

    AIR feeds the same canvas to every step; computing its projection once per canvas
    (and passing it to `lstm_projected`) gives the same gates with a third of the
    matrix products of three full steps.
    """
    return x @ cell["w_projected"]


def lstm_projected(cell: dict, projected: jax.Array, inputs: jax.Array, state):
    """`lstm` on ``concatenate([x, inputs])``, given ``lstm_input_projection(cell, x)``."""
    h, c = state
    rest = jnp.concatenate([inputs, h], axis=-1) @ cell["w"]
    return _gates(projected + rest + cell["b"], c)


def interpolation_matrix(scale, shift, out_size: int, in_size: int) -> jax.Array:
    """Bilinear weights ``(out_size, in_size)`` of the 1-d map ``v = scale · u + shift``.

    ``u`` is the normalized coordinate (``-1..1``, pixel centres, ``align_corners=False``)
    of each output pixel, ``v`` the normalized input coordinate it reads; input pixels
    outside ``0..in_size-1`` count as zero.
    """
    u = (2.0 * jnp.arange(out_size) + 1.0) / out_size - 1.0
    v = scale * u + shift
    column = ((v + 1.0) * in_size - 1.0) / 2.0
    return jax.nn.relu(1.0 - jnp.abs(column[:, None] - jnp.arange(in_size)[None, :]))


def window_to_image(z_where: jax.Array, window: jax.Array, image_size: int) -> jax.Array:
    """Place a ``(w, w)`` window on an ``(image_size, image_size)`` canvas.

    Canvas coordinate ``u`` reads window coordinate ``s u + x`` (``y`` vertically), so
    the object covers ``1/s`` of the canvas width around ``(-x/s, -y/s)``.
    """
    scale, shift_x, shift_y = z_where[0], z_where[1], z_where[2]
    size = window.shape[-1]
    rows = interpolation_matrix(scale, shift_y, image_size, size)
    cols = interpolation_matrix(scale, shift_x, image_size, size)
    return rows @ window @ cols.T


def image_to_window(z_where: jax.Array, image: jax.Array, window_size: int) -> jax.Array:
    """The inverse transformer: crop the ``(window_size, window_size)`` window that
    `window_to_image` would have placed (window coordinate ``w`` reads canvas ``(w - x)/s``)."""
    scale, shift_x, shift_y = z_where[0], z_where[1], z_where[2]
    size = image.shape[-1]
    rows = interpolation_matrix(1.0 / scale, -shift_y / scale, window_size, size)
    cols = interpolation_matrix(1.0 / scale, -shift_x / scale, window_size, size)
    return rows @ image @ cols.T
