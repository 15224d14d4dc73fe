"""Test-run settings shared by ``tests/``, the doctests in ``ppl/`` and ``docs/*.md``.

The default run (``-m 'not slow'``) compiles XLA programs with LLVM optimization level
0 unless ``XLA_FLAGS`` already chooses a level. The programs are the same; only the
CPU machine code is less optimized. Most of these tests compile many small programs
and run each a few times, so compilation is most of their time: level 0 cut the
default run from 18.0 to 11.4 minutes on 2 cores (9.6 in a clean CI run; measured
2026-12-06). The slow run
(``-m slow``), whose tests include speed targets, and the benchmark scripts keep
XLA's default. To run the default tests at the default level:
``XLA_FLAGS=--xla_backend_optimization_level=2 python -m pytest -n 2``.
"""

from __future__ import annotations

import os

FAST_COMPILE = "--xla_backend_optimization_level=0"


def pytest_configure(config):
    # Before any test or doctest runs a computation, so before JAX starts its CPU
    # backend, which reads XLA_FLAGS once. xdist workers run this hook too.
    if "slow" in (config.getoption("markexpr") or "").replace("not slow", ""):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE}".strip()
