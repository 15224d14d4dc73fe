"""NumPyro's funsor elimination behind one function.

NumPyro sums the enumerated sites of a model out in a private function,
``numpyro.contrib.funsor.infer_util._enum_log_density`` (plates, ``markov`` loops and
``scan`` chains, by tensor variable elimination, Obermeyer et al. 2019), with the
semiring as an argument. ppl uses it in three semirings, `contract` below:

* ``"sum"`` (logsumexp, +): ``log Σ_c p(x, c)``, the marginal density;
* ``"max"`` (max, +): ``max_c log p(x, c)``, whose gradient with respect to added
  per-value potentials is the indicator of the MAP value (Viterbi);
* ``"sample"`` (logsumexp, +) with a *sampled adjoint*: the same value as ``"sum"``,
  but the reverse pass of each logsumexp ``m(o) = log Σ_r exp J(o, r)`` sends the
  cotangent of ``m(o)`` to one ``r ~ softmax_r J(o, r)`` instead of spreading it by
  the softmax weights. Backpropagating 1 from the result then marks one joint draw
  of the eliminated variables from ``p(c | x)``: the reverse pass of variable
  elimination is ancestral sampling in the reverse order (forward filtering, backward
  sampling for a chain, also through the parallel-scan elimination of ``scan``). This
  is the sampling semiring of torch-struct (Rush 2020, ``SampledSemiring``).

NumPyro's own ``infer_discrete`` samples through funsor's adjoint instead, which does
not support ``scan``; ``_enum_log_density`` does, so all three semirings work wherever
the density does.

References:
    Obermeyer, Bingham, Jankowiak, Phan, Chen, Pradhan, Goodman. "Tensor variable
    elimination for plated factor graphs". ICML 2019.
    Rush. "Torch-Struct: Deep structured prediction library". ACL 2020 (demo track).
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl._numpyro import funsor_elimination

__all__ = ["contract", "promote_batch_shape", "SEMIRINGS"]

#: The semirings of `contract`.
SEMIRINGS = ("sum", "max", "sample")


def contract(
    program: Callable,
    args: tuple,
    kwargs: dict,
    first_available_dim: int,
    semiring: str = "sum",
    key: jax.Array | None = None,
) -> jax.Array:
    """The enumerated sites of ``program`` eliminated in ``semiring``: a scalar.

    ``program`` is a NumPyro model whose sites to eliminate carry
    ``infer={"enumerate": "parallel"}`` (scan bodies: NumPyro's default); parameters
    and other values are already in it (handlers). ``first_available_dim`` is the
    first batch dimension, counted from the right, that enumeration may use (one left
    of the innermost plate). ``key`` (``"sample"`` only) draws the adjoint's samples.

    Raises:
        ValueError, TypeError: as NumPyro's ``_enum_log_density`` (a dependence beyond
            the declared Markov order leaves a non-scalar result or a reshape error).
    """
    funsor, enum, enum_log_density = funsor_elimination()
    from numpyro import handlers

    if semiring not in SEMIRINGS:
        raise ValueError(f"contract: semiring must be one of {SEMIRINGS}, got {semiring!r}.")
    sum_op = funsor.ops.max if semiring == "max" else funsor.ops.logaddexp
    # the decoding semirings run the model once more: hidden from enclosing handlers
    hide = contextlib.nullcontext() if semiring == "sum" else handlers.block()
    adjoint = _sampled_adjoint(key) if semiring == "sample" else contextlib.nullcontext()
    with hide, enum(first_available_dim=first_available_dim), adjoint:
        result, _, _ = enum_log_density(program, args, kwargs, {}, sum_op, funsor.ops.add)
    return jnp.asarray(result.data)


def promote_batch_shape(distribution: Any) -> Any:
    """NumPyro's ``promote_batch_shape`` (scan stacks a body site's distribution)."""
    from numpyro.distributions.batch_util import promote_batch_shape as promote

    return promote(distribution)


def register_promote_batch_shape(cls: type) -> Callable:
    """Register how ``scan`` stacks distributions of type ``cls`` (a decorator)."""
    from numpyro.distributions.batch_util import promote_batch_shape as promote

    return promote.register(cls)


# --------------------------------------------------------------- the sampled adjoint


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _sampled_logsumexp(joint: jax.Array, key: jax.Array, axes: tuple) -> jax.Array:
    """``logsumexp(joint, axes)``; its cotangent goes to one sampled index per output."""
    return jax.nn.logsumexp(joint, axis=axes)


def _sampled_logsumexp_fwd(
    joint: jax.Array, key: jax.Array, axes: tuple
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return jax.nn.logsumexp(joint, axis=axes), (joint, key)


def _sampled_logsumexp_bwd(
    axes: tuple, residuals: tuple[jax.Array, jax.Array], cotangent: jax.Array
) -> tuple[jax.Array, None]:
    joint, key = residuals
    kept = [d for d in range(joint.ndim) if d not in axes]
    order = kept + list(axes)
    moved = jnp.transpose(joint, order)
    flat = moved.reshape((*moved.shape[: len(kept)], -1))
    index = jax.random.categorical(key, flat, axis=-1)  # r ~ softmax_r J(o, r), per o
    chosen = jax.nn.one_hot(index, flat.shape[-1], dtype=joint.dtype) * cotangent[..., None]
    return jnp.transpose(chosen.reshape(moved.shape), np.argsort(order)), None


_sampled_logsumexp.defvjp(_sampled_logsumexp_fwd, _sampled_logsumexp_bwd)


@functools.cache
def _interpretation_class() -> type:
    """funsor interpretation: logsumexp eliminations of tensors with a sampled adjoint."""
    funsor, _, _ = funsor_elimination()
    from funsor.cnf import Contraction
    from funsor.interpretations import StatefulInterpretation
    from funsor.tensor import Tensor, align_tensors
    from funsor.terms import Reduce

    class SampledAdjoint(StatefulInterpretation):
        """Falls back to the enclosing interpretation for everything else."""

        def __init__(self, key: jax.Array) -> None:
            super().__init__("sampled_adjoint")
            self.key = key
            self.count = 0

        def next_key(self) -> jax.Array:
            self.count += 1
            return jax.random.fold_in(self.key, self.count)

    def eliminate(
        state: SampledAdjoint, reduced_vars: frozenset, terms: tuple[Tensor, ...]
    ) -> Tensor | None:
        if not all(term.output == funsor.Real for term in terms):
            return None  # pragma: no cover - enumerated factors are real scalars
        inputs, arrays = align_tensors(*terms)
        shape = tuple(domain.size for domain in inputs.values())
        joint = jnp.broadcast_to(functools.reduce(jnp.add, arrays), shape)
        names = {var.name for var in reduced_vars}
        axes = tuple(i for i, name in enumerate(inputs) if name in names)
        if not axes:
            return Tensor(joint, inputs)
        kept = OrderedDict((k, v) for k, v in inputs.items() if k not in names)
        return Tensor(_sampled_logsumexp(joint, state.next_key(), axes), kept)

    logaddexp, add = funsor.ops.LogaddexpOp, funsor.ops.AddOp

    @SampledAdjoint.register(Contraction, logaddexp, add, frozenset, Tensor, Tensor)
    def contraction(
        state: SampledAdjoint, red_op: Any, bin_op: Any, reduced_vars: frozenset, *terms: Tensor
    ) -> Tensor | None:
        return eliminate(state, reduced_vars, terms)

    @SampledAdjoint.register(Reduce, funsor.ops.LogaddexpOp, Tensor, frozenset)
    def reduction(
        state: SampledAdjoint, op: Any, arg: Tensor, reduced_vars: frozenset
    ) -> Tensor | None:
        return eliminate(state, reduced_vars & arg.input_vars, (arg,))

    return SampledAdjoint


def _sampled_adjoint(key: jax.Array | None) -> Any:
    if key is None:
        raise ValueError("contract(semiring='sample') needs a PRNG key.")
    # The draws use XLA's RngBitGenerator, seeded once from the key: threefry at each
    # of the elimination's sampling sites made compiling the decoder ~3x slower.
    seed = jax.random.bits(key, (4,), jnp.uint32)
    return _interpretation_class()(jax.random.wrap_key_data(seed, impl="rbg"))
