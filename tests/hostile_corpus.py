"""A corpus of hostile and broken inputs for the ``softseg`` command line, and the checks every one must pass.

Each :class:`Entry` builds its files in an empty folder and returns the command to run. Running an
entry (:func:`run_entry`) checks the contract of docs/reliability.md:

* a refused input ends with exit code 2 and exactly one ``error:`` line on stderr that names the file
  (``hint``) and the problem (``keyword``); no traceback, no ``RuntimeWarning``;
* an accepted input ends with exit code 0;
* nothing that existed before is changed (content and modification time), no temporary file is left,
  a refused command writes none of its outputs, and no code from a model file runs (the marker file of
  the disguised pickle never appears).

``python tests/hostile_corpus.py`` runs the whole corpus and prints the figures by kind (the last line
is JSON); ``tests/test_fuzz_corpus.py`` runs it under pytest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import re
import struct
import sys
import warnings
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

TEMP_RE = re.compile(r"\.softseg-\d+-[0-9a-f]{8}\.(part|journal)")

#: NIfTI-1 header fields ``patch_header`` can set: struct format and byte offset.
HEADER_FIELDS = {"dim": ("<8h", 40), "datatype": ("<h", 70), "bitpix": ("<h", 72), "pixdim": ("<8f", 76),
                 "scl_slope": ("<f", 112), "scl_inter": ("<f", 116)}


# ------------------------------------------------------------------------------------------ file makers

def nii(path: Path, data, affine=None, dtype=None) -> Path:
    """Write ``data`` with plain nibabel (independent of the package's writer)."""
    data = np.asarray(data)
    if dtype is not None:
        data = data.astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine, dtype=data.dtype)
    nib.save(img, str(path))
    return path


def patch_header(path: Path, **fields) -> Path:
    """Overwrite raw NIfTI-1 header fields (bypassing nibabel's sanitising) in a .nii or .nii.gz file.

    Fields: ``dim`` (8 int16), ``datatype``, ``bitpix`` (int16), ``pixdim`` (8 float32), ``scl_slope``,
    ``scl_inter`` (float32), ``srow`` (3x4 float32, sets sform_code 1 and qform_code 0).
    """
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    buf = bytearray(raw)
    for name, (fmt, offset) in HEADER_FIELDS.items():
        if name in fields:
            struct.pack_into(fmt, buf, offset, *np.atleast_1d(fields[name]).tolist())
    if "srow" in fields:
        struct.pack_into("<hh", buf, 252, 0, 1)
        struct.pack_into("<12f", buf, 280, *np.asarray(fields["srow"], dtype=np.float32).ravel())
    if "qform_only" in fields:
        struct.pack_into("<hh", buf, 252, 1, 0)
    data = bytes(buf)
    path.write_bytes(gzip.compress(data, 1) if path.name.endswith(".gz") else data)
    return path


def good_case(folder: Path, shape=(12, 12, 1), raters=3, task=1, seed=0, image_name="image.nii.gz") -> Path:
    """A valid case: float32 image and ``raters`` uint8 masks in {0, 1}."""
    rng = np.random.default_rng(seed)
    nii(folder / image_name, rng.random(shape, dtype=np.float32))
    for r in range(1, raters + 1):
        nii(folder / f"task{task:02d}_seg{r:02d}.nii.gz", (rng.random(shape) > 0.5).astype(np.uint8))
    return folder


def good_model(folder: Path, task: int = 1) -> Path:
    """A tiny valid model folder (random weights)."""
    import torch

    from napari_softseg.model.model_io import ModelConfig, new_network, save_model

    torch.manual_seed(0)
    config = ModelConfig(architecture={"base_channels": 2, "depth": 1}, task=task)
    save_model(folder, new_network(config), config)
    return folder


def gzip_bomb(path: Path, shape=(2048, 1024, 1024), zeros_mib: int = 1) -> Path:
    """A .nii.gz whose header declares ``shape`` uint8 but whose stream holds ``zeros_mib`` MiB of zeros
    (several gzip members; a real bomb uses ``zeros_mib=2048``)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.uint8)
    hdr.set_sform(np.eye(4), 1)
    hdr.set_qform(np.eye(4), 1)
    first = gzip.compress(hdr.binaryblock + b"\0" * 4, 1)
    block = gzip.compress(b"\0" * 2**20 * min(zeros_mib, 64), 9)
    with open(path, "wb") as fh:
        fh.write(first)
        for _ in range(max(1, zeros_mib // 64) if zeros_mib >= 64 else 1):
            fh.write(block)
    return path


def write_config(model: Path, **changes) -> None:
    """Change fields of a model's config.json by hand (and drop its manifest, as a hand edit would not update it)."""
    cfg = json.loads((model / "config.json").read_text())
    for key, value in changes.items():
        if value is _DELETE:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (model / "config.json").write_text(json.dumps(cfg))
    (model / "manifest.json").unlink(missing_ok=True)


_DELETE = object()


def rewrite_weights(model: Path, change: Callable[[dict], dict]) -> None:
    """Rewrite model.safetensors with ``change(tensors)`` (and drop the manifest, as a hand edit would)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(model / "model.safetensors"))
    save_file(change(tensors), str(model / "model.safetensors"))
    (model / "manifest.json").unlink(missing_ok=True)


class Marker:
    """A pickle payload that creates a marker folder if anyone ever unpickles it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# ------------------------------------------------------------------------------------------- entries

