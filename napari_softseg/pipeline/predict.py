"""Predict and record: image files, case folders and datasets to NIfTI soft maps with their sidecars.

:func:`predict_path` is the one job behind ``softseg predict`` (and its torchrun shards): it checks every
output and header before any work, predicts with :func:`~napari_softseg.model.inference.predict_array`,
commits each map atomically, keeps a run record so an interrupted dataset run resumes, and writes each
map's sidecar with the provenance of what ran (the device after any out-of-memory fallback included).

Example:
    >>> from napari_softseg.progress import drive
    >>> written = drive(predict_path("MODEL_DIR", "case01", "pred.nii.gz"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_softseg.errors import PartialFailure, SoftsegError
from napari_softseg.io.dataset import discover, load_image
from napari_softseg.io.dicom import is_dicom_source
from napari_softseg.io.jsonio import read_json_object, write_json
from napari_softseg.io.memory import check_memory
from napari_softseg.io.nifti import is_nifti_path, read_header, save_volume
from napari_softseg.io.sidecar import check_sidecar_writable, write_sidecar
from napari_softseg.model.device import DeviceChoice, resolve_device
from napari_softseg.model.distributed import Distributed
from napari_softseg.model.domain import model_domain_notes, spacing_record
from napari_softseg.model.inference import DEFAULT_BATCH_SIZE, DEFAULT_TILE_SIZE, predict_array
from napari_softseg.model.model_io import LoadedModel, load_model
from napari_softseg.pipeline.point_store import get_operating_point, mask_path_for, point_summary, write_point_mask
from napari_softseg.pipeline.provenance import DeviceTracker, model_checksums, prediction_provenance
from napari_softseg.progress import Progress


def output_name(task: int) -> str:
    """File name of a prediction written into a case's mirror folder: ``prediction_task01.nii.gz``."""
    return f"prediction_task{task:02d}.nii.gz"


def _jobs(model: LoadedModel, input_path: Path, output: Path, task: int | None) -> list[tuple[Path, Path]]:
    """(image, output) pairs for an image file, a case folder or a dataset folder."""

    model_task = model.config.task
    if task is not None and task != model_task:
        raise SoftsegError(f"the model was trained for task {model_task}, not task {task}", model.path)
    if input_path.is_file():
        if not is_nifti_path(output):
            raise SoftsegError("output for an image file must be a .nii or .nii.gz file name", output)
        return [(input_path, output)]
    dataset = discover(input_path)
    for case in dataset.cases:
        if case.tasks and model_task not in case.tasks:
            found = ", ".join(str(t) for t in sorted(case.tasks))
            raise SoftsegError(
                f"the model was trained for task {model_task}, but this case has masks for task(s) {found} only "
                "(wrong model for this data?)",
                case.path,
            )
    single = len(dataset.cases) == 1 and dataset.cases[0].path.resolve() == input_path.resolve()
    if single:
        if not is_nifti_path(output):
            raise SoftsegError("output for a case folder must be a .nii or .nii.gz file name", output)
        return [(dataset.cases[0].image_path, output)]
    if is_nifti_path(output):
        raise SoftsegError("output for a dataset folder must be a folder (it will mirror the cases)", output)
    return [(case.image_path, output / case.name / output_name(model_task)) for case in dataset.cases]


