"""MA-fBM SDE zoo model: closed-form weights, baselines, the ELBO, a tiny training run."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import ppl_zoo
from ppl_zoo import fbm_sde

TINY = {
    **fbm_sde.DEFAULT_CONFIG,
    "num_paths": 8,
    "num_obs": 5,
    "substeps": 4,
    "window": 3,
    "num_steps": 20,
    "warmup": 5,
    "batch_size": 8,
}


# ------------------------------------------------------------------ closed-form weights


@pytest.mark.parametrize("kind", ["I", "II"])
@pytest.mark.parametrize("hurst", [0.3, 0.8])
def test_cost_matches_quadrature_of_kernel_error(kind, hurst):
    gammas = fbm_sde.gamma_grid(3, 10.0)
    a, b, c = fbm_sde.quadratic_cost(hurst, gammas, 1.0, kind)
    best = np.linalg.solve(a, b)
    for weights in (best, best + np.array([0.3, -0.2, 0.1])):
        closed = weights @ a @ weights - 2 * b @ weights + c
        quadrature = fbm_sde.kernel_error_by_quadrature(hurst, gammas, weights, 1.0, kind)
        assert closed == pytest.approx(quadrature, rel=2e-3, abs=1e-5)


def test_reference_cost_at_h08():
    # closed form 0.10708 vs quadrature 0.10711 (K=5, T=1)
    gammas = fbm_sde.gamma_grid(5, 20.0)
    weights = fbm_sde.optimal_weights(0.8, gammas, 1.0, "I")
    a, b, c = fbm_sde.quadratic_cost(0.8, gammas, 1.0, "I")
    assert weights @ a @ weights - 2 * b @ weights + c == pytest.approx(0.10708, abs=5e-5)


@pytest.mark.parametrize(
    "num_processes, gamma_max, type_one, type_two",
    [
        (5, 20.0, [0.080, 0.017, 0.013, 0.098, 0.234], [0.047, 0.0078, 0.0, 1e-4, 1e-4]),
        (8, 1e2, [0.042, 0.006, 0.002, 0.036, 0.120], [0.026, 0.0032, 0.0, 2e-5, 1e-5]),
        (12, 1e3, [0.017, 0.0015, 2e-4, 0.009, 0.047], [0.011, 8e-4, 0.0, 0.0, 0.0]),
    ],
)
def test_relative_error_table(num_processes, gamma_max, type_one, type_two):
    gammas = fbm_sde.gamma_grid(num_processes, gamma_max)
    for hurst, one, two in zip([0.2, 0.3, 0.5, 0.7, 0.8], type_one, type_two):
        assert fbm_sde.relative_error(hurst, gammas, 1.0, "I") == pytest.approx(
            one, rel=0.06, abs=5e-4
        )
        assert fbm_sde.relative_error(hurst, gammas, 1.0, "II") == pytest.approx(
            two, rel=0.5, abs=1e-5
        )


def test_sum_of_weights():
    gammas = fbm_sde.gamma_grid(5, 10.0)
    sums = [fbm_sde.optimal_weights(h, gammas, 2.4, "I").sum() for h in (0.3, 0.5, 0.9)]
    np.testing.assert_allclose(sums, [2.17, 1.0, 0.114], atol=5e-3)
    assert sums[1] == pytest.approx(1.0, abs=1e-9)


def test_type_two_weights_need_float64():
    gammas = fbm_sde.gamma_grid(5, 20.0)
    expected = [66.7, -92.5, 31.7, -5.8, 3.95]
    np.testing.assert_allclose(fbm_sde.optimal_weights(0.2, gammas, 1.0, "II"), expected, atol=0.06)
    a, b, _ = fbm_sde.quadratic_cost(0.2, gammas, 1.0, "II")
    assert np.linalg.cond(a) > 1e6
    in_float32 = np.linalg.solve(a.astype(np.float32), b.astype(np.float32))
    assert np.max(np.abs(in_float32 - expected)) > 1.0  # why the solve is done in float64
    from_jax = fbm_sde.markov_weights(jnp.asarray(0.2), gammas, 1.0, "II")
    np.testing.assert_allclose(np.asarray(from_jax), expected, atol=0.06)


def test_gammaincc_ez_against_mpmath():
    for a in (0.3, 1.2, 1.7):
        for z in (0.5, 9.9, 10.0, 40.0, 2000.0):
            exact = float(mpmath.exp(z) * mpmath.gammainc(a, z, regularized=True))
            assert fbm_sde.gammaincc_ez(a, z) == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize("kind", ["I", "II"])
def test_weight_derivative_and_jax_gradient(kind):
    gammas = fbm_sde.gamma_grid(5, 20.0)
    weights, derivative = fbm_sde.weights_and_derivative(0.35, gammas, 1.0, kind)
    step = 1e-4
    finite = (
        fbm_sde.optimal_weights(0.35 + step, gammas, 1.0, kind)
        - fbm_sde.optimal_weights(0.35 - step, gammas, 1.0, kind)
    ) / (2 * step)
    np.testing.assert_allclose(derivative, finite, rtol=1e-5, atol=1e-6 * np.abs(finite).max())
    probe = jnp.linspace(1.0, 2.0, 5)

    def f(h):
        return jnp.dot(fbm_sde.markov_weights(h, gammas, 1.0, kind), probe)

    grad = jax.jit(jax.grad(f))(jnp.asarray(0.35))
    assert float(grad) == pytest.approx(float(derivative @ np.linspace(1.0, 2.0, 5)), rel=1e-4)
    batched = jax.vmap(lambda h: fbm_sde.markov_weights(h, gammas, 1.0, kind))(
        jnp.array([0.3, 0.6])
    )
    np.testing.assert_allclose(
        batched[1], fbm_sde.optimal_weights(0.6, gammas, 1.0, kind), rtol=1e-5, atol=1e-5
    )


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        fbm_sde.optimal_weights(0.3, [1.0, 2.0], 1.0, "III")
    with pytest.raises(ValueError, match="hurst"):
        fbm_sde.optimal_weights(1.3, [1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="gamma_max"):
        fbm_sde.gamma_grid(5, 0.5)
    with pytest.raises(ValueError, match="--data"):
        fbm_sde.load_data(TINY, Path("some.csv"))


# --------------------------------------------------------------------------- baselines


def test_kalman_matches_dense_covariance():
    data = fbm_sde.make_data(1, 0.7, num_paths=5, num_obs=12, noise=0.1)
    gammas = fbm_sde.gamma_grid(5, 20.0)
    for kind in ("I", "II"):
        weights = fbm_sde.optimal_weights(0.7, gammas, 1.0, kind)
        cov = fbm_sde.ma_fbm_covariance(data.times, weights, gammas, kind, 1.3) + 0.01 * np.eye(12)
        obs = data.observations.astype(np.float64)
        dense = sum(
            float(jax.scipy.stats.multivariate_normal.logpdf(o, np.zeros(12), cov)) for o in obs
        )
        kalman = fbm_sde.kalman_log_likelihood(obs, data.times, weights, 1.3, gammas, 0.1, kind)
        assert kalman == pytest.approx(dense, rel=1e-4)


def test_ma_fbm_variance_close_to_fbm():
    gammas = fbm_sde.gamma_grid(12, 1e3)
    times = np.linspace(0.1, 1.0, 10)
    weights = fbm_sde.optimal_weights(0.3, gammas, 1.0, "I")
    approx = np.diag(fbm_sde.ma_fbm_covariance(times, weights, gammas, "I"))
    exact = fbm_sde.mandelbrot_van_ness_variance(0.3) * times**0.6
    np.testing.assert_allclose(approx, exact, rtol=0.05)


def test_exact_mle_recovers_hurst():
    data = fbm_sde.make_data(3, 0.7, num_paths=64, num_obs=25, noise=0.05)
    estimate = fbm_sde.exact_mle(data.observations, data.times, data.noise)
    assert abs(estimate.hurst - 0.7) < 0.05 and abs(estimate.scale - 1.0) < 0.15


# ------------------------------------------------------------------------ SDE and ELBO


@pytest.mark.parametrize("scheme", ["exp_euler", "euler"])
def test_prior_paths_have_ma_fbm_variance(scheme):
    gammas = fbm_sde.gamma_grid(5, 10.0)
    setup = fbm_sde.SDESetup(
        gammas=tuple(gammas),
        horizon=1.0,
        kind="I",
        num_steps=50,
        obs_steps=(50,),
        noise=0.1,
        scheme=scheme,
        window=1,
        hurst=0.3,
        learn_scale=False,
    )
    params = fbm_sde.init_params(jax.random.key(0), setup)  # zero control: the prior
    xs, kl = fbm_sde.simulate(jax.random.key(1), params, setup, jnp.zeros((4000, 1)))
    weights = fbm_sde.optimal_weights(0.3, gammas, 1.0, "I")
    exact = fbm_sde.ma_fbm_covariance([0.5, 1.0], weights, gammas, "I")
    sample = np.var(np.asarray(xs)[[24, 49]], axis=1)
    tolerance = 0.1 if scheme == "exp_euler" else 0.15  # Euler is biased at this step size
    np.testing.assert_allclose(sample, np.diag(exact), rtol=tolerance)
    assert float(jnp.max(kl)) == 0.0


def test_elbo_is_a_ppl_expectation_with_gradients():
    data = fbm_sde.load_data(TINY, None)
    setup = fbm_sde.hurst_setup(TINY, data)
    params = fbm_sde.init_params(jax.random.key(0), setup)
    elbo = fbm_sde.make_elbo(setup)
    value, (grads, _) = elbo.value_and_grad_estimate(
        jax.random.key(1), params, jnp.asarray(data.observations)
    )
    assert np.isfinite(float(value))
    assert np.isfinite(float(grads["raw_hurst"])) and float(grads["raw_hurst"]) != 0.0
    assert np.all(np.isfinite(np.asarray(grads["gains"])))
    with pytest.raises(ValueError, match="observations must be"):
        elbo.estimate(jax.random.key(1), params, jnp.zeros((3, 2)))


def test_euler_step_limit_is_checked():
    with pytest.raises(ValueError, match="gamma_max"):
        fbm_sde.make_elbo(
            fbm_sde.SDESetup(
                gammas=(0.1, 100.0),
                horizon=1.0,
                kind="I",
                num_steps=10,
                obs_steps=(10,),
                noise=0.1,
                scheme="euler",
            )
        )


def test_smoke_train_and_evaluate(tmp_path):
    entry = ppl_zoo.REGISTRY["fbm_sde"]
    data = entry.load_data(TINY, None)
    trained = entry.train(jax.random.key(0), data, TINY, tmp_path)
    assert (tmp_path / "objective.png").exists() and (tmp_path / "posterior.png").exists()
    assert 0.0 < trained["hurst_vi"] < 1.0 and trained["hurst_vi"] != 0.5
    evaluated = entry.evaluate(jax.random.key(0), data, TINY, tmp_path)
    assert evaluated == pytest.approx(trained)


@pytest.mark.slow
def test_targets(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import zoo_fbm_sde

    record = zoo_fbm_sde.main(["--out", str(tmp_path / "r.json"), "--no-docs"])
    for row in record["hurst"].values():
        assert abs(row["vi_mean"] - row["hurst_true"]) <= 0.05
        assert abs(row["vi_minus_kalman_mean"]) <= 0.03


def test_fractional_ou_variant():
    config = {**TINY, "theta": 1.0, "control": "mlp", "hidden": 8}
    data = fbm_sde.load_data(config, None)
    assert data.observations.shape == (8, 5) and data.theta == 1.0
    setup = fbm_sde.hurst_setup(config, data)
    assert setup.drift == "ou"
    params = fbm_sde.init_params(jax.random.key(0), setup)
    elbo = fbm_sde.make_elbo(setup)
    _, (grads, _) = elbo.value_and_grad_estimate(
        jax.random.key(1), params, jnp.asarray(data.observations)
    )
    assert np.isfinite(float(grads["raw_theta"])) and float(grads["raw_theta"]) != 0.0
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads["control"]))
