"""napari-softseg: soft labels from several raters, one calibrated network, a threshold browser in napari."""

__version__ = "0.1.0"
