"""Survey (issue 17): third-party files through the napari reader, ``softseg inspect`` and ``softseg predict``.

Corpus: every file of nibabel's ``tests/data`` and ``nicom/tests/data``, pydicom's ``data/test_files`` and
the ``pydicom-data`` package, plus files written here (nibabel, pynrrd, highdicom) for what issue 17 names
and no package ships (Analyze/NIfTI pairs, MGH, NaN/inf voxels, zero/NaN pixdim, singular affine, 5D, NaN
masks, NRRD, a FRACTIONAL SEG). Each file is described by nibabel/pydicom (shape, dtype, zooms, NaN count,
affine determinant), then run, each in its own process, through (a) ``get_reader(path)`` and its reader
(layer-data tuples, no viewer; a DICOM file also as a one-file folder), (b) ``softseg inspect PATH``, (c)
``softseg predict MODEL PATH -o OUT.nii.gz`` with the bundled model (OMP_NUM_THREADS=1, 120 s; inputs over
30 M voxels are skipped and said so).

Outcomes: ``ok``, ``refused`` (one line), ``declined`` (get_reader gave None), ``traceback`` (type, message,
deepest package frame) or ``timeout``, each beside what issue 17 expects. Results go to ``OUT/result.json``
and between generated markers of ``--md`` (text outside them is kept). Usage::

    .venv/bin/python scripts/survey_third_party.py [--out /tmp/survey] [--md FILE] [--package-root DIR]
        [--only SUBSTRING] [--no-predict] [--render]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAX_PREDICT_VOXELS = 30_000_000
PREDICT_TIMEOUT_S = 120
SKIP_SUFFIXES = (".py", ".m", ".rst", ".json", ".dump", ".icc", ".txt", ".gitignore", ".bin", ".bin.gz")
TYPE2 = ("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyTime")
POINTS = ("reader", "reader_folder", "inspect", "predict")
BEGIN, END = "<!-- survey_third_party.py: generated begin -->", "<!-- survey_third_party.py: generated end -->"


def _entry(group: str, path: Path, fmt: str, note: str = "") -> dict:
    return {"group": group, "name": path.name, "path": str(path), "fmt": fmt, "note": note}


def _classify_file(group: str, path: Path) -> dict:
    """A file as the survey sees it: DICOM (pydicom reads it), nibabel (a SpatialImage) or skipped (why)."""
    import nibabel as nib
    import pydicom

    if path.name.lower().endswith(SKIP_SUFFIXES) or path.name == "README":
        return _entry(group, path, "skip", "not image data (helper/text file)")
    if path.suffix.lower() == ".dcm":
        try:
            pydicom.dcmread(path, force=True, stop_before_pixels=True)
            return _entry(group, path, "dicom")
        except Exception as exc:  # noqa: BLE001 - recorded
            return _entry(group, path, "dicom", f"pydicom cannot parse: {type(exc).__name__}")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel says why
        return _entry(group, path, "skip", f"nibabel.load: {type(exc).__name__}: {_line(exc)}")
    if not isinstance(img, nib.spatialimages.SpatialImage):
        return _entry(group, path, "skip", f"nibabel reads it as {type(img).__name__}, not a SpatialImage")
    return _entry(group, path, "nibabel")


def corpus(gen: Path) -> list[dict]:
    """Every file of the third-party test-data folders (classified) plus the constructed files."""
    import nibabel as nib
    import pydicom
    from pydicom.data.data_manager import external_data_sources

    nib_dir = Path(nib.__file__).parent
    folders = [("nibabel", nib_dir / "tests/data"), ("nibabel-nicom", nib_dir / "nicom/tests/data"),
               ("pydicom-data", Path(external_data_sources()["pydicom-data"].data_path)),
               ("pydicom-test_files", Path(pydicom.__file__).parent / "data/test_files")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = [_entry(group, p, "dicom-folder") if p.is_dir() else _classify_file(group, p)
               for group, folder in folders for p in sorted(folder.iterdir()) if p.name != "__pycache__"]
        out += build_constructed(gen)
    for i, e in enumerate(out):
        e["id"] = f"{i:03d}"
    return out


def build_constructed(gen: Path) -> list[dict]:
    """Files written here for the cases of issue 17 that no package ships (deterministic)."""
    import nibabel as nib

    gen.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(17)
    img = (rng.random((24, 28, 12)) * 1000).astype(np.float32)
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    made: list[tuple[str, str]] = []

    def nifti(name, data, note, klass=nib.Nifti1Image, **fields):
        klass(data, aff).to_filename(str(gen / name))
        if fields:  # nibabel rewrites qform/sform from the affine on save: patch the stored header instead
            with open(gen / name, "r+b") as fh:
                header = nib.Nifti1Header.from_fileobj(fh)  # as stored (vox_offset included)
                for key, value in fields.items():
                    header[key] = value
                fh.seek(0)
                fh.write(header.binaryblock)
        made.append((name, note))

    nifti("analyze_pair.hdr", (img / 10).astype(np.int16), "Analyze 7.5 .hdr/.img", nib.AnalyzeImage)
    nifti("nifti1_pair.hdr", img, "NIfTI-1 pair .hdr/.img", nib.Nifti1Pair)
    nifti("nifti2_pair.hdr", img, "NIfTI-2 pair .hdr/.img", nib.Nifti2Pair)
    nifti("mgh_float.mgh", img, "FreeSurfer MGH float32", nib.MGHImage)
    nifti("mgz_uint8.mgz", (img / 4).astype(np.uint8), "FreeSurfer MGZ uint8", nib.MGHImage)
    bad = img.copy()
    bad.flat[rng.choice(bad.size, 7, replace=False)] = np.nan
    nifti("nan_voxels.nii.gz", bad, "7 NaN voxels")
    bad = img.copy()
    bad.flat[[5, 50, 500]], bad.flat[[7, 70]] = np.inf, -np.inf
    nifti("inf_voxels.nii.gz", bad, "3 +inf, 2 -inf voxels")
    nifti("all_nan.nii.gz", np.full_like(img, np.nan), "every voxel NaN")
    nifti("zero_pixdim.nii", img, "qform/sform codes 0, pixdim[3] = 0", qform_code=0, sform_code=0,
          pixdim=[1, 1.5, 1.5, 0, 1, 1, 1, 1])
    nifti("nan_pixdim.nii", img, "qform/sform codes 0, pixdim[1] = NaN", qform_code=0, sform_code=0,
          pixdim=[1, np.nan, 1.5, 3, 1, 1, 1, 1])
    nifti("singular_sform.nii", img, "qform_code 0, sform_code 1 with a zero z row", qform_code=0, sform_code=1,
          srow_z=[0, 0, 0, 0])
    nifti("five_d_2x3.nii.gz", rng.random((24, 28, 12, 2, 3)).astype(np.float32), "5D (X,Y,Z,2,3)")
    nifti("five_d_1x1.nii.gz", img[..., None, None], "5D (X,Y,Z,1,1)")
    nifti("four_d_t1.nii.gz", img[..., None], "4D (X,Y,Z,1)")
    nifti("two_d.nii.gz", img[:, :, 0], "2D (X,Y)")
    for nan_in in ("image", "mask"):  # case folders: image + 2 raters, NaN in the image or in rater 1
        (gen / f"case_nan_{nan_in}").mkdir(exist_ok=True)
        vols = [img.copy()] + [(img > 500 + 50 * r).astype(np.float32) for r in range(2)]
        vols[0 if nan_in == "image" else 1].flat[[3, 33, 333]] = np.nan
        for name, v in zip(("image", "task01_seg01", "task01_seg02"), vols, strict=True):
            nib.Nifti1Image(v, aff).to_filename(str(gen / f"case_nan_{nan_in}" / f"{name}.nii.gz"))
        made.append((f"case_nan_{nan_in}", f"case folder, 3 NaN voxels in the {nan_in}"))
    import nrrd

    nrrd.write(str(gen / "volume.nrrd"), img, {"space": "left-posterior-superior", "space origin": np.zeros(3),
                                                 "space directions": np.diag([1.5, 1.5, 3.0])})
    made += [("volume.nrrd", "NRRD written by pynrrd (LPS, 1.5x1.5x3 mm)"),
             _fractional_seg(gen / "dicom_fractional_seg")]
    fmt = {".nrrd": "nrrd", "": "folder"}
    return [_entry("constructed", gen / n, fmt.get((gen / n).suffix, "nibabel"), note) for n, note in made]


def _fractional_seg(folder: Path) -> tuple[str, str]:
    """Copy pydicom's MR_small.dcm and a FRACTIONAL (PROBABILITY) SEG of it written directly with highdicom."""
    import highdicom as hd
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.sr.codedict import codes

    folder.mkdir(parents=True, exist_ok=True)
    src = Path(get_testdata_file("MR_small.dcm"))
    shutil.copy(src, folder / "MR_small.dcm")
    ds = pydicom.dcmread(src)
    for name in TYPE2:  # highdicom copies these from the source by attribute access
        if name not in ds:
            setattr(ds, name, "")
    x = np.linspace(0, 1, ds.Rows, dtype=np.float32)
    prob = np.clip(np.add.outer(x, x) - 0.5, 0, 1)[None]
    seg = hd.seg.Segmentation(
        source_images=[ds], pixel_array=prob, segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[hd.seg.SegmentDescription(
            segment_number=1, segment_label="probability", segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence("survey", codes.DCM.ArtificialIntelligence,
                                                                        "1"))],
        series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="survey", manufacturer_model_name="survey", software_versions="1", device_serial_number="1",
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY, max_fractional_value=255)
    seg.save_as(folder / "fractional_seg.dcm")
    return folder.name, "MR_small.dcm + FRACTIONAL PROBABILITY SEG written with highdicom"


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def nibabel_view(path: Path) -> dict:
    import nibabel as nib

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        img = nib.load(str(path))
        v = {"class": type(img).__name__, "shape": [int(s) for s in img.shape],
             "dtype": str(img.get_data_dtype()), "zooms": [round(float(z), 4) for z in img.header.get_zooms()],
             "affine_det": round(float(np.linalg.det(img.affine[:3, :3])), 4)}
        try:
            data = np.asanyarray(img.dataobj)
            bad = (~np.isfinite(data), np.isnan(data)) if data.dtype.kind == "f" else (np.zeros(1, bool),) * 2
            v["nonfinite"], v["nan"] = int(bad[0].sum()), int(bad[1].sum())
        except Exception as exc:  # noqa: BLE001 - recorded
            v["data_error"] = f"{type(exc).__name__}: {_line(exc)}"
    v["voxels"] = int(np.prod(v["shape"]))
    return v


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):  # a malformed IS value (badVR.dcm: NumberOfFrames '1A')
        return 1


