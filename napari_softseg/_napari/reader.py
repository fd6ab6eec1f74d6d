"""napari reader: NIfTI files and QUBIQ case folders.

:func:`get_reader` follows napari's contract: it looks at the path(s) only briefly (file names, a NIfTI
header) and returns ``None`` for anything it cannot read — it never raises. The returned reader loads
the data and returns layer-data tuples built by :mod:`napari_softseg._napari.layers` (display orientation,
affine in mm, provenance in ``metadata``). Problems found while actually reading (a truncated file,
masks that do not match the image, ...) raise :class:`~napari_softseg.errors.SoftsegError`, whose
one-line message napari shows as a notification.

What a path becomes:

* a **case folder** (``image.nii.gz`` + ``task01_seg01.nii.gz`` ...): the image, one Labels layer per
  rater (``"rater 1"`` ...) and the soft label (mean of the raters) per task;
* a **NIfTI file** written by this plugin — by the viewer's writers or by ``softseg predict`` (both write the
  same ``.softseg.json`` sidecar), or recognised from its header description (``softseg p(task1) T=0.718``,
  ``softseg prediction …``) when the sidecar was lost: a soft map (translucent heat colours, offered by
  every dock) or a mask, styled as when it was saved;
* a NIfTI file holding a few small integer values (a mask): a Labels layer;
* a float NIfTI of probabilities from another tool (MONAI, nnU-Net: 4D class probabilities, or a 3D map in
  [0, 1] whose name says prob/softmax/pred/seg): soft map layer(s) for the Threshold explorer;
* nnU-Net's ``--save_probabilities`` ``.npz`` (read without its pickle): soft map layer(s);
* a **DICOM file or folder**: per image series the image, its rater SEGs and their soft label, and model-output SEGs
  (:func:`napari_softseg._napari.dicom_layers.dicom_layers`);
* any other image file (NIfTI, Analyze/NIfTI pairs, MGH/MGZ, MINC1, PAR/REC, AFNI, NRRD; see
  docs/formats.md): an Image layer (4D files: one layer with a channel axis). 5D files are read after
  dropping trailing axes of length 1, or refused with a line; NaN voxels are shown as background.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_softseg._napari import background_open
from napari_softseg._napari import layers as L
from napari_softseg._napari.dicom_layers import dicom_layers
from napari_softseg.analysis.softlabels import SoftLabel, make_soft_label, soft_label_provenance
from napari_softseg.errors import SoftsegError
from napari_softseg.io.dataset import MASK_RE, find_case, load_case, load_image
from napari_softseg.io.dicom import is_dicom_source
from napari_softseg.io.formats import is_image_path, open_image, strip_image_suffix
from napari_softseg.io.nifti import load_volume, replace_non_finite, strip_nifti_suffix
from napari_softseg.io.packed_masks import PackedMasks
from napari_softseg.io.probability_maps import is_nnunet_npz, looks_like_probability_nifti, n_classes, read_soft_map
from napari_softseg.io.sidecar import read_sidecar

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
ReaderFunction = Callable[[PathLike | Sequence[PathLike]], list]

MAX_LABEL_VALUES = 64
"""An integer volume with at most this many distinct values (all in 0..255) is read as a Labels layer."""


def get_reader(path: PathLike | Sequence[PathLike]) -> ReaderFunction | None:
    """Return a reader for ``path`` (one path or a list), or ``None`` if this plugin cannot read it.

    Never raises.
    """
    try:
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths or not all(_readable(Path(p)) for p in paths):
            return None
        return read_or_open_in_background
    except Exception:  # noqa: BLE001 - napari's contract: never raise from get_reader
        logger.debug("get_reader(%r) failed", path, exc_info=True)
        return None


def _readable(path: Path) -> bool:
    """Cheap check: an image file whose header parses, a DICOM file or folder, or a folder holding a case image.

    A file whose header parses is claimed even when its content cannot be used (5D, damaged data): the
    reader then says why in one line instead of napari's "no reader".
    """

    if is_dicom_source(path):  # a DICOM file or folder (series + SEG); problems are reported when reading
        return True
    if is_nnunet_npz(path):
        return True
    if path.is_dir():
        try:
            find_case(path)
        except SoftsegError:
            return False
        return True
    if not (path.is_file() and is_image_path(path)):
        return False
    try:
        open_image(path)  # the header only (NIfTI, Analyze, MGH, MINC1, PAR/REC, AFNI, NRRD)
    except SoftsegError:  # recognised, but a data file or a package is missing: read() says which
        return True
    except Exception:  # noqa: BLE001 - not such an image after all
        return False
    return True


def _class_probabilities(path: Path) -> bool:
    """MONAI's 5D class probabilities ``(X, Y, Z, 1, C)``, C > 1, float: opened as soft maps."""
    opened = open_image(path)
    shape = opened.shape
    return (len(shape) == 5 and shape[3] == 1 and shape[4] > 1 and opened.dtype.kind == "f"
            and path.name.lower().endswith((".nii", ".nii.gz")))


