"""Safe output files: never overwrite unless asked, never leave a half-written file.

Example:
    >>> write_json("result.json", {"qubiq_score": 0.9})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

from napari_softseg.errors import SoftsegError


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise if ``path`` exists (and ``overwrite`` is false) or is a folder; return it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise SoftsegError("is a folder; expected a file name", path)
    if path.exists() and not overwrite:
        raise SoftsegError("already exists; choose another name or pass --overwrite", path)
    return path


@contextmanager
def atomic_destination(path: str | os.PathLike, overwrite: bool = False, suffix: str = ".part"):
    """Yield a temporary path beside ``path``; rename it into place if the block succeeds.

    On any failure (an exception, Ctrl-C, a full disk) the temporary file is removed and ``path`` keeps
    its previous content. Files created with plain ``open()`` in the block get the usual umask mode.

    Args:
        path: The final file.
        overwrite: Allow replacing an existing ``path`` (checked before the block runs).
        suffix: End of the temporary name (e.g. ``".nii.gz"`` so a writer picks the right format).

    Raises:
        SoftsegError: ``path`` exists and ``overwrite`` is false, or is a folder.
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_synced(path: str | os.PathLike, data: bytes) -> None:
    """Create ``path`` (which must not exist), write ``data`` and flush it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask decides the mode
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_destination`.

    Raises:
        SoftsegError: ``path`` exists and ``overwrite`` is false, or the write failed (disk full, no
            permission); the previous file, if any, is left untouched.
    """
    try:
        with atomic_destination(path, overwrite) as tmp:
            write_bytes_synced(tmp, data)
    except OSError as exc:
        raise SoftsegError(f"could not write: {exc.strerror or exc}", path) from None
    return Path(path)


def write_json(path: str | os.PathLike, obj: object, overwrite: bool = False) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN is written as ``null``)."""
    text = json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def _json_safe(obj: object) -> object:
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj
