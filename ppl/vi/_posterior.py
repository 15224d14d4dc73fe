"""Posterior export: draws of a fitted guide as ``arviz.InferenceData``.

The guide's latent sites are drawn with NumPyro's ``Predictive`` at the constrained
parameters; the model's deterministic sites are computed from those draws and its
observed sites are redrawn from them for the posterior predictive. Array dimensions
are named after the model's plates, so that ArviZ can summarize, select and plot by
plate (``idata.posterior["theta"].sel(groups=3)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import Predictive

from ppl._util import typed_key
from ppl.gen import constrain, posterior_discrete
from ppl.vi._checks import check_params_given, check_unconstrained

if TYPE_CHECKING:
    from types import ModuleType

    import arviz

__all__ = ["to_inference_data"]


class _SiteInfo(NamedTuple):
    """What naming a site's dimensions needs: its event rank and enclosing plates."""

    event_dim: int
    frames: tuple  # CondIndepStackFrame(name, dim, size) of the plates around the site


def _program_name(program: Callable) -> str:
    return getattr(program, "__name__", type(program).__name__)


def _trace(program: Callable, key: jax.Array, plates: dict, args: tuple, kwargs: dict) -> dict:
    """One seeded run of ``program`` with the subsample indices ``plates`` fixed."""
    with handlers.trace() as trace, handlers.seed(rng_seed=key):
        handlers.substitute(program, data=plates)(*args, **kwargs)
    return trace


def _subsampled_plates(trace: dict) -> dict:
    """Plate name -> subsample indices, for the plates of ``trace`` that subsample."""
    plates = {}
    for name, site in trace.items():
        if site["type"] != "plate":
            continue
        size, subsample_size = site["args"]
        if subsample_size is not None and subsample_size != size:
            plates[name] = site["value"]
    return plates


def _constrained_params(
    program: Callable, role: str, trace: dict, params: Any, args: tuple, kwargs: dict
) -> dict:
    """The constrained values of the ``numpyro.param`` sites of ``program``'s ``trace``."""
    names = [name for name, site in trace.items() if site["type"] == "param"]
    if isinstance(params, Mapping):
        missing = [name for name in names if name not in params]
        available = sorted(params)
        raw = {name: params[name] for name in names if name in params}
    else:
        missing = [name for name in names if not hasattr(params, name)]
        available = type(params).__name__
        raw = {name: getattr(params, name) for name in names if hasattr(params, name)}
    if missing:
        listed = ", ".join(repr(name) for name in missing)
        noun, verb = ("parameters", "are") if len(missing) > 1 else ("parameter", "is")
        raise ValueError(
            f"{noun} {listed} of the {role} {_program_name(program)!r} {verb} missing from "
            f"params (it has {available}). Pass the unconstrained values of every "
            f"numpyro.param site, as ppl.init_params(key, {role}, *args) returns them and "
            "fitting updates them (for an autoguide, call ppl.init_params first: it sets "
            "the guide up)."
        )
    return constrain(program, raw, *args, **kwargs)


def _site_infos(trace: dict) -> dict:
    """Site name -> ``_SiteInfo`` for the sample and deterministic sites of ``trace``."""
    infos = {}
    for name, site in trace.items():
        if site["type"] == "sample":
            event_dim = getattr(site["fn"], "event_dim", 0)
        elif site["type"] == "deterministic":
            event_dim = 0
        else:
            continue
        infos[name] = _SiteInfo(event_dim, tuple(site.get("cond_indep_stack", ())))
    return infos


def _plate_coords(trace: dict) -> dict:
    """Plate name -> the indices it ranges over (its subsample, if it subsamples).

    A plate inside a ``scan`` body leaves no plate site in the trace, only the frames
    of the body's sites: it ranges over ``0, ..., size - 1``.
    """
    coords = {
        frame.name: np.arange(frame.size)
        for site in trace.values()
        if site["type"] == "sample"
        for frame in site.get("cond_indep_stack", ())
    }
    coords.update(
        {name: np.asarray(site["value"]) for name, site in trace.items() if site["type"] == "plate"}
    )
    return coords


