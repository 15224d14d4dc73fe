"""ppl.fit: convergence, minibatches, the NaN guard, checkpoints and resume, errors."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer.autoguide import AutoNormal

import ppl
from ppl import FitResult, fit
from ppl._util import running_mean
from ppl.vi import _fit, _training

Y = jnp.array([0.9, 1.3, 1.1])
PARAMS = {"loc": jnp.asarray(0.0), "log_scale": jnp.asarray(0.0)}
# One optimizer object for the conjugate model: fit compiles once per (objective, optimizer).
ADAM = optax.adam(optax.exponential_decay(0.05, transition_steps=1000, decay_rate=0.1))


@ppl.expectation
def conjugate_elbo(params, y):
    q = dist.Normal(params["loc"], jnp.exp(params["log_scale"]))
    z = ppl.sample(q, ppl.reparam, name="z")
    return dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 0.5).log_prob(y).sum() - q.log_prob(z)


def _exact_posterior(y, prior_sd=1.0, noise_sd=0.5):
    precision = 1.0 / prior_sd**2 + len(y) / noise_sd**2
    return float(np.sum(y) / noise_sd**2 / precision), float(-0.5 * np.log(precision))


def _fit_conjugate(key, num_steps=3000, **kwargs):
    kwargs = {"optimizer": ADAM, "num_samples": 4, "progress": False, **kwargs}
    return fit(key, conjugate_elbo, PARAMS, Y, num_steps=num_steps, **kwargs)


def test_conjugate_model_converges_to_the_exact_posterior():
    exact_loc, exact_log_scale = _exact_posterior(np.asarray(Y))
    assert abs(exact_loc - 1.01538) < 1e-4
    finals = []
    for seed in range(8):
        result = _fit_conjugate(jax.random.key(seed))
        assert isinstance(result, FitResult)
        assert result.num_steps == 3000 and result.history.shape == (3000,)
        assert result.num_bad_steps == 0 and result.bad_steps_report == ""
        finals.append([result.params["loc"], result.params["log_scale"]])
    finals = np.asarray(finals)
    # Where the run stops is random (the score term of the reparameterized ELBO gradient
    # has variance even at the optimum). Over 20 seeds the final loc had sd 0.004 and
    # log_scale 0.009 (posterior sd is 0.28), so each run must land within 6 sd, and the
    # mean over the seeds within 5 standard errors measured from these same runs.
    assert np.all(np.abs(finals[:, 0] - exact_loc) < 0.025)
    assert np.all(np.abs(finals[:, 1] - exact_log_scale) < 0.055)
    standard_error = np.maximum(finals.std(axis=0, ddof=1), 1e-3) / np.sqrt(len(finals))
    bias = np.abs(finals.mean(axis=0) - [exact_loc, exact_log_scale])
    assert np.all(bias < 5 * standard_error), (bias, standard_error)
    # The objective climbs to the log evidence (about -2.67 here).
    assert result.history[:10].mean() < result.history[-200:].mean()


@ppl.expectation
def regression_elbo(params, batch, num_data):
    x, y = batch
    q = dist.Normal(params["w_loc"], jnp.exp(params["w_log_scale"])).to_event(1)
    w = ppl.sample(q, ppl.reparam, name="w")
    log_likelihood = num_data * jnp.mean(dist.Normal(x @ w, 1.0).log_prob(y))
    prior = dist.Normal(jnp.zeros(w.shape), 1.0).to_event(1)
    return log_likelihood + prior.log_prob(w) - q.log_prob(w)


def _regression_data(num_data=240, dim=3):
    key_x, key_noise = jax.random.split(jax.random.key(42))
    x = jax.random.normal(key_x, (num_data, dim))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + jax.random.normal(key_noise, (num_data,))
    return x, y


def test_minibatched_regression_recovers_the_posterior_mean():
    x, y = _regression_data()
    num_data = x.shape[0]
    # Exact posterior of w under the N(0, I) prior and unit noise; mean-field Gaussian VI
    # recovers its mean exactly (the target is Gaussian).
    precision = np.eye(3) + np.asarray(x.T @ x)
    exact_mean = np.linalg.solve(precision, np.asarray(x.T @ y))
    params = {"w_loc": jnp.zeros(3), "w_log_scale": jnp.zeros(3)}
    result = fit(
        jax.random.key(0),
        regression_elbo,
        params,
        num_data,
        optimizer=optax.adam(optax.linear_schedule(0.05, 0.001, 2000, transition_begin=1000)),
        num_steps=3000,
        data=(x, y),
        batch_size=48,
        num_samples=8,
        progress=False,
    )
    # Posterior sd is about 1/sqrt(240) = 0.065. Over seeds, minibatch and sampling noise
    # at the final learning rate (1e-3) left loc within 0.003 and log_scale within 0.04.
    np.testing.assert_allclose(result.params["w_loc"], exact_mean, atol=0.015)
    exact_log_sd = -0.5 * np.log(np.diag(precision))  # mean-field optimum: 1/diag(precision)
    np.testing.assert_allclose(result.params["w_log_scale"], exact_log_sd, atol=0.1)


def test_minibatches_visit_every_example_once_per_epoch():
    num_data, batch_size = 13, 4  # 3 batches per epoch, 1 example left over (dropped)
    rows = jnp.arange(num_data, dtype=jnp.float32)

    def objective(key, params, batch):
        return jnp.sum(2.0 ** batch["rows"]) + 0.0 * params["w"]  # the value encodes the rows

    result = fit(
        jax.random.key(3),
        objective,
        {"w": jnp.asarray(0.0)},
        optimizer=optax.sgd(0.1),
        num_steps=12,
        data={"rows": rows},
        batch_size=batch_size,
        chunk_size=5,
        progress=False,
    )
    codes = result.history.astype(np.int64)
    batches = [{i for i in range(num_data) if code >> i & 1} for code in codes]
    assert all(len(batch) == batch_size for batch in batches)
    epochs = [set().union(*batches[e * 3 : e * 3 + 3]) for e in range(4)]
    assert all(len(epoch) == 3 * batch_size for epoch in epochs)  # no repeats in an epoch
    assert len({tuple(sorted(b)) for b in batches}) > 3  # reshuffled between epochs


def test_iterator_data():
    x, y = _regression_data()
    params = {"w_loc": jnp.zeros(3), "w_log_scale": jnp.zeros(3)}

    def batches(num):
        for i in range(num):
            start = (10 * i) % 240
            yield x[start : start + 10], y[start : start + 10]

    kwargs = {"optimizer": optax.adam(0.05), "progress": False, "chunk_size": 40}
    result = fit(jax.random.key(0), regression_elbo, params, 240, data=batches(300),
                 num_steps=300, **kwargs)  # fmt: skip
    assert result.num_steps == 300
    np.testing.assert_allclose(result.params["w_loc"], [1.0, -2.0, 0.5], atol=0.3)
    with pytest.warns(UserWarning, match="data ran out after 50 of 100 steps"):
        short = fit(jax.random.key(0), regression_elbo, params, 240, data=batches(50),
                    num_steps=100, **kwargs)  # fmt: skip
    assert short.num_steps == 50 and short.history.shape == (50,)


def test_iterator_fast_path_equals_the_filter_jit_path(monkeypatch):
    """Array batches take a plain `jax.jit` step; the result is bitwise the same."""
    x, y = _regression_data()
    params = {"w_loc": jnp.zeros(3), "w_log_scale": jnp.zeros(3)}
    batches = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 240, 10)]
    kwargs = {"optimizer": optax.adam(0.05), "progress": False, "chunk_size": 7}

    def run():
        return fit(jax.random.key(3), regression_elbo, params, 240, data=iter(batches * 2),
                   num_steps=30, **kwargs)  # fmt: skip

    fast = run()
    calls = []
    original = _training._run_one_fast
    monkeypatch.setattr(_training, "_run_one_fast", lambda *a: calls.append(1) or original(*a))
    run()
    assert len(calls) == 30  # the fast path was the one taken
    monkeypatch.setattr(_training, "_fast_stepper", lambda *a: None)
    slow = run()
    for a, b in zip(jax.tree.leaves((fast.params, fast.opt_state, fast.history)),
                    jax.tree.leaves((slow.params, slow.opt_state, slow.history))):  # fmt: skip
        assert np.array_equal(a, b)


def test_iterator_data_stops_after_max_bad_steps_within_a_chunk():
    def objective(key, params, batch):  # NaN once w > 1
        return params["w"] * batch + 0.0 * jnp.sqrt(1.0 - params["w"])

    batches = iter([jnp.asarray(1.0)] * 100)
    with pytest.raises(FloatingPointError, match=r"3 consecutive.*step 4") as info:
        fit(jax.random.key(0), objective, {"w": jnp.asarray(0.0)}, optimizer=optax.sgd(0.3),
            num_steps=100, chunk_size=50, max_bad_steps=3, data=batches,
            progress=False)  # fmt: skip
    last_good = info.value.last_good
    assert last_good.num_steps == 7 and last_good.num_bad_steps == 3
    assert last_good.params["w"] == pytest.approx(1.2)
    assert np.all(np.isnan(last_good.history[4:])) and last_good.history.shape == (7,)


def test_opt_state_continues_training_in_another_call():
    def objective(key, params):  # deterministic: only the optimizer state carries over
        return -jnp.sum((params["w"] - 3.0) ** 2)

    kwargs = {"optimizer": optax.adam(0.1), "progress": False}
    params = {"w": jnp.zeros(2)}
    whole = fit(jax.random.key(0), objective, params, num_steps=20, **kwargs)
    first = fit(jax.random.key(0), objective, params, num_steps=10, **kwargs)
    second = fit(jax.random.key(1), objective, first.params, num_steps=10,
                 opt_state=first.opt_state, **kwargs)  # fmt: skip
    np.testing.assert_allclose(second.params["w"], whole.params["w"], rtol=1e-6)
    restarted = fit(jax.random.key(1), objective, first.params, num_steps=10, **kwargs)
    assert not np.allclose(restarted.params["w"], whole.params["w"], rtol=1e-3)
    with pytest.raises(ValueError, match="opt_state does not match optimizer.init"):
        fit(jax.random.key(1), objective, {"w": jnp.zeros(3)}, num_steps=1,
            opt_state=first.opt_state, **kwargs)  # fmt: skip


def test_equinox_module_params():
    model = eqx.nn.MLP(1, 1, width_size=4, depth=1, activation=jnp.tanh, key=jax.random.key(1))
    x = jnp.linspace(-1.0, 1.0, 32)[:, None]

    def objective(key, model, batch):
        xs, ys = batch
        noise = 0.01 * jax.random.normal(key)
        return -jnp.mean((jax.vmap(model)(xs) - ys) ** 2) + noise

    result = fit(jax.random.key(0), objective, model, optimizer=optax.adam(0.02),
                 num_steps=400, data=(x, 0.5 * x), progress=False)  # fmt: skip
    assert isinstance(result.params, eqx.nn.MLP)
    assert result.params.activation is jnp.tanh
    assert -result.history[-1] < 1e-3 < -result.history[0]


# ----------------------------------------------------------------------------- NaN guard


@ppl.expectation
def sometimes_nan(params):
    z = ppl.sample(dist.Normal(params["a"], 1.0), ppl.reparam, name="z")
    poison = jnp.where(z > 1.5, jnp.nan, 0.0)  # no gradient to z, NaN into b's gradient
    return -(params["a"] ** 2) - (params["b"] - 1.0) ** 2 + params["b"] * poison


def test_nan_steps_are_skipped_counted_and_reported():
    params = {"a": jnp.asarray(0.0), "b": jnp.asarray(0.0)}
    optimizer = optax.adam(0.05)
    kwargs = {"optimizer": optimizer, "chunk_size": 50, "progress": False}
    with pytest.warns(RuntimeWarning, match=r"params\['b'\]") as record:
        result = fit(jax.random.key(0), sometimes_nan, params, num_steps=300, **kwargs)
    bad = np.flatnonzero(~np.isfinite(result.history))
    assert 5 < result.num_bad_steps == bad.size < 60  # P(z > 1.5) is about 7%
    assert f"at step {bad[0]}, where the gradient of params['b']" in result.bad_steps_report
    assert result.bad_steps_report in str(record[0].message)
    np.testing.assert_allclose(result.params["b"], 1.0, atol=0.1)

    # A skipped step changes nothing: stopping right after it equals stopping before it.
    before = fit(jax.random.key(0), sometimes_nan, params, num_steps=int(bad[0]), **kwargs)
    with pytest.warns(RuntimeWarning):
        after = fit(jax.random.key(0), sometimes_nan, params, num_steps=int(bad[0]) + 1, **kwargs)
    for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                    jax.tree.leaves((after.params, after.opt_state))):  # fmt: skip
        assert np.array_equal(a, b)


def test_without_the_nan_guard_the_result_is_the_same_and_a_nan_step_raises(tmp_path):
    kwargs = {"optimizer": optax.adam(0.05), "chunk_size": 4, "progress": False}
    guarded = fit(jax.random.key(2), conjugate_elbo, PARAMS, Y, num_steps=20, **kwargs)
    unguarded = fit(jax.random.key(2), conjugate_elbo, PARAMS, Y, num_steps=20,
                    nan_guard=False, **kwargs)  # fmt: skip
    for a, b in zip(jax.tree.leaves(guarded.params), jax.tree.leaves(unguarded.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    params = {"a": jnp.asarray(0.5), "b": jnp.asarray(0.0)}
    with pytest.raises(FloatingPointError, match=r"non-finite between steps \d+ and \d+ with "
                       r"nan_guard=False.*checkpoint in"):  # fmt: skip
        fit(jax.random.key(0), sometimes_nan, params, num_steps=300, nan_guard=False,
            checkpoint_dir=tmp_path, **kwargs)  # fmt: skip
    with np.load(tmp_path / "checkpoint.npz") as saved:
        assert int(saved["step"]) > 0
        assert all(np.all(np.isfinite(saved[f"params/{i}"])) for i in range(2))


def test_a_non_finite_objective_with_finite_gradients_is_reported_as_such():
    def objective(key, params):
        z = jax.random.normal(key)
        return -(params["a"] ** 2) + jnp.where(z > 2.0, -jnp.inf, 0.0)

    with pytest.warns(RuntimeWarning, match="objective estimate was not finite"):
        result = fit(jax.random.key(1), objective, {"a": jnp.asarray(1.0)},
                     optimizer=optax.sgd(0.01), num_steps=300, progress=False)  # fmt: skip
    assert result.num_bad_steps > 0


def test_consecutive_bad_steps_stop_with_the_last_good_state(tmp_path):
    def objective(key, params):  # grows with w; NaN once w > 1
        return params["w"] + 0.0 * jnp.sqrt(1.0 - params["w"])

    with pytest.raises(FloatingPointError, match=r"5 consecutive.*step 4.*params\['w'\]") as info:
        fit(jax.random.key(0), objective, {"w": jnp.asarray(0.0)}, optimizer=optax.sgd(0.3),
            num_steps=100, chunk_size=3, max_bad_steps=5, checkpoint_dir=tmp_path,
            progress=False)  # fmt: skip
    last_good = info.value.last_good
    assert isinstance(last_good, FitResult)
    assert np.isfinite(last_good.params["w"]) and last_good.params["w"] == pytest.approx(1.2)
    assert last_good.num_steps == 9 and last_good.num_bad_steps == 5
    assert np.all(np.isfinite(last_good.history[:4])) and np.all(np.isnan(last_good.history[4:]))
    with np.load(tmp_path / "checkpoint.npz") as saved:
        assert int(saved["step"]) == 9 and saved["params/0"] == pytest.approx(1.2)
    # Resuming a stopped run tries again from the last good state (and fails again here).
    with pytest.raises(FloatingPointError, match="starting at step 9") as info:
        fit(jax.random.key(0), objective, {"w": jnp.asarray(0.0)}, optimizer=optax.sgd(0.3),
            num_steps=100, chunk_size=3, max_bad_steps=5, checkpoint_dir=tmp_path,
            resume=True, progress=False)  # fmt: skip
    assert info.value.last_good.num_steps == 14 and info.value.last_good.num_bad_steps == 10


# -------------------------------------------------------------------- checkpoints, resume


def test_chunking_and_checkpointing_do_not_change_the_result(tmp_path, monkeypatch):
    reference = _fit_conjugate(jax.random.key(5), num_steps=200)
    written = []
    real_write = _fit.write_checkpoint
    monkeypatch.setattr(
        _fit,
        "write_checkpoint",
        lambda directory, arrays: (
            written.append(int(arrays["step"])) or real_write(directory, arrays)
        ),
    )
    chunked = _fit_conjugate(jax.random.key(5), num_steps=200, chunk_size=7,
                             checkpoint_dir=tmp_path, checkpoint_every=30)  # fmt: skip
    assert written == [30, 60, 90, 120, 150, 180, 200]
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(chunked)):
        assert np.array_equal(a, b)
    # Resuming a finished run changes nothing; resuming to more steps continues it.
    again = _fit_conjugate(jax.random.key(5), num_steps=200, checkpoint_dir=tmp_path, resume=True)
    assert np.array_equal(again.history, reference.history)
    longer = _fit_conjugate(jax.random.key(5), num_steps=300, checkpoint_dir=tmp_path, resume=True)
    straight = _fit_conjugate(jax.random.key(5), num_steps=300)
    for a, b in zip(jax.tree.leaves(longer), jax.tree.leaves(straight)):
        assert np.array_equal(a, b)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    real_savez = np.savez
    calls = []

    def crashing_savez(file, **arrays):
        calls.append(1)
        if len(calls) == 1:
            return real_savez(file, **arrays)
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(OSError, match="disk full"):
        _fit_conjugate(jax.random.key(0), num_steps=200, chunk_size=50, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # the temporary file was removed
    with np.load(tmp_path / "checkpoint.npz") as saved:
        assert int(saved["step"]) == 50 and saved["history"].shape == (50,)


def test_resume_rejects_a_checkpoint_with_another_structure(tmp_path):
    _fit_conjugate(jax.random.key(0), num_steps=10, checkpoint_dir=tmp_path)
    renamed = {"loc": jnp.asarray(0.0), "scale": jnp.asarray(0.0)}
    with pytest.raises(ValueError, match=r"checkpoint has params\['log_scale'\], which params"):
        fit(jax.random.key(0), conjugate_elbo, renamed, Y, optimizer=ADAM, num_steps=20,
            checkpoint_dir=tmp_path, resume=True, progress=False)  # fmt: skip
    reshaped = {"loc": jnp.zeros(2), "log_scale": jnp.asarray(0.0)}
    with pytest.raises(ValueError, match=r"params\['loc'\] is float32\[\] in the checkpoint"):
        fit(jax.random.key(0), conjugate_elbo, reshaped, Y, optimizer=ADAM, num_steps=20,
            checkpoint_dir=tmp_path, resume=True, progress=False)  # fmt: skip


_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np, numpyro.distributions as dist, optax, ppl
from ppl import fit

@ppl.expectation
def objective(params, batch):
    x, y = batch
    q = dist.Normal(params["w_loc"], jnp.exp(params["w_log_scale"])).to_event(1)
    w = ppl.sample(q, ppl.reparam, name="w")
    log_likelihood = 1000 * dist.Normal(x @ w, 1.0).log_prob(y).mean()
    return log_likelihood + dist.Normal(jnp.zeros(200), 1.0).to_event(1).log_prob(w) - q.log_prob(w)

x = jax.random.normal(jax.random.key(1), (1000, 200))
y = x @ jnp.linspace(-1.0, 1.0, 200) + jax.random.normal(jax.random.key(2), (1000,))
params = {"w_loc": jnp.zeros(200), "w_log_scale": jnp.zeros(200)}
mode, directory, out = sys.argv[1:]
kwargs = dict(optimizer=optax.adam(1e-2), num_steps=NUM_STEPS, data=(x, y), batch_size=256,
              num_samples=32, chunk_size=50, progress=False)
result = fit(jax.random.key(0), objective, params, checkpoint_dir=directory,
             resume=mode == "resume", **kwargs)
reference = fit(jax.random.key(0), objective, params, **kwargs) if mode == "resume" else result
np.savez(out, resumed=result.params["w_loc"], resumed_scale=result.params["w_log_scale"],
         resumed_history=result.history, reference=reference.params["w_loc"],
         reference_scale=reference.params["w_log_scale"], reference_history=reference.history)
"""


