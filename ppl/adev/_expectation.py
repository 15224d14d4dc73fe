"""``ppl.expectation``: a stochastic program as a differentiable estimator."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ppl.adev._interpreter import Acc, finalize, run

__all__ = ["Expectation", "expectation", "typed_key"]


def typed_key(key: Any, where: str = "an expectation") -> jax.Array:
    """``key`` as one typed PRNG key; raw ``uint32[2]`` keys are wrapped.

    Raises:
        TypeError: naming ``where``, if ``key`` is not one PRNG key.
    """
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
        return key
    if key.shape == (2,) and key.dtype == jnp.uint32:
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{where}: the key must be one PRNG key (jax.random.key(0) or "
        f"jax.random.PRNGKey(0)), got an array of shape {key.shape} and dtype {key.dtype}."
    )


class Expectation:
    """The expected value of a stochastic program, with unbiased estimators.

    Create one with `expectation`. Calling ``objective(key, *args)`` returns a
    scalar whose value is an unbiased estimate of ``E[fn(*args)]`` and whose JAX
    derivative with respect to ``args`` is an unbiased estimate of the gradient of
    that expectation; so is the derivative of any linear combination of such calls
    (for example the mean over a ``jax.vmap``-ed minibatch).
    """

    def __init__(self, fn: Callable[..., jax.Array]):
        self.fn = fn
        functools.update_wrapper(self, fn)
        self._estimate = jax.jit(self.__call__)
        self._value_and_grad = jax.jit(self._value_and_grad_impl)
        self._jvp = jax.jit(self._jvp_impl)

    def __repr__(self) -> str:
        return f"Expectation({getattr(self.fn, '__qualname__', self.fn)!r})"

    # The transformation itself: trace, then re-evaluate under ADEV.
    def __call__(self, key: jax.Array, *args: Any) -> jax.Array:
        key = typed_key(key, repr(self))
        closed, out_tree = jax.make_jaxpr(self.fn, return_shape=True)(*args)
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
        flat_args = jax.tree.leaves(args)
        return run(
            closed.jaxpr,
            list(closed.consts),
            flat_args,
            Acc.zero(),
            key,
            lambda values, acc, salt, primal: finalize(acc, values[0].astype(acc.cost.dtype)),
        )

    def estimate(self, key: jax.Array, *args: Any) -> jax.Array:
        """An unbiased estimate of ``E[fn(*args)]`` (jit-compiled)."""
        return self._estimate(key, *args)

    def grad_estimate(self, key: jax.Array, *args: Any) -> tuple:
        """An unbiased estimate of the gradient, a tuple shaped like ``args``."""
        return self.value_and_grad_estimate(key, *args)[1]

    def value_and_grad_estimate(self, key: jax.Array, *args: Any) -> tuple[jax.Array, tuple]:
        """``(estimate, grad_estimate)`` from the same draws (jit-compiled)."""
        try:
            return self._value_and_grad(key, *args)
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

    def jvp_estimate(self, key: jax.Array, primals: tuple, tangents: tuple):
        """Forward mode: ``(estimate, unbiased estimate of the directional derivative)``."""
        return self._jvp(key, tuple(primals), tuple(tangents))

    def _value_and_grad_impl(self, key, *args):
        argnums = tuple(range(1, len(args) + 1))
        return jax.value_and_grad(self.__call__, argnums=argnums, allow_int=True)(key, *args)

    def _jvp_impl(self, key, primals, tangents):
        return jax.jvp(lambda *a: self.__call__(key, *a), primals, tangents)


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
