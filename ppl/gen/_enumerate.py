"""Discrete model sites summed out exactly in ``ppl.density`` (and decoded afterwards).

A latent site of a model that is marked for enumeration (NumPyro's
``infer={"enumerate": "parallel"}``, for example through ``config_enumerate``) or named
in ``ppl.density(..., enumerate=...)``, and that the guide does not sample, is summed
out of the density exactly:

    log p(x, z) = log Σ_c p(x, z, c),

in parallel over the supports of the enumerated sites (tensor variable elimination,
Obermeyer et al., ICML 2019), with plates as independent products and with
``numpyro.contrib.control_flow.scan`` (or ``markov``) chains eliminated in time linear in
their length (the forward algorithm as a parallel-scan of transition matrices). The
contraction itself is NumPyro's funsor-based elimination (reached through
``ppl.gen._funsor.contract``); this module only puts ppl's values, parameters and keys
at the sites, decodes the summed-out sites afterwards, and checks what would
otherwise fail silently or run out of memory.

References:
    Obermeyer, Bingham, Jankowiak, Phan, Chen, Pradhan, Goodman. "Tensor variable
    elimination for plated factor graphs". ICML 2019.
    Rush. "Torch-Struct: Deep structured prediction library". ACL 2020 (demo track).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro import handlers

from ppl._util import typed_key
from ppl.gen._funsor import contract, promote_batch_shape, register_promote_batch_shape
from ppl.gen._program import _enumerable_in_body, _marked, _program_name, _Score

__all__ = ["enumerated_log_density", "infer_discrete", "posterior_discrete", "MAX_FACTOR_SIZE"]

#: The largest number of elements one enumerated factor may have (2**28 float32 = 1 GiB).
MAX_FACTOR_SIZE = 2**28


class _EnumScore(_Score):
    """``_Score`` that leaves enumerated sites to NumPyro's ``enum`` handler.

    With ``placeholder=True`` (the dry run that measures plate nesting and checks the
    sites) an enumerated site gets a constant value from its support instead, and keys
    are constants, so that the run draws nothing through ppl.
    """

    def __init__(
        self,
        fn: Callable,
        choices: Mapping[str, Any],
        params: Any,
        program: Any,
        names: Collection[str],
        placeholder: bool = False,
        key: jax.Array | None = None,
        potentials: Mapping[str, jax.Array] | None = None,
    ) -> None:
        self.placeholder = placeholder
        self.potentials = potentials  # name -> added log-potential per value (decoding)
        self.shapes: dict = {}  # name -> the site's shape (batch shape, no enum dims)
        self.key = jax.random.PRNGKey(0) if placeholder and key is None else key
        self.num_keys = 0
        self.enumerated: dict = {}  # name -> (distribution name, support size)
        self.factor_shapes: dict = {}  # name -> broadcast batch shape of the site's factor
        self.plate_nesting = 0
        self.in_scan = False
        super().__init__(fn, choices, params, program, names)

    def _next_key(self) -> jax.Array:
        self.num_keys += 1
        return jax.random.fold_in(self.key, self.num_keys)

    def process_message(self, msg: dict) -> None:
        if self.key is not None and msg["type"] == "prng_key":
            msg["value"] = self._next_key()
        elif self.key is not None and msg["type"] == "plate" and msg["value"] is None:
            if msg["name"] in self.choices:
                msg["value"] = jnp.asarray(self.choices[msg["name"]])
                self.used.add(msg["name"])
            else:
                msg["kwargs"]["rng_key"] = self._next_key()
        else:
            super().process_message(msg)

    def process_site(self, msg: dict) -> None:
        if msg["type"] == "control_flow":
            self.in_scan = True
        if (
            msg["type"] == "sample"
            and not msg["is_observed"]
            and msg["value"] is None
            and msg["name"] not in self.choices
            and _marked(msg, self.names)
        ):
            self._enumerate(msg)
        else:
            super().process_site(msg)

    def _enumerated_in_body(self, site: dict) -> Any:
        step = (site.get("infer") or {}).get("_scan_current_index")
        self._enumerate(site, step=step)
        return site["value"] if self.placeholder else None

    def _enumerate(self, msg: dict, step: int | jax.Array | None = None) -> None:
        name, fn = msg["name"], msg["fn"]
        if not fn.has_enumerate_support:
            raise ValueError(
                f"site '{name}' of {_program_name(self.program)} is marked for "
                f"enumeration, but {type(fn).__name__} has no finite support to sum "
                f"over (support {fn.support}). Sample it in the guide instead (with "
                f"ppl.reinforce or ppl.mvd), or truncate it to a finite distribution."
            )
        if msg["kwargs"].get("sample_shape"):
            raise ValueError(
                f"site '{name}' of {_program_name(self.program)} is enumerated but has "
                f"sample_shape={tuple(msg['kwargs']['sample_shape'])}; put the site in a "
                f"numpyro.plate instead so that each element is summed out independently."
            )
        size = fn.enumerate_support(expand=False).shape[0]
        self.enumerated[name] = (type(fn).__name__, size)
        self.shapes[name] = fn.shape()
        msg["infer"] = {**(msg.get("infer") or {}), "enumerate": "parallel"}
        if self.potentials is not None:
            potential = self.potentials[name]
            msg["fn"] = _Tilted(fn, potential if step is None else potential[step])
        if self.placeholder:
            support = fn.enumerate_support(expand=False)
            msg["value"] = jnp.broadcast_to(support[0], fn.shape())

    def postprocess_message(self, msg: dict) -> None:
        if msg["type"] != "sample":
            return
        if self.placeholder and msg["name"] in self.enumerated:  # stacked over steps in scan
            value = jnp.shape(msg["value"])
            self.shapes[msg["name"]] = value[: len(value) - msg["fn"].event_dim]
        dims = [frame.dim for frame in msg["cond_indep_stack"] if frame.dim is not None]
        self.plate_nesting = max([self.plate_nesting, *(-d for d in dims)])
        if not self.placeholder and msg["value"] is not None:
            fn = msg["fn"]
            value_batch = jnp.shape(msg["value"])[: jnp.ndim(msg["value"]) - fn.event_dim]
            shape = jnp.broadcast_shapes(tuple(fn.batch_shape), value_batch)
            self.factor_shapes[msg["name"]] = shape
            _check_size(msg["name"], shape, self)


class _Tilted(dist.Distribution):
    """``base`` with ``potential[..., value]`` added to its log density (for decoding)."""

    pytree_data_fields = ("base", "potential")

    def __init__(self, base: Any, potential: jax.Array) -> None:
        self.base, self.potential = base, potential
        super().__init__(batch_shape=base.batch_shape, event_shape=base.event_shape)

    @property
    def support(self) -> Any:
        return self.base.support

    @property
    def has_enumerate_support(self) -> bool:
        return True

    def enumerate_support(self, expand: bool = True) -> jax.Array:
        return self.base.enumerate_support(expand)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return self.base.sample(key, sample_shape)

    def log_prob(self, value: jax.Array) -> jax.Array:
        size = self.potential.shape[-1]
        tilt = jnp.sum(jax.nn.one_hot(value, size) * self.potential, axis=-1)
        return self.base.log_prob(value) + tilt


@register_promote_batch_shape(_Tilted)
def _promote_tilted(d: _Tilted) -> _Tilted:
    """After ``scan`` stacks the steps: align the potential's (time, plates) dims."""
    base = promote_batch_shape(d.base)
    potential = d.potential
    time, plates, size = potential.shape[0], potential.shape[1:-1], potential.shape[-1]
    ones = (1,) * (len(base.batch_shape) - 1 - len(plates))
    return _Tilted(base, potential.reshape((time, *ones, *plates, size)))


