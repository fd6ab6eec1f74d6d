"""The napari writers: soft maps and masks back to NIfTI with the source geometry, dtype and provenance."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import init_napari_plugins, write_nifti
from napari.layers import Image, Labels

from napari_softseg._napari import layers as L
from napari_softseg._napari.reader import get_reader
from napari_softseg._napari.writer import write_mask, write_soft_map
from napari_softseg.errors import SoftsegError
from napari_softseg.io.sidecar import sidecar_path


@pytest.fixture(autouse=True, scope="module")
def _plugins():
    """Let napari discover installed plugins (a viewer does this; ``Layer.save`` alone does not)."""
    init_napari_plugins()


def _lps_affine():
    a = np.zeros((4, 4))
    a[0, 0], a[1, 2], a[2, 1] = -0.9, -1.1, 2.5  # x: L, z: P, y: S (a coronal-ish, flipped acquisition)
    a[:3, 3] = [12.0, -7.0, 3.0]
    a[3, 3] = 1.0
    return a


def _layer(tuples, index=0):
    data, kwargs, layer_type = tuples[index]
    return (Image if layer_type == "image" else Labels)(data, **kwargs)


@pytest.mark.parametrize("shape", [(9, 7, 5), (9, 7, 1)], ids=["3d", "2d"])
def test_read_write_round_trip_image(tmp_path, shape):
    rng = np.random.default_rng(0)
    data = rng.random(shape).astype(np.float32)
    src = write_nifti(tmp_path / "in.nii.gz", data, _lps_affine())
    layer = _layer(get_reader(str(src))(str(src)))
    out = tmp_path / "out.nii.gz"
    written = layer.save(str(out), plugin="napari-softseg")
    assert str(out) in written
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.float32
    assert np.allclose(back.affine, nib.load(str(src)).affine, atol=1e-5)
    assert np.array_equal(np.asarray(back.dataobj).reshape(shape), data)


def test_soft_map_round_trip_with_provenance(tmp_path):
    rng = np.random.default_rng(1)
    soft = rng.random((8, 6, 4)).astype(np.float32)
    geometry = L.Geometry(_lps_affine(), soft.shape)
    data, kwargs, _ = L.soft_map_layer(
        soft, geometry, name="soft prediction", kind="prediction", model="/models/mni_demo", device="cpu",
        method="mean", source="/data/case13/image.nii.gz",
    )
    out = tmp_path / "pred.nii.gz"
    paths = write_soft_map(str(out), data, Image(data, **kwargs)._get_state())
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.float32
    assert np.array_equal(np.asarray(img.dataobj), soft)
    assert np.allclose(img.affine, geometry.affine)
    descrip = img.header["descrip"].item().decode()
    assert descrip.startswith("softseg prediction") and "model=mni_demo" in descrip and "device=cpu" in descrip
    info = json.loads(sidecar_path(out).read_text())
    assert paths == [str(out), str(sidecar_path(out))]
    assert info["kind"] == "prediction" and info["model"] == "/models/mni_demo" and info["method"] == "mean"
    # Reading it back restores a soft-map layer with its provenance.
    back, back_kwargs, layer_type = get_reader(str(out))(str(out))[0]
    assert layer_type == "image" and back_kwargs["colormap"].name == L.SOFT_MAP_COLORMAP and back_kwargs["blending"] == "translucent"
    assert back_kwargs["metadata"]["softseg"]["provenance"]["model"] == "/models/mni_demo"
    assert np.array_equal(back, data)


def test_thresholded_mask_is_uint8_with_threshold(tmp_path):
    rng = np.random.default_rng(2)
    soft = rng.random((8, 6, 4)).astype(np.float32)
    geometry = L.Geometry(_lps_affine(), soft.shape)
    soft_layer = _layer([L.soft_map_layer(soft, geometry, name="soft prediction", model="m", device="cpu")])
    layer = _layer([L.mask_layer_from_soft(soft_layer, 0.7)])
    assert L.provenance_of(layer)["threshold"] == 0.7 and L.kind_of(layer) == "mask"
    out = tmp_path / "mask.nii.gz"
    layer.save(str(out), plugin="napari-softseg")
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(img.dataobj), (soft >= 0.7).astype(np.uint8))  # p >= t, source voxel order
    assert np.allclose(img.affine, geometry.affine)
    assert "p>=0.7 " in img.header["descrip"].item().decode()
    info = json.loads(sidecar_path(out).read_text())
    assert info["threshold"] == 0.7 and info["model"] == "m" and info["soft_map"] == "soft prediction"
    with pytest.raises(SoftsegError, match="between 0 and 1"):
        L.mask_layer_from_soft(soft_layer, 1.5)


def test_labels_without_softseg_metadata_use_layer_affine(tmp_path):
    """A Labels layer drawn in napari (no metadata) is placed by its own scale/translate."""
    data = np.zeros((4, 5, 6), np.uint8)
    data[1, 2, 3] = 1
    layer = Labels(data, scale=(3.0, 2.0, 1.0), translate=(10.0, 20.0, 30.0))
    out = tmp_path / "drawn.nii.gz"
    layer.save(str(out), plugin="napari-softseg")
    img = nib.load(str(out))
    arr = np.asarray(img.dataobj)
    assert arr.shape == (6, 5, 4)
    (i, j, k), = np.argwhere(arr == 1)
    world = img.affine @ np.array([i, j, k, 1.0])
    assert np.allclose(world[:3], [30.0 + 3 * 1.0, 20.0 + 2 * 2.0, 10.0 + 3.0 * 1])


def test_large_label_values_are_refused(tmp_path):
    data = np.zeros((3, 3, 3), np.int32)
    data[0, 0, 0] = 300
    out = tmp_path / "big.nii.gz"
    with pytest.raises(SoftsegError, match="0..255"):
        write_mask(str(out), data, Labels(data)._get_state())
    assert not out.exists()


def test_nan_soft_map_is_refused_and_nothing_written(tmp_path):
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    out = tmp_path / "nan.nii.gz"
    with pytest.raises(SoftsegError, match="NaN"):
        write_soft_map(str(out), data, Image(data)._get_state())
    assert not out.exists() and not sidecar_path(out).exists()


def test_foreign_sidecar_is_never_replaced(tmp_path):
    out = tmp_path / "pred.nii.gz"
    sidecar_path(out).write_text('{"mine": true}')
    data = np.zeros((3, 3, 3), np.float32)
    with pytest.raises(SoftsegError, match="not written by napari-softseg"):
        write_soft_map(str(out), data, Image(data)._get_state())
    assert not out.exists()
    assert json.loads(sidecar_path(out).read_text()) == {"mine": True}


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "pred.nii.gz"
    data = np.full((3, 3, 3), 0.25, np.float32)
    write_soft_map(str(out), data, Image(data)._get_state())
    write_soft_map(str(out), data * 2, Image(data * 2)._get_state())  # napari's dialog asked already
    assert np.allclose(np.asarray(nib.load(str(out)).dataobj), 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.nii.gz", "pred.softseg.json"]


def test_extension_is_added(tmp_path):
    data = np.zeros((3, 3, 3), np.float32)
    paths = write_soft_map(str(tmp_path / "noext"), data, Image(data)._get_state())
    assert paths[0].endswith("noext.nii.gz")
