"""Reproduce Li et al. (ICLR 2024), SSVI, at CPU scale: sparse-subspace VI against dense VI.

For each data set (scikit-learn digits with an MLP 64-256-256-10; MNIST-1D regenerated
offline with a small 1-D CNN) and each seed, the arms are: dense mean-field VI; SSVI at
90 % and 95 % sparsity (removal by SNR(|θ|), addition by |∂L/∂µ|); a static random
support at the same sparsities (no γ-steps); SSVI with the |µ| removal criterion; and
dense VI pruned after training to 90 % by SNR |µ|/σ and fine-tuned. All seeds of an arm
run in one vmapped, jitted program. Reported: accuracy, NLL, 15-bin ECE and the
debiased marginal L2 calibration error of the reference code, all from Bayesian model
averaging over 30 weight samples; the accuracy of the mean network; the active-weight
count over training; analytic training FLOPs; the size of the sparse checkpoint file.

    python benchmarks/zoo_ssvi.py                      # ~23 min on 2 cores
    python benchmarks/zoo_ssvi.py --seeds 0 --seeds-mnist1d 0 --epochs-digits 20 \
        --epochs-mnist1d 5 --no-docs

Writes ``benchmarks/zoo_ssvi.json``, ``docs/img/ssvi_*.png`` and the table section of
``docs/zoo/ssvi.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ROOT, machine_info, replace_section  # noqa: E402

from ppl_zoo import ssvi  # noqa: E402

ARMS = {
    # name: (density, update, criterion)
    "dense VI": (1.0, False, "SNR_mean_abs"),
    "SSVI 90%": (0.1, True, "SNR_mean_abs"),
    "SSVI 95%": (0.05, True, "SNR_mean_abs"),
    "static 90%": (0.1, False, "SNR_mean_abs"),
    "static 95%": (0.05, False, "SNR_mean_abs"),
    "SSVI |µ| 90%": (0.1, True, "mean"),
}
PRUNED = "dense pruned 90% + FT"
ORDER = (*ARMS, PRUNED)
METRICS = ("accuracy", "nll", "ece", "l2_ce", "mean_accuracy")
NETWORKS = {"digits": "mlp", "mnist1d": "cnn"}


def _take(tree, index):
    return jax.tree.map(lambda leaf: leaf[index], tree)


def evaluate_seeds(keys, arch, params, masks, data, num_samples, folder: Path) -> list[dict]:
    """Test metrics and checkpoint bytes of every seed of a (vmapped) arm."""
    rows = []
    for index in range(len(keys)):
        p, m = _take(params, index), _take(masks, index)
        path = folder / f"seed{index}.npz"
        size = ssvi.save_sparse(path, arch, p, m)
        p, m = ssvi.load_sparse(path, arch)  # evaluate what the checkpoint holds
        bma, mean = ssvi.predict(
            keys[index], p, m, jnp.asarray(data.x_test), arch=arch, num_samples=num_samples
        )
        row = ssvi.classification_metrics(np.asarray(bma), data.y_test)
        row["mean_accuracy"] = ssvi.accuracy(np.asarray(mean), data.y_test)
        row["checkpoint_bytes"] = size
        rows.append(row)
    return rows


def run_dataset(name: str, args, folder: Path) -> dict:
    """Every arm on one data set; returns per-arm per-seed rows and training traces."""
    data = ssvi.load_dataset(name, 0)
    network = NETWORKS[name]
    arch = ssvi.architecture(name, network)
    epochs = args.epochs_digits if name == "digits" else args.epochs_mnist1d
    shift = 0 if name == "digits" else args.shift_mnist1d
    config = {**ssvi.DEFAULT_CONFIG, "dataset": name, "network": network, "epochs": epochs,
              "shift": shift}  # fmt: skip
    seeds = args.seeds if name == "digits" else args.seeds_mnist1d
    results, traces, timings = {}, {}, {}
    dense_state = None
    for arm in tqdm(ORDER, desc=name):
        start = time.perf_counter()
        keys = jnp.stack([jax.random.fold_in(jax.random.key(seed), 17) for seed in seeds])
        keys_init, keys_train, keys_eval = (
            jnp.stack([jax.random.split(k, 3)[i] for k in keys]) for i in range(3)
        )
        if arm == PRUNED:
            density, update, criterion = 0.1, False, "SNR_mean_abs"
            counts = ssvi.layer_counts(arch, density)
            ft_epochs = max(1, round(args.finetune_fraction * epochs))
            settings = ssvi.settings_from_config(
                config,
                data.x_train.shape[0],
                epochs=ft_epochs,
                update=False,
                warmup_fraction=0.0,
            )
            params, _ = dense_state
            scores = {k: jnp.abs(v["loc"]) / jax.nn.softplus(v["rho"]) for k, v in params.items()}
            masks = jax.vmap(lambda s, c=counts: ssvi.top_masks(s, c))(scores)
            params = {
                k: {
                    "loc": jnp.where(masks[k], v["loc"], 0.0),
                    "rho": jnp.where(masks[k], v["rho"], 0.0),
                    "bias": v["bias"],
                }
                for k, v in params.items()
            }
            dense_settings = ssvi.settings_from_config(config, data.x_train.shape[0])
            flops = ssvi.training_flops(
                arch, ssvi.layer_counts(arch, 1.0), dense_settings
            ) + ssvi.training_flops(arch, counts, settings)
        else:
            density, update, criterion = ARMS[arm]
            counts = ssvi.layer_counts(arch, density)
            settings = ssvi.settings_from_config(
                config, data.x_train.shape[0], update=update, criterion=criterion
            )
            params, masks = jax.vmap(
                lambda k, c=counts: ssvi.init_state(k, arch, c, float(config["init_scale"]))
            )(keys_init)
            flops = ssvi.training_flops(arch, counts, settings)
        params, masks, info = ssvi.train_run(
            keys_train,
            arch,
            settings,
            params,
            masks,
            data.x_train,
            data.y_train,
            progress=False,
        )
        if arm == "dense VI":
            dense_state = (params, masks)
        arm_folder = folder / f"{name}-{len(results)}"
        arm_folder.mkdir(parents=True)
        rows = evaluate_seeds(keys_eval, arch, params, masks, data, args.eval_samples, arm_folder)
        nnz = np.asarray(info["nnz"])
        for row in rows:
            row["training_flops"] = flops
            row["active_weights"] = int(sum(counts.values()))
            row["nnz_constant"] = bool(nnz.min() == nnz.max() == sum(counts.values()))
        results[arm] = rows
        traces[arm] = {
            "objective": np.asarray(info["objective"])[0].tolist(),
            "nnz": nnz[0].tolist(),
            "exchanged": np.asarray(info["exchanged"])[0].tolist(),
        }
        timings[arm] = time.perf_counter() - start
    total = sum(np.prod(layer.shape) for layer in arch)
    return {
        "network": network,
        "epochs": epochs,
        "config": {
            k: config[k] for k in ("learning_rate", "kl_scale", "prior_std", "delta", "shift")
        },
        "total_weights": int(total),
        "num_train": int(data.x_train.shape[0]),
        "num_test": int(data.x_test.shape[0]),
        "arms": results,
        "traces": traces,
        "seconds": timings,
    }


def summarize(record: dict) -> dict:
    """Mean and standard error over seeds of every metric, per data set and arm."""
    summary = {}
    for name, block in record["datasets"].items():
        summary[name] = {}
        for arm, rows in block["arms"].items():
            entry = {}
            for key in (*METRICS, "checkpoint_bytes", "training_flops"):
                mean, error = ssvi.mean_and_standard_error([row[key] for row in rows])
                entry[key], entry[f"{key}_se"] = mean, error
            entry["active_weights"] = rows[0]["active_weights"]
            entry["nnz_constant"] = all(row["nnz_constant"] for row in rows)
            summary[name][arm] = entry
    return summary


def check_targets(summary: dict) -> dict:
    """The issue's targets, measured (True/False with the numbers)."""
    targets = {}
    for name, arms in summary.items():
        dense, ssvi90 = arms["dense VI"], arms["SSVI 90%"]
        targets[f"{name}: SSVI 90% within 3 points of dense accuracy"] = (
            ssvi90["accuracy"] >= dense["accuracy"] - 0.03
        )
        targets[f"{name}: SSVI 90% NLL <= 1.1 x dense"] = ssvi90["nll"] <= 1.1 * dense["nll"]
        targets[f"{name}: SSVI 90% ECE <= 1.1 x dense"] = ssvi90["ece"] <= 1.1 * dense["ece"]
        for level in ("90%", "95%"):
            targets[f"{name}: SSVI {level} beats static {level} (accuracy)"] = (
                arms[f"SSVI {level}"]["accuracy"] > arms[f"static {level}"]["accuracy"]
            )
        targets[f"{name}: >= 8x fewer training FLOPs at 90%"] = (
            dense["training_flops"] / ssvi90["training_flops"] >= 8.0
        )
        targets[f"{name}: >= 8x smaller checkpoint at 90%"] = (
            dense["checkpoint_bytes"] / ssvi90["checkpoint_bytes"] >= 8.0
        )
        targets[f"{name}: active weights constant in every SSVI run"] = all(
            arms[arm]["nnz_constant"] for arm in arms
        )
    return {key: bool(value) for key, value in targets.items()}


