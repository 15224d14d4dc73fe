"""Variants: strategy maps, strategies written as text, variant files."""

from __future__ import annotations

import ast
import json
import os
import runpy
import tomllib
from collections.abc import Mapping
from typing import Any

import jax

from ppl.adev import STRATEGIES, Expectation, Strategy
from ppl.comparison._problem import _labelled

__all__ = ["load_variants", "parse_strategy"]


def _grammar() -> str:
    forms = [form for cls in STRATEGIES.values() for form in (cls.text_forms or (cls.name,))]
    return ", ".join(forms[:-1]) + " or " + forms[-1]


def parse_strategy(text: str) -> Strategy:
    """Parse a strategy written as text, without evaluating any code.

    The grammar: each registered strategy's name (``reparam``, ``reinforce``, ``enum``,
    ``mvd``, ``detached``), or a call of it with numbers, ``true``/``false`` and
    strategies as arguments (``enum(max_values=N)``, ``baseline(STRATEGY, VALUE)``
    optionally with ``learn=true``, ``leave_one_out(N)``), nested as in
    ``baseline(reinforce, -2.5)``. `ppl.Strategy.to_text` writes this form.

    Raises:
        ValueError: naming the text and the grammar, if it does not parse.

    Examples:
        >>> import ppl.comparison
        >>> ppl.comparison.parse_strategy("leave_one_out(4)")
        LeaveOneOut(num_particles=4)
    """
    if not isinstance(text, str):
        raise TypeError(f"a strategy name must be a string, got {type(text).__name__}.")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
        if not isinstance(tree, ast.Name | ast.Call):
            raise ValueError(f"unexpected {ast.unparse(tree)!r}")
        return _argument(tree)
    except (SyntaxError, ValueError, TypeError) as err:
        detail = f" ({err})" if isinstance(err, ValueError) and str(err) else ""
        raise ValueError(
            f"cannot parse the strategy {text!r}{detail}; expected one of {_grammar()}."
        ) from None


