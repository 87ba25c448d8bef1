"""Device mesh, logical-axis sharding rules, and multi-host start-up.

Sharding is declared once: every parameter carries logical axis names (``models/params.py``)
and the table below maps them onto the mesh axes ``(data, fsdp, tensor)``. FSDP shards the
``embed`` dimension of every matrix over ``fsdp``; tensor parallelism splits heads, mlp and
vocab over ``tensor``. A dimension that the mesh axis does not divide stays replicated.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mdu_jax.typed_config import ConfigKeyError

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical axis -> mesh axis (None = replicated).
DEFAULT_RULES: dict[str, str | None] = {
    "embed": "fsdp",
    "vocab": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "head_dim": None,
    "layers": None,
    "norm": None,
}


def resolve_mesh_shape(mesh: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """Mesh sizes for (data, fsdp, tensor); one -1 takes the remaining devices.

    Raises ConfigKeyError when the sizes do not multiply to `num_devices`.
    """
    sizes = [int(mesh.get(axis, 1)) for axis in MESH_AXES]
    fixed = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % fixed:
            raise ConfigKeyError(f"parallel.mesh: {dict(zip(MESH_AXES, sizes))} does not divide the "
                                 f"{num_devices} available devices")
        sizes[sizes.index(-1)] = num_devices // fixed
    if int(np.prod(sizes)) != num_devices:
        raise ConfigKeyError(f"parallel.mesh: {dict(zip(MESH_AXES, sizes))} uses {int(np.prod(sizes))} devices, "
                             f"but {num_devices} are available")
    return tuple(sizes)


def make_mesh(mesh: Mapping[str, int], devices=None) -> Mesh:
    """A ``Mesh`` with axes (data, fsdp, tensor) over `devices` (default: all, every host)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh, len(devices))
    try:
        grid = mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # noqa: BLE001 - CPU / odd topologies: plain order is fine
        grid = np.array(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def spec_for(axes: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh,
             rules: Mapping[str, str | None] | None = None) -> P:
    """PartitionSpec for an array with logical `axes`; non-dividing or reused mesh axes replicate."""
    rules = {**DEFAULT_RULES, **(rules or {})}
    used: set[str] = set()
    out = []
    for name, size in zip(axes, shape):
        mesh_axis = rules.get(name)
        if (mesh_axis is None or mesh_axis in used or mesh.shape[mesh_axis] == 1
                or size % mesh.shape[mesh_axis]):
            out.append(None)
        else:
            out.append(mesh_axis)
            used.add(mesh_axis)
    return P(*out)


def param_shardings(logical_axes: Any, abstract: Any, mesh: Mesh, rules=None) -> Any:
    """A pytree of NamedSharding for params with the given logical-axes and shape pytrees."""
    return jax.tree.map(lambda axes, a: NamedSharding(mesh, spec_for(axes, a.shape, mesh, rules)),
                        logical_axes, abstract, is_leaf=lambda x: isinstance(x, tuple))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (the leading axis, any rank) over (data, fsdp); everything else replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def maybe_initialize_distributed(mode: str = "auto") -> None:
    """Starts ``jax.distributed`` for multi-host runs.

    'auto' initialises when the launcher says there are several processes (TPU pod slices set
    this up themselves; for GPUs set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID on every process, or launch under SLURM/Open MPI); 'on' always; 'off' never.
    """
    if mode == "off" or jax.distributed.is_initialized():
        return
    env = os.environ
    multi = (int(env.get("JAX_NUM_PROCESSES", "1")) > 1 or "TPU_WORKER_HOSTNAMES" in env
             and "," in env.get("TPU_WORKER_HOSTNAMES", "") or int(env.get("SLURM_NTASKS", "1")) > 1
             or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)
    if mode == "on" or multi:
        # CPU processes need a collectives backend for cross-process psum (GPU/TPU ignore this).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        kwargs = {}
        if "JAX_COORDINATOR_ADDRESS" in env:
            kwargs = dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                          num_processes=int(env["JAX_NUM_PROCESSES"]), process_id=int(env["JAX_PROCESS_ID"]))
        jax.distributed.initialize(**kwargs)
        log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def host_rows(global_batch: int) -> slice:
    """The rows of a global batch that this host feeds (contiguous, equal shares, in process order:
    the layout ``jax.make_array_from_process_local_data`` expects for the batch sharding)."""
    n, i = jax.process_count(), jax.process_index()
    if global_batch % n:
        raise ConfigKeyError(f"batch_size: {global_batch} rows cannot be split over {n} hosts")
    per = global_batch // n
    return slice(i * per, (i + 1) * per)
