"""Data-parallel curvature on ``torch.distributed``: each rank holds one shard of the data set.

With W processes (ranks) holding shards S_1 … S_W of the N = Σ_r n_r examples, every Hessian
product is the sum of the shards' products (R as in :mod:`~implicitlab.diagnostics.objective`):

    H v = (1/N) Σ_r Σ_{n ∈ S_r} ∇²ℓ_n v + ∇²P v     (``reduction="mean"``: shard r weighs n_r / N)
    H v =       Σ_r Σ_{n ∈ S_r} ∇²ℓ_n v + ∇²P v     (``reduction="sum"``)

Each rank computes its shard's unnormalised sum Σ_{n∈S_r} ∇²ℓ_n v (chunk by chunk, as on one
process) and its count n_r; the W pairs are gathered (``all_gather``) and added **in rank order on
every rank**, so every rank holds the same bits whatever the backend's reduction algorithm (an
``all_reduce`` may add in another order on each rank); N comes with the same gather, so unequal
shards need nothing else. The penalty's ∇²P v is added once, after the sum, on every rank (the
parameters are the same everywhere; checked). From there every rank runs the same arithmetic —
Lanczos with the same seed and start, the same Rademacher probes from the same seeded generator —
and gets the same result bit for bit, provided the ranks run the same build with the same number of
threads on the same kind of device (torchrun sets one thread per process; ``implicitlab measure``
sets ``--threads``).

The knob, on :class:`~implicitlab.diagnostics.hessian.HessianOperator` and everything that builds one
(``sharpness``, ``SharpnessTracker``, the traces, SLQ, ``explicit_hessian``): ``distributed=``

- ``None`` (default): data-parallel over the default process group when ``torch.distributed`` is
  initialised, one process otherwise;
- ``False``: one process whatever is initialised (each rank measures its own data alone);
- ``True``: the default group (an error if none is initialised);
- a ``ProcessGroup``: that group (its ranks hold the shards).

Checks (every rank raises the same error, naming the ranks at fault — never a hang on a collective
that another rank never reaches): a rank whose data or options fail the objective's checks; ranks
that disagree on the parameters (names, shapes, values), dtype, loss reduction, mode or penalty; a
backend that cannot carry the operator's tensors (NCCL with a CPU model); per product, ranks whose
input vectors or parameters differ (different seeds, a diverged model: compared through two
float64 fingerprints); the determinism probe runs on every shard and names the ranks whose shard
changed between the two passes.

Failure is an error: a collective that fails — a peer that raised and exited, was killed, or did not
arrive within the process group's timeout — raises :class:`DistributedError` naming this rank and
the operation; ``torchrun`` itself ends the other ranks as soon as one exits with an error and
names it (:func:`init_from_env` sets the timeout).

Backends: whatever the group was initialised with — gloo on CPU, NCCL on CUDA, or both
(``"cpu:gloo,cuda:nccl"``, torch's default) — communication runs on the operator's device, except
gloo with CUDA tensors (staged through the CPU).
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

DEFAULT_TIMEOUT_S = 300.0  # the process group's timeout: a collective waits at most this long for a peer


class DistributedError(RuntimeError):
    """A collective failed (a peer raised, died or timed out), or the ranks disagree on their inputs."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _available() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@dataclass
