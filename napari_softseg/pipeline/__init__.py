"""The pipeline layer: whole jobs built from the core, shared by the CLI and the docks.

It sits above ``io``, ``analysis`` and ``model`` and below the front ends (``cli``, ``_qt``, ``_napari``):
predict-and-record for NIfTI images, case folders, datasets (resumable, sharded under torchrun) and DICOM
series, writing each output with the provenance of what actually ran.
"""
