"""SSVI zoo model: scores, the γ-step, metrics, checkpoints, data, the ELBO, a tiny run."""

from __future__ import annotations

import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl_zoo
from ppl_zoo import ssvi

TINY = {
    **ssvi.DEFAULT_CONFIG,
    "hidden": 64,
    "epochs": 8,
    "learning_rate": 1e-2,
    "delta": 10,
    "eval_samples": 4,
}


# ----------------------------------------------------------------------- removal scores


@pytest.mark.parametrize("loc, scale", [(0.3, 0.2), (-1.0, 0.5), (0.05, 0.3)])
def test_folded_normal_scores_match_monte_carlo(loc, scale):
    rng = np.random.default_rng(0)
    theta = np.abs(rng.normal(loc, scale, 400_000))
    for name, samples in (
        ("E_mean_abs", theta),
        ("SNR_mean_abs", None),
        ("E_exp_mean_abs", np.exp(theta)),
        ("SNR_exp_mean_abs", None),
    ):
        value = float(ssvi.CRITERIA[name](jnp.asarray(loc), jnp.asarray(scale), 1.0))
        if samples is None:
            base = theta if name == "SNR_mean_abs" else np.exp(theta)
            expected = base.mean() / base.std()
            assert value == pytest.approx(expected, rel=0.01), name
        else:
            standard_error = samples.std() / math.sqrt(samples.size)
            assert abs(value - samples.mean()) < 5 * standard_error, name


def test_removal_score_is_minus_inf_off_support_and_rejects_unknown_names():
    mask = jnp.array([True, False, True])
    score = ssvi.removal_score("snr", jnp.array([1.0, 5.0, -2.0]), jnp.ones(3), mask)
    np.testing.assert_array_equal(np.asarray(score), [1.0, -np.inf, 2.0])
    with pytest.raises(ValueError, match="criterion must be one of"):
        ssvi.removal_score("magnitude", jnp.ones(3), jnp.ones(3), mask)


# ----------------------------------------------------------------------------- γ-step


def test_exchange_drops_lowest_scores_and_grows_largest_gradients():
    mask = jnp.array([True, True, True, True, False, False, False, False])
    loc = jnp.array([0.1, -2.0, 0.5, 3.0, 0.0, 0.0, 0.0, 0.0])
    gradient = jnp.array([9.0, 9.0, 9.0, 9.0, 0.2, -7.0, 1.0, 0.0])
    new, kept, grown = ssvi.exchange(mask, loc, jnp.ones(8), gradient, 2, "mean")
    np.testing.assert_array_equal(np.asarray(kept), [0, 1, 0, 1, 0, 0, 0, 0])
    # candidates are all entries not kept (the dropped ones have gradient 9)
    np.testing.assert_array_equal(np.asarray(grown), [1, 0, 1, 0, 0, 0, 0, 0])
    assert int(new.sum()) == 4


def test_exchange_keeps_the_count_for_any_traced_number_without_recompiling():
    key_mask, key_loc, key_grad = jax.random.split(jax.random.key(0), 3)
    mask = jax.random.bernoulli(key_mask, 0.2, (30, 20))
    loc = jax.random.normal(key_loc, (30, 20)) * mask
    gradient = jax.random.normal(key_grad, (30, 20))
    run = jax.jit(
        lambda n: ssvi.exchange(mask, loc, jnp.full((30, 20), 0.1), gradient, n, "SNR_mean_abs")
    )
    for num_drop in (0, 1, 7, int(mask.sum())):
        new, kept, grown = run(num_drop)
        assert int(new.sum()) == int(mask.sum())
        assert int(kept.sum()) == int(mask.sum()) - num_drop
        assert not bool(jnp.any(kept & grown))
        assert not bool(jnp.any(kept & ~mask))
    assert run._cache_size() == 1


def test_exchange_fraction_is_cosine_and_stops_at_end():
    np.testing.assert_allclose(float(ssvi.exchange_fraction(0, 0.3, 100)), 0.3)
    np.testing.assert_allclose(float(ssvi.exchange_fraction(50, 0.3, 100)), 0.15, rtol=1e-6)
    assert float(ssvi.exchange_fraction(100, 0.3, 100)) == 0.0


