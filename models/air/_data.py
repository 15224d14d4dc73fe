"""Multi-digit canvases: generated from scikit-learn's digits, or a user's multi-MNIST.

The generated set follows multi-MNIST (Eslami et al. 2016, sec. 3.1) at CPU scale:
each canvas is ``canvas_size x canvas_size`` (50) and holds 0 to ``max_objects`` (3)
digits, the count uniform; each digit is one of scikit-learn's 8x8 ``load_digits``
images resized to a ``window_size x window_size`` (20) window and placed with the
model's own spatial transformer at a random scale and position, inside the canvas.
Overlapping digits add and the canvas is clipped to ``[0, 1]``. Training and test
canvases use disjoint digit images. The true counts are kept for evaluation.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl_zoo.air._nets import window_to_image

__all__ = [
    "Canvases",
    "digit_windows",
    "generate",
    "load_multi_mnist",
    "make_split",
    "window_overlap",
]


class Canvases(NamedTuple):
    """Images ``(n, size, size)`` in ``[0, 1]`` (float32) and object counts ``(n,)``."""

    images: np.ndarray
    counts: np.ndarray


class Split(NamedTuple):
    """Training and test canvases, and validation canvases (None where there are none)
    for choosing a checkpoint without looking at the test set."""

    train: Canvases
    test: Canvases
    validation: Canvases | None = None


def digit_windows(window_size: int) -> np.ndarray:
    """scikit-learn's 1,797 digits, ``(1797, window_size, window_size)`` in ``[0, 1]``."""
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    digits = load_digits().images / 16.0
    # one pixel of empty border, then bilinear resize to the window
    padded = np.pad(digits, ((0, 0), (1, 1), (1, 1)))
    windows = resize(padded, (digits.shape[0], window_size, window_size), order=1)
    return np.clip(windows, 0.0, 1.0).astype(np.float32)


def generate(
    seed: int,
    num_canvases: int,
    windows: np.ndarray,
    canvas_size: int = 50,
    max_objects: int = 3,
    scale_range: tuple[float, float] = (2.2, 3.3),
) -> Canvases:
    """``num_canvases`` canvases, ``count ~ Uniform{0..max_objects}`` digits each.

    A digit at scale ``s`` covers ``canvas_size / s`` pixels; its centre is uniform
    over the positions that keep it inside the canvas.
    """
    rng = np.random.default_rng(seed)
    counts, scale, centre = _layout(rng, num_canvases, max_objects, scale_range)
    z_where = np.stack([scale, -scale * centre[..., 0], -scale * centre[..., 1]], axis=-1)
    index = rng.integers(0, windows.shape[0], (num_canvases, max_objects))
    present = np.arange(max_objects)[None, :] < counts[:, None]

    @jax.jit
    def render(z_where, digits, present):
        placed = jax.vmap(jax.vmap(lambda w, d: window_to_image(w, d, canvas_size)))(
            z_where, digits
        )
        return jnp.clip(jnp.sum(placed * present[..., None, None], axis=1), 0.0, 1.0)

    images = []
    for start in range(0, num_canvases, 1000):
        part = slice(start, start + 1000)
        images.append(
            np.asarray(
                render(
                    jnp.asarray(z_where[part], jnp.float32),
                    jnp.asarray(windows[index[part]]),
                    jnp.asarray(present[part], jnp.float32),
                )
            )
        )
    return Canvases(np.concatenate(images).astype(np.float32), counts.astype(np.int32))


def _layout(rng, num_canvases, max_objects, scale_range):
    counts = rng.integers(0, max_objects + 1, num_canvases)
    scale = rng.uniform(*scale_range, (num_canvases, max_objects))
    centre = rng.uniform(-1.0, 1.0, (num_canvases, max_objects, 2)) * (1.0 - 1.0 / scale)[..., None]
    return counts, scale, centre


