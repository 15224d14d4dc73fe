"""Reproduce Daems et al. (ICLR 2024) at CPU scale: MA-fBM weights, Hurst recovery, bridge.

1. Closed-form checks of the Markov approximation: the optimal weights' cost against
   numerical quadrature of the kernel error, the relative-error table at K = 5, 8, 12
   (types I and II), and the sum of the type I weights at H = 1/2.
2. Hurst recovery: for each true H and seed, noisy observations of exact fBM paths;
   the exact Gaussian MLE of H, the Kalman-filter MLE under the MA-fBM prior, the VI
   estimate (Girsanov ELBO, ``ppl.fit``), and a plain Brownian-motion SDE (H = 1/2).
3. The fractional OU bridge (θ = 0): the posterior's pointwise standard deviation
   against the analytic conditioned Gaussian process (type-I normalization), and
   against the exact MA-fBM conditioned process.

    python benchmarks/zoo_fbm_sde.py                 # ~12 min on 2 quiet cores
    python benchmarks/zoo_fbm_sde.py --seeds 0 --hursts 0.3 0.7 --no-docs   # quicker

Writes ``benchmarks/zoo_fbm_sde.json``, ``docs/img/fbm_sde_*.png`` and the marked
sections of ``docs/zoo/fbm_sde.md``.
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

from ppl_zoo import fbm_sde  # noqa: E402

PAGE = ROOT / "docs" / "zoo" / "fbm_sde.md"
TABLE_HURSTS = (0.2, 0.3, 0.5, 0.7, 0.8)
TABLE_GRIDS = ((5, 20.0), (8, 1e2), (12, 1e3))


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, float)
    se = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else float("nan")
    return float(values.mean()), float(se)


def fmt(values, digits=3) -> str:
    mean, se = mean_se(values)
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if np.isfinite(se) else f"{mean:.{digits}f}"


def closed_form() -> tuple[dict, str]:
    """Weights against quadrature, the relative-error table, sums of weights."""
    record: dict = {"relative_error": {}, "quadrature": [], "sum_of_weights": {}}
    rows = []
    for num, gamma_max in TABLE_GRIDS:
        gammas = fbm_sde.gamma_grid(num, gamma_max)
        errors = {
            kind: [fbm_sde.relative_error(h, gammas, 1.0, kind) for h in TABLE_HURSTS]
            for kind in ("I", "II")
        }
        record["relative_error"][f"K={num}"] = errors
        one = " / ".join(f"{e:.3f}" for e in errors["I"])
        two = " / ".join(f"{e:.1e}" for e in errors["II"])
        rows.append(f"| {num}, [{1 / gamma_max:g}, {gamma_max:g}] | {one} | {two} |")
    for kind, hurst in (("I", 0.8), ("I", 0.3), ("II", 0.3), ("II", 0.7)):
        gammas = fbm_sde.gamma_grid(5, 20.0)
        a, b, c = fbm_sde.quadratic_cost(hurst, gammas, 1.0, kind)
        weights = np.linalg.solve(a, b)
        closed = float(weights @ a @ weights - 2 * b @ weights + c)
        quad = fbm_sde.kernel_error_by_quadrature(hurst, gammas, weights, 1.0, kind)
        record["quadrature"].append(
            {"kind": kind, "hurst": hurst, "closed_form": closed, "quadrature": quad}
        )
    gammas = fbm_sde.gamma_grid(5, 10.0)
    for hurst in (0.3, 0.5, 0.9):
        record["sum_of_weights"][str(hurst)] = float(
            fbm_sde.optimal_weights(hurst, gammas, 2.4, "I").sum()
        )
    quad_rows = "\n".join(
        f"| {q['kind']} | {q['hurst']} | {q['closed_form']:.5f} | {q['quadrature']:.5f} |"
        for q in record["quadrature"]
    )
    sums = record["sum_of_weights"]
    text = (
        "Relative integrated squared error cost(ω*)/c, T = 1, H = "
        + " / ".join(str(h) for h in TABLE_HURSTS)
        + ":\n\n| K, γ range | type I | type II |\n|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nCost ωᵀAω − 2bᵀω + c at ω* (K = 5, γ ∈ [0.05, 20], T = 1) against quadrature "
        "of the squared kernel error:\n\n| type | H | closed form | quadrature |\n"
        "|---|---|---|---|\n"
        + quad_rows
        + f"\n\nΣω (type I, K = 5, γ_max = 10, T = 2.4): H = 0.3: {sums['0.3']:.3f}, "
        f"H = 0.5: {sums['0.5']:.6f}, H = 0.9: {sums['0.9']:.3f}.\n"
    )
    return record, text


def hurst_recovery(config: dict, hursts, seeds, bar) -> dict:
    gammas = fbm_sde.gamma_grid(int(config["num_processes"]), float(config["gamma_max"]))
    runs = []
    for hurst in hursts:
        for seed in seeds:
            data = fbm_sde.make_data(
                seed,
                hurst,
                num_paths=int(config["num_paths"]),
                num_obs=int(config["num_obs"]),
                noise=float(config["noise"]),
            )
            bar.set_postfix_str(f"H={hurst} seed {seed}: baselines")
            exact = fbm_sde.exact_mle(data.observations, data.times, data.noise)
            kalman = fbm_sde.kalman_mle(
                data.observations, data.times, data.noise, gammas, 1.0, config["kind"]
            )
            row = {
                "hurst_true": hurst,
                "seed": seed,
                "exact": exact.hurst,
                "kalman": kalman.hurst,
                "kalman_loglik": kalman.log_likelihood / data.observations.shape[0],
            }
            for model in ("fbm", "bm"):
                bar.set_postfix_str(f"H={hurst} seed {seed}: VI {model}")
                start = time.perf_counter()
                params, setup, result, summary = fbm_sde.fit_hurst(
                    jax.random.key(seed), data, config, model=model, progress=False
                )
                row[f"{model}_seconds"] = time.perf_counter() - start
                row[f"{model}_elbo"] = summary["elbo_per_path"]
                row[f"{model}_bad_steps"] = result.num_bad_steps
                if model == "fbm":
                    row["vi"] = summary["hurst"]
                    row["vi_scale"] = summary["scale"]
                    weights = fbm_sde.optimal_weights(summary["hurst"], gammas, 1.0, config["kind"])
                    row["kalman_loglik_at_vi"] = (
                        fbm_sde.kalman_log_likelihood(
                            data.observations,
                            data.times,
                            weights,
                            summary["scale"],
                            gammas,
                            data.noise,
                            config["kind"],
                        )
                        / data.observations.shape[0]
                    )
                bar.update()
            runs.append(row)
    return runs


def summarize(runs, hursts) -> tuple[dict, str]:
    table = {}
    lines = [
        "| true H | exact fBM MLE | MA-fBM Kalman MLE | VI (MA-fBM SDE) | VI − Kalman "
        "| BM SDE | ELBO fBM − ELBO BM (nats/path) "
        "| MA-fBM log-lik − ELBO at the VI estimate (nats/path) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for hurst in hursts:
        rows = [r for r in runs if r["hurst_true"] == hurst]

        def col(key, rows=rows):
            return np.array([r[key] for r in rows])

        diff = col("vi") - col("kalman")
        gap = col("kalman_loglik_at_vi") - col("fbm_elbo")
        table[str(hurst)] = {
            "hurst_true": hurst,
            "exact_mean": mean_se(col("exact"))[0],
            "kalman_mean": mean_se(col("kalman"))[0],
            "vi_mean": mean_se(col("vi"))[0],
            "vi_se": mean_se(col("vi"))[1],
            "vi_minus_kalman_mean": mean_se(diff)[0],
            "vi_minus_kalman_se": mean_se(diff)[1],
            "max_abs_vi_minus_true": float(np.max(np.abs(col("vi") - hurst))),
            "max_abs_vi_minus_kalman": float(np.max(np.abs(diff))),
            "elbo_fbm_minus_bm": mean_se(col("fbm_elbo") - col("bm_elbo"))[0],
            "elbo_gap": mean_se(gap)[0],
        }
        lines.append(
            f"| {hurst} | {fmt(col('exact'))} | {fmt(col('kalman'))} | {fmt(col('vi'))} "
            f"| {fmt(diff)} | 0.5 (fixed) | {fmt(col('fbm_elbo') - col('bm_elbo'), 2)} "
            f"| {fmt(gap, 2)} |"
        )
    return table, "\n".join(lines) + "\n"


def bridge(config: dict, hursts, bar) -> tuple[dict, dict]:
    record, curves = {}, {}
    for hurst in hursts:
        bar.set_postfix_str(f"bridge H={hurst}")
        params, setup, result, std = fbm_sde.fit_bridge(
            jax.random.key(0), config, hurst, progress=False
        )
        grid = setup.horizon * np.arange(1, setup.num_steps + 1) / setup.num_steps
        analytic = fbm_sde.fbm_bridge_std(grid, setup.horizon, hurst, setup.noise)
        gammas = np.asarray(setup.gammas)
        weights = fbm_sde.optimal_weights(hurst, gammas, setup.horizon, "I")
        cov = fbm_sde.ma_fbm_covariance(np.append(grid, setup.horizon), weights, gammas, "I")
        markov = fbm_sde.conditioned_std(np.diag(cov)[:-1], cov[:-1, -1], cov[-1, -1], setup.noise)
        record[str(hurst)] = {
            "max_abs_std_gap_fbm": float(np.max(np.abs(std - analytic))),
            "max_abs_std_gap_ma_fbm": float(np.max(np.abs(std - markov))),
            "max_abs_fbm_vs_ma_fbm": float(np.max(np.abs(analytic - markov))),
            "final_elbo": float(np.nanmean(result.history[-50:])),
        }
        curves[hurst] = (grid, std, analytic, markov)
        bar.update()
    return record, curves


def plot_hurst(runs, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    truth = np.array([r["hurst_true"] for r in runs])
    for key, marker, label, shift in (
        ("exact", "s", "exact fBM MLE", -0.012),
        ("kalman", "^", "MA-fBM Kalman MLE", 0.0),
        ("vi", "o", "VI (ppl.fit)", 0.012),
    ):
        axis.plot(truth + shift, [r[key] for r in runs], marker, ms=5, alpha=0.8, label=label)
    axis.plot([0.2, 0.8], [0.2, 0.8], "k:", lw=0.8)
    axis.axhline(0.5, color="grey", lw=0.8, ls="--", label="BM SDE (H = 1/2)")
    axis.set(xlabel="true H", ylabel="estimated H", title="Hurst recovery (3 seeds each)")
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)


def plot_bridge(curves, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.0 * len(curves), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(1, len(curves), sharey=True))
    for axis, (hurst, (grid, std, analytic, markov)) in zip(axes, curves.items()):
        axis.fill_between(grid, -std, std, alpha=0.3, label="VI posterior ±sd (256 paths)")
        axis.plot(grid, analytic, "k-", lw=1, label="conditioned fBM ±sd (V_H-normalized)")
        axis.plot(grid, -analytic, "k-", lw=1)
        axis.plot(grid, markov, "r--", lw=1, label="conditioned MA-fBM ±sd")
        axis.plot(grid, -markov, "r--", lw=1)
        axis.set(xlabel="t", title=f"fOU bridge (θ = 0), H = {hurst}")
    axes[0].legend(fontsize=7, loc="lower left")
    figure.savefig(path, dpi=100)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Reproduce Daems et al. 2024 at CPU scale.")
    parser.add_argument("--hursts", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bridge-hursts", type=float, nargs="*", default=[0.3, 0.7])
    parser.add_argument("--num-steps", type=int, default=None, help="VI training steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "zoo_fbm_sde.json")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    config = dict(fbm_sde.DEFAULT_CONFIG)
    if args.num_steps is not None:
        config["num_steps"] = args.num_steps
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in config:
            raise ValueError(f"--set {item}: unknown key {key!r}; known: {sorted(config)}.")
        config[key] = type(config[key])(value) if config[key] is not None else value

    start = time.perf_counter()
    closed_record, closed_text = closed_form()
    total = 2 * len(args.hursts) * len(args.seeds) + len(args.bridge_hursts)
    with tqdm(total=total, desc="fbm_sde") as bar:
        runs = hurst_recovery(config, args.hursts, args.seeds, bar)
        bridge_record, curves = bridge(config, args.bridge_hursts, bar)
    table, table_text = summarize(runs, args.hursts)
    wall = time.perf_counter() - start
    bridge_text = (
        "| H | max abs(sd_VI − sd_fBM) | max abs(sd_VI − sd_MA-fBM) "
        "| max abs(sd_fBM − sd_MA-fBM) |\n"
    )
    bridge_text += "|---|---|---|---|\n" + "\n".join(
        f"| {h} | {r['max_abs_std_gap_fbm']:.3f} | {r['max_abs_std_gap_ma_fbm']:.3f} "
        f"| {r['max_abs_fbm_vs_ma_fbm']:.3f} |"
        for h, r in bridge_record.items()
    )
    record = {
        "machine": machine_info(wall_seconds=round(wall, 1)),
        "config": config,
        "closed_form": closed_record,
        "runs": runs,
        "hurst": table,
        "bridge": bridge_record,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(closed_text, table_text, bridge_text, sep="\n")
    print(f"wall time {wall:.0f} s")
    if not args.no_docs:
        img = ROOT / "docs" / "img"
        plot_hurst(runs, img / "fbm_sde_hurst.png")
        if curves:
            plot_bridge(curves, img / "fbm_sde_bridge.png")
        stamp = (
            f"\n\nMeasured {record['machine']['date']} on {record['machine']['cpu_count']} "
            f"CPU cores ({record['machine']['cpu']}), wall time {wall / 60:.1f} min, "
            f"seeds {args.seeds}, {config['num_steps']} ppl.fit steps per run.\n"
        )
        replace_section(PAGE, "fbm_sde_closed_form", closed_text)
        replace_section(PAGE, "fbm_sde_table", table_text + stamp)
        replace_section(PAGE, "fbm_sde_bridge", bridge_text + "\n")
    return record


if __name__ == "__main__":
    main()