def test_layer_counts_hit_the_overall_density_and_keep_the_first_convolution_dense():
    arch = ssvi.architecture("mnist1d", "cnn")
    counts = ssvi.layer_counts(arch, 0.1)
    total = sum(math.prod(layer.shape) for layer in arch)
    assert sum(counts.values()) == round(0.1 * total)
    assert counts["conv0"] == math.prod(arch[0].shape)
    with pytest.raises(ValueError, match="density must be in"):
        ssvi.layer_counts(arch, 0.0)


def test_training_flops_scale_with_density():
    arch = ssvi.architecture("digits", "mlp")
    settings = ssvi.settings_from_config({**ssvi.DEFAULT_CONFIG, "update": False}, 1000)
    dense = ssvi.training_flops(arch, ssvi.layer_counts(arch, 1.0), settings)
    sparse = ssvi.training_flops(arch, ssvi.layer_counts(arch, 0.1), settings)
    assert sparse / dense == pytest.approx(0.1, rel=1e-3)
    # the dense forward pass: 2 products (LRT) x 2 FLOPs per weight
    assert ssvi.forward_flops(arch) == 4 * (64 * 256 + 256 * 256 + 256 * 10)


# ---------------------------------------------------------------------------- metrics


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # bins: conf 0.9 (2 examples, acc 0.5), 0.6 (acc 1), 0.7 (acc 1)
    expected = 0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.3
    assert ssvi.ece(probs, labels) == pytest.approx(expected)
    assert ssvi.accuracy(probs, labels) == 0.75
    assert ssvi.nll(probs, labels) == pytest.approx(-np.mean(np.log([0.9, 0.1, 0.6, 0.7])))


def test_debiased_l2_calibration_error_hand_computed():
    # one class column with 4 points and 1 bin: bias² - ȳ(1-ȳ)/(n-1)
    probs = np.array([[0.8, 0.2]] * 4)
    labels = np.array([0, 0, 0, 1])
    column0 = max((0.8 - 0.75) ** 2 - 0.75 * 0.25 / 3, 0.0)
    column1 = max((0.2 - 0.25) ** 2 - 0.25 * 0.75 / 3, 0.0)
    expected = math.sqrt((column0 + column1) / 2)
    assert ssvi.debiased_marginal_l2_ce(probs, labels) == pytest.approx(expected)
    # a grossly miscalibrated model has a clearly positive error
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    probs = np.where(labels[:, None] == np.arange(2), 0.1, 0.9)
    assert ssvi.debiased_marginal_l2_ce(probs, labels) > 0.5
    with pytest.raises(ValueError, match="labels must be integers"):
        ssvi.nll(probs, labels.astype(float))


# -------------------------------------------------------------------------- checkpoints


