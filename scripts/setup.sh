#!/usr/bin/env bash
# Set up a development environment on a fresh Debian/Ubuntu machine: system packages for a virtual
# display (when run as root), a virtual environment in .venv, CPU PyTorch pinned, and the package with
# its test extra. Safe to run again: it only installs what is missing.
#
#   bash scripts/setup.sh            # then: .venv/bin/softseg --help
#
# TORCH_SPEC overrides the torch requirement (default: the CPU build 2.13.0+cpu, which lies on this
# project's CI machines; elsewhere use e.g. TORCH_SPEC=torch and pip's usual index).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0+cpu}"
PYTHON="${PYTHON:-python3}"

# Xvfb and the xcb libraries Qt needs to draw napari's canvas without a screen.
need_apt=()
command -v Xvfb >/dev/null 2>&1 || need_apt+=(xvfb)
command -v xvfb-run >/dev/null 2>&1 || need_apt+=(xvfb)
command -v xauth >/dev/null 2>&1 || need_apt+=(xauth)  # xvfb-run needs it; only recommended by xvfb
ldconfig -p 2>/dev/null | grep -q libxcb-icccm.so.4 || need_apt+=(libxcb-icccm4)
ldconfig -p 2>/dev/null | grep -q libxcb-keysyms.so.1 || need_apt+=(libxcb-keysyms1)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install ${need_apt[*]} (e.g. sudo apt-get install ${need_apt[*]}); viewer tests need them" >&2
  fi
fi
# Optional, for the DICOM tests: dcm2niix is the independent converter they compare against, dciodvfy
# (dicom3tools) validates the SEGs written. Those tests skip without them, so a failure here is not fatal.
opt_apt=()
command -v dcm2niix >/dev/null 2>&1 || opt_apt+=(dcm2niix)
command -v dciodvfy >/dev/null 2>&1 || opt_apt+=(dicom3tools)
if [ ${#opt_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing optional system packages: ${opt_apt[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${opt_apt[@]}"; } \
      >/dev/null 2>&1 || echo "setup: could not install ${opt_apt[*]}; the DICOM comparison/validation tests will skip" >&2
  else
    echo "setup: optional: install ${opt_apt[*]} for the DICOM comparison and SEG validation tests" >&2
  fi
fi

# pip, with the machine's notes about absent local index folders filtered out (failures still stop us).
pipq() {
  .venv/bin/python -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pipq install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
pipq install -q "$TORCH_SPEC"
pipq install -q -e ".[test]" "$TORCH_SPEC"
.venv/bin/python - <<'PY'
import os, torch, napari_softseg
spec = os.environ.get("TORCH_SPEC", "torch==2.13.0+cpu")
if spec.endswith("+cpu"):
    assert torch.__version__.endswith("+cpu"), f"expected a CPU torch, got {torch.__version__}"
print(f"setup: napari-softseg {napari_softseg.__version__}, torch {torch.__version__} ready in .venv")
PY