def _run_script(script, *args, cache, **kwargs):
    # The script runs one program for thousands of steps: its run time, not its compile
    # time, counts, so it compiles at XLA's default level even in the default test run
    # (whose conftest.py asks for level 0): 14 s against 20 s for this test.
    flags = os.environ.get("XLA_FLAGS", "").replace(
        "--xla_backend_optimization_level=0", "--xla_backend_optimization_level=2"
    )
    env = {
        **os.environ,
        "XLA_FLAGS": flags,
        "JAX_PLATFORMS": "cpu",
        # The resumed run reuses the first run's compiled program (saves seconds).
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env, **kwargs)


def test_killed_run_resumes_to_bitwise_the_same_parameters(tmp_path):
    num_steps = 2000  # about 0.3 ms a step on 2 CPU cores, in chunks of 50
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(_SCRIPT).replace("NUM_STEPS", str(num_steps)))
    directory = tmp_path / "checkpoints"
    checkpoint = directory / "checkpoint.npz"
    rng = random.Random()
    for _attempt in range(3):  # retry if the run finished before it could be killed
        process = _run_script(script, "run", directory, tmp_path / "unused.npz", cache=tmp_path)
        deadline = time.monotonic() + 120
        while not checkpoint.exists():
            assert process.poll() is None, "the training script failed"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.002)
        # Kill at a random moment: once the run is past a random step, a random 0-5 ms
        # later (mid-chunk, or mid-write). Meanwhile read the checkpoint again and again:
        # readers only ever see complete files.
        kill_after = rng.randrange(50, num_steps // 2)
        step = 0
        while step < kill_after and process.poll() is None:
            with np.load(checkpoint) as saved:
                step = int(saved["step"])
                assert saved["history"].shape == (step,)
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.005))
        process.send_signal(signal.SIGKILL)
        process.wait()
        with np.load(checkpoint) as saved:
            step = int(saved["step"])
        assert step % 50 == 0 and step >= 50
        if step < num_steps:
            break
        checkpoint.unlink()
    else:
        pytest.skip("the training run always finished before it could be killed")
    leftovers = set(os.listdir(directory)) - {"checkpoint.npz"}
    assert all(name.startswith(".checkpoint-") and name.endswith(".tmp") for name in leftovers)

    out = tmp_path / "out.npz"
    resumed = _run_script(script, "resume", directory, out, cache=tmp_path, stderr=subprocess.PIPE)
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read().decode()
    assert os.listdir(directory) == ["checkpoint.npz"]  # stale temporary files cleaned up
    with np.load(out) as result:
        assert result["resumed_history"].shape == (num_steps,)
        for name in ("", "_scale", "_history"):
            assert np.array_equal(result["resumed" + name], result["reference" + name]), name


