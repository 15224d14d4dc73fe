"""Reproduce Liang et al. (WWW 2018) at CPU scale: Mult-VAE against its baselines.

On the generated clicks (``ppl_zoo.mult_vae.synthetic_clicks``), for each seed:
popularity, EASE (λ chosen on validation users), Mult-DAE [I-200-I], Mult-VAE
[I-600-200-600-I] (β annealed to 0.2, best validation epoch) and the oracle that ranks
by the true click probabilities; NDCG@100, NDCG@20, Recall@20 and Recall@50 with
standard errors over the test users of all seeds. Also times one training epoch of
Mult-VAE through ``ppl.fit`` against the same model hand-written in JAX.

    python benchmarks/zoo_mult_vae.py                       # a few minutes on 2 cores
    python benchmarks/zoo_mult_vae.py --movielens ml-20m/ratings.csv --epochs 200 \
        --batch-size 500 --total-anneal-steps 200000        # a user's MovieLens copy

Writes ``benchmarks/zoo_mult_vae.json``, ``docs/img/mult_vae_*.png`` and the table
section of ``docs/zoo/mult_vae.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ROOT, machine_info, replace_section  # noqa: E402

import ppl  # noqa: E402
from ppl_zoo import mult_vae  # noqa: E402

ARMS = ("popularity", "EASE", "Mult-DAE", "Mult-VAE", "oracle")
METRICS = ("ndcg@100", "recall@20", "recall@50", "ndcg@20")
PAPER_ML20M = {  # Liang et al. 2018 (notebook outputs), ML-20M test users
    "Mult-VAE": {"ndcg@100": 0.426, "recall@20": 0.395, "recall@50": 0.537},
    "Mult-DAE": {"ndcg@100": 0.419, "recall@20": 0.387, "recall@50": 0.524},
}


def per_user_metrics(scores, split) -> dict[str, np.ndarray]:
    scores = mult_vae.exclude_fold_in(scores, split.test_in)
    out = {}
    for name in METRICS:
        kind, k = name.split("@")
        metric = mult_vae.ndcg_at_k if kind == "ndcg" else mult_vae.recall_at_k
        values = metric(scores, split.test_out, int(k))
        out[name] = values[np.isfinite(values)]
    return out


def run_seed(seed: int, split, config: dict, bar) -> tuple[dict, dict]:
    """Every arm on one split; returns per-user metrics and training curves."""
    results, curves = {}, {}
    bar.set_postfix_str(f"seed {seed}: popularity, EASE")
    results["popularity"] = per_user_metrics(
        mult_vae.popularity_scores(split.train, split.test_in), split
    )
    weights, l2 = mult_vae.select_ease(split)
    results["EASE"] = per_user_metrics(mult_vae.ease_scores(weights, split.test_in), split)
    curves["EASE_l2"] = l2
    bar.update()
    for arm, kind in (("Mult-DAE", "dae"), ("Mult-VAE", "vae")):
        bar.set_postfix_str(f"seed {seed}: {arm}")
        params, info = mult_vae.train_autoencoder(
            jax.random.key(seed), split, {**config, "model": kind}, progress=False
        )
        score = mult_vae.vae_scores if kind == "vae" else mult_vae.dae_scores
        results[arm] = per_user_metrics(
            mult_vae.score_in_batches(score, params, split.test_in), split
        )
        curves[arm] = {
            "valid_ndcg@100": info["valid_ndcg@100"].tolist(),
            "best_epoch": int(info["best_epoch"]),
        }
        bar.update()
    if split.test_log_probs is not None:
        results["oracle"] = per_user_metrics(split.test_log_probs, split)
    return results, curves


def hand_written_loss(config: dict):
    """The Mult-VAE β-ELBO (negated, per user) written directly in JAX."""
    keep = config["keep_prob"]

    def loss(params, key, x, beta):
        key_drop, key_z = jax.random.split(key)
        x_norm = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        mask = jax.random.bernoulli(key_drop, keep, x.shape)
        hidden = jnp.where(mask, x_norm / keep, 0.0)
        loc, log_var = jnp.split(mult_vae.mlp(params["encoder"], hidden), 2, -1)
        std = jnp.exp(0.5 * log_var)
        eps = jax.random.normal(key_z, loc.shape)
        z = loc + std * eps
        log_lik = jnp.sum(x * jax.nn.log_softmax(mult_vae.mlp(params["decoder"], z)), -1)
        log_prior = jnp.sum(-0.5 * z**2, -1)
        log_q = jnp.sum(-0.5 * eps**2 - jnp.log(std), -1)
        return -jnp.mean(log_lik + beta * (log_prior - log_q))

    return loss


def epoch_batches(config: dict, split, seed: int, first_step: int) -> mult_vae.AnnealedBatches:
    """The minibatches ``(x, β_t)`` of one epoch, the same for every timed loop."""
    return mult_vae.AnnealedBatches(
        seed,
        split.train,
        config["batch_size"],
        first_step,
        config["total_anneal_steps"],
        config["anneal_cap"],
    )


def hand_written_epoch(config: dict, split, guard: bool = False):
    """The same Mult-VAE step in plain JAX + optax: returns ``run(params, seed, first_step)``.

    With ``guard``, a step whose loss or gradient is not finite leaves the parameters
    and optimizer state unchanged, as ``ppl.fit``'s NaN guard does.
    """
    optimizer = optax.adam(config["learning_rate"])
    loss = hand_written_loss(config)

    @jax.jit
    def step(params, opt_state, key, x, beta):
        value, grads = jax.value_and_grad(loss)(params, key, x, beta)
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if not guard:
            return new_params, new_state
        leaves = jax.tree.leaves(grads)
        ok = jnp.isfinite(value) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in leaves]))
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state)

    def run(params, seed, first_step):
        opt_state = optimizer.init(params)
        batches = epoch_batches(config, split, seed, first_step)
        key = jax.random.key(seed)
        for index, (x, beta) in enumerate(batches):
            params, opt_state = step(params, opt_state, jax.random.fold_in(key, index), x, beta)
        return jax.block_until_ready(params)

    return run


def time_gradients(config: dict, split, repeats: int = 50) -> dict:
    """One minibatch gradient: the ppl objective against the hand-written loss."""
    params = mult_vae.init_vae(
        jax.random.key(0), split.num_items, config["hidden"], config["latent"]
    )
    x = jnp.asarray(split.train[: config["batch_size"]].toarray())
    beta = jnp.float32(0.1)
    objective = mult_vae.annealed_elbo(config["keep_prob"])
    loss = hand_written_loss(config)
    grads = {
        "ppl": jax.jit(jax.grad(lambda p, k: -objective(k, p, (x, beta)))),
        "jax": jax.jit(jax.grad(lambda p, k: loss(p, k, x, beta))),
    }
    times = {name: [] for name in grads}
    for grad in grads.values():
        jax.block_until_ready(grad(params, jax.random.key(0)))
    for _ in range(5):
        for name, grad in grads.items():
            start = time.perf_counter()
            for index in range(repeats):
                out = grad(params, jax.random.key(index))
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / repeats)
    ppl_s, jax_s = float(np.median(times["ppl"])), float(np.median(times["jax"]))
    return {"ppl_grad_s": ppl_s, "jax_grad_s": jax_s, "grad_ratio": ppl_s / jax_s}


def ppl_epoch(config: dict, split, nan_guard: bool = True):
    """One epoch through ``ppl.fit`` (the objective of ``ppl_zoo.mult_vae``)."""
    objective = mult_vae.annealed_elbo(config["keep_prob"])
    optimizer = optax.adam(config["learning_rate"])
    steps = split.train.shape[0] // config["batch_size"]

    def run(params, seed, first_step):
        batches = epoch_batches(config, split, seed, first_step)
        result = ppl.fit(
            jax.random.key(seed),
            objective,
            params,
            optimizer=optimizer,
            num_steps=steps,
            data=batches,
            nan_guard=nan_guard,
            progress=False,
        )
        return jax.block_until_ready(result.params)

    return run


def time_epochs(config: dict, split, repeats: int) -> dict:
    params = mult_vae.init_vae(
        jax.random.key(0), split.num_items, config["hidden"], config["latent"]
    )
    runs = {
        "ppl": ppl_epoch(config, split, nan_guard=False),
        "jax": hand_written_epoch(config, split),
        "ppl_guarded": ppl_epoch(config, split),
        "jax_guarded": hand_written_epoch(config, split, guard=True),
    }
    for run in runs.values():  # compile
        run(params, 0, 1000)
    times = {name: [] for name in runs}
    for repeat in range(repeats):  # interleaved, so drifts in machine load hit all
        for name, run in runs.items():
            start = time.perf_counter()
            run(params, repeat + 1, 1000)
            times[name].append(time.perf_counter() - start)
    out = {f"{name}_epoch_s": float(np.median(values)) for name, values in times.items()}
    out["ratio"] = out["ppl_epoch_s"] / out["jax_epoch_s"]
    out["ratio_guarded"] = out["ppl_guarded_epoch_s"] / out["jax_guarded_epoch_s"]
    out["repeats"] = repeats
    out["steps_per_epoch"] = split.train.shape[0] // config["batch_size"]
    return {**out, **time_gradients(config, split)}


def summarize(per_seed: list[dict]) -> dict:
    table = {}
    for arm in ARMS:
        if arm not in per_seed[0]:
            continue
        table[arm] = {}
        for name in METRICS:
            values = np.concatenate([seed[arm][name] for seed in per_seed])
            mean, error = mult_vae.mean_and_standard_error(values)
            table[arm][name] = mean
            table[arm][name + "_se"] = error
            table[arm][name + "_per_seed"] = [float(seed[arm][name].mean()) for seed in per_seed]
    return table


def markdown(table: dict, timing: dict | None, label: str) -> str:
    lines = [
        f"| {label} | NDCG@100 | Recall@20 | Recall@50 | NDCG@20 |",
        "|---|---|---|---|---|",
    ]
    for arm, row in table.items():
        cells = [f"{row[m]:.3f} ± {row[m + '_se']:.3f}" for m in METRICS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if timing:
        lines += [
            "",
            "| timing (median) | ppl | hand-written JAX | ratio |",
            "|---|---|---|---|",
            f"| one minibatch gradient | {timing['ppl_grad_s'] * 1e3:.2f} ms | "
            f"{timing['jax_grad_s'] * 1e3:.2f} ms | {timing['grad_ratio']:.3f} |",
            f"| one epoch ({timing['steps_per_epoch']} updates): `ppl.fit(nan_guard=False)` "
            f"against a plain JAX loop | {timing['ppl_epoch_s'] * 1e3:.0f} ms | "
            f"{timing['jax_epoch_s'] * 1e3:.0f} ms | {timing['ratio']:.3f} |",
            f"| one epoch: `ppl.fit` (NaN guard on, the default) against a JAX loop with "
            f"the same guard | {timing['ppl_guarded_epoch_s'] * 1e3:.0f} ms | "
            f"{timing['jax_guarded_epoch_s'] * 1e3:.0f} ms | {timing['ratio_guarded']:.3f} |",
        ]
    return "\n".join(lines)


def plot(table: dict, curves: dict, path_bars: Path, path_curves: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    arms = list(table)
    for ax, metric in zip(axes, ("ndcg@100", "recall@20", "recall@50")):
        ax.bar(
            arms,
            [table[a][metric] for a in arms],
            yerr=[2 * table[a][metric + "_se"] for a in arms],
            color=[f"C{i}" for i in range(len(arms))],
        )
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=60)
    figure.savefig(path_bars, dpi=110)

    figure = Figure(figsize=(7.0, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for arm in ("Mult-DAE", "Mult-VAE"):
        values = curves[arm]["valid_ndcg@100"]
        ax.plot(np.arange(1, len(values) + 1), values, label=arm)
        ax.axvline(curves[arm]["best_epoch"] + 1, ls=":", color="C0" if arm == "Mult-DAE" else "C1")
    ax.set(xlabel="epoch", ylabel="validation NDCG@100", title="validation NDCG@100 (seed 0)")
    ax.legend()
    figure.savefig(path_curves, dpi=110)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=mult_vae.DEFAULT_CONFIG["epochs"])
    parser.add_argument("--batch-size", type=int, default=mult_vae.DEFAULT_CONFIG["batch_size"])
    parser.add_argument(
        "--total-anneal-steps", type=int, default=mult_vae.DEFAULT_CONFIG["total_anneal_steps"]
    )
    parser.add_argument("--movielens", type=Path, help="a MovieLens ratings file (not in CI)")
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "zoo_mult_vae.json")
    parser.add_argument(
        "--no-docs", action="store_true", help="do not write plots and the docs table"
    )
    args = parser.parse_args(argv)
    config = {
        **mult_vae.DEFAULT_CONFIG,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "total_anneal_steps": args.total_anneal_steps,
    }
    start = time.perf_counter()
    per_seed, all_curves = [], []
    with tqdm(total=3 * len(args.seeds), unit="arm") as bar:
        for seed in args.seeds:
            split = mult_vae.load_data({**config, "data_seed": seed}, args.movielens)
            results, curves = run_seed(seed, split, config, bar)
            per_seed.append(results)
            all_curves.append(curves)
    table = summarize(per_seed)
    timing = None if args.movielens else time_epochs(config, split, args.timing_repeats)
    label = f"MovieLens ({args.movielens.name})" if args.movielens else "generated clicks"
    text = markdown(table, timing, label)
    print(text)
    vae, pop = table["Mult-VAE"]["ndcg@100"], table["popularity"]["ndcg@100"]
    targets = {
        "vae_minus_popularity": vae - pop,
        "vae_minus_ease": vae - table["EASE"]["ndcg@100"],
        "vae_minus_dae": vae - table["Mult-DAE"]["ndcg@100"],
        "vae_below_oracle": bool(vae < table["oracle"]["ndcg@100"]) if "oracle" in table else None,
    }
    record = {
        "machine": machine_info(),
        "config": config,
        "seeds": args.seeds,
        "data": str(args.movielens) if args.movielens else "synthetic_clicks",
        "table": table,
        "curves": all_curves,
        "timing": timing,
        "targets": targets,
        "paper_ml20m": PAPER_ML20M,
        "wall_s": time.perf_counter() - start,
    }
    out = args.out if not args.movielens else args.out.with_name("zoo_mult_vae_movielens.json")
    out.write_text(json.dumps(record, indent=1))
    if not args.no_docs and not args.movielens:
        img = ROOT / "docs" / "img"
        img.mkdir(parents=True, exist_ok=True)
        plot(table, all_curves[0], img / "mult_vae_metrics.png", img / "mult_vae_validation.png")
        replace_section(ROOT / "docs" / "zoo" / "mult_vae.md", "mult_vae_table", text)
    print(f"targets: {targets}; wrote {out} in {record['wall_s']:.0f} s")
    return record


if __name__ == "__main__":
    main()
