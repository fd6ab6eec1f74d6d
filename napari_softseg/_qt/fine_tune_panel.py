"""The *Learn from corrections* section of the Soft segmentation dock: **Fine-tune on open cases**.

After an annotator corrects the model's mask (a thresholded ``mask`` layer edited with the brush) or draws
their own annotation (Rater comparison ▸ *Add my annotation layer*), this section fine-tunes the dock's
current model on the open cases:

* **Cases** — the selected image with its ticked raters *plus* the chosen corrections layer (learned as one
  more rater; alone when no rater is ticked), and every other open case with its raters (as *Train* does:
  :func:`~napari_softseg._napari.layer_roles.other_open_cases`). Arrays are taken from the layers, so edits
  made in the viewer are learned; nothing is written but the new model folder.
* **Run** — :func:`napari_softseg.model.fine_tune.fine_tune_cases` (the core, Qt-free) starts from the
  current model's weights with its architecture, normalisation and voxel size, a tenth of its learning rate
  and the time budget set here; it runs in the dock's worker (progress bar, *Cancel*, controls disabled).
  A share of the cases (of a single volume: its last slab) is held out for validation and calibration.
* **Result** — the new model folder is written beside the source (``<name>-finetuned-<time>``; under the
  temporary folder for the bundled model), never over it; it becomes the dock's current model, and the
  before/after table (QUBIQ score and ECE of the source and the fine-tuned model on the held-out cases)
  is shown here.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from magicgui.widgets import Container, FloatSpinBox
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel, QPushButton

from napari_softseg._napari import layers as L
from napari_softseg._napari.layer_roles import label_candidates, other_open_cases, same_layer
from napari_softseg._qt.notifications import show_info
from napari_softseg._qt.qt_helpers import signals_blocked
from napari_softseg._qt.workers import ProgressTask, is_alive
from napari_softseg.errors import SoftsegError
from napari_softseg.model.fine_tune import BUDGET_FACTOR, fine_tune_cases, format_before_after, new_model_folder
from napari_softseg.model.planning import DEFAULT_MINUTES_CPU

ACTION = "Fine-tune"
NONE = "(no corrections layer)"
#: Layer kinds that hold an annotator's own mask: drawn (``annotation``) or a corrected threshold (``mask``).
CORRECTION_KINDS = ("annotation", "mask")


class FineTunePanel(QGroupBox):
    """The section's widgets and its action; ``dock`` is the :class:`SegmentationWidget` it sits in.

    Attributes:
        overrides: Extra :class:`~napari_softseg.model.training_options.TrainOptions` fields (``epochs``,
            ``steps_per_epoch``, ...) for scripts and tests; the inherited ones are refused by the core.
        last_report: The before/after figures of the last fine-tuning run (``None`` before one finished).
    """

    def __init__(self, dock):
        super().__init__("Learn from corrections")
        self.dock = dock
        self.overrides: dict[str, Any] = {}
        self.last_report: dict | None = None
        form = QFormLayout(self)
        self.corrections_combo = QComboBox()
        self.corrections_combo.setToolTip("Your corrected or drawn mask (a Labels layer on the selected image); "
                                          "it is learned as one more rater")
        form.addRow("Corrections", self.corrections_combo)
        self.options = Container(widgets=[
            FloatSpinBox(name="max_minutes", label="Time budget (min)", value=BUDGET_FACTOR * DEFAULT_MINUTES_CPU,
                         min=0.1, max=600.0, step=0.5,
                         tooltip="Fine-tuning budget (a quarter of a new training's default)"),
        ])
        self.options.margins = (0, 0, 0, 0)
        form.addRow(self.options.native)
        self.button = QPushButton("Fine-tune on open cases")
        self.button.setToolTip("Start from the current model, train on the open cases with your corrections, "
                               "and compare both models on held-out cases")
        self.button.clicked.connect(lambda *_: self.fine_tune())
        form.addRow(self.button)
        self.report_label = QLabel("")
        self.report_label.setWordWrap(True)
        form.addRow(self.report_label)
        events = dock.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self.refresh)
        self.refresh()

    def inputs(self) -> list:
        """The widgets disabled while the dock runs work."""
        return [self.corrections_combo, self.options.native, self.button]

    # -- the corrections layer --------------------------------------------------------------------------
    def refresh(self, event: Any = None) -> None:
        """Refill the corrections list: annotation and mask layers first (the first one chosen)."""
        if not is_alive(self):
            return
        current = self.corrections_combo.currentText()
        layers = sorted(label_candidates(self.dock.viewer), key=lambda layer: L.kind_of(layer) not in CORRECTION_KINDS)
        names = [layer.name for layer in layers]
        with signals_blocked(self.corrections_combo):
            self.corrections_combo.clear()
            self.corrections_combo.addItems([NONE, *names])
            if current in names:
                self.corrections_combo.setCurrentText(current)
            elif layers and L.kind_of(layers[0]) in CORRECTION_KINDS:
                self.corrections_combo.setCurrentText(names[0])

    def corrections_layer(self):
        """The chosen corrections layer, or ``None``."""
        name = self.corrections_combo.currentText()
        layers = self.dock.viewer.layers
        return layers[name] if name != NONE and name in layers else None

    def cases(self) -> tuple[list, list[str]]:
        """The cases to fine-tune on: the selected image with its raters and the corrections, then the other
        open cases; and one line per open case left out.

        Raises:
            SoftsegError: No image, or nothing to learn from (no corrections layer and no rater ticked).
        """
        image = self.dock.image_layer()
        if image is None:
            raise SoftsegError("no image layer: open a case or pick an Image layer")
        raters = self.dock.rater_layers()
        corrections = self.corrections_layer()
        layers = list(raters)
        if corrections is not None and not any(same_layer(corrections, r) for r in raters):
            layers.append(corrections)
        if not layers:
            raise SoftsegError("nothing to learn from: pick the Labels layer with your corrections (or tick the "
                               "raters' layers)")
        first = L.case_from_layers(image, layers)
        if not first.masks.any():
            raise SoftsegError("the corrections and raters are empty: draw the region to learn first")
        if not raters:
            return [first], []
        others, skipped = other_open_cases(self.dock.viewer, image, raters, first)
        return [first, *others], skipped

    # -- the action -------------------------------------------------------------------------------------
    def fine_tune(self, out_dir: str | os.PathLike | None = None) -> ProgressTask | None:
        """Start fine-tuning the dock's current model on the open cases; returns the running task.

        Args:
            out_dir: The new model folder (default: beside the source, see
                :func:`~napari_softseg.model.fine_tune.new_model_folder`).
        """
        dock = self.dock
        if dock.task is not None:
            return None
        try:
            source = dock.model_path()
            if source is None:
                raise SoftsegError("no model chosen: pick the model to fine-tune (the bundled one or Browse…)")
            dock.check_device()
            cases, skipped = self.cases()
        except SoftsegError as exc:
            dock._fail(exc, ACTION)
            return None
        out_dir = Path(out_dir) if out_dir is not None else new_model_folder(source)
        options = {"device": dock.device_name(), **self.options.asdict(), **self.overrides}
        learned = (f"{len(cases)} case(s) ({', '.join(c.name for c in cases)})"
                   + "".join(f"; left out {line}" for line in skipped))

        def done(result) -> None:
            self.show_report(result.before_after)
            label = dock.add_model(result.model_dir, label=f"fine-tuned: {Path(result.model_dir).name}")
            dock._report(f"Fine-tuned {Path(source).name} on {learned}; model saved in {result.model_dir} and "
                         f"selected as '{label}'")
            show_info(f"Fine-tune: model saved in {result.model_dir}")

        def cancelled() -> None:
            if (out_dir / "model.safetensors").is_file():
                dock._report(f"Fine-tune: stopped; the best model so far is in {out_dir} (continue with: softseg "
                             f"train --out {out_dir} --resume); the current model is unchanged")
            else:
                dock._report("Fine-tune: cancelled before the first checkpoint; nothing kept")

        self.report_label.setText("")
        task = dock._start(fine_tune_cases(cases, source, out_dir, **options), ACTION, done, on_cancelled=cancelled)
        dock._report(f"Fine-tune: starting from {Path(source).name} on {learned}…")
        return task

    def show_report(self, report: dict | None) -> None:
        """Show the before/after figures as a small table (and keep them in :attr:`last_report`)."""
        self.last_report = report
        if not report or not report.get("cases") or report.get("after") is None:
            lines = format_before_after(report) or ["before/after: no held-out cases"]
            self.report_label.setText(html.escape(lines[0]))
            return
        before, after = report.get("before"), report["after"]
        rows = []
        for key, name in (("qubiq_score", "QUBIQ score ↑"), ("ece", "ECE ↓")):
            b = f"{before[key]:.3f}" if before else "–"
            change = f"{after[key] - before[key]:+.3f}" if before else ""
            rows.append(f"<tr><td>{name}</td><td align='right'>{b}</td><td align='right'>{after[key]:.3f}</td>"
                        f"<td align='right'>{change}</td></tr>")
        cases = ", ".join(html.escape(str(c)) for c in report["cases"])
        note = f"<br>{html.escape(report['note'])}" if report.get("note") else ""
        self.report_label.setText(
            f"On {len(report['cases'])} held-out case(s) ({cases}):"
            "<table cellspacing='4'><tr><th></th><th>before</th><th>after</th><th>change</th></tr>"
            + "".join(rows) + f"</table>{note}")