# ------------------------------------------------------------------------------ the plot


def test_plot_writes_a_png(tmp_path):
    history = np.concatenate([np.linspace(-30.0, -3.0, 150), [np.nan], np.full(49, -3.0)])
    result = FitResult(PARAMS, None, history, 200, 1, "1 of 200 steps were skipped")
    path = result.plot(tmp_path / "history.png")
    assert path == tmp_path / "history.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert running_mean(np.array([1.0, np.nan, 3.0]), 2).tolist() == [1.0, 1.0, 3.0]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_steps": 0}, ValueError, "num_steps must be a positive integer, got 0"),
        ({"num_samples": 0}, ValueError, "num_samples must be a positive integer"),
        ({"data": {"x": np.zeros((5, 2)), "y": np.zeros(4)}}, ValueError,
         r"data\['x'\] has 5 rows and data\['y'\] has 4"),
        ({"data": np.zeros((5, 2)), "batch_size": 6}, ValueError,
         r"batch_size=6 is larger than the data \(data has 5 rows\)"),
        ({"batch_size": 2}, ValueError, "batch_size was given but data is None"),
        ({"resume": True}, ValueError, "resume=True needs checkpoint_dir"),
        ({"data": 3.0}, TypeError, "data must be a pytree of arrays"),
    ],
)  # fmt: skip
def test_bad_input(kwargs, error, match):
    kwargs = {"optimizer": ADAM, "num_steps": 10, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        fit(jax.random.key(0), conjugate_elbo, PARAMS, Y, **kwargs)


def test_bad_objective_key_and_params():
    with pytest.raises(TypeError, match="objective must be callable.*got str"):
        fit(jax.random.key(0), "elbo", PARAMS, optimizer=ADAM, num_steps=10)
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        fit(0, conjugate_elbo, PARAMS, Y, optimizer=ADAM, num_steps=10)
    with pytest.raises(ValueError, match="no floating-point arrays to train"):
        fit(jax.random.key(0), conjugate_elbo, {"loc": 0.0}, Y, optimizer=ADAM, num_steps=10)


# ------------------------------------------------- Python numbers as initial values


def _docs_model(y):
    import numpyro

    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 0.5), obs=y)


