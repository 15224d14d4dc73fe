"""Smoke test of benchmarks/enumeration.py with tiny settings."""

from __future__ import annotations

import json

import pytest

from tests._scripts import load_benchmark


@pytest.mark.slow  # compiles six gradients (about a minute on a loaded machine)
def test_quick_run_writes_the_table_json_and_plot(tmp_path):
    bench = load_benchmark("enumeration")
    argv = ["--states", "3", "--lengths", "20", "40", "--points", "200", "--repeats", "3"]
    argv += ["--no-pyro", "--no-docs", "--json", str(tmp_path / "r.json")]
    bench.main([*argv, "--plot", str(tmp_path / "r.png")])
    saved = json.loads((tmp_path / "r.json").read_text())
    rows = saved["rows"]
    assert [(r["model"], r["length"]) for r in rows] == [("hmm", 20), ("hmm", 40), ("mixture", 200)]
    for row in rows:  # the same elimination: the same value and the same compiled work
        assert row["value_rel_diff"] < 1e-4
        assert abs(row["ppl_flops"] - row["numpyro_flops"]) < 1e-3 * row["numpyro_flops"]
        assert row["ratio_numpyro_q25"] <= row["ratio_numpyro_paired"] <= row["ratio_numpyro_q75"]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    section = bench.section(rows, saved["machine"], "img/enumeration.png")
    assert section.startswith("## Discrete latents summed out") and "| HMM | 3 | 40 |" in section
