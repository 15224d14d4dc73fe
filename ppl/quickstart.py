"""``ppl quickstart``: the noisy-cone model of Becker et al. (PLDI 2024, Table 4, Fig. 2).

Fits the model with five objectives (ELBO and IWELBO with a mean-field guide; HVI,
IWHVI and DIWHVI with an auxiliary-variable guide marginalized by ``ppl.marginal``),
prints the converged objective values next to the paper's, and saves a plot of the
approximate posteriors over the true one.

Model (the paper's Fig. 2): ``x, y ~ Normal(0, 10)``,
``r = x² + y²``, ``z ~ Normal(r, 0.1 + r/100)`` observed at ``z = 5``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from tqdm.auto import tqdm

import ppl

__all__ = ["model", "naive_guide", "expressive_guide", "log_joint", "train", "evaluate", "main"]

Z_OBSERVED = 5.0


def model(z: float = Z_OBSERVED) -> None:
    """The noisy cone: the posterior over (x, y) is a thin ring of radius about √z."""
    x = numpyro.sample("x", dist.Normal(0.0, 10.0))
    y = numpyro.sample("y", dist.Normal(0.0, 10.0))
    r = x**2 + y**2
    numpyro.sample("z", dist.Normal(r, 0.1 + r / 100.0), obs=z)


def naive_guide(z: float = Z_OBSERVED) -> None:
    """Mean-field Normal guide over (x, y): parameters m1, m2, s1, s2."""
    m1, m2 = numpyro.param("m1", 0.0), numpyro.param("m2", 0.0)
    s1, s2 = numpyro.param("s1", 0.0), numpyro.param("s2", 0.0)
    numpyro.sample("x", dist.Normal(m1, jnp.exp(s1)))
    numpyro.sample("y", dist.Normal(m2, jnp.exp(s2)))


def expressive_guide(z: float = Z_OBSERVED) -> None:
    """Auxiliary-variable guide: an angle u, then (x, y) near the circle of radius √z."""
    s1, s2 = numpyro.param("s1", 0.0), numpyro.param("s2", 0.0)
    u = numpyro.sample("u", dist.Uniform(0.0, 1.0))
    angle = 2.0 * jnp.pi * u
    radius = jnp.sqrt(z)
    numpyro.sample("x", dist.Normal(radius * jnp.cos(angle), jnp.exp(s1)))
    numpyro.sample("y", dist.Normal(radius * jnp.sin(angle), jnp.exp(s2)))


def log_joint(x: jax.Array, y: jax.Array, z: float = Z_OBSERVED) -> jax.Array:
    """``log p(x, y, z)`` on arrays of points (the unnormalized log posterior)."""
    r = x**2 + y**2
    prior = dist.Normal(0.0, 10.0)
    return prior.log_prob(x) + prior.log_prob(y) + dist.Normal(r, 0.1 + r / 100.0).log_prob(z)


class Setting(NamedTuple):
    label: str
    objective: ppl.Expectation
    init: dict
    samples_per_step: int
    paper: float


def _settings() -> list[Setting]:
    objectives = ppl.objectives
    keep = ["x", "y"]
    naive = {"m1": 0.0, "m2": 0.0, "s1": 1.0, "s2": 1.0}
    return [
        Setting("ELBO", objectives.elbo(model, naive_guide), naive, 64, -8.08),
        Setting(
            "IWELBO (n = 5)",
            objectives.iwae(model, naive_guide, num_particles=5),
            {**naive, "m1": 3.0},
            1,
            -7.79,
        ),
        Setting(
            "HVI", objectives.hvi(model, expressive_guide, keep), {"s1": 0.0, "s2": 0.0}, 64, -9.75
        ),
        Setting(
            "IWHVI (m = 5)",
            objectives.iwhvi(model, expressive_guide, keep, inner_particles=5),
            {"s1": 0.0, "s2": 0.0},
            64,
            -8.18,
        ),
        Setting(
            "DIWHVI (n = 5, m = 5)",
            objectives.diwhvi(model, expressive_guide, keep, num_particles=5, inner_particles=5),
            {"s1": 0.0, "s2": 0.0},
            64,
            -7.33,
        ),
    ]


def train(
    key: jax.Array,
    objective: ppl.Expectation,
    params: dict,
    *,
    samples_per_step: int,
    num_steps: int,
    learning_rate: float = 1e-3,
) -> dict:
    """Plain gradient ascent on the mean of ``samples_per_step`` estimates per step."""
    params = jax.tree.map(jnp.asarray, params)
    optimizer = optax.sgd(learning_rate)

    def loss(params: dict, key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, samples_per_step)
        return -jnp.mean(jax.vmap(objective, (0, None))(keys, params))

    @jax.jit
    def run(params: dict, key: jax.Array) -> dict:
        def step(carry: tuple[dict, Any], key: jax.Array) -> tuple[tuple[dict, Any], None]:
            params, state = carry
            grads = jax.grad(loss)(params, key)
            updates, state = optimizer.update(grads, state)
            return (optax.apply_updates(params, updates), state), None

        keys = jax.random.split(key, num_steps)
        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), keys)
        return params

    return run(params, key)


def evaluate(
    key: jax.Array, objective: ppl.Expectation, params: dict, num_samples: int
) -> tuple[float, float, float]:
    """Mean, standard deviation and standard error of ``num_samples`` estimates."""
    keys = jax.random.split(key, num_samples)
    values = np.asarray(jax.jit(jax.vmap(objective, (0, None)))(keys, params), dtype=np.float64)
    values = values[np.isfinite(values)]
    return values.mean(), values.std(ddof=1), values.std(ddof=1) / math.sqrt(values.size)


def _guide_samples(
    key: jax.Array, guide: Callable, params: dict, num_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    constrained = ppl.constrain(guide, params)
    draws = numpyro.infer.Predictive(guide, params=constrained, num_samples=num_samples)(key)
    return np.asarray(draws["x"]), np.asarray(draws["y"])


def plot(path: str | Path, key: jax.Array, results: dict, num_samples: int = 2000) -> str | Path:
    """Samples of the trained guides over the true posterior density (the paper's Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-4, 4, 300)
    gx, gy = np.meshgrid(grid, grid)
    log_post = np.asarray(log_joint(jnp.asarray(gx), jnp.asarray(gy)))
    shown = [("ELBO", naive_guide), ("DIWHVI (n = 5, m = 5)", expressive_guide)]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.6), sharey=True)
    for ax, (label, guide) in zip(axes, shown):
        ax.contourf(gx, gy, np.exp(log_post - log_post.max()), levels=20, cmap="Greys")
        xs, ys = _guide_samples(key, guide, results[label], num_samples)
        ax.scatter(xs, ys, s=2, alpha=0.3, color="tab:red", label="guide samples")
        ax.set_title(f"{label} guide over the true posterior")
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_aspect("equal")
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[0].legend(loc="upper right", markerscale=5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(
    out_dir: str | Path = "ppl-quickstart",
    num_steps: int = 5000,
    eval_samples: int = 5000,
    seed: int = 0,
) -> dict:
    """Run the quickstart; returns the table rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(seed)
    start = time.perf_counter()
    rows, trained = [], {}
    settings = _settings()
    for i, setting in enumerate(tqdm(settings, desc="ppl quickstart", unit="objective")):
        key_train, key_eval = jax.random.split(jax.random.fold_in(key, i))
        params = train(
            key_train,
            setting.objective,
            setting.init,
            samples_per_step=setting.samples_per_step,
            num_steps=num_steps,
        )
        mean, std, se = evaluate(key_eval, setting.objective, params, eval_samples)
        trained[setting.label] = params
        rows.append((setting.label, mean, se, std, setting.paper))
    plot_path = plot(out / "cone_posteriors.png", jax.random.fold_in(key, 99), trained)
    lines = [
        f"Noisy cone, {num_steps} SGD steps (lr 1e-3), objective over {eval_samples} samples",
        "",
        f"{'objective':<24}{'ppl':>10}{'± s.e.':>9}{'s.d.':>8}{'paper':>9}{'diff':>8}",
        "-" * 68,
    ]
    for label, mean, se, std, paper in rows:
        lines.append(
            f"{label:<24}{mean:>10.3f}{se:>9.3f}{std:>8.2f}{paper:>9.2f}{mean - paper:>+8.3f}"
        )
    table = "\n".join(lines)
    print(table)
    (out / "cone_table.txt").write_text(table + "\n")
    print(f"\nwrote {out / 'cone_table.txt'} and {plot_path} ({time.perf_counter() - start:.0f} s)")
    return {label: (mean, se, std, paper) for label, mean, se, std, paper in rows}
