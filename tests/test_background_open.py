"""Issue 15 §2: a large file opened from the viewer is read in a worker thread; the window keeps answering.

``viewer.open`` (what File ▸ Open and drag-and-drop call) of a path above
``background_open.BACKGROUND_MIN_BYTES`` returns at once; the layers (the same as a synchronous read's)
appear when the worker has read them, with a napari progress bar, and a read error becomes a
notification naming the file. The threshold is lowered here so the small demo case takes that path.
"""

from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pytest

from napari_softseg._napari import background_open
from napari_softseg._napari.reader import get_reader, read
from napari_softseg.datasets.bundled import demo_case_path

PLUGIN = "napari-softseg"


@pytest.fixture
def always_background(monkeypatch):
    monkeypatch.delenv(background_open.SYNC_ENV, raising=False)
    monkeypatch.setattr(background_open, "BACKGROUND_MIN_BYTES", 0)


@pytest.fixture
def progress_log(monkeypatch):
    """Every description napari progress bars are given while the test runs."""
    import napari.utils

    log: list[str] = []

    class Recording(napari.utils.progress):
        def __init__(self, *args, desc=None, **kwargs):
            log.append(desc)
            super().__init__(*args, desc=desc, **kwargs)

        def set_description(self, desc):
            log.append(desc)
            super().set_description(desc)

    monkeypatch.setattr(napari.utils, "progress", Recording)
    return log


def test_large_case_opens_in_background_with_the_same_layers(make_napari_viewer, qtbot, always_background,
                                                            progress_log):
    viewer = make_napari_viewer()
    case = demo_case_path()
    added_now = viewer.open(str(case), plugin=PLUGIN)
    assert added_now == [] and len(viewer.layers) == 0          # nothing blocked the call
    (job,) = background_open.pending()
    qtbot.waitUntil(lambda: job.done.is_set(), timeout=60000)

    expected = read(case)
    assert [layer.name for layer in viewer.layers] == [kwargs["name"] for _, kwargs, _ in expected]
    assert [type(layer).__name__.lower() for layer in viewer.layers] == [t for _, _, t in expected]
    image = viewer.layers[expected[0][1]["name"]]
    np.testing.assert_array_equal(np.asarray(image.data), np.asarray(expected[0][0]))
    np.testing.assert_allclose(image.affine.affine_matrix, expected[0][1]["affine"])
    assert image.metadata["softseg"]["kind"] == "image"
    assert image.source.path == str(case) and image.source.reader_plugin == PLUGIN
    rater = viewer.layers["rater 1"]
    np.testing.assert_array_equal(np.asarray(rater.data), np.asarray(expected[1][0]))
    assert job.layers == list(viewer.layers) and job.error is None
    assert background_open.pending() == []
    # progress: reading, then one step per layer
    assert progress_log[0] == f"Opening {case.name}: reading …"
    assert f"Opening {case.name}: adding layer {len(expected)} of {len(expected)}" in progress_log


def test_event_loop_runs_while_the_file_is_read(make_napari_viewer, qtbot, always_background):
    """The read runs off the GUI thread: timers fire and nothing is added until it returns."""
    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer()
    gate = threading.Event()

    def slow_read(path):
        gate.wait(30)
        return read(path)

    job = background_open.BackgroundRead(viewer, [demo_case_path()], slow_read).start()
    fired: list[int] = []
    QTimer.singleShot(0, lambda: fired.append(1))
    qtbot.waitUntil(lambda: bool(fired), timeout=5000)
    assert job.reading and len(viewer.layers) == 0
    gate.set()
    qtbot.waitUntil(lambda: job.done.is_set(), timeout=60000)
    assert len(viewer.layers) == len(read(demo_case_path()))


def test_an_empty_viewer_gets_its_sliders_on_a_turn_before_the_first_layer(make_napari_viewer, qtbot,
                                                                           always_background):
    """napari makes the dimension sliders with the first layer otherwise, on the same turn."""
    sync = make_napari_viewer()
    for data, kwargs, layer_type in read(demo_case_path()):
        getattr(sync, f"add_{layer_type}")(data, **kwargs)
    viewer = make_napari_viewer()
    layers_when_3d: list[int] = []
    viewer.dims.events.ndim.connect(lambda event: layers_when_3d.append(len(viewer.layers)))
    viewer.open(str(demo_case_path()), plugin=PLUGIN)
    (job,) = background_open.pending()
    qtbot.waitUntil(lambda: job.done.is_set(), timeout=60000)
    assert layers_when_3d[:1] == [0] and viewer.dims.ndim == 3             # before any layer was in
    assert [layer.name for layer in viewer.layers] == [layer.name for layer in sync.layers]
    assert viewer.dims.range == sync.dims.range and viewer.dims.current_step == sync.dims.current_step


