"""The napari adapter: reader, writers, sample data and the conversion between core arrays and napari layers.

Qt-free (it talks to napari layers and layer data, never to widgets); the docks in ``_qt/`` are built on it.
"""
