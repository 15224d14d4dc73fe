"""Training as a state and a step: `Trainer` and `TrainState`, the parts under `ppl.fit`.

``Trainer(objective, optimizer, ...)`` holds what is fixed for a run: the objective,
the optax optimizer, the minibatch size, the number of estimates per step and the NaN
guard's settings. ``trainer.init(key, params)`` returns a `TrainState` (parameters,
optimizer state, key, step count and the guard's counters), and
``trainer.run(state, n, *args, data=...)`` takes ``n`` more steps in jit-compiled
``lax.scan`` chunks and returns the new state with the ``n`` objective estimates. The
step keys and minibatch order depend only on the key and the step count in the state,
so ``n`` steps taken in one call or in several, with evaluations in between, end with
bitwise the same parameters. `ppl.fit` is a loop over ``run`` with a progress bar and
checkpoints.
"""

from __future__ import annotations

import functools
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

from ppl._util import typed_key
from ppl.parallel import DATA, axis_size, constrain_batch, replicate, shard_batch, use_mesh
from ppl.vi._checkpoint import leaf_paths
from ppl.vi._checks import check_finite as _check_finite
from ppl.vi._checks import check_params_given

__all__ = ["Trainer", "TrainState"]


class Guard(NamedTuple):
    """The NaN guard's counters in a `TrainState` (int32 scalars; -1: none yet)."""

    first_bad_step: jax.Array
    first_bad_leaf: jax.Array  # index of the first non-finite gradient leaf; -1: the value
    consecutive: jax.Array  # length of the current run of skipped steps
    run_start_step: jax.Array  # first step of that run
    run_start_leaf: jax.Array
    stopped: jax.Array  # max_bad_steps consecutive skipped steps: no further steps run


class TrainState(NamedTuple):
    """Everything a training run carries from one step to the next.

    Returned by `Trainer.init` and `Trainer.run`; a pytree of arrays (plus any
    non-array leaves of ``params``), so it can be saved, copied or inspected.

    Attributes:
        params: the parameters, a pytree shaped like the ``params`` given to
            `Trainer.init`; its floating-point arrays are the ones trained.
        opt_state: the optax optimizer state.
        key: the run's PRNG key. Step ``t`` draws from ``fold_in(key_steps, t)`` and
            the minibatch order of epoch ``e`` from ``fold_in(key_data, e)``, where
            ``key_steps, key_data = jax.random.split(key)``.
        step: the number of steps taken (int32 scalar).
        num_bad_steps: how many steps the NaN guard skipped (int32 scalar).
        guard: the guard's other counters (where skipped steps began).
    """

    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    num_bad_steps: jax.Array
    guard: Guard

    @property
    def bad_steps_report(self) -> str:
        """A sentence naming the step and the parameter of the first skipped step, or ``""``."""
        return _bad_steps_report(_internal(self)[0], _paths(self.params))


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


def _check_data(data: Any, batch_size: int | None, where: str) -> tuple[str, int, int]:
    """Classify ``data``; returns ``(data_mode, batch_size, num_batches)``."""
    if data is None:
        if batch_size is not None:
            raise ValueError(f"{where}: batch_size was given but data is None; pass data=... too.")
        return "none", 0, 0
    leaves_with_paths = [] if isinstance(data, Iterator) else tree_flatten_with_path(data)[0]
    is_array_tree = bool(leaves_with_paths) and all(
        isinstance(leaf, np.ndarray | jax.Array) for _, leaf in leaves_with_paths
    )
    if not is_array_tree:
        if isinstance(data, str | bytes) or not hasattr(data, "__iter__"):
            raise TypeError(
                f"{where}: data must be a pytree of arrays with a common leading axis or an "
                f"iterable of batches, got {type(data).__name__}."
            )
        if batch_size is not None:
            raise ValueError(
                f"{where}: batch_size applies to array data; an iterator of batches sets its "
                "own batch size. Drop batch_size, or pass the arrays themselves."
            )
        return "iterator", 0, 0
    sizes = []
    for path, leaf in leaves_with_paths:
        if leaf.ndim == 0:
            raise ValueError(
                f"{where}: data{keystr(path)} is a scalar; every data leaf needs a leading "
                f"axis over examples."
            )
        sizes.append((f"data{keystr(path)}", leaf.shape[0]))
    name0, size = sizes[0]
    for name, other in sizes[1:]:
        if other != size:
            raise ValueError(
                f"{where}: data leaves must share their leading (example) axis, but {name0} "
                f"has {size} rows and {name} has {other}."
            )
    if batch_size is None:
        return "full", size, 1
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size > size:
        raise ValueError(
            f"{where}: batch_size={batch_size} is larger than the data ({name0} has {size} rows)."
        )
    return "minibatch", int(batch_size), size // batch_size