def _docs_guide(y):  # the guide of docs/programs.md: Python numbers as initial values
    import numpyro

    loc = numpyro.param("loc", 0.0)
    scale = numpyro.param("scale", 1.0, constraint=dist.constraints.positive)
    numpyro.sample("mu", dist.Normal(loc, scale))


def test_parameters_initialised_with_python_numbers_are_trained():
    # Before: init_params returned loc as a Python float, fit held it at 0.0 and shrank
    # the scale instead, without a word.
    params = ppl.init_params(jax.random.key(0), _docs_guide, Y)
    for name, value in params.items():
        assert isinstance(value, jax.Array) and value.dtype == jnp.result_type(float), name
    result = fit(
        jax.random.key(1),
        ppl.objectives.elbo(_docs_model, _docs_guide),
        params,
        Y,
        optimizer=ADAM,
        num_steps=2000,
        progress=False,
    )
    exact_loc, exact_log_scale = _exact_posterior(Y)  # 1.015, log 0.277
    assert abs(float(result.params["loc"]) - exact_loc) < 0.05
    scale = ppl.constrain(_docs_guide, result.params, Y)["scale"]
    assert abs(float(jnp.log(scale)) - exact_log_scale) < 0.15


def test_a_python_float_in_hand_built_params_is_named_in_a_warning():
    params = {"loc": 0.0, "log_scale": jnp.asarray(0.0)}
    with pytest.warns(UserWarning, match=r"params\['loc'\] is a Python float"):
        fit(jax.random.key(0), conjugate_elbo, params, Y, optimizer=ADAM, num_steps=2,
            progress=False)  # fmt: skip


