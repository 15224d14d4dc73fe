"""NumPyro programs inside expectations: ``sim``, ``density`` and their ``Trace``.

``sim`` runs a NumPyro model or guide with every latent ``numpyro.sample`` turned into a
``ppl.sample`` site (with its strategy), ``numpyro.param`` read from an explicit
parameter pytree and ``numpyro.prng_key()`` (plate subsampling) drawn through ppl.
``density`` runs it with the latent values given and returns the log joint density.
Both compute ``Σ_sites scale · log p(value)`` exactly as NumPyro's ``log_density``
(plates, masks, ``numpyro.factor`` and subsample scaling included).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.primitives import Messenger

from ppl._numpyro import base_constraint, is_real
from ppl.adev import (
    Draw,
    LocalStrategy,
    SiteInfo,
    Strategy,
    default_strategy,
    log_prob,
    sample,
)
from ppl.adev._primitives import _plate_frames

__all__ = ["Trace", "Family", "sim", "density", "param_value", "site_log_densities"]


class Trace(eqx.Module):
    """The result of running a program with ``ppl.sim``.

    Attributes:
        choices: latent site name -> value (observed and auxiliary sites excluded),
            and for each subsampled plate its indices, so that ``ppl.density`` of the
            model scores the same minibatch (as NumPyro's ``replay`` does).
        log_density: ``log q(choices)`` (with auxiliary sites: their joint density).
        retval: the program's return value.
        auxiliary: auxiliary site name -> value (``infer={"is_auxiliary": True}``, for
            example the packed latent of NumPyro's ``AutoContinuous`` guides).
    """

    choices: dict
    log_density: jax.Array
    retval: Any
    auxiliary: dict


class Family:
    """Base class of program-like objects built from programs (``ppl.marginal``, ...).

    ``ppl.sim`` and ``ppl.density`` call `simulate` and `log_density` of a `Family`
    instead of running it as a NumPyro program.
    """

    def simulate(self, params: Any, strategies: Mapping | None, *args: Any, **kwargs: Any) -> Trace:
        """Draw choices; return a `Trace` whose ``log_density`` is (an estimate of) the
        log density of the choices, unbiased for its reciprocal where it is used as a
        proposal."""
        raise NotImplementedError

    def log_density(self, choices: Mapping, params: Any, *args: Any, **kwargs: Any) -> jax.Array:
        """(An estimate of) the log density of ``choices``, unbiased for the density."""
        raise NotImplementedError


def _program_name(program: Any) -> str:
    return getattr(program, "__name__", type(program).__name__)


def param_value(params: Any, name: str, msg: dict, program: Any) -> jax.Array:
    """The constrained value of the ``numpyro.param`` site ``name`` from ``params``.

    ``params`` holds unconstrained values (as NumPyro's SVI does): a site declared with
    ``constraint=c`` gets ``biject_to(c)(params[name])``.
    """
    if isinstance(params, Mapping):
        found = name in params
        raw = params[name] if found else None
    else:
        found = hasattr(params, name)
        raw = getattr(params, name) if found else None
    if not found:
        available = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(
            f"parameter '{name}' of {_program_name(program)} is missing from params "
            f"(it has {available}). Pass params with an entry '{name}', for example "
            f"from ppl.init_params(key, program, *args)."
        )
    constraint = msg["kwargs"].get("constraint", constraints.real)
    if constraint is constraints.real:
        return raw
    return biject_to(constraint)(raw)


class _KeySource(dist.Distribution):
    """A distribution over raw PRNG keys with a constant density.

    ``anchor`` (ignored when sampling) is the pytree of arrays the key is for: under
    ``jax.vmap`` the site is batched, and each lane gets its own key, exactly when
    those arrays are batched.
    """

    support = constraints.real_vector
    pytree_data_fields = ("anchor",)

    def __init__(self, anchor: Any = ()) -> None:
        self.anchor = anchor
        super().__init__(batch_shape=(), event_shape=(2,))

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return jax.random.bits(key, (*sample_shape, 2), jnp.uint32)

    def log_prob(self, value: jax.Array) -> jax.Array:
        return jnp.zeros(jnp.shape(value)[:-1])


class _Constant(LocalStrategy):
    """For sites whose distribution does not depend on parameters: no gradient."""

    def draw(self, key: jax.Array, distribution: Any) -> Draw:
        return Draw(jax.lax.stop_gradient(distribution.sample(key)))


def _key(anchor: Any = (), name: str = "prng_key") -> jax.Array:
    """A fresh raw PRNG key drawn through ppl (numpyro.prng_key, subsampling, rsample)."""
    return sample(_KeySource(anchor), _Constant(), name=name)


def _site_info(site: dict) -> SiteInfo:
    return SiteInfo(site["name"], "", type(site["fn"]).__name__)


def _subsampled(site: dict) -> bool:
    size, subsample_size = site["args"]
    return subsample_size is not None and subsample_size != size


def _strategy_of(msg: dict, strategies: Mapping | Strategy | None) -> Strategy:
    name = msg["name"]
    if isinstance(strategies, Strategy):  # one strategy for every site
        return strategies
    if strategies is not None and name in strategies:
        return strategies[name]
    chosen = (msg.get("infer") or {}).get("strategy")
    if chosen is not None:
        return chosen
    return default_strategy(msg["fn"])


class _Runner(Messenger):
    """Runs a program with ``numpyro.param`` from ``params`` and keys drawn through ppl."""

    def __init__(self, fn: Callable, params: Any, program: Any) -> None:
        self.params = params
        self.program = program
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "param":
            msg["value"] = param_value(self.params, msg["name"], msg, self.program)
        elif msg["type"] == "prng_key":
            msg["value"] = _key()
        else:
            self.process_site(msg)

    def process_site(self, msg: dict) -> None:
        raise NotImplementedError


class _Simulate(_Runner):
    """Turn latent sample sites into ``ppl.sample`` sites."""

    def __init__(
        self,
        fn: Callable,
        params: Any,
        strategies: Mapping[str, Strategy] | Strategy | None,
        program: Any,
    ) -> None:
        self.strategies = strategies
        self.control_flow = False  # a scan/cond body ran (its plates are not per site)
        self.continuation = False  # a site's strategy evaluates the rest of the program
        self.score_only: set = set()  # sites whose value carries no derivative
        super().__init__(fn, params, program)

    def _draw(self, site: dict) -> jax.Array:
        fn = site["fn"]
        shape = site["kwargs"].get("sample_shape", ())
        if shape:
            fn = fn.expand(tuple(shape) + fn.batch_shape)
        strategy = _strategy_of(site, self.strategies)
        if strategy.draws_in_place:
            # A pathwise draw needs no rewriting: draw it in place from a ppl key. This
            # also covers distributions whose pytree hides arrays (NumPyro's IAF flows).
            strategy.check(fn, _site_info(site))
            key = _key(jax.tree.leaves(fn), name=f"{site['name']}/key")
            return fn.rsample(jax.random.wrap_key_data(key))
        # leave_one_out forms its coefficients per element from the costs (see
        # `ppl.LeaveOneOut`); other continuation strategies take the log weight whole
        split = not strategy.needs_continuation or strategy.per_element_costs
        self.continuation = self.continuation or not split
        if strategy.score_only:
            self.score_only.add(site["name"])
        with _plate_frames(_frames(site)):  # each element's score sees its own costs
            return sample(fn, strategy, name=site["name"])

    def process_site(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "sample" and not msg["is_observed"] and msg["value"] is None:
            msg["value"] = self._draw(msg)
        elif kind == "plate" and msg["value"] is None:  # subsampling draws its indices
            msg["kwargs"]["rng_key"] = _key()
        elif kind == "control_flow":  # numpyro.contrib.control_flow.scan / cond bodies
            msg["kwargs"]["substitute_stack"].append(("substitute", self._substitute))
            self.control_flow = True

    def _substitute(self, site: dict) -> jax.Array | None:
        if site["is_observed"]:
            return None
        return self._draw(site)


def _site_log_probs(site: dict) -> jax.Array:
    """``scale · log p(value)`` of a sample site, one term per element of its batch."""
    fn, value = site["fn"], site["value"]
    intermediates = site.get("intermediates")
    log_p = fn.log_prob(value, intermediates) if intermediates else log_prob(fn, value)
    if site.get("scale") is not None:
        log_p = site["scale"] * log_p
    return jnp.asarray(log_p)


def _site_log_prob(site: dict) -> jax.Array:
    return jnp.sum(_site_log_probs(site))


def _frames(site: dict) -> tuple:
    """The site's ``numpyro.plate`` frames as ``((name, dim), ...)``."""
    return tuple((f.name, f.dim) for f in site.get("cond_indep_stack") or ())


def _site_terms(
    trace: dict, plated: bool = True, score_only: Collection[str] = frozenset()
) -> list:
    """Each sample site's ``scale · log p(value)`` with the plates its elements are in:
    ``[(array, ((name, dim), ...)), ...]`` (a plate whose dimension the array lacks is
    summed over; ``plated=False`` sums every term, for traces whose plates cannot be
    read off the sites, such as those of ``scan`` bodies).

    The sites in ``score_only`` draw their value without derivative; the derivative of
    their own ``log q(x)`` is then a score, of expectation zero, and is left out
    (``sg``), as ``TraceGraph_ELBO`` does in Pyro and NumPyro: their estimator is the
    score times the terms downstream, with less variance."""
    terms = []
    for site in trace.values():
        if site["type"] != "sample":
            continue
        log_p = _site_log_probs(site)
        if site["name"] in score_only:
            log_p = jax.lax.stop_gradient(log_p)
        if not plated:
            terms.append((jnp.sum(log_p), ()))
            continue
        sizes = {f.name: f.size for f in site.get("cond_indep_stack") or ()}
        plates = tuple(
            (name, dim)
            for name, dim in _frames(site)
            if -dim <= log_p.ndim and log_p.shape[dim] == sizes[name]
        )
        terms.append((log_p, plates))
    return terms


def _log_density(trace: dict) -> jax.Array:
    total = jnp.zeros(())
    for site in trace.values():
        if site["type"] == "sample":
            total = total + _site_log_prob(site)
    return total


def _is_auxiliary(site: dict) -> bool:
    return bool((site.get("infer") or {}).get("is_auxiliary", False))


def sim(
    program: Callable,
    *args: Any,
    params: Any = None,
    strategies: Mapping[str, Strategy] | Strategy | None = None,
    **kwargs: Any,
) -> Trace:
    """Run a NumPyro program inside an expectation.

    Each latent ``numpyro.sample`` becomes a ``ppl.sample`` site whose strategy comes,
    in order, from ``strategies[name]``, the site's ``infer={"strategy": ...}``, or the
    default policy (``reparam`` where the distribution has ``rsample``, otherwise
    ``reinforce``: discrete sites never silently get a pathwise gradient).

    Args:
        program: a NumPyro model or guide (a function, or a callable such as an
            autoguide).
        *args: its positional arguments.
        params: the values of its ``numpyro.param`` sites, unconstrained (a dict by
            name, or an object with those attributes such as an equinox module).
        strategies: site name -> strategy, overriding the site's own choice; or one
            `ppl.Strategy` for every site (``strategies=ppl.detached`` draws them all
            without an estimator).
        **kwargs: its keyword arguments.

    Returns:
        A `Trace` with the latent choices, ``log q(choices)`` and the return value.
    """
    return _simulate(program, args, kwargs, params, strategies, split=False)[0]


def sim_with_terms(
    program: Callable,
    *args: Any,
    params: Any = None,
    strategies: Mapping[str, Strategy] | Strategy | None = None,
    **kwargs: Any,
) -> tuple[Trace, list]:
    """`sim`, and ``log q`` split into one term per site with its plates (`_site_terms`):
    the objectives that are sums of log densities (the ELBO) add these as costs, so
    that each element of a score-function site sees only the terms it can change.

    The terms are None where that gains nothing: for families, and where a site's
    strategy evaluates the rest of the program itself (enum, mvd; leave_one_out excepted,
    whose baselines are per element), which is cheapest with the log weight as one
    return value (lane by lane in particles)."""
    return _simulate(program, args, kwargs, params, strategies, split=True)


def _simulate(
    program: Any,
    args: tuple,
    kwargs: dict,
    params: Any,
    strategies: Mapping[str, Strategy] | Strategy | None,
    split: bool,
) -> tuple[Trace, Any]:
    """`sim`, with the terms of `sim_with_terms` where ``split`` (else None, not traced)."""
    if isinstance(program, Family):
        return program.simulate(params, strategies, *args, **kwargs), None
    runner = _Simulate(program, params, strategies, program)
    with handlers.trace() as trace:
        retval = runner(*args, **kwargs)
    _check_strategies(strategies, trace, program)
    choices = {
        name: site["value"]
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"] and not _is_auxiliary(site)
    }
    choices.update(
        (name, site["value"])
        for name, site in trace.items()
        if site["type"] == "plate" and _subsampled(site)
    )
    auxiliary = {
        name: site["value"]
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"] and _is_auxiliary(site)
    }
    terms = None
    if split and not runner.continuation:
        terms = _site_terms(trace, not runner.control_flow, frozenset(runner.score_only))
    return Trace(choices, _log_density(trace), retval, auxiliary), terms


def _check_strategies(
    strategies: Mapping[str, Strategy] | Strategy | None, trace: dict, program: Any
) -> None:
    if not strategies or isinstance(strategies, Strategy):
        return
    unknown = sorted(set(strategies) - {n for n, s in trace.items() if s["type"] == "sample"})
    if unknown:
        raise ValueError(
            f"strategies were given for {unknown}, which are not sample sites of "
            f"{_program_name(program)} (its sites: "
            f"{sorted(n for n, s in trace.items() if s['type'] == 'sample')})."
        )


class _NeedsEnumeration(Exception):
    """Raised by `_Score` at a latent site without a value that is to be summed out."""


def _marked(site: dict, names: Collection[str]) -> bool:
    """Whether a latent site is to be enumerated: named, or marked ``"parallel"``."""
    return site["name"] in names or (site.get("infer") or {}).get("enumerate") == "parallel"


def _enumerable_in_body(site: dict) -> bool:
    """Whether NumPyro's enumerated ``scan`` sums this body site out (``config_enumerate``)."""
    infer = site.get("infer") or {}
    return site["fn"].has_enumerate_support and infer.get("enumerate", "parallel") == "parallel"


class _Score(_Runner):
    """Put the given choices at latent sites; check names, shapes and supports."""

    def __init__(
        self,
        fn: Callable,
        choices: Mapping[str, Any],
        params: Any,
        program: Any,
        names: Collection[str] = (),
    ) -> None:
        self.choices = choices
        self.names = frozenset(names)  # sites to enumerate (besides marked ones)
        self.used: set = set()
        self.control_flow = False  # a scan/cond body ran (its plates are not per site)
        super().__init__(fn, params, program)

    def _value(self, site: dict) -> jax.Array:
        name = site["name"]
        if name not in self.choices and _marked(site, self.names):
            raise _NeedsEnumeration(name)
        if name not in self.choices:
            raise ValueError(
                f"latent site '{name}' ({type(site['fn']).__name__}) of "
                f"{_program_name(self.program)} has no value in choices (choices has "
                f"{sorted(self.choices)}). Give it a value, observe it with obs=, or "
                f"make the guide sample a site named '{name}'."
            )
        self.used.add(name)
        with jax.ensure_compile_time_eval():  # keep a constant value concrete
            value = jnp.asarray(self.choices[name])
        fn = site["fn"]
        expected = tuple(site["kwargs"].get("sample_shape", ())) + fn.shape()
        if value.shape != expected:
            raise ValueError(
                f"site '{name}' ({type(fn).__name__}) of {_program_name(self.program)} "
                f"expects a value of shape {expected}, got {value.shape}. Check the "
                f"guide's site '{name}' (plates and event dimensions must match the model)."
            )
        return _check_support(value, fn, name)

    def process_site(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "sample" and not msg["is_observed"] and msg["value"] is None:
            msg["value"] = self._value(msg)
        elif kind == "plate" and msg["value"] is None:
            if msg["name"] in self.choices:  # the guide's subsample, as NumPyro's replay
                msg["value"] = jnp.asarray(self.choices[msg["name"]])
                self.used.add(msg["name"])
            else:
                msg["kwargs"]["rng_key"] = _key()
        elif kind == "control_flow":
            msg["kwargs"]["substitute_stack"].append(("substitute", self._body_value))
            self.used.update(self.choices)  # values inside scan are matched by numpyro
            self.control_flow = True

    def _body_value(self, site: dict) -> Any:
        """The value of a site in a ``scan``/``cond`` body (NumPyro indexes it by step)."""
        name = site["name"]
        if name in self.choices:
            return self.choices[name]
        if site["is_observed"] or site["value"] is not None:
            return None
        if _marked(site, self.names) or _enumerable_in_body(site):
            return self._enumerated_in_body(site)
        raise ValueError(
            f"latent site '{name}' ({type(site['fn']).__name__}) in a scan or cond body "
            f"of {_program_name(self.program)} has no value in choices (choices has "
            f"{sorted(self.choices)}). Give it a value, observe it with obs=, or make the "
            f"guide sample a site named '{name}' (its values stacked over the steps)."
        )

    def _enumerated_in_body(self, site: dict) -> Any:
        raise _NeedsEnumeration(site["name"])


def _check_support(value: jax.Array, fn: Any, name: str) -> jax.Array:
    support = fn.support
    if is_real(base_constraint(support)) or not jnp.issubdtype(value.dtype, jnp.number):
        return value  # every real value is in the support: nothing to check
    with jax.ensure_compile_time_eval():  # a concrete value is checked while tracing
        ok = jnp.all(support(value))
    message = (
        f"the value of site '{name}' lies outside the support of "
        f"{type(fn).__name__} ({support}); the guide must draw it from a distribution "
        f"with the same support (use a constrained distribution or a transform)."
    )
    if not isinstance(ok, jax.core.Tracer):
        if not bool(ok):
            raise ValueError(message)
        return value
    return eqx.error_if(value, jnp.logical_not(ok), message)


def density(
    program: Callable,
    choices: Mapping[str, Any],
    *args: Any,
    params: Any = None,
    enumerate: Collection[str] = (),  # noqa: A002 - NumPyro's word for summing out
    **kwargs: Any,
) -> jax.Array:
    """The log joint density of ``program`` at ``choices`` (observed sites included).

    Discrete latent sites that are absent from ``choices`` and either marked
    ``infer={"enumerate": "parallel"}`` in the program (as NumPyro's
    ``config_enumerate`` marks them) or named in ``enumerate`` are summed out exactly:
    the result is ``log Σ_c p(choices, c)``, computed in parallel over their supports,
    with plates, and with ``numpyro.contrib.control_flow.scan``/``markov`` chains in time
    linear in their length (see the "Discrete latents" docs page). Every objective
    built on ``density`` then optimizes the marginal likelihood of the summed-out sites.

    Args:
        program: a NumPyro model (or guide).
        choices: latent site name -> value, for every latent site of the program that
            is not summed out.
        *args: the program's positional arguments.
        params: values of its ``numpyro.param`` sites (unconstrained), as in `sim`.
        enumerate: names of further discrete sites to sum out (besides the marked ones).
        **kwargs: its keyword arguments.

    Returns:
        ``Σ_sites scale · log p(value)`` with the enumerated sites summed out, a scalar.

    Raises:
        ValueError: naming the site, when a latent site has no value, a choice is not a
            site of the program, a value has the wrong shape or lies outside the
            support, or a parameter is missing; and when a site to sum out has no finite
            support, is also in ``choices`` (``enumerate`` only), makes a factor too
            large for memory, or depends on a step further back than the declared
            Markov order.

    Examples:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, ppl
        >>> def mixture(x):
        ...     c = numpyro.sample("c", dist.Categorical(jnp.array([0.3, 0.7])))
        ...     numpyro.sample("x", dist.Normal(jnp.array([-1.0, 1.0])[c], 1.0), obs=x)
        >>> round(float(ppl.density(mixture, {}, 0.5, enumerate=["c"])), 4)  # log Σ_c p(c, x)
        -1.2542
    """
    if isinstance(program, Family):
        return program.log_density(choices, params, *args, **kwargs)
    names = _enumerate_names(enumerate, choices, program)
    try:
        sites = _site_log_densities(program, choices, params, names, args, kwargs)
    except _NeedsEnumeration:
        from ppl.gen._enumerate import enumerated_log_density

        log_p, used = enumerated_log_density(program, choices, params, names, args, kwargs)
        _check_used(choices, used, None, program)
        return log_p
    return jnp.sum(jnp.stack(list(sites.values())))


def density_terms(
    program: Callable, choices: Mapping[str, Any], *args: Any, params: Any = None, **kwargs: Any
) -> list:
    """`density`, split into one term per site with its plates (see `sim_with_terms`);
    one unplated term where the density does not split (summed-out sites, families)."""
    if isinstance(program, Family):
        return [(program.log_density(choices, params, *args, **kwargs), ())]
    scorer = _Score(program, choices, params, program, frozenset())
    try:
        with handlers.trace() as trace:
            scorer(*args, **kwargs)
    except _NeedsEnumeration:
        return [(density(program, choices, *args, params=params, **kwargs), ())]
    _check_used(choices, scorer.used, trace, program)
    return _site_terms(trace, plated=not scorer.control_flow)


def _enumerate_names(
    names: Collection[str] | str, choices: Mapping[str, Any], program: Any
) -> frozenset:
    if isinstance(names, str):
        names = (names,)
    clash = sorted(set(names) & set(choices))
    if clash:
        raise ValueError(
            f"sites {clash} of {_program_name(program)} are named in enumerate= but also "
            f"have values in choices (the guide samples them). Either sum them out (drop "
            f"them from the guide) or score the guide's values (drop them from enumerate=)."
        )
    return frozenset(names)


def _check_used(choices: Mapping[str, Any], used: set, trace: dict | None, program: Any) -> None:
    extra = sorted(set(choices) - used)
    if extra:
        sites = (
            ""
            if trace is None
            else (f" (its sites: {sorted(n for n, s in trace.items() if s['type'] == 'sample')})")
        )
        raise ValueError(
            f"choices {extra} are not sample sites of {_program_name(program)}{sites}. A "
            f"guide may only sample sites the model has; mark helper sites of the guide "
            f"with infer={{'is_auxiliary': True}}."
        )


def site_log_densities(
    program: Callable, choices: Mapping[str, Any], *args: Any, params: Any = None, **kwargs: Any
) -> dict:
    """Like `density`, but the log density of each sample site separately (a dict).

    Raises:
        ValueError: as `density`, and for a site marked for enumeration without a value:
            the density with it summed out does not split by site (use `density`).
    """
    try:
        return _site_log_densities(program, choices, params, frozenset(), args, kwargs)
    except _NeedsEnumeration as marked:
        raise ValueError(
            f"site '{marked}' of {_program_name(program)} is marked for enumeration and "
            f"has no value: the density with it summed out does not split into one term "
            f"per site. Use ppl.density, or give the site a value."
        ) from None


def _site_log_densities(
    program: Callable,
    choices: Mapping[str, Any],
    params: Any,
    names: Collection[str],
    args: tuple,
    kwargs: dict,
) -> dict:
    scorer = _Score(program, choices, params, program, names)
    with handlers.trace() as trace:
        scorer(*args, **kwargs)
    _check_used(choices, scorer.used, trace, program)
    out = {name: _site_log_prob(site) for name, site in trace.items() if site["type"] == "sample"}
    return out or {"": jnp.zeros(())}
