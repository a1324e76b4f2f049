"""Training on several processes: torchrun's environment, the process group, the samplers, a local launcher.

``torchrun --nproc-per-node N -m pvlm.train ...`` (or ``pvlm-train --nproc N``, which launches the same way
on one machine) starts N processes; each reads its rank from the environment torchrun sets (:func:`from_env`)
and joins a process group (NCCL on CUDA, gloo on CPU). Every process loads the data; the
:class:`GlobalBatchSampler` cuts each global batch of ``--batch-size`` images into N contiguous parts, so N
processes see the same global batches, in the same order, as one process does, and the order depends only on
(seed, epoch): a run resumed with another number of processes continues with the batches it would have had.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

log = logging.getLogger(__name__)
_AGENT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT") if hasattr(signal, n))


class ProcessFailed(RuntimeError):
    """A process of a local multi-process run failed; the message is its rank and its error, ``error`` the
    exception's type name (empty when the process died without one)."""

    def __init__(self, message: str, error: str = ""):
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class Dist:
    """This process's place: ``rank`` of ``world`` (``local_rank`` on its machine); ``active`` under torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints, history and progress."""
        return self.rank == 0


def from_env() -> Dist:
    """The torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or a single inactive process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ValueError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (as torchrun sets them)") from None
    return Dist(rank, world, local, active=True)


@contextlib.contextmanager
def process_group(dist: Dist, device: torch.device) -> Iterator[None]:
    """Join the process group for the block (NCCL for CUDA, gloo otherwise); nothing for a single process."""
    if not dist.active or tdist.is_initialized():
        yield
        return
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        tdist.destroy_process_group()


def local_device(dist: Dist, device: torch.device) -> torch.device:
    """CUDA: this process's GPU (``cuda:LOCAL_RANK``), made current; other devices unchanged."""
    if dist.active and device.type == "cuda":
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return device


def check_batch(batch_size: int, world: int, n_train: int) -> int:
    """The per-process batch; ValueError unless ``batch_size`` splits evenly and every process gets an image."""
    if batch_size % world:
        raise ValueError(f"--batch-size {batch_size} does not split evenly over {world} processes")
    if n_train < world:
        raise ValueError(f"{n_train} training images cannot feed {world} processes")
    return batch_size // world


class GlobalBatchSampler(torch.utils.data.DistributedSampler):
    """This rank's share of each global batch: a seeded permutation per epoch, cut into global batches of
    ``batch_size`` (the last partial one dropped when there is more than one), each split into ``world``
    contiguous parts. With one process it yields the global batches themselves."""

    def __init__(self, dataset: Any, batch_size: int, dist: Dist, seed: int):
        super().__init__(dataset, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed)
        self.batch_size, self.n = batch_size, len(dataset)
        self.per_rank = batch_size // dist.world
        self.n_batches = self.n // batch_size if self.n > batch_size else 1
        self.num_samples = len(self._mine(list(range(self.n))))

    def _mine(self, order: list[int]) -> list[int]:
        if self.n <= self.batch_size:  # one small global batch, shared round-robin
            return order[self.rank::self.num_replicas]
        starts = (b * self.batch_size + self.rank * self.per_rank for b in range(self.n_batches))
        return [i for s in starts for i in order[s:s + self.per_rank]]

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(self._mine(torch.randperm(self.n, generator=g).tolist()))

    def __len__(self) -> int:
        return self.num_samples


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world``-th item from ``rank``, in order, no padding: summed over ranks, each item counts once."""

    def __init__(self, n: int, dist: Dist):
        self.items = list(range(dist.rank, n, dist.world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def all_sum(t: torch.Tensor, dist: Dist) -> torch.Tensor:
    """``t`` summed over all processes (in place; unchanged for a single process)."""
    if dist.active and dist.world > 1:
        tdist.all_reduce(t)
    return t


def sync_buffers(module: torch.nn.Module, dist: Dist) -> None:
    """Give every process rank 0's buffers (batch-norm running statistics, which each rank updated from its own
    part of the last batch), so validation uses what rank 0 saves."""
    if dist.active and dist.world > 1:
        for b in module.buffers():
            tdist.broadcast(b, 0)


def launch_local(fn: Callable[..., Any], args: tuple[Any, ...], nproc: int) -> Any:
    """Run ``fn(*args)`` in ``nproc`` processes on this machine as torchrun would; returns rank 0's result.

    A failed process stops the others; the failure comes back as :class:`ProcessFailed` with its message.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    # the agent repeats a failed process's traceback and logs its own progress and the stopping of the others
    quiet = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.multiprocessing.spawn")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    # the agent installs its own SIGTERM/SIGINT/SIGHUP/SIGQUIT handlers and leaves them: a later fork (a Pool's
    # worker) would inherit them and raise instead of terminating, so they are put back
    handlers = {sig: signal.getsignal(sig) for sig in _AGENT_SIGNALS}
    try:
        return elastic_launch(config, fn)(*args)[0]
    except ChildFailedError as e:
        rank, failure = min(e.failures.items())
        msg = str(failure.message.get("message") if isinstance(failure.message, dict) else failure.message)
        error = msg.split(":")[0] if re.match(r"^[A-Za-z_]\w*: ", msg) else ""
        raise ProcessFailed(f"training process {rank} failed: {msg}", error) from None
    finally:
        for q, lvl in zip(quiet, levels, strict=True):
            q.setLevel(lvl)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


__all__ = ["Dist", "GlobalBatchSampler", "ProcessFailed", "ShardSampler", "all_sum", "check_batch", "from_env",
           "launch_local", "local_device", "process_group", "sync_buffers"]
