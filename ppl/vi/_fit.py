"""``ppl.fit``: a training loop for objectives written as expectations.

Maximizes ``E[objective(params, *args)]`` with an optax optimizer: every step draws
an unbiased gradient estimate (the mean of ``num_samples`` vmapped estimates,
differentiated as one function, so no per-sample gradients are kept), steps run in
jit-compiled ``lax.scan`` chunks, non-finite steps are skipped and reported with the
parameter where they appeared, and runs can be checkpointed atomically and resumed
with bitwise-identical results.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.tree_util import keystr, tree_flatten_with_path
from tqdm.auto import tqdm

from ppl._util import running_mean, typed_key
from ppl.parallel import DATA, axis_size, constrain_batch, replicate, shard_batch, use_mesh
from ppl.vi._checkpoint import (
    CHECKPOINT_NAME,
    checkpoint_arrays,
    leaf_paths,
    load_checkpoint,
    remove_stale_temp_files,
    write_checkpoint,
)
from ppl.vi._checks import check_finite as _check_finite
from ppl.vi._checks import check_params_given
from ppl.vi._importance import Importance, importance, warn_if_unreliable

__all__ = ["FitResult", "fit"]


class FitResult(NamedTuple):
    """What `fit` returns.

    Attributes:
        params: the fitted parameters, a pytree shaped like the ``params`` argument.
        opt_state: the optax optimizer state after the last step.
        history: the objective estimate at every step (a NumPy array of length
            ``num_steps``; ``NaN`` or ``inf`` at skipped steps).
        num_steps: the number of steps taken in total (including those of the run a
            checkpoint was resumed from).
        num_bad_steps: how many steps were skipped because the objective estimate or
            its gradient was not finite.
        bad_steps_report: a sentence naming the step and the parameter where the
            first non-finite value appeared; the empty string if there was none.
        importance: with ``fit(..., diagnose=(model, guide))``, the `ppl.Importance`
            of the fitted guide (its Pareto k-hat, ESS and IWELBO); else None.
    """

    params: Any
    opt_state: Any
    history: np.ndarray
    num_steps: int
    num_bad_steps: int
    bad_steps_report: str
    importance: Importance | None = None

    def plot(self, path: str | os.PathLike, *, window: int | None = None) -> str | os.PathLike:
        """Save a PNG of the objective against the step, with a running mean.

        Args:
            path: where to write the image.
            window: the number of steps in the trailing running mean (default: a
                fiftieth of the run, at least 1). Skipped steps are left out of it.

        Returns:
            ``path``.

        Raises:
            ImportError: if matplotlib is not installed.
            ValueError: if the history is empty or ``window < 1``.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "FitResult.plot needs matplotlib: pip install matplotlib (or ppl[zoo])."
            ) from err
        history = np.asarray(self.history, dtype=float)
        if history.size == 0:
            raise ValueError("FitResult.plot: the history is empty (no steps were taken).")
        window = max(1, history.size // 50) if window is None else window
        if window < 1:
            raise ValueError(f"FitResult.plot: window must be at least 1, got {window}.")
        steps = np.arange(history.size)
        finite = np.isfinite(history)
        figure = Figure(figsize=(7.0, 4.0), layout="constrained")
        FigureCanvasAgg(figure)  # an explicit Agg canvas: no pyplot, no global backend
        axes = figure.add_subplot()
        axes.plot(steps, history, lw=0.6, alpha=0.35, color="C0", label="estimate")
        axes.plot(
            steps,
            running_mean(history, window),
            lw=1.6,
            color="C1",
            label=f"running mean ({window} steps)",
        )
        if finite.any():  # keep the first, far-off steps from flattening the rest
            low, high = np.percentile(history[finite], [2.0, 100.0])
            pad = 0.05 * (high - low) or 1.0
            axes.set_ylim(low - pad, high + pad)
        title = "objective"
        if self.num_bad_steps:
            title += f" ({self.num_bad_steps} non-finite steps skipped)"
        axes.set(xlabel="step", ylabel="objective estimate", title=title)
        axes.legend(loc="lower right")
        figure.savefig(path, format="png", dpi=120)
        return path


class _Config(NamedTuple):
    """Everything static about the compiled step (hashed by `eqx.filter_jit`)."""

    objective: Callable
    optimizer: optax.GradientTransformation
    num_samples: int
    chunk_size: int
    max_bad_steps: int
    nan_guard: bool
    data_mode: str  # "none", "full", "minibatch" or "iterator"
    batch_size: int
    num_batches: int  # minibatches per epoch
    mesh: Any = None  # a jax.sharding.Mesh: data- and particle-parallel steps


class _State(NamedTuple):
    """The training state carried from step to step (and into checkpoints)."""

    trainable: Any
    opt_state: Any
    step: jax.Array
    num_bad: jax.Array
    first_bad_step: jax.Array  # -1 until a step is skipped
    first_bad_leaf: jax.Array  # index of the first non-finite gradient leaf; -1: the value
    consecutive: jax.Array
    run_start_step: jax.Array  # first step of the current run of consecutive bad steps
    run_start_leaf: jax.Array
    stopped: jax.Array


_COUNTERS = (
    "step",
    "num_bad",
    "first_bad_step",
    "first_bad_leaf",
    "consecutive",
    "run_start_step",
    "run_start_leaf",
    "stopped",
)


def _initial_state(trainable: Any, opt_state: Any) -> _State:
    counters = [jnp.asarray(value, jnp.int32) for value in (0, 0, -1, -1, 0, -1, -1)]
    return _State(trainable, opt_state, *counters, stopped=jnp.asarray(False))


def _nan() -> jax.Array:
    return jnp.full((), jnp.nan, jnp.result_type(float))


def _step(
    config: _Config,
    key_steps: jax.Array,
    state: _State,
    static_params: Any,
    objective_args: tuple,
    kwargs: dict,
    active: bool | jax.Array = True,
) -> tuple[_State, jax.Array]:
    """One guarded optimizer step; returns the new state and the objective estimate.

    The optimizer's update runs inside a ``lax.cond`` on "finite and ``active``" (a
    traced flag), in the same compiled step as the gradient: a skipped step passes the
    parameters and optimizer state through untouched. A select between the updated
    and the old state (``jnp.where`` over every leaf) would read and write all of them
    once more each step, which on AIR's 3 M parameters cost more than Adam itself.
    """
    step_key = jax.random.fold_in(key_steps, state.step)

    def negated(trainable: Any) -> tuple[jax.Array, jax.Array]:
        params = eqx.combine(trainable, static_params)
        if config.num_samples == 1:  # no vmap: a batch axis of one can cost XLA layouts
            value = config.objective(step_key, params, *objective_args, **kwargs)
        else:
            keys = jax.random.split(step_key, config.num_samples)
            values = jax.vmap(lambda key: config.objective(key, params, *objective_args, **kwargs))(
                keys
            )
            value = jnp.mean(values)
        return -value, value

    (_, value), grads = jax.value_and_grad(negated, has_aux=True)(state.trainable)
    if config.nan_guard:
        # sum(g * 0) is NaN exactly when g holds a NaN or an infinity, else 0: the same
        # test as all(isfinite(g)) in one plain sum, which XLA runs faster on CPU
        leaf_finite = jnp.stack([jnp.isfinite(jnp.sum(g * 0)) for g in jax.tree.leaves(grads)])
        grads_finite = jnp.all(leaf_finite)
        finite = grads_finite & jnp.isfinite(value)
        bad_leaf = jnp.where(grads_finite, -1, jnp.argmin(leaf_finite)).astype(jnp.int32)
    else:  # no check and, with ``active`` a Python True, no branch for XLA to run
        finite, bad_leaf = jnp.asarray(True), jnp.asarray(-1, jnp.int32)
    ok = finite & active
    bad = ~finite & active

    def same_dtypes(new: Any, old: Any) -> Any:
        # both branches (and the scan carry) keep the old dtypes
        return jax.tree.map(lambda n, o: n.astype(jnp.result_type(o)), new, old)

    def update(grads: Any, opt_state: Any, trainable: Any) -> tuple[Any, Any]:
        updates, new_opt_state = config.optimizer.update(grads, opt_state, trainable)
        new = (optax.apply_updates(trainable, updates), new_opt_state)
        return same_dtypes(new, (trainable, opt_state))

    def keep(grads: Any, opt_state: Any, trainable: Any) -> tuple[Any, Any]:
        return same_dtypes((trainable, opt_state), (trainable, opt_state))

    if config.nan_guard or active is not True:
        new_trainable, new_opt_state = lax.cond(
            ok, update, keep, grads, state.opt_state, state.trainable
        )
    else:
        new_trainable, new_opt_state = update(grads, state.opt_state, state.trainable)

    consecutive = jnp.where(ok, 0, state.consecutive + bad.astype(jnp.int32))
    run_begins = bad & (state.consecutive == 0)
    first_ever = bad & (state.first_bad_step < 0)
    new_state = _State(
        trainable=new_trainable,
        opt_state=new_opt_state,
        step=state.step + jnp.asarray(active, jnp.int32),
        num_bad=state.num_bad + bad.astype(jnp.int32),
        first_bad_step=jnp.where(first_ever, state.step, state.first_bad_step),
        first_bad_leaf=jnp.where(first_ever, bad_leaf, state.first_bad_leaf),
        consecutive=consecutive,
        run_start_step=jnp.where(run_begins, state.step, state.run_start_step),
        run_start_leaf=jnp.where(run_begins, bad_leaf, state.run_start_leaf),
        stopped=state.stopped | (consecutive >= config.max_bad_steps),
    )
    return new_state, jnp.where(active, value, jnp.nan)


def _permutation(key_data: jax.Array, epoch: jax.Array, size: int) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(key_data, epoch), size)


