"""Training AIR with ``ppl.fit`` and any estimator, recording count accuracy over time."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import ppl
from ppl_zoo.air import _model
from ppl_zoo.air._data import Canvases

__all__ = ["optimizer", "Evaluator", "train_air"]


def optimizer(
    learning_rate: float,
    baseline_learning_rate: float,
    decay_steps: int = 0,
    final_learning_rate: float | None = None,
) -> optax.GradientTransformation:
    """Adam on the model and guide; Adam with its own rate on the REINFORCE baseline
    network (as Pyro's AIR example gives its baseline its own learning rate).

    With ``decay_steps > 0`` the model's and guide's rate follows a cosine from
    ``learning_rate`` down to ``final_learning_rate`` over that many steps, then stays.
    """
    if isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 0:
        raise ValueError(
            f"decay_steps={decay_steps!r} must be a whole number of steps >= 0 (0: no decay)."
        )
    rate = learning_rate
    if decay_steps > 0:
        final = learning_rate if final_learning_rate is None else final_learning_rate
        if not 0.0 < final <= learning_rate:
            raise ValueError(
                f"final_learning_rate={final} must be in (0, learning_rate={learning_rate}]."
            )
        rate = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=final / learning_rate)
    labels = {"decoder": "main", "guide": "main", "baseline": "baseline"}
    return optax.multi_transform(
        {"main": optax.adam(rate), "baseline": optax.adam(baseline_learning_rate)},
        labels,
    )


def config_optimizer(config: Mapping[str, Any]) -> optax.GradientTransformation:
    """`optimizer` with the rates and schedule of a config."""
    return optimizer(
        float(config["learning_rate"]),
        float(config["baseline_learning_rate"]),
        int(config.get("decay_steps", 0)),
        config.get("final_learning_rate"),
    )


def model_options(config: Mapping[str, Any]) -> dict:
    """The keyword arguments of `make_objective` (and the model) that a config sets."""
    return {
        "num_steps": int(config["max_objects"]),
        "pres_prior": float(config["pres_prior"]),
        "scale_prior": (float(config["scale_prior_loc"]), float(config["scale_prior_sd"])),
        "residual": bool(config.get("residual", False)),
    }


class Evaluator:
    """Count accuracy (guide at its modes) and the ELBO on held-out canvases, compiled once."""

    def __init__(self, test: Canvases, config: Mapping[str, Any], elbo_canvases: int = 256):
        opts = model_options(config)
        self.images = jnp.asarray(test.images)
        self.counts = np.asarray(test.counts)
        self.elbo_images = jnp.asarray(test.images[:elbo_canvases])
        steps, residual = opts["num_steps"], opts["residual"]
        self._counts = jax.jit(
            lambda params, images: _model.infer_counts(params, images, steps, residual)
        )
        elbo = _model.batch_objective(_model.make_objective("reinforce", **opts))
        self._elbo = jax.jit(elbo)

    def counts_of(self, params) -> np.ndarray:
        return np.concatenate(
            [
                np.asarray(self._counts(params, self.images[i : i + 500]))
                for i in range(0, self.images.shape[0], 500)
            ]
        )

    def accuracy(self, params) -> float:
        """The count accuracy alone (the guide at its modes)."""
        return float(np.mean(self.counts_of(params) == self.counts))

    def __call__(self, params, key=None) -> dict:
        inferred = self.counts_of(params)
        key = jax.random.key(123) if key is None else key
        return {
            "count_accuracy": float(np.mean(inferred == self.counts)),
            "test_elbo": float(self._elbo(key, params, self.elbo_images)),
        }


def train_air(
    key: jax.Array,
    train: Canvases,
    evaluator: Evaluator,
    config: Mapping[str, Any],
    *,
    max_seconds: float | None = None,
    progress: bool = True,
    validation: Evaluator | None = None,
) -> tuple[dict, dict]:
    """Train with ``config["estimator"]`` for ``config["num_steps"]`` steps (or until
    ``max_seconds`` of training time), evaluating every ``config["eval_every"]`` steps.

    With a ``validation`` evaluator, each evaluation also measures the count accuracy
    on the validation canvases, and the parameters returned are those of the
    evaluation where it was highest (the first, on ties): early stopping that never
    looks at the test canvases of ``evaluator``.

    Training runs as `ppl.Trainer.run` calls of ``eval_every`` steps (the Adam state
    and step count carry over; the compiled chunk is reused), the same steps as one
    ``ppl.fit``. The clock counts training only: compilation (a first, discarded
    chunk) and evaluations are excluded.

    Returns:
        ``(params, curve)``; ``curve`` holds per evaluation the step, the training
        seconds so far, the count accuracy and held-out ELBO, and the per-step objective
        history; with ``validation``, also ``val_count_accuracy`` per evaluation and
        ``selected_step``, the step of the parameters returned.
    """
    estimator = config["estimator"]
    sizes = _model.Sizes.from_config(config)
    key_init, key_fit = jax.random.split(key)
    params = _model.init_params(key_init, sizes)
    objective = _model.batch_objective(
        _model.make_objective(
            estimator, rws_particles=int(config["rws_particles"]), **model_options(config)
        )
    )
    opt = config_optimizer(config)
    batch_size = int(config["batch_size"])
    if batch_size > train.images.shape[0]:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {train.images.shape[0]} training canvases."
        )
    data = jnp.asarray(train.images)
    total, every = int(config["num_steps"]), int(config["eval_every"])
    curve = {"step": [0], "seconds": [0.0], **{k: [v] for k, v in evaluator(params).items()}}
    if validation is not None:
        curve["val_count_accuracy"] = [validation.accuracy(params)]
    selected, selected_step = params, 0
    seconds = 0.0
    trainer = ppl.Trainer(objective, opt, batch_size=batch_size, chunk_size=every)
    state = trainer.init(key_fit, params)
    # compile (a throw-away chunk), so the clock measures training
    trainer.run(state, min(every, total), data=data)
    chunks = []
    with tqdm(total=total, desc=f"AIR {estimator}", disable=not progress) as bar:
        step = 0
        while step < total and (max_seconds is None or seconds < max_seconds):
            length = min(every, total - step)
            start = time.perf_counter()
            state, values = trainer.run(state, length, data=data, check_finite=False)
            jax.block_until_ready(state.params)
            seconds += time.perf_counter() - start
            chunks.append(values)
            step += length
            params = state.params
            metrics = evaluator(params)
            curve["step"].append(step)
            curve["seconds"].append(seconds)
            for name, value in metrics.items():
                curve[name].append(value)
            if validation is not None:
                curve["val_count_accuracy"].append(validation.accuracy(params))
                if curve["val_count_accuracy"][-1] > max(curve["val_count_accuracy"][:-1]):
                    selected, selected_step = params, step
            bar.update(step - bar.n)
            bar.set_postfix(
                acc=f"{metrics['count_accuracy']:.3f}", elbo=f"{metrics['test_elbo']:.0f}"
            )
    history = np.concatenate(chunks) if chunks else np.zeros((0,))
    curve = {k: np.asarray(v) for k, v in curve.items()}
    curve["history"] = np.asarray(history)
    if validation is None:
        return params, curve
    curve["selected_step"] = np.asarray(selected_step)
    return selected, curve
