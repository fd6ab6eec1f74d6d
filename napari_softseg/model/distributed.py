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
#: How long a rank waits in a collective before giving up (rank 0 validates alone while the others wait).
GROUP_TIMEOUT_MINUTES = 120


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
    @property
    def started(self) -> bool:
        """Whether this process is in a process group (always ``False`` for a world of one)."""
        if not self.enabled:
            return False
        import torch.distributed as tdist

        return tdist.is_initialized()

    def start(self, device: str, timeout_minutes: float = GROUP_TIMEOUT_MINUTES) -> None:
        """Join the process group (gloo on CPU, nccl on CUDA); a no-op for a world of one.

        Args:
            device: The device this rank computes on (``cuda…`` selects nccl).
            timeout_minutes: How long a collective may wait for the slowest rank.

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
        from datetime import timedelta

        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        tdist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size,
                                 timeout=timedelta(minutes=timeout_minutes))

    def stop(self, wait: bool = True) -> None:
        """Leave the process group.

        Args:
            wait: Pass a last barrier first, so no rank leaves while others still talk (the normal end).
                ``False`` on an error path, where the other ranks may never arrive.
        """
        if not self.enabled:
            return
        import torch.distributed as tdist

        if tdist.is_initialized():
            if wait:
                tdist.barrier()
            tdist.destroy_process_group()

    @property
    def backend(self) -> str | None:
        """``"gloo"`` or ``"nccl"`` once started; ``None`` for a world of one or before :meth:`start`."""
        if not self.enabled:
            return None
        import torch.distributed as tdist

        return tdist.get_backend() if tdist.is_initialized() else None

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

    def share(self, values: Sequence[float]) -> list[float]:
        """Rank 0's ``values`` on every rank (float64; for numbers decided on rank 0, e.g. planned steps)."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch
        import torch.distributed as tdist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device())
        tdist.broadcast(t, src=0)
        return [float(v) for v in t.cpu().tolist()]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch
        import torch.distributed as tdist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device())
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return [float(v) for v in t.cpu().tolist()]

    def sum_with_grad(self, tensor):
        """Sum of a tensor over all ranks that gradients flow back through (the tensor itself for one process).

        Every rank gets the same global value. In the backward pass each rank's share receives the sum of
        the ranks' gradients, i.e. ``world_size`` times the gradient of a loss computed from the total;
        :class:`~torch.nn.parallel.DistributedDataParallel` then averages over the ranks, so the parameters
        get exactly the gradient of that global loss.
        """
        if not self.enabled:
            return tensor
        return _summed_with_grad().apply(tensor)

    # --- data parallel training ----------------------------------------------------------------------
    def rows(self, batch):
        """This rank's rows of a global batch: ``rank``, ``rank + N``, … (the whole batch for one process)."""
        return batch if not self.enabled else batch[self.rank :: self.world_size]

    def wrap(self, network):
        """The module to train with: ``network`` wrapped in DistributedDataParallel (itself for one process).

        Parameters and buffers are broadcast from rank 0 when wrapping, so every rank starts from rank 0's
        weights. On CUDA, batch-norm layers become :class:`~torch.nn.SyncBatchNorm` (statistics over the
        global batch); on the CPU (gloo) they keep per-rank statistics. Validation and saving use
        ``network`` itself: the wrapper's forward is a collective that only training steps may call.
        """
        if not self.enabled:
            return network
        import torch
        from torch.nn.parallel import DistributedDataParallel

        params = next(network.parameters())
        if params.device.type == "cuda":
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
            return DistributedDataParallel(network, device_ids=[params.device.index])
        return DistributedDataParallel(network)


_SUM_FUNCTION = None


def _summed_with_grad():
    """An autograd function: all-reduce (sum) forward, all-reduce (sum) of the gradients backward."""
    global _SUM_FUNCTION
    if _SUM_FUNCTION is None:
        import torch
        import torch.distributed as tdist

        class SumOverRanks(torch.autograd.Function):
            @staticmethod
            def forward(ctx, tensor):
                total = tensor.clone(memory_format=torch.contiguous_format)
                tdist.all_reduce(total, op=tdist.ReduceOp.SUM)
                return total

            @staticmethod
            def backward(ctx, grad):
                total = grad.clone(memory_format=torch.contiguous_format)
                tdist.all_reduce(total, op=tdist.ReduceOp.SUM)
                return total

        _SUM_FUNCTION = SumOverRanks
    return _SUM_FUNCTION
