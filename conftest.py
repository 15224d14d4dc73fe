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
XLA's defaults. A jaxlib whose XLA no longer knows the second flag (XLA aborts on an
unknown flag) is detected in a subprocess, and the run goes on without it. To run the
default tests with XLA's defaults:
``XLA_FLAGS='--xla_backend_optimization_level=2 --xla_cpu_use_fusion_emitters=true'
python -m pytest -n 2``.
"""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import settings

# Property tests draw their examples from a seed fixed per test, so every run (CI's
# included) checks the same examples; a failure found once is then found every time.
settings.register_profile("ppl", derandomize=True)
settings.load_profile("ppl")

# flag name -> the setting the default run uses
FAST_COMPILE = {
    "xla_backend_optimization_level": "0",
    "xla_cpu_use_fusion_emitters": "false",
}
# flags that a newer XLA may drop (XLA aborts the process on an unknown flag)
PROBED = ("xla_cpu_use_fusion_emitters",)


def _xla_knows(flag: str) -> bool:
    """Whether this jaxlib's XLA accepts ``flag``, tried in a subprocess (about 2 s)."""
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True
    )
    return probe.returncode == 0


def pytest_configure(config):
    # Before any test or doctest runs a computation, so before JAX starts its CPU
    # backend, which reads XLA_FLAGS once. xdist workers run this hook too; they
    # inherit the controller's XLA_FLAGS, so only the controller probes.
    if "slow" in (config.getoption("markexpr") or "").replace("not slow", ""):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    added = []
    for name, value in FAST_COMPILE.items():
        flag = f"--{name}={value}"
        if name in flags or name in os.environ.get("PPL_TEST_XLA_UNKNOWN", ""):
            continue
        if name in PROBED and not _xla_knows(flag):
            unknown = os.environ.get("PPL_TEST_XLA_UNKNOWN", "")
            os.environ["PPL_TEST_XLA_UNKNOWN"] = f"{unknown} {name}".strip()  # for the workers
            continue
        added.append(flag)
    os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
