"""The napari widgets of napari-softseg (the only package that imports Qt).

* :mod:`.segmentation_widget` — build soft labels, predict and train (issue 4.1a)
* :mod:`.threshold_explorer`, :mod:`.rater_comparison`, :mod:`.calibration_widget` — browse a soft map
* :mod:`.workers` — run a ``Progress`` generator in a thread with a progress bar and cancel
"""