def _argument(node: ast.AST) -> Any:
    """A number, a boolean or a strategy, read from ``node``."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _argument(node.operand)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {ast.unparse(node)!r}")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | bool):
        return node.value
    if isinstance(node, ast.Name) and node.id.lower() in ("true", "false"):
        return node.id.lower() == "true"
    if isinstance(node, ast.Name):
        return _registered(node.id).from_text()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        cls = _registered(node.func.id)
        kwargs = {k.arg: k.value for k in node.keywords}
        if None in kwargs:
            raise ValueError("**kwargs are not allowed")
        args = [_argument(arg) for arg in node.args]
        kwargs = {name: _argument(value) for name, value in kwargs.items()}
        try:
            return cls.from_text(*args, **kwargs)
        except TypeError:
            raise ValueError(f"bad call {ast.unparse(node)!r}") from None
    raise ValueError(f"unexpected {ast.unparse(node)!r}")


def _registered(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}")
    return STRATEGIES[name]


def _strategy_map(label: str, mapping: Mapping) -> dict:
    out = {}
    for site, strategy in mapping.items():
        if isinstance(strategy, str):
            try:
                strategy = parse_strategy(strategy)
            except ValueError as err:
                raise ValueError(f"variant '{label}', site '{site}': {err}") from None
        if not isinstance(strategy, Strategy):
            raise TypeError(
                f"variant '{label}', site '{site}': a strategy must be a ppl.Strategy or "
                f"its name as text, got {type(strategy).__name__}."
            )
        out[str(site)] = strategy
    return out


class _TrackedStrategies(dict):
    """A strategy map that records which site names the objective looks up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.looked_up: set = set()

    def __getitem__(self, name: str) -> Strategy:
        self.looked_up.add(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self.looked_up.add(name)
        return super().get(name, default)

    def __contains__(self, name: object) -> bool:
        self.looked_up.add(name)
        return super().__contains__(name)


def _check_variant_sites(expectations: Mapping, trackers: Mapping, key: Any, args: tuple) -> None:
    """Trace every variant once, up front: a strategy map naming a site that its
    objective never looks up (a typo, a site of another program) is an error naming it.

    Only maps that the objective consulted by name are judged (an objective that
    copies the map, or uses one strategy for every site, is left alone); errors at
    trace time get the variant's label.
    """
    for label, expectation in expectations.items():
        if not isinstance(expectation, Expectation):
            continue
        _labelled(label, jax.eval_shape, lambda k, e=expectation: e(k, *args), key)
        strategies = trackers.get(label)
        if not isinstance(strategies, _TrackedStrategies) or not strategies.looked_up:
            continue
        unused = sorted(set(strategies) - strategies.looked_up)
        if unused:
            looked = sorted(strategies.looked_up & set(strategies))
            raise ValueError(
                f"variant '{label}': strategies name {unused}, which the objective never "
                f"looks up: no sample site of its programs has "
                f"{'that name' if len(unused) == 1 else 'those names'}"
                + (f" (the sites it did look up: {looked})" if looked else "")
                + ". Check the spelling, or leave them out."
            )


def _resolve_variants(
    objective: Any, variants: Mapping, trackers: dict | None = None
) -> dict[str, Expectation]:
    """label -> Expectation, building strategy maps with the factory (each map, which
    records the sites looked up, goes in ``trackers[label]``)."""
    if not isinstance(variants, Mapping):
        raise TypeError(
            f"variants must be a mapping from labels to strategy maps or Expectations, "
            f"got {type(variants).__name__}."
        )
    if not variants:
        raise ValueError("variants is empty: give at least one label -> strategy map.")
    factory = None
    if objective is not None and not isinstance(objective, Expectation):
        if not callable(objective):
            raise TypeError(
                f"objective must be a ppl.Expectation or a factory make(strategies) -> "
                f"ppl.Expectation, got {type(objective).__name__}."
            )
        factory = objective
    out = {}
    for label, variant in variants.items():
        label = str(label)
        if isinstance(variant, Expectation):
            out[label] = variant
            continue
        if callable(variant) and not isinstance(variant, Mapping):
            # an estimator (key, params, *args) -> value built from Expectations, such as
            # a minibatch mean from ppl.parallel.batch_mean: measured the same way
            out[label] = variant
            continue
        if not isinstance(variant, Mapping):
            raise TypeError(
                f"variant '{label}' must be a strategy map (site name -> strategy), a "
                f"ppl.Expectation or an estimator function (key, params, *args) -> value, "
                f"got {type(variant).__name__}."
            )
        if factory is None:
            raise TypeError(
                f"variant '{label}' is a strategy map, but the objective is a fixed "
                f"Expectation, whose strategies cannot change. Pass a factory instead, "
                f"for example lambda strategies: ppl.objectives.elbo(model, guide, "
                f"strategies=strategies)."
            )
        strategies = _TrackedStrategies(_strategy_map(label, variant))
        built = _labelled(label, factory, strategies)
        if not isinstance(built, Expectation):
            raise TypeError(
                f"variant '{label}': the objective factory returned "
                f"{type(built).__name__}, not a ppl.Expectation (decorate the objective "
                f"with @ppl.expectation, or use an objective from ppl.objectives)."
            )
        if trackers is not None:
            trackers[label] = strategies
        out[label] = built
    return out


def load_variants(path: str | os.PathLike) -> dict:
    """Read variants from a JSON, TOML or Python file.

    JSON and TOML map each label to a table ``{site: strategy name}`` with names as in
    `parse_strategy`, for example ``{"mvd": {"c": "mvd"}, "baseline": {"c":
    "baseline(reinforce, -3.0)"}}``. A Python file defines ``VARIANTS``, a dict of the
    same shape whose strategies may also be `ppl.Strategy` objects (or whose values
    may be whole Expectations); it is executed.

    Raises:
        ValueError: for an unknown suffix, a file that does not parse, or a value of the
            wrong shape; OSError if it cannot be read.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".json":
        with open(path, encoding="utf-8") as file:
            try:
                variants = json.load(file)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from None
    elif suffix == ".toml":
        with open(path, "rb") as file:
            try:
                variants = tomllib.load(file)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"{path} is not valid TOML: {err}") from None
    elif suffix == ".py":
        if not os.path.exists(path):
            raise FileNotFoundError(f"variants file {path} does not exist.")
        try:
            namespace = runpy.run_path(path)
        except Exception as err:  # the user's file raised while running
            raise ValueError(f"running {path} failed: {type(err).__name__}: {err}") from None
        if "VARIANTS" not in namespace:
            raise ValueError(f"{path} defines no VARIANTS (label -> {{site: strategy}}).")
        variants = namespace["VARIANTS"]
    else:
        raise ValueError(f"{path}: variants files are .json, .toml or .py, not {suffix!r}.")
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError(f"{path} must map labels to {{site: strategy}} tables (none found).")
    for label, variant in variants.items():
        if not isinstance(variant, Mapping | Expectation):
            raise ValueError(
                f"{path}: variant '{label}' must be a table {{site: strategy}}, got "
                f"{type(variant).__name__}."
            )
        if isinstance(variant, Mapping):
            _strategy_map(str(label), variant)  # parse now: errors name file and site
    return dict(variants)
