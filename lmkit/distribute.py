"""Where the compiled step runs: a mesh of devices, on JAX's own distributed runtime.

A `Layout` is a `jax.sharding.Mesh` with two axes, ``data`` and ``model``, over the devices a
training uses (`devices` config key: ``"all"``, a count, or a list of local device ids; in a run
of many processes, those of every process). The compiled step (`lmkit.train_step`) shards
each batch over ``data`` and keeps the weights and optimizer slots replicated, so every device
computes the gradient of its rows and XLA adds them up (an all-reduce): the same loss and the
same gradient as on one device, for the same global `batch_size`. With one device there is no
layout at all and the step is exactly the single-device one.

Many processes (hosts, or several processes on one machine) join through
`jax.distributed.initialize` (`initialize`): the coordinator address, process count and id come
from ``LMKIT_COORDINATOR``, ``LMKIT_NUM_PROCESSES``, ``LMKIT_PROCESS_ID`` (what
``lmkit train --processes N`` sets for each process it starts), or, with
``LMKIT_DISTRIBUTED=auto``, from JAX's own detection of SLURM, Open MPI and Kubernetes, which
is also used without any LMKIT_ variable when a SLURM or Open MPI job of several tasks started
this process (`detect_cluster`). On CPU the processes' collectives go through gloo.

>>> layout = layout_for("all", batch_size=12)            # doctest: +SKIP
>>> layout.describe()                                    # doctest: +SKIP
'4 devices (data 4), 1 process'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmkit.errors import ConfigError, RunError

__all__ = ["Layout", "layout_for", "state_shardings", "jit_step", "initialize", "detect_cluster",
           "lead_process",
           "DATA", "MODEL",
           "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "ENV_DISTRIBUTED",
           "ENV_HEARTBEAT", "ENV_INIT_TIMEOUT"]

DATA, MODEL = "data", "model"

ENV_COORDINATOR = "LMKIT_COORDINATOR"
ENV_NUM_PROCESSES = "LMKIT_NUM_PROCESSES"
ENV_PROCESS_ID = "LMKIT_PROCESS_ID"
#: ``auto``: let `jax.distributed.initialize` find the cluster (SLURM, Open MPI, Kubernetes,
#: TPU slices); ``off``: train in this process alone even inside a SLURM or MPI job
ENV_DISTRIBUTED = "LMKIT_DISTRIBUTED"
#: seconds without a peer's heartbeat before every process stops (a killed peer ends the run)
ENV_HEARTBEAT = "LMKIT_HEARTBEAT_TIMEOUT"
#: seconds to wait for every process to join (an unreachable coordinator ends the run)
ENV_INIT_TIMEOUT = "LMKIT_INIT_TIMEOUT"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None


def detect_cluster() -> str | None:
    """The scheduler that started this process as one of several, as JAX would detect it.

    SLURM (``srun`` with more than one task: ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``,
    ``SLURM_NTASKS`` > 1, ``SLURM_PROCID``, ``SLURM_LOCALID``: the variables JAX's detection
    reads) or Open MPI (``mpirun -n N`` with N > 1: ``OMPI_MCA_orte_hnp_uri``,
    ``OMPI_COMM_WORLD_SIZE``). None otherwise, also for a single task, so one process inside an
    allocation trains alone. Kubernetes and Cloud TPU slices are not guessed (every pod has
    ``KUBERNETES_SERVICE_HOST``; JAX asks the cluster's API): set ``LMKIT_DISTRIBUTED=auto``.

    >>> detect_cluster()          # doctest: +SKIP
    'SLURM (SLURM_NTASKS=8, SLURM_PROCID=3)'
    """
    env = os.environ
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and _env_int("SLURM_NTASKS", 1) > 1:
        return f"SLURM (SLURM_NTASKS={env['SLURM_NTASKS']}, SLURM_PROCID={env['SLURM_PROCID']})"
    if "OMPI_MCA_orte_hnp_uri" in env and _env_int("OMPI_COMM_WORLD_SIZE", 1) > 1:
        return (f"Open MPI (OMPI_COMM_WORLD_SIZE={env['OMPI_COMM_WORLD_SIZE']}, "
                f"OMPI_COMM_WORLD_RANK={env.get('OMPI_COMM_WORLD_RANK', '?')})")
    return None


def initialize() -> bool:
    """Join the processes of a distributed run, when the environment describes one.

    In order: ``LMKIT_DISTRIBUTED=off`` trains alone; ``LMKIT_COORDINATOR`` (with the process
    count and id) names the run; ``LMKIT_DISTRIBUTED=auto`` or a scheduler `detect_cluster`
    finds (SLURM, Open MPI) lets `jax.distributed.initialize` read the coordinator, count and id
    from the cluster's own variables. Returns True when this process is part of a run of
    several processes (it is then initialized, once), False when the environment names none.
    Must run before JAX first touches a device. A coordinator that does not answer within
    ``LMKIT_INIT_TIMEOUT`` seconds (default 60) is a `RunError` naming the address or the
    cluster.
    """
    import jax

    mode = os.environ.get(ENV_DISTRIBUTED, "").strip().lower()
    if mode not in ("", "auto", "off"):
        raise ConfigError(f"environment variable {ENV_DISTRIBUTED} must be \"auto\" or \"off\", "
                          f"got {os.environ[ENV_DISTRIBUTED]!r}")
    if mode == "off":
        return False
    coordinator = os.environ.get(ENV_COORDINATOR)
    cluster = None if coordinator or mode == "auto" else detect_cluster()
    if not coordinator and mode != "auto" and cluster is None:
        return False
    if jax.distributed.is_initialized():
        return True
    kwargs: dict[str, Any] = {
        "initialization_timeout": _env_int(ENV_INIT_TIMEOUT, 60),
        "heartbeat_timeout_seconds": _env_int(ENV_HEARTBEAT, 30),
    }
    if coordinator:
        count, index = _env_int(ENV_NUM_PROCESSES, 0), _env_int(ENV_PROCESS_ID, -1)
        if count < 1 or not 0 <= index < count:
            raise ConfigError(
                f"{ENV_COORDINATOR}={coordinator} needs {ENV_NUM_PROCESSES} (a count of at least "
                f"1, got {os.environ.get(ENV_NUM_PROCESSES)!r}) and {ENV_PROCESS_ID} (0 to "
                f"count - 1, got {os.environ.get(ENV_PROCESS_ID)!r}); `lmkit train --processes N` "
                f"sets all three")
        kwargs.update(coordinator_address=coordinator, num_processes=count, process_id=index)
        if index > 0:  # JAX aborts the process when it cannot reach the coordinator: ask first
            _wait_for(coordinator, kwargs["initialization_timeout"])
    # CPU devices of different processes talk through gloo (the default has no collectives
    # across processes); GPUs and TPUs use their own (NCCL, ICI) whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as exc:  # JAX raises a bare RuntimeError / ValueError / XlaRuntimeError here
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        if coordinator:
            raise RunError(
                f"could not join the distributed run through coordinator {coordinator} within "
                f"{kwargs['initialization_timeout']} s: {first}. Check that process 0 is running "
                f"and that the address is reachable from here (host:port), or unset "
                f"{ENV_COORDINATOR} to train in this process alone") from None
        where = cluster or f"the cluster JAX detects ({ENV_DISTRIBUTED}=auto)"
        raise RunError(
            f"could not join the distributed run of {where} within "
            f"{kwargs['initialization_timeout']} s: {first}. Check that every task runs the same "
            f"command and that the first node is reachable, set {ENV_COORDINATOR}, "
            f"{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} yourself, or set {ENV_DISTRIBUTED}=off to "
            f"train in this process alone") from None
    return True


def lead_process() -> bool:
    """Whether this process reports and writes: the only one, or process 0 of the distributed run
    the environment names (joined here first, through `initialize`, so call this before JAX
    touches a device). Front ends print and save only there.

    >>> if lead_process():                 # doctest: +SKIP
    ...     print(result)
    """
    if not initialize():
        return True
    import jax

    return jax.process_index() == 0


def _wait_for(address: str, timeout: float) -> None:
    """Return once `address` (host:port) accepts a connection; a `RunError` after `timeout` s."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{ENV_COORDINATOR} must be host:port, got {address!r}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise RunError(
                    f"the coordinator {address} ({ENV_COORDINATOR}) did not answer within "
                    f"{timeout:g} s ({exc.strerror or exc}). Start process 0 first, check the "
                    f"address and port from this host, or raise {ENV_INIT_TIMEOUT}") from None
            time.sleep(0.25)


