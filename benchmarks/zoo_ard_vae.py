"""Reproduce Saha, Joshi, Whitaker (ARD-VAE, 2025) at CPU scale.

For each data set (linear-Gaussian k = 3, non-linear manifold k = 5, 16×16 sprites
k = 4, scikit-learn digits), each nominal latent dimension L and each seed: train an
ARD-VAE (prior variances re-estimated every epoch from a fresh held-aside subset) and a
plain N(0, I) VAE with the same networks, data and number of updates; count the active
axes of both with the same rule (decoder-Jacobian weight × σ̂², 99 % cumulative share);
measure the test reconstruction error, MIG against the known factors (sprites) and
the kernel MMD between generated and test digits in the feature space of a small
digits classifier (digits).

    python benchmarks/zoo_ard_vae.py                        # 5 seeds x 3 L x 4 data sets
    python benchmarks/zoo_ard_vae.py --seeds 0 --latents 10 --datasets linear --no-docs

Every finished run is added to the JSON at once; ``--resume`` skips the runs already
there and ``--report-only`` rebuilds the table and plots from the JSON. Writes
``benchmarks/zoo_ard_vae.json``, ``docs/img/ard_vae_*.png`` and the table section of
``docs/zoo/ard_vae.md``.
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

from ppl_zoo import ard_vae  # noqa: E402

ARMS = ("ARD-VAE", "VAE")
PAPER = {  # Saha et al., Table 5 (L = 10) and Table 1 / 2 (active counts)
    "dSprites (k=5), ARD-VAE L=10": "active 5.80 ± 0.40, MIG 0.22 ± 0.09",
    "3D Shapes (k=6), ARD-VAE L=10": "active 6.40 ± 0.49, MIG 0.52 ± 0.25",
    "dSprites, plain VAE L=6": "MIG 0.06",
    "MNIST, ARD-VAE L=16/32/64/128": "active 12.8 / 12.6 / 12.4 / 12.2",
}


def run_key(dataset: str, latent: int, seed: int, arm: str) -> str:
    return f"{dataset}/L={latent}/seed={seed}/{arm}"


def run_one(data, features, dataset, latent, seed, arm, epochs=None) -> dict:
    config = ard_vae.resolve_config(
        {**ard_vae.DEFAULT_CONFIG, "dataset": dataset, "latent": latent, "epochs": epochs}, data
    )
    ard = arm == "ARD-VAE"
    start = time.perf_counter()
    params, info = ard_vae.train_vae(jax.random.key(seed), data.train, config, ard=ard)
    train_s = time.perf_counter() - start
    metrics = ard_vae.evaluate_model(params, data, config, ard, features)
    metrics["train_s"] = train_s
    metrics["final_objective"] = float(np.mean(info["history"][-100:]))
    if seed == 0 and latent == 20:
        metrics["prior_variance_per_epoch"] = info["prior_variance"].tolist()
        if data.image_shape is not None:
            variance = np.asarray(metrics["prior_variance"])
            scores = ard_vae.relevance(params, data.train, variance, data.likelihood)
            mask = ard_vae.active_mask(scores)
            samples = ard_vae.generate(jax.random.key(1), params, data, variance, mask, ard, 16)
            metrics["samples"] = np.round(samples, 3).tolist()
    return metrics


def summarize(runs: dict, datasets, latents, seeds) -> dict:
    table = {}
    for dataset in datasets:
        for latent in latents:
            for arm in ARMS:
                found = [runs.get(run_key(dataset, latent, s, arm)) for s in seeds]
                found = [r for r in found if r is not None]
                if not found:
                    continue
                row = {"seeds": len(found), "active_per_seed": [r["active"] for r in found]}
                for name in ("active", "reconstruction_error", "mig", "mmd_features"):
                    if name in found[0]:
                        row[name], row[name + "_se"] = ard_vae.mean_and_standard_error(
                            [r[name] for r in found]
                        )
                table[f"{dataset}/L={latent}/{arm}"] = row
    return table


def check_targets(runs: dict, datasets, latents, seeds) -> dict:
    """The issue's targets, per seed (a target holds only if it holds for every seed)."""
    targets = {}

    def counts(dataset, latent, arm="ARD-VAE"):
        out = {}
        for s in seeds:
            run = runs.get(run_key(dataset, latent, s, arm))
            if run is not None:
                out[s] = run["active"]
        return out

    if "linear" in datasets:
        found = [c for L in latents for c in counts("linear", L).values()]
        targets["linear: ARD active == 3 (every seed, every L)"] = bool(
            found and all(c == 3 for c in found)
        )
    for dataset, k in (("manifold", 5), ("sprites", 4)):
        if dataset not in datasets:
            continue
        found = [c for L in latents for c in counts(dataset, L).values()]
        targets[f"{dataset}: abs(ARD active - {k}) <= 1 (every seed, every L)"] = bool(
            found and all(abs(c - k) <= 1 for c in found)
        )
        low, high = counts(dataset, min(latents)), counts(dataset, max(latents))
        pairs = [(low[s], high[s]) for s in low if s in high]
        targets[f"{dataset}: abs(active(L={min(latents)}) - active(L={max(latents)})) <= 1"] = bool(
            pairs and all(abs(a - b) <= 1 for a, b in pairs)
        )
    if "digits" in datasets:
        for latent in latents:
            ard = [runs.get(run_key("digits", latent, s, "ARD-VAE")) for s in seeds]
            vae = [runs.get(run_key("digits", latent, s, "VAE")) for s in seeds]
            pairs = [(a, v) for a, v in zip(ard, vae) if a is not None and v is not None]
            if not pairs:
                continue
            lower = np.mean([a["mmd_features"] < v["mmd_features"] for a, v in pairs])
            rec = np.mean([a["reconstruction_error"] for a, _ in pairs]) / np.mean(
                [v["reconstruction_error"] for _, v in pairs]
            )
            targets[f"digits L={latent}: ARD MMD < VAE MMD (fraction of seeds)"] = float(lower)
            targets[f"digits L={latent}: reconstruction error ratio ARD / VAE"] = float(rec)
    return targets


