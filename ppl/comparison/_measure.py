"""Measurements: gradient estimates in chunks, their moments, time and memory."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr, tree_flatten_with_path

from ppl.adev import Expectation
from ppl.comparison._report import VariantResult
from ppl.parallel import DATA, axis_size, constrain_batch, use_mesh


class _Setup:
    """The split of ``(params, *args)`` into differentiated and fixed parts."""

    def __init__(self, args: tuple) -> None:
        if not args:
            raise TypeError("compare needs the objective's arguments: (params, *args).")
        params, rest = args[0], args[1:]
        self.trainable, self.frozen = eqx.partition(params, eqx.is_inexact_array)
        self.dynamic_rest, self.static_rest = eqx.partition(rest, eqx.is_array)
        leaves = tree_flatten_with_path(self.trainable)[0]
        if not leaves:
            raise ValueError(
                "compare: params (the first argument) has no floating-point arrays to "
                "differentiate. Write values as arrays, e.g. {'loc': jnp.asarray(0.0)}."
            )
        self.paths = ["params" + keystr(path) for path, _ in leaves]
        self.shapes = [np.shape(leaf) for _, leaf in leaves]
        self.size = int(sum(math.prod(s) for s in self.shapes))

    def single(self, expectation: Expectation) -> Callable:
        """``(key, trainable, dynamic_rest) -> (value, grads)`` for one key."""
        frozen, static_rest = self.frozen, self.static_rest

        def one(
            key: jax.Array, trainable: Any, dynamic_rest: Any
        ) -> tuple[jax.Array, list[jax.Array]]:
            rest = eqx.combine(dynamic_rest, static_rest)

            def value(trainable: Any) -> jax.Array:
                return expectation(key, eqx.combine(trainable, frozen), *rest)

            value, grads = jax.value_and_grad(value)(trainable)
            return value, jax.tree.leaves(grads)

        return one


class _Moments:
    """Running count, mean and sum of squared deviations (Chan et al. 1979), float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: list[np.ndarray] = []
        self.m2: list[np.ndarray] = []
        self.chunk_variances: list[float] = []  # total variance within each full chunk

    def add(self, blocks: list[np.ndarray], full: bool) -> None:
        n = blocks[0].shape[0]
        means = [b.mean(axis=0) for b in blocks]
        m2s = [((b - m) ** 2).sum(axis=0) for b, m in zip(blocks, means)]
        if full and n > 1:
            self.chunk_variances.append(float(sum(m.sum() for m in m2s[1:]) / (n - 1)))
        if self.count == 0:
            self.count, self.mean, self.m2 = n, means, m2s
            return
        total = self.count + n
        for i, (m, m2) in enumerate(zip(means, m2s)):
            delta = m - self.mean[i]
            self.mean[i] = self.mean[i] + delta * (n / total)
            self.m2[i] = self.m2[i] + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def variance(self, i: int) -> np.ndarray:
        return self.m2[i] / (self.count - 1)


def _draw_moments(batched: Callable, keys: jax.Array, setup: _Setup, chunk: int) -> _Moments:
    """Value and gradient moments over ``keys``, ``chunk`` keys per compiled call."""
    moments = _Moments()
    n = keys.shape[0]
    for start in range(0, n, chunk):
        part = keys[start : start + chunk]
        used = part.shape[0]
        if used < chunk:  # pad to the compiled shape; the padding is dropped below
            part = jnp.concatenate([part, keys[: chunk - used]])
        value, grads = batched(part, setup.trainable, setup.dynamic_rest)
        blocks = [np.asarray(value, np.float64)[:used, None]]
        blocks += [np.asarray(g, np.float64)[:used].reshape(used, -1) for g in grads]
        moments.add(blocks, full=used == chunk)
    return moments


def _memory(compiled: jax.stages.Compiled) -> int | None:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if stats is None:
        return None
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return int(total) if total > 0 else None


def _time(
    compiled: jax.stages.Compiled, keys: jax.Array, setup: _Setup
) -> tuple[float, tuple[float, float]]:
    for key in keys[:3]:  # warm-up
        jax.block_until_ready(compiled(key, setup.trainable, setup.dynamic_rest))
    times = []
    for key in keys[3:]:
        start = time.perf_counter()
        jax.block_until_ready(compiled(key, setup.trainable, setup.dynamic_rest))
        times.append(time.perf_counter() - start)
    q25, q50, q75 = np.percentile(times, [25.0, 50.0, 75.0])
    return float(q50), (float(q25), float(q75))


class _Measured:
    """What `_measure` finds for one variant before the reference is known."""

    def __init__(
        self,
        moments: _Moments,
        batched: Callable,
        chunk: int,
        time_median: float,
        quartiles: tuple[float, float],
        memory: int | None,
    ) -> None:
        self.moments = moments
        self.batched = batched
        self.chunk = chunk
        self.time = time_median
        self.quartiles = quartiles
        self.memory = memory

    def total_variance(self) -> float:
        return float(sum(self.moments.variance(i).sum() for i in range(1, len(self.moments.m2))))

    def mean_gradient(self) -> np.ndarray:
        return np.concatenate(self.moments.mean[1:])

    def variances(self) -> np.ndarray:
        return np.concatenate([self.moments.variance(i) for i in range(1, len(self.moments.m2))])


