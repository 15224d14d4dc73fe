"""Data- and particle-parallel execution on a ``jax.sharding`` mesh.

ppl does not ship a distributed runtime of its own: it places arrays on a
`jax.sharding.Mesh` and leaves the partitioning of the compiled step to XLA (GSPMD).

* **Data parallelism.** Each minibatch is sharded over the mesh axis ``"data"``
  (`shard_batch` outside ``jit``, `constrain_batch` inside it); parameters and
  optimizer state are replicated (`replicate`). The mean over the batch then becomes a
  partial sum on every device plus one all-reduce that the compiler inserts, and so
  does the gradient. ``ppl.fit(..., mesh=mesh)`` does all of this.
* **Particle parallelism.** The particle objectives of `ppl.objectives` (``iwae``,
  ``vimco``, ``diwhvi``, ``renyi``, ``dreg``, a multi-particle ``elbo``) pass their
  ``(num_particles,)`` log weights through `constrain_particles`, which shards them
  over the axis ``"particles"`` of the mesh in context (``jax.set_mesh``, or
  ``ppl.fit(..., mesh=...)``). The log-mean-exp over them is then a reduction across
  devices, inserted by the compiler.
* **Processes and hosts.** `initialize` wraps ``jax.distributed.initialize``; after
  it, ``jax.devices()`` lists the devices of every process, `mesh` spans them all, and
  each process feeds its own rows of every batch (`shard_batch`).
* **Memory.** `batch_mean` turns a per-example objective into a minibatch one whose
  gradient needs the activations of one micro-batch at a time (a rematerialized
  ``lax.map``), never per-example gradients.

Random draws do not depend on the layout: every example and every particle gets its
key from ``jax.random.split`` / ``fold_in`` of the step key exactly as on one device,
and JAX's partitionable Threefry (``jax_threefry_partitionable``, on by default)
generates the same bits wherever they are computed. A sharded run therefore draws the
same numbers as an unsharded one, and its results differ only by the order of
floating-point sums.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA",
    "PARTICLES",
    "mesh",
    "initialize",
    "replicate",
    "shard_batch",
    "constrain_batch",
    "constrain_particles",
    "batch_mean",
    "axis_size",
    "use_mesh",
]

DATA = "data"
PARTICLES = "particles"

_ENV = {
    "coordinator_address": "PPL_COORDINATOR_ADDRESS",
    "num_processes": "PPL_NUM_PROCESSES",
    "process_id": "PPL_PROCESS_ID",
}


# ----------------------------------------------------------------------------- meshes


def mesh(
    axes: str | Mapping[str, int] = DATA,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A device mesh over all visible devices (of every process), ready for ppl.

    Args:
        axes: the name of a single axis over all devices (``"data"``, the default, or
            ``"particles"``), or a mapping from axis names to sizes, in order, such as
            ``{"data": 2, "particles": 4}``; one size may be ``-1`` (the devices left).
        devices: the devices to use (default: ``jax.devices()``, which after
            `initialize` includes those of the other processes).

    Returns:
        A `jax.sharding.Mesh` whose axes have ``AxisType.Auto`` (the compiler
        propagates shardings from the constraints ppl places).

    Raises:
        ValueError: if the sizes do not multiply to the number of devices.

    Examples:
        >>> import ppl
        >>> ppl.parallel.mesh().axis_names
        ('data',)
    """
    devices = list(jax.devices() if devices is None else devices)
    if isinstance(axes, str):
        axes = {axes: len(devices)}
    if not isinstance(axes, Mapping) or not axes:
        raise TypeError(
            f"parallel.mesh: axes must be an axis name or a mapping from axis names to "
            f"sizes, such as {{'data': 2, 'particles': 2}}; got {axes!r}."
        )
    names, sizes = list(axes), [int(size) for size in axes.values()]
    if sizes.count(-1) > 1:
        raise ValueError(f"parallel.mesh: at most one axis size may be -1, got {dict(axes)}.")
    if -1 in sizes:
        known = math.prod(size for size in sizes if size != -1)
        if known < 1 or len(devices) % known:
            raise ValueError(
                f"parallel.mesh: {len(devices)} devices cannot be split as {dict(axes)}."
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if any(size < 1 for size in sizes) or math.prod(sizes) != len(devices):
        raise ValueError(
            f"parallel.mesh: the axis sizes {dict(zip(names, sizes, strict=True))} multiply "
            f"to {math.prod(sizes)}, but there are {len(devices)} devices. Make them "
            f"multiply to {len(devices)}, or pass devices=jax.devices()[:{math.prod(sizes)}]."
        )
    return jax.make_mesh(
        tuple(sizes), tuple(names), axis_types=(AxisType.Auto,) * len(names), devices=devices
    )


def use_mesh(mesh: Mesh | None) -> contextlib.AbstractContextManager[Any]:
    """``jax.set_mesh(mesh)`` as a context manager, or a no-op for ``mesh=None``."""
    if mesh is None:
        return contextlib.nullcontext()
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (for example ppl.parallel.mesh()), got "
            f"{type(mesh).__name__}."
        )
    return jax.set_mesh(mesh)


