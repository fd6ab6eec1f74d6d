"""The napari widgets of napari-softseg (the only package that imports Qt).

* :mod:`.segmentation_widget` — build soft labels, predict and train
* :mod:`.threshold_explorer`, :mod:`.rater_comparison`, :mod:`.calibration_widget` — browse a soft map
* :mod:`.selection` — the soft-map / rater pickers and the threshold shared by the docks
* :mod:`.plots` — matplotlib plots that follow napari's theme
* :mod:`.workers` — run a ``Progress`` generator in a thread with a progress bar and cancel
* :mod:`.background` — latest-request-wins background computations for the docks
* :mod:`.notifications` — napari notifications for user errors
"""
