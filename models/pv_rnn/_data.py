"""Generated data: Lissajous primitives that switch by a probabilistic finite-state machine.

In the Tani-lab tradition (Namikawa & Tani 2008; Ahmadi & Tani 2019, Sec. 3.1): three
2-D primitives of one period each, A (a circle above the origin), B (a figure-eight
below it) and C (an ellipse to the lower left), all starting and ending at the origin.
The primitives are drawn by a first-order Markov chain over four hidden states,
``A B A' C``: ``A`` and ``A'`` both draw the circle, ``A'`` being the circle that
follows a B. After ``A`` comes B with probability ``p`` or C with ``1 - p``; after
``A'`` comes C with ``p`` or B with ``1 - p``; after B comes ``A'`` and after C comes
``A``. So the patterns mostly alternate ``A B A C A B A C …`` with occasional repeats,
all the randomness is at the end of every circle (the *branch points*), and which
branch is likely depends on the primitive *before* the circle, one period back: a
predictor has to remember it. Gaussian observation noise is added; the clean curves,
the primitive labels, the hidden states and the true transition matrix are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "PRIMITIVES",
    "STATES",
    "EMISSIONS",
    "TRUE_TRANSITIONS",
    "chain_transitions",
    "Sequences",
    "Data",
    "templates",
    "lissajous_sequences",
    "load_data",
]

PRIMITIVES = ("A", "B", "C")
#: The hidden states of the chain; ``A'`` is the circle that follows a B.
STATES = ("A", "B", "A'", "C")
#: The primitive each hidden state draws.
EMISSIONS = np.array([0, 1, 0, 2])


def chain_transitions(p: float) -> np.ndarray:
    """``T[i, j] = P(next state j | state i)`` over `STATES`, branching with ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the branch probability must be in [0, 1], got {p}.")
    q = 1.0 - p
    return np.array(
        [[0.0, p, 0.0, q], [0.0, 0.0, 1.0, 0.0], [0.0, q, 0.0, p], [1.0, 0.0, 0.0, 0.0]]
    )


#: The default chain (``p = 0.8``): ``TRUE_TRANSITIONS[i, j] = P(state j | state i)``.
TRUE_TRANSITIONS = chain_transitions(0.8)


class Sequences(NamedTuple):
    """A set of sequences.

    Attributes:
        x: observations, ``(num_sequences, length, 2)`` float32.
        clean: the same without noise.
        labels: the primitive (0 = A, 1 = B, 2 = C) at every step, ``(num_sequences, length)``.
        phase: the step within the current primitive, ``(num_sequences, length)``.
        states: the hidden state (an index into `STATES`) at every step.
    """

    x: np.ndarray
    clean: np.ndarray
    labels: np.ndarray
    phase: np.ndarray
    states: np.ndarray


class Data(NamedTuple):
    """Training and test sequences, the primitive period, the true transition matrix
    (over `STATES`) and the observation noise's standard deviation."""

    train: Sequences
    test: Sequences
    period: int
    transitions: np.ndarray
    noise: float


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
    """Sequences that start in state A and switch by ``transitions`` at each period."""
    if num_sequences < 1 or length < period:
        raise ValueError(
            f"need num_sequences >= 1 and length >= period ({period}); "
            f"got num_sequences={num_sequences}, length={length}."
        )
    rng = np.random.default_rng(seed)
    shapes = templates(period)
    cycles = -(-length // period)
    states = np.zeros((num_sequences, cycles), dtype=np.int32)
    for k in range(1, cycles):
        for n in range(num_sequences):
            states[n, k] = rng.choice(len(STATES), p=transitions[states[n, k - 1]])
    labels = EMISSIONS[states]
    clean = shapes[labels].reshape(num_sequences, cycles * period, 2)[:, :length]
    step_labels = np.repeat(labels, period, axis=1)[:, :length].astype(np.int32)
    phase = np.tile(np.arange(period), cycles)[:length]
    x = clean + noise * rng.standard_normal(clean.shape)
    return Sequences(
        x.astype(np.float32),
        clean.astype(np.float32),
        step_labels,
        np.broadcast_to(phase, step_labels.shape).copy(),
        np.repeat(states, period, axis=1)[:, :length],
    )


def load_data(config: Mapping[str, Any], path: Path | None) -> Data:
    """Generated training and test sequences (``config``: seeds, counts, lengths)."""
    if path is not None:
        raise ValueError(
            f"pv_rnn generates its data (Lissajous primitives); --data {path} is not "
            "supported. Change the data with --set num_train=..., length=..., noise=..."
        )
    period, noise = int(config["period"]), float(config["noise"])
    seed = int(config["data_seed"])
    transitions = chain_transitions(float(config["branch_probability"]))
    train = lissajous_sequences(
        seed, int(config["num_train"]), int(config["length"]), period, noise, transitions
    )
    test = lissajous_sequences(
        seed + 10_000,
        int(config["num_test"]),
        int(config["test_length"]),
        period,
        noise,
        transitions,
    )
    return Data(train, test, period, transitions, noise)
