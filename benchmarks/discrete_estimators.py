"""Gradient estimators for discrete latents, against the exact gradient.

The model is a two-layer sigmoid belief network on binarized 8x8 digits (scikit-learn's
``load_digits``, pixel > 8 -> 1): ``h2 ~ Bernoulli(sigmoid(b2))`` (4 units),
``h1 | h2 ~ Bernoulli(sigmoid(h2 W2 + b1))`` (8 units), ``x | h1 ~ Bernoulli(sigmoid(h1
W1 + b0))`` (64 pixels); the guide is mean-field Bernoulli with logistic regressions,
``q(h1 | x)`` and ``q(h2 | h1)``. The parameters are fixed random values (seeded), the
objective the ELBO of each datapoint averaged over a batch of 32 digits, and its
gradient is taken with respect to all 1,176 model and guide parameters. The ELBO of one
datapoint is a sum over the 2^12 joint values of ``(h1, h2)``, so the exact gradient is
available: once from ppl (``ppl.enum`` at both sites, which enumerates the 256 joint
values of ``h1`` and for each the 16 of ``h2``) and once from a direct vectorized JAX
enumeration; the script checks that the two agree.

Estimators, each a ``jax.jit``-compiled gradient of the minibatch mean ELBO:

* ppl: the per-datapoint ELBO as a ``@ppl.expectation`` written with ``ppl.sample``,
  ``jax.vmap``-ed over the batch with one key per datapoint, and ``jax.grad`` of the
  mean, with the strategies ``reinforce`` (the ELBO returned at the end: every site's
  score is multiplied by the whole ELBO of its datapoint), ``reinforce`` with the terms
  that only depend on ``h1`` added with ``ppl.add_cost`` before ``h2`` is drawn (so
  ``h2``'s score sees only the terms after it, the Rao-Blackwellization of
  ``TraceGraph_ELBO``), ``baseline(reinforce, b)`` with per-datapoint baselines
  estimated beforehand, ``leave_one_out(4)`` and ``leave_one_out(8)`` at both sites,
  ``enum`` (exact), ``mvd`` and a hybrid (``mvd`` at ``h1``, ``enum`` at ``h2``);
* hand-written JAX: the score-function surrogate ``elbo + sg(elbo) (log q - sg(log
  q))`` per datapoint, all draws from one key with ``jax.random``;
* NumPyro: ``jax.grad`` of ``TraceGraph_ELBO().loss`` over the parameter dictionary,
  the same model and guide as NumPyro programs with a ``numpyro.plate`` over the batch;
* Pyro: ``TraceGraph_ELBO().loss_and_grads`` with the parameters in the param store
  (torch, same values), not compiled.

NumPyro and Pyro return the negated ELBO summed over the batch; their gradients are
negated and divided by the batch size so that every row estimates the gradient of the
mean ELBO.

For each estimator: the bias against the exact gradient (the norm of the mean of the
draws minus the exact gradient, its noise floor ``sqrt(tr Σ / N)`` and a z-score, see
`gradient_stats`), the total variance (the trace of the covariance of one gradient over
all coordinates, from ``--draws`` independent gradients; the JAX estimators are
``jax.vmap``-ed over keys in chunks), the median time of one gradient call
(``block_until_ready``, after warm-up; all estimators alternated round-robin in one
process, see `time_round_robin`) and the work-normalized variance, variance x time.
The script also compares the jaxpr and the compiled XLA program of ppl's plain
REINFORCE gradient with the hand-written one.

Run ``python benchmarks/discrete_estimators.py`` (about a minute on 2 CPU cores);
``--quick`` for a smoke test. Writes ``benchmarks/discrete_estimators.json``, the plot
``docs/img/discrete_estimators.png`` and the section of ``docs/benchmarks.md`` between
``<!-- discrete-estimators:start -->`` and ``<!-- discrete-estimators:end -->``
(appended with the markers if absent; the rest of the page is left alone).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import machine_info as common_machine_info
from _common import replace_section as replace_section  # the smoke test calls it here
from _common import write_outputs
from jax.extend.core import jaxprs_in_params
from jax.flatten_util import ravel_pytree
from numpyro.infer import TraceGraph_ELBO
from tqdm import tqdm

import ppl

H1_DIM = 8
H2_DIM = 4
X_DIM = 64
PIXEL_THRESHOLD = 8.0
DEFAULT_BATCH = 32
DEFAULT_DRAWS = 1000
DEFAULT_REPEATS = 100
QUICK_DRAWS = 50
QUICK_REPEATS = 5
MIN_REPEATS = 30
WARMUP_CALLS = 3
BASELINE_DRAWS = 1000
ENUM_DRAWS = 20  # enum is deterministic: a few draws show its variance is 0
CHUNK = 100
MIN_DRAWS_Z = 100  # fewer draws than this: no z-score (the correlation estimate is poor)
ENUM_TOLERANCE = 1e-4  # relative, float32

WORK_TARGET = 10.0  # best ppl variant: work-normalized variance 10x lower
TIME_TARGET_HAND = 1.2  # ppl reinforce at most 1.2x the hand-written surrogate
SPEEDUP_TARGET_PYRO = 25.0  # ppl reinforce at least 25x faster than Pyro

# name: (shape, standard deviation of the seeded random value)
PARAM_SPECS = {
    "p_h2_bias": ((H2_DIM,), 0.5),
    "p_h1_weight": ((H2_DIM, H1_DIM), 1.0),
    "p_h1_bias": ((H1_DIM,), 0.5),
    "p_x_weight": ((H1_DIM, X_DIM), 1.0),
    "p_x_bias": ((X_DIM,), 0.5),
    "q_h1_weight": ((X_DIM, H1_DIM), 0.2),
    "q_h1_bias": ((H1_DIM,), 0.5),
    "q_h2_weight": ((H1_DIM, H2_DIM), 0.5),
    "q_h2_bias": ((H2_DIM,), 0.5),
}
MODEL_PARAMS = tuple(n for n in PARAM_SPECS if n.startswith("p_"))
GUIDE_PARAMS = tuple(n for n in PARAM_SPECS if n.startswith("q_"))

HAND = "hand-written JAX"
NUMPYRO = "NumPyro TraceGraph_ELBO"
PYRO = "Pyro TraceGraph_ELBO"
PPL_REINFORCE = "ppl reinforce"
PPL_ENUM = "ppl enum"
# torch runs with one intra-op thread: the tensors are tiny (Pyro's time is Python
# work), and idle torch worker threads would otherwise take a core from the JAX calls
# alternated with Pyro's on this 2-core machine (on it Pyro is faster with one thread).
PYRO_THREADS = 1

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = SCRIPT_DIR / "discrete_estimators.json"
DEFAULT_MARKDOWN = SCRIPT_DIR.parent / "docs" / "benchmarks.md"
DEFAULT_PLOT = SCRIPT_DIR.parent / "docs" / "img" / "discrete_estimators.png"

sg = jax.lax.stop_gradient


# ------------------------------------------------------------------- data and model


def load_batch(batch_size: int, seed: int) -> jax.Array:
    """``batch_size`` distinct binarized digits (float32, ``(batch_size, 64)``)."""
    from sklearn.datasets import load_digits

    pixels = (load_digits().data > PIXEL_THRESHOLD).astype(np.float32)
    rows = np.random.default_rng(seed).choice(len(pixels), batch_size, replace=False)
    return jnp.asarray(pixels[rows])


def init_params(key: jax.Array) -> dict[str, jax.Array]:
    """The fixed random parameters: ``Normal(0, sd)`` with the sd of ``PARAM_SPECS``."""
    keys = jax.random.split(key, len(PARAM_SPECS))
    return {
        name: sd * jax.random.normal(k, shape)
        for k, (name, (shape, sd)) in zip(keys, PARAM_SPECS.items(), strict=True)
    }


def log_bernoulli(x: jax.Array, logits: jax.Array) -> jax.Array:
    """``log Bernoulli(x | sigmoid(logits))`` summed over the last axis (NumPyro's form)."""
    softplus = jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return jnp.sum(x * logits - softplus, axis=-1)


def q_h1_logits(params, x):
    return x @ params["q_h1_weight"] + params["q_h1_bias"]


def q_h2_logits(params, h1):
    return h1 @ params["q_h2_weight"] + params["q_h2_bias"]


def p_h1_logits(params, h2):
    return h2 @ params["p_h1_weight"] + params["p_h1_bias"]


def p_x_logits(params, h1):
    return h1 @ params["p_x_weight"] + params["p_x_bias"]


def local_terms(params, x, h1, logits1):
    """``log p(x | h1) - log q(h1 | x)``: the terms that depend on ``h1`` only."""
    return log_bernoulli(x, p_x_logits(params, h1)) - log_bernoulli(h1, logits1)


def tail_terms(params, h1, h2, logits2):
    """``log p(h2) + log p(h1 | h2) - log q(h2 | h1)``: the terms that depend on ``h2``."""
    return (
        log_bernoulli(h2, params["p_h2_bias"])
        + log_bernoulli(h1, p_h1_logits(params, h2))
        - log_bernoulli(h2, logits2)
    )


# -------------------------------------------------------------------- exact gradient


def binary_table(n: int) -> jax.Array:
    """All ``2^n`` binary vectors of length ``n``, ``(2^n, n)`` float32."""
    return jnp.asarray(list(itertools.product((0.0, 1.0), repeat=n)), jnp.float32)


def exact_elbo(params: dict, batch: jax.Array) -> jax.Array:
    """The mean ELBO of the batch, summed exactly over the 2^12 values of ``(h1, h2)``."""
    h1, h2 = binary_table(H1_DIM), binary_table(H2_DIM)  # (256, 8), (16, 4)
    log_q1 = log_bernoulli(h1[None], q_h1_logits(params, batch)[:, None])  # (B, 256)
    local = log_bernoulli(batch[:, None], p_x_logits(params, h1)[None]) - log_q1
    log_q2 = log_bernoulli(h2[None], q_h2_logits(params, h1)[:, None])  # (256, 16)
    tail = (
        log_bernoulli(h2, params["p_h2_bias"])[None]
        + log_bernoulli(h1[:, None], p_h1_logits(params, h2)[None])
        - log_q2
    )
    weights = jnp.exp(log_q1[:, :, None] + log_q2[None])  # (B, 256, 16)
    return jnp.mean(jnp.sum(weights * (local[:, :, None] + tail[None]), axis=(1, 2)))


# ---------------------------------------------------------------------- ppl variants


def sbn_elbo(params, x, baselines, make_strategies, in_order):
    """The ELBO of one digit as a ppl program (``baselines``: per-datapoint, ``(2,)``)."""
    strategy_h1, strategy_h2 = make_strategies(baselines)
    q1 = dist.Bernoulli(logits=q_h1_logits(params, x))
    h1 = ppl.sample(q1, strategy_h1, name="h1")
    local = local_terms(params, x, h1, q1.logits)
    if in_order:  # h2's score only sees the terms after it
        ppl.add_cost(local)
        local = 0.0
    q2 = dist.Bernoulli(logits=q_h2_logits(params, h1))
    h2 = ppl.sample(q2, strategy_h2, name="h2")
    return local + tail_terms(params, h1, h2, q2.logits)


class Variant(NamedTuple):
    """A ppl estimator: strategies for (h1, h2) given the datapoint's baselines."""

    name: str
    make_strategies: Callable[[jax.Array], tuple]
    in_order: bool
    description: str


def _both(strategy):
    return lambda baselines: (strategy, strategy)


def _baselines(baselines):
    return (ppl.baseline(ppl.reinforce, baselines[0]), ppl.baseline(ppl.reinforce, baselines[1]))


VARIANTS = (
    Variant(
        PPL_REINFORCE,
        _both(ppl.reinforce),
        False,
        "`reinforce` at both sites; the ELBO is returned at the end, so both scores are "
        "multiplied by the datapoint's whole ELBO (the hand-written estimator)",
    ),
    Variant(
        "ppl reinforce, costs in order",
        _both(ppl.reinforce),
        True,
        "`reinforce`; `log p(x|h1) - log q(h1|x)` added with `ppl.add_cost` before `h2` "
        "is drawn, so `h2`'s score sees only the terms after it",
    ),
    Variant(
        "ppl reinforce + baseline",
        _baselines,
        True,
        "`baseline(reinforce, b)` at both sites, costs in order; `b` per datapoint: the "
        f"mean of the value each site's score multiplies, from {BASELINE_DRAWS} draws "
        "made beforehand",
    ),
    Variant(
        "ppl leave_one_out(4)",
        _both(ppl.leave_one_out(4)),
        True,
        "`leave_one_out(4)` at both sites (4 draws of `h1`, 4 of `h2` after each), costs in order",
    ),
    Variant(
        "ppl leave_one_out(8)",
        _both(ppl.leave_one_out(8)),
        True,
        "`leave_one_out(8)` at both sites, costs in order",
    ),
    Variant(
        PPL_ENUM,
        _both(ppl.enum),
        True,
        "`enum` at both sites: 256 values of `h1`, 16 of `h2` after each (exact)",
    ),
    Variant("ppl mvd", _both(ppl.mvd), True, "`mvd` at both sites"),
    Variant(
        "ppl mvd h1 + enum h2",
        lambda baselines: (ppl.mvd, ppl.enum),
        True,
        "`mvd` at `h1` (9 continuations), `enum` at `h2` (16 values in each)",
    ),
)


ALL_ESTIMATORS = (*(v.name for v in VARIANTS), HAND, NUMPYRO, PYRO)


def ppl_gradient(variant: Variant) -> Callable:
    """``(key, params, batch, baselines) -> grads`` of the minibatch mean ELBO, with ppl."""

    @ppl.expectation
    def elbo(params, x, baselines):
        return sbn_elbo(params, x, baselines, variant.make_strategies, variant.in_order)

    def gradient(key, params, batch, baselines):
        keys = jax.random.split(key, batch.shape[0])

        def mean_elbo(params):
            return jnp.mean(jax.vmap(elbo, (0, None, 0, 0))(keys, params, batch, baselines))

        return jax.grad(mean_elbo)(params)

    return gradient


# ------------------------------------------------------------------ hand-written JAX


def hand_draw(params: dict, key: jax.Array, batch: jax.Array):
    """One joint draw of ``(h1, h2)`` per datapoint: ``(log q, local, tail)``, each ``(B,)``."""
    key_h1, key_h2 = jax.random.split(key)
    logits1 = q_h1_logits(params, batch)
    h1 = jax.random.bernoulli(key_h1, jax.nn.sigmoid(sg(logits1))).astype(batch.dtype)
    logits2 = q_h2_logits(params, h1)
    h2 = jax.random.bernoulli(key_h2, jax.nn.sigmoid(sg(logits2))).astype(batch.dtype)
    log_q = log_bernoulli(h1, logits1) + log_bernoulli(h2, logits2)
    return log_q, local_terms(params, batch, h1, logits1), tail_terms(params, h1, h2, logits2)


def hand_surrogate(params: dict, key: jax.Array, batch: jax.Array) -> jax.Array:
    """``mean(elbo + sg(elbo) (log q - sg(log q)))`` over the batch: its gradient is REINFORCE."""
    log_q, local, tail = hand_draw(params, key, batch)
    elbo = local + tail
    return jnp.mean(elbo + sg(elbo) * (log_q - sg(log_q)))


def hand_gradient(key, params, batch, baselines):
    """The hand-written REINFORCE gradient (``baselines`` unused: one signature for all)."""
    return jax.grad(hand_surrogate)(params, key, batch)


def estimate_baselines(params: dict, key: jax.Array, batch: jax.Array, draws: int) -> jax.Array:
    """Per datapoint, ``(E[local + tail], E[tail])`` from ``draws`` guide draws, ``(B, 2)``."""
    _, local, tail = jax.vmap(hand_draw, (None, 0, None))(
        params, jax.random.split(key, draws), batch
    )
    return jnp.stack([jnp.mean(local + tail, 0), jnp.mean(tail, 0)], axis=1)


# --------------------------------------------------------------------------- NumPyro


def numpyro_model(batch: jax.Array) -> None:
    """The sigmoid belief network as a NumPyro model, a plate over the batch."""
    p = {name: numpyro.param(name, jnp.zeros(PARAM_SPECS[name][0])) for name in MODEL_PARAMS}
    size = batch.shape[0]
    with numpyro.plate("data", size):
        prior = dist.Bernoulli(logits=jnp.broadcast_to(p["p_h2_bias"], (size, H2_DIM)))
        h2 = numpyro.sample("h2", prior.to_event(1))
        h1 = numpyro.sample("h1", dist.Bernoulli(logits=p_h1_logits(p, h2)).to_event(1))
        numpyro.sample("x", dist.Bernoulli(logits=p_x_logits(p, h1)).to_event(1), obs=batch)


def numpyro_guide(batch: jax.Array) -> None:
    """The mean-field guide ``q(h1 | x) q(h2 | h1)`` as a NumPyro program."""
    p = {name: numpyro.param(name, jnp.zeros(PARAM_SPECS[name][0])) for name in GUIDE_PARAMS}
    with numpyro.plate("data", batch.shape[0]):
        h1 = numpyro.sample("h1", dist.Bernoulli(logits=q_h1_logits(p, batch)).to_event(1))
        numpyro.sample("h2", dist.Bernoulli(logits=q_h2_logits(p, h1)).to_event(1))


def numpyro_gradient(key, params, batch, baselines):
    """The gradient of the mean ELBO from NumPyro's ``TraceGraph_ELBO`` (negated loss / B)."""

    def mean_elbo(params):
        loss = TraceGraph_ELBO().loss(key, params, numpyro_model, numpyro_guide, batch)
        return -loss / batch.shape[0]

    return jax.grad(mean_elbo)(params)


# ------------------------------------------------------------------------------ Pyro


def pyro_gradient_fn(params: dict, batch: jax.Array, seed: int) -> Callable[[], dict]:
    """A call of Pyro's ``TraceGraph_ELBO.loss_and_grads``; returns the mean-ELBO gradient.

    The model and guide are the NumPyro programs written with torch and Pyro; the
    parameters live in Pyro's param store (as torch tensors with the same values).
    """
    import pyro
    import pyro.distributions as pdist
    import torch

    torch.manual_seed(seed)
    pyro.clear_param_store()
    leaves = {}
    for name in PARAM_SPECS:
        pyro.param(name, torch.tensor(np.asarray(params[name])))
        leaves[name] = pyro.param(name).unconstrained()
    x = torch.tensor(np.asarray(batch))
    size = x.shape[0]

    def model(x):
        p = {name: pyro.param(name) for name in MODEL_PARAMS}
        with pyro.plate("data", size):
            prior = pdist.Bernoulli(logits=p["p_h2_bias"].expand(size, H2_DIM))
            h2 = pyro.sample("h2", prior.to_event(1))
            h1 = pyro.sample("h1", pdist.Bernoulli(logits=p_h1_logits(p, h2)).to_event(1))
            pyro.sample("x", pdist.Bernoulli(logits=p_x_logits(p, h1)).to_event(1), obs=x)

    def guide(x):
        p = {name: pyro.param(name) for name in GUIDE_PARAMS}
        with pyro.plate("data", size):
            h1 = pyro.sample("h1", pdist.Bernoulli(logits=q_h1_logits(p, x)).to_event(1))
            pyro.sample("h2", pdist.Bernoulli(logits=q_h2_logits(p, h1)).to_event(1))

    elbo = pyro.infer.TraceGraph_ELBO(max_plate_nesting=1)

    def gradient() -> dict:
        for leaf in leaves.values():
            leaf.grad = None
        elbo.loss_and_grads(model, guide, x)
        return {name: -leaf.grad / size for name, leaf in leaves.items()}

    return gradient


def pyro_draws(params: dict, batch: jax.Array, draws: int, seed: int, bar=None) -> np.ndarray:
    """``draws`` flattened Pyro gradients, ``(draws, num_params)`` float64."""
    gradient = pyro_gradient_fn(params, batch, seed)
    rows = []
    for _ in range(draws):
        g = gradient()
        rows.append(ravel_pytree({n: np.asarray(v.detach().numpy()) for n, v in g.items()})[0])
        if bar is not None:
            bar.update(1)
    return np.asarray(rows, np.float64)


# ------------------------------------------------------------------------ statistics


def flat(grads: dict) -> jax.Array:
    return ravel_pytree(grads)[0]


def jax_draws(gradient, key, params, batch, baselines, draws, chunk, bar=None) -> np.ndarray:
    """``draws`` flattened gradients, ``jax.vmap``-ed over keys in chunks."""
    many = jax.jit(jax.vmap(lambda k: flat(gradient(k, params, batch, baselines))))
    keys = jax.random.split(key, draws)
    out = []
    for start in range(0, draws, chunk):
        out.append(np.asarray(many(keys[start : start + chunk]), np.float64))
        if bar is not None:
            bar.update(len(out[-1]))
    return np.concatenate(out)


def gradient_stats(draws: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """Bias and total variance of ``N`` gradient draws against the exact gradient.

    The error of the mean is ``e = mean - exact``. For an unbiased estimator
    ``E|e|² = tr Σ / N`` (the noise floor, squared). Two z-scores test that: ``bias_z``
    standardizes each coordinate, ``χ² = Σ_i e_i² / (var_i / N)``, and compares it with
    its mean ``d (N-1)/(N-3)`` and standard deviation ``sqrt(2 |R|²_F)`` (``R`` the
    correlation matrix of the coordinates, which are far from independent here);
    ``norm_z`` compares ``|e|²`` with ``tr Σ / N`` in units of ``sqrt(2 |Σ|²_F) / N``.
    Squared Frobenius norms are estimated from the draws, less their sampling bias.
    """
    n = draws.shape[0]
    mean = draws.mean(0)
    var = draws.var(0, ddof=1)
    error = mean - exact
    centered = draws - mean
    trace = float(var.sum())
    stats = {
        "draws": n,
        "bias_norm": float(np.linalg.norm(error)),
        "bias_se": math.sqrt(trace / n),
        "bias_z": None,
        "norm_z": None,
        "max_abs_error": float(np.abs(error).max()),
        "total_variance": trace,
        "exact_norm": float(np.linalg.norm(exact)),
    }
    noisy = var > 1e-12 * max(float(var.max()), 1e-30)
    d = int(noisy.sum())
    if d == 0 or n < MIN_DRAWS_Z:
        return stats
    frobenius = float(np.sum((centered @ centered.T / (n - 1)) ** 2))
    frobenius = max((frobenius - trace**2 / n) / (1 + 1 / n), 1e-300)
    stats["norm_z"] = float((error @ error - trace / n) / (math.sqrt(2 * frobenius) / n))
    scaled = centered[:, noisy] / np.sqrt(var[noisy])
    correlation = float(np.sum((scaled @ scaled.T / (n - 1)) ** 2))
    correlation = max((correlation - d**2 / n) / (1 + 1 / n), d)
    chi2 = float(np.sum(error[noisy] ** 2 / (var[noisy] / n)))
    stats["bias_z"] = (chi2 - d * (n - 1) / (n - 3)) / math.sqrt(2 * correlation)
    stats["chi2"], stats["chi2_dof"] = chi2, d
    return stats


def summarize_times(times: Sequence[float]) -> dict[str, float]:
    q1, med, q3 = np.percentile(np.asarray(times) * 1e3, [25, 50, 75])
    return {"median_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3), "n": len(times)}


# ---------------------------------------------------------------------------- timing


def time_round_robin(
    calls: dict[str, Callable], repeats: int, seed: int = 0, bar=None
) -> dict[str, list]:
    """Per call, ``repeats`` wall times of one call until ready, alternated round-robin.

    Every repetition runs each call in a fresh random order, and right before each
    timed call one untimed call of the same function: the timed call then sees what a
    training step sees after the previous one (threads awake, caches warm), rather
    than the state another estimator left behind (Pyro's Python work in particular).
    """
    names = list(calls)
    for name in names:
        for _ in range(WARMUP_CALLS):
            jax.block_until_ready(calls[name]())
    times: dict[str, list] = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        for index in rng.permutation(len(names)):
            call = calls[names[index]]
            jax.block_until_ready(call())
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[names[index]].append(time.perf_counter() - start)
        if bar is not None:
            bar.update(len(names))
    return times


def _count_eqns(jaxpr, counter: collections.Counter) -> None:
    for eqn in jaxpr.eqns:
        counter[eqn.primitive.name] += 1
        for sub in jaxprs_in_params(eqn.params):
            _count_eqns(sub, counter)


def program_stats(fn: Callable, *args) -> dict[str, Any]:
    """Size of the jaxpr (equations by primitive) and of the compiled XLA program."""
    counter: collections.Counter = collections.Counter()
    _count_eqns(jax.make_jaxpr(fn)(*args).jaxpr, counter)
    compiled = jax.jit(fn).lower(*args).compile()
    hlo = compiled.as_text()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else (cost or {})
    lines = [line.strip() for line in hlo.splitlines() if " = " in line]
    return {
        "jaxpr_equations": sum(counter.values()),
        "jaxpr_primitives": dict(counter.most_common()),
        "random_bits_equations": counter["random_bits"] + counter["threefry2x32"],
        "hlo_instructions": len(lines),
        "hlo_fusions": sum(" fusion(" in line for line in lines),
        "flops": float(cost.get("flops", float("nan"))),
        "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
    }


# ---------------------------------------------------------------------------- report


def _gain(reference: float, mine: float) -> float | None:
    """How many times lower ``mine`` is than ``reference`` (``None``: ``mine`` is 0)."""
    return None if mine == 0 else reference / mine


def analyse(results: dict[str, Any]) -> dict[str, Any]:
    """Work-normalized variances and the targets (for the estimators that were run)."""
    rows = results["estimators"]
    for row in rows.values():
        row["work_variance"] = row["total_variance"] * row["time"]["median_ms"] * 1e-3
    ppl_rows = {n: r for n, r in rows.items() if n.startswith("ppl")}
    sampled = [n for n, r in ppl_rows.items() if r["total_variance"] > 0]
    best = min(ppl_rows, key=lambda n: ppl_rows[n]["work_variance"], default=None)
    best_sampled = min(sampled, key=lambda n: ppl_rows[n]["work_variance"], default=None)
    analysis: dict[str, Any] = {"best_ppl": best, "best_sampled_ppl": best_sampled}
    refs = [r for r in (NUMPYRO, PYRO) if r in rows]
    for label, name in (("best", best), ("best_sampled", best_sampled)):
        if name is None or not refs:
            continue
        # None: the ppl estimator has no variance, so it is infinitely lower.
        gains = {r: _gain(rows[r]["work_variance"], rows[name]["work_variance"]) for r in refs}
        analysis[f"{label}_gain"] = gains
        analysis[f"{label}_target_met"] = all(g is None or g >= WORK_TARGET for g in gains.values())
    t = {n: r["time"]["median_ms"] for n, r in rows.items()}
    if PPL_REINFORCE in t and HAND in t:
        analysis["reinforce_over_hand"] = t[PPL_REINFORCE] / t[HAND]
        analysis["hand_target_met"] = analysis["reinforce_over_hand"] <= TIME_TARGET_HAND
    if PPL_REINFORCE in t and PYRO in t:
        analysis["pyro_over_reinforce"] = t[PYRO] / t[PPL_REINFORCE]
        analysis["pyro_target_met"] = analysis["pyro_over_reinforce"] >= SPEEDUP_TARGET_PYRO
    return analysis


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    return "0" if x == 0 else f"{x:.{digits}g}"


def table(results: dict[str, Any]) -> list[str]:
    """The results table as Markdown lines."""
    rows = results["estimators"]
    ref = rows.get(NUMPYRO)
    lines = [
        "| estimator | draws | bias ‖ḡ − g‖ | noise floor √(tr Σ/N) | bias z | total variance "
        "tr Σ | ms per gradient, median (IQR) | variance × time (s) | NumPyro's ÷ this |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        t = r["time"]
        gain = "—"
        if ref is not None:
            g = _gain(ref["work_variance"], r["work_variance"])
            gain = "∞" if g is None else _fmt(g)
        z = "—" if r["bias_z"] is None else f"{r['bias_z']:.2f}"
        if r["total_variance"] == 0:
            z = "exact"
        lines.append(
            f"| {name} | {r['draws']} | {_fmt(r['bias_norm'])} | {_fmt(r['bias_se'])} | {z} | "
            f"{_fmt(r['total_variance'])} | {t['median_ms']:.3g} ({t['q1_ms']:.3g}–"
            f"{t['q3_ms']:.3g}) | {_fmt(r['work_variance'])} | {gain} |"
        )
    return lines


def verdict(results: dict[str, Any]) -> list[str]:
    """Sentences on the targets, with the numbers."""
    a = results["analysis"]
    rows = results["estimators"]
    out = []

    def gains(label):
        return ", ".join(
            f"{ref}: {'∞' if g is None else f'{g:.3g}'}x" for ref, g in a[f"{label}_gain"].items()
        )

    if "best_gain" in a:
        met = "**met**" if a["best_target_met"] else "**missed**"
        exact = rows[a["best_ppl"]]["total_variance"] == 0
        out.append(
            f"*Work-normalized variance* (target: the best ppl estimator at least "
            f"{WORK_TARGET:.0f}x lower than both NumPyro's and Pyro's `TraceGraph_ELBO`): "
            f"{met}. The best ppl estimator is {a['best_ppl']} (lower by {gains('best')})"
            + (
                ", trivially: exact enumeration has no variance (it evaluates the 256 x 16 "
                "joint values of each digit, which does not scale to wider layers)."
                if exact
                else "."
            )
        )
        if exact and "best_sampled_gain" in a:
            met = "met" if a["best_sampled_target_met"] else "missed"
            out.append(
                f"Among the sampling estimators the best is {a['best_sampled_ppl']} (lower by "
                f"{gains('best_sampled')}): the target is {met} without exact enumeration too."
            )
        if PYRO not in rows:
            out.append("Pyro was not run, so this part of the target is only half checked.")
    if "reinforce_over_hand" in a:
        out.append(
            f"*ppl's REINFORCE against the hand-written surrogate* (target: at most "
            f"{TIME_TARGET_HAND}x its time): {a['reinforce_over_hand']:.2f}x, "
            + ("**met**." if a["hand_target_met"] else "**missed**.")
        )
    if "pyro_over_reinforce" in a:
        out.append(
            f"*ppl's REINFORCE against Pyro* (target: at least {SPEEDUP_TARGET_PYRO:.0f}x "
            f"faster): {a['pyro_over_reinforce']:.1f}x faster, "
            + ("**met**." if a["pyro_target_met"] else "**missed**.")
        )
    return out


def findings(results: dict[str, Any]) -> list[str]:
    """What the numbers say, one sentence per point (for the estimators that were run)."""
    rows = results["estimators"]
    out = [bias_sentence(results)]

    def has(*names):
        return all(n in rows for n in names)

    def var(name):
        return rows[name]["total_variance"]

    def ms(name):
        return rows[name]["time"]["median_ms"]

    base, loo4 = "ppl reinforce + baseline", "ppl leave_one_out(4)"
    if has(PPL_REINFORCE, base, loo4):
        out.append(
            f"Control variates matter most. Plain REINFORCE multiplies each score by the "
            f"whole ELBO of the digit (about {results['exact_elbo']:.0f}), so its variance "
            f"is {_fmt(var(PPL_REINFORCE))}; a per-datapoint baseline cuts it "
            f"{var(PPL_REINFORCE) / var(base):.0f}x at the same cost ({ms(base):.3g} ms), "
            f"and leave_one_out(4) {var(PPL_REINFORCE) / var(loo4):.0f}x in "
            f"{ms(loo4) / ms(PPL_REINFORCE):.1f}x the time."
        )
    order = "ppl reinforce, costs in order"
    if has(order, NUMPYRO):
        text = (
            f"Costs in order: adding `log p(x|h1) - log q(h1|x)` with `ppl.add_cost` before "
            f"`h2` is drawn gives the Rao-Blackwellization that `TraceGraph_ELBO` finds by "
            f"provenance tracking, and the same variance: {_fmt(var(order))} for ppl, "
            f"{_fmt(var(NUMPYRO))} for NumPyro"
        )
        if has(PYRO):
            text += f", {_fmt(var(PYRO))} for Pyro"
        out.append(
            text + f", against {_fmt(var(PPL_REINFORCE))} without it (ppl reinforce). "
            "Here it helps little: most of the variance comes from `h1`, whose score sees "
            "every term."
            if has(PPL_REINFORCE)
            else text + "."
        )
    mvd, hybrid = "ppl mvd", "ppl mvd h1 + enum h2"
    if has(mvd, hybrid, PPL_REINFORCE):
        out.append(
            f"Measure-valued derivatives need no score: `mvd` evaluates the rest of the "
            f"program once per flipped coordinate (9 times after `h1`, 5 after each `h2`), "
            f"{ms(mvd) / ms(PPL_REINFORCE):.1f}x the time of REINFORCE for "
            f"{var(PPL_REINFORCE) / var(mvd):.0f}x less variance; enumerating `h2` under "
            f"`mvd` at `h1` removes `h2`'s share ({_fmt(var(hybrid))} against "
            f"{_fmt(var(mvd))})."
        )
    if has(PPL_ENUM, PPL_REINFORCE):
        out.append(
            f"Exact enumeration takes {ms(PPL_ENUM):.3g} ms, "
            f"{ms(PPL_ENUM) / ms(PPL_REINFORCE):.1f}x REINFORCE's time, for 256 x 16 "
            "evaluations of the joint per digit: cheap at this size because the values are "
            "evaluated in parallel and `log p(x|h1)` only once per value of `h1`, but "
            "exponential in the layer widths."
        )
    if has("ppl leave_one_out(4)"):
        out.append(
            "With `leave_one_out(K)` at both sites, the K continuations of `h1` run with the "
            "same key, so their draws of `h2` share their random numbers (common random "
            "numbers; still unbiased): the K particles of the whole program are not "
            "independent."
        )
    program = program_sentence(results)
    if program:
        out.append(program)
    return [line for line in out if line]


def bias_sentence(results: dict[str, Any]) -> str:
    """One sentence on the bias of every estimator."""
    rows = results["estimators"]
    zs = {n: r["bias_z"] for n, r in rows.items() if r["bias_z"] is not None}
    parts = []
    if zs:
        worst = max(zs, key=lambda n: abs(zs[n]))
        flagged = [n for n, z in zs.items() if abs(z) > 4]
        if flagged:
            parts.append(
                f"the mean of the draws of {', '.join(flagged)} is further from the exact "
                f"gradient than its noise explains (|z| > 4; largest {abs(zs[worst]):.2f}, "
                f"{worst})"
            )
        else:
            parts.append(
                "every sampling estimator's mean agrees with the exact gradient within its "
                f"noise (largest |z| {abs(zs[worst]):.2f}, {worst})"
            )
    if PPL_ENUM in rows:
        parts.append(
            f"{PPL_ENUM} differs from the direct enumeration by at most "
            f"{rows[PPL_ENUM]['max_abs_error']:.2g} per coordinate (float32 rounding)"
        )
    return ("Bias: " + "; ".join(parts) + ".") if parts else ""


def program_sentence(results: dict[str, Any]) -> str:
    """Where ppl's REINFORCE program differs from the hand-written one."""
    s = results.get("programs")
    if not s:
        return ""
    mine, hand = s[PPL_REINFORCE], s[HAND]
    prims, hand_prims = mine["jaxpr_primitives"], hand["jaxpr_primitives"]

    def extra(name):
        return prims.get(name, 0) - hand_prims.get(name, 0)

    rows = results["estimators"]
    timing = ""
    if PPL_REINFORCE in rows and HAND in rows:
        timing = (
            f" At run time they take {rows[PPL_REINFORCE]['time']['median_ms']:.3g} and "
            f"{rows[HAND]['time']['median_ms']:.3g} ms."
        )
    return (
        f"ppl's REINFORCE gradient and the hand-written one, compared: "
        f"{mine['jaxpr_equations']} against {hand['jaxpr_equations']} jaxpr equations, "
        f"{mine['hlo_instructions']} against {hand['hlo_instructions']} instructions in "
        f"the compiled XLA program, {_fmt(mine['flops'])} against {_fmt(hand['flops'])} "
        f"flops and {_fmt(mine['bytes_accessed'])} against {_fmt(hand['bytes_accessed'])} "
        "bytes in XLA's cost model. The extra work: one key per digit and per site "
        f"({extra('random_fold_in')} more `random_fold_in`, vmapped over the digits, "
        "against one split for the hand-written batch), the score terms, which ppl computes "
        "with NumPyro's `Bernoulli.log_prob` (whose guard against infinite logits adds "
        f"{extra('is_finite')} `is_finite`, {extra('xor')} `xor` and {extra('select_n')} "
        "more `select_n`) next to the program's own `log q` (the hand-written surrogate "
        f"reuses its `log q`), and {extra('convert_element_type')} more dtype conversions "
        "(NumPyro samples Bernoulli values as integers)." + timing
    )


def markdown_section(results: dict[str, Any], plot_link: str | None) -> str:
    """The ``discrete-estimators`` section of ``docs/benchmarks.md``."""
    c, m, e = results["config"], results["machine"], results["exact_check"]
    variants = [
        f"* **{v.name}**: {v.description}." for v in VARIANTS if v.name in results["estimators"]
    ]
    pyro_note = (
        f"{c['pyro_draws']} for Pyro, one gradient at a time"
        if PYRO in results["estimators"]
        else "Pyro not measured"
    )
    lines = [
        "## Discrete latents: gradient estimators against the exact gradient",
        "",
        "A two-layer sigmoid belief network on binarized 8x8 digits (scikit-learn's "
        "`load_digits`, pixel > 8 → 1): `h2 ~ Bernoulli(sigmoid(b2))` (4 units), "
        "`h1 | h2 ~ Bernoulli(sigmoid(h2 W2 + b1))` (8 units), `x | h1 ~ "
        "Bernoulli(sigmoid(h1 W1 + b0))` (64 pixels); the guide `q(h1 | x) q(h2 | h1)` is "
        "mean-field Bernoulli with logistic regressions. Fixed random parameters (seed "
        f"{c['seed']}; {c['num_params']} in all), a batch of {c['batch']} digits, and the "
        "gradient of the mean over the batch of each digit's ELBO with respect to all "
        "parameters. The ELBO of a digit is a sum over the 2^12 values of `(h1, h2)`, so "
        "the exact gradient is known: from a direct vectorized JAX enumeration, and from "
        f"ppl with `enum` at both sites; the two agree to {e['max_abs_diff']:.2g} "
        f"(largest coordinate {e['max_abs_exact']:.3g}). The mean ELBO is "
        f"{results['exact_elbo']:.3f}.",
        "",
        "The estimators (ppl's as one `@ppl.expectation` per digit written with "
        "`ppl.sample`, `jax.vmap`-ed over the batch with one key per digit, `jax.grad` of "
        "the mean; every JAX estimator `jax.jit`-compiled):",
        "",
        *variants,
        f"* **{HAND}**: the score-function surrogate `elbo + sg(elbo) (log q - sg(log q))` "
        "per digit, all draws from one key with `jax.random` (the same estimator as ppl "
        "reinforce).",
        f"* **{NUMPYRO}**: `jax.grad` of `TraceGraph_ELBO().loss` over the parameter dict, "
        "the same model and guide as NumPyro programs with a plate over the batch "
        "(Rao-Blackwellized through provenance: as ppl's *costs in order*).",
        f"* **{PYRO}**: `TraceGraph_ELBO(max_plate_nesting=1).loss_and_grads` with the "
        "parameters in Pyro's param store (torch tensors of the same values), the same "
        "programs in Pyro.",
        "",
        "NumPyro's and Pyro's losses are negated ELBOs summed over the batch; their "
        "gradients are negated and divided by the batch size. *Bias* is the norm of the "
        "mean of the draws minus the exact gradient; the *noise floor* √(tr Σ/N) is the "
        "size that difference has for an unbiased estimator with these draws, and *bias z* "
        "is the z-score of the chi-square statistic Σᵢ (meanᵢ − exactᵢ)² / (varᵢ/N) over "
        "the coordinates, against its mean and its standard deviation √2 ‖R‖_F (R the "
        "correlation matrix of the coordinates, estimated from the draws; they are far from "
        "independent here), so about N(0, 1) for an unbiased estimator. *Total variance* "
        "is the trace of the covariance of one gradient over all coordinates, and "
        "*variance × time* the work-normalized variance (lower is better; the last "
        "column is NumPyro's divided by each estimator's). *Time* is the wall time of one "
        "gradient call until `block_until_ready`: median and interquartile range of "
        f"{c['repeats']} calls after {WARMUP_CALLS} warm-up calls, all estimators "
        "alternated in one process (each repetition runs every estimator once, in a random "
        "order, each timed call right after an untimed call of the same estimator, as in "
        f"a training loop); torch runs with {PYRO_THREADS} intra-op thread (the tensors are "
        "tiny, and on this 2-core machine idle torch threads slowed Pyro and the JAX call "
        f"after it). Draws: {c['draws']} per estimator ({min(ENUM_DRAWS, c['draws'])} for "
        f"ppl enum, which is deterministic; {pyro_note}).",
        "",
        *table(results),
        "",
        "### Targets",
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
            f"![Total variance against time per gradient, log-log]({plot_link})",
            "",
            "Total variance against time per gradient (log-log); the dotted lines are "
            "NumPyro's work-normalized variance and a tenth of it. Exact enumeration has "
            "no variance and is drawn at the bottom edge.",
        ]
    lines += [
        "",
        f"Machine: JAX {m['jax']} on `{m['backend']}` ({m['cpu_count']} CPU cores, "
        f"{m['cpu']}), NumPyro {m['numpyro']}, "
        + (
            f"Pyro {m['pyro']} with torch {m['torch']} ({m['torch_threads']} intra-op thread), "
            if m.get("pyro")
            else ""
        )
        + f"ppl {m['ppl']} (commit {m['ppl_revision']}), Python {m['python']}; measured "
        f"{m['date']}. Reproduce with `python benchmarks/discrete_estimators.py` (raw "
        "numbers in `benchmarks/discrete_estimators.json`).",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Total variance against time per gradient, log-log, one labeled point per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = results["estimators"]
    positive = [r["total_variance"] for r in rows.values() if r["total_variance"] > 0]
    floor = min(positive) / 10 if positive else 1e-3
    times = [r["time"]["median_ms"] for r in rows.values()]
    fig, ax = plt.subplots(figsize=(9.0, 5.0))
    markers = itertools.cycle("osD^<>pPhX*")
    colors = itertools.cycle(("C0", "C2", "C4", "C5", "C6", "C8", "C9", "navy", "teal"))
    for name, r in rows.items():
        t, v = r["time"]["median_ms"], r["total_variance"]
        color = {HAND: "0.4", NUMPYRO: "C1", PYRO: "C3"}.get(name) or next(colors)
        if v == 0:
            ax.scatter(
                t,
                floor,
                color=color,
                marker="v",
                s=60,
                zorder=3,
                label=f"{name} (variance 0, drawn at the bottom)",
            )
        else:
            ax.scatter(t, v, color=color, marker=next(markers), s=50, zorder=3, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    xs = np.geomspace(min(times) / 1.5, max(times) * 1.5, 50)
    ax.set_xlim(xs[0], xs[-1])
    if NUMPYRO in rows:
        w = rows[NUMPYRO]["work_variance"]
        for factor, style in ((1.0, ":"), (0.1, "--")):
            ax.plot(
                xs,
                factor * w / (xs * 1e-3),
                style,
                color="C1",
                lw=0.8,
                label=f"{'' if factor == 1 else '1/10 of '}NumPyro's variance × time",
            )
    top = max(positive) * 3 if positive else 1.0
    ax.set_ylim(floor / 2, top)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("time per gradient (ms, median)")
    ax.set_ylabel("total variance of one gradient (trace of covariance)")
    ax.set_title(
        f"Sigmoid belief network, batch {results['config']['batch']}: variance against time"
    )
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def machine_info(with_pyro: bool) -> dict[str, Any]:
    """The software versions and hardware the numbers were measured with."""
    info = common_machine_info()
    if with_pyro:
        import pyro
        import torch

        info.update(pyro=pyro.__version__, torch=torch.__version__)
        info["torch_threads"] = torch.get_num_threads()
    return info


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--quick`` changes the defaults of the other options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="digits per batch")
    parser.add_argument(
        "--draws",
        type=int,
        help=f"gradient draws per estimator (default {DEFAULT_DRAWS}; {QUICK_DRAWS} with --quick)",
    )
    parser.add_argument("--pyro-draws", type=int, help="draws for Pyro (default: --draws)")
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"timed calls per estimator, at least {MIN_REPEATS} (default {DEFAULT_REPEATS}; "
        f"{QUICK_REPEATS} with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, parameters, keys")
    parser.add_argument("--out", type=Path, help=f"JSON path (default {DEFAULT_JSON})")
    parser.add_argument(
        "--markdown", type=Path, help=f"page whose section is replaced ({DEFAULT_MARKDOWN})"
    )
    parser.add_argument("--plot", type=Path, help=f"PNG path (default {DEFAULT_PLOT})")
    parser.add_argument("--skip-pyro", action="store_true", help="do not run Pyro")
    parser.add_argument(
        "--estimators",
        nargs="+",
        choices=ALL_ESTIMATORS,
        default=list(ALL_ESTIMATORS),
        metavar="NAME",
        help="run only these estimators (names as in the table; default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: few draws and repeats; no files unless --out/--markdown/--plot",
    )
    args = parser.parse_args(argv)
    if args.skip_pyro:
        args.estimators = [n for n in args.estimators if n != PYRO]
    if args.draws is None:
        args.draws = QUICK_DRAWS if args.quick else DEFAULT_DRAWS
    if args.pyro_draws is None:
        args.pyro_draws = args.draws
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if not args.quick:
        args.out = args.out or DEFAULT_JSON
        args.markdown = args.markdown or DEFAULT_MARKDOWN
        args.plot = args.plot or DEFAULT_PLOT
        if args.repeats < MIN_REPEATS:
            parser.error(f"--repeats must be at least {MIN_REPEATS} (--quick for a smoke test)")
    if args.draws < 2 or args.pyro_draws < 2 or args.repeats < 1 or args.batch < 1:
        parser.error("--draws and --pyro-draws must be at least 2, --repeats and --batch positive")
    return args


def check_enumeration(params, batch, baselines, key) -> tuple[np.ndarray, dict[str, Any]]:
    """The exact gradient by direct enumeration, checked against ppl's ``enum``."""
    direct = np.asarray(flat(jax.jit(jax.grad(exact_elbo))(params, batch)), np.float64)
    enum = next(v for v in VARIANTS if v.name == PPL_ENUM)
    from_ppl = np.asarray(flat(jax.jit(ppl_gradient(enum))(key, params, batch, baselines)))
    diff = float(np.abs(from_ppl - direct).max())
    scale = float(np.abs(direct).max())
    check = {
        "max_abs_diff": diff,
        "max_abs_exact": scale,
        "relative": diff / scale,
        "tolerance": ENUM_TOLERANCE,
        "agree": diff <= ENUM_TOLERANCE * scale,
    }
    if not check["agree"]:
        raise AssertionError(f"ppl.enum and the direct enumeration disagree: {check}")
    return direct, check


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Check, measure, print and write the results."""
    args = parse_args(argv)
    with_pyro = PYRO in args.estimators
    if with_pyro:
        try:
            import pyro  # noqa: F401
            import torch
        except ImportError:
            print("Pyro is not installed: its row is skipped")
            with_pyro = False
        else:
            torch.set_num_threads(PYRO_THREADS)
    key_params, key_baselines, key_draws, key_time = jax.random.split(jax.random.key(args.seed), 4)
    batch = load_batch(args.batch, args.seed)
    params = init_params(key_params)
    baselines = estimate_baselines(params, key_baselines, batch, BASELINE_DRAWS)

    exact, check = check_enumeration(params, batch, baselines, key_time)
    print(
        f"exact gradient: ppl.enum and the direct enumeration agree to {check['max_abs_diff']:.2g} "
        f"(largest coordinate {check['max_abs_exact']:.3g})"
    )
    gradients = {v.name: ppl_gradient(v) for v in VARIANTS}
    gradients[HAND] = hand_gradient
    gradients[NUMPYRO] = numpyro_gradient
    gradients = {n: g for n, g in gradients.items() if n in args.estimators}
    draws = {n: args.draws for n in gradients}
    if PPL_ENUM in draws:
        draws[PPL_ENUM] = min(ENUM_DRAWS, args.draws)

    results: dict[str, Any] = {
        "config": {
            "batch": args.batch,
            "draws": args.draws,
            "pyro_draws": args.pyro_draws if with_pyro else None,
            "repeats": args.repeats,
            "warmup_calls": WARMUP_CALLS,
            "seed": args.seed,
            "quick": args.quick,
            "baseline_draws": BASELINE_DRAWS,
            "num_params": int(exact.size),
            "estimators": list(gradients) + ([PYRO] if with_pyro else []),
        },
        "machine": machine_info(with_pyro),
        "exact_elbo": float(jax.jit(exact_elbo)(params, batch)),
        "exact_check": check,
        "estimators": {},
    }
    total = sum(draws.values()) + (args.pyro_draws if with_pyro else 0)
    total += (len(gradients) + with_pyro) * args.repeats
    with tqdm(total=total, desc="discrete estimators", unit="gradient") as bar:
        samples = {}
        for i, (name, gradient) in enumerate(gradients.items()):
            bar.set_postfix_str(name)
            key = jax.random.fold_in(key_draws, i)
            chunk = 1 if name == PPL_ENUM else CHUNK
            samples[name] = jax_draws(
                gradient, key, params, batch, baselines, draws[name], chunk, bar
            )
        if with_pyro:
            bar.set_postfix_str(PYRO)
            samples[PYRO] = pyro_draws(params, batch, args.pyro_draws, args.seed, bar)
        for name, s in samples.items():
            results["estimators"][name] = gradient_stats(s, exact)

        bar.set_postfix_str("timing")
        calls = {}
        for name, gradient in gradients.items():
            compiled = jax.jit(gradient)
            calls[name] = lambda c=compiled: c(key_time, params, batch, baselines)
        if with_pyro:
            calls[PYRO] = pyro_gradient_fn(params, batch, args.seed)
        times = time_round_robin(calls, args.repeats, args.seed, bar)
    for name, t in times.items():
        results["estimators"][name]["time"] = summarize_times(t)
        results["estimators"][name]["raw_times_s"] = t
    if PPL_REINFORCE in gradients and HAND in gradients:
        results["programs"] = {
            name: program_stats(
                lambda k, p, g=gradients[name]: g(k, p, batch, baselines), key_time, params
            )
            for name in (PPL_REINFORCE, HAND)
        }
    results["analysis"] = analyse(results)

    print()
    print("\n".join(table(results)))
    print()
    for line in (*verdict(results), bias_sentence(results), program_sentence(results)):
        if line:
            print(line)

    write_outputs(results, args, "discrete-estimators", plot, markdown_section)
    return results


if __name__ == "__main__":
    main()
