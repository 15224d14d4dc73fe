"""``ppl.expectation``: a stochastic program as a differentiable estimator."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ppl._util import typed_key
from ppl.adev._interpreter import Acc, run, terminal

__all__ = ["Expectation", "expectation"]


class Expectation:
    """The expected value of a stochastic program, with unbiased estimators.

    Create one with `expectation`. Calling ``objective(key, *args)`` returns a
    scalar whose value is an unbiased estimate of ``E[fn(*args)]`` and whose JAX
    derivative with respect to ``args`` is an unbiased estimate of the gradient of
    that expectation; so is the derivative of any linear combination of such calls
    (for example the mean over a ``jax.vmap``-ed minibatch).
    """

    def __init__(self, fn: Callable[..., jax.Array]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)
        self._estimate = jax.jit(self._estimate_impl, static_argnums=0)
        self._value_and_grad = jax.jit(self._value_and_grad_impl, static_argnums=0)
        self._jvp = jax.jit(self._jvp_impl)

    def __repr__(self) -> str:
        return f"Expectation({getattr(self.fn, '__qualname__', self.fn)!r})"

    # The transformation itself: trace, then re-evaluate under ADEV.
    def __call__(self, key: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        key = typed_key(key, repr(self))
        dynamic, static = _split_static((args, kwargs))

        def traced(dynamic: Any) -> Any:
            args, kwargs = eqx.combine(dynamic, static)
            return self.fn(*args, **kwargs)

        closed, out_tree = jax.make_jaxpr(traced, return_shape=True)(dynamic)
        outs = jax.tree.leaves(out_tree)
        if (
            len(outs) != 1
            or outs[0].shape != ()
            or jnp.issubdtype(outs[0].dtype, jnp.complexfloating)
        ):
            returned = jax.tree.map(lambda s: f"{s.dtype}{list(s.shape)}", out_tree)
            raise TypeError(
                f"{self!r} must return one real scalar (the quantity whose expectation is "
                f"estimated), but it returned {returned}. "
                f"Reduce it (jnp.sum, jnp.mean) or jax.vmap the Expectation over a batch."
            )
        flat_args = jax.tree.leaves(dynamic)
        return run(
            closed.jaxpr,
            list(closed.consts),
            flat_args,
            Acc.zero(),
            key,
            terminal,
        )

    def estimate(self, key: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        """An unbiased estimate of ``E[fn(*args, **kwargs)]`` (jit-compiled).

        Array and Python float leaves of the arguments are traced; every other leaf
        (ints such as a plate size, strings, None, callables) is static, as in
        NumPyro's ``SVI``: a new value compiles anew.
        """
        key = typed_key(key, repr(self))
        dynamic, static = _split_static((args, kwargs))
        return self._estimate(_Static(static), key, dynamic)

    def grad_estimate(self, key: jax.Array, *args: Any, **kwargs: Any) -> tuple:
        """An unbiased estimate of the gradient, a tuple shaped like ``args``.

        Static leaves (see `estimate`) and keyword arguments are not differentiated:
        their entries are ``None``.
        """
        return self.value_and_grad_estimate(key, *args, **kwargs)[1]

    def value_and_grad_estimate(
        self, key: jax.Array, *args: Any, **kwargs: Any
    ) -> tuple[jax.Array, tuple]:
        """``(estimate, grad_estimate)`` from the same draws (jit-compiled)."""
        key = typed_key(key, repr(self))
        dynamic, static = _split_static((args, kwargs))
        try:
            return self._value_and_grad(_Static(static), key, dynamic)
        except ValueError as err:
            if "Reverse-mode differentiation does not work for lax.while_loop" not in str(err):
                raise
            raise ValueError(
                f"{self!r}: a value carried from one iteration of a while_loop to the next "
                f"depends differentiably on the arguments (for example a reparameterized "
                f"sample accumulated in the carry). JAX cannot reverse-differentiate "
                f"that. Use lax.scan (or fori_loop with static bounds), or forward mode "
                f"(jvp_estimate). Sites whose parameters come from outside the loop are "
                f"fine: only the carry is the problem."
            ) from None

    def jvp_estimate(
        self, key: jax.Array, primals: tuple, tangents: tuple
    ) -> tuple[jax.Array, jax.Array]:
        """Forward mode: ``(estimate, unbiased estimate of the directional derivative)``."""
        return self._jvp(key, tuple(primals), tuple(tangents))

    def _estimate_impl(self, static: _Static, key: jax.Array, dynamic: Any) -> jax.Array:
        args, kwargs = eqx.combine(dynamic, static.tree)
        return self(key, *args, **kwargs)

    def _value_and_grad_impl(
        self, static: _Static, key: jax.Array, dynamic: Any
    ) -> tuple[jax.Array, tuple]:
        dynamic_args, dynamic_kwargs = dynamic
        static_args, static_kwargs = static.tree

        def value(dynamic_args: Any) -> jax.Array:
            args = eqx.combine(dynamic_args, static_args)
            kwargs = eqx.combine(dynamic_kwargs, static_kwargs)
            return self(key, *args, **kwargs)

        value, grads = jax.value_and_grad(value, allow_int=True)(dynamic_args)
        return value, tuple(grads)

    def _jvp_impl(
        self, key: jax.Array, primals: tuple, tangents: tuple
    ) -> tuple[jax.Array, jax.Array]:
        return jax.jvp(lambda *a: self.__call__(key, *a), primals, tangents)


def _is_traced(leaf: Any) -> bool:
    """Arrays and Python floats are traced; ints, strings, None, callables are static."""
    return isinstance(leaf, jax.Array | np.ndarray | np.generic | float | complex) and not (
        isinstance(leaf, bool)
    )


def _split_static(tree: Any) -> tuple[Any, Any]:
    """``(dynamic, static)`` halves of ``tree`` for `eqx.combine` (see `_is_traced`)."""
    return eqx.partition(tree, _is_traced)


class _Static:
    """The static half of the arguments as a `jax.jit` static argument.

    Hashed by value where its leaves hash (so equal plate sizes share one compiled
    program), else by identity (an unhashable object then compiles once per object).
    """

    def __init__(self, tree: Any) -> None:
        self.tree = tree
        self.leaves, self.treedef = jax.tree.flatten(tree)
        try:
            self._hash = hash((self.treedef, tuple(self.leaves)))
            self._by_value = True
        except TypeError:
            self._hash, self._by_value = hash((self.treedef, tuple(map(id, self.leaves)))), False

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Static) or self.treedef != other.treedef:
            return False
        if not (self._by_value and other._by_value):
            return all(a is b for a, b in zip(self.leaves, other.leaves, strict=True))
        return all(
            a is b or (type(a) is type(b) and a == b)
            for a, b in zip(self.leaves, other.leaves, strict=True)
        )


def expectation(fn: Callable[..., jax.Array]) -> Expectation:
    """Turn a stochastic program into an `Expectation`.

    ``fn(*args)`` is any JAX code returning one real scalar; its random choices are
    made with `ppl.sample` (each with a gradient strategy) and it may add costs
    with `ppl.add_cost`.

    Examples:
        >>> import jax, jax.numpy as jnp, ppl
        >>> import numpyro.distributions as dist
        >>> @ppl.expectation
        ... def objective(theta):
        ...     x = ppl.sample(dist.Normal(theta, 1.0), ppl.reparam)
        ...     return x**2
        >>> grads = objective.grad_estimate(jax.random.key(0), 1.5)
        >>> grads[0].shape  # d/dθ E[x²] = 2θ, estimated from one draw
        ()
    """
    return Expectation(fn)
