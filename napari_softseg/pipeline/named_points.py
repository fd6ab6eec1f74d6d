"""A model's named operating points as the viewer offers them: current ones as presets, stale ones named.

The threshold explorer finds the model that made a soft map in the layer's provenance (``model``: the
model folder; ``model_sha256``: the weights' checksum, where the prediction recorded it) and asks
:func:`model_points` what that folder holds. Each stored point (:mod:`napari_softseg.pipeline.point_store`)
becomes a :class:`NamedPoint`, checked the way ``softseg predict --operating-point`` checks it: a point
chosen for other weights or another config than the folder's current ones (retrained, recalibrated) is
**stale**, and so is one whose weights differ from those that made this soft map; a stale point is listed
with the reason and never offered as a preset. A points file that is damaged or differs from its manifest
checksum gives no points and says why.

Reading is cheap (a small JSON file and the SHA-256 of the weights and config, a few ms for a small model)
and cached on the files' size and modification time, so re-reading the layers costs nothing.

Example:
    >>> model_points(None).message
    'no model recorded for this soft map (only predictions made by a model folder have named points)'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from napari_softseg.analysis.cohort_curves import CohortCurve
from napari_softseg.errors import SoftsegError
from napari_softseg.model.model_io import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE
from napari_softseg.pipeline.point_store import POINTS_FILE, current_checksums, read_operating_points, stale_files


def _pct(value) -> str:
    return "?" if not isinstance(value, (int, float)) else f"{value:.3f}"


def _date(created) -> str:
    """``2026-12-05T16:26:19+00:00`` -> ``2026-12-05 16:26 UTC`` (other text as it is)."""
    if not isinstance(created, str):
        return "?"
    if len(created) >= 16 and created[10:11] == "T" and created.endswith("+00:00"):
        return created[:10] + " " + created[11:16] + " UTC"
    return created


@dataclass(frozen=True)
class NamedPoint:
    """One stored point as the viewer shows it.

    Attributes:
        name: The point's name.
        threshold: Its ``t`` (mask ``p >= t``).
        record: The stored record (requirement, cohort, intervals, date, ...).
        stale: Why it is not offered (``None``: it belongs to the model and the soft map).
        curve: The cohort's pooled curve and per-case band (``None`` for a point stored before they were).
    """

    name: str
    threshold: float
    record: dict
    stale: str | None = None
    curve: CohortCurve | None = None

    @property
    def requirement(self) -> str:
        """The requirement as typed (``sensitivity>=0.9``)."""
        return str(self.record.get("requirement", "?"))

    @property
    def label(self) -> str:
        """One line for a list: ``screening: t = 0.507 (sensitivity>=0.9)``, stale ones say so."""
        text = f"{self.name}: t = {self.threshold:.3f} ({self.requirement})"
        return text + " — stale" if self.stale else text

    def details(self) -> str:
        """What a clinician reads before using the point: requirement, cohort, interval, spread, date, warnings."""
        r = self.record
        cohort = r.get("cohort") if isinstance(r.get("cohort"), dict) else {}
        metric = self.requirement.split(">=")[0].split("<=")[0].split("=")[0]
        how = " (conservative: the CI's far end meets it)" if r.get("conservative") else ""
        lines = [f"'{self.name}': {self.requirement}{how} → t = {self.threshold:.3f}"]
        lines.append(f"cohort: {cohort.get('n_cases', '?')} case(s) of {cohort.get('name', '?')}, vs "
                     f"{cohort.get('reference', 'the raters')}")
        ci = r.get("ci") if isinstance(r.get("ci"), list) and len(r["ci"]) == 2 else (None, None)
        level = r.get("confidence")
        level = f"{level * 100:g}% " if isinstance(level, (int, float)) else ""
        lines.append(f"pooled {metric} {_pct(r.get('achieved'))}, {level}CI over cases {_pct(ci[0])}–{_pct(ci[1])}")
        if isinstance(r.get("n_failing"), int):
            lines.append(f"{r['n_failing']} of {cohort.get('n_cases', '?')} case(s) fall short at t on their own")
        lines.append(f"chosen {_date(r.get('created'))} ({r.get('software', '?')})")
        lines += [f"⚠ {w}" for w in r.get("warnings") or [] if isinstance(w, str)]
        if self.stale:
            lines.insert(0, f"⚠ stale, not offered: {self.stale}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ModelPoints:
    """What a model folder offers a soft map.

    Attributes:
        model_dir: The model folder (``None``: the soft map names none).
        points: Every stored point, current and stale, by name.
        message: One line saying what was found (or why nothing is).
    """

    model_dir: Path | None
    points: tuple[NamedPoint, ...] = ()
    message: str = ""

    @property
    def current(self) -> list[NamedPoint]:
        """The points offered as presets."""
        return [p for p in self.points if p.stale is None]


_CACHE: dict[tuple, ModelPoints] = {}


def _signature(model_dir: Path) -> tuple:
    out = []
    for name in (POINTS_FILE, WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE):
        try:
            st = (model_dir / name).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def model_points(model_dir: str | os.PathLike | None, prediction_sha256: str | None = None) -> ModelPoints:
    """The named points of ``model_dir``, each checked against the model's files and the prediction's weights.

    Args:
        model_dir: The model folder that made the soft map (from the layer's provenance), or ``None``.
        prediction_sha256: SHA-256 of the weights that made the soft map, where its provenance recorded it.

    Never raises: a missing folder, a refused points file or unreadable model files are the ``message``.
    """
    if model_dir is None or str(model_dir) == "":
        return ModelPoints(None, (), "no model recorded for this soft map (only predictions made by a model folder "
                                     "have named points)")
    folder = Path(model_dir)
    if not folder.is_dir():
        return ModelPoints(folder, (), f"the model folder {folder} that made this soft map is not found")
    key = (str(folder.resolve()), prediction_sha256, _signature(folder))
    if key not in _CACHE:
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = _read(folder, prediction_sha256)
    return _CACHE[key]


def _read(folder: Path, prediction_sha256: str | None) -> ModelPoints:
    try:
        stored = read_operating_points(folder)
    except SoftsegError as exc:
        return ModelPoints(folder, (), f"named points of {folder.name} refused: {exc}")
    if not stored:
        return ModelPoints(folder, (), f"model {folder.name} has no named operating points (choose some with "
                                       "softseg operating-point)")
    try:
        current = current_checksums(folder)
    except SoftsegError as exc:
        current, unreadable = {}, str(exc)
    else:
        unreadable = None
    points = []
    for name, record in sorted(stored.items()):
        changed = stale_files(record, current)
        if unreadable:
            stale = unreadable
        elif changed:
            stale = (f"chosen for other {' and '.join(changed)} (the model was retrained or recalibrated since); "
                     "choose it again with softseg operating-point --replace")
        elif prediction_sha256 and (record.get("model_sha256") or {}).get(WEIGHTS_FILE) != prediction_sha256:
            stale = "this soft map was made by other weights than the point was chosen for; predict again"
        else:
            stale = None
        points.append(NamedPoint(name, float(record["threshold"]), record, stale,
                                 CohortCurve.from_dict(record.get("cohort_curve"))))
    n_stale = sum(p.stale is not None for p in points)
    message = f"{len(points) - n_stale} named point(s) of model {folder.name}"
    if n_stale:
        message += f"; {n_stale} stale, not offered"
    return ModelPoints(folder, tuple(points), message)