def read_or_open_in_background(path: PathLike | Sequence[PathLike]) -> list:
    """The reader napari calls: :func:`read`, or — for a large path opened in a napari window — a read in
    a worker thread whose layers are added when ready (:mod:`napari_softseg._napari.background_open`;
    napari gets its "nothing to add now" sentinel ``[(None,)]``).
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if background_open.wants_background(paths):
        return background_open.open_in_background(paths, read)
    return read(path)


def read(path: PathLike | Sequence[PathLike]) -> list[L.LayerData]:
    """Read one path or several into layer-data tuples.

    Raises:
        SoftsegError: A file or case cannot be read; the message names it.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out: list[L.LayerData] = []

    for p in map(Path, paths):
        try:
            if is_dicom_source(p):

                out += dicom_layers(p)
            elif p.name.lower().endswith(".npz"):

                out += soft_map_layers(p)
            else:
                out += read_case_folder(p) if p.is_dir() else read_nifti(p)
        except SoftsegError:
            raise
        except MemoryError:
            raise SoftsegError("not enough memory to open this file", p) from None
        except Exception as exc:  # noqa: BLE001 - the viewer shows one line naming the file, never a traceback
            logger.debug("reading %s failed", p, exc_info=True)
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise SoftsegError(f"cannot open ({type(exc).__name__}{': ' + detail if detail else ''})", p) from None
    return out


def read_case_folder(path: PathLike) -> list[L.LayerData]:
    """Layers of a QUBIQ case folder: image, raters per task, soft label (mean) per task.

    With one task the raters are named ``"rater 1"`` ...; with several, ``"task 2 rater 1"`` ... and only
    the first task's layers are visible. The raters are held packed as bits (one byte per voxel for up to
    8 raters) and, with the mean soft label, shown as lazy layers (``LazyArray``); ``np.asarray(layer.data)``
    gives the full array when one is needed.
    """

    case = find_case(path)
    tasks = sorted(case.tasks) or [1]
    out: list[L.LayerData] = []
    for n, task in enumerate(tasks):
        # raters packed as bits; they and the mean soft label are lazy layers that unpack the slices shown
        data = load_case(case, task=task, allow_no_masks=True, packed=True)
        for warning in data.warnings:
            logger.warning("%s task %d: %s", case.path, task, warning)
        soft = None
        if isinstance(data.masks, PackedMasks):
            geometry = L.geometry_of_case(data)
            soft = SoftLabel(data=data.masks.lazy_mean(geometry.to_display),
                             provenance=soft_label_provenance("mean", len(data.masks), rater_names=data.rater_names))
        elif data.masks.shape[0]:
            soft = make_soft_label(data.masks, "mean", spacing=data.spacing, rater_names=data.rater_names)
        layers = L.case_layers(data, soft)
        if n:  # the image was added with the first task
            layers = layers[1:]
        if len(tasks) > 1:
            for _, kwargs, _ in layers[(0 if n else 1):]:
                kwargs["name"] = f"task {task} {kwargs['name']}"
                if n:
                    kwargs["visible"] = False
        out += layers
    return out


def _read_sidecar(path: Path) -> dict:

    info = read_sidecar(path)
    # a hand-edited sidecar must not break the layer: names the layer builders take themselves are dropped
    reserved = {"name", "geometry", "opacity", "visible", "color", "contour", "source", "soft", "mask", "image"}
    clean = {k: v for k, v in info.items() if k not in reserved}
    if not isinstance(clean.get("kind"), str):
        clean.pop("kind", None)
    return clean