def window_overlap(
    seed: int,
    num_canvases: int,
    max_objects: int = 3,
    scale_range: tuple[float, float] = (2.2, 3.3),
) -> np.ndarray:
    """For each canvas `generate` draws with these arguments, the largest overlap of two
    of its digits' windows, as a fraction of the smaller window's area (0 for fewer
    than two digits): the same draws, without rendering."""
    counts, scale, centre = _layout(
        np.random.default_rng(seed), num_canvases, max_objects, scale_range
    )
    half = 1.0 / scale  # half the window's side, in canvas coordinates [-1, 1]
    worst = np.zeros(num_canvases)
    for a in range(max_objects):
        for b in range(a + 1, max_objects):
            both = counts > b
            side = 2.0 * np.minimum(half[:, a], half[:, b])[:, None]
            reach = half[:, a, None] + half[:, b, None] - np.abs(centre[:, a] - centre[:, b])
            inter = np.prod(np.clip(np.minimum(reach, side), 0.0, None), axis=-1)
            fraction = inter / (4.0 * np.minimum(half[:, a], half[:, b]) ** 2)
            worst = np.where(both, np.maximum(worst, fraction), worst)
    return worst


def make_split(
    seed: int,
    num_train: int,
    num_test: int,
    canvas_size: int = 50,
    window_size: int = 20,
    max_objects: int = 3,
    num_validation: int = 0,
) -> Split:
    """Generated training and test canvases, from disjoint digit images (4:1).

    ``num_validation`` more canvases (their own layouts, seed ``seed + 2``) are drawn
    from the training digit images, for model selection; none where it is 0.
    """
    if num_validation < 0:
        raise ValueError(f"num_validation={num_validation} must be >= 0 (0: no validation set).")
    windows = digit_windows(window_size)
    order = np.random.default_rng(seed).permutation(windows.shape[0])
    cut = int(0.8 * windows.shape[0])
    train = generate(seed, num_train, windows[order[:cut]], canvas_size, max_objects)
    test = generate(seed + 1, num_test, windows[order[cut:]], canvas_size, max_objects)
    validation = None
    if num_validation > 0:
        validation = generate(
            seed + 2, num_validation, windows[order[:cut]], canvas_size, max_objects
        )
    return Split(train, test, validation)


def load_multi_mnist(
    path: Path, num_test: int, max_objects: int = 3, num_validation: int = 0
) -> Split:
    """The multi-MNIST ``.npz`` of Pyro's AIR example (or any file of that form).

    The file holds ``x``, images ``(n, h, w)`` (uint8 0-255 or float in ``[0, 1]``),
    and either ``counts`` ``(n,)`` or ``y``, one array of digit labels per image (an
    object array, as ``pyro/examples/air/multi_mnist.py`` writes). The last
    ``num_test`` images are the test set, the ``num_validation`` before them the
    validation set (none where it is 0).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected a multi-MNIST .npz).")
    try:
        archive = np.load(path, allow_pickle=True)
    except (OSError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a NumPy .npz archive ({err}).") from None
    with archive:
        if "x" not in archive.files:
            raise ValueError(f"{path}: no array 'x' (found {archive.files}); expected images.")
        images = np.asarray(archive["x"])
        if "counts" in archive.files:
            counts = np.asarray(archive["counts"]).astype(np.int64)
        elif "y" in archive.files:
            counts = np.array([len(np.atleast_1d(labels)) for labels in archive["y"]])
        else:
            raise ValueError(f"{path}: neither 'counts' nor 'y' (found {archive.files}).")
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{path}: 'x' has shape {images.shape}; expected (n, size, size).")
    if counts.shape != (images.shape[0],):
        raise ValueError(
            f"{path}: {counts.shape[0]} counts for {images.shape[0]} images; expected one each."
        )
    if counts.min(initial=0) < 0 or counts.max(initial=0) > max_objects:
        raise ValueError(
            f"{path}: counts range {counts.min()}..{counts.max()}; the model has at most "
            f"{max_objects} objects (set max_objects)."
        )
    if num_test <= 0 or num_validation < 0 or num_test + num_validation >= images.shape[0]:
        raise ValueError(
            f"{path}: {images.shape[0]} images, cannot hold out {num_test} test and "
            f"{num_validation} validation images."
        )
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    if images.min() < 0.0 or images.max() > 1.0:
        raise ValueError(f"{path}: pixel values outside [0, 1] (or 0-255 as uint8).")
    counts = counts.astype(np.int32)
    cut = images.shape[0] - num_test - num_validation
    validation = None
    if num_validation > 0:
        validation = Canvases(images[cut:-num_test], counts[cut:-num_test])
    return Split(
        Canvases(images[:cut], counts[:cut]),
        Canvases(images[-num_test:], counts[-num_test:]),
        validation,
    )
