"""Reproduce Ahmadi & Tani (Neural Computation 2019), PV-RNN, at CPU scale.

Sweeps the meta-prior ``w`` (3 seeds each) on generated Lissajous primitives that switch
by a probabilistic finite-state machine (whose branches depend on the primitive one
period back) and measures, per ``w``: the training
reconstruction error; for free-running generation, the total-variation distance of the
primitive transition statistics to the true matrix; the prior's standard deviation at
branch points; and the prediction error of error regression on held-out sequences,
against a VRNN with an encoder trained on the same data at the same ``w`` and against
the Bayes-optimal filter of the data's own process (the achievable floor). Writes a JSON
record, plots into ``docs/img/`` and the table into ``docs/zoo/pv_rnn.md``.

    python benchmarks/zoo_pv_rnn.py                 # the recorded run
    python benchmarks/zoo_pv_rnn.py --seeds 0 --num-steps 1000 --no-docs   # quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import ROOT, machine_info, replace_section  # noqa: E402

from ppl_zoo import pv_rnn  # noqa: E402

COLUMNS = [
    ("recon_mse", "train recon. MSE", 1e4),
    ("tv_distance", "TV to true transitions", 1.0),
    ("malformed_fraction", "malformed cycles", 1.0),
    ("sigma_branch", "σ^p branch", 1.0),
    ("sigma_inside", "σ^p inside", 1.0),
    ("effective_sigma_branch", "eff. σ branch", 1.0),
    ("effective_sigma_inside", "eff. σ inside", 1.0),
    ("er_mse", "ER pred. MSE", 1e4),
    ("vrnn_mse", "VRNN pred. MSE", 1e4),
    ("filter_mse", "Bayes filter pred. MSE", 1e4),
    ("oracle_mse", "oracle pred. MSE", 1e4),
]


def _cell(values, scale):
    mean, error = pv_rnn.mean_and_standard_error(np.asarray(values) * scale)
    return f"{mean:.3g} ± {error:.2g}"


def _table(rows: dict, ws) -> str:
    header = "| w | " + " | ".join(label for _, label, _ in COLUMNS) + " |\n"
    header += "|---" * (len(COLUMNS) + 1) + "|\n"
    lines = []
    for w in ws:
        cells = [_cell(rows[str(w)][key], scale) for key, _, scale in COLUMNS]
        lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def _targets(rows: dict, ws) -> dict:
    means = {key: np.array([np.mean(rows[str(w)][key]) for w in ws]) for key, _, _ in COLUMNS}
    best = int(np.argmin(means["er_mse"]))
    best_vrnn = int(np.argmin(means["vrnn_mse"]))
    return {
        "sigma_branch_decreasing": bool(np.all(np.diff(means["sigma_branch"]) < 0)),
        "effective_sigma_branch_decreasing": bool(
            np.all(np.diff(means["effective_sigma_branch"]) < 0)
        ),
        "best_w": float(ws[best]),
        "er_lowest_at_intermediate_w": bool(
            0 < best < len(ws) - 1
            and means["er_mse"][best] < min(means["er_mse"][0], means["er_mse"][-1])
        ),
        "best_vrnn_w": float(ws[best_vrnn]),
        "er_vs_vrnn_reduction": float(1.0 - means["er_mse"][best] / means["vrnn_mse"][best_vrnn]),
        "er_vs_vrnn_same_w_reduction": float(1.0 - means["er_mse"][best] / means["vrnn_mse"][best]),
        "filter_vs_vrnn_reduction": float(
            1.0 - means["filter_mse"][best] / means["vrnn_mse"][best_vrnn]
        ),
        "oracle_vs_vrnn_reduction": float(
            1.0 - means["oracle_mse"][best] / means["vrnn_mse"][best_vrnn]
        ),
    }


def _plot_sweep(rows, ws, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 3.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)

    def band(axis, key, label, scale=1.0):
        stats = [pv_rnn.mean_and_standard_error(np.asarray(rows[str(w)][key]) * scale) for w in ws]
        mean, error = np.array(stats).T
        axis.errorbar(ws, mean, yerr=error, marker="o", ms=3, capsize=2, label=label)

    band(axes[0], "er_mse", "PV-RNN + error regression", 1e4)
    band(axes[0], "vrnn_mse", "VRNN (encoder, filtering)", 1e4)
    axes[0].set(ylabel="prediction MSE × 1e4", title="online prediction (test)")
    band(axes[1], "sigma_branch", "σ^p at branch points")
    band(axes[1], "sigma_inside", "σ^p inside primitives")
    band(axes[1], "effective_sigma_branch", "effective σ, branch")
    axes[1].set(title="prior standard deviation", yscale="log")
    band(axes[2], "tv_distance", "TV distance")
    band(axes[2], "malformed_fraction", "malformed cycles")
    axes[2].set(title="free-running generation")
    for axis in axes:
        axis.set(xscale="log", xlabel="meta-prior w")
        axis.legend(fontsize=7)
    figure.savefig(path, dpi=90)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description="Reproduce PV-RNN's meta-prior sweep at CPU scale."
    )
    parser.add_argument("--ws", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-steps", type=int, default=pv_rnn.DEFAULT_CONFIG["num_steps"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "zoo_pv_rnn.json")
    parser.add_argument("--no-docs", action="store_true", help="write no plots or docs table")
    args = parser.parse_args(argv)
    ws = sorted(args.ws)
    if len(ws) < 3:
        parser.error("--ws needs at least three values (low, intermediate, high).")
    base = {**pv_rnn.DEFAULT_CONFIG, "num_steps": args.num_steps}
    data = pv_rnn.load_data(base, None)
    rows = {str(w): {key: [] for key, _, _ in COLUMNS} for w in ws}
    for w in ws:
        rows[str(w)]["vrnn_recon_mse"] = []
    generated, predictions = {}, None
    start = time.time()
    runs = [(seed, w) for seed in args.seeds for w in ws]
    for seed, w in tqdm(runs, desc="PV-RNN sweep"):
        config = {**base, "w": w, "vrnn_w": w}
        key_fit, key_vrnn, key_eval = jax.random.split(jax.random.key(seed), 3)
        params, _ = pv_rnn.fit_pvrnn(key_fit, data.train.x, config, progress=False)
        metrics, outputs = pv_rnn.pvrnn_metrics(key_eval, params, data, config, return_outputs=True)
        vrnn_params, _ = pv_rnn.fit_vrnn(key_vrnn, data.train.x, config, progress=False)
        metrics.update(pv_rnn.vrnn_metrics(vrnn_params, data, config))
        for key in rows[str(w)]:
            rows[str(w)][key].append(metrics[key])
        if seed == args.seeds[0]:
            generated[w] = outputs["generated"][0]
            if predictions is None or w == ws[len(ws) // 2]:
                predictions = outputs["predictions"][0]
    wall = time.time() - start
    table = _table(rows, ws)
    targets = _targets(rows, ws)
    print(table)
    print(json.dumps(targets, indent=1))
    record = {
        "machine": machine_info(wall_seconds=round(wall, 1)),
        "config": {**base, "ws": ws, "seeds": args.seeds},
        "table": rows,
        "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    if not args.no_docs:
        images = ROOT / "docs" / "img"
        images.mkdir(parents=True, exist_ok=True)
        middle = ws[len(ws) // 2]
        pv_rnn.plot_generation(
            {f"w = {w:g}": generated[w] for w in (ws[0], middle, ws[-1])},
            data.period,
            images / "pv_rnn_generated.png",
        )
        _plot_sweep(rows, ws, images / "pv_rnn_sweep.png")
        pv_rnn.plot_predictions(
            data.test.x[0], predictions, int(base["er_window"]), images / "pv_rnn_predictions.png"
        )
        summary = (
            table
            + "\nScaled columns: reconstruction and prediction MSE × 1e4. Mean ± standard "
            + f"error over seeds {args.seeds}; wall time {wall / 60:.1f} min on "
            + f"{record['machine']['cpu_count']} CPU cores.\n\n"
            + "| target | measured |\n|---|---|\n"
            + "".join(f"| {key} | {value} |\n" for key, value in targets.items())
        )
        replace_section(ROOT / "docs" / "zoo" / "pv_rnn.md", "pv_rnn_table", summary)
    return record


if __name__ == "__main__":
    main()
