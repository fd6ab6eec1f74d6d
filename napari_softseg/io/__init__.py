"""Reading and writing data: NIfTI volumes, multi-rater cases, safe output files."""