def test_float_fields_of_equinox_modules_raise_no_warning():
    class Module(eqx.Module):
        loc: jax.Array
        log_scale: jax.Array
        rate: float = 0.5  # a setting, as eqx.nn.Dropout's p

    import warnings

    module = Module(jnp.asarray(0.0), jnp.asarray(0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(jax.random.key(0), _module_elbo, module, Y, optimizer=ADAM, num_steps=2,
            progress=False)  # fmt: skip


@ppl.expectation
def _module_elbo(params, y):
    q = dist.Normal(params.loc, jnp.exp(params.log_scale))
    z = ppl.sample(q, ppl.reparam, name="z")
    return dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 0.5).log_prob(y).sum() - q.log_prob(z)


# ------------------------------------------------- NumPyro's calling conventions, errors


def _plate_model(num_groups, sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    with numpyro.plate("groups", num_groups):  # an int plate size: must stay static
        theta = numpyro.sample("theta", dist.Normal(mu, 5.0))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0])
Y_GROUPS = jnp.array([28.0, 8.0, -3.0, 7.0])


def test_an_int_plate_size_and_model_keyword_arguments_pass_through():
    guide = AutoNormal(_plate_model)
    params = ppl.init_params(jax.random.key(0), guide, 4, SIGMA, y=Y_GROUPS)
    objective = ppl.objectives.elbo(_plate_model, guide)
    options = dict(optimizer=optax.adam(0.05), num_steps=300, progress=False, chunk_size=300)
    by_position = fit(jax.random.key(1), objective, params, 4, SIGMA, Y_GROUPS, **options)
    by_keyword = fit(jax.random.key(1), objective, params, 4, SIGMA, y=Y_GROUPS, **options)
    assert np.isfinite(by_position.history).all()
    # the same draws: keyword arguments reach the model as positional ones do
    np.testing.assert_allclose(by_position.history, by_keyword.history, rtol=1e-5)
    assert by_keyword.params["theta_auto_loc"].shape == (4,)
    # the estimate calls take the int statically too; it is not differentiated
    grads = objective.grad_estimate(jax.random.key(2), params, 4, SIGMA, y=Y_GROUPS)
    assert grads[1] is None and grads[2].shape == (4,)
    assert np.isfinite(objective.estimate(jax.random.key(2), params, 4, SIGMA, y=Y_GROUPS))