def dicom_view(path: Path) -> dict:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:  # noqa: BLE001 - recorded
            return {"read_error": f"{type(exc).__name__}: {_line(exc)}"}
        meta = getattr(ds, "file_meta", None)
        ts = meta.get("TransferSyntaxUID") if meta is not None else None
        sop = ds.get("SOPClassUID")
        v = {"preamble": path.read_bytes()[128:132] == b"DICM", "modality": str(ds.get("Modality", "")),
             "sop_class": getattr(sop, "name", str(sop)), "transfer_syntax": getattr(ts, "name", str(ts)),
             "rows": ds.get("Rows"), "columns": ds.get("Columns"), "frames": _int(ds.get("NumberOfFrames", 1) or 1),
             "samples": ds.get("SamplesPerPixel"), "photometric": str(ds.get("PhotometricInterpretation", "")),
             "has_pixels": "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds,
             "missing_type2": [n for n in TYPE2 if n not in ds]}
        v["voxels"] = _int(v["rows"] or 0) * _int(v["columns"] or 0) * v["frames"]
        iop, ps, thick = ds.get("ImageOrientationPatient"), ds.get("PixelSpacing"), ds.get("SliceThickness")
        groups = ds.get("SharedFunctionalGroupsSequence") or [{}]  # enhanced multi-frame: shared groups
        orient, measures = (groups[0].get(k, [{}])[0] for k in ("PlaneOrientationSequence", "PixelMeasuresSequence"))
        iop, ps = iop or orient.get("ImageOrientationPatient"), ps or measures.get("PixelSpacing")
        thick = thick or measures.get("SliceThickness")
        v["geometry"] = iop is not None and ps is not None
        try:  # the voxel volume (IOP rows are orthonormal): what the affine's determinant would be
            v["affine_det"] = round(float(ps[0]) * float(ps[1]) * float(thick or 1.0), 4) if v["geometry"] else None
            if v["has_pixels"]:
                arr = ds.pixel_array
                v.update(pixel_shape=list(arr.shape), pixel_dtype=str(arr.dtype),
                         nan=int(np.isnan(arr).sum()) if arr.dtype.kind == "f" else 0)
        except Exception as exc:  # noqa: BLE001 - recorded
            v["pixel_error"] = f"{type(exc).__name__}: {_line(exc)}"
    return v


