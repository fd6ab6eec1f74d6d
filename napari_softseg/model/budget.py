"""The schedule of a training run: the learning rate, the time budget, and when to stop.

* The learning rate warms up linearly over the first :data:`WARMUP_STEPS` steps and decays (poly 0.9)
  with the run's *progress* through its schedule, reaching zero when the schedule ends
  (:func:`learning_rate`).
* With a time budget the schedule's length is not known in advance: :class:`StepBudget` times the steps
  and, after each one, plans how many more fit before the deadline (keeping time for the validations and
  the calibration), so that progress reaches 1 where the budget ends; a machine that slows down or speeds
  up is followed. With a fixed number of epochs the schedule is that many steps.
* It says why the run stopped (:meth:`StepBudget.verdict`); a plateau of the validation score stops it
  early after :func:`patience` epochs without improvement (:func:`plateau_reason`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from napari_softseg.model.planning import Plan

#: Steps of the linear learning-rate warm-up (from a tenth of the peak).
WARMUP_STEPS = 20


def learning_rate(peak: float, progress: float, steps_done: int) -> float:
    """The learning rate of the next step: poly(0.9) decay with ``progress`` (0 … 1) times the warm-up."""
    warm = min(1.0, (steps_done + 1) / WARMUP_STEPS)
    return peak * max(0.0, 1.0 - progress) ** 0.9 * (0.1 + 0.9 * warm)


def advance(progress: float, remaining: int | None) -> float:
    """Progress after one more step, when ``remaining`` steps are left (``None``: the end is not known yet)."""
    if remaining is None:
        return progress
    return min(1.0, progress + (1.0 - progress) / (remaining + 1))


def patience(total_epochs: int | None, epoch: int) -> int:
    """Epochs without improvement that make a plateau: a quarter of the planned epochs, at least 5."""
    return max(5, math.ceil(0.25 * (total_epochs or epoch)))


def plateau_reason(stale: int, best_score: float, best_epoch: int) -> str:
    """The sentence printed when a plateau of the validation score stops the run."""
    return (f"stopped early: the validation QUBIQ score has not improved for {stale} epochs "
            f"(best {best_score:.4f} at epoch {best_epoch})")


class StepBudget:
    """How many optimizer steps are left, re-planned after every step from the measured speed.

    Args:
        plan: The run's plan (``max_minutes``, ``epochs``, ``steps_per_epoch``).
        started: ``time.monotonic()`` when the run started (the budget counts from there).

    Attributes:
        deadline: ``time.monotonic()`` at which the budget ends (``None`` without a budget).
        fixed_cap: Total steps of a fixed number of epochs (``None`` without).
        val_seconds: Duration of the last validation (set by the run; kept free before the deadline).
    """

    def __init__(self, plan: Plan, started: float):
        self.plan = plan
        self.deadline = None if plan.max_minutes is None else started + 60.0 * plan.max_minutes
        self.fixed_cap = plan.epochs * plan.steps_per_epoch if plan.epochs else None
        self.val_seconds = 0.0
        self.step_times: list[float] = []
        self.ema: float | None = None
        self.first_epoch = True

    def after_step(self, seconds: float, steps_done: int, decide: Callable[..., tuple]
                   ) -> tuple[int | None, bool, str | None]:
        """Account for a step that took ``seconds``: ``(steps remaining, out of time, timing message)``.

        Args:
            seconds: Duration of the step just taken.
            steps_done: Steps done in total, that one included.
            decide: Maps ``(seconds per step, steps that fit)`` to the values every process uses (rank 0's
                under ``torchrun``; identity otherwise).

        Returns:
            Steps remaining (``None`` when neither a budget nor a fixed number of epochs bounds them), whether
            not even one more step fits the budget, and the timing line to print once (after the first few
            steps of this run's first epoch) or ``None``.
        """
        plan = self.plan
        self.step_times.append(seconds)
        remaining = None if self.fixed_cap is None else self.fixed_cap - steps_done
        if self.deadline is None:
            return remaining, False, None
        # re-plan after every step from the measured speed (a shared machine slows down and speeds up): the
        # steps that still fit before the deadline, keeping time for validations and the calibration, so the
        # learning rate reaches zero where the budget ends
        times = self.step_times
        ema = times[-1] if self.ema is None or len(times) <= 2 else 0.9 * self.ema + 0.1 * times[-1]
        per_step = ema + self.val_seconds / plan.steps_per_epoch
        left = self.deadline - time.monotonic() - 2 * self.val_seconds
        fit = max(0, int(left / per_step))
        self.ema, fit = decide(ema, fit)
        remaining = fit if remaining is None else min(remaining, fit)
        message = None
        if len(times) == min(6, plan.steps_per_epoch) and self.first_epoch:
            total = steps_done + fit
            message = (f"timing: {self.ema:.2f} s per step -> about {total} steps "
                       f"({total / plan.steps_per_epoch:.1f} epochs) in the budget")
        return remaining, fit < 1, message

    def verdict(self, out_of_time: bool, progress_before: float, epoch: int, steps_done: int
                ) -> tuple[str, str, bool]:
        """Why the run stops now: ``(stopped, sentence, schedule complete)``.

        The budget running out before 90 % of the schedule is ``"time budget"``; otherwise the schedule is
        complete (``"epochs done"`` for a fixed number of epochs, else ``"schedule complete"``).
        """
        plan = self.plan
        if out_of_time and progress_before < 0.9:
            return "time budget", (f"stopped: the {plan.max_minutes:g}-minute budget ran out during epoch {epoch} "
                                   f"(schedule {100 * progress_before:.0f}% done)"), False
        stopped = "epochs done" if self.fixed_cap is not None and steps_done >= self.fixed_cap else "schedule complete"
        where = f" at the end of the {plan.max_minutes:g}-minute budget" if plan.max_minutes else ""
        return stopped, (f"stopped: the learning-rate schedule is complete ({steps_done} steps, {epoch} epochs)"
                         f"{where}"), True

    def total_epochs(self, epoch: int, remaining: int | None) -> int | None:
        """Epochs the run will have done when the ``remaining`` steps are taken (``None``: not known)."""
        return (epoch + math.ceil(remaining / self.plan.steps_per_epoch)) if remaining is not None else None