def axis_size(name: str, mesh: Mesh | None = None) -> int:
    """The size of axis ``name`` of ``mesh`` (default: the mesh in context); 1 if absent."""
    current = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    if current is None or current.empty or name not in current.axis_names:
        return 1
    return int(dict(zip(current.axis_names, current.axis_sizes, strict=True))[name])


# -------------------------------------------------------------------------- processes


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str = "gloo",
    initialization_timeout: int = 300,
) -> None:
    """Join a multi-process run: ``jax.distributed.initialize`` plus CPU collectives.

    Call it once per process, before any other JAX computation. Arguments left out are
    read from the environment variables ``PPL_COORDINATOR_ADDRESS`` (``host:port`` of
    process 0), ``PPL_NUM_PROCESSES`` and ``PPL_PROCESS_ID``, and if those are unset,
    from JAX's own detection (``JAX_COORDINATOR_ADDRESS``; SLURM, Open MPI, Kubernetes
    and TPU pods are recognized by ``jax.distributed.initialize``).

    Args:
        coordinator_address: ``host:port`` where process 0 listens.
        num_processes: the number of processes.
        process_id: this process's index, ``0 <= process_id < num_processes``.
        local_device_ids: the devices this process uses (for several processes on one
            multi-GPU host); default: all local devices.
        cpu_collectives: the cross-process collectives on the CPU backend (``"gloo"``
            or ``"mpi"``); ignored on GPU and TPU, which use NCCL and ICI.
        initialization_timeout: seconds to wait for every process to join.

    Raises:
        ValueError: if an environment variable is not an integer.
    """
    values = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    for name, variable in _ENV.items():
        if values[name] is None and os.environ.get(variable):
            text = os.environ[variable]
            if name == "coordinator_address":
                values[name] = text
            else:
                try:
                    values[name] = int(text)
                except ValueError as err:
                    raise ValueError(
                        f"parallel.initialize: {variable}={text!r} is not an integer."
                    ) from err
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        **values,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )


# ----------------------------------------------------------------- placing the arrays


def replicate(mesh: Mesh, tree: Any) -> Any:
    """``tree`` with every array leaf replicated on all devices of ``mesh``.

    Leaves already placed on ``mesh`` keep their sharding: to shard the parameters of
    a model too large for one device, ``jax.device_put`` them with a
    ``NamedSharding(mesh, spec)`` first. In a multi-process run every process must
    pass the same values (as they do when they start from the same seed).
    """
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda leaf: _put(leaf, sharding), tree)


def _put(leaf: Any, sharding: NamedSharding) -> Any:
    if not isinstance(leaf, np.ndarray | jax.Array | np.generic):
        return leaf
    if isinstance(leaf, jax.Array) and (
        leaf.sharding == sharding
        or (isinstance(leaf.sharding, NamedSharding) and leaf.sharding.mesh == sharding.mesh)
    ):  # already on this mesh (replicated, or sharded by the user for a large model)
        return leaf
    if jax.process_count() == 1 or not isinstance(leaf, jax.Array):
        return jax.device_put(leaf, sharding)
    if not leaf.is_fully_addressable:  # already global: let the compiler reshard it
        return leaf
    return jax.make_array_from_process_local_data(sharding, np.asarray(leaf), leaf.shape)


