"""The network and its life cycle: architecture, training, prediction, model files, devices."""
