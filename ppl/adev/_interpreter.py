"""The ADEV transformation: from a program with random choices to a surrogate.

``surrogate(jaxpr, key, args)`` re-evaluates the staged program equation by equation,
replacing each ``sample`` equation by its strategy's rule, and returns one scalar
whose value is an unbiased estimate of the program's expected value and whose JAX
derivative (forward or reverse) is an unbiased estimate of that expectation's
gradient (Lew et al., POPL 2023; Becker et al., PLDI 2024).

Score-function sites need the value of the rest of the program, ``f``. Rather than
calling a continuation, they are collected in an accumulator ``Acc``:

* ``score  = Σ_i z_i``, the zero-valued score terms ``z_i = log p_i - sg(log p_i)``;
* ``offset = Σ_i sg(c_i + b_i) z_i``, with ``c_i`` the costs added before site ``i`` and
  ``b_i`` its baseline;
* ``cost   = Σ_j c_j``, the costs added with ``ppl.add_cost``.

At the end, with ``V = cost + r`` the program's value (``r`` its return value), the
surrogate is ``V + sg(V) score - offset``: its gradient is ``∇V + Σ_i (V - c_i - b_i)
∇log p_i``, which is REINFORCE with each site seeing only the costs after it. Sites
whose strategy needs the continuation itself (enumeration, MVD) get it in
continuation-passing style: the rest of the program, from the next equation on, as a
function of the site's value.

A continuation can also run in *primal mode* (``kont(x, primal=True)``): the rest of the
program evaluated for its value only, every later site drawing a plain sample (no
score, no enumeration, no nested continuations). A rule that needs only the value of
the rest of the program at some point (the off-sample values of MVD) calls it so, which
keeps the cost of ``k`` sequential MVD sites linear in ``k`` instead of ``2^k``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal, jaxprs_in_params

from ppl.adev._primitives import SiteInfo, cost_p, sample_p
from ppl.adev._strategies import elementwise_scores

if TYPE_CHECKING:
    from jax.extend.core import JaxprEqn, Var
    from jax.typing import ArrayLike

    from ppl.adev._strategies import Strategy

sg = jax.lax.stop_gradient

_INLINE = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
}


class Acc(NamedTuple):
    """Running sums over the sites seen so far (see the module docstring)."""

    score: jax.Array
    offset: jax.Array
    cost: jax.Array

    @staticmethod
    def zero() -> Acc:
        z = jnp.zeros((), jnp.result_type(float))
        return Acc(z, z, z)


def finalize(acc: Acc, value: jax.Array) -> jax.Array:
    """The surrogate of a program whose sites are summarized by ``acc``."""
    total = acc.cost + value
    return total + sg(total) * acc.score - acc.offset


def terminal(
    values: list, acc: Acc, salt: jax.Array | None = None, primal: bool = False
) -> jax.Array:
    """The continuation after the whole program: its surrogate, from its return value.

    Marked ``terminal``: a run whose continuation this is knows that nothing but its own
    return value follows, which lets score-function sites leave out what cannot depend
    on them (see `_Deferred`)."""
    return finalize(acc, jnp.asarray(values[0]).astype(acc.cost.dtype))


terminal.terminal = True


# The rest of the program: (outputs, accumulator, salt, primal) -> final surrogate. A
# salt (an integer array or None) is folded into every later key, so that a strategy
# can run the rest of the program with independent randomness per call
# (leave_one_out); primal=True evaluates it for its value only (see the module doc).
Kont = Callable[[list, Acc, "jax.Array | None", bool], jax.Array]

# ------------------------------------------------------------------- static analysis

_ContSite = tuple[SiteInfo, str]  # a site whose strategy needs a continuation, and its name


@functools.lru_cache(maxsize=8192)
def _scan_jaxpr(jaxpr: Jaxpr) -> tuple[bool, _ContSite | None]:
    """(does ``jaxpr`` contain effects of ppl, first site needing a continuation)."""
    has, cont = False, None
    for eqn in jaxpr.eqns:
        if eqn.primitive is sample_p:
            has = True
            if cont is None and _strategy_needs_continuation(eqn):
                cont = (eqn.params["site"], _strategy_name(eqn))
        elif eqn.primitive is cost_p:
            has = True
        else:
            for sub in jaxprs_in_params(eqn.params):
                sub_has, sub_cont = _scan_jaxpr(sub)
                has = has or sub_has
                cont = cont or sub_cont
    return has, cont


@functools.lru_cache(maxsize=8192)
def _key_users(jaxpr: Jaxpr) -> int:
    """How many equations of ``jaxpr`` (sites, or structured ones holding sites) use keys."""
    return sum(eqn.primitive is sample_p or _eqn_sites(eqn)[0] for eqn in jaxpr.eqns)


def _eqn_sites(eqn: JaxprEqn) -> tuple[bool, _ContSite | None]:
    has, cont = False, None
    for sub in jaxprs_in_params(eqn.params):
        sub_has, sub_cont = _scan_jaxpr(sub)
        has, cont = has or sub_has, cont or sub_cont
    return has, cont


def _strategy_template(eqn: JaxprEqn) -> Strategy:
    tree = eqn.params["strategy_tree"]
    return jax.tree.unflatten(tree, [None] * tree.num_leaves)


def _strategy_needs_continuation(eqn: JaxprEqn) -> bool:
    return bool(_strategy_template(eqn).needs_continuation)


def _strategy_name(eqn: JaxprEqn) -> str:
    return type(_strategy_template(eqn)).__name__


def _first_site(jaxpr: Jaxpr) -> SiteInfo | None:
    for eqn in jaxpr.eqns:
        if eqn.primitive is sample_p:
            return eqn.params["site"]
        for sub in jaxprs_in_params(eqn.params):
            site = _first_site(sub)
            if site is not None:
                return site
    return None


# ---------------------------------------------------------------------- evaluation


def _read(env: dict, v: Var | Literal) -> Any:
    return v.val if isinstance(v, Literal) else env[v]


def _bind(eqn: JaxprEqn, invals: list) -> list:
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # older JAX: (subfuns, params)
        subfuns, params = params
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    if ctx is None:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    else:
        with ctx:
            out = eqn.primitive.bind(*subfuns, *invals, **params)
    return out if eqn.primitive.multiple_results else [out]


def _write(env: dict, outvars: Sequence[Var], vals: Sequence[Any]) -> None:
    for v, x in zip(outvars, vals):
        if type(v).__name__ != "DropVar":
            env[v] = x


def _open(closed: ClosedJaxpr | Jaxpr) -> tuple[Jaxpr, list]:
    if isinstance(closed, ClosedJaxpr):
        return closed.jaxpr, list(closed.consts)
    return closed, []


def run(
    jaxpr: Jaxpr,
    consts: list,
    args: list,
    acc: Acc,
    key: jax.Array,
    kont: Kont | None,
    primal: bool = False,
    force: _Force | None = None,
    tape: dict | None = None,
    region: bool = False,
) -> Any:
    """Evaluate ``jaxpr`` under ADEV.

    With ``kont=None`` (local mode, used inside loops and for sub-programs without
    continuation sites) returns ``(outputs, acc)``. Otherwise returns the final
    surrogate ``kont(outputs, acc, None, primal)``. With ``primal=True`` every site
    draws a plain sample and only the value (``acc.cost`` and the outputs) is meaningful;
    ``force`` then replaces one lane of one site's draw (the suffix runs of a loop). In
    local mode, ``tape`` (a dict) lets continuation sites draw plainly, recording their
    operands by equation index (the forward pass of a loop). ``region`` marks the body
    of a ``ppl.particles`` map (see `_batched_site`).
    """
    env: dict = {}
    _write(env, jaxpr.constvars, consts)
    _write(env, jaxpr.invars, args)
    return _run_from(jaxpr, 0, env, acc, key, kont, None, primal, force, tape, region)


def _run_from(
    jaxpr: Jaxpr,
    start: int,
    env: dict,
    acc: Acc,
    key: jax.Array,
    kont: Kont | None,
    salt: jax.Array | None = None,
    primal: bool = False,
    force: _Force | None = None,
    tape: dict | None = None,
    region: bool = False,
    probe: _Deferred | None = None,
) -> Any:
    if salt is not None:
        key = jax.random.fold_in(key, salt)
    eqns = jaxpr.eqns
    # With one user the key passes through unchanged (one PRNG call fewer per draw).
    shared = _key_users(jaxpr) > 1
    # score-function sites of this run, and the costs it adds, until they are settled
    deferred: list[_Deferred] = [] if probe is None else [probe]
    costs: list[_Cost] = []
    for i in range(start, len(eqns)):
        eqn = eqns[i]
        invals = [_read(env, v) for v in eqn.invars]
        prim = eqn.primitive
        if prim is sample_p:
            if primal:
                key_i = jax.random.fold_in(key, i) if shared else key
                value = _primal_site(eqn, invals, _value_key(eqn, key_i))
                if force is not None and force.index == i:
                    value = force.apply(value, eqn)
                _write(env, eqn.outvars, [value])
                continue
            strategy, distribution = _site_objects(eqn, invals)
            site = eqn.params["site"]
            if strategy.needs_continuation:
                key_i = jax.random.fold_in(key, i) if shared else key
                if kont is None:
                    if tape is None:
                        raise _loop_error((site, type(strategy).__name__))
                    # the forward pass of a loop: a plain draw, its operands recorded
                    tape[i] = invals[eqn.params["num_lanes"] :]
                    _write(env, eqn.outvars, [_primal_site(eqn, invals, _value_key(eqn, key_i))])
                    continue

                def site_kont(
                    x: ArrayLike, salt: jax.Array | None = None, primal: bool = False,
                    elementwise: bool = False, i: int = i, eqn: JaxprEqn = eqn,
                    key: jax.Array = key, shape: tuple = tuple(distribution.batch_shape),
                ) -> jax.Array | tuple[jax.Array, jax.Array]:  # fmt: skip
                    env2 = _with_value(env, eqn, x)
                    if not elementwise:
                        return _run_from(
                            jaxpr, i + 1, env2, Acc.zero(), key, kont, salt, primal, region=region
                        )
                    return _elementwise_rest(jaxpr, i, env2, key, kont, salt, region, shape, eqn)

                site_kont.elementwise = not eqn.params["batch_ndims"]

                # the map's outputs, primal
                def outputs(
                    x: ArrayLike,
                    salt: jax.Array | None,
                    i: int = i,
                    eqn: JaxprEqn = eqn,
                    key: jax.Array = key,
                ) -> list:
                    env2 = _with_value(env, eqn, x)
                    return _run_from(jaxpr, i + 1, env2, Acc.zero(), key, None, salt, True)[0]

                # site_kont(x), and the outputs
                def recorded(
                    x: ArrayLike, i: int = i, eqn: JaxprEqn = eqn, key: jax.Array = key
                ) -> tuple[jax.Array, list | None]:
                    seen = []

                    def record(
                        values: list,
                        acc2: Acc,
                        salt: jax.Array | None = None,
                        primal: bool = False,
                    ) -> jax.Array:
                        if not primal:  # the run at x itself, not a later site's lanes
                            seen.append([sg(o) for o in values])
                        return kont(values, acc2, salt, primal)

                    record.terminal = getattr(kont, "terminal", False)
                    env2 = _with_value(env, eqn, x)
                    full = _run_from(jaxpr, i + 1, env2, Acc.zero(), key, record, region=region)
                    return full, seen[0] if len(seen) == 1 else None

                acc = _settle(jaxpr, deferred, costs, acc)
                if eqn.params["batch_ndims"]:
                    lanewise = region and eqn.params["batch_ndims"] == 1
                    lanewise = lanewise and not _costs_after(jaxpr, i)
                    # the outputs can be read off the run at x where no later step of
                    # the map runs the rest of it inside a sub-trace (cond, scan)
                    readable = _flat_after(jaxpr, i)
                    inner = (outputs, kont, recorded if readable else None) if lanewise else None
                    return finalize(acc, _batched_site(eqn, invals, key_i, site_kont, inner))
                return finalize(acc, strategy.estimate(key_i, distribution, site_kont))
            key_i = jax.random.fold_in(key, i) if shared else key
            value, site = _local_site(eqn, invals, key_i, i)
            if site is not None:
                deferred.append(site)
            _write(env, eqn.outvars, [value])
        elif prim is cost_p:
            acc = acc._replace(cost=acc.cost + jnp.sum(invals[0]))
            if not primal:
                costs.append(_Cost(i, invals[0], eqn.params.get("plates", ())))
        else:
            has, cont = _eqn_sites(eqn)
            if not has:
                _write(env, eqn.outvars, _bind(eqn, invals))
                continue
            key_i = jax.random.fold_in(key, i) if shared else key
            if (
                cont is not None
                and kont is not None
                and not primal
                and (prim.name in _INLINE or prim.name in ("cond", "scan"))
            ):

                def rest(
                    outs: Sequence[Any],
                    acc2: Acc,
                    salt: jax.Array | None = None,
                    primal: bool = False,
                    i: int = i,
                    eqn: JaxprEqn = eqn,
                    key: jax.Array = key,
                ) -> jax.Array:
                    env2 = dict(env)
                    _write(env2, eqn.outvars, outs)
                    return _run_from(
                        jaxpr, i + 1, env2, acc2, key, kont, salt, primal, region=region
                    )

                acc = _settle(jaxpr, deferred, costs, acc)
                return _structured(eqn, invals, acc, key_i, rest)
            before = acc.cost
            outs, acc = _structured(eqn, invals, acc, key_i, None, primal)
            if not primal and any(map(_has_cost, jaxprs_in_params(eqn.params))):
                costs.append(_Cost(i, acc.cost - before, ()))
            _write(env, eqn.outvars, outs)
    outs = [_read(env, v) for v in jaxpr.outvars]
    if kont is not None and getattr(kont, "terminal", False):
        acc = _settle(jaxpr, deferred, costs, acc, outs[0])
    else:
        acc = _settle(jaxpr, deferred, costs, acc)
    return (outs, acc) if kont is None else kont(outs, acc, salt, primal)


def _with_value(env: dict, eqn: JaxprEqn, x: ArrayLike) -> dict:
    """A copy of ``env`` with the site ``eqn``'s value set to ``x`` (a continuation's
    starting point)."""
    env2 = dict(env)
    _write(env2, eqn.outvars, [_cast(x, eqn)])
    return env2


def _cast(x: ArrayLike, eqn: JaxprEqn) -> jax.Array:
    aval = eqn.outvars[0].aval
    return jnp.asarray(x).astype(aval.dtype).reshape(aval.shape)


def _site_objects(eqn: JaxprEqn, invals: list) -> tuple[Strategy, Any]:
    p = eqn.params
    leaves = invals[p["num_lanes"] :]
    distribution = jax.tree.unflatten(p["dist_tree"], leaves[: p["num_dist"]])
    strategy = jax.tree.unflatten(p["strategy_tree"], leaves[p["num_dist"] :])
    return strategy, distribution


def _per_lane(
    eqn: JaxprEqn, invals: list, key: jax.Array, draw: Callable[[jax.Array, list], Any]
) -> Any:
    """``draw(key, leaves)`` at a site, with one key per lane of its batch dimensions
    (sites inside ``jax.vmap``/``ppl.particles``), ``leaves`` the distribution's and
    the strategy's."""
    p = eqn.params
    n = p["batch_ndims"]
    leaves = invals[p["num_lanes"] :]
    if n == 0:
        return draw(key, leaves)
    batch = p["shape"][:n]
    keys = jax.random.split(key, math.prod(batch)).reshape(batch)
    fn = draw
    for _ in range(n):
        fn = jax.vmap(fn)
    return fn(keys, leaves)