@dataclass
class Entry:
    """One hostile input.

    Attributes:
        kind: Group in the figures (``nifti``, ``mask``, ``case``, ``output``, ``model``, ``argument``, ...).
        name: Unique id.
        build: ``build(tmp) -> argv`` writes the files under ``tmp`` and returns the command line.
        keyword: Regex the error line must contain (``None``: the input must be accepted, exit 0).
        hint: Text the error line must contain to name the file (default: the first path in argv found
            in the message is not required; ``""`` for pure argument errors).
        outputs: Paths (relative to tmp) the command would write; a refusal must leave them absent.
        marker: A path that must never appear (code execution).
    """

    kind: str
    name: str
    build: Callable[[Path], list[str]]
    keyword: str | None
    hint: str = ""
    outputs: tuple[str, ...] = ()
    marker: str | None = None


def _softlabel_with_image(make_image: Callable[[Path], object], name: str, keyword: str | None, kind="nifti",
                          hint="image.nii") -> Entry:
    def build(tmp: Path) -> list[str]:
        case = good_case(tmp / "case")
        (case / "image.nii.gz").unlink()
        make_image(case / "image.nii.gz")
        return ["softlabel", str(case), "-o", str(tmp / "soft.nii.gz"), "--agreement", str(tmp / "agree.nii.gz")]

    return Entry(kind, name, build, keyword, hint if keyword else "", outputs=("soft.nii.gz", "soft.json", "agree.nii.gz"))


def _softlabel_with_mask(make_mask: Callable[[Path], object], name: str, keyword: str | None, kind="mask",
                         hint="task01_seg02") -> Entry:
    def build(tmp: Path) -> list[str]:
        case = good_case(tmp / "case")
        (case / "task01_seg02.nii.gz").unlink()
        make_mask(case / "task01_seg02.nii.gz")
        return ["softlabel", str(case), "-o", str(tmp / "soft.nii.gz")]

    return Entry(kind, name, build, keyword, hint if keyword else "", outputs=("soft.nii.gz", "soft.json"))


def _predict_image(make_image: Callable[[Path], object], name: str, keyword: str | None, kind="nifti",
                   hint="img.nii") -> Entry:
    def build(tmp: Path) -> list[str]:
        model = good_model(tmp / "model")
        img = tmp / "img.nii.gz"
        make_image(img)
        return ["predict", str(model), str(img), "-o", str(tmp / "p.nii.gz"), "--quiet", "--device", "cpu"]

    return Entry(kind, name, build, keyword, hint if keyword else "", outputs=("p.nii.gz",))


def _predict_model(change: Callable[[Path], object], name: str, keyword: str | None, hint="model", marker=None,
                   extra=()) -> Entry:
    def build(tmp: Path) -> list[str]:
        model = good_model(tmp / "model")
        change(model)
        nii(tmp / "img.nii.gz", np.random.default_rng(0).random((12, 12, 2), dtype=np.float32))
        return ["predict", str(model), str(tmp / "img.nii.gz"), "-o", str(tmp / "p.nii.gz"), "--quiet",
                "--device", "cpu", *extra]

    return Entry("model", name, build, keyword, hint if keyword else "", outputs=("p.nii.gz",), marker=marker)


def _args(command: Callable[[Path], list[str]], name: str, keyword: str | None, hint: str = "",
          kind="argument", outputs=()) -> Entry:
    return Entry(kind, name, command, keyword, hint, outputs=outputs)


def _float(shape, value, dtype=np.float32):
    return lambda p: nii(p, np.full(shape, value), dtype=dtype)


def _rand(shape=(12, 12, 1), dtype=np.float32):
    return lambda p: nii(p, (np.random.default_rng(1).random(shape) * 100).astype(dtype))


def _mask(values, dtype=np.uint8, shape=(12, 12, 1)):
    def make(p):
        rng = np.random.default_rng(2)
        nii(p, np.asarray(values, dtype=dtype)[rng.integers(0, len(values), shape)])
    return make


def _truncate_gz(p: Path) -> None:
    nii(p, np.random.default_rng(3).random((12, 12, 1), dtype=np.float32))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _truncated_nii(tmp_name: str):
    def make(p: Path) -> None:
        plain = p.with_name(tmp_name)
        nii(plain, np.random.default_rng(3).random((12, 12, 1), dtype=np.float32))
        p.write_bytes(gzip.compress(plain.read_bytes()[:500]))
        plain.unlink()
    return make


def _patched(**fields):
    def make(p: Path) -> None:
        nii(p, np.random.default_rng(4).random((12, 12, 1), dtype=np.float32))
        patch_header(p, **fields)
    return make


def _patched_int(**fields):
    def make(p: Path) -> None:
        nii(p, np.random.default_rng(4).integers(0, 100, (12, 12, 1)).astype(np.int16))
        patch_header(p, **fields)
    return make


def _garbage(data: bytes):
    return lambda p: p.write_bytes(data)


