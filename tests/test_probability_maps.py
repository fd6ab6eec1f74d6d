"""Other tools' probability maps: nnU-Net ``--save_probabilities`` .npz (never its pickle), MONAI/nnU-Net NIfTI."""

from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest

from napari_softseg.cli import main
from napari_softseg.errors import SoftsegError
from napari_softseg.io.probability_maps import read_nnunet_npz, read_soft_map

AFFINE = np.array([[0.0, 0.0, 2.5, -20.0], [-1.5, 0.0, 0.0, 40.0], [0.0, 1.2, 0.0, -7.0], [0, 0, 0, 1]])


class _Trap:
    """Unpickling this writes a marker file: proves the .pkl beside the .npz is never opened."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def soft():
    rng = np.random.default_rng(0)
    p = rng.random((12, 10, 6)).astype(np.float32)
    p[:3] = 0.0
    return p


def _write_nnunet(folder, soft, n_classes=2, affine=AFFINE, key="probabilities"):
    """nnU-Net v2 layout: CASE.npz (C, Z, Y, X), CASE.nii.gz (segmentation), CASE.pkl (properties)."""
    folder.mkdir(parents=True, exist_ok=True)
    if n_classes == 2:
        probs = np.stack([1 - soft, soft])
    else:
        rest = (1 - soft) / (n_classes - 1)
        probs = np.stack([rest] * (n_classes - 1) + [soft])
    np.savez_compressed(folder / "case_001.npz", **{key: probs.transpose(0, 3, 2, 1).astype(np.float16)})
    seg = np.argmax(probs, axis=0).astype(np.uint8)
    nib.save(nib.Nifti1Image(seg, affine), str(folder / "case_001.nii.gz"))
    (folder / "case_001.pkl").write_bytes(pickle.dumps(_Trap(folder / "UNPICKLED")))
    return folder / "case_001.npz"


def test_nnunet_npz_read_without_its_pickle(tmp_path, soft):
    path = _write_nnunet(tmp_path / "nnunet", soft)
    data, affine = read_nnunet_npz(path)
    assert data.shape == soft.shape and data.dtype == np.float32
    np.testing.assert_allclose(data, soft, atol=1e-3)  # nnU-Net stores float16
    np.testing.assert_allclose(affine, AFFINE)
    assert not (tmp_path / "nnunet" / "UNPICKLED").exists()


def test_nnunet_v1_key_and_multiclass(tmp_path, soft):
    path = _write_nnunet(tmp_path / "v1", soft, n_classes=3, key="softmax")
    with pytest.raises(SoftsegError, match="3 classes; choose one"):
        read_soft_map(path)
    data, _ = read_soft_map(path, channel=2)
    np.testing.assert_allclose(data, soft, atol=1e-3)
    from napari_softseg._napari.reader import get_reader

    layers = get_reader(str(path))(str(path))
    assert [kw["name"] for _, kw, _ in layers] == ["case_001 class 1", "case_001 class 2"]


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, probabilities=np.array([_Trap(tmp_path / "UNPICKLED")], dtype=object))
    with pytest.raises(SoftsegError, match="pickled objects are never loaded"):
        read_nnunet_npz(path, reference_affine=np.eye(4))
    assert not (tmp_path / "UNPICKLED").exists()


def test_npz_without_geometry_or_out_of_range(tmp_path, soft):
    path = _write_nnunet(tmp_path / "n", soft)
    (tmp_path / "n" / "case_001.nii.gz").unlink()
    with pytest.raises(SoftsegError, match="holds no geometry"):
        read_nnunet_npz(path)
    data, affine = read_nnunet_npz(path, reference_affine=AFFINE)
    np.testing.assert_allclose(affine, AFFINE)
    np.savez(tmp_path / "logits.npz", probabilities=np.full((2, 6, 10, 12), 3.0, np.float32))
    with pytest.raises(SoftsegError, match="not probabilities: values 3"):
        read_nnunet_npz(tmp_path / "logits.npz", reference_affine=AFFINE)


def test_napari_reader_opens_npz_and_probability_nifti_as_soft_maps(tmp_path, soft):
    from napari_softseg._napari import layers as L
    from napari_softseg._napari.reader import get_reader

    npz = _write_nnunet(tmp_path / "nnunet", soft)
    # MONAI SaveImage of a softmax: (X, Y, Z, C); older MONAI/nnU-Net exports add a time axis (X, Y, Z, 1, C)
    monai4 = tmp_path / "img_softmax.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([1 - soft, soft], -1), AFFINE), str(monai4))
    monai5 = tmp_path / "img_seg5d.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([1 - soft, soft], -1)[:, :, :, None], AFFINE), str(monai5))
    prob3 = tmp_path / "case_prob.nii.gz"
    nib.save(nib.Nifti1Image(soft, AFFINE), str(prob3))
    for path in (npz, monai4, monai5, prob3):
        reader = get_reader(str(path))
        assert reader is not None, path
        (data, kwargs, kind), = reader(str(path))
        meta = L.softseg_meta(kwargs["metadata"])
        assert kind == "image" and meta["kind"] == "prediction" and kwargs["colormap"].name == L.SOFT_MAP_COLORMAP, path
        geometry = L.Geometry(np.asarray(meta["geometry"]["affine"]), tuple(meta["geometry"]["shape"]))
        np.testing.assert_allclose(geometry.affine, AFFINE)
        np.testing.assert_allclose(geometry.from_display(data), soft, atol=1e-3)

    # a rater mask stored as float {0, 1} is not a probability map
    rater = tmp_path / "task01_seg01.nii.gz"
    nib.save(nib.Nifti1Image((soft > 0.5).astype(np.float32), AFFINE), str(rater))
    (_, kwargs, _), = get_reader(str(rater))(str(rater))
    assert L.softseg_meta(kwargs["metadata"])["kind"] != "prediction"

    # a normalised scan in [0, 1] whose name does not say "probability" stays an image
    scan = tmp_path / "t1_norm.nii.gz"
    nib.save(nib.Nifti1Image(soft, AFFINE), str(scan))
    (_, kwargs, _), = get_reader(str(scan))(str(scan))
    assert L.softseg_meta(kwargs["metadata"])["kind"] == "image"


def test_evaluate_accepts_an_nnunet_npz(tmp_path, capsys):
    from napari_softseg.datasets.bundled import demo_case_path

    case = demo_case_path()
    masks = np.stack([np.asarray(nib.load(p).dataobj) for p in sorted(case.glob("task01_seg*.nii.gz"))])
    soft = masks.mean(0).astype(np.float32) * 0.9 + 0.05
    image = nib.load(case / "image.nii.gz")
    nib.save(nib.Nifti1Image(soft, image.affine), str(tmp_path / "pred.nii.gz"))
    folder = tmp_path / "nnunet"
    folder.mkdir()
    np.savez_compressed(folder / "case01.npz", probabilities=np.stack([1 - soft, soft]).transpose(0, 3, 2, 1))
    nib.save(nib.Nifti1Image((soft > 0.5).astype(np.uint8), image.affine), str(folder / "case01.nii.gz"))
    assert main(["evaluate", str(case), "--pred", str(tmp_path / "pred.nii.gz"), "--json", str(tmp_path / "a.json")]) == 0
    assert main(["evaluate", str(case), "--pred", str(folder / "case01.npz"), "--json", str(tmp_path / "b.json")]) == 0
    import json

    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["qubiq_score"] == pytest.approx(b["qubiq_score"], abs=1e-6) and a["ece"] == pytest.approx(b["ece"], abs=1e-6)