def _primal_site(eqn: JaxprEqn, invals: list, key: jax.Array) -> jax.Array:
    """A plain draw from the site's distribution (primal mode): no score, no gradient."""
    p = eqn.params

    def draw(key: jax.Array, leaves: list) -> jax.Array:
        distribution = jax.tree.unflatten(p["dist_tree"], leaves[: p["num_dist"]])
        return sg(distribution.sample(key))

    return _cast(_per_lane(eqn, invals, key, draw), eqn)


def _local_site(
    eqn: JaxprEqn, invals: list, key: jax.Array, index: int
) -> tuple[jax.Array, _Deferred | None]:
    """Draw at a site whose strategy needs no continuation: ``(value, _Deferred or
    None)``, the latter holding its score terms (one per element where the strategy's
    score keeps them, see `ppl.score`) until the run settles them."""
    p = eqn.params
    scored = []

    def draw(key: jax.Array, leaves: list) -> tuple[jax.Array, jax.Array, jax.Array]:
        distribution = jax.tree.unflatten(p["dist_tree"], leaves[: p["num_dist"]])
        strategy = jax.tree.unflatten(p["strategy_tree"], leaves[p["num_dist"] :])
        with elementwise_scores():
            value, score, baseline = strategy.draw(key, distribution)
        scored.append(score is not None)
        zero = jnp.zeros((), jnp.result_type(float))
        score = zero if score is None else score
        if baseline is None:
            baseline = zero
        elif jnp.broadcast_shapes(jnp.shape(baseline), jnp.shape(score)) != jnp.shape(score):
            baseline = jnp.sum(baseline)  # one baseline for the whole site
        return value, score, jnp.broadcast_to(baseline, jnp.shape(score))

    value, score, baseline = _per_lane(eqn, invals, key, draw)
    value = _cast(value, eqn)
    if not scored[0]:
        return value, None
    return value, _Deferred(index, score, baseline, p.get("plates", ()))


