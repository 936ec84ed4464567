"""The learning-rate finder (the "LR range test", Smith 2017, "Cyclical Learning Rates for
Training Neural Networks", §3.3): train for a bounded number of steps while the LR grows
geometrically from `lr_start` to `lr_end`, record the loss at every step, and suggest an LR.

The swept value is the head's LR (the schedule's `lr_max`). Every other trainable group
trains at the same time at its own multiplier of it, so the groups keep their relative LRs.
Which groups train is the schedule's choice at epoch `at_epoch` (requires_grad, frozen
BatchNorm in eval mode), exactly as `Schedule.apply` sets them for the real run. Each step is
the engine's `TrainStep`: the finder has no training loop of its own.

The suggestion is the LR of the steepest descent of the smoothed loss against log10(LR),
looked for between the end of the smoothing burn-in and the minimum of the smoothed loss.
Where that stretch is too short to have a slope, the suggestion falls back to the LR at the
minimum divided by 10. Both candidates are always reported, with which one was chosen.

Smoothing is the bias-corrected exponential moving average
    avg_i = β avg_{i−1} + (1 − β) loss_i,   smoothed_i = avg_i / (1 − β^(i+1)),
and the sweep stops early once smoothed_i > diverge_factor × min(smoothed_0..i), or the loss
is not finite.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.errors import LabError

logger = logging.getLogger(__name__)

RESULT_FILE = "lr_find.json"
SERIES = "lr_find"
MIN_STEPS, MAX_STEPS = 10, 500
STOP_COMPLETED, STOP_DIVERGED, STOP_NON_FINITE, STOP_CANCELLED = "completed", "diverged", "non_finite", "cancelled"
METHOD_STEEPEST, METHOD_MIN_DIV_10, METHOD_NONE = "steepest", "min_div_10", "none"
PROGRESS_EVERY_S = 0.5  # how often the stored progress is updated
# The first points of the smoothed curve are mostly the burn-in of the moving average; the
# steepest slope is not looked for among them.
BURN_IN_FRACTION = 0.1
MIN_SLOPE_POINTS = 3


@dataclass(frozen=True)
class FinderConfig:
    """The sweep; saved with the run."""

    lr_start: float = 1e-7  # first LR of the head
    lr_end: float = 1.0  # the LR the sweep would reach on its last step
    num_steps: int = 100  # at most MAX_STEPS, so a sweep stays a quick check
    beta: float = 0.98  # smoothing of the loss (exponential moving average)
    diverge_factor: float = 4.0  # stop once the smoothed loss exceeds this × its minimum
    at_epoch: int = 0  # the schedule's trainable groups at this epoch are the ones swept

    def __post_init__(self) -> None:
        if not (0 < self.lr_start < self.lr_end and math.isfinite(self.lr_end)):
            raise LabError("ft.err_finder_range", lr_start=self.lr_start, lr_end=self.lr_end)
        if not MIN_STEPS <= self.num_steps <= MAX_STEPS:
            raise LabError("ft.err_finder_steps", num_steps=self.num_steps, low=MIN_STEPS, high=MAX_STEPS)
        if not 0 <= self.beta < 1:
            raise LabError("ft.err_finder_beta", beta=self.beta)
        if not self.diverge_factor > 1:
            raise LabError("ft.err_finder_diverge", factor=self.diverge_factor)
        if self.at_epoch < 0:
            raise LabError("ft.err_finder_epoch", epoch=self.at_epoch, last=0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> FinderConfig:
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise LabError("ft.err_json_unknown", where="lr_find", fields=", ".join(unknown))
        return cls(**data)


# ---- pure parts ------------------------------------------------------------------------------


def sweep_lrs(lr_start: float, lr_end: float, num_steps: int) -> list[float]:
    """Geometric sequence from lr_start to lr_end, both included."""
    ratio = lr_end / lr_start
    return [lr_start * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]


def smooth(losses: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average (see the module docstring)."""
    smoothed, average = [], 0.0
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta ** (i + 1)))
    return smoothed


def diverged(smoothed: list[float], factor: float) -> bool:
    """True when the last smoothed loss exceeds `factor` × the smallest so far."""
    return len(smoothed) > 1 and smoothed[-1] > factor * min(smoothed)


@dataclass(frozen=True)
class Suggestion:
    lr: float | None  # the suggested head LR (lr_max); None when the loss never went down
    method: str  # METHOD_STEEPEST, METHOD_MIN_DIV_10 or METHOD_NONE
    index: int | None  # the point of the curve the suggestion sits on (steepest only)
    lr_steepest: float | None  # candidate 1: steepest descent of the smoothed loss
    lr_min_loss: float | None  # LR where the smoothed loss is lowest
    lr_min_div_10: float | None  # candidate 2: that LR / 10

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def suggest(lrs: list[float], smoothed: list[float]) -> Suggestion:
    """Pick an LR from a recorded sweep (lists of the same length)."""
    if len(lrs) < 2:
        return Suggestion(None, METHOD_NONE, None, None, None, None)
    smoothed_array = np.asarray(smoothed, dtype=float)
    log_lrs = np.log10(np.asarray(lrs, dtype=float))
    best = int(np.argmin(smoothed_array))
    lr_min_loss = float(lrs[best])
    burn_in = int(len(lrs) * BURN_IN_FRACTION)

    if best <= burn_in:
        # The loss rose (or stayed flat) from the start: the whole range is too high.
        return Suggestion(None, METHOD_NONE, None, None, lr_min_loss, lr_min_loss / 10)

    if best - burn_in + 1 >= MIN_SLOPE_POINTS:
        window = slice(burn_in, best + 1)
        slopes = np.gradient(smoothed_array[window], log_lrs[window])  # d loss / d log10(lr)
        steepest = int(np.argmin(slopes))
        if slopes[steepest] < 0:
            index = burn_in + steepest
            return Suggestion(float(lrs[index]), METHOD_STEEPEST, index, float(lrs[index]),
                              lr_min_loss, lr_min_loss / 10)
    return Suggestion(lr_min_loss / 10, METHOD_MIN_DIV_10, None, None, lr_min_loss, lr_min_loss / 10)


