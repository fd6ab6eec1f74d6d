"""Choose the compute device: CUDA first, then Apple MPS, then CPU — and say why.

Users of GPU tools are often unsure whether the GPU is used ("GPU not used" is a common complaint), so
every choice comes with a one-line reason that the CLI prints and the viewer shows. torch is imported
inside the functions so that importing this module stays cheap.

Example:
    >>> choice = resolve_device("cpu")
    >>> choice.device, choice.reason
    ('cpu', 'CPU requested')
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_softseg.errors import SoftsegError

CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceChoice:
    """A resolved device.

    Attributes:
        device: A torch device string: ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"``.
        reason: Why this device was chosen, e.g. ``"CUDA not available; MPS not available; using CPU"``.
    """

    device: str
    reason: str

    @property
    def is_cuda(self) -> bool:
        """Whether the device is a CUDA GPU."""
        return self.device.startswith("cuda")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _cuda_name(device: str) -> str:
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    return torch.cuda.get_device_name(index)


def available_devices() -> list[str]:
    """Device names this machine can use, for a dropdown: ``["auto", ...GPUs..., "cpu"]``.

    Returns:
        ``"auto"`` first, then each CUDA device (``"cuda:0"``, ...), ``"mps"`` when present, ``"cpu"`` last.
    """
    import torch

    names = ["auto"]
    if _cuda_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(requested: str | DeviceChoice | None = "auto") -> DeviceChoice:
    """Turn a user's device request into a torch device string with a reason.

    Args:
        requested: ``"auto"`` (CUDA → MPS → CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; an
            already resolved :class:`DeviceChoice` is returned unchanged; ``None`` means ``"auto"``.

    Returns:
        The chosen device and why.

    Raises:
        SoftsegError: The requested backend is not available on this machine or the name is unknown.
    """
    if isinstance(requested, DeviceChoice):
        return requested
    name = (requested or "auto").strip().lower()
    if name == "auto":
        if _cuda_available():
            return DeviceChoice("cuda", f"CUDA available ({_cuda_name('cuda')}); using CUDA")
        if _mps_available():
            return DeviceChoice("mps", "CUDA not available; MPS available; using Apple MPS")
        return DeviceChoice("cpu", "CUDA not available; MPS not available; using CPU")
    if name == "cpu":
        return DeviceChoice("cpu", "CPU requested")
    if name == "cuda" or name.startswith("cuda:"):
        if not _cuda_available():
            raise SoftsegError(
                "CUDA was requested but is not available (no NVIDIA GPU or torch without CUDA); "
                "use --device auto or --device cpu"
            )
        if ":" in name:
            import torch

            suffix = name.split(":", 1)[1]
            if not suffix.isdigit() or int(suffix) >= torch.cuda.device_count():
                raise SoftsegError(
                    f"no CUDA device {name!r}; this machine has {torch.cuda.device_count()} "
                    f"(choose from {', '.join(available_devices())})"
                )
        return DeviceChoice(name, f"CUDA requested ({_cuda_name(name)})")
    if name == "mps":
        if not _mps_available():
            raise SoftsegError("MPS was requested but is not available (needs Apple silicon); use --device auto or cpu")
        return DeviceChoice("mps", "MPS requested")
    raise SoftsegError(f"unknown device {requested!r}; choose one of {', '.join(CHOICES)} (or cuda:N)")