@eqx.filter_jit
def _run_chunk(
    config: _Config,
    key: jax.Array,
    state: _State,
    num_active: jax.Array,
    static_params: Any,
    data: Any,
    args: tuple,
    kwargs: dict,
) -> tuple[_State, jax.Array]:
    """Up to ``config.chunk_size`` steps in one ``lax.scan``; the first ``num_active`` run.

    The scan always has ``chunk_size`` iterations (inactive ones are skipped by a
    ``lax.cond``), so every chunk, wherever it starts, runs the same compiled program:
    that is what makes interrupted-and-resumed runs bitwise identical.
    """
    key_steps, key_data = jax.random.split(key)
    if config.data_mode == "minibatch":
        size = jax.tree.leaves(data)[0].shape[0]
        perm = _permutation(key_data, state.step // config.num_batches, size)
    else:
        perm = jnp.zeros((0,), jnp.int32)

    def active_step(
        carry: tuple[_State, jax.Array],
    ) -> tuple[tuple[_State, jax.Array], jax.Array]:
        state, perm = carry
        if config.data_mode == "minibatch":
            epoch, index = jnp.divmod(state.step, config.num_batches)
            perm = lax.cond(
                index == 0,
                lambda: _permutation(key_data, epoch, perm.shape[0]).astype(perm.dtype),
                lambda: perm,
            )
            rows = lax.dynamic_slice_in_dim(perm, index * config.batch_size, config.batch_size)
            batch = jax.tree.map(lambda leaf: jnp.take(leaf, rows, axis=0), data)
            objective_args = (constrain_batch(batch), *args)  # over the mesh's "data" axis
        elif config.data_mode == "full":
            objective_args = (constrain_batch(data), *args)
        else:
            objective_args = args
        state, value = _step(config, key_steps, state, static_params, objective_args, kwargs)
        return (state, perm), value.astype(jnp.result_type(float))

    def body(
        carry: tuple[_State, jax.Array], index: jax.Array
    ) -> tuple[tuple[_State, jax.Array], jax.Array]:
        active = (index < num_active) & ~carry[0].stopped
        return lax.cond(active, active_step, lambda c: (c, _nan()), carry)

    (state, _), values = lax.scan(body, (state, perm), jnp.arange(config.chunk_size))
    return state, values


def _one_step(
    config: _Config,
    key: jax.Array,
    state: _State,
    static_params: Any,
    batch: Any,
    args: tuple,
    kwargs: dict,
) -> tuple[_State, jax.Array]:
    """One step on a batch from an iterator (``data_mode == "iterator"``)."""
    key_steps, _ = jax.random.split(key)
    active = ~state.stopped if config.nan_guard else True
    state, value = _step(config, key_steps, state, static_params, (batch, *args), kwargs, active)
    return state, value.astype(jnp.result_type(float))


_run_one = eqx.filter_jit(_one_step)


class _Static:
    """The hashable, non-array part of a step's inputs: a `jax.jit` static argument."""

    def __init__(self, config: _Config, tree: Any) -> None:
        self.config = config
        self.leaves, self.treedef = jax.tree.flatten(tree)
        self._hash = hash((config, self.treedef, tuple(self.leaves)))  # TypeError: unhashable

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Static)
            and self.config == other.config
            and self.treedef == other.treedef
            and all(a is b or a == b for a, b in zip(self.leaves, other.leaves))
        )


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _run_one_fast(
    static: _Static, key: jax.Array, state: _State, arrays: Any, batch: Any
) -> tuple[_State, jax.Array]:
    """`_one_step` under plain `jax.jit`, whose dispatch costs far less per call than
    `eqx.filter_jit`'s; that matters when every step is a call of its own. The state is
    donated: the step updates the parameters and optimizer state in place rather than
    into new buffers (`fit` hands it a copy of the caller's arrays)."""
    static_params, args, kwargs = eqx.combine(
        arrays, jax.tree.unflatten(static.treedef, static.leaves)
    )
    return _one_step(static.config, key, state, static_params, batch, args, kwargs)