class ShardGroup:
    """The ranks that hold the shards of one data set: a process group, this rank, and W."""

    group: Any  # a ProcessGroup; None for the default group
    rank: int
    world_size: int
    backend: str

    # ------------------------------------------------------------------------ collectives ---
    def comm_device(self, device: torch.device) -> torch.device:
        """Where tensors of ``device`` are communicated: that device, or the CPU for gloo-only
        groups with CUDA tensors; an error for NCCL-only groups with CPU tensors."""
        backend = self.backend.lower()
        mapped = dict(part.split(":", 1) for part in backend.split(",") if ":" in part)
        if mapped:  # "cpu:gloo,cuda:nccl"
            if device.type in mapped:
                return device
            if device.type == "cuda" and "cpu" in mapped:
                return torch.device("cpu")
            raise DistributedError(
                f"the process group's backend {self.backend!r} has none for {device.type} tensors; the "
                f"operator is on {device}: initialise the group with a backend for {device.type}"
            )
        if backend == "nccl" and device.type != "cuda":
            raise DistributedError(
                f"the process group's backend is NCCL, which reduces CUDA tensors only, but the operator is "
                f"on {device}: move the model and data to the rank's GPU, or initialise the group with "
                "backend='gloo' (or 'cpu:gloo,cuda:nccl')"
            )
        if backend == "gloo" and device.type == "cuda":
            return torch.device("cpu")
        return device

    def _fail(self, what: str, exc: BaseException) -> DistributedError:
        return DistributedError(
            f"rank {self.rank} of {self.world_size}: the {what} collective failed — another rank raised, "
            f"was killed or did not arrive within the process group's timeout ({_one_line(exc)})"
        )

    def gather(self, t: Tensor, what: str) -> list[Tensor]:
        """Every rank's ``t`` (same shape and dtype on all ranks), in rank order, on ``t``'s device."""
        dist = torch.distributed
        device = t.device
        send = t.detach().to(self.comm_device(device)).contiguous()
        out = [torch.empty_like(send) for _ in range(self.world_size)]
        try:
            dist.all_gather(out, send, group=self.group)
        except Exception as exc:  # DistBackendError, RuntimeError: a peer is gone
            raise self._fail(what, exc) from exc
        return [o.to(device) for o in out]

    def sum_in_rank_order(self, t: Tensor, what: str) -> Tensor:
        """Σ_r t_r added in rank order: the same bits on every rank."""
        parts = self.gather(t, what)
        total = parts[0].clone()
        for p in parts[1:]:
            total += p
        return total

    def gather_objects(self, obj: Any, what: str) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order."""
        out: list[Any] = [None] * self.world_size
        try:
            torch.distributed.all_gather_object(out, obj, group=self.group)
        except Exception as exc:
            raise self._fail(what, exc) from exc
        return out

    def agree(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn`` on every rank; if it raised on any, raise on every rank, naming them.

        The exception type of the first failing rank is kept when it is a ValueError, TypeError
        or a RuntimeError subclass defined here or in the determinism probe (the message gains the
        ranks); otherwise :class:`DistributedError`."""
        result, failure = None, None
        try:
            result = fn()
        except Exception as exc:  # reported to the other ranks, then raised everywhere
            failure = (type(exc).__name__, str(exc).strip())
            local_exc = exc
        else:
            local_exc = None
        outcomes = self.gather_objects(failure, what)
        failed = [(r, f) for r, f in enumerate(outcomes) if f is not None]
        if failed:
            ranks = [r for r, _ in failed]
            detail = "; ".join(f"rank {r}: {name}: {msg}" for r, (name, msg) in failed)
            message = f"{what} failed on rank{'s' if len(ranks) > 1 else ''} {ranks} of {self.world_size} — {detail}"
            kind = _error_type(failed[0][1][0])
            error = kind(message)
            raise error from local_exc
        return result

    def check_same(self, value: Any, what: str) -> None:
        """Raise on every rank unless every rank passed an equal ``value`` (rank 0's is the reference)."""
        values = self.gather_objects(value, what)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise DistributedError(
                f"the ranks disagree on {what}: ranks {differ} differ from rank 0 ({values[differ[0]]!r} vs "
                f"{values[0]!r}); every rank must build the same model and options, only the data differ"
            )


def _error_type(name: str) -> type[Exception]:
    from .determinism import NondeterministicHessianError

    known = {"ValueError": ValueError, "TypeError": TypeError,
             "NondeterministicHessianError": NondeterministicHessianError, "DistributedError": DistributedError}
    return known.get(name, DistributedError)


