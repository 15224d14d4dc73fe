"""NumPyro programs inside expectations: sim, density, strategies per site, errors."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.contrib.control_flow import scan
from numpyro.infer import Trace_ELBO
from numpyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

import ppl
from tests.adev.test_unbiased import _keys, _within

Y = jnp.array([0.9, 1.3, 1.1, 0.2])


def normal_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 0.5), obs=y)


def normal_guide(y):
    loc = numpyro.param("loc", 0.0)
    scale = numpyro.param("scale", 1.0, constraint=dist.constraints.positive)
    numpyro.sample("mu", dist.Normal(loc, scale))


def _elbo(model, guide, **sim_kwargs):
    @ppl.expectation
    def elbo(params, *args):
        tr = ppl.sim(guide, *args, params=params, **sim_kwargs)
        return ppl.density(model, tr.choices, *args) - tr.log_density

    return elbo


def _exact_normal_elbo(params):
    loc, scale = params["loc"], jnp.exp(params["scale"])  # biject_to(positive) = exp
    # E_q[log N(mu; 0, 1)] + Σ E_q[log N(y_i; mu, 0.5)] + entropy of q
    e_sq = scale**2 + loc**2
    prior = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * e_sq
    lik = jnp.sum(-0.5 * jnp.log(2 * jnp.pi * 0.25) - (Y**2 - 2 * Y * loc + e_sq) / (2 * 0.25))
    entropy = 0.5 * jnp.log(2 * jnp.pi * jnp.e * scale**2)
    return prior + lik + entropy


def test_elbo_of_a_conjugate_model_is_unbiased():
    params = ppl.init_params(jax.random.key(0), normal_guide, Y)
    params = {"loc": jnp.asarray(0.3), "scale": jnp.asarray(-0.2)}
    elbo = _elbo(normal_model, normal_guide)
    values, (grads, _) = jax.vmap(elbo.value_and_grad_estimate, (0, None, None))(
        _keys(10), params, Y
    )
    # softplus: the positive constraint's bijection in NumPyro
    exact = _exact_normal_elbo(params)
    exact_grads = jax.grad(_exact_normal_elbo)(params)
    _within(values, np.asarray(exact), "ELBO value")
    for name in params:
        _within(grads[name], np.asarray(exact_grads[name]), f"ELBO gradient {name}")


def bernoulli_model():
    c = numpyro.sample("c", dist.Bernoulli(0.3))
    numpyro.sample("y", dist.Normal(2.0 * c, 1.0), obs=1.5)


def bernoulli_guide(strategy=None):
    p = numpyro.param("p", 0.5, constraint=dist.constraints.unit_interval)
    infer = {} if strategy is None else {"strategy": strategy}
    numpyro.sample("c", dist.Bernoulli(p), infer=infer)


def _exact_bernoulli_elbo(params):
    q = jax.nn.sigmoid(params["p"])
    total = 0.0
    for c, w, prior in ((1.0, q, 0.3), (0.0, 1 - q, 0.7)):
        log_p = jnp.log(prior) + dist.Normal(2.0 * c, 1.0).log_prob(1.5)
        total += w * (log_p - jnp.log(w))
    return total


@pytest.mark.parametrize(
    "how", ["default", "argument-enum", "infer-mvd", "argument-baseline"], ids=str
)
def test_discrete_site_gets_an_unbiased_strategy(how):
    guide, kwargs = bernoulli_guide, {}
    if how == "argument-enum":
        kwargs = {"strategies": {"c": ppl.enum}}
    elif how == "infer-mvd":
        guide = lambda: bernoulli_guide(ppl.mvd)  # noqa: E731
    elif how == "argument-baseline":
        kwargs = {"strategies": {"c": ppl.baseline(ppl.reinforce, -2.0)}}
    elbo = _elbo(bernoulli_model, guide, **kwargs)
    params = {"p": jnp.asarray(0.4)}
    values, (grads,) = jax.vmap(elbo.value_and_grad_estimate, (0, None))(_keys(11), params)
    _within(values, np.asarray(_exact_bernoulli_elbo(params)), f"{how} value")
    exact = jax.grad(_exact_bernoulli_elbo)(params)["p"]
    _within(grads["p"], np.asarray(exact), f"{how} gradient")


def test_subsampled_plate_scales_and_shares_the_minibatch():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", y.shape[0], subsample_size=2) as idx:
            numpyro.sample("y", dist.Normal(mu, 0.5), obs=y[idx])

    def guide(y):
        normal_guide(y)
        with numpyro.plate("data", y.shape[0], subsample_size=2):
            pass

    params = {"loc": jnp.asarray(0.3), "scale": jnp.asarray(-0.2)}
    elbo = _elbo(model, guide)
    values, (grads, _) = jax.vmap(elbo.value_and_grad_estimate, (0, None, None))(
        _keys(12), params, Y
    )
    _within(values, np.asarray(_exact_normal_elbo(params)), "subsampled ELBO value")
    exact_grads = jax.grad(_exact_normal_elbo)(params)
    _within(grads["loc"], np.asarray(exact_grads["loc"]), "subsampled ELBO gradient")

    @ppl.expectation
    def same_indices(params, y):
        tr = ppl.sim(guide, y, params=params)
        with numpyro.handlers.trace() as trace:
            ppl.density(model, tr.choices, y)
        return jnp.all(trace["data"]["value"] == tr.choices["data"]).astype(float)

    assert same_indices.estimate(jax.random.key(0), params, Y) == 1.0


def test_deterministic_factor_and_observations():
    def model():
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.deterministic("z2", z**2)
        numpyro.factor("penalty", -0.5 * z**2)
        numpyro.sample("y", dist.Normal(z, 1.0), obs=0.5)

    def guide():
        numpyro.sample("z", dist.Normal(numpyro.param("m", 0.0), 1.0))

    @ppl.expectation
    def check(params):
        tr = ppl.sim(guide, params=params)
        log_p = ppl.density(model, tr.choices)
        z = tr.choices["z"]
        expected = (
            dist.Normal(0.0, 1.0).log_prob(z) - 0.5 * z**2 + dist.Normal(z, 1.0).log_prob(0.5)
        )
        return jnp.abs(log_p - expected) + jnp.abs(tr.log_density - dist.Normal(0.2, 1).log_prob(z))

    assert check.estimate(jax.random.key(1), {"m": jnp.asarray(0.2)}) < 1e-5


def test_numpyro_scan_sites_are_estimated():
    """A Markov chain of Bernoulli states written with numpyro's scan."""

    def model():
        def step(prev, _):
            b = numpyro.sample("b", dist.Bernoulli(jnp.where(prev > 0, 0.8, 0.3)))
            return b, None

        scan(step, jnp.array(0), None, length=3)

    def guide():
        logits = numpyro.param("logits", jnp.zeros(()))

        def step(carry, _):
            b = numpyro.sample("b", dist.Bernoulli(logits=logits))
            return carry, b

        scan(step, 0, None, length=3)

    elbo = _elbo(model, guide)
    params = {"logits": jnp.asarray(0.4)}

    def exact(params):
        q = jax.nn.sigmoid(params["logits"])
        total = 0.0
        for bits in np.ndindex(2, 2, 2):
            prev, log_p, log_q = 0, 0.0, 0.0
            for b in bits:
                pb = 0.8 if prev else 0.3
                log_p += jnp.log(pb if b else 1 - pb)
                log_q += jnp.log(q if b else 1 - q)
                prev = b
            total += jnp.exp(log_q) * (log_p - log_q)
        return total

    values, (grads,) = jax.vmap(elbo.value_and_grad_estimate, (0, None))(_keys(13), params)
    _within(values, np.asarray(exact(params)), "scan ELBO value")
    _within(grads["logits"], np.asarray(jax.grad(exact)(params)["logits"]), "scan gradient")


