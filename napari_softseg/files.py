"""Safe output files: never overwrite unless asked, never leave a half-written file.

Example:
    >>> write_json("result.json", {"qubiq_score": 0.9})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import SoftsegError


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise if ``path`` exists (and ``overwrite`` is false) or is a folder; return it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise SoftsegError("is a folder; expected a file name", path)
    if path.exists() and not overwrite:
        raise SoftsegError("already exists; choose another name or pass --overwrite", path)
    return path


def default_file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the current umask (``mkstemp`` uses 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    Raises:
        SoftsegError: ``path`` exists and ``overwrite`` is false, or the write failed (disk full, no
            permission); the previous file, if any, is left untouched.
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        raise SoftsegError(f"could not write: {exc.strerror or exc}", path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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
