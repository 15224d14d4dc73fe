"""ppl.importance: Pareto k-hat, ESS, IWELBO and resampled draws of a fitted guide."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints
from numpyro.infer.autoguide import AutoNormal

import ppl

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ's note on its coming refactor
    az = pytest.importorskip("arviz")

Y = jnp.array([0.9, 1.3, 1.1])
NOISE_SD = 0.5


def model(y):
    z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(z, NOISE_SD), obs=y)


def guide(y):
    loc = numpyro.param("loc", 0.0)
    scale = numpyro.param("scale", 1.0, constraint=constraints.positive)
    numpyro.sample("z", dist.Normal(loc, scale))


def _exact(y):
    """Posterior mean and sd of z, and log p(y) (a multivariate normal marginal)."""
    precision = 1.0 + len(y) / NOISE_SD**2
    mean = float(np.sum(y) / NOISE_SD**2 / precision)
    cov = NOISE_SD**2 * np.eye(len(y)) + np.ones((len(y), len(y)))
    log_evidence = float(
        dist.MultivariateNormal(jnp.zeros(len(y)), jnp.asarray(cov)).log_prob(jnp.asarray(y))
    )
    return mean, 1.0 / math.sqrt(precision), log_evidence


def _params(loc, scale):
    return {"loc": jnp.asarray(loc), "scale": jnp.log(jnp.asarray(scale))}


def test_the_exact_posterior_as_guide_is_good_and_its_iwelbo_is_log_evidence():
    mean, sd, log_evidence = _exact(np.asarray(Y))
    result = ppl.importance(jax.random.key(0), model, guide, _params(mean, sd), Y)
    assert result.khat < 0.5 and result.verdict == "good"
    assert result.log_weights.shape == (1000,) and result.draws["z"].shape == (1000,)
    assert abs(result.log_evidence - log_evidence) <= 3 * result.log_evidence_se + 1e-4
    assert result.ess > 990  # every weight is the same
    assert "good" in result.summary()


def test_a_slightly_wide_guide_is_good_and_its_iwelbo_is_within_three_standard_errors():
    mean, sd, log_evidence = _exact(np.asarray(Y))
    result = ppl.importance(
        jax.random.key(1), model, guide, _params(mean + 0.1, 1.3 * sd), Y, num_samples=4000
    )
    assert result.khat < 0.5
    assert 0 < result.log_evidence_se < 0.02
    assert abs(result.log_evidence - log_evidence) <= 3 * result.log_evidence_se
    # the resampled draws are closer to the posterior than the guide's
    resampled = np.asarray(result.resampled["z"])
    assert resampled.shape == (4000,)
    assert abs(resampled.mean() - mean) < abs(np.asarray(result.draws["z"]).mean() - mean)


def test_a_too_narrow_guide_on_a_heavy_tailed_target_is_flagged():
    def heavy(scale):
        numpyro.sample("z", dist.StudentT(2.0, 0.0, scale))

    def narrow(scale):
        numpyro.sample(
            "z", dist.Normal(0.0, numpyro.param("sd", 0.5, constraint=constraints.positive))
        )

    params = ppl.init_params(jax.random.key(0), narrow, 1.0)
    result = ppl.importance(jax.random.key(2), heavy, narrow, params, 1.0, num_samples=2000)
    assert result.khat > 0.7 and result.verdict == "unreliable"
    assert "unreliable" in result.summary()


def test_an_int_plate_size_and_keyword_arguments():
    def plated(num, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", num):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    autoguide = AutoNormal(plated)
    params = ppl.init_params(jax.random.key(0), autoguide, 3, y=Y)
    result = ppl.importance(jax.random.key(1), plated, autoguide, params, 3, y=Y, num_samples=50)
    assert result.draws["mu"].shape == (50,) and np.isfinite(result.log_weights).all()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"params lacks 'loc', 'scale'.*ppl\.init_params"):
        ppl.importance(jax.random.key(0), model, guide, {}, Y)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
        ppl.importance(jax.random.key(0), model, guide, _params(0.0, 1.0), Y, num_samples=1)
    with pytest.raises(TypeError, match="ppl.marginal or ppl.normalize"):
        ppl.importance(jax.random.key(0), model, ppl.normalize(model, guide, num_particles=2),
                       _params(0.0, 1.0), Y)  # fmt: skip


def test_constrained_svi_params_are_recognised_by_their_shape():
    def simplex_guide(y):
        weights = numpyro.param("weights", jnp.ones(3) / 3, constraint=constraints.simplex)
        numpyro.sample("z", dist.Normal(weights[0], 1.0))

    params = {"weights": jnp.ones(3) / 3}  # constrained: unconstrained has shape (2,)
    with pytest.raises(ValueError, match=r"params\['weights'\] has shape \(3,\).*svi\.optim"):
        ppl.importance(jax.random.key(0), model, simplex_guide, params, Y)
    with pytest.raises(ValueError, match=r"params\['weights'\] has shape \(3,\)"):
        ppl.to_inference_data(jax.random.key(0), simplex_guide, params, Y)


def test_to_inference_data_exports_the_resampled_posterior_with_weights_and_khat():
    mean, sd, _ = _exact(np.asarray(Y))
    idata = ppl.to_inference_data(
        jax.random.key(0), guide, _params(mean + 0.2, 2 * sd), Y, model=model,
        num_samples=500, importance=True,
    )  # fmt: skip
    assert idata.posterior["z"].shape == (1, 500)
    assert idata.sample_stats["log_weight"].shape == (1, 500)
    assert idata.sample_stats["psis_log_weight"].dims == ("chain", "draw")
    assert idata.sample_stats.attrs["pareto_k"] < 0.5
    assert idata.sample_stats.attrs["num_proposals"] == 2000
    # the resampled posterior corrects the guide's offset mean
    assert abs(float(idata.posterior["z"].mean()) - mean) < 0.1
    with pytest.raises(ValueError, match="pass model"):
        ppl.to_inference_data(jax.random.key(0), guide, _params(0.0, 1.0), Y, importance=True)


def test_fit_reports_khat_at_the_end_and_warns_above_0_7():
    params = ppl.init_params(jax.random.key(0), guide, Y)
    objective = ppl.objectives.elbo(model, guide)
    result = ppl.fit(jax.random.key(1), objective, params, Y, optimizer=optax.adam(0.05),
                     num_steps=500, progress=False, diagnose=(model, guide))  # fmt: skip
    assert result.importance is not None and result.importance.khat < 0.5

    def heavy(y):
        numpyro.sample("z", dist.StudentT(2.0, 0.0, 1.0))

    def narrow(y):
        numpyro.sample(
            "z", dist.Normal(0.0, numpyro.param("sd", 0.3, constraint=constraints.positive))
        )

    @ppl.expectation
    def nothing(params, y):  # trains nothing: the guide stays too narrow
        return 0.0 * params["sd"]

    with pytest.warns(UserWarning, match=r"k-hat .* > 0.7"):
        result = ppl.fit(jax.random.key(1), nothing, ppl.init_params(jax.random.key(0), narrow, Y),
                         Y, optimizer=optax.sgd(0.0), num_steps=2, progress=False,
                         diagnose=(heavy, narrow))  # fmt: skip
    assert result.importance.khat > 0.7
