"""``ppl.compare``: compare gradient estimators of one objective by variance, bias and cost.

A strategy is fixed when an objective is built, so a comparison starts from a
**factory**, a function ``make(strategies) -> ppl.Expectation`` of a strategy map (site
name -> strategy), and a set of **variants**, each a strategy map (or a ready-made
`ppl.Expectation`)::

    import ppl.compare

    def make(strategies):
        @ppl.expectation
        def elbo(params, data):
            trace = ppl.sim(guide, data, params=params, strategies=strategies)
            return ppl.density(model, trace.choices, data, params=params) - trace.log_density

        return elbo

    variants = {"enum": {"c": ppl.enum}, "reinforce": {"c": "reinforce"}, "mvd": {"c": ppl.mvd}}
    result = ppl.compare(make, variants, jax.random.key(0), params, data)
    print(result)                      # the table
    result.save("compare-out")         # JSON, text table, PNG plots

For each variant, ``num_samples`` independent gradient estimates (one per key, vmapped
in chunks) give the mean and standard error of the value, the mean gradient, the total
gradient variance (the trace of the covariance), the signal-to-noise ratio, the bias
against a reference gradient with its standard error, the median time per gradient,
the work-normalized variance and the compiled memory footprint. ``ppl compare`` runs
the same from the command line on a `Problem`.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from jax.tree_util import keystr, tree_flatten_with_path
from tqdm.auto import tqdm

from ppl._util import typed_key
from ppl.adev import (
    Expectation,
)
from ppl.parallel import DATA, axis_size, constrain_batch, use_mesh
from ppl.vi import fit

__all__ = [
    "compare",
    "Comparison",
    "VariantResult",
    "TrainingRun",
    "Problem",
    "from_objective",
    "parse_strategy",
    "load_variants",
    "load_problem",
]

from ppl._compare_inputs import (  # noqa: F401 (_as_problem is used by ppl.cli)
    Problem,
    _as_problem,
    _check_variant_sites,
    _labelled,
    _resolve_variants,
    from_objective,
    load_problem,
    load_variants,
    parse_strategy,
)
from ppl._comparison import Comparison, TrainingRun, VariantResult

_FORMAT = "ppl.compare/1"
_TAIL = 2.0 * (1.0 - statistics.NormalDist().cdf(4.0))  # P(|Z| > 4), about 6.3e-5


# --------------------------------------------------------------------- measuring


class _Setup:
    """The split of ``(params, *args)`` into differentiated and fixed parts."""

    def __init__(self, args: tuple) -> None:
        if not args:
            raise TypeError("compare needs the objective's arguments: (params, *args).")
        params, rest = args[0], args[1:]
        self.trainable, self.frozen = eqx.partition(params, eqx.is_inexact_array)
        self.dynamic_rest, self.static_rest = eqx.partition(rest, eqx.is_array)
        leaves = tree_flatten_with_path(self.trainable)[0]
        if not leaves:
            raise ValueError(
                "compare: params (the first argument) has no floating-point arrays to "
                "differentiate. Write values as arrays, e.g. {'loc': jnp.asarray(0.0)}."
            )
        self.paths = ["params" + keystr(path) for path, _ in leaves]
        self.shapes = [np.shape(leaf) for _, leaf in leaves]
        self.size = int(sum(math.prod(s) for s in self.shapes))

    def single(self, expectation: Expectation) -> Callable:
        """``(key, trainable, dynamic_rest) -> (value, grads)`` for one key."""
        frozen, static_rest = self.frozen, self.static_rest

        def one(
            key: jax.Array, trainable: Any, dynamic_rest: Any
        ) -> tuple[jax.Array, list[jax.Array]]:
            rest = eqx.combine(dynamic_rest, static_rest)

            def value(trainable: Any) -> jax.Array:
                return expectation(key, eqx.combine(trainable, frozen), *rest)

            value, grads = jax.value_and_grad(value)(trainable)
            return value, jax.tree.leaves(grads)

        return one


class _Moments:
    """Running count, mean and sum of squared deviations (Chan et al. 1979), float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: list[np.ndarray] = []
        self.m2: list[np.ndarray] = []
        self.chunk_variances: list[float] = []  # total variance within each full chunk

    def add(self, blocks: list[np.ndarray], full: bool) -> None:
        n = blocks[0].shape[0]
        means = [b.mean(axis=0) for b in blocks]
        m2s = [((b - m) ** 2).sum(axis=0) for b, m in zip(blocks, means)]
        if full and n > 1:
            self.chunk_variances.append(float(sum(m.sum() for m in m2s[1:]) / (n - 1)))
        if self.count == 0:
            self.count, self.mean, self.m2 = n, means, m2s
            return
        total = self.count + n
        for i, (m, m2) in enumerate(zip(means, m2s)):
            delta = m - self.mean[i]
            self.mean[i] = self.mean[i] + delta * (n / total)
            self.m2[i] = self.m2[i] + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def variance(self, i: int) -> np.ndarray:
        return self.m2[i] / (self.count - 1)


