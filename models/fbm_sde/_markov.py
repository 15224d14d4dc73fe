"""The Markov approximation of fractional Brownian motion (MA-fBM) and its weights.

Fractional Brownian motion is approximated by a weighted sum of Ornstein-Uhlenbeck
processes that share one Brownian motion (Daems et al., ICLR 2024, Sec. 3):

    B̂_H(t) = Σ_k ω_k (Y_k(t) - Y_k(0)),     dY_k = -γ_k Y_k dt + dW(t),

with speeds ``γ`` on a geometric grid and the weights ``ω`` that minimize the
time-integrated mean-squared error E ∫_0^T (B_H - B̂_H)² dt = ωᵀAω - 2bᵀω + c, so
``ω* = A⁻¹ b`` (Prop. 5 of the paper). Type I is Mandelbrot-van Ness fBM (stationary
increments, Y(0) drawn from the stationary law), type II Riemann-Liouville (Y(0) = 0).

The type II matrix ``A`` has condition numbers of 1e7 (K = 5) to 1e13 (K >= 8), so
the weights are computed in NumPy float64 (never in JAX's float32, which returns
wrong weights); `markov_weights` hands them to JAX through `jax.pure_callback` with a
`jax.custom_jvp` whose tangent is ``dω/dH = A⁻¹ db/dH`` (``A`` does not depend on H;
``db/dH`` by a float64 central difference of the well-conditioned ``b``).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

__all__ = [
    "gamma_grid",
    "gammaincc_ez",
    "mandelbrot_van_ness_variance",
    "optimal_weights",
    "weights_and_derivative",
    "quadratic_cost",
    "relative_error",
    "kernel_error_by_quadrature",
    "markov_weights",
]

Kind = Literal["I", "II"]


def _check_kind(kind: str) -> None:
    if kind not in ("I", "II"):
        raise ValueError(
            f"kind must be 'I' (Mandelbrot-van Ness) or 'II' (Riemann-Liouville), got {kind!r}."
        )


def _check_hurst(hurst: float) -> None:
    if not 0.0 < float(hurst) < 1.0:
        raise ValueError(f"hurst must lie in (0, 1), got {hurst}.")


def gamma_grid(num_processes: int, gamma_max: float) -> np.ndarray:
    """Speeds ``γ_k = r^(k - (K+1)/2)``, ``r = γ_max^(2/(K-1))``: geometric in [1/γ_max, γ_max].

    As ``gamma_by_gamma_max`` in the official code; K = 5, γ_max = 20 gives
    (0.05, 0.224, 1, 4.47, 20).
    """
    if num_processes < 2:
        raise ValueError(f"num_processes must be at least 2, got {num_processes}.")
    if gamma_max <= 1.0:
        raise ValueError(
            f"gamma_max must exceed 1 (the grid is [1/gamma_max, gamma_max]), got {gamma_max}."
        )
    ratio = gamma_max ** (2.0 / (num_processes - 1))
    k = np.arange(1, num_processes + 1, dtype=np.float64)
    return ratio ** (k - (num_processes + 1) / 2.0)


def mandelbrot_van_ness_variance(hurst) -> np.ndarray:
    """``V_H = 1 / (Γ(2H+1) sin(πH))``: Var B_H(t) = V_H t^(2H) for type I fBM."""
    hurst = np.asarray(hurst, np.float64)
    return 1.0 / (special.gamma(2.0 * hurst + 1.0) * np.sin(np.pi * hurst))


def gammaincc_ez(a, z) -> np.ndarray:
    """``e^z Q(a, z)`` (Q the regularized upper incomplete gamma), stable for large z.

    Directly for z < 10; for z >= 10 by the Legendre continued fraction
    ``Γ(a, z) = e^(-z) z^a / (z + 1 - a - 1(1-a)/(z + 3 - a - 2(2-a)/(z + 5 - a - ...)))``
    (modified Lentz, 60 terms: converged to machine precision for z >= 10), so that
    ``e^z`` never overflows. The official code uses five terms of the same fraction.
    """
    a, z = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(z, np.float64))
    out = np.empty(a.shape)
    small = z < 10.0
    out[small] = np.exp(z[small]) * special.gammaincc(a[small], z[small])
    if np.any(~small):
        aa, zz = a[~small], z[~small]
        tiny = 1e-300
        b = zz + 1.0 - aa
        c = 1.0 / tiny
        d = 1.0 / b
        frac = d
        for i in range(1, 61):
            an = -i * (i - aa)
            b = b + 2.0
            d = an * d + b
            d = np.where(np.abs(d) < tiny, tiny, d)
            c = b + an / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            d = 1.0 / d
            frac = frac * d * c
        out[~small] = np.exp(aa * np.log(zz) - special.gammaln(aa)) * frac
    return out


def _phi(rate, time):
    """``(1 - e^(-rate·time)) / rate``, equal to ``time`` at rate 0."""
    rate = np.asarray(rate, np.float64)
    safe = np.where(rate == 0.0, 1.0, rate)
    return np.where(rate == 0.0, time, -np.expm1(-safe * time) / safe)


def _matrix_a(gammas: np.ndarray, horizon: float, kind: str) -> np.ndarray:
    g_i, g_j = gammas[:, None], gammas[None, :]
    total = g_i + g_j
    if kind == "II":
        return (horizon - _phi(total, horizon)) / total
    return (2.0 * horizon - _phi(g_i, horizon) - _phi(g_j, horizon)) / total


def _vector_b(hurst: float, gammas: np.ndarray, horizon: float, kind: str) -> np.ndarray:
    alpha = hurst + 0.5
    z = gammas * horizon
    if kind == "II":
        return horizon * gammas**-alpha * special.gammainc(alpha, z) - alpha * gammas ** -(
            alpha + 1.0
        ) * special.gammainc(alpha + 1.0, z)
    return (
        2.0 * horizon * gammas**-alpha
        - horizon**alpha / (gammas * special.gamma(alpha + 1.0))
        + (np.exp(-z) - gammaincc_ez(alpha, z)) / gammas ** (alpha + 1.0)
    )


def _constant_c(hurst: float, horizon: float, kind: str) -> float:
    if kind == "II":
        return horizon ** (2 * hurst + 1) / (
            2 * hurst * (2 * hurst + 1) * special.gamma(hurst + 0.5) ** 2
        )
    return float(mandelbrot_van_ness_variance(hurst)) * horizon ** (2 * hurst + 1) / (2 * hurst + 1)


def quadratic_cost(hurst: float, gammas, horizon: float, kind: Kind = "I"):
    """``(A, b, c)`` with E ∫_0^T (B_H(t) - Σ ω_k (Y_k(t) - Y_k(0)))² dt = ωᵀAω - 2bᵀω + c.

    All in float64 (Daems et al. 2024, Prop. 5; ``omega_optimized_1/2`` in the code).
    """
    _check_kind(kind)
    _check_hurst(hurst)
    gammas = np.asarray(gammas, np.float64)
    return (
        _matrix_a(gammas, float(horizon), kind),
        _vector_b(float(hurst), gammas, float(horizon), kind),
        _constant_c(float(hurst), float(horizon), kind),
    )


def optimal_weights(hurst: float, gammas, horizon: float, kind: Kind = "I") -> np.ndarray:
    """The optimal weights ``ω* = A⁻¹ b`` in float64 (see `quadratic_cost`)."""
    a, b, _ = quadratic_cost(hurst, gammas, horizon, kind)
    return np.linalg.solve(a, b)


def weights_and_derivative(
    hurst: float, gammas, horizon: float, kind: Kind = "I", step: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """``ω*(H)`` and ``dω*/dH = A⁻¹ db/dH``, with ``db/dH`` by a float64 central difference."""
    a, b, _ = quadratic_cost(hurst, gammas, horizon, kind)
    gammas = np.asarray(gammas, np.float64)
    step = min(step, 0.5 * min(hurst, 1.0 - hurst))
    db = (
        _vector_b(hurst + step, gammas, float(horizon), kind)
        - _vector_b(hurst - step, gammas, float(horizon), kind)
    ) / (2.0 * step)
    return np.linalg.solve(a, b), np.linalg.solve(a, db)


def relative_error(hurst: float, gammas, horizon: float, kind: Kind = "I") -> float:
    """``cost(ω*) / c``: the relative integrated squared error of the best approximation."""
    a, b, c = quadratic_cost(hurst, gammas, horizon, kind)
    weights = np.linalg.solve(a, b)
    return float((weights @ a @ weights - 2.0 * b @ weights + c) / c)


def kernel_error_by_quadrature(
    hurst: float, gammas, weights, horizon: float, kind: Kind = "I", num_times: int = 40
) -> float:
    """E ∫_0^T (B_H(t) - Σ ω_k (Y_k(t) - Y_k(0)))² dt by numerical quadrature of the kernels.

    By Itô's isometry the error at time t is ∫ (K_H(t, s) - Σ ω_k K_k(t, s))² ds with the
    fBM kernel ``K_H`` of the given type and the OU kernels ``K_k``; the inner integral
    is adaptive (``scipy.integrate.quad``), the outer Gauss-Legendre with ``num_times``
    nodes. An independent check of `quadratic_cost`.
    """
    from scipy import integrate

    _check_kind(kind)
    alpha = hurst + 0.5
    norm = special.gamma(alpha)
    gammas = np.asarray(gammas, np.float64)
    weights = np.asarray(weights, np.float64)

    def squared_error(s, t):
        fbm = (t - s) ** (alpha - 1) if s > 0 else 0.0
        if kind == "I" and s < 0:
            fbm = (t - s) ** (alpha - 1) - (-s) ** (alpha - 1)
        markov = np.exp(-gammas * (t - s))
        if s < 0:
            markov = markov - np.exp(gammas * s)
        return (fbm / norm - weights @ markov) ** 2

    nodes, node_weights = np.polynomial.legendre.leggauss(num_times)
    total = 0.0
    for t, w in zip(0.5 * horizon * (nodes + 1), node_weights):
        inner = integrate.quad(squared_error, 0, t, args=(t,), limit=200)[0]
        if kind == "I":
            inner += integrate.quad(squared_error, -np.inf, 0, args=(t,), limit=200)[0]
        total += 0.5 * horizon * w * inner
    return float(total)


@functools.lru_cache(maxsize=64)
def _weights_fn(gammas: tuple, horizon: float, kind: str):
    gammas_np = np.asarray(gammas, np.float64)
    shape = jax.ShapeDtypeStruct((len(gammas),), jnp.float32)

    def host(hurst):
        weights, derivative = weights_and_derivative(float(hurst), gammas_np, horizon, kind)
        return weights.astype(np.float32), derivative.astype(np.float32)

    def both(hurst):
        return jax.pure_callback(host, (shape, shape), hurst, vmap_method="sequential")

    @jax.custom_jvp
    def weights(hurst):
        return both(hurst)[0]

    @weights.defjvp
    def _jvp(primals, tangents):
        (hurst,), (tangent,) = primals, tangents
        value, derivative = both(hurst)
        return value, derivative * tangent

    return weights


def markov_weights(hurst: jax.Array, gammas, horizon: float, kind: Kind = "I") -> jax.Array:
    """The optimal MA-fBM weights ``ω*(H)`` as a differentiable JAX function of ``hurst``.

    The solve runs in NumPy float64 on the host (`jax.pure_callback`); the result is
    float32. Works under ``jit``, ``vmap`` (one host call per lane), ``grad`` and
    ``jvp`` (tangent ``dω/dH`` from `weights_and_derivative`), and inside
    ``ppl.expectation``. ``hurst`` must be a scalar in (0, 1).
    """
    _check_kind(kind)
    gammas = tuple(float(g) for g in np.asarray(gammas, np.float64).ravel())
    hurst = jnp.asarray(hurst, jnp.float32)
    if hurst.shape != ():
        raise ValueError(f"hurst must be a scalar, got shape {hurst.shape}.")
    return _weights_fn(gammas, float(horizon), kind)(hurst)
