"""Which process does what when the CUB-200-2011 recipe runs under ``torchrun``.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; without them the run is one
process (rank 0 of 1) and every helper here is a no-op or runs its function directly.
Rank 0 alone prepares the data, writes the outputs and shows progress bars; the other
ranks wait for it (:func:`_main_process_first`) and sum their counts with it.

Internal to the recipe: nothing here is public API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as torch_dist

from resnetzoo.errors import ResNetZooError
from resnetzoo.recipes.cub200.config import ConfigError, CUB200Config

__all__: list[str] = []


@dataclasses.dataclass(frozen=True)
class _Dist:
    """This process's place in the group: one process is rank 0 of a world of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dist_from_env() -> _Dist:
    values = {}
    for var, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = os.environ.get(var, str(default))
        try:
            values[var] = int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {var}={raw!r} must be an integer (set by torchrun)") from None
    return _Dist(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])


def _resolve_device(config: CUB200Config, dist: _Dist) -> torch.device:
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def _default_workers(dist: _Dist) -> int:
    """Data-loading workers per process: the CPUs this process may use, shared by the local processes, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))  # what a container or taskset allows, not the whole machine
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(0, min(8, cpus // local))


def _show_progress(config: CUB200Config, dist: _Dist) -> bool:
    # Bars only on rank 0 and only on a terminal: in a log file they are noise.
    return config.progress and dist.is_main and sys.stderr.isatty()


def _all_reduce_sum(tensor: torch.Tensor, dist: _Dist) -> torch.Tensor:
    if dist.enabled:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def _main_process_first(dist: _Dist, fn: Callable[[], Any], *, others: Callable[[], Any] | None = None) -> Any:
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
def _process_group(dist: _Dist, device: torch.device) -> Iterator[None]:
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
