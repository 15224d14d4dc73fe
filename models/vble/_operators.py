"""Degradation operators ``A`` of ``y = A x + ε`` in JAX, each with its adjoint ``A^T``.

Images are (H, W) arrays. Each operator is an equinox module, so it is a pytree that
can be passed to a ``ppl.expectation`` or ``ppl.fit`` as an argument:

* `Blur`: circular convolution with a kernel (FFT); the adjoint is the circular
  correlation (the conjugate transfer function). Periodic boundaries keep the forward
  model and the Fourier-domain Wiener filter consistent (the reference pads by
  reflection instead).
* `Downsample`: the mean over ``factor`` x ``factor`` blocks (area down-sampling); the
  adjoint spreads each value over its block divided by ``factor²``.
* `Mask`: keeps the observed pixels (inpainting); self-adjoint, output the same shape
  (missing pixels are 0).

Each also has ``solve_gram(r, shift, scale)`` = ``(shift·I + scale·A A^T)^{-1} r`` in
closed form (``A A^T`` is circulant, ``I/factor²`` or the diagonal mask) and
``gram_diag(shape, shift, scale)``, the diagonal of ``A^T (shift·I + scale·A A^T)^{-1} A``,
which VBLE-xz needs for the Gaussian image-level posterior ``q(x | z)``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Blur", "Downsample", "Mask", "gaussian_kernel", "random_mask", "operator_norm"]


def gaussian_kernel(std: float, size: int | None = None) -> np.ndarray:
    """A normalized isotropic Gaussian kernel; ``size`` defaults to ``2·ceil(3·std) + 1``."""
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}.")
    size = size or 2 * int(np.ceil(3 * std)) + 1
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}.")
    grid = np.arange(size) - size // 2
    bump = np.exp(-(grid**2) / (2 * std**2))
    kernel = np.outer(bump, bump)
    return (kernel / kernel.sum()).astype(np.float32)


def random_mask(seed: int, shape: tuple[int, int], keep: float) -> np.ndarray:
    """A Bernoulli(``keep``) mask of observed pixels (float32 0/1)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}.")
    return (np.random.default_rng(seed).random(shape) < keep).astype(np.float32)


class Blur(eqx.Module):
    """Circular convolution with ``kernel`` (odd-sized, centered)."""

    kernel: jax.Array

    def _transfer(self, shape):
        kernel = jnp.asarray(self.kernel)
        kh, kw = kernel.shape
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"Blur: kernel sides must be odd, got {kernel.shape}.")
        if kh > shape[0] or kw > shape[1]:
            raise ValueError(f"Blur: kernel {kernel.shape} is larger than the image {shape}.")
        padded = jnp.zeros(shape, kernel.dtype).at[:kh, :kw].set(kernel)
        padded = jnp.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1))
        return jnp.fft.fft2(padded)

    def __call__(self, x):
        return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(x) * self._transfer(x.shape)))

    def transpose(self, y):
        return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(y) * jnp.conj(self._transfer(y.shape))))

    def solve_gram(self, r, shift, scale):
        """``(shift·I + scale·A A^T)^{-1} r``: a division in the Fourier domain."""
        power = jnp.abs(self._transfer(r.shape)) ** 2
        return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(r) / (shift + scale * power)))

    def gram_diag(self, shape, shift, scale):
        """Diagonal of ``A^T (shift·I + scale·A A^T)^{-1} A`` (circulant: a constant)."""
        power = jnp.abs(self._transfer(shape)) ** 2
        return jnp.full(shape, jnp.mean(power / (shift + scale * power)))

    def output_shape(self, shape):
        return tuple(shape)


class Downsample(eqx.Module):
    """Area down-sampling: the mean of each ``factor`` x ``factor`` block."""

    factor: int = eqx.field(static=True)

    def _check(self, shape):
        if shape[0] % self.factor or shape[1] % self.factor:
            raise ValueError(
                f"Downsample: image sides {tuple(shape)} must be multiples of {self.factor}."
            )

    def __call__(self, x):
        self._check(x.shape)
        f = self.factor
        return x.reshape(x.shape[0] // f, f, x.shape[1] // f, f).mean(axis=(1, 3))

    def transpose(self, y):
        f = self.factor
        return jnp.repeat(jnp.repeat(y, f, axis=0), f, axis=1) / (f * f)

    def solve_gram(self, r, shift, scale):
        """``(shift·I + scale·A A^T)^{-1} r`` with ``A A^T = I / factor²``."""
        return r / (shift + scale / self.factor**2)

    def gram_diag(self, shape, shift, scale):
        """Diagonal of ``A^T (shift·I + scale·A A^T)^{-1} A`` (``diag(A^T A) = 1/factor⁴``)."""
        f2 = self.factor**2
        return jnp.full(shape, 1.0 / (f2 * f2 * (shift + scale / f2)))

    def output_shape(self, shape):
        self._check(shape)
        return (shape[0] // self.factor, shape[1] // self.factor)


class Mask(eqx.Module):
    """Multiplication by a 0/1 ``mask`` of observed pixels."""

    mask: jax.Array

    def __call__(self, x):
        if x.shape != self.mask.shape:
            raise ValueError(f"Mask: image {x.shape} and mask {self.mask.shape} differ.")
        return x * self.mask

    def transpose(self, y):
        return y * self.mask

    def solve_gram(self, r, shift, scale):
        """``(shift·I + scale·A A^T)^{-1} r`` with ``A A^T = diag(mask)``."""
        return r / (shift + scale * self.mask)

    def gram_diag(self, shape, shift, scale):
        """Diagonal of ``A^T (shift·I + scale·A A^T)^{-1} A``."""
        return jnp.broadcast_to(self.mask / (shift + scale * self.mask), shape)

    def output_shape(self, shape):
        return tuple(shape)


def operator_norm(operator, shape, num_iterations: int = 50) -> float:
    """``‖A‖₂`` by power iteration on ``A^T A`` (for step sizes of primal-dual solvers)."""
    x = jax.random.normal(jax.random.key(0), shape)
    for _ in range(num_iterations):
        x = operator.transpose(operator(x))
        x = x / jnp.linalg.norm(x)
    return float(jnp.sqrt(jnp.linalg.norm(operator.transpose(operator(x)))))