def own_view(entry: dict) -> dict:
    path = Path(entry["path"])
    try:
        if entry["fmt"] == "dicom":
            return dicom_view(path)
        if entry["fmt"] == "nibabel":
            return nibabel_view(path)
        if entry["fmt"] == "nrrd":
            import nrrd

            h = nrrd.read_header(str(path))
            return {"class": "nrrd", "shape": [int(s) for s in h["sizes"]], "dtype": h["type"],
                    "voxels": int(np.prod(h["sizes"])), "space": h.get("space")}
        files = sorted(p.name for p in path.rglob("*") if p.is_file())
        return {"class": "folder", "files": len(files), "first": files[:4], "voxels": 0}
    except Exception as exc:  # noqa: BLE001 - recorded
        return {"error": f"{type(exc).__name__}: {_line(exc)}"}


def _exp(why: str, reader: set, inspect: set, predict: set) -> dict:
    return {"why": why, "reader": reader, "inspect": inspect, "predict": predict}


def expected(entry: dict, view: dict) -> dict:
    """What issue 17 asks of each entry point, as sets of acceptable outcomes and the reason."""
    ok, refuse, clean, no = {"ok"}, {"refused", "declined"}, {"ok", "refused", "declined"}, {"refused"}
    fmt, note, name = entry["fmt"], entry["note"], entry["name"]
    if fmt == "nibabel":
        if "data_error" in view:
            return _exp("header without its data file: refuse naming the missing file", refuse, clean, no)
        extra = [s for s in view.get("shape", [])[3:] if s > 1]
        why = f"{view.get('class')}: open (issue 17: any nibabel spatial image)"
        if view.get("nonfinite"):
            why += f"; {view['nonfinite']} NaN/inf voxels: one-line warning, background for predict"
        if "pixdim" in note or not np.isfinite(view.get("affine_det") or np.nan):
            why += "; zero/NaN pixdim or singular affine: open at 1 mm with a warning"
        if len(extra) > 1:
            return _exp(why + "; 5D with two non-trivial extra axes: refuse with a line, never reduce silently",
                        refuse, clean, no)
        if extra:
            return _exp(why + f"; {extra[0]} volumes: open as channels, predict refused (model has 1 channel)",
                        ok, ok, no)
        return _exp(why, ok, ok, {"ok", "refused"} if view.get("nonfinite") == view.get("voxels") else ok)
    if fmt == "nrrd":
        return _exp("NRRD via pynrrd (issue 17: if it fits)", ok, ok, ok)
    if fmt == "folder":
        if "nan_mask" in name:
            return _exp("a mask holding NaN: refuse with a line", no, clean, ok)
        return _exp("case folder; NaN image voxels: warning, background" if "nan_image" in name else "open", ok, ok, ok)
    if fmt == "dicom-folder":
        return _exp("DICOMDIR test tree (many series): list them, or refuse naming the choice", clean, ok, clean)
    if "read_error" in view or "error" in view or "cannot parse" in note:
        return _exp("pydicom cannot read it: refuse naming the file", refuse, refuse, no)
    if not view.get("has_pixels"):
        return _exp(f"{view.get('sop_class')}: no pixel data, not an image: refuse with a line", refuse, clean, no)
    if view.get("modality") == "SEG":
        return _exp("SEG without its source series: open standalone or refuse naming the series", clean, ok, no)
    if "pixel_error" in view:
        return _exp(f"pixel data does not decode ({view['pixel_error'][:60]}): refuse with a line", refuse, clean, no)
    if view.get("samples") != 1 or "PALETTE" in view.get("photometric", ""):
        return _exp(f"colour ({view.get('photometric')}): refuse with a line (greyscale expected)", refuse, clean, no)
    if view.get("modality") == "RTDOSE":
        return _exp("RT dose grid: open as an image or refuse with a line", clean, ok, clean - {"declined"})
    why = f"greyscale {view.get('modality')} ({view.get('transfer_syntax')})"
    if not view.get("geometry"):
        why += ", no patient geometry: open at 1 mm (or PixelSpacing) with a warning"
    return _exp(why + ": open", ok, ok, ok)


