"""Up-front checks of what users hand to ``fit``, ``to_inference_data`` and ``importance``.

Each check runs once, before anything is compiled, and raises an error that names the
argument (``data['x']``, ``args[1]``, ``params['loc']``) and what to do about it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.tree_util import keystr, tree_flatten_with_path
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

__all__ = ["check_finite", "check_params_given", "check_unconstrained"]


def check_finite(where: str, **trees: Any) -> None:
    """Raise ``ValueError`` at the first non-finite floating-point value in ``trees``.

    Args:
        where: the caller's name, for the message (``"fit"``).
        **trees: name -> pytree (``data=...``, ``args=...``); the message names the
            leaf as ``name[path]`` and the first bad index.
    """
    for name, tree in trees.items():
        for path, leaf in tree_flatten_with_path(tree)[0]:
            if isinstance(leaf, bool) or not isinstance(
                leaf, float | complex | np.ndarray | np.generic | jax.Array
            ):
                continue
            array = np.asarray(leaf)
            if not np.issubdtype(array.dtype, np.inexact):
                continue
            bad = ~np.isfinite(array)
            if not bad.any():
                continue
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            label = f"{name}{keystr(path)}"
            at = f" at index {index[0] if len(index) == 1 else index}" if index else ""
            raise ValueError(
                f"{where}: {label} holds a non-finite value ({array[index]}){at}; "
                f"{int(bad.sum())} of {array.size} of its values are NaN or infinite. "
                f"Every log density that reads it would be non-finite. Drop or impute "
                f"those entries (a model can leave them out with numpyro.handlers.mask), "
                f"or pass check_finite=False if the model handles them itself."
            )


def check_params_given(params: Any, where: str, allow_empty: bool = False) -> None:
    """Catch an empty ``params`` and NumPyro's ``SVIState`` before anything is traced."""
    if type(params).__name__ == "SVIState":
        raise TypeError(
            f"{where}: params is a NumPyro SVIState. ppl works on the unconstrained "
            f"parameters: pass svi.optim.get_params(svi_state.optim_state) (not "
            f"svi.get_params(svi_state), whose values are constrained), or "
            f"ppl.init_params(key, guide, *args)."
        )
    if (
        not allow_empty
        and isinstance(params, Mapping | list | tuple)
        and not jax.tree.leaves(params)
    ):
        raise ValueError(
            f"{where}: params is empty. Call ppl.init_params(key, guide, *args) to get the "
            f"initial values of the guide's numpyro.param sites (for a NumPyro autoguide "
            f"it also sets the guide up), and pass what it returns."
        )


def check_unconstrained(
    program: Callable, params: Any, args: tuple, kwargs: dict, where: str | None = None
) -> None:
    """Catch constrained values (``svi.get_params``) where unconstrained ones belong.

    Detectable where the two spaces have different shapes (``simplex``,
    ``lower_cholesky``, ``corr_cholesky``, ...): a value with the constrained shape
    of its site, not the unconstrained one, is named. With ``where``, a parameter
    missing from ``params`` is an error too (naming it and ``ppl.init_params``).
    """
    if not isinstance(params, Mapping):
        return
    with handlers.trace() as trace, handlers.seed(rng_seed=0):
        program(*args, **kwargs)
    names = [name for name, site in trace.items() if site["type"] == "param"]
    missing = [name for name in names if name not in params]
    if where is not None and missing:
        raise ValueError(
            f"{where}: params lacks {', '.join(map(repr, missing))} of "
            f"{getattr(program, '__name__', type(program).__name__)} (it has "
            f"{sorted(params)}). Pass the params that ppl.fit returned, or start from "
            f"ppl.init_params(key, guide, *args), which also sets an autoguide up."
        )
    for name in names:
        site = trace[name]
        if name not in params:
            continue
        constraint = site["kwargs"].get("constraint", constraints.real)
        if constraint is constraints.real:
            continue
        constrained_shape = np.shape(site["value"])
        try:
            unconstrained_shape = biject_to(constraint).inverse_shape(constrained_shape)
        except (NotImplementedError, ValueError, TypeError):
            continue
        given = np.shape(params[name])
        if given != unconstrained_shape and given == constrained_shape:
            raise ValueError(
                f"params[{name!r}] has shape {given}, the shape of its constrained value "
                f"({constraint}), but ppl expects the unconstrained value, of shape "
                f"{unconstrained_shape}. NumPyro's svi.get_params(svi_state) returns "
                f"constrained values: pass svi.optim.get_params(svi_state.optim_state), "
                f"or the params of ppl.init_params / ppl.fit."
            )
