"""The two effects an expectation program may perform: ``sample`` and ``add_cost``.

Both are JAX primitives. Inside `ppl.expectation` they are staged into the
program's jaxpr and then rewritten by the interpreter (``_interpreter.py``); anywhere
else, evaluating, lowering or differentiating them raises a clear error.

A ``sample`` equation carries the flattened distribution and strategy as operands, and
everything static (tree structures, the site's name and source location, the shape
of the value) as parameters. ``jax.vmap`` inside an expectation adds leading batch
dimensions (``batch_ndims``): each lane then draws independently.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, NoReturn

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from ppl.adev._strategies import Strategy, default_strategy

__all__ = ["sample", "add_cost", "particles", "plate", "SiteInfo", "sample_p", "cost_p"]

sample_p = Primitive("ppl_sample")
cost_p = Primitive("ppl_add_cost")

_lanes = threading.local()
_plates = threading.local()  # .stack: the enclosing plates, ((name, dim), ...) outermost first


class SiteInfo(NamedTuple):
    """Static description of a sample site, used for keys and error messages."""

    name: str
    location: str
    distribution: str

    def describe(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"site '{self.name}' ({self.distribution}{where})"


def _caller() -> tuple[str, str]:
    """(function:line, file:line) of the first frame outside ppl's own modules."""
    frame = sys._getframe(1)
    ppl_dir = __file__.rsplit("/adev/", 1)[0]
    while frame is not None and frame.f_code.co_filename.startswith(ppl_dir):
        frame = frame.f_back
    if frame is None:
        return "sample", ""
    code = frame.f_code
    return f"{code.co_name}:{frame.f_lineno}", f"{code.co_filename}:{frame.f_lineno}"


def _outside_message(what: str) -> str:
    return (
        f"{what} was evaluated outside an expectation. Random choices made with "
        f"ppl.sample (and costs added with ppl.add_cost) only have a meaning inside a "
        f"function decorated with @ppl.expectation; call that function as "
        f"objective(key, *args) or objective.estimate(key, *args)."
    )


def sample(
    distribution: Any,
    strategy: Strategy | None = None,
    *,
    name: str | None = None,
) -> jax.Array:
    """Draw a value from ``distribution`` inside an expectation.

    Args:
        distribution: any NumPyro distribution.
        strategy: how the gradient of the expectation is estimated at this site
            (``ppl.reparam``, ``ppl.reinforce``, ``ppl.enum``, ``ppl.mvd``, ...).
            ``None`` picks ``reparam`` where ``distribution.has_rsample`` and
            ``reinforce`` otherwise.
        name: the site's name in error messages (default: the calling function's
            name and line, ``"program:12"``).

    Returns:
        The sampled value, shaped ``distribution.batch_shape + event_shape``.

    Raises:
        ValueError: if the strategy cannot apply to the distribution.
        RuntimeError: if evaluated outside an expectation.
    """
    if not hasattr(distribution, "log_prob") or not hasattr(distribution, "sample"):
        raise TypeError(
            f"ppl.sample expects a NumPyro distribution, got {type(distribution).__name__}."
        )
    if strategy is None:
        strategy = default_strategy(distribution)
    if not isinstance(strategy, Strategy):
        raise TypeError(
            f"ppl.sample: strategy must be a ppl.Strategy (for example ppl.reparam), "
            f"got {strategy!r}."
        )
    default_name, location = _caller()
    site = SiteInfo(
        name=name if name is not None else default_name,
        location=location,
        distribution=type(distribution).__name__,
    )
    strategy.check(distribution, site)
    _check_plates(distribution, site)
    dist_leaves, dist_tree = jax.tree.flatten(distribution)
    strat_leaves, strat_tree = jax.tree.flatten(strategy)
    try:
        out = jax.eval_shape(
            lambda leaves: jax.tree.unflatten(dist_tree, leaves).sample(jax.random.key(0)),
            dist_leaves,
        )
    except Exception as err:  # pragma: no cover - depends on the distribution
        raise ValueError(f"{site.describe()}: cannot determine the sample shape: {err}") from err
    lanes = list(getattr(_lanes, "stack", []))
    operands = [*lanes, *map(jnp.asarray, dist_leaves), *map(jnp.asarray, strat_leaves)]
    return sample_p.bind(
        *operands,
        num_lanes=len(lanes),
        dist_tree=dist_tree,
        num_dist=len(dist_leaves),
        strategy_tree=strat_tree,
        site=site,
        shape=tuple(out.shape),
        dtype=np.dtype(out.dtype),
        batch_ndims=0,
        plates=_current_plates(),
    )


