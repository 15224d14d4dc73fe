"""The NumPyro private names ppl relies on (ppl/_numpyro.py): if a NumPyro release
renames one, these fail here, naming it."""

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints

from ppl import _numpyro


@pytest.mark.parametrize(
    "constraint, base",
    [
        (constraints.real, constraints.real),
        (constraints.real_vector, constraints.real),
        (constraints.independent(constraints.positive, 2), constraints.positive),
        (
            constraints.independent(constraints.independent(constraints.real, 1), 1),
            constraints.real,
        ),
        (constraints.positive, constraints.positive),
    ],
)
def test_base_constraint(constraint, base):
    assert _numpyro.base_constraint(constraint) is base


def test_is_real():
    assert _numpyro.is_real(constraints.real)
    assert _numpyro.is_real(_numpyro.base_constraint(dist.Normal(jnp.zeros(3)).to_event(1).support))
    for other in (constraints.positive, constraints.unit_interval, constraints.real_vector):
        assert not _numpyro.is_real(other)


@pytest.mark.parametrize("mask", [True, False, np.array([True, False, True])])
def test_mask_of(mask):
    masked = dist.MaskedDistribution(dist.Normal(jnp.zeros(3)), mask)
    assert isinstance(masked, dist.MaskedDistribution)
    np.testing.assert_array_equal(_numpyro.mask_of(masked), mask)


def test_funsor_elimination_sums_a_mixture():
    """The private elimination routine, called as ppl.gen._funsor calls it, gives the
    exact marginal of a two-component mixture."""
    import numpyro

    funsor, enum, enum_log_density = _numpyro.funsor_elimination()

    def model():
        c = numpyro.sample("c", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
        numpyro.sample("x", dist.Normal(jnp.where(c == 1, 2.0, -1.0), 1.0), obs=0.5)

    with enum(first_available_dim=-1):
        result, _, _ = enum_log_density(model, (), {}, {}, funsor.ops.logaddexp, funsor.ops.add)
    exact = np.logaddexp(
        np.log(0.3) + dist.Normal(2.0, 1.0).log_prob(0.5),
        np.log(0.7) + dist.Normal(-1.0, 1.0).log_prob(0.5),
    )
    np.testing.assert_allclose(np.asarray(result.data), exact, rtol=1e-6)
