"""Data that ships with the package or is made on demand: the bundled MNI demo set and model, synthetic phantoms."""
