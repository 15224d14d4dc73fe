"""Test-run settings shared by ``tests/``, the doctests in ``ppl/`` and ``docs/*.md``.

The default run (``-m 'not slow'``) sets two XLA flags for faster compiles, each
unless ``XLA_FLAGS`` already names it: LLVM optimization level 0
(``--xla_backend_optimization_level=0``) and XLA's older CPU code generator for fused
loops (``--xla_cpu_use_fusion_emitters=false``). The programs are the same; only the
CPU machine code differs. Most of these tests compile many small programs and run
each a few times, so compilation is most of their time: on 2 cores level 0 cut the
default run from 18.0 to 11.4 minutes (2026-12-06), and the older emitters from 12.3
to 8.0 minutes (2026-12-07, all 592 tests passing either way). The slow run
(``-m slow``), whose tests include speed targets, and the benchmark scripts keep
XLA's defaults. To run the default tests with XLA's defaults:
``XLA_FLAGS='--xla_backend_optimization_level=2 --xla_cpu_use_fusion_emitters=true'
python -m pytest -n 2``.
"""

from __future__ import annotations

import os

# flag name -> the setting the default run uses
FAST_COMPILE = {
    "xla_backend_optimization_level": "0",
    "xla_cpu_use_fusion_emitters": "false",
}


def pytest_configure(config):
    # Before any test or doctest runs a computation, so before JAX starts its CPU
    # backend, which reads XLA_FLAGS once. xdist workers run this hook too.
    if "slow" in (config.getoption("markexpr") or "").replace("not slow", ""):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in FAST_COMPILE.items() if name not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