def _site(tb) -> str | None:
    """``module/file.py:line (function)`` of the deepest frame inside the package."""
    sites = [f"{f.filename.split('/napari_softseg/', 1)[1]}:{f.lineno} ({f.name})"
             for f in traceback.extract_tb(tb) if "/napari_softseg/" in f.filename]
    return sites[-1] if sites else None


def _import_reader():
    import importlib

    import napari_softseg

    moved = (Path(napari_softseg.__file__).parent / "_napari" / "reader.py").exists()  # issue 18 layout
    return importlib.import_module("napari_softseg._napari.reader" if moved else "napari_softseg._reader").get_reader


def reader_one(path: str) -> dict:
    """Child process: get_reader + reader on ``path``; outcome with layers, warnings and the raise site."""
    import logging

    from napari_softseg.errors import SoftsegError

    logged: list[str] = []
    keep = logging.Handler(logging.WARNING)
    keep.emit = lambda record: logged.append(record.getMessage()[:200])
    logging.getLogger().addHandler(keep)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn = _import_reader()(path)
            out = ({"outcome": "declined", "message": "get_reader returned None"} if fn is None else
                   {"outcome": "ok", "layers": [_layer_summary(layer) for layer in fn(path)]})
        except SoftsegError as exc:
            out = {"outcome": "refused", "message": str(exc), "site": _site(exc.__traceback__)}
        except Exception as exc:  # noqa: BLE001 - the point of the survey
            out = {"outcome": "traceback", "message": f"{type(exc).__name__}: {_line(exc)}",
                   "site": _site(exc.__traceback__)}
    out["warnings"] = logged + [str(w.message)[:200] for w in caught if "softseg" in (w.filename or "")]
    return out


