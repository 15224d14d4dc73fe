"""Rao-Blackwellized score functions on plates: ppl against ``TraceGraph_ELBO``.

A score-function site inside a plate multiplies the score of each element only by the
costs that can depend on it (issue 25). This script measures what that does to the
gradient variance and the time per gradient, on three NumPyro programs with a data
plate, each with an exact gradient to check the means against:

* **Bernoulli**: ``z_i ~ Bernoulli(0.3)``, ``y_i ~ Normal(2 z_i - 1, 1)`` in
  ``numpyro.plate("data", N)``, guide ``z_i ~ Bernoulli(logits=w y_i + b)``; N = 10,
  100, 1,000, 10,000 (data from the model, fixed seed). Exact: a sum over each element's
  two values.
* **SBN**: the sigmoid belief net of ``benchmarks/discrete_estimators.py`` (64-8-4, its
  NumPyro model and guide with a plate over a batch of 64 digits). Exact: the 2^12 joint
  values of each digit.
* **mixture**: ``c_i ~ Categorical(1/5)``, ``x_i ~ Normal(mu[c_i], 1)`` (``mu`` a model
  parameter) for 1,000 points, guide ``c_i ~ Categorical(logits=x_i a + b)``. Exact: a
  sum over each point's 5 components.

Estimators of the gradient of the ELBO (summed over the plate) at fixed parameters:

* ppl ``reinforce``: ``ppl.objectives.elbo(model, guide, strategies=...)``, which hands
  the per-site, per-element log densities over as costs (Rao-Blackwellized);
* ppl today: ``ppl.objectives.iwae(..., num_particles=1)`` with ``reinforce``, one
  scalar log weight (every score multiplied by the whole ELBO, as before issue 25);
* ppl ``baseline``: ``baseline(reinforce, b)`` in ``elbo`` with ``b`` one value per plate
  element and site, the mean of the costs that element's score multiplies, from
  ``--pilot-draws`` guide draws made beforehand (what a converged learned baseline gives);
* ppl ``leave_one_out(4)`` and ``mvd`` in ``elbo`` (continuation strategies: the old,
  not per-element path; ``mvd`` up to ``--mvd-max`` plate elements);
* NumPyro ``TraceGraph_ELBO``: ``jax.grad`` of its loss over the parameter dict (jitted);
* Pyro ``TraceGraph_ELBO``: ``loss_and_grads`` on the same programs in torch (one intra-op
  thread), a Python loop over draws.

For each: the total variance (trace of the covariance of one gradient) from ``--draws``
independent keys (``jax.vmap``-ed in chunks; Pyro fewer, see ``--pyro-draws``), the bias
z-score against the exact gradient, and the median time of one gradient (all estimators
of a program alternated round-robin in one process, after warm-up).

Run ``python benchmarks/rao_blackwell.py`` (minutes on 2 CPU cores); ``--quick`` for a
smoke test. Writes ``benchmarks/rao_blackwell.json``, ``docs/img/rao_blackwell.png`` and
the section of ``docs/benchmarks.md`` between ``<!-- rao-blackwell:start -->`` and
``<!-- rao-blackwell:end -->`` (the rest of the page is left alone).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import discrete_estimators as sbn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import write_outputs
from discrete_estimators import gradient_stats, summarize_times, time_round_robin
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer import TraceGraph_ELBO
from tqdm import tqdm

import ppl

SIZES = (10, 100, 1000, 10000)
QUICK_SIZES = (10, 100)
SBN_BATCH = 64
MIXTURE_POINTS = 1000
MIXTURE_COMPONENTS = 5
QUICK_SBN_BATCH = 8
QUICK_MIXTURE_POINTS = 50
DEFAULT_DRAWS = 1000
DEFAULT_PYRO_DRAWS = 200
PYRO_DRAWS_LARGE = 100  # Pyro's draws for plates of LARGE elements or more
LARGE = 10000
DEFAULT_REPEATS = 30
DEFAULT_PILOT_DRAWS = 1000
QUICK_DRAWS, QUICK_PYRO_DRAWS, QUICK_REPEATS, QUICK_PILOT = 20, 4, 3, 50
MVD_MAX = 1000  # mvd runs the rest of the program per element: O(N^2) work per gradient
CHUNK_ELEMENTS = 200_000  # plate elements per vmapped chunk of draws
WORK_SE = 2.0  # "within" / "strictly below" mean by this many standard errors
TIME_TARGET_TODAY = 1.1
SPEEDUP_TARGET_PYRO = 5.0
PYRO_THREADS = 1

REINFORCE = "ppl reinforce"
TODAY = "ppl today: iwae(1), reinforce"
BASELINE = "ppl baseline (pilot E[D_e])"
LOO = "ppl leave_one_out(4)"
MVD = "ppl mvd"
NUMPYRO = "NumPyro TraceGraph_ELBO"
PYRO = "Pyro TraceGraph_ELBO"
ALL_ESTIMATORS = (REINFORCE, TODAY, BASELINE, LOO, MVD, NUMPYRO, PYRO)
DRAWS_PER_GRADIENT = {LOO: 4}  # draws of each site per gradient (1 otherwise)

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = SCRIPT_DIR / "rao_blackwell.json"
DEFAULT_MARKDOWN = SCRIPT_DIR.parent / "docs" / "benchmarks.md"
DEFAULT_PLOT = SCRIPT_DIR.parent / "docs" / "img" / "rao_blackwell.png"


class Program(NamedTuple):
    """A plated NumPyro model/guide pair at fixed parameters, with its exact gradient.

    ``sees`` maps each guide site to the ``(program, site)`` log densities its score
    multiplies (the terms downstream of it by data flow); ``torch`` returns the Pyro
    gradient call (``params, args -> () -> flat gradient``).
    """

    key: str
    label: str
    size: int
    model: Callable
    guide: Callable
    params: dict
    args: tuple
    exact_elbo: Callable
    sees: dict
    torch: Callable
    mvd: bool = True  # mvd supports the guide's distributions


# ----------------------------------------------------------------- Bernoulli program


def bernoulli_model(y):
    with numpyro.plate("data", y.shape[0]):
        z = numpyro.sample("z", dist.Bernoulli(0.3))
        numpyro.sample("y", dist.Normal(2.0 * z - 1.0, 1.0), obs=y)


def bernoulli_guide(y):
    w, b = numpyro.param("w", 0.0), numpyro.param("b", 0.0)
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("z", dist.Bernoulli(logits=w * y + b))


def bernoulli_exact(params, y):
    q = jax.nn.sigmoid(params["w"] * y + params["b"])
    one = jnp.log(0.3) + dist.Normal(1.0, 1.0).log_prob(y) - jnp.log(q)
    zero = jnp.log(0.7) + dist.Normal(-1.0, 1.0).log_prob(y) - jnp.log1p(-q)
    return jnp.sum(q * one + (1 - q) * zero)


def bernoulli_torch(params, y):
    import pyro
    import pyro.distributions as pdist

    size = y.shape[0]

    def model(y):
        with pyro.plate("data", size):
            z = pyro.sample("z", pdist.Bernoulli(0.3 * y.new_ones(())))
            pyro.sample("y", pdist.Normal(2.0 * z - 1.0, 1.0), obs=y)

    def guide(y):
        w, b = pyro.param("w"), pyro.param("b")
        with pyro.plate("data", size):
            pyro.sample("z", pdist.Bernoulli(logits=w * y + b))

    return model, guide


def bernoulli_program(size: int, seed: int) -> Program:
    key_z, key_y = jax.random.split(jax.random.fold_in(jax.random.key(seed), size))
    z = jax.random.bernoulli(key_z, 0.3, (size,)).astype(jnp.float32)
    y = 2.0 * z - 1.0 + jax.random.normal(key_y, (size,))
    return Program(
        f"bernoulli-{size}",
        f"Bernoulli, N = {size}",
        size,
        bernoulli_model,
        bernoulli_guide,
        {"w": jnp.array(0.5), "b": jnp.array(-0.2)},
        (y,),
        bernoulli_exact,
        {"z": (("model", "z"), ("model", "y"), ("guide", "z"))},
        bernoulli_torch,
    )


# ----------------------------------------------------------------------- SBN program


def sbn_program(batch_size: int, seed: int) -> Program:
    """The sigmoid belief net of discrete_estimators.py with its plated NumPyro programs."""
    batch = sbn.load_batch(batch_size, seed)
    params = sbn.init_params(jax.random.key(seed))
    every = tuple((p, s) for p in ("model", "guide") for s in ("h1", "h2"))
    every += (("model", "x"),)
    return Program(
        "sbn",
        f"SBN 64-8-4, batch {batch_size}",
        batch_size,
        sbn.numpyro_model,
        sbn.numpyro_guide,
        params,
        (batch,),
        lambda params, batch: sbn.exact_elbo(params, batch) * batch.shape[0],
        # q(h2 | h1) reads h1, so h1's score multiplies every term; h2's only its own
        {"h1": every, "h2": (("model", "h2"), ("model", "h1"), ("guide", "h2"))},
        None,  # Pyro: discrete_estimators.pyro_gradient_fn
        mvd=False,  # its sites are Bernoulli(...).to_event(1): Independent
    )


# ------------------------------------------------------------------- mixture program


def mixture_model(x):
    mu = numpyro.param("mu", jnp.zeros(MIXTURE_COMPONENTS))
    with numpyro.plate("data", x.shape[0]):
        c = numpyro.sample("c", dist.Categorical(logits=jnp.zeros(MIXTURE_COMPONENTS)))
        numpyro.sample("x", dist.Normal(mu[c], 1.0), obs=x)


def mixture_guide(x):
    a = numpyro.param("q_slope", jnp.zeros(MIXTURE_COMPONENTS))
    b = numpyro.param("q_offset", jnp.zeros(MIXTURE_COMPONENTS))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("c", dist.Categorical(logits=x[:, None] * a + b))


def mixture_exact(params, x):
    log_q = jax.nn.log_softmax(x[:, None] * params["q_slope"] + params["q_offset"], -1)
    log_p = -math.log(MIXTURE_COMPONENTS) + dist.Normal(params["mu"], 1.0).log_prob(x[:, None])
    return jnp.sum(jnp.exp(log_q) * (log_p - log_q))


def mixture_torch(params, x):
    import pyro
    import pyro.distributions as pdist
    import torch

    size = x.shape[0]

    def model(x):
        mu = pyro.param("mu")
        with pyro.plate("data", size):
            c = pyro.sample("c", pdist.Categorical(logits=torch.zeros(MIXTURE_COMPONENTS)))
            pyro.sample("x", pdist.Normal(mu[c], 1.0), obs=x)

    def guide(x):
        a, b = pyro.param("q_slope"), pyro.param("q_offset")
        with pyro.plate("data", size):
            pyro.sample("c", pdist.Categorical(logits=x[:, None] * a + b))

    return model, guide


def mixture_program(size: int, seed: int) -> Program:
    key_c, key_x, key_params = jax.random.split(jax.random.key(seed + 1), 3)
    means = jnp.linspace(-4.0, 4.0, MIXTURE_COMPONENTS)
    x = means[jax.random.randint(key_c, (size,), 0, MIXTURE_COMPONENTS)]
    x = x + jax.random.normal(key_x, (size,))
    k1, k2, k3 = jax.random.split(key_params, 3)
    params = {  # a rough fit: means off by ~0.5, an amortized guide that half separates
        "mu": means + 0.5 * jax.random.normal(k1, (MIXTURE_COMPONENTS,)),
        "q_slope": 0.5 * means + 0.3 * jax.random.normal(k2, (MIXTURE_COMPONENTS,)),
        "q_offset": -0.25 * means**2 + 0.3 * jax.random.normal(k3, (MIXTURE_COMPONENTS,)),
    }
    sees = {"c": (("model", "c"), ("model", "x"), ("guide", "c"))}
    return Program(
        "mixture",
        f"mixture, {MIXTURE_COMPONENTS} components, {size} points",
        size,
        mixture_model,
        mixture_guide,
        params,
        (x,),
        mixture_exact,
        sees,
        mixture_torch,
    )


# ---------------------------------------------------------------------- estimators


def element_terms(program: Program, key: jax.Array) -> dict[str, jax.Array]:
    """Per guide site, the per-element sum of the log densities its score multiplies."""
    seeded = handlers.substitute(handlers.seed(program.guide, key), data=program.params)
    guide_trace = handlers.trace(seeded).get_trace(*program.args)
    model = handlers.substitute(handlers.replay(program.model, guide_trace), data=program.params)
    traces = {"guide": guide_trace, "model": handlers.trace(model).get_trace(*program.args)}

    def log_prob(which, name):
        site = traces[which][name]
        value = site["fn"].log_prob(site["value"])
        return value if which == "model" else -value

    return {
        site: sum(log_prob(which, name) for which, name in terms)
        for site, terms in program.sees.items()
    }


def pilot_baselines(program: Program, key: jax.Array, draws: int) -> dict[str, jax.Array]:
    """``E[D_e]`` per site and plate element, from ``draws`` guide draws."""
    terms = jax.jit(jax.vmap(lambda k: element_terms(program, k)))(jax.random.split(key, draws))
    return {site: jnp.mean(value, 0) for site, value in terms.items()}


def ppl_objectives(program: Program, baselines: dict) -> dict[str, ppl.Expectation]:
    """The ppl estimators of ``program`` (by table name)."""
    sites = list(program.sees)

    def each(strategy):
        return {site: strategy for site in sites}

    elbo = ppl.objectives.elbo
    model, guide = program.model, program.guide
    return {
        REINFORCE: elbo(model, guide, strategies=each(ppl.reinforce)),
        TODAY: ppl.objectives.iwae(model, guide, num_particles=1, strategies=each(ppl.reinforce)),
        BASELINE: elbo(
            model,
            guide,
            strategies={s: ppl.baseline(ppl.reinforce, baselines[s]) for s in sites},
        ),
        LOO: elbo(model, guide, strategies=each(ppl.leave_one_out(4))),
        **({MVD: elbo(model, guide, strategies=each(ppl.mvd))} if program.mvd else {}),
    }


def gradients(program: Program, baselines: dict, names: Sequence[str]) -> dict[str, Callable]:
    """``key -> flat gradient of the ELBO`` for the JAX estimators in ``names``."""
    out = {}
    for name, objective in ppl_objectives(program, baselines).items():
        out[name] = lambda key, o=objective: flat(
            o.grad_estimate(key, program.params, *program.args)[0]
        )

    def numpyro_gradient(key):
        def elbo(params):
            return -TraceGraph_ELBO().loss(key, params, program.model, program.guide, *program.args)

        return flat(jax.grad(elbo)(program.params))

    out[NUMPYRO] = numpyro_gradient
    return {n: g for n, g in out.items() if n in names}


def flat(grads: dict) -> jax.Array:
    return ravel_pytree(grads)[0]


def pyro_call(program: Program, seed: int) -> Callable[[], np.ndarray]:
    """One Pyro ``TraceGraph_ELBO`` gradient of the ELBO per call, flattened like ``flat``."""
    import pyro
    import torch

    if program.torch is None:  # the SBN: its Pyro programs live in discrete_estimators
        mean_gradient = sbn.pyro_gradient_fn(program.params, program.args[0], seed)
        names = sorted(program.params)

        def sbn_call():
            g = mean_gradient()
            return np.concatenate([g[n].detach().numpy().ravel() * program.size for n in names])

        return sbn_call
    torch.manual_seed(seed)
    pyro.clear_param_store()
    leaves = {}
    for name, value in program.params.items():
        pyro.param(name, torch.tensor(np.asarray(value)))
        leaves[name] = pyro.param(name).unconstrained()
    args = tuple(torch.tensor(np.asarray(a)) for a in program.args)
    model, guide = program.torch(program.params, *args)
    elbo = pyro.infer.TraceGraph_ELBO(max_plate_nesting=1)

    def call():
        for leaf in leaves.values():
            leaf.grad = None
        elbo.loss_and_grads(model, guide, *args)
        # ravel_pytree orders a dict's leaves by sorted key
        return np.concatenate([-leaves[n].grad.numpy().ravel() for n in sorted(leaves)])

    return call


def jax_draws(gradient: Callable, key: jax.Array, draws: int, size: int, bar) -> np.ndarray:
    """``draws`` flattened gradients, ``jax.vmap``-ed over keys in chunks."""
    many = jax.jit(jax.vmap(gradient))
    chunk = max(1, min(draws, CHUNK_ELEMENTS // size))
    keys = jax.random.split(key, draws)
    out = []
    for start in range(0, draws, chunk):
        out.append(np.asarray(many(keys[start : start + chunk]), np.float64))
        bar.update(len(out[-1]))
    return np.concatenate(out)


def variance_stats(draws: np.ndarray) -> tuple[float, float]:
    """The total variance ``tr Σ`` and its standard error (from ``|g - ḡ|²`` per draw)."""
    n = draws.shape[0]
    squared = np.sum((draws - draws.mean(0)) ** 2, axis=1) * n / (n - 1)
    return float(squared.mean()), float(squared.std(ddof=1) / math.sqrt(n))


def ratio(a: dict, b: dict, work_a: float = 1.0) -> tuple[float, float]:
    """``work_a tr Σ_a / tr Σ_b`` and its standard error (delta method, independent draws)."""
    r = work_a * a["total_variance"] / b["total_variance"]
    se = r * math.hypot(
        a["variance_se"] / a["total_variance"], b["variance_se"] / b["total_variance"]
    )
    return r, se


# ------------------------------------------------------------------------ measuring


def measure(program: Program, args: argparse.Namespace, bar, key: jax.Array) -> dict[str, Any]:
    """Draws, statistics and times of every estimator on one program."""
    key_pilot, key_draws, key_time = jax.random.split(key, 3)
    baselines = pilot_baselines(program, key_pilot, args.pilot_draws)
    names = [
        n for n in args.estimators if n != MVD or (program.mvd and program.size <= args.mvd_max)
    ]
    grads = gradients(program, baselines, names)
    exact = np.asarray(flat(jax.grad(program.exact_elbo)(program.params, *program.args)))
    rows: dict[str, Any] = {}
    for i, (name, gradient) in enumerate(grads.items()):
        bar.set_postfix_str(f"{program.key}: {name}")
        draws = jax_draws(gradient, jax.random.fold_in(key_draws, i), args.draws, program.size, bar)
        rows[name] = gradient_stats(draws, exact)
        rows[name]["mean_gradient"] = draws.mean(0).tolist()
        rows[name]["total_variance"], rows[name]["variance_se"] = variance_stats(draws)
    calls = {}
    for name, gradient in grads.items():
        compiled = jax.jit(gradient)
        calls[name] = lambda c=compiled: c(key_time)
    if PYRO in names:
        bar.set_postfix_str(f"{program.key}: {PYRO}")
        pyro_draws = (
            args.pyro_draws if program.size < LARGE else min(args.pyro_draws, PYRO_DRAWS_LARGE)
        )
        call = pyro_call(program, args.seed)
        draws = []
        for _ in range(pyro_draws):
            draws.append(call())
            bar.update(1)
        draws = np.asarray(draws, np.float64)
        rows[PYRO] = gradient_stats(draws, exact)
        rows[PYRO]["mean_gradient"] = draws.mean(0).tolist()
        rows[PYRO]["total_variance"], rows[PYRO]["variance_se"] = variance_stats(draws)
        calls[PYRO] = call
    bar.set_postfix_str(f"{program.key}: timing")
    times = time_round_robin(calls, args.repeats, args.seed)
    bar.update(args.repeats * len(calls))
    for name, t in times.items():
        rows[name]["time"] = summarize_times(t)
        rows[name]["draws_per_gradient"] = DRAWS_PER_GRADIENT.get(name, 1)
    rows = {n: rows[n] for n in ALL_ESTIMATORS if n in rows}
    return {
        "label": program.label,
        "size": program.size,
        "num_params": int(exact.size),
        "exact_gradient_norm": float(np.linalg.norm(exact)),
        "exact_elbo": float(program.exact_elbo(program.params, *program.args)),
        "baselines_mean": {s: float(jnp.mean(b)) for s, b in baselines.items()},
        "estimators": rows,
    }


# ------------------------------------------------------------------------ analysis


def targets(entry: dict[str, Any]) -> dict[str, Any]:
    """The per-program targets, each with its numbers and whether it is met."""
    rows = entry["estimators"]
    out: dict[str, Any] = {}
    if REINFORCE in rows and NUMPYRO in rows:
        r, se = ratio(rows[REINFORCE], rows[NUMPYRO])
        out["reinforce_vs_numpyro"] = {"ratio": r, "se": se, "met": r <= 1.0 + WORK_SE * se}
    for name in (BASELINE, LOO):
        if name in rows and NUMPYRO in rows:
            r, se = ratio(rows[name], rows[NUMPYRO], rows[name]["draws_per_gradient"])
            out[f"work_{name}"] = {"ratio": r, "se": se, "met": r + WORK_SE * se < 1.0}
    t = {n: r["time"]["median_ms"] for n, r in rows.items()}
    if REINFORCE in t and TODAY in t:
        r = t[REINFORCE] / t[TODAY]
        out["time_vs_today"] = {"ratio": r, "met": r <= TIME_TARGET_TODAY}
    if REINFORCE in t and PYRO in t:
        r = t[PYRO] / t[REINFORCE]
        out["speedup_vs_pyro"] = {"ratio": r, "met": r >= SPEEDUP_TARGET_PYRO}
    zs = {n: r["bias_z"] for n, r in rows.items() if r["bias_z"] is not None}
    if zs:  # none with fewer than 100 draws
        out["means_agree"] = {"bias_z": zs, "met": all(abs(z) < 4.0 for z in zs.values())}
    return out


def growth(programs: dict[str, Any]) -> dict[str, Any] | None:
    """Slope in log N of log(ppl reinforce variance / NumPyro's), weighted least squares."""
    points = []
    for entry in programs.values():
        t = entry["targets"].get("reinforce_vs_numpyro")
        if entry["key"].startswith("bernoulli") and t is not None:
            points.append((math.log(entry["size"]), math.log(t["ratio"]), t["se"] / t["ratio"]))
    if len(points) < 2:
        return None
    x, y, s = (np.asarray(v) for v in zip(*points, strict=True))
    w = 1.0 / s**2
    xbar = np.sum(w * x) / np.sum(w)
    slope = float(np.sum(w * (x - xbar) * y) / np.sum(w * (x - xbar) ** 2))
    se = float(1.0 / math.sqrt(np.sum(w * (x - xbar) ** 2)))
    slopes = {}
    for name in (REINFORCE, NUMPYRO, TODAY, BASELINE, LOO, MVD):
        v = [
            (math.log(e["size"]), math.log(e["estimators"][name]["total_variance"]))
            for e in programs.values()
            if e["key"].startswith("bernoulli") and name in e["estimators"]
        ]
        if len(v) >= 2:
            slopes[name] = float(np.polyfit(*zip(*v, strict=True), 1)[0])
    return {"slope": slope, "se": se, "met": slope <= WORK_SE * se, "variance_slopes": slopes}


# -------------------------------------------------------------------------- report


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _pm(value: float, se: float) -> str:
    return f"{value:.3g} ± {se:.2g}"


def table(results: dict[str, Any]) -> list[str]:
    """One row per program and estimator."""
    lines = [
        "| program | estimator | draws | total variance tr Σ (± SE) | ÷ NumPyro's (± SE) | "
        "× draws per gradient, ÷ NumPyro's | ms per gradient, median (IQR) | bias z |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in results["programs"].values():
        rows = entry["estimators"]
        for name, r in rows.items():
            vs = work = "—"
            if NUMPYRO in rows:
                vs = _pm(*ratio(r, rows[NUMPYRO]))
                work = _pm(*ratio(r, rows[NUMPYRO], r["draws_per_gradient"]))
            t = r["time"]
            z = "—" if r["bias_z"] is None else f"{r['bias_z']:.2f}"
            lines.append(
                f"| {entry['label']} | {name} | {r['draws']} | "
                f"{_pm(r['total_variance'], r['variance_se'])} | {vs} | {work} | "
                f"{t['median_ms']:.3g} ({t['q1_ms']:.3g}–{t['q3_ms']:.3g}) | "
                f"{z} |"
            )
    return lines


def _met(flag: bool) -> str:
    return "**met**" if flag else "**missed**"


def target_table(results: dict[str, Any]) -> list[str]:
    """One row per program, one column per target."""
    lines = [
        "| program | reinforce ÷ NumPyro variance (≤ 1) | baseline, equal work (< 1) | "
        f"leave_one_out(4), equal work (< 1) | time ÷ today (≤ {TIME_TARGET_TODAY}) | "
        f"Pyro's time ÷ ppl's (≥ {SPEEDUP_TARGET_PYRO:g}) | means agree (abs(bias z) < 4) |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in results["programs"].values():
        t = entry["targets"]
        cells = []
        for key in ("reinforce_vs_numpyro", f"work_{BASELINE}", f"work_{LOO}"):
            cells.append(
                f"{_pm(t[key]['ratio'], t[key]['se'])}, {_met(t[key]['met'])}" if key in t else "—"
            )
        for key, unit in (("time_vs_today", "x"), ("speedup_vs_pyro", "x")):
            cells.append(f"{t[key]['ratio']:.3g}{unit}, {_met(t[key]['met'])}" if key in t else "—")
        agree = t.get("means_agree")
        if agree is None:
            cells.append("—")
        else:
            worst = max(agree["bias_z"].items(), key=lambda kv: abs(kv[1]))
            cells.append(f"{_met(agree['met'])} (largest: {worst[0]}, {worst[1]:.2f})")
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return lines


def verdict(results: dict[str, Any]) -> list[str]:
    """Sentences on the targets over all programs, with the numbers."""
    programs = results["programs"].values()
    out = []

    def every(key):
        flags = [e["targets"][key]["met"] for e in programs if key in e["targets"]]
        missed = [
            e["label"] for e in programs if key in e["targets"] and not e["targets"][key]["met"]
        ]
        return flags, missed

    def sentence(title, key):
        flags, missed = every(key)
        if not flags:
            return None
        tail = "" if not missed else f" (missed on: {'; '.join(missed)})"
        return f"*{title}*: {_met(all(flags))}, on {sum(flags)} of {len(flags)} programs{tail}."

    out.append(
        sentence(
            f"ppl `reinforce` variance at most NumPyro `TraceGraph_ELBO`'s (ratio ≤ 1 + "
            f"{WORK_SE:g} SE)",
            "reinforce_vs_numpyro",
        )
    )
    g = results.get("growth")
    if g is not None:
        slopes = ", ".join(f"{n}: {s:.2f}" for n, s in g["variance_slopes"].items())
        out.append(
            f"*Growing no faster in N* (Bernoulli sweep; slope in log N of log(ppl variance / "
            f"NumPyro's) at most {WORK_SE:g} SE above 0): {g['slope']:.3f} ± {g['se']:.2g}, "
            f"{_met(g['met'])}. Slopes of log variance in log N: {slopes}."
        )
    out.append(
        sentence(
            f"ppl `baseline` strictly below NumPyro at equal work (ratio + {WORK_SE:g} SE < 1)",
            f"work_{BASELINE}",
        )
    )
    out.append(
        sentence(
            f"ppl `leave_one_out(4)` strictly below NumPyro at equal work (4 draws per "
            f"gradient; ratio + {WORK_SE:g} SE < 1)",
            f"work_{LOO}",
        )
    )
    out.append(
        sentence(
            f"time per gradient at most {TIME_TARGET_TODAY}x ppl's today (iwae(1))",
            "time_vs_today",
        )
    )
    out.append(sentence(f"at least {SPEEDUP_TARGET_PYRO:g}x faster than Pyro", "speedup_vs_pyro"))
    out.append(
        sentence("all estimators agree on the mean gradient (abs(bias z) < 4)", "means_agree")
    )
    return [line for line in out if line is not None]


def findings(results: dict[str, Any]) -> list[str]:
    """Why the targets came out as they did, from the numbers (for what was run)."""
    out = []
    g = results.get("growth") or {"variance_slopes": {}}
    slopes = g["variance_slopes"]
    rows = {k: e["estimators"] for k, e in results["programs"].items()}
    if TODAY in slopes and REINFORCE in slopes:
        out.append(
            f"Per-element costs are the whole difference: on the Bernoulli sweep the variance "
            f"of ppl today (one scalar log weight) grows like N^{slopes[TODAY]:.2f}, that of "
            f"ppl `reinforce` like N^{slopes[REINFORCE]:.2f}"
            + (f" (NumPyro's N^{slopes[NUMPYRO]:.2f})" if NUMPYRO in slopes else "")
            + ": each element's score now multiplies its own terms only."
        )
    if LOO in slopes:
        out.append(
            f"`leave_one_out(4)` leaves one out per element (element e of draw k against the "
            f"mean D_e of the other three draws), so its variance grows like N^{slopes[LOO]:.2f}, "
            "as NumPyro's does, and its baselines remove most of what is left"
            + (
                f"; `mvd` is a continuation strategy with no score, not per element: it "
                f"differentiates each element's distribution and grows like "
                f"N^{slopes[MVD]:.2f}, below NumPyro's variance at a cost that grows with N."
                if MVD in slopes
                else "."
            )
        )
    slow = [
        (e["label"], e["targets"]["time_vs_today"]["ratio"])
        for e in results["programs"].values()
        if "time_vs_today" in e["targets"] and not e["targets"]["time_vs_today"]["met"]
    ]
    others = [
        e["targets"]["time_vs_today"]["ratio"]
        for e in results["programs"].values()
        if "time_vs_today" in e["targets"] and e["targets"]["time_vs_today"]["met"]
    ]
    best = max(others, default=float("nan"))
    for label, r in slow:
        key = next(k for k, e in results["programs"].items() if e["label"] == label)
        mine, today = rows[key][REINFORCE]["time"], rows[key][TODAY]["time"]
        out.append(
            f"Time on {label}: ppl `reinforce` {mine['median_ms']:.3g} ms (IQR "
            f"{mine['q1_ms']:.3g}–{mine['q3_ms']:.3g}) against {today['median_ms']:.3g} ms "
            f"(IQR {today['q1_ms']:.3g}–{today['q3_ms']:.3g}) today, {r:.2f}x (the IQRs "
            f"do not overlap), on a shared and loaded machine; on the other programs the "
            f"ratio is at most {best:.2f}x."
        )
    return out


def markdown_section(results: dict[str, Any], plot_link: str | None) -> str:
    c, m = results["config"], results["machine"]
    lines = [
        "## Rao-Blackwellized score functions",
        "",
        "A score-function site inside a plate multiplies each element's score only by the "
        "costs that can depend on that element. Three NumPyro programs with a data plate, "
        "at fixed parameters, each with its exact gradient (by enumeration):",
        "",
        "* **Bernoulli**: `z_i ~ Bernoulli(0.3)`, `y_i ~ Normal(2 z_i - 1, 1)` in "
        '`numpyro.plate("data", N)`, guide `z_i ~ Bernoulli(logits=w y_i + b)` at '
        f"`w = 0.5, b = -0.2`; N = {', '.join(str(n) for n in c['sizes'])} (data from the model, "
        "fixed seed).",
        f"* **SBN**: the sigmoid belief net of the discrete-estimators section (64-8-4, "
        f"{c['sbn_batch']} digits in the data plate), its NumPyro model and guide.",
        f"* **mixture**: `c_i ~ Categorical(1/{MIXTURE_COMPONENTS})`, `x_i ~ Normal(mu[c_i], "
        f"1)` with `mu` a model parameter, {c['mixture_points']} points from a mixture with "
        f"means −4…4; guide `c_i ~ Categorical(logits=x_i a + b)` (a rough fit).",
        "",
        "Estimators of the gradient of the ELBO (summed over the plate), every JAX one "
        "`jax.jit`-compiled:",
        "",
        f"* **{REINFORCE}**: `ppl.objectives.elbo(model, guide, strategies={{site: "
        "ppl.reinforce}})`, which hands the per-site, per-element log densities over as "
        "costs (Rao-Blackwellized).",
        f"* **{TODAY}**: `ppl.objectives.iwae(model, guide, num_particles=1, ...)` with "
        "`reinforce`: one scalar log weight, every score multiplied by the whole ELBO (ppl "
        "before the plate-aware path).",
        f"* **{BASELINE}**: `elbo` with `ppl.baseline(ppl.reinforce, b)`, `b` an array of the "
        "plate's shape per site: for each element, the mean of the costs D_e its score "
        f"multiplies, from {c['pilot_draws']} guide draws made beforehand (what a converged "
        "learned per-element baseline gives; the pilot draws are not counted as work).",
        f"* **{LOO}**: `elbo` with `leave_one_out(4)`, per element: element e of draw k "
        "multiplies its score by its D_e minus the mean D_e of the other three draws.",
        f"* **{MVD}**: `elbo` with `mvd` (a continuation strategy with no score: the rest "
        f"of the program's value, not per element), only up to {c['mvd_max']} plate "
        "elements (it runs the rest of the program once per element and value), and not on "
        "the SBN, whose sites are `Bernoulli(...).to_event(1)` (`Independent`, which `mvd` "
        "does not support).",
        f"* **{NUMPYRO}**: `jax.grad` of `TraceGraph_ELBO().loss` over the parameter dict.",
        f"* **{PYRO}**: `TraceGraph_ELBO(max_plate_nesting=1).loss_and_grads`, the same "
        f"programs in Pyro (torch, {PYRO_THREADS} intra-op thread), a Python loop over draws.",
        "",
        "*Total variance* is the trace of the covariance of one gradient (the sum of the "
        f"per-parameter variances) from {c['draws']} independent keys (`jax.vmap`-ed in "
        f"chunks) per JAX estimator and {c['pyro_draws']} for Pyro ({PYRO_DRAWS_LARGE} at "
        f"N ≥ {LARGE}); its SE is the standard error of the mean of the per-draw squared "
        "deviations, and the ratios' SEs come from the delta method. *Equal work* multiplies "
        "the variance by the draws per gradient (4 for leave_one_out(4), 1 otherwise). "
        "*Bias z* is the chi-square z-score of the mean against the exact gradient (see the "
        "discrete-estimators section; — with fewer than 100 draws). *Time* is the wall time "
        f"of one gradient call until ready: median (IQR) of {c['repeats']} calls per "
        "estimator after warm-up, the estimators of a program alternated round-robin in "
        "one process.",
        "",
        *table(results),
        "",
        "### Targets",
        "",
        *target_table(results),
        "",
        *(f"* {line}" for line in verdict(results)),
        "",
        "### Findings",
        "",
        *(f"* {line}" for line in findings(results)),
    ]
    if plot_link is not None:
        lines += [
            "",
            f"![Total variance and time per gradient against N, log-log]({plot_link})",
            "",
            "Bernoulli program: total variance (left) and median time per gradient (right) "
            "against the plate size N, log-log.",
        ]
    pyro = f"Pyro {m['pyro']} with torch {m['torch']}, " if m.get("pyro") else ""
    lines += [
        "",
        f"Machine: JAX {m['jax']} on `{m['backend']}` ({m['cpu_count']} CPU cores, shared "
        f"with other jobs and loaded, {m['cpu']}), NumPyro {m['numpyro']}, {pyro}ppl "
        f"{m['ppl']} (commit {m['ppl_revision']}), Python {m['python']}; measured "
        f"{m['date']}. Reproduce with `python benchmarks/rao_blackwell.py` (raw numbers in "
        "`benchmarks/rao_blackwell.json`).",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Variance and time per gradient against N for the Bernoulli program, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [e for e in results["programs"].values() if e["key"].startswith("bernoulli")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.5))
    styles = dict(zip(ALL_ESTIMATORS, ("o-", "s--", "D-", "^-", "v-", "x:", "P:"), strict=True))
    for name in ALL_ESTIMATORS:
        points = [(e["size"], e["estimators"][name]) for e in sweep if name in e["estimators"]]
        if not points:
            continue
        sizes = [n for n, _ in points]
        variances = [r["total_variance"] for _, r in points]
        errors = [2 * r["variance_se"] for _, r in points]
        left.errorbar(sizes, variances, yerr=errors, fmt=styles[name], label=name, ms=5, capsize=2)
        right.plot(sizes, [r["time"]["median_ms"] for _, r in points], styles[name], label=name)
    for ax, ylabel in (
        (left, "total variance of one gradient (tr Σ, ± 2 SE)"),
        (right, "time per gradient (ms, median)"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("plate size N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", lw=0.3)
    left.set_title("Bernoulli program: gradient variance")
    right.set_title("Bernoulli program: time per gradient")
    right.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--quick`` changes the defaults of the other options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", help=f"Bernoulli plate sizes {SIZES}")
    parser.add_argument(
        "--programs",
        nargs="+",
        choices=("bernoulli", "sbn", "mixture"),
        default=["bernoulli", "sbn", "mixture"],
    )
    parser.add_argument("--draws", type=int, help=f"draws per JAX estimator ({DEFAULT_DRAWS})")
    parser.add_argument(
        "--pyro-draws",
        type=int,
        help=f"draws for Pyro ({DEFAULT_PYRO_DRAWS}; at most {PYRO_DRAWS_LARGE} at N ≥ {LARGE})",
    )
    parser.add_argument("--repeats", type=int, help=f"timed calls ({DEFAULT_REPEATS})")
    parser.add_argument("--pilot-draws", type=int, help=f"baseline pilot ({DEFAULT_PILOT_DRAWS})")
    parser.add_argument("--mvd-max", type=int, default=MVD_MAX, help="largest plate for mvd")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, parameters, keys")
    parser.add_argument("--out", type=Path, help=f"JSON path (default {DEFAULT_JSON})")
    parser.add_argument("--markdown", type=Path, help=f"page to write ({DEFAULT_MARKDOWN})")
    parser.add_argument("--plot", type=Path, help=f"PNG path (default {DEFAULT_PLOT})")
    parser.add_argument("--skip-pyro", action="store_true", help="do not run Pyro")
    parser.add_argument(
        "--report", type=Path, help="measure nothing: print and write the report of this JSON"
    )
    parser.add_argument(
        "--estimators",
        nargs="+",
        choices=ALL_ESTIMATORS,
        default=list(ALL_ESTIMATORS),
        metavar="NAME",
        help="run only these estimators (names as in the table)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: small programs, few draws; no files unless --out/--markdown/--plot",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or list(QUICK_SIZES if quick else SIZES)
    args.draws = args.draws or (QUICK_DRAWS if quick else DEFAULT_DRAWS)
    args.pyro_draws = args.pyro_draws or (QUICK_PYRO_DRAWS if quick else DEFAULT_PYRO_DRAWS)
    args.repeats = args.repeats or (QUICK_REPEATS if quick else DEFAULT_REPEATS)
    args.pilot_draws = args.pilot_draws or (QUICK_PILOT if quick else DEFAULT_PILOT_DRAWS)
    args.sbn_batch = QUICK_SBN_BATCH if quick else SBN_BATCH
    args.mixture_points = QUICK_MIXTURE_POINTS if quick else MIXTURE_POINTS
    if args.skip_pyro:
        args.estimators = [n for n in args.estimators if n != PYRO]
    if not quick:
        args.out = args.out or DEFAULT_JSON
        args.markdown = args.markdown or DEFAULT_MARKDOWN
        args.plot = args.plot or DEFAULT_PLOT
    if args.draws < 2 or args.pyro_draws < 2 or args.repeats < 1:
        parser.error("--draws and --pyro-draws must be at least 2, --repeats positive")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, print and write the results."""
    args = parse_args(argv)
    if args.report is not None:
        results = json.loads(args.report.read_text())
        results["growth"] = growth(results["programs"])
        for entry in results["programs"].values():
            entry["targets"] = targets(entry)
        return write(results, args)
    if PYRO in args.estimators:
        try:
            import pyro  # noqa: F401
            import torch
        except ImportError:
            print("Pyro is not installed: its rows are skipped")
            args.estimators = [n for n in args.estimators if n != PYRO]
        else:
            torch.set_num_threads(PYRO_THREADS)
    programs = []
    if "bernoulli" in args.programs:
        programs += [bernoulli_program(n, args.seed) for n in args.sizes]
    if "sbn" in args.programs:
        programs.append(sbn_program(args.sbn_batch, args.seed))
    if "mixture" in args.programs:
        programs.append(mixture_program(args.mixture_points, args.seed))
    info = sbn.machine_info(PYRO in args.estimators)
    results: dict[str, Any] = {
        "config": {
            "sizes": args.sizes,
            "sbn_batch": args.sbn_batch,
            "mixture_points": args.mixture_points,
            "draws": args.draws,
            "pyro_draws": args.pyro_draws,
            "pyro_draws_large": PYRO_DRAWS_LARGE,
            "repeats": args.repeats,
            "pilot_draws": args.pilot_draws,
            "mvd_max": args.mvd_max,
            "seed": args.seed,
            "quick": args.quick,
            "estimators": args.estimators,
        },
        "machine": info,
        "programs": {},
    }
    per_program = len(args.estimators) * (args.draws + args.repeats)
    with tqdm(total=per_program * len(programs), desc="rao-blackwell", unit="gradient") as bar:
        for i, program in enumerate(programs):
            entry = measure(program, args, bar, jax.random.fold_in(jax.random.key(args.seed), i))
            entry["key"] = program.key
            entry["targets"] = targets(entry)
            results["programs"][program.key] = entry
    results["growth"] = growth(results["programs"])
    return write(results, args)


def write(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Print the tables and write the JSON, the plot and the page section."""
    print()
    print("\n".join(table(results)))
    print()
    print("\n".join(target_table(results)))
    print()
    print("\n".join(verdict(results)))

    write_outputs(results, args, "rao-blackwell", plot, markdown_section)
    return results


if __name__ == "__main__":
    main()
