"""Smoke test of benchmarks/continuations.py's GenJAX comparison without GenJAX.

CI has no GenJAX environment (GenJAX 1.0 needs Python >= 3.12 and its own JAX): the
comparison then measures ppl's side only, and says so. The GenJAX worker is never
imported here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests._scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("continuations")


def _run_without_genjax(bench, tmp_path, *extra):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"rows": ["kept"]}))  # the other sections' results stay
    page = tmp_path / "benchmarks.md"
    argv = ["--only", "genjax", "--genjax", str(tmp_path / "no-python"), "--lanes", "2"]
    argv += ["--lane-rounds", "1", "--lane-calls", "2", "--lane-draws", "50"]
    argv += ["--check-lanes", "2", "--json", str(out), "--page", str(page), "--docs"]
    argv += ["--genjax-plot", str(tmp_path / "plot.png"), *extra]
    bench.main(argv)
    data = json.loads(out.read_text())
    assert data["rows"] == ["kept"]
    assert "<!-- continuations-genjax:start -->" in page.read_text()
    assert (tmp_path / "plot.png").stat().st_size > 0
    return data["genjax"]


def test_genjax_comparison_runs_ppl_side_without_genjax(bench, tmp_path, capsys):
    result = _run_without_genjax(bench, tmp_path, "--no-coverage")

    assert "measuring ppl's side only" in capsys.readouterr().out
    assert result["genjax_machine"] is None
    assert {r["library"] for r in result["rows"]} == {"ppl"}
    assert {(r["family"], r["strategy"]) for r in result["rows"]} == set(bench.GENJAX_CASES)
    assert all(r["run_ms"] > 0 and r["equations"] > 0 for r in result["rows"])
    for check in result["checks"]:  # 50 draws: loose, only a gross error fails
        assert "genjax" not in check and check["ppl"]["max_abs_z"] < 6


@pytest.mark.slow
def test_genjax_comparison_covers_other_discrete_sites(bench, tmp_path):
    result = _run_without_genjax(bench, tmp_path)

    cases = {(r["family"], r["strategy"]) for r in result["rows"]}
    assert cases == set(bench.GENJAX_CASES + bench.COVERAGE_CASES)
    assert all(check["ppl"]["max_abs_z"] < 6 for check in result["checks"])
    assert "**met**" in result["verdicts"][0]  # coverage, the only target without GenJAX


def test_exact_lane_gradient_matches_finite_differences(bench):
    u, y = bench.lane_data(3)
    theta = np.array(bench.LANE_THETA, np.float32)
    for family in ("bernoulli", "categorical"):
        grad, missing = bench.exact_lane_gradient(family, theta, u, y)
        assert abs(missing) < 1e-5
        step = 1e-2
        for i in range(2):
            shift = np.eye(2, dtype=np.float32)[i] * step
            up = _expected(bench, family, theta + shift, u, y)
            down = _expected(bench, family, theta - shift, u, y)
            np.testing.assert_allclose(grad[i], (up - down) / (2 * step), atol=2e-3)


def _expected(bench, family, theta, u, y):
    """E[logsumexp_b cost_b] by summing over every joint value, in NumPy."""
    lanes = bench.LANE_FAMILIES[family]
    grid = np.stack(np.meshgrid(*[lanes.support] * len(u), indexing="ij"), -1).reshape(-1, len(u))
    p = np.ones(len(grid))
    for b, u_b in enumerate(u):
        p *= np.exp(np.asarray(lanes.distribution(theta, u_b).log_prob(grid[:, b])))
    costs = -((grid / lanes.scale - y) ** 2)
    top = costs.max(axis=1)
    return float(np.sum(p * (top + np.log(np.exp(costs - top[:, None]).sum(axis=1)))))
