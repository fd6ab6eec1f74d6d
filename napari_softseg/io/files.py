"""Safe output files: never replace unless asked (even under races), never leave a half-written file.

One primitive commits every output of the package:

* Data is written to a **temporary file beside the final one**, named
  ``.<final name>.softseg-<pid>-<random>.part<suffix>``: hidden (dataset discovery skips it), recognisable,
  and tagged with the writing process's id.
* **Without overwrite** the temporary file is *hard-linked* to the final name (``os.link`` fails if that
  name exists, atomically, even when another process created it a microsecond earlier) and then
  unlinked: a final path never holds a partial file and an existing file is never replaced. On a file
  system without hard links the final name is claimed with ``O_CREAT | O_EXCL`` first.
* **With overwrite** the temporary file is renamed over the final one (:func:`os.replace`, atomic).
* Several files that belong together (a soft label, its sidecar and its agreement map) are committed as
  a **group**: every temporary file is written first, a small journal names the pairs, then the files
  are linked into place. A run killed in the middle leaves a journal whose process is dead; the next
  write into that folder rolls the group back (removing only final files that are still the very same
  inode as the group's temporary file, so nothing the user made is touched) and removes the temporaries.

Temporary files of dead processes are removed by the next write into the same folder
(:func:`clean_stale_temporaries`).

Example:
    >>> write_json("result.json", {"qubiq_score": 0.9})  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path

from napari_softseg.errors import SoftsegError

TEMP_TAG = ".softseg-"
#: ``.<name>.softseg-<pid>-<hex>.part<suffix>`` (temporary files) and ``...journal`` (group commits).
TEMP_RE = re.compile(r"^\..+\.softseg-(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>part|journal)")
def crash_point(name: str) -> None:
    """Die here with SIGKILL if ``SOFTSEG_CRASH_AT`` names this point (tests of interrupted writes only)."""
    if os.environ.get("SOFTSEG_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def folder_lock(folder: str | os.PathLike, what: str = "softseg"):
    """Hold ``.<folder name>.softseg-lock`` beside ``folder`` while a long writer (training) works in it.

    The lock file is created with ``O_EXCL`` and holds the owner's process id; a lock left by a dead
    process is taken over. Use as a context manager.

    Raises:
        SoftsegError: Another live process holds the lock.
    """
    return _FolderLock(Path(folder), what)


class _FolderLock:
    def __init__(self, folder: Path, what: str):
        self.path = folder.absolute().parent / f".{folder.name}.softseg-lock"
        self.folder, self.what, self.held = folder, what, False

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.folder) from None
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                try:
                    owner = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    owner = 0
                if owner and _pid_alive(owner):
                    raise SoftsegError(f"another {self.what} (process {owner}) is writing this folder; wait for it "
                                       f"or stop it (lock: {self.path.name})", self.folder) from None
                try:  # left by a dead process (or unreadable): take it over
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:
                raise os_error(exc, self.folder) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self.held = True
            return self
        raise SoftsegError(f"could not take the lock {self.path.name}", self.folder)

    def __exit__(self, *exc):
        if self.held:
            try:
                self.path.unlink()
            except OSError:
                pass
            self.held = False
        return False


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise if ``path`` exists (and ``overwrite`` is false) or is a folder; return it as a Path.

    This is an early, friendly check; the commit itself (:func:`commit_file`) is what guarantees that an
    existing file is never replaced without ``overwrite``.
    """
    path = Path(path)
    clean_stale_temporaries(path.parent)  # an interrupted group commit of a dead run is rolled back first
    try:
        if path.is_dir():
            raise SoftsegError("is a folder; expected a file name", path)
        if (path.exists() or path.is_symlink()) and not overwrite:
            raise SoftsegError("already exists; choose another name or pass --overwrite", path)
    except OSError as exc:  # ENAMETOOLONG, ELOOP, EACCES on a parent ...
        raise os_error(exc, path) from None
    return path