class GuideParams(eqx.Module):
    loc: jax.Array
    scale: jax.Array


def test_equinox_module_parameters():
    params = GuideParams(jnp.asarray(0.3), jnp.asarray(-0.2))
    elbo = _elbo(normal_model, normal_guide)
    value, (grads, _) = elbo.value_and_grad_estimate(jax.random.key(0), params, Y)
    assert isinstance(grads, GuideParams) and np.isfinite(value)


def _model_for_autoguides(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, s), obs=y)


@pytest.mark.parametrize(
    "autoguide",
    [
        AutoNormal,
        AutoDiagonalNormal,
        AutoMultivariateNormal,
        AutoLowRankMultivariateNormal,
        AutoDelta,
    ],
    ids=lambda g: g.__name__,
)
def test_autoguides_match_numpyro_trace_elbo(autoguide):
    guide = autoguide(_model_for_autoguides)
    params = ppl.init_params(jax.random.key(0), guide, Y)
    elbo = _elbo(_model_for_autoguides, guide)
    values = jax.vmap(elbo.estimate, (0, None, None))(_keys(14, 3000), params, Y)
    numpyro_losses = jax.vmap(
        lambda k: Trace_ELBO().loss(
            k, ppl.constrain(guide, params, Y), _model_for_autoguides, guide, Y
        )
    )(_keys(15, 3000))
    gap = float(jnp.mean(values) + jnp.mean(numpyro_losses))
    se = float(jnp.sqrt(jnp.var(values) / 3000 + jnp.var(numpyro_losses) / 3000))
    assert abs(gap) <= 4 * se + 1e-4, (gap, se)
    grads = elbo.grad_estimate(jax.random.key(1), params, Y)[0]
    assert jax.tree.structure(grads) == jax.tree.structure(params)


