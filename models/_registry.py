"""The zoo's registry: what every model provides (see docs/developer/adding-a-zoo-model.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

__all__ = ["ZooModel", "REGISTRY", "register"]


@dataclass(frozen=True)
class ZooModel:
    """One zoo model, as ``ppl zoo list``, ``train`` and ``eval`` see it.

    Attributes:
        name: the registry key (``ppl zoo train NAME``).
        description: one line for ``ppl zoo list``.
        citation: the paper.
        load_data: ``load_data(config, path)`` -> data; ``path`` is the user's local
            copy of a data set that cannot ship (``None``: the generated data).
        default_config: the configuration ``--set key=value`` overrides.
        train: ``train(key, data, config, out_dir)`` -> metrics dict; writes a
            checkpoint and PNG plots into ``out_dir`` (with a progress bar).
        evaluate: ``evaluate(key, data, config, out_dir)`` -> metrics dict, from the
            checkpoint in ``out_dir``.
        problem: optional ``problem()`` -> ``ppl.comparison.Problem`` for
            ``ppl compare --zoo NAME``.
    """

    name: str
    description: str
    citation: str
    load_data: Callable[[Mapping[str, Any], Path | None], Any]
    default_config: Mapping[str, Any]
    train: Callable[[jax.Array, Any, Mapping[str, Any], Path], dict]
    evaluate: Callable[[jax.Array, Any, Mapping[str, Any], Path], dict]
    problem: Callable[[], Any] | None = field(default=None)


REGISTRY: dict[str, ZooModel] = {}


def register(model: ZooModel) -> ZooModel:
    """Add ``model`` to the registry (each model package calls this on import)."""
    if model.name in REGISTRY:
        raise ValueError(f"zoo model '{model.name}' is registered twice.")
    REGISTRY[model.name] = model
    return model