def _check_size(name: str, shape: tuple, scorer: _EnumScore) -> None:
    size = math.prod(shape)
    if size <= MAX_FACTOR_SIZE:
        return
    gib = size * 4 / 2**30
    raise ValueError(
        f"summing out {sorted(scorer.enumerated)} of {_program_name(scorer.program)} "
        f"makes the factor of site '{name}' a tensor of shape {shape}: {size:,} "
        f"elements ({gib:.1f} GiB in float32), above ppl's limit of {MAX_FACTOR_SIZE:,}. "
        f"Enumerate fewer sites at once: put chains in numpyro.contrib.control_flow.scan "
        f"or numpyro.contrib.funsor.markov so that only neighbouring steps are summed "
        f"jointly, or sample some of these sites in the guide (ppl.enum, ppl.reinforce)."
    )


def _dry_run(
    program: Callable,
    choices: Mapping[str, Any],
    params: Any,
    names: Collection[str],
    args: tuple,
    kwargs: dict,
) -> _EnumScore:
    """Run the model once without enumeration (shapes only): plate nesting and checks."""
    scorer = _EnumScore(program, choices, params, program, names, placeholder=True)

    def run() -> tuple:
        with handlers.trace():
            scorer(*args, **kwargs)
        return ()

    jax.eval_shape(run)
    return scorer


