"""Classical baselines and the metrics: Wiener, total variation, PSNR/SSIM, calibration.

* Deblurring: ``skimage.restoration.wiener`` (the Fourier-domain Wiener filter with a
  Laplacian regularizer, periodic like our `Blur`).
* Super-resolution and inpainting (no Fourier diagonalization): the same Gaussian-prior
  estimate, ``argmin ‖A x - y‖² + β ‖∇x‖²``, solved by conjugate gradients with the
  operator's adjoint ("Wiener/Tikhonov").
* Total variation for every task: ``argmin_{x ∈ [0,1]} ½‖A x - y‖² + μ TV(x)`` (isotropic
  TV) by the primal-dual algorithm of Chambolle & Pock (2011), with ``A`` and ``A^T``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ppl_zoo.vble._operators import Blur, operator_norm

__all__ = [
    "gradient",
    "divergence",
    "wiener",
    "tikhonov",
    "tv_restore",
    "psnr",
    "ssim",
    "coverage",
    "spearman",
]


def gradient(x):
    """Forward differences with Neumann boundary: (2, H, W)."""
    dx = jnp.zeros_like(x).at[:, :-1].set(x[:, 1:] - x[:, :-1])
    dy = jnp.zeros_like(x).at[:-1, :].set(x[1:, :] - x[:-1, :])
    return jnp.stack([dy, dx])


def divergence(p):
    """Minus the adjoint of `gradient`: ``<gradient(x), p> = -<x, divergence(p)>``."""
    py, px = p[0], p[1]
    dx = jnp.zeros_like(px)
    dx = dx.at[:, 0].set(px[:, 0]).at[:, 1:-1].set(px[:, 1:-1] - px[:, :-2])
    dx = dx.at[:, -1].set(-px[:, -2])
    dy = jnp.zeros_like(py)
    dy = dy.at[0, :].set(py[0, :]).at[1:-1, :].set(py[1:-1, :] - py[:-2, :])
    dy = dy.at[-1, :].set(-py[-2, :])
    return dx + dy


def wiener(operator: Blur, y, balance: float) -> np.ndarray:
    """scikit-image's Wiener deconvolution of ``y`` by ``operator.kernel``, clipped to [0, 1]."""
    from skimage.restoration import wiener as sk_wiener

    if not isinstance(operator, Blur):
        raise TypeError("wiener needs a Blur operator; use tikhonov for other operators.")
    out = sk_wiener(np.asarray(y, np.float64), np.asarray(operator.kernel), balance, clip=False)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def tikhonov(operator, y, beta: float, shape, num_iterations: int = 200) -> np.ndarray:
    """``argmin ‖A x - y‖² + β‖∇x‖²`` by conjugate gradients, clipped to [0, 1]."""

    def normal(x):
        return operator.transpose(operator(x)) - beta * divergence(gradient(x))

    rhs = operator.transpose(jnp.asarray(y))
    x, _ = jax.scipy.sparse.linalg.cg(normal, rhs, x0=jnp.zeros(shape), maxiter=num_iterations)
    return np.clip(np.asarray(x), 0.0, 1.0)


def tv_restore(operator, y, mu: float, shape, x_init=None, num_iterations: int = 500) -> np.ndarray:
    """``argmin_{x∈[0,1]} ½‖A x - y‖² + μ Σ |∇x|`` by Chambolle-Pock (2011, Algorithm 1)."""
    norm_sq = operator_norm(operator, shape) ** 2 + 8.0  # ‖∇‖² ≤ 8
    tau = sigma = 0.99 / np.sqrt(norm_sq)
    y = jnp.asarray(y)
    if x_init is None:
        x_init = operator.transpose(y)
        x_init = x_init * (jnp.sum(y) / jnp.maximum(jnp.sum(operator(x_init)), 1e-8))
    x0 = jnp.asarray(x_init, y.dtype)
    return np.asarray(_tv_loop(operator, y, jnp.float32(mu), tau, sigma, x0, num_iterations))


def _tv_loop(operator, y, mu, tau, sigma, x0, num_iterations):
    shape = x0.shape
    state = (x0, x0, jnp.zeros_like(y), jnp.zeros((2, *shape)))

    def body(_, state):
        x, x_bar, p, q = state
        p = (p + sigma * (operator(x_bar) - y)) / (1.0 + sigma)
        q = q + sigma * gradient(x_bar)
        q = q / jnp.maximum(1.0, jnp.sqrt(jnp.sum(q**2, axis=0)) / mu)
        x_new = jnp.clip(x - tau * (operator.transpose(p) - divergence(q)), 0.0, 1.0)
        return x_new, 2 * x_new - x, p, q

    return jax.lax.fori_loop(0, num_iterations, body, state)[0]


def psnr(x_true, x) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = float(np.mean((np.asarray(x_true, np.float64) - np.asarray(x, np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def ssim(x_true, x) -> float:
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            np.asarray(x_true, np.float64), np.asarray(x, np.float64), data_range=1.0
        )
    )


def coverage(x_true, low, high) -> float:
    """Fraction of pixels whose true value lies in its [low, high] interval."""
    x_true = np.asarray(x_true)
    return float(np.mean((x_true >= np.asarray(low)) & (x_true <= np.asarray(high))))


def spearman(a, b) -> float:
    """Spearman rank correlation of two arrays (flattened)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)
