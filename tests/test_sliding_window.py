"""Our sliding window (no MONAI import at prediction time) gives MONAI's ``sliding_window_inference``
output: the same windows, Gaussian weights, padding and blending (issue 15: MONAI's import cost 154 MB)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_softseg.model.sliding_window import gaussian_weights, sliding_window, window_starts

monai_inferers = pytest.importorskip("monai.inferers")


def _positional_net(channels_out: int = 2, dims: int = 2):
    """A small conv net whose output depends on the window's position and content (zero padding at the
    window's edge makes each window's prediction differ near its border, so blending matters)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(3, 4, 3, padding=1), torch.nn.Tanh(), conv(4, channels_out, 3, padding=1)).eval()


@pytest.mark.parametrize("shape, window, overlap, per_pass", [
    ((2, 3, 50, 37), (16, 16), 0.5, 4),        # several windows per axis, the last one moved back
    ((1, 3, 12, 40), (16, 16), 0.5, 3),        # an axis shorter than the window: padded with edge values
    ((3, 3, 32, 32), (32, 32), 0.5, 2),        # one window each
    ((1, 3, 45, 29), (16, 8), 0.25, 5),        # unequal windows, another overlap
])
def test_matches_monai_sliding_window_inference_2d(shape, window, overlap, per_pass):
    net = _positional_net()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = sliding_window(net, x, window, windows_per_pass=per_pass, overlap=overlap)
        theirs = monai_inferers.sliding_window_inference(x, window, per_pass, net, overlap=overlap, mode="gaussian",
                                                         padding_mode="replicate")
    assert ours.shape == theirs.shape == (shape[0], 2, *shape[2:])
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=1e-5)


def test_matches_monai_in_3d():
    net = _positional_net(1, dims=3)
    x = torch.randn((1, 3, 20, 13, 9), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ours = sliding_window(net, x, (8, 8, 8), windows_per_pass=4)
        theirs = monai_inferers.sliding_window_inference(x, (8, 8, 8), 4, net, overlap=0.5, mode="gaussian",
                                                         padding_mode="replicate")
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=1e-5)


def test_window_positions_and_weights():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(9, 4, 0.5) == [0, 2, 4, 5]         # the last window ends at the border
    assert window_starts(4, 4, 0.5) == window_starts(3, 4, 0.5) == [0]
    assert window_starts(7, 3, 0.9) == [0, 1, 2, 3, 4]       # a step of at least one
    w = gaussian_weights((8, 6))
    assert w.shape == (8, 6) and float(w.max()) <= 1.0 and float(w.min()) >= 1e-3
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1))   # symmetric about the centre


def test_prediction_does_not_import_monai():
    """A patch model's prediction runs without MONAI (its import is half a CT scan of memory)."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from napari_softseg.model.inference import sliding_window_logits\n"
        "net = torch.nn.Conv2d(1, 1, 3, padding=1).eval()\n"
        "out = sliding_window_logits(net, torch.randn(2, 1, 40, 30), (16, 16), 'cpu')\n"
        "assert out.shape == (2, 40, 30), out.shape\n"
        "print(any(m == 'monai' or m.startswith('monai.') for m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
