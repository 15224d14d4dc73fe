"""``ppl.importance``: did the variational fit work? Importance weights and Pareto k-hat.

A fitted guide ``q`` is used as an importance-sampling proposal for the posterior:
``K`` draws ``z_k ~ q`` get log-weights ``log w_k = log p(x, z_k) - log q(z_k)``. Their
Pareto-smoothed version (PSIS, Vehtari et al. 2024) gives self-normalized weights for
resampling, and the shape ``k-hat`` of the generalized Pareto distribution fitted to the
largest weights says whether they can be trusted (Yao, Vehtari, Simpson and Gelman,
"Yes, but did it work?: Evaluating variational inference", ICML 2018): ``k-hat < 0.5``
good, ``0.5 <= k-hat <= 0.7`` usable, ``k-hat > 0.7`` the guide misses mass that the
posterior has, and neither it nor the importance-weighted estimates should be trusted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer.util import log_density

from ppl._util import typed_key
from ppl.gen import Family, constrain, density
from ppl.vi._checks import check_params_given, check_unconstrained

__all__ = ["Importance", "importance", "GOOD_KHAT", "BAD_KHAT"]

GOOD_KHAT = 0.5  # below: reliable (Yao et al. 2018, sec. 2.2)
BAD_KHAT = 0.7  # above: do not trust the guide or its importance-weighted estimates


class Importance(NamedTuple):
    """What `importance` returns: the guide as a proposal for the posterior.

    Attributes:
        draws: site name -> ``num_samples`` guide draws ``z_k ~ q`` (leading axis ``K``).
        log_weights: ``log p(x, z_k) - log q(z_k)``, shape ``(K,)`` (NumPy, float64).
        psis_log_weights: the Pareto-smoothed log-weights, normalized so that their
            exponentials sum to one (``arviz.psislw``).
        khat: the Pareto shape estimate of the weights' tail; ``-inf`` when every weight
            is the same (the guide is the posterior).
        ess: the effective sample size of the smoothed weights, ``1 / Σ_k w̃_k²``.
        log_evidence: the importance-weighted (IWELBO) estimate of ``log p(x)``,
            ``log (1/K) Σ_k w_k`` with the raw weights; in expectation a lower bound
            that tightens as ``K`` grows (Burda et al. 2016).
        log_evidence_se: its standard error by the delta method,
            ``sd(w) / (sqrt(K) mean(w))``.
        resampled: site name -> draws resampled with the smoothed weights
            (sampling-importance-resampling), approximately from the posterior.
        resampled_index: the index into ``draws`` of each resampled draw.
    """

    draws: dict
    log_weights: np.ndarray
    psis_log_weights: np.ndarray
    khat: float
    ess: float
    log_evidence: float
    log_evidence_se: float
    resampled: dict
    resampled_index: np.ndarray

    @property
    def verdict(self) -> str:
        """``"good"`` (k-hat < 0.5), ``"usable"`` (up to 0.7) or ``"unreliable"``."""
        if self.khat < GOOD_KHAT:
            return "good"
        return "usable" if self.khat <= BAD_KHAT else "unreliable"

    def summary(self) -> str:
        """One line: k-hat and its verdict, the ESS and the IWELBO estimate."""
        k = self.log_weights.size
        return (
            f"Pareto k-hat {self.khat:.2f} ({self.verdict}), ESS {self.ess:.0f} of {k}, "
            f"log p(x) >= {self.log_evidence:.3f} +- {self.log_evidence_se:.3f} "
            f"(IWELBO, K = {k})"
        )


def _latent(trace: dict) -> dict:
    return {
        name: site["value"]
        for name, site in trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not (site.get("infer") or {}).get("is_auxiliary")
    }


def _log_weights_fn(
    model: Callable,
    guide: Callable,
    params: Any,
    guide_params: Any,
    args: tuple,
    kwargs: dict,
) -> Callable[[jax.Array], tuple[dict, jax.Array]]:
    """``key -> (latent draws, log p - log q)`` for one guide draw (pure, vmappable)."""

    def one(key: jax.Array) -> tuple[dict, jax.Array]:
        log_q, trace = log_density(handlers.seed(guide, key), args, kwargs, guide_params)
        latent = _latent(trace)
        log_p = density(model, latent, *args, params=params, **kwargs)
        return latent, log_p - log_q

    return one


def pareto_smoothed(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """``(normalized smoothed log-weights, k-hat)`` with ArviZ's ``psislw``."""
    log_weights = np.asarray(log_weights, dtype=np.float64)
    finite = np.isfinite(log_weights)
    if not finite.any():
        raise ValueError(
            "importance: no guide draw has a finite log-weight log p(x, z) - log q(z); "
            "the guide puts its mass where the model has none (check supports and params)."
        )
    spread = np.ptp(log_weights[finite])
    if finite.all() and spread <= 1e-6 * max(1.0, float(np.abs(log_weights).max())):
        return log_weights - np.logaddexp.reduce(log_weights), -math.inf
    import arviz

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns about k-hat > 0.7: reported here
        smoothed, khat = arviz.psislw(np.where(finite, log_weights, -np.inf).copy())
    return np.asarray(smoothed, dtype=np.float64), float(khat)


