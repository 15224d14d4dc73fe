"""Continuation strategies in lanes and loops: vectorized against unrolled by hand.

Two programs, each a ``jax.jit``-compiled gradient, timed in one process:

* **IWAE(K) on a sigmoid belief net** (the 64-8-4 network, fixed random parameters and
  a batch of 32 binarized digits of ``benchmarks/discrete_estimators.py``): the
  per-digit bound ``log (1/K) Σ_k w_k``, its ``K`` particles drawn with
  ``ppl.particles`` (*vectorized*: the continuation sites are estimated lane by lane)
  or with a Python loop over ``K`` copies of the particle (*unrolled*, the only way
  before), with ``mvd`` or ``enum`` at both discrete sites. Also the gradient variance
  of IWAE(K) + ``mvd`` against VIMCO (IWAE(K) with REINFORCE and leave-one-out
  baselines, Mnih & Rezende 2016), normalized by time.
* **A switching model in ``lax.scan``**: ``T`` steps, a Bernoulli regime ``z_t`` per
  step whose probability depends on ``z_{t-1}``, Normal observations with a
  regime-dependent mean; the objective is the ELBO of a guide that is a learnable
  Markov chain. ``mvd`` and ``enum`` at the regime site inside ``lax.scan``
  (vectorized suffix runs) against the same program unrolled with a Python loop
  (where that still compiles in reasonable time), and against
  ``baseline(reinforce, b)`` inside the scan.
* **Against GenJAX 1.0** (``--only genjax``): B vmapped Bernoulli lanes with ``enum`` or
  ``mvd`` and a ``logsumexp`` after them, ppl and GenJAX's ``flip_enum``/``flip_mvd``
  under ``modular_vmap`` timed in turns in one run: GenJAX (Python >= 3.12) in its own
  interpreter (``--genjax``), driven through ``_genjax_worker.py``; without one, only
  ppl's side runs. Also ppl alone on Categorical, Poisson, Geometric and
  ``leave_one_out(4)`` lanes, and both libraries' gradient means against the exact
  gradient. Its results go under their own key of the JSON (``--json-key``), and with
  ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` set both processes run under that setting.

Each configuration reports the compile time (tracing, ADEV's transformation, lowering
and XLA compilation: ``jit(...).lower(...).compile()``) and the run time, the fastest of
``--repeats`` calls after a warm-up call (the median is in the JSON). Prints a Markdown
table and the verdicts on the issue's targets, writes the JSON and the plot, and with
``--docs`` the section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

import ppl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import discrete_estimators as sbn  # noqa: E402
from _common import PAGE, ROOT, machine_info, replace_section  # noqa: E402
from _jax_timing import call_keys, compile_stages, configure_dispatch, time_calls  # noqa: E402

configure_dispatch()  # $JAX_CPU_ENABLE_ASYNC_DISPATCH, before the first computation (MEANS)

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = SCRIPT_DIR / "continuations.json"
DEFAULT_PLOT = SCRIPT_DIR.parent / "docs" / "img" / "continuations.png"
SECTION = "continuations"
sg = jax.lax.stop_gradient

# targets of the issue
SPEEDUP_TARGET = 5.0  # vectorized at K = 16: at least 5x faster, and 5x less compile time
VARIANCE_TARGET = 10.0  # IWAE(K)+mvd: work-normalized variance 10x below VIMCO
SCAN_SLOWDOWN_TARGET = 2.0  # scan within 2x of unrolled at T = 10


# ------------------------------------------------------------------------ helpers


def timed(fn: Callable, args: tuple, repeats: int) -> dict:
    """Compile time and median run time of ``jax.jit(fn)(*args)``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    # the fastest call: the machine is shared, and other jobs only ever add time
    return {
        "compile_s": compile_s,
        "run_ms": 1e3 * float(np.min(times)),
        "median_ms": 1e3 * float(np.median(times)),
        "compiled": compiled,
    }


def timing_row(result: dict, **fields) -> dict:
    """A row of the table: ``fields`` and the timings of `timed`."""
    times = {k: result[k] for k in ("compile_s", "run_ms", "median_ms")}
    return {**fields, **times}


def total_variance(compiled, key, args: tuple, draws: int) -> float:
    """Trace of the covariance of one gradient, from ``draws`` independent calls."""
    rows = []
    for k in jax.random.split(key, draws):
        grads = compiled(k, *args)
        rows.append(np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)]))
    return float(np.sum(np.var(np.stack(rows), axis=0, ddof=1)))


# ------------------------------------------------------------------- IWAE on an SBN


def particle(params, x, strategy):
    """One particle's ``log w = log p(x, h1, h2) - log q(h1, h2 | x)`` (and ``log q``)."""
    q1 = dist.Bernoulli(logits=sbn.q_h1_logits(params, x))
    h1 = ppl.sample(q1, strategy, name="h1")
    q2 = dist.Bernoulli(logits=sbn.q_h2_logits(params, h1))
    h2 = ppl.sample(q2, strategy, name="h2")
    log_w = sbn.local_terms(params, x, h1, q1.logits) + sbn.tail_terms(params, h1, h2, q2.logits)
    log_q = sbn.log_bernoulli(h1, q1.logits) + sbn.log_bernoulli(h2, q2.logits)
    return log_w, log_q