def test_every_layer_model_is_made_before_the_first_is_added(make_napari_viewer, qtbot, always_background,
                                                             monkeypatch):
    """Making a layer model is Python work that competes with the GUI thread for the GIL (the first Labels
    layer imports napari's feature tables): made while the GUI thread inserted the previous layer, it
    stretched that step to 0.4 s at 512 x 512 x 300. All models are made first; then the worker only waits."""
    from napari.layers import Layer

    viewer = make_napari_viewer()
    order: list[str] = []
    real_create = Layer.create.__func__

    def create(cls, data, meta=None, layer_type="image"):
        order.append(f"make {meta['name']}")
        return real_create(cls, data, meta, layer_type)

    monkeypatch.setattr(Layer, "create", classmethod(create))
    viewer.layers.events.inserted.connect(lambda event: order.append(f"add {event.value.name}"))
    job = background_open.BackgroundRead(viewer, [demo_case_path()], read).start()
    qtbot.waitUntil(lambda: job.done.is_set(), timeout=60000)
    names = [kwargs["name"] for _, kwargs, _ in read(demo_case_path())]
    assert order == [f"make {n}" for n in names] + [f"add {n}" for n in names]


def test_read_error_is_a_notification_naming_the_file(make_napari_viewer, qtbot, always_background, tmp_path,
                                                      monkeypatch):
    import napari.utils.notifications as notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    path = tmp_path / "scan.nii.gz"
    nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 30), dtype=np.float32), np.eye(4)).to_filename(path)
    path.write_bytes(path.read_bytes()[:20000])               # truncated: the header reads, the data does not
    viewer = make_napari_viewer()
    assert viewer.open(str(path), plugin=PLUGIN) == []
    (job,) = background_open.pending()
    qtbot.waitUntil(lambda: job.done.is_set(), timeout=30000)
    assert len(viewer.layers) == 0
    assert job.error is not None and len(shown) == 1
    assert "scan.nii.gz" in shown[0] and "truncated" in shown[0]


def test_small_paths_and_sync_switch_read_synchronously(make_napari_viewer, monkeypatch):
    case = demo_case_path()
    viewer = make_napari_viewer()
    assert background_open.voxel_bytes([case]) < background_open.BACKGROUND_MIN_BYTES
    added = viewer.open(str(case), plugin=PLUGIN)                 # the demo case: small, read at once
    assert len(added) == len(viewer.layers) == len(read(case))
    monkeypatch.setattr(background_open, "BACKGROUND_MIN_BYTES", 0)
    monkeypatch.setenv(background_open.SYNC_ENV, "1")
    tuples = get_reader(str(case))(str(case))
    assert [kwargs["name"] for _, kwargs, _ in tuples] == [layer.name for layer in added]


def test_voxel_bytes_counts_nifti_headers_only(tmp_path):
    nib.Nifti1Image(np.zeros((10, 20, 30), np.uint8), np.eye(4)).to_filename(tmp_path / "image.nii.gz")
    nib.Nifti1Image(np.zeros((10, 20, 30), np.uint8), np.eye(4)).to_filename(tmp_path / "task01_seg01.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    assert background_open.voxel_bytes([tmp_path]) == 2 * 4 * 10 * 20 * 30
    assert background_open.voxel_bytes([tmp_path / "image.nii.gz"]) == 4 * 10 * 20 * 30
    assert background_open.voxel_bytes([tmp_path / "missing"]) == 0


def test_peeked_shapes_match_nibabel_on_files_no_one_here_wrote(tmp_path):
    """The GUI thread's size estimate reads headers without nibabel: checked against nibabel on its own test
    files, NIfTI-2, big-endian and not-NIfTI files."""
    from pathlib import Path

    from napari_softseg.io.nifti import peek_nifti_shape

    files = sorted((Path(nib.__file__).parent / "tests" / "data").glob("*.nii*"))
    data = np.zeros((7, 6, 5, 2), np.int16)
    nib.Nifti2Image(data, np.eye(4)).to_filename(tmp_path / "two.nii.gz")
    header = nib.Nifti1Header().as_byteswapped(">")
    nib.Nifti1Image(data.astype(">i2"), np.eye(4), header=header).to_filename(tmp_path / "big_endian.nii")
    assert nib.load(str(tmp_path / "big_endian.nii")).header.endianness == ">"
    files += [tmp_path / "two.nii.gz", tmp_path / "big_endian.nii"]
    assert len(files) >= 6
    for f in files:
        try:
            expected = int(np.prod(nib.load(str(f)).shape))
        except Exception:  # noqa: BLE001 - a file nibabel refuses: the peek may say anything but must not raise
            peek_nifti_shape(f)
            continue
        shape = peek_nifti_shape(f)
        assert shape is not None and int(np.prod(shape)) == expected, f.name     # CIFTI: same voxels, 6-D dims
    (tmp_path / "notes.nii").write_text("not a header")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08garbage")
    assert peek_nifti_shape(tmp_path / "notes.nii") is None
    assert peek_nifti_shape(tmp_path / "broken.nii.gz") is None
    assert peek_nifti_shape(tmp_path / "missing.nii") is None
