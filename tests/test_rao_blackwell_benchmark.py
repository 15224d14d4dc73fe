"""Smoke test of benchmarks/rao_blackwell.py on the smallest Bernoulli plate."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tests._scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("rao_blackwell")


def test_quick_run_writes_the_report(bench, tmp_path):
    page = tmp_path / "benchmarks.md"
    other = "<!-- other:start -->\nsomeone else's section\n<!-- other:end -->\n"
    page.write_text("# Benchmarks\n\n" + other)
    out, png = tmp_path / "results.json", tmp_path / "plot.png"
    names = [bench.REINFORCE, bench.NUMPYRO, bench.PYRO]
    argv = ["--quick", "--programs", "bernoulli", "--sizes", "10", "--estimators", *names]
    results = bench.main([*argv, "--out", str(out), "--markdown", str(page), "--plot", str(png)])

    entry = results["programs"]["bernoulli-10"]
    assert list(entry["estimators"]) == names
    for row in entry["estimators"].values():
        assert row["total_variance"] > 0 and row["variance_se"] > 0
        assert row["time"]["median_ms"] > 0
    assert {"reinforce_vs_numpyro", "speedup_vs_pyro"} <= set(entry["targets"])
    assert json.loads(out.read_text())["programs"]["bernoulli-10"]["size"] == 10
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\n" + other)
    assert text.count("<!-- rao-blackwell:start -->") == 1
    assert "## Rao-Blackwellized score functions" in text
    assert png.stat().st_size > 0

    # the report re-renders from the JSON alone
    again = bench.main(["--quick", "--report", str(out), "--markdown", str(page)])
    assert again["programs"]["bernoulli-10"]["targets"] == json.loads(json.dumps(entry["targets"]))
    assert page.read_text().count("<!-- rao-blackwell:start -->") == 1


@pytest.mark.parametrize("make", ["bernoulli", "sbn", "mixture"])
def test_every_program_has_a_pilot_baseline_per_element(bench, make):
    program = {
        "bernoulli": lambda: bench.bernoulli_program(6, 0),
        "sbn": lambda: bench.sbn_program(3, 0),
        "mixture": lambda: bench.mixture_program(7, 0),
    }[make]()
    baselines = bench.pilot_baselines(program, jax.random.key(0), 4)
    assert set(baselines) == set(program.sees)
    assert all(b.shape == (program.size,) for b in baselines.values())
    exact = bench.flat(jax.grad(program.exact_elbo)(program.params, *program.args))
    assert np.all(np.isfinite(exact))


@pytest.mark.parametrize("make", ["sbn", "mixture"])
def test_pyro_gradient_is_flattened_like_jax(bench, make):
    pytest.importorskip("pyro")
    program = bench.sbn_program(3, 0) if make == "sbn" else bench.mixture_program(7, 0)
    exact = bench.flat(jax.grad(program.exact_elbo)(program.params, *program.args))
    assert bench.pyro_call(program, 0)().shape == exact.shape
