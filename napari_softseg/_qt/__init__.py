"""The napari widgets of napari-softseg (the only package that imports Qt).

* :mod:`.segmentation_widget` — build soft labels, predict and train
* :mod:`.threshold_explorer`, :mod:`.rater_comparison`, :mod:`.calibration_widget` — browse a soft map
  (the canvas overlay they drive and the layer roles they read are Qt-free, in ``napari_softseg._napari``)
* :mod:`.statistics_panel` — the explorer's numbers at the threshold
* :mod:`.selection` — the soft-map / rater pickers and the reference picker shared by the docks
* :mod:`.dock_layout` — fixed top section over a scroll area, collapsible sections, result tables
* :mod:`.dock_column` — every napari-softseg dock joins one tabbed column, in any opening order
* :mod:`.qt_helpers` — quiet updates, session signals tied to a widget's life, shrinkable combos
* :mod:`.plots` — matplotlib plots that follow napari's theme
* :mod:`.workers` — run a ``Progress`` generator in a thread with a progress bar and cancel
* :mod:`.background` — latest-request-wins background computations for the docks
* :mod:`.notifications` — napari notifications for user errors
* :mod:`.fit` — layout and visual checks (nothing clipped; how visibly a threshold change shows)
"""
