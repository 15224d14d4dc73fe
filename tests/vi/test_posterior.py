"""ppl.to_inference_data: posterior draws of a guide as arviz.InferenceData."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from numpyro.infer.autoguide import AutoDiagonalNormal, AutoNormal

import ppl
from ppl.gen import constrain, init_params

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ's note on its coming refactor
    az = pytest.importorskip("arviz")

NUM_GROUPS = 8
GROUP = jnp.arange(24) % NUM_GROUPS  # three observations per group
Y = jnp.linspace(-2.0, 2.0, 24) + 0.5 * GROUP


def model(group, y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    with numpyro.plate("groups", NUM_GROUPS):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.deterministic("theta_centered", theta - mu)
    with numpyro.plate("data", group.shape[0]):
        numpyro.sample("y", dist.Normal(theta[group], 1.0), obs=y)


def guide(group, y):
    mu_loc = numpyro.param("mu_loc", 0.5)
    mu_scale = numpyro.param("mu_scale", 0.2, constraint=constraints.positive)
    numpyro.sample("mu", dist.Normal(mu_loc, mu_scale))
    tau_loc = numpyro.param("tau_loc", 0.0)
    numpyro.sample("tau", dist.LogNormal(tau_loc, 0.1))
    with numpyro.plate("groups", NUM_GROUPS):
        theta_loc = numpyro.param("theta_loc", jnp.linspace(-1.0, 1.0, NUM_GROUPS))
        theta_scale = numpyro.param(
            "theta_scale", jnp.full(NUM_GROUPS, 0.3), constraint=constraints.positive
        )
        numpyro.sample("theta", dist.Normal(theta_loc, theta_scale))


NUM_SAMPLES = 2000


@pytest.fixture(scope="module")
def params():
    return init_params(jax.random.key(0), guide, GROUP, Y)


@pytest.fixture(scope="module")
def idata(params):
    return ppl.to_inference_data(
        jax.random.key(1), guide, params, GROUP, Y, model=model, num_samples=NUM_SAMPLES
    )


def test_groups(idata):
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "observed_data"}


def test_posterior_dims_and_coords(idata):
    posterior = idata.posterior
    assert set(posterior.data_vars) == {"mu", "tau", "theta", "theta_centered"}
    assert posterior["mu"].dims == ("chain", "draw")
    assert posterior["mu"].shape == (1, NUM_SAMPLES)
    assert posterior["theta"].dims == ("chain", "draw", "groups")
    assert posterior["theta"].shape == (1, NUM_SAMPLES, NUM_GROUPS)
    np.testing.assert_array_equal(posterior["groups"].values, np.arange(NUM_GROUPS))
    assert posterior["theta"].sel(groups=3).shape == (1, NUM_SAMPLES)


def test_deterministic_from_the_same_draws(idata):
    posterior = idata.posterior
    assert posterior["theta_centered"].dims == ("chain", "draw", "groups")
    np.testing.assert_allclose(
        posterior["theta_centered"], posterior["theta"] - posterior["mu"], atol=1e-6
    )


def test_observed_data_is_the_data(idata):
    observed = idata.observed_data
    assert set(observed.data_vars) == {"y"}
    assert observed["y"].dims == ("data",)
    np.testing.assert_array_equal(observed["y"].values, np.asarray(Y))
    np.testing.assert_array_equal(observed["data"].values, np.arange(Y.shape[0]))


def test_posterior_predictive(idata):
    predicted = idata.posterior_predictive["y"]
    assert predicted.dims == ("chain", "draw", "data")
    assert predicted.shape == (1, NUM_SAMPLES, Y.shape[0])
    # redrawn, not the data: y ~ Normal(theta[group], 1) around the posterior of theta
    assert not np.allclose(predicted.values[0, 0], np.asarray(Y))
    expected = idata.posterior["theta"].values[..., np.asarray(GROUP)].mean(axis=(0, 1))
    standard_error = np.sqrt(1.0 + 0.3**2) / np.sqrt(NUM_SAMPLES)
    assert np.all(np.abs(predicted.values.mean(axis=(0, 1)) - expected) < 5 * standard_error)


def test_posterior_mean_matches_guide(idata, params):
    constrained = constrain(guide, params, GROUP, Y)
    theta = idata.posterior["theta"].values.reshape(NUM_SAMPLES, NUM_GROUPS)
    standard_error = np.asarray(constrained["theta_scale"]) / np.sqrt(NUM_SAMPLES)
    error = theta.mean(axis=0) - np.asarray(constrained["theta_loc"])
    assert np.all(np.abs(error) < 5 * standard_error)
    mu = idata.posterior["mu"].values.ravel()
    mu_error = mu.mean() - float(constrained["mu_loc"])
    assert abs(mu_error) < 5 * float(constrained["mu_scale"]) / np.sqrt(NUM_SAMPLES)


@pytest.mark.parametrize("autoguide", [AutoNormal, AutoDiagonalNormal])
def test_autoguides_export_model_latents(autoguide):
    guide = autoguide(model)
    params = init_params(jax.random.key(0), guide, GROUP, Y)
    idata = ppl.to_inference_data(
        jax.random.key(1), guide, params, GROUP, Y, model=model, num_samples=50
    )
    assert set(idata.posterior.data_vars) == {"mu", "tau", "theta", "theta_centered"}
    assert idata.posterior["theta"].dims == ("chain", "draw", "groups")
    assert idata.posterior_predictive["y"].shape == (1, 50, Y.shape[0])
    assert np.all(idata.posterior["tau"].values > 0)


def test_guide_alone_takes_its_own_plates(params):
    idata = ppl.to_inference_data(jax.random.key(2), guide, params, GROUP, Y, num_samples=10)
    assert set(idata.groups()) == {"posterior"}
    assert set(idata.posterior.data_vars) == {"mu", "tau", "theta"}
    assert idata.posterior["theta"].dims == ("chain", "draw", "groups")


def test_unnamed_dims_and_explicit_observed():
    def vector_model(y):
        w = numpyro.sample("w", dist.Normal(jnp.zeros(3), 1.0).to_event(1))
        numpyro.sample("y", dist.Normal(w.sum(), 1.0), obs=y)

    def vector_guide(y):
        numpyro.sample("w", dist.Normal(numpyro.param("w_loc", jnp.zeros(3)), 1.0).to_event(1))

    params = init_params(jax.random.key(0), vector_guide, 1.0)
    idata = ppl.to_inference_data(
        jax.random.key(1),
        vector_guide,
        params,
        1.0,
        model=vector_model,
        num_samples=5,
        observed={"y": np.array([1.0])},
        posterior_predictive=False,
    )
    assert idata.posterior["w"].dims == ("chain", "draw", "w_dim_0")
    assert "posterior_predictive" not in idata.groups()
    np.testing.assert_array_equal(idata.observed_data["y"].values, [1.0])


def test_subsampled_plate_coords_are_its_indices():
    data = jnp.arange(20.0)

    def minibatch_model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        with numpyro.plate("data", y.shape[0], subsample_size=5) as index:
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y[index])

    def mu_guide(y):
        numpyro.sample("mu", dist.Normal(numpyro.param("mu_loc", 0.0), 1.0))

    idata = ppl.to_inference_data(
        jax.random.key(3), mu_guide, {"mu_loc": 0.0}, data, model=minibatch_model, num_samples=4
    )
    index = idata.observed_data["data"].values
    assert index.shape == (5,)
    np.testing.assert_array_equal(idata.observed_data["y"].values, np.asarray(data)[index])
    np.testing.assert_array_equal(idata.posterior_predictive["data"].values, index)


def test_summary(idata):
    summary = az.summary(idata, kind="stats")
    assert "mu" in summary.index
    assert "theta[3]" in summary.index
    assert len(az.summary(idata).index) == 2 + 2 * NUM_GROUPS


def test_plot_posterior_renders_png(idata, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = az.plot_posterior(idata)
    figure = np.ravel(axes)[0].figure
    path = tmp_path / "posterior.png"
    figure.savefig(path)
    plt.close(figure)
    assert path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_parameter_is_named(params):
    incomplete = {name: value for name, value in params.items() if name != "theta_loc"}
    with pytest.raises(ValueError, match=r"'theta_loc'.*ppl\.init_params"):
        ppl.to_inference_data(jax.random.key(1), guide, incomplete, GROUP, Y, model=model)


def test_autoguide_without_params_names_them():
    with pytest.raises(ValueError, match=r"'mu_auto_loc'.*missing"):
        ppl.to_inference_data(jax.random.key(1), AutoNormal(model), {}, GROUP, Y, model=model)


@pytest.mark.parametrize("num_samples", [0, -3, 2.5])
def test_num_samples_must_be_positive(params, num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        ppl.to_inference_data(jax.random.key(1), guide, params, GROUP, Y, num_samples=num_samples)


def test_an_int_plate_size_and_keyword_arguments_pass_through():
    def plated(num_groups, scale, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        with numpyro.plate("groups", num_groups):  # a Python int, as NumPyro users write
            numpyro.sample("y", dist.Normal(mu, scale), obs=y)

    guide = AutoNormal(plated)
    y = jnp.array([1.0, 2.0, 3.0, 4.0])
    params = ppl.init_params(jax.random.key(0), guide, 4, 1.0, y=y)
    idata = ppl.to_inference_data(
        jax.random.key(1), guide, params, 4, 1.0, y=y, model=plated, num_samples=20
    )
    assert idata.posterior["mu"].shape == (1, 20)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "groups")
    assert idata.observed_data["y"].shape == (4,)


def test_a_numpy_generator_as_key_and_an_empty_params_are_named():
    guide = AutoNormal(model)
    params = init_params(jax.random.key(0), guide, GROUP, Y)
    with pytest.raises(TypeError, match=r"to_inference_data: the key must be one PRNG key"):
        ppl.to_inference_data(np.random.default_rng(0), guide, params, GROUP, Y)
    with pytest.raises(ValueError, match=r"missing from params .*call ppl\.init_params"):
        ppl.to_inference_data(jax.random.key(0), AutoNormal(model), {}, GROUP, Y)
