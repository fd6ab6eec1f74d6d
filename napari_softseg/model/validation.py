"""Scoring a model on the validation cases, and fitting its temperature on them.

During training, every epoch's network predicts the validation cases whole (the sliding window
``softseg predict`` uses) and is scored: the mean QUBIQ score and expected calibration error (ECE), raw
(T = 1) and at the temperature that fits the cases best (:func:`validate`); the run keeps the epoch with
the best score. After training, the kept model's temperature is fitted on the same cases
(:func:`fit_model_temperature`); a temperature on a bound of its range means the cases do not constrain it
(:func:`on_bound`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_softseg.analysis.metrics import expected_calibration_error, qubiq_score
from napari_softseg.model.calibration import T_MAX, T_MIN, calibration_report, fit_temperature, sigmoid
from napari_softseg.model.inference import predict_logits
from napari_softseg.model.model_io import LoadedModel, ModelConfig, load_model
from napari_softseg.model.training_data import PreparedCase
from napari_softseg.progress import drive

#: A fitted temperature within this factor of ``T_MIN`` or ``T_MAX`` counts as on its bound.
T_BOUND_MARGIN = 1.02
#: Voxels the per-epoch temperature fit samples (the final fit uses the calibration default).
EPOCH_FIT_SAMPLES = 400_000


def validation_logits(network, config: ModelConfig, cases: list[PreparedCase], device: str) -> list[np.ndarray]:
    """Logits of the network on each validation case (whole volumes, as ``softseg predict`` does)."""
    return [drive(predict_logits(network, config, case.image, device=device, spacing=case.spacing)) for case in cases]


def scores_at(logits_per_case: list[np.ndarray], cases: list[PreparedCase], temperature: float
              ) -> tuple[list[float], float]:
    """Each case's QUBIQ score and the mean ECE of the probabilities at ``temperature``."""
    scores, eces = [], []
    for logits, case in zip(logits_per_case, cases):
        prob = sigmoid(logits, temperature)
        scores.append(qubiq_score(prob, case.masks)[0])
        eces.append(expected_calibration_error(prob, case.masks.mean(axis=0, dtype=np.float32)))
    return scores, float(np.mean(eces))


def _pooled(logits: list[np.ndarray], cases: list[PreparedCase]) -> tuple[np.ndarray, np.ndarray]:
    """All cases' logits and mean-of-raters targets, flattened into one sample."""
    z = np.concatenate([lg.ravel() for lg in logits])
    y = np.concatenate([c.masks.mean(axis=0, dtype=np.float32).ravel() for c in cases])
    return z, y


def validate(network, config: ModelConfig, cases: list[PreparedCase], device: str, calibrated: bool) -> dict:
    """Mean QUBIQ score and ECE over the validation cases, raw (T = 1) and at the temperature that fits them.

    Args:
        network: The network (in its training state; predicted in eval mode by the inference code).
        config: Its config (normalisation, slicing, patch).
        cases: The validation cases.
        device: Torch device string.
        calibrated: Score at a temperature fitted on the cases (the final model will be calibrated).

    Returns:
        ``qubiq_raw``, ``ece_raw``, ``qubiq_score``, ``ece`` (at the fitted temperature when ``calibrated``,
        else raw), ``per_case`` scores, and ``temperature`` when calibrated.
    """
    logits = validation_logits(network, config, cases, device)
    raw_scores, raw_ece = scores_at(logits, cases, 1.0)
    metrics = {"qubiq_raw": float(np.mean(raw_scores)), "ece_raw": raw_ece}
    if calibrated:
        z, y = _pooled(logits, cases)
        t = fit_temperature(z, y, max_samples=EPOCH_FIT_SAMPLES)
        scores, ece = scores_at(logits, cases, t)
        metrics.update(temperature=t)
    else:
        scores, ece = raw_scores, raw_ece
    metrics.update(qubiq_score=float(np.mean(scores)), ece=ece,
                   per_case={c.name: float(s) for c, s in zip(cases, scores)})
    return metrics


def on_bound(temperature: float) -> bool:
    """Whether a fitted temperature sits on a bound of ``[T_MIN, T_MAX]`` (the data did not constrain it)."""
    return temperature <= T_MIN * T_BOUND_MARGIN or temperature >= T_MAX / T_BOUND_MARGIN


def bound_warning(temperature: float) -> str:
    """The warning given when the fitted temperature is on its bound."""
    return (f"the fitted temperature {temperature:.3g} is at its bound [{T_MIN}, {T_MAX}]: the validation cases do "
            "not constrain it (too few, or a model that has not learned them); probabilities may be miscalibrated")


def fit_model_temperature(model_dir: Path, cases: list[PreparedCase], device: str) -> tuple[LoadedModel, dict]:
    """Load the kept model and fit its temperature on the validation cases (nothing is written).

    Returns:
        The loaded model and the :func:`~napari_softseg.model.calibration.calibration_report` (temperature,
        ECE before and after).
    """
    model = load_model(model_dir)
    z, y = _pooled(validation_logits(model.network, model.config, cases, device), cases)
    return model, calibration_report(z, y, fit_temperature(z, y))