def _layer_summary(layer) -> dict:
    data, kwargs, ltype = (tuple(layer) + ({}, "image"))[:3]
    shape = getattr(data, "shape", None)
    out = {"type": ltype, "name": kwargs.get("name"), "shape": list(shape) if shape is not None else None,
           "dtype": str(getattr(data, "dtype", "?")), "scale": [round(float(x), 4) for x in kwargs.get("scale", [])]}
    if shape is not None and int(np.prod(shape)) <= MAX_PREDICT_VOXELS and str(out["dtype"]).startswith("float"):
        out["nonfinite"] = int(np.count_nonzero(~np.isfinite(np.asarray(data))))
    return out


def locate(argv: list[str]) -> dict:
    """Child process: run a ``softseg`` command in-process to find where its SoftsegError was raised."""
    from napari_softseg.cli import build_parser
    from napari_softseg.errors import SoftsegError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (SoftsegError, Exception) as exc:  # noqa: BLE001 - where it was raised is the answer
        return {"site": _site(exc.__traceback__)}
    return {"site": None}


def _child(mode: str, args: list[str], env: dict, timeout: float) -> dict:
    try:
        p = subprocess.run([sys.executable, __file__, mode, *args], capture_output=True, text=True, env=env,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "message": f"over {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {"outcome": "traceback",
                                                "message": f"child died rc={p.returncode}: {(err or [''])[-1]}"[:200]}