def iwae_gradient(strategy, num_particles: int, vectorized: bool) -> Callable:
    """``(key, params, batch) -> grads`` of the batch's mean IWAE(K) bound."""

    @ppl.expectation
    def bound(params, x):
        if vectorized:
            log_w, _ = ppl.particles(lambda: particle(params, x, strategy), num_particles)()
        else:
            log_w = jnp.stack([particle(params, x, strategy)[0] for _ in range(num_particles)])
        return logsumexp(log_w) - math.log(num_particles)

    return _batch_gradient(bound)


def vimco_gradient(num_particles: int) -> Callable:
    """VIMCO: the sites drawn without estimator, leave-one-out scores added by hand."""
    k = num_particles

    @ppl.expectation
    def bound(params, x):
        log_w, log_q = ppl.particles(lambda: particle(params, x, ppl.detached), k)()
        value = logsumexp(log_w) - math.log(k)
        others = (jnp.sum(log_w) - log_w) / (k - 1)
        replaced = log_w[None, :] * (1 - jnp.eye(k)) + jnp.diag(others)
        leave_out = logsumexp(replaced, axis=1) - math.log(k)
        return value + jnp.sum(sg(value - leave_out) * (log_q - sg(log_q)))

    return _batch_gradient(bound)


def _batch_gradient(bound) -> Callable:
    def gradient(key, params, batch):
        keys = jax.random.split(key, batch.shape[0])

        def mean(params):
            return jnp.mean(jax.vmap(bound, (0, None, 0))(keys, params, batch))

        return jax.grad(mean)(params)

    return gradient