def test_a_numpy_generator_as_key_is_named_at_every_entry_point():
    generator = np.random.default_rng(0)
    guide = AutoNormal(_plate_model)
    params = ppl.init_params(jax.random.key(0), guide, 4, SIGMA, Y_GROUPS)
    objective = ppl.objectives.elbo(_plate_model, guide)
    calls = {
        "fit": lambda: fit(generator, objective, params, 4, SIGMA, Y_GROUPS, optimizer=ADAM,
                           num_steps=1, progress=False),
        "init_params": lambda: ppl.init_params(generator, guide, 4, SIGMA, Y_GROUPS),
        "to_inference_data": lambda: ppl.to_inference_data(generator, guide, params, 4, SIGMA,
                                                           Y_GROUPS),
        "importance": lambda: ppl.importance(generator, _plate_model, guide, params, 4, SIGMA,
                                             Y_GROUPS),
        "Expectation": lambda: objective.estimate(generator, params, 4, SIGMA, Y_GROUPS),
        "compare": lambda: ppl.compare(None, {"elbo": objective}, generator, params, 4, SIGMA,
                                       Y_GROUPS, progress=False),
    }  # fmt: skip
    for where, call in calls.items():
        with pytest.raises(TypeError, match=f"{where}.*key must be one PRNG key.*Generator"):
            call()
    with pytest.raises(TypeError, match="got 0 .builtins.int"):
        fit(0, objective, params, 4, SIGMA, Y_GROUPS, optimizer=ADAM, num_steps=1)