@dataclass(frozen=True)
class Layout:
    """A ``(data, model)`` mesh and the shardings the compiled step uses on it."""

    mesh: Any  # jax.sharding.Mesh

    @property
    def data_size(self) -> int:
        return int(self.mesh.shape[DATA])

    @property
    def model_size(self) -> int:
        return int(self.mesh.shape[MODEL])

    @property
    def processes(self) -> int:
        return len({d.process_index for d in self.mesh.devices.flat})

    @property
    def lead(self) -> bool:
        """Whether this process leads the run (process 0): it alone writes and reports."""
        import jax

        return jax.process_index() == 0

    def describe(self) -> str:
        """E.g. ``'4 devices (data 2 x model 2), 2 processes'``, for events and dashboards."""
        axes = f"data {self.data_size}" + (f" x model {self.model_size}" if self.model_size > 1 else "")
        n = self.processes
        return f"{self.mesh.devices.size} devices ({axes}), {n} process{'es' if n > 1 else ''}"

    def sharding(self, *spec: str | None) -> Any:
        """The `NamedSharding` of `spec` (one mesh axis or None per array axis) on this mesh."""
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec(*spec))

    @property
    def replicated(self) -> Any:
        return self.sharding()

    def batch_sharding(self, axis: int) -> Any:
        """Arrays whose axis `axis` holds the batch rows: split over ``data``."""
        return self.sharding(*([None] * axis), DATA)

    def local_rows(self, batch_size: int) -> slice:
        """The rows of a global batch that this process feeds (contiguous: the mesh lists each
        process's devices together)."""
        indices = self.batch_sharding(0).addressable_devices_indices_map((batch_size,))
        starts = [i[0].start or 0 for i in indices.values()]
        stops = [batch_size if i[0].stop is None else i[0].stop for i in indices.values()]
        return slice(min(starts), max(stops))

    def put_batch(self, local: np.ndarray, axis: int) -> Any:
        """A global array of this process's rows `local` (its `local_rows` of axis `axis`;
        every process feeds as many rows)."""
        import jax

        rows = local.shape[axis] * self.processes
        shape = (*local.shape[:axis], rows, *local.shape[axis + 1:])
        return jax.make_array_from_process_local_data(self.batch_sharding(axis), local, shape)

    def put(self, value: Any, sharding: Any) -> Any:
        """`value` (the same on every process) as a global array with `sharding`."""
        import jax

        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    def place(self, state: Any, shardings: Any) -> Any:
        """Every array of the pytree `state` put with its sharding in `shardings` (same tree)."""
        import jax

        return jax.tree.map(self.put, state, shardings)

    def to_host(self, array: Any) -> np.ndarray:
        """The whole of a global array on this host (gathered from the other processes when
        they hold parts of it; every process must call this at the same point)."""
        if array.is_fully_addressable or array.is_fully_replicated:
            return np.asarray(array)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def _local_devices(spec: str | int | Sequence[int]) -> list[Any]:
    """The devices of this process that `spec` names, in id order."""
    import jax

    local = sorted(jax.local_devices(), key=lambda d: d.id)
    platform = local[0].platform
    more = ("; for more CPU devices set XLA_FLAGS=--xla_force_host_platform_device_count=N "
            "before Python starts" if platform == "cpu" else "")
    if isinstance(spec, str):
        if spec.strip().lower() != "all":
            raise ConfigError(f"config key 'devices' must be \"all\", a count or a list of device "
                              f"ids, got {spec!r}")
        return local
    if isinstance(spec, int):
        if not 1 <= spec <= len(local):
            raise ConfigError(
                f"devices={spec}, but this process has {len(local)} {platform} device"
                f"{'s' if len(local) > 1 else ''}; use devices = \"all\" or a count from 1 to "
                f"{len(local)}{more}")
        return local[:spec]
    by_id = {d.id: d for d in local}
    unknown = [i for i in spec if i not in by_id]
    if unknown or not spec or len(set(spec)) != len(spec):
        raise ConfigError(
            f"devices={list(spec)} must list distinct ids of this process's devices "
            f"({', '.join(str(i) for i in sorted(by_id))}); "
            + (f"{unknown} {'is' if len(unknown) == 1 else 'are'} not among them" if unknown
               else "use each id once") + more)
    return [by_id[i] for i in sorted(spec)]