def run_cli(argv: list[str], env: dict, timeout: float) -> dict:
    """``softseg ARGV`` in a subprocess, classified as ok / refused / traceback / timeout / failed."""
    softseg = Path(sys.executable).with_name("softseg")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([str(softseg), *argv], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "message": f"over {timeout:.0f} s", "seconds": round(timeout, 1)}
    out = {"rc": p.returncode, "seconds": round(time.perf_counter() - t0, 1),
           "first_line": (p.stdout.strip().splitlines() or [""])[0][:200],
           "warnings": [ln[:200] for ln in (p.stdout + p.stderr).splitlines() if ln.lower().startswith("warning")]}
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    if "Traceback (most recent call last)" in p.stderr:
        frames = re.findall(r'File "[^"]*/napari_softseg/([^"]+)", line (\d+), in (\S+)', p.stderr)
        out.update(outcome="traceback", message=err[-1][:200],
                   site=f"{frames[-1][0]}:{frames[-1][1]} ({frames[-1][2]})" if frames else None)
    elif p.returncode == 0:
        out["outcome"] = "ok"
    elif p.returncode == 2 and err and err[-1].startswith("softseg"):
        out.update(outcome="refused", message=err[-1].split("error: ", 1)[-1][:300])
        out["site"] = _child("--locate", argv, env, timeout).get("site")
    else:
        out.update(outcome="failed", message=(err[-1] if err else "")[:200])
    return out


def survey_entry(entry: dict, out_dir: Path, model: Path, env: dict, predict: bool) -> dict:
    path = entry["path"]
    res = dict(entry, view=own_view(entry))
    if entry["fmt"] == "skip":
        return res
    exp = expected(entry, res["view"])
    res["expected"] = {k: sorted(v) if isinstance(v, set) else v for k, v in exp.items()}
    res["reader"] = _child("--reader-one", [path], env, 300)
    if entry["fmt"] == "dicom":
        folder = out_dir / "dicom_one_file" / entry["id"]  # the reader takes DICOM folders
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / entry["name"])
        res["reader_folder"] = _child("--reader-one", [str(folder)], env, 300)
    res["inspect"] = run_cli(["inspect", path], env, 120)
    voxels = res["view"].get("voxels") or 0
    if not predict:
        res["predict"] = {"outcome": "not run"}
    elif voxels > MAX_PREDICT_VOXELS:
        res["predict"] = {"outcome": "skipped", "message": f"{voxels:,} voxels > {MAX_PREDICT_VOXELS:,}"}
    else:
        target = out_dir / "out" / f"out_{entry['id']}.nii.gz"
        res["predict"] = run_cli(["predict", str(model), path, "-o", str(target), "--overwrite", "--quiet",
                                  "--device", "cpu"], env, PREDICT_TIMEOUT_S)
        if res["predict"]["outcome"] == "ok" and target.exists():
            res["predict"]["output"] = nibabel_view(target)
    for point in (p for p in POINTS if p in res and res[p]["outcome"] not in ("not run", "skipped")):
        res[point]["as_expected"] = res[point]["outcome"] in exp["reader" if point == "reader_folder" else point]
    return res