def test_non_finite_data_and_args_are_named_up_front():
    guide = AutoNormal(_plate_model)
    objective = ppl.objectives.elbo(_plate_model, guide)
    params = ppl.init_params(jax.random.key(0), guide, 4, SIGMA, Y_GROUPS)
    options = dict(optimizer=ADAM, num_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"args\[2\] holds a non-finite value \(nan\) at index 3"):
        fit(jax.random.key(0), objective, params, 4, SIGMA, Y_GROUPS.at[3].set(jnp.nan), **options)
    with pytest.raises(ValueError, match=r"kwargs\['y'\] holds a non-finite value \(inf\)"):
        fit(
            jax.random.key(0), objective, params, 4, SIGMA, y=Y_GROUPS.at[0].set(jnp.inf), **options
        )
    data = {"x": np.ones((5, 2)), "y": np.ones(5)}
    data["x"][2, 1] = np.nan
    with pytest.raises(ValueError, match=r"data\['x'\] holds .* at index \(2, 1\)"):
        fit(jax.random.key(0), conjugate_elbo, PARAMS, data=data, **options)
    # the escape hatch, for a model that masks missing values itself
    with pytest.warns(RuntimeWarning, match="1 of 1 steps were skipped"):
        fit(jax.random.key(0), conjugate_elbo, PARAMS, Y.at[0].set(jnp.nan),
            check_finite=False, **options)  # fmt: skip


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "EOFError"),
        (b"not a checkpoint", "not a readable ppl.fit checkpoint"),
        (b"PK\x03\x04 truncated", "BadZipFile"),
        ("npz", "an .npz file but not a ppl.fit checkpoint"),
        ("truncated", "truncated or not a checkpoint"),
    ],
)
def test_unreadable_checkpoints_are_named(tmp_path, content, match):
    path = tmp_path / "checkpoint.npz"
    if content == "npz":
        np.savez(path, weights=np.ones(3))
    elif content == "truncated":
        _fit_conjugate(jax.random.key(0), num_steps=2, checkpoint_dir=tmp_path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as error:
        _fit_conjugate(jax.random.key(0), num_steps=2, checkpoint_dir=tmp_path, resume=True)
    assert str(path) in str(error.value) and "another checkpoint_dir" in str(error.value)


def test_empty_params_and_an_svi_state_say_what_to_pass():
    objective = ppl.objectives.elbo(_plate_model, AutoNormal(_plate_model))
    with pytest.raises(ValueError, match=r"params is empty\. Call ppl\.init_params"):
        fit(jax.random.key(0), objective, {}, 4, SIGMA, Y_GROUPS, optimizer=ADAM, num_steps=1)
    svi_state = numpyro.infer.svi.SVIState(None, None, None)
    with pytest.raises(TypeError, match=r"SVIState.*svi\.optim\.get_params"):
        fit(jax.random.key(0), objective, svi_state, 4, SIGMA, Y_GROUPS, optimizer=ADAM,
            num_steps=1)  # fmt: skip


def test_a_discrete_site_under_an_autoguide_says_what_ppl_offers():
    def model(y):
        c = numpyro.sample("c", dist.Bernoulli(0.5))
        numpyro.sample("y", dist.Normal(c, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"discrete latent site 'c' .*enumerate.*ppl\.enum"):
        ppl.init_params(jax.random.key(0), AutoNormal(model), 1.0)

    def marked(y):  # the first way out the message offers: sum c out
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        c = numpyro.sample("c", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
        numpyro.sample("y", dist.Normal(mu + c, 1.0), obs=y)

    guide = AutoNormal(numpyro.handlers.block(marked, hide=["c"]))
    params = ppl.init_params(jax.random.key(0), guide, 1.0)
    assert np.isfinite(ppl.objectives.elbo(marked, guide).estimate(jax.random.key(1), params, 1.0))


def test_import_ppl_objectives():
    import importlib

    module = importlib.import_module("ppl.objectives")
    assert module is ppl.objectives and module.iwae is ppl.vi.objectives.iwae
