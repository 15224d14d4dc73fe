"""``ppl.fit``: a training loop for objectives written as expectations.

Maximizes ``E[objective(params, *args)]`` with an optax optimizer: a loop over
`ppl.Trainer.run` (jit-compiled ``lax.scan`` chunks of guarded steps, see
``ppl/vi/_training.py``) with a progress bar, atomic checkpoints that resume with
bitwise-identical results, and an optional importance diagnosis of the fitted guide.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ppl._util import typed_key
from ppl.parallel import replicate
from ppl.vi._checkpoint import (
    CHECKPOINT_NAME,
    checkpoint_arrays,
    load_checkpoint,
    remove_stale_temp_files,
    write_checkpoint,
)
from ppl.vi._checks import check_finite as _check_finite
from ppl.vi._checks import check_params_given
from ppl.vi._importance import Importance, importance, warn_if_unreliable
from ppl.vi._plots import plot_history
from ppl.vi._training import (
    _ADVICE,
    Trainer,
    TrainState,
    _check_data,
    _check_mesh,
    _check_objective,
    _check_positive,
    _internal,
    _iterate_batches,
    _paths,
    _public,
    _stopped_message,
)

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
        return plot_history(path, self.history, self.num_bad_steps, window)


def _result(state: TrainState, history: np.ndarray) -> FitResult:
    return FitResult(
        params=state.params,
        opt_state=state.opt_state,
        history=history,
        num_steps=int(state.step),
        num_bad_steps=int(state.num_bad_steps),
        bad_steps_report=state.bad_steps_report,
    )


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

    ``fit`` is a loop over `ppl.Trainer.run` with a progress bar and checkpoints; a
    loop that needs to stop between steps (to evaluate, to change ``args`` every
    epoch, to time training alone) can call `Trainer` itself, and takes the same
    steps.

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
    _check_objective(objective, "fit")
    _check_positive(
        "fit",
        num_steps=num_steps,
        num_samples=num_samples,
        chunk_size=chunk_size,
        max_bad_steps=max_bad_steps,
    )
    if checkpoint_every is not None:
        _check_positive("fit", checkpoint_every=checkpoint_every)
    if resume and checkpoint_dir is None:
        raise ValueError("fit: resume=True needs checkpoint_dir (where to look for it).")
    if diagnose is not None and not (
        isinstance(diagnose, tuple) and len(diagnose) == 2 and all(map(callable, diagnose))
    ):
        raise TypeError(f"fit: diagnose must be a (model, guide) pair, got {diagnose!r}.")
    key = typed_key(key, "fit")
    check_params_given(params, "fit")
    data_mode, rows, _ = _check_data(data, batch_size, "fit")
    if check_finite:
        arrays = {"data": data} if data_mode in ("full", "minibatch") else {}
        _check_finite("fit", **arrays, args=args, kwargs=kwargs)
    if mesh is not None:
        _check_mesh(mesh, data_mode, rows, "fit")
    if data_mode in ("full", "minibatch"):  # on the device once, not once per chunk
        data = jax.tree.map(jnp.asarray, data) if mesh is None else replicate(mesh, data)
    elif data_mode == "iterator":  # one pass over the batches across all chunks
        data = _iterate_batches(data, "fit")
    trainer = Trainer(
        objective,
        optimizer,
        batch_size=batch_size,
        num_samples=num_samples,
        chunk_size=chunk_size,
        max_bad_steps=max_bad_steps,
        nan_guard=nan_guard,
        mesh=mesh,
    )
    state = trainer._init(key, params, opt_state, "fit")
    history = np.zeros((0,), np.float64)

    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        os.makedirs(checkpoint_dir, exist_ok=True)
        checkpoint_path = os.path.join(checkpoint_dir, CHECKPOINT_NAME)
        if resume:
            remove_stale_temp_files(checkpoint_dir)
            if os.path.exists(checkpoint_path):
                template, static_params = _internal(state)
                saved_key, saved, history = load_checkpoint(checkpoint_path, template)
                if not np.array_equal(jax.random.key_data(saved_key), jax.random.key_data(key)):
                    warnings.warn(
                        f"fit: resuming from {checkpoint_path}, which was written with a "
                        f"different key; continuing with the checkpoint's key.",
                        stacklevel=2,
                    )
                state = _public(saved, static_params, saved_key)
    every = chunk_size if checkpoint_every is None else checkpoint_every

    def save(state: TrainState, history: np.ndarray) -> None:
        if checkpoint_dir is not None:
            write_checkpoint(
                checkpoint_dir, checkpoint_arrays(state.key, _internal(state)[0], history)
            )

    step = int(state.step)
    chunks = [history]
    exhausted, owned = False, False
    with tqdm(
        total=num_steps, initial=min(step, num_steps), unit="step", disable=not progress
    ) as bar:
        while step < num_steps and not exhausted:
            length = min(chunk_size, num_steps - step, every - step % every)
            try:
                state, values, exhausted = trainer._run(
                    state, length, args, kwargs, data,
                    check_finite=False, progress=bar, where="fit", owned=owned,
                )  # fmt: skip
            except FloatingPointError as error:
                if not hasattr(error, "last_good"):  # nan_guard=False: nothing to save
                    where = f"; the checkpoint in {checkpoint_dir} is from before them."
                    message = str(error)[:-1] + where if checkpoint_dir is not None else str(error)
                    raise FloatingPointError(message) from None
                history = np.concatenate([*chunks, error.values])
                save(error.last_good, history)
                raise _stopped_error(error.last_good, _result(error.last_good, history)) from None
            owned = True
            chunks.append(values)
            step = int(state.step)
            if step % every == 0 and step < num_steps:
                save(state, np.concatenate(chunks))
    history = np.concatenate(chunks)
    if exhausted:
        warnings.warn(
            f"fit: data ran out after {step} of {num_steps} steps; stopping early.",
            stacklevel=2,
        )
    save(state, history)
    result = _result(state, history)
    if result.bad_steps_report:
        warnings.warn(result.bad_steps_report, RuntimeWarning, stacklevel=2)
    if diagnose is not None:
        result = _diagnose(state.key, result, diagnose, data, data_mode, args, kwargs)
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


def _stopped_error(state: TrainState, last_good: FitResult) -> FloatingPointError:
    error = FloatingPointError(
        _stopped_message(_internal(state)[0], _paths(state.params), "fit")
        + " (and in the checkpoint if checkpoint_dir is set)"
        + _ADVICE
    )
    error.last_good = last_good
    return error
