"""Generated data: Lissajous primitives that switch by a probabilistic finite-state machine.

In the Tani-lab tradition (Namikawa & Tani 2008; Ahmadi & Tani 2019, Sec. 3.1): three
2-D primitives of one period each, A (a circle above the origin), B (a figure-eight
below it) and C (an ellipse to the lower left), all starting and ending at the
origin. After A comes B with probability 0.7 or C with 0.3; after B or C comes A, so
the only randomness in the pattern sequence is at the end of every A (the *branch
points*). Gaussian observation noise is added; the clean curves, the primitive labels
and the true transition matrix are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "PRIMITIVES",
    "TRUE_TRANSITIONS",
    "Sequences",
    "Data",
    "templates",
    "lissajous_sequences",
    "load_data",
]

PRIMITIVES = ("A", "B", "C")
#: ``TRUE_TRANSITIONS[i, j] = P(next primitive j | current primitive i)``.
TRUE_TRANSITIONS = np.array([[0.0, 0.7, 0.3], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])


class Sequences(NamedTuple):
    """A set of sequences.

    Attributes:
        x: observations, ``(num_sequences, length, 2)`` float32.
        clean: the same without noise.
        labels: the primitive (0 = A, 1 = B, 2 = C) at every step, ``(num_sequences, length)``.
        phase: the step within the current primitive, ``(num_sequences, length)``.
    """

    x: np.ndarray
    clean: np.ndarray
    labels: np.ndarray
    phase: np.ndarray


class Data(NamedTuple):
    """Training and test sequences, the primitive period and the true transition matrix."""

    train: Sequences
    test: Sequences
    period: int
    transitions: np.ndarray


def templates(period: int) -> np.ndarray:
    """The three primitives sampled at ``period`` steps, ``(3, period, 2)``.

    ``φ_k = 2πk / period``; A: ``(0.4 sin φ, 0.4 (1 - cos φ))``; B: ``(0.5 sin 2φ,
    -0.4 (1 - cos φ))``; C: ``(-0.6 sin φ, -0.3 (1 - cos φ))``. Every one is at the
    origin at ``k = 0``, so consecutive primitives join continuously.
    """
    if period < 4:
        raise ValueError(f"period must be at least 4 steps, got {period}.")
    phi = 2.0 * np.pi * np.arange(period) / period
    a = np.stack([0.4 * np.sin(phi), 0.4 * (1.0 - np.cos(phi))], -1)
    b = np.stack([0.5 * np.sin(2.0 * phi), -0.4 * (1.0 - np.cos(phi))], -1)
    c = np.stack([-0.6 * np.sin(phi), -0.3 * (1.0 - np.cos(phi))], -1)
    return np.stack([a, b, c]).astype(np.float32)


def lissajous_sequences(
    seed: int,
    num_sequences: int,
    length: int,
    period: int = 16,
    noise: float = 0.02,
    transitions: np.ndarray = TRUE_TRANSITIONS,
) -> Sequences:
    """Sequences that start with A and switch primitives by ``transitions`` at each period."""
    if num_sequences < 1 or length < period:
        raise ValueError(
            f"need num_sequences >= 1 and length >= period ({period}); "
            f"got num_sequences={num_sequences}, length={length}."
        )
    rng = np.random.default_rng(seed)
    shapes = templates(period)
    cycles = -(-length // period)
    labels = np.zeros((num_sequences, cycles), dtype=np.int32)
    for k in range(1, cycles):
        for n in range(num_sequences):
            labels[n, k] = rng.choice(3, p=transitions[labels[n, k - 1]])
    clean = shapes[labels].reshape(num_sequences, cycles * period, 2)[:, :length]
    step_labels = np.repeat(labels, period, axis=1)[:, :length]
    phase = np.tile(np.arange(period), cycles)[:length]
    x = clean + noise * rng.standard_normal(clean.shape)
    return Sequences(
        x.astype(np.float32),
        clean.astype(np.float32),
        step_labels,
        np.broadcast_to(phase, step_labels.shape).copy(),
    )


def load_data(config: Mapping[str, Any], path: Path | None) -> Data:
    """Generated training and test sequences (``config``: seeds, counts, lengths)."""
    if path is not None:
        raise ValueError(
            f"pv_rnn generates its data (Lissajous primitives); --data {path} is not "
            "supported. Change the data with --set num_train=..., length=..., noise=..."
        )
    period = int(config["period"])
    seed = int(config["data_seed"])
    train = lissajous_sequences(
        seed, int(config["num_train"]), int(config["length"]), period, float(config["noise"])
    )
    test = lissajous_sequences(
        seed + 10_000,
        int(config["num_test"]),
        int(config["test_length"]),
        period,
        float(config["noise"]),
    )
    return Data(train, test, period, TRUE_TRANSITIONS.copy())
