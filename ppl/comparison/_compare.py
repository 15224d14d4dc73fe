"""`compare`: every variant measured, trained if asked, in one `Comparison`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
import scipy.stats
from tqdm.auto import tqdm

from ppl._util import typed_key
from ppl.adev import Expectation
from ppl.comparison._measure import (
    _draw_moments,
    _flat_reference,
    _measure,
    _Setup,
    _split_by_leaf,
    _summarize,
    _zero_variance,
)
from ppl.comparison._problem import _labelled
from ppl.comparison._report import _TAIL, Comparison
from ppl.comparison._training import _train, _TrainingOptions
from ppl.comparison._variants import _check_variant_sites, _resolve_variants

__all__ = ["compare"]


def compare(
    objective: Callable[[Mapping], Expectation] | Expectation | None,
    variants: Mapping[str, Mapping | Expectation],
    key: jax.Array,
    *args: Any,
    num_samples: int = 1000,
    reference: Any = None,
    reference_samples: int | None = None,
    train: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    train_data: Any = None,
    train_batch_size: int | None = None,
    train_metrics: Callable[[Any], Mapping[str, float]] | None = None,
    train_eval_every: int = 100,
    progress: bool = True,
    timing_calls: int = 30,
    max_chunk_bytes: int = 2**28,
    mesh: jax.sharding.Mesh | None = None,
) -> Comparison:
    """Compare gradient estimators of one objective: variance, bias and cost.

    Each variant gives an Expectation of ``(params, *args)``. With ``num_samples``
    independent keys, its gradient estimates ``g_1..g_n`` (vectors over the ``P``
    floating-point coordinates of ``params``; other arguments are held fixed) and
    value estimates ``v_1..v_n`` give:

    * ``value_mean ± value_se``: the mean of ``v_i`` and ``std(v) / sqrt(n)``.
    * ``mean_gradient`` ``ḡ`` and ``gradient_norm`` ``‖ḡ‖₂``.
    * ``total_variance`` ``V = Σ_j var_j``, the trace of the covariance of one
      estimate (``var_j`` the unbiased sample variance of coordinate ``j``);
      ``parameter_variances`` sums ``var_j`` over each leaf; ``total_variance_se`` is
      its standard error by batch means (the spread of ``V`` over the ~20 chunks).
    * ``snr = ‖ḡ‖₂ / sqrt(V)``: signal-to-noise ratio of one estimate (``inf`` when
      ``V = 0``).
    * bias against a reference ``r``: ``bias_norm = ‖ḡ - r‖₂``; with
      ``s_j² = var_j / n + ref_var_j / N`` (the reference's own variance over its
      ``N`` samples; 0 when exact) plus a float32 round-off allowance
      ``(1e-5 (|ḡ_j| + |r_j|) + 1e-6 max|r|)²``, ``bias_se = sqrt(Σ_j s_j²)`` and
      ``bias_z = max_j |ḡ_j - r_j| / s_j``. ``biased`` is ``bias_z`` above the
      threshold, Bonferroni-adjusted so the chance of a false flag stays
      ``P(|Z| > 4) ≈ 6e-5`` for ``P`` coordinates: the Student-t quantile with
      ``n - 1`` degrees of freedom at tail ``6e-5 / (2P)``, since each ``s_j`` is
      estimated from ``n`` draws (with few samples and many coordinates a normal
      quantile would flag unbiased estimators; for large ``n`` it is the normal one).
    * ``time_per_gradient``: the median over ``timing_calls`` calls of the compiled
      one-key ``value_and_grad`` (after warm-up, ``block_until_ready``), in seconds;
      ``work_normalized_variance = V × time_per_gradient`` (lower is better: the
      variance per unit of compute).
    * ``peak_memory_bytes``: argument + output + temporary - aliased bytes of that
      compiled call from ``memory_analysis()``, or None where the backend does not say.

    The reference gradient ``r``:

    * ``reference=`` a pytree like ``params`` (or the tuple ``grad_estimate``
      returns): exact, given by the user.
    * ``reference="label"`` or None (meaning the first variant): if that variant's
      gradient has zero variance (every site enumerated, say), its mean is exact;
      otherwise ``r`` is a high-sample estimate, its mean over ``reference_samples``
      fresh keys (default ``10 × num_samples``), and the table says so.

    Args:
        objective: a factory ``make(strategies) -> ppl.Expectation`` (``strategies``
            a dict site name -> strategy; for example a function that builds the ELBO
            with ``ppl.sim(guide, ..., strategies=strategies)`` and ``ppl.density``,
            or `from_objective` for an objective of ``ppl.objectives``), or one
            Expectation when every variant is an Expectation (then ``objective`` may
            be None).
        variants: label -> strategy map (site name -> `ppl.Strategy` or its name as
            in `parse_strategy`, given to the factory) or label -> Expectation (used
            as is). A variant may also be an estimator function ``(key, params, *args)
            -> value`` built from Expectations, such as the minibatch mean
            ``ppl.parallel.batch_mean(elbo)``: its gradient is measured the same way
            (it is unbiased if the function's mean is the objective).
        key: a PRNG key; split into the sample, reference, timing and training keys.
            Every variant sees the same keys.
        *args: ``(params, *args)`` for the objective.
        num_samples: gradient estimates per variant (at least 2).
        reference: an exact gradient, a variant label, or None (see above).
        reference_samples: samples of a high-sample reference.
        train: if set, also run ``ppl.fit`` for this many steps with each variant
            from ``params`` (the same key), maximizing the objective.
        optimizer: for ``train`` (default ``optax.adam(1e-2)``).
        train_data: for ``train``: a pytree of arrays with a leading example axis.
            Training then draws minibatches of ``train_batch_size`` from it
            (``ppl.fit(..., data=train_data)``) and passes each in place of the first
            argument after ``params``; the gradient measurements keep the argument
            given (one fixed minibatch).
        train_batch_size: the minibatch size for ``train_data`` (default: all of it).
        train_metrics: for ``train``: ``metrics(params) -> {name: float}``, called on
            the initial parameters and every ``train_eval_every`` steps (a held-out
            accuracy, say); its time is left out of the training clock. The values
            are in ``TrainingRun.evaluations`` and get a panel each in
            ``plot_training``.
        train_eval_every: steps between ``train_metrics`` calls.
        progress: show a progress bar (tqdm) over the variants.
        timing_calls: timed calls per variant.
        max_chunk_bytes: bound on the memory of one vmapped chunk of estimates.
        mesh: a `jax.sharding.Mesh` (``ppl.parallel.mesh()``) to spread the work
            over: the independent estimates of a chunk are sharded over its
            ``"data"`` axis, the particles of particle objectives over its
            ``"particles"`` axis, and ``train`` runs ``ppl.fit(..., mesh=mesh)``.
            The keys, and so the estimates, are those of a run without a mesh.

    Returns:
        A `Comparison`: ``print`` it for the table; ``to_dataframe``, ``to_json``,
        ``save``, ``plot`` and ``plot_training``.

    Raises:
        ValueError: if ``variants`` is empty, a strategy map names a site the program
            does not have (prefixed by the variant's label), a strategy cannot apply or
            does not parse, ``reference`` is an unknown label or has the wrong shape.
        TypeError: if ``objective`` is neither an Expectation nor a factory, or a
            factory returns something else.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, ppl
        >>> import ppl.comparison
        >>> def make(strategies):
        ...     @ppl.expectation
        ...     def objective(params):
        ...         b = ppl.sample(dist.Bernoulli(logits=params["logit"]), strategies["b"])
        ...         return (b - 0.3) ** 2
        ...     return objective
        >>> result = ppl.compare(make, {"enum": {"b": ppl.enum}, "mvd": {"b": ppl.mvd}},
        ...                      jax.random.key(0), {"logit": jnp.asarray(0.5)},
        ...                      num_samples=200, progress=False)
        >>> result.reference_kind, result.results["enum"].total_variance
        ('exact', 0.0)
        >>> bool(result.results["mvd"].biased)
        False
    """
    trackers: dict = {}
    expectations = _resolve_variants(objective, variants, trackers)
    for name, value in (("num_samples", num_samples), ("timing_calls", timing_calls)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"compare: {name} must be an integer >= 2, got {value!r}.")
    reference_samples = 10 * num_samples if reference_samples is None else reference_samples
    if not isinstance(reference_samples, int) or reference_samples < 2:
        raise ValueError(f"compare: reference_samples must be >= 2, got {reference_samples!r}.")
    if train is not None and (isinstance(train, bool) or not isinstance(train, int) or train < 1):
        raise ValueError(f"compare: train must be a positive number of steps, got {train!r}.")
    training = _TrainingOptions(
        train_data, train_batch_size, train_metrics, train_eval_every, train, len(args)
    )
    labels = list(expectations)
    reference_label = None
    if reference is None or isinstance(reference, str):
        reference_label = labels[0] if reference is None else reference
        if reference_label not in expectations:
            raise ValueError(
                f"compare: reference={reference_label!r} is not a variant (variants: {labels})."
            )
    setup = _Setup(args)
    _check_variant_sites(expectations, trackers, typed_key(key, "compare"), args)
    given = None if reference_label is not None else _flat_reference(reference, setup)
    key_samples, key_reference, key_timing, key_train = jax.random.split(
        typed_key(key, "compare"), 4
    )
    keys = jax.random.split(key_samples, num_samples)
    timing_keys = jax.random.split(key_timing, timing_calls + 3)

    measured = {}
    with tqdm(labels, desc="compare", unit="variant", disable=not progress) as bar:
        for label in bar:
            bar.set_postfix_str(label)
            measured[label] = _labelled(
                label,
                _measure,
                expectations[label],
                setup,
                keys,
                timing_keys,
                max_chunk_bytes,
                mesh,
            )

    # The reference gradient and the variance of its estimate (per coordinate).
    if given is not None:
        kind, ref, ref_var, ref_n = "given", given, np.zeros_like(given), None
    elif _zero_variance(measured[reference_label]):
        ref = measured[reference_label].mean_gradient()
        kind, ref_var, ref_n = "exact", np.zeros_like(ref), None
    else:
        source = measured[reference_label]
        ref_keys = jax.random.split(key_reference, reference_samples)
        if progress:
            print(
                f"compare: reference from {reference_samples} samples of '{reference_label}'",
                file=sys.stderr,
            )
        moments = _draw_moments(source.batched, ref_keys, setup, source.chunk)
        ref = np.concatenate(moments.mean[1:])
        ref_var = np.concatenate([moments.variance(i) for i in range(1, len(moments.m2))])
        kind, ref_n = "high-sample", reference_samples
        ref_var = ref_var / reference_samples
    # |bias_j| / s_j has Student-t tails with n - 1 degrees of freedom (s_j from n draws;
    # a high-sample reference only adds degrees of freedom, so this is conservative)
    threshold = float(scipy.stats.t.isf(_TAIL / (2.0 * setup.size), num_samples - 1))

    results = {}
    for label in labels:
        results[label] = _summarize(label, measured[label], setup, ref, ref_var, threshold)

    if train is not None:
        optimizer = optax.adam(1e-2) if optimizer is None else optimizer
        with tqdm(labels, desc="train", unit="variant", disable=not progress) as bar:
            for label in bar:
                bar.set_postfix_str(label)
                results[label].training = _labelled(
                    label,
                    _train,
                    expectations[label],
                    key_train,
                    args,
                    optimizer,
                    train,
                    mesh,
                    training,
                )
    return Comparison(
        results=results,
        num_samples=num_samples,
        num_coordinates=setup.size,
        reference_kind=kind,
        reference_label=reference_label if given is None else None,
        reference_samples=ref_n,
        reference_gradient=_split_by_leaf(ref, setup),
        bias_threshold=float(threshold),
    )