def _fast_stepper(
    config: _Config, static_params: Any, args: tuple, kwargs: dict
) -> Callable | None:
    """A ``step(key, state, batch)`` on the fast path, or None where it does not apply.

    Arrays in the static parameters and extra arguments are traced, everything else is
    static, as under `eqx.filter_jit`; the path applies when that static rest hashes.
    A batch that is not all arrays still goes through `_run_one`.
    """
    arrays, rest = eqx.partition((static_params, args, kwargs), eqx.is_array)
    try:
        static = _Static(config, rest)
    except TypeError:
        return None

    def step(key: jax.Array, state: _State, batch: Any) -> tuple[_State, jax.Array]:
        if all(eqx.is_array(leaf) for leaf in jax.tree.leaves(batch)):
            return _run_one_fast(static, key, state, arrays, batch)
        return _run_one(config, key, state, static_params, batch, args, kwargs)

    return step


# ----------------------------------------------------------------------------- checks


def _check_data(data: Any, batch_size: int | None) -> tuple[str, int, int]:
    """Classify ``data``; returns ``(data_mode, batch_size, num_batches)``."""
    if data is None:
        if batch_size is not None:
            raise ValueError("fit: batch_size was given but data is None; pass data=... too.")
        return "none", 0, 0
    leaves_with_paths = [] if isinstance(data, Iterator) else tree_flatten_with_path(data)[0]
    is_array_tree = bool(leaves_with_paths) and all(
        isinstance(leaf, np.ndarray | jax.Array) for _, leaf in leaves_with_paths
    )
    if not is_array_tree:
        if isinstance(data, str | bytes) or not hasattr(data, "__iter__"):
            raise TypeError(
                f"fit: data must be a pytree of arrays with a common leading axis or an "
                f"iterable of batches, got {type(data).__name__}."
            )
        if batch_size is not None:
            raise ValueError(
                "fit: batch_size applies to array data; an iterator of batches sets its "
                "own batch size. Drop batch_size, or pass the arrays themselves."
            )
        return "iterator", 0, 0
    sizes = []
    for path, leaf in leaves_with_paths:
        if leaf.ndim == 0:
            raise ValueError(
                f"fit: data{keystr(path)} is a scalar; every data leaf needs a leading "
                f"axis over examples."
            )
        sizes.append((f"data{keystr(path)}", leaf.shape[0]))
    name0, size = sizes[0]
    for name, other in sizes[1:]:
        if other != size:
            raise ValueError(
                f"fit: data leaves must share their leading (example) axis, but {name0} "
                f"has {size} rows and {name} has {other}."
            )
    if batch_size is None:
        return "full", size, 1
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"fit: batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size > size:
        raise ValueError(
            f"fit: batch_size={batch_size} is larger than the data ({name0} has {size} rows)."
        )
    return "minibatch", int(batch_size), size // batch_size


