"""AIR as NumPyro programs, and its objectives with a ``z_pres`` strategy per run.

Generative model for one canvas ``x`` (Eslami et al. 2016, sec. 2), at most ``T = 3``
steps; ``pres_t = Π_{s≤t} z_pres_s`` (the count process stops after the first zero)::

    z_pres_t  ~ Bernoulli(ρ)                       (masked unless pres_{t-1} = 1)
    z_where_t ~ Normal((s₀, 0, 0), (σ_s, 1, 1))    (scale, x, y; masked unless pres_t = 1)
    z_what_t  ~ Normal(0, I_50)                    (masked unless pres_t = 1)
    x         ~ Normal(Σ_t pres_t · ST(z_where_t, sigmoid(dec(z_what_t))), 0.3²)

``ST`` the spatial transformer placing a 20x20 window on the canvas. Masked sites are
still drawn, from the same distribution in model and guide, but their log density is
scaled by ``pres`` (``numpyro.handlers.scale``): their ratio is 1, so the objective is AIR's ELBO,
and enumerating a ``z_pres`` after a zero simply evaluates the same program twice (no
``0 · log 0`` in any branch).

Guide (sec. 2.2): an LSTM reads ``(x, z_where_{t-1}, z_what_{t-1}, pres_{t-1})`` and
predicts ``q(z_pres_t) = Bernoulli(p_t)`` and ``q(z_where_t) = Normal(µ_t, σ_t)``; the
inverse transformer crops the window at ``z_where_t`` and an MLP encoder gives
``q(z_what_t | window) = Normal``. The networks are those of the PLDI 2024 artifact
(Becker et al., Fig. 7): ``LSTMCell(2554, 256)``, ``Linear(256, 7)``, decoder
``50 -> 200 -> 400``; the encoder is ``400 -> 200 -> 100`` as in Pyro's AIR example.

The estimators (the paper's Fig. 7 and Table 2) are strategy maps over the sites
``z_pres_0..2`` given to ``ppl.sim``; ``z_where`` and ``z_what`` are reparameterized.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

import ppl
from ppl_zoo.air._nets import (
    image_to_window,
    init_linear,
    init_lstm,
    init_mlp,
    linear,
    lstm_input_projection,
    lstm_projected,
    mlp,
    window_to_image,
)

__all__ = [
    "ESTIMATORS",
    "Sizes",
    "init_params",
    "model",
    "guide",
    "z_pres_strategies",
    "make_objective",
    "batch_objective",
    "infer_counts",
    "decoded_windows",
]

ESTIMATORS = (
    "reinforce",
    "enum",
    "mvd",
    "hybrid",
    "iwae_reinforce",
    "iwae_mvd",
    "rws",
)
"""The estimators: REINFORCE with a learned baseline, enumeration, MVD, the hybrid
(MVD for ``z_pres_0, z_pres_1``, enum for the last), IWAE(2) with REINFORCE (+ baseline)
and with MVD, and reweighted wake-sleep."""

BASELINE_SCALE = 100.0  # the baseline network's output, in nats, per unit


class Sizes(dict):
    """Architecture sizes (a dict, so it goes through configs and JSON)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sizes:
        keys = ("canvas_size", "window_size", "z_what", "lstm", "decoder", "encoder")
        return cls({k: int(config[k]) for k in keys})


def init_params(key: jax.Array, sizes: Mapping[str, int]) -> dict:
    """Decoder, guide (LSTM, predictor, encoder) and baseline network parameters."""
    pixels, window = sizes["canvas_size"] ** 2, sizes["window_size"] ** 2
    z_what, hidden = sizes["z_what"], sizes["lstm"]
    keys = jax.random.split(key, 5)
    return {
        # the decoder's output bias -2 starts with dark windows (Pyro's AIR example)
        "decoder": init_mlp(keys[0], [z_what, sizes["decoder"], window], last_bias=-2.0),
        "guide": {
            # the canvas's rows of the LSTM's matrix apart: lstm_input_projection
            "lstm": init_lstm(keys[1], pixels + 3 + z_what + 1, hidden, projected_size=pixels),
            "predict": init_linear(keys[2], hidden, 7),
            "encoder": init_mlp(keys[3], [window, sizes["encoder"], 2 * z_what]),
        },
        "baseline": init_mlp(keys[4], [pixels, 32, 3]),
    }


