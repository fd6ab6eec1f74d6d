"""Show problems and results to the user as napari notifications.

Widgets never let an exception escape into Qt: a :class:`~napari_softseg.errors.SoftsegError` (bad input)
is shown as its one-line message; anything else is a bug, shown as "unexpected error" and logged with
its traceback.
"""

from __future__ import annotations

import logging

from napari.utils.notifications import show_error, show_info, show_warning

from napari_softseg.errors import SoftsegCancelled, SoftsegError

logger = logging.getLogger(__name__)

__all__ = ["describe_exception", "notify_exception", "show_error", "show_info", "show_warning"]


def describe_exception(exc: BaseException, *, action: str = "") -> str:
    """The one-line text shown for ``exc`` (see :func:`notify_exception`); shows nothing."""
    prefix = f"{action}: " if action else ""
    if isinstance(exc, SoftsegCancelled):
        return f"{prefix}cancelled"
    if isinstance(exc, SoftsegError):
        return f"{prefix}{exc}"
    return f"{prefix}unexpected error: {type(exc).__name__}: {exc}"


def notify_exception(exc: BaseException, *, action: str = "") -> str:
    """Show ``exc`` as a napari notification and return the text shown.

    Args:
        exc: The exception raised by the work.
        action: What was being done, e.g. ``"Predict"``; put in front of the message.

    Returns:
        The message that was shown (handy for status labels and tests).
    """
    message = describe_exception(exc, action=action)
    if isinstance(exc, SoftsegCancelled):
        show_info(message)
    elif isinstance(exc, SoftsegError):
        show_error(message)
    else:
        logger.error("%s", message, exc_info=(type(exc), exc, exc.__traceback__))
        show_error(message)
    return message