def resolve_group(distributed) -> ShardGroup | None:
    """The :class:`ShardGroup` of the ``distributed`` knob (module docstring), or None for one process."""
    if distributed is None:
        if not _available():
            return None
        group = None
    elif distributed is False:
        return None
    elif distributed is True:
        if not _available():
            raise ValueError("distributed=True but torch.distributed is not initialised: call "
                             "torch.distributed.init_process_group first (or run under torchrun)")
        group = None
    else:
        if not _available():
            raise ValueError("a process group was passed as distributed=, but torch.distributed is not initialised")
        group = distributed
        if not isinstance(group, torch.distributed.ProcessGroup):
            raise TypeError(f"distributed must be None, a bool or a ProcessGroup, got {type(distributed).__name__}")
    dist = torch.distributed
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("this process is not a member of the process group passed as distributed=")
    return ShardGroup(group, rank, dist.get_world_size(group), str(dist.get_backend(group)))


# ------------------------------------------------------------------------ fingerprints ---
def fingerprint(t: Tensor) -> tuple[float, float]:
    """(Σ t_i, Σ i·t_i / n) of the flattened ``t`` in float64: equal inputs give equal numbers,
    different ones (another seed, a permutation) almost surely not."""
    flat = t.detach().reshape(-1).to(torch.float64)
    ramp = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device) / max(flat.numel(), 1)
    return float(flat.sum()), float(flat @ ramp)


def fingerprint_scale(t: Tensor) -> float:
    """Σ |t_i| in float64: the scale two fingerprints of ``t`` are compared at."""
    return float(t.detach().reshape(-1).to(torch.float64).abs().sum())


# ------------------------------------------------------------------------------ shards ---
def shard_bounds(num_examples: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s contiguous shard of ``num_examples``: the first
    N mod W ranks hold ⌈N/W⌉ examples, the others ⌊N/W⌋ (unequal shards when W ∤ N)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    if num_examples < world_size:
        raise ValueError(f"{num_examples} examples cannot be split over {world_size} ranks (each needs one)")
    base, extra = divmod(num_examples, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


# ------------------------------------------------------------------------- launching ---
def init_from_env(timeout_s: float = DEFAULT_TIMEOUT_S, device: torch.device | str = "cpu") -> ShardGroup:
    """Initialise the default process group from torchrun's environment; returns its ShardGroup.

    The backend follows ``device``: gloo for a CPU model, ``"cpu:gloo,cuda:nccl"`` for a CUDA one
    (NCCL for the products, gloo for the small objects). ``timeout_s``: how long a collective waits
    for a peer before it raises. Under torchrun's shared agent store (its default) the ranks join
    that store; otherwise (``TORCHELASTIC_USE_AGENT_STORE=False``: :func:`loopback_launch`) rank 0
    serves the store on a socket bound to ``MASTER_ADDR`` only (TCPStore alone would listen on
    every interface).
    """
    dist = torch.distributed
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed")
    env = os.environ
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise DistributedError(f"not launched by torchrun: the environment lacks {missing}")
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    timeout = datetime.timedelta(seconds=float(timeout_s))
    device = torch.device(device)
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    if env.get("TORCHELASTIC_USE_AGENT_STORE", "False") == "True":
        dist.init_process_group(backend, timeout=timeout, rank=rank, world_size=world)
    else:
        addr, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
        if rank == 0:
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((addr, port))
            listener.listen(128)
            store = dist.TCPStore(addr, port, world, True, timeout, master_listen_fd=listener.detach())
        else:
            store = dist.TCPStore(addr, port, world, False, timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return resolve_group(True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def loopback_launch(nproc: int, module_args: list[str], rendezvous_file: str, *,
                    python: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``python -m <module_args>`` on ``nproc`` local ranks
    with torchrun, every socket on 127.0.0.1: a file rendezvous (``rendezvous_file``, which must
    exist and be empty) instead of torchrun's TCP agent store (which listens on every interface),
    rank 0's store bound to 127.0.0.1 (:func:`init_from_env`), gloo on the loopback interface."""
    import sys

    if nproc < 1:
        raise ValueError(f"nproc must be ≥ 1, got {nproc}")
    cmd = [python or sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--master_addr=127.0.0.1", "--local-addr=127.0.0.1", "--rdzv-backend=c10d",
           f"--rdzv-endpoint={rendezvous_file}", "--rdzv-conf=store_type=file", "--max-restarts=0",
           "-m", *module_args]
    env = dict(os.environ)
    env.update({"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
    return cmd, env
