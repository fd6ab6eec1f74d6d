"""Files written by other software, as installed packages ship them, and how one goes through this package.

The corpora: nibabel's own test images (``nibabel/tests/data`` and ``nibabel/nicom/tests/data``, in every
nibabel wheel) and the real DICOM files of ``pydicom-data`` (a test-only dependency; absent: its files are
not listed). :func:`reader_outcome` runs one file through the napari reader the way napari does (no
viewer), :func:`inspect_outcome` through ``softseg inspect`` in this process. Each returns an outcome
word and the text that goes with it:

- ``open``: layers, no warning; ``warn``: layers and a logged ``warning: FILE: ...``;
- ``refuse``: one :class:`~napari_softseg.errors.SoftsegError` line (exit code 2 for ``inspect``);
- ``decline``: ``get_reader`` returned ``None`` (not a file this plugin claims).

Anything else (a traceback) is raised, so a test fails on it. Used by tests/test_third_party_corpus.py
and handy on its own: ``python tests/third_party_corpus.py`` prints the table that test expects.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

#: Not image data: scripts, text and streamline files (nibabel reads none of them as an image).
SKIP_SUFFIXES = (".py", ".m", ".rst", ".json", ".txt", ".bin", ".bin.gz", ".gitignore", ".trk", ".tck", ".dump",
                 ".icc")


def corpus_folders() -> dict[str, Path]:
    """``{group: folder}`` of the corpora installed here (pydicom-data only when installed)."""
    import nibabel

    root = Path(nibabel.__file__).parent
    folders = {"nibabel": root / "tests" / "data", "nibabel-nicom": root / "nicom" / "tests" / "data"}
    try:
        from pydicom.data.data_manager import external_data_sources

        source = external_data_sources().get("pydicom-data")
        if source is not None:
            folders["pydicom-data"] = Path(source.data_path)
    except ImportError:
        pass
    return {k: v for k, v in folders.items() if v.is_dir()}


def corpus_files() -> list[tuple[str, Path]]:
    """``[("group/name", path)]`` for every data file of the installed corpora, in a stable order."""
    out = []
    for group, folder in corpus_folders().items():
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.lower().endswith(SKIP_SUFFIXES) and path.name != "README":
                out.append((f"{group}/{path.name}", path))
    return out


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _warnings_logged():
    handler = _Collect()
    log = logging.getLogger("napari_softseg")
    log.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's and nibabel's own chatter about odd values
            yield handler.lines
    finally:
        log.removeHandler(handler)


def reader_outcome(path: Path) -> tuple[str, str]:
    """``(outcome, text)`` of the napari reader on ``path`` (see the module docstring)."""
    from napari_softseg._napari.reader import get_reader
    from napari_softseg.errors import SoftsegError

    with _warnings_logged() as lines:
        reader = get_reader(str(path))
        if reader is None:
            return "decline", ""
        try:
            layers = reader(str(path))
        except SoftsegError as exc:
            return "refuse", str(exc)
    if not layers:
        raise AssertionError(f"{path}: the reader returned no layer and no error")
    shown = ", ".join(f"{kind} {'x'.join(map(str, getattr(data, 'shape', ())))}" for data, _, kind in layers)
    return ("warn", " | ".join(lines)) if lines else ("open", shown)


def inspect_outcome(path: Path) -> tuple[str, str]:
    """``(outcome, text)`` of ``softseg inspect PATH`` run in this process."""
    from napari_softseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _warnings_logged() as lines, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["inspect", str(path)])
    if code == 2:
        return "refuse", err.getvalue().strip()
    if code != 0:
        raise AssertionError(f"{path}: softseg inspect exited {code}: {err.getvalue()}")
    said = out.getvalue() + err.getvalue()
    warned = lines or [line for line in said.splitlines() if line.startswith("warning:")]
    return ("warn", " | ".join(warned)) if warned else ("open", out.getvalue().strip().splitlines()[0])


if __name__ == "__main__":
    for key, file in corpus_files():
        print(f"    {key!r}: ({reader_outcome(file)[0]!r}, {inspect_outcome(file)[0]!r}),")