def _measure(
    expectation: Callable[..., jax.Array],
    setup: _Setup,
    keys: jax.Array,
    timing_keys: jax.Array,
    max_chunk_bytes: int,
    mesh: jax.sharding.Mesh | None = None,
) -> _Measured:
    with use_mesh(mesh):  # on a mesh: keys over its "data" axis, particles over "particles"
        one = setup.single(expectation)
        args = (timing_keys[0], setup.trainable, setup.dynamic_rest)
        compiled = jax.jit(one).lower(*args).compile()
        memory = _memory(compiled)
        footprint = max(memory or 0, 8 * (setup.size + 1))
        n = keys.shape[0]
        chunk = max(1, min(math.ceil(n / 20), max_chunk_bytes // footprint))
        chunk = -(-chunk // axis_size(DATA)) * axis_size(DATA)
        if chunk == 1:
            # one key per call: the compiled single estimate. (A vmap over a batch of one
            # is not only wasted: XLA's CPU runtime crashed running one for AIR's
            # enumerated gradient, jax 0.10.)
            def batched(keys: jax.Array, *rest: Any) -> tuple[jax.Array, list[jax.Array]]:
                value, grads = compiled(keys[0], *rest)
                return value[None], [g[None] for g in grads]

        else:
            batched = jax.jit(
                lambda keys, *rest: jax.vmap(one, in_axes=(0, None, None))(
                    constrain_batch(keys), *rest
                )
            )
        moments = _draw_moments(batched, keys, setup, chunk)
        time_median, quartiles = _time(compiled, timing_keys, setup)
    return _Measured(moments, batched, chunk, time_median, quartiles, memory)


def _zero_variance(measured: _Measured) -> bool:
    scale = float(np.sum(measured.mean_gradient() ** 2))
    return measured.total_variance() <= 1e-12 * max(scale, 1e-30)


def _split_by_leaf(flat: np.ndarray, setup: _Setup) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for path, shape in zip(setup.paths, setup.shapes):
        size = math.prod(shape)
        out[path] = flat[start : start + size].reshape(shape)
        start += size
    return out


def _flat_reference(reference: Any, setup: _Setup) -> np.ndarray:
    """A user-given exact gradient (a pytree like params) as one flat float64 vector."""

    def by_path(tree: Any) -> dict[str, Any]:
        return {"params" + keystr(p): leaf for p, leaf in tree_flatten_with_path(tree)[0]}

    found = by_path(reference)
    if not set(setup.paths) <= set(found) and isinstance(reference, tuple | list) and reference:
        found = by_path(reference[0])  # the tuple that grad_estimate returns
    missing = [p for p in setup.paths if p not in found]
    if missing:
        raise ValueError(
            f"reference must be a gradient shaped like params (leaves {setup.paths}), but "
            f"it has no {missing}."
        )
    parts = []
    for path, shape in zip(setup.paths, setup.shapes):
        leaf = np.asarray(found[path], np.float64)
        if leaf.shape != shape:
            raise ValueError(f"reference {path} has shape {leaf.shape}, params has {shape}.")
        parts.append(leaf.reshape(-1))
    return np.concatenate(parts)


def _summarize(
    label: str,
    measured: _Measured,
    setup: _Setup,
    ref: np.ndarray,
    ref_var: np.ndarray,
    threshold: float,
) -> VariantResult:
    moments = measured.moments
    n = moments.count
    mean = measured.mean_gradient()
    variances = measured.variances()
    total = float(variances.sum())
    chunk_v = moments.chunk_variances
    total_se = (
        float(np.std(chunk_v, ddof=1) / math.sqrt(len(chunk_v))) if len(chunk_v) > 1 else math.nan
    )
    norm = float(np.linalg.norm(mean))
    bias = mean - ref
    allowance = 1e-5 * (np.abs(mean) + np.abs(ref)) + 1e-6 * float(np.max(np.abs(ref), initial=0.0))
    se = np.sqrt(variances / n + ref_var + allowance**2 + 1e-30)
    per_leaf, start = {}, 0
    for path, shape in zip(setup.paths, setup.shapes):
        size = math.prod(shape)
        per_leaf[path] = float(variances[start : start + size].sum())
        start += size
    z = float(np.max(np.abs(bias) / se))
    value_var = float(moments.variance(0)[0])
    return VariantResult(
        label=label,
        num_samples=n,
        value_mean=float(moments.mean[0][0]),
        value_se=math.sqrt(value_var / n),
        mean_gradient=_split_by_leaf(mean, setup),
        gradient_norm=norm,
        total_variance=total,
        total_variance_se=total_se,
        parameter_variances=per_leaf,
        snr=norm / math.sqrt(total) if total > 0 else math.inf,
        bias_norm=float(np.linalg.norm(bias)),
        bias_se=float(np.sqrt(np.sum(se**2))),
        bias_z=z,
        biased=bool(z > threshold),
        time_per_gradient=measured.time,
        time_quartiles=measured.quartiles,
        work_normalized_variance=total * measured.time,
        peak_memory_bytes=measured.memory,
    )
