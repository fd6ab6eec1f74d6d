"""Running under ``torchrun``: which process this is, what it owns, and how the processes agree.

napari-softseg runs on PyTorch's own distributed engine rather than a home-made one. The CLI is
unchanged: ``torchrun --nproc-per-node N -m napari_softseg train …`` (or ``predict``) starts N copies of
the same command; each reads its rank from the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Outside torchrun every function here is a cheap
no-op for a world of one process, so single-process code paths need no special case.

Conventions used by training and prediction:

- The process group uses **gloo** on the CPU and **nccl** on CUDA; each CUDA process takes the GPU of
  its ``LOCAL_RANK``.
- **Rank 0 alone** writes checkpoints, model folders, logs and draws the progress bar
  (:attr:`Distributed.is_main`).
- Work is split **deterministically** (:meth:`Distributed.shard`): rank r takes items r, r + N, r + 2N …
  of a list every rank builds in the same order, so a rerun shards identically and can be resumed.
- Decisions that must be taken together (stop on the time budget, stop on a plateau) are taken on rank
  0 and broadcast (:meth:`Distributed.agree`), so no process waits forever in a collective the others
  left.
- Results travel as tensors, never pickled objects.

Example:
    >>> dist = Distributed.from_environment({})
    >>> dist.world_size, dist.rank, dist.is_main
    (1, 0, True)
    >>> dist.shard(["case1", "case2", "case3"])
    ['case1', 'case2', 'case3']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from napari_softseg.errors import SoftsegError

T = TypeVar("T")

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly one-process) distributed run.

    Attributes:
        rank: Global rank, 0 … ``world_size - 1``.
        world_size: Number of processes.
        local_rank: Rank on this machine (which GPU a CUDA process takes).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Distributed:
        """Read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` as set by ``torchrun`` (a world of one without).

        Raises:
            SoftsegError: The variables are present but inconsistent (e.g. ``RANK`` >= ``WORLD_SIZE``).
        """
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            world = int(env["WORLD_SIZE"])
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise SoftsegError(
                "torchrun environment is malformed: " + ", ".join(f"{k}={env.get(k)!r}" for k in _ENV_KEYS)
            ) from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise SoftsegError(f"torchrun environment is inconsistent: RANK={rank}, WORLD_SIZE={world}")
        return cls(rank=rank, world_size=world, local_rank=local)

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and draws progress."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: items ``rank``, ``rank + N``, … (disjoint, covering, stable)."""
        return list(items[self.rank :: self.world_size])

    def device_for(self, device: str) -> str:
        """The device string this rank uses: ``cuda`` becomes ``cuda:<local_rank>`` when distributed."""
        if self.enabled and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device

    # --- process group -------------------------------------------------------------------------------
    def start(self, device: str) -> None:
        """Join the process group (gloo on CPU, nccl on CUDA); a no-op for a world of one.

        Raises:
            SoftsegError: ``MASTER_ADDR`` / ``MASTER_PORT`` missing (not started by torchrun).
        """
        if not self.enabled:
            return
        import torch
        import torch.distributed as tdist

        if tdist.is_initialized():
            return
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise SoftsegError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start with torchrun")
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        tdist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)

    def stop(self) -> None:
        """Leave the process group (after a last barrier so no rank exits while others still talk)."""
        if not self.enabled:
            return
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.barrier()
            tdist.destroy_process_group()

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            import torch.distributed as tdist

            tdist.barrier()

    def _device(self):
        import torch
        import torch.distributed as tdist

        return torch.device(f"cuda:{self.local_rank}") if tdist.get_backend() == "nccl" else torch.device("cpu")

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank (for stop decisions taken together)."""
        if not self.enabled:
            return bool(flag)
        import torch
        import torch.distributed as tdist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._device())
        tdist.broadcast(t, src=0)
        return bool(t.item())

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch
        import torch.distributed as tdist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device())
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return [float(v) for v in t.cpu().tolist()]