def run_iwae(args) -> list[dict]:
    params = sbn.init_params(jax.random.key(0))
    batch = sbn.load_batch(args.batch, seed=0)
    key = jax.random.key(1)
    rows = []
    for label, strategy in (("mvd", ppl.mvd), ("enum", ppl.enum)):
        for k in args.particles:
            if label == "enum" and k > args.max_enum_particles:
                continue
            for vectorized in (True, False):
                limit = args.max_unrolled_mvd if label == "mvd" else args.max_unrolled_enum
                if not vectorized and k > limit:
                    continue
                fn = iwae_gradient(strategy, k, vectorized)
                result = timed(fn, (key, params, batch), args.repeats)
                version = "vectorized" if vectorized else "unrolled"
                row = timing_row(result, program="iwae", strategy=label, K=k, version=version)
                rows.append(row)
                print(json.dumps(row), flush=True)
    for k in args.variance_particles:
        for label, fn in (("mvd", iwae_gradient(ppl.mvd, k, True)), ("vimco", vimco_gradient(k))):
            result = timed(fn, (key, params, batch), args.repeats)
            variance = total_variance(result["compiled"], key, (params, batch), args.draws)
            row = {
                "program": "iwae-variance",
                "strategy": label,
                "K": k,
                "run_ms": result["run_ms"],
                "total_variance": variance,
                "variance_x_time": variance * result["run_ms"] / 1e3,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# ---------------------------------------------------------------- switching model

MEANS = jnp.array([-1.0, 1.0])


def switching_data(steps: int) -> jax.Array:
    """Observations of a two-regime chain that flips with probability 0.2."""
    key_z, key_y = jax.random.split(jax.random.key(2))
    flips = jax.random.bernoulli(key_z, 0.2, (steps,)).astype(jnp.int32)
    regimes = jnp.cumsum(flips) % 2
    return MEANS[regimes] + jax.random.normal(key_y, (steps,))


def switching_step(theta, previous, y, strategy):
    """One step: ``z_t ~ q(z_t | z_{t-1})`` and its ELBO term."""
    q_logit = theta[0] + theta[1] * previous + theta[2] * y
    z = ppl.sample(dist.Bernoulli(logits=q_logit), strategy, name="z")
    p_logit = jnp.where(previous > 0, 1.4, -1.4)  # the model's chain stays 80% of the time
    term = (
        sbn.log_bernoulli(z[None] * 1.0, p_logit[None])
        + dist.Normal(MEANS[z], 1.0).log_prob(y)
        - sbn.log_bernoulli(z[None] * 1.0, q_logit[None])
    )
    return z * 1.0, term


def switching_gradient(strategy, unrolled: bool) -> Callable:
    @ppl.expectation
    def elbo(theta, ys):
        if unrolled:
            previous, total = 0.0, 0.0
            for t in range(ys.shape[0]):
                previous, term = switching_step(theta, previous, ys[t], strategy)
                total = total + term
            return total

        def step(previous, y):
            return switching_step(theta, previous, y, strategy)

        _, terms = jax.lax.scan(step, 0.0, ys)
        return jnp.sum(terms)

    def gradient(key, theta, ys):
        return elbo.grad_estimate(key, theta, ys)

    return gradient


def run_scan(args) -> list[dict]:
    theta = jnp.array([-0.5, 1.2, 0.8])
    key = jax.random.key(3)
    rows = []
    for steps in args.steps:
        ys = switching_data(steps)
        configs = [
            ("mvd", ppl.mvd, False),
            ("enum", ppl.enum, False),
            ("reinforce+baseline", ppl.baseline(ppl.reinforce, 0.0), False),
        ]
        if steps <= args.max_unrolled_steps_mvd:
            configs.append(("mvd", ppl.mvd, True))
        if steps <= args.max_unrolled_steps_enum:
            configs.append(("enum", ppl.enum, True))
        for label, strategy, unrolled in configs:
            fn = switching_gradient(strategy, unrolled)
            result = timed(fn, (key, theta, ys), args.repeats)
            version = "unrolled" if unrolled else "scan"
            row = timing_row(result, program="scan", strategy=label, T=steps, version=version)
            if steps in args.variance_steps and not unrolled:
                variance = total_variance(result["compiled"], key, (theta, ys), args.draws)
                row["total_variance"] = variance
                row["variance_x_time"] = variance * result["run_ms"] / 1e3
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# --------------------------------------------------------------- against GenJAX 1.0

DEFAULT_GENJAX_PYTHON = Path("/work/genjax-venv/bin/python")
DEFAULT_GENJAX_PLOT = (
    SCRIPT_DIR.parent / "docs" / "img" / "continuations_genjax.png"
)  # KEY = genjax
LANE_THETA = (0.3, -0.7)
CATEGORIES = jnp.arange(4.0)


class LaneFamily(NamedTuple):
    """A lane's distribution given ``theta`` and the lane's ``u_b``, and its values.

    The lane's cost is ``-(x_b / scale - y_b)^2``; ``support`` is where the exact
    gradient sums (all of it, or a truncation whose missing mass is reported).
    """

    distribution: Callable
    scale: float
    support: np.ndarray


LANE_FAMILIES = {
    "bernoulli": LaneFamily(
        lambda theta, u_b: dist.Bernoulli(logits=theta[0] + theta[1] * u_b), 1.0, np.arange(2)
    ),
    "categorical": LaneFamily(
        lambda theta, u_b: dist.Categorical(
            logits=theta[0] * CATEGORIES / 3 + theta[1] * u_b * (CATEGORIES - 1.5)
        ),
        3.0,
        np.arange(4),
    ),
    "poisson": LaneFamily(
        lambda theta, u_b: dist.Poisson(jnp.exp(theta[0] + theta[1] * u_b)), 3.0, np.arange(30)
    ),
    "geometric": LaneFamily(
        lambda theta, u_b: dist.Geometric(logits=theta[0] + theta[1] * u_b), 2.0, np.arange(40)
    ),
}
LANE_STRATEGIES = {"enum": ppl.enum, "mvd": ppl.mvd, "leave_one_out(4)": ppl.leave_one_out(4)}
# the rows GenJAX 1.0 has an estimator for, then the ones only ppl covers
GENJAX_CASES = (("bernoulli", "enum"), ("bernoulli", "mvd"))
COVERAGE_CASES = (
    ("categorical", "enum"),
    ("poisson", "mvd"),
    ("geometric", "mvd"),
    ("bernoulli", "leave_one_out(4)"),
)


def lane_data(lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """The lanes' ``u_b`` (evenly spaced in [-1, 1]) and targets ``y_b`` (uniform)."""
    u = np.linspace(-1.0, 1.0, lanes, dtype=np.float32)
    y = np.asarray(jax.random.uniform(jax.random.key(5), (lanes,)), np.float32)
    return u, y


def lane_gradient(family: str, strategy: str, u: np.ndarray, y: np.ndarray) -> Callable:
    """``(key, theta) -> grad`` of ``E[logsumexp_b -(x_b / scale - y_b)^2]``, lanes by vmap."""
    lane_family, lane_strategy = LANE_FAMILIES[family], LANE_STRATEGIES[strategy]

    @ppl.expectation
    def objective(theta):
        def lane(u_b, y_b):
            x = ppl.sample(lane_family.distribution(theta, u_b), lane_strategy, name="x")
            return -((x / lane_family.scale - y_b) ** 2)

        return logsumexp(jax.vmap(lane)(u, y))

    def gradient(key, theta):
        (grad,) = objective.grad_estimate(key, theta)
        return grad

    return gradient


def exact_lane_gradient(family: str, theta, u, y) -> tuple[np.ndarray, float]:
    """The gradient by summing over every joint value of the lanes (and the mass left out)."""
    lane_family = LANE_FAMILIES[family]
    grid = np.stack(np.meshgrid(*[lane_family.support] * len(u), indexing="ij"), -1)
    grid = jnp.asarray(grid.reshape(-1, len(u)))

    def expected(theta):
        log_p = sum(
            lane_family.distribution(theta, u_b).log_prob(grid[:, b]) for b, u_b in enumerate(u)
        )
        values = logsumexp(-((grid / lane_family.scale - y) ** 2), axis=1)
        return jnp.sum(jnp.exp(log_p) * values), jnp.sum(jnp.exp(log_p))

    grad, mass = jax.grad(expected, has_aux=True)(jnp.asarray(theta))
    return np.asarray(grad), float(1.0 - mass)


class GenJAXWorker:
    """GenJAX 1.0 in its own Python (``_genjax_worker.py``), answering over pipes.

    It inherits this process's environment (``XLA_FLAGS``, the CPUs it may use) and
    runs on the same JAX backend.
    """

    def __init__(self, python: Path):
        env = {**os.environ, "JAX_PLATFORMS": jax.default_backend()}
        command = [str(python), str(SCRIPT_DIR / "_genjax_worker.py")]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def request(self, op: str, **fields) -> dict:
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the GenJAX worker exited (code {self.process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the GenJAX worker failed on {op!r}:\n{answer['error']}")
        return answer

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)


def _time_rounds(ours, theta, worker, request: dict | None, args) -> tuple[list, list, list]:
    """``--lane-rounds`` rounds of ``--lane-calls`` calls of ppl and, if ``request``, GenJAX.

    The two alternate within each round (which goes first alternates too) on the same
    keys; returns ppl's and GenJAX's milliseconds per call and each round's ratio of
    medians (GenJAX / ppl).
    """
    ppl_times, their_times, ratios = [], [], []
    for round_ in range(args.lane_rounds):
        seed = round_ * args.lane_calls
        mine, theirs = [], []
        for side in ("ppl", "genjax") if round_ % 2 == 0 else ("genjax", "ppl"):
            if side == "ppl":
                mine = time_calls(ours, call_keys(seed, args.lane_calls), theta)
            elif request:
                answer = worker.request("time", seed=seed, calls=args.lane_calls, **request)
                theirs = answer["times_ms"]
        ppl_times += mine
        their_times += theirs
        if theirs:
            ratios.append(float(np.median(theirs) / np.median(mine)))
    return ppl_times, their_times, ratios


def _timing_fields(info: dict, times: list[float]) -> dict:
    fields = ("compile_s", "trace_s", "lower_s", "xla_s", "equations", "hlo_lines")
    return {
        **{k: info[k] for k in fields},
        "run_ms": float(np.median(times)),
        "min_ms": float(np.min(times)),
        "calls": len(times),
    }


def _draw_stats(draws: np.ndarray, exact: np.ndarray) -> dict:
    """Mean, standard error and largest ``|z|`` of gradient draws against ``exact``."""
    mean = draws.mean(axis=0)
    stderr = draws.std(axis=0, ddof=1) / math.sqrt(draws.shape[0])
    return {
        "mean": mean.tolist(),
        "stderr": stderr.tolist(),
        "max_abs_z": float(np.max(np.abs(mean - exact) / stderr)),
        "total_variance": float(np.sum(draws.var(axis=0, ddof=1))),
    }


def run_genjax(args) -> dict:
    """ppl against GenJAX per lane count (interleaved), ppl-only coverage, gradient checks."""
    theta = jnp.asarray(LANE_THETA, jnp.float32)
    worker = GenJAXWorker(args.genjax) if args.genjax else None
    rows, checks, compiled = [], [], {}

    def compile_both(family, strategy, lanes):
        u, y = lane_data(lanes)
        fn = lane_gradient(family, strategy, u, y)
        compiled[family, strategy, lanes], info = compile_stages(fn, (jax.random.key(0), theta))
        jax.block_until_ready(compiled[family, strategy, lanes](jax.random.key(0), theta))
        if worker is None or (family, strategy) not in GENJAX_CASES:
            return info, None
        data = {"u": u.tolist(), "y": y.tolist(), "theta": list(LANE_THETA)}
        return info, worker.request("compile", strategy=strategy, **data)

    with worker or contextlib.nullcontext():
        genjax_info = worker.request("info") if worker else None
        for lanes in args.lanes:
            for family, strategy in GENJAX_CASES + (() if args.no_coverage else COVERAGE_CASES):
                info, their_info = compile_both(family, strategy, lanes)
                request = their_info and {"strategy": strategy, "lanes": lanes}
                ours = compiled[family, strategy, lanes]
                mine, theirs, ratios = _time_rounds(ours, theta, worker, request, args)
                base = {"program": "lanes", "family": family, "strategy": strategy, "B": lanes}
                rows.append({**base, "library": "ppl", **_timing_fields(info, mine)})
                print(json.dumps(rows[-1]), flush=True)
                if their_info:
                    rows.append({**base, "library": "genjax", **_timing_fields(their_info, theirs),
                                 "round_ratios": ratios})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
        for lanes in args.check_lanes:
            first = lanes == min(args.check_lanes)
            coverage = COVERAGE_CASES if first and not args.no_coverage else ()
            for family, strategy in GENJAX_CASES + coverage:
                if (family, strategy, lanes) not in compiled:
                    compile_both(family, strategy, lanes)
                exact, missing = exact_lane_gradient(family, theta, *lane_data(lanes))
                keys = jax.random.split(jax.random.key(args.lane_seed), args.lane_draws)
                ours = compiled[family, strategy, lanes]
                draws = np.stack([np.asarray(ours(key, theta)) for key in keys])
                check = {"family": family, "strategy": strategy, "B": lanes, "draws": len(keys),
                         "exact": exact.tolist(), "missing_mass": missing,
                         "ppl": _draw_stats(draws, exact)}  # fmt: skip
                if worker and (family, strategy) in GENJAX_CASES:
                    request = {"strategy": strategy, "lanes": lanes, "seed": args.lane_seed}
                    answer = worker.request("draws", draws=args.lane_draws, **request)
                    check["genjax"] = _draw_stats(np.asarray(answer["gradients"]), exact)
                checks.append(check)
                print(json.dumps(check), flush=True)
    info = machine_info(
        ppl_source=str(Path(ppl.__file__).resolve().parent),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        async_dispatch=configure_dispatch(),
        cpus=len(os.sched_getaffinity(0)),
    )
    return {"machine": info, "genjax_machine": genjax_info, "rows": rows, "checks": checks}


def genjax_verdicts(result: dict) -> list[str]:
    """The issue's GenJAX targets, each met or missed, from `run_genjax`'s result."""
    rows, checks, lines = result["rows"], result["checks"], []
    for theirs in [r for r in rows if r["library"] == "genjax"]:
        match = {k: theirs[k] for k in ("family", "strategy", "B")}
        ratio = theirs["run_ms"] / _find(rows, library="ppl", **match)["run_ms"]
        low, high = min(theirs["round_ratios"]), max(theirs["round_ratios"])
        lines.append(
            f"* {theirs['strategy']}, B = {theirs['B']}, *ppl at least as fast as GenJAX*: "
            f"GenJAX's median time is {ratio:.2f}x ppl's (rounds {low:.2f}-{high:.2f}) — "
            + ("**met**." if ratio >= 1 else "**missed**.")
        )
    covered = [c for c in checks if (c["family"], c["strategy"]) in COVERAGE_CASES]
    timed = sorted({r["B"] for r in rows if (r["family"], r["strategy"]) in COVERAGE_CASES})
    if timed:
        worst = max((c["ppl"]["max_abs_z"] for c in covered), default=math.inf)
        lines.append(
            "* *ppl covers Categorical, Poisson, Geometric and leave_one_out too*: "
            + ", ".join(f"{f} + {s}" for f, s in COVERAGE_CASES)
            + f" run at B = {', '.join(map(str, timed))} and match the exact gradient at "
            f"B = {', '.join(str(c['B']) for c in covered[:1])} (largest |z| {worst:.1f}) — "
            + ("**met**." if len(covered) == len(COVERAGE_CASES) and worst < 4 else "**missed**.")
        )
    for library in ("ppl", "genjax"):
        zs = [c[library]["max_abs_z"] for c in checks if library in c]
        if zs:
            lines.append(
                f"* {'GenJAX' if library == 'genjax' else 'ppl'}: gradient means against the "
                f"exact gradient, largest |z| {max(zs):.1f} over {len(zs)} checks — "
                + ("unbiased within 4 standard errors." if max(zs) < 4 else "**off**.")
            )
    return lines


def genjax_table(result: dict) -> str:
    """Markdown tables: the timings side by side, then the gradient checks."""
    rows = result["rows"]
    lines = [
        "| family | strategy | B | ppl compile (s) | GenJAX compile (s) | ppl run (ms) "
        "| GenJAX run (ms) | GenJAX / ppl | jaxpr equations ppl / GenJAX |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ours in [r for r in rows if r["library"] == "ppl"]:
        match = {k: ours[k] for k in ("family", "strategy", "B")}
        theirs = _find(rows, library="genjax", **match)
        if theirs:
            cells = [f"{theirs['compile_s']:.2f}", f"{theirs['run_ms']:.3f}",
                     f"{theirs['run_ms'] / ours['run_ms']:.2f}",
                     f"{ours['equations']} / {theirs['equations']}"]  # fmt: skip
        else:
            cells = ["", "", "", str(ours["equations"])]
        lines.append(
            f"| {ours['family']} | {ours['strategy']} | {ours['B']} | {ours['compile_s']:.2f} "
            f"| {cells[0]} | {ours['run_ms']:.3f} | {cells[1]} | {cells[2]} | {cells[3]} |"
        )
    if not result["checks"]:
        return "\n".join(lines)
    lines += [
        "",
        "| family | strategy | B | exact gradient | library | mean ± s.e. (draws) | max \\|z\\| "
        "| total variance |",
        "|---|---|---:|---|---|---|---:|---:|",
    ]
    for c in result["checks"]:
        exact = ", ".join(f"{g:.4f}" for g in c["exact"])
        for library in ("ppl", "genjax"):
            if library not in c:
                continue
            stats = c[library]
            mean = ", ".join(f"{m:.4f} ± {s:.1e}" for m, s in zip(stats["mean"], stats["stderr"]))
            lines.append(
                f"| {c['family']} | {c['strategy']} | {c['B']} | {exact} "
                f"| {'GenJAX' if library == 'genjax' else 'ppl'} | {mean} ({c['draws']}) "
                f"| {stats['max_abs_z']:.1f} | {stats['total_variance']:.3g} |"
            )
    return "\n".join(lines)


def genjax_plot(result: dict, path: Path) -> None:
    """Run time and compile time against the lane count, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = result["rows"]
    cases = sorted({(r["library"], r["family"], r["strategy"]) for r in rows})
    for library, family, strategy in cases:
        sel = [r for r in rows if (r["library"], r["family"], r["strategy"]) ==
               (library, family, strategy)]  # fmt: skip
        ours = library == "ppl"
        gen_case = (family, strategy) in GENJAX_CASES
        style = "-" if ours and gen_case else ("--" if not ours else ":")
        label = f"{'ppl' if ours else 'GenJAX'} {family} {strategy}"
        for ax, field in zip(axes, ("run_ms", "compile_s")):
            ax.plot([r["B"] for r in sel], [r[field] for r in sel], style,
                    marker="o" if ours else "s", label=label)  # fmt: skip
    titles = ("gradient run time (median)", "compile time (trace, lower, XLA)")
    for ax, title, ylabel in zip(axes, titles, ("ms per gradient", "s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("lanes B")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


GENJAX_RERUN = (
    "The comparison above rerun for GenJAX's cases only, with "
    "`JAX_CPU_ENABLE_ASYNC_DISPATCH=false` in the environment: `benchmarks/_jax_timing.py` "
    "applies it in both processes before their first computation, so JAX's CPU client "
    "runs every call inline in the calling thread (by default it may hand a call to "
    "another thread, which waits for that thread to be scheduled)."
)


def genjax_description(result: dict) -> str:
    """What the GenJAX comparison measures, with the run's sizes."""
    args = result["args"]
    draws = int(args.get("lane_draws", 0))
    return (
        "The same program in ppl and in GenJAX 1.0's ADEV (`genjax.adev`), one gradient each, "
        "side by side in one script run: B lanes (`jax.vmap` in ppl, `modular_vmap` in "
        "GenJAX); lane b draws x_b ~ Bernoulli(logits θ₀ + θ₁ u_b), u_b evenly spaced in "
        "[-1, 1], with `ppl.enum` or `ppl.mvd` (GenJAX: `flip_enum`, `flip_mvd` on "
        "sigmoid(logits)) and costs -(x_b - y_b)², y_b fixed uniform draws; the objective is "
        "the logsumexp of the B costs, the gradient is with respect to θ = "
        f"{tuple(LANE_THETA)}, and each library's gradient function is compiled with "
        "`jax.jit` (GenJAX: `seed(objective.grad_estimate)`). GenJAX runs in its own Python "
        "(`benchmarks/_genjax_worker.py`, a worker process with the same environment and "
        "settings). For each B and strategy both compile (tracing with the library's "
        "transformation, lowering and XLA: *compile*), make one call, then alternate for "
        f"{args.get('lane_rounds')} rounds of {args.get('lane_calls')} calls on the same keys "
        "(which library goes first alternates too); *run* is the median call, and the ratio's "
        "range over the rounds shows the shared machine's spread. The ppl-only rows are the "
        "same program with Categorical lanes (4 values, `enum`), Poisson and Geometric lanes "
        "(`mvd`) and Bernoulli lanes with `leave_one_out(4)`; their lane cost is "
        "-(x_b / s - y_b)² with s = 3, 3, 2. The second table checks the estimators: the "
        f"mean of {draws:,} gradient draws (the same keys for both libraries) against the "
        "exact gradient, a sum over every joint value of the lanes (Poisson and Geometric "
        "truncated at 30 and 40 values per lane; the mass left out is in the JSON)."
    )


def genjax_section_text(result: dict, markdown: str, lines: list[str], plot: Path) -> str:
    info, theirs = result["machine"], result["genjax_machine"]
    key = result["args"].get("json_key", "genjax")
    flags = info["xla_flags"] or "(unset)"
    checkout = info.get("ppl_source", "") in ("", str((ROOT / "ppl").resolve()))
    revision = f"commit {info['ppl_revision']}" if checkout else f"from `{info['ppl_source']}`"
    settings = (
        f"`XLA_FLAGS={flags}`, `jax_cpu_enable_async_dispatch={info.get('async_dispatch', True)}`"
    )
    genjax = (
        f"GenJAX {theirs['genjax']} on JAX {theirs['jax']}, Python {theirs['python']}"
        if theirs
        else "GenJAX not run (no interpreter given)"
    )
    arguments = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in result["args"].items()
                         if k in ("lanes", "lane_rounds", "lane_calls", "json_key"))  # fmt: skip
    return "\n\n".join(
        [
            "### Against GenJAX 1.0: Bernoulli sites in vmapped lanes"
            if key == "genjax"
            else f"#### The same comparison with {settings}",
            f"Generated by `python benchmarks/continuations.py --only genjax --docs` ({arguments}; "
            "the text around the numbers is kept in `benchmarks/continuations.py`).",
            genjax_description(result) if key == "genjax" else GENJAX_RERUN,
            markdown,
            "Targets:",
            "\n".join(lines),
            f"![ppl and GenJAX gradients against the lane count](img/{plot.name})",
            f"Machine: {info['cpus']} CPU cores ({info['cpu']}), shared; ppl {info['ppl']} "
            f"({revision}) on JAX {info['jax']}, Python {info['python']}; "
            f"{genjax}; the same settings ({settings}) in both processes; "
            f"measured {info['date']}. Raw numbers under `{key}` in "
            "`benchmarks/continuations.json`.",
        ]
    )


# ------------------------------------------------------------------------ report


def _find(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return found[0] if found else None


def verdicts(rows, args) -> list[str]:
    lines = []
    k16 = 16 if 16 in args.particles else max(args.particles)
    for label in ("mvd", "enum"):
        vec = [r for r in rows if r["program"] == "iwae" and r["strategy"] == label]
        vec = [r for r in vec if r["version"] == "vectorized"]
        ks = np.array([r["K"] for r in vec], float)
        times = np.array([r["run_ms"] for r in vec])
        slope = float(np.polyfit(np.log(ks[ks >= 4]), np.log(times[ks >= 4]), 1)[0])
        lines.append(
            f"* IWAE(K) + {label}, *time at most linear in K*: the run time grows as "
            f"K^{slope:.2f} from K = 4 on (log-log slope) — "
            + ("**met**." if slope <= 1.15 else "**missed** (see the findings).")
        )
        a = _find(rows, program="iwae", strategy=label, K=k16, version="vectorized")
        b = _find(rows, program="iwae", strategy=label, K=k16, version="unrolled")
        if a and b:
            speed, comp = b["run_ms"] / a["run_ms"], b["compile_s"] / a["compile_s"]
            lines.append(
                f"* IWAE({k16}) + {label}, *5x faster and 5x less compile time than unrolled*: "
                f"{speed:.1f}x faster, {comp:.1f}x less compile time — "
                + (
                    "**met**."
                    if speed >= SPEEDUP_TARGET and comp >= SPEEDUP_TARGET
                    else "**missed** (see the findings)."
                )
            )
        else:
            limit = args.max_unrolled_mvd if label == "mvd" else args.max_unrolled_enum
            lines.append(
                f"* IWAE({k16}) + {label} against unrolled: the unrolled version was only "
                f"run up to K = {limit} (see the findings)."
            )
    for k in args.variance_particles:
        m = _find(rows, program="iwae-variance", strategy="mvd", K=k)
        v = _find(rows, program="iwae-variance", strategy="vimco", K=k)
        ratio = v["variance_x_time"] / m["variance_x_time"]
        lines.append(
            f"* IWAE({k}) + mvd against VIMCO, *work-normalized variance 10x lower*: "
            f"{ratio:.1f}x lower — " + ("**met**." if ratio >= VARIANCE_TARGET else "**missed**.")
        )
    for label in ("mvd", "enum"):
        scans = [r for r in rows if r["program"] == "scan" and r["strategy"] == label]
        scans = [r for r in scans if r["version"] == "scan"]
        compiles = [r["compile_s"] for r in scans]
        listed = ", ".join(f"{c:.1f}" for c in compiles)
        lines.append(
            f"* scan + {label}, *compile time flat in T*: {listed} s "
            f"at T = {', '.join(str(r['T']) for r in scans)} — "
            + ("**met**." if max(compiles) <= 1.5 * min(compiles) else "**missed**.")
        )
        t10 = min(args.steps)
        a = _find(rows, program="scan", strategy=label, T=t10, version="scan")
        b = _find(rows, program="scan", strategy=label, T=t10, version="unrolled")
        if a and b:
            ratio = a["run_ms"] / b["run_ms"]
            lines.append(
                f"* scan + {label}, *run time within 2x of unrolled at T = {t10}*: "
                f"{ratio:.2f}x the unrolled time — "
                + ("**met**." if ratio <= SCAN_SLOWDOWN_TARGET else "**missed**.")
            )
        later = [
            (r, _find(rows, program="scan", strategy=label, T=r["T"], version="unrolled"))
            for r in scans
            if r["T"] > t10
        ]
        for r, u in later:
            if u:
                lines.append(
                    f"* scan + {label} at T = {r['T']}, *faster than unrolled*: "
                    f"{u['run_ms'] / r['run_ms']:.2f}x — "
                    + ("**met**." if u["run_ms"] > r["run_ms"] else "**missed**.")
                )
    for steps in args.variance_steps:
        base = _find(rows, program="scan", strategy="reinforce+baseline", T=steps, version="scan")
        for label in ("mvd", "enum"):
            r = _find(rows, program="scan", strategy=label, T=steps, version="scan")
            ratio = base["variance_x_time"] / r["variance_x_time"]
            lines.append(
                f"* scan + {label} at T = {steps}, *variance below REINFORCE with a baseline "
                f"at equal time*: work-normalized variance {ratio:.1f}x lower — "
                + ("**met**." if ratio > 1 else "**missed**.")
            )
    return lines


def table(rows) -> str:
    lines = [
        "| program | strategy | size | version | compile (s) | run (ms) | total variance "
        "| variance × time (s) |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        size = f"K = {r['K']}" if "K" in r else f"T = {r['T']}"
        variance = f"{r['total_variance']:.3g}" if "total_variance" in r else ""
        work = f"{r['variance_x_time']:.3g}" if "variance_x_time" in r else ""
        compile_s = f"{r['compile_s']:.2f}" if "compile_s" in r else ""
        lines.append(
            f"| {r['program']} | {r['strategy']} | {size} | {r.get('version', 'vectorized')} "
            f"| {compile_s} | {r['run_ms']:.2f} | {variance} | {work} |"
        )
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for label, marker in (("mvd", "o"), ("enum", "s")):
        for version, style in (("vectorized", "-"), ("unrolled", "--")):
            sel = [
                r
                for r in rows
                if r["program"] == "iwae" and r["strategy"] == label and r["version"] == version
            ]
            if sel:
                ks = [r["K"] for r in sel]
                axes[0].plot(ks, [r["run_ms"] for r in sel], style, marker=marker,
                             label=f"{label} {version}")  # fmt: skip
                axes[1].plot(ks, [r["compile_s"] for r in sel], style, marker=marker,
                             label=f"{label} {version}")  # fmt: skip
        for version, style in (("scan", "-"), ("unrolled", "--")):
            sel = [
                r
                for r in rows
                if r["program"] == "scan" and r["strategy"] == label and r["version"] == version
            ]
            if sel:
                axes[2].plot([r["T"] for r in sel], [r["run_ms"] for r in sel], style,
                             marker=marker, label=f"{label} {version}")  # fmt: skip
    sel = [r for r in rows if r["program"] == "scan" and r["strategy"] == "reinforce+baseline"]
    axes[2].plot([r["T"] for r in sel], [r["run_ms"] for r in sel], ":", marker="^",
                 label="reinforce+baseline scan")  # fmt: skip
    titles = ("IWAE(K) gradient, run time", "IWAE(K) gradient, compile time", "switching model")
    ylabels = ("ms per gradient", "compile s", "ms per gradient")
    xlabels = ("particles K", "particles K", "steps T")
    for ax, title, ylabel, xlabel in zip(axes, titles, ylabels, xlabels):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--max-enum-particles", type=int, default=16)
    parser.add_argument("--max-unrolled-mvd", type=int, default=8)
    parser.add_argument("--max-unrolled-enum", type=int, default=1)
    parser.add_argument("--variance-particles", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 200])
    parser.add_argument("--max-unrolled-steps-mvd", type=int, default=20)
    parser.add_argument("--max-unrolled-steps-enum", type=int, default=10)
    parser.add_argument("--variance-steps", type=int, nargs="+", default=[50])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--only", choices=["iwae", "scan", "genjax"], default=None)
    parser.add_argument(
        "--no-genjax", action="store_true", help="IWAE and scan with their verdicts, no GenJAX"
    )
    parser.add_argument(
        "--genjax",
        default=DEFAULT_GENJAX_PYTHON if DEFAULT_GENJAX_PYTHON.exists() else None,
        type=Path,
        help="the Python (>= 3.12) of an environment with genjax 1.0 installed; without "
        f"one (default {DEFAULT_GENJAX_PYTHON} if it exists) only ppl's side of that "
        "comparison runs",
    )
    parser.add_argument("--lanes", type=int, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--lane-rounds", type=int, default=10)
    parser.add_argument("--lane-calls", type=int, default=20)
    parser.add_argument("--lane-draws", type=int, default=2000)
    parser.add_argument("--lane-seed", type=int, default=11)
    parser.add_argument("--check-lanes", type=int, nargs="*", default=[4, 16])
    parser.add_argument(
        "--no-coverage",
        action="store_true",
        help="time only the sites GenJAX has an estimator for (no ppl-only rows)",
    )
    parser.add_argument(
        "--json-key",
        default="genjax",
        help="the key of --json that holds the GenJAX comparison (another key, and its own "
        "docs section, for a rerun with other settings such as XLA_FLAGS)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument(
        "--genjax-plot", type=Path, default=None, help="default docs/img/continuations_KEY.png"
    )
    parser.add_argument("--page", type=Path, default=PAGE)
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="rebuild the GenJAX comparison's table, plot and section from --json (no runs)",
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help="replace the sections of docs/benchmarks.md with the tables and verdicts (the "
        "findings there are written by hand)",
    )
    args = parser.parse_args(argv)
    rows = []
    if args.from_json and args.only != "genjax":
        parser.error("--from-json rebuilds the GenJAX comparison only: add --only genjax")
    if args.only in (None, "iwae"):
        rows += run_iwae(args)
    if args.only in (None, "scan"):
        rows += run_scan(args)
    if rows:
        info = machine_info()
        lines = verdicts(rows, args) if args.only is None else []
        markdown = table(rows)
        print(markdown)
        print("\n".join(lines))
        arguments = {k: str(v) for k, v in vars(args).items()}
        update_json(args.json, machine=info, args=arguments, rows=rows, verdicts=lines)
        if args.only is None:
            plot(rows, args.plot)
        if args.docs and args.only is None:
            replace_section(args.page, SECTION, section_text(markdown, lines, info))
    if args.only == "genjax" or (args.only is None and not args.no_genjax):
        if args.genjax is not None and not Path(args.genjax).exists():
            print(f"note: {args.genjax} does not exist", flush=True)
            args.genjax = None
        if args.genjax is None and not args.from_json:
            print("note: no GenJAX interpreter (--genjax); measuring ppl's side only", flush=True)
        if args.from_json:
            result = json.loads(args.json.read_text())[args.json_key]
        else:
            result = run_genjax(args)
            result["args"] = {k: str(v) for k, v in vars(args).items()}
        result["verdicts"] = genjax_verdicts(result)
        markdown = genjax_table(result)
        print(markdown)
        print("\n".join(result["verdicts"]))
        update_json(args.json, **{args.json_key: result})
        plot_path = args.genjax_plot or DEFAULT_GENJAX_PLOT.with_name(
            f"continuations_{args.json_key}.png"
        )
        genjax_plot(result, plot_path)
        if args.docs:
            section = genjax_section_text(result, markdown, result["verdicts"], plot_path)
            name = f"continuations-{args.json_key}".replace("_", "-")  # continuations-genjax
            replace_section(args.page, name, section)


def update_json(path: Path, **entries) -> None:
    """Set ``entries`` at the top level of the JSON file ``path``, keeping its other keys."""
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**data, **entries}, indent=1))


def section_text(markdown: str, lines: list[str], info: dict) -> str:
    return "\n\n".join(
        [
            "## Continuation strategies in lanes and loops",
            "Generated by `python benchmarks/continuations.py`; the text around the "
            "numbers is kept in `benchmarks/continuations.py`.",
            markdown,
            "### Targets",
            "\n".join(lines),
            "![IWAE(K) and switching-model gradients](img/continuations.png)",
            f"Machine: JAX {info['jax']} on `{info['backend']}` ({info['cpu_count']} CPU "
            f"cores, {info['cpu']}), ppl {info['ppl']} (commit {info['ppl_revision']}); "
            f"measured {info['date']}. Raw numbers in `benchmarks/continuations.json`.",
        ]
    )


if __name__ == "__main__":
    main()