def _rgb(p: Path) -> None:
    rgb = np.zeros((12, 12, 1), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nii(p, rgb)


def _rgba(p: Path) -> None:
    nii(p, np.zeros((12, 12, 1), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")]))


SROW_NAN = [[np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
SROW_INF = [[1, 0, 0, np.inf], [0, 1, 0, 0], [0, 0, 1, 0]]
SROW_ZERO = [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
NIFTI_DTYPES = (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float32,
                np.float64)


def entries() -> list[Entry]:
    """Every entry of the corpus."""
    out: list[Entry] = []
    # ---- images: broken files, absurd headers, values that cannot be used
    out += [
        _softlabel_with_image(_truncate_gz, "truncated-gzip", "truncated|cannot read"),
        _softlabel_with_image(_truncated_nii("x.nii"), "truncated-uncompressed-in-gz", "truncated|cannot read"),
        _softlabel_with_image(_garbage(b""), "empty-file", "cannot read NIfTI header|truncated"),
        _softlabel_with_image(_garbage(b"not a nifti at all" * 30), "garbage-bytes", "cannot read NIfTI header"),
        _softlabel_with_image(_garbage(gzip.compress(b"\x00" * 400)), "gzip-of-zeros", "cannot read NIfTI header"),
        _softlabel_with_image(_patched(dim=[3, 30000, 30000, 30000, 1, 1, 1, 1]), "absurd-dims",
                              "voxels|memory|does not match"),
        _softlabel_with_image(_patched(dim=[3, 0, 12, 1, 1, 1, 1, 1]), "zero-dim", "empty or negative size|cannot read"),
        _softlabel_with_image(_patched(dim=[3, -12, 12, 1, 1, 1, 1, 1]), "negative-dim",
                              "empty or negative|cannot read"),
        _softlabel_with_image(_patched(dim=[9, 12, 12, 1, 1, 1, 1, 1]), "ndim-9", "cannot read|dimensions"),
        _softlabel_with_image(_patched(dim=[1, 144, 1, 1, 1, 1, 1, 1]), "one-dimensional", "dimensions"),
        # unusable voxel sizes / affines open axis-aligned at 1 mm with a warning, as nibabel does (issue 17)
        _softlabel_with_image(_patched(pixdim=[1, 0, 0, 0, 1, 1, 1, 1], qform_only=True), "zero-pixdim", None),
        _softlabel_with_image(_patched(srow=SROW_ZERO), "zero-sform", None),
        _softlabel_with_image(_patched(srow=SROW_NAN), "nan-affine", None),
        _softlabel_with_image(_patched(srow=SROW_INF), "inf-affine", None),
        _softlabel_with_image(_patched(pixdim=[1, -2, -2, -2, 1, 1, 1, 1], qform_only=True), "negative-pixdim",
                              "affine differs", hint="task01_seg01"),
        _softlabel_with_image(_patched(datatype=32, bitpix=64), "complex64-header", "complex|truncated"),
        _softlabel_with_image(lambda p: nii(p, np.ones((12, 12, 1), np.complex64)), "complex64", "complex"),
        _softlabel_with_image(lambda p: nii(p, np.ones((12, 12, 1), np.complex128)), "complex128", "complex"),
        _softlabel_with_image(_rgb, "rgb24", "RGB"),
        _softlabel_with_image(_rgba, "rgba32", "RGB"),
        _softlabel_with_image(_patched(datatype=1, bitpix=1), "binary-datatype", "cannot read|unsupported"),
        _softlabel_with_image(_patched(datatype=1536, bitpix=128), "float128-datatype", "cannot read|unsupported"),
        _softlabel_with_image(_patched(datatype=999, bitpix=8), "unknown-datatype", "cannot read|unsupported"),
        _softlabel_with_image(_patched_int(scl_slope=float("inf")), "inf-slope", "scl_slope"),
        _softlabel_with_image(_patched_int(scl_inter=float("-inf"), scl_slope=1.0), "inf-inter", "scl_inter"),
        _softlabel_with_image(_patched_int(scl_slope=3e38), "huge-slope", "float32"),
        _softlabel_with_image(_float((12, 12, 1), 1e300, np.float64), "values-1e300", "float32"),
        # NaN / inf image voxels are background, with a warning naming the count (issue 17)
        _softlabel_with_image(_float((12, 12, 1), np.nan), "nan-image", None),
        _softlabel_with_image(_float((12, 12, 1), np.inf), "inf-image", None),
        _softlabel_with_image(lambda p: gzip_bomb(p), "gzip-bomb-header", "does not match|memory"),
        _softlabel_with_image(lambda p: nii(p, np.ones((12, 12, 1, 1, 3), np.float32)), "five-dims", "5D data"),
        _softlabel_with_image(lambda p: nii(p, np.ones((12, 13, 1), np.float32)), "image-shape-mismatch",
                              "does not match mask shape", kind="case"),
        _softlabel_with_image(lambda p: nii(p, np.ones((12, 12, 1), np.float32), affine=np.diag([2, 2, 2, 1])),
                              "image-affine-mismatch", "affine differs", kind="case", hint="task01_seg01"),
    ]
    for dtype in NIFTI_DTYPES:  # every numeric type nibabel writes: accepted
        out.append(_softlabel_with_image(_rand(dtype=dtype), f"image-{np.dtype(dtype).name}", None, kind="dtype"))
    # ---- masks
    out += [
        _softlabel_with_mask(_mask([0, 1]), "mask-0-1", None),
        _softlabel_with_mask(_mask([0, 255]), "mask-0-255", None),
        _softlabel_with_mask(_mask([0.0, 1.0], dtype=np.float32), "mask-float-0-1", None),
        _softlabel_with_mask(_mask([0, 2]), "mask-0-2", "not binary"),
        _softlabel_with_mask(_mask([0, 1, 2]), "mask-0-1-2", "not binary"),
        _softlabel_with_mask(_mask([0.0, 0.5, 1.0], dtype=np.float32), "mask-float-soft", "not binary"),
        _softlabel_with_mask(_mask([-1, 0], dtype=np.int16), "mask-negative", "not binary"),
        _softlabel_with_mask(_float((12, 12, 1), np.nan), "mask-nan", "NaN"),
        _softlabel_with_mask(_mask([0, 1], shape=(12, 11, 1)), "mask-shape-mismatch", "differs"),
        _softlabel_with_mask(lambda p: nii(p, np.zeros((12, 12, 1), np.uint8), affine=np.diag([1, 1, 3, 1])),
                             "mask-affine-mismatch", "affine differs"),
        _softlabel_with_mask(_mask([0, 1], shape=(12, 12, 1, 2)), "mask-4d", "2D or 3D|differs"),
        _softlabel_with_mask(lambda p: nii(p, np.zeros((12, 12, 1), np.complex64)), "mask-complex", "complex"),
        _softlabel_with_mask(_truncate_gz, "mask-truncated", "truncated|cannot read"),
        _softlabel_with_mask(lambda p: gzip_bomb(p), "mask-gzip-bomb", "differs|memory"),
        _softlabel_with_mask(lambda p: nii(p, np.zeros((12, 12, 1), np.uint8)), "mask-empty", None),
    ]
    for dtype in NIFTI_DTYPES:
        out.append(_softlabel_with_mask(_mask([0, 1], dtype=dtype), f"mask-{np.dtype(dtype).name}", None, kind="dtype"))
    # ---- cases and datasets
    out += _case_entries()
    out += _output_entries()
    out += _model_entries()
    out += _argument_entries()
    return out


def _case_entries() -> list[Entry]:
    def no_raters(tmp):
        case = good_case(tmp / "case", raters=0)
        return ["softlabel", str(case), "-o", str(tmp / "s.nii.gz")]

    def one_rater(tmp):
        case = good_case(tmp / "case", raters=1)
        return ["softlabel", str(case), "-o", str(tmp / "s.nii.gz")]

    def duplicate(tmp):
        case = good_case(tmp / "case")
        nii(case / "task01_seg01.nii", np.zeros((12, 12, 1), np.uint8))
        return ["softlabel", str(case), "-o", str(tmp / "s.nii.gz")]

    def missing_image(tmp):
        case = good_case(tmp / "case")
        (case / "image.nii.gz").unlink()
        return ["softlabel", str(case), "-o", str(tmp / "s.nii.gz")]

    def mixed_tasks(task):
        def build(tmp):
            case = good_case(tmp / "case")
            good_case(case, task=2, raters=2, seed=5, image_name="image.nii.gz")
            return ["softlabel", str(case), "-o", str(tmp / "s.nii.gz"), "--task", str(task)]
        return build

    def symlink_loop(tmp):
        ds = tmp / "ds" / "Training"
        good_case(ds / "case01")
        good_case(ds / "case02", seed=1)
        os.symlink("..", ds / "case02" / "loop")
        os.symlink(ds, tmp / "ds" / "again")
        return ["inspect", str(tmp / "ds"), "--json", str(tmp / "inspect.json")]

    def missing_case(tmp):
        return ["softlabel", str(tmp / "nope"), "-o", str(tmp / "s.nii.gz")]

    def case_is_file(tmp):
        nii(tmp / "img.nii.gz", np.zeros((4, 4, 1)))
        return ["softlabel", str(tmp / "img.nii.gz"), "-o", str(tmp / "s.nii.gz")]

    def non_utf8_names(tmp):
        case = tmp / os.fsdecode(b"case\xff\xfe")
        good_case(case)
        return ["inspect", str(tmp)]

    def predict_wrong_task_case(tmp):
        model = good_model(tmp / "model")
        case = good_case(tmp / "case", task=2)
        return ["predict", str(model), str(case), "-o", str(tmp / "p.nii.gz"), "--quiet"]

    def evaluate_pred_other_task(tmp):
        case = good_case(tmp / "case", task=2)
        hdr_img = nib.Nifti1Image(np.full((12, 12, 1), 0.5, np.float32), np.eye(4))
        hdr_img.header["descrip"] = b"softseg p(task1) T=1"
        nib.save(hdr_img, str(tmp / "pred.nii.gz"))
        return ["evaluate", str(case), "--pred", str(tmp / "pred.nii.gz"), "--task", "2", "--json", str(tmp / "e.json")]

    def evaluate_bomb(tmp):
        case = good_case(tmp / "case")
        gzip_bomb(tmp / "pred.nii.gz")
        return ["evaluate", str(case), "--pred", str(tmp / "pred.nii.gz"), "--json", str(tmp / "e.json")]

    def evaluate_out_of_range(tmp):
        case = good_case(tmp / "case")
        nii(tmp / "pred.nii.gz", np.full((12, 12, 1), 1.5, np.float32))
        return ["evaluate", str(case), "--pred", str(tmp / "pred.nii.gz"), "--json", str(tmp / "e.json")]

    def one_voxel(command):
        def build(tmp):
            case = tmp / "case"
            nii(case / "image.nii.gz", np.ones((1, 1, 1), np.float32))
            for r in (1, 2):
                nii(case / f"task01_seg0{r}.nii.gz", np.full((1, 1, 1), r - 1, np.uint8))
            if command == "predict":
                model = good_model(tmp / "model")
                return ["predict", str(model), str(case / "image.nii.gz"), "-o", str(tmp / "p.nii.gz"), "--quiet"]
            return ["softlabel", str(case), "-o", str(tmp / "s.nii.gz")]
        return build

    return [
        Entry("case", "zero-raters", no_raters, "no rater masks", "case"),
        Entry("case", "one-rater", one_rater, None),
        Entry("case", "duplicate-rater", duplicate, "appears twice", "case"),
        Entry("case", "missing-image", missing_image, "no image", "case"),
        Entry("case", "mixed-tasks-task2", mixed_tasks(2), None),
        Entry("case", "mixed-tasks-task3", mixed_tasks(3), "no rater masks for task 3", "case"),
        Entry("case", "symlink-loop", symlink_loop, None, outputs=("inspect.json",)),
        Entry("case", "missing-case", missing_case, "not found", "nope"),
        Entry("case", "case-is-a-file", case_is_file, "not a folder", "img.nii.gz"),
        Entry("case", "non-utf8-names", non_utf8_names, None),
        Entry("case", "predict-case-of-other-task", predict_wrong_task_case, "trained for task 1", "case",
              outputs=("p.nii.gz",)),
        Entry("case", "evaluate-prediction-of-other-task", evaluate_pred_other_task, "task 1, not task 2", "pred.nii.gz",
              outputs=("e.json",)),
        Entry("case", "evaluate-gzip-bomb", evaluate_bomb, "does not match", "pred.nii.gz", outputs=("e.json",)),
        Entry("case", "evaluate-out-of-range", evaluate_out_of_range, r"\[0, 1\]", "pred.nii.gz", outputs=("e.json",)),
        Entry("case", "one-voxel-softlabel", one_voxel("softlabel"), None),
        Entry("case", "one-voxel-predict", one_voxel("predict"), None),
    ]


def _output_entries() -> list[Entry]:
    def existing(tmp):
        case = good_case(tmp / "case")
        (tmp / "soft.json").write_text("{\"mine\": true}\n")
        return ["softlabel", str(case), "-o", str(tmp / "soft.nii.gz")]

    def existing_predict(tmp):
        model = good_model(tmp / "model")
        nii(tmp / "img.nii.gz", np.ones((12, 12, 1), np.float32))
        nii(tmp / "p.nii.gz", np.zeros((3, 3, 1), np.float32))
        return ["predict", str(model), str(tmp / "img.nii.gz"), "-o", str(tmp / "p.nii.gz"), "--quiet"]

    def output_is_input(tmp):
        case = good_case(tmp / "case")
        return ["softlabel", str(case), "-o", str(case / "task01_seg01.nii.gz"), "--overwrite"]

    def predict_over_input(tmp):
        model = good_model(tmp / "model")
        nii(tmp / "img.nii.gz", np.ones((12, 12, 1), np.float32))
        return ["predict", str(model), str(tmp / "img.nii.gz"), "-o", str(tmp / "img.nii.gz"), "--overwrite", "--quiet"]

    def output_inside_dataset(tmp):
        model = good_model(tmp / "model")
        good_case(tmp / "ds" / "Training" / "case01")
        good_case(tmp / "ds" / "Training" / "case02", seed=2)
        return ["predict", str(model), str(tmp / "ds"), "-o", str(tmp / "ds" / "preds"), "--quiet"]

    def parent_is_file(tmp):
        case = good_case(tmp / "case")
        (tmp / "afile").write_text("x")
        return ["softlabel", str(case), "-o", str(tmp / "afile" / "s.nii.gz")]

    def read_only(tmp):
        case = good_case(tmp / "case")
        return ["softlabel", str(case), "-o", "/proc/softseg-out/s.nii.gz"]

    def read_only_dir(tmp):
        case = good_case(tmp / "case")
        ro = tmp / "ro"
        ro.mkdir()
        os.chmod(ro, 0o555)
        return ["softlabel", str(case), "-o", str(ro / "s.nii.gz")]

    def name_too_long(tmp):
        case = good_case(tmp / "case")
        return ["softlabel", str(case), "-o", str(tmp / ("x" * 300 + ".nii.gz"))]

    def json_too_long(tmp):
        case = good_case(tmp / "case")
        nii(tmp / "pred.nii.gz", np.full((12, 12, 1), 0.5, np.float32))
        return ["evaluate", str(case), "--pred", str(tmp / "pred.nii.gz"), "--json", str(tmp / ("j" * 300 + ".json"))]

    def output_is_folder(tmp):
        case = good_case(tmp / "case")
        (tmp / "d.nii.gz").mkdir()
        return ["softlabel", str(case), "-o", str(tmp / "d.nii.gz")]

    def synthetic_into_nonempty(tmp):
        (tmp / "out").mkdir()
        (tmp / "out" / "keep.txt").write_text("mine")
        return ["synthetic", str(tmp / "out"), "--cases", "1", "--validation", "0", "--shape", "16,16,1"]

    def stale_temporaries(tmp):
        case = good_case(tmp / "case")
        (tmp / ".soft.nii.gz.softseg-999999999-0123abcd.part.nii.gz").write_bytes(b"half")
        return ["softlabel", str(case), "-o", str(tmp / "soft.nii.gz")]

    entries_ = [
        Entry("output", "existing-sidecar", existing, "already exists", "soft.json", outputs=("soft.nii.gz",)),
        Entry("output", "existing-prediction", existing_predict, "already exists", "p.nii.gz"),
        Entry("output", "output-is-an-input-mask", output_is_input, "replace the input", "task01_seg01"),
        Entry("output", "predict-over-its-input", predict_over_input, "replace the input", "img.nii.gz"),
        Entry("output", "output-inside-dataset", output_inside_dataset, "inside the input dataset", "preds",
              outputs=("ds/preds",)),
        Entry("output", "parent-is-a-file", parent_is_file, "not a folder|Not a directory|parent", "afile"),
        Entry("output", "unwritable-location", read_only, "could not write|No such file|Permission|not permitted",
              "/proc/softseg-out"),
        Entry("output", "name-too-long", name_too_long, "File name too long", "xxxxxxxx"),
        Entry("output", "json-name-too-long", json_too_long, "File name too long", "jjjjjjjj"),
        Entry("output", "output-is-a-folder", output_is_folder, "is a folder", "d.nii.gz"),
        Entry("output", "synthetic-into-nonempty", synthetic_into_nonempty, "not empty", "out"),
        Entry("output", "stale-temporary-of-dead-run", stale_temporaries, None,
              outputs=("soft.nii.gz", "soft.json")),
    ]
    if os.geteuid() != 0:  # root ignores permission bits
        entries_.append(Entry("output", "read-only-folder", read_only_dir, "Permission denied", "ro"))
    return entries_


def _model_entries() -> list[Entry]:
    def pickle_disguised(marker_name):
        def change(model: Path):
            marker = model.parent / marker_name
            (model / "model.safetensors").write_bytes(pickle.dumps(Marker(str(marker)), protocol=2))
        return change

    def zip_disguised(model: Path):
        import torch

        buf = io.BytesIO()
        torch.save({"w": torch.zeros(2)}, buf)
        (model / "model.safetensors").write_bytes(buf.getvalue())

    def truncated(model: Path):
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(data[: len(data) // 2])

    def header_lies(model: Path):
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes((2**40).to_bytes(8, "little") + data[8:])

    def first(tensors):
        return sorted(k for k in tensors if tensors[k].is_floating_point() and tensors[k].dim() > 1)[0]

    def wrong_shape(t):
        k = first(t)
        import torch
        t[k] = torch.zeros((3, *t[k].shape[1:]), dtype=t[k].dtype)
        return t

    def int_weights(t):
        import torch
        return {k: (v.to(torch.int32) if v.is_floating_point() else v) for k, v in t.items()}

    def nan_weights(t):
        k = first(t)
        t[k] = t[k].clone()
        t[k].view(-1)[0] = float("nan")
        return t

    def huge_weights(t):
        import torch
        k = first(t)
        t[k] = t[k].to(torch.float32) * 0 + 1e30
        return t

    def extra_tensor(t):
        import torch
        t["evil"] = torch.zeros(1)
        return t

    def missing_tensor(t):
        t.pop(first(t))
        return t

    def swap_weights_of_other_model(model: Path):
        other = good_model(model.parent / "other")
        from safetensors.torch import load_file, save_file
        t = load_file(str(other / "model.safetensors"))
        t = {k: v + 0.01 if v.is_floating_point() else v for k, v in t.items()}
        save_file(t, str(model / "model.safetensors"))  # manifest kept: a half-finished rewrite

    def config_text(text: str | bytes):
        def change(model: Path):
            (model / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
            (model / "manifest.json").unlink(missing_ok=True)
        return change

    def config(**changes):
        return lambda model: write_config(model, **changes)

    def no_config(model: Path):
        (model / "config.json").unlink()

    def pt_beside(model: Path):
        (model / "model.safetensors").unlink()
        (model / "model.pt").write_bytes(pickle.dumps(Marker(str(model.parent / "marker3")), protocol=2))

    deep = "[" * 100000 + "]" * 100000
    out = [
        _predict_model(pickle_disguised("marker"), "pickle-as-safetensors", "pickle", "model.safetensors",
                       marker="marker"),
        _predict_model(zip_disguised, "torch-zip-as-safetensors", "pickle", "model.safetensors"),
        _predict_model(pt_beside, "only-a-pickle-checkpoint", "pickle", "model", marker="marker3"),
        _predict_model(truncated, "truncated-safetensors", "not a valid safetensors", "model.safetensors"),
        _predict_model(header_lies, "safetensors-header-too-long", "not a valid safetensors|pickle",
                       "model.safetensors"),
        _predict_model(lambda m: rewrite_weights(m, wrong_shape), "wrong-shape", "do not match the architecture",
                       "model.safetensors"),
        _predict_model(lambda m: rewrite_weights(m, missing_tensor), "missing-tensor", "missing", "model.safetensors"),
        _predict_model(lambda m: rewrite_weights(m, extra_tensor), "unexpected-tensor", "unexpected",
                       "model.safetensors"),
        _predict_model(lambda m: rewrite_weights(m, int_weights), "integer-weights", "floating", "model.safetensors"),
        _predict_model(lambda m: rewrite_weights(m, nan_weights), "nan-weights", "NaN", "model.safetensors"),
        _predict_model(lambda m: rewrite_weights(m, huge_weights), "huge-weights", "values up to", "model.safetensors"),
        _predict_model(swap_weights_of_other_model, "weights-changed-after-manifest", "does not match manifest",
                       "model.safetensors"),
        _predict_model(no_config, "missing-config", "config.json missing", "model"),
        _predict_model(config_text(deep), "config-deep-nesting", "nested deeper", "config.json"),
        _predict_model(config_text("{not json"), "config-not-json", "not valid JSON", "config.json"),
        _predict_model(config_text("[1, 2]"), "config-not-object", "JSON object", "config.json"),
        _predict_model(config_text(b"\xff\xfe{}"), "config-not-utf8", "not UTF-8|not valid JSON", "config.json"),
        _predict_model(config(task="1"), "config-task-text", "whole number", "config.json"),
        _predict_model(config(temperature="hot"), "config-temperature-text", "temperature must be a number",
                       "config.json"),
        _predict_model(config(temperature=float("inf")), "config-temperature-inf", "positive and finite",
                       "config.json"),
        _predict_model(config(temperature=float("nan")), "config-temperature-nan", "positive and finite",
                       "config.json"),
        _predict_model(config(temperature=0), "config-temperature-zero", "positive", "config.json"),
        _predict_model(config(architecture=[1]), "config-architecture-list", "JSON object", "config.json"),
        _predict_model(config(architecture={"base_channels": 100000, "depth": 1}), "config-huge-width", "larger than",
                       "config.json"),
        _predict_model(config(architecture={"base_channels": 2, "depth": 1, "dropout": 0.5}), "config-unknown-arch-key",
                       "unknown architecture", "config.json"),
        _predict_model(config(temperatur=2.0), "config-unknown-key", "unknown field", "config.json"),
        _predict_model(config(normalization={"mode": 3}), "config-normalization-wrong", "normalisation|normalization",
                       "config.json"),
        _predict_model(config(normalization={"mode": "ct", "window": "wide"}), "config-window-text",
                       "normali[sz]ation|window", "config.json"),
        _predict_model(config(software=[]), "config-software-list", "JSON object", "config.json"),
        _predict_model(config(format_version=99), "config-newer-format", "not supported", "config.json"),
        _predict_model(config(format=_DELETE), "config-no-format", "not a napari-softseg model config",
                       "config.json"),
        _predict_model(config(slice_axis=5), "config-slice-axis", "slice_axis", "config.json"),
        _predict_model(config(image_channels=3), "config-channels-mismatch", "channel", "config.json|img.nii"),
        _predict_model(lambda m: None, "task-mismatch", "trained for task 1, not task 2", "model", extra=("--task", "2")),
    ]
    return out


def _argument_entries() -> list[Entry]:
    def softlabel(*extra):
        def build(tmp):
            case = good_case(tmp / "case")
            return ["softlabel", str(case), "-o", str(tmp / "s.nii.gz"), *extra]
        return build

    def predict(*extra):
        def build(tmp):
            model = good_model(tmp / "model")
            nii(tmp / "img.nii.gz", np.ones((12, 12, 1), np.float32))
            return ["predict", str(model), str(tmp / "img.nii.gz"), "-o", str(tmp / "p.nii.gz"), "--quiet", *extra]
        return build

    def train(*extra):
        def build(tmp):
            good_case(tmp / "ds" / "Training" / "case01")
            return ["train", str(tmp / "ds"), "-o", str(tmp / "m"), "--quiet", *extra]
        return build

    def synthetic(*extra):
        return lambda tmp: ["synthetic", str(tmp / "syn"), *extra]

    def evaluate(*extra):
        def build(tmp):
            case = good_case(tmp / "case")
            nii(tmp / "pred.nii.gz", np.full((12, 12, 1), 0.5, np.float32))
            return ["evaluate", str(case), "--pred", str(tmp / "pred.nii.gz"), *extra]
        return build

    return [
        _args(predict("--tile-size", "1"), "tile-size-1", "--tile-size"),
        _args(predict("--tile-size", "-5"), "tile-size-negative", "--tile-size"),
        _args(predict("--tile-size", "1e9"), "tile-size-text", "--tile-size"),
        _args(predict("--batch-size", "0"), "batch-size-0", "--batch-size"),
        _args(predict("--task", "-1"), "predict-task-negative", "--task"),
        _args(predict("--tile-size", "16"), "tile-size-16", None),
        _args(softlabel("--method", "smoothed", "--sigma-mm", "nan"), "sigma-nan", "--sigma-mm"),
        _args(softlabel("--method", "smoothed", "--sigma-mm", "1e9"), "sigma-1e9", "--sigma-mm"),
        _args(softlabel("--method", "smoothed", "--sigma-mm", "-1"), "sigma-negative", "--sigma-mm"),
        _args(softlabel("--weights", "1e308,1e308,1e308"), "weights-1e308", None),
        _args(softlabel("--weights", "nan,1,1"), "weights-nan", "--weights"),
        _args(softlabel("--weights", "inf,1,1"), "weights-inf", "--weights"),
        _args(softlabel("--weights", "-1,1,1"), "weights-negative", "--weights"),
        _args(softlabel("--weights", "0,0,0"), "weights-zero", "--weights"),
        _args(softlabel("--weights", "1,1"), "weights-count", "weights"),
        _args(softlabel("--weights", "a,b,c"), "weights-text", "--weights"),
        _args(softlabel("--task", "0"), "softlabel-task-0", "--task"),
        _args(evaluate("--threshold", "nan"), "threshold-nan", "--threshold"),
        _args(evaluate("--threshold", "2"), "threshold-2", "--threshold"),
        _args(train("--learning-rate", "-1"), "learning-rate-negative", "--learning-rate"),
        _args(train("--learning-rate", "nan"), "learning-rate-nan", "--learning-rate"),
        _args(train("--seed", "-1"), "seed-negative", "--seed"),
        _args(train("--seed", "99999999999"), "seed-huge", "--seed"),
        _args(train("--base-channels", "100000"), "base-channels-huge", "--base-channels"),
        _args(train("--base-channels", "0"), "base-channels-zero", "--base-channels"),
        _args(train("--patch-size", "100000"), "patch-size-huge", "--patch-size"),
        _args(train("--sigma-mm", "nan"), "train-sigma-nan", "--sigma-mm"),
        _args(synthetic("--shape", "4000,4000,200"), "synthetic-huge", "memory"),
        _args(synthetic("--shape", "0,5,5"), "synthetic-zero-side", "--shape"),
        _args(synthetic("--shape", "a,b"), "synthetic-shape-text", "--shape"),
        _args(synthetic("--raters", "0"), "synthetic-no-raters", "--raters"),
        _args(synthetic("--seed", "-1"), "synthetic-seed-negative", "--seed"),
        _args(synthetic("--cases", "-3"), "synthetic-cases-negative", "--cases"),
    ]


# -------------------------------------------------------------------------------------------- running

def snapshot(root: Path) -> dict[str, tuple]:
    """Every file under ``root``: content hash and modification time (symlinks: their target text)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
                continue
            try:
                st = os.stat(p)
                with open(p, "rb") as fh:
                    out[rel] = (hashlib.sha1(fh.read()).hexdigest(), st.st_mtime_ns)
            except OSError:
                out[rel] = ("unreadable",)
    return out


def run_cli(argv: list[str]) -> tuple[int, str, str, list]:
    """Run ``softseg`` in this process: (exit code, stdout, stderr, warnings raised)."""
    from napari_softseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue(), list(caught)


@dataclass
class Outcome:
    entry: Entry
    ok: bool
    problems: list[str]
    code: int
    error_line: str


def run_entry(entry: Entry, tmp: Path) -> Outcome:
    """Build and run one entry and check the contract (see the module docstring)."""
    tmp.mkdir(parents=True, exist_ok=True)
    argv = entry.build(tmp)
    before = snapshot(tmp)
    code, out, err, caught = run_cli(argv)
    after = snapshot(tmp)
    problems = []
    lines = [l for l in err.splitlines() if l.strip()]
    error_lines = [l for l in lines if "error:" in l]
    error_line = error_lines[0] if error_lines else ""
    if "Traceback" in err or "Traceback" in out:
        problems.append("traceback printed")
    bad_warnings = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    if bad_warnings or "RuntimeWarning" in err:
        problems.append(f"RuntimeWarning: {bad_warnings[0].message if bad_warnings else err}")
    if entry.keyword is None:
        if code != 0:
            problems.append(f"exit {code} (expected 0): {error_line or err[-300:]}")
    else:
        if code != 2:
            problems.append(f"exit {code} (expected 2)")
        if len(error_lines) != 1:
            problems.append(f"{len(error_lines)} error lines")
        if not re.search(entry.keyword, error_line):
            problems.append(f"error line lacks /{entry.keyword}/: {error_line!r}")
        if entry.hint and not re.search(entry.hint, error_line):
            problems.append(f"error line does not name {entry.hint!r}: {error_line!r}")
        for rel in entry.outputs:
            if rel not in before and (tmp / rel).exists():
                problems.append(f"refused but wrote {rel}")
    changed = [k for k, v in before.items() if after.get(k) != v and not TEMP_RE.search(k)]
    if changed:
        problems.append(f"changed existing files: {changed[:3]}")
    temps = [k for k in after if TEMP_RE.search(os.path.basename(k))]
    if temps:
        problems.append(f"temporary files left: {temps[:3]}")
    if entry.marker and (tmp / entry.marker).exists():
        problems.append("code from the model file ran (marker exists)")
    return Outcome(entry, not problems, problems, code, error_line)


def main() -> None:
    import tempfile
    import time
    from collections import Counter

    started = time.perf_counter()
    tried, clean = Counter(), Counter()
    failures = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for entry in entries():
            outcome = run_entry(entry, Path(tmpdir) / entry.name)
            tried[entry.kind] += 1
            clean[entry.kind] += outcome.ok
            verdict = "ok  " if outcome.ok else "FAIL"
            shown = outcome.error_line or f"exit {outcome.code}"
            print(f"{verdict} {entry.kind:<9} {entry.name:<36} {shown[:150]}")
            if not outcome.ok:
                failures.append({"name": entry.name, "problems": outcome.problems})
    print(json.dumps({"tried": sum(tried.values()), "handled_cleanly": sum(clean.values()),
                      "by_kind": {k: [clean[k], tried[k]] for k in tried}, "failures": failures,
                      "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
