"""Starting values of a program's ``numpyro.param`` sites."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer.autoguide import AutoGuide

from ppl._util import typed_key

__all__ = ["init_params", "constrain"]


def init_params(key: jax.Array, program: Callable, *args: Any, **kwargs: Any) -> dict:
    """The initial values of ``program``'s ``numpyro.param`` sites, unconstrained.

    Runs ``program`` once (seeded with ``key``) and collects every ``numpyro.param``
    site: its ``init_value`` mapped to unconstrained space with
    ``biject_to(constraint).inv``. For NumPyro autoguides this also sets up the guide
    (its prototype trace of the model), so that it can then run inside an expectation.

    Args:
        key: a PRNG key (autoguides draw their initial locations with it).
        program: a NumPyro model or guide.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        A dict from parameter name to unconstrained value, the ``params`` of
        ``ppl.sim`` and ``ppl.density``. Every value is a floating-point array, also
        where a Python number initialised it (``numpyro.param("loc", 0.0)``), so that
        ``ppl.fit`` trains it.
    """
    key = typed_key(key, "init_params")
    if isinstance(program, AutoGuide):
        _check_continuous(program, key, args, kwargs)
    with handlers.trace() as trace, handlers.seed(rng_seed=key):
        program(*args, **kwargs)
    params = {}
    for name, site in trace.items():
        if site["type"] != "param":
            continue
        constraint = site["kwargs"].get("constraint", constraints.real)
        value = _trainable(site["value"])
        params[name] = value if constraint is constraints.real else biject_to(constraint).inv(value)
    return params


def _check_continuous(guide: AutoGuide, key: jax.Array, args: tuple, kwargs: dict) -> None:
    """Name a discrete latent site of an autoguide's model before NumPyro trips on it.

    NumPyro's autoguides cover continuous sites only; for a discrete one NumPyro raises
    "Continuous inference cannot handle discrete sample site" or, for a site marked
    for enumeration, asks for funsor. ppl can sum such a site out or draw it from a
    hand-written guide instead.
    """
    with handlers.trace() as trace, handlers.seed(rng_seed=key):
        guide.model(*args, **kwargs)
    for name, site in trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if getattr(site["fn"], "support", constraints.real).is_discrete:
            raise ValueError(
                f"{type(guide).__name__} covers continuous sites only, but the model has "
                f"the discrete latent site {name!r} ({type(site['fn']).__name__}). With "
                f"ppl, either sum it out exactly: mark it in the model with "
                f'infer={{"enumerate": "parallel"}} (ppl.density then marginalizes it) '
                f"and build the autoguide on the model without it, "
                f"{type(guide).__name__}(numpyro.handlers.block(model, hide=[{name!r}])); "
                f"or write the guide by hand with a site {name!r} whose gradient comes "
                f"from ppl.enum, ppl.mvd or ppl.reinforce (the default for discrete "
                f"sites)."
            )


def _trainable(value: Any) -> Any:
    """An initial value (an array or a pytree of them, such as a flow's weights) with
    floating-point leaves: a Python number or an integer array becomes an array of the
    default float dtype (``numpyro.param("loc", 0.0)`` would otherwise stay a Python
    float, which ``ppl.fit`` and ``eqx.partition`` hold fixed)."""

    def leaf(x: Any) -> jax.Array:
        x = jnp.asarray(x)
        inexact = jnp.issubdtype(x.dtype, jnp.inexact)
        return jnp.asarray(x, dtype=x.dtype if inexact else jnp.result_type(float))

    return jax.tree.map(leaf, value)


def constrain(program: Callable, params: dict, *args: Any, **kwargs: Any) -> dict:
    """Map unconstrained ``params`` of ``program`` to their constrained values.

    Runs ``program`` once to read the constraint of each ``numpyro.param`` site.
    """
    with handlers.trace() as trace, handlers.seed(rng_seed=0):
        program(*args, **kwargs)
    out = dict(params)
    for name, site in trace.items():
        if site["type"] == "param" and name in params:
            constraint = site["kwargs"].get("constraint", constraints.real)
            if constraint is not constraints.real:
                out[name] = biject_to(constraint)(params[name])
    return out