def shard_batch(mesh: Mesh, batch: Any, axis: str = DATA) -> Any:
    """A batch sharded over ``axis`` of ``mesh`` along its leading (example) axis.

    With one process, ``batch`` is the whole batch. With several, each process passes
    its own rows (its slice of the global batch, in process order) and gets back
    global arrays of ``num_processes`` times as many rows
    (``jax.make_array_from_process_local_data``). On a mesh without ``axis`` (a
    particle-only mesh) a single process's batch is replicated.

    Raises:
        ValueError: if a leaf has no leading axis, or the global number of rows is not
            a multiple of the axis size.
    """
    count = jax.process_count()
    if axis not in mesh.axis_names:
        if count > 1:
            raise ValueError(
                f"parallel.shard_batch: the mesh has no axis '{axis}' (its axes are "
                f"{mesh.axis_names}) to split the rows of the {count} processes over. "
                f"Build it with an axis '{axis}', for example parallel.mesh({{'{axis}': -1}})."
            )
        return replicate(mesh, batch)
    size = axis_size(axis, mesh)
    sharding = NamedSharding(mesh, P(axis))

    def put(path: tuple, leaf: Any) -> jax.Array:
        leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        if leaf.ndim == 0:
            raise ValueError(
                f"parallel.shard_batch: batch{jax.tree_util.keystr(path)} is a scalar; "
                f"every leaf needs a leading axis over examples."
            )
        rows = leaf.shape[0] * count
        if rows % size:
            raise ValueError(
                f"parallel.shard_batch: batch{jax.tree_util.keystr(path)} has {rows} rows "
                f"in all, not a multiple of the {size} devices on mesh axis '{axis}'. Use "
                f"a batch size divisible by {size}."
            )
        if count == 1:
            return jax.device_put(leaf, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree_util.tree_map_with_path(put, batch)


def constrain_batch(batch: Any, axis: str = DATA, *, dim: int = 0) -> Any:
    """Inside ``jit``: shard dimension ``dim`` of every leaf over ``axis`` of the mesh in context.

    A no-op without a mesh in context or when the axis is absent or of size 1.

    Raises:
        ValueError: if a leaf's dimension ``dim`` is not a multiple of the axis size.
    """
    size = axis_size(axis)
    if size == 1:
        return batch

    def constrain(path: tuple, leaf: jax.Array) -> jax.Array:
        if leaf.ndim <= dim:
            return leaf
        if leaf.shape[dim] % size:
            raise ValueError(
                f"ppl.parallel: batch{jax.tree_util.keystr(path)} has {leaf.shape[dim]} "
                f"examples, not a multiple of the {size} devices on mesh axis '{axis}'. "
                f"Use a batch size (and microbatch_size) divisible by {size}."
            )
        spec = [P.UNCONSTRAINED] * leaf.ndim
        spec[dim] = axis
        return lax.with_sharding_constraint(leaf, P(*spec))

    return jax.tree_util.tree_map_with_path(constrain, batch)


def constrain_particles(values: Any, axis: str = PARTICLES) -> Any:
    """Inside ``jit``: shard the leading (particle) axis over ``axis`` of the mesh in context.

    The hook the particle objectives call on their ``(num_particles, ...)`` outputs.
    A no-op without a mesh in context, when the axis is absent or of size 1, and for
    a single particle.

    Raises:
        ValueError: if the number of particles is not a multiple of the axis size.
    """
    size = axis_size(axis)
    if size == 1:
        return values

    def constrain(leaf: jax.Array) -> jax.Array:
        if leaf.ndim == 0 or leaf.shape[0] == 1:
            return leaf
        if leaf.shape[0] % size:
            raise ValueError(
                f"ppl.parallel: num_particles={leaf.shape[0]} is not a multiple of the "
                f"{size} devices on mesh axis '{axis}'. Use a multiple of {size}."
            )
        spec = [P.UNCONSTRAINED] * leaf.ndim
        spec[0] = axis
        return lax.with_sharding_constraint(leaf, P(*spec))

    return jax.tree.map(constrain, values)


# --------------------------------------------------------------------- minibatch means


def batch_mean(
    objective: Callable[..., jax.Array], *, microbatch_size: int | None = None
) -> Callable[..., jax.Array]:
    """A minibatch objective from a per-example one: the mean over the batch.

    ``batch_mean(objective)(key, params, batch, *args)`` is
    ``(1/B) Σ_i objective(k_i, params, x_i, *args)`` with ``k = split(key, B)`` and
    ``x_i`` the ``i``-th row of every leaf of ``batch``, the form ``ppl.fit`` expects
    for ``data=``. The mean is linear, so its gradient is an unbiased estimate of the
    gradient of the expected per-example objective, and no per-example gradient is
    formed (the documented ``jnp.mean(jax.vmap(objective)(...))`` pattern).

    With ``microbatch_size=m``, the ``B`` examples are evaluated ``m`` at a time in a
    ``lax.map`` whose body is rematerialized (``jax.checkpoint``): the backward pass
    recomputes one micro-batch at a time, so memory holds the activations of ``m``
    examples, not ``B``. Micro-batch ``c`` holds rows ``c, c + B/m, c + 2B/m, ...``,
    so a batch sharded over the mesh axis ``"data"`` keeps every device busy in every
    micro-batch. Keys and values do not depend on ``m`` (only the order of the sums).

    Args:
        objective: a per-example objective, ``objective(key, params, example, *args)``.
        microbatch_size: examples per micro-batch (default: all at once); must divide
            the batch size, and be a multiple of the ``"data"`` axis size on a mesh.

    Returns:
        ``minibatch_objective(key, params, batch, *args)``.

    Raises:
        ValueError: if ``microbatch_size`` is not a positive integer, or (at trace
            time) does not divide the batch size.
    """
    if microbatch_size is not None and (
        isinstance(microbatch_size, bool)
        or not isinstance(microbatch_size, int | np.integer)
        or microbatch_size < 1
    ):
        raise ValueError(
            f"batch_mean: microbatch_size must be a positive integer or None, got "
            f"{microbatch_size!r}."
        )

    def minibatch_objective(key: jax.Array, params: Any, batch: Any, *args: Any) -> jax.Array:
        leaves = jax.tree.leaves(batch)
        if not leaves or any(jnp.ndim(leaf) == 0 for leaf in leaves):
            raise ValueError(
                "batch_mean: batch must be a pytree of arrays with a leading example axis."
            )
        size = leaves[0].shape[0]
        keys = jax.random.split(key, size)

        def values(keys: jax.Array, rows: Any) -> jax.Array:
            rows = constrain_batch(rows)
            return jax.vmap(lambda k, x: objective(k, params, x, *args))(keys, rows)

        if microbatch_size is None or microbatch_size >= size:
            return jnp.mean(values(keys, batch))
        if size % microbatch_size:
            raise ValueError(
                f"batch_mean: microbatch_size={microbatch_size} does not divide the batch "
                f"size {size}; pick a divisor of {size}."
            )
        count = size // microbatch_size

        # (B, ...) -> (count, m, ...); micro-batch c: rows c + count * j
        def split(leaf: jax.Array) -> jax.Array:
            leaf = leaf.reshape(microbatch_size, count, *leaf.shape[1:])
            return jnp.swapaxes(leaf, 0, 1)

        chunks = jax.tree.map(split, (keys, batch))
        chunks = constrain_batch(chunks, dim=1)

        @jax.checkpoint
        def chunk_sum(chunk: tuple[jax.Array, Any]) -> jax.Array:
            return jnp.sum(values(*chunk))

        return jnp.sum(lax.map(chunk_sum, chunks)) / size

    minibatch_objective.__name__ = f"batch_mean({getattr(objective, '__name__', 'objective')})"
    minibatch_objective.__doc__ = (
        "The mean of the per-example objective over the rows of ``batch`` (made by "
        "``ppl.parallel.batch_mean``)."
    )
    return minibatch_objective
