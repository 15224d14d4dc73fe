"""Click data for Mult-VAE: the synthetic generator, MovieLens loaders, the split.

The protocol is the one of Liang et al. (WWW 2018) and their notebook: ratings >= 4 are
clicks, users with >= 5 clicks are kept, and the split is by users ("strong
generalization"): held-out validation and test users whose clicks are cut 80/20 into
fold-in items (the encoder's input) and held-out items (to be ranked).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

__all__ = [
    "Split",
    "synthetic_clicks",
    "read_movielens",
    "strong_generalization_split",
    "dense_batches",
]


class Split(NamedTuple):
    """A strong-generalization split; every matrix is users x items, scipy CSR (0/1).

    Attributes:
        train: the training users' clicks.
        valid_in, valid_out: fold-in and held-out clicks of the validation users.
        test_in, test_out: the same for the test users.
        test_log_probs: for generated data, the true log click probabilities of the
            test users (dense, for the oracle ranking); ``None`` for real data.
    """

    train: sp.csr_matrix
    valid_in: sp.csr_matrix
    valid_out: sp.csr_matrix
    test_in: sp.csr_matrix
    test_out: sp.csr_matrix
    test_log_probs: np.ndarray | None = None

    @property
    def num_items(self) -> int:
        return self.train.shape[1]


def synthetic_clicks(
    seed: int,
    num_users: int = 3000,
    num_items: int = 500,
    num_tastes: int = 8,
    zipf: float = 1.1,
    affinity_scale: float = 6.0,
    taste_fraction: float = 0.15,
    concentration: float = 0.2,
    mean_clicks: float = 35.0,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Popularity-skewed clicks from a few latent tastes, with the true probabilities.

    Item popularity is Zipf(``zipf``) over a random order of the items; taste ``t``
    has affinities ``a_t ~ N(0, affinity_scale²)`` on a random ``taste_fraction`` of
    the items; user ``u`` mixes the tastes with ``w_u ~ Dirichlet(concentration)``, so
    ``π_u = softmax(log pop + Σ_t w_ut a_t)``; the user clicks ``5 + Poisson(mean_clicks)``
    distinct items drawn without replacement from ``π_u`` (Gumbel top-k).

    Returns:
        ``(clicks, log_probs)``: a CSR 0/1 matrix and the dense ``log π``.
    """
    rng = np.random.default_rng(seed)
    ranks = rng.permutation(num_items) + 1
    log_pop = -zipf * np.log(ranks)
    affinity = rng.normal(0.0, affinity_scale, (num_tastes, num_items))
    affinity *= rng.random((num_tastes, num_items)) < taste_fraction
    weights = rng.dirichlet(np.full(num_tastes, concentration), num_users)
    logits = log_pop + weights @ affinity
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    counts = np.minimum(5 + rng.poisson(mean_clicks, num_users), num_items)
    perturbed = log_probs + rng.gumbel(size=log_probs.shape)
    order = np.argsort(-perturbed, axis=1)
    rows = np.repeat(np.arange(num_users), counts)
    cols = np.concatenate([order[u, : counts[u]] for u in range(num_users)])
    clicks = sp.csr_matrix(
        (np.ones(rows.size, np.float32), (rows, cols)), shape=(num_users, num_items)
    )
    return clicks, log_probs


_FORMATS = {
    # file name: (separator, has header, description for errors)
    "u.data": ("\t", False, "user<TAB>item<TAB>rating<TAB>timestamp"),
    "ratings.dat": ("::", False, "UserID::MovieID::Rating::Timestamp"),
    "ratings.csv": (",", True, "userId,movieId,rating,timestamp"),
}


