"""Scaling of ppl's data- and particle-parallel training (``ppl.parallel``).

The model is the VAE of ``benchmarks/overhead.py`` (Becker et al., PLDI 2024, Table 1:
784-200-10 encoder, 10-200-784 decoder, leaky ReLU, diagonal Normal guide, Bernoulli
pixels, synthetic binary images), trained with the importance-weighted bound of Burda
et al. (2016): ``ppl.objectives.iwae`` per image, averaged over the minibatch with
``ppl.parallel.batch_mean``. One measurement is the jit-compiled value and gradient of
that minibatch objective, timed until ``block_until_ready``. Every configuration runs in
a fresh subprocess, so that its peak resident memory (``ru_maxrss``) is its own and the
number of (forced) host devices can be set before JAX starts.

Three sweeps:

* **Devices.** 1, 2, 4, 8 devices (``--xla_force_host_platform_device_count`` on CPU),
  the minibatch sharded over a ``"data"`` mesh axis, or the particles over a
  ``"particles"`` axis. On a CPU the forced devices share the same cores, so this
  measures the cost of partitioning and of the cross-device reductions, not a
  speed-up; on a machine with several GPUs the same script (``--device-counts 1,2,4,8``,
  at most the GPUs there are) measures the speed-up.
* **Particles.** ``K = 1, 4, ..., 4096`` at a fixed batch: time and peak memory per
  gradient. The cost of IWAE is linear in ``K``; the script fits
  ``time = a + b K`` and the log-log slope between the two largest ``K``.
* **Batch size.** With and without micro-batches (``batch_mean(...,
  microbatch_size=m)``: a rematerialized ``lax.map``), peak memory against the batch
  size; and the issue's target point, ``K = 4096`` particles at batch 256, whose peak
  must stay under 8 GiB on a CPU (XLA's own estimate of the buffers the unchunked
  program would need is reported beside it).

Run ``python benchmarks/scaling.py`` (about ten minutes on a quiet 2-core machine;
``--quick`` for a smoke test). Writes ``benchmarks/scaling.json``,
``docs/img/scaling_*.png`` and the ``scaling`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCRIPT_DIR = Path(__file__).resolve().parent
ROOT = SCRIPT_DIR.parent
DEFAULT_JSON = SCRIPT_DIR / "scaling.json"
DEFAULT_MARKDOWN = ROOT / "docs" / "benchmarks.md"
IMAGE_DIR = ROOT / "docs" / "img"

DEVICE_COUNTS = (1, 2, 4, 8)
DEVICE_BATCH, DEVICE_PARTICLES = 64, 64
PARTICLE_COUNTS = (1, 4, 16, 64, 256, 1024, 4096)
PARTICLE_BATCH = 16
BATCH_SIZES = (16, 64, 256)
BATCH_PARTICLES = 256
MICROBATCH = 8
TARGET_PARTICLES, TARGET_BATCH = 4096, 256
TARGET_BYTES = 8 * 2**30
REPEATS, QUICK_REPEATS = 5, 2
MIN_SECONDS, MAX_REPEATS = 2.0, 50
WORKER_TIMEOUT = 1800


# ------------------------------------------------------------------ the worker (child)


def _model_and_objective(num_particles: int, microbatch_size: int | None):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from overhead import DECODER_PARAMS, ENCODER_PARAMS, LATENT_DIM, decode, encode

    import ppl

    def guide(x):
        params = {name: numpyro.param(name) for name in ENCODER_PARAMS}
        loc, scale = encode(params, x)
        numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def model(x):
        params = {name: numpyro.param(name) for name in DECODER_PARAMS}
        z = numpyro.sample("z", dist.Normal(jnp.zeros(LATENT_DIM), 1.0).to_event(1))
        numpyro.sample("x", dist.Bernoulli(logits=decode(params, z)).to_event(1), obs=x)

    iwae = ppl.objectives.iwae(model, guide, num_particles=num_particles)
    return ppl.parallel.batch_mean(iwae, microbatch_size=microbatch_size)


def worker(config: dict[str, Any]) -> dict[str, Any]:
    """Compile and time one configuration; runs in its own process."""
    import jax
    import numpy as np
    from overhead import DATA_DIM, PIXEL_PROB, init_params

    from ppl import parallel

    objective = _model_and_objective(config["particles"], config.get("microbatch"))
    params = init_params(jax.random.key(0))
    batch = jax.random.bernoulli(jax.random.key(1), PIXEL_PROB, (config["batch"], DATA_DIM)).astype(
        np.float32
    )
    step = jax.jit(jax.value_and_grad(lambda p, key, x: objective(key, p, x)))
    axis = config.get("axis")
    devices = jax.devices()[: config.get("num_devices", 1)]
    if len(devices) < config.get("num_devices", 1):
        raise RuntimeError(f"{config['num_devices']} devices asked for, {jax.devices()} found")
    mesh = parallel.mesh(axis, devices=devices) if axis else None
    if mesh is not None:
        params = parallel.replicate(mesh, params)
        batch = parallel.shard_batch(mesh, batch)
    out: dict[str, Any] = {"devices": len(devices), "device_kind": devices[0].device_kind}
    with jax.set_mesh(mesh) if mesh is not None else _nothing():
        start = time.perf_counter()
        lowered = step.lower(params, jax.random.key(2), batch)
        compiled = lowered.compile()
        out["compile_s"] = time.perf_counter() - start
        memory = compiled.memory_analysis()
        if memory is not None:
            out["xla_temp_bytes"] = int(memory.temp_size_in_bytes)
        cost = compiled.cost_analysis()  # XLA's count: independent of load on the machine
        if isinstance(cost, list):
            cost = cost[0] if cost else None
        if cost and "flops" in cost:
            out["xla_flops"] = float(cost["flops"])
        if config.get("compile_only"):
            out["peak_rss_bytes"] = _peak_rss()
            return out
        times, repeat = [], 0
        # after one warm-up call: at least `repeats` calls and at least MIN_SECONDS
        while repeat <= config["repeats"] or (
            sum(times[1:]) < MIN_SECONDS and repeat <= MAX_REPEATS
        ):
            start = time.perf_counter()
            value, grads = compiled(params, jax.random.key(3 + repeat), batch)
            jax.block_until_ready(grads)
            times.append(time.perf_counter() - start)
            repeat += 1
    out["times_s"] = times[1:]
    out["median_s"] = float(np.median(times[1:]))
    out["best_s"] = float(np.min(times[1:]))
    out["value"] = float(value)
    out["finite"] = bool(all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)))
    out["peak_rss_bytes"] = _peak_rss()
    return out


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


# ------------------------------------------------------------------ the driver (parent)


def run_config(config: dict[str, Any], devices: int = 1) -> dict[str, Any]:
    """Run ``worker(config)`` in a fresh process with ``devices`` forced host devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    ).strip()
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPT_DIR), str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
    )
    if run.returncode != 0:
        raise RuntimeError(f"scaling worker {config} failed:\n{run.stderr[-3000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"  {config} on {devices} device(s): {_summary(result)}", file=sys.stderr)
    return {**config, **result}


def _summary(result: dict[str, Any]) -> str:
    parts = [f"peak {result['peak_rss_bytes'] / 2**20:.0f} MiB"]
    if "best_s" in result:
        parts.insert(0, f"{result['best_s'] * 1e3:.1f} ms")
    return ", ".join(parts)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least squares ``y = a + b x``, the coefficient of determination, and the log-log
    slope between the two largest ``x`` (1 for linear cost, once ``b x`` dominates)."""
    import numpy as np

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    b, a = np.polyfit(x, y, 1)
    residual = y - (a + b * x)
    r2 = 1.0 - float(np.sum(residual**2) / np.sum((y - y.mean()) ** 2))
    slope = math.log(y[-1] / y[-2]) / math.log(x[-1] / x[-2])
    return {"intercept_s": float(a), "per_particle_s": float(b), "r2": r2, "loglog_slope": slope}


SECTIONS = ("devices", "particles", "batch", "target")


def measure(
    quick: bool,
    sections: Sequence[str] = SECTIONS,
    device_counts: Sequence[int] = DEVICE_COUNTS,
) -> dict[str, Any]:
    """Run the sweeps named in ``sections``; returns their results by section."""
    repeats = QUICK_REPEATS if quick else REPEATS
    results: dict[str, Any] = {}

    if "devices" in sections:
        print("devices:", file=sys.stderr)
        counts = device_counts[:2] if quick else device_counts
        batch, particles = (16, 16) if quick else (DEVICE_BATCH, DEVICE_PARTICLES)
        results["devices"] = [
            run_config(
                {
                    "axis": axis,
                    "batch": batch,
                    "particles": particles,
                    "repeats": repeats,
                    "num_devices": n,
                },
                devices=n,
            )
            for n in counts
            for axis in ("data", "particles")
        ]

    if "particles" in sections:
        print("particles:", file=sys.stderr)
        particle_counts = PARTICLE_COUNTS[:4] if quick else PARTICLE_COUNTS
        results["particles"] = [
            run_config({"batch": PARTICLE_BATCH, "particles": k, "repeats": repeats})
            for k in particle_counts
        ]

    if "batch" in sections:
        print("batch sizes:", file=sys.stderr)
        batch_sizes = BATCH_SIZES[:2] if quick else BATCH_SIZES
        batch_particles = 16 if quick else BATCH_PARTICLES
        results["batch"] = []
        for b in batch_sizes:
            for micro in (None, MICROBATCH):
                config = {"batch": b, "particles": batch_particles, "repeats": repeats}
                if micro is not None:
                    config["microbatch"] = micro
                results["batch"].append(run_config(config))

    if "target" in sections:
        print("target:", file=sys.stderr)
        k, b = (256, 32) if quick else (TARGET_PARTICLES, TARGET_BATCH)
        config = {"batch": b, "particles": k, "microbatch": MICROBATCH, "repeats": 1}
        results["target"] = run_config(config)
        results["target_unchunked"] = run_config(
            {"batch": b, "particles": k, "repeats": 0, "compile_only": True}
        )
    return results


def particle_fits(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Linear fits of the measured time and of XLA's flop count against the particles."""
    ks = [r["particles"] for r in rows]
    fits = {"time": linear_fit(ks, [r["best_s"] for r in rows])}
    if all("xla_flops" in r for r in rows):
        fits["flops"] = linear_fit(ks, [r["xla_flops"] for r in rows])
    return fits


# ----------------------------------------------------------------------- the outputs


def plot(results: dict[str, Any], image_dir: Path) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    def log2_axis(axes, ticks):
        axes.set_xscale("log", base=2)
        axes.set_xticks(ticks)
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(NullFormatter())

    figure = Figure(figsize=(13.0, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax_dev, ax_time, ax_mem, ax_batch = figure.subplots(1, 4)

    counts = sorted({r["devices"] for r in results["devices"]})
    for axis, marker in (("data", "o"), ("particles", "s")):
        rows = sorted(
            (r for r in results["devices"] if r["axis"] == axis), key=lambda r: r["devices"]
        )
        ax_dev.plot(
            [r["devices"] for r in rows],
            [rows[0]["best_s"] / r["best_s"] for r in rows],
            marker=marker,
            label=f"{axis} parallel",
        )
    ax_dev.axhline(1.0, color="grey", lw=0.8, ls=":")
    log2_axis(ax_dev, counts)
    ax_dev.set(
        xlabel="forced CPU devices",
        ylabel="throughput relative to 1 device",
        title=f"devices sharing {results['machine']['cpu_count']} cores",
    )
    ax_dev.legend()

    rows = results["particles"]
    ks = [r["particles"] for r in rows]
    times = [r["best_s"] * 1e3 for r in rows]
    ax_time.plot(ks, times, marker="o", label="measured time")
    ax_time.plot(ks, [times[-1] * k / ks[-1] for k in ks], ls="--", color="grey", label="∝ K")
    if all("xla_flops" in r for r in rows):
        flops = [r["xla_flops"] for r in rows]
        scale = times[-1] / flops[-1]
        ax_time.plot(ks, [f * scale for f in flops], marker="^", ms=4, label="XLA flops (scaled)")
    ax_time.set(
        yscale="log",
        xlabel="particles K",
        ylabel="ms per gradient",
        title=f"IWAE time, batch {rows[0]['batch']}",
    )
    log2_axis(ax_time, [k for k in ks if k in (1, 16, 256, 4096)])
    ax_time.legend()

    ax_mem.plot(ks, [r["peak_rss_bytes"] / 2**20 for r in rows], marker="s", label="peak RSS")
    ax_mem.plot(
        ks,
        [max(r.get("xla_temp_bytes", 0), 1) / 2**20 for r in rows],
        marker="^",
        label="XLA temporaries",
    )
    ax_mem.set(
        yscale="log",
        xlabel="particles K",
        ylabel="MiB",
        title=f"IWAE memory, batch {rows[0]['batch']}",
    )
    log2_axis(ax_mem, [k for k in ks if k in (1, 16, 256, 4096)])
    ax_mem.legend()

    batches = sorted({r["batch"] for r in results["batch"]})
    for micro, marker in ((None, "o"), (MICROBATCH, "s")):
        rows = [r for r in results["batch"] if r.get("microbatch") == micro]
        label = "whole batch" if micro is None else f"micro-batches of {micro}"
        ax_batch.plot(
            [r["batch"] for r in rows],
            [r["peak_rss_bytes"] / 2**20 for r in rows],
            marker=marker,
            label=label,
        )
    log2_axis(ax_batch, batches)
    ax_batch.set(
        xlabel="batch size",
        ylabel="peak RSS (MiB)",
        title=f"IWAE memory, K = {results['batch'][0]['particles']}",
    )
    ax_batch.legend()
    path = image_dir / "scaling_vae.png"
    figure.savefig(path, format="png", dpi=100)
    return [path.name]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f}"


def markdown(results: dict[str, Any], images: list[str]) -> str:
    info = results["machine"]
    lines = [
        "## Scaling: data- and particle-parallel IWAE (`ppl.parallel`)",
        "",
        "The VAE of the overhead benchmark above (784-200-10 encoder, 10-200-784 decoder), "
        "trained with the importance-weighted bound (`ppl.objectives.iwae` per image, "
        "averaged over the minibatch with `ppl.parallel.batch_mean`). Each number is the "
        "time of a jit-compiled value-and-gradient of the minibatch objective (the "
        f"fastest of at least {REPEATS} calls and {MIN_SECONDS:g} s after a warm-up call: "
        "the machine was shared with other jobs, which only add time; medians are in "
        "the JSON), "
        "the peak resident memory (`ru_maxrss`) of the fresh process that compiled "
        "and ran it (about 400 MiB of it is the Python process with JAX and NumPyro "
        "loaded), or XLA's own count of the temporary buffers of the compiled program "
        "(`memory_analysis().temp_size_in_bytes`). How to run on several GPUs and "
        "hosts: [Scaling out](scaling.md).",
        "",
        f"Machine: JAX {info['jax']} on `{info['backend']}` ({info['cpu_count']} CPU "
        f"cores, {info['cpu']}), ppl {info['ppl']} (commit {info['ppl_revision']}); "
        f"measured {info['date']}. No GPU was available for this run. Reproduce with "
        "`python benchmarks/scaling.py` (raw numbers in `benchmarks/scaling.json`).",
        "",
        "### Devices",
        "",
        "**These are forced host devices** (`--xla_force_host_platform_device_count`): "
        f"all of them share the same {info['cpu_count']} CPU cores, so they add no "
        "compute; the table shows what partitioning costs (per-device programs, "
        "cross-device reductions) and how well the cores are used, not the speed-up of "
        "real devices (GPUs), which this machine does not have. Batch "
        f"{results['devices'][0]['batch']}, K = "
        f"{results['devices'][0]['particles']} particles.",
        "",
        "| devices | data parallel (ms) | images / s | particle parallel (ms) | images / s |",
        "|---|---|---|---|---|",
    ]
    by = {(r["devices"], r["axis"]): r for r in results["devices"]}
    for n in sorted({r["devices"] for r in results["devices"]}):
        data, part = by[(n, "data")], by[(n, "particles")]
        lines.append(
            f"| {n} | {_ms(data['best_s'])} | {data['batch'] / data['best_s']:.0f} | "
            f"{_ms(part['best_s'])} | {part['batch'] / part['best_s']:.0f} |"
        )
    counts = sorted({r["devices"] for r in results["devices"]})

    def ratios(axis):
        return ", ".join(
            f"{by[(1, axis)]['best_s'] / by[(n, axis)]['best_s']:.2f}x ({n})" for n in counts[1:]
        )

    lines += [
        "",
        f"Throughput relative to one device (device count in parentheses): data parallel "
        f"{ratios('data')}; particle parallel {ratios('particles')}. On this "
        f"{info['cpu_count']}-core machine the first extra device can help because one XLA "
        "CPU device does not always keep every core busy; past the number of cores there "
        "is no more hardware, so the rest is partitioning overhead and the noise of a "
        "shared machine. The equality of the results with one device is checked by "
        "`tests/test_parallel.py`, not here.",
    ]
    fits = results["particle_fit"]
    fit = fits["time"]
    lines += [
        "",
        f"### Particles (batch {results['particles'][0]['batch']}, one device)",
        "",
        "| K | ms per gradient | µs per particle and image | XLA Gflop | peak memory (MiB) "
        "| XLA temporaries (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["particles"]:
        per = r["best_s"] / (r["particles"] * r["batch"])
        flops = f"{r['xla_flops'] / 1e9:.3g}" if "xla_flops" in r else "n/a"
        lines.append(
            f"| {r['particles']} | {_ms(r['best_s'])} | {per * 1e6:.3g} | {flops} | "
            f"{_mib(r['peak_rss_bytes'])} | {_mib(r.get('xla_temp_bytes', 0))} |"
        )
    linear_time = fit["r2"] > 0.99 and 0.8 <= fit["loglog_slope"] <= 1.2
    lines += [
        "",
        f"A least-squares line `time = a + b K` gives a = {_ms(fit['intercept_s'])} ms, "
        f"b = {fit['per_particle_s'] * 1e6:.3g} µs per particle (R² = {fit['r2']:.4f}); "
        f"between the two largest K the log-log slope of the time is "
        f"{fit['loglog_slope']:.2f} (1 is linear).",
    ]
    if "flops" in fits:
        flops = fits["flops"]
        lines[-1] += (
            f" XLA's flop count of the compiled gradient, which no other job on the "
            f"machine can disturb, is {flops['intercept_s'] / 1e6:.3g} Mflop + "
            f"{flops['per_particle_s'] / 1e6:.4g} Mflop per particle (R² = "
            f"{flops['r2']:.6f}, log-log slope {flops['loglog_slope']:.3f})."
        )
        linear_flops = flops["r2"] > 0.9999 and 0.95 <= flops["loglog_slope"] <= 1.05
    else:
        linear_flops = linear_time
    per = [r["best_s"] / (r["particles"] * r["batch"]) * 1e6 for r in results["particles"]]
    lines[-1] += " " + (
        "**Cost grows linearly in the particles.**"
        if linear_time and linear_flops
        else "**The work grows linearly in the particles (XLA's count); the time does "
        f"so only piecewise:** per particle and image it is {min(per):.3g} to "
        f"{max(per):.3g} µs. The steps up come where the decoder's (batch x K x 784) "
        "float32 arrays outgrow the CPU caches (12.8 MB each at K = 256, batch 16), "
        "most likely, so that the gradient becomes bound by memory bandwidth; the "
        "micro-batched runs below, with a smaller working set, are faster for the same "
        "work. The machine was also shared with other jobs."
        if linear_flops
        else "**The cost is not linear in the particles here** (see the numbers)."
    )
    lines += [
        "",
        f"### Batch size and memory (K = {results['batch'][0]['particles']}, one device)",
        "",
        "| batch | whole batch: ms | peak MiB | XLA temp. MiB | micro-batches of "
        f"{MICROBATCH}: ms | peak MiB | XLA temp. MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(r["batch"], r.get("microbatch")): r for r in results["batch"]}
    for b in sorted({r["batch"] for r in results["batch"]}):
        whole, micro = by[(b, None)], by[(b, MICROBATCH)]
        lines.append(
            f"| {b} | {_ms(whole['best_s'])} | {_mib(whole['peak_rss_bytes'])} | "
            f"{_mib(whole.get('xla_temp_bytes', 0))} | {_ms(micro['best_s'])} | "
            f"{_mib(micro['peak_rss_bytes'])} | {_mib(micro.get('xla_temp_bytes', 0))} |"
        )
    target, unchunked = results["target"], results["target_unchunked"]
    met = target["peak_rss_bytes"] <= TARGET_BYTES and target["finite"]
    lines += [
        "",
        f"**Target: IWAE with {target['particles']} particles at batch {target['batch']} "
        f"within 8 GiB on a CPU: {'met' if met else 'missed'}.** With "
        f"`batch_mean(iwae, microbatch_size={target['microbatch']})` one gradient took "
        f"{target['best_s']:.1f} s with a peak of {_mib(target['peak_rss_bytes'])} MiB "
        f"(finite gradient: {target['finite']}). Without micro-batches, XLA's buffer "
        f"assignment for the same gradient needs "
        f"{unchunked.get('xla_temp_bytes', float('nan')) / 2**30:.1f} GiB of temporaries "
        "(compiled, not run). No per-example gradients are formed in either: the "
        "gradient of the mean is taken through the vmapped (or `lax.map`-ped) batch.",
        "",
    ]
    for name in images:
        lines += [
            f"![Scaling of IWAE on the VAE](img/{name})",
            "",
            "From left to right: throughput against the number of forced CPU devices, "
            "relative to one device; time per gradient against the particles (log-log, "
            "with a line proportional to K through the largest K, and XLA's flop count "
            "scaled to the same point); peak resident memory and XLA's temporary buffers "
            "against the particles; peak resident memory against the batch size, with "
            "and without micro-batches.",
            "",
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: small sizes")
    parser.add_argument("--out", type=Path, default=DEFAULT_JSON, help="the JSON file")
    parser.add_argument(
        "--markdown", type=Path, default=DEFAULT_MARKDOWN, help="the page to update"
    )
    parser.add_argument("--no-markdown", action="store_true", help="do not touch the page")
    parser.add_argument("--images", type=Path, default=IMAGE_DIR, help="where the PNGs go")
    parser.add_argument(
        "--device-counts",
        default=",".join(map(str, DEVICE_COUNTS)),
        help="numbers of devices for the device sweep (on GPUs: at most the GPUs there are)",
    )
    parser.add_argument(
        "--sections",
        help=f"comma-separated subset of {','.join(SECTIONS)} to measure again; the "
        "others are kept from the JSON file",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="redraw the plot and the page section from the JSON file, measuring nothing",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return {}
    from _common import machine_info, replace_section

    if args.render_only:
        results = json.loads(args.out.read_text())
    else:
        start = time.perf_counter()
        sections = SECTIONS if args.sections is None else args.sections.split(",")
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise SystemExit(f"--sections: unknown {unknown}; choose from {SECTIONS}.")
        results = json.loads(args.out.read_text()) if args.sections else {}
        counts = [int(n) for n in args.device_counts.split(",")]
        results.update(measure(args.quick, sections, counts))
        results["machine"] = machine_info(quick=args.quick)
        results.setdefault("wall_s", {})
        if not isinstance(results["wall_s"], dict):
            results["wall_s"] = {"earlier runs": results["wall_s"]}
        results["wall_s"][",".join(sections)] = time.perf_counter() - start
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    results["particle_fit"] = particle_fits(results["particles"])
    images = plot(results, args.images)
    if not args.no_markdown:
        replace_section(args.markdown, "scaling", markdown(results, images))
    print(f"{args.out}: measured in {results['wall_s']} s", file=sys.stderr)
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(SCRIPT_DIR))
    main()