def _check_mesh(mesh: Any, data_mode: str, batch_size: int) -> None:
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(
            f"fit: mesh must be a jax.sharding.Mesh (for example ppl.parallel.mesh()), "
            f"got {type(mesh).__name__}."
        )
    size = axis_size(DATA, mesh)
    if data_mode in ("full", "minibatch") and batch_size % size:
        what = "batch_size" if data_mode == "minibatch" else "the number of rows of data"
        raise ValueError(
            f"fit: {what} ({batch_size}) must be a multiple of the {size} devices on the "
            f"mesh axis '{DATA}', which each evaluate an equal share of every batch. Use "
            f"batch_size={max(size, batch_size - batch_size % size)}, or another mesh."
        )


def _check_opt_state(given: Any, expected: Any) -> None:
    shapes = lambda tree: jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)  # noqa: E731
    if jax.tree.structure(given) != jax.tree.structure(expected) or shapes(given) != shapes(
        expected
    ):
        raise ValueError(
            "fit: opt_state does not match optimizer.init(params) (structure, shapes or "
            "dtypes differ). Pass the opt_state of a FitResult trained with the same "
            "optimizer and a params pytree of the same structure."
        )


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"fit: {name} must be a positive integer, got {value!r}.")


# ------------------------------------------------------------------------ checkpoints


# ---------------------------------------------------------------------------- reports


def _describe_bad(step: int, leaf: int, paths: list[str]) -> str:
    if leaf < 0:
        return f"step {step}, where the objective estimate was not finite (its gradient was)"
    return f"step {step}, where the gradient of {paths[leaf]} was not finite"