def _render(decoder, z_what, z_where, window_size, canvas_size):
    """The decoded object ``sigmoid(dec(z_what))`` placed on the canvas at ``z_where``."""
    window = jax.nn.sigmoid(mlp(decoder, z_what)).reshape(window_size, window_size)
    return window_to_image(z_where, window, canvas_size)


def model(
    x: jax.Array,
    num_steps: int = 3,
    pres_prior: float = 0.5,
    scale_prior=(2.8, 0.3),
    residual: bool = False,
):
    """AIR's generative model for one flattened canvas ``x``; returns the mean canvas.

    ``residual`` is the guide's option (the model is the same either way)."""
    decoder = numpyro.param("decoder")
    window_size = int(math.isqrt(decoder[-1]["b"].shape[0]))
    canvas_size = int(math.isqrt(x.shape[-1]))
    z_what_size = decoder[0]["w"].shape[0]
    where_loc = jnp.array([scale_prior[0], 0.0, 0.0])
    where_scale = jnp.array([scale_prior[1], 1.0, 1.0])
    canvas = jnp.zeros((canvas_size, canvas_size))
    pres = jnp.ones(())
    for t in range(num_steps):
        with handlers.scale(scale=pres):
            z_pres = numpyro.sample(f"z_pres_{t}", dist.Bernoulli(probs=pres_prior))
        pres = pres * z_pres
        with handlers.scale(scale=pres):
            z_where = numpyro.sample(
                f"z_where_{t}", dist.Normal(where_loc, where_scale).to_event(1)
            )
            z_what = numpyro.sample(
                f"z_what_{t}", dist.Normal(jnp.zeros(z_what_size), 1.0).to_event(1)
            )
        canvas = canvas + pres * _render(decoder, z_what, z_where, window_size, canvas_size)
    numpyro.sample("x", dist.Normal(canvas.reshape(-1), 0.3).to_event(1), obs=x)
    return canvas


def guide(
    x: jax.Array,
    num_steps: int = 3,
    pres_prior: float = 0.5,
    scale_prior=(2.8, 0.3),
    residual: bool = False,
):
    """AIR's recurrent inference network; returns ``pres_t`` for each step ``(num_steps,)``.

    With ``residual`` the LSTM reads, at each step, what is left of the canvas once the
    objects found so far are subtracted (``x - Σ_{s<t} pres_s ST(z_where_s,
    sigmoid(dec(z_what_s)))``, with the model's decoder): DAIR, Eslami et al. 2016,
    sec. 3.1. Otherwise it reads the canvas itself, projected once per canvas."""
    net = numpyro.param("guide")
    hidden = net["lstm"]["w"].shape[1] // 4
    z_what_size = net["encoder"][-1]["b"].shape[0] // 2
    window_size = int(math.isqrt(net["encoder"][0]["w"].shape[0]))
    canvas_size = int(math.isqrt(x.shape[-1]))
    image = x.reshape(canvas_size, canvas_size)
    state = (jnp.zeros(hidden), jnp.zeros(hidden))
    z_where = jnp.zeros(3)
    z_what = jnp.zeros(z_what_size)
    pres = jnp.ones(())
    presence = []
    if residual:
        decoder = numpyro.param("decoder")
        explained = jnp.zeros(x.shape[-1])
    else:
        projected = lstm_input_projection(net["lstm"], x)  # the canvas part, once per canvas
    for t in range(num_steps):
        if residual:
            projected = lstm_input_projection(net["lstm"], x - explained)
        inputs = jnp.concatenate([z_where, z_what, pres[None]])
        state = lstm_projected(net["lstm"], projected, inputs, state)
        out = linear(net["predict"], state[0])
        p_pres = jax.nn.sigmoid(out[0] + 2.0)  # starts near 0.9: every step tried
        where_loc = out[1:4] + jnp.array([scale_prior[0], 0.0, 0.0])
        where_scale = jax.nn.softplus(out[4:7] - 2.0) + 1e-3
        with handlers.scale(scale=pres):
            z_pres = numpyro.sample(f"z_pres_{t}", dist.Bernoulli(probs=p_pres))
        pres = pres * z_pres
        with handlers.scale(scale=pres):
            z_where = numpyro.sample(
                f"z_where_{t}", dist.Normal(where_loc, where_scale).to_event(1)
            )
            window = image_to_window(z_where, image, window_size).reshape(-1)
            what_loc, what_raw = jnp.split(mlp(net["encoder"], window), 2)
            z_what = numpyro.sample(
                f"z_what_{t}",
                dist.Normal(what_loc, jax.nn.softplus(what_raw) + 1e-3).to_event(1),
            )
        if residual:
            drawn = _render(decoder, z_what, z_where, window_size, canvas_size)
            explained = explained + pres * drawn.reshape(-1)
        presence.append(pres)
    return jnp.stack(presence)