def enumerated_log_density(
    program: Callable,
    choices: Mapping[str, Any],
    params: Any,
    names: Collection[str],
    args: tuple,
    kwargs: dict,
) -> tuple[jax.Array, set]:
    """``log Σ_enumerated p(choices, enumerated, observed)`` and the choices used.

    Raises:
        ValueError: naming the site, for an enumerated site without finite support, a
            factor too large for memory, or a dependence the declared Markov order
            (``history`` of ``scan``/``markov``) does not cover.
    """
    dry = _dry_run(program, choices, params, names, args, kwargs)
    missing = sorted(set(names) - set(dry.enumerated))
    if missing:
        raise ValueError(
            f"enumerate= names {missing}, which are not latent sample sites of "
            f"{_program_name(program)} (its enumerated sites: {sorted(dry.enumerated)})."
        )
    scorer = _EnumScore(program, choices, params, program, names)
    first_dim = -dry.plate_nesting - 1
    try:
        result = contract(scorer, args, kwargs, first_dim, "sum")
    except (ValueError, TypeError) as error:
        message = str(error)
        if "Expected the joint log density is a scalar" not in message and not (
            "cannot reshape" in message and dry.in_scan
        ):
            raise
        raise ValueError(
            f"summing out {sorted(dry.enumerated)} of {_program_name(program)} left "
            f"dimensions that do not fit ({message.splitlines()[0]}). A site depends on "
            f"an enumerated site further back than the declared Markov order: raise history= of "
            f"numpyro.contrib.control_flow.scan or numpyro.contrib.funsor.markov to the "
            f"longest dependence, or put the site in a plate that contains its parents."
        ) from error
    return result, scorer.used


