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


class SoftsegCancelled(Exception):
    """Raised inside long work when the user asked to stop (viewer cancel button or Ctrl-C)."""
