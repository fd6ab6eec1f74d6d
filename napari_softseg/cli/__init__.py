"""The ``softseg`` command line: the headless twin of every viewer action.

Each command group lives in its own module exposing ``register(subparsers)``. User errors
(:class:`~napari_softseg.errors.SoftsegError`) print one line ``softseg: error: …`` and exit with code 2;
Ctrl-C exits with 130. Heavy imports (torch, napari) happen inside the commands, so ``softseg --help``
is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from napari_softseg import SOFTWARE
from napari_softseg.errors import SoftsegCancelled, SoftsegError

#: Modules under ``napari_softseg.cli`` that add subcommands, in ``--help`` order.
COMMAND_MODULES = ("data_commands", "model_commands", "operating_point_command", "demo_command")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``softseg train: error: ...``) and exit 2."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``softseg`` argument parser with every registered subcommand."""
    parser = _Parser(
        prog="softseg",
        description=(
            "Soft-label segmentation from several raters: build soft labels, train one calibrated "
            "network, predict, evaluate, and browse confidence levels in napari."
        ),
    )
    parser.add_argument("--version", action="version", version=SOFTWARE)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.register(sub)
    return parser


#: File-system errors that are the user's situation (a full disk, a read-only folder), not a bug.
_USER_OS_ERRNOS = {"ENAMETOOLONG", "EACCES", "EPERM", "ENOSPC", "EDQUOT", "EROFS", "ELOOP", "ENOENT", "ENOTDIR",
                   "EISDIR", "EEXIST", "EMFILE", "ENFILE", "EFBIG", "EXDEV", "ENOTEMPTY", "EBUSY", "ETXTBSY"}


def _prepare_streams() -> None:
    """Print any file name, even one that is not valid in the terminal's encoding (no UnicodeEncodeError)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


def _error_line(message: str) -> str:
    return f"softseg: error: {' '.join(str(message).split())}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``softseg`` console script; returns the exit code.

    User errors print one line on stderr and return 2; Ctrl-C returns 130; a closed output pipe
    (``softseg inspect DATA | head``) ends quietly with 141, like other command-line tools.
    """
    import errno
    import os

    _prepare_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except SoftsegError as exc:
        print(_error_line(str(exc)), file=sys.stderr)
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, SoftsegCancelled):
        print("softseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of our output went away (| head): stop quietly; stdout is pointed at /dev/null so the
        # interpreter's final flush does not raise again
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except MemoryError:
        print(_error_line("not enough memory for this input (try a smaller --tile-size or --batch-size, or "
                          "set SOFTSEG_MAX_MEMORY_GB so inputs that cannot fit are refused earlier)"), file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if errno.errorcode.get(exc.errno or -1) not in _USER_OS_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(_error_line(f"{where}{exc.strerror or exc}"), file=sys.stderr)
        return EXIT_USER_ERROR


EXIT_BROKEN_PIPE = 141


# ------------------------------------------------------------------ argument types (checked before any work)

def _number_type(kind, name: str, *, low=None, high=None, low_open: bool = False):
    """An argparse ``type`` that accepts finite numbers in ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    import math

    def convert(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{name} must be a {'whole number' if kind is int else 'number'}, "
                                             f"got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{name} must be {'>' if low_open else '>='} {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{name} must be at most {high}, got {text}")
        return value

    convert.__name__ = name
    return convert


def int_in(name: str, low: int | None = None, high: int | None = None):
    """Argparse type: a whole number in ``[low, high]``."""
    return _number_type(int, name, low=low, high=high)


def float_in(name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """Argparse type: a finite number in ``[low, high]`` (``low`` excluded when ``low_open``)."""
    return _number_type(float, name, low=low, high=high, low_open=low_open)


#: Limits of the numeric options: beyond them the run would not fit in any memory or makes no sense.
SEED_MAX = 2**32 - 1
SIGMA_MM_MAX = 1000.0
TILE_MIN, TILE_MAX = 16, 16384
BATCH_MAX = 4096
BASE_CHANNELS_MAX = 256
PATCH_MAX = 4096


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
