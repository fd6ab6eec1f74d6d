"""napari-softseg: soft labels from several raters, one calibrated network, a threshold browser in napari."""

__version__ = "0.1.0"

SOFTWARE = f"napari-softseg {__version__}"
"""The software string every output's provenance records (sidecars, soft labels, models, DICOM SEGs)."""
