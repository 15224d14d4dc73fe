"""Helpers shared by the benchmark scripts: provenance and the docs page sections."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpyro

import ppl

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "benchmarks.md"
TITLE = "# Benchmarks\n"


def ppl_revision() -> str:
    """The git commit of the checkout, with ``+modified`` if ``ppl/`` has local changes."""

    def git(*cmd):
        run = subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True)
        return run.stdout.strip() if run.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return "unknown"
    return commit + ("+modified" if git("status", "--porcelain", "--", "ppl") else "")


def machine_info(**extra: Any) -> dict[str, Any]:
    """The software versions and hardware the numbers were measured with."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device_kind": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "ppl": ppl.__version__,
        "ppl_revision": ppl_revision(),
        **extra,
    }


def replace_section(page: Path, name: str, section: str) -> None:
    """Put ``section`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``page``.

    Other sections of the page are kept; a missing block is appended (and a missing
    page is created with a title).
    """
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start_marker}\n{section.rstrip()}\n{end_marker}"
    text = page.read_text() if page.exists() else TITLE
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(end_marker) :]
    elif start == -1 and end == -1:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        raise ValueError(f"{page}: only one of {start_marker} / {end_marker} is present.")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)


def write_outputs(
    results: dict[str, Any],
    args: Any,
    section: str,
    plot: Callable[[dict, Path], None],
    markdown_section: Callable[[dict, str | None], str],
) -> None:
    """Write ``results`` as JSON to ``args.out``, its plot to ``args.plot`` and the
    page section ``section`` of ``args.markdown`` (each skipped where it is None); the
    section links the plot by its path relative to the page."""
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    plot_link = None
    if args.plot is not None:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
        if args.markdown is not None:
            plot_link = os.path.relpath(args.plot.resolve(), args.markdown.resolve().parent)
    if args.markdown is not None:
        replace_section(args.markdown, section, markdown_section(results, plot_link))
        print(f"wrote the {section} section of {args.markdown}")
