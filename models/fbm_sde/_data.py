"""Data generated offline: exact fractional Brownian motion and fractional OU paths.

Paths are drawn exactly (Cholesky of the fBM covariance in float64) on the grid
``t_i = i T / n``, ``i = 1..n`` (B_H(0) = 0 is not observed), and observed with
Gaussian noise. The fractional Ornstein-Uhlenbeck variant ``dX = -θ X dt + s dB_H``
is integrated by Euler on exact fBM increments on a grid ``substeps`` times finer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["HurstData", "fbm_covariance", "sample_fbm", "make_data"]


class HurstData(NamedTuple):
    """Noisy observations of fBM (or fOU) paths with a known Hurst index.

    Attributes:
        observations: ``(num_paths, num_obs)`` float32, the noisy values at ``times``.
        clean: ``(num_paths, num_obs)`` the paths without noise.
        times: ``(num_obs,)`` observation times ``T/n, 2T/n, ..., T``.
        hurst: the true Hurst index.
        scale: the true diffusion scale ``s`` (``X = s B_H`` for fBM, standard fBM s = 1).
        noise: the observation noise standard deviation.
        theta: the OU mean-reversion rate (0 for fBM).
    """

    observations: np.ndarray
    clean: np.ndarray
    times: np.ndarray
    hurst: float
    scale: float
    noise: float
    theta: float


def fbm_covariance(times, hurst: float) -> np.ndarray:
    """Standard fBM covariance ``½ (t^2H + s^2H - |t - s|^2H)`` in float64."""
    if not 0.0 < hurst < 1.0:
        raise ValueError(f"hurst must lie in (0, 1), got {hurst}.")
    t = np.asarray(times, np.float64)
    two_h = 2.0 * hurst
    return 0.5 * (
        t[:, None] ** two_h + t[None, :] ** two_h - np.abs(t[:, None] - t[None, :]) ** two_h
    )


def sample_fbm(rng: np.random.Generator, times, hurst: float, num_paths: int) -> np.ndarray:
    """Exact standard fBM at ``times`` (all > 0), ``(num_paths, len(times))``, by Cholesky."""
    times = np.asarray(times, np.float64)
    if np.any(times <= 0):
        raise ValueError("times must be positive (B_H(0) = 0 is fixed, not sampled).")
    chol = np.linalg.cholesky(fbm_covariance(times, hurst) + 1e-12 * np.eye(times.size))
    return rng.standard_normal((num_paths, times.size)) @ chol.T


def make_data(
    seed: int,
    hurst: float,
    num_paths: int = 64,
    num_obs: int = 25,
    horizon: float = 1.0,
    noise: float = 0.05,
    scale: float = 1.0,
    theta: float = 0.0,
    substeps: int = 4,
) -> HurstData:
    """Noisy observations of ``num_paths`` paths of ``s B_H`` (θ = 0) or of fOU (θ > 0).

    Args:
        seed: the NumPy seed (fixed per experiment).
        hurst: the true Hurst index in (0, 1).
        num_paths, num_obs: paths and observations per path on ``(0, horizon]``.
        noise: observation noise standard deviation (> 0).
        scale: diffusion scale ``s``.
        theta: OU rate; 0 gives fBM itself, > 0 the fOU ``dX = -θ X dt + s dB_H``, X(0) = 0.
        substeps: Euler sub-steps per observation interval for fOU.
    """
    if num_paths < 1 or num_obs < 2:
        raise ValueError(f"need num_paths >= 1 and num_obs >= 2, got {num_paths}, {num_obs}.")
    if noise <= 0 or scale <= 0 or horizon <= 0 or theta < 0:
        raise ValueError("noise, scale and horizon must be positive and theta non-negative.")
    rng = np.random.default_rng(seed)
    times = horizon * np.arange(1, num_obs + 1) / num_obs
    if theta == 0.0:
        clean = scale * sample_fbm(rng, times, hurst, num_paths)
    else:
        fine = horizon * np.arange(1, num_obs * substeps + 1) / (num_obs * substeps)
        path = sample_fbm(rng, fine, hurst, num_paths)
        increments = np.diff(np.concatenate([np.zeros((num_paths, 1)), path], 1), axis=1)
        x = np.zeros(num_paths)
        values = []
        step = fine[0]
        for j in range(fine.size):
            x = x - theta * x * step + scale * increments[:, j]
            values.append(x)
        clean = np.stack(values, 1)[:, substeps - 1 :: substeps]
    observations = clean + noise * rng.standard_normal(clean.shape)
    return HurstData(
        observations.astype(np.float32),
        clean,
        times,
        float(hurst),
        float(scale),
        float(noise),
        float(theta),
    )