def _cell(r: dict | None, path: str) -> str:
    if not r:
        return ""
    o = r["outcome"]
    msg = (r.get("message") or "").replace(path, "FILE").replace("|", "/")
    msg = re.sub(r"/\S*/(survey|site-packages)/\S*", "…", msg)[:110]
    site = f" `{r['site']}`" if r.get("site") else ""
    mark = "" if r.get("as_expected", True) else " ✗"
    warn = f" (+{len(r['warnings'])} warning)" if r.get("warnings") else ""
    if o == "ok":
        layers = " + ".join(f"{x['type']} {'x'.join(map(str, x['shape'] or []))}" for x in r.get("layers", []))
        return f"ok{': ' + layers if layers else ''}{warn}{mark}"
    return f"**{o}**: {msg}{site}{mark}" if o == "traceback" else f"{o}: {msg}{site}{mark}"


def _view_cell(v: dict) -> str:
    if "error" in v or "read_error" in v:
        return v.get("error") or v.get("read_error")
    if "modality" in v:
        return (f"{v['modality']} {v['sop_class'][:26]}, {v['transfer_syntax'][:22]}, {v['rows']}x{v['columns']}x"
                f"{v['frames']}, spp {v['samples']} {v['photometric']}" + ("" if v.get("geometry") else ", no geometry")
                + (f", det {v['affine_det']}" if v.get("affine_det") else "")
                + (f", lacks {len(v['missing_type2'])} Type 2" if v.get("missing_type2") else "")
                + (f"; pixels: {v['pixel_error'][:50]}" if "pixel_error" in v else ""))
    if v.get("class") == "folder":
        return f"folder, {v['files']} files"
    return (f"{v.get('class')} {v.get('shape')} {v.get('dtype')}"
            + (f", zooms {v['zooms']}, det {v['affine_det']}" if "zooms" in v else "")
            + (f", {v['nonfinite']} non-finite" if v.get("nonfinite") else "")
            + (f"; data: {v['data_error'][:60]}" if "data_error" in v else ""))


def summary(results: list[dict]) -> list[str]:
    lines = ["| entry point | tried | ok | refused | declined | traceback | timeout/failed | skipped | "
             "as issue 17 expects |", "|---|---|---|---|---|---|---|---|---|"]
    for point in POINTS:
        rs = [r[point] for r in results if point in r]
        n = {k: sum(1 for x in rs if x["outcome"] == k) for k in ("ok", "refused", "declined", "traceback",
                                                                  "skipped", "not run")}
        other = len(rs) - sum(n.values())
        tried = len(rs) - n["skipped"] - n["not run"]
        good = sum(1 for x in rs if x.get("as_expected"))
        lines.append(f"| {point} | {tried} | {n['ok']} | {n['refused']} | {n['declined']} | {n['traceback']} | "
                     f"{other} | {n['skipped']} | {good}/{tried} |")
    return lines


def causes(results: list[dict]) -> list[str]:
    """Refusals and tracebacks grouped by raise site and message pattern."""
    groups: dict[tuple, list] = {}
    for r in results:
        for point in POINTS:
            x = r.get(point)
            if not x or x["outcome"] not in ("refused", "traceback", "declined", "timeout", "failed"):
                continue
            msg = re.sub(r"^/\S+?:? ", "", x.get("message") or "")  # the file named first
            msg = re.sub(r"/\S+", "PATH", msg)
            msg = re.sub(r"\d+(\.\d+)?", "N", msg)[:100]
            key = (x["outcome"], x.get("site") or "-", msg)
            groups.setdefault(key, []).append((r["id"], r["name"], point, x.get("as_expected", True)))
    lines = ["| outcome | raised at | message pattern | n | unexpected | files (entry point) |",
             "|---|---|---|---|---|---|"]
    for (o, site, msg), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        names = ", ".join(sorted({f"{n} ({p})" for _, n, p, _ in items}))[:300]
        bad = sum(1 for *_, ok in items if not ok)
        lines.append(f"| {o} | `{site}` | {msg.replace('|', '/')} | {len(items)} | {bad} | {names} |")
    return lines