def predict_path(
    model: LoadedModel | str | os.PathLike,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    device: str | DeviceChoice = "auto",
    tile_size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    overwrite: bool = False,
    task: int | None = None,
    dist: Distributed | None = None,
    operating_point: str | None = None,
) -> Generator[Progress, None, list[Path]]:
    """Predict an image file, a case folder or every case of a dataset, and write the soft maps.

    A file or case folder gives one NIfTI file at ``output``; a dataset folder gives ``output`` as a
    folder mirroring the cases (``OUT/<case>/prediction_task01.nii.gz``). Each map is float32 with the
    input image's affine and header. All output paths are checked before any work starts, so an existing
    file (without ``overwrite``) stops the run with nothing written.

    Under ``torchrun`` (``dist`` with several processes) each rank predicts its share of the cases
    (:meth:`~napari_softseg.model.distributed.Distributed.shard`: cases ``rank``, ``rank + N``, … of the
    sorted list, the same for every rerun); every rank checks all output paths first, so all refuse or all
    go ahead. The files written by all ranks are exchanged as counts (one number per case, summed over the
    ranks) and every rank returns the full list.

    Args:
        model: A loaded model or a model folder.
        input_path: Image file, case folder or dataset folder.
        output: Output file or folder (see above).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or a resolved choice.
        tile_size: Longest slice side done in one piece.
        batch_size: Slices per forward pass.
        overwrite: Replace existing outputs.
        task: If given, must match the model's task.
        dist: This process's place in a ``torchrun`` run (default: a world of one). The process group is
            started here when it is not yet, and left at the end.
        operating_point: Name of a point stored with the model (``softseg operating-point``): each map also
            gets its mask ``p >= t`` at that point, ``<out>_mask.nii.gz``, and both sidecars name the point.

    Yields:
        ``Progress("device", ...)`` once with the chosen device and why, then ``"slices"`` and ``"case"``.

    Returns:
        The written files (of all ranks, in case order; a case written twice would appear twice).

    Raises:
        SoftsegError: Bad model, input, task or channel count, or an existing output.
    """
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    input_path, output = Path(input_path), Path(output)
    point = None
    if operating_point is not None:
        if model.path is None:
            raise SoftsegError("--operating-point needs a model folder (its points are stored there)")
        point = (operating_point, get_operating_point(model.path, operating_point))
    if not input_path.exists():
        raise SoftsegError("input not found", input_path)
    tile = int(tile_size or DEFAULT_TILE_SIZE)
    if tile < 1 or int(batch_size) < 1:
        raise SoftsegError(f"tile size and batch size must be at least 1, got {tile_size} and {batch_size}")
    dist = dist or Distributed()
    choice = resolve_device(device)
    if dist.enabled:  # each CUDA process takes the GPU of its LOCAL_RANK
        choice = replace(choice, device=dist.device_for(choice.device))
    jobs = _jobs(model, input_path, output, task)
    dataset_mode = not is_nifti_path(output)
    if dataset_mode:
        _refuse_output_inside(input_path, output)
    checksums = model_checksums(model)  # once: the run record and every sidecar name the same model
    record = _run_record(model, checksums) if dataset_mode else None
    skipped: list[Path] = []  # every rank checks every case: all refuse, or all resume the same way
    for image_path, out_path in jobs:
        if out_path.resolve() == image_path.resolve():
            raise SoftsegError("output would replace the input image", out_path)
        if out_path.exists() and not overwrite:
            if dataset_mode and record is not None and _same_run(output, record):
                skipped.append(out_path)  # committed atomically, so complete: resume after it
                continue
            raise SoftsegError("already exists; choose another name or pass --overwrite", out_path)
        if point is not None and mask_path_for(out_path).exists() and not overwrite:
            raise SoftsegError("already exists; choose another name or pass --overwrite", mask_path_for(out_path))
        check_sidecar_writable(out_path)  # a sidecar we may not replace: refuse before any work
    # this rank's share of the full, sorted case list (the same at every rerun), less the cases already done
    mine = dist.shard(range(len(jobs)))
    todo = [i for i in mine if jobs[i][1] not in skipped]
    # headers first: every image is checked (type, geometry, memory) before the first is predicted; in a
    # dataset run a bad case is set aside (reported at the end) and the others go ahead
    failures: list[tuple[str, str]] = []
    for index in list(todo):
        try:
            _check_job(model, jobs[index][0], tile, batch_size)
        except SoftsegError as exc:
            if not dataset_mode:
                raise
            failures.append((str(jobs[index][0]), exc.message if exc.path else str(exc)))
            todo.remove(index)
    owns_group = dist.enabled and not dist.started
    dist.start(choice.device, timeout_minutes=PREDICT_TIMEOUT_MINUTES)
    try:
        if dataset_mode and record is not None and dist.is_main:
            _write_run_record(output, record, overwrite)
        dist.barrier()  # the run record is in place before any rank writes a case
        yield Progress("device", 0, None, f"device: {choice.device} ({choice.reason})", {"device": choice.device})
        if dist.enabled:
            yield Progress("device", 0, None, f"{dist.world_size} processes: each predicts its share of the "
                           f"{len(jobs)} case(s) (rank r takes cases r, r + {dist.world_size}, ...)")
        if skipped:
            yield Progress("device", 0, None, f"resuming: {len(skipped)} of {len(jobs)} case(s) already predicted in "
                           f"{output} are kept")
        written = yield from _predict_jobs(model, checksums, [jobs[i] for i in todo], choice, tile, batch_size,
                                           overwrite, failures if dataset_mode else None, point)
        if not dist.enabled:
            if failures:
                raise PartialFailure(written, failures)
            return written
        done = {Path(p) for p in written}
        counts = [0.0] * len(jobs)
        for index in todo:
            counts[index] += jobs[index][1] in done
        counts = dist.sum(counts)  # how many times each case was written in this run, over all ranks
    except BaseException:
        if owns_group:
            dist.stop(wait=False)
        raise
    if owns_group:
        dist.stop()
    everything = [jobs[i][1] for i, n in enumerate(counts) for _ in range(int(round(n)))]
    if failures:  # this rank's failures (each rank reports its own share)
        raise PartialFailure(everything, failures)
    return everything


