#!/usr/bin/env bash
# Train a small slab-only demo model like v0.2's shipped one (one command, CPU, <= 10 min). The model shipped
# since v0.3 (napari_softseg/data/models/mni_demo/) comes from scripts/train_bundled_model.py instead.
#
# Data: the bundled real-MRI demo set (napari_softseg/data/mni_demo, task 1 = white matter, 5 simulated
# raters). Its Training/ cases are used (2 of them held out for validation / model selection /
# calibration); Validation/ is never seen and is where docs/results.md measures the model.
# Recipe: the planned default (softseg train plans patch, batch, depth, schedule from the data and ends the
# learning-rate schedule at the 9.5-minute budget; calibration on the validation cases is on by default),
# with the shipped model's width 8 (a 1 MB model) and mean soft labels.
#
# v0.2's shipped model was trained by the v0.1 recipe of this script (25 passes over the slices,
# `--epochs 25 --base-channels 8 --depth 4 --calibrate`, 242 s).
#
# Usage: scripts/train_demo_model.sh [OUT_DIR]   (default: a new folder, never the shipped model)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/softseg_demo_model}"
softseg train napari_softseg/data/mni_demo --task 1 --out "$OUT" \
    --softlabel mean --loss bce --base-channels 8 \
    --max-minutes 9.5 --seed 0 --device cpu --overwrite --quiet
# the resumable training state (weights + optimiser) is not shipped with the package
rm -f "$OUT/training_state.safetensors"