def test_iaf_flow_guide_runs():
    guide = AutoIAFNormal(_model_for_autoguides, num_flows=1, hidden_dims=[4])
    params = ppl.init_params(jax.random.key(0), guide, Y)
    elbo = _elbo(_model_for_autoguides, guide)
    value, (grads, _) = elbo.value_and_grad_estimate(jax.random.key(1), params, Y)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# ------------------------------------------------------------------------ errors


def _estimate(fn, *args):
    return ppl.expectation(fn).estimate(jax.random.key(0), *args)


def test_latent_site_missing_from_choices():
    def program(params):
        return ppl.density(normal_model, {}, Y)

    with pytest.raises(
        ValueError, match=r"latent site 'mu' \(Normal\) of normal_model has no value"
    ):
        _estimate(program, {})


def test_guide_site_the_model_does_not_have():
    def program(params):
        return ppl.density(normal_model, {"mu": 0.0, "extra": 1.0}, Y)

    with pytest.raises(
        ValueError, match=r"choices \['extra'\] are not sample sites of normal_model"
    ):
        _estimate(program, {})


def test_value_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"site 'mu' \(Normal\).*shape \(\), got \(3,\)"):
        _estimate(lambda p: ppl.density(normal_model, {"mu": jnp.zeros(3)}, Y), {})


def test_value_outside_the_support():
    def model():
        numpyro.sample("s", dist.LogNormal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"site 's' lies outside the support"):
        _estimate(lambda p: ppl.density(model, {"s": -1.0}), {})

    def traced(p):
        return ppl.density(model, {"s": p})

    with pytest.raises(Exception, match=r"site 's' lies outside the support"):
        float(_estimate(traced, jnp.asarray(-1.0)))  # checked at run time, inside jit


def test_parameter_missing_from_params():
    def program(params):
        return ppl.sim(normal_guide, Y, params=params).log_density

    with pytest.raises(ValueError, match=r"parameter 'scale' of normal_guide is missing"):
        _estimate(program, {"loc": 0.0})


def test_strategy_for_an_unknown_site():
    def program(params):
        return ppl.sim(normal_guide, Y, params=params, strategies={"nu": ppl.reinforce}).log_density

    with pytest.raises(ValueError, match=r"strategies were given for \['nu'\]"):
        _estimate(program, {"loc": 0.0, "scale": 0.0})


def test_reparam_on_a_discrete_site_names_it():
    def program(params):
        return ppl.sim(bernoulli_guide, params=params, strategies={"c": ppl.reparam}).log_density

    with pytest.raises(ValueError, match=r"site 'c'.*reparam"):
        _estimate(program, {"p": 0.0})