def _bad_steps_report(state: _State, paths: list[str]) -> str:
    num_bad = int(state.num_bad)
    if num_bad == 0:
        return ""
    first = _describe_bad(int(state.first_bad_step), int(state.first_bad_leaf), paths)
    return (
        f"{num_bad} of {int(state.step)} steps were skipped (parameters and optimizer "
        f"state left unchanged) because the objective estimate or its gradient was not "
        f"finite. The first was at {first}."
    )


def _result(static_params: Any, state: _State, history: np.ndarray, paths: list[str]) -> FitResult:
    return FitResult(
        params=eqx.combine(state.trainable, static_params),
        opt_state=state.opt_state,
        history=history,
        num_steps=int(state.step),
        num_bad_steps=int(state.num_bad),
        bad_steps_report=_bad_steps_report(state, paths),
    )


# -------------------------------------------------------------------------------- fit


def fit(
    key: jax.Array,
    objective: Callable[..., jax.Array],
    params: Any,
    *args: Any,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    data: Any = None,
    batch_size: int | None = None,
    num_samples: int = 1,
    chunk_size: int = 100,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    max_bad_steps: int = 20,
    nan_guard: bool = True,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    opt_state: Any = None,
    check_finite: bool = True,
    diagnose: tuple[Callable, Callable] | None = None,
    **kwargs: Any,
) -> FitResult:
    """Maximize an expected objective over ``params`` with an optax optimizer.

    Step ``t`` splits ``fold_in(key_steps, t)`` into ``S = num_samples`` keys ``k_s``
    and hands ``optimizer`` the gradient of
    ``-L(params) = -(1/S) * sum_s objective(k_s, params, ...)``. For a
    `ppl.Expectation`, ``grad L`` is an unbiased estimate of ``grad E[objective]``
    (Lew et al., POPL 2023); the ``S`` estimates are vmapped inside the differentiated
    function, so per-sample gradients are never materialized. Steps are numbered
    from 0 (they index ``FitResult.history``).

    With array ``data``, each epoch visits the examples in the order of
    ``jax.random.permutation(fold_in(key_data, epoch), n)`` in ``n // batch_size``
    minibatches; the last partial batch is dropped (the order is reshuffled every
    epoch, so each example is still seen). The step keys and the minibatch order
    depend only on ``(key, step)``, never on chunking or restarts, so a resumed run
    ends with bitwise the same parameters as an uninterrupted one.

    Args:
        key: a PRNG key (``jax.random.key(0)``); it is split into the per-step keys
            and the minibatch-order key.
        objective: called as ``objective(key, params, *args)``, or
            ``objective(key, params, batch, *args)`` when ``data`` is given; returns
            a real scalar estimate to maximize. Usually a `ppl.Expectation`.
        params: the initial parameters, any pytree (dict, equinox module). Its
            floating-point arrays are trained; every other leaf (integer arrays,
            Python numbers, functions) is held fixed, and a Python float outside an
            equinox module gets a warning that names it. With ``resume=True`` it is also
            the structure template for the checkpoint.
        *args: further arguments for ``objective`` (for the library's objectives, the
            model's and guide's), fixed during training. Arrays and Python floats are
            traced; every other leaf (an ``int`` plate size, a string, ``None``, a
            function) is static, as in NumPyro's ``SVI.run``.
        optimizer: an optax gradient transformation (it sees the negated gradient).
        num_steps: the total number of steps (a resumed run continues to it).
        data: ``None``; a pytree of arrays with a common leading (example) axis; or an
            iterable of batches (a generator, a data loader), run one jitted step at a
            time. A list or dict of arrays counts as a pytree: wrap it in ``iter()``
            to iterate over it instead. A one-shot iterator that runs out ends
            training early (with a warning); a re-iterable is restarted.
        batch_size: for array ``data``, the minibatch size (default: the whole data
            set every step).
        num_samples: estimates averaged per step.
        chunk_size: steps per ``lax.scan`` chunk (one host round-trip each; the
            progress bar and the NaN check update once per chunk).
        checkpoint_dir: if set, ``checkpoint_dir/checkpoint.npz`` is written (params,
            optimizer state, key, step, history, bad-step counters) every
            ``checkpoint_every`` steps and at the end, atomically (temporary file,
            fsync, ``os.replace``).
        checkpoint_every: steps between checkpoints (default: every chunk).
        resume: load the checkpoint in ``checkpoint_dir`` if there is one (its key
            takes precedence over ``key``) and continue to ``num_steps`` steps.
        max_bad_steps: stop after this many consecutive non-finite steps.
        nan_guard: skip steps whose objective estimate or gradient is not finite
            (the default). ``False`` drops the check and the select over parameters
            and optimizer state that it needs, for speed on large models; a
            non-finite step then corrupts the parameters, and fit raises at the end
            of that chunk without checkpointing them.
        progress: show a tqdm progress bar with the mean objective of the last chunk.
        mesh: a `jax.sharding.Mesh` (``ppl.parallel.mesh()``) to train on several
            devices or processes: parameters, optimizer state and array ``data`` are
            replicated on it, every minibatch is sharded over its ``"data"`` axis, and
            the objective is traced under ``jax.set_mesh(mesh)``, so that particle
            objectives split their particles over its ``"particles"`` axis. With an
            iterator, each process yields its own rows of every batch. The random
            draws are those of a run without a mesh (see ``docs/scaling.md``).
        opt_state: the optimizer state to start from (``FitResult.opt_state`` of an
            earlier run with the same params structure and optimizer), to continue
            training in another ``fit`` call, for example after changing ``args``
            between epochs; default ``optimizer.init``. A checkpoint found with
            ``resume=True`` takes precedence.
        check_finite: check once, before compiling, that the floating-point values of
            array ``data``, ``args`` and ``kwargs`` are finite (an error names the first
            bad leaf and index). ``False`` skips it, for a model that masks missing
            values itself.
        diagnose: ``(model, guide)``: at the end, weigh 1000 draws of the fitted guide
            by the model with `ppl.importance`, store the result in
            ``FitResult.importance`` and warn when its Pareto k-hat is above 0.7 (the
            guide cannot be trusted; Yao et al. 2018). The model and guide get
            ``args`` and ``kwargs`` (with array ``data``, the whole of it first).
        **kwargs: keyword arguments for ``objective`` (and so for the model and guide
            of the library's objectives), fixed during training, as in NumPyro's
            ``svi.run(key, num_steps, *args, **kwargs)``: ``fit(key, objective,
            params, optimizer=..., num_steps=..., y=y)``. An argument named like one
            of fit's own options (``data``, ``num_samples``, ...) goes to fit: pass it
            positionally instead.

    Returns:
        A `FitResult` with the params, optimizer state and per-step history.

    Raises:
        TypeError: if ``objective`` is not callable, ``key`` is not a PRNG key (a NumPy
            ``Generator``, an int), or ``params`` is a NumPyro ``SVIState``.
        ValueError: for a non-positive ``num_steps`` (or other count), an empty
            ``params`` (call ``ppl.init_params``), a NaN or infinity in ``data``,
            ``args`` or ``kwargs`` (naming the leaf and index), data leaves of
            different lengths, a ``batch_size`` larger than the data, ``resume``
            without ``checkpoint_dir``, a checkpoint file that is truncated or not a
            checkpoint, or one whose structure differs from ``params`` (naming the
            path).
        FloatingPointError: after ``max_bad_steps`` consecutive non-finite steps,
            naming the parameter and the step. ``err.last_good`` is the `FitResult`
            of the last good state, which is also checkpointed.

    Examples:
        >>> import jax, jax.numpy as jnp, optax, ppl
        >>> import numpyro.distributions as dist
        >>> @ppl.expectation
        ... def elbo(params, y):
        ...     q = dist.Normal(params["loc"], jnp.exp(params["log_scale"]))
        ...     z = ppl.sample(q, ppl.reparam, name="z")
        ...     log_joint = dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 0.5).log_prob(y)
        ...     return log_joint - q.log_prob(z)
        >>> params = {"loc": jnp.zeros(()), "log_scale": jnp.zeros(())}
        >>> optimizer = optax.adam(optax.cosine_decay_schedule(0.05, 1000))
        >>> result = ppl.fit(jax.random.key(0), elbo, params, 1.0, optimizer=optimizer,
        ...                  num_steps=1000, num_samples=8, progress=False)
        >>> result.history.shape, round(float(result.params["loc"]), 1)  # exact: 0.8
        ((1000,), 0.8)

    References:
        Lew, Huot, Staton, Mansinghka. ADEV: Sound Automatic Differentiation of
        Expected Values of Probabilistic Programs. POPL 2023.
    """
    if not callable(objective):
        raise TypeError(
            f"fit: objective must be callable as objective(key, params, *args) (for "
            f"example a function decorated with @ppl.expectation), got "
            f"{type(objective).__name__}."
        )
    _check_positive(
        num_steps=num_steps,
        num_samples=num_samples,
        chunk_size=chunk_size,
        max_bad_steps=max_bad_steps,
    )
    if checkpoint_every is not None:
        _check_positive(checkpoint_every=checkpoint_every)
    if resume and checkpoint_dir is None:
        raise ValueError("fit: resume=True needs checkpoint_dir (where to look for it).")
    if diagnose is not None and not (
        isinstance(diagnose, tuple) and len(diagnose) == 2 and all(map(callable, diagnose))
    ):
        raise TypeError(f"fit: diagnose must be a (model, guide) pair, got {diagnose!r}.")
    key = typed_key(key, "fit")
    check_params_given(params, "fit")
    data_mode, batch_size, num_batches = _check_data(data, batch_size)
    if check_finite:
        arrays = {"data": data} if data_mode in ("full", "minibatch") else {}
        _check_finite("fit", **arrays, args=args, kwargs=kwargs)
    if mesh is not None:
        _check_mesh(mesh, data_mode, batch_size)
    if data_mode in ("full", "minibatch"):  # on the device once, not once per chunk
        data = jax.tree.map(jnp.asarray, data) if mesh is None else replicate(mesh, data)

    _warn_python_floats(params)
    trainable, static_params = eqx.partition(params, eqx.is_inexact_array)
    if not jax.tree.leaves(trainable):
        raise ValueError(
            "fit: params has no floating-point arrays to train. Write initial values "
            "as arrays, for example {'loc': jnp.asarray(0.0)} rather than {'loc': 0.0}."
        )
    paths = leaf_paths(trainable, "params")
    if opt_state is None:
        opt_state = optimizer.init(trainable)
    else:
        _check_opt_state(opt_state, optimizer.init(trainable))
    state = _initial_state(trainable, opt_state)
    history = np.zeros((0,), np.float64)

    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        os.makedirs(checkpoint_dir, exist_ok=True)
        checkpoint_path = os.path.join(checkpoint_dir, CHECKPOINT_NAME)
        if resume:
            remove_stale_temp_files(checkpoint_dir)
            if os.path.exists(checkpoint_path):
                saved_key, state, history = load_checkpoint(checkpoint_path, state)
                if not np.array_equal(jax.random.key_data(saved_key), jax.random.key_data(key)):
                    warnings.warn(
                        f"fit: resuming from {checkpoint_path}, which was written with a "
                        f"different key; continuing with the checkpoint's key.",
                        stacklevel=2,
                    )
                key = saved_key
                if bool(state.stopped):  # stopped by the NaN guard: try again from here
                    state = state._replace(consecutive=jnp.asarray(0, jnp.int32), stopped=False)
    config = _Config(
        objective=objective,
        optimizer=optimizer,
        num_samples=int(num_samples),
        chunk_size=int(chunk_size),
        max_bad_steps=int(max_bad_steps),
        nan_guard=bool(nan_guard),
        data_mode=data_mode,
        batch_size=batch_size,
        num_batches=num_batches,
        mesh=mesh,
    )
    if mesh is not None:  # replicated on every device (leaves already on the mesh stay)
        state, static_params, args, kwargs = replicate(mesh, (state, static_params, args, kwargs))
    every = chunk_size if checkpoint_every is None else checkpoint_every

    def save(state: _State, history: np.ndarray) -> None:
        if checkpoint_dir is not None:
            write_checkpoint(checkpoint_dir, checkpoint_arrays(key, state, history))

    step = int(state.step)
    chunks = [history]
    batches = _iterate_batches(data) if data_mode == "iterator" else None
    fast = _fast_stepper(config, static_params, args, kwargs) if data_mode == "iterator" else None
    if fast is not None:  # its steps donate the state: never the caller's params or opt_state
        state = jax.tree.map(jnp.copy, state)
    exhausted = False
    with tqdm(
        total=num_steps, initial=min(step, num_steps), unit="step", disable=not progress
    ) as bar:
        while step < num_steps and not exhausted:
            length = min(chunk_size, num_steps - step, every - step % every)
            with use_mesh(mesh):  # traced under the mesh: particle objectives see it
                if data_mode == "iterator":
                    state, values, exhausted = _run_iterator_chunk(
                        config, key, state, static_params, batches, args, kwargs, length, fast
                    )
                else:
                    state, values = _run_chunk(
                        config, key, state, jnp.asarray(length), static_params, data, args, kwargs
                    )
            done = int(state.step) - step
            values = np.asarray(values, dtype=np.float64)[:done]
            chunks.append(values)
            step += done
            if done:
                finite = values[np.isfinite(values)]
                postfix = {"objective": f"{finite.mean():.4g}" if finite.size else "nan"}
                if int(state.num_bad):
                    postfix["bad steps"] = int(state.num_bad)
                bar.set_postfix(postfix, refresh=False)
                bar.update(done)
            if not nan_guard and not _all_finite(state.trainable):
                raise FloatingPointError(
                    f"fit: the parameters became non-finite between steps {step - done} and "
                    f"{step} with nan_guard=False. Run with nan_guard=True (the default) to "
                    f"skip such steps and find where they start"
                    + (
                        f"; the checkpoint in {checkpoint_dir} is from before them."
                        if checkpoint_dir is not None
                        else "."
                    )
                )
            if bool(state.stopped):
                history = np.concatenate(chunks)
                save(state, history)
                raise _stopped_error(state, paths, _result(static_params, state, history, paths))
            if step % every == 0 and step < num_steps:
                save(state, np.concatenate(chunks))
    history = np.concatenate(chunks)
    if exhausted:
        warnings.warn(
            f"fit: data ran out after {step} of {num_steps} steps; stopping early.",
            stacklevel=2,
        )
    save(state, history)
    result = _result(static_params, state, history, paths)
    if result.bad_steps_report:
        warnings.warn(result.bad_steps_report, RuntimeWarning, stacklevel=2)
    if diagnose is not None:
        result = _diagnose(key, result, diagnose, data, data_mode, args, kwargs)
    return result