def add_cost(cost: jax.Array) -> None:
    """Add ``cost`` (summed if it is an array) to the value of the enclosing expectation.

    A score-function site's gradient sees only the costs that depend on its value, by
    the program's data flow: costs added before the site, or computed from other
    values only, are left out of its estimator, which lowers its variance (Lew et al.
    2023; Schulman et al. 2015). Inside `ppl.plate` an array cost keeps its plate
    dimensions: element ``i`` of a site in the same plate is then multiplied only by
    element ``i`` of the cost (and by the costs outside the plate that depend on it).
    """
    cost_p.bind(jnp.asarray(cost), plates=_current_plates())


def _current_plates() -> tuple:
    """The enclosing plates as ``((name, dim), ...)``."""
    return tuple((name, dim) for name, dim, _ in getattr(_plates, "stack", ()))


def _check_plates(distribution: Any, site: SiteInfo) -> None:
    batch = tuple(distribution.batch_shape)
    for name, dim, size in getattr(_plates, "stack", ()):
        if size is not None and (len(batch) < -dim or batch[dim] != size):
            raise ValueError(
                f"{site.describe()} is inside ppl.plate('{name}', {size}, dim={dim}), but "
                f"its distribution's batch shape {batch} has no dimension {dim} of size "
                f"{size}. Give the distribution one value per element (.expand or "
                f"broadcast parameters), or sample the site outside the plate."
            )


@contextlib.contextmanager
def plate(name: str, size: int, dim: int | None = None) -> Iterator[None]:
    """Declare a batch dimension of conditionally independent elements.

    Inside ``with ppl.plate(name, size):`` the value of a site along dimension ``dim``
    (counted from the right of its batch shape, like ``numpyro.plate``) holds ``size``
    independent elements, and an array added with `ppl.add_cost` has one cost per
    element along the same dimension. A score-function site in the plate then
    multiplies the score of element ``i`` only by the costs of element ``i`` and by the
    costs outside the plate that depend on its value (Rao-Blackwellization, as
    ``TraceGraph_ELBO`` in Pyro and NumPyro). Values are unchanged. NumPyro programs
    run through `ppl.sim`, `ppl.density` and the objectives get this from their
    ``numpyro.plate`` statements; ``ppl.plate`` is for programs written with
    `ppl.sample`.

    Args:
        name: the plate's name (sites and costs in plates of the same name are aligned).
        size: the number of elements.
        dim: the batch dimension, negative (default: left of the enclosing plates').

    Examples:
        >>> import jax.numpy as jnp, numpyro.distributions as dist, ppl
        >>> @ppl.expectation
        ... def objective(logits, y):
        ...     with ppl.plate("data", 3):
        ...         z = ppl.sample(dist.BernoulliLogits(logits), ppl.reinforce)
        ...         ppl.add_cost(-((z - y) ** 2))  # element i's cost depends on z[i] only
        ...     return 0.0
    """
    stack = tuple(getattr(_plates, "stack", ()))
    if dim is None:
        dim = min((d for _, d, _ in stack), default=0) - 1
    if not isinstance(dim, int) or dim >= 0:
        raise ValueError(f"ppl.plate('{name}'): dim must be a negative integer, got {dim!r}.")
    if any(d == dim or n == name for n, d, _ in stack):
        raise ValueError(
            f"ppl.plate('{name}', dim={dim}): an enclosing plate already uses that name or "
            f"dimension ({_current_plates()}); give nested plates distinct names and "
            f"dimensions."
        )
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"ppl.plate('{name}'): size must be a positive int, got {size!r}.")
    _plates.stack = (*stack, (name, dim, size))
    try:
        yield
    finally:
        _plates.stack = stack


@contextlib.contextmanager
def _plate_frames(frames: tuple) -> Iterator[None]:
    """Exactly the plates ``frames`` ((name, dim), ...) around a site (NumPyro's plates)."""
    stack = getattr(_plates, "stack", ())
    _plates.stack = tuple((name, dim, None) for name, dim in frames)
    try:
        yield
    finally:
        _plates.stack = stack


@contextlib.contextmanager
def _lane(index: jax.Array) -> Iterator[None]:
    stack = getattr(_lanes, "stack", [])
    _lanes.stack = [*stack, index]
    try:
        yield
    finally:
        _lanes.stack = stack


