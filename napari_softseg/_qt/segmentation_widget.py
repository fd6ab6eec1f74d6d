"""The **Soft segmentation** dock: build a soft label, predict a soft map, train a model.

The dock works on layers already in the viewer:

* **Case** — the image layer and the rater Labels layers. After a case folder or sample is opened they
  are picked automatically (from the kinds the reader records in ``metadata["softseg"]``); the user can
  change both.
* **Soft label** — a method from :data:`napari_softseg.analysis.softlabels.METHODS` (and sigma for smoothing):
  *Build soft label* adds the soft-label layer (or updates the one it made before, saying so).
* **Model and device** — the bundled demo model or a model folder; ``auto`` shows the device it picks and
  why (CUDA → MPS → CPU).
* **Predict** runs :func:`napari_softseg.model.inference.predict_array` in a worker (progress bar, *Cancel*) and
  adds the soft prediction (inferno, contrast 0–1, provenance in its metadata).
* **Train** runs :func:`napari_softseg.model.training.train` on the case in the viewer the same way (progress per
  epoch, *Cancel*) and then offers the trained model in the model list.

The option forms (soft-label method and sigma, device, training epochs and time budget) are
``magicgui.widgets`` containers embedded through ``.native`` (``soft_options``, ``device_options``,
``train_options``); their values go straight to the core calls above.

Controls are disabled while work runs. Bad input (no image layer, a rater layer of another shape, no
model, a missing device) gives a napari notification with the reason and changes no layer. Closing the
dock or the viewer while work runs cancels it; late results are dropped.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, SpinBox
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_softseg._napari import gc_freeze
from napari_softseg._napari import layers as L
from napari_softseg._napari.layer_roles import label_candidates, other_open_cases, scan_candidates
from napari_softseg._qt.device_detection import PROVISIONAL, DeviceDetector
from napari_softseg._qt.dock_column import join_column_when_docked
from napari_softseg._qt.dock_layout import dock_sections
from napari_softseg._qt.fine_tune_panel import FineTunePanel
from napari_softseg._qt.glyphs import warm_canvas_glyphs
from napari_softseg._qt.notifications import describe_exception, notify_exception, show_info
from napari_softseg._qt.plot_preload import preload_plots
from napari_softseg._qt.qt_helpers import next_turn, relax_combos, signals_blocked
from napari_softseg._qt.workers import ProgressTask, is_alive, run_progress
from napari_softseg.analysis.softlabels import METHODS, make_soft_label
from napari_softseg.datasets.bundled import demo_model_path
from napari_softseg.errors import SoftsegError
from napari_softseg.model.calibration import calibration_state
from napari_softseg.model.device import resolve_device
from napari_softseg.model.model_io import read_config
from napari_softseg.model.torch_libs import preload_torch_libraries
from napari_softseg.pipeline.array_jobs import predict_image, train_on_cases
from napari_softseg.progress import Progress

TITLE = "Soft segmentation"
BUNDLED = "bundled demo model"
FOLDER = "model folder…"
PREDICTION_NAME = "soft prediction"


class SegmentationWidget(QWidget):
    """Dock widget: soft label, predict and train on the layers of ``napari_viewer``.

    Args:
        napari_viewer: The viewer whose layers it works on.
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.task: ProgressTask | None = None
        self._user_checked: dict[str, bool] = {}
        self._models: dict[str, Path] = {}
        self._device_choice = None
        self.devices = DeviceDetector(self, self._on_devices_detected)   # torch is imported off the GUI thread
        #: Extra :class:`~napari_softseg.model.training.TrainOptions` fields for Train (e.g. ``{"depth": 2}``).
        self.train_overrides: dict[str, Any] = {}
        self._build_ui()
        self._fill_models()
        self._fill_devices()
        relax_combos(self)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        # Closing the dock/viewer mid-run: stop the work; callbacks are skipped once we are deleted.
        self.destroyed.connect(_cancel_on_destroy(self))
        join_column_when_docked(self, TITLE)
        warm_canvas_glyphs(napari_viewer)          # the canvas text the explorer shows later, ahead of time
        if gc_freeze.hold(napari_viewer, next_turn):   # short full collections while the dock is open
            self.destroyed.connect(gc_freeze.release)

    # ------------------------------------------------------------------------------------------
    # UI
    # ------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        # the actions, their progress and the status line on top; the options scroll below
        top, layout = dock_sections(self)

        case_box = QGroupBox("Case")
        case_form = QFormLayout(case_box)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The scan to segment (an Image layer)")
        case_form.addRow("Image", self.image_combo)
        self.rater_list = QListWidget()
        self.rater_list.setToolTip("Tick the Labels layers that are raters' masks")
        self.rater_list.setMaximumHeight(110)
        self.rater_list.itemChanged.connect(self._on_rater_toggled)
        case_form.addRow("Raters", self.rater_list)
        layout.addWidget(case_box)

        soft_box = QGroupBox("Soft label")
        soft_layout = QVBoxLayout(soft_box)

        # the option forms are magicgui widgets (labelled rows, typed values) embedded via ``.native``
        self.soft_options = Container(widgets=[
            ComboBox(name="method", label="Method", choices=list(METHODS),
                     tooltip="How the raters' masks become one soft label"),
            FloatSpinBox(name="sigma", label="Sigma (mm)", value=1.0, min=0.1, max=20.0, step=0.5,
                         tooltip="Gaussian smoothing width (smoothing methods only)"),
        ])
        self.soft_options.method.changed.connect(self._update_sigma_enabled)
        soft_layout.addWidget(_flat(self.soft_options))
        self.soft_button = QPushButton("Build soft label")
        self.soft_button.clicked.connect(lambda *_: self.build_soft_label())
        soft_layout.addWidget(self.soft_button)
        layout.addWidget(soft_box)

        model_box = QGroupBox("Model and device")
        model_form = QFormLayout(model_box)
        row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.currentTextChanged.connect(self._on_model_changed)
        row.addWidget(self.model_combo, 1)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(lambda *_: self._browse_model())
        row.addWidget(self.browse_button)
        model_form.addRow("Model", row)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        model_form.addRow(self.model_info)
        self.device_options = Container(widgets=[
            ComboBox(name="device", label="Device", choices=["auto"],
                     tooltip="auto picks CUDA, then MPS, then the CPU"),
        ])
        self.device_options.device.changed.connect(self._on_device_changed)
        model_form.addRow(_flat(self.device_options))
        self.device_label = QLabel("")
        self.device_label.setWordWrap(True)
        model_form.addRow(self.device_label)
        layout.addWidget(model_box)

        train_box = QGroupBox("Train on this case's raters")
        train_layout = QVBoxLayout(train_box)
        self.train_options = Container(widgets=[
            SpinBox(name="epochs", label="Epochs", value=20, min=1, max=1000,
                    tooltip="Passes over the case (training stops at whichever budget ends first)"),
            FloatSpinBox(name="max_minutes", label="Time budget (min)", value=10.0, min=0.1, max=600.0,
                         step=1.0, tooltip="Wall-clock budget; the model so far is kept when it runs out"),
        ])
        train_layout.addWidget(_flat(self.train_options))
        layout.addWidget(train_box)
        self.fine_tune_panel = FineTunePanel(self)  # "Fine-tune on open cases" (learning from corrections)
        layout.addWidget(self.fine_tune_panel)

        buttons = QHBoxLayout()
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(lambda *_: self.predict())
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(lambda *_: self.train())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(lambda *_: self.cancel())
        self.cancel_button.setEnabled(False)
        for b in (self.predict_button, self.train_button, self.cancel_button):
            buttons.addWidget(b)
        top.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        top.addWidget(self.progress_bar)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        top.addWidget(self.status)
        layout.addStretch(1)
        self._inputs = [
            self.image_combo, self.rater_list, self.soft_options.native, self.soft_button,
            self.model_combo, self.browse_button, self.device_options.native, self.train_options.native,
            self.predict_button, self.train_button, *self.fine_tune_panel.inputs(),
        ]
        self._update_sigma_enabled()

    def _update_sigma_enabled(self, *_: Any) -> None:
        self.soft_options.sigma.enabled = self.task is None and "smooth" in self.soft_options.method.value

    # ------------------------------------------------------------------------------------------
    # Layers: auto-detection
    # ------------------------------------------------------------------------------------------
    def _image_layers(self) -> list[Image]:
        return scan_candidates(self.viewer)

    def _label_layers(self) -> list[Labels]:
        return label_candidates(self.viewer)

    def _refresh_layers(self, event: Any = None) -> None:
        """Refill the layer pickers; pre-select the case image and its raters."""
        if not is_alive(self):
            return
        current = self.image_combo.currentText()
        images = self._image_layers()
        names = [layer.name for layer in images]
        with signals_blocked(self.image_combo):
            self.image_combo.clear()
            self.image_combo.addItems(names)
            if current in names:
                self.image_combo.setCurrentText(current)
            else:
                tagged = [layer.name for layer in images if L.kind_of(layer) == "image"]
                if tagged:
                    self.image_combo.setCurrentText(tagged[-1])

        image = self.image_layer()
        image_geometry = _geometry_or_none(image)
        with signals_blocked(self.rater_list):
            self.rater_list.clear()
            # a case with several tasks: by default only the raters of the image's task (or the first task)
            task = (L.task_of(image) if image is not None else None) or L.default_task(self._label_layers())
            case = L.provenance_of(image).get("case") if image is not None else None  # several cases open: its own
            for layer in self._label_layers():
                item = QListWidgetItem(layer.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                if layer.name in self._user_checked:
                    checked = self._user_checked[layer.name]
                else:
                    geometry = _geometry_or_none(layer)
                    checked = (
                        L.kind_of(layer) == "rater"
                        and (image_geometry is None or geometry is None or geometry.same_as(image_geometry))
                        and (task is None or L.task_of(layer) in (None, task))
                        and (case is None or L.provenance_of(layer).get("case") in (None, case))
                    )
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
                self.rater_list.addItem(item)

    def _on_rater_toggled(self, item: QListWidgetItem) -> None:
        self._user_checked[item.text()] = item.checkState() == Qt.CheckState.Checked

    def image_layer(self) -> Image | None:
        """The selected image layer (or None)."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def rater_layers(self) -> list[Labels]:
        """The ticked rater layers, in list order."""
        out = []
        for i in range(self.rater_list.count()):
            item = self.rater_list.item(i)
            if item.checkState() == Qt.CheckState.Checked and item.text() in self.viewer.layers:
                out.append(self.viewer.layers[item.text()])
        return out

    def set_raters(self, names: list[str]) -> None:
        """Tick exactly the layers named ``names`` (for scripts and tests)."""
        for i in range(self.rater_list.count()):
            item = self.rater_list.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    # ------------------------------------------------------------------------------------------
    # Models and devices
    # ------------------------------------------------------------------------------------------
    def _fill_models(self) -> None:
        with signals_blocked(self.model_combo):
            self.model_combo.clear()
            self._models.clear()
            try:
                self._models[BUNDLED] = demo_model_path()
            except SoftsegError:
                pass  # no bundled model in this install: the user picks a folder
            self.model_combo.addItems(list(self._models))
            self.model_combo.addItem(FOLDER)
        self._on_model_changed(self.model_combo.currentText())

    def add_model(self, path: str | os.PathLike, label: str | None = None, select: bool = True) -> str:
        """Offer a model folder in the model list (and select it); returns its label."""
        path = Path(path)
        label = label or f"{path.name} ({path.parent})"
        if label not in self._models:
            self._models[label] = path
            self.model_combo.insertItem(self.model_combo.count() - 1, label)
        if select:
            self.model_combo.setCurrentText(label)
        return label

    def model_path(self) -> Path | None:
        """The chosen model folder, or None when none is chosen."""
        return self._models.get(self.model_combo.currentText())

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a napari-softseg model folder")
        if folder:
            self.add_model(folder)

    def _on_model_changed(self, label: str) -> None:
        path = self._models.get(label)
        if path is None:
            self.model_info.setText("No model chosen: Browse… for a folder with model.safetensors + config.json.")
            return
        try:

            config = read_config(path)
        except SoftsegError as exc:
            self.model_info.setText(f"⚠ {exc}")
            return

        method = (config.softlabel or {}).get("method", "?")
        self.model_info.setText(
            f"task {config.task} · {config.dim}D · {config.image_channels} ch · '{method}' soft labels · "
            f"{calibration_state(config)}"
        )

    def _fill_devices(self) -> None:
        combo = self.device_options.device
        with combo.changed.blocked():
            combo.choices = PROVISIONAL
            combo.value = combo.choices[0]
        self._on_device_changed(combo.value)
        self.devices.start()

    def _on_devices_detected(self) -> None:
        preload_plots()  # matplotlib off the GUI thread (a no-op when the detection's worker imported it)
        gc_freeze.freeze_long_lived()    # torch's objects and the rest: out of later full collections
        combo = self.device_options.device
        current = combo.value
        with combo.changed.blocked():
            combo.choices = self.devices.names
            combo.value = current if current in self.devices.names else combo.choices[0]
        self._on_device_changed(combo.value)

    def _on_device_changed(self, name: str) -> None:
        if name == "auto":               # known once the devices are detected (torch: in a worker)
            self._device_choice = self.devices.auto
            auto = self._device_choice
            self.device_label.setText("→ detecting devices …" if auto is None else f"→ {auto.device}: {auto.reason}")
            return
        try:
            self._device_choice = resolve_device(name)
        except SoftsegError as exc:
            self._device_choice = None
            self.device_label.setText(f"⚠ {exc}")
            return
        self.device_label.setText(f"→ {self._device_choice.device}: {self._device_choice.reason}")

    # ------------------------------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------------------------------
    def _case(self):
        """CaseData of the selected layers (raises SoftsegError with the reason)."""
        image = self.image_layer()
        if image is None:
            raise SoftsegError("no image layer: open a case (File ▸ Open Folder…) or pick an Image layer")
        return L.case_from_layers(image, self.rater_layers())

    def build_soft_label(self) -> Image | None:
        """Build the soft label from the ticked raters with the chosen method; returns its layer."""

        try:
            case = self._case()
            if not case.masks.shape[0]:
                raise SoftsegError("no rater layers ticked: tick the raters' Labels layers")
            method, sigma_mm = self.soft_options.method.value, self.soft_options.sigma.value
            soft = make_soft_label(
                case.masks, method, spacing=case.spacing, sigma_mm=sigma_mm,
                rater_names=case.rater_names,
            )
        except SoftsegError as exc:
            self._fail(exc, "Soft label")
            return None
        geometry = L.Geometry(case.affine, case.spatial_shape)
        prov = {k: v for k, v in soft.provenance.items() if k != "software"}
        data, kwargs, _ = L.soft_map_layer(
            soft.data, geometry, name=f"soft label ({soft.provenance.get('method', method)})", kind="soft_label",
            source=case.image_path, case=case.name, **prov,
        )
        layer = self._put_layer(data, kwargs)
        self._report(f"{layer.name}: from {len(case.rater_names)} raters ({', '.join(case.rater_names)})")
        return layer

    def check_device(self) -> None:
        """Raise when the chosen device is not available (``auto`` while the devices are being detected is)."""
        if self._device_choice is None and not self.devices.pending:
            raise SoftsegError(f"device {self.device_options.device.value!r} is not available")

    def device_name(self) -> str:
        """The chosen device for a job: its name, or ``auto`` while the devices are being detected."""
        return "auto" if self._device_choice is None else self._device_choice.device

    def predict(self) -> ProgressTask | None:
        """Start predicting the selected image with the chosen model; returns the running task."""
        if self.task is not None:
            return None
        try:
            image_layer = self.image_layer()
            if image_layer is None:
                raise SoftsegError("no image layer: open a case or pick an Image layer to predict")
            model_path = self.model_path()
            if model_path is None:
                raise SoftsegError("no model chosen: pick the bundled model or Browse… for a model folder")
            self.check_device()
            image, geometry = L.image_from_layer(image_layer)
        except SoftsegError as exc:
            self._fail(exc, "Predict")
            return None
        chosen = {"device": self._device_choice}
        source = L.provenance_of(image_layer).get("source")
        case = L.provenance_of(image_layer).get("case")
        image_name = image_layer.name

        def job():
            if chosen["device"] is None:             # "auto" while the devices are being detected
                chosen["device"] = resolve_device("auto")
            device = chosen["device"]
            soft, info = yield from predict_image(model_path, image, device.device, source, geometry.spacing)
            data, kwargs, _ = L.soft_map_layer(
                soft, geometry, name=PREDICTION_NAME, kind="prediction", source=source, image_layer=image_name,
                device=device.device, device_reason=device.reason, case=case, **info,
            )
            # napari's layer model (Qt-free: thumbnail, contrast limits, transforms) is made here in the
            # worker, as a background open makes its layers: the GUI thread only inserts it
            return Image(data, **kwargs), kwargs, info

        def done(result: tuple[Image, dict, dict]) -> None:
            made, kwargs, info = result
            device = chosen["device"]
            layer = self._put_layer(made.data, kwargs, made=made)
            notes = "; ".join(info.get("domain_notes", []))
            self._report(f"{layer.name}: predicted on {device.device} with {Path(info['model']).name}"
                         + (f" — {notes}" if notes else ""))

        return self._start(job(), "Predict", done)

    def training_cases(self) -> tuple[list, list[str]]:
        """The cases Train learns from: the selected image with its ticked raters, then every other open case.

        Other open cases are found by :func:`~napari_softseg._napari.layer_roles.other_open_cases`. Returns
        the :class:`~napari_softseg.io.case.CaseData` list and one line per open case left out, with the reason.

        Raises:
            SoftsegError: No image selected, or no rater ticked.
        """
        first = self._case()
        if first.masks.shape[0] < 1:
            raise SoftsegError("no rater layers ticked: training needs the raters' masks")
        cases, skipped = other_open_cases(self.viewer, self.image_layer(), self.rater_layers(), first)
        return [first, *cases], skipped

    def train(self, out_dir: str | os.PathLike | None = None) -> ProgressTask | None:
        """Start training on the open cases (:meth:`training_cases`); the result is offered as a model.

        Args:
            out_dir: Where to write the model (default: a new folder under the system's temp folder).
        """
        if self.task is not None:
            return None
        try:
            cases, skipped = self.training_cases()
            case = cases[0]
            self.check_device()
        except SoftsegError as exc:
            self._fail(exc, "Train")
            return None
        if out_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out_dir = Path(tempfile.gettempdir()) / "softseg-models" / f"{case.name}-{stamp}".replace(" ", "_")
        out_dir = Path(out_dir)
        options = {
            "softlabel": self.soft_options.method.value, "sigma_mm": self.soft_options.sigma.value,
            **self.train_options.asdict(),
            "device": self.device_name(), **self.train_overrides,
        }
        job = train_on_cases(cases, out_dir, **options)
        learned = (f"{len(cases)} case(s) in memory ({', '.join(c.name for c in cases)})"
                   + "".join(f"; left out {line}" for line in skipped))

        def done(model_dir: Path) -> None:
            label = self.add_model(model_dir, label=f"trained: {Path(model_dir).name}")
            self._report(f"Trained on {learned}; model saved in {model_dir}; selected as '{label}' — press Predict")
            show_info(f"Train: model saved in {model_dir}")

        def cancelled() -> None:
            # training checkpoints every epoch: a stopped run keeps its best model so far; offer it
            if (out_dir / "model.safetensors").is_file() and (out_dir / "config.json").is_file():
                label = self.add_model(out_dir, label=f"stopped early: {out_dir.name}")
                self._report(f"Train: stopped; the best model so far is in {out_dir} and selected as '{label}' "
                             f"(continue with: softseg train --out {out_dir} --resume)")
            else:
                self._report("Train: cancelled before the first checkpoint; nothing kept")

        task = self._start(job, "Train", done, on_cancelled=cancelled)
        if task is not None:
            self._report(f"Train: starting on {learned}…")
        return task

    def cancel(self) -> None:
        """Stop the running work after its current step."""
        if self.task is not None:
            self.task.cancel()
            self._report("cancelling…")

    # ------------------------------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------------------------------
    def _start(self, gen, description: str, on_returned, on_cancelled=None) -> ProgressTask:
        self._set_running(True)
        self._report(f"{description}: starting…")
        self.task = run_progress(
            _torch_libraries_first(gen), description=description, on_progress=self._on_progress, on_returned=on_returned,
            on_error=lambda exc: self._fail(exc, description),
            on_cancelled=on_cancelled or (lambda: self._report(f"{description}: cancelled; no layer changed")),
            on_finished=lambda: self._set_running(False), owner=self,
        )
        return self.task

    def _on_progress(self, event: Progress) -> None:
        if event.total:
            self.progress_bar.setRange(0, int(event.total))
            self.progress_bar.setValue(int(event.step))
        else:
            self.progress_bar.setRange(0, 0)  # busy
        metrics = "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.metrics.items())
        self._report(" ".join(x for x in (event.message or f"{event.stage} {event.step}", metrics) if x))

    def _set_running(self, running: bool) -> None:
        if not running:
            self.task = None
        for widget in self._inputs:
            widget.setEnabled(not running)
        self._update_sigma_enabled()
        self.cancel_button.setEnabled(running)
        self.progress_bar.setVisible(running)

    def _put_layer(self, data: np.ndarray, kwargs: dict, made: Image | None = None) -> Image:
        """Add an image layer (``made``, if its model was made already), or replace the data of the one this
        dock made under that name."""
        name = kwargs["name"]
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if isinstance(layer, Image) and L.kind_of(layer) == L.softseg_meta(kwargs["metadata"]).get("kind"):
                layer.data = data
                layer.affine = kwargs["affine"]
                layer.metadata = kwargs["metadata"]
                layer.contrast_limits = kwargs["contrast_limits"]
                show_info(f"Updated layer '{name}'")
                return layer
        return self.viewer.add_layer(made) if made is not None else self.viewer.add_image(data, **kwargs)

    def _fail(self, exc: BaseException, action: str) -> None:
        """Show why ``action`` failed: in the dock's status line first, then as a notification."""
        self._report(describe_exception(exc, action=action))
        notify_exception(exc, action=action)

    def _report(self, text: str) -> None:
        if is_alive(self):
            self.status.setText(text)


def _torch_libraries_first(gen):
    """Run ``gen`` in the worker after loading torch's libraries with the GIL released: a job started before
    the device detection has imported torch (Predict pressed at once) would import it plainly and stall the
    GUI thread ~0.2 s (see :mod:`napari_softseg.model.torch_libs`; once per process, a no-op after)."""
    preload_torch_libraries()
    return (yield from gen)


def _flat(container: Container) -> QWidget:
    """The native Qt widget of a magicgui form, without its own margins (it sits inside a group box)."""
    container.margins = (0, 0, 0, 0)
    return container.native


def _geometry_or_none(layer) -> L.Geometry | None:
    if layer is None:
        return None
    try:
        return L.geometry_of(layer)
    except SoftsegError:
        return None


def _cancel_on_destroy(widget: SegmentationWidget):
    """A slot that cancels the widget's task without touching the (already deleted) widget."""
    holder = {"widget": widget}

    def cancel(*_: Any) -> None:
        w = holder.pop("widget", None)
        task = getattr(w, "task", None) if w is not None else None
        if task is not None:
            task.cancel()

    return cancel
