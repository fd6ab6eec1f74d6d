"""The runnable examples in the core modules' docstrings stay true."""

import doctest
import importlib

import pytest

CORE = ["errors", "io.nifti", "io.files", "io.jsonio", "io.geometry", "io.dataset", "analysis.softlabels",
        "analysis.metrics", "model.normalization", "analysis.operating_point", "analysis.display", "analysis.presets",
        "analysis.rater_comparison", "analysis.disagreement",
        "analysis.surface", "analysis.overlay_colors", "model.resampling", "model.domain", "pipeline.provenance", "progress",
        "analysis.cohort_curves", "pipeline.named_points"]


@pytest.mark.parametrize("name", CORE)
def test_docstring_examples(name):
    module = importlib.import_module(f"napari_softseg.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