def _check_mesh(mesh: Any, data_mode: str, batch_size: int, where: str) -> None:
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(
            f"{where}: mesh must be a jax.sharding.Mesh (for example ppl.parallel.mesh()), "
            f"got {type(mesh).__name__}."
        )
    size = axis_size(DATA, mesh)
    if data_mode in ("full", "minibatch") and batch_size % size:
        what = "batch_size" if data_mode == "minibatch" else "the number of rows of data"
        raise ValueError(
            f"{where}: {what} ({batch_size}) must be a multiple of the {size} devices on the "
            f"mesh axis '{DATA}', which each evaluate an equal share of every batch. Use "
            f"batch_size={max(size, batch_size - batch_size % size)}, or another mesh."
        )


def _check_opt_state(given: Any, expected: Any, where: str) -> None:
    shapes = lambda tree: jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)  # noqa: E731
    if jax.tree.structure(given) != jax.tree.structure(expected) or shapes(given) != shapes(
        expected
    ):
        raise ValueError(
            f"{where}: opt_state does not match optimizer.init(params) (structure, shapes or "
            "dtypes differ). Pass the opt_state of a FitResult trained with the same "
            "optimizer and a params pytree of the same structure."
        )


def _check_positive(where: str, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}.")


# ---------------------------------------------------------------------- the state


def _paths(params: Any) -> list[str]:
    return leaf_paths(eqx.filter(params, eqx.is_inexact_array), "params")


def _internal(state: TrainState) -> tuple[_State, Any]:
    """``(the compiled step's state, the parameters it holds fixed)`` of ``state``."""
    trainable, static_params = eqx.partition(state.params, eqx.is_inexact_array)
    return _State(trainable, state.opt_state, state.step, state.num_bad_steps, *state.guard), (
        static_params
    )


def _public(internal: _State, static_params: Any, key: jax.Array) -> TrainState:
    guard = Guard(*(getattr(internal, name) for name in Guard._fields))
    params = eqx.combine(internal.trainable, static_params)
    return TrainState(params, internal.opt_state, key, internal.step, internal.num_bad, guard)


def _warn_python_floats(params: Any, where: str) -> None:
    """Warn about Python floats in a hand-built params pytree: they are held fixed.

    Fields of equinox modules are left alone (a float field there, such as a dropout
    rate, is a setting by equinox's convention, not a parameter).
    """
    leaves, _ = tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, eqx.Module))
    floats = [keystr(path) for path, leaf in leaves if type(leaf) is float]
    if floats:
        holder = "fit" if where == "fit" else "the Trainer"
        warnings.warn(
            f"{where}: params{', params'.join(floats)} "
            f"{'is a Python float' if len(floats) == 1 else 'are Python floats'}, which "
            f"{holder} holds fixed (only floating-point arrays are trained). To train "
            f"{'it' if len(floats) == 1 else 'them'}, write jnp.asarray(value), or build "
            f"params with ppl.init_params, whose values are always arrays.",
            UserWarning,
            stacklevel=4,  # here, Trainer._init, Trainer.init or fit, the caller
        )


