"""Log densities whose gradients are exact where NumPyro's are not.

NumPyro 0.22 (with JAX 0.10) differentiates some log-mass functions wrongly at points
that are common in practice:

* ``BernoulliLogits`` and ``BinomialLogits`` at ``logits == 0`` (a zero-initialised
  bias): their formulas go through ``max(x, 0)`` and ``|x|``, whose JAX derivatives at 0
  are ½ and 0, so ``d/da Bernoulli(logits=a).log_prob(1)`` is 1.0 at ``a = 0`` instead of
  ``1 - sigmoid(0) = 0.5``, and ``Binomial(5, logits=a).log_prob(2)`` gives 2.0 instead
  of ``2 - 5 sigmoid(0) = -0.5``.
* ``BernoulliProbs``, ``BinomialProbs`` and ``GeometricProbs`` at ``probs`` exactly 0 or
  1: the probabilities are clipped into ``[tiny, 1 - eps]`` before the logarithm, and
  the clip's derivative outside that interval is 0 (the exact one-sided derivative of
  ``log p`` at ``p = 1`` is 1). ``GeometricProbs(1).log_prob(0)`` is ``-inf`` instead of 0.
* ``Poisson`` at ``rate == 0`` and ``value == 0``: ``xlogy``'s derivative is ``0/0``
  (NaN) where the exact one is ``-1``.

`log_prob` computes the same values as NumPyro (up to rounding; the clipped values of
the probability forms are kept, so a value outside the support of a saturated
distribution stays finite as in NumPyro) with exact derivatives, for these
distributions and for NumPyro's mask, expand and ``to_event`` wrappers around them;
any other distribution is passed through to its own ``log_prob``. ppl's score terms,
enumeration weights and ``ppl.density`` use it. Laplace-type kinks (``|x - loc|`` at
``x = loc``) are not defects: the derivative does not exist there, and a sample hits
the point with probability zero.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import gammaln

if TYPE_CHECKING:
    from jax.typing import ArrayLike

__all__ = ["log_prob", "exact_distribution"]

sg = jax.lax.stop_gradient


def _xlogy(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x log y`` with the value 0 and the derivative 0 (in ``y``) wherever ``x == 0``."""
    zero = x == 0
    return jnp.where(zero, 0.0, x * jnp.log(jnp.where(zero, 1.0, y)))


