"""Compile and call timings that need only JAX (shared by a benchmark and its worker).

``benchmarks/continuations.py`` times ppl in this environment and GenJAX in its own
Python through ``benchmarks/_genjax_worker.py``; both sides use these functions so that
the two sets of numbers are measured the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

DISPATCH_VARIABLE = "JAX_CPU_ENABLE_ASYNC_DISPATCH"


def configure_dispatch() -> bool:
    """Apply ``$JAX_CPU_ENABLE_ASYNC_DISPATCH`` (``false``/``0`` or ``true``/``1``), if set.

    JAX's CPU client runs a computation on a worker thread (asynchronous dispatch) unless
    it judges it cheap; it reads ``jax_cpu_enable_async_dispatch`` only when it creates
    the client, and not from the environment, so a benchmark and its worker call this
    before their first computation to run under the same setting. Returns the setting.
    """
    value = os.environ.get(DISPATCH_VARIABLE, "").strip().lower()
    if value:
        jax.config.update("jax_cpu_enable_async_dispatch", value not in ("0", "false"))
    return bool(jax.config.read("jax_cpu_enable_async_dispatch"))


def count_equations(jaxpr: Any) -> int:
    """Equations of a (closed) jaxpr, counting those of the jaxprs inside its equations."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for inner in param if isinstance(param, list | tuple) else [param]:
                if hasattr(getattr(inner, "jaxpr", inner), "eqns"):
                    total += count_equations(inner)
    return total


def compile_stages(fn: Callable, args: Sequence[Any]) -> tuple[Callable, dict[str, float]]:
    """``jax.jit(fn)`` compiled for ``args``, with the time of each stage and the sizes.

    Returns the compiled function and ``trace_s`` (tracing, where a library's program
    transformation runs), ``lower_s``, ``xla_s``, ``compile_s`` (their sum),
    ``equations`` (of the traced jaxpr, nested ones included) and ``hlo_lines`` (of the
    optimized HLO).
    """
    start = time.perf_counter()
    traced = jax.jit(fn).trace(*args)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    info = {
        "trace_s": traced_at - start,
        "lower_s": lowered_at - traced_at,
        "xla_s": compiled_at - lowered_at,
        "compile_s": compiled_at - start,
        "equations": count_equations(traced.jaxpr),
        "hlo_lines": len(compiled.as_text().splitlines()),
    }
    return compiled, info


def call_keys(seed: int, calls: int) -> list[jax.Array]:
    """The keys of ``calls`` timed calls: ``jax.random.key(seed + i)``."""
    return [jax.random.key(seed + i) for i in range(calls)]


def time_calls(compiled: Callable, keys: Sequence[jax.Array], *args: Any) -> list[float]:
    """Milliseconds of each call ``compiled(key, *args)``, one per key, waited for."""
    times = []
    for key in keys:
        start = time.perf_counter()
        jax.block_until_ready(compiled(key, *args))
        times.append(1e3 * (time.perf_counter() - start))
    return times
