"""Screenshot of the Threshold explorer with a model's named operating points (run under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1600x24" python docs/img/make_named_points_screenshot.py docs/img

What a service deploying the demo model does: copy the bundled model (its folder is not written to),
choose three named points on the bundled ``mni_demo/Validation`` cohort with the core API (the same job as
``softseg operating-point``; CPU, the predictions kept in a temporary folder), then open one of those
predictions in napari (its sidecar names the model folder and the weights' checksum), open the Threshold
explorer from the Plugins menu, pick the point ``screening`` and tick the cohort mode. Writes
``named-points.png``: the explorer dock of a window tall enough (1500 px) to show the whole dock, the named
points and the PR curve together, without scrolling. The user's napari settings are not touched (a
temporary copy is used).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_plain_napari_screenshots import wait_until  # noqa: E402

PLUGIN = "napari-softseg"
SIZE = (1600, 1500)
POINTS = {"screening": "sensitivity>=0.9", "best-dice": "dice=max", "confirm": "ppv>=0.9"}
CASE = "case13"


def choose_points(model_dir: Path, predictions: Path) -> None:
    from napari_softseg.datasets.bundled import demo_dataset_path
    from napari_softseg.pipeline.operating_points import choose_operating_point
    from napari_softseg.progress import drive

    for name, requirement in POINTS.items():
        record = drive(choose_operating_point(model_dir, demo_dataset_path() / "Validation", name=name,
                                              requirement=requirement, predictions=predictions, device="cpu"))
        print(f"{name}: {requirement} -> t = {record['threshold']:.3f} on {record['cohort']['n_cases']} case(s)")


def main(out: Path) -> int:
    import napari

    from napari_softseg.cli.demo_command import isolate_settings, settle
    from napari_softseg.datasets.bundled import demo_dataset_path, demo_model_path

    isolate_settings()
    with tempfile.TemporaryDirectory(prefix="softseg-named-") as tmp:
        model_dir = Path(shutil.copytree(demo_model_path(), Path(tmp) / "mni_demo"))
        predictions = Path(tmp) / "predictions"
        choose_points(model_dir, predictions)

        viewer = napari.Viewer(title="napari", show=True)
        window = viewer.window._qt_window
        window.resize(*SIZE)
        viewer.open(demo_dataset_path() / "Validation" / CASE, plugin=PLUGIN)
        viewer.open(next((predictions / CASE).glob("prediction_task*.nii.gz")), plugin=PLUGIN)
        _, explorer = viewer.window.add_plugin_dock_widget(PLUGIN, "Threshold explorer")
        wait_until(lambda: explorer.ready and explorer.reference is not None)
        panel = explorer.named_points
        print(panel.status.text())
        panel.pick("screening")
        panel.set_cohort_mode(True)
        wait_until(lambda: explorer.plot.cohort_band is not None)
        wait_until(lambda: (window.width(), window.height()) == SIZE)
        settle(1.0)
        explorer.scroll_area.ensureWidgetVisible(explorer.plot, 0, 0)
        settle(1.0)
        path = out / "named-points.png"
        out.mkdir(parents=True, exist_ok=True)
        from qtpy.QtCore import QPoint, QRect

        bottom = explorer.plot.mapTo(explorer, QPoint(0, explorer.plot.height())).y() + 8   # down to the curve
        if not explorer.grab(QRect(0, 0, explorer.width(), min(bottom, explorer.height()))).save(str(path)):
            raise OSError(f"could not write {path}")
        print(path)
        print(panel.details.text())
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")))