def _all_finite(tree: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def _iterate_batches(data: Any, where: str) -> Iterator:
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
            raise ValueError(f"{where}: data is an empty iterable (it yields no batches).")


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


# ------------------------------------------------------------------------ reports


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


def _stopped_message(state: _State, paths: list[str], where: str) -> str:
    start = _describe_bad(int(state.run_start_step), int(state.run_start_leaf), paths)
    return (
        f"{where} stopped after {int(state.consecutive)} consecutive steps whose objective "
        f"estimate or gradient was not finite (max_bad_steps), starting at {start}. "
        f"The parameters and optimizer state from before that step are in "
        f"err.last_good"
    )


_ADVICE = (
    ". Lower the learning rate, clip gradients (optax.clip_by_global_norm), or check the "
    "objective for log(0), division by zero or overflow at those parameters."
)


# ------------------------------------------------------------------------ trainer


class Trainer:
    """Maximize an expected objective with an optax optimizer, a chunk of steps at a time.

    What `ppl.fit` runs, for loops that need to stop between steps: evaluate on
    held-out data, keep the best parameters, change an argument of the objective
    every epoch, or time the training alone. As in optax and NumPyro's ``SVI``, the
    state is a value: ``init`` makes it, ``run`` returns a new one.

    Step ``t`` splits ``fold_in(key_steps, t)`` into ``S = num_samples`` keys ``k_s``
    and hands ``optimizer`` the gradient of
    ``-L(params) = -(1/S) * sum_s objective(k_s, params, ...)``, an unbiased estimate
    of the gradient of ``-E[objective]`` for a `ppl.Expectation` (Lew et al., POPL
    2023). Steps whose estimate or gradient is not finite are skipped (parameters and
    optimizer state unchanged) and counted in the state.

    Args:
        objective: called as ``objective(key, params, *args)``, or
            ``objective(key, params, batch, *args)`` when ``run`` gets ``data``;
            returns a real scalar estimate to maximize. Usually a `ppl.Expectation`.
        optimizer: an optax gradient transformation (it sees the negated gradient).
        batch_size: for array ``data``, the minibatch size (default: the whole data
            set every step). Each epoch visits the examples in the order of
            ``jax.random.permutation(fold_in(key_data, epoch), n)`` in
            ``n // batch_size`` minibatches (the last partial one is dropped).
        num_samples: estimates averaged per step (vmapped inside the differentiated
            function, so no per-sample gradients are kept).
        chunk_size: steps per compiled ``lax.scan`` (one host round-trip each).
        max_bad_steps: ``run`` raises ``FloatingPointError`` after this many
            consecutive non-finite steps.
        nan_guard: skip non-finite steps (the default). ``False`` drops the check and
            the branch it needs; a non-finite step then corrupts the parameters and
            ``run`` raises at the end of that chunk.
        mesh: a `jax.sharding.Mesh` (``ppl.parallel.mesh()``): parameters and array
            data are replicated on it, minibatches sharded over its ``"data"`` axis,
            and particle objectives split over its ``"particles"`` axis (see
            ``docs/scaling.md``).

    Examples:
        >>> import jax, jax.numpy as jnp, optax, ppl
        >>> import numpyro.distributions as dist
        >>> @ppl.expectation
        ... def elbo(params, y):
        ...     q = dist.Normal(params["loc"], jnp.exp(params["log_scale"]))
        ...     z = ppl.sample(q, ppl.reparam, name="z")
        ...     log_joint = dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 0.5).log_prob(y)
        ...     return log_joint - q.log_prob(z)
        >>> trainer = ppl.Trainer(elbo, optax.adam(0.05), num_samples=8)
        >>> params = {"loc": jnp.zeros(()), "log_scale": jnp.zeros(())}
        >>> state = trainer.init(jax.random.key(0), params)
        >>> for epoch in range(4):  # evaluate between chunks, off the training clock
        ...     state, values = trainer.run(state, 250, 1.0)
        >>> int(state.step), values.shape, round(float(state.params["loc"]), 1)  # exact: 0.8
        (1000, (250,), 0.8)
    """

    def __init__(
        self,
        objective: Callable[..., jax.Array],
        optimizer: optax.GradientTransformation,
        *,
        batch_size: int | None = None,
        num_samples: int = 1,
        chunk_size: int = 100,
        max_bad_steps: int = 20,
        nan_guard: bool = True,
        mesh: jax.sharding.Mesh | None = None,
    ) -> None:
        _check_objective(objective, "Trainer")
        _check_positive(
            "Trainer", num_samples=num_samples, chunk_size=chunk_size, max_bad_steps=max_bad_steps
        )
        if batch_size is not None and (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int | np.integer)
            or batch_size < 1
        ):
            raise ValueError(f"Trainer: batch_size must be a positive integer, got {batch_size!r}.")
        if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
            raise TypeError(
                f"Trainer: mesh must be a jax.sharding.Mesh (for example "
                f"ppl.parallel.mesh()), got {type(mesh).__name__}."
            )
        self.objective = objective
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.num_samples = int(num_samples)
        self.chunk_size = int(chunk_size)
        self.max_bad_steps = int(max_bad_steps)
        self.nan_guard = bool(nan_guard)
        self.mesh = mesh

    def __repr__(self) -> str:
        return (
            f"Trainer({getattr(self.objective, '__name__', self.objective)!r}, "
            f"batch_size={self.batch_size}, num_samples={self.num_samples}, "
            f"chunk_size={self.chunk_size}, nan_guard={self.nan_guard})"
        )

    def init(self, key: jax.Array, params: Any, *, opt_state: Any = None) -> TrainState:
        """The state before the first step.

        Args:
            key: a PRNG key (``jax.random.key(0)``).
            params: the initial parameters, any pytree (dict, equinox module). Its
                floating-point arrays are trained; every other leaf is held fixed, and
                a Python float outside an equinox module gets a warning that names it.
            opt_state: the optimizer state to start from (that of an earlier state
                with the same params structure and optimizer); default
                ``optimizer.init``.

        Raises:
            TypeError: if ``key`` is not a PRNG key or ``params`` is a NumPyro
                ``SVIState``.
            ValueError: if ``params`` has no floating-point arrays, or ``opt_state``
                does not match ``optimizer.init(params)``.
        """
        return self._init(key, params, opt_state, "Trainer.init")

    def _init(self, key: jax.Array, params: Any, opt_state: Any, where: str) -> TrainState:
        key = typed_key(key, where)
        check_params_given(params, where)
        _warn_python_floats(params, where)
        trainable, static_params = eqx.partition(params, eqx.is_inexact_array)
        if not jax.tree.leaves(trainable):
            raise ValueError(
                f"{where}: params has no floating-point arrays to train. Write initial "
                f"values as arrays, for example {{'loc': jnp.asarray(0.0)}} rather than "
                f"{{'loc': 0.0}}."
            )
        expected = self.optimizer.init(trainable)
        if opt_state is None:
            opt_state = expected
        else:
            _check_opt_state(opt_state, expected, where)
        return _public(_initial_state(trainable, opt_state), static_params, key)

    def run(
        self,
        state: TrainState,
        num_steps: int,
        *args: Any,
        data: Any = None,
        check_finite: bool = True,
        progress: bool = False,
        **kwargs: Any,
    ) -> tuple[TrainState, np.ndarray]:
        """Take ``num_steps`` more steps from ``state``.

        Args:
            state: a `TrainState` from `init` or an earlier ``run``. A state stopped
                by the NaN guard (``err.last_good``) is tried again.
            num_steps: how many steps to take.
            *args: further arguments for ``objective``, fixed during these steps (they
                may change between calls). Arrays and Python floats are traced; every
                other leaf (an ``int`` size, a string, a function) is static.
            data: ``None``; a pytree of arrays with a common leading (example) axis,
                cut into minibatches of the trainer's ``batch_size``; or an iterable of
                batches, one jitted step each (an iterator is drawn from where the last
                call left it; a re-iterable is restarted when it runs out).
            check_finite: check first that the floating-point values of array
                ``data``, ``args`` and ``kwargs`` are finite (an error names the first
                bad leaf and index).
            progress: show a tqdm progress bar.
            **kwargs: keyword arguments for ``objective``.

        Returns:
            ``(state, values)``: the new state, and the objective estimate at each
            step taken (NaN at skipped steps). ``values`` is shorter than
            ``num_steps`` only if an iterator of batches ran out, which also warns.

        Raises:
            FloatingPointError: after ``max_bad_steps`` consecutive non-finite steps,
                naming the parameter and the step; ``err.last_good`` is the state
                before them and ``err.values`` the estimates of this call until then.
                With ``nan_guard=False``, when the parameters became non-finite.
            ValueError: for a non-finite value in ``data``, ``args`` or ``kwargs``, data
                leaves of different lengths, or a ``batch_size`` larger than the data.
        """
        _check_positive("Trainer.run", num_steps=num_steps)
        state, values, exhausted = self._run(
            state, num_steps, args, kwargs, data, check_finite, progress, "Trainer.run"
        )
        if exhausted:
            warnings.warn(
                f"Trainer.run: data ran out after {values.size} of {num_steps} steps.",
                stacklevel=2,
            )
        return state, values

    def _config(self, data_mode: str, batch_size: int, num_batches: int) -> _Config:
        return _Config(
            objective=self.objective,
            optimizer=self.optimizer,
            num_samples=self.num_samples,
            chunk_size=self.chunk_size,
            max_bad_steps=self.max_bad_steps,
            nan_guard=self.nan_guard,
            data_mode=data_mode,
            batch_size=batch_size,
            num_batches=num_batches,
            mesh=self.mesh,
        )

    def _run(
        self,
        state: TrainState,
        num_steps: int,
        args: tuple,
        kwargs: dict,
        data: Any,
        check_finite: bool,
        progress: bool | tqdm,
        where: str,
        owned: bool = False,
    ) -> tuple[TrainState, np.ndarray, bool]:
        """``run`` without its check of ``num_steps``; also says if the data ran out.

        ``progress`` may be a tqdm bar to update (`ppl.fit`'s). ``owned``: the arrays of
        ``state`` came from an earlier ``_run`` of the caller's and nobody else holds
        them, so single steps may donate them without a copy first.
        """
        if not isinstance(state, TrainState):
            raise TypeError(
                f"{where}: state must be a TrainState (from Trainer.init or an earlier "
                f"run), got {type(state).__name__}."
            )
        data_mode, batch_size, num_batches = _check_data(data, self.batch_size, where)
        if check_finite:
            arrays = {"data": data} if data_mode in ("full", "minibatch") else {}
            _check_finite(where, **arrays, args=args, kwargs=kwargs)
        mesh = self.mesh
        if mesh is not None:
            _check_mesh(mesh, data_mode, batch_size, where)
        if data_mode in ("full", "minibatch"):  # on the device once per call
            data = jax.tree.map(jnp.asarray, data) if mesh is None else replicate(mesh, data)
        config = self._config(data_mode, batch_size, num_batches)
        key = state.key
        internal, static_params = _internal(state)
        if bool(internal.stopped):  # stopped by the NaN guard: try again from here
            internal = internal._replace(consecutive=jnp.zeros_like(internal.consecutive))
            internal = internal._replace(stopped=jnp.asarray(False))
        if mesh is not None:  # replicated on every device (leaves already on the mesh stay)
            internal, static_params, args, kwargs = replicate(
                mesh, (internal, static_params, args, kwargs)
            )
        batches = fast = None
        if data_mode == "iterator":
            batches = data if isinstance(data, Iterator) else _iterate_batches(data, where)
            fast = _fast_stepper(config, static_params, args, kwargs)
            if fast is not None and not owned:  # its steps donate the state: never the
                # caller's arrays
                internal = jax.tree.map(jnp.copy, internal)
        step = start = int(internal.step)
        chunks, exhausted = [], False
        bar = progress if isinstance(progress, tqdm) else None
        if bar is None:
            bar = tqdm(total=num_steps, unit="step", disable=not progress)
        try:
            while step - start < num_steps and not exhausted:
                length = min(self.chunk_size, num_steps - (step - start))
                with use_mesh(mesh):  # traced under the mesh: particle objectives see it
                    if data_mode == "iterator":
                        internal, values, exhausted = _run_iterator_chunk(
                            config, key, internal, static_params, batches, args, kwargs,
                            length, fast,
                        )  # fmt: skip
                    else:
                        internal, values = _run_chunk(
                            config, key, internal, jnp.asarray(length), static_params, data,
                            args, kwargs,
                        )  # fmt: skip
                done = int(internal.step) - step
                values = np.asarray(values, dtype=np.float64)[:done]
                chunks.append(values)
                step += done
                if done:
                    finite = values[np.isfinite(values)]
                    postfix = {"objective": f"{finite.mean():.4g}" if finite.size else "nan"}
                    if int(internal.num_bad):
                        postfix["bad steps"] = int(internal.num_bad)
                    bar.set_postfix(postfix, refresh=False)
                    bar.update(done)
                if not self.nan_guard and not _all_finite(internal.trainable):
                    error = FloatingPointError(
                        f"{where}: the parameters became non-finite between steps "
                        f"{step - done} and {step} with nan_guard=False. Run with "
                        f"nan_guard=True (the default) to skip such steps and find where "
                        f"they start."
                    )
                    error.values = np.concatenate(chunks)
                    raise error
                if bool(internal.stopped):
                    paths = _paths(state.params)
                    error = FloatingPointError(_stopped_message(internal, paths, where) + _ADVICE)
                    error.last_good = _public(internal, static_params, key)
                    error.values = np.concatenate(chunks)
                    raise error
        finally:
            if bar is not progress:
                bar.close()
        values = np.concatenate(chunks) if chunks else np.zeros((0,), np.float64)
        return _public(internal, static_params, key), values, exhausted


def _check_objective(objective: Any, where: str) -> None:
    if not callable(objective):
        raise TypeError(
            f"{where}: objective must be callable as objective(key, params, *args) (for "
            f"example a function decorated with @ppl.expectation), got "
            f"{type(objective).__name__}."
        )
