"""Atomic, resumable checkpoints of ``ppl.fit``: one ``.npz`` file per run.

A checkpoint holds every leaf of the trainable parameters and of the optimizer state,
the PRNG key, the step counters and the history. It is written to a temporary file in
the same directory, fsync-ed and renamed over the previous one, so a reader or a
resumed run only ever sees a complete checkpoint.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr, tree_flatten_with_path

CHECKPOINT_NAME = "checkpoint.npz"
_TEMP_PREFIX = ".checkpoint-"
_TEMP_SUFFIX = ".npz.tmp"
_FORMAT_VERSION = 1


def _counters(state: Any) -> tuple[str, ...]:
    """The scalar counters of a training state: every field but params and optimizer."""
    return tuple(name for name in state._fields if name not in ("trainable", "opt_state"))


def leaf_paths(tree: Any, prefix: str) -> list[str]:
    return [prefix + keystr(path) for path, _ in tree_flatten_with_path(tree)[0]]


def checkpoint_arrays(key: jax.Array, state: Any, history: np.ndarray) -> dict:
    arrays = {
        "format_version": np.asarray(_FORMAT_VERSION),
        "key_data": np.asarray(jax.random.key_data(key)),
        "key_impl": np.asarray(str(jax.random.key_impl(key))),
        "history": np.asarray(history, dtype=np.float64),
        "params_paths": np.asarray(leaf_paths(state.trainable, "params"), dtype=str),
    }
    for name in _counters(state):
        arrays[name] = np.asarray(getattr(state, name))
    for index, leaf in enumerate(jax.tree.leaves(state.trainable)):
        arrays[f"params/{index}"] = np.asarray(leaf)
    for index, leaf in enumerate(jax.tree.leaves(state.opt_state)):
        arrays[f"opt_state/{index}"] = np.asarray(leaf)
    return arrays


def write_checkpoint(directory: str, arrays: dict) -> None:
    """Write ``arrays`` to ``directory/checkpoint.npz`` atomically.

    The data go to a temporary file in the same directory, which is flushed and
    fsync-ed and then renamed over the checkpoint with `os.replace` (atomic on POSIX
    and Windows), so a reader (or a resumed run after a crash) only ever sees a
    complete checkpoint: the previous one or the new one.
    """
    descriptor, temp_path = tempfile.mkstemp(
        prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=directory
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, os.path.join(directory, CHECKPOINT_NAME))
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp_path)
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename durable (POSIX)
        directory_descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_descriptor)
        finally:
            os.close(directory_descriptor)


def _restore_leaves(saved: Any, prefix: str, template: Any, paths: list[str], what: str) -> Any:
    leaves, treedef = jax.tree.flatten(template)
    restored = []
    for index, (path, leaf) in enumerate(zip(paths, leaves, strict=True)):
        array = saved[f"{prefix}/{index}"]
        leaf = np.asarray(leaf)
        if array.dtype != leaf.dtype and array.dtype.kind == "V":
            array = array.view(leaf.dtype)  # dtypes NumPy cannot name, such as bfloat16
        if array.shape != leaf.shape or array.dtype != leaf.dtype:
            raise ValueError(
                f"fit: the checkpoint does not match {what}: {path} is "
                f"{array.dtype}{list(array.shape)} in the checkpoint but "
                f"{leaf.dtype}{list(leaf.shape)} here."
            )
        restored.append(jnp.asarray(array))
    return jax.tree.unflatten(treedef, restored)


def load_checkpoint(path: str, template: Any) -> tuple[jax.Array, Any, np.ndarray]:
    """Load a checkpoint into the structure of ``template`` (params and opt_state).

    Raises:
        ValueError: naming ``path`` and what to do, for a file that is truncated, not
            an ``.npz`` archive, or not a checkpoint of this format.
    """
    try:
        with np.load(path, allow_pickle=False) as saved:
            saved = dict(saved)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        reason = (
            "NumPy reads it as a pickle, not an .npz archive"
            if "pickle" in str(error)
            else f"{type(error).__name__}: {error}"
        )
        raise ValueError(
            f"fit: {path} is not a readable ppl.fit checkpoint: it is truncated or not a "
            f"checkpoint ({reason}). fit writes checkpoints atomically, so the file was "
            f"probably copied incompletely or written by something else. Delete or move "
            f"it to start afresh, or pass another checkpoint_dir."
        ) from None
    version = int(saved["format_version"]) if "format_version" in saved else None
    missing = [
        name for name in ("key_data", "key_impl", "history", "params_paths") if name not in saved
    ]
    if version != _FORMAT_VERSION or missing:
        found = "no format_version" if version is None else f"format {version}"
        raise ValueError(
            f"fit: {path} is an .npz file but not a ppl.fit checkpoint of format "
            f"{_FORMAT_VERSION} (it has {found}"
            + (f" and lacks {', '.join(missing)}" if missing else "")
            + "). Move it away to start afresh, or pass another checkpoint_dir."
        )
    params_paths = leaf_paths(template.trainable, "params")
    saved_paths = [str(p) for p in saved["params_paths"]]
    if saved_paths != params_paths:
        missing = [p for p in saved_paths if p not in params_paths]
        extra = [p for p in params_paths if p not in saved_paths]
        mismatch = [a for a, b in zip(saved_paths, params_paths) if a != b]
        detail = (
            f"the checkpoint has {missing[0]}, which params lacks"
            if missing
            else f"params has {extra[0]}, which the checkpoint lacks"
            if extra
            else f"the leaves are in a different order, starting at {mismatch[0]}"
        )
        raise ValueError(
            f"fit: the parameter structure in {path} does not match params: {detail}. "
            f"Pass params with the structure of the checkpointed run, or another "
            f"checkpoint_dir."
        )
    trainable = _restore_leaves(saved, "params", template.trainable, params_paths, "params")
    opt_template_leaves = jax.tree.leaves(template.opt_state)
    num_opt = sum(name.startswith("opt_state/") for name in saved)
    if num_opt != len(opt_template_leaves):
        raise ValueError(
            f"fit: the optimizer state in {path} has {num_opt} leaves but "
            f"optimizer.init(params) has {len(opt_template_leaves)}: the checkpoint was "
            f"written with a different optimizer."
        )
    opt_paths = leaf_paths(template.opt_state, "opt_state")
    opt_state = _restore_leaves(saved, "opt_state", template.opt_state, opt_paths, "the optimizer")
    counters = {name: jnp.asarray(saved[name]) for name in _counters(template)}
    state = template._replace(trainable=trainable, opt_state=opt_state, **counters)
    key = jax.random.wrap_key_data(saved["key_data"], impl=str(saved["key_impl"]))
    return key, state, np.asarray(saved["history"], dtype=np.float64)


def remove_stale_temp_files(directory: str) -> None:
    for path in glob.glob(os.path.join(directory, _TEMP_PREFIX + "*" + _TEMP_SUFFIX)):
        with contextlib.suppress(OSError):
            os.remove(path)
