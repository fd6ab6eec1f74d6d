"""Screenshot of the Dataset review dock at 1366x768 (run under Xvfb).

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/img/make_dataset_review_screenshot.py docs/img

What a reviewer does: open the dock from the Plugins menu (``add_plugin_dock_widget``), open the bundled
``mni_demo/Validation`` folder, choose the bundled model and press *Predict all* (CPU; the predictions go to
a temporary folder), then *Next most uncertain* (opens the case with the largest uncertain volume) and
*Most uncertain slice*. Writes ``dataset-review.png`` (the whole window). The user's napari settings are not
touched (a temporary copy is used).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_plain_napari_screenshots import drawn_twice_alike, wait_until  # noqa: E402

PLUGIN = "napari-softseg"
SIZE = (1366, 768)


def main(out: Path) -> int:
    import napari

    from napari_softseg.cli.demo_command import isolate_settings, take_screenshot
    from napari_softseg.datasets.bundled import demo_dataset_path, demo_model_path

    isolate_settings()
    viewer = napari.Viewer(title="napari", show=True)
    window = viewer.window._qt_window
    window.resize(*SIZE)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Dataset review")
    with tempfile.TemporaryDirectory(prefix="softseg-review-") as tmp:
        dock.model.setText(str(demo_model_path()))
        dock.open_dataset(demo_dataset_path() / "Validation", Path(tmp) / "predictions")
        wait_until(lambda: dock.ready)
        dock.predict()
        wait_until(lambda: dock.ready and all(r.stats.uncertain_ml is not None for r in dock.review.rows), 600)
        dock.next_uncertain_case()
        wait_until(lambda: dock.ready and dock.case_layers)
        dock.jump_to_uncertain_slice()
        wait_until(lambda: (window.width(), window.height()) == SIZE)
        wait_until(drawn_twice_alike(viewer))
        path = take_screenshot(viewer, out / "dataset-review.png", overwrite=True)
    print(path, "-", dock.status.text())
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")))