def layout_for(devices: str | int | Sequence[int] = "all", batch_size: int = 1,
               model_parallel: int = 1) -> Layout | None:
    """The mesh a training with these config keys runs on; None for one device in one process
    (the single-device step, unchanged).

    Every process uses the same number of its own devices; the ``data`` axis takes the devices
    that the ``model`` axis (`model_parallel` devices, within one process) leaves. Raises
    `ConfigError` when a count does not fit: more devices than exist, `model_parallel` not
    dividing them, or `batch_size` not splitting evenly over ``data``.
    """
    import jax
    from jax.sharding import Mesh

    local = _local_devices(devices)
    if len(local) % model_parallel:
        raise ConfigError(
            f"model_parallel={model_parallel} must divide the {len(local)} devices each process "
            f"uses (devices={devices!r}); use a divisor of {len(local)}, or more devices")
    # the same local positions on every process (ids differ across hosts)
    positions = {d.id: i for i, d in enumerate(sorted(jax.local_devices(), key=lambda d: d.id))}
    chosen = {positions[d.id] for d in local}
    everyone = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    per_process: dict[int, list[Any]] = {}
    for d in everyone:
        per_process.setdefault(d.process_index, []).append(d)
    mesh_devices = [d for p in sorted(per_process) for i, d in enumerate(per_process[p])
                    if i in chosen]
    if len(mesh_devices) == 1:
        return None
    data = len(mesh_devices) // model_parallel
    if batch_size % data:
        fit = batch_size - batch_size % data or data
        raise ConfigError(
            f"batch_size={batch_size} does not split evenly over the data axis of {data} "
            f"devices; use a multiple of {data} (e.g. {fit} or {fit + data}), or fewer devices "
            f"(config key 'devices')")
    grid = np.array(mesh_devices, dtype=object).reshape(data, model_parallel)
    return Layout(Mesh(grid, (DATA, MODEL)))