def z_pres_strategies(estimator: str, baselines: jax.Array, num_steps: int = 3) -> dict:
    """The strategy of each ``z_pres_t`` site for ``estimator`` (see `ESTIMATORS`)."""
    names = [f"z_pres_{t}" for t in range(num_steps)]
    if estimator in ("reinforce", "iwae_reinforce"):
        return {
            n: ppl.baseline(ppl.reinforce, baselines[t], learn=True) for t, n in enumerate(names)
        }
    if estimator == "enum":
        return {n: ppl.enum for n in names}
    if estimator in ("mvd", "iwae_mvd"):
        return {n: ppl.mvd for n in names}
    if estimator == "hybrid":
        return {n: (ppl.enum if t == num_steps - 1 else ppl.mvd) for t, n in enumerate(names)}
    if estimator == "rws":
        return {}
    raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}.")


def make_objective(
    estimator: str,
    num_steps: int = 3,
    pres_prior: float = 0.5,
    scale_prior=(2.8, 0.3),
    rws_particles: int = 10,
    residual: bool = False,
) -> ppl.Expectation:
    """The per-canvas objective of ``estimator``, an Expectation of ``(params, x)``.

    * ``reinforce``, ``enum``, ``mvd``, ``hybrid``: the ELBO ``log p(x, z) - log q(z)``
      with ``z ~ q`` (Eslami et al. 2016, eq. 2; ``ppl.objectives.elbo`` but for
      REINFORCE, whose signal is the whole log weight), the ``z_pres`` sites under the
      estimator's strategies. REINFORCE's baseline ``b_t(x)`` is a small network of the
      canvas, one output per step, fitted to the rest of the objective as it trains
      (``ppl.baseline(..., learn=True)``; Mnih & Gregor 2014).
    * ``iwae_reinforce``, ``iwae_mvd``: IWAE(2), ``log ½ (w_1 + w_2)`` (Burda et al.
      2016; ``ppl.objectives.iwae``), the two particles drawn with ``ppl.particles``.
      MVD's continuations run vectorized over the particles, each particle's
      alternatives seeing only their own lane.
    * ``rws``: reweighted wake-sleep (``ppl.objectives.rws``; Bornschein & Bengio 2015;
      Le et al. 2019): ``z`` from ``ppl.normalize(model, guide, num_particles=K)``
      (SIR, no gradient through the draw) and ``log p(x, z) + log q(z)``: the model's
      parameters get the wake-p gradient, the guide's the wake-q gradient, from the
      same draw.
    """
    options = (num_steps, pres_prior, tuple(scale_prior), bool(residual))
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}.")

    def strategies(params, x):
        baselines = BASELINE_SCALE * mlp(params["baseline"], x)
        return z_pres_strategies(estimator, baselines, num_steps)

    def air_model(x):
        return model(x, *options)

    def air_guide(x):
        return guide(x, *options)

    if estimator == "reinforce":
        # REINFORCE's learning signal is the whole log weight here, as recorded on
        # docs/zoo/air.md; ppl.objectives.elbo would split it into per-site costs
        # (each z_pres site seeing only the terms after it), another estimator.

        @ppl.expectation
        def elbo(params, x):
            trace = ppl.sim(air_guide, x, params=params, strategies=strategies(params, x))
            return ppl.density(air_model, trace.choices, x, params=params) - trace.log_density

        return elbo
    if estimator in ("enum", "mvd", "hybrid"):
        return ppl.objectives.elbo(air_model, air_guide, strategies=strategies)
    if estimator in ("iwae_reinforce", "iwae_mvd"):
        return ppl.objectives.iwae(air_model, air_guide, num_particles=2, strategies=strategies)
    # the SIR draws are held fixed (RWS's wake phases); a score term would bias them
    return ppl.objectives.rws(air_model, air_guide, num_particles=rws_particles)