def read_movielens(path: str | Path, min_rating: float = 4.0) -> np.ndarray:
    """Read the (user, item) clicks of a MovieLens ratings file.

    ``u.data`` (ML-100K), ``ratings.dat`` (ML-1M, ML-10M) and ``ratings.csv`` (ML-20M,
    ML-25M) are recognized by name. Ratings ``>= min_rating`` count as clicks.

    Returns:
        An integer array ``(num_clicks, 2)`` of raw (user id, item id).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unknown file name, or a malformed line (naming the file,
            the line number and the expected format).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (give a MovieLens ratings file).")
    if path.name not in _FORMATS:
        raise ValueError(
            f"{path}: unknown MovieLens file name; expected one of {', '.join(_FORMATS)}."
        )
    separator, header, expected = _FORMATS[path.name]
    pairs = []
    with open(path, encoding="latin-1") as lines:
        for number, line in enumerate(lines, start=1):
            if number == 1 and header:
                continue
            line = line.strip()
            if not line:
                continue
            fields = line.split(separator)
            try:
                if len(fields) != 4:
                    raise ValueError
                user, item, rating = int(fields[0]), int(fields[1]), float(fields[2])
            except ValueError:
                raise ValueError(
                    f"{path}, line {number}: expected '{expected}', got {line[:80]!r}."
                ) from None
            if rating >= min_rating:
                pairs.append((user, item))
    if not pairs:
        raise ValueError(f"{path}: no ratings >= {min_rating} found.")
    return np.asarray(pairs, dtype=np.int64)


def _to_csr(user_index: np.ndarray, item_index: np.ndarray, shape) -> sp.csr_matrix:
    matrix = sp.csr_matrix(
        (np.ones(user_index.size, np.float32), (user_index, item_index)), shape=shape
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def strong_generalization_split(
    seed: int,
    clicks: sp.csr_matrix | np.ndarray,
    num_heldout_users: int,
    min_clicks: int = 5,
    heldout_fraction: float = 0.2,
    log_probs: np.ndarray | None = None,
) -> Split:
    """Split users into train / validation / test and cut held-out users 80/20.

    ``clicks`` is a users x items CSR matrix, or raw ``(user id, item id)`` pairs as
    `read_movielens` returns. Users with fewer than ``min_clicks`` clicks are dropped;
    ``num_heldout_users`` random users each go to validation and test, the rest to
    training; items are restricted to those clicked by training users. A held-out user
    with at least 5 (remaining) clicks has a random ``heldout_fraction`` of them held
    out; one with fewer is fold-in only.
    """
    rng = np.random.default_rng(seed)
    if not sp.issparse(clicks):
        _, users = np.unique(clicks[:, 0], return_inverse=True)
        _, items = np.unique(clicks[:, 1], return_inverse=True)
        clicks = _to_csr(users, items, (users.max() + 1, items.max() + 1))
    clicks = sp.csr_matrix(clicks)
    keep = np.flatnonzero(np.diff(clicks.indptr) >= min_clicks)
    if log_probs is not None:
        log_probs = log_probs[keep]
    clicks = clicks[keep]
    num_users = clicks.shape[0]
    if num_users <= 2 * num_heldout_users:
        raise ValueError(
            f"{num_users} users with >= {min_clicks} clicks cannot give {num_heldout_users} "
            f"validation and {num_heldout_users} test users and leave training users."
        )
    order = rng.permutation(num_users)
    train_users = order[: num_users - 2 * num_heldout_users]
    valid_users = order[num_users - 2 * num_heldout_users : num_users - num_heldout_users]
    test_users = order[num_users - num_heldout_users :]
    items = np.flatnonzero(np.asarray(clicks[train_users].sum(axis=0)).ravel() > 0)

    def cut(users):
        block = clicks[users][:, items].tocsr()
        fold_in, held_out = [], []
        for row in range(block.shape[0]):
            cols = block.indices[block.indptr[row] : block.indptr[row + 1]]
            if cols.size >= 5:
                mask = np.zeros(cols.size, bool)
                mask[rng.choice(cols.size, int(heldout_fraction * cols.size), replace=False)] = True
            else:
                mask = np.zeros(cols.size, bool)
            fold_in.append(cols[~mask])
            held_out.append(cols[mask])

        def csr(lists):
            rows = np.repeat(np.arange(len(lists)), [c.size for c in lists])
            cols = np.concatenate(lists) if lists else np.zeros(0, int)
            return _to_csr(rows, cols, (len(lists), items.size))

        return csr(fold_in), csr(held_out)

    valid_in, valid_out = cut(valid_users)
    test_in, test_out = cut(test_users)
    test_log_probs = None if log_probs is None else log_probs[test_users][:, items]
    return Split(
        clicks[train_users][:, items].tocsr(),
        valid_in,
        valid_out,
        test_in,
        test_out,
        test_log_probs,
    )


def dense_batches(
    seed: int, matrix: sp.csr_matrix, batch_size: int, shuffle: bool = True
) -> Iterator[np.ndarray]:
    """Dense float32 minibatches of the rows of a CSR matrix (one pass).

    Only ``batch_size`` rows are ever dense, so ML-20M (136k x 20k) stays small in
    memory. With ``shuffle`` the last partial batch is dropped (as ``ppl.fit`` does);
    without it (evaluation), every row is returned.
    """
    num_rows = matrix.shape[0]
    if shuffle:
        order = np.random.default_rng(seed).permutation(num_rows)
        stops = range(batch_size, num_rows + 1, batch_size)
    else:
        order = np.arange(num_rows)
        stops = range(batch_size, num_rows + batch_size, batch_size)
    for stop in stops:
        yield matrix[order[stop - batch_size : stop]].toarray().astype(np.float32)
