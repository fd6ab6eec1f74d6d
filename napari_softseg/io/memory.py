"""Memory checks before big reads and allocations: refuse with a clear line instead of being killed.

:func:`check_memory` compares an estimate with :data:`MEMORY_SHARE` of the memory this process can still
get (cgroup limit, ``RLIMIT_AS`` and the system's available memory, whichever is least).
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_softseg.errors import SoftsegError


def available_memory_bytes() -> int:
    """Memory this process may use: ``SOFTSEG_MAX_MEMORY_GB`` if set, else the system's available memory.

    The available memory is read from ``/proc/meminfo`` (``MemAvailable``), capped by the address-space
    and cgroup limits when they are lower; elsewhere, ``os.sysconf``'s physical memory.
    """
    env = os.environ.get("SOFTSEG_MAX_MEMORY_GB")
    if env:
        try:
            value = float(env)
            if value > 0 and value < 1e9:
                return int(value * 2**30)
        except ValueError:
            pass
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except OSError:
        pass
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(cgroup).read_text().strip()
            if text.isdigit() and int(text) < 2**60:
                limits.append(int(text))
        except OSError:
            pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            limits.append(8 * 2**30)
    return min(limits)


MEMORY_SHARE = 0.6


def format_bytes(n: float) -> str:
    """``3.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def check_memory(needed_bytes: float, what: str, path: str | os.PathLike | None = None) -> None:
    """Refuse work whose estimated memory does not fit, before anything is allocated.

    Raises:
        SoftsegError: ``needed_bytes`` exceeds :data:`MEMORY_SHARE` of :func:`available_memory_bytes`.
    """
    budget = MEMORY_SHARE * available_memory_bytes()
    if needed_bytes > budget:
        raise SoftsegError(
            f"{what} needs about {format_bytes(needed_bytes)} of memory but only {format_bytes(budget)} can be "
            "used (set SOFTSEG_MAX_MEMORY_GB to change the limit)",
            path,
        )


#: Elements per chunk of :func:`count_where` (4 M: a 4 MB boolean temporary).
COUNT_CHUNK = 1 << 22


def count_where(array, predicate) -> int:
    """``np.count_nonzero(predicate(array))`` a chunk at a time, in the array's memory order.

    A whole-volume test such as ``~np.isfinite(scan)`` makes one or two volume-sized boolean temporaries
    (150 MB for a 512 × 512 × 300 scan) on top of a file's mapped pages; chunks of :data:`COUNT_CHUNK`
    elements make a 4 MB one. Contiguous arrays (C or Fortran order, NIfTI's) are walked without a copy.

    Example:
        >>> import numpy as np
        >>> count_where(np.array([[1.0, np.nan], [np.inf, 2.0]]), lambda a: ~np.isfinite(a))
        2
    """
    import numpy as np

    flat = np.asarray(array).ravel(order="K")
    return sum(int(np.count_nonzero(predicate(flat[i:i + COUNT_CHUNK]))) for i in range(0, flat.size, COUNT_CHUNK))