def _check_job(model: LoadedModel, image_path: Path, tile: int, batch_size: int) -> None:
    """Read one image's header and check it fits in memory (DICOM series are checked by their reader)."""
    if is_dicom_source(image_path):
        return
    info = read_header(image_path)
    voxels = int(np.prod(info.spatial_shape, dtype=np.int64))
    side = max(info.spatial_shape)
    activations = int(batch_size) * model.config.architecture.get("base_channels", 16) * 8 * min(side, tile) ** 2 * 4
    check_memory(info.read_bytes + 4 * voxels * (model.config.image_channels + 1) + activations,
                 f"predicting this {'x'.join(map(str, info.shape))} image", image_path)


PREDICT_TIMEOUT_MINUTES = 24 * 60
"""How long a rank that finished its share waits for the others (shares differ by about one case's time)."""


def _predict_jobs(model, checksums, jobs, choice, tile, batch_size, overwrite,
                  failures: list | None = None, point=None) -> Generator[Progress, None, list[Path]]:
    """Predict and write each ``(image, output)`` job with its sidecar; the written maps.

    With a ``failures`` list (dataset runs) a case that fails with a user error is recorded there and the
    run goes on with the next; without it the first failure stops the run.
    """
    written = []
    for number, (image_path, out_path) in enumerate(jobs, start=1):
        try:
            written.append((yield from _predict_one(model, checksums, image_path, out_path, choice, tile, batch_size,
                                                     overwrite, point)))
        except SoftsegError as exc:
            if failures is None:
                raise
            failures.append((str(image_path), exc.message if exc.path else str(exc)))
            yield Progress("case", number, len(jobs), f"failed: {exc}")
            continue
        yield Progress("case", number, len(jobs), f"wrote {out_path}")
    return written


def _predict_one(model, checksums, image_path, out_path, choice, tile, batch_size,
                 overwrite, point=None) -> Generator[Progress, None, Path]:
    """Predict one image and commit its map, then its sidecar (the provenance of what ran)."""
    image, volume = load_image(image_path, n_channels=model.config.image_channels)
    notes = model_domain_notes(model.config, image, volume.spacing)
    for note in notes:
        yield Progress("domain", 0, None, f"{Path(image_path).name}: {note}")
    ran = DeviceTracker(choice.device)
    probabilities = yield from ran.follow(predict_array(
        model, image, device=choice, tile_size=tile, batch_size=batch_size, source=image_path,
        spacing=volume.spacing,
    ))
    if not np.isfinite(probabilities).all():
        raise SoftsegError("the model produced NaN or infinite probabilities for this image (damaged weights?)",
                           image_path)
    description = f"softseg p(task{model.config.task}) T={model.config.temperature:.3g}"
    provenance = prediction_provenance(model, image_path, ran.device, checksums=checksums,
                                       **spacing_record(model.config, volume.spacing, notes),
                                       operating_point=point_summary(*point) if point else None)
    if point is not None:  # the mask first: a case counts as done (resume) once its soft map is committed
        write_point_mask(probabilities, volume, out_path, *point, provenance=provenance, overwrite=overwrite)
    path = save_volume(out_path, probabilities, volume, overwrite=overwrite, description=description,
                       dtype=np.float32)
    write_sidecar(out_path, "prediction", provenance)
    return path


RUN_RECORD = "softseg_predict.json"


def _refuse_output_inside(input_path: Path, output: Path) -> None:
    """A dataset's predictions may not go inside the dataset (the next run would walk into them)."""
    try:
        inside = output.resolve().is_relative_to(input_path.resolve())
    except (OSError, RuntimeError):
        inside = False
    if inside:
        raise SoftsegError(f"output folder is inside the input dataset {input_path}; choose a folder outside it",
                           output)


def _run_record(model: LoadedModel, sums: dict[str, str] | None) -> dict | None:
    """What identifies the model of a dataset run: checksums of its two files (``None`` if in memory)."""
    if sums is None:
        return None
    return {"software": "napari-softseg predict", "model": str(model.path), "task": model.config.task,
            "sha256": sums}


def _same_run(output: Path, record: dict) -> bool:

    path = output / RUN_RECORD
    if not path.is_file():
        return False
    try:
        stored = read_json_object(path, "prediction record")
    except SoftsegError:
        return False
    return stored.get("sha256") == record["sha256"] and stored.get("task") == record["task"]


def _write_run_record(output: Path, record: dict, overwrite: bool) -> None:

    path = output / RUN_RECORD
    if _same_run(output, record):
        return
    if path.exists() and not overwrite:
        raise SoftsegError("records predictions of another model in this folder; choose another output folder or "
                           "pass --overwrite", path)
    write_json(path, record, overwrite=overwrite)