def _dims(name: str, shape: tuple, info: _SiteInfo | None, coords: dict) -> list[str]:
    """Dimension names of a site of per-draw ``shape``: its plates, else ``{name}_dim_{i}``.

    A plate frame at ``dim`` (counted from the right of the batch shape) names position
    ``len(shape) - event_dim + dim`` when the length there is the plate's.
    """
    dims = [f"{name}_dim_{i}" for i in range(len(shape))]
    if info is None:
        return dims
    for frame in info.frames:
        position = len(shape) - info.event_dim + frame.dim
        size = len(coords.get(frame.name, ()))
        if 0 <= position < len(shape) and shape[position] == size == frame.size:
            dims[position] = frame.name
    return dims


def _label(groups: dict, infos: dict, plate_coords: dict) -> tuple[dict, dict, dict]:
    """The arrays, dims and coords of ``arviz.from_dict`` for the sites of ``groups``.

    ``groups`` maps a group name to ``(values, per_draw)``: site name -> value, and
    whether each value has a leading draw dimension (a chain dimension of one is put
    in front of it). A site whose dims differ between groups gets positional names.
    """
    arrays, dims, coords = {}, {}, {}
    for group, (values, per_draw) in groups.items():
        if not values:
            continue
        arrays[group] = {}
        for name, value in values.items():
            array = np.asarray(value)[None] if per_draw else np.asarray(value)
            shape = array.shape[2:] if per_draw else array.shape
            site_dims = _dims(name, shape, infos.get(name), plate_coords)
            if dims.setdefault(name, site_dims) != site_dims:
                site_dims = [f"{name}_dim_{i}" for i in range(len(shape))]
                dims[name] = site_dims
            coords.update({d: plate_coords[d] for d in site_dims if d in plate_coords})
            arrays[group][name] = array
    return arrays, dims, coords


def _import_arviz() -> ModuleType:
    try:
        import arviz
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ppl.to_inference_data needs ArviZ: pip install arviz (or pip install 'ppl[zoo]')."
        ) from error
    return arviz


