"""SSVI training: a jitted optax loop around ppl's gradient estimator with the γ-step inside.

Li, Miao, Qiu, Zhang, ICLR 2024, Algorithm 1, as in the reference code: φ-steps (Adam
here) on the tempered LRT ELBO of `ppl_zoo.ssvi._model.tempered_elbo`; every ``ΔT``
steps while ``t < T_end`` the optimizer step is replaced by the γ-step (removal and
addition at a constant number of active weights per layer, `ppl_zoo.ssvi._subspace`).
The γ-step replaces an optimizer step and ranks by that step's gradient, so it runs
inside the compiled step rather than between ``ppl.Trainer.run`` calls (which would
need a second gradient evaluation): this module writes the loop itself. Each step
calls ``Expectation.value_and_grad_estimate`` (ppl's public API), whose gradient with
respect to the dense-shaped, masked mean is also the ``|∂L/∂µ|`` the addition step
ranks. The whole run is one ``lax.scan`` per chunk of steps; the number of exchanged
weights is traced, so nothing recompiles.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from tqdm.auto import tqdm

from ppl_zoo.ssvi._model import subspace_weights, tempered_elbo
from ppl_zoo.ssvi._network import forward, forward_flops
from ppl_zoo.ssvi._subspace import CRITERIA, criterion_index, exchange, exchange_fraction

__all__ = [
    "Settings",
    "settings_from_config",
    "layer_counts",
    "train_run",
    "predict",
    "training_flops",
    "num_updates",
    "init_state",
    "shift_examples",
]


class Settings(NamedTuple):
    """Everything static about one training run (hashable: part of the compiled step).

    Attributes:
        num_steps: optimizer iterations (``epochs · ⌊N / batch_size⌋``).
        steps_per_epoch: minibatches per epoch (the last partial batch is dropped).
        batch_size: examples per minibatch.
        num_train: ``N``, the training-set size (the KL is divided by it).
        learning_rate: Adam's initial rate, cosine-decayed to 0 over the run.
        prior_std: ``σ_p`` of the Gaussian prior.
        kl_scale: ``κ``, the tempering of the KL (the reference uses 0.01).
        warmup_fraction: the KL weight ``λ_t`` rises linearly from 0 to 1 over this
            fraction of the run (the reference: 0.5); 0 means ``λ_t = 1``.
        update: whether the γ-step runs (``False``: a static support).
        criterion: the removal score (a key of `CRITERIA`).
        delta: ``ΔT``, steps between γ-steps.
        alpha: ``α``, the initial exchanged fraction (cosine-decayed).
        end_fraction: ``T_end`` as a fraction of the run (the reference: 0.75).
        grow_std: ``"mean"`` (new ``ρ`` = mean ``ρ`` of the layer's kept entries) or
            ``"eps"`` (``softplus⁻¹(1e-6)``).
        lam: ``λ`` of the exponential criteria.
        shift: data augmentation: each training example moves by a random whole number
            of positions in ``[-shift, shift]`` along its first axis, zero-filled (the
            1-D analogue of the reference's random crop with padding; see
            `shift_examples`); 0 (the default) is no augmentation.
    """

    num_steps: int
    steps_per_epoch: int
    batch_size: int
    num_train: int
    learning_rate: float = 1e-2
    prior_std: float = 0.1
    kl_scale: float = 0.01
    warmup_fraction: float = 0.5
    update: bool = True
    criterion: str = "SNR_mean_abs"
    delta: int = 50
    alpha: float = 0.3
    end_fraction: float = 0.75
    grow_std: str = "mean"
    lam: float = 1.0
    shift: int = 0

    @property
    def end_step(self) -> int:
        return max(1, int(self.end_fraction * self.num_steps))


def settings_from_config(config: Mapping[str, Any], num_train: int, **overrides) -> Settings:
    """`Settings` from a zoo configuration dict (``epochs``, ``batch_size``, ...).

    Raises:
        ValueError: naming the key, for a batch larger than the data, an unknown
            criterion or ``grow_std``, or non-positive sizes.
    """
    config = {**config, **overrides}
    batch_size = int(config["batch_size"])
    if batch_size < 1 or batch_size > num_train:
        raise ValueError(
            f"config['batch_size']={batch_size} must be between 1 and the {num_train} "
            f"training examples."
        )
    if int(config["epochs"]) < 1:
        raise ValueError(f"config['epochs'] must be at least 1, got {config['epochs']}.")
    if config["criterion"] not in CRITERIA:
        raise ValueError(
            f"config['criterion'] must be one of {sorted(CRITERIA)}, got {config['criterion']!r}."
        )
    if config["grow_std"] not in ("mean", "eps"):
        raise ValueError(f"config['grow_std'] must be 'mean' or 'eps', got {config['grow_std']!r}.")
    if int(config.get("shift", 0)) < 0:
        raise ValueError(f"config['shift'] must be at least 0, got {config['shift']}.")
    if int(config["delta"]) < 1:
        raise ValueError(f"config['delta'] must be at least 1, got {config['delta']}.")
    steps_per_epoch = num_train // batch_size
    return Settings(
        num_steps=int(config["epochs"]) * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        num_train=num_train,
        learning_rate=float(config["learning_rate"]),
        prior_std=float(config["prior_std"]),
        kl_scale=float(config["kl_scale"]),
        warmup_fraction=float(config["warmup_fraction"]),
        update=bool(config.get("update", True)),
        criterion=str(config["criterion"]),
        delta=int(config["delta"]),
        alpha=float(config["alpha"]),
        end_fraction=float(config["end_fraction"]),
        grow_std=str(config["grow_std"]),
        lam=float(config.get("lam", 1.0)),
        shift=int(config.get("shift", 0)),
    )


def layer_counts(arch: tuple, density: float) -> dict:
    """Active weights per layer for an overall ``density`` of the variational weights.

    Layers with ``sparse=False`` (the CNN's first convolution) stay dense; the sparse
    layers share one density chosen so that the total is ``round(density · d)``.

    Raises:
        ValueError: if ``density`` is not in (0, 1] or is too low to keep the dense
            layers and one weight per sparse layer.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}.")
    sizes = {layer.name: math.prod(layer.shape) for layer in arch}
    if density == 1.0:
        return sizes
    total = sum(sizes.values())
    fixed = sum(sizes[layer.name] for layer in arch if not layer.sparse)
    free = total - fixed
    target = round(density * total) - fixed
    if target < sum(1 for layer in arch if layer.sparse):
        raise ValueError(f"density={density} is too low for this network (dense layers: {fixed}).")
    counts = {
        layer.name: sizes[layer.name]
        if not layer.sparse
        else max(1, int(sizes[layer.name] * target / free))
        for layer in arch
    }
    sparse_names = [layer.name for layer in arch if layer.sparse]
    largest = max(sparse_names, key=lambda name: sizes[name])
    counts[largest] += round(density * total) - sum(counts.values())
    return counts


def num_updates(settings: Settings) -> int:
    """How many γ-steps the run makes (``0 < t < T_end`` with ``t mod ΔT = 0``)."""
    if not settings.update:
        return 0
    return len(range(settings.delta, settings.end_step, settings.delta))


def training_flops(arch: tuple, counts: dict, settings: Settings) -> float:
    """Analytic training FLOPs of a run at constant active counts ``counts``.

    Each φ-step costs ``3 × B ×`` the sparse LRT forward pass (forward, and the two
    backward products, each proportional to the active weights); each γ-step replaces
    a φ-step by the sparse forward pass, the sparse backward pass to the activations
    and the dense weight gradient (the dense ``∂L/∂µ``): ``2 f_S + f_D``, as RigL counts
    it (Evci et al., "Rigging the Lottery", ICML 2020).
    """
    sparse = forward_flops(arch, counts)
    dense = forward_flops(arch)
    updates = num_updates(settings)
    per_example = (settings.num_steps - updates) * 3.0 * sparse + updates * (2.0 * sparse + dense)
    return per_example * settings.batch_size


def _kl_weight(settings: Settings, step):
    if settings.warmup_fraction > 0:
        ramp = jnp.minimum(step / (settings.warmup_fraction * settings.num_steps), 1.0)
    else:
        ramp = jnp.ones(())
    return ramp * settings.kl_scale / settings.num_train


def shift_examples(key: jax.Array, x: jax.Array, shift: int) -> jax.Array:
    """Each example of ``x`` (rows of a batch) moved by a random ``s ∈ [-shift, shift]``
    positions along its first axis (the series axis of MNIST-1D's ``(N, 40, 1)``),
    zero-filled: ``out[n, i] = x[n, i - s]`` where ``0 ≤ i - s < length``."""
    if shift == 0:
        return x
    length = x.shape[1]
    offsets = jax.random.randint(key, x.shape[:1], -shift, shift + 1)
    padded = jnp.pad(x, [(0, 0), (shift, shift)] + [(0, 0)] * (x.ndim - 2))

    def one(row, offset):
        return lax.dynamic_slice_in_dim(row, shift - offset, length, axis=0)

    return jax.vmap(one)(padded, offsets)


def _optimizer(settings: Settings) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(settings.learning_rate, settings.num_steps)
    return optax.adam(schedule)


def _gamma_step(settings, arch, step, params, masks, grad_loc, criterion):
    fraction = exchange_fraction(step, settings.alpha, settings.end_step)
    new_params, new_masks, kept_tree, moved = {}, {}, {}, jnp.zeros((), jnp.int32)
    for layer in arch:
        name, entry, mask = layer.name, params[layer.name], masks[layer.name]
        if not layer.sparse:
            new_params[name], new_masks[name] = entry, mask
            kept_tree[name] = jax.tree.map(jnp.ones_like, entry)
            continue
        num_drop = jnp.floor(jnp.sum(mask) * fraction).astype(jnp.int32)
        scale = jax.nn.softplus(entry["rho"])
        new_mask, kept, grown = exchange(
            mask, entry["loc"], scale, grad_loc[name], num_drop, criterion, settings.lam
        )
        if settings.grow_std == "mean":
            grown_rho = jnp.sum(jnp.where(kept, entry["rho"], 0.0)) / jnp.maximum(jnp.sum(kept), 1)
        else:
            grown_rho = jnp.log(jnp.expm1(1e-6))
        new_params[name] = {
            "loc": jnp.where(kept, entry["loc"], 0.0),
            "rho": jnp.where(kept, entry["rho"], jnp.where(grown, grown_rho, 0.0)),
            "bias": entry["bias"],
        }
        new_masks[name] = new_mask
        kept_tree[name] = {"loc": kept, "rho": kept, "bias": jnp.ones_like(entry["bias"])}
        moved = moved + jnp.sum(grown).astype(jnp.int32)
    return new_params, new_masks, kept_tree, moved


def _compiled_settings(settings: Settings) -> Settings:
    """The static part: ``update`` and ``criterion`` travel as traced arguments instead,
    so arms that differ only in them (or in density) share one compiled program."""
    return settings._replace(update=True, criterion="SNR_mean_abs")


@functools.partial(jax.jit, static_argnames=("arch", "settings", "num_steps"))
def _chunk(key, carry, first_step, x, y, update, criterion, *, arch, settings, num_steps):
    """``num_steps`` steps from ``first_step`` in one ``lax.scan``; ``update`` (bool) and
    ``criterion`` (a `criterion_index`) are traced."""
    objective = tempered_elbo(arch, settings.prior_std)
    optimizer = _optimizer(settings)
    key_steps, key_data = jax.random.split(key)
    key_shift = jax.random.fold_in(key, 7)  # its own stream: shift = 0 changes nothing else

    def body(carry, step):
        params, masks, opt_state = carry
        epoch, index = jnp.divmod(step, settings.steps_per_epoch)
        order = jax.random.permutation(jax.random.fold_in(key_data, epoch), x.shape[0])
        rows = lax.dynamic_slice_in_dim(order, index * settings.batch_size, settings.batch_size)
        x_batch, y_batch = jnp.take(x, rows, axis=0), jnp.take(y, rows, axis=0)
        x_batch = shift_examples(jax.random.fold_in(key_shift, step), x_batch, settings.shift)
        weights, pullback = jax.vjp(lambda p: subspace_weights(p, masks), params)
        value, grads = objective.value_and_grad_estimate(
            jax.random.fold_in(key_steps, step),
            weights,
            masks,
            x_batch,
            y_batch,
            _kl_weight(settings, step),
        )
        (grad_params,) = pullback(grads[0])
        grad_loc = {name: entry["loc"] for name, entry in grads[0].items()}
        is_update = update & (step % settings.delta == 0) & (step > 0) & (step < settings.end_step)

        def phi_step(_):
            negated = jax.tree.map(jnp.negative, grad_params)
            updates, new_state = optimizer.update(negated, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            new_params = {
                name: {
                    "loc": jnp.where(masks[name], entry["loc"], 0.0),
                    "rho": jnp.where(masks[name], entry["rho"], 0.0),
                    "bias": entry["bias"],
                }
                for name, entry in new_params.items()
            }
            return new_params, masks, new_state, jnp.zeros((), jnp.int32)

        def gamma(_):
            new_params, new_masks, kept, moved = _gamma_step(
                settings, arch, step, params, masks, grad_loc, criterion
            )
            new_state = optax.tree_map_params(
                optimizer, lambda leaf, keep: leaf * keep, opt_state, kept
            )
            return new_params, new_masks, new_state, moved

        params, masks, opt_state, moved = lax.cond(is_update, gamma, phi_step, None)
        nnz = sum(jnp.sum(m).astype(jnp.int32) for m in masks.values())
        return (params, masks, opt_state), (value, nnz, moved)

    steps = first_step + jnp.arange(num_steps)
    return lax.scan(body, carry, steps)


def train_run(
    key: jax.Array,
    arch: tuple,
    settings: Settings,
    params: dict,
    masks: dict,
    x_train,
    y_train,
    progress: bool = True,
    description: str = "SSVI",
) -> tuple[dict, dict, dict]:
    """Train from ``(params, masks)``; a leading seed axis on every array is vmapped.

    ``key``, ``params`` and ``masks`` may carry a leading axis (one run per seed, all
    in one compiled program); the data is shared. Runs one ``lax.scan`` per epoch,
    with a progress bar over epochs.

    Returns:
        ``(params, masks, info)`` with ``info["objective"]`` (per step),
        ``info["nnz"]`` (active weights after each step, constant by construction)
        and ``info["exchanged"]`` (weights grown at each step, 0 except at γ-steps).
    """
    batched = jnp.ndim(jax.random.key_data(key)) > 1
    optimizer = _optimizer(settings)
    init = jax.vmap(optimizer.init) if batched else optimizer.init
    carry = (params, masks, init(params))
    x_train, y_train = jnp.asarray(x_train), jnp.asarray(y_train)
    run = functools.partial(
        _chunk,
        arch=arch,
        settings=_compiled_settings(settings),
        num_steps=settings.steps_per_epoch,
    )
    if batched:
        run = jax.vmap(run, in_axes=(0, 0, None, None, None, None, None))
    full = all(bool(np.all(np.asarray(m))) for m in jax.tree.leaves(masks))
    update = jnp.asarray(settings.update and not full)  # a dense support has nothing to move
    criterion = jnp.asarray(criterion_index(settings.criterion), jnp.int32)
    outputs = []
    epochs = settings.num_steps // settings.steps_per_epoch
    for epoch in tqdm(range(epochs), desc=description, disable=not progress, leave=False):
        first = jnp.asarray(epoch * settings.steps_per_epoch, jnp.int32)
        carry, out = run(key, carry, first, x_train, y_train, update, criterion)
        outputs.append(out)
    values, nnz, moved = (np.concatenate([np.asarray(o[i]) for o in outputs], -1) for i in range(3))
    params, masks, _ = carry
    return params, masks, {"objective": values, "nnz": nnz, "exchanged": moved}


@functools.partial(jax.jit, static_argnames=("arch", "num_samples"))
def predict(key, params, masks, x, *, arch, num_samples: int = 30):
    """``(bma_probs, mean_probs)``: the softmax averaged over ``num_samples`` weight draws
    ``θ = m ⊙ (µ + σ ε)`` from ``q`` (Bayesian model averaging), and the softmax of the
    network at the means."""
    biases = {name: entry["bias"] for name, entry in params.items()}

    def one(key_sample):
        keys = jax.random.split(key_sample, len(arch))
        weights = {}
        for key_layer, layer in zip(keys, arch):
            entry = params[layer.name]
            noise = jax.random.normal(key_layer, layer.shape)
            scale = jax.nn.softplus(entry["rho"])
            weights[layer.name] = masks[layer.name] * (entry["loc"] + scale * noise)
        return jax.nn.softmax(forward(arch, weights, biases, x))

    bma = jnp.mean(jax.vmap(one)(jax.random.split(key, num_samples)), 0)
    means = {name: masks[name] * entry["loc"] for name, entry in params.items()}
    return bma, jax.nn.softmax(forward(arch, means, biases, x))


def init_state(key: jax.Array, arch: tuple, counts: dict, init_scale: float = 1e-3):
    """Initial ``(params, masks)``: a uniformly random support with ``counts`` per layer.

    ``µ ~ N(0, 2 / fan_in_active)`` on the support (the dense He scale divided by the
    layer's density, so sparse layers start with the same pre-activation scale),
    ``σ = init_scale``; ``µ = ρ = 0`` outside the support.
    """
    from ppl_zoo.ssvi._network import init_params
    from ppl_zoo.ssvi._subspace import random_masks

    key_params, key_masks = jax.random.split(key)
    params = init_params(key_params, arch, init_scale)
    masks = random_masks(key_masks, arch, counts)
    for layer in arch:
        density = counts[layer.name] / math.prod(layer.shape)
        entry, mask = params[layer.name], masks[layer.name]
        entry["loc"] = jnp.where(mask, entry["loc"] / math.sqrt(density), 0.0)
        entry["rho"] = jnp.where(mask, entry["rho"], 0.0)
    return params, masks