def _diagnose(
    key: jax.Array,
    result: FitResult,
    diagnose: tuple[Callable, Callable],
    data: Any,
    data_mode: str,
    args: tuple,
    kwargs: dict,
) -> FitResult:
    """``result`` with the `importance` of its fitted guide; warns above k-hat 0.7."""
    if data_mode == "iterator":
        warnings.warn(
            "fit: diagnose needs the whole data set, but data is an iterator of batches; "
            "call ppl.importance(key, model, guide, result.params, data, ...) yourself.",
            stacklevel=3,
        )
        return result
    model, guide = diagnose
    args = (data, *args) if data_mode in ("full", "minibatch") else args
    key_diagnose = jax.random.fold_in(key, np.iinfo(np.int32).max)
    found = importance(key_diagnose, model, guide, result.params, *args, **kwargs)
    warn_if_unreliable(found, "fit")
    return result._replace(importance=found)


def _warn_python_floats(params: Any) -> None:
    """Warn about Python floats in a hand-built params pytree: they are held fixed.

    Fields of equinox modules are left alone (a float field there, such as a dropout
    rate, is a setting by equinox's convention, not a parameter).
    """
    leaves, _ = tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, eqx.Module))
    floats = [keystr(path) for path, leaf in leaves if type(leaf) is float]
    if floats:
        warnings.warn(
            f"fit: params{', params'.join(floats)} "
            f"{'is a Python float' if len(floats) == 1 else 'are Python floats'}, which "
            f"fit holds fixed (only floating-point arrays are trained). To train "
            f"{'it' if len(floats) == 1 else 'them'}, write jnp.asarray(value), or build "
            f"params with ppl.init_params, whose values are always arrays.",
            UserWarning,
            stacklevel=3,
        )


