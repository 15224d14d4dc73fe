"""NumPyro's private names that ppl depends on, in one place.

NumPyro has no public spelling for these; if a NumPyro release renames one,
``tests/test_numpyro_adapter.py`` fails here, naming it, instead of ppl failing
somewhere deep inside a strategy or an enumeration.

* the boolean mask of a ``MaskedDistribution`` (``_mask``);
* the variable-elimination routine of ``numpyro.contrib.funsor``
  (``infer_util._enum_log_density``), which ppl runs in its own semirings.

The constraint checks use NumPyro's public aliases (``constraints.independent`` is the
class of every independent constraint, ``constraints.real`` the real line).
"""

from __future__ import annotations

from typing import Any

import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = ["base_constraint", "funsor_elimination", "is_real", "mask_of"]


def base_constraint(constraint: Any) -> Any:
    """``constraint`` without its ``independent`` wrappers (``real_vector`` -> ``real``)."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint


def is_real(constraint: Any) -> bool:
    """Whether ``constraint`` is the whole real line (every real value satisfies it)."""
    return isinstance(constraint, type(constraints.real))


def mask_of(distribution: dist.MaskedDistribution) -> Any:
    """The mask a ``MaskedDistribution`` was built with: a Python bool or a bool array."""
    return distribution._mask


def funsor_elimination() -> tuple[Any, Any, Any]:
    """``(funsor, numpyro.contrib.funsor.enum, _enum_log_density)``, imported on demand.

    Raises:
        ImportError: with the install line, if funsor is missing.
    """
    try:
        import funsor
        from numpyro.contrib.funsor import enum
        from numpyro.contrib.funsor.infer_util import _enum_log_density
    except ImportError as error:  # pragma: no cover - funsor is a declared dependency
        raise ImportError(
            "summing discrete model sites out needs funsor: pip install 'funsor>=0.4.8'."
        ) from error
    return funsor, enum, _enum_log_density
