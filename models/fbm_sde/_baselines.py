"""Exact likelihood baselines in NumPy float64: fBM Gaussian MLE and the MA-fBM Kalman MLE.

* `fbm_log_likelihood` / `exact_mle`: the Gaussian likelihood of noisy observations of
  ``s B_H`` under the exact fBM covariance (Cholesky), maximized over (H, s): the gold
  standard for the Hurst index.
* `kalman_log_likelihood` / `kalman_mle`: the exact likelihood under the *MA-fBM* prior
  ``X = σ Σ_k ω_k(H) (Y_k - Y_k(0))``: the OU states have exact linear-Gaussian
  transitions, so a Kalman filter on ``(Y, Y(0))`` gives it. The VI estimate targets the
  same model, so the gap between the two is the variational gap alone, the gap to
  `exact_mle` the Markov-approximation bias.
* `ma_fbm_covariance`: the closed-form covariance of ``B̂_H``, used to check the
  filter and for the bridge's conditioned standard deviation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import optimize, special

from ppl_zoo.fbm_sde._data import fbm_covariance
from ppl_zoo.fbm_sde._markov import mandelbrot_van_ness_variance, optimal_weights

__all__ = [
    "Estimate",
    "fbm_log_likelihood",
    "exact_mle",
    "ma_fbm_covariance",
    "kalman_log_likelihood",
    "kalman_mle",
    "conditioned_std",
    "fbm_bridge_std",
]


class Estimate(NamedTuple):
    """A maximum-likelihood estimate: Hurst index, scale, and the maximized log-likelihood."""

    hurst: float
    scale: float
    log_likelihood: float


def fbm_log_likelihood(observations, times, hurst: float, scale: float, noise: float) -> float:
    """Σ over paths of log N(o; 0, s² R_H + noise² I), R_H the standard fBM covariance."""
    obs = np.asarray(observations, np.float64)
    cov = scale**2 * fbm_covariance(times, hurst) + noise**2 * np.eye(len(times))
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, obs.T)
    n_paths, n = obs.shape
    return float(
        -0.5 * np.sum(white**2)
        - n_paths * np.sum(np.log(np.diag(chol)))
        - 0.5 * n_paths * n * np.log(2 * np.pi)
    )


def _maximize(log_likelihood, start=(0.0, 0.0)) -> Estimate:
    """Maximize over (logit H, log s) with Nelder-Mead from H = 0.5, s = 1."""

    def loss(z):
        hurst = special.expit(z[0])
        if not 0.01 < hurst < 0.99:
            return 1e12
        return -log_likelihood(hurst, np.exp(z[1]))

    result = optimize.minimize(
        loss, np.asarray(start, float), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8}
    )
    return Estimate(
        float(special.expit(result.x[0])), float(np.exp(result.x[1])), float(-result.fun)
    )


def exact_mle(observations, times, noise: float) -> Estimate:
    """Gaussian MLE of (H, s) under exact fBM (observation noise known)."""
    return _maximize(lambda h, s: fbm_log_likelihood(observations, times, h, s, noise))


def _stationary_cross(gammas, times_a, times_b, kind: str) -> np.ndarray:
    """Cov(Y_i(t), Y_j(s)) for all t in times_a, s in times_b: ``(na, nb, K, K)``."""
    g = np.asarray(gammas, np.float64)
    t = np.asarray(times_a, np.float64)[:, None, None, None]
    s = np.asarray(times_b, np.float64)[None, :, None, None]
    gi, gj = g[:, None], g[None, :]
    total = gi + gj
    early = np.minimum(t, s)
    decay = np.where(t >= s, np.exp(-gi * np.maximum(t - s, 0)), np.exp(-gj * np.maximum(s - t, 0)))
    if kind == "II":
        return decay * (-np.expm1(-total * early)) / total
    return decay / total


def ma_fbm_covariance(times, weights, gammas, kind: str = "I", scale: float = 1.0) -> np.ndarray:
    """Covariance of ``σ Σ_k ω_k (Y_k(t) - Y_k(0))`` at ``times`` (closed form, float64)."""
    times = np.asarray(times, np.float64)
    w = np.asarray(weights, np.float64)
    zero = np.zeros(1)
    both = _stationary_cross(gammas, times, times, kind)
    with_zero = _stationary_cross(gammas, times, zero, kind)[:, 0]
    at_zero = _stationary_cross(gammas, zero, zero, kind)[0, 0]
    cross = both - with_zero[:, None] - np.swapaxes(with_zero, -1, -2)[None, :] + at_zero
    return scale**2 * np.einsum("i,abij,j->ab", w, cross, w)


def kalman_log_likelihood(
    observations, times, weights, scale: float, gammas, noise: float, kind: str = "I"
) -> float:
    """Exact log-likelihood of noisy observations under the MA-fBM prior, by Kalman filter.

    State ``(Y_1..Y_K, Y_1(0)..Y_K(0))``; over an interval Δ, ``Y ← e^(-γΔ) Y + ξ`` with
    ``Cov ξ_ij = (1 - e^(-(γ_i+γ_j)Δ)) / (γ_i+γ_j)``; observation
    ``o = σ ωᵀ (Y - Y(0)) + ε``. All paths share the covariance recursion.
    """
    obs = np.asarray(observations, np.float64)
    g = np.asarray(gammas, np.float64)
    k = g.size
    total = g[:, None] + g[None, :]
    if kind == "I":
        sigma0 = 1.0 / total
        cov = np.block([[sigma0, sigma0], [sigma0, sigma0]])
    else:
        cov = np.zeros((2 * k, 2 * k))
    mean = np.zeros((obs.shape[0], 2 * k))
    row = scale * np.concatenate([weights, -np.asarray(weights, np.float64)])
    log_lik = 0.0
    previous = 0.0
    for i, t in enumerate(np.asarray(times, np.float64)):
        delta = t - previous
        previous = t
        decay = np.concatenate([np.exp(-g * delta), np.ones(k)])
        noise_cov = np.zeros((2 * k, 2 * k))
        noise_cov[:k, :k] = -np.expm1(-total * delta) / total
        mean = mean * decay
        cov = decay[:, None] * cov * decay[None, :] + noise_cov
        predicted = mean @ row
        variance = row @ cov @ row + noise**2
        residual = obs[:, i] - predicted
        log_lik += float(
            -0.5 * np.sum(residual**2) / variance
            - 0.5 * obs.shape[0] * np.log(2 * np.pi * variance)
        )
        gain = cov @ row / variance
        mean = mean + residual[:, None] * gain[None, :]
        cov = cov - np.outer(gain, row @ cov)
        cov = 0.5 * (cov + cov.T)
    return log_lik


def kalman_mle(
    observations, times, noise: float, gammas, horizon: float, kind: str = "I"
) -> Estimate:
    """MLE of (H, σ) under the MA-fBM prior (weights ``ω*(H)`` in float64, Kalman likelihood)."""

    def log_likelihood(hurst, scale):
        weights = optimal_weights(hurst, gammas, horizon, kind)
        return kalman_log_likelihood(observations, times, weights, scale, gammas, noise, kind)

    return _maximize(log_likelihood)


def conditioned_std(cov_grid, cov_grid_obs, cov_obs, noise: float) -> np.ndarray:
    """Pointwise posterior std of a Gaussian process given one noisy observation.

    ``sqrt(k(t,t) - k(t,T)² / (k(T,T) + noise²))`` with ``cov_grid = k(t,t)``,
    ``cov_grid_obs = k(t,T)``, ``cov_obs = k(T,T)``.
    """
    var = np.asarray(cov_grid) - np.asarray(cov_grid_obs) ** 2 / (cov_obs + noise**2)
    return np.sqrt(np.maximum(var, 0.0))


def fbm_bridge_std(times, end: float, hurst: float, noise: float) -> np.ndarray:
    """Posterior std of type-I-normalized fBM (Var = V_H t^2H) given X(end) = o ± noise."""
    t = np.asarray(times, np.float64)
    v_h = float(mandelbrot_van_ness_variance(hurst))
    two_h = 2 * hurst
    k_tt = v_h * t**two_h
    k_te = v_h * 0.5 * (t**two_h + end**two_h - np.abs(t - end) ** two_h)
    return conditioned_std(k_tt, k_te, v_h * end**two_h, noise)
