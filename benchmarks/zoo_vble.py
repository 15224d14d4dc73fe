"""Reproduce VBLE (Biquard et al., arXiv:2311.17744) at CPU scale.

Trains the small compressive autoencoder of ``ppl_zoo.vble`` on crops of scikit-image's
bundled photographs (rate-distortion, ``ppl.fit``), then, for Gaussian deblurring
(σ_k = 3, noise 7.65/255), 4x super-resolution and 50 % inpainting (noise 2.55/255):
chooses each method's regularization weight on crops of the validation image
(``coffee``) and measures, on crops of the held-out test images (camera, astronaut,
moon), PSNR and SSIM of the VBLE posterior mean (VBLE-z, and VBLE-xz with the CAE's
Gaussian decoder), MAP-z, Wiener (Tikhonov for SR and inpainting) and total variation;
the coverage of the per-pixel 90 % posterior intervals; the Spearman correlation of the
standard-deviation map with the absolute error; seconds per image.

    python benchmarks/zoo_vble.py                          # ~30 min on 2 busy cores
    python benchmarks/zoo_vble.py --cae /tmp/cae.eqx       # reuse (or save) the CAE

Writes ``benchmarks/zoo_vble.json``, ``docs/img/vble_*.png`` and the table section of
``docs/zoo/vble.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ROOT, machine_info, replace_section  # noqa: E402

from ppl_zoo import vble  # noqa: E402

LEVELS = (0.5, 0.8, 0.9, 0.95)
GRIDS = {  # candidate weights, chosen on the validation crops
    "VBLE": {"deblur": (0.25, 0.5, 1.0, 2.0), "sr4": (0.5, 1.0, 2.5), "inpaint": (0.5, 1.0, 2.0)},
    "Wiener": {
        "deblur": (0.01, 0.03, 0.1, 0.3),
        "sr4": (1e-4, 1e-3, 1e-2),
        "inpaint": (1e-4, 1e-3, 1e-2),
    },
    "TV": {
        "deblur": (0.003, 0.01, 0.03),
        "sr4": (0.001, 0.003, 0.01),
        "inpaint": (0.003, 0.01, 0.03),
    },
}
GRIDS["MAP-z"] = GRIDS["VBLE-xz"] = GRIDS["VBLE"]
POSTERIORS = ("VBLE", "VBLE-xz")
METRICS = ("psnr", "ssim", "coverage90", "spearman_std_error", "seconds")


def coverage_curve(x, samples) -> list[float]:
    """Coverage of the central intervals at ``LEVELS`` from the posterior samples."""
    out = []
    for level in LEVELS:
        low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
        out.append(vble.coverage(x, low, high))
    return out


def cae_coding(cae, crops) -> dict:
    """The CAE as a codec on the test crops: PSNR and bits per pixel at rounded latents."""
    psnrs, bpps = [], []
    for x in crops.values():
        z = np.round(cae.encode(x[None]))
        h = np.round(cae.hyper_encode(z))
        psnrs.append(vble.psnr(x, np.clip(cae.decode(z)[0], 0, 1)))
        bpps.append(float(vble.bits_per_pixel(cae, z, h, x.size)))
    return {"psnr": float(np.mean(psnrs)), "bpp": float(np.mean(bpps))}


def run(method, task, cae, x, index, weight, config):
    operator, sigma = vble.make_task(task, x.shape, config, seed=index)
    y = vble.degrade(index, x, operator, sigma)
    key = jax.random.fold_in(jax.random.key(1), index)
    out = vble.run_method(method, key, task, cae, operator, y, sigma, weight, config, x.shape)
    return y, out


def tune(cae, task, crops, config, bar) -> dict:
    """The weight of each method with the best mean PSNR on the validation crops."""
    chosen = {}
    for method in vble.METHODS:
        scores = {}
        for weight in GRIDS[method][task]:
            values = [
                vble.psnr(x, run(method, task, cae, x, 1000 + i, weight, config)[1]["mean"])
                for i, x in enumerate(crops.values())
            ]
            scores[weight] = float(np.mean(values))
            bar.update()
        chosen[method] = {"weight": max(scores, key=scores.get), "validation_psnr": scores}
    return chosen


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def markdown(table, chosen, coding, gamma, paper_note) -> str:
    lines = [
        "| task | method | weight | PSNR (dB) | SSIM | 90 % coverage | Spearman(std, err) "
        "| s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, rows in table.items():
        for method, row in rows.items():
            cells = [f"{row['psnr']:.2f} ± {row['psnr_se']:.2f}", f"{row['ssim']:.3f}"]
            if "coverage90" in row:
                cells += [
                    f"{row['coverage90']:.3f} ± {row['coverage90_se']:.3f}",
                    f"{row['spearman_std_error']:.2f} ± {row['spearman_std_error_se']:.2f}",
                ]
            else:
                cells += ["", ""]
            weight = chosen[task][method]["weight"]
            lines.append(
                f"| {task} | {method} | {weight:g} | " + " | ".join(cells)
                + f" | {row['seconds']:.1f} |"
            )  # fmt: skip
    lines += [
        "",
        f"The CAE as a codec on the test crops: {coding['psnr']:.2f} dB at "
        f"{coding['bpp']:.3f} bits per pixel (rounded latents); VBLE-xz's decoder "
        f"standard deviation γ = {gamma:.4f}. {paper_note}",
    ]
    return "\n".join(lines)


def plot_examples(examples, path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15.0, 2.0 * len(examples)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(examples), 9, squeeze=False)
    for row, (task, ex) in zip(axes, examples.items()):
        errors = {m: np.abs(ex["x"] - ex[m]["mean"]) for m in POSTERIORS}
        panels = [
            ("truth", ex["x"], "gray", 1.0),
            ("degraded", ex["y"], "gray", 1.0),
            ("MAP-z", ex["MAP-z"]["mean"], "gray", 1.0),
        ]
        for m in POSTERIORS:
            panels += [
                (f"{m} mean", ex[m]["mean"], "gray", 1.0),
                (f"{m} |error|", errors[m], "magma", None),
                (f"{m} std", ex[m]["std"], "magma", None),
            ]
        vmax = float(max(max(e.max(), ex[m]["std"].max()) for m, e in errors.items()))
        for ax, (title, image, cmap, top) in zip(row, panels):
            ax.imshow(np.asarray(image), cmap=cmap, vmin=0.0, vmax=top or vmax)
            ax.set_title(f"{task}: {title}" if title == "truth" else title, fontsize=9)
            ax.axis("off")
    figure.savefig(path, dpi=70)


def plot_calibration(curves, path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.6, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
    for index, (task, by_method) in enumerate(curves.items()):
        for method, style in zip(POSTERIORS, ("o--", "s-")):
            color = f"C{index}"
            values = np.mean(by_method[method], axis=0)
            ax.plot(LEVELS, values, style, color=color, label=f"{task} {method}")
    ax.set(xlabel="nominal level", ylabel="empirical coverage", title="pixel intervals")
    ax.set_xlim(0.4, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.legend(fontsize=7)
    figure.savefig(path, dpi=100)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = vble.DEFAULT_CONFIG
    parser.add_argument("--cae", type=Path, help="load the CAE from here, or train and save it")
    parser.add_argument("--cae-steps", type=int, default=defaults["cae_steps"])
    parser.add_argument("--tasks", default=defaults["tasks"])
    parser.add_argument("--test-size", type=int, default=defaults["test_size"])
    parser.add_argument("--crops-per-image", type=int, default=defaults["crops_per_image"])
    parser.add_argument("--validation-crops", type=int, default=1)
    parser.add_argument("--vble-steps", type=int, default=defaults["vble_steps"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "zoo_vble.json")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    config = {
        **defaults,
        "cae_steps": args.cae_steps,
        "tasks": args.tasks,
        "test_size": args.test_size,
        "crops_per_image": args.crops_per_image,
        "vble_steps": args.vble_steps,
    }
    tasks = [t.strip() for t in args.tasks.split(",")]
    start = time.perf_counter()
    data = vble.load_data(config, None)
    if args.cae is not None and args.cae.exists():
        cae, cae_seconds = vble.load_cae(args.cae, config), None
        print(f"loaded the CAE from {args.cae}")
    else:
        crops = vble.random_crops(0, data.train, config["num_crops"], config["crop_size"])
        cae, _ = vble.train_cae(jax.random.key(0), crops, config)
        cae_seconds = time.perf_counter() - start
        if args.cae is not None:
            eqx.tree_serialise_leaves(args.cae, cae)
    test = vble.center_crops(data.test, args.test_size, args.crops_per_image)
    validation = vble.center_crops(data.validation, args.test_size, args.validation_crops)
    coding = cae_coding(cae, test)
    table, chosen, curves, examples, per_crop = {}, {}, {}, {}, {}
    num_tuning = sum(len(GRIDS[m][t]) for m in vble.METHODS for t in tasks)
    with tqdm(total=num_tuning + len(tasks) * len(test), unit="run") as bar:
        for task in tasks:
            bar.set_postfix_str(f"{task}: tuning")
            chosen[task] = tune(cae, task, validation, config, bar)
            bar.set_postfix_str(f"{task}: test")
            rows = {m: [] for m in vble.METHODS}
            curves[task] = {m: [] for m in POSTERIORS}
            for index, (name, x) in enumerate(test.items()):
                outs = {}
                for method in vble.METHODS:
                    weight = chosen[task][method]["weight"]
                    y, outs[method] = run(method, task, cae, x, index, weight, config)
                    rows[method].append(
                        {"crop": name, **vble.evaluate_restoration(x, outs[method])}
                    )
                for m in POSTERIORS:
                    curves[task][m].append(coverage_curve(x, outs[m]["samples"]))
                if index == 0:
                    examples[task] = {"x": x, "y": y, **outs}
                bar.update()
            per_crop[task] = rows
            table[task] = {}
            for method, values in rows.items():
                row = {}
                for metric in METRICS:
                    if metric in values[0]:
                        row[metric], row[metric + "_se"] = mean_se([v[metric] for v in values])
                table[task][method] = row
            for m in POSTERIORS:
                table[task][m]["coverage_curve"] = np.mean(curves[task][m], 0).tolist()
    targets = {}
    for task in tasks:
        t = table[task]
        targets[task] = {}
        for p in POSTERIORS:
            for m in ("MAP-z", "Wiener", "TV"):
                targets[task][f"{p}_minus_{m}"] = t[p]["psnr"] - t[m]["psnr"]
            targets[task][f"{p}_coverage90"] = t[p]["coverage90"]
            targets[task][f"{p}_spearman"] = t[p]["spearman_std_error"]
    note = "Paper (BSD, pretrained CompressAI models): not reproduced, see the text."
    text = markdown(table, chosen, coding, vble.gamma_of(config), note)
    print(text)
    record = {
        "machine": machine_info(),
        "config": config,
        "levels": LEVELS,
        "grids": {m: {t: list(g) for t, g in v.items()} for m, v in GRIDS.items()},
        "cae_coding": coding,
        "decoder_std": vble.gamma_of(config),
        "cae_train_seconds": cae_seconds,
        "chosen": chosen,
        "table": table,
        "per_crop": per_crop,
        "targets": targets,
        "wall_s": time.perf_counter() - start,
    }
    args.out.write_text(json.dumps(record, indent=1))
    if not args.no_docs:
        img = ROOT / "docs" / "img"
        plot_examples(examples, img / "vble_restorations.png")
        plot_calibration(curves, img / "vble_calibration.png")
        replace_section(ROOT / "docs" / "zoo" / "vble.md", "vble_table", text)
    print(f"targets: {targets}; wrote {args.out} in {record['wall_s']:.0f} s")
    return record


if __name__ == "__main__":
    main()
