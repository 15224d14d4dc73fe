"""Data with a known number of generative factors, all made offline with a fixed seed.

* ``linear``: ``x = W z + 0.05 ε`` with ``z ∈ R^3`` (k = 3), ``W ∈ R^{20×3}``.
* ``manifold``: ``x = W₂ tanh(W₁ z) + 0.05 ε`` with ``z ∈ R^5`` (k = 5), ``D = 50``.
* ``sprites``: 16×16 binary images of one ellipse; factors x, y, scale, orientation
  (k = 4), a procedural stand-in for dSprites (which cannot ship).
* ``digits``: scikit-learn's 8×8 digits (1,797 images, shipped inside the wheel),
  pixels scaled to [0, 1], with the class labels.

A user's own data can be given as a ``.npy``/``.npz`` file of an ``(N, D)`` float array
(`read_array`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DATASETS",
    "Dataset",
    "linear_gaussian",
    "nonlinear_manifold",
    "sprites",
    "digits",
    "make_dataset",
    "read_array",
]

DATASETS = ("linear", "manifold", "sprites", "digits")


class Dataset(NamedTuple):
    """A train/test split.

    Attributes:
        name: the data set's name.
        train, test: ``(N, D)`` float32 arrays.
        train_factors, test_factors: ``(N, k)`` integer factor indices (sprites), class
            labels ``(N, 1)`` (digits), or ``None``.
        true_k: the number of generative factors (``None`` when unknown).
        likelihood: ``"normal"`` or ``"bernoulli"``.
        image_shape: ``(height, width)`` for images, else ``None``.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    train_factors: np.ndarray | None
    test_factors: np.ndarray | None
    true_k: int | None
    likelihood: str
    image_shape: tuple[int, int] | None = None


def _split(seed: int, arrays: list, num_test: int) -> tuple[list, list]:
    n = arrays[0].shape[0]
    order = np.random.default_rng(seed + 7919).permutation(n)
    train, test = order[num_test:], order[:num_test]
    return [None if a is None else a[train] for a in arrays], [
        None if a is None else a[test] for a in arrays
    ]


def linear_gaussian(seed: int, n: int = 5000, dim: int = 20, k: int = 3, noise: float = 0.05):
    """``x = W z + noise · ε``, ``z ~ N(0, I_k)``, ``W_ij ~ N(0, 1)``: ``(x, z)``."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(dim, k))
    z = rng.normal(size=(n, k))
    x = z @ weight.T + noise * rng.normal(size=(n, dim))
    return x.astype(np.float32), z


def nonlinear_manifold(seed: int, n: int = 6000, dim: int = 50, k: int = 5, noise: float = 0.05):
    """``x = c · W₂ tanh(W₁ z) + noise · ε``, ``z ~ N(0, I_k)``, ``W₁ ∈ R^{D×k}``,
    ``W₂ ∈ R^{D×D}`` Gaussian; ``c`` makes the mean per-coordinate variance of the clean
    signal 1. Returns ``(x, z)``."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(dim, k))
    w2 = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    z = rng.normal(size=(n, k))
    clean = np.tanh(z @ w1.T) @ w2.T
    clean = (clean - clean.mean(0)) / np.sqrt(clean.var(0).mean())
    x = clean + noise * rng.normal(size=(n, dim))
    return x.astype(np.float32), z


SPRITE_FACTORS = {  # name: values (dSprites-like discrete grids)
    "x": np.linspace(4.5, 10.5, 10),
    "y": np.linspace(4.5, 10.5, 10),
    "scale": np.linspace(2.0, 3.5, 6),
    "orientation": np.linspace(0.0, np.pi / 2, 8, endpoint=False),
}


def sprites(seed: int, n: int = 8000, size: int = 16):
    """Binary ``size × size`` images of an ellipse with semi-axes ``(s, s/2)``.

    The four factors (x, y, scale ``s``, orientation in ``[0, π/2)``) are drawn
    uniformly from the grids in ``SPRITE_FACTORS``; a pixel is on when its centre lies
    inside the ellipse. Orientation stays below ``π/2`` so that every factor is an
    interval, not a circle (k = 4). At 16×16 a few neighbouring factor settings render
    to the same pixels (about 1 % of the settings in a sample), as in dSprites.

    Returns:
        ``(images (n, size²) float32 in {0, 1}, factor indices (n, 4) int)``.
    """
    rng = np.random.default_rng(seed)
    grids = list(SPRITE_FACTORS.values())
    index = np.stack([rng.integers(0, len(g), n) for g in grids], axis=1)
    cx, cy, s, angle = (g[index[:, j]][:, None, None] for j, g in enumerate(grids))
    row, col = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    dx, dy = col[None] - cx, row[None] - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    inside = (u / s) ** 2 + (v / (0.5 * s)) ** 2 <= 1.0
    return inside.reshape(n, size * size).astype(np.float32), index


def digits():
    """scikit-learn's 8×8 digits scaled to [0, 1]: ``(x (1797, 64), labels (1797,))``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def read_array(path: Path) -> np.ndarray:
    """An ``(N, D)`` float array from a ``.npy`` file or the ``x`` entry of a ``.npz`` file.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for another suffix, a missing ``x`` entry, a non-2-D or non-finite
            array, naming the file and the expected format.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected a .npy or .npz array).")
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as saved:
            if "x" not in saved.files:
                raise ValueError(
                    f"{path}: expected an entry named 'x' holding an (N, D) array, "
                    f"found {saved.files}."
                )
            array = saved["x"]
    else:
        raise ValueError(f"{path}: expected a .npy file or a .npz file with an 'x' entry.")
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"{path}: expected a 2-D numeric (N, D) array, got shape {array.shape} "
            f"and dtype {array.dtype}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{path}: the array holds NaN or infinite values.")
    return array.astype(np.float32)


def make_dataset(name: str, seed: int = 0, path: Path | None = None) -> Dataset:
    """One of `DATASETS` (generated with ``seed``), or a user's array file at ``path``.

    Raises:
        ValueError: for an unknown ``name``.
    """
    if path is not None:
        x = read_array(path)
        num_test = max(1, x.shape[0] // 5)
        (train,), (test,) = _split(seed, [x], num_test)
        return Dataset(Path(path).name, train, test, None, None, None, "normal")
    if name == "linear":
        x, _ = linear_gaussian(seed)
        (train,), (test,) = _split(seed, [x], 1000)
        return Dataset(name, train, test, None, None, 3, "normal")
    if name == "manifold":
        x, _ = nonlinear_manifold(seed)
        (train,), (test,) = _split(seed, [x], 1000)
        return Dataset(name, train, test, None, None, 5, "normal")
    if name == "sprites":
        x, factors = sprites(seed)
        (train, f_train), (test, f_test) = _split(seed, [x, factors], 1000)
        return Dataset(name, train, test, f_train, f_test, 4, "bernoulli", (16, 16))
    if name == "digits":
        x, labels = digits()
        (train, y_train), (test, y_test) = _split(seed, [x, labels[:, None]], 397)
        return Dataset(name, train, test, y_train, y_test, None, "normal", (8, 8))
    raise ValueError(f"data set must be one of {DATASETS}, got {name!r}.")