def _all_finite(tree: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def _iterate_batches(data: Any) -> Iterator:
    """Batches from ``data``: a one-shot iterator once, a re-iterable over and over."""
    if isinstance(data, Iterator):
        yield from data
        return
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("fit: data is an empty iterable (it yields no batches).")


def _run_iterator_chunk(
    config: _Config,
    key: jax.Array,
    state: _State,
    static_params: Any,
    batches: Iterator,
    args: tuple,
    kwargs: dict,
    length: int,
    fast: Callable | None = None,
) -> tuple[_State, jax.Array, bool]:
    """Up to ``length`` single jitted steps on batches drawn from ``batches``."""
    values, exhausted = [], False
    for _ in range(length):
        try:
            batch = next(batches)
        except StopIteration:
            exhausted = True
            break
        if config.mesh is not None:  # this process's rows -> a global batch over "data"
            batch = shard_batch(config.mesh, batch)
        if fast is not None:
            state, value = fast(key, state, batch)
        else:
            state, value = _run_one(config, key, state, static_params, batch, args, kwargs)
        values.append(value)
    return state, jnp.stack(values) if values else jnp.zeros((0,)), exhausted


def _stopped_error(state: _State, paths: list[str], last_good: FitResult) -> FloatingPointError:
    where = _describe_bad(int(state.run_start_step), int(state.run_start_leaf), paths)
    error = FloatingPointError(
        f"fit stopped after {int(state.consecutive)} consecutive steps whose objective "
        f"estimate or gradient was not finite (max_bad_steps), starting at {where}. "
        f"The parameters and optimizer state from before that step are in "
        f"err.last_good (and in the checkpoint if checkpoint_dir is set). Lower the "
        f"learning rate, clip gradients (optax.clip_by_global_norm), or check the "
        f"objective for log(0), division by zero or overflow at those parameters."
    )
    error.last_good = last_good
    return error
