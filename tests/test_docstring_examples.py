"""The runnable examples in the core modules' docstrings stay true."""

import doctest
import importlib

import pytest

CORE = ["errors", "nifti", "files", "dataset", "softlabels", "metrics", "normalization", "operating_point",
        "disagreement", "progress"]


@pytest.mark.parametrize("name", CORE)
def test_docstring_examples(name):
    module = importlib.import_module(f"napari_softseg.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