def _cell(row: dict | None, name: str, digits: int = 2) -> str:
    if row is None or name not in row:
        return "–"
    return f"{row[name]:.{digits}f} ± {row[name + '_se']:.{digits}f}"


def markdown(table: dict, datasets, latents) -> str:
    truth = {"linear": "3", "manifold": "5", "sprites": "4", "digits": "?"}
    lines = [
        "| data (true k) | L | active: ARD-VAE | active: VAE | rec. error: ARD-VAE "
        "| rec. error: VAE | MIG or MMD: ARD-VAE | MIG or MMD: VAE | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in datasets:
        for latent in latents:
            ard = table.get(f"{dataset}/L={latent}/ARD-VAE")
            vae = table.get(f"{dataset}/L={latent}/VAE")
            if ard is None and vae is None:
                continue
            extra = {"sprites": ("mig", "MIG ", 3), "digits": ("mmd_features", "MMD ", 4)}
            name, label, places = extra.get(dataset, (None, "", 0))
            cells = [
                _cell(ard, "active"),
                _cell(vae, "active"),
                _cell(ard, "reconstruction_error", 3),
                _cell(vae, "reconstruction_error", 3),
                (label + _cell(ard, name, places)) if name else "–",
                (label + _cell(vae, name, places)) if name else "–",
                str((ard or vae)["seeds"]),
            ]
            lines.append(f"| {dataset} ({truth[dataset]}) | {latent} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict, table: dict, datasets, latents, img: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    truth = {"linear": 3, "manifold": 5, "sprites": 4}
    figure = Figure(figsize=(12.0, 3.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        for index, arm in enumerate(ARMS):
            rows = [(L, table.get(f"{dataset}/L={L}/{arm}")) for L in latents]
            rows = [(L, r) for L, r in rows if r is not None]
            if rows:
                ax.errorbar(
                    [L * (1.0 + 0.04 * index) for L, _ in rows],
                    [r["active"] for _, r in rows],
                    yerr=[2 * r["active_se"] for _, r in rows],
                    marker="o",
                    capsize=3,
                    label=arm,
                )
        if dataset in truth:
            ax.axhline(truth[dataset], color="k", ls=":", lw=1, label="true k")
        ax.set(xscale="log", xlabel="nominal L", ylabel="active axes", title=dataset)
        ax.set_xticks(latents, [str(L) for L in latents])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    paths.append(img / "ard_vae_active.png")
    figure.savefig(paths[-1], dpi=100)

    figure = Figure(figsize=(12.0, 3.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        for arm in ARMS:
            run = runs.get(run_key(dataset, 20, 0, arm))
            if run is None:
                continue
            share = np.asarray(run["relevance_share"])
            ax.semilogy(np.arange(1, share.size + 1), share, marker=".", label=arm)
        ax.axhline(0.01, color="k", ls=":", lw=1)
        ax.set(xlabel="axis (sorted by relevance)", ylabel="share of Σ r", title=f"{dataset}, L=20")
        ax.legend(fontsize=7)
    paths.append(img / "ard_vae_relevance.png")
    figure.savefig(paths[-1], dpi=100)

    for dataset, shape in (("digits", (8, 8)), ("sprites", (16, 16))):
        runs_with = [runs.get(run_key(dataset, 20, 0, arm)) for arm in ARMS]
        if dataset not in datasets or any(r is None or "samples" not in r for r in runs_with):
            continue
        figure = Figure(figsize=(8.0, 2.4), layout="constrained")
        FigureCanvasAgg(figure)
        subfigures = figure.subfigures(1, 2)
        for subfigure, arm, run in zip(subfigures, ARMS, runs_with):
            grid = subfigure.subplots(2, 8)
            for ax, image in zip(grid.ravel(), np.asarray(run["samples"])):
                ax.imshow(np.clip(image.reshape(shape), 0, 1), cmap="gray_r", vmin=0, vmax=1)
                ax.set_axis_off()
            subfigure.suptitle(f"{arm} samples ({dataset}, L=20)", fontsize=9)
        paths.append(img / f"ard_vae_{dataset}_samples.png")
        figure.savefig(paths[-1], dpi=100)
    return paths


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--latents", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--datasets", nargs="+", default=list(ard_vae.DATASETS))
    parser.add_argument("--epochs", type=int, help="override every data set's epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "zoo_ard_vae.json")
    parser.add_argument("--resume", action="store_true", help="keep the runs in --out")
    parser.add_argument("--report-only", action="store_true", help="no training")
    parser.add_argument("--no-docs", action="store_true", help="no plots, no docs table")
    args = parser.parse_args(argv)
    for name in args.datasets:
        if name not in ard_vae.DATASETS:
            parser.error(f"--datasets: unknown data set {name!r} (choose from {ard_vae.DATASETS})")
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = previous.get("runs", {}) if (args.resume or args.report_only) else {}
    wall = previous.get("wall_s", 0.0) if (args.resume or args.report_only) else 0.0
    start = time.perf_counter()

    def save():
        table = summarize(runs, args.datasets, args.latents, args.seeds)
        record = {
            "machine": machine_info(),
            "seeds": args.seeds,
            "latents": args.latents,
            "datasets": args.datasets,
            "config": {k: dict(v) for k, v in ard_vae.DATASET_DEFAULTS.items()},
            "epochs_override": args.epochs,
            "table": table,
            "targets": check_targets(runs, args.datasets, args.latents, args.seeds),
            "paper": PAPER,
            "runs": runs,
            "wall_s": wall + time.perf_counter() - start,
        }
        args.out.write_text(json.dumps(record, indent=1))
        return record

    if not args.report_only:
        todo = [
            (seed, dataset, latent, arm)
            for seed in args.seeds  # seeds outermost: a cut-short run has whole seeds
            for dataset in args.datasets
            for latent in args.latents
            for arm in ARMS
            if run_key(dataset, latent, seed, arm) not in runs
        ]
        cache = {}
        for seed, dataset, latent, arm in tqdm(todo, unit="run"):
            if (dataset, seed) not in cache:
                data = ard_vae.make_dataset(dataset, seed)
                features = None
                if dataset == "digits":
                    features = ard_vae.DigitsFeatures(data.train, data.train_factors)
                    runs[f"digits/seed={seed}/classifier_accuracy"] = features.accuracy(
                        data.test, data.test_factors
                    )
                cache = {(dataset, seed): (data, features)}
            data, features = cache[(dataset, seed)]
            runs[run_key(dataset, latent, seed, arm)] = run_one(
                data, features, dataset, latent, seed, arm, args.epochs
            )
            save()
    record = save()
    text = markdown(record["table"], args.datasets, args.latents)
    print(text)
    print(json.dumps(record["targets"], indent=1))
    if not args.no_docs:
        img = ROOT / "docs" / "img"
        img.mkdir(parents=True, exist_ok=True)
        plot(runs, record["table"], args.datasets, args.latents, img)
        targets = "\n".join(
            f"| {name} | {value if isinstance(value, bool) else f'{value:.2f}'} |"
            for name, value in record["targets"].items()
        )
        text += "\n\n| target | measured |\n|---|---|\n" + targets
        text += f"\n\nWall time {record['wall_s'] / 60:.1f} min on {record['machine']['cpu']}."
        replace_section(ROOT / "docs" / "zoo" / "ard_vae.md", "ard_vae_table", text)
    print(f"wrote {args.out} ({record['wall_s']:.0f} s)")
    return record


if __name__ == "__main__":
    main()