def _draw_moments(batched: Callable, keys: jax.Array, setup: _Setup, chunk: int) -> _Moments:
    """Value and gradient moments over ``keys``, ``chunk`` keys per compiled call."""
    moments = _Moments()
    n = keys.shape[0]
    for start in range(0, n, chunk):
        part = keys[start : start + chunk]
        used = part.shape[0]
        if used < chunk:  # pad to the compiled shape; the padding is dropped below
            part = jnp.concatenate([part, keys[: chunk - used]])
        value, grads = batched(part, setup.trainable, setup.dynamic_rest)
        blocks = [np.asarray(value, np.float64)[:used, None]]
        blocks += [np.asarray(g, np.float64)[:used].reshape(used, -1) for g in grads]
        moments.add(blocks, full=used == chunk)
    return moments


def _memory(compiled: jax.stages.Compiled) -> int | None:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if stats is None:
        return None
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return int(total) if total > 0 else None


def _time(
    compiled: jax.stages.Compiled, keys: jax.Array, setup: _Setup
) -> tuple[float, tuple[float, float]]:
    for key in keys[:3]:  # warm-up
        jax.block_until_ready(compiled(key, setup.trainable, setup.dynamic_rest))
    times = []
    for key in keys[3:]:
        start = time.perf_counter()
        jax.block_until_ready(compiled(key, setup.trainable, setup.dynamic_rest))
        times.append(time.perf_counter() - start)
    q25, q50, q75 = np.percentile(times, [25.0, 50.0, 75.0])
    return float(q50), (float(q25), float(q75))


class _Measured:
    """What `_measure` finds for one variant before the reference is known."""

    def __init__(
        self,
        moments: _Moments,
        batched: Callable,
        chunk: int,
        time_median: float,
        quartiles: tuple[float, float],
        memory: int | None,
    ) -> None:
        self.moments = moments
        self.batched = batched
        self.chunk = chunk
        self.time = time_median
        self.quartiles = quartiles
        self.memory = memory

    def total_variance(self) -> float:
        return float(sum(self.moments.variance(i).sum() for i in range(1, len(self.moments.m2))))

    def mean_gradient(self) -> np.ndarray:
        return np.concatenate(self.moments.mean[1:])

    def variances(self) -> np.ndarray:
        return np.concatenate([self.moments.variance(i) for i in range(1, len(self.moments.m2))])