def os_error(exc: OSError, path: str | os.PathLike | None = None) -> SoftsegError:
    """A :class:`SoftsegError` for a file-system failure (disk full, no permission, name too long)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = path if path is not None else exc.filename
    return SoftsegError(f"could not write: {reason}", where)


def temp_path_for(path: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh temporary name beside ``path`` (see the module docstring for the pattern)."""
    path = Path(path)
    name = path.name
    budget = 255 - len(f"..softseg-{os.getpid()}-00000000.part{suffix}") - 1
    if len(name.encode("utf-8", "surrogateescape")) > budget:  # keep temporaries legal beside long names
        name = name[: max(8, budget // 4)]
    return path.parent / f".{name}{TEMP_TAG}{os.getpid()}-{secrets.token_hex(4)}.part{suffix}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Roll back interrupted group commits and delete temporary files of dead processes in ``folder``.

    Only names matching the package's temporary pattern whose process id no longer runs are touched;
    a final file is removed only if it is still a hard link of an interrupted group's temporary file
    (i.e. it was made by that run and not yet accepted). Returns the paths removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    stale = []
    for entry in entries:
        m = TEMP_RE.match(entry.name)
        if m and not _pid_alive(int(m.group("pid"))):
            stale.append((m.group("kind"), Path(entry.path)))
    for kind, journal in stale:  # journals first: their finals must be compared with their temporaries
        if kind == "journal":
            removed += _roll_back(journal)
    for kind, tmp in stale:
        if kind == "part":
            try:
                if tmp.is_dir() and not tmp.is_symlink():
                    import shutil

                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
            except OSError:
                pass
    return removed


def _remove_journal(journal: Path) -> list[Path]:
    """Delete a group's journal once it is settled; ``[journal]`` if it was removed."""
    try:
        journal.unlink()
        return [journal]
    except OSError:
        return []


def _roll_back(journal: Path) -> list[Path]:
    removed = []
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if isinstance(record, dict) and record.get("mode") == "replace":
        members = record.get("members") if isinstance(record.get("members"), list) else []
        members = [m for m in members if isinstance(m, dict)]
        if members and all(_is_member_file(m) for m in members):  # complete: keep it, drop the old copies
            for m in members:
                if m.get("backup"):
                    try:
                        Path(m["backup"]).unlink(missing_ok=True)
                    except (OSError, TypeError):
                        pass
        else:
            removed += _undo_replacements(members)
        return removed + _remove_journal(journal)
    pairs = record.get("pairs", []) if isinstance(record, dict) else []
    pairs = pairs if isinstance(pairs, list) else []

    def linked(tmp, final) -> bool:
        try:
            return os.path.samefile(tmp, final)
        except (OSError, TypeError, ValueError):
            return False

    ours = [final for tmp, final in pairs if linked(tmp, final)]
    if len(ours) < len(pairs):  # torn group: take back what was linked (all or nothing)
        for final in ours:
            try:
                os.unlink(final)
                removed.append(Path(final))
            except OSError:
                pass
    # every member linked: the group is complete (killed just before tidying up) and is kept
    return removed + _remove_journal(journal)


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Move a finished temporary file to its final name: never replacing without ``overwrite``.

    Raises:
        SoftsegError: ``path`` exists and ``overwrite`` is false (``tmp`` is then removed), or the file
            system refused.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        if overwrite:
            os.replace(tmp, path)
            return path
        try:
            os.link(tmp, path, follow_symlinks=False)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            raise SoftsegError("already exists; choose another name or pass --overwrite", path) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # no hard links here (FAT, some network shares): claim the name exclusively, then fill it
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            except FileExistsError:
                tmp.unlink(missing_ok=True)
                raise SoftsegError("already exists; choose another name or pass --overwrite", path) from None
            os.replace(tmp, path)
            return path
        tmp.unlink()
    except SoftsegError:
        raise
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise os_error(exc, path) from None
    return path


def _prepare_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SoftsegError("a parent of this path is a file, not a folder", path) from None
    except OSError as exc:
        raise os_error(exc, path) from None
    clean_stale_temporaries(path.parent)


@contextmanager
def atomic_destination(path: str | os.PathLike, overwrite: bool = False, suffix: str = ".part"):
    """Yield a temporary path beside ``path``; commit it with :func:`commit_file` if the block succeeds.

    On any failure (an exception, Ctrl-C, a full disk) the temporary file is removed and ``path`` keeps
    its previous content. Files created with plain ``open()`` in the block get the usual umask mode.

    Args:
        path: The final file.
        overwrite: Allow replacing an existing ``path``.
        suffix: End of the temporary name after ``.part`` (e.g. ``".nii.gz"`` so a writer picks the
            right format); a leading ``".part"`` is accepted for compatibility.

    Raises:
        SoftsegError: ``path`` exists and ``overwrite`` is false (checked before and at the commit), is a
            folder, or the file system refused (disk full, permission, name too long).
    """
    path = check_writable(path, overwrite)
    _prepare_parent(path)
    if suffix.startswith(".part"):
        suffix = suffix[len(".part"):]
    tmp = temp_path_for(path, suffix)
    try:
        yield tmp
        crash_point("before-commit")
        commit_file(tmp, path, overwrite)
    finally:
        try:
            if tmp.exists():
                tmp.unlink()
        except OSError:
            pass


class OutputGroup:
    """Files that are committed together, all or nothing (see the module docstring).

    Example:
        >>> with OutputGroup([out_nii, out_json], overwrite=False) as group:  # doctest: +SKIP
        ...     save_to(group.temp(out_nii)); write_to(group.temp(out_json))
    """

    def __init__(self, paths, overwrite: bool = False):
        self.paths = [Path(p) for p in paths]
        self.overwrite = overwrite
        if len({os.path.abspath(p) for p in self.paths}) != len(self.paths):
            raise SoftsegError("two outputs have the same name: " + ", ".join(map(str, self.paths)))
        for p in self.paths:
            check_writable(p, overwrite)
        self._temps: dict[Path, Path] = {}

    def __enter__(self) -> OutputGroup:
        for p in self.paths:
            _prepare_parent(p)
        for p in self.paths:
            name = p.name.lower()
            suffix = ".nii.gz" if name.endswith(".nii.gz") else (".nii" if name.endswith(".nii") else "")
            self._temps[p] = temp_path_for(p, suffix)
        return self

    def temp(self, path: str | os.PathLike) -> Path:
        """The temporary path to write ``path``'s content to."""
        return self._temps[Path(path)]

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._commit()
        finally:
            for tmp in self._temps.values():
                try:
                    tmp.unlink()
                except OSError:
                    pass
        return False

    def _commit(self) -> None:
        for p, tmp in self._temps.items():
            if not tmp.exists():
                raise RuntimeError(f"output {p} was not written")  # a bug in the caller
        if self.overwrite:
            self._commit_replacing()
            return
        first = self.paths[0]
        journal = first.parent / f".{first.name[:100]}{TEMP_TAG}{os.getpid()}-{secrets.token_hex(4)}.journal"
        pairs = [[str(t.absolute()), str(p.absolute())] for p, t in self._temps.items()]
        write_bytes_synced(journal, json.dumps({"pairs": pairs}).encode())
        linked: list[tuple[Path, Path]] = []
        try:
            for p, tmp in self._temps.items():
                try:
                    os.link(tmp, p, follow_symlinks=False)
                except FileExistsError:
                    raise SoftsegError("already exists; choose another name or pass --overwrite", p) from None
                except OSError as exc:
                    if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                        commit_file(tmp, p, overwrite=False)  # no hard links: one by one, still never replacing
                        continue
                    raise os_error(exc, p) from None
                linked.append((tmp, p))
                crash_point("group-after-first-link")
        except BaseException:
            for tmp, p in linked:
                try:
                    if os.path.samefile(tmp, p):
                        p.unlink()
                except OSError:
                    pass
            journal.unlink(missing_ok=True)
            raise
        journal.unlink()


    def _commit_replacing(self) -> None:
        """``--overwrite``: keep a hard link of every old file until the whole group is in place."""
        first = self.paths[0]
        journal = first.parent / f".{first.name[:100]}{TEMP_TAG}{os.getpid()}-{secrets.token_hex(4)}.journal"
        members = []
        for p, tmp in self._temps.items():
            st = os.stat(tmp)
            members.append({"tmp": str(tmp.absolute()), "final": str(p.absolute()), "backup": None,
                            "ino": st.st_ino, "dev": st.st_dev})
        try:
            for m in members:
                if os.path.isfile(m["final"]) and not os.path.islink(m["final"]):
                    m["backup"] = str(temp_path_for(m["final"], ".old").absolute())
            write_bytes_synced(journal, json.dumps({"mode": "replace", "members": members}).encode())
            for m in members:
                if m["backup"]:
                    os.link(m["final"], m["backup"])
            for m in members:
                os.replace(m["tmp"], m["final"])
                crash_point("group-after-first-replace")
        except BaseException as exc:
            _undo_replacements(members)
            journal.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise os_error(exc, Path(members[0]["final"])) from None
            raise
        journal.unlink()
        for m in members:
            if m["backup"]:
                Path(m["backup"]).unlink(missing_ok=True)


def _is_member_file(m: dict) -> bool:
    try:
        st = os.stat(m["final"])
    except OSError:
        return False
    return st.st_ino == m.get("ino") and st.st_dev == m.get("dev")


def _undo_replacements(members: list) -> list[Path]:
    """Put the old files of a torn ``--overwrite`` group back (or remove new files that had no predecessor)."""
    touched = []
    for m in members:
        if not isinstance(m, dict):
            continue
        try:
            if _is_member_file(m):
                if m.get("backup") and os.path.exists(m["backup"]):
                    os.replace(m["backup"], m["final"])
                else:
                    os.unlink(m["final"])
                touched.append(Path(m["final"]))
            elif m.get("backup"):
                Path(m["backup"]).unlink(missing_ok=True)
        except (OSError, TypeError, KeyError):
            pass
    return touched


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
        raise os_error(exc, path) from None
    return Path(path)


# ---------------------------------------------------------------------------------------------- memory

#: Share of the available memory one command may plan to use (the rest is for Python, torch, the OS).
