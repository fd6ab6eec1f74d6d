"""Training losses against soft targets: binary cross-entropy, soft Dice, or their sum.

The network's logits are compared with the soft label itself (values in ``[0, 1]``), not with a
thresholded mask: BCE with a soft target is minimised where the predicted probability equals it, which is
what lets a model learn the raters' disagreement. :func:`distributed_soft_loss` is the same loss when
``torchrun`` splits the batch between processes.

torch is imported inside the functions (this module is imported by the torch-free option checks).
"""

from __future__ import annotations

from napari_softseg.model.distributed import Distributed

#: The ``--loss`` choices.
LOSSES = ("bce", "dice", "bce+dice")


def soft_loss(logits, target, kind: str):
    """BCE against the soft target, soft Dice (over the whole batch), or their sum.

    Args:
        logits: Network output, a float tensor.
        target: Soft target of the same shape, values in ``[0, 1]``.
        kind: One of :data:`LOSSES`.

    Returns:
        A scalar tensor.
    """
    import torch
    import torch.nn.functional as F

    total = 0.0
    if "bce" in kind:
        total = total + F.binary_cross_entropy_with_logits(logits, target)
    if "dice" in kind:
        p = torch.sigmoid(logits)
        total = total + 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return total


def distributed_soft_loss(logits, target, kind: str, dist: Distributed, global_rows: int):
    """:func:`soft_loss` of the whole global batch when this rank holds only its rows of it (under torchrun).

    The loss is built from sums over all ranks (BCE: the sum of the element losses over the global batch,
    divided by its size; soft Dice: intersection and volumes over the global batch), taken with a
    collective gradients flow back through. Every rank gets the same value, and the averaged gradient is
    that of one process on the whole batch, whatever the split (rows need not divide evenly).

    Args:
        logits: This rank's rows of the network output.
        target: The matching rows of the soft target.
        kind: One of :data:`LOSSES`.
        dist: The process group.
        global_rows: Rows of the whole batch (all ranks together).

    Returns:
        A scalar tensor, the same on every rank.
    """
    import torch
    import torch.nn.functional as F

    parts = []
    if "bce" in kind:
        per_row = logits[0].numel()
        parts.append(F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / (global_rows * per_row))
    if "dice" in kind:
        p = torch.sigmoid(logits)
        parts += [(p * target).sum(), p.sum(), target.sum()]
    sums = dist.sum_with_grad(torch.stack(parts))
    total = 0.0
    if "bce" in kind:
        total = total + sums[0]
    if "dice" in kind:
        inter, p_sum, t_sum = sums[-3], sums[-2], sums[-1]
        total = total + 1 - (2 * inter + 1) / (p_sum + t_sum + 1)
    return total
