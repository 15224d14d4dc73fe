"""Training runs of the variants, evaluated off the clock."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax

from ppl.comparison._report import TrainingRun
from ppl.vi import fit


class _TrainingOptions:
    """The checked ``train_*`` arguments of `compare`."""

    def __init__(
        self,
        data: Any,
        batch_size: int | None,
        metrics: Callable[[Any], Mapping[str, float]] | None,
        eval_every: int,
        train: int | None,
        num_args: int,
    ) -> None:
        if train is None and (data is not None or metrics is not None):
            raise ValueError("compare: train_data and train_metrics need train=steps.")
        if data is not None and num_args < 2:
            raise ValueError(
                "compare: train_data replaces the argument after params, but the "
                "objective gets only params; pass a minibatch after params for the "
                "gradient measurements."
            )
        if batch_size is not None and data is None:
            raise ValueError("compare: train_batch_size needs train_data.")
        if metrics is not None and not callable(metrics):
            raise TypeError(f"compare: train_metrics must be callable, got {metrics!r}.")
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(
                f"compare: train_eval_every must be a positive number of steps, got {eval_every!r}."
            )
        self.data, self.batch_size, self.metrics = data, batch_size, metrics
        self.eval_every = eval_every

    def evaluate(self, params: Any) -> dict[str, float]:
        values = self.metrics(params)
        if not isinstance(values, Mapping):
            raise TypeError(
                f"compare: train_metrics must return a mapping name -> number, "
                f"got {type(values).__name__}."
            )
        out = {}
        for name, value in values.items():
            try:
                out[str(name)] = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"compare: train_metrics returned {name!r}: {value!r}, not a number."
                ) from None
        return out


def _train(
    expectation: Callable[..., jax.Array],
    key: jax.Array,
    args: tuple,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    mesh: jax.sharding.Mesh | None = None,
    training: _TrainingOptions | None = None,
) -> TrainingRun:
    params, rest = args[0], args[1:]
    options = dict(optimizer=optimizer, progress=False)
    if mesh is not None:
        options["mesh"] = mesh
    if training is not None and training.data is not None:
        rest = rest[1:]  # the minibatches take the place of the first argument
        options.update(data=training.data, batch_size=training.batch_size)
    if training is None or training.metrics is None:
        options["chunk_size"] = min(100, num_steps)
        fit(key, expectation, params, *rest, num_steps=1, **options)  # compile
        start = time.perf_counter()
        result = fit(key, expectation, params, *rest, num_steps=num_steps, **options)
        jax.block_until_ready(result.params)
        elapsed = time.perf_counter() - start
        steps = np.arange(1, result.history.size + 1)
        return TrainingRun(np.asarray(result.history, np.float64), steps * (elapsed / steps.size))
    # Chunks of ``eval_every`` steps, each resumed from the last one's checkpoint (the
    # optimizer state and the step count carry over, the compiled chunk is reused),
    # with the metrics in between, off the clock.
    every = min(training.eval_every, num_steps)
    options["chunk_size"] = every
    evaluations = {"step": [0], "seconds": [0.0]}
    for name, value in training.evaluate(params).items():
        evaluations[name] = [value]
    ends, elapsed = [0], 0.0
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as scratch:
        fit(key, expectation, params, *rest, num_steps=every, checkpoint_dir=scratch, **options)
        step = 0
        while step < num_steps:
            step = min(step + every, num_steps)
            start = time.perf_counter()
            result = fit(
                key, expectation, params, *rest, num_steps=step, checkpoint_dir=folder,
                resume=True, **options,
            )  # fmt: skip
            jax.block_until_ready(result.params)
            elapsed += time.perf_counter() - start
            ends.append(step)
            evaluations["step"].append(step)
            evaluations["seconds"].append(elapsed)
            values = training.evaluate(result.params)
            if set(values) != set(evaluations) - {"step", "seconds"}:
                raise ValueError(
                    f"compare: train_metrics returned {sorted(values)} at step {step}, "
                    f"but {sorted(set(evaluations) - {'step', 'seconds'})} before."
                )
            for name, value in values.items():
                evaluations[name].append(value)
    history = np.asarray(result.history, np.float64)
    # each chunk's measured time, spread evenly over its steps
    seconds = np.interp(np.arange(1, history.size + 1), ends, evaluations["seconds"])
    return TrainingRun(
        history, seconds, {k: np.asarray(v, np.float64) for k, v in evaluations.items()}
    )
