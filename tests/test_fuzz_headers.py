"""Property-based fuzzing (Hypothesis) of the header-first NIfTI reader, mask checks, JSON and model configs.

Whatever the bytes, each function either returns a sound result or raises ``SoftsegError`` naming the
file: never another exception, never a RuntimeWarning, and never reads a file whose declared size
exceeds the memory limit.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_softseg.errors import SoftsegError

FUZZ = settings(max_examples=int(os.environ.get("SOFTSEG_FUZZ_EXAMPLES", "120")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-30, 3e38, -3e38]),
)
DATATYPES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 7, 4096, -1]


@st.composite
def header_fields(draw):
    ndim = draw(st.integers(-2, 9))
    dims = [draw(st.integers(-3, 32767)) if draw(st.booleans()) else draw(st.integers(1, 6)) for _ in range(7)]
    return {
        "dim": [ndim] + dims,
        "datatype": draw(st.sampled_from(DATATYPES)),
        "bitpix": draw(st.sampled_from([0, 1, 8, 16, 32, 64, 128, 24, 7])),
        "pixdim": [draw(floats) for _ in range(8)],
        "slope": draw(floats),
        "inter": draw(floats),
        "qform_code": draw(st.integers(-1, 5)),
        "sform_code": draw(st.integers(-1, 5)),
        "srow": [draw(floats) for _ in range(12)],
        "vox_offset": draw(st.sampled_from([0.0, 352.0, 348.0, 1e9, -5.0, float("nan")])),
        "gz": draw(st.booleans()),
        "cut": draw(st.sampled_from([None, None, None, 10, 200, 348, 400])),
    }


def _write_fuzzed(path: Path, f: dict) -> Path:
    img = nib.Nifti1Image(np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2), np.eye(4))
    raw = bytearray(img.header.binaryblock + b"\0" * 4 + img.get_fdata(dtype=np.float32).tobytes(order="F"))
    struct.pack_into("<8h", raw, 40, *f["dim"])
    struct.pack_into("<hh", raw, 70, f["datatype"], f["bitpix"])
    struct.pack_into("<8f", raw, 76, *f["pixdim"])
    struct.pack_into("<f", raw, 108, f["vox_offset"])
    struct.pack_into("<ff", raw, 112, f["slope"], f["inter"])
    struct.pack_into("<hh", raw, 252, f["qform_code"], f["sform_code"])
    struct.pack_into("<12f", raw, 280, *f["srow"])
    data = bytes(raw if f["cut"] is None else raw[: f["cut"]])
    target = path.with_suffix(".nii.gz") if f["gz"] else path
    target.write_bytes(gzip.compress(data, 1) if f["gz"] else data)
    return target


@FUZZ
@given(f=header_fields())
def test_fuzzed_headers_give_a_volume_or_one_clear_error(tmp_path, monkeypatch, f):
    from napari_softseg.io.nifti import load_volume

    monkeypatch.setenv("SOFTSEG_MAX_MEMORY_GB", "0.25")  # nothing bigger than 150 MiB may be read
    path = _write_fuzzed(tmp_path / "f.nii", f)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            vol = load_volume(path)
        except SoftsegError as exc:
            assert str(exc).startswith(str(path) + ": ")
            assert "\n" not in str(exc)
            return
    assert vol.data.ndim in (3, 4)
    assert vol.data.nbytes <= 0.25 * 2**30
    assert np.all(np.isfinite(vol.affine)) and abs(np.linalg.det(vol.affine[:3, :3])) > 0
    if vol.data.dtype.kind == "f" and vol.data.size:
        finite = vol.data[np.isfinite(vol.data)]
        assert finite.size == 0 or np.abs(finite).max() <= np.finfo(np.float32).max


@FUZZ
@given(
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64, np.float32, np.float64, np.bool_]),
    values=st.lists(st.sampled_from([0, 1, 2, 255, -1, 0.5, np.nan, np.inf, 256, 1e10]), min_size=1, max_size=4),
    n=st.integers(0, 40),
)
def test_binarize_mask_accepts_exactly_binary_masks(dtype, values, n):
    from napari_softseg.io.case import binarize_mask

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        data = np.resize(np.asarray(values, dtype=np.float64), n).astype(dtype)
    present = set(np.unique(data[~np.isnan(data)] if data.dtype.kind == "f" else data).tolist())
    has_nan = data.dtype.kind == "f" and bool(np.isnan(data).any())
    binary = dtype == np.bool_ or (not has_nan and (present <= {0, 1} or present <= {0, 255}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            out = binarize_mask(data, "m.nii.gz")
        except SoftsegError as exc:
            assert not binary, f"refused a binary mask {present}: {exc}"
            assert str(exc).startswith("m.nii.gz: mask is not binary")
            return
    assert binary, f"accepted a non-binary mask {present}"
    assert out.dtype == np.uint8 and np.array_equal(out, (data != 0).astype(np.uint8))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)),
    max_leaves=30,
)


@FUZZ
@given(text=st.one_of(st.text(max_size=60), json_values.map(json.dumps),
                      st.integers(1, 5000).map(lambda d: "[" * d + "]" * d),
                      st.integers(1, 5000).map(lambda d: '{"a":' * d + "1" + "}" * d),
                      st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_json_reader_gives_an_object_or_one_clear_error(tmp_path, text):
    from napari_softseg.io.jsonio import read_json_object

    path = tmp_path / "x.json"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        data = read_json_object(path, "sidecar")
    except SoftsegError as exc:
        assert str(exc).startswith(f"{path}: sidecar")
        return
    assert isinstance(data, dict)


CONFIG_FIELDS = ["architecture", "task", "image_channels", "context_slices", "slice_axis", "normalization",
                 "softlabel", "loss", "temperature", "calibration", "training", "validation", "software",
                 "weights_dtype", "format_version", "format", "extra"]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(CONFIG_FIELDS), json_values, max_size=4))
def test_model_configs_are_valid_or_refused_in_one_line(changes):
    from napari_softseg.model.model_io import FORMAT_NAME, ModelConfig

    data = ModelConfig(architecture={"base_channels": 2, "depth": 1}).to_dict()
    data.update(changes)
    try:
        config = ModelConfig.from_dict(json.loads(json.dumps(data)), "cfg.json")
    except SoftsegError as exc:
        assert str(exc).startswith("cfg.json: ") and "\n" not in str(exc)
        return
    assert data["format"] == FORMAT_NAME
    assert math.isfinite(config.temperature) and config.temperature > 0
    assert config.slice_axis in (0, 1, 2) and config.architecture["base_channels"] <= 256
    assert isinstance(config.task, int) and isinstance(config.normalization, dict)