def write_markdown(results: list[dict], md: Path, meta: dict) -> None:
    rows = ["| id | group | file | nibabel / pydicom view | reader | reader (one-file folder) | inspect | predict | "
            "issue 17 expects |", "|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for r in results:
        if r["fmt"] == "skip":
            skipped.append(f"{r['group']}/{r['name']} ({r['note']})")
            continue
        cells = " | ".join(_cell(r.get(point), r["path"]) for point in POINTS)
        rows.append(f"| {r['id']} | {r['group']} | {r['name']} | {_view_cell(r['view'])} | {cells} | "
                    f"{r['expected']['why']} |")
    text = "\n".join([
        BEGIN, "", f"Generated by `scripts/survey_third_party.py` on {meta['date']} against package at "
        f"`{meta['package']}` ({meta['git']}); nibabel {meta['versions']['nibabel']}, pydicom "
        f"{meta['versions']['pydicom']}, highdicom {meta['versions']['highdicom']}. ✗ = not what issue 17 asks.",
        "", "### Counts", "", *summary(results), "", "### Refusals and failures grouped by where they are raised", "",
        *causes(results), "", "### Per file", "", *rows, "",
        f"Not run ({len(skipped)}: nibabel.load gives no SpatialImage, or not image data): " + "; ".join(skipped),
        "", END])
    old = md.read_text() if md.exists() else ""
    if BEGIN in old and END in old:
        text = old.split(BEGIN)[0] + text + old.split(END, 1)[1]
    elif old:
        text = old.rstrip() + "\n\n" + text + "\n"
    md.write_text(text)


def _meta(package_root: Path | None, label: str | None) -> dict:
    from importlib.metadata import version

    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "package": str(package_root or ROOT),
            "git": label or (git.stdout.strip() + (" (working tree)" if package_root is None else "?")),
            "versions": {n: version(n) for n in ("nibabel", "pydicom", "highdicom", "pydicom-data", "pylibjpeg",
                                                 "pylibjpeg-openjpeg", "pylibjpeg-libjpeg", "pynrrd", "numpy")}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--reader-one", "--locate"):
        print(json.dumps(reader_one(argv[1]) if argv[0] == "--reader-one" else locate(argv[1:])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/survey"))
    ap.add_argument("--md", type=Path, default=Path("/work/briefs/survey_17.md"))
    ap.add_argument("--package-root", type=Path, help="import napari_softseg from here (e.g. a snapshot)")
    ap.add_argument("--package-label", help="what --package-root is, for the report (e.g. 'git archive 617f55b')")
    ap.add_argument("--model", type=Path, default=ROOT / "napari_softseg/data/models/mni_demo")
    ap.add_argument("--only", help="run only entries whose name or group contains this (merged into result.json)")
    ap.add_argument("--render", action="store_true", help="only write the markdown from OUT/result.json")
    ap.add_argument("--no-predict", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "result.json"
    if args.render:
        old = json.loads(saved.read_text())
        write_markdown(old["results"], args.md, old["meta"])
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               **({"PYTHONPATH": str(args.package_root)} if args.package_root else {}))
    entries = corpus(args.out / "gen")
    if args.only:
        entries = [e for e in entries if args.only in e["name"] or args.only in e["group"]]
    results = []
    for n, e in enumerate(entries, 1):
        t0 = time.perf_counter()
        results.append(survey_entry(e, args.out, args.model, env, not args.no_predict))
        states = " ".join(f"{k}={results[-1][k]['outcome']}" for k in POINTS if k in results[-1])
        print(f"[{n}/{len(entries)}] {e['group']}/{e['name']}: {states or 'skipped'} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    meta = _meta(args.package_root, args.package_label)
    if args.only and saved.exists():  # a partial run replaces its entries in the full result
        fresh = {r["path"]: r for r in results}
        old = [r for r in json.loads(saved.read_text())["results"] if Path(r["path"]).exists()]
        results = [fresh.pop(r["path"], r) for r in old] + list(fresh.values())
    saved.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    write_markdown(results, args.md, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
