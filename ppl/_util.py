"""Helpers shared across ppl's subpackages: key checking, log-mean-exp, running means.

Internal: the public API re-exports none of these; subpackages import them from here
rather than from each other's private modules.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

__all__ = ["log_mean_exp", "running_mean", "typed_key"]


def typed_key(key: Any, where: str = "an expectation") -> jax.Array:
    """``key`` as one typed PRNG key; raw ``uint32[2]`` keys are wrapped.

    Raises:
        TypeError: naming ``where`` and what was given, if ``key`` is not one PRNG key
            (an int, a NumPy ``Generator``, a batch of keys, ...).
    """
    if isinstance(key, jax.Array | np.ndarray):
        array = key
        if jnp.issubdtype(array.dtype, jax.dtypes.prng_key) and array.shape == ():
            return array
        if array.shape == (2,) and array.dtype == jnp.uint32:
            return jax.random.wrap_key_data(jnp.asarray(array))
        given = f"an array of shape {array.shape} and dtype {array.dtype}"
        if jnp.issubdtype(array.dtype, jax.dtypes.prng_key):
            given += " (a batch of keys: pass one of them, or jax.vmap over them)"
    else:
        given = f"{type(key).__module__}.{type(key).__qualname__}"
        given = f"{key!r} ({given})" if isinstance(key, int | float | str) else given
        if isinstance(key, np.random.Generator | np.random.RandomState):
            given += " (NumPy's random generators are not JAX keys)"
    raise TypeError(
        f"{where}: the key must be one PRNG key, jax.random.key(0) (or the raw "
        f"jax.random.PRNGKey(0)), got {given}."
    )


def log_mean_exp(log_weights: jax.Array) -> jax.Array:
    """``log(mean(exp(log_weights)))`` of a vector of log weights, computed stably."""
    return logsumexp(log_weights) - math.log(log_weights.shape[0])


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` values, skipping non-finite ones (NaN where none)."""
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0.0], np.cumsum(finite)])
    end = np.arange(1, values.size + 1)
    start = np.maximum(end - window, 0)
    count = counts[end] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[end] - sums[start]) / count, np.nan)
