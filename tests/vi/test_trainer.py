"""`ppl.Trainer`: init and run take the same steps as `ppl.fit`, however they are split."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ppl
from tests.vi.test_fit import _regression_data, regression_elbo

OPTIMIZER = optax.adam(0.05)
PARAMS = {"w_loc": jnp.zeros(3), "w_log_scale": jnp.zeros(3)}


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def _assert_bitwise_equal(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)


def test_runs_in_pieces_equal_one_fit_bitwise():
    """Minibatch order and step keys depend on (key, step) alone: 70 steps as one fit,
    as one run, or as runs of 5, 30 and 35 steps (splitting epochs of 5 batches and the
    compiled chunks of 20) end with the same parameters, optimizer state and values."""
    x, y = _regression_data()
    fitted = ppl.fit(jax.random.key(3), regression_elbo, PARAMS, 240, optimizer=OPTIMIZER,
                     num_steps=70, data=(x, y), batch_size=48, num_samples=2, chunk_size=20,
                     progress=False)  # fmt: skip
    trainer = ppl.Trainer(regression_elbo, OPTIMIZER, batch_size=48, num_samples=2, chunk_size=20)
    state = trainer.init(jax.random.key(3), PARAMS)
    whole, values = trainer.run(state, 70, 240, data=(x, y))
    _assert_bitwise_equal((whole.params, whole.opt_state, values),
                          (fitted.params, fitted.opt_state, fitted.history))  # fmt: skip
    pieces = []
    for length in (5, 30, 35):
        state, values = trainer.run(state, length, 240, data=(x, y))
        pieces.append(values)
    assert int(state.step) == 70 and int(state.num_bad_steps) == 0
    _assert_bitwise_equal((state.params, state.opt_state, np.concatenate(pieces)),
                          (fitted.params, fitted.opt_state, fitted.history))  # fmt: skip
    assert state.bad_steps_report == ""


def test_iterator_batches_continue_across_runs():
    x, y = _regression_data()
    batches = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 240, 10)]
    fitted = ppl.fit(jax.random.key(1), regression_elbo, PARAMS, 240, optimizer=OPTIMIZER,
                     num_steps=30, data=iter(batches * 2), progress=False)  # fmt: skip
    trainer = ppl.Trainer(regression_elbo, OPTIMIZER)
    state = trainer.init(jax.random.key(1), PARAMS)
    stream = iter(batches * 2)
    state, first = trainer.run(state, 12, 240, data=stream)
    kept = state  # the fast path donates its inputs: never the caller's state
    state, second = trainer.run(state, 18, 240, data=stream)
    _assert_bitwise_equal((state.params, state.opt_state, np.concatenate([first, second])),
                          (fitted.params, fitted.opt_state, fitted.history))  # fmt: skip
    assert int(kept.step) == 12 and all(np.all(np.isfinite(leaf)) for leaf in _leaves(kept.params))
    with pytest.warns(UserWarning, match=r"Trainer.run: data ran out after 3 of 10 steps"):
        state, values = trainer.run(state, 10, 240, data=iter(batches[:3]))
    assert values.shape == (3,) and int(state.step) == 33


def test_arguments_may_change_between_runs():
    """What ARD-VAE does every epoch: a new value of an argument of the objective."""

    def objective(key, params, target):
        return -jnp.sum((params["w"] - target) ** 2)

    trainer = ppl.Trainer(objective, optax.sgd(0.25))
    state = trainer.init(jax.random.key(0), {"w": jnp.zeros(2)})
    state, _ = trainer.run(state, 40, jnp.asarray([1.0, 2.0]))
    np.testing.assert_allclose(state.params["w"], [1.0, 2.0], rtol=1e-6)
    state, _ = trainer.run(state, 40, jnp.asarray([-1.0, 0.0]))
    np.testing.assert_allclose(state.params["w"], [-1.0, 0.0], atol=1e-6)


def test_a_stopped_state_is_raised_with_the_last_good_one_and_can_go_on():
    def objective(key, params, limit):  # NaN once w > limit
        return params["w"] + 0.0 * jnp.sqrt(limit - params["w"])

    trainer = ppl.Trainer(objective, optax.sgd(0.3), max_bad_steps=3, chunk_size=50)
    state = trainer.init(jax.random.key(0), {"w": jnp.asarray(0.0)})
    stopped = r"Trainer.run stopped after 3 consecutive.*step 4"
    with pytest.raises(FloatingPointError, match=stopped) as info:
        trainer.run(state, 100, 1.0)
    last_good, values = info.value.last_good, info.value.values
    assert isinstance(last_good, ppl.TrainState)
    assert int(last_good.step) == 7 and int(last_good.num_bad_steps) == 3
    assert float(last_good.params["w"]) == pytest.approx(1.2)
    assert values.shape == (7,) and np.all(np.isnan(values[4:]))
    assert "3 of 7 steps were skipped" in last_good.bad_steps_report
    # a higher limit lets the stopped state go on (the guard's run counter is reset)
    state, values = trainer.run(last_good, 5, 10.0)
    assert int(state.step) == 12 and np.all(np.isfinite(values))
    assert float(state.params["w"]) == pytest.approx(2.7)


def test_nan_guard_off_raises_when_the_parameters_go_bad():
    def objective(key, params):
        return -jnp.sqrt(1.0 - params["w"])  # w grows to 1.17 in 3 steps, then NaN

    trainer = ppl.Trainer(objective, optax.sgd(0.6), nan_guard=False, chunk_size=10)
    state = trainer.init(jax.random.key(0), {"w": jnp.asarray(0.0)})
    with pytest.raises(FloatingPointError, match=r"non-finite between steps 0 and 10"):
        trainer.run(state, 30)


def test_bad_input_is_named():
    def objective(key, params):
        return -jnp.sum(params["w"] ** 2)

    with pytest.raises(TypeError, match="Trainer: objective must be callable"):
        ppl.Trainer("elbo", OPTIMIZER)
    with pytest.raises(ValueError, match="Trainer: chunk_size must be a positive integer"):
        ppl.Trainer(objective, OPTIMIZER, chunk_size=0)
    with pytest.raises(ValueError, match="Trainer: batch_size must be a positive integer"):
        ppl.Trainer(objective, OPTIMIZER, batch_size=-1)
    trainer = ppl.Trainer(objective, OPTIMIZER)
    with pytest.raises(TypeError, match="Trainer.init: the key must be one PRNG key"):
        trainer.init(0, {"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="Trainer.init: params has no floating-point arrays"):
        trainer.init(jax.random.key(0), {"w": jnp.zeros(2, jnp.int32)})
    with pytest.raises(ValueError, match="Trainer.init: opt_state does not match"):
        trainer.init(jax.random.key(0), {"w": jnp.zeros(2)}, opt_state=OPTIMIZER.init(jnp.zeros(3)))
    with pytest.warns(UserWarning, match=r"Trainer.init: params\['b'\] is a Python float"):
        state = trainer.init(jax.random.key(0), {"w": jnp.zeros(2), "b": 1.0})
    with pytest.raises(TypeError, match="Trainer.run: state must be a TrainState.*got dict"):
        trainer.run({"w": jnp.zeros(2)}, 5)
    with pytest.raises(ValueError, match="Trainer.run: num_steps must be a positive integer"):
        trainer.run(state, 0)
    with pytest.raises(ValueError, match=r"Trainer.run: batch_size was given but data is None"):
        ppl.Trainer(objective, OPTIMIZER, batch_size=4).run(state, 5)
    with pytest.raises(ValueError, match=r"Trainer.run: data holds a non-finite value"):
        trainer.run(state, 5, data=jnp.asarray([1.0, jnp.nan]))