# ------------------------------------------- score-function sites: what they multiply


class _Deferred(NamedTuple):
    """A score-function site whose terms wait until the run knows the costs after it.

    ``score`` holds the zero-valued terms ``log p(x_e) - sg(log p(x_e))``, one per
    element ``e`` of the site's lanes and batch (or one for the whole site), and
    ``baseline`` one baseline per term. When the run settles it (`_settle`), element
    ``e`` gets the coefficient ``sg(D_e - b_e)``, where ``D_e`` sums the costs whose
    value depends on the site by the program's data flow (read off the jaxpr), each
    summed over every dimension except the plates it shares with the site, where it
    keeps only element ``e``. A cost that cannot depend on the site adds zero to the
    site's expected gradient, and so does element ``e'`` of a cost in a plate the site
    shares, for ``e' != e``: leaving them out keeps the estimator unbiased and lowers
    its variance (Rao-Blackwellization; Schulman et al. 2015, "Gradient Estimation
    Using Stochastic Computation Graphs", sec. 3; Pyro's and NumPyro's
    ``TraceGraph_ELBO``).
    """

    index: int  # the site's equation in the run's jaxpr
    score: jax.Array
    baseline: jax.Array
    plates: tuple  # ((name, dim), ...), dims counted from the right of the batch
    # a probe (see `_elementwise_rest`) records its coefficients here instead
    probe: list | None = None