def batch_objective(objective: ppl.Expectation):
    """``(key, params, images) -> mean over the minibatch`` for ``ppl.fit``: one key per
    canvas, ``jax.vmap`` over the canvases (the mean of unbiased estimates is unbiased)."""

    mean = ppl.parallel.batch_mean(objective)

    def batched(key, params, images):
        return mean(key, params, images.reshape(images.shape[0], -1))

    return batched


def _greedy(params, x, num_steps, residual=False):
    """The guide run at its modes: ``z_pres_t = 1{p_t > ½}``, means for the rest."""
    modes = {}

    def fill(msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            fn = msg["fn"]
            base = fn.base_dist if hasattr(fn, "base_dist") else fn
            if isinstance(base, dist.Normal):
                msg["value"] = base.loc
            else:
                msg["value"] = (base.probs > 0.5).astype(jnp.float32)
            modes[msg["name"]] = msg["value"]

    with handlers.substitute(data=params):
        with handlers.seed(rng_seed=0), handlers.trace() as trace:
            with _Hook(fill):
                presence = guide(x, num_steps, residual=residual)
    return presence, {k: v["value"] for k, v in trace.items() if v["type"] == "sample"}


class _Hook(numpyro.primitives.Messenger):
    def __init__(self, hook):
        self.hook = hook
        super().__init__()

    def process_message(self, msg):
        self.hook(msg)


def infer_counts(
    params: dict, images: jax.Array, num_steps: int = 3, residual: bool = False
) -> jax.Array:
    """The guide's object count for each canvas, at its modes (greedy decoding)."""
    flat = images.reshape(images.shape[0], -1)
    presence = jax.vmap(lambda x: _greedy(params, x, num_steps, residual)[0])(flat)
    return jnp.sum(presence, axis=-1).astype(jnp.int32)


def decoded_windows(params: dict, images: jax.Array, num_steps: int = 3, residual: bool = False):
    """Presence ``(n, T)`` and ``z_where`` ``(n, T, 3)`` at the guide's modes, and the
    model's reconstruction ``(n, size, size)``, for plots."""
    flat = images.reshape(images.shape[0], -1)

    def one(x):
        presence, choices = _greedy(params, x, num_steps, residual)
        with handlers.substitute(data={**params, **choices}), handlers.seed(rng_seed=0):
            canvas = model(x, num_steps)
        where = jnp.stack([choices[f"z_where_{t}"] for t in range(num_steps)])
        return presence, where, canvas

    return jax.vmap(one)(flat)
