"""Progress events yielded by long-running generators (training, prediction).

Long work in napari-softseg is a generator that yields :class:`Progress` events and returns its
result (``StopIteration.value``). The CLI drives it with a tqdm bar (:func:`run_with_progress_bar`);
the viewer drives the same generator in a ``thread_worker`` with napari's progress bar and a cancel
button. Nothing here imports Qt or napari.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """One progress report.

    Attributes:
        stage: Short name of the phase, e.g. ``"epoch"``, ``"slice"``, ``"case"``.
        step: Steps done so far in this stage (1-based once a step finished).
        total: Steps in this stage, or ``None`` when unknown.
        message: A human-readable line (shown in the status bar / after the bar).
        metrics: Numbers worth showing (loss, validation score, ...).
    """

    stage: str
    step: int
    total: int | None
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def drive(gen: Generator[Progress, None, T]) -> T:
    """Run a progress generator to completion silently and return its result."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def run_with_progress_bar(
    gen: Generator[Progress, None, T], *, disable: bool = False, announce: tuple[str, ...] = ()
) -> T:
    """Drive a progress generator with one tqdm bar per stage; return the generator's result.

    Args:
        gen: A generator yielding :class:`Progress`.
        disable: Hide the bars (``--quiet``).
        announce: Stages whose messages are printed as lines (to stderr) instead of drawn as bars,
            e.g. ``("device",)`` for the device choice and its reason — printed even with ``disable``.
    """
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if event.stage in announce:
                if event.message:
                    tqdm.write(event.message, file=sys.stderr)
                continue
            bar = bars.get(event.stage)
            if bar is None or (event.total is not None and bar.total != event.total):
                if bar is not None:
                    bar.close()
                bar = bars[event.stage] = tqdm(
                    total=event.total, desc=event.stage, disable=disable, leave=True, dynamic_ncols=True
                )
            if event.step >= bar.n:
                bar.update(event.step - bar.n)  # update() keeps tqdm's rate estimate honest
            else:
                bar.reset(total=event.total)
                bar.update(event.step)
            postfix = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in event.metrics.items()}
            if postfix:
                bar.set_postfix(postfix, refresh=False)
            bar.refresh()
    finally:
        for bar in bars.values():
            bar.close()
        gen.close()