def importance(
    key: jax.Array,
    model: Callable,
    guide: Callable,
    params: Any,
    *args: Any,
    num_samples: int = 1000,
    num_resampled: int | None = None,
    **kwargs: Any,
) -> Importance:
    """Importance-weight a fitted guide against the model: Pareto k-hat, ESS, IWELBO.

    Draws ``K = num_samples`` values ``z_k ~ q(z; params)`` from the guide and weighs
    them by ``w_k = p(x, z_k) / q(z_k)`` (the model's density through `ppl.density`,
    with every discrete site that the model marks for enumeration summed out). The
    log-weights are Pareto-smoothed (PSIS; ``arviz.psislw``) and the shape of the
    smoothed tail, ``k-hat``, judges the fit (Yao et al. 2018): below 0.5 the guide
    is a good proposal and its importance-weighted estimates are reliable; from 0.5 to
    0.7 usable; above 0.7 the posterior has mass where the guide has almost none, and
    neither the guide nor the estimates below should be trusted. ``resampled`` holds
    ``num_resampled`` draws chosen with probabilities ``w̃_k`` (sampling-importance-
    resampling): closer to the posterior than the guide itself where ``k-hat`` is small.

    Args:
        key: a PRNG key.
        model: the NumPyro model.
        guide: the fitted NumPyro guide (hand-written or an autoguide).
        params: the unconstrained parameters of both, as `ppl.fit` returns them.
        *args: the positional arguments of the model and the guide (an ``int`` such as
            a plate size stays a Python int).
        num_samples: ``K``, the number of guide draws.
        num_resampled: how many draws to resample (default ``K``).
        **kwargs: the keyword arguments of the model and the guide.

    Returns:
        An `Importance` with the draws, the raw and smoothed log-weights, ``khat``,
        ``ess``, ``log_evidence`` and its standard error, and the resampled draws.

    Raises:
        TypeError: if ``key`` is not a PRNG key or ``guide`` is a ``ppl.marginal`` /
            ``ppl.normalize`` family (its density is only estimated).
        ValueError: for ``num_samples < 2``, empty ``params``, or no finite weight.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, ppl
        >>> def model(y):
        ...     z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        ...     numpyro.sample("y", dist.Normal(z, 1.0), obs=y)
        >>> def guide(y):  # the exact posterior: N(y / 2, 1 / 2)
        ...     numpyro.sample("z", dist.Normal(y / 2, jnp.sqrt(0.5)))
        >>> result = ppl.importance(jax.random.key(0), model, guide, {},
        ...                         1.0, num_samples=100)
        >>> result.verdict, round(result.log_evidence, 3)  # log N(1; 0, 2) = -1.516
        ('good', -1.516)

    References:
        Yao, Vehtari, Simpson, Gelman. Yes, but did it work?: Evaluating variational
        inference. ICML 2018. Vehtari, Simpson, Gelman, Yao, Gabry. Pareto smoothed
        importance sampling. JMLR 25, 2024.
    """
    key = typed_key(key, "importance")
    if isinstance(guide, Family) or isinstance(model, Family):
        raise TypeError(
            "importance: the guide must be a NumPyro program with an exact density; a "
            "ppl.marginal or ppl.normalize family only estimates its own. Weigh the "
            "family's program (its joint over all sites) instead."
        )
    for name, value in (("num_samples", num_samples), ("num_resampled", num_resampled)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 2
        ):
            raise ValueError(f"importance: {name} must be an integer >= 2, got {value!r}.")
    check_params_given(params, "importance", allow_empty=True)
    check_unconstrained(guide, params, args, kwargs, where="importance")
    num_resampled = num_samples if num_resampled is None else int(num_resampled)
    guide_params = constrain(guide, params, *args, **kwargs)
    key_draws, key_resample = jax.random.split(key)
    one = _log_weights_fn(model, guide, params, guide_params, args, kwargs)
    draws, log_weights = jax.jit(jax.vmap(one))(jax.random.split(key_draws, num_samples))
    log_weights = np.asarray(log_weights, dtype=np.float64)
    smoothed, khat = pareto_smoothed(log_weights)
    weights = np.exp(smoothed)
    ess = float(1.0 / np.sum(weights**2))
    log_evidence, log_evidence_se = _log_mean_exp_and_se(log_weights)
    chosen = jax.random.choice(
        key_resample, num_samples, (num_resampled,), p=jnp.asarray(weights / weights.sum())
    )
    resampled = {name: value[chosen] for name, value in draws.items()}
    return Importance(
        draws=dict(draws),
        log_weights=log_weights,
        psis_log_weights=smoothed,
        khat=khat,
        ess=ess,
        log_evidence=log_evidence,
        log_evidence_se=log_evidence_se,
        resampled=resampled,
        resampled_index=np.asarray(chosen),
    )


def _log_mean_exp_and_se(log_weights: np.ndarray) -> tuple[float, float]:
    """``log mean(w)`` and its delta-method standard error ``sd(w) / (sqrt(K) mean(w))``."""
    shift = np.max(log_weights)
    scaled = np.exp(log_weights - shift)  # non-finite log-weights count as zero weight
    mean = scaled.mean()
    se = scaled.std(ddof=1) / (math.sqrt(scaled.size) * mean)
    return float(shift + np.log(mean)), float(se)


def warn_if_unreliable(result: Importance, where: str) -> None:
    """A `UserWarning` when ``k-hat > 0.7`` (Yao et al. 2018)."""
    if result.khat > BAD_KHAT:
        warnings.warn(
            f"{where}: Pareto k-hat of the guide's importance weights is {result.khat:.2f} "
            f"> {BAD_KHAT}: the posterior has mass where the guide has almost none, so "
            f"neither the guide nor importance-weighted estimates from it should be "
            f"trusted (Yao et al. 2018). Try a richer guide (AutoMultivariateNormal, a "
            f"flow), a mass-covering objective (iwae with more particles, renyi with "
            f"alpha < 1), or a reparameterization of the model (non-centered).",
            UserWarning,
            stacklevel=4,
        )
