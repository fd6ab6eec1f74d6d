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

from .. import __version__
from napari_softseg.errors import SoftsegCancelled, SoftsegError

#: Modules under ``napari_softseg.cli`` that add subcommands, in ``--help`` order.
COMMAND_MODULES = ("data_commands", "model_commands", "demo_command")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The ``softseg`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="softseg",
        description=(
            "Soft-label segmentation from several raters: build soft labels, train one calibrated "
            "network, predict, evaluate, and browse confidence levels in napari."
        ),
    )
    parser.add_argument("--version", action="version", version=f"napari-softseg {__version__}")
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``softseg`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SoftsegError as exc:
        print(f"softseg: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, SoftsegCancelled):
        print("softseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