class _Cost(NamedTuple):
    """A cost added in a run: its equation, its value and its plates."""

    index: int
    value: jax.Array
    plates: tuple


@functools.lru_cache(maxsize=8192)
def _dependence(jaxpr: Jaxpr) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Which sample equations of ``jaxpr`` each equation's inputs, and each output of
    ``jaxpr``, depend on, by data flow: one bitmask each, bit ``i`` for equation ``i``.
    An equation holding a sub-program is taken to connect each output to every input."""
    deps: dict = {}
    masks = []
    for i, eqn in enumerate(jaxpr.eqns):
        mask = 0
        for v in eqn.invars:
            if not isinstance(v, Literal):
                mask |= deps.get(v, 0)
        masks.append(mask)
        if eqn.primitive is sample_p:
            mask |= 1 << i
        for v in eqn.outvars:
            deps[v] = mask
    outs = tuple(0 if isinstance(v, Literal) else deps.get(v, 0) for v in jaxpr.outvars)
    return tuple(masks), outs


def _aligned(cost: _Cost, site: _Deferred) -> jax.Array:
    """``cost`` as the site's elements see it: summed over every dimension but the
    plates it shares with the site, those moved to the site's dimensions (size 1
    elsewhere), so it broadcasts against ``site.score``."""
    value, shape = jnp.asarray(cost.value), jnp.shape(site.score)
    pairs = []
    for name, dim in site.plates:
        for other, cdim in cost.plates:
            if (
                name == other
                and -dim <= len(shape)
                and -cdim <= value.ndim
                and value.shape[cdim] == shape[dim]
            ):
                pairs.append((value.ndim + cdim, len(shape) + dim))
    if not pairs:
        return jnp.sum(value)
    pairs.sort(key=lambda pair: pair[1])
    kept = [c for c, _ in pairs]
    reduced = jnp.sum(value, axis=tuple(a for a in range(value.ndim) if a not in kept))
    reduced = jnp.transpose(reduced, [sorted(kept).index(c) for c in kept])
    target = [1] * len(shape)
    for _, d in pairs:
        target[d] = shape[d]
    return reduced.reshape(target)


def _after(dependent: jax.Array, value: jax.Array, outs: tuple[int, ...], bit: int) -> jax.Array:
    """What follows a site at the end of a run: its dependent costs, and the run's
    return value where that depends on the site."""
    return dependent + value if outs[0] & bit else dependent


def _elementwise_rest(
    jaxpr: Jaxpr,
    i: int,
    env: dict,
    key: jax.Array,
    kont: Kont | None,
    salt: jax.Array | None,
    region: bool,
    shape: tuple,
    eqn: JaxprEqn,
) -> tuple[jax.Array, jax.Array]:
    """The rest of the program after site ``i`` (its value ``x`` already in ``env``) and
    what each element ``e`` of the site multiplies: ``(f, D)`` with ``D_e`` the value of
    the rest that can depend on element ``e`` (see `_Deferred`; ``shape`` the site's
    batch shape), for a strategy that forms its own coefficients (``leave_one_out``'s
    per-element baselines).

    A probe, a deferred site with no score, rides along the run and records ``D`` when
    the run settles it; where the run cannot see the rest of the program there (before
    a continuation site, at the end of a sub-program), it records ``D_e - V`` and ``V``,
    the value of the whole rest, is added here.
    """
    records: list = []
    zero = jnp.zeros(shape, jnp.result_type(float))
    probe = _Deferred(i, zero, zero, eqn.params.get("plates", ()), records)
    f = _run_from(jaxpr, i + 1, env, Acc.zero(), key, kont, salt, False, region=region, probe=probe)
    [(d, whole)] = records
    d = d + sg(f) if whole else d
    return f, sg(jnp.broadcast_to(d, shape))


def _settle(
    jaxpr: Jaxpr, deferred: list, costs: list, acc: Acc, value: jax.Array | None = None
) -> Acc:
    """Fold the deferred sites of a run into ``acc`` (and empty ``deferred``).

    With ``value`` (the run's return value, where nothing else follows the run) element
    ``e`` of a site gets the term ``score_e sg(D_e + [value] - b_e)``, ``[value]`` only
    where the return value depends on the site. Otherwise the rest of the program is
    not known here: the terms go into the sums of `Acc`, whose final value ``V``
    supplies it, as ``score_e sg(V - C + D_e - b_e)`` with ``C`` the costs so far.
    """
    if not deferred:
        return acc
    masks, outs = _dependence(jaxpr)
    score, offset, total = acc
    extra = jnp.zeros((), total.dtype)
    for site in deferred:
        bit = 1 << site.index
        dependent = jnp.zeros((), total.dtype)
        for cost in costs:
            if masks[cost.index] & bit:
                dependent = dependent + _aligned(cost, site)
        z, b = site.score, site.baseline
        if site.probe is not None:
            if value is None:  # V is the value of the whole rest, added by the caller
                site.probe.append((dependent - total, True))
            else:
                site.probe.append((_after(dependent, value, outs, bit), False))
            continue
        if value is None:
            score = score + jnp.sum(z)
            offset = offset + jnp.sum(z * sg(total - dependent + b))
        else:
            extra = extra + jnp.sum(z * sg(_after(dependent, value, outs, bit) - b))
    deferred.clear()
    return Acc(score, offset, total + extra)


# ------------------------------------------------------- continuation sites in lanes


_LANES = "ppl_lanes"  # the vmap axis of `_lane_terms`
PARTICLES = "ppl_particles"  # the name of the jit that ppl.particles wraps its map in


@functools.lru_cache(maxsize=8192)
def _has_cost(jaxpr: Jaxpr) -> bool:
    return any(
        eqn.primitive is cost_p or any(map(_has_cost, jaxprs_in_params(eqn.params)))
        for eqn in jaxpr.eqns
    )


def _flat_after(jaxpr: Jaxpr, i: int) -> bool:
    """Does the rest of ``jaxpr`` after equation ``i`` hold no continuation site inside
    a sub-program (its continuation would then run inside that sub-trace)?"""
    return all(
        eqn.primitive is sample_p or _eqn_sites(eqn)[1] is None for eqn in jaxpr.eqns[i + 1 :]
    )


def _costs_after(jaxpr: Jaxpr, i: int) -> bool:
    """Does anything after equation ``i`` of ``jaxpr`` add a cost?"""
    return any(
        eqn.primitive is cost_p or any(map(_has_cost, jaxprs_in_params(eqn.params)))
        for eqn in jaxpr.eqns[i + 1 :]
    )


def _lane_shape(eqn: JaxprEqn) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    """(batch shape, number of lanes, shape of one lane's value) of a site."""
    p = eqn.params
    batch = tuple(p["shape"][: p["batch_ndims"]])
    return batch, math.prod(batch), tuple(p["shape"][p["batch_ndims"] :])


class _Force(NamedTuple):
    """In a primal run: set lane ``lane`` of the draw at equation ``index`` to ``value``
    where ``active`` (a traced bool) holds."""

    index: int
    lane: jax.Array
    value: jax.Array
    active: jax.Array

    def apply(self, drawn: jax.Array, eqn: JaxprEqn) -> jax.Array:
        _, lanes, lane_shape = _lane_shape(eqn)
        flat = drawn.reshape(lanes, *lane_shape)
        replaced = _put(flat, self.lane, self.value).reshape(drawn.shape)
        return jnp.where(self.active, replaced, drawn)


class _LaneKont:
    """One lane's view of the continuation (see `_lane_terms`). ``sample`` is the lane's
    drawn value where the caller knows it (else None); calling the view on that very
    value returns the known value of the rest of the program, with no extra run."""

    def __init__(
        self,
        fn: Callable[..., jax.Array],
        sample: jax.Array | None = None,
        value: jax.Array | None = None,
    ) -> None:
        self.fn, self.sample, self.value = fn, sample, value

    def __call__(
        self, v: ArrayLike, salt: jax.Array | None = None, primal: bool = False
    ) -> jax.Array:
        if self.sample is not None and v is self.sample and salt is None:
            return self.value
        return self.fn(v, salt)


def _lane_terms(
    eqn: JaxprEqn,
    leaves: list,
    keys: jax.Array,
    lane_kont: Callable,
    samples: jax.Array | None = None,
    value: jax.Array | None = None,
) -> jax.Array:
    """``Σ_l (s_l - sg(s_l))``: the derivative of every lane's estimator, value 0.

    ``leaves`` are the site's distribution and strategy leaves with one leading axis of
    lanes, ``keys`` one key per lane, and ``lane_kont(l, v, salt)`` the value of the rest
    of the program with lane ``l`` of the site set to ``v`` (every other lane and every
    earlier choice keeping its sampled value). Each lane's strategy runs its own
    ``estimate`` on its own distribution, with a continuation that returns values only
    (``sg``), so the surrogate it returns carries exactly the derivative that reaches
    the expectation through that lane's distribution. All lanes, and every call a lane
    makes, are evaluated in one ``jax.vmap``. With ``samples`` (every lane's drawn value)
    and ``value`` (the value of the rest of the program at them), each lane's view has
    ``kont.sample``, on which it costs nothing (`MVD` uses it).
    """
    p = eqn.params
    _, _, lane_shape = _lane_shape(eqn)
    dtype = p["dtype"]

    def one(lane: jax.Array, key: jax.Array, leaves: list, sample: jax.Array | None) -> jax.Array:
        distribution = jax.tree.unflatten(p["dist_tree"], leaves[: p["num_dist"]])
        strategy = jax.tree.unflatten(p["strategy_tree"], leaves[p["num_dist"] :])

        def kont(v: ArrayLike, salt: jax.Array | None = None) -> jax.Array:
            v = jnp.asarray(v).astype(dtype).reshape(lane_shape)
            return sg(lane_kont(lane, sg(v), salt))

        estimate = strategy.estimate(key, distribution, _LaneKont(kont, sample, value))
        return estimate - sg(estimate)

    lanes = jnp.arange(keys.shape[0])
    return jnp.sum(jax.vmap(one, axis_name=_LANES)(lanes, keys, leaves, samples))


def _batched_site(
    eqn: JaxprEqn,
    invals: list,
    key: jax.Array,
    site_kont: Callable[..., Any],
    inner: tuple | None = None,
) -> jax.Array:
    """A continuation site inside ``jax.vmap``/``ppl.particles``, ``L`` lanes.

    Every lane's value ``x_l`` is drawn; the surrogate is ``kont(x) + Σ_l (s_l -
    sg(s_l))``, where ``kont(x)`` is the rest of the program at the sampled values
    (value, and derivative along every other path) and ``s_l`` lane ``l``'s strategy
    run on its own distribution with the continuation ``v -> sg(f(x with lane l set to
    v))`` in primal mode: each lane's derivative sees its own alternatives only, the
    other lanes keep their sampled values, so code after the map (a sum, a logsumexp
    over particles, a sort) stays unbiased. With one lane the strategy runs as at an
    unbatched site.

    Inside a ``ppl.particles`` map (``inner = (outputs, after)``: the map's outputs as a
    function of the site's value, and the continuation after the map) the lanes are
    independent until the map ends, so one run of the rest of the map with *every* lane
    at its own alternative (gathered across the lanes with ``all_gather``) gives each
    lane's outputs; lane ``l``'s continuation splices its outputs into those at the
    sampled values and runs only the code after the map once per lane. The rest of the
    map then costs ``S`` runs instead of ``B S``.
    """
    p = eqn.params
    batch, lanes, lane_shape = _lane_shape(eqn)
    leaves = [x.reshape(lanes, *x.shape[len(batch) :]) for x in invals[p["num_lanes"] :]]
    if lanes == 1:
        distribution = jax.tree.unflatten(p["dist_tree"], [x[0] for x in leaves[: p["num_dist"]]])
        strategy = jax.tree.unflatten(p["strategy_tree"], [x[0] for x in leaves[p["num_dist"] :]])
        return strategy.estimate(key, distribution, site_kont)
    key_lanes = jax.random.split(key)[1]
    x = _primal_site(eqn, invals, _value_key(eqn, key))
    flat = x.reshape(lanes, *lane_shape)

    def lane_kont(lane: jax.Array, v: jax.Array, salt: jax.Array | None) -> jax.Array:
        return site_kont(_put(flat, lane, v).reshape(x.shape), salt, True)

    full = None
    if inner is not None:
        outputs, after, recorded = inner
        # the map's outputs at the sampled values: read off the run at x where it can
        # be (it draws the later sites as the primal runs do, see `_value_key`)
        full, sampled = recorded(x) if recorded is not None else (None, None)
        if sampled is None:
            sampled = outputs(x, None)

        def lane_kont(lane: jax.Array, v: jax.Array, salt: jax.Array | None) -> jax.Array:
            every = jax.lax.all_gather(v, _LANES).reshape(x.shape)  # one value per lane
            spliced = [_put(s, lane, o) for s, o in zip(sampled, outputs(every, salt))]
            return after(spliced, Acc.zero(), salt, True)

    keys = jax.random.split(key_lanes, lanes)
    if full is None:
        full = site_kont(x)
    return full + _lane_terms(eqn, leaves, keys, lane_kont, flat, sg(full))


def _value_key(eqn: JaxprEqn, key: jax.Array) -> jax.Array:
    """The key a site's value is drawn with: for a continuation site in lanes, the one
    `_batched_site` draws with (its other half keys the lanes' estimators). Every run of
    the program, primal runs and a loop's forward pass included, then draws the same
    value there, so the run at the sampled values and the runs at one lane's
    alternatives share the later sites' draws (common random numbers)."""
    if eqn.params["batch_ndims"] and _lane_shape(eqn)[1] > 1 and _strategy_needs_continuation(eqn):
        return jax.random.split(key)[0]
    return key


def _put(array: jax.Array, lane: jax.Array, value: jax.Array) -> jax.Array:
    """``array`` with row ``lane`` taken from ``value`` (a row, or an array shaped like
    ``array``): a select, which under the lanes' ``vmap`` is much cheaper than the
    batched scatter of ``array.at[lane].set``."""
    value = jnp.asarray(value, array.dtype)
    row = (jnp.arange(array.shape[0]) == lane).reshape(-1, *([1] * (array.ndim - 1)))
    return jnp.where(row, value, array)


# ------------------------------------------------------------ structured primitives


def _structured(
    eqn: JaxprEqn,
    invals: list,
    acc: Acc,
    key: jax.Array,
    rest: Kont | None,
    primal: bool = False,
) -> Any:
    name = eqn.primitive.name
    if name in _INLINE:
        jaxpr, consts = _open(eqn.params[_INLINE[name]])
        region = eqn.params.get("name") == PARTICLES
        return run(jaxpr, consts, invals, acc, key, rest, primal, region=region)
    if name == "cond":
        return _cond(eqn, invals, acc, key, rest, primal)
    if name == "scan":
        if rest is not None:
            return _scan_cps(eqn, invals, acc, key, rest)
        return _scan(eqn, invals, acc, key, primal)
    if name == "while":
        if primal:
            return _while_primal(eqn, invals, acc, key)
        return _while(eqn, invals, acc, key)
    site = next((s for s in map(_first_site, jaxprs_in_params(eqn.params)) if s), None)
    raise TypeError(
        f"ppl cannot transform the JAX primitive '{name}', which contains random choices"
        + (f" ({site.describe()})" if site else "")
        + ". Supported around ppl.sample: jit, cond/switch, scan/fori_loop/map, "
        "while_loop, checkpoint, custom_jvp and custom_vjp. Move the random choice out "
        f"of '{name}' and pass its value in."
    )


def _cond(
    eqn: JaxprEqn,
    invals: list,
    acc: Acc,
    key: jax.Array,
    rest: Kont | None,
    primal: bool = False,
) -> Any:
    index, *ops = invals
    branches = [_open(b) for b in eqn.params["branches"]]
    if rest is not None:
        fns = [(lambda ops, b=b: run(b[0], b[1], list(ops), acc, key, rest)) for b in branches]
        return jax.lax.switch(index, fns, ops)

    def make(b: tuple[Jaxpr, list]) -> Callable[[Sequence[Any], Acc, jax.Array], tuple[Any, Acc]]:
        def fn(ops: Sequence[Any], acc: Acc, key: jax.Array) -> tuple[Any, Acc]:
            outs, acc = run(b[0], b[1], list(ops), acc, key, None, primal)
            return outs, acc

        return fn

    outs, acc = jax.lax.switch(index, [make(b) for b in branches], ops, acc, key)
    return list(outs), acc


def _scan(
    eqn: JaxprEqn, invals: list, acc: Acc, key: jax.Array, primal: bool = False
) -> tuple[list, Acc]:
    p = eqn.params
    jaxpr, jconsts = _open(p["jaxpr"])
    nc, nk = p["num_consts"], p["num_carry"]
    _, cont = _scan_jaxpr(jaxpr)
    if cont is not None and not primal:
        raise _loop_error(cont, loop="lax.scan (or fori_loop with static bounds)")
    consts, init, xs = invals[:nc], invals[nc : nc + nk], invals[nc + nk :]

    def body(carry: tuple[list, Acc], x: tuple[list, jax.Array]) -> tuple[tuple[list, Acc], list]:
        c, acc = carry
        x, key_t = x
        outs, acc = run(jaxpr, jconsts, [*consts, *c, *x], acc, key_t, None, primal)
        return (outs[:nk], acc), outs[nk:]

    keys = jax.random.split(key, p["length"])
    (carry, acc), ys = jax.lax.scan(
        body, (init, acc), (xs, keys), length=p["length"], reverse=p["reverse"], unroll=p["unroll"]
    )
    return [*carry, *ys], acc


def _scan_cps(eqn: JaxprEqn, invals: list, acc: Acc, key: jax.Array, rest: Kont) -> jax.Array:
    """``lax.scan`` (``fori_loop`` with static bounds, ``lax.map``) whose body holds
    continuation sites, without unrolling.

    The forward pass runs the loop once: local sites as usual, continuation sites drawn
    plainly, and the carry entering each step and each continuation site's operands
    saved. The continuation of site ``j`` at step ``t`` (lane ``b`` under a ``vmap``)
    is the rest of step ``t``, the later steps and the code after the loop: a *suffix
    run*, one ``lax.scan`` over all ``T`` steps that restarts from the saved carry of
    step ``t`` (earlier steps pass their saved outputs through), forces lane ``b`` of
    site ``j`` to the alternative value at step ``t``, and is then followed by the rest
    of the program, all in primal mode. Each site's strategy runs on its step's
    distribution as at a batched site (`_lane_terms`), every ``(t, b, alternative)``
    in one ``jax.vmap``: depth ``O(T)``, work ``O(T^2)`` steps per alternative.
    """
    p = eqn.params
    jaxpr, jconsts = _open(p["jaxpr"])
    nc, nk, length, reverse = p["num_consts"], p["num_carry"], p["length"], p["reverse"]
    sites = _loop_sites(jaxpr, "lax.scan (or fori_loop with static bounds, lax.map)")
    consts, init, xs = invals[:nc], invals[nc : nc + nk], invals[nc + nk :]
    keys = jax.random.split(key, length)

    def body(
        carry: tuple[list, Acc], inputs: tuple[list, jax.Array]
    ) -> tuple[tuple[list, Acc], tuple[list, list, list]]:
        c, acc = carry
        x, key_t = inputs
        tape: dict = {}
        outs, acc = run(jaxpr, jconsts, [*consts, *c, *x], acc, key_t, None, tape=tape)
        return (outs[:nk], acc), (outs[nk:], c, [tape[j] for j in sites])

    (carry, acc), (ys, carries, tapes) = jax.lax.scan(
        body, (init, acc), (xs, keys), length=length, reverse=reverse, unroll=p["unroll"]
    )
    steps = jnp.arange(length)
    cost0 = jnp.zeros((), acc.cost.dtype)

    def suffix(
        j: int, t: jax.Array, lane: jax.Array, v: jax.Array, salt: jax.Array | None
    ) -> jax.Array:
        def step(
            state: tuple[list, jax.Array], inputs: tuple
        ) -> tuple[tuple[list, jax.Array], list]:
            c, cost = state
            s, x, key_s, saved_c, saved_y = inputs
            before = s < t if not reverse else s > t  # in execution order
            c = jax.tree.map(lambda a, b: jnp.where(before | (s == t), b, a), c, saved_c)
            if salt is not None:  # later steps draw independently of other salts
                key_s = _select_key(before | (s == t), key_s, jax.random.fold_in(key_s, salt))
            force = _Force(j, lane, v, s == t)
            start = Acc(cost0, cost0, cost0)
            outs, a = run(jaxpr, jconsts, [*consts, *c, *x], start, key_s, None, True, force)
            new_c = [jnp.where(before, b, o) for b, o in zip(saved_c, outs[:nk])]
            y = [jnp.where(before, b, o) for b, o in zip(saved_y, outs[nk:])]
            return (new_c, cost + jnp.where(before, 0.0, a.cost)), y

        (c, cost), ys_new = jax.lax.scan(
            step, (list(init), cost0), (steps, xs, keys, carries, ys), reverse=reverse
        )
        return rest([*c, *ys_new], Acc(cost0, cost0, cost), salt, True)

    total = cost0
    for n, j in enumerate(sites):
        site_eqn = jaxpr.eqns[j]
        _, lanes, _ = _lane_shape(site_eqn)
        ndims = 1 + site_eqn.params["batch_ndims"]
        leaves = [x.reshape(length * lanes, *x.shape[ndims:]) for x in tapes[n]]
        site_keys = jax.random.split(jax.random.fold_in(key, j + 1), length * lanes)

        def lane_kont(
            index: jax.Array,
            v: jax.Array,
            salt: jax.Array | None,
            j: int = j,
            lanes: int = lanes,
        ) -> jax.Array:
            return suffix(j, index // lanes, index % lanes, v, salt)

        total = total + _lane_terms(site_eqn, leaves, site_keys, lane_kont)
    return rest([*carry, *ys], acc._replace(cost=acc.cost + total))


def _select_key(keep: jax.Array, key: jax.Array, other: jax.Array) -> jax.Array:
    data = jnp.where(keep, jax.random.key_data(key), jax.random.key_data(other))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))


def _loop_sites(jaxpr: Jaxpr, loop: str) -> list[int]:
    """Indices of the continuation sites of a loop body; an error for nested ones."""
    sites = []
    for j, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive is sample_p:
            if _strategy_needs_continuation(eqn):
                sites.append(j)
            continue
        _, cont = _eqn_sites(eqn)
        if cont is not None:
            site, what = cont
            raise ValueError(
                f"{site.describe()}: {what} needs the rest of the program as a "
                f"continuation, and the site is inside '{eqn.primitive.name}' inside "
                f"{loop}. ppl re-runs loop bodies for sites at the top level of the body "
                f"(under jax.vmap/ppl.particles too), not for sites nested in another "
                f"construct there: move the site out of '{eqn.primitive.name}' (sample "
                f"it in the body and pass its value in), or use a local strategy "
                f"(ppl.reinforce, ppl.baseline(ppl.reinforce, b)) at this site."
            )
    return sites


def _while(eqn: JaxprEqn, invals: list, acc: Acc, key: jax.Array) -> tuple[list, Acc]:
    """``while_loop`` with sites in its body.

    JAX cannot reverse-differentiate a while loop, so the loop runs on constants and
    carries, per iteration, the gradient of the summed terms with respect to the
    loop's floating-point constants; after the loop the sums are rebuilt as
    ``sg(value) + <gradient, c - sg(c)>``, which JAX can differentiate.
    """
    p = eqn.params
    cond_jaxpr, cond_consts0 = _open(p["cond_jaxpr"])
    body_jaxpr, body_consts0 = _open(p["body_jaxpr"])
    if _scan_jaxpr(cond_jaxpr)[0]:
        raise TypeError(
            f"ppl: the condition of a while_loop contains a random choice "
            f"({_first_site(cond_jaxpr).describe()}). Sample inside the loop body and "
            f"carry the result into the condition instead."
        )
    _, cont = _scan_jaxpr(body_jaxpr)
    if cont is not None:
        raise _loop_error(cont, loop="lax.while_loop (or fori_loop with traced bounds)")
    ncc, nbc = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, init = invals[:ncc], invals[ncc : ncc + nbc], invals[ncc + nbc :]
    floats = [j for j, c in enumerate(bconsts) if jnp.issubdtype(jnp.result_type(c), jnp.inexact)]
    diff = [bconsts[j] for j in floats]

    def with_floats(values: Sequence[jax.Array]) -> list:
        out = [sg(c) for c in bconsts]
        for j, v in zip(floats, values):
            out[j] = v
        return out

    def cond_fn(state: tuple) -> jax.Array:
        carry = state[0]
        return run(cond_jaxpr, cond_consts0, [*cconsts, *carry], Acc.zero(), key, None)[0][0]

    def body_fn(state: tuple) -> tuple:
        carry, cost, grads, key_loop = state
        key_loop, key_t = jax.random.split(key_loop)
        start = Acc(jnp.zeros_like(cost), jnp.zeros_like(cost), cost)
        outs, _ = run(body_jaxpr, body_consts0, [*bconsts, *carry], start, key_t, None)

        def increments(values: Sequence[jax.Array]) -> jax.Array:
            c = [sg(x) for x in carry]
            _, a = run(body_jaxpr, body_consts0, [*with_floats(values), *c], start, key_t, None)
            return jnp.stack([a.score, a.offset, a.cost - cost])

        inc, vjp = jax.vjp(increments, [sg(x) for x in diff])
        new = [vjp(e)[0] for e in jnp.eye(3, dtype=inc.dtype)]
        grads = jax.tree.map(lambda g, *n: g + jnp.stack(n), grads, *new)
        return outs, cost + inc[2], grads, key_loop

    zero_grads = [jnp.zeros((3, *jnp.shape(x)), jnp.result_type(x)) for x in diff]
    state0 = (list(init), sg(acc.cost), zero_grads, key)
    carry, cost, grads, _ = jax.lax.while_loop(cond_fn, body_fn, state0)
    linear = [
        sum(jnp.sum(g[e] * (x - sg(x))) for g, x in zip(grads, diff)) if diff else 0.0
        for e in range(3)
    ]
    cost = cost + linear[2] + (acc.cost - sg(acc.cost))
    acc = Acc(acc.score + linear[0], acc.offset + linear[1], cost)
    return list(carry), acc


def _while_primal(eqn: JaxprEqn, invals: list, acc: Acc, key: jax.Array) -> tuple[list, Acc]:
    """``while_loop`` in primal mode: plain draws, only the costs are carried."""
    p = eqn.params
    cond_jaxpr, cond_consts = _open(p["cond_jaxpr"])
    body_jaxpr, body_consts = _open(p["body_jaxpr"])
    ncc, nbc = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, init = invals[:ncc], invals[ncc : ncc + nbc], invals[ncc + nbc :]

    def cond_fn(state: tuple) -> jax.Array:
        carry = state[0]
        outs, _ = run(cond_jaxpr, cond_consts, [*cconsts, *carry], Acc.zero(), key, None, True)
        return outs[0]

    def body_fn(state: tuple) -> tuple:
        carry, cost, key_loop = state
        key_loop, key_t = jax.random.split(key_loop)
        start = Acc(jnp.zeros_like(cost), jnp.zeros_like(cost), cost)
        outs, a = run(body_jaxpr, body_consts, [*bconsts, *carry], start, key_t, None, True)
        return outs, a.cost, key_loop

    carry, cost, _ = jax.lax.while_loop(cond_fn, body_fn, (list(init), sg(acc.cost), key))
    return list(carry), acc._replace(cost=cost)


# ------------------------------------------------------------------------- errors


def _loop_error(cont: _ContSite, loop: str = "a loop") -> ValueError:
    site, what = cont
    return ValueError(
        f"{site.describe()}: {what} needs the rest of the program as a continuation "
        f"(it evaluates it at several values), but the site is inside {loop}, whose "
        f"iterations ppl cannot re-run. Continuation sites work inside lax.scan, "
        f"fori_loop with static bounds and lax.map, when that loop is not itself inside "
        f"another loop. Give a while_loop a static bound (a lax.scan or fori_loop over "
        f"the largest number of steps, its body masked once the condition fails), "
        f"unroll the loop with a Python for loop, or use a strategy that needs no "
        f"continuation here (ppl.reparam, ppl.reinforce, ppl.baseline(ppl.reinforce, b))."
    )
