"""Offline data for SSVI: scikit-learn's digits and MNIST-1D regenerated with ``mnist1d``.

Both sets ship as code or inside a wheel, so nothing is downloaded: ``load_digits``
reads ``digits.csv.gz`` from the scikit-learn wheel; MNIST-1D (Greydanus, 2020) is
regenerated procedurally by ``mnist1d.data.make_dataset`` with its default arguments
(4,000 training and 1,000 test series of length 40), never through its download path.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Dataset", "load_digits", "load_mnist1d", "load_dataset", "DATASETS"]


class Dataset(NamedTuple):
    """A classification split; inputs are ``float32``, labels ``int32``.

    Attributes:
        name: ``"digits"`` or ``"mnist1d"``.
        x_train, y_train: training inputs ``(N, ...)`` and labels ``(N,)``.
        x_valid, y_valid: a held-out part of the training data (hyper-parameters).
        x_test, y_test: test inputs and labels.
        num_classes: the number of classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def _stratified(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(rest, held_out)`` with ``fraction`` of every class held out."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held.append(members[: int(round(fraction * members.size))])
    held = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(labels.size), held)
    return rest, held


def load_digits(seed: int = 0, test_fraction: float = 0.25, valid_fraction: float = 0.1):
    """scikit-learn's 8x8 digits (1,797 images), stratified train/validation/test split.

    Pixels are standardized with the training mean and standard deviation.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    x, y = sklearn_digits(return_X_y=True)
    x = x.astype(np.float32)
    y = y.astype(np.int32)
    train_valid, test = _stratified(y, test_fraction, seed)
    inner_train, inner_valid = _stratified(y[train_valid], valid_fraction, seed + 1)
    train, valid = train_valid[inner_train], train_valid[inner_valid]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-3
    x = (x - mean) / std
    return Dataset("digits", x[train], y[train], x[valid], y[valid], x[test], y[test], 10)


def load_mnist1d(seed: int = 0, valid_fraction: float = 0.1) -> Dataset:
    """MNIST-1D regenerated offline with ``mnist1d.data.make_dataset`` (default arguments).

    The package's own 4,000/1,000 train/test split is kept; a stratified
    ``valid_fraction`` of the training series is held out for validation. Inputs get a
    channel axis: ``(N, 40, 1)``. ``make_dataset`` seeds NumPy's global generator from
    its arguments; the caller's global state is saved and restored around it.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # noqa: NPY002 (mnist1d seeds the global generator)
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)  # noqa: NPY002
    x = np.asarray(data["x"], np.float32)[..., None]
    y = np.asarray(data["y"], np.int32)
    train, valid = _stratified(y, valid_fraction, seed)
    x_test = np.asarray(data["x_test"], np.float32)[..., None]
    y_test = np.asarray(data["y_test"], np.int32)
    return Dataset("mnist1d", x[train], y[train], x[valid], y[valid], x_test, y_test, 10)


DATASETS = {"digits": load_digits, "mnist1d": load_mnist1d}


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """``load_digits`` or ``load_mnist1d`` by name.

    Raises:
        ValueError: for an unknown name (listing the known ones).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}.")
    return DATASETS[name](seed)
