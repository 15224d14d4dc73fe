"""Smoke test of benchmarks/fit_overhead.py with tiny settings."""

from __future__ import annotations

import json

from tests._scripts import load_benchmark


def test_quick_run_writes_both_rows(tmp_path):
    bench = load_benchmark("fit_overhead")
    out = tmp_path / "fit_overhead.json"
    record = bench.main(["--quick", "--out", str(out), "--no-docs"])
    assert json.loads(out.read_text())["rows"].keys() == record["rows"].keys()
    assert len(record["rows"]) == 2
    for row in record["rows"].values():
        assert row["fit_wall_s"] > 0 and row["hand_wall_s"] > 0 and row["ratio_cpu"] > 0
        assert row["unguarded_wall_s"] > 0 and row["unguarded_ratio_cpu"] > 0
    assert "| ratio (wall) |" in bench.table(record)
    assert "| no guard: ratio (wall) |" in bench.table(record)
