"""Sparse checkpoints: only the active ``(µ, ρ)`` entries and their positions.

For each layer the positions of the active entries are stored in whichever of three
encodings is smallest: none (a fully dense layer), a bitmap (``np.packbits``, one bit
per weight) or the flat indices in the narrowest unsigned integer type that holds
them. The file is an uncompressed ``.npz`` with six arrays, the layers concatenated in
the network's order: ``counts`` (active entries per layer, ``uint32``), ``encoding``
(per layer: 0 dense, 1 bitmap, 2/3/4 ``uint8``/``uint16``/``uint32`` indices),
``positions`` (the bitmaps and index arrays as bytes), ``loc`` and ``rho`` (the active
values, ``float32``) and ``bias`` (dense). Its size on disk is the model size the
benchmark reports.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

__all__ = ["save_sparse", "load_sparse"]

_INDEX_TYPES = {2: np.uint8, 3: np.uint16, 4: np.uint32}


def _index_code(size: int) -> int:
    for code, dtype in _INDEX_TYPES.items():
        if size <= np.iinfo(dtype).max + 1:
            return code
    raise ValueError(f"a layer of {size} weights is too large for 32-bit indices.")


def save_sparse(path: str | os.PathLike, arch: tuple, params: dict, masks: dict) -> int:
    """Write the active entries of ``params`` under ``masks``; returns the file size in bytes."""
    counts, codes, positions, locs, rhos, biases = [], [], [], [], [], []
    for layer in arch:
        mask = np.asarray(masks[layer.name]).ravel()
        entry = params[layer.name]
        active = np.flatnonzero(mask)
        code = _index_code(mask.size)
        index_bytes = active.size * np.dtype(_INDEX_TYPES[code]).itemsize
        if active.size == mask.size:
            code, data = 0, np.zeros(0, np.uint8)
        elif math.ceil(mask.size / 8) <= index_bytes:
            code, data = 1, np.packbits(mask)
        else:
            data = active.astype(_INDEX_TYPES[code]).view(np.uint8)
        counts.append(active.size)
        codes.append(code)
        positions.append(data)
        locs.append(np.asarray(entry["loc"]).ravel()[active].astype(np.float32))
        rhos.append(np.asarray(entry["rho"]).ravel()[active].astype(np.float32))
        biases.append(np.asarray(entry["bias"], np.float32))
    path = Path(path)
    with open(path, "wb") as file:
        np.savez(
            file,
            counts=np.asarray(counts, np.uint32),
            encoding=np.asarray(codes, np.uint8),
            positions=np.concatenate(positions),
            loc=np.concatenate(locs),
            rho=np.concatenate(rhos),
            bias=np.concatenate(biases),
        )
    return path.stat().st_size


def load_sparse(path: str | os.PathLike, arch: tuple) -> tuple[dict, dict]:
    """Read a `save_sparse` file back into dense-shaped ``(params, masks)``.

    Inactive entries get ``µ = 0`` and ``ρ = 0``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file does not match ``arch`` (naming the layer).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint; run `ppl zoo train ssvi` first.")
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files}
    expected = {"counts", "encoding", "positions", "loc", "rho", "bias"}
    if set(arrays) != expected:
        raise ValueError(f"{path}: expected arrays {sorted(expected)}, got {sorted(arrays)}.")
    if arrays["counts"].size != len(arch):
        raise ValueError(
            f"{path}: holds {arrays['counts'].size} layers, the network has {len(arch)} "
            f"(layer '{arch[min(len(arch), arrays['counts'].size) - 1].name}' onwards differ); "
            f"use the configuration it was trained with."
        )
    params, masks = {}, {}
    at_position = at_value = at_bias = 0
    for layer, count, code in zip(arch, arrays["counts"], arrays["encoding"]):
        size, count = math.prod(layer.shape), int(count)
        if code == 0:
            mask = np.ones(size, bool)
        elif code == 1:
            width = math.ceil(size / 8)
            bits = arrays["positions"][at_position : at_position + width]
            mask = np.unpackbits(bits)[:size].astype(bool)
            at_position += width
        else:
            width = count * np.dtype(_INDEX_TYPES[int(code)]).itemsize
            raw = arrays["positions"][at_position : at_position + width]
            mask = np.zeros(size, bool)
            mask[raw.view(_INDEX_TYPES[int(code)]).astype(np.int64)] = True
            at_position += width
        if int(mask.sum()) != count:
            raise ValueError(
                f"{path}: layer '{layer.name}' lists {count} active entries but its "
                f"positions give {int(mask.sum())}; the file does not match a "
                f"{layer.shape} weight."
            )
        loc, rho = np.zeros(size, np.float32), np.zeros(size, np.float32)
        loc[mask] = arrays["loc"][at_value : at_value + count]
        rho[mask] = arrays["rho"][at_value : at_value + count]
        at_value += count
        width = layer.shape[-1]
        params[layer.name] = {
            "loc": loc.reshape(layer.shape),
            "rho": rho.reshape(layer.shape),
            "bias": arrays["bias"][at_bias : at_bias + width],
        }
        at_bias += width
        masks[layer.name] = mask.reshape(layer.shape)
    return params, masks