def read_nifti(path: PathLike) -> list[L.LayerData]:
    """Layers of one NIfTI file (see the module docstring for what becomes what)."""

    path = Path(path)
    name = strip_image_suffix(path.name)
    info = _read_sidecar(path)

    if _class_probabilities(path):  # other 5D files: load_volume drops unit axes or refuses with a line
        return soft_map_layers(path)
    vol = load_volume(path)
    if not info:
        info = _info_from_description(vol.header)
    kind = info.get("kind")
    data = np.asarray(vol.data)
    if kind in ("prediction", "soft_label") and data.ndim == 3:
        data = replace_non_finite(data, path, "soft map")
        geometry = L.Geometry(vol.affine, data.shape)
        prov = {k: v for k, v in info.items() if k not in ("kind", "software")}
        prov["source"] = str(path)
        return [L.soft_map_layer(data.astype(np.float32, copy=False), geometry, name=name, kind=kind, **prov)]
    if kind is None and looks_like_probability_nifti(path, data):  # MONAI / nnU-Net probability maps
        return soft_map_layers(path)
    if data.ndim == 3 and _looks_like_mask(data):
        geometry = L.Geometry(vol.affine, data.shape)
        prov = {k: v for k, v in info.items() if k not in ("kind", "software")}
        prov["source"] = str(path)
        is_rater = bool(MASK_RE.match(path.name)) and kind is None
        return [
            L.labels_layer(
                data.astype(np.uint8), geometry, name=name, kind=kind if kind in L.KINDS else ("rater" if is_rater else "mask"),
                opacity=0.6, **prov,
            )
        ]
    image, vol = load_image(path)
    geometry = L.Geometry(vol.affine, image.shape[1:])
    return [L.image_layer(image, geometry, name=name, source=path)]


#: Header descriptions this package writes: ``softseg p(task1) T=0.718`` (``softseg predict``) and
#: ``softseg <kind> …`` (the viewer's writers, e.g. ``softseg prediction method=mean``).
_DESCRIPTION_KINDS = {"p(": "prediction", "prediction": "prediction", "soft_label": "soft_label", "mask": "mask"}


def _info_from_description(header) -> dict:
    """What a NIfTI header's description says about a file this package wrote (``{}`` if nothing)."""
    try:
        text = bytes(np.asarray(header["descrip"]).tobytes()).split(b"\0", 1)[0].decode("ascii", "replace").strip()
    except Exception:  # noqa: BLE001 - not a NIfTI-1/2 header with a description
        return {}
    parts = text.split()
    if len(parts) < 2 or parts[0] != "softseg":
        return {}
    kind = next((k for prefix, k in _DESCRIPTION_KINDS.items() if parts[1].startswith(prefix)), None)
    if kind is None:
        return {}
    info: dict = {"kind": kind, "header_description": text}
    if parts[1].startswith("p(task") and parts[1].endswith(")"):
        try:
            info["task"] = int(parts[1][6:-1])
        except ValueError:
            pass
    for part in parts[2:]:
        if part.startswith("T="):
            try:
                info["temperature"] = float(part[2:])
            except ValueError:
                pass
        elif part.startswith("p>="):
            try:
                info["threshold"] = float(part[3:])
            except ValueError:
                pass
    return info


def _looks_like_mask(data: np.ndarray) -> bool:
    if data.dtype == np.bool_:
        return True
    if not np.issubdtype(data.dtype, np.integer) or data.size == 0:
        return False
    if data.min() < 0 or data.max() > 255:
        return False
    return np.unique(data).size <= MAX_LABEL_VALUES


def soft_map_layers(path: str | os.PathLike) -> list:
    """napari layer data of a probability file: one soft map per foreground class, named after the file."""

    path = Path(path)
    name = path.name[:-4] if path.name.lower().endswith(".npz") else strip_nifti_suffix(path.name)
    n = n_classes(path)
    out = []
    classes = [None] if n <= 2 else list(range(1, n))
    for c in classes:
        data, affine = read_soft_map(path, channel=c)
        geometry = L.Geometry(affine, data.shape)
        out.append(L.soft_map_layer(data, geometry, name=name if c is None else f"{name} class {c}",
                                    kind="prediction", source=str(path), origin="external probability map",
                                    **({} if c is None else {"class_index": c})))
    return out
