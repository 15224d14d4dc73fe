"""Images for VBLE: scikit-image's bundled samples or a folder the user supplies.

Every image is converted to grayscale float32 in [0, 1]. Whole images are held out:
the compressive autoencoder is trained on crops of the training images only, the
regularization weight λ of each restoration method is chosen on a crop of the
validation image, and the metrics are measured on crops of the test images.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "TRAIN_IMAGES",
    "VALIDATION_IMAGES",
    "TEST_IMAGES",
    "Images",
    "skimage_images",
    "read_image_folder",
    "split_images",
    "random_crops",
    "center_crops",
]

# scikit-image samples that ship inside its wheel (no pooch download), natural or
# microscopy photographs; logos, binary masks and the 102-pixel image are left out.
TRAIN_IMAGES = (
    "brick",
    "cell",
    "chelsea",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "page",
    "retina",
    "rocket",
    "text",
    "clock",
)
VALIDATION_IMAGES = ("coffee",)
TEST_IMAGES = ("camera", "astronaut", "moon")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class Images(NamedTuple):
    """Grayscale float32 images in [0, 1], by split (each a dict name -> (H, W) array)."""

    train: dict[str, np.ndarray]
    validation: dict[str, np.ndarray]
    test: dict[str, np.ndarray]


def to_gray(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` (H, W), (H, W, 3) or (H, W, 4), any integer or float range, as float32 [0, 1]."""
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[-1] == 3:
        image = rgb2gray(image)
    if image.ndim != 2:
        raise ValueError(
            f"{name}: expected a grayscale (H, W) or color (H, W, 3|4) image, "
            f"got shape {image.shape}."
        )
    return np.clip(img_as_float(image), 0.0, 1.0).astype(np.float32)


def skimage_images(names) -> dict[str, np.ndarray]:
    """The scikit-image sample images ``names`` (bundled in the wheel), grayscale [0, 1]."""
    import skimage.data

    out = {}
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise ValueError(f"skimage.data has no image '{name}'.")
        out[name] = to_gray(loader(), f"skimage.data.{name}")
    return out


def read_image_folder(path: str | Path, min_size: int = 64) -> dict[str, np.ndarray]:
    """Every image file in ``path`` (png, jpg, tif, bmp), grayscale float32 in [0, 1].

    Raises:
        FileNotFoundError: ``path`` is not a directory.
        ValueError: a file cannot be decoded, is smaller than ``min_size`` on a side,
            or the folder holds no image file; the message names the file.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory (expected a folder of images).")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"{path}: no image files (expected files ending in {', '.join(IMAGE_SUFFIXES)})."
        )
    out = {}
    for file in files:
        try:
            image = iio.imread(file)
        except Exception as error:  # imageio raises many types for a corrupt file
            raise ValueError(
                f"{file}: cannot be read as an image ({type(error).__name__}: {error}); "
                "remove it or replace it with a valid PNG/JPEG/TIFF."
            ) from None
        image = to_gray(image, str(file))
        if min(image.shape) < min_size:
            raise ValueError(
                f"{file}: image is {image.shape[0]}x{image.shape[1]}, smaller than the "
                f"{min_size}-pixel crops; remove it or lower crop_size."
            )
        out[file.stem] = image
    return out


def split_images(images: dict[str, np.ndarray], seed: int = 0) -> Images:
    """A user folder split by whole images: one validation, ~20 % (at least 1) test."""
    names = sorted(images)
    if len(names) < 3:
        raise ValueError(
            f"need at least 3 images (train, validation, test), got {len(names)}: {names}."
        )
    order = np.random.default_rng(seed).permutation(len(names))
    num_test = max(1, len(names) // 5)
    test = [names[i] for i in order[:num_test]]
    validation = [names[order[num_test]]]
    train = [names[i] for i in order[num_test + 1 :]]
    pick = lambda keys: {k: images[k] for k in keys}  # noqa: E731
    return Images(pick(train), pick(validation), pick(test))


def random_crops(
    seed: int, images: dict[str, np.ndarray], num_crops: int, size: int, augment: bool = True
) -> np.ndarray:
    """``num_crops`` random ``size`` x ``size`` crops (flips and rot90 if ``augment``).

    Images are drawn in proportion to their number of pixels. Returns float32 of
    shape (num_crops, 1, size, size).
    """
    rng = np.random.default_rng(seed)
    names = sorted(images)
    for name in names:
        if min(images[name].shape) < size:
            raise ValueError(f"image '{name}' {images[name].shape} is smaller than {size}.")
    weights = np.array([images[n].size for n in names], dtype=float)
    picks = rng.choice(len(names), size=num_crops, p=weights / weights.sum())
    out = np.empty((num_crops, 1, size, size), np.float32)
    for i, pick in enumerate(picks):
        image = images[names[pick]]
        top = rng.integers(0, image.shape[0] - size + 1)
        left = rng.integers(0, image.shape[1] - size + 1)
        crop = image[top : top + size, left : left + size]
        if augment:
            crop = np.rot90(crop, rng.integers(4))
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
        out[i, 0] = crop
    return out


def center_crops(images: dict[str, np.ndarray], size: int, per_image: int = 1) -> dict:
    """Deterministic ``size`` x ``size`` crops: ``per_image`` along each image's diagonal.

    Returns a dict ``"name/k"`` -> (size, size) float32 array.
    """
    out = {}
    for name in sorted(images):
        image = images[name]
        if min(image.shape) < size:
            raise ValueError(f"image '{name}' {image.shape} is smaller than {size}.")
        for k in range(per_image):
            frac = (k + 1) / (per_image + 1)
            top = int(round(frac * (image.shape[0] - size)))
            left = int(round(frac * (image.shape[1] - size)))
            out[f"{name}/{k}"] = image[top : top + size, left : left + size].copy()
    return out
