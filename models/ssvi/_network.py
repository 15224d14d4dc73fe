"""The networks (an MLP, a small 1-D CNN), their forward passes and analytic FLOP counts.

Every layer is linear in its weights, ``a = op(h, W) + b`` (a matrix product or a 1-D
convolution), followed by a ReLU except after the last layer. The weights ``W`` are
variational (mean-field Gaussian on a sparse support); the biases are deterministic and
dense, as in the reference code's linear head.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Layer",
    "mlp",
    "cnn1d",
    "architecture",
    "linear_op",
    "forward",
    "forward_flops",
    "init_params",
]


class Layer(NamedTuple):
    """One layer (static, hashable).

    Attributes:
        name: the parameter key and the sample-site name of its pre-activations.
        kind: ``"dense"`` (``h @ W``, ``W`` of shape ``(fan_in, fan_out)``) or
            ``"conv"`` (``W`` of shape ``(kernel, in_channels, out_channels)``, inputs
            ``(N, length, channels)``, "SAME" padding).
        shape: the weight shape.
        stride: the convolution stride (1 for dense layers).
        positions: output positions per example (1 for dense layers); the FLOP count
            of the layer is ``2 · nnz(W) · positions`` multiply-adds per example.
        sparse: whether the layer's weights are sparsified (the reference keeps the
            first convolution dense).
    """

    name: str
    kind: str
    shape: tuple
    stride: int = 1
    positions: int = 1
    sparse: bool = True


def mlp(num_inputs: int, hidden: tuple = (256, 256), num_classes: int = 10) -> tuple:
    """An MLP ``num_inputs - hidden... - num_classes``; every layer sparsified."""
    sizes = (num_inputs, *hidden, num_classes)
    return tuple(
        Layer(f"dense{i}", "dense", (sizes[i], sizes[i + 1])) for i in range(len(sizes) - 1)
    )


def cnn1d(
    length: int = 40,
    channels: tuple = (16, 32, 32),
    kernels: tuple = (5, 3, 3),
    strides: tuple = (1, 2, 2),
    hidden: int = 256,
    num_classes: int = 10,
) -> tuple:
    """A small 1-D CNN: convolutions (ReLU), flatten, a hidden dense layer, the head.

    The first convolution is kept dense, as in the reference code. It has 16 channels
    (32 before): evaluated at all 40 positions, a dense 32-channel first layer was 27 %
    of the sparse network's forward FLOPs and capped the saving at 90 % sparsity below
    8x; with 16 channels it is about 18 %.
    """
    layers, in_channels = [], 1
    for i, (out_channels, kernel, stride) in enumerate(zip(channels, kernels, strides)):
        length = -(-length // stride)
        layers.append(
            Layer(
                f"conv{i}",
                "conv",
                (kernel, in_channels, out_channels),
                stride,
                length,
                sparse=i > 0,
            )
        )
        in_channels = out_channels
    flat = length * in_channels
    layers.append(Layer("dense0", "dense", (flat, hidden)))
    layers.append(Layer("dense1", "dense", (hidden, num_classes)))
    return tuple(layers)


def architecture(dataset: str, kind: str, hidden: int = 256) -> tuple:
    """The network for a data set: ``kind`` is ``"mlp"`` (two hidden layers of ``hidden``
    units) or ``"cnn"`` (`cnn1d` with a ``hidden``-unit dense layer).

    Raises:
        ValueError: for an unknown kind, or a CNN for the (2-D, flattened) digits.
    """
    if dataset not in ("digits", "mnist1d"):
        raise ValueError(f"dataset must be 'digits' or 'mnist1d', got {dataset!r}.")
    if kind == "mlp":
        return mlp(64 if dataset == "digits" else 40, (hidden, hidden))
    if kind == "cnn":
        if dataset != "mnist1d":
            raise ValueError(f"network='cnn' is for mnist1d only; use 'mlp' for {dataset!r}.")
        return cnn1d(hidden=hidden)
    raise ValueError(f"network must be 'mlp' or 'cnn', got {kind!r}.")


def linear_op(layer: Layer, h: jax.Array, weight: jax.Array) -> jax.Array:
    """``h @ W`` or the 1-D convolution of ``h`` with ``W`` (flattening before dense)."""
    if layer.kind == "dense":
        return h.reshape(h.shape[0], -1) @ weight
    # "SAME" 1-D convolution as one matrix product over patches (im2col): under
    # ``jax.vmap`` over seeds this stays a batched matmul, where ``conv_general_dilated``
    # would become a grouped convolution, several times slower on CPU.
    kernel, stride, length = weight.shape[0], layer.stride, h.shape[1]
    out_length = -(-length // stride)
    total_pad = max((out_length - 1) * stride + kernel - length, 0)
    padded = jnp.pad(h, ((0, 0), (total_pad // 2, total_pad - total_pad // 2), (0, 0)))
    span = stride * (out_length - 1) + 1
    patches = jnp.stack([padded[:, k : k + span : stride] for k in range(kernel)], axis=2)
    patches = patches.reshape(h.shape[0], out_length, -1)
    return patches @ weight.reshape(-1, weight.shape[-1])


def forward(arch: tuple, weights: dict, biases: dict, x: jax.Array) -> jax.Array:
    """Logits of the network with the given (deterministic) weights."""
    h = x
    for index, layer in enumerate(arch):
        h = linear_op(layer, h, weights[layer.name]) + biases[layer.name]
        if index < len(arch) - 1:
            h = jax.nn.relu(h)
    return h


def forward_flops(arch: tuple, active: dict | None = None, lrt: bool = True) -> float:
    """Floating-point operations of one forward pass for one example.

    ``2 · nnz(W_l) · positions_l`` per layer (a multiply and an add per active weight
    and output position), twice with the local reparameterization trick (the mean and
    the variance of the pre-activations are two products). Biases, activations and the
    noise are ignored (lower order). ``active``: layer name -> number of active weights
    (default: dense).
    """
    total = 0.0
    for layer in arch:
        nnz = int(np.prod(layer.shape)) if active is None else int(active[layer.name])
        total += 2.0 * nnz * layer.positions * (2.0 if lrt else 1.0)
    return total


def init_params(key: jax.Array, arch: tuple, init_scale: float = 1e-3) -> dict:
    """Variational parameters: ``loc ~ N(0, 2/fan_in)``, ``rho = softplus⁻¹(init_scale)``,
    ``bias = 0``. ``fan_in`` counts every input of a unit (dense fan-in)."""
    params = {}
    keys = jax.random.split(key, len(arch))
    rho = float(np.log(np.expm1(init_scale)))
    for key_layer, layer in zip(keys, arch):
        fan_in = int(np.prod(layer.shape[:-1]))
        params[layer.name] = {
            "loc": jax.random.normal(key_layer, layer.shape) * np.sqrt(2.0 / fan_in),
            "rho": jnp.full(layer.shape, rho, jnp.float32),
            "bias": jnp.zeros(layer.shape[-1]),
        }
    return params