def _config_text(block: dict) -> str:
    config = block.get("config")  # absent from JSONs written before it was recorded
    if not config:
        return ""
    shift = config.get("shift", 0)
    augmented = f", random shifts of up to {shift} positions" if shift else ""
    return f", Adam {config['learning_rate']:g}, κ = {config['kl_scale']:g}{augmented}"


def table(summary: dict, record: dict) -> str:
    lines = []
    for name, arms in summary.items():
        block = record["datasets"][name]
        dense = arms["dense VI"]
        lines.append(
            f"**{name}** ({block['network'].upper()}, {block['total_weights']:,} variational "
            f"weights, {block['epochs']} epochs{_config_text(block)}, {block['num_train']} "
            f"training / "
            f"{block['num_test']} test examples; mean ± standard error over "
            f"{len(block['arms']['dense VI'])} seeds; BMA over 30 weight samples)\n"
        )
        lines.append(
            "| arm | active weights | accuracy (%) | NLL | ECE (15 bins) | L2 CE (debiased) "
            "| mean-net acc. (%) | train FLOPs (× dense) | checkpoint (KB, × smaller) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for arm in ORDER:
            e = arms[arm]
            label = arm.replace("|", "\\|")  # a literal | would split the Markdown cell
            lines.append(
                f"| {label} | {e['active_weights']:,} | {100 * e['accuracy']:.2f} ± "
                f"{100 * e['accuracy_se']:.2f} | {e['nll']:.3f} ± {e['nll_se']:.3f} | "
                f"{e['ece']:.3f} ± {e['ece_se']:.3f} | {e['l2_ce']:.3f} ± {e['l2_ce_se']:.3f} | "
                f"{100 * e['mean_accuracy']:.2f} ± {100 * e['mean_accuracy_se']:.2f} | "
                f"{e['training_flops']:.2e} "
                f"({e['training_flops'] / dense['training_flops']:.3f}) | "
                f"{e['checkpoint_bytes'] / 1e3:.1f} "
                f"({dense['checkpoint_bytes'] / e['checkpoint_bytes']:.1f}×) |"
            )
        lines.append("")
    lines.append("**Targets** (from the issue), as measured in this run:\n")
    for key, ok in record["targets"].items():
        lines.append(f"* {'met' if ok else '**missed**'}: {key}")
    lines.append(
        f"\nWall time {record['wall_seconds'] / 60:.1f} min on {record['machine']['cpu_count']} "
        f"CPU cores ({record['machine']['date']})."
    )
    return "\n".join(lines)


def plot(record: dict, summary: dict, folder: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    paths = []
    names = list(summary)
    figure = Figure(figsize=(4.6 * len(names), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, name in zip(np.atleast_1d(figure.subplots(1, len(names))), names):
        for i, arm in enumerate(ORDER):
            e = summary[name][arm]
            axes.errorbar(
                e["training_flops"],
                100 * e["accuracy"],
                yerr=100 * e["accuracy_se"],
                fmt="osD^vPX"[i],
                color=f"C{i}",
                label=arm,
                alpha=0.85,
            )
        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # the minor labels overlap
        axes.set(xlabel="training FLOPs (analytic)", ylabel="test accuracy (%)", title=name)
        axes.legend(fontsize=7)
    path = folder / "ssvi_accuracy_flops.png"
    figure.savefig(path, dpi=100)
    paths.append(path)

    figure = Figure(figsize=(4.6 * len(names), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, name in zip(np.atleast_1d(figure.subplots(1, len(names))), names):
        trace = record["datasets"][name]["traces"]
        for i, arm in enumerate(("SSVI 90%", "SSVI 95%", "SSVI |µ| 90%")):
            exchanged = np.asarray(trace[arm]["exchanged"])
            steps = np.flatnonzero(exchanged)
            axes.plot(
                steps, exchanged[steps], "o-", ms=3, color=f"C{i + 1}", label=f"{arm}: exchanged"
            )
            nnz = np.asarray(trace[arm]["nnz"])
            axes.plot(nnz, "--", lw=1, color=f"C{i + 1}", label=f"{arm}: active")
        axes.set_yscale("log")
        axes.set(xlabel="step", ylabel="weights", title=f"{name}: support over training (seed 0)")
        axes.legend(fontsize=6)
    path = folder / "ssvi_support.png"
    figure.savefig(path, dpi=100)
    paths.append(path)
    return paths


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Reproduce SSVI (Li et al., ICLR 2024).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="digits")
    parser.add_argument("--seeds-mnist1d", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--epochs-digits", type=int, default=200)
    parser.add_argument("--epochs-mnist1d", type=int, default=100)
    parser.add_argument(
        "--shift-mnist1d",
        type=int,
        default=4,
        help="augmentation: random shifts of up to this many positions (0: none)",
    )
    parser.add_argument("--finetune-fraction", type=float, default=0.2)
    parser.add_argument("--eval-samples", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "zoo_ssvi.json")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument(
        "--replot",
        type=Path,
        help="rebuild the table, targets and plots from a JSON this script wrote (no training)",
    )
    args = parser.parse_args(argv)
    for name in args.datasets:
        if name not in NETWORKS:
            parser.error(f"--datasets: unknown data set {name!r} (choose from {sorted(NETWORKS)}).")
    if args.replot is not None:
        record = json.loads(args.replot.read_text())
    else:
        start = time.perf_counter()
        record = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
        record["datasets"] = {}
        with tempfile.TemporaryDirectory() as folder:
            for name in args.datasets:
                record["datasets"][name] = run_dataset(name, args, Path(folder))
                partial = {**record, "machine": machine_info()}
                (Path(tempfile.gettempdir()) / "zoo_ssvi.partial.json").write_text(
                    json.dumps(partial)
                )
        record["wall_seconds"] = time.perf_counter() - start
        record["machine"] = machine_info()
    record["summary"] = summarize(record)
    record["targets"] = check_targets(record["summary"])
    text = table(record["summary"], record)
    print(text)
    args.out.write_text(json.dumps(record, indent=1))
    if not args.no_docs:
        plot(record, record["summary"], ROOT / "docs" / "img")
        replace_section(ROOT / "docs" / "zoo" / "ssvi.md", "ssvi_table", text)
    return record


if __name__ == "__main__":
    main()
