"""JSON in and out, safely: :func:`read_json_object` checks size and nesting depth *before* parsing (a
hostile file cannot exhaust the stack or memory), :func:`write_json` commits atomically through
:mod:`~napari_softseg.io.files` and turns numpy values into plain JSON (NaN refused).

Example:
    >>> write_json("result.json", {"qubiq_score": 0.9})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.files import atomic_write_bytes

MAX_JSON_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 32


def json_bytes(obj: object) -> bytes:
    """``obj`` as indented JSON bytes (NaN and infinities written as ``null``)."""
    return (json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n").encode("utf-8")


def write_json(path: str | os.PathLike, obj: object, overwrite: bool = False) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN is written as ``null``)."""
    return atomic_write_bytes(path, json_bytes(obj), overwrite)


def _depth(obj: object, limit: int) -> int:
    """Nesting depth of a JSON value, without recursion (stops counting at ``limit + 1``)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, d = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((v, d + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _nesting_of_text(text: str, limit: int) -> bool:
    """Whether the brackets of a JSON text nest deeper than ``limit`` (outside strings)."""
    depth, in_string, escape = 0, False, False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def read_json_object(path: str | os.PathLike, what: str = "JSON file", *, max_depth: int = MAX_JSON_DEPTH,
                     max_bytes: int = MAX_JSON_BYTES) -> dict:
    """Read a JSON file that must hold an object, refusing hostile content with one line.

    Refused (as :class:`SoftsegError` naming the file): unreadable, larger than ``max_bytes``, not UTF-8,
    not JSON, nested deeper than ``max_depth`` (checked before parsing, so no ``RecursionError``), or
    not an object at the top.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SoftsegError(f"{what} is {size / 2**20:.1f} MiB; refusing more than {max_bytes // 2**20} MiB", path)
        text = path.read_bytes().decode("utf-8")
    except SoftsegError:
        raise
    except UnicodeDecodeError:
        raise SoftsegError(f"{what} is not UTF-8 text", path) from None
    except OSError as exc:
        raise SoftsegError(f"cannot read {what}: {exc.strerror or exc}", path) from None
    if _nesting_of_text(text, max_depth):
        raise SoftsegError(f"{what} is nested deeper than {max_depth} levels", path)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SoftsegError(f"{what} is not valid JSON ({str(exc).splitlines()[0][:120]})", path) from None
    if not isinstance(data, dict):
        raise SoftsegError(f"{what} must hold a JSON object, found {type(data).__name__}", path)
    return data


def _json_safe(obj: object) -> object:
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