def test_sparse_checkpoint_round_trip_and_size(tmp_path):
    arch = ssvi.architecture("digits", "mlp")  # the benchmark's network
    dense_counts, sparse_counts = ssvi.layer_counts(arch, 1.0), ssvi.layer_counts(arch, 0.1)
    params, masks = ssvi.init_state(jax.random.key(0), arch, sparse_counts)
    size = ssvi.save_sparse(tmp_path / "s.npz", arch, params, masks)
    loaded, loaded_masks = ssvi.load_sparse(tmp_path / "s.npz", arch)
    for name in masks:
        np.testing.assert_array_equal(loaded_masks[name], np.asarray(masks[name]))
        np.testing.assert_array_equal(loaded[name]["loc"], np.asarray(params[name]["loc"]))
        np.testing.assert_array_equal(loaded[name]["rho"], np.asarray(params[name]["rho"]))
    dense_params, dense_masks = ssvi.init_state(jax.random.key(0), arch, dense_counts)
    dense_size = ssvi.save_sparse(tmp_path / "d.npz", arch, dense_params, dense_masks)
    assert dense_size / size > 8.0  # 8 bytes per active weight plus a 1-bit bitmap
    with pytest.raises(ValueError, match="layer"):
        ssvi.load_sparse(tmp_path / "s.npz", ssvi.architecture("mnist1d", "cnn"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ssvi.load_sparse(tmp_path / "missing.npz", arch)


# --------------------------------------------------------------------------------- data


def test_digits_split_is_stratified_and_standardized():
    data = ssvi.load_digits(0)
    assert data.x_train.shape[1] == 64
    total = data.x_train.shape[0] + data.x_valid.shape[0] + data.x_test.shape[0]
    assert total == 1797
    shares = np.bincount(data.y_test, minlength=10) / data.y_test.size
    np.testing.assert_allclose(shares, 0.1, atol=0.01)
    np.testing.assert_allclose(data.x_train.mean(0), 0.0, atol=1e-4)


def test_mnist1d_is_regenerated_offline_and_leaves_numpy_state_alone():
    np.random.seed(123)  # noqa: NPY002 (mnist1d uses the global generator)
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    data = ssvi.load_mnist1d(0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert data.x_train.shape[0] + data.x_valid.shape[0] == 4000
    assert data.x_test.shape == (1000, 40, 1)


def test_bad_configuration_is_named():
    entry = ppl_zoo.REGISTRY["ssvi"]
    with pytest.raises(ValueError, match="dataset must be"):
        entry.load_data({**TINY, "dataset": "mnist"}, None)
    with pytest.raises(ValueError, match="network='cnn' is for mnist1d"):
        entry.load_data({**TINY, "network": "cnn"}, None)
    with pytest.raises(ValueError, match="needs no --data"):
        entry.load_data(TINY, "digits.csv")
    with pytest.raises(ValueError, match="criterion"):
        ssvi.settings_from_config({**TINY, "criterion": "l1"}, 1000)
    with pytest.raises(ValueError, match="batch_size"):
        ssvi.settings_from_config({**TINY, "batch_size": 1000}, 100)
    with pytest.raises(ValueError, match="shift"):
        ssvi.settings_from_config({**TINY, "shift": -1}, 1000)


def _signed_shift(row):
    """The shift of a zero-filled row of non-zero values: leading zeros mean right."""
    return int(np.sum(row == 0.0)) * (1 if row[0] == 0.0 else -1)


def test_shift_augmentation_moves_each_series_and_fills_zeros():
    x = jnp.arange(1.0, 3 * 8 + 1).reshape(3, 8, 1)  # three series of length 8, no zeros
    assert ssvi.shift_examples(jax.random.key(0), x, 0) is x
    moved = np.asarray(ssvi.shift_examples(jax.random.key(0), x, 3))
    for row, original in zip(moved[..., 0], np.asarray(x)[..., 0]):
        s = _signed_shift(row)
        assert abs(s) <= 3
        expected = np.zeros(8)
        if s >= 0:
            expected[s:] = original[: 8 - s]
        else:
            expected[:s] = original[-s:]
        np.testing.assert_array_equal(row, expected)
    # over many rows every offset in [-3, 3] occurs
    many = np.asarray(ssvi.shift_examples(jax.random.key(1), jnp.ones((400, 8, 1)), 3))[..., 0]
    assert len({_signed_shift(row) for row in many}) == 7


# ---------------------------------------------------------------------------- the ELBO


def test_lrt_objective_has_the_weight_space_expectation():
    """Local reparameterization changes the variance, not the expected objective."""
    arch = ssvi.mlp(3, (4,), 2)
    counts = ssvi.layer_counts(arch, 0.5)
    params, masks = ssvi.init_state(jax.random.key(0), arch, counts, init_scale=0.3)
    weights = ssvi.subspace_weights(params, masks)
    x = jax.random.normal(jax.random.key(1), (5, 3))
    y = jnp.array([0, 1, 1, 0, 1])
    keys = jax.random.split(jax.random.key(2), 4000)
    objectives = (ssvi.tempered_elbo(arch, 0.5), ssvi.weight_space_elbo(arch, 0.5))

    @jax.jit  # one compilation for both objectives
    @jax.vmap
    def values(key):
        return [f(key, weights, masks, x, y, 0.01) for f in objectives]

    lrt, weight_space = (np.asarray(v) for v in values(keys))
    standard_error = math.sqrt(lrt.var() / lrt.size + weight_space.var() / weight_space.size)
    assert abs(lrt.mean() - weight_space.mean()) < 4 * standard_error


def test_gradient_is_zero_off_support():
    arch = ssvi.mlp(3, (4,), 2)
    counts = ssvi.layer_counts(arch, 0.5)
    params, masks = ssvi.init_state(jax.random.key(0), arch, counts)
    objective = ssvi.tempered_elbo(arch, 0.5)
    x, y = jnp.ones((2, 3)), jnp.array([0, 1])
    weights, pullback = jax.vjp(lambda p: ssvi.subspace_weights(p, masks), params)
    _, grads = objective.value_and_grad_estimate(jax.random.key(3), weights, masks, x, y, 0.1)
    (grad_params,) = pullback(grads[0])
    for name in masks:
        off = ~np.asarray(masks[name])
        assert np.all(np.asarray(grad_params[name]["loc"])[off] == 0)
        assert np.all(np.asarray(grad_params[name]["rho"])[off] == 0)
        assert np.any(np.asarray(grads[0][name]["loc"])[off] != 0)  # the growth signal


def test_update_flag_switches_the_gamma_step_without_recompiling():
    arch = ssvi.mlp(6, (12,), 3)
    counts = ssvi.layer_counts(arch, 0.3)
    x = jax.random.normal(jax.random.key(1), (40, 6))
    y = jnp.arange(40) % 3
    config = {**TINY, "epochs": 6, "batch_size": 10, "delta": 4}
    runs = {}
    for update in (True, False):
        settings = ssvi.settings_from_config({**config, "update": update}, 40)
        params, masks = ssvi.init_state(jax.random.key(0), arch, counts)
        _, new_masks, info = ssvi.train_run(
            jax.random.key(2), arch, settings, params, masks, x, y, progress=False
        )
        moved = any(bool(np.any(new_masks[k] != masks[k])) for k in masks)
        runs[update] = (moved, int(info["exchanged"].sum()), set(info["nnz"].tolist()))
    assert runs[True][0] and runs[True][1] > 0
    assert runs[False] == (False, 0, {sum(counts.values())})
    assert runs[True][2] == {sum(counts.values())}


# ------------------------------------------------------------------------ a tiny run


def test_smoke_train_and_eval(tmp_path):
    entry = ppl_zoo.REGISTRY["ssvi"]
    data = entry.load_data(TINY, None)
    trained = entry.train(jax.random.key(0), data, TINY, tmp_path)
    history = json.loads((tmp_path / "history.json").read_text())
    nnz = np.asarray(history["nnz"])
    assert nnz.min() == nnz.max() == trained["active_weights"]
    assert sum(history["exchanged"]) > 0  # the support moved
    assert trained["active_weights"] == round(0.1 * trained["total_weights"])
    assert (tmp_path / "training.png").stat().st_size < 300_000
    evaluated = entry.evaluate(jax.random.key(0), data, TINY, tmp_path)
    assert evaluated == pytest.approx({k: trained[k] for k in evaluated})
    assert trained["accuracy"] > 0.5  # 72 steps at 90 % sparsity: far above chance (0.1)


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    """The recorded benchmark (``benchmarks/zoo_ssvi.py``, both data sets, 5 seeds per
    arm on digits and 3 on MNIST-1D, about 23 minutes on two cores), run once for the
    target tests below."""
    sys.path.insert(0, "benchmarks")
    import zoo_ssvi

    out = tmp_path_factory.mktemp("ssvi") / "r.json"
    return zoo_ssvi.main(["--out", str(out), "--no-docs"])


MNIST1D_GAP = pytest.mark.xfail(
    strict=True,
    reason="measured shortfall, docs/zoo/ssvi.md 'What the recorded run shows': on MNIST-1D "
    "(shifts of up to 4 positions, 100 epochs) SSVI 90% is within 1.7 points of dense VI "
    "but its NLL is 1.57x and its ECE 1.32x dense VI's (target 1.1x); validation runs "
    "without augmentation, with larger shifts and with 50 epochs were further off; a wider "
    "network or a longer run not tried within the slow test's 30 minutes",
)
TARGETS = [
    *(
        f"{data}: {target}"
        for data in ("digits", "mnist1d")
        for target in (
            "SSVI 90% beats static 90% (accuracy)",
            "SSVI 95% beats static 95% (accuracy)",
            ">= 8x fewer training FLOPs at 90%",
            ">= 8x smaller checkpoint at 90%",
            "active weights constant in every SSVI run",
        )
    ),
    "digits: SSVI 90% within 3 points of dense accuracy",
    "digits: SSVI 90% NLL <= 1.1 x dense",
    "digits: SSVI 90% ECE <= 1.1 x dense",
    "mnist1d: SSVI 90% within 3 points of dense accuracy",
    *(
        pytest.param(f"mnist1d: {target}", marks=MNIST1D_GAP)
        for target in (
            "SSVI 90% NLL <= 1.1 x dense",
            "SSVI 90% ECE <= 1.1 x dense",
        )
    ),
]


@pytest.mark.slow
def test_every_target_is_asserted(reproduction):
    names = {p if isinstance(p, str) else p.values[0] for p in TARGETS}
    assert names == set(reproduction["targets"])


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_target(reproduction, target):
    assert reproduction["targets"][target], target
