"""User-facing errors.

Every problem caused by the user's input (a missing file, masks that are not binary, an output that
already exists, ...) raises :class:`SoftsegError`. The CLI prints it as one line and exits with code 2;
the viewer shows it as a notification. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os


class SoftsegError(Exception):
    """A problem with the user's input, reported as one readable line.

    Args:
        message: What is wrong, in words a user understands.
        path: The file or folder the problem is about; it is put in front of the message.

    Example:
        >>> str(SoftsegError("masks are not binary (values found: 0, 3)", "case01/task01_seg01.nii.gz"))
        'case01/task01_seg01.nii.gz: masks are not binary (values found: 0, 3)'
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class PartialFailure(SoftsegError):
    """Some items of a batch failed; the others were done (e.g. the cases of a dataset prediction).

    Args:
        done: What was written (paths).
        failures: ``(item, reason)`` for each item that failed, in order.
        what: The noun of the items (``"case"``).
    """

    def __init__(self, done: list, failures: list[tuple[str, str]], what: str = "case"):
        self.done = list(done)
        self.failures = list(failures)
        n = len(failures)
        lines = [f"{n} {what}{'s' if n != 1 else ''} failed ({len(self.done)} written); run again to retry only "
                 f"the failed and missing {what}s:"]
        lines += [f"  {item}: {reason}" for item, reason in failures]
        super().__init__("\n".join(lines))


class SoftsegCancelled(Exception):
    """Raised inside long work when the user asked to stop (viewer cancel button or Ctrl-C)."""
