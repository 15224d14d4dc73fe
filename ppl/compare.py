"""``ppl.compare``: compare gradient estimators of one objective by variance, bias and cost.

A strategy is fixed when an objective is built, so a comparison starts from a
**factory**, a function ``make(strategies) -> ppl.Expectation`` of a strategy map (site
name -> strategy), and a set of **variants**, each a strategy map (or a ready-made
`ppl.Expectation`)::

    import ppl.compare

    def make(strategies):
        @ppl.expectation
        def elbo(params, data):
            trace = ppl.sim(guide, data, params=params, strategies=strategies)
            return ppl.density(model, trace.choices, data, params=params) - trace.log_density

        return elbo

    variants = {"enum": {"c": ppl.enum}, "reinforce": {"c": "reinforce"}, "mvd": {"c": ppl.mvd}}
    result = ppl.compare(make, variants, jax.random.key(0), params, data)
    print(result)                      # the table
    result.save("compare-out")         # JSON, text table, PNG plots

For each variant, ``num_samples`` independent gradient estimates (one per key, vmapped
in chunks) give the mean and standard error of the value, the mean gradient, the total
gradient variance (the trace of the covariance), the signal-to-noise ratio, the bias
against a reference gradient with its standard error, the median time per gradient,
the work-normalized variance and the compiled memory footprint. ``ppl compare`` runs
the same from the command line on a `Problem`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import math
import os
import runpy
import statistics
import sys
import textwrap
import time
import tomllib
import types
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import keystr, tree_flatten_with_path
from tqdm.auto import tqdm

from ppl.adev import (
    Enum,
    Expectation,
    LocalStrategy,
    Strategy,
    baseline,
    detached,
    enum,
    leave_one_out,
    mvd,
    reinforce,
    reparam,
)
from ppl.vi import fit
from ppl.vi._fit import running_mean as _running_mean

__all__ = [
    "compare",
    "Comparison",
    "VariantResult",
    "TrainingRun",
    "Problem",
    "from_objective",
    "parse_strategy",
    "load_variants",
    "load_problem",
]

_FORMAT = "ppl.compare/1"
_TAIL = 2.0 * (1.0 - statistics.NormalDist().cdf(4.0))  # P(|Z| > 4), about 6.3e-5


# ------------------------------------------------------------------------ inputs


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


_NAMED = {
    "reparam": reparam,
    "reinforce": reinforce,
    "enum": enum,
    "mvd": mvd,
    "detached": detached,
}
_GRAMMAR = (
    "reparam, reinforce, enum, enum(max_values=N), mvd, detached, "
    "baseline(STRATEGY, VALUE), baseline(STRATEGY, VALUE, learn=true) or leave_one_out(N)"
)


def parse_strategy(text: str) -> Strategy:
    """Parse a strategy written as text, without evaluating any code.

    The grammar: ``reparam``, ``reinforce``, ``enum``, ``enum(max_values=N)``, ``mvd``,
    ``detached``, ``baseline(STRATEGY, VALUE)`` (optionally ``learn=true``) and
    ``leave_one_out(N)``, nested as in ``baseline(reinforce, -2.5)``.

    Raises:
        ValueError: naming the text and the grammar, if it does not parse.

    Examples:
        >>> import ppl.compare
        >>> ppl.compare.parse_strategy("leave_one_out(4)")
        LeaveOneOut(num_particles=4)
    """
    if not isinstance(text, str):
        raise TypeError(f"a strategy name must be a string, got {type(text).__name__}.")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
        return _strategy_from_ast(tree)
    except (SyntaxError, ValueError, TypeError) as err:
        detail = f" ({err})" if isinstance(err, ValueError) and str(err) else ""
        raise ValueError(
            f"cannot parse the strategy {text!r}{detail}; expected one of {_GRAMMAR}."
        ) from None


def _number(node: ast.AST) -> float:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _number(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    raise ValueError(f"expected a number, got {ast.unparse(node)!r}")


def _flag(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id.lower() in ("true", "false"):
        return node.id.lower() == "true"
    raise ValueError(f"expected true or false, got {ast.unparse(node)!r}")


def _count(node: ast.AST, what: str) -> int:
    value = _number(node)
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {ast.unparse(node)!r}")
    return value


def _strategy_from_ast(node: ast.AST) -> Strategy:
    if isinstance(node, ast.Name):
        if node.id in _NAMED:
            return _NAMED[node.id]
        raise ValueError(f"unknown strategy {node.id!r}")
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"unexpected {ast.unparse(node)!r}")
    name, args = node.func.id, node.args
    kwargs = {k.arg: k.value for k in node.keywords}
    if None in kwargs:
        raise ValueError("**kwargs are not allowed")
    if name in _NAMED and name != "enum" and not args and not kwargs:
        return _NAMED[name]
    if name == "enum" and not args and set(kwargs) <= {"max_values"}:
        if "max_values" in kwargs:
            return Enum(max_values=_count(kwargs["max_values"], "max_values"))
        return enum
    if name == "leave_one_out" and len(args) == 1 and not kwargs:
        return leave_one_out(_count(args[0], "leave_one_out's number of particles"))
    if name == "baseline" and len(args) == 2 and set(kwargs) <= {"learn"}:
        inner = _strategy_from_ast(args[0])
        if not isinstance(inner, LocalStrategy):
            raise ValueError(
                f"baseline wraps a score-function strategy such as reinforce, not "
                f"{ast.unparse(args[0])}"
            )
        learn = _flag(kwargs["learn"]) if "learn" in kwargs else False
        return baseline(inner, float(_number(args[1])), learn=learn)
    raise ValueError(f"bad call {ast.unparse(node)!r}")


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


def _resolve_variants(objective: Any, variants: Mapping) -> dict[str, Expectation]:
    """label -> Expectation, building strategy maps with the factory."""
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
        if not isinstance(variant, Mapping):
            raise TypeError(
                f"variant '{label}' must be a strategy map (site name -> strategy) or a "
                f"ppl.Expectation, got {type(variant).__name__}."
            )
        if factory is None:
            raise TypeError(
                f"variant '{label}' is a strategy map, but the objective is a fixed "
                f"Expectation, whose strategies cannot change. Pass a factory instead, "
                f"for example lambda strategies: ppl.objectives.elbo(model, guide, "
                f"strategies=strategies)."
            )
        strategies = _strategy_map(label, variant)
        built = _labelled(label, factory, strategies)
        if not isinstance(built, Expectation):
            raise TypeError(
                f"variant '{label}': the objective factory returned "
                f"{type(built).__name__}, not a ppl.Expectation (decorate the objective "
                f"with @ppl.expectation, or use an objective from ppl.objectives)."
            )
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
    return _as_problem(found, f"{target}")


def _as_problem(found: Any, where: str) -> Problem:
    hint = (
        "define problem = ppl.compare.Problem(objective=make, args=(params, ...)) with "
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


# --------------------------------------------------------------------- measuring


@dataclasses.dataclass
class TrainingRun:
    """One variant's training run (``compare(train=steps)``).

    Attributes:
        history: the objective estimate at every step (``FitResult.history``).
        seconds: wall-clock seconds from the start of training to the end of each
            step: the measured time of the run (compilation excluded) spread evenly
            over its steps, since `ppl.fit` runs steps in compiled chunks.
    """

    history: np.ndarray
    seconds: np.ndarray

    @property
    def seconds_per_step(self) -> float:
        return float(self.seconds[-1] / self.seconds.size) if self.seconds.size else math.nan


@dataclasses.dataclass
class VariantResult:
    """The measurements of one variant (see `compare` for the definitions).

    Gradients are with respect to the floating-point leaves of ``params``; leaves are
    named by their path, as in ``"params['loc']"``.
    """

    label: str
    num_samples: int
    value_mean: float
    value_se: float
    mean_gradient: dict[str, np.ndarray]
    gradient_norm: float
    total_variance: float
    total_variance_se: float
    parameter_variances: dict[str, float]
    snr: float
    bias_norm: float
    bias_se: float
    bias_z: float
    biased: bool
    time_per_gradient: float
    time_quartiles: tuple[float, float]
    work_normalized_variance: float
    peak_memory_bytes: int | None
    training: TrainingRun | None = None


def _typed_key(key: Any) -> jax.Array:
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
        return key
    if key.shape == (2,) and key.dtype == jnp.uint32:
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"compare: key must be one PRNG key (jax.random.key(0)), got an array of shape "
        f"{key.shape} and dtype {key.dtype}."
    )


class _Setup:
    """The split of ``(params, *args)`` into differentiated and fixed parts."""

    def __init__(self, args: tuple):
        if not args:
            raise TypeError("compare needs the objective's arguments: (params, *args).")
        params, rest = args[0], args[1:]
        self.trainable, self.frozen = eqx.partition(params, eqx.is_inexact_array)
        self.dynamic_rest, self.static_rest = eqx.partition(rest, eqx.is_array)
        leaves = tree_flatten_with_path(self.trainable)[0]
        if not leaves:
            raise ValueError(
                "compare: params (the first argument) has no floating-point arrays to "
                "differentiate. Write values as arrays, e.g. {'loc': jnp.asarray(0.0)}."
            )
        self.paths = ["params" + keystr(path) for path, _ in leaves]
        self.shapes = [np.shape(leaf) for _, leaf in leaves]
        self.size = int(sum(math.prod(s) for s in self.shapes))

    def single(self, expectation: Expectation) -> Callable:
        """``(key, trainable, dynamic_rest) -> (value, grads)`` for one key."""
        frozen, static_rest = self.frozen, self.static_rest

        def one(key, trainable, dynamic_rest):
            rest = eqx.combine(dynamic_rest, static_rest)

            def value(trainable):
                return expectation(key, eqx.combine(trainable, frozen), *rest)

            value, grads = jax.value_and_grad(value)(trainable)
            return value, jax.tree.leaves(grads)

        return one


class _Moments:
    """Running count, mean and sum of squared deviations (Chan et al. 1979), float64."""

    def __init__(self):
        self.count = 0
        self.mean: list[np.ndarray] = []
        self.m2: list[np.ndarray] = []
        self.chunk_variances: list[float] = []  # total variance within each full chunk

    def add(self, blocks: list[np.ndarray], full: bool) -> None:
        n = blocks[0].shape[0]
        means = [b.mean(axis=0) for b in blocks]
        m2s = [((b - m) ** 2).sum(axis=0) for b, m in zip(blocks, means)]
        if full and n > 1:
            self.chunk_variances.append(float(sum(m.sum() for m in m2s[1:]) / (n - 1)))
        if self.count == 0:
            self.count, self.mean, self.m2 = n, means, m2s
            return
        total = self.count + n
        for i, (m, m2) in enumerate(zip(means, m2s)):
            delta = m - self.mean[i]
            self.mean[i] = self.mean[i] + delta * (n / total)
            self.m2[i] = self.m2[i] + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def variance(self, i: int) -> np.ndarray:
        return self.m2[i] / (self.count - 1)


def _draw_moments(batched, keys, setup, chunk: int) -> _Moments:
    """Value and gradient moments over ``keys``, ``chunk`` keys per compiled call."""
    moments = _Moments()
    n = keys.shape[0]
    for start in range(0, n, chunk):
        part = keys[start : start + chunk]
        used = part.shape[0]
        if used < chunk:  # pad to the compiled shape; the padding is dropped below
            part = jnp.concatenate([part, keys[: chunk - used]])
        value, grads = batched(part, setup.trainable, setup.dynamic_rest)
        blocks = [np.asarray(value, np.float64)[:used, None]]
        blocks += [np.asarray(g, np.float64)[:used].reshape(used, -1) for g in grads]
        moments.add(blocks, full=used == chunk)
    return moments


def _memory(compiled) -> int | None:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if stats is None:
        return None
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return int(total) if total > 0 else None


def _time(compiled, keys, setup) -> tuple[float, tuple[float, float]]:
    for key in keys[:3]:  # warm-up
        jax.block_until_ready(compiled(key, setup.trainable, setup.dynamic_rest))
    times = []
    for key in keys[3:]:
        start = time.perf_counter()
        jax.block_until_ready(compiled(key, setup.trainable, setup.dynamic_rest))
        times.append(time.perf_counter() - start)
    q25, q50, q75 = np.percentile(times, [25.0, 50.0, 75.0])
    return float(q50), (float(q25), float(q75))


class _Measured:
    """What `_measure` finds for one variant before the reference is known."""

    def __init__(self, moments, batched, chunk, time_median, quartiles, memory):
        self.moments = moments
        self.batched = batched
        self.chunk = chunk
        self.time = time_median
        self.quartiles = quartiles
        self.memory = memory

    def total_variance(self) -> float:
        return float(sum(self.moments.variance(i).sum() for i in range(1, len(self.moments.m2))))

    def mean_gradient(self) -> np.ndarray:
        return np.concatenate(self.moments.mean[1:])

    def variances(self) -> np.ndarray:
        return np.concatenate([self.moments.variance(i) for i in range(1, len(self.moments.m2))])


def _measure(expectation, setup, keys, timing_keys, max_chunk_bytes) -> _Measured:
    one = setup.single(expectation)
    compiled = jax.jit(one).lower(timing_keys[0], setup.trainable, setup.dynamic_rest).compile()
    memory = _memory(compiled)
    footprint = max(memory or 0, 8 * (setup.size + 1))
    n = keys.shape[0]
    chunk = max(1, min(math.ceil(n / 20), max_chunk_bytes // footprint))
    batched = jax.jit(jax.vmap(one, in_axes=(0, None, None)))
    moments = _draw_moments(batched, keys, setup, chunk)
    time_median, quartiles = _time(compiled, timing_keys, setup)
    return _Measured(moments, batched, chunk, time_median, quartiles, memory)


def _zero_variance(measured: _Measured) -> bool:
    scale = float(np.sum(measured.mean_gradient() ** 2))
    return measured.total_variance() <= 1e-12 * max(scale, 1e-30)


def _split_by_leaf(flat: np.ndarray, setup: _Setup) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for path, shape in zip(setup.paths, setup.shapes):
        size = math.prod(shape)
        out[path] = flat[start : start + size].reshape(shape)
        start += size
    return out


def _flat_reference(reference: Any, setup: _Setup) -> np.ndarray:
    """A user-given exact gradient (a pytree like params) as one flat float64 vector."""

    def by_path(tree):
        return {"params" + keystr(p): leaf for p, leaf in tree_flatten_with_path(tree)[0]}

    found = by_path(reference)
    if not set(setup.paths) <= set(found) and isinstance(reference, tuple | list) and reference:
        found = by_path(reference[0])  # the tuple that grad_estimate returns
    missing = [p for p in setup.paths if p not in found]
    if missing:
        raise ValueError(
            f"reference must be a gradient shaped like params (leaves {setup.paths}), but "
            f"it has no {missing}."
        )
    parts = []
    for path, shape in zip(setup.paths, setup.shapes):
        leaf = np.asarray(found[path], np.float64)
        if leaf.shape != shape:
            raise ValueError(f"reference {path} has shape {leaf.shape}, params has {shape}.")
        parts.append(leaf.reshape(-1))
    return np.concatenate(parts)


def compare(
    objective: Callable[[Mapping], Expectation] | Expectation | None,
    variants: Mapping[str, Mapping | Expectation],
    key: jax.Array,
    *args: Any,
    num_samples: int = 1000,
    reference: Any = None,
    reference_samples: int | None = None,
    train: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    progress: bool = True,
    timing_calls: int = 30,
    max_chunk_bytes: int = 2**28,
) -> Comparison:
    """Compare gradient estimators of one objective: variance, bias and cost.

    Each variant gives an Expectation of ``(params, *args)``. With ``num_samples``
    independent keys, its gradient estimates ``g_1..g_n`` (vectors over the ``P``
    floating-point coordinates of ``params``; other arguments are held fixed) and
    value estimates ``v_1..v_n`` give:

    * ``value_mean ± value_se``: the mean of ``v_i`` and ``std(v) / sqrt(n)``.
    * ``mean_gradient`` ``ḡ`` and ``gradient_norm`` ``‖ḡ‖₂``.
    * ``total_variance`` ``V = Σ_j var_j``, the trace of the covariance of one
      estimate (``var_j`` the unbiased sample variance of coordinate ``j``);
      ``parameter_variances`` sums ``var_j`` over each leaf; ``total_variance_se`` is
      its standard error by batch means (the spread of ``V`` over the ~20 chunks).
    * ``snr = ‖ḡ‖₂ / sqrt(V)``: signal-to-noise ratio of one estimate (``inf`` when
      ``V = 0``).
    * bias against a reference ``r``: ``bias_norm = ‖ḡ - r‖₂``; with
      ``s_j² = var_j / n + ref_var_j / N`` (the reference's own variance over its
      ``N`` samples; 0 when exact) plus a float32 round-off allowance
      ``(1e-5 (|ḡ_j| + |r_j|) + 1e-6 max|r|)²``, ``bias_se = sqrt(Σ_j s_j²)`` and
      ``bias_z = max_j |ḡ_j - r_j| / s_j``. ``biased`` is ``bias_z`` above the
      threshold: 4 standard errors for one coordinate, Bonferroni-adjusted so the
      chance of a false flag stays ``P(|Z| > 4) ≈ 6e-5`` for ``P`` coordinates.
    * ``time_per_gradient``: the median over ``timing_calls`` calls of the compiled
      one-key ``value_and_grad`` (after warm-up, ``block_until_ready``), in seconds;
      ``work_normalized_variance = V × time_per_gradient`` (lower is better: the
      variance per unit of compute).
    * ``peak_memory_bytes``: argument + output + temporary - aliased bytes of that
      compiled call from ``memory_analysis()``, or None where the backend does not say.

    The reference gradient ``r``:

    * ``reference=`` a pytree like ``params`` (or the tuple ``grad_estimate``
      returns): exact, given by the user.
    * ``reference="label"`` or None (meaning the first variant): if that variant's
      gradient has zero variance (every site enumerated, say), its mean is exact;
      otherwise ``r`` is a high-sample estimate, its mean over ``reference_samples``
      fresh keys (default ``10 × num_samples``), and the table says so.

    Args:
        objective: a factory ``make(strategies) -> ppl.Expectation`` (``strategies``
            a dict site name -> strategy; for example a function that builds the ELBO
            with ``ppl.sim(guide, ..., strategies=strategies)`` and ``ppl.density``,
            or `from_objective` for an objective of ``ppl.objectives``), or one
            Expectation when every variant is an Expectation (then ``objective`` may
            be None).
        variants: label -> strategy map (site name -> `ppl.Strategy` or its name as
            in `parse_strategy`, given to the factory) or label -> Expectation (used
            as is).
        key: a PRNG key; split into the sample, reference, timing and training keys.
            Every variant sees the same keys.
        *args: ``(params, *args)`` for the objective.
        num_samples: gradient estimates per variant (at least 2).
        reference: an exact gradient, a variant label, or None (see above).
        reference_samples: samples of a high-sample reference.
        train: if set, also run ``ppl.fit`` for this many steps with each variant
            from ``params`` (the same key), maximizing the objective.
        optimizer: for ``train`` (default ``optax.adam(1e-2)``).
        progress: show a progress bar (tqdm) over the variants.
        timing_calls: timed calls per variant.
        max_chunk_bytes: bound on the memory of one vmapped chunk of estimates.

    Returns:
        A `Comparison`: ``print`` it for the table; ``to_dataframe``, ``to_json``,
        ``save``, ``plot`` and ``plot_training``.

    Raises:
        ValueError: if ``variants`` is empty, a strategy map names a site the program
            does not have (prefixed by the variant's label), a strategy cannot apply or
            does not parse, ``reference`` is an unknown label or has the wrong shape.
        TypeError: if ``objective`` is neither an Expectation nor a factory, or a
            factory returns something else.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, ppl
        >>> import ppl.compare
        >>> def make(strategies):
        ...     @ppl.expectation
        ...     def objective(params):
        ...         b = ppl.sample(dist.Bernoulli(logits=params["logit"]), strategies["b"])
        ...         return (b - 0.3) ** 2
        ...     return objective
        >>> result = ppl.compare(make, {"enum": {"b": ppl.enum}, "mvd": {"b": ppl.mvd}},
        ...                      jax.random.key(0), {"logit": jnp.asarray(0.5)},
        ...                      num_samples=200, progress=False)
        >>> result.reference_kind, result.results["enum"].total_variance
        ('exact', 0.0)
        >>> bool(result.results["mvd"].biased)
        False
    """
    expectations = _resolve_variants(objective, variants)
    for name, value in (("num_samples", num_samples), ("timing_calls", timing_calls)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"compare: {name} must be an integer >= 2, got {value!r}.")
    reference_samples = 10 * num_samples if reference_samples is None else reference_samples
    if not isinstance(reference_samples, int) or reference_samples < 2:
        raise ValueError(f"compare: reference_samples must be >= 2, got {reference_samples!r}.")
    if train is not None and (isinstance(train, bool) or not isinstance(train, int) or train < 1):
        raise ValueError(f"compare: train must be a positive number of steps, got {train!r}.")
    labels = list(expectations)
    reference_label = None
    if reference is None or isinstance(reference, str):
        reference_label = labels[0] if reference is None else reference
        if reference_label not in expectations:
            raise ValueError(
                f"compare: reference={reference_label!r} is not a variant (variants: {labels})."
            )
    setup = _Setup(args)
    given = None if reference_label is not None else _flat_reference(reference, setup)
    key_samples, key_reference, key_timing, key_train = jax.random.split(_typed_key(key), 4)
    keys = jax.random.split(key_samples, num_samples)
    timing_keys = jax.random.split(key_timing, timing_calls + 3)

    measured = {}
    with tqdm(labels, desc="compare", unit="variant", disable=not progress) as bar:
        for label in bar:
            bar.set_postfix_str(label)
            measured[label] = _labelled(
                label, _measure, expectations[label], setup, keys, timing_keys, max_chunk_bytes
            )

    # The reference gradient and the variance of its estimate (per coordinate).
    if given is not None:
        kind, ref, ref_var, ref_n = "given", given, np.zeros_like(given), None
    elif _zero_variance(measured[reference_label]):
        ref = measured[reference_label].mean_gradient()
        kind, ref_var, ref_n = "exact", np.zeros_like(ref), None
    else:
        source = measured[reference_label]
        ref_keys = jax.random.split(key_reference, reference_samples)
        if progress:
            print(
                f"compare: reference from {reference_samples} samples of '{reference_label}'",
                file=sys.stderr,
            )
        moments = _draw_moments(source.batched, ref_keys, setup, source.chunk)
        ref = np.concatenate(moments.mean[1:])
        ref_var = np.concatenate([moments.variance(i) for i in range(1, len(moments.m2))])
        kind, ref_n = "high-sample", reference_samples
        ref_var = ref_var / reference_samples
    threshold = statistics.NormalDist().inv_cdf(1.0 - _TAIL / (2.0 * setup.size))

    results = {}
    for label in labels:
        results[label] = _summarize(label, measured[label], setup, ref, ref_var, threshold)

    if train is not None:
        optimizer = optax.adam(1e-2) if optimizer is None else optimizer
        with tqdm(labels, desc="train", unit="variant", disable=not progress) as bar:
            for label in bar:
                bar.set_postfix_str(label)
                results[label].training = _labelled(
                    label, _train, expectations[label], key_train, args, optimizer, train
                )
    return Comparison(
        results=results,
        num_samples=num_samples,
        num_coordinates=setup.size,
        reference_kind=kind,
        reference_label=reference_label if given is None else None,
        reference_samples=ref_n,
        reference_gradient=_split_by_leaf(ref, setup),
        bias_threshold=float(threshold),
    )


def _labelled(label: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, with the variant's label put in front of trace-time errors."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as err:
        kind = ValueError if isinstance(err, ValueError) else TypeError
        raise kind(f"variant '{label}': {err}") from err


def _summarize(label, measured, setup, ref, ref_var, threshold) -> VariantResult:
    moments = measured.moments
    n = moments.count
    mean = measured.mean_gradient()
    variances = measured.variances()
    total = float(variances.sum())
    chunk_v = moments.chunk_variances
    total_se = (
        float(np.std(chunk_v, ddof=1) / math.sqrt(len(chunk_v))) if len(chunk_v) > 1 else math.nan
    )
    norm = float(np.linalg.norm(mean))
    bias = mean - ref
    allowance = 1e-5 * (np.abs(mean) + np.abs(ref)) + 1e-6 * float(np.max(np.abs(ref), initial=0.0))
    se = np.sqrt(variances / n + ref_var + allowance**2 + 1e-30)
    per_leaf, start = {}, 0
    for path, shape in zip(setup.paths, setup.shapes):
        size = math.prod(shape)
        per_leaf[path] = float(variances[start : start + size].sum())
        start += size
    z = float(np.max(np.abs(bias) / se))
    value_var = float(moments.variance(0)[0])
    return VariantResult(
        label=label,
        num_samples=n,
        value_mean=float(moments.mean[0][0]),
        value_se=math.sqrt(value_var / n),
        mean_gradient=_split_by_leaf(mean, setup),
        gradient_norm=norm,
        total_variance=total,
        total_variance_se=total_se,
        parameter_variances=per_leaf,
        snr=norm / math.sqrt(total) if total > 0 else math.inf,
        bias_norm=float(np.linalg.norm(bias)),
        bias_se=float(np.sqrt(np.sum(se**2))),
        bias_z=z,
        biased=bool(z > threshold),
        time_per_gradient=measured.time,
        time_quartiles=measured.quartiles,
        work_normalized_variance=total * measured.time,
        peak_memory_bytes=measured.memory,
    )


def _train(expectation, key, args, optimizer, num_steps) -> TrainingRun:
    params, rest = args[0], args[1:]
    options = dict(optimizer=optimizer, progress=False, chunk_size=min(100, num_steps))
    fit(key, expectation, params, *rest, num_steps=1, **options)  # compile
    start = time.perf_counter()
    result = fit(key, expectation, params, *rest, num_steps=num_steps, **options)
    jax.block_until_ready(result.params)
    elapsed = time.perf_counter() - start
    steps = np.arange(1, result.history.size + 1)
    return TrainingRun(np.asarray(result.history, np.float64), steps * (elapsed / steps.size))


# ----------------------------------------------------------------------- results


@dataclasses.dataclass
class Comparison:
    """The result of `compare`: one `VariantResult` per variant, in order.

    ``print(comparison)`` shows the table; `to_dataframe`, `to_json` / `from_json`,
    `save` / `load`, `plot` and `plot_training` export it.

    Attributes:
        results: label -> `VariantResult`.
        num_samples: gradient estimates per variant.
        num_coordinates: ``P``, the number of differentiated coordinates of params.
        reference_kind: ``"given"`` (passed as ``reference=``), ``"exact"`` (a
            zero-variance variant) or ``"high-sample"``.
        reference_label: the variant the reference came from (None when given).
        reference_samples: samples of a high-sample reference (else None).
        reference_gradient: leaf path -> the reference gradient.
        bias_threshold: the z-score above which a variant is flagged biased.
    """

    results: dict[str, VariantResult]
    num_samples: int
    num_coordinates: int
    reference_kind: str
    reference_label: str | None
    reference_samples: int | None
    reference_gradient: dict[str, np.ndarray]
    bias_threshold: float

    @property
    def reference(self) -> str:
        """A sentence saying what the bias is measured against."""
        if self.reference_kind == "given":
            return "reference: exact gradient given by the user"
        if self.reference_kind == "exact":
            return f"reference: exact, the mean of '{self.reference_label}' (zero variance)"
        return (
            f"reference: high-sample estimate from '{self.reference_label}', "
            f"{self.reference_samples} samples"
        )

    def __str__(self) -> str:
        head = [
            "variant",
            "value ± s.e.",
            "grad variance",
            "SNR",
            "bias ± s.e.",
            "z",
            "",
            "time/grad",
            "var × time",
            "memory",
        ]
        rows = [head]
        for r in self.results.values():
            rows.append(
                [
                    r.label,
                    f"{r.value_mean:.4g} ± {r.value_se:.2g}",
                    f"{r.total_variance:.4g}",
                    f"{r.snr:.3g}",
                    f"{r.bias_norm:.3g} ± {r.bias_se:.2g}",
                    f"{r.bias_z:.1f}",
                    "BIASED" if r.biased else "",
                    _seconds(r.time_per_gradient),
                    f"{r.work_normalized_variance:.3g}",
                    _bytes(r.peak_memory_bytes),
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [
            f"Gradient estimators: {self.num_samples} samples per variant, "
            f"{self.num_coordinates} coordinates of params",
            self.reference,
        ]
        for i, row in enumerate(rows):
            cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
            lines.append("  ".join(cells).rstrip())
            if i == 0:
                lines.append("-" * len(lines[-1]))
        notes = (
            f"grad variance: trace of the covariance of one estimate; SNR = ‖mean‖ / "
            f"sqrt(variance); bias: ‖mean - reference‖ ± combined s.e.; z: largest "
            f"|bias_j| / s.e._j (BIASED above {self.bias_threshold:.2f}); var × time: "
            f"work-normalized variance (lower is better); memory: compiled footprint "
            f"of one gradient" + ("" if self._has_memory() else " (not reported by this backend)")
        )
        lines.extend(textwrap.wrap(notes, width=max(len(lines[2]), 88)))
        return "\n".join(lines)

    def _has_memory(self) -> bool:
        return any(r.peak_memory_bytes is not None for r in self.results.values())

    def to_dataframe(self, per_parameter: bool = False):
        """A pandas DataFrame: one row per variant (index ``variant``).

        Columns: ``value_mean, value_se, gradient_norm, total_variance,
        total_variance_se, snr, bias_norm, bias_se, bias_z, biased,
        time_per_gradient, work_normalized_variance, peak_memory_bytes``. With
        ``per_parameter=True``: one row per (variant, parameter leaf) with its summed
        ``variance`` and the norm of its mean gradient and bias.
        """
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("Comparison.to_dataframe needs pandas: pip install pandas") from err
        if per_parameter:
            records = []
            for r in self.results.values():
                for path, variance in r.parameter_variances.items():
                    mean = np.asarray(r.mean_gradient[path])
                    records.append(
                        {
                            "variant": r.label,
                            "parameter": path,
                            "variance": variance,
                            "gradient_norm": float(np.linalg.norm(mean)),
                            "bias_norm": float(
                                np.linalg.norm(mean - np.asarray(self.reference_gradient[path]))
                            ),
                        }
                    )
            return pd.DataFrame.from_records(records).set_index(["variant", "parameter"])
        columns = [f for f in _SCALARS if f != "num_samples"]
        records = [
            {"variant": r.label, **{c: getattr(r, c) for c in columns}}
            for r in self.results.values()
        ]
        return pd.DataFrame.from_records(records).set_index("variant")

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        """A JSON-ready dict (non-finite numbers as ``null``, ``"inf"``, ``"-inf"``)."""
        variants = []
        for r in self.results.values():
            item = {f: _encode(getattr(r, f)) for f in _SCALARS}
            item["label"] = r.label
            item["time_quartiles"] = _encode(list(r.time_quartiles))
            item["mean_gradient"] = {
                p: _encode(np.asarray(v).tolist()) for p, v in r.mean_gradient.items()
            }
            item["parameter_variances"] = _encode(dict(r.parameter_variances))
            if r.training is not None:
                item["training"] = {
                    "history": _encode(r.training.history.tolist()),
                    "seconds": _encode(r.training.seconds.tolist()),
                }
            variants.append(item)
        return {
            "format": _FORMAT,
            "num_samples": self.num_samples,
            "num_coordinates": self.num_coordinates,
            "reference": {
                "kind": self.reference_kind,
                "label": self.reference_label,
                "num_samples": self.reference_samples,
                "description": self.reference,
                "gradient": {
                    p: _encode(np.asarray(v).tolist()) for p, v in self.reference_gradient.items()
                },
            },
            "bias_threshold": self.bias_threshold,
            "variants": variants,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The comparison as JSON text (see `to_dict`); `from_json` reads it back."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Comparison:
        """Rebuild a `Comparison` from `to_json`'s text."""
        data = json.loads(text)
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a ppl.compare result (format {data.get('format')!r}).")
        results = {}
        for item in data["variants"]:
            fields = {f: _decode(item[f]) for f in _SCALARS}
            for f in ("num_samples",):
                fields[f] = int(fields[f])
            fields["biased"] = bool(fields["biased"])
            memory = item["peak_memory_bytes"]
            fields["peak_memory_bytes"] = None if memory is None else int(memory)
            training = None
            if "training" in item:
                training = TrainingRun(
                    np.asarray(_decode(item["training"]["history"]), np.float64),
                    np.asarray(_decode(item["training"]["seconds"]), np.float64),
                )
            results[item["label"]] = VariantResult(
                label=item["label"],
                mean_gradient={
                    p: np.asarray(_decode(v), np.float64) for p, v in item["mean_gradient"].items()
                },
                parameter_variances={
                    p: float(_decode(v)) for p, v in item["parameter_variances"].items()
                },
                time_quartiles=tuple(_decode(item["time_quartiles"])),
                training=training,
                **fields,
            )
        ref = data["reference"]
        return cls(
            results=results,
            num_samples=int(data["num_samples"]),
            num_coordinates=int(data["num_coordinates"]),
            reference_kind=ref["kind"],
            reference_label=ref["label"],
            reference_samples=ref["num_samples"],
            reference_gradient={
                p: np.asarray(_decode(v), np.float64) for p, v in ref["gradient"].items()
            },
            bias_threshold=float(data["bias_threshold"]),
        )

    def save(self, directory: str | os.PathLike) -> dict[str, str]:
        """Write ``comparison.json``, ``comparison.txt`` (the table), ``variance.png``
        and, after training, ``training.png`` into ``directory`` (created if needed).

        Returns:
            file kind (``"json"``, ``"table"``, ``"plot"``, ``"training_plot"``) -> path.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        paths = {
            "json": os.path.join(directory, "comparison.json"),
            "table": os.path.join(directory, "comparison.txt"),
            "plot": os.path.join(directory, "variance.png"),
        }
        with open(paths["json"], "w", encoding="utf-8") as file:
            file.write(self.to_json() + "\n")
        with open(paths["table"], "w", encoding="utf-8") as file:
            file.write(str(self) + "\n")
        self.plot(paths["plot"])
        if any(r.training is not None for r in self.results.values()):
            paths["training_plot"] = os.path.join(directory, "training.png")
            self.plot_training(paths["training_plot"])
        return paths

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Comparison:
        """Read ``comparison.json`` written by `save`."""
        with open(os.path.join(os.fspath(directory), "comparison.json"), encoding="utf-8") as file:
            return cls.from_json(file.read())

    # ----------------------------------------------------------------- plots

    def plot(self, path: str | os.PathLike) -> str | os.PathLike:
        """Save a PNG of gradient variance against time per gradient (log-log).

        One point per variant, with the variance's standard error (batch means) and the
        interquartile range of the timings as error bars. Zero-variance variants sit
        on the bottom edge, marked with a downward triangle. The dotted line has the
        best variant's work-normalized variance (variance × time): points on it are as
        good per unit of compute, points above it worse.
        """
        figure, axes = _figure(1)
        axes = axes[0]
        results = list(self.results.values())
        positive = [r.total_variance for r in results if r.total_variance > 0]
        floor = min(positive) / 10 if positive else 1e-12
        for i, r in enumerate(results):
            x = r.time_per_gradient
            xerr = [[max(x - r.time_quartiles[0], 0.0)], [max(r.time_quartiles[1] - x, 0.0)]]
            if r.total_variance > 0:
                y = r.total_variance
                se = 0.0 if math.isnan(r.total_variance_se) else r.total_variance_se
                yerr = [[min(se, 0.9 * y)], [se]]
                axes.errorbar(
                    x, y, yerr=yerr, xerr=xerr, fmt="o", color=f"C{i}", capsize=3, label=r.label
                )
            else:
                y = floor
                axes.errorbar(
                    x,
                    y,
                    xerr=xerr,
                    fmt="v",
                    color=f"C{i}",
                    capsize=3,
                    label=f"{r.label} (zero variance)",
                )
            text = r.label + (" (biased)" if r.biased else "")
            axes.annotate(text, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        work = [r.work_normalized_variance for r in results if r.work_normalized_variance > 0]
        if work:
            times = np.array([r.time_per_gradient for r in results])
            xs = np.geomspace(times.min() / 2, times.max() * 2, 50)
            axes.plot(xs, min(work) / xs, ":", color="grey", lw=1, label="equal variance × time")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set(
            xlabel="time per gradient (s, median)",
            ylabel="total gradient variance (trace of covariance)",
            title=f"Gradient estimators ({self.num_samples} samples each)",
        )
        axes.legend(fontsize=8, loc="best")
        figure.savefig(path, format="png", dpi=120)
        return path

    def plot_training(
        self, path: str | os.PathLike, *, window: int | None = None
    ) -> str | os.PathLike:
        """Save a PNG of the training objective (running mean) against wall-clock time
        and against steps, one line per variant (as Figure 7 of Becker et al. 2024).

        Args:
            path: where to write the image.
            window: steps in the trailing running mean (default: a tenth of the run).

        Raises:
            ValueError: if no variant was trained (``compare(train=steps)``).
        """
        trained = [r for r in self.results.values() if r.training is not None]
        if not trained:
            raise ValueError("plot_training: nothing was trained; pass train=steps to compare.")
        figure, (by_time, by_step) = _figure(2)
        for i, r in enumerate(trained):
            history = r.training.history
            size = max(1, history.size // 10) if window is None else window
            smooth = _running_mean(history, size)
            by_time.plot(r.training.seconds, smooth, color=f"C{i}", label=r.label)
            by_step.plot(np.arange(1, history.size + 1), smooth, color=f"C{i}", label=r.label)
        by_time.set(xlabel="wall-clock time (s)", ylabel="objective (running mean)")
        by_step.set(xlabel="step", ylabel="objective (running mean)")
        by_time.legend(fontsize=8, loc="lower right")
        figure.suptitle("Training with each estimator")
        figure.savefig(path, format="png", dpi=120)
        return path


_SCALARS = (
    "num_samples",
    "value_mean",
    "value_se",
    "gradient_norm",
    "total_variance",
    "total_variance_se",
    "snr",
    "bias_norm",
    "bias_se",
    "bias_z",
    "biased",
    "time_per_gradient",
    "work_normalized_variance",
    "peak_memory_bytes",
)


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if value is None:
        return math.nan
    if value in ("inf", "-inf"):
        return float(value)
    return value


def _figure(columns: int):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Comparison plots need matplotlib: pip install matplotlib") from err
    figure = Figure(figsize=(6.5 * columns, 4.5), layout="constrained")
    FigureCanvasAgg(figure)  # an explicit Agg canvas: no pyplot, no global backend
    return figure, [figure.add_subplot(1, columns, i + 1) for i in range(columns)]


def _seconds(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


class _CallableModule(types.ModuleType):
    """Makes ``ppl.compare(...)`` call `compare` while ``ppl.compare.Problem`` etc. work."""

    def __call__(self, *args: Any, **kwargs: Any) -> Comparison:
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
