"""Did VI work on eight schools? Pareto k-hat of ELBO- and IWELBO-fitted guides vs NUTS.

The eight-schools model (Rubin 1981; Gelman et al., BDA3 sec. 5.5) in its centered
and non-centered forms, each fitted with a mean-field ``AutoNormal`` guide by
``ppl.fit`` with the ELBO and with the importance-weighted bound (IWELBO, ``K``
particles). For every fit, ``ppl.importance`` weighs ``--draws`` guide draws by the
model and reports the Pareto k-hat of the weights (Yao et al. 2018: < 0.5 good,
0.5-0.7 usable, > 0.7 do not trust), the effective sample size and the IWELBO estimate
of ``log p(y)`` (against the exact value, by quadrature over ``tau``); the posterior
means and sds of ``mu``, ``tau`` and ``theta[0]`` under the guide and under its
importance-resampled (SIR) draws are set against those of NUTS (NumPyro's MCMC on the
non-centered model, which samples this posterior without divergences).

Run ``python benchmarks/eight_schools.py`` (about two minutes on two CPU cores).
Prints a Markdown table and writes ``benchmarks/eight_schools.json`` and
``docs/img/eight_schools.png``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC, NUTS
from numpyro.infer.autoguide import AutoNormal

import ppl

ROOT = Path(__file__).resolve().parent.parent
J = 8
Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def centered(num_schools, sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", num_schools):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def non_centered(num_schools, sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", num_schools):
        theta_raw = numpyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_raw)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


MODELS = {"centered": centered, "non-centered": non_centered}


def theta_draws(name: str, draws: dict) -> np.ndarray:
    """``theta`` from a dict of latent draws of either model (shape ``(n, J)``)."""
    if name == "centered":
        return np.asarray(draws["theta"])
    mu, tau = np.asarray(draws["mu"])[:, None], np.asarray(draws["tau"])[:, None]
    return mu + tau * np.asarray(draws["theta_raw"])


def moments(name: str, draws: dict) -> dict:
    theta = theta_draws(name, draws)
    summary = {}
    for label, values in (("mu", draws["mu"]), ("tau", draws["tau"]), ("theta0", theta[:, 0])):
        values = np.asarray(values, dtype=np.float64)
        summary[label] = [float(values.mean()), float(values.std())]
    return summary


def exact_log_evidence() -> float:
    """``log p(y)`` by quadrature over ``tau``: given ``tau``, ``mu`` and ``theta``
    integrate out in closed form, ``y | tau ~ N(0, diag(sigma² + tau²) + 25 · 11ᵀ)``."""
    import scipy.integrate
    import scipy.stats

    y, sigma = np.asarray(Y, np.float64), np.asarray(SIGMA, np.float64)

    def log_integrand(tau):
        cov = np.diag(sigma**2 + tau**2) + 25.0 * np.ones((J, J))
        log_prior = scipy.stats.halfcauchy.logpdf(tau, scale=5.0)
        return log_prior + scipy.stats.multivariate_normal.logpdf(y, np.zeros(J), cov)

    shift = log_integrand(0.0)
    value, _ = scipy.integrate.quad(lambda t: np.exp(log_integrand(t) - shift), 0.0, np.inf)
    return float(shift + np.log(value))


def fit_and_weigh(key, name, objective_name, args) -> dict:
    model = MODELS[name]
    guide = AutoNormal(model)
    key_init, key_fit, key_weigh = jax.random.split(key, 3)
    params = ppl.init_params(key_init, guide, J, SIGMA, y=Y)
    if objective_name == "ELBO":
        objective = ppl.objectives.elbo(model, guide, num_particles=args.particles)
    else:
        objective = ppl.objectives.iwae(model, guide, num_particles=args.particles)
    start = time.perf_counter()
    result = ppl.fit(
        key_fit, objective, params, J, SIGMA, y=Y, optimizer=optax.adam(args.learning_rate),
        num_steps=args.steps, progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the k-hat warning: it is the point of the table
        weighed = ppl.importance(
            key_weigh, model, guide, result.params, J, SIGMA, y=Y, num_samples=args.draws
        )
    return {
        "model": name,
        "objective": objective_name,
        "khat": weighed.khat,
        "verdict": weighed.verdict,
        "ess": weighed.ess,
        "log_evidence": weighed.log_evidence,
        "log_evidence_se": weighed.log_evidence_se,
        "final_objective": float(np.mean(result.history[-200:])),
        "fit_seconds": seconds,
        "guide": moments(name, weighed.draws),
        "resampled": moments(name, weighed.resampled),
        "tau_draws": np.asarray(weighed.draws["tau"]).tolist(),
        "tau_resampled": np.asarray(weighed.resampled["tau"]).tolist(),
    }


def run_nuts(key, args) -> dict:
    mcmc = MCMC(
        NUTS(non_centered), num_warmup=args.nuts_warmup, num_samples=args.nuts_samples,
        num_chains=args.nuts_chains, chain_method="sequential", progress_bar=False,
    )  # fmt: skip
    start = time.perf_counter()
    mcmc.run(key, J, SIGMA, y=Y)
    seconds = time.perf_counter() - start
    draws = mcmc.get_samples()
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    return {
        "moments": moments("non-centered", draws),
        "tau_draws": np.asarray(draws["tau"]).tolist(),
        "divergences": divergences,
        "num_draws": int(np.asarray(draws["mu"]).size),
        "seconds": seconds,
    }


def table(rows: list[dict], nuts: dict, log_evidence: float, args) -> str:
    def cell(m, site):
        return f"{m[site][0]:.2f} ({m[site][1]:.2f})"

    lines = [
        "| model | objective | k-hat | ESS | IWELBO of log p(y) | mu: guide | mu: SIR "
        "| tau: guide | tau: SIR | theta[0]: guide | theta[0]: SIR |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        g, r = row["guide"], row["resampled"]
        lines.append(
            f"| {row['model']} | {row['objective']} | {row['khat']:.2f} ({row['verdict']}) | "
            f"{row['ess']:.0f} | {row['log_evidence']:.2f} ± {row['log_evidence_se']:.2f} | "
            f"{cell(g, 'mu')} | {cell(r, 'mu')} | {cell(g, 'tau')} | {cell(r, 'tau')} | "
            f"{cell(g, 'theta0')} | {cell(r, 'theta0')} |"
        )
    m = nuts["moments"]
    lines.append(
        f"| non-centered | NUTS ({nuts['num_draws']} draws, {nuts['divergences']} divergent) "
        f"| | | {log_evidence:.2f} (exact, quadrature) | {cell(m, 'mu')} | | {cell(m, 'tau')} "
        f"| | {cell(m, 'theta0')} | |"
    )
    return "\n".join(lines)


def plot(rows: list[dict], nuts: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    bars, density = figure.subplots(1, 2, width_ratios=[1.0, 1.4])
    labels = [f"{r['model']}\n{r['objective']}" for r in rows]
    colors = ["C2" if r["khat"] < 0.5 else "C1" if r["khat"] <= 0.7 else "C3" for r in rows]
    bars.bar(range(len(rows)), [r["khat"] for r in rows], color=colors)
    bars.axhline(0.5, color="grey", ls=":", lw=1)
    bars.axhline(0.7, color="C3", ls="--", lw=1)
    bars.text(len(rows) - 0.5, 0.71, "do not trust above 0.7", ha="right", va="bottom", fontsize=8)
    bars.set_xticks(range(len(rows)), labels, fontsize=8)
    bars.set(ylabel="Pareto k-hat", title="Did VI work? (Yao et al. 2018)")
    edges = np.linspace(-4.0, 4.5, 70)
    density.hist(np.log(nuts["tau_draws"]), bins=edges, density=True, color="0.8", label="NUTS")
    for index, row in enumerate(rows):
        density.hist(
            np.log(row["tau_draws"]), bins=edges, density=True, histtype="step", lw=1.4,
            color=f"C{index}", label=f"{row['model']}, {row['objective']}",
        )  # fmt: skip
    best = min(rows, key=lambda r: r["khat"])
    density.hist(
        np.log(best["tau_resampled"]), bins=edges, density=True, histtype="step", lw=1.6,
        color="black", ls="--", label=f"{best['model']}, {best['objective']}, resampled (SIR)",
    )  # fmt: skip
    density.set(xlabel="log tau", ylabel="density", title="posterior of log tau: guides vs NUTS")
    density.legend(fontsize=8)
    figure.savefig(path, format="png", dpi=110)


def _relative(value):
    """A path inside the checkout as a relative path (for the JSON), else as is."""
    if not isinstance(value, Path):
        return value
    value = value.resolve()
    return str(value.relative_to(ROOT)) if value.is_relative_to(ROOT) else str(value)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--particles", type=int, default=16, help="K of IWELBO (and ELBO)")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--draws", type=int, default=10000, help="guide draws for k-hat")
    parser.add_argument("--nuts-warmup", type=int, default=1000)
    parser.add_argument("--nuts-samples", type=int, default=2000)
    parser.add_argument("--nuts-chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "eight_schools.json")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "img" / "eight_schools.png")
    args = parser.parse_args(argv)
    key_vi, key_nuts = jax.random.split(jax.random.key(args.seed))
    rows = []
    for index, (name, objective) in enumerate(
        [(m, o) for m in MODELS for o in ("ELBO", f"IWELBO (K = {args.particles})")]
    ):
        rows.append(fit_and_weigh(jax.random.fold_in(key_vi, index), name, objective, args))
    nuts = run_nuts(key_nuts, args)
    log_evidence = exact_log_evidence()
    print(table(rows, nuts, log_evidence, args))
    args.png.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, nuts, args.png)
    from _common import machine_info  # noqa: PLC0415 - benchmarks/ is the script's folder

    record = {
        "settings": {k: _relative(v) for k, v in vars(args).items()},
        "machine": machine_info(),
        "exact_log_evidence": log_evidence,
        "rows": [{k: v for k, v in r.items() if not k.startswith("tau_")} for r in rows],
        "nuts": {k: v for k, v in nuts.items() if k != "tau_draws"},
        "table": table(rows, nuts, log_evidence, args),
    }
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
