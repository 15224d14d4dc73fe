"""Training runs of the variants, evaluated off the clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax

from ppl.comparison._report import TrainingRun
from ppl.vi import Trainer, fit


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
    # Chunks of ``eval_every`` steps with the metrics in between, off the clock (the
    # optimizer state and the step count carry over, the compiled chunk is reused).
    every = min(training.eval_every, num_steps)
    trainer = Trainer(
        expectation, optimizer, batch_size=training.batch_size, chunk_size=every, mesh=mesh
    )
    state = trainer.init(key, params)
    data = {} if training.data is None else {"data": training.data}
    trainer.run(state, every, *rest, **data)  # compile, and check the data once
    evaluations = {"step": [0], "seconds": [0.0]}
    for name, value in training.evaluate(params).items():
        evaluations[name] = [value]
    ends, elapsed, chunks = [0], 0.0, []
    step = 0
    while step < num_steps:
        length = min(every, num_steps - step)
        start = time.perf_counter()
        state, values = trainer.run(state, length, *rest, check_finite=False, **data)
        jax.block_until_ready(state.params)
        elapsed += time.perf_counter() - start
        chunks.append(values)
        step += length
        ends.append(step)
        evaluations["step"].append(step)
        evaluations["seconds"].append(elapsed)
        values = training.evaluate(state.params)
        if set(values) != set(evaluations) - {"step", "seconds"}:
            raise ValueError(
                f"compare: train_metrics returned {sorted(values)} at step {step}, "
                f"but {sorted(set(evaluations) - {'step', 'seconds'})} before."
            )
        for name, value in values.items():
            evaluations[name].append(value)
    history = np.concatenate(chunks)
    # each chunk's measured time, spread evenly over its steps
    seconds = np.interp(np.arange(1, history.size + 1), ends, evaluations["seconds"])
    return TrainingRun(
        history, seconds, {k: np.asarray(v, np.float64) for k, v in evaluations.items()}
    )
