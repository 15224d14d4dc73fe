"""Smoke test of benchmarks/eight_schools.py with tiny settings, and its exact log p(y)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests._scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("eight_schools")


def test_the_exact_log_evidence_matches_importance_sampling_from_the_prior(bench):
    """Quadrature over tau against a plain Monte Carlo average of p(y | tau) over the
    prior (mu and theta integrated out in closed form), 200,000 draws."""
    import scipy.stats

    rng = np.random.default_rng(0)
    tau = np.abs(scipy.stats.cauchy.rvs(scale=5.0, size=200_000, random_state=rng))
    y, sigma = np.asarray(bench.Y, np.float64), np.asarray(bench.SIGMA, np.float64)
    variances = sigma[None, :] ** 2 + tau[:, None] ** 2
    # y | tau ~ N(0, diag(variances) + 25 11^T): Sherman-Morrison for each draw
    inverse = 1.0 / variances
    quad = np.sum(y**2 * inverse, 1) - 25.0 * np.sum(y * inverse, 1) ** 2 / (
        1.0 + 25.0 * np.sum(inverse, 1)
    )
    log_det = np.sum(np.log(variances), 1) + np.log1p(25.0 * np.sum(inverse, 1))
    log_lik = -0.5 * (quad + log_det + len(y) * np.log(2 * np.pi))
    shift = log_lik.max()
    estimate = shift + np.log(np.mean(np.exp(log_lik - shift)))
    assert abs(estimate - bench.exact_log_evidence()) < 0.01


@pytest.mark.slow
def test_quick_run_writes_the_table_json_and_plot(bench, tmp_path):
    argv = ["--steps", "200", "--particles", "4", "--draws", "500", "--nuts-warmup", "100"]
    argv += ["--nuts-samples", "100", "--nuts-chains", "1"]
    argv += ["--json", str(tmp_path / "r.json"), "--png", str(tmp_path / "r.png")]
    record = bench.main(argv)
    assert len(record["rows"]) == 4 and record["nuts"]["num_draws"] == 100
    assert all(np.isfinite(row["khat"]) for row in record["rows"])
    assert json.loads((tmp_path / "r.json").read_text())["table"] == record["table"]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
