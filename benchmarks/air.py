"""AIR estimator benchmark: the PLDI 2024 paper's Table 2 and Figure 7, against Pyro.

Becker et al., "Probabilistic Programming with Programmable Variational Inference",
PLDI 2024, Table 2 (seconds per AIR training epoch, genjax.vi against Pyro) and
Figure 7 (count accuracy and objective against wall-clock time per estimator), with
AIR (Eslami et al., NeurIPS 2016) from ``ppl_zoo.air``.

Three phases, each selectable, each merged into ``benchmarks/air.json`` and its section
of ``docs/zoo/air.md`` as soon as it ends:

* ``timing``: seconds per training step of every ppl estimator (``ppl.fit``, steps run
  ``--timing-steps`` at a time in one compiled ``lax.scan``, compilation excluded;
  ``--repeats`` timed runs), and of the same model written in Pyro (PyTorch, eager),
  trained by ``SVI`` with ``TraceGraph_ELBO`` (REINFORCE with a neural baseline per
  step), ``TraceEnum_ELBO`` (sequential enumeration of the guide's ``z_pres``) and
  ``RenyiELBO(alpha=0, num_particles=2)`` (IWAE(2), REINFORCE), in the same process on
  the same data (batch 64, Adam 1e-4; ``torch.set_num_threads`` = the CPU count). An
  epoch is ``num_train // 64`` steps (156 for the default 10,000 canvases): seconds per
  epoch = that times the mean seconds per step.
* ``train``: Figure 7 through ``ppl.compare``: every estimator's gradient variance and
  time on one minibatch (``--compare-samples`` estimates), then ``--train-steps``
  training steps of each from the same initialization and key (``train=``,
  ``train_data=``), with the count accuracy on 1,000 test and 1,000 validation
  canvases and the held-out ELBO every ``--eval-every`` steps (``train_metrics=``,
  off the clock); the plot is ``Comparison.plot_training``.
* ``long``: one estimator (``--long``) for ``--long-seconds`` (the 90 %-in-30-minutes
  target).

Run ``python benchmarks/air.py`` (all phases; about an hour on a quiet 2-core CPU);
``--quick`` for a smoke run; ``--phases timing`` etc. to run some.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import ROOT, machine_info, replace_section  # noqa: E402

import ppl  # noqa: E402
import ppl_zoo.air as air  # noqa: E402

PAGE = ROOT / "docs" / "zoo" / "air.md"
IMG = ROOT / "docs" / "img"
LABELS = {
    "reinforce": "REINFORCE + baseline",
    "enum": "ENUM",
    "mvd": "MVD",
    "hybrid": "MVD + ENUM (hybrid)",
    "iwae_reinforce": "IWAE(2) + REINFORCE",
    "iwae_mvd": "IWAE(2) + MVD",
    "rws": "RWS(10)",
}
PYRO_LOSSES = {
    "reinforce": "TraceGraph_ELBO",
    "enum": "TraceEnum_ELBO",
    "iwae_reinforce": "RenyiELBO(alpha=0, 2 particles)",
}
PAPER = {  # Table 2, seconds per epoch (genjax.vi, pyro); README's table, not ours
    "reinforce": (1.52, 12.28),
    "enum": (6.22, 122.93),
    "mvd": (1.74, None),
    "iwae_reinforce": (2.28, 22.17),
    "iwae_mvd": (3.74, None),
}
TARGETS = {"reinforce": 8.0, "enum": 20.0}


# ----------------------------------------------------------------------------- Pyro


def pyro_air(config):
    """The same AIR in Pyro: networks, spatial transformer, masks and priors of ppl_zoo.air."""
    import pyro
    import pyro.distributions as pdist
    import torch
    from pyro import poutine
    from torch import nn

    canvas, window = int(config["canvas_size"]), int(config["window_size"])
    z_what_size, hidden, steps = (
        int(config["z_what"]),
        int(config["lstm"]),
        int(config["max_objects"]),
    )
    where_loc = torch.tensor([float(config["scale_prior_loc"]), 0.0, 0.0])
    where_scale = torch.tensor([float(config["scale_prior_sd"]), 1.0, 1.0])
    pres_prior = float(config["pres_prior"])

    def interp(scale, shift, out_size, in_size):
        u = (2.0 * torch.arange(out_size) + 1.0) / out_size - 1.0
        v = scale[:, None] * u + shift[:, None]
        column = ((v + 1.0) * in_size - 1.0) / 2.0
        return torch.relu(1.0 - (column[..., None] - torch.arange(in_size)).abs())

    def window_to_image(z_where, windows):
        s, x, y = z_where.unbind(-1)
        rows, cols = interp(s, y, canvas, window), interp(s, x, canvas, window)
        return rows @ windows @ cols.transpose(-1, -2)

    def image_to_window(z_where, images):
        s, x, y = z_where.unbind(-1)
        rows = interp(1.0 / s, -y / s, window, canvas)
        cols = interp(1.0 / s, -x / s, window, canvas)
        return rows @ images @ cols.transpose(-1, -2)

    class Baseline(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(canvas**2, 32), nn.ReLU(), nn.Linear(32, 1))

        def forward(self, x):
            return 100.0 * self.net(x).squeeze(-1)

    class AIR(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = nn.Sequential(
                nn.Linear(z_what_size, int(config["decoder"])),
                nn.ReLU(),
                nn.Linear(int(config["decoder"]), window**2),
            )
            with torch.no_grad():
                self.decoder[-1].bias.fill_(-2.0)
            # the LSTM cell's matrices, the canvas's columns of the input one apart (as
            # ppl_zoo.air stores them), so no step slices them or pads their gradients
            cell = nn.LSTMCell(canvas**2 + 3 + z_what_size + 1, hidden)
            self.lstm = nn.ParameterDict(
                {
                    "w_canvas": nn.Parameter(cell.weight_ih[:, : canvas**2].detach().clone()),
                    "w_rest": nn.Parameter(cell.weight_ih[:, canvas**2 :].detach().clone()),
                    "w_hh": nn.Parameter(cell.weight_hh.detach().clone()),
                    "b": nn.Parameter((cell.bias_ih + cell.bias_hh).detach().clone()),
                }
            )
            self.predict = nn.Linear(hidden, 7)
            self.encoder = nn.Sequential(
                nn.Linear(window**2, int(config["encoder"])),
                nn.ReLU(),
                nn.Linear(int(config["encoder"]), 2 * z_what_size),
            )
            self.baselines = nn.ModuleList([Baseline() for _ in range(steps)])

        def model(self, x, use_baseline=False, enumerate_pres=False):
            pyro.module("decoder", self.decoder)
            n = x.shape[0]
            image = torch.zeros(n, canvas, canvas)
            pres = torch.ones(n)
            with pyro.plate("canvases", n):
                for t in range(steps):
                    with poutine.mask(mask=pres > 0):
                        z_pres = pyro.sample(
                            f"z_pres_{t}", pdist.Bernoulli(torch.full((n,), pres_prior))
                        )
                    pres = pres * z_pres
                    with poutine.mask(mask=pres > 0):
                        z_where = pyro.sample(
                            f"z_where_{t}",
                            pdist.Normal(where_loc.expand(n, 3), where_scale).to_event(1),
                        )
                        z_what = pyro.sample(
                            f"z_what_{t}",
                            pdist.Normal(torch.zeros(n, z_what_size), 1.0).to_event(1),
                        )
                    windows = torch.sigmoid(self.decoder(z_what)).view(n, window, window)
                    image = image + pres[:, None, None] * window_to_image(z_where, windows)
                pyro.sample("x", pdist.Normal(image.view(n, -1), 0.3).to_event(1), obs=x)

        def guide(self, x, use_baseline=False, enumerate_pres=False):
            pyro.module("lstm", self.lstm)
            pyro.module("predict", self.predict)
            pyro.module("encoder", self.encoder)
            n = x.shape[0]
            h = c = torch.zeros(n, hidden)
            z_where = torch.zeros(n, 3)
            z_what = torch.zeros(n, z_what_size)
            pres = torch.ones(n)
            images = x.view(n, canvas, canvas)
            # the LSTM as in ppl_zoo.air: the canvas's part of the gates once per canvas
            lstm = self.lstm
            projected = x @ lstm["w_canvas"].T + lstm["b"]
            with pyro.plate("canvases", n):
                for t in range(steps):
                    rest = torch.cat([z_where, z_what, pres[:, None]], -1)
                    gates = projected + rest @ lstm["w_rest"].T + h @ lstm["w_hh"].T
                    i, f, g, o = gates.chunk(4, -1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    out = self.predict(h)
                    p_pres = torch.sigmoid(out[:, 0] + 2.0)
                    loc = out[:, 1:4] + where_loc
                    scale = nn.functional.softplus(out[:, 4:7] - 2.0) + 1e-3
                    infer = {"enumerate": "sequential"} if enumerate_pres else {}
                    if use_baseline:
                        pyro.module(f"baseline_{t}", self.baselines[t])
                        infer = {
                            "baseline": {
                                "nn_baseline": self.baselines[t],
                                "nn_baseline_input": x,
                            }
                        }
                    with poutine.mask(mask=pres > 0):
                        z_pres = pyro.sample(f"z_pres_{t}", pdist.Bernoulli(p_pres), infer=infer)
                    pres = pres * z_pres
                    with poutine.mask(mask=pres > 0):
                        z_where = pyro.sample(f"z_where_{t}", pdist.Normal(loc, scale).to_event(1))
                        crop = image_to_window(z_where, images).view(n, -1)
                        what_loc, what_raw = self.encoder(crop).chunk(2, -1)
                        z_what = pyro.sample(
                            f"z_what_{t}",
                            pdist.Normal(
                                what_loc, nn.functional.softplus(what_raw) + 1e-3
                            ).to_event(1),
                        )

    return AIR()


def time_pyro(loss_name, images, config, steps, threads):
    """Seconds per SVI step (mean, std over ``steps`` after one warm-up step)."""
    import pyro
    import torch
    from pyro.infer import SVI, RenyiELBO, TraceEnum_ELBO, TraceGraph_ELBO
    from pyro.optim import Adam

    torch.set_num_threads(threads)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.manual_seed(0)
    net = pyro_air(config)
    if loss_name == "reinforce":
        loss, kwargs = TraceGraph_ELBO(), {"use_baseline": True}
    elif loss_name == "enum":
        loss, kwargs = TraceEnum_ELBO(max_plate_nesting=1), {"enumerate_pres": True}
    else:
        loss, kwargs = RenyiELBO(alpha=0.0, num_particles=2), {}
    svi = SVI(net.model, net.guide, Adam({"lr": float(config["learning_rate"])}), loss)
    batch = int(config["batch_size"])
    data = torch.as_tensor(images.reshape(images.shape[0], -1))
    times = []
    for step in range(steps + 1):
        x = data[(step * batch) % (data.shape[0] - batch) :][:batch]
        start = time.perf_counter()
        svi.step(x, **kwargs)
        if step > 0:
            times.append(time.perf_counter() - start)
    return float(np.mean(times)), float(np.std(times))


# ----------------------------------------------------------------------------- ppl


def time_ppl(estimator, images, config, steps, repeats):
    """Seconds per ``ppl.fit`` step (mean, std over ``repeats`` runs of ``steps`` steps)."""
    params = air.init_params(jax.random.key(0), air.Sizes.from_config(config))
    options = air.model_options(config)
    objective = air.batch_objective(
        air.make_objective(estimator, rws_particles=int(config["rws_particles"]), **options)
    )
    opt = air.config_optimizer(config)
    data = jax.numpy.asarray(images)
    run = dict(
        optimizer=opt,
        num_steps=steps,
        data=data,
        batch_size=int(config["batch_size"]),
        chunk_size=steps,
        progress=False,
    )
    start = time.perf_counter()
    jax.block_until_ready(ppl.fit(jax.random.key(1), objective, params, **run).params)
    first = time.perf_counter() - start
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(ppl.fit(jax.random.key(2 + repeat), objective, params, **run).params)
        times.append((time.perf_counter() - start) / steps)
    compile_seconds = first - steps * float(np.mean(times))
    return float(np.mean(times)), float(np.std(times)), compile_seconds


# ----------------------------------------------------------------------------- phases


def phase_timing(args, data, config, record):
    # PyTorch's thread count: the CPU count, unless one thread is faster here (on a
    # loaded machine OpenMP's busy-waiting can make 2 threads much slower); the faster
    # of the two on one TraceGraph_ELBO step is used for every Pyro row
    probe = {}
    if not args.no_pyro and args.torch_threads is None:
        for threads in sorted({1, os.cpu_count() or 1}):
            probe[threads] = time_pyro("reinforce", data.train.images, config, 1, threads)[0]
            print(f"pyro TraceGraph_ELBO with {threads} thread(s): {probe[threads]:.3f} s/step")
    threads = args.torch_threads or (min(probe, key=probe.get) if probe else 1)
    steps_per_epoch = int(config["num_train"]) // int(config["batch_size"])
    rows = {}
    for estimator in args.estimators:
        mean, std, compile_s = time_ppl(
            estimator, data.train.images, config, args.timing_steps, args.repeats
        )
        rows[estimator] = {"ppl_step": mean, "ppl_step_std": std, "ppl_compile": compile_s}
        print(f"ppl {estimator}: {mean:.4f} ± {std:.4f} s/step (compile {compile_s:.0f} s)")
        if estimator in PYRO_LOSSES and not args.no_pyro:
            p_mean, p_std = time_pyro(
                estimator, data.train.images, config, args.pyro_steps, threads
            )
            rows[estimator].update(pyro_step=p_mean, pyro_step_std=p_std)
            print(f"pyro {PYRO_LOSSES[estimator]}: {p_mean:.4f} ± {p_std:.4f} s/step")
    record[args.timing_key] = {
        "steps_per_epoch": steps_per_epoch,
        "timing_steps": args.timing_steps,
        "repeats": args.repeats,
        "pyro_steps": args.pyro_steps,
        "torch_threads": threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "torch_thread_probe": {str(k): v for k, v in probe.items()},
        "rows": rows,
    }
    return timing_table(record[args.timing_key])


def timing_table(timing):
    epoch = timing["steps_per_epoch"]
    lines = [
        f"Seconds per epoch ({epoch} steps of 64 canvases; mean ± std of the per-step time "
        f"times the steps per epoch), this CPU, one run; PyTorch with "
        f"{timing['torch_threads']} thread(s):",
        "",
        "| estimator | ppl (s/epoch) | Pyro (s/epoch) | Pyro loss | speed-up | target "
        "| paper genjax.vi | paper Pyro |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for estimator, row in timing["rows"].items():
        ppl_cell = f"{row['ppl_step'] * epoch:.1f} ± {row['ppl_step_std'] * epoch:.1f}"
        if "pyro_step" in row:
            pyro_cell = f"{row['pyro_step'] * epoch:.1f} ± {row['pyro_step_std'] * epoch:.1f}"
            speedup = row["pyro_step"] / row["ppl_step"]
            speed_cell = f"{speedup:.1f}x"
        else:
            pyro_cell = "not timed" if estimator == "rws" else "not expressible"
            speed_cell = "n/a"
        target = TARGETS.get(estimator)
        if target is None or "pyro_step" not in row:
            target_cell = ""
        else:
            target_cell = f"≥ {target:.0f}x: {'met' if speedup >= target else 'MISSED'}"
        paper = PAPER.get(estimator, (None, None))
        paper_cells = [f"{v:.2f}" if v is not None else "X" for v in paper]
        if estimator not in PAPER:
            paper_cells = ["", ""]
        lines.append(
            f"| {LABELS[estimator]} | {ppl_cell} | {pyro_cell} | "
            f"{PYRO_LOSSES.get(estimator, '')} | {speed_cell} | {target_cell} | "
            f"{paper_cells[0]} | {paper_cells[1]} |"
        )
    lines.append("")
    lines.append(
        "ppl compile time (excluded above), seconds: "
        + ", ".join(f"{LABELS[e]} {row['ppl_compile']:.0f}" for e, row in timing["rows"].items())
        + "."
    )
    return "\n".join(lines)


def _run_name(estimator, config):
    return f"{estimator}_residual" if config.get("residual") else estimator


def _label(name):
    if name.endswith("_residual"):
        return LABELS[name.removesuffix("_residual")] + ", DAIR guide"
    return LABELS[name]


def phase_train(args, data, config, record, estimators, seconds, key_name, eval_every):
    evaluator = air.Evaluator(data.test, config)
    validation = None if data.validation is None else air.Evaluator(data.validation, config)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = saved.get(key_name, {}).get("runs", {})  # a rerun of some estimators keeps others
    reruns = {_run_name(e, config) for e in estimators}
    for estimator in estimators:
        run_config = {
            **config,
            "estimator": estimator,
            "num_steps": 10**7,
            "eval_every": eval_every,
        }
        _, curve = air.train_air(
            jax.random.key(args.seed), data.train, evaluator, run_config, max_seconds=seconds,
            validation=validation,
        )  # fmt: skip
        runs[_run_name(estimator, config)] = {
            **{k: np.asarray(v).tolist() for k, v in curve.items()},
            "learning_rate": float(config["learning_rate"]),
            "residual": bool(config.get("residual", False)),
        }
        print(
            f"{estimator}: {curve['step'][-1]} steps in {curve['seconds'][-1]:.0f} s, "
            f"count accuracy {curve['count_accuracy'][-1]:.3f} (best "
            f"{np.max(curve['count_accuracy']):.3f}), held-out ELBO {curve['test_elbo'][-1]:.1f}"
        )
        record[key_name] = {
            "rerun": sorted(reruns),
            "seconds": seconds,
            "learning_rate": float(config["learning_rate"]),
            "eval_every": eval_every,
            "num_test": int(config["num_test"]),
            "runs": runs,
        }
        _save(args, record)
    return training_table(record[key_name])


def phase_compare(args, data, config, record):
    """Figure 7 through ``ppl.compare``: every estimator's gradient variance and cost on
    one minibatch, then ``--train-steps`` training steps each from the same
    initialization and key, with the count accuracy (test and validation canvases)
    and the held-out ELBO every ``--eval-every`` steps (off the clock)."""
    opts = air.model_options(config)
    variants = {
        LABELS[e]: air.batch_objective(
            air.make_objective(e, rws_particles=int(config["rws_particles"]), **opts)
        )
        for e in args.estimators
    }
    test = air.Evaluator(data.test, config)
    validation = air.Evaluator(data.validation, config)

    def metrics(params):
        values = test(params)
        return {
            "count accuracy (test)": values["count_accuracy"],
            "count accuracy (validation)": validation.accuracy(params),
            "held-out ELBO": values["test_elbo"],
        }

    params = air.init_params(jax.random.key(args.seed), air.Sizes.from_config(config))
    batch = int(config["batch_size"])
    reference = LABELS["enum"] if "enum" in args.estimators else None
    comparison = ppl.compare(
        None, variants, jax.random.key(args.seed), params,
        jax.numpy.asarray(data.train.images[:batch]), num_samples=args.compare_samples,
        reference=reference, timing_calls=5, train=args.train_steps,
        optimizer=air.config_optimizer(config), train_data=jax.numpy.asarray(data.train.images),
        train_batch_size=batch, train_metrics=metrics, train_eval_every=args.eval_every,
    )  # fmt: skip
    print(comparison)
    slim = _slim(comparison)
    record["train"] = {
        "learning_rate": float(config["learning_rate"]),
        "residual": bool(config["residual"]),
        "train_steps": args.train_steps,
        "eval_every": args.eval_every,
        "num_test": int(config["num_test"]),
        "comparison": slim,
    }
    _save(args, record)
    return compare_table(record["train"])


RB_LOG_WEIGHT = "REINFORCE, the ELBO as one log weight"
RB_COSTS = "REINFORCE, `ppl.objectives.elbo` (a cost per site)"


def phase_rao_blackwell(args, data, config, record):
    """What Rao-Blackwellization does on AIR, through ``ppl.compare``: REINFORCE at the
    ``z_pres`` sites (no baseline, to isolate it) with the ELBO returned as one log
    weight (every ``z_pres_t`` score multiplies all of it) and written with
    ``ppl.objectives.elbo`` (each site's log density a cost: ``z_pres_t``'s score
    multiplies only the terms that depend on it), against ENUM as the reference mean."""
    opts = air.model_options(config)
    steps = opts["num_steps"]
    arguments = (steps, opts["pres_prior"], tuple(opts["scale_prior"]), opts["residual"])
    reinforce = {f"z_pres_{t}": ppl.reinforce for t in range(steps)}

    @ppl.expectation
    def log_weight(params, x):
        trace = ppl.sim(air.guide, x, *arguments, params=params, strategies=reinforce)
        log_p = ppl.density(air.model, trace.choices, x, *arguments, params=params)
        return log_p - trace.log_density

    costs = ppl.objectives.elbo(air.model, air.guide, strategies=reinforce)
    per_site = ppl.expectation(lambda params, x: costs.fn(params, x, *arguments))
    variants = {
        LABELS["enum"]: air.batch_objective(air.make_objective("enum", **opts)),
        RB_LOG_WEIGHT: air.batch_objective(log_weight),
        RB_COSTS: air.batch_objective(per_site),
    }
    params = air.init_params(jax.random.key(args.seed), air.Sizes.from_config(config))
    batch = jax.numpy.asarray(data.train.images[: int(config["batch_size"])])
    comparison = ppl.compare(
        None, variants, jax.random.key(args.seed), params, batch,
        num_samples=args.compare_samples, reference=LABELS["enum"], timing_calls=5,
    )  # fmt: skip
    print(comparison)
    slim = _slim(comparison)
    record["rao_blackwell"] = {"residual": bool(config["residual"]), "comparison": slim}
    _save(args, record)
    return rao_blackwell_table(record["rao_blackwell"])


def rao_blackwell_table(section):
    comparison = ppl.comparison.Comparison.from_json(json.dumps(section["comparison"]))
    guide = "the DAIR guide" if section["residual"] else "AIR's guide"
    lines = [
        f"One minibatch of 64 canvases, {guide}, at the initial parameters; "
        f"{comparison.num_samples} gradient estimates each. Gradient variance: the total "
        "variance (trace of the covariance) over the model's and the guide's parameters, "
        "and the part of it in the guide's predictor (`z_pres`, `z_where`); bias z: the "
        "distance of the mean gradient from ENUM's in standard errors (threshold "
        f"{comparison.bias_threshold:.1f}):",
        "",
        "| estimator | gradient variance | of which the predictor | ÷ log weight's "
        "| time per gradient (ms) | bias z |",
        "|---|---|---|---|---|---|",
    ]
    base_total, _ = _variances(comparison.results[RB_LOG_WEIGHT])
    for label, r in comparison.results.items():
        total, predictor = _variances(r)
        bias = "reference" if label == comparison.reference_label else f"{r.bias_z:.2f}"
        lines.append(
            f"| {label} | {total:.3g} | {predictor:.3g} | {total / base_total:.3g} | "
            f"{1e3 * r.time_per_gradient:.0f} | {bias} |"
        )
    return "\n".join(lines)


def phase_analysis(args, data, config, record):
    """Which canvases the guide miscounts: ``--long`` trained ``--analysis-steps`` steps
    with AIR's guide and with the DAIR guide, the checkpoint chosen on validation; the
    confusion of true and inferred counts on the test canvases, and the accuracy on
    canvases whose two most overlapping digit windows share more or less than half of
    the smaller one (`ppl_zoo.air.window_overlap`, from the generator's draws)."""
    overlap = air.window_overlap(int(config["data_seed"]) + 1, int(config["num_test"]),
                                 int(config["max_objects"]))  # fmt: skip
    heavy = overlap > 0.5
    runs = {}
    for residual in (False, True):
        run_config = {**config, "estimator": args.long, "residual": residual,
                      "num_steps": args.analysis_steps, "eval_every": args.eval_every}  # fmt: skip
        test = air.Evaluator(data.test, run_config)
        validation = air.Evaluator(data.validation, run_config)
        params, curve = air.train_air(
            jax.random.key(args.seed), data.train, test, run_config, validation=validation
        )
        inferred = test.counts_of(params)
        hit = inferred == data.test.counts
        size = int(config["max_objects"]) + 1
        confusion = np.zeros((size, size), int)
        np.add.at(confusion, (data.test.counts, inferred), 1)
        runs[_run_name(args.long, run_config)] = {
            "selected_step": int(curve["selected_step"]),
            "accuracy": float(hit.mean()),
            "confusion": confusion.tolist(),
            "accuracy_overlap_above_half": float(hit[heavy].mean()),
            "accuracy_overlap_below_half": float(hit[~heavy].mean()),
            "misses_overlap_above_half": float(heavy[~hit].mean()) if (~hit).any() else 0.0,
        }
        print(runs)
    record["analysis"] = {
        "steps": args.analysis_steps,
        "learning_rate": float(config["learning_rate"]),
        "share_overlap_above_half": float(heavy.mean()),
        "runs": runs,
    }
    _save(args, record)
    return analysis_table(record["analysis"])


def analysis_table(section):
    lines = [
        f"{section['steps']} steps at learning rate {section['learning_rate']:g}, checkpoint "
        f"chosen on validation; {section['share_overlap_above_half']:.1%} of the test canvases "
        "have two digit windows overlapping by more than half:",
        "",
        "| run | chosen step | count accuracy | on canvases with overlap ≤ ½ | with overlap > ½ "
        "| misses with overlap > ½ "
        "| confusion: rows true count 0-3 (split by /), columns inferred |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in section["runs"].items():
        confusion = " / ".join(" ".join(str(v) for v in row) for row in run["confusion"])
        lines.append(
            f"| {_label(name)} | {run['selected_step']} | {run['accuracy']:.3f} | "
            f"{run['accuracy_overlap_below_half']:.3f} | {run['accuracy_overlap_above_half']:.3f} "
            f"| {run['misses_overlap_above_half']:.0%} | {confusion} |"
        )
    return "\n".join(lines)


def _slim(comparison) -> dict:
    """``comparison.to_dict()`` without the 3 M-coordinate mean gradients."""
    slim = comparison.to_dict()
    slim["reference"]["gradient"] = {}
    for item in slim["variants"]:
        item["mean_gradient"] = {}
    return slim


def _variances(result) -> tuple[float, float]:
    """A variant's gradient variance over the model's and guide's parameters (the
    REINFORCE baseline network's own fitting gradient left out), and the part of it in
    the guide's predictor (``z_pres``, ``z_where``)."""
    leaves = result.parameter_variances
    total = sum(v for k, v in leaves.items() if "['baseline']" not in k)
    return total, sum(v for k, v in leaves.items() if "['predict']" in k)


def compare_table(section):
    comparison = ppl.comparison.Comparison.from_json(json.dumps(section["comparison"]))
    guide = "the DAIR guide" if section["residual"] else "AIR's guide"
    lines = [
        f"Learning rate {section['learning_rate']:g}, {guide}, {section['train_steps']} steps "
        f"each (batch 64); count accuracy on {section['num_test']:,} held-out canvases (guide "
        f"at its modes) every {section['eval_every']} steps; the checkpoint is chosen by the "
        "count accuracy on the validation canvases. Gradient variance: the total variance "
        "(trace of the covariance) of one minibatch gradient over the model's and the "
        "guide's parameters (the REINFORCE baseline network's own gradient, which fits the "
        "baseline, left out), and the part of it in the guide's predictor (`z_pres`, "
        f"`z_where`), from {comparison.num_samples} estimates:",
        "",
        "| estimator | training time (s) | s/step | final count accuracy | best count accuracy "
        "| time to best (s) | count accuracy, checkpoint chosen on validation | final held-out "
        "ELBO | gradient variance | of which the predictor | time per gradient (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in comparison.results.items():
        ev = r.training.evaluations
        acc, val = ev["count accuracy (test)"], ev["count accuracy (validation)"]
        best, pick = int(np.argmax(acc)), int(np.argmax(val))
        secs = ev["seconds"][-1]
        model_guide, predictor = _variances(r)
        lines.append(
            f"| {label} | {secs:.0f} | {secs / max(ev['step'][-1], 1):.3f} | {acc[-1]:.3f} | "
            f"{acc[best]:.3f} | {ev['seconds'][best]:.0f} | **{acc[pick]:.3f}** | "
            f"{ev['held-out ELBO'][-1]:.1f} | {model_guide:.3g} | {predictor:.3g} | "
            f"{1e3 * r.time_per_gradient:.0f} |"
        )
    return "\n".join(lines)


def training_table(section):
    lines = [
        f"Learning rate {section['learning_rate']:g}; count accuracy on "
        f"{section.get('num_test', 1000):,} held-out canvases (guide at its modes) and the "
        "held-out ELBO per canvas (256 canvases, one sample):",
        "",
        "| estimator | training time (s) | steps | s/step | final count accuracy "
        "| best count accuracy | time to best (s) | final held-out ELBO "
        "| count accuracy, checkpoint chosen on validation | its time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in section["runs"].items():
        acc = np.asarray(run["count_accuracy"])
        best = int(np.argmax(acc))
        steps, secs = run["step"][-1], run["seconds"][-1]
        chosen = ["not recorded", ""]
        if "val_count_accuracy" in run:  # the first evaluation with the best validation score
            pick = int(np.argmax(run["val_count_accuracy"]))
            chosen = [f"**{acc[pick]:.3f}** (validation {run['val_count_accuracy'][pick]:.3f})",
                      f"{run['seconds'][pick]:.0f}"]  # fmt: skip
        lines.append(
            f"| {_label(name)} | {secs:.0f} | {steps} | {secs / max(steps, 1):.3f} | "
            f"{acc[-1]:.3f} | {acc[best]:.3f} | {run['seconds'][best]:.0f} | "
            f"{run['test_elbo'][-1]:.1f} | {chosen[0]} | {chosen[1]} |"
        )
    return "\n".join(lines)


def plot_training(section, path, title):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    accuracy, elbo = figure.subplots(1, 2)
    for i, (name, run) in enumerate(section["runs"].items()):
        accuracy.plot(run["seconds"], run["count_accuracy"], color=f"C{i}", label=_label(name))
        elbo.plot(run["seconds"], run["test_elbo"], color=f"C{i}", label=_label(name))
    accuracy.set(xlabel="training time (s)", ylabel="count accuracy (held out)", ylim=(0, 1))
    accuracy.axhline(0.9, color="grey", ls=":", lw=1)
    elbo.set(xlabel="training time (s)", ylabel="held-out ELBO per canvas")
    low = min(np.percentile(run["test_elbo"], 10) for run in section["runs"].values())
    elbo.set_ylim(bottom=low)
    accuracy.legend(fontsize=7, loc="upper left")
    figure.suptitle(title)
    figure.savefig(path, dpi=100)


def plot_compare(section, path):
    """Figure 7 by ``Comparison.plot_training``: objective against time and steps, count
    accuracy and held-out ELBO against training time."""
    ppl.comparison.Comparison.from_json(json.dumps(section["comparison"])).plot_training(path)


def _save(args, record):
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing.update(record)
    args.out.write_text(json.dumps(existing, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phases", nargs="+", default=["timing", "train", "long"])
    parser.add_argument("--estimators", nargs="+", default=list(air.ESTIMATORS))
    parser.add_argument("--timing-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pyro-steps", type=int, default=3)
    parser.add_argument("--no-pyro", action="store_true")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: probe 1, all")
    parser.add_argument(
        "--timing-key",
        default="timing",
        choices=[
            "timing",
            "timing_default_threads",
            "timing_loaded",
            "timing_targets",
            "timing_targets_default_threads",
        ],
        help="where the timing phase goes in the JSON (and its docs section, air_<key>)",
    )
    parser.add_argument("--train-steps", type=int, default=1000, help="of the train phase")
    parser.add_argument("--analysis-steps", type=int, default=1500)
    parser.add_argument(
        "--compare-samples", type=int, default=20, help="gradient estimates per estimator"
    )
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="of the train phase")
    parser.add_argument("--long", default="enum", help="estimator of the long run")
    parser.add_argument("--long-seconds", type=float, default=1800.0)
    parser.add_argument("--long-learning-rate", type=float, default=None)
    parser.add_argument(
        "--residual", action="store_true", help="train and long phases: the DAIR guide"
    )
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "air.json")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    config = {**air.DEFAULT_CONFIG, "num_train": args.num_train}  # Adam 1e-4 for timing
    if args.quick:
        config.update(num_train=256, num_test=64, canvas_size=16, window_size=6, z_what=4,
                      lstm=8, decoder=8, encoder=8, rws_particles=2)  # fmt: skip
        args.timing_steps, args.repeats, args.pyro_steps = 2, 1, 1
        args.train_steps, args.long_seconds, args.eval_every = 4, 2.0, 2
        args.compare_samples, args.analysis_steps = 2, 4
        config["num_validation"] = 64
    for estimator in [*args.estimators, args.long]:
        if estimator not in air.ESTIMATORS:
            parser.error(f"unknown estimator {estimator!r} (choose from {air.ESTIMATORS}).")
    data = air.load_data(config, None)
    record = {"machine": machine_info(), "config": config}
    if "timing" in args.phases:
        table = phase_timing(args, data, config, record)
        print(table)
        _save(args, record)
        if not args.no_docs:
            replace_section(PAGE, f"air_{args.timing_key}", table)
    if "train" in args.phases:
        train_config = {**config, "learning_rate": args.learning_rate, "residual": args.residual}
        table = phase_compare(args, data, train_config, record)
        print(table)
        if not args.no_docs:
            plot_compare(record["train"], IMG / "air_training.png")
            replace_section(PAGE, "air_training", table)
    if "long" in args.phases:
        long_config = {**config, "residual": args.residual}
        if args.long_learning_rate is not None:
            long_config["learning_rate"] = args.long_learning_rate
        table = phase_train(
            args, data, long_config, record, [args.long], args.long_seconds, "long",
            5 * args.eval_every,
        )  # fmt: skip
        print(table)
        if not args.no_docs:
            names = ", ".join(_label(e) for e in record["long"]["runs"])
            plot_training(record["long"], IMG / "air_long.png", f"AIR, long runs: {names}")
            replace_section(PAGE, "air_long", table)
    if "rao_blackwell" in args.phases:
        table = phase_rao_blackwell(args, data, {**config, "residual": args.residual}, record)
        print(table)
        if not args.no_docs:
            replace_section(PAGE, "air_rao_blackwell", table)
    if "analysis" in args.phases:
        analysis_config = {**config, "learning_rate": args.long_learning_rate or 1e-3}
        table = phase_analysis(args, data, analysis_config, record)
        print(table)
        if not args.no_docs:
            replace_section(PAGE, "air_analysis", table)
    if "docs" in args.phases:  # tables and plots again from the JSON (partial runs too)
        write_docs(json.loads(args.out.read_text()))
    return record


def write_docs(record):
    """Every section and plot of the docs page that ``record`` has data for."""
    if "timing" in record:
        replace_section(PAGE, "air_timing", timing_table(record["timing"]))
    if "timing_default_threads" in record:  # both systems on every core (their defaults)
        replace_section(
            PAGE, "air_timing_default_threads", timing_table(record["timing_default_threads"])
        )
    for key in ("timing_targets", "timing_targets_default_threads"):  # the target rows alone
        if key in record:
            replace_section(PAGE, f"air_{key}", timing_table(record[key]))
    if "timing_loaded" in record:  # an earlier run, multi-threaded XLA on a loaded machine
        replace_section(PAGE, "air_timing_loaded", timing_table(record["timing_loaded"]))
    if "train" in record:
        plot_compare(record["train"], IMG / "air_training.png")
        replace_section(PAGE, "air_training", compare_table(record["train"]))
    if "analysis" in record:
        replace_section(PAGE, "air_analysis", analysis_table(record["analysis"]))
    if "rao_blackwell" in record:
        replace_section(PAGE, "air_rao_blackwell", rao_blackwell_table(record["rao_blackwell"]))
    if "long" in record:
        names = ", ".join(_label(e) for e in record["long"]["runs"])
        plot_training(record["long"], IMG / "air_long.png", f"AIR, long runs: {names}")
        replace_section(PAGE, "air_long", training_table(record["long"]))


if __name__ == "__main__":
    main()