def state_shardings(layout: Layout, model: Any, *slot_lists: Sequence[Any],
                    rules: Any = None) -> tuple[list[Any], ...]:
    """Shardings of a compiled step's state ``(trainable, non_trainable, *slot_lists)``; a slot
    list is anything with ``path`` and ``shape`` (an optimizer's `variables`,
    `lmkit.param_groups.ParamGroups.slots()`).

    Replicated, except with a ``model`` axis: the variables the architecture (`rules`, default
    `model`; a classifier passes its backbone) names in `model_parallel_axes` are split along
    that axis, and so are their optimizer slots (Keras names a slot after its variable's path).
    Raises `ConfigError` when the model axis does not divide a split weight or an attribute in
    `model_parallel_divides`.
    """
    rules = model if rules is None else rules
    replicated = layout.replicated
    trainable = [replicated] * len(model.trainable_variables)
    if layout.model_size > 1:
        axes = getattr(rules, "model_parallel_axes", {})
        n = layout.model_size
        if not axes:
            raise ConfigError(
                f"model_parallel={n}: architecture {type(rules).__name__} names no weights to "
                f"split (its `model_parallel_axes` is empty); use model_parallel = 1 (data "
                f"parallel over every device) or an architecture that splits, such as gpt")
        for attr in getattr(rules, "model_parallel_divides", ()):
            value = getattr(rules, attr)
            if value % n:
                raise ConfigError(
                    f"model_parallel={n} does not divide {attr}={value}; use a {attr} that is a "
                    f"multiple of {n}, or a model_parallel that divides {value}")
        by_path: dict[str, Any] = {}
        for i, var in enumerate(model.trainable_variables):
            axis = axes.get(var.path.rsplit("/", 1)[-1])
            if axis is None:
                continue
            if var.shape[axis] % n:
                raise ConfigError(
                    f"model_parallel={n} does not divide axis {axis} of weight {var.path} "
                    f"{tuple(var.shape)}; use widths (embed_dim) that are multiples of {n}, or "
                    f"a model_parallel that divides {var.shape[axis]}")
            spec = [None] * len(var.shape)
            spec[axis] = MODEL
            trainable[i] = layout.sharding(*spec)
            by_path[var.path.replace("/", "_") + "_"] = (tuple(var.shape), trainable[i])
    else:
        by_path = {}
    slots = [[next((sh for prefix, (shape, sh) in by_path.items()
                    if var.path.rsplit("/", 1)[-1].startswith(prefix) and tuple(var.shape) == shape),
                   replicated) for var in group] for group in slot_lists]
    return (trainable, [replicated] * len(model.non_trainable_variables), *slots)


def jit_step(step: Callable[..., tuple[Any, Any]], layout: Layout | None, shardings: Any,
             batch_axes: Sequence[int | None], donate: bool = True) -> Callable[..., tuple[Any, Any]]:
    """A training step ``step(state, *args) -> (state, out)`` compiled with `jax.jit`.

    With no layout (one device), plain `jax.jit`. On a layout, the state keeps the
    `shardings` (`state_shardings`) in and out, `out` (losses) is replicated, and each argument
    is placed by its entry of `batch_axes`: the axis of its arrays that holds the batch rows
    (split over ``data``), or None (replicated: learning-rate masks, flags). XLA then adds the
    devices' gradients. lmkit's one training step uses it (`lmkit.train_step`). `donate` hands the
    state's buffers to the call (its caller must never read the old state again).

    >>> step = jit_step(train_chunk, layout, shardings, batch_axes=(1, 1))   # doctest: +SKIP
    """
    import jax

    donated = {"donate_argnums": 0} if donate else {}
    if layout is None:
        return jax.jit(step, **donated)
    args = tuple(layout.replicated if axis is None else layout.batch_sharding(axis)
                 for axis in batch_axes)
    return jax.jit(step, in_shardings=(shardings, *args),
                   out_shardings=(shardings, layout.replicated), **donated)