def to_inference_data(
    key: jax.Array,
    guide: Callable,
    params: Any,
    *args: Any,
    model: Callable | None = None,
    num_samples: int = 1000,
    observed: Mapping[str, Any] | None = None,
    posterior_predictive: bool = True,
    importance: bool | int = False,
    **kwargs: Any,
) -> arviz.InferenceData:
    """Draws from a fitted guide, as ``arviz.InferenceData`` with plate dims and coords.

    The groups are:

    * ``posterior``: ``num_samples`` draws ``z ~ q(z; params)`` of the guide's latent
      sites (auxiliary sites such as the ``_auto_latent`` of NumPyro's ``AutoContinuous``
      guides are left out, so an autoguide exports the model's latent names), drawn
      with ``numpyro.infer.Predictive(guide, params=constrain(guide, params))``, plus
      the model's ``numpyro.deterministic`` sites computed from each draw (with the
      observed data in place), shaped ``(chain=1, draw=num_samples, ...)``.
    * ``observed_data``: ``observed`` if given, else the values of the model's observed
      sites (those with ``obs=...``).
    * ``posterior_predictive``: the model's observed sites redrawn for each posterior
      draw, ``y ~ p(y | z)``, with ``Predictive(uncondition(model), z)``.
    * ``sample_stats`` (with ``importance``): for each posterior draw its log-weight
      ``log p(x, z) - log q(z)`` and its Pareto-smoothed normalized log-weight; the
      Pareto ``k-hat``, the ESS and the IWELBO estimate of ``log p(x)`` (with its
      standard error) are in the ``attrs`` of ``sample_stats`` and ``posterior``.

    A site inside ``numpyro.plate("data", N)`` gets a dimension named ``"data"`` with
    coordinates ``0, ..., N - 1`` (for a subsampling plate: its subsample indices, drawn
    once and used for every draw); other dimensions are named ``"{site}_dim_{i}"``
    after their position ``i``. Plates are read from the model's trace when ``model``
    is given (autoguides do not repeat all of them), else from the guide's.

    Args:
        key: a PRNG key for the guide's draws, the posterior predictive and subsampling.
        guide: the NumPyro guide (hand-written or an autoguide).
        params: its unconstrained parameters, as ``ppl.init_params`` returns them and
            a fit updates them; a dict, or a pytree with a field per parameter. When
            ``model`` has ``numpyro.param`` sites, their values too.
        *args: the positional arguments of the guide and the model (an ``int``
            such as a plate size stays a Python int).
        model: the NumPyro model, for plate dims, observed data, deterministic sites
            and the posterior predictive.
        num_samples: the number of posterior draws.
        observed: observed data to store in ``observed_data`` in place of the model's
            observed sites (name -> array).
        posterior_predictive: whether to draw the posterior predictive (needs ``model``).
        importance: export the importance-resampled posterior of `ppl.importance`
            instead of the guide's draws: ``num_samples`` draws resampled from ``K``
            guide draws weighted by ``p(x, z) / q(z)`` (``K = 4 * num_samples`` for
            ``True``, or the int given), the way an IWAE- or IWHVI-trained guide is
            meant to be used. Needs ``model``; warns when ``k-hat > 0.7``.
        **kwargs: the keyword arguments of the guide and the model.

    Returns:
        An ``arviz.InferenceData`` with groups ``posterior`` and, where they apply,
        ``observed_data`` and ``posterior_predictive``.

    Raises:
        ValueError: ``num_samples`` is less than 1, ``params`` is empty or lacks a
            ``numpyro.param`` site of the guide or the model (the message names it),
            holds a constrained value where the shapes tell (``svi.get_params``), or
            ``importance`` is set without ``model``.
        TypeError: ``observed`` is not a mapping, or ``key`` is not a PRNG key.
        ImportError: ArviZ is not installed.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> import ppl
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("data", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> guide = numpyro.infer.autoguide.AutoNormal(model)
        >>> y = jnp.array([0.5, 1.0, 1.5])
        >>> params = ppl.init_params(jax.random.key(0), guide, y)
        >>> idata = ppl.to_inference_data(jax.random.key(1), guide, params, y, model=model,
        ...                               num_samples=100)
        >>> idata.posterior["mu"].shape
        (1, 100)
        >>> idata.posterior_predictive["y"].dims
        ('chain', 'draw', 'data')
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
    if observed is not None and not isinstance(observed, Mapping):
        raise TypeError(
            f"observed must be a mapping from site name to data, got {type(observed).__name__}."
        )
    key = typed_key(key, "to_inference_data")
    check_params_given(params, "to_inference_data", allow_empty=True)  # named below
    arviz = _import_arviz()
    guide_name = _program_name(guide)
    key_guide_trace, key_model_trace, key_guide, key_deterministic, key_predictive = (
        jax.random.split(key, 5)
    )

    # One run of each program: parameter sites, plates, shapes and observed data. Each
    # subsampling plate keeps the indices of this run for every draw (guide first, so
    # that the model sees the guide's minibatch, as NumPyro's replay does).
    guide_trace = _trace(guide, key_guide_trace, {}, args, kwargs)
    plates = _subsampled_plates(guide_trace)
    check_unconstrained(guide, params, args, kwargs)
    guide_params = _constrained_params(guide, "guide", guide_trace, params, args, kwargs)
    model_trace = {}
    if model is not None:
        model_trace = _trace(model, key_model_trace, plates, args, kwargs)
        plates = {**_subsampled_plates(model_trace), **plates}
        model_params = _constrained_params(model, "model", model_trace, params, args, kwargs)
        model = handlers.substitute(model, data=plates)
    guide = handlers.substitute(guide, data=plates)

    draws = Predictive(guide, params=guide_params, num_samples=num_samples, parallel=True)(
        key_guide, *args, **kwargs
    )
    latent = {
        name: value
        for name, value in draws.items()
        if name not in guide_trace
        or not (
            guide_trace[name].get("infer", {}).get("is_auxiliary")
            or guide_trace[name].get("is_observed")
        )
    }
    sample_stats, stats_attrs = {}, {}
    if importance:
        latent, sample_stats, stats_attrs = _importance_posterior(
            key_guide, model, guide, params, args, kwargs, num_samples, importance
        )
    if model is not None:  # the model's summed-out discrete sites, drawn given each z
        latent.update(
            posterior_discrete(
                jax.random.fold_in(key, 1),
                model,
                model_trace,
                latent,
                params,
                args,
                kwargs,
                num_samples,
            )
        )
    posterior = dict(latent)
    predictive, observed_data = {}, {}
    if model is not None:
        deterministic = [n for n, s in model_trace.items() if s["type"] == "deterministic"]
        observed_sites = [
            n for n, s in model_trace.items() if s["type"] == "sample" and s["is_observed"]
        ]
        if deterministic:
            posterior.update(
                Predictive(
                    model,
                    posterior_samples=latent,
                    params=model_params,
                    num_samples=num_samples,
                    return_sites=deterministic,
                    parallel=True,
                )(key_deterministic, *args, **kwargs)
            )
        if posterior_predictive and observed_sites:
            predictive = Predictive(
                handlers.uncondition(model),
                posterior_samples=latent,
                params=model_params,
                num_samples=num_samples,
                return_sites=observed_sites,
                parallel=True,
            )(key_predictive, *args, **kwargs)
        observed_data = {name: model_trace[name]["value"] for name in observed_sites}
    if observed is not None:
        observed_data = dict(observed)

    infos = {**_site_infos(guide_trace), **_site_infos(model_trace)}
    plate_coords = {**_plate_coords(guide_trace), **_plate_coords(model_trace)}
    groups, dims, coords = _label(
        {
            "posterior": (posterior, True),
            "posterior_predictive": (predictive, True),
            "observed_data": (observed_data, False),
            "sample_stats": (sample_stats, True),
        },
        infos,
        plate_coords,
    )
    idata = arviz.from_dict(**groups, coords=coords, dims=dims, index_origin=0)
    for group in idata.groups():
        idata[group].attrs.update(inference_library="ppl", guide=guide_name)
    if stats_attrs:
        idata.sample_stats.attrs.update(stats_attrs)
        idata.posterior.attrs.update(stats_attrs)
    return idata


def _importance_posterior(
    key: jax.Array,
    model: Callable | None,
    guide: Callable,
    params: Any,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    proposals: bool | int,
) -> tuple[dict, dict, dict]:
    """``(resampled latent draws, sample_stats, attrs)`` for ``importance=...``: the
    sampling-importance-resampling posterior of `ppl.importance`."""
    from ppl.vi._importance import importance, warn_if_unreliable

    if model is None:
        raise ValueError(
            "to_inference_data: importance=True weighs the guide's draws by the model's "
            "density: pass model=... too."
        )
    if proposals is True:
        proposals = 4 * num_samples
    result = importance(
        key, model, guide, params, *args, num_samples=int(proposals),
        num_resampled=num_samples, **kwargs,
    )  # fmt: skip
    warn_if_unreliable(result, "to_inference_data")
    chosen = np.asarray(result.resampled_index)
    sample_stats = {
        "log_weight": result.log_weights[chosen],
        "psis_log_weight": result.psis_log_weights[chosen],
    }
    attrs = {
        "pareto_k": result.khat,
        "ess": result.ess,
        "num_proposals": int(proposals),
        "log_evidence": result.log_evidence,
        "log_evidence_se": result.log_evidence_se,
    }
    return result.resampled, sample_stats, attrs
