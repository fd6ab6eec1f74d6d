"""Temperature scaling (Guo et al. 2017) fitted against soft labels.

One scalar ``T`` rescales every logit, ``p = sigmoid(logit / T)``; it is fitted on the validation cases by
minimising the binary cross-entropy against the soft label (the mean of the raters), so a pixel that 3 of
5 raters marked should come out near 0.6. ``T`` is stored in ``config.json`` and applied by
:mod:`napari_softseg.model.inference`. Thresholds keep their order, so the ranking (and the QUBIQ score of
any single threshold sweep) changes only through where the thresholds fall.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> true_logits = rng.normal(0, 2, 20000)
    >>> targets = (rng.random(20000) < 1 / (1 + np.exp(-true_logits))).astype(np.float32)
    >>> round(fit_temperature(3 * true_logits, targets), 1)  # an over-confident model: T ≈ 3
    3.0
"""

from __future__ import annotations

import numpy as np

from napari_softseg.analysis.metrics import expected_calibration_error

T_MIN, T_MAX = 0.05, 20.0


def sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable ``1 / (1 + exp(-logits / temperature))`` as float32."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out.astype(np.float32)


def soft_bce(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits / T)`` against soft targets in ``[0, 1]``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(targets, dtype=np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, *, max_samples: int = 2_000_000, seed: int = 0) -> float:
    """Find the temperature that minimises the soft BCE on these pixels.

    Args:
        logits: Network logits (any shape).
        targets: Soft targets of the same shape, in ``[0, 1]``.
        max_samples: Use a fixed random subset of at most this many pixels (speed).
        seed: Seed of that subset.

    Returns:
        ``T`` in ``[0.05, 20]`` (1.0 if there is nothing to fit).
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float32).ravel()
    y = np.asarray(targets, dtype=np.float32).ravel()
    if z.size == 0:
        return 1.0
    if z.size > max_samples:
        pick = np.random.default_rng(seed).choice(z.size, size=max_samples, replace=False)
        z, y = z[pick], y[pick]
    result = minimize_scalar(
        lambda log_t: soft_bce(z, y, float(np.exp(log_t))),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def calibration_report(logits: np.ndarray, targets: np.ndarray, temperature: float) -> dict:
    """ECE (10 bins, vs the soft targets) and soft BCE before and after applying ``temperature``."""

    before, after = sigmoid(logits), sigmoid(logits, temperature)
    return {
        "temperature": float(temperature),
        "ece_before": float(expected_calibration_error(before, targets)),
        "ece_after": float(expected_calibration_error(after, targets)),
        "bce_before": soft_bce(logits, targets),
        "bce_after": soft_bce(logits, targets, temperature),
    }


def calibration_state(config) -> str:
    """One line about a model's calibration, for the viewer's model info and ``softseg`` messages.

    Args:
        config: A :class:`~napari_softseg.model.model_io.ModelConfig`.

    Returns:
        e.g. ``"calibrated: T = 0.72 on 2 validation case(s), ECE 0.0273 → 0.0102"``,
        ``"not calibrated (no validation cases)"`` or, for a temperature on its bound, a warning.
    """
    cal = config.calibration or {}
    t = float(config.temperature)
    if cal.get("state") == "not calibrated":
        return f"not calibrated ({cal.get('reason', 'unknown reason')})"
    if "ece_after" not in cal:
        return "not calibrated (T = 1)" if t == 1.0 else f"T = {t:.2f} (origin not recorded)"
    text = (f"calibrated: T = {t:.2f} on {len(cal.get('fitted_on', []))} validation case(s), "
            f"ECE {cal['ece_before']:.4f} → {cal['ece_after']:.4f}")
    if cal.get("on_bound") or t <= T_MIN * 1.02 or t >= T_MAX / 1.02:
        text += " — ⚠ T is at its bound: probabilities may be miscalibrated"
    return text
