"""AIR (models/air): every estimator trains a few steps, the transformer, the loaders.

The smoke tests use tiny canvases and networks and one AIR step (``max_objects=1``;
the hybrid, whose point is MVD then ENUM, gets two), compiled at XLA's lowest
optimization level: compiling the unrolled programs dominates their time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ppl_zoo
import ppl_zoo.air as air

SIZES = {"canvas_size": 12, "window_size": 4, "z_what": 3, "lstm": 6, "decoder": 6, "encoder": 6}
TINY = {
    **air.DEFAULT_CONFIG,
    **SIZES,
    "num_train": 32,
    "num_test": 8,
    "num_validation": 8,
    "max_objects": 1,
    "num_steps": 2,
    "batch_size": 8,
    "eval_every": 2,
    "rws_particles": 2,
    "learning_rate": 1e-2,
}
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.fixture(scope="module")
def data():
    return air.load_data(TINY, None)


@pytest.mark.parametrize("estimator", air.ESTIMATORS)
def test_every_estimator_trains(estimator, data):
    steps = 2 if estimator == "hybrid" else 1
    params = air.init_params(jax.random.key(0), SIZES)
    objective = air.batch_objective(air.make_objective(estimator, num_steps=steps, rws_particles=2))
    opt = air.optimizer(1e-2, 1e-2)
    images = jnp.asarray(data.train.images[:4])

    def step(key, params, state):
        value, grads = jax.value_and_grad(lambda p: -objective(key, p, images))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, -value, grads

    args = (jax.random.key(1), params, opt.init(params))
    compiled = jax.jit(step).lower(*args).compile(compiler_options=FAST)
    new, state, value, grads = compiled(*args)
    new, state, value, grads = compiled(jax.random.key(2), new, state)
    assert np.isfinite(float(value))
    flat = jax.flatten_util.ravel_pytree(grads)[0]
    assert bool(jnp.all(jnp.isfinite(flat)))
    # the guide and the decoder both move
    for part in ("guide", "decoder"):
        before = jax.flatten_util.ravel_pytree(params[part])[0]
        after = jax.flatten_util.ravel_pytree(new[part])[0]
        assert float(jnp.max(jnp.abs(after - before))) > 0.0, part
    assert ("z_pres_0" in air.z_pres_strategies(estimator, jnp.zeros(1), 1)) == (estimator != "rws")


def test_registry_train_and_eval(tmp_path, data):
    entry = ppl_zoo.REGISTRY["air"]
    config = {**TINY, "estimator": "reinforce"}
    trained = entry.train(jax.random.key(0), data, config, tmp_path)
    assert 0.0 <= trained["count_accuracy"] <= 1.0
    assert (tmp_path / "params.npz").exists() and (tmp_path / "training.png").exists()
    evaluated = entry.evaluate(jax.random.key(0), data, config, tmp_path)
    assert evaluated["count_accuracy"] == pytest.approx(trained["count_accuracy"])


def test_transformer_matches_grid_sample_geometry():
    """s = 1 maps the pixel grid onto itself; a shift of 0.4 (two pixels of ten) moves the
    window two columns left, and the inverse transformer crops it back; s = 2 puts the
    object in the canvas region that maps into the window."""
    window = jax.random.uniform(jax.random.key(0), (10, 10))
    placed = air.window_to_image(jnp.array([1.0, 0.0, 0.0]), window, 10)
    np.testing.assert_allclose(placed, window, atol=1e-6)
    shifted = air.window_to_image(jnp.array([1.0, 0.4, 0.0]), window, 10)
    np.testing.assert_allclose(shifted[:, :8], window[:, 2:], atol=1e-5)
    np.testing.assert_allclose(shifted[:, 8:], 0.0, atol=1e-6)
    back = air.image_to_window(jnp.array([1.0, 0.4, 0.0]), shifted, 10)
    np.testing.assert_allclose(back[:, 2:], window[:, 2:], atol=1e-5)
    canvas = air.window_to_image(jnp.array([2.0, 0.5, -0.5]), window, 20)
    assert float(canvas[:, 13:].sum()) == 0.0 and float(canvas[:7, :].sum()) == 0.0
    assert float(canvas[7:17, 3:12].min()) > 0.0


def test_projected_lstm_equals_the_full_step():
    """The guide's LSTM with the canvas projected once per canvas (its rows a leaf of
    their own) is the plain LSTM step, with the same initial values."""
    from ppl_zoo.air._nets import init_lstm, lstm, lstm_input_projection, lstm_projected

    key_cell, key_x, key_in, key_h = jax.random.split(jax.random.key(0), 4)
    cell = init_lstm(key_cell, 30 + 5, 8)
    split_cell = init_lstm(key_cell, 30 + 5, 8, projected_size=30)
    assert split_cell["w_projected"].shape == (30, 32) and split_cell["w"].shape == (13, 32)
    np.testing.assert_array_equal(
        np.concatenate([split_cell["w_projected"], split_cell["w"]]), cell["w"]
    )
    x, inputs = jax.random.normal(key_x, (30,)), jax.random.normal(key_in, (5,))
    state = (jax.random.normal(key_h, (8,)), jnp.ones(8))
    full = lstm(cell, jnp.concatenate([x, inputs]), state)
    split = lstm_projected(split_cell, lstm_input_projection(split_cell, x), inputs, state)
    np.testing.assert_allclose(np.stack(full), np.stack(split), rtol=1e-5, atol=1e-6)
    whole = lstm(split_cell, jnp.concatenate([x, inputs]), state)
    np.testing.assert_allclose(np.stack(full), np.stack(whole), rtol=1e-5, atol=1e-6)


def test_generated_counts(data):
    counts = data.train.counts
    assert counts.min() >= 0 and counts.max() <= TINY["max_objects"]
    empty = data.train.images[counts == 0]
    assert np.all(empty == 0.0)
    assert np.all(data.train.images[counts > 0].reshape(-1, 144).max(axis=1) > 0.0)
    mean_by_count = [data.train.images[counts == c].mean() for c in np.unique(counts)]
    assert mean_by_count == sorted(mean_by_count)


def test_validation_canvases(data):
    """Fresh layouts of the training digits: as many as asked, none of them a training
    or test canvas, and none at all when 0 are asked for."""
    validation = data.validation
    assert validation.images.shape == (TINY["num_validation"], 12, 12)
    assert validation.counts.min() >= 0 and validation.counts.max() <= TINY["max_objects"]
    drawn = validation.images[validation.counts > 0]
    for other in (data.train.images, data.test.images):
        assert not any(np.array_equal(v, o) for v in drawn for o in other)
    assert air.make_split(0, 4, 2, 12, 4, 1).validation is None


def test_training_keeps_the_best_validation_checkpoint(data):
    """``train_air`` with a validation evaluator returns the parameters of the
    evaluation with the best validation count accuracy, not the last ones."""
    config = {**TINY, "estimator": "mvd", "num_steps": 8, "eval_every": 2, "learning_rate": 0.3}
    test, validation = air.Evaluator(data.test, config), air.Evaluator(data.validation, config)
    params, curve = air.train_air(
        jax.random.key(0), data.train, test, config, progress=False, validation=validation
    )
    accuracies = curve["val_count_accuracy"]
    assert len(accuracies) == len(curve["step"]) == 5
    best = int(np.argmax(accuracies))
    assert int(curve["selected_step"]) == curve["step"][best]
    assert validation.accuracy(params) == accuracies[best]
    assert test.accuracy(params) == curve["count_accuracy"][best]


def _guide_pres_probs(params, x, residual):
    """``q(z_pres_t)`` of a two-step guide run with ``z_pres_0 = 1`` held fixed."""
    from numpyro import handlers

    with handlers.trace() as trace, handlers.seed(rng_seed=0):
        with handlers.substitute(data={**params, "z_pres_0": jnp.ones(())}):
            air.guide(x, 2, residual=residual)
    return np.array([float(trace[f"z_pres_{t}"]["fn"].probs) for t in range(2)])


def test_residual_guide_reads_what_is_left(data):
    """DAIR: the first step reads the canvas either way; the second reads the canvas
    minus the decoded first object, so it differs unless the decoder draws nothing."""
    params = air.init_params(jax.random.key(0), SIZES)
    x = jnp.asarray(data.train.images[data.train.counts > 0][0].reshape(-1))
    plain, residual = _guide_pres_probs(params, x, False), _guide_pres_probs(params, x, True)
    assert plain[0] == residual[0]
    assert abs(plain[1] - residual[1]) > 1e-6
    dark = jax.tree.map(lambda a: a, params)
    dark["decoder"][-1]["b"] = jnp.full_like(dark["decoder"][-1]["b"], -80.0)  # draws zeros
    np.testing.assert_allclose(
        _guide_pres_probs(dark, x, True), _guide_pres_probs(dark, x, False), rtol=1e-6
    )


def test_residual_guide_trains(data):
    """The DAIR objective compiles, its gradient is finite, and it reaches the decoder
    through the guide as well as through the model."""
    params = air.init_params(jax.random.key(0), SIZES)
    objective = air.batch_objective(air.make_objective("mvd", num_steps=2, residual=True))
    images = jnp.asarray(data.train.images[:4])
    grad = (
        jax.jit(jax.grad(lambda p, key: objective(key, p, images)))
        .lower(params, jax.random.key(1))
        .compile(compiler_options=FAST)(params, jax.random.key(1))
    )
    flat = jax.flatten_util.ravel_pytree(grad)[0]
    assert bool(jnp.all(jnp.isfinite(flat)))
    assert float(jnp.max(jnp.abs(grad["decoder"][-1]["w"]))) > 0.0
    counts = air.infer_counts(params, images, 2, residual=True)
    assert counts.shape == (4,) and counts.min() >= 0 and counts.max() <= 2


def test_learning_rate_decay():
    """With constant gradients Adam's step is the rate itself: 1e-2 at the start,
    the final 1e-3 once the cosine has run its 10 steps."""
    opt = air.optimizer(1e-2, 1e-3, decay_steps=10, final_learning_rate=1e-3)
    params = {"decoder": jnp.zeros(3), "guide": jnp.zeros(2), "baseline": jnp.zeros(1)}
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    steps = []
    for _ in range(15):
        updates, state = opt.update(grads, state, params)
        steps.append(float(-updates["guide"][0]))
    assert steps[0] == pytest.approx(1e-2, rel=1e-3)
    assert steps[5] == pytest.approx(5.5e-3, rel=1e-3)  # halfway down the cosine
    assert steps[-1] == pytest.approx(1e-3, rel=1e-3)
    assert float(-updates["baseline"][0]) == pytest.approx(1e-3, rel=1e-3)  # its own rate
    with pytest.raises(ValueError, match="final_learning_rate=0.1 must be in"):
        air.optimizer(1e-2, 1e-3, decay_steps=10, final_learning_rate=0.1)
    with pytest.raises(ValueError, match="decay_steps=-5 must be a whole number"):
        air.optimizer(1e-2, 1e-3, decay_steps=-5)
    with pytest.raises(ValueError, match="num_validation=-1 must be >= 0"):
        air.load_data({**TINY, "num_validation": -1}, None)


def test_window_overlap_matches_the_drawn_boxes():
    """The overlap of the two most overlapping digit windows, from the generator's own
    draws, against the boxes rasterized on a fine grid."""
    from ppl_zoo.air._data import _layout

    overlap = air.window_overlap(7, 40, 3)
    counts, scale, centre = _layout(np.random.default_rng(7), 40, 3, (2.2, 3.3))
    grid = np.linspace(-1.0, 1.0, 801)
    for i in range(40):
        boxes = [
            (np.abs(grid[:, None] - centre[i, k, 1]) <= 1.0 / scale[i, k])
            & (np.abs(grid[None, :] - centre[i, k, 0]) <= 1.0 / scale[i, k])
            for k in range(counts[i])
        ]
        worst = max(
            [
                (a & b).sum() / min(a.sum(), b.sum())
                for j, a in enumerate(boxes)
                for b in boxes[j + 1 :]
            ],
            default=0.0,
        )
        assert overlap[i] == pytest.approx(worst, abs=0.02), i
    assert np.all(overlap[counts < 2] == 0.0) and overlap.max() > 0.0


def test_greedy_counts_follow_presence():
    params = air.init_params(jax.random.key(0), SIZES)
    params["guide"]["predict"]["b"] = params["guide"]["predict"]["b"].at[0].set(-50.0)
    images = jnp.zeros((3, 12, 12))
    assert air.infer_counts(params, images, 3).tolist() == [0, 0, 0]
    params["guide"]["predict"]["b"] = params["guide"]["predict"]["b"].at[0].set(50.0)
    assert air.infer_counts(params, images, 3).tolist() == [3, 3, 3]


def test_multi_mnist_loader(tmp_path):
    images = np.zeros((5, 12, 12), np.uint8)
    images[:, 3:6, 3:6] = 255
    labels = np.empty(5, dtype=object)
    for i, n in enumerate([0, 1, 2, 1, 3]):
        labels[i] = np.arange(n)
    path = tmp_path / "mm.npz"
    np.savez(path, x=images, y=labels)
    split = air.load_data({**TINY, "num_test": 2, "num_validation": 0, "max_objects": 3}, path)
    assert split.train.counts.tolist() == [0, 1, 2] and split.test.counts.tolist() == [1, 3]
    assert split.train.images.max() == 1.0
    np.savez(tmp_path / "counts.npz", x=images, counts=np.array([0, 1, 2, 1, 3]))
    assert air.load_multi_mnist(tmp_path / "counts.npz", 1).test.counts.tolist() == [3]
    split = air.load_multi_mnist(tmp_path / "counts.npz", 1, num_validation=2)
    assert split.train.counts.tolist() == [0, 1] and split.validation.counts.tolist() == [2, 1]
    with pytest.raises(ValueError, match="cannot hold out 1 test and 4 validation"):
        air.load_multi_mnist(tmp_path / "counts.npz", 1, num_validation=4)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((3, 4, 4))}, "no array 'x'"),
        ({"x": np.zeros((3, 4, 4))}, "neither 'counts' nor 'y'"),
        ({"x": np.zeros((3, 4, 5)), "counts": np.zeros(3)}, "expected \\(n, size, size\\)"),
        ({"x": np.zeros((3, 4, 4)), "counts": np.zeros(2)}, "2 counts for 3 images"),
        ({"x": np.zeros((3, 4, 4)), "counts": np.array([0, 5, 1])}, "at most 3 objects"),
        ({"x": np.full((3, 4, 4), 2.0), "counts": np.zeros(3)}, "outside \\[0, 1\\]"),
    ],
)
def test_multi_mnist_loader_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        air.load_multi_mnist(path, 1)


def test_loader_missing_and_garbage(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        air.load_multi_mnist(tmp_path / "none.npz", 1)
    (tmp_path / "junk.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="not a NumPy .npz"):
        air.load_multi_mnist(tmp_path / "junk.npz", 1)


def test_bad_estimator():
    with pytest.raises(ValueError, match="estimator must be one of"):
        air.make_objective("gumbel")
    with pytest.raises(ValueError, match="estimator must be one of"):
        air.load_data({**TINY, "estimator": "gumbel"}, None)


@pytest.fixture(scope="module")
def target_run(tmp_path_factory):
    """One run of the benchmark's timing and long phases, shared by the target tests.

    The long phase trains for 15 minutes, half the target's 30, so that the whole test
    stays under 30 minutes on 2 cores (the recorded 30-minute run chose its checkpoint
    on the validation canvases after 218 s, see docs/zoo/air.md)."""
    import sys

    sys.path.insert(0, "benchmarks")
    import air as benchmark

    out = tmp_path_factory.mktemp("air") / "air.json"
    return benchmark.main(
        ["--out", str(out), "--no-docs", "--estimators", "reinforce", "enum",
         "--phases", "timing", "long", "--long", "iwae_mvd", "--residual",
         "--long-seconds", "900", "--long-learning-rate", "1e-3", "--eval-every", "40"]
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured shortfall (docs/zoo/air.md): REINFORCE 4.5x Pyro with both cores "
    "(2026-12-04, quiet), 5.5x (2026-12-06, loaded); target 8x",
)
def test_reinforce_speed_target(target_run):
    """ppl ≥ 8x faster than Pyro per REINFORCE step (the issue's target)."""
    rows = target_run["timing"]["rows"]
    assert rows["reinforce"]["pyro_step"] / rows["reinforce"]["ppl_step"] >= 8.0


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured shortfall (docs/zoo/air.md): ENUM 14.0x Pyro with both cores "
    "(2026-12-04, quiet), 10.4x (2026-12-06, loaded); target 20x",
)
def test_enum_speed_target(target_run):
    """ppl ≥ 20x faster than Pyro per ENUM step (the issue's target)."""
    rows = target_run["timing"]["rows"]
    assert rows["enum"]["pyro_step"] / rows["enum"]["ppl_step"] >= 20.0


@pytest.mark.slow
def test_count_accuracy_target(target_run):
    """The best estimator ≥ 90 % count accuracy within 30 minutes of training (the test
    accuracy of the checkpoint chosen on the validation canvases)."""
    run = target_run["long"]["runs"]["iwae_mvd_residual"]
    chosen = int(np.argmax(run["val_count_accuracy"]))
    assert run["count_accuracy"][chosen] >= 0.9