def _measure(
    expectation: Callable[..., jax.Array],
    setup: _Setup,
    keys: jax.Array,
    timing_keys: jax.Array,
    max_chunk_bytes: int,
    mesh: jax.sharding.Mesh | None = None,
) -> _Measured:
    with use_mesh(mesh):  # on a mesh: keys over its "data" axis, particles over "particles"
        one = setup.single(expectation)
        args = (timing_keys[0], setup.trainable, setup.dynamic_rest)
        compiled = jax.jit(one).lower(*args).compile()
        memory = _memory(compiled)
        footprint = max(memory or 0, 8 * (setup.size + 1))
        n = keys.shape[0]
        chunk = max(1, min(math.ceil(n / 20), max_chunk_bytes // footprint))
        chunk = -(-chunk // axis_size(DATA)) * axis_size(DATA)
        if chunk == 1:
            # one key per call: the compiled single estimate. (A vmap over a batch of one
            # is not only wasted: XLA's CPU runtime crashed running one for AIR's
            # enumerated gradient, jax 0.10.)
            def batched(keys: jax.Array, *rest: Any) -> tuple[jax.Array, list[jax.Array]]:
                value, grads = compiled(keys[0], *rest)
                return value[None], [g[None] for g in grads]

        else:
            batched = jax.jit(
                lambda keys, *rest: jax.vmap(one, in_axes=(0, None, None))(
                    constrain_batch(keys), *rest
                )
            )
        moments = _draw_moments(batched, keys, setup, chunk)
        time_median, quartiles = _time(compiled, timing_keys, setup)
    return _Measured(moments, batched, chunk, time_median, quartiles, memory)


def _zero_variance(measured: _Measured) -> bool:
    scale = float(np.sum(measured.mean_gradient() ** 2))
    return measured.total_variance() <= 1e-12 * max(scale, 1e-30)


def _split_by_leaf(flat: np.ndarray, setup: _Setup) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for path, shape in zip(setup.paths, setup.shapes):
        size = math.prod(shape)
        out[path] = flat[start : start + size].reshape(shape)
        start += size
    return out


def _flat_reference(reference: Any, setup: _Setup) -> np.ndarray:
    """A user-given exact gradient (a pytree like params) as one flat float64 vector."""

    def by_path(tree: Any) -> dict[str, Any]:
        return {"params" + keystr(p): leaf for p, leaf in tree_flatten_with_path(tree)[0]}

    found = by_path(reference)
    if not set(setup.paths) <= set(found) and isinstance(reference, tuple | list) and reference:
        found = by_path(reference[0])  # the tuple that grad_estimate returns
    missing = [p for p in setup.paths if p not in found]
    if missing:
        raise ValueError(
            f"reference must be a gradient shaped like params (leaves {setup.paths}), but "
            f"it has no {missing}."
        )
    parts = []
    for path, shape in zip(setup.paths, setup.shapes):
        leaf = np.asarray(found[path], np.float64)
        if leaf.shape != shape:
            raise ValueError(f"reference {path} has shape {leaf.shape}, params has {shape}.")
        parts.append(leaf.reshape(-1))
    return np.concatenate(parts)


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
        >>> import ppl.compare
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


def _summarize(
    label: str,
    measured: _Measured,
    setup: _Setup,
    ref: np.ndarray,
    ref_var: np.ndarray,
    threshold: float,
) -> VariantResult:
    moments = measured.moments
    n = moments.count
    mean = measured.mean_gradient()
    variances = measured.variances()
    total = float(variances.sum())
    chunk_v = moments.chunk_variances
    total_se = (
        float(np.std(chunk_v, ddof=1) / math.sqrt(len(chunk_v))) if len(chunk_v) > 1 else math.nan
    )
    norm = float(np.linalg.norm(mean))
    bias = mean - ref
    allowance = 1e-5 * (np.abs(mean) + np.abs(ref)) + 1e-6 * float(np.max(np.abs(ref), initial=0.0))
    se = np.sqrt(variances / n + ref_var + allowance**2 + 1e-30)
    per_leaf, start = {}, 0
    for path, shape in zip(setup.paths, setup.shapes):
        size = math.prod(shape)
        per_leaf[path] = float(variances[start : start + size].sum())
        start += size
    z = float(np.max(np.abs(bias) / se))
    value_var = float(moments.variance(0)[0])
    return VariantResult(
        label=label,
        num_samples=n,
        value_mean=float(moments.mean[0][0]),
        value_se=math.sqrt(value_var / n),
        mean_gradient=_split_by_leaf(mean, setup),
        gradient_norm=norm,
        total_variance=total,
        total_variance_se=total_se,
        parameter_variances=per_leaf,
        snr=norm / math.sqrt(total) if total > 0 else math.inf,
        bias_norm=float(np.linalg.norm(bias)),
        bias_se=float(np.sqrt(np.sum(se**2))),
        bias_z=z,
        biased=bool(z > threshold),
        time_per_gradient=measured.time,
        time_quartiles=measured.quartiles,
        work_normalized_variance=total * measured.time,
        peak_memory_bytes=measured.memory,
    )


class _TrainingOptions:
    """The checked ``train_*`` arguments of `compare`."""

    def __init__(
        self,
        data: Any,
        batch_size: int | None,
        metrics: Callable[[Any], Mapping[str, float]] | None,
        eval_every: int,
        train: int | None,
        num_args: int,
    ) -> None:
        if train is None and (data is not None or metrics is not None):
            raise ValueError("compare: train_data and train_metrics need train=steps.")
        if data is not None and num_args < 2:
            raise ValueError(
                "compare: train_data replaces the argument after params, but the "
                "objective gets only params; pass a minibatch after params for the "
                "gradient measurements."
            )
        if batch_size is not None and data is None:
            raise ValueError("compare: train_batch_size needs train_data.")
        if metrics is not None and not callable(metrics):
            raise TypeError(f"compare: train_metrics must be callable, got {metrics!r}.")
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(
                f"compare: train_eval_every must be a positive number of steps, got {eval_every!r}."
            )
        self.data, self.batch_size, self.metrics = data, batch_size, metrics
        self.eval_every = eval_every

    def evaluate(self, params: Any) -> dict[str, float]:
        values = self.metrics(params)
        if not isinstance(values, Mapping):
            raise TypeError(
                f"compare: train_metrics must return a mapping name -> number, "
                f"got {type(values).__name__}."
            )
        out = {}
        for name, value in values.items():
            try:
                out[str(name)] = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"compare: train_metrics returned {name!r}: {value!r}, not a number."
                ) from None
        return out


def _train(
    expectation: Callable[..., jax.Array],
    key: jax.Array,
    args: tuple,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    mesh: jax.sharding.Mesh | None = None,
    training: _TrainingOptions | None = None,
) -> TrainingRun:
    params, rest = args[0], args[1:]
    options = dict(optimizer=optimizer, progress=False)
    if mesh is not None:
        options["mesh"] = mesh
    if training is not None and training.data is not None:
        rest = rest[1:]  # the minibatches take the place of the first argument
        options.update(data=training.data, batch_size=training.batch_size)
    if training is None or training.metrics is None:
        options["chunk_size"] = min(100, num_steps)
        fit(key, expectation, params, *rest, num_steps=1, **options)  # compile
        start = time.perf_counter()
        result = fit(key, expectation, params, *rest, num_steps=num_steps, **options)
        jax.block_until_ready(result.params)
        elapsed = time.perf_counter() - start
        steps = np.arange(1, result.history.size + 1)
        return TrainingRun(np.asarray(result.history, np.float64), steps * (elapsed / steps.size))
    # Chunks of ``eval_every`` steps, each resumed from the last one's checkpoint (the
    # optimizer state and the step count carry over, the compiled chunk is reused),
    # with the metrics in between, off the clock.
    every = min(training.eval_every, num_steps)
    options["chunk_size"] = every
    evaluations = {"step": [0], "seconds": [0.0]}
    for name, value in training.evaluate(params).items():
        evaluations[name] = [value]
    ends, elapsed = [0], 0.0
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as scratch:
        fit(key, expectation, params, *rest, num_steps=every, checkpoint_dir=scratch, **options)
        step = 0
        while step < num_steps:
            step = min(step + every, num_steps)
            start = time.perf_counter()
            result = fit(
                key, expectation, params, *rest, num_steps=step, checkpoint_dir=folder,
                resume=True, **options,
            )  # fmt: skip
            jax.block_until_ready(result.params)
            elapsed += time.perf_counter() - start
            ends.append(step)
            evaluations["step"].append(step)
            evaluations["seconds"].append(elapsed)
            values = training.evaluate(result.params)
            if set(values) != set(evaluations) - {"step", "seconds"}:
                raise ValueError(
                    f"compare: train_metrics returned {sorted(values)} at step {step}, "
                    f"but {sorted(set(evaluations) - {'step', 'seconds'})} before."
                )
            for name, value in values.items():
                evaluations[name].append(value)
    history = np.asarray(result.history, np.float64)
    # each chunk's measured time, spread evenly over its steps
    seconds = np.interp(np.arange(1, history.size + 1), ends, evaluations["seconds"])
    return TrainingRun(
        history, seconds, {k: np.asarray(v, np.float64) for k, v in evaluations.items()}
    )


class _CallableModule(types.ModuleType):
    """Makes ``ppl.compare(...)`` call `compare` while ``ppl.compare.Problem`` etc. work."""

    def __call__(self, *args: Any, **kwargs: Any) -> Comparison:
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
