"""Fine-tuning from an existing model: ``softseg train DATASET --init MODEL_DIR --out NEW_DIR``.

Learning from corrections: an annotator corrects the model's mask (or draws their own) on a few cases, and
the model is trained further on them instead of from scratch. A fine-tuning run is an ordinary
:class:`~napari_softseg.model.training.TrainingRun` with an :class:`InitSource` attached:

* **What is inherited** from the source model (``MODEL_DIR``, read with
  :func:`~napari_softseg.model.model_io.load_model`: safetensors, never unpickled): its weights, its
  architecture (2D/3D, width, depth, norm layers, 2.5D context, slice axis), its intensity normalisation
  (z-score region or CT window), its voxel size (``target_spacing``) and its patch — a new plan would not
  fit the weights, so these options (:data:`INHERITED_OPTIONS`) are refused with ``--init``. The task,
  soft-label method, loss and weight storage are inherited unless given. The data must have the model's
  number of image channels (refused otherwise, naming the model folder).
* **What changes by default**: a learning rate a tenth of the source's (:data:`LR_FACTOR`: ``2e-4`` for a
  model planned with the default ``2e-3``), and a quarter of the default time budget
  (:data:`BUDGET_FACTOR`: 2.5 min on the CPU, 5 min on a GPU) unless ``--epochs`` or ``--max-minutes``
  is given; the batch and the steps per epoch are planned from the new data as usual.
* **Calibration**: the temperature is fitted again on the validation cases (the corrections change how
  confident the network is).
* **Provenance**: the new model's ``config.json`` records ``training.init`` (the source folder and the
  SHA-256 of its ``model.safetensors`` and ``config.json``) and ``training.before_after``.
* **Before/after** (:func:`before_after`): the source and the fine-tuned model predict the validation
  cases (held out from the gradient steps; the fine-tuned model's epoch and temperature were chosen on
  them) the way ``softseg predict`` does, at the model's voxel size, and each is scored with the QUBIQ
  score and the ECE against the mean of the raters. The CLI prints both; the viewer shows them.
* The source folder is never written: ``--out`` must be another folder (refused otherwise), and a
  resumed fine-tuning run (``--resume``) continues from its own checkpoint.

Example:
    >>> from napari_softseg.progress import drive
    >>> from napari_softseg.model.training import train
    >>> result = drive(train("corrected_cases", "models/ft", init="models/base"))  # doctest: +SKIP
    >>> result.before_after["before"]["qubiq_score"], result.before_after["after"]["qubiq_score"]  # doctest: +SKIP
    (0.81, 0.86)
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_softseg.analysis.metrics import expected_calibration_error, qubiq_score
from napari_softseg.errors import SoftsegError
from napari_softseg.model.model_io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    ModelConfig,
    load_model,
    read_config,
    save_config,
    sha256_file,
)
from napari_softseg.model.planning import (
    DEFAULT_MINUTES_CPU,
    DEFAULT_MINUTES_GPU,
    LEARNING_RATE,
    Plan,
    make_plan,
)
from napari_softseg.model.training_options import PLANNED_OPTIONS, TrainOptions
from napari_softseg.progress import Progress, drive

#: Options a fine-tuning run takes from its source model (giving one with ``--init`` is refused).
INHERITED_OPTIONS = (
    "dim", "slice_axis", "context_slices", "patch_size", "base_channels", "depth", "norm", "normalization",
    "ct_window", "target_spacing",
)
#: Options inherited unless given (they do not change the weights' shapes).
DEFAULTED_OPTIONS = ("task", "softlabel", "sigma_mm", "loss", "weights_dtype")
#: Default fine-tuning learning rate, as a share of the source model's peak learning rate.
LR_FACTOR = 0.1
#: Default fine-tuning time budget, as a share of a new run's default budget.
BUDGET_FACTOR = 0.25

__all__ = [
    "BUDGET_FACTOR", "INHERITED_OPTIONS", "InitSource", "LR_FACTOR", "before_after", "check_new_folder",
    "fine_tune_cases", "format_before_after", "new_model_folder",
]


def check_new_folder(source, out_dir) -> None:
    """Refuse to fine-tune into the source model's own folder (it is never overwritten).

    Raises:
        SoftsegError: ``out_dir`` is ``source`` (or the same folder through a link).
    """
    if source is None:
        return
    src, out = Path(source), Path(out_dir)
    if src.is_file() and src.name in (WEIGHTS_FILE, CONFIG_FILE):
        src = src.parent
    same = out.resolve() == src.resolve()
    if not same and out.exists() and src.exists():
        same = os.path.samefile(out, src)
    if same:
        raise SoftsegError("--out is the model to fine-tune from; fine-tuning never overwrites its source model: "
                           "give a new folder with --out", src)


@dataclass
class InitSource:
    """The model a fine-tuning run starts from.

    Attributes:
        path: The source model folder.
        checksums: SHA-256 of its ``model.safetensors`` and ``config.json`` when the run started.
        config: Its config.
        model: The loaded model (weights as float32); ``None`` for a resumed run (its weights come from the
            run's own checkpoint).
        defaulted: The options :meth:`resolve_options` set (not the user): marked ``"init"`` in the plan.
    """

    path: Path
    checksums: dict
    config: ModelConfig
    model: LoadedModel | None = None
    defaulted: tuple = ()

    @classmethod
    def open(cls, model_dir) -> InitSource:
        """Load the source model (refused as :func:`~napari_softseg.model.model_io.load_model` refuses)."""
        model = load_model(model_dir)
        path = Path(model.path).absolute()
        return cls(path=path, checksums=_checksums(path), config=model.config, model=model)

    @classmethod
    def from_record(cls, record: dict, state_file: Path, given=None) -> InitSource:
        """The source of a resumed run, from the ``init`` record in its training state (no weights loaded).

        Raises:
            SoftsegError: A damaged record, or ``given`` (``--init`` on resume) names another model.
        """
        try:
            path, checksums = Path(record["model"]), dict(record["checksums"])
        except (KeyError, TypeError, ValueError):
            raise SoftsegError("the training state's fine-tuning record is damaged; train again into a new folder",
                               state_file) from None
        if given is not None and Path(given).absolute().resolve() != path.resolve():
            raise SoftsegError(f"this run was fine-tuned from {path}, not {given}; resume it without --init (or "
                               f"with --init {path})", state_file.parent)
        try:
            config = read_config(path)
        except SoftsegError:
            config = ModelConfig()  # the source is gone: the run resumes; before/after says so
        return cls(path=path, checksums=checksums, config=config)

    @property
    def record(self) -> dict:
        """What the new model's config and the training state store (``training.init``)."""
        c = self.config
        return {"model": str(self.path), "checksums": dict(self.checksums), "task": c.task,
                "temperature": c.temperature, "validation_qubiq": c.validation.get("qubiq_score"),
                "software": c.software}

    # -- options and plan -------------------------------------------------------------------------------
    def inherited(self) -> dict:
        """The :data:`INHERITED_OPTIONS` values of the source model."""
        c = self.config
        arch, norm = c.architecture, c.normalization
        mode = norm.get("mode", "zscore")
        return {
            "dim": c.dim, "slice_axis": c.slice_axis, "context_slices": c.context_slices,
            "patch_size": list(c.patch_size) if c.patch_size else None,
            "base_channels": arch["base_channels"], "depth": arch["depth"], "norm": arch["norm"],
            "normalization": mode,
            "ct_window": [float(v) for v in norm["window"]] if mode == "ct" and norm.get("window") else None,
            "target_spacing": list(c.target_spacing) if c.target_spacing is not None else "native",
        }

    def resolve_options(self, options: TrainOptions, requested: dict, cuda: bool) -> TrainOptions:
        """The run's options: the source's architecture, normalisation, voxel size and patch; a lower
        learning rate and a shorter budget unless given.

        Raises:
            SoftsegError: An option of :data:`INHERITED_OPTIONS` was given.
        """
        given = [k for k in INHERITED_OPTIONS if requested.get(k) is not None]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise SoftsegError(f"{flags} cannot be set with --init: fine-tuning keeps the source model's "
                               "architecture, normalisation, voxel size and patch (train without --init for a "
                               "new plan)", self.path)
        c = self.config
        values = self.inherited()
        defaults = {"task": c.task, "softlabel": c.softlabel.get("method", "mean"), "loss": c.loss,
                    "weights_dtype": c.weights_dtype}
        if c.softlabel.get("sigma_mm") is not None:
            defaults["sigma_mm"] = float(c.softlabel["sigma_mm"])
        values.update({k: v for k, v in defaults.items() if requested.get(k) is None})
        if options.learning_rate is None:
            values["learning_rate"] = LR_FACTOR * self.source_learning_rate
        if options.epochs is None and options.max_minutes is None:
            values["max_minutes"] = BUDGET_FACTOR * (DEFAULT_MINUTES_GPU if cuda else DEFAULT_MINUTES_CPU)
        self.defaulted = tuple(values)
        return TrainOptions.from_dict({**options.to_dict(), **values})

    @property
    def source_learning_rate(self) -> float:
        """The source model's peak learning rate (the planner's default for models without a plan)."""
        try:
            return float(self.config.plan.get("learning_rate") or LEARNING_RATE)
        except (TypeError, ValueError):
            return LEARNING_RATE

    def plan(self, fp, options: TrainOptions, device_choice) -> tuple[Plan, str]:
        """The run's plan (the inherited parts fixed) and the line that says what was inherited.

        Raises:
            SoftsegError: The source model cannot run on this data (e.g. a 3D model and single slices).
        """
        overrides = {k: getattr(options, k) for k in PLANNED_OPTIONS}
        region = self.config.normalization.get("region", "all")
        try:
            plan = make_plan(fp, cuda=device_choice.is_cuda, device=device_choice.device, normalization_region=region,
                             **overrides)
        except SoftsegError as exc:
            raise SoftsegError(f"the model to fine-tune from does not fit this data: {exc.message}", self.path) from None
        for name in (*INHERITED_OPTIONS, *self.defaulted):
            if name in INHERITED_OPTIONS or plan.sources.get(name) == "option":
                plan.sources[name] = "init"
        arch = self.config.architecture
        budget = (f"{plan.epochs} epochs" if plan.max_minutes is None else f"{plan.max_minutes:g} min budget")
        line = (f"fine-tuning from {self.path}: its weights, {arch['name']} width {arch['base_channels']} depth "
                f"{arch['depth']}, normalisation, voxel size and patch; AdamW lr {plan.learning_rate:g} (its "
                f"{self.source_learning_rate:g} × {LR_FACTOR:g} unless --learning-rate), {budget}; the "
                "temperature is fitted again on the validation cases")
        return plan, line

    def check_channels(self, cases: Sequence) -> None:
        """Refuse data whose image channel count differs from the source model's.

        Raises:
            SoftsegError: Naming the source model folder.
        """
        for case in cases:
            n = int(case.image.shape[0])
            if n != self.config.image_channels:
                raise SoftsegError(f"{case.name} has {n} image channel(s) but the model to fine-tune from takes "
                                   f"{self.config.image_channels}; fine-tune a model trained on the same kind of "
                                   "images", self.path)

    def load_weights(self, network, config: ModelConfig) -> None:
        """Put the source weights into the new run's network (same architecture, checked)."""
        if self.model is None:
            raise SoftsegError("the source model's weights are not loaded", self.path)
        if config.architecture != self.config.architecture:
            raise SoftsegError(f"the planned network {config.architecture} differs from the source model's "
                               f"{self.config.architecture}", self.path)
        import torch

        with torch.no_grad():
            network.load_state_dict(self.model.network.state_dict(), strict=True)

    # -- after training ---------------------------------------------------------------------------------
    def finish(self, run) -> Generator[Progress, None, dict | None]:
        """Score the source and the fine-tuned model on the run's validation cases; record it in the new
        model's config (``training.before_after``) and warn when fine-tuning made the held-out score worse."""
        from napari_softseg.model.training_data import record_warning

        if not run.val_data:
            report = {"cases": [], "note": "no validation cases: nothing held out to compare on"}
        else:
            report = yield from before_after(self.path, run.out_dir, run.val_data, run.device_choice.device,
                                             checksums=self.checksums)
            before, after = report.get("before"), report.get("after")
            if before and after and after["qubiq_score"] < before["qubiq_score"] - 1e-4:
                record_warning(f"fine-tuning lowered the held-out QUBIQ score ({before['qubiq_score']:.4f} -> "
                               f"{after['qubiq_score']:.4f}): keep using {self.path}, or correct more cases",
                               run.warnings)
        config = read_config(run.out_dir)
        config.training["before_after"] = report
        config.training["init"] = self.record
        config.training["warnings"] = run.warnings
        save_config(run.out_dir, config)
        return report


def _checksums(path: Path) -> dict:
    return {name: sha256_file(path / name) for name in (WEIGHTS_FILE, CONFIG_FILE)}


def _score(model: LoadedModel, cases: Sequence, device: str) -> dict:
    per_case = {}
    for case in cases:
        soft = drive(_predict(model, case, device))
        masks = np.asarray(case.masks)
        per_case[case.name] = {"qubiq_score": qubiq_score(soft, masks)[0],
                               "ece": expected_calibration_error(soft, masks.mean(axis=0, dtype=np.float32))}
    return {"qubiq_score": float(np.mean([v["qubiq_score"] for v in per_case.values()])),
            "ece": float(np.mean([v["ece"] for v in per_case.values()])), "per_case": per_case}


def _predict(model: LoadedModel, case, device: str):
    from napari_softseg.model.inference import predict_array

    return predict_array(model, np.asarray(case.image, dtype=np.float32), device=device, spacing=case.spacing)


def before_after(source, tuned, cases: Sequence, device: str = "auto", *, checksums: dict | None = None
                 ) -> Generator[Progress, None, dict]:
    """Score the source and the fine-tuned model on the same held-out cases (QUBIQ score and ECE).

    Each model predicts each case as ``softseg predict`` does (its own temperature, at its voxel size) and is
    scored against the mean of the case's raters.

    Args:
        source: The model fine-tuning started from.
        tuned: The fine-tuned model.
        cases: Objects with ``name``, ``image (C, X, Y, Z)``, ``masks (R, X, Y, Z)`` and ``spacing``.
        device: Torch device.
        checksums: The source's checksums when fine-tuning started; a source that changed since (or is
            gone) is not scored, and the report says why.

    Returns:
        ``{"cases", "before", "after", "change"}``: ``before``/``after`` hold the model folder, the mean
        ``qubiq_score`` and ``ece`` and ``per_case`` figures; ``change`` the differences (after − before).
        ``before`` is ``None`` (with a ``note``) when the source could not be scored.
    """
    cases = list(cases)
    names = [c.name for c in cases]
    report: dict = {"cases": names, "before": None, "after": None}
    yield Progress("before/after", 0, 2, f"before/after: scoring the source model on {len(cases)} held-out case(s)")
    try:
        if checksums is not None and _checksums(Path(source)) != checksums:
            raise SoftsegError("changed since fine-tuning started", Path(source))
        source_model = load_model(source)
    except (SoftsegError, OSError) as exc:
        report["note"] = f"the source model was not scored: {exc}"
    else:
        report["before"] = {"model": str(source), **_score(source_model, cases, device)}
    yield Progress("before/after", 1, 2, f"before/after: scoring the fine-tuned model on {len(cases)} case(s)")
    report["after"] = {"model": str(tuned), **_score(load_model(tuned), cases, device)}
    if report["before"] is not None:
        report["change"] = {k: report["after"][k] - report["before"][k] for k in ("qubiq_score", "ece")}
    yield Progress("before/after", 2, 2, "before/after: done")
    return report


def format_before_after(report: dict | None) -> list[str]:
    """The before/after report as console lines (one summary line, then one line per case)."""
    if not report:
        return []
    if not report.get("cases") or report.get("after") is None:
        return [f"before/after: {report.get('note', 'no held-out cases')}"]
    before, after = report.get("before"), report["after"]
    n = len(report["cases"])
    if before is None:
        return [f"before/after on {n} held-out case(s): fine-tuned QUBIQ {after['qubiq_score']:.4f}, ECE "
                f"{after['ece']:.4f}; {report.get('note', '')}"]
    lines = [f"before/after on {n} held-out case(s): QUBIQ {before['qubiq_score']:.4f} -> {after['qubiq_score']:.4f} "
             f"({after['qubiq_score'] - before['qubiq_score']:+.4f}), ECE {before['ece']:.4f} -> {after['ece']:.4f} "
             f"({after['ece'] - before['ece']:+.4f})"]
    for name in report["cases"]:
        b, a = before["per_case"][name], after["per_case"][name]
        lines.append(f"  {name}: QUBIQ {b['qubiq_score']:.4f} -> {a['qubiq_score']:.4f}, "
                     f"ECE {b['ece']:.4f} -> {a['ece']:.4f}")
    return lines


def new_model_folder(source, *, stamp: str | None = None) -> Path:
    """A new folder for a model fine-tuned from ``source``: beside it (``<name>-finetuned-<time>``), or under
    the system's temporary folder when the source is the bundled model or its folder is not writable."""
    from napari_softseg.datasets.bundled import DATA_DIR

    source = Path(source).absolute()
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    parent = source.parent
    if source.resolve().is_relative_to(DATA_DIR.resolve()) or not os.access(parent, os.W_OK):
        parent = Path(tempfile.gettempdir()) / "softseg-models"
    out = parent / f"{source.name}-finetuned-{stamp}"
    n = 2
    while out.exists():
        out = parent / f"{source.name}-finetuned-{stamp}-{n}"
        n += 1
    return out


def fine_tune_cases(cases: Sequence, source, out_dir=None, **options) -> Generator[Progress, None, object]:
    """Fine-tune ``source`` on in-memory cases (the viewer's open cases with the annotator's corrections).

    Args:
        cases: :class:`~napari_softseg.model.training_data.TrainingCase` objects (or anything with ``name``,
            ``image``, ``masks``, ``spacing``).
        source: The model folder to start from.
        out_dir: The new model folder (default :func:`new_model_folder`).
        **options: :class:`~napari_softseg.model.training_options.TrainOptions` fields (``max_minutes``,
            ``device``, ...); the inherited ones are refused.

    Returns:
        The :class:`~napari_softseg.model.training.TrainResult` (``before_after`` holds the figures).
    """
    from napari_softseg.model.training import TrainingCase, train_cases

    out_dir = Path(out_dir) if out_dir is not None else new_model_folder(source)
    training = [c if isinstance(c, TrainingCase) else
                TrainingCase(c.name, c.image, np.asarray(c.masks), tuple(c.spacing)) for c in cases]
    return (yield from train_cases(training, out_dir, init=source, **options))