# ---- the job -----------------------------------------------------------------------------------


def run_job(config: dict, ctx) -> None:
    """Run the "lr_find" job of core.jobs. Config keys are those of the "train" job
    ("architecture", "schedule", "data", "preprocessing", "weights", "train") plus
    "lr_find" (a FinderConfig dict). Writes RESULT_FILE and logs series "lr_find"."""
    from core import engine
    from core.groups import default_groups
    from core.schedule import Schedule

    finder = FinderConfig.from_dict(config.get("lr_find"))
    options = engine.TrainOptions.from_dict(config.get("train"))
    torch.manual_seed(options.seed)
    device = ctx.device

    data = engine.prepare_data(config, options, device)
    architecture, model, _ = engine.build_model(config, data, options)
    steps_per_epoch = len(data.train)
    if config.get("schedule"):
        schedule = Schedule.from_dict(config["schedule"]).with_steps_per_epoch(steps_per_epoch)
    else:
        schedule = engine.default_schedule(list(default_groups(model)), steps_per_epoch)
    if finder.at_epoch >= schedule.epochs:
        raise LabError("ft.err_finder_epoch", epoch=finder.at_epoch, last=schedule.epochs - 1)

    model.to(device)
    if engine.uses_channels_last(device, options.channels_last):
        model.to(memory_format=torch.channels_last)
    groups_params = schedule.group_params(model)
    optimizer = schedule.build_optimizer(model, groups_params)
    step_fn = engine.TrainStep(model, optimizer, groups_params, device, amp=options.amp,
                               channels_last=options.channels_last, grad_clip_norm=options.grad_clip_norm,
                               label_smoothing=options.label_smoothing)
    logger.info("lr_find %s: %s, %d steps from %g to %g", ctx.run_id, architecture.block,
                finder.num_steps, finder.lr_start, finder.lr_end)

    result = sweep(model, schedule, optimizer, groups_params, step_fn, data.train, finder, ctx)
    ctx.save_json(RESULT_FILE, {**result, "config": finder.to_dict(), "schedule": schedule.to_dict(),
                                "class_names": data.classes})
    if result["stop_reason"] != STOP_COMPLETED:
        ctx.set_message(f"ft.finder_stop_{result['stop_reason']}", steps=len(result["lrs"]))
    logger.info("lr_find %s: %s after %d steps, suggestion %s", ctx.run_id, result["stop_reason"],
                len(result["lrs"]), result["suggestion"]["lr"])


def sweep(model, schedule, optimizer, groups_params, step_fn, batches, finder: FinderConfig, ctx) -> dict[str, Any]:
    """Run the sweep: one engine step per LR, with the batches cycled over epochs as needed."""
    at_step = finder.at_epoch * schedule.steps_per_epoch
    multipliers = {name: schedule.multiplier(name) if schedule.trainable(name, at_step) else 0.0
                   for name in schedule.group_names}
    lrs_planned = sweep_lrs(finder.lr_start, finder.lr_end, finder.num_steps)
    lrs, losses, smoothed = [], [], []
    average, last_progress = 0.0, 0.0
    stop_reason = STOP_COMPLETED

    model.train()
    schedule.apply(at_step, model, optimizer, groups_params)  # requires_grad and frozen BN modes
    for step, (lr, (images, labels)) in enumerate(zip(lrs_planned, _cycle(batches))):
        if ctx.should_stop():
            stop_reason = STOP_CANCELLED
            break
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr * multipliers[param_group["name"]]

        loss = float(step_fn(images, labels).loss)  # one sync per step: the sweep needs every value
        if not math.isfinite(loss):
            stop_reason = STOP_NON_FINITE
            break
        average = finder.beta * average + (1 - finder.beta) * loss  # as in smooth()
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(average / (1 - finder.beta ** (step + 1)))
        ctx.log_metrics(step, {"lr": lr, "loss": loss, "smoothed_loss": smoothed[-1]}, series=SERIES)
        if time.monotonic() - last_progress > PROGRESS_EVERY_S:
            ctx.set_progress(step + 1, finder.num_steps)
            last_progress = time.monotonic()
        if diverged(smoothed, finder.diverge_factor):
            stop_reason = STOP_DIVERGED
            break

    ctx.set_progress(len(lrs), finder.num_steps)
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed, "stop_reason": stop_reason,
            "multipliers": multipliers, "suggestion": suggest(lrs, smoothed).to_dict()}


def _cycle(batches):
    """Batches of as many epochs as the sweep needs, each epoch reshuffled."""
    epoch = 0
    while True:
        batches.set_epoch(epoch)
        yield from batches
        epoch += 1
