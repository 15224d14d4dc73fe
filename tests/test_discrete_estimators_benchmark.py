"""Smoke test of benchmarks/discrete_estimators.py on a tiny batch."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tests._scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("discrete_estimators")


def test_quick_run_checks_exact_enumeration(bench, tmp_path):
    page = tmp_path / "benchmarks.md"
    other = "<!-- other:start -->\nsomeone else's section\n<!-- other:end -->\n"
    page.write_text("# Benchmarks\n\n" + other)
    out = tmp_path / "results.json"
    argv = ["--quick", "--batch", "3", "--draws", "8", "--repeats", "2", "--skip-pyro"]
    argv += ["--estimators", "ppl reinforce", "ppl enum", "hand-written JAX"]
    argv += ["--out", str(out), "--markdown", str(page), "--plot", str(tmp_path / "plot.png")]
    results = bench.main(argv)

    check = results["exact_check"]
    assert check["agree"] and check["relative"] < 1e-4
    rows = results["estimators"]
    assert set(rows) == {"ppl reinforce", "ppl enum", "hand-written JAX"}
    # ppl.enum is exact: no variance, and equal to the direct enumeration
    assert rows["ppl enum"]["total_variance"] == 0
    assert rows["ppl enum"]["max_abs_error"] < 1e-4 * check["max_abs_exact"]
    assert all(r["total_variance"] > 0 for n, r in rows.items() if n != "ppl enum")
    assert all(r["time"]["median_ms"] > 0 for r in rows.values())
    assert "reinforce_over_hand" in results["analysis"]

    assert json.loads(out.read_text())["exact_check"]["agree"]
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\n" + other)
    assert text.count("<!-- discrete-estimators:start -->") == 1
    assert (tmp_path / "plot.png").stat().st_size > 0
    bench.replace_section(page, "discrete-estimators", "replaced\n")  # leaves the rest alone
    again = page.read_text()
    assert again.startswith("# Benchmarks\n\n" + other)
    assert again.endswith(
        "<!-- discrete-estimators:start -->\nreplaced\n<!-- discrete-estimators:end -->\n"
    )


def test_direct_enumeration_matches_ppl_enum(bench):
    batch = bench.load_batch(2, seed=1)
    params = bench.init_params(jax.random.key(1))
    baselines = np.zeros((2, 2), np.float32)
    exact, check = bench.check_enumeration(params, batch, baselines, jax.random.key(2))
    assert check["agree"]
    assert exact.shape == (sum(np.prod(s) for s, _ in bench.PARAM_SPECS.values()),)


def test_pyro_gradient_is_the_same_estimand(bench):
    pytest.importorskip("pyro")
    batch = bench.load_batch(3, seed=0)
    params = bench.init_params(jax.random.key(0))
    baselines = np.zeros((3, 2), np.float32)
    exact, _ = bench.check_enumeration(params, batch, baselines, jax.random.key(1))
    draws = bench.pyro_draws(params, batch, 200, seed=0)
    stats = bench.gradient_stats(draws, exact)
    assert draws.shape == (200, exact.size)
    assert abs(stats["bias_z"]) < 5 and abs(stats["norm_z"]) < 5
