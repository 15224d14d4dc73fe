"""VBLE zoo model: operators and adjoints, metrics, the loaders, the ELBO, a tiny run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl_zoo
from ppl import cli
from ppl_zoo import vble

TINY = {
    **vble.DEFAULT_CONFIG,
    "channels": 4,  # the same shapes as the other tests' CAEs (initialization compiles)
    "latent": 4,
    "hyper": 2,
    "num_crops": 64,
    "cae_steps": 4,
    "cae_batch_size": 4,
    "tasks": "deblur",
    "test_size": 32,
    "crops_per_image": 1,
    "vble_steps": 4,
    "num_samples": 4,
}


def _operators(shape=(32, 32)):
    return [
        vble.Blur(jnp.asarray(vble.gaussian_kernel(1.5))),
        vble.Downsample(4),
        vble.Mask(jnp.asarray(vble.random_mask(0, shape, 0.5))),
    ]


# ------------------------------------------------------------------------- operators


@pytest.mark.parametrize("index", range(3))
def test_adjoints(index):
    """<A x, y> = <x, A^T y> for random x, y (each operator against its own transpose)."""
    operator = _operators()[index]
    rng = np.random.default_rng(index)
    for _ in range(3):
        x = jnp.asarray(rng.standard_normal((32, 32)), jnp.float32)
        y = jnp.asarray(rng.standard_normal(operator.output_shape((32, 32))), jnp.float32)
        left = float(jnp.vdot(operator(x), y))
        right = float(jnp.vdot(x, operator.transpose(y)))
        assert left == pytest.approx(right, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("index", range(3))
def test_adjoint_is_the_jax_transpose(index):
    operator = _operators()[index]
    y = jnp.asarray(np.random.default_rng(5).standard_normal(operator.output_shape((32, 32))))
    (transposed,) = jax.linear_transpose(operator, jnp.zeros((32, 32)))(y)
    np.testing.assert_allclose(operator.transpose(y), transposed, atol=1e-5)


def _dense(operator, shape):
    """The matrix of ``operator`` acting on flattened images of ``shape``."""
    flat = jnp.zeros(int(np.prod(shape)))
    matrix = jax.jacfwd(lambda v: operator(v.reshape(shape)).ravel())(flat)
    return np.asarray(matrix, np.float64)


@pytest.mark.parametrize("index", range(3))
def test_solve_gram_is_the_dense_solve(index):
    """``solve_gram(r, s, t) = (s I + t A A^T)^{-1} r`` against the dense matrix."""
    shape = (16, 16)
    operator = _operators(shape)[index]
    a = _dense(operator, shape)
    r = np.random.default_rng(index).standard_normal(a.shape[0])
    out_shape = operator.output_shape(shape)
    solved = operator.solve_gram(jnp.asarray(r.reshape(out_shape), jnp.float32), 0.01, 0.3)
    expected = np.linalg.solve(0.01 * np.eye(a.shape[0]) + 0.3 * a @ a.T, r)
    np.testing.assert_allclose(np.ravel(solved), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("index", range(3))
def test_vble_xz_samples_are_the_gaussian_conditional(index):
    """With z pinned (widths at their lower bound), VBLE-xz's samples are
    ``p(x | z, y) = N(m, (γ⁻² I + σ⁻² AᵀA)⁻¹)``: the dense mean and variances."""
    from ppl_zoo.vble._restore import _decode_samples_xz

    shape, sigma, gamma = (16, 16), 0.05, 0.1
    operator = _operators(shape)[index]
    cae = vble.init_cae(jax.random.key(0), 4, 4, 2)
    rng = np.random.default_rng(index)
    y = jnp.asarray(rng.random(operator.output_shape(shape)), jnp.float32)
    q = vble.init_latents(cae, jnp.full(shape, 0.5))
    q = q._replace(log_width_z=q.log_width_z - 20.0)
    samples, means = _decode_samples_xz(jax.random.key(1), cae, q, operator, y, sigma, gamma, 4000)
    decoded = np.clip(np.asarray(cae.decode(q.z)[0], np.float64), -0.1, 1.1).ravel()
    a = _dense(operator, shape)
    precision = np.eye(a.shape[1]) / gamma**2 + a.T @ a / sigma**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ (decoded / gamma**2 + a.T @ np.ravel(y) / sigma**2)
    np.testing.assert_allclose(np.ravel(means[0]), mean, atol=1e-4)
    np.testing.assert_allclose(np.ravel(np.mean(samples, 0)), mean, atol=5 * gamma / 60)
    ratio = np.ravel(np.var(samples, 0)) / np.diag(covariance)
    assert abs(np.mean(ratio) - 1.0) < 0.02 and np.all(np.abs(ratio - 1.0) < 0.2)
    variance = vble.conditional_variance(operator, shape, sigma, gamma)
    np.testing.assert_allclose(np.ravel(variance), np.diag(covariance), rtol=1e-3)


def test_vble_xz_objective_at_zero_gamma_is_vble():
    cae = vble.init_cae(jax.random.key(0), 4, 4, 2)
    operator = vble.Downsample(4)
    y = jnp.asarray(np.random.default_rng(0).random((4, 4)), jnp.float32)
    q = vble.init_latents(cae, jnp.full((16, 16), 0.5))
    key = jax.random.key(3)
    plain = vble.vble_objective(key, q, cae, operator, y, 0.1, 0.7)
    assert float(vble.vble_xz_objective(key, q, cae, operator, y, 0.1, 0.7, 0.0)) == (
        pytest.approx(float(plain), rel=1e-5)
    )
    wider = vble.vble_xz_objective(key, q, cae, operator, y, 0.1, 0.7, 0.3)
    assert float(wider) > float(plain)  # the decoder noise can only loosen the data term
    assert vble.decoder_std(0.0067) == pytest.approx(0.0407, abs=1e-4)


def test_operator_values():
    x = jnp.arange(16.0).reshape(4, 4)
    np.testing.assert_allclose(vble.Downsample(2)(x), [[2.5, 4.5], [10.5, 12.5]])
    delta = jnp.zeros((9, 9)).at[4, 4].set(1.0)
    kernel = vble.gaussian_kernel(1.0, 5)
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(vble.Blur(jnp.asarray(kernel))(delta)[2:7, 2:7], kernel, atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 4"):
        vble.Downsample(4)(jnp.zeros((6, 8)))


def test_gradient_divergence_adjoint():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((7, 5)))
    p = jnp.asarray(rng.standard_normal((2, 7, 5)))
    left = float(jnp.vdot(vble.gradient(x), p))
    assert left == pytest.approx(-float(jnp.vdot(x, vble.divergence(p))), rel=1e-5)


# --------------------------------------------------------------------------- metrics


def test_metrics_hand_computed():
    x = np.zeros((8, 8))
    assert vble.psnr(x, x + 0.1) == pytest.approx(20.0)
    assert vble.coverage(np.array([0.0, 1.0, 2.0, 3.0]), np.zeros(4), np.full(4, 1.5)) == 0.5
    assert vble.spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)
    assert vble.ssim(x + 0.5, x + 0.5) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ data


def test_skimage_images_are_bundled():
    images = vble.skimage_images(("camera", "coffee"))
    assert images["camera"].shape == (512, 512) and images["coffee"].ndim == 2
    assert images["coffee"].dtype == np.float32 and 0.0 <= images["coffee"].min()
    assert set(vble.TEST_IMAGES).isdisjoint(vble.TRAIN_IMAGES + vble.VALIDATION_IMAGES)


def test_crops():
    images = {"a": np.random.default_rng(0).random((40, 50)).astype(np.float32)}
    crops = vble.random_crops(0, images, 5, 16)
    assert crops.shape == (5, 1, 16, 16)
    fixed = vble.center_crops(images, 32, 2)
    assert list(fixed) == ["a/0", "a/1"] and fixed["a/0"].shape == (32, 32)


def test_folder_loader(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    for index in range(4):
        color = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        iio.imwrite(tmp_path / f"im{index}.png", color if index % 2 else color[..., 0])
    (tmp_path / "notes.txt").write_text("not an image")
    images = vble.read_image_folder(tmp_path, min_size=32)
    assert sorted(images) == ["im0", "im1", "im2", "im3"]
    assert all(im.shape == (40, 48) and im.max() <= 1.0 for im in images.values())
    split = vble.split_images(images)
    assert len(split.test) == 1 and len(split.validation) == 1 and len(split.train) == 2
    data = vble.load_data({**TINY, "crop_size": 16, "test_size": 32}, tmp_path)
    assert sorted([*data.train, *data.validation, *data.test]) == sorted(images)


def test_folder_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        vble.read_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image files"):
        vble.read_image_folder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"broken\.png: cannot be read as an image"):
        vble.read_image_folder(tmp_path)
    import imageio.v3 as iio

    (tmp_path / "broken.png").unlink()
    iio.imwrite(tmp_path / "small.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"small\.png: image is 10x10"):
        vble.read_image_folder(tmp_path, min_size=32)


# ----------------------------------------------------------------------------- model


def test_uniform_convolved_densities_have_unit_mass():
    """N(μ, σ²) ∗ U(-½, ½) and the logistic mixture ∗ U(-½, ½) sum to 1 over z + ℤ."""
    from ppl_zoo.vble._cae import _gaussian_conditional, _hyper_density

    grid = jnp.arange(-60.0, 61.0) + 0.3
    locs, scales = jnp.array([[0.0], [1.7], [-4.2]]), jnp.array([[0.2], [3.0], [0.11]])
    mass = jnp.sum(jnp.exp(_gaussian_conditional(grid, locs, scales)), axis=-1)
    np.testing.assert_allclose(mass, 1.0, atol=1e-5)
    cae = vble.init_cae(jax.random.key(0), 4, 4, 2)
    cae = eqx.tree_at(lambda c: c.h_logits, cae, jnp.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]]))
    mass = jnp.exp(_hyper_density(cae, jnp.broadcast_to(grid, (2, 1, grid.size))))
    np.testing.assert_allclose(jnp.sum(mass, axis=-1), 1.0, atol=1e-5)


def test_vble_objective_is_the_elbo():
    """With λ = 1 the objective is the ELBO per pixel: E[log N(y; A g_s(z), σ²)] +
    E[log p(z, h)] + H(q), up to the Gaussian normalizing constant."""
    cae = vble.init_cae(jax.random.key(0), 4, 4, 2)
    operator = vble.Blur(jnp.asarray(vble.gaussian_kernel(1.0)))
    y = jnp.asarray(np.random.default_rng(0).random((16, 16)), jnp.float32)
    q = vble.init_latents(cae, y)
    q = q._replace(log_width_z=q.log_width_z - 1.0)
    sigma = 0.1
    keys = jax.random.split(jax.random.key(1), 128)
    objective = jax.jit(jax.vmap(lambda k: vble.vble_objective(k, q, cae, operator, y, sigma, 1.0)))
    values = objective(keys)

    def by_hand(key):
        key_z, key_h = jax.random.split(key)
        width_z, width_h = jnp.exp(q.log_width_z), jnp.exp(q.log_width_h)
        z = q.z + width_z * (jax.random.uniform(key_z, q.z.shape) - 0.5)
        h = q.h + width_h * (jax.random.uniform(key_h, q.h.shape) - 0.5)
        x = jnp.clip(cae.decode(z)[0], -0.1, 1.1)
        data = -jnp.sum((operator(x) - y) ** 2) / (2 * sigma**2)
        entropy = jnp.sum(jnp.log(width_z)) + jnp.sum(jnp.log(width_h))
        return (data + vble.log_prior(cae, z, h) + entropy) / y.size

    reference = jax.jit(jax.vmap(by_hand))(jax.random.split(jax.random.key(2), 128))
    error = math.sqrt(float(jnp.var(values) + jnp.var(reference)) / 128)
    assert abs(float(jnp.mean(values) - jnp.mean(reference))) < 4 * error + 1e-6


@pytest.mark.parametrize("task", vble.TASKS)
def test_baselines_improve_on_the_degraded_image(task):
    x = vble.skimage_images(("camera",))["camera"][200:264, 200:264]
    operator, sigma = vble.make_task(task, x.shape, vble.DEFAULT_CONFIG)
    y = vble.degrade(0, x, operator, sigma)
    start = vble.psnr(x, vble.initial_image(task, y, operator, x.shape))
    for method, weight in (("Wiener", 0.1 if task == "deblur" else 1e-3), ("TV", 0.01)):
        out = vble.run_method(method, None, task, None, operator, y, sigma, weight,
                              vble.DEFAULT_CONFIG, x.shape)  # fmt: skip
        assert vble.psnr(x, out["mean"]) > start - 0.5, (task, method)


def test_zoo_entry_trains_and_evaluates(tmp_path):
    entry = ppl_zoo.REGISTRY["vble"]
    data = entry.load_data(TINY, None)
    data = data._replace(test={"camera": data.test["camera"]})  # one crop: seconds
    trained = entry.train(jax.random.key(0), data, TINY, tmp_path)
    evaluated = entry.evaluate(jax.random.key(0), data, TINY, tmp_path)
    assert trained["deblur/VBLE/psnr"] == pytest.approx(evaluated["deblur/VBLE/psnr"], abs=1e-3)
    assert np.isfinite(trained["deblur/VBLE/psnr"]) and np.isfinite(trained["deblur/TV/psnr"])
    assert 0.0 <= trained["deblur/VBLE/coverage90"] <= 1.0
    assert (tmp_path / "cae.eqx").exists() and (tmp_path / "restoration_deblur.png").exists()


def test_cli_lists(capsys):
    assert cli.main(["zoo", "list"]) == 0
    assert "vble" in capsys.readouterr().out


# ---------------------------------------------------------------------------- accuracy


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    """The recorded benchmark (``benchmarks/zoo_vble.py``), run once for the slow tests
    below (about 28 minutes on two quiet cores, CAE training included). The targets are
    asserted for VBLE-xz, the VBLE posterior whose intervals include the CAE's decoder
    noise (the VBLE-z rows are reported beside it in the docs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import zoo_vble

    out = tmp_path_factory.mktemp("vble") / "r.json"
    record = zoo_vble.main(["--no-docs", "--out", str(out)])
    json.dumps(record)
    return record


def _psnr_targets(table, task):
    vble_psnr = table[task]["VBLE-xz"]["psnr"]
    for baseline in ("MAP-z", "Wiener", "TV"):
        assert vble_psnr >= table[task][baseline]["psnr"] + 0.3, (task, baseline, table[task])


@pytest.mark.slow
def test_deblurring_psnr_targets(reproduction):
    _psnr_targets(reproduction["table"], "deblur")


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured shortfall, docs/zoo/vble.md 'Ablation of the 4x super-resolution miss': "
    "VBLE-xz is +0.29 ± 0.17 dB over Tikhonov (target +0.3); Tikhonov sits at its test-optimal "
    "weight, VBLE's optimizer follows the reference's SISR configuration, and 500 iterations "
    "(+0.355 on the test crops, no change on validation) are not adopted without a full rerun",
)
def test_super_resolution_psnr_targets(reproduction):
    _psnr_targets(reproduction["table"], "sr4")


@pytest.mark.slow
def test_calibration_targets(reproduction):
    table = reproduction["table"]
    for task in table:
        assert 0.8 <= table[task]["VBLE-xz"]["coverage90"] <= 0.97, task
        assert table[task]["VBLE-xz"]["spearman_std_error"] >= 0.3, task