def particles(
    fn: Callable[..., Any], num_particles: int, in_axes: Any = None
) -> Callable[..., Any]:
    """``jax.vmap`` ``fn`` over ``num_particles`` independent particles.

    Inside an expectation, plain ``jax.vmap`` gives independent draws only at sites
    whose distribution parameters vary along the mapped axis; a site whose
    distribution is the same for every lane would be drawn once and broadcast, as for
    any JAX function with unbatched inputs. ``particles`` marks every site inside
    ``fn`` as batched, so each particle draws its own value. The map is staged as a
    ``jax.jit`` named ``ppl_particles``, which tells the interpreter that the particles
    are independent until the map ends: continuation strategies at sites inside then
    run the rest of the map once per alternative for all particles together.

    Args:
        fn: a function of ``*args`` that calls ``ppl.sample``.
        num_particles: the number of particles.
        in_axes: as in ``jax.vmap`` for ``*args`` (default: nothing mapped).

    Returns:
        A function of ``*args`` whose outputs have a leading axis of ``num_particles``.
    """

    def run(*args: Any) -> Any:
        axes = (None,) * len(args) if in_axes is None else in_axes
        if not isinstance(axes, tuple):
            axes = (axes,) * len(args)

        if num_particles == 1 and all(ax is None or isinstance(ax, int) for ax in axes):
            # no vmap: the sites stay unbatched, so continuation strategies run as
            # anywhere else (enum stays exact) and nothing pays for a batch of one
            args = [
                a if ax is None else jax.tree.map(lambda x, ax=ax: jnp.take(x, 0, ax), a)
                for a, ax in zip(args, axes)
            ]
            return jax.tree.map(lambda y: jnp.asarray(y)[None], fn(*args))

        def one(index: jax.Array, *args: Any) -> Any:
            with _lane(index):
                return fn(*args)

        # a named jit marks the map for the interpreter (lane-wise continuations)
        def mapped() -> Any:
            return jax.vmap(one, in_axes=(0, *axes))(jnp.arange(num_particles), *args)

        mapped.__name__ = mapped.__qualname__ = "ppl_particles"
        return jax.jit(mapped)()

    return run


# ---------------------------------------------------------------- primitive rules


def _sample_abstract_eval(
    *operands: Any, shape: tuple[int, ...], dtype: np.dtype, **_: Any
) -> jax.core.ShapedArray:
    return jax.core.ShapedArray(shape, dtype)


def _sample_impl(*operands: Any, site: SiteInfo, **_: Any) -> NoReturn:
    raise RuntimeError(_outside_message(f"ppl.sample at {site.describe()}"))


def _sample_lowering(ctx: Any, *operands: Any, site: SiteInfo, **_: Any) -> NoReturn:
    raise RuntimeError(_outside_message(f"ppl.sample at {site.describe()}"))


def _sample_jvp(
    primals: Sequence[Any], tangents: Sequence[Any], *, site: SiteInfo, **_: Any
) -> NoReturn:
    raise RuntimeError(
        f"ppl.sample at {site.describe()} was differentiated with jax.grad/jax.jvp "
        f"before ppl could estimate it. Differentiate the expectation instead: "
        f"objective.grad_estimate(key, *args) or jax.grad(objective, argnums=1)."
    )


def _sample_batch(
    operands: Sequence[jax.Array],
    dims: Sequence[int | None],
    *,
    shape: tuple[int, ...],
    batch_ndims: int,
    **params: Any,
) -> tuple[jax.Array, int]:
    sizes = {x.shape[d] for x, d in zip(operands, dims) if d is not None}
    (size,) = sizes
    moved = [
        jnp.broadcast_to(x, (size, *x.shape)) if d is None else jnp.moveaxis(x, d, 0)
        for x, d in zip(operands, dims)
    ]
    out = sample_p.bind(*moved, shape=(size, *shape), batch_ndims=batch_ndims + 1, **params)
    return out, 0


sample_p.def_abstract_eval(_sample_abstract_eval)
sample_p.def_impl(_sample_impl)
mlir.register_lowering(sample_p, _sample_lowering)
ad.primitive_jvps[sample_p] = _sample_jvp
batching.primitive_batchers[sample_p] = _sample_batch


def _cost_abstract_eval(cost: jax.core.ShapedArray, **_: Any) -> list:
    return []


def _cost_impl(cost: jax.Array, **_: Any) -> NoReturn:
    raise RuntimeError(_outside_message("ppl.add_cost"))


def _cost_lowering(ctx: Any, cost: Any, **_: Any) -> NoReturn:
    raise RuntimeError(_outside_message("ppl.add_cost"))


def _cost_jvp(primals: Sequence[Any], tangents: Sequence[Any], **_: Any) -> NoReturn:
    raise RuntimeError(
        "ppl.add_cost was differentiated before ppl could estimate it; differentiate "
        "the expectation instead (objective.grad_estimate)."
    )


def _cost_batch(
    operands: Sequence[jax.Array], dims: Sequence[int | None], **params: Any
) -> tuple[list, list]:
    (cost,), (d,) = operands, dims
    # the lanes are summed; the element dimensions of a plate (counted from the right)
    # keep their places
    cost_p.bind(jnp.sum(cost, axis=d) if d is not None else cost, **params)
    return [], []


cost_p.multiple_results = True
cost_p.def_abstract_eval(_cost_abstract_eval)
cost_p.def_impl(_cost_impl)
mlir.register_lowering(cost_p, _cost_lowering)
ad.primitive_jvps[cost_p] = _cost_jvp
batching.primitive_batchers[cost_p] = _cost_batch
