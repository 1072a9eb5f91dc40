"""Which process does what when the recipe runs under ``torchrun``.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; without them the run is one
process (rank 0 of 1) and every helper here is a no-op or runs its function directly.
Rank 0 alone prepares the data, writes the outputs and shows progress bars; the other
ranks wait for it (:func:`main_process_first`) and sum their counts with it.

Internal to the recipe (a private module): its names are for the recipe's modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as torch_dist

from resnetzoo.errors import ResNetZooError
from resnetzoo.recipes.finetune.errors import ConfigError

__all__ = [
    "Dist",
    "all_reduce_sum",
    "cpus_per_process",
    "default_threads",
    "default_workers",
    "dist_from_env",
    "main_process_first",
    "process_group",
    "resolve_device",
]


@dataclasses.dataclass(frozen=True)
class Dist:
    """This process's place in the group: one process is rank 0 of a world of 1.

    Attributes:
        rank: this process's rank (``RANK``).
        world_size: the number of processes (``WORLD_SIZE``).
        local_rank: its rank on this machine, the GPU it uses (``LOCAL_RANK``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, which prepares the data and writes the outputs."""
        return self.rank == 0


def dist_from_env() -> Dist:
    values = {}
    for var, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = os.environ.get(var, str(default))
        try:
            values[var] = int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {var}={raw!r} must be an integer (set by torchrun)") from None
    return Dist(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])


def resolve_device(name: str, dist: Dist) -> torch.device:
    """``auto`` -> cuda if available, else cpu; a bare ``cuda`` -> this process's local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def cpus_per_process() -> int:
    """The CPUs this process may use (a container's or taskset's share), divided among the local processes."""
    try:
        cpus = len(os.sched_getaffinity(0))  # what a container or taskset allows, not the whole machine
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, cpus // local)


def default_workers() -> int:
    """Data-loading workers per process: :func:`cpus_per_process`, at most 8."""
    return min(8, cpus_per_process())


def default_threads() -> tuple[int, str]:
    """Compute threads for training on the CPU, and why: the CPUs not already busy with other work.

    torch runs one OpenMP thread per core; when other programs keep those cores busy,
    the threads wait for each other at every operation and a step takes several times
    longer than on one thread (measured: a ResNet-18 demo epoch 4x slower with 2
    threads than with 1 on a 2-core machine with a load average of 10). The 1-minute
    load average tells how many cores are taken.
    """
    cpus = cpus_per_process()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return cpus, f"{cpus}: the CPUs this process may use"
    idle = max(1, min(cpus, cpus - round(load)))
    if idle == cpus:
        return cpus, f"{cpus}: the CPUs this process may use"
    return idle, f"{idle} of {cpus}: the machine is busy (load average {load:.1f})"


def all_reduce_sum(tensor: torch.Tensor, dist: Dist) -> torch.Tensor:
    if dist.enabled:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def main_process_first(dist: Dist, fn: Callable[[], Any], *, others: Callable[[], Any] | None = None) -> Any:
    """Run ``fn`` on rank 0 while the others wait, then ``others`` (default ``fn``) on the others.

    A failure on rank 0 is re-raised there and reported on every other rank, so no
    rank waits forever for a rank that has died.
    """
    if not dist.enabled:
        return fn()
    result, error = None, None
    if dist.is_main:
        try:
            result = fn()
        except BaseException as e:  # re-raised below, after telling the other ranks
            error = e
    message = [None if error is None else f"{type(error).__name__}: {error}"]
    torch_dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    if message[0] is not None:
        raise ResNetZooError(f"rank 0 failed while preparing the run: {message[0]}")
    return result if dist.is_main else (others or fn)()


@contextlib.contextmanager
def process_group(dist: Dist, device: torch.device) -> Iterator[None]:
    """Join the process group for the block (NCCL on CUDA, gloo on CPU), unless already joined.

    A group created here is destroyed when the block ends, however it ends; one the
    caller initialised is left alone.
    """
    owns_group = dist.enabled and not torch_dist.is_initialized()
    if owns_group:
        # An hour, not NCCL's default 10 minutes: the other ranks wait in a collective
        # while rank 0 downloads 1.1 GB and builds the cache.
        torch_dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1)
        )
    try:
        yield
    finally:
        if owns_group:
            torch_dist.destroy_process_group()
