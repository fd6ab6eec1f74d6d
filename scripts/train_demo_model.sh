#!/usr/bin/env bash
# Train the default demo model shipped in napari_softseg/data/models/mni_demo/ (one command, CPU, <= 10 min).
#
# Data: the bundled real-MRI demo set (napari_softseg/data/mni_demo, task 1 = white matter, 5 simulated
# raters). Its Training/ cases are used (2 of them held out for validation / model selection /
# calibration); Validation/ is never seen and is where docs/results.md measures the model.
# Soft labels: the mean of the raters (the winner of the ablation in docs/results.md).
# Deterministic for the seed on the CPU when the 25 epochs fit in the 9.5-minute budget (~5 min on 2 idle
# cores); on a slower or busy machine the budget stops it cleanly and the best epoch so far is kept.
#
# Usage: scripts/train_demo_model.sh [OUT_DIR]   (default: napari_softseg/data/models/mni_demo)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-napari_softseg/data/models/mni_demo}"
softseg train napari_softseg/data/mni_demo --task 1 --out "$OUT" \
    --softlabel mean --loss bce --base-channels 8 --depth 4 \
    --epochs 25 --max-minutes 9.5 --seed 0 --device cpu --calibrate --overwrite --quiet
# the resumable training state (weights + optimiser, ~6 MB) is not shipped with the package
rm -f "$OUT/training_state.safetensors"