def _xlog1py(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x log(1 + y)`` with the value 0 and the derivative 0 wherever ``x == 0``."""
    zero = x == 0
    return jnp.where(zero, 0.0, x * jnp.log1p(jnp.where(zero, 0.0, y)))


def _clip_through(probs: ArrayLike) -> jax.Array:
    """NumPyro's clipped probabilities in value, the identity in derivative."""
    finfo = jnp.finfo(jnp.result_type(probs, float))
    probs = jnp.asarray(probs, jnp.result_type(probs, float))
    return probs + sg(jnp.clip(probs, finfo.tiny, 1.0 - finfo.eps) - probs)


def _float(value: ArrayLike) -> jax.Array:
    return jnp.asarray(value, jnp.result_type(float))


def _logit_mass(value: jax.Array, total_count: ArrayLike, logits: jax.Array) -> jax.Array:
    """``value log σ(a) + (n - value) log σ(-a)``, written so that neither the value nor
    the derivative ``value σ(-a) - (n - value) σ(a)`` cancels at large ``|a|``, and the
    derivative at ``a = 0`` is exactly ``value - n/2`` (``softplus``'s is ½ there)."""
    softplus = jax.nn.softplus
    return -(value * softplus(-logits) + (total_count - value) * softplus(logits))


class _BernoulliLogits(dist.BernoulliLogits):
    def log_prob(self, value: ArrayLike) -> jax.Array:
        return _logit_mass(_float(value), 1.0, self.logits)


class _BernoulliProbs(dist.BernoulliProbs):
    def log_prob(self, value: ArrayLike) -> jax.Array:
        value = _float(value)
        probs = _clip_through(self.probs)
        return _xlogy(value, probs) + _xlog1py(1.0 - value, -probs)


def _log_binomial_coefficient(total_count: jax.Array, value: jax.Array) -> jax.Array:
    return gammaln(total_count + 1.0) - gammaln(value + 1.0) - gammaln(total_count - value + 1.0)


class _BinomialLogits(dist.BinomialLogits):
    def log_prob(self, value: ArrayLike) -> jax.Array:
        value = _float(value)
        total_count = _float(self.total_count)
        return _log_binomial_coefficient(total_count, value) + _logit_mass(
            value, total_count, self.logits
        )


class _BinomialProbs(dist.BinomialProbs):
    def log_prob(self, value: ArrayLike) -> jax.Array:
        value = _float(value)
        total_count = _float(self.total_count)
        probs = _clip_through(self.probs)
        return (
            _log_binomial_coefficient(total_count, value)
            + _xlogy(value, probs)
            + _xlog1py(total_count - value, -probs)
        )


class _GeometricProbs(dist.GeometricProbs):
    def log_prob(self, value: ArrayLike) -> jax.Array:
        value = _float(value)
        probs = _clip_through(self.probs)
        return _xlog1py(value, -probs) + jnp.log(probs)


class _Poisson(dist.Poisson):
    def log_prob(self, value: ArrayLike) -> jax.Array:
        if self.is_sparse:  # NumPyro's sparse path computes only the nonzero terms
            return super().log_prob(value)
        value = _float(value)
        rate = _float(self.rate)
        return _xlogy(value, rate) - gammaln(value + 1.0) - rate


_EXACT = {
    dist.BernoulliLogits: _BernoulliLogits,
    dist.BernoulliProbs: _BernoulliProbs,
    dist.BinomialLogits: _BinomialLogits,
    dist.BinomialProbs: _BinomialProbs,
    dist.GeometricProbs: _GeometricProbs,
    dist.Poisson: _Poisson,
}
_WRAPPERS = (dist.MaskedDistribution, dist.ExpandedDistribution, dist.Independent)


def exact_distribution(distribution: Any) -> Any:
    """``distribution`` with exact log-density derivatives (see the module docstring).

    The same distribution (same parameters, same sampler) whose ``log_prob`` is
    replaced where NumPyro's derivative is wrong; the object itself when nothing needs
    replacing. Mask, expand and ``to_event`` wrappers are rebuilt around the replaced
    base.
    """
    if isinstance(distribution, _WRAPPERS):
        base = exact_distribution(distribution.base_dist)
        if base is distribution.base_dist:
            return distribution
        wrapped = copy.copy(distribution)
        wrapped.base_dist = base
        return wrapped
    exact = _EXACT.get(type(distribution))
    if exact is None:
        return distribution
    replaced = copy.copy(distribution)
    replaced.__class__ = exact
    return replaced


def log_prob(distribution: Any, value: Any) -> jax.Array:
    """``distribution.log_prob(value)`` with exact derivatives where NumPyro's are wrong.

    The values are NumPyro's; the derivatives with respect to the distribution's
    parameters are exact also at ``logits == 0`` (Bernoulli, Binomial), at ``probs`` 0 or
    1 (Bernoulli, Binomial, Geometric) and at ``rate == 0`` (Poisson), where NumPyro 0.22's
    are not (and ``GeometricProbs(1).log_prob(0)`` is 0 up to the clip, not ``-inf``).
    Use it in place of ``log_prob`` in objectives written by hand when the gradient of
    a log mass is taken.

    Args:
        distribution: a NumPyro distribution.
        value: a value in its support.

    Returns:
        The log density, shaped like ``distribution.log_prob(value)``.

    Examples:
        >>> import jax, numpyro.distributions as dist, ppl
        >>> float(jax.grad(lambda a: ppl.log_prob(dist.Bernoulli(logits=a), 1.0))(0.0))
        0.5
    """
    return exact_distribution(distribution).log_prob(value)