def infer_discrete(
    key: jax.Array,
    model: Callable,
    choices: Mapping[str, Any],
    *args: Any,
    params: Any = None,
    temperature: int = 1,
    enumerate: Collection[str] = (),  # noqa: A002 - the name ppl.density uses
    **kwargs: Any,
) -> dict:
    """Decode the summed-out sites of ``model`` given the data and the other choices.

    With ``temperature=1`` one joint draw of the enumerated sites from their exact
    posterior ``p(c | x, z)``; with ``temperature=0`` the joint maximum a posteriori
    value ``argmax_c p(c | x, z)`` (Viterbi). Both are one backward pass through the
    variable elimination that computes ``ppl.density`` (so they cost about as much as
    a gradient of it: linear in the length of a ``markov`` loop or a ``scan`` chain,
    with plates): the gradient of the max-product with respect to per-value
    potentials ``θ`` added to the sites is the indicator of the MAP value, and the
    sum-product whose logsumexp adjoints draw from their softmax (the sampling
    semiring) marks a posterior draw: forward filtering, backward sampling, also
    inside ``numpyro.contrib.control_flow.scan``. ``vmap`` over keys for several draws.

    Args:
        key: a PRNG key.
        model: the NumPyro model given to ``ppl.density``.
        choices: values of its other latent sites (for example one draw of the fitted
            guide, ``ppl.sim(guide, ...).choices``); may be empty.
        *args: the model's positional arguments (the data).
        params: the fitted parameters (unconstrained), as for ``ppl.density``.
        temperature: 1 to sample, 0 for the MAP value.
        enumerate: further sites to enumerate, as in ``ppl.density``.
        **kwargs: the model's keyword arguments.

    Returns:
        site name -> decoded value, for every enumerated site (a site in a ``scan``
        body: its values stacked over the steps, as NumPyro's ``scan`` stacks them).

    Raises:
        ValueError: for ``temperature`` other than 0 or 1, and as ``ppl.density``.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> import ppl
        >>> def mixture(x):
        ...     c = numpyro.sample("c", dist.Categorical(jnp.array([0.5, 0.5])))
        ...     numpyro.sample("x", dist.Normal(jnp.array([-2.0, 2.0])[c], 1.0), obs=x)
        >>> ppl.infer_discrete(jax.random.key(0), mixture, {}, 1.5, temperature=0,
        ...                    enumerate=["c"])["c"]
        Array(1, dtype=int32)
    """
    if temperature not in (0, 1):
        raise ValueError(f"infer_discrete: temperature must be 0 (MAP) or 1, got {temperature}.")
    key = typed_key(key, "infer_discrete")
    names = frozenset((enumerate,) if isinstance(enumerate, str) else enumerate)
    dry = _dry_run(model, choices, params, names, args, kwargs)
    key_model, key_decode = jax.random.split(key)
    zeros = {
        name: jnp.zeros((*dry.shapes[name], size)) for name, (_, size) in dry.enumerated.items()
    }
    semiring = "max" if temperature == 0 else "sample"

    def eliminate(potentials: dict) -> jax.Array:
        """``m(θ) = ⊕_c [log p(x, z, c) + Σ_sites θ_site[c_site]]`` in ``semiring``."""
        scorer = _EnumScore(
            model, choices, params, model, names, key=key_model, potentials=potentials
        )
        first_dim = -dry.plate_nesting - 1
        return contract(scorer, args, kwargs, first_dim, semiring, key=key_decode)

    # ∂m/∂θ_site[k] at θ = 0 is 1[c_site = k] for the maximizer (max) or the draw
    # (sampled adjoint): the value of each site is where its indicator is.
    indicators = jax.grad(eliminate)(zeros)
    if temperature == 1:  # a draw marks exactly one value of every element
        indicators = {
            name: eqx.error_if(
                indicator,
                jnp.any(jnp.sum(indicator != 0, axis=-1) != 1),
                f"infer_discrete: the posterior draw of site '{name}' of "
                f"{_program_name(model)} did not mark exactly one value per element (a "
                f"part of the elimination ran outside ppl's sampled adjoint); please "
                f"report this model. temperature=0 decodes it.",
            )
            for name, indicator in indicators.items()
        }
    return {name: jnp.argmax(indicator, axis=-1) for name, indicator in indicators.items()}


def posterior_discrete(
    key: jax.Array,
    model: Callable,
    model_trace: dict,
    draws: Mapping,
    params: Any,
    args: tuple,
    kwargs: dict,
    num_draws: int,
) -> dict:
    """Posterior draws of the model's summed-out sites, one per draw of the guide.

    For ``ppl.to_inference_data``: the sites of ``model_trace`` (a trace of ``model``)
    that ``ppl.density`` sums out and ``draws`` lacks (marked for enumeration, or
    discrete sites of a ``scan`` body, stacked over its steps) are drawn from
    ``p(c | x, z_s)`` for each guide draw ``z_s`` (`infer_discrete` at temperature 1).
    Returns ``{}`` when there are none.
    """
    summed = [
        name
        for name, site in model_trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and name not in draws
        and (_marked(site, ()) or _in_scan_body(site) and _enumerable_in_body(site))
    ]
    if not summed:
        return {}
    keys = jax.random.split(key, num_draws)

    def one(key: jax.Array, choices: dict) -> dict:
        return infer_discrete(key, model, choices, *args, params=params, **kwargs)

    decoded = jax.jit(jax.vmap(one))(keys, dict(draws))
    return {name: decoded[name] for name in summed if name in decoded}


def _in_scan_body(site: dict) -> bool:
    """Whether a site of a trace was recorded in a ``numpyro.contrib.control_flow.scan``."""
    return "_scan_current_index" in (site.get("infer") or {})
