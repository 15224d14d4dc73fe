"""What ``ppl compare`` runs: a `Problem`, built in Python or loaded from a file."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ppl.adev import Expectation

__all__ = ["Problem", "as_problem", "from_objective", "load_problem"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """An objective with its arguments and variants: what ``ppl compare`` runs.

    Attributes:
        objective: a factory ``make(strategies) -> ppl.Expectation`` (``strategies``
            a dict site name -> strategy), or one `ppl.Expectation` (then every
            variant must itself be an Expectation).
        args: ``(params, *args)``, the objective's arguments. Gradients are taken with
            respect to the floating-point arrays of ``params``; the rest is held fixed.
        variants: default variants (label -> strategy map or Expectation), used when
            ``ppl compare`` gets no ``--variants``.
        reference: as ``compare(reference=...)``: an exact gradient (a pytree like
            ``params``), a variant label, or None.
        description: one line printed above the table.
    """

    objective: Any
    args: tuple
    variants: Mapping | None = None
    reference: Any = None
    description: str = ""


def from_objective(objective_fn: Callable, *fn_args: Any, **fn_kwargs: Any) -> Callable:
    """A factory for `compare` from an objective constructor of the library.

    ``from_objective(ppl.objectives.iwae, model, guide, num_particles=5)`` is
    ``lambda strategies: ppl.objectives.iwae(model, guide, num_particles=5,
    strategies=strategies)``: any function that takes ``strategies=`` works.
    """

    def make(strategies: Mapping) -> Expectation:
        return objective_fn(*fn_args, **fn_kwargs, strategies=strategies)

    make.__name__ = getattr(objective_fn, "__name__", "objective")
    return make


def load_problem(target: str) -> Problem:
    """Import ``"module.path:attribute"`` and return the `Problem` it names.

    The attribute is a `Problem`, or a function of no arguments returning one.

    Raises:
        ValueError: if the module cannot be imported, has no such attribute, or the
            attribute is not (and does not return) a `Problem`.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(
            f"expected MODULE:ATTRIBUTE (like my_models.coins:problem), got {target!r}."
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise ValueError(
                f"cannot import module '{module_name}' (no module named '{err.name}'); "
                f"put its folder on PYTHONPATH or run from it."
            ) from None
        raise ValueError(f"importing module '{module_name}' failed: {err}") from None
    except Exception as err:  # the user's module raised while importing
        raise ValueError(
            f"importing module '{module_name}' failed: {type(err).__name__}: {err}"
        ) from None
    found = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ValueError(f"module '{module_name}' has no attribute '{attribute}'.")
        found = getattr(found, part)
    return as_problem(found, f"{target}")


def as_problem(found: Any, where: str = "the problem") -> Problem:
    """``found`` as a `Problem`: a Problem itself, or a function of no arguments
    returning one (called here). ``ppl compare`` and the zoo's ``problem`` entries use it.

    Raises:
        ValueError: naming ``where`` and how to define a problem, if ``found`` is
            neither (an Expectation without its arguments, a function that needs
            arguments or returns something else).
    """
    hint = (
        "define problem = ppl.comparison.Problem(objective=make, args=(params, ...)) with "
        "make(strategies) -> ppl.Expectation, or a function of no arguments returning one"
    )
    if isinstance(found, Problem):
        return found
    if isinstance(found, Expectation):
        raise ValueError(
            f"{where} is an Expectation, but the command also needs its arguments: {hint}."
        )
    if callable(found):
        try:
            inspect.signature(found).bind()
        except TypeError:
            raise ValueError(f"{where} is a function that needs arguments: {hint}.") from None
        except ValueError:  # no signature (a builtin): just try it
            pass
        problem = found()
        if isinstance(problem, Problem):
            return problem
        raise ValueError(f"{where}() returned {type(problem).__name__}, not a Problem: {hint}.")
    raise ValueError(f"{where} is of type {type(found).__name__}, not a Problem: {hint}.")


def _labelled(label: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, with the variant's label put in front of trace-time errors."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as err:
        kind = ValueError if isinstance(err, ValueError) else TypeError
        raise kind(f"variant '{label}': {err}") from err
