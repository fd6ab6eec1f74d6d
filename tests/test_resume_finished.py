"""Resuming a training run that already finished (issue 17): a clean end or an extension, never a traceback.

The states a run can be resumed from: interrupted mid-run (tests/test_training.py resumes it to the same
weights) and finished with a fixed number of epochs (here: nothing to do, or more with ``--epochs``).
"""

from __future__ import annotations

import hashlib

import pytest

from napari_softseg.model.training import train
from napari_softseg.progress import Progress

TINY = dict(base_channels=4, depth=2, batch_size=4, device="cpu", steps_per_epoch=2)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(gen) -> tuple[list[Progress], object]:
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


@pytest.fixture(scope="module")
def finished_run(synthetic_2d_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "m"
    _, result = _run(train(synthetic_2d_dataset, out, epochs=1, **TINY))
    assert result.epochs_done == 1
    return out


def test_resuming_a_finished_run_ends_cleanly_with_nothing_to_do(finished_run):
    before = _digest(finished_run / "model.safetensors")
    events, result = _run(train(None, finished_run, resume=True))  # raised ZeroDivisionError in fit
    assert result.epochs_done == 1 and result.steps == TINY["steps_per_epoch"]
    assert not [e for e in events if e.stage == "batch"], "no step may be taken"
    said = " ".join(e.message for e in events if e.stage == "plan")
    assert "complete" in said and "--epochs" in said
    assert _digest(finished_run / "model.safetensors") == before


def test_a_finished_run_resumed_with_more_epochs_extends_it(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(finished_run, copy)
    events, result = _run(train(None, copy, resume=True, epochs=2))
    assert result.epochs_done == 2 and result.steps == 2 * TINY["steps_per_epoch"]
    assert sum(e.stage == "batch" for e in events) == TINY["steps_per_epoch"]
