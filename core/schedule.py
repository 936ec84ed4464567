"""The fine-tuning schedule: which layer groups learn, from when, and how fast.

A `Schedule` is a small frozen dataclass that serialises to versioned JSON. It is a pure
function of (group, step): `lr(group, step)` and `trainable(group, step)`. The page plots
those functions before any training, and the trainer steps through the very same object:

    groups_params = schedule.group_params(model)          # {group: [param names]}
    optimizer = schedule.build_optimizer(model, groups_params)
    for step in range(schedule.total_steps):
        model.train()
        schedule.apply(step, model, optimizer, groups_params)   # lrs, requires_grad, BN modes
        ...forward, backward, optimizer.step()...

Definitions (steps are optimizer steps, counted from 0 to total_steps - 1):

- Groups are ordered from the input to the output; the last one is the head, whose peak
  is the schedule's `lr_max`. Group g peaks at lr_max_g: its explicit `lr_max`, or
  lr_max × lr_decay^d, where d is how many groups separate g from the head
  (discriminative learning rates). Its multiplier is m_g = lr_max_g / lr_max and its
  floor is lr_min_g = m_g × lr_min: `lr_min` is the head's final LR and every group ends
  at the same fraction of its own peak.
- Warmup: W = warmup_steps, or warmup_epochs × steps_per_epoch. For s < W the LR rises
  linearly, lr_max_g × (f0 + (1 − f0) s / W) with f0 = warmup_start_factor > 0, so the
  very first step already learns. Step W is the peak.
- Cosine: with t = s − W and T = total_steps − 1 − W,
  lr = lr_min_g + ½ (lr_max_g − lr_min_g)(1 + cos(π t / T)), so the last step is exactly
  lr_min_g. With W = 0 this is plain cosine annealing. A run has at least 2 steps and
  W ≤ total_steps − 2, so the cosine has a first step (the peak) and a last one (the
  floor). This coincides with torch's LinearLR(start_factor=f0, total_iters=W) followed
  by CosineAnnealingLR(T_max=T) for one group, or for any number of groups when
  lr_min = 0 (torch's eta_min is one absolute floor, not scaled per group).
- A group that unfreezes at epoch k trains from step k × steps_per_epoch on, on the same
  curve scaled by its multiplier (no restart, no constant LR). Before that step it is
  frozen: requires_grad is False and `lr` is 0.0, which is also the LR its optimizer
  param group carries, so the LR the optimizer uses always equals the preview.
- Frozen BatchNorm layers are put in eval mode by default (`frozen_bn="eval"`): their
  running statistics stay exactly as loaded. With `frozen_bn="train"` they keep updating
  the running statistics even though γ and β do not learn.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from core.errors import LabError

logger = logging.getLogger(__name__)

SCHEDULE_VERSION = 1
MAX_EPOCHS = 1000
MAX_STEPS_PER_EPOCH = 100_000
OPTIMIZERS = ("adamw", "sgd")
FROZEN_BN_MODES = ("eval", "train")
PRESETS = (
    "feature_extraction",
    "full_finetuning",
    "gradual_unfreezing",
    "frozen_then_discriminative",
    "backbone_at_epoch",
)

# Discriminative LRs are rounded to this many significant digits, so that
# 1e-3 × 0.1² is 1e-05 and not 1.0000000000000003e-05 (float noise that would show in
# the UI and in the JSON). The rounding changes a value by less than 1e-12 relative.
_LR_SIGNIFICANT_DIGITS = 12

_BATCH_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class GroupSchedule:
    """One layer group: when it unfreezes and its peak LR."""

    name: str
    # Epoch from which the group trains: 0 = from the start, None = never (frozen throughout).
    unfreeze_epoch: int | None = 0
    # Explicit peak LR; None = lr_max × lr_decay^(distance from the head).
    lr_max: float | None = None
    # Module-name prefixes of the group ("layer4", "fc"...); empty = the default group of
    # this name from core.groups.default_groups. Set them to regroup the layers.
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """A complete fine-tuning schedule; see the module docstring for the formulas."""

    groups: tuple[GroupSchedule, ...]
    epochs: int = 5
    steps_per_epoch: int = 100
    optimizer: str = "adamw"  # "adamw" or "sgd" (with momentum)
    lr_max: float = 1e-3  # the head's peak LR
    lr_min: float = 0.0  # the head's final LR; other groups end at lr_min × multiplier
    lr_decay: float = 1.0  # discriminative factor per group away from the head (0.1 = ÷10)
    warmup_steps: int = 0  # give warmup either in steps...
    warmup_epochs: int = 0  # ...or in epochs, not both
    warmup_start_factor: float = 0.1  # first warmup step trains at this fraction of the peak
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4  # the course's example: AdamW, lr 1e-4, weight decay 1e-4
    no_decay_bn_bias: bool = True  # no weight decay on BatchNorm parameters and biases
    frozen_bn: str = "eval"  # BatchNorm of frozen groups: "eval" keeps running stats fixed
    version: int = field(default=SCHEDULE_VERSION)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        self._validate()
        # Not a field: no part of equality, repr or JSON. Weak, so a finished run's model goes.
        object.__setattr__(self, "_bn_cache", weakref.WeakKeyDictionary())

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_bn_cache", weakref.WeakKeyDictionary())

    # ---- validation -------------------------------------------------------------------

    def _validate(self) -> None:
        if self.version != SCHEDULE_VERSION:
            raise LabError("ft.err_version", found=self.version, supported=SCHEDULE_VERSION)
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise LabError("ft.err_epochs", epochs=self.epochs, maximum=MAX_EPOCHS)
        if not 1 <= self.steps_per_epoch <= MAX_STEPS_PER_EPOCH:
            raise LabError(
                "ft.err_steps_per_epoch", steps_per_epoch=self.steps_per_epoch, maximum=MAX_STEPS_PER_EPOCH
            )
        if self.optimizer not in OPTIMIZERS:
            raise LabError("ft.err_optimizer", optimizer=self.optimizer, allowed=", ".join(OPTIMIZERS))
        if self.frozen_bn not in FROZEN_BN_MODES:
            raise LabError("ft.err_frozen_bn", mode=self.frozen_bn, allowed=", ".join(FROZEN_BN_MODES))
        self._validate_lrs()
        self._validate_warmup()
        self._validate_groups()

    def _validate_lrs(self) -> None:
        if not self.lr_max > 0 or not math.isfinite(self.lr_max):
            raise LabError("ft.err_lr_max", lr_max=self.lr_max)
        if not 0 <= self.lr_min <= self.lr_max:
            raise LabError("ft.err_lr_min_above_max", lr_min=self.lr_min, lr_max=self.lr_max)
        if not 0 < self.lr_decay <= 1:
            raise LabError("ft.err_lr_decay", lr_decay=self.lr_decay)
        if not 0 <= self.momentum < 1:
            raise LabError("ft.err_momentum", momentum=self.momentum)
        if not 0 <= self.weight_decay < 1:
            raise LabError("ft.err_weight_decay", weight_decay=self.weight_decay)

    def _validate_warmup(self) -> None:
        if self.warmup_steps < 0 or self.warmup_epochs < 0:
            raise LabError("ft.err_warmup_negative")
        if self.warmup_steps and self.warmup_epochs:
            raise LabError(
                "ft.err_warmup_both", warmup_steps=self.warmup_steps, warmup_epochs=self.warmup_epochs
            )
        if not 0 < self.warmup_start_factor <= 1:
            raise LabError("ft.err_warmup_start_factor", factor=self.warmup_start_factor)
        # The cosine needs two steps of its own: its first is the peak, its last is lr_min.
        if self.total_steps < 2:
            raise LabError("ft.err_too_few_steps", total_steps=self.total_steps)
        if self.n_warmup_steps > self.total_steps - 2:
            raise LabError(
                "ft.err_warmup_too_long",
                warmup_steps=self.n_warmup_steps, total_steps=self.total_steps, maximum=self.total_steps - 2,
            )

    def _validate_groups(self) -> None:
        if not self.groups:
            raise LabError("ft.err_no_groups")
        names = [g.name for g in self.groups]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise LabError("ft.err_duplicate_groups", names=", ".join(duplicates))
        for g in self.groups:
            if not g.name:
                raise LabError("ft.err_group_name")
            if g.unfreeze_epoch is not None and not 0 <= g.unfreeze_epoch < self.epochs:
                raise LabError(
                    "ft.err_unfreeze_past_end",
                    group=g.name, epoch=g.unfreeze_epoch, epochs=self.epochs, last=self.epochs - 1,
                )
            if g.lr_max is not None and (not g.lr_max > 0 or not math.isfinite(g.lr_max)):
                raise LabError("ft.err_group_lr", group=g.name, lr=g.lr_max)
        if self.groups[-1].lr_max is not None:
            # The head's peak is the schedule's lr_max, the reference of every multiplier.
            raise LabError("ft.err_head_lr", group=self.groups[-1].name)
        if all(g.unfreeze_epoch is None for g in self.groups):
            raise LabError("ft.err_nothing_trains")

    # ---- derived sizes ----------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def n_warmup_steps(self) -> int:
        """Warmup length in steps, whichever unit it was given in."""
        return self.warmup_steps or self.warmup_epochs * self.steps_per_epoch

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    def group(self, name: str) -> GroupSchedule:
        for g in self.groups:
            if g.name == name:
                return g
        raise LabError("ft.err_unknown_group", group=name, groups=", ".join(self.group_names))

    def replace(self, **changes: Any) -> "Schedule":
        """Return a copy with some fields changed, validated like a new schedule."""
        return dataclasses.replace(self, **changes)

    def with_steps_per_epoch(self, steps_per_epoch: int) -> "Schedule":
        """Return the same schedule for a data loader of another length. A warmup given in
        epochs stays in epochs, and a warmup given in steps stays in steps."""
        return self.replace(steps_per_epoch=steps_per_epoch)

    # ---- the pure function of (group, step) ----------------------------------------------

    def group_lr_max(self, name: str) -> float:
        """Peak LR of a group: explicit, or lr_max × lr_decay^(distance from the head)."""
        g = self.group(name)
        if g.lr_max is not None:
            return g.lr_max
        distance = len(self.groups) - 1 - self.group_names.index(name)
        if distance == 0 or self.lr_decay == 1.0:
            return self.lr_max
        return _round_significant(self.lr_max * self.lr_decay**distance)

    def multiplier(self, name: str) -> float:
        """Return the group's LR as a fraction of the head's, the same at every step."""
        return self.group_lr_max(name) / self.lr_max

    def group_lr_min(self, name: str) -> float:
        """Return the group's final LR: lr_min scaled by the group's multiplier."""
        return self.lr_min * self.multiplier(name)

    def unfreeze_step(self, name: str) -> int | None:
        epoch = self.group(name).unfreeze_epoch
        return None if epoch is None else epoch * self.steps_per_epoch

    def trainable(self, name: str, step: int) -> bool:
        self._check_step(step)
        start = self.unfreeze_step(name)
        return start is not None and step >= start

    def lr(self, name: str, step: int) -> float:
        """Return the LR group `name` trains with at optimizer step `step` (0.0 while frozen)."""
        if not self.trainable(name, step):
            return 0.0
        return self.scheduled_lr(name, step)

    def scheduled_lr(self, name: str, step: int) -> float:
        """Return the group's curve at `step`, whether or not the group is trainable there."""
        self._check_step(step)
        hi = self.group_lr_max(name)
        lo = self.group_lr_min(name)
        warmup = self.n_warmup_steps
        if step < warmup:
            f0 = self.warmup_start_factor
            return hi * (f0 + (1.0 - f0) * step / warmup)

        t = step - warmup
        t_max = self.total_steps - 1 - warmup  # ≥ 1, checked in _validate_warmup
        # Both ends are returned as given so that they are exact, not merely close.
        if t == 0:
            return hi
        if t == t_max:
            return lo
        return lo + 0.5 * (hi - lo) * (1.0 + math.cos(math.pi * t / t_max))

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.total_steps:
            raise LabError("ft.err_step_range", step=step, total_steps=self.total_steps)

    # ---- preview helpers ------------------------------------------------------------------

    def preview_steps(self, max_points: int = 1500) -> list[int]:
        """Steps to plot: all of them for short schedules, else an even subsample that
        always keeps the analytic points (warmup end, every epoch start, last step)."""
        total = self.total_steps
        if total <= max_points:
            return list(range(total))
        stride = total / max_points
        steps = {round(i * stride) for i in range(max_points)}
        steps.update(e * self.steps_per_epoch for e in range(self.epochs))
        steps.update(s for s in (self.n_warmup_steps - 1, self.n_warmup_steps) if s >= 0)
        steps.add(total - 1)
        return sorted(s for s in steps if 0 <= s < total)

    def trainable_groups(self, epoch: int) -> list[str]:
        step = epoch * self.steps_per_epoch
        return [name for name in self.group_names if self.trainable(name, step)]

    def lr_curves(self, max_points: int = 1500) -> tuple[list[int], dict[str, list[float | None]]]:
        """(steps, {group: LR at each step, None while frozen}) for plotting."""
        steps = self.preview_steps(max_points)
        curves = {
            name: [self.lr(name, step) if self.trainable(name, step) else None for step in steps]
            for name in self.group_names
        }
        return steps, curves

    def trainable_parameters_by_epoch(self, counts: Mapping[str, int]) -> list[int]:
        """Trainable parameters during each epoch, from the parameter count of each group."""
        return [sum(counts[name] for name in self.trainable_groups(epoch)) for epoch in range(self.epochs)]

    # ---- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = {"version": self.version, **dataclasses.asdict(self)}
        data["groups"] = [{**dataclasses.asdict(g), "modules": list(g.modules)} for g in self.groups]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> "Schedule":
        if not isinstance(data, Mapping):
            raise LabError("ft.err_json_not_object")
        if "version" not in data:
            raise LabError("ft.err_json_no_version")
        version = data["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise LabError("ft.err_json_field", field="version", detail=repr(version))
        if version > SCHEDULE_VERSION:
            raise LabError("ft.err_version_newer", found=version, supported=SCHEDULE_VERSION)

        _check_keys(data, _SCHEDULE_FIELDS, where="schedule")
        kwargs = {key: _coerce(key, data[key], _SCHEDULE_FIELDS[key]) for key in data if key != "groups"}
        raw_groups = data.get("groups")
        if not isinstance(raw_groups, list):
            raise LabError("ft.err_json_field", field="groups", detail=repr(raw_groups)[:80])
        kwargs["groups"] = tuple(_group_from_dict(item) for item in raw_groups)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Schedule":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LabError("ft.err_json_malformed", detail=str(exc)) from exc
        return cls.from_dict(data)

    # ---- the trainer's side -----------------------------------------------------------

    def layer_groups(self, model: nn.Module) -> dict[str, list[str]]:
        """Module-name prefixes per group: the group's own `modules`, or the default
        group of the same name from core.groups."""
        from core.groups import default_groups

        defaults = default_groups(model)
        result: dict[str, list[str]] = {}
        for g in self.groups:
            if g.modules:
                result[g.name] = list(g.modules)
            elif g.name in defaults:
                result[g.name] = list(defaults[g.name])
            else:
                raise LabError("ft.err_group_no_modules", group=g.name, defaults=", ".join(defaults))
        return result

    def group_params(self, model: nn.Module) -> dict[str, list[str]]:
        """Parameter names per group; every parameter in exactly one group."""
        from core.groups import params_by_group

        return params_by_group(model, self.layer_groups(model))

    def build_optimizer(
        self, model: nn.Module, groups_params: Mapping[str, Iterable[str]]
    ) -> torch.optim.Optimizer:
        """Build the optimizer with one param group per layer group, named by
        `param_group["name"]`, each with its LR at step 0. With `no_decay_bn_bias`, a group's
        BatchNorm parameters and biases go into a second param group of the same name with
        weight_decay 0 and `param_group["no_decay"] = True`."""
        self._check_group_names(groups_params)
        params = dict(model.named_parameters())
        no_decay = _no_decay_names(model) if self.no_decay_bn_bias else set()

        param_groups = []
        for name in self.group_names:
            names = list(groups_params[name])
            decayed = [params[n] for n in names if n not in no_decay]
            exempt = [params[n] for n in names if n in no_decay]
            lr = self.lr(name, 0)
            if decayed:
                param_groups.append({"params": decayed, "name": name, "lr": lr,
                                     "weight_decay": self.weight_decay, "no_decay": False})
            if exempt:
                param_groups.append({"params": exempt, "name": name, "lr": lr,
                                     "weight_decay": 0.0, "no_decay": True})

        if self.optimizer == "sgd":
            optimizer = torch.optim.SGD(param_groups, lr=self.lr_max, momentum=self.momentum)
        else:
            optimizer = torch.optim.AdamW(param_groups, lr=self.lr_max)
        logger.info("built %s with %d param groups", self.optimizer, len(param_groups))
        return optimizer

    def apply(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        groups_params: Mapping[str, Iterable[str]],
    ) -> None:
        """Set every param group's LR, every parameter's requires_grad and the mode of
        frozen BatchNorm layers for optimizer step `step`. `optimizer` is the one
        `build_optimizer` made, so its param groups hold every parameter. Call this right
        before the step's forward pass, after `model.train()` (which would undo the BN modes)."""
        trainable = {name: self.trainable(name, step) for name in self.group_names}
        for param_group in optimizer.param_groups:
            name = param_group["name"]
            param_group["lr"] = self.lr(name, step)
            for param in param_group["params"]:
                param.requires_grad_(trainable[name])

        if self.frozen_bn == "eval":
            for module, group in self._batch_norm_groups(model, groups_params):
                if not trainable[group]:
                    module.eval()
                else:
                    module.train(model.training)

    def _batch_norm_groups(
        self, model: nn.Module, groups_params: Mapping[str, Iterable[str]]
    ) -> list[tuple[nn.Module, str]]:
        """List (BatchNorm module, group) pairs, remembered per model: finding them walks
        every module, which would cost about as much as the rest of `apply` on each step."""
        key = tuple((group, tuple(names)) for group, names in groups_params.items())
        cached = self._bn_cache.get(model)
        if cached is None or cached[0] != key:
            cached = (key, _batch_norm_groups(model, groups_params))
            self._bn_cache[model] = cached
        return cached[1]

    def _check_group_names(self, groups_params: Mapping[str, Iterable[str]]) -> None:
        if set(groups_params) != set(self.group_names):
            raise LabError(
                "ft.err_groups_mismatch",
                schedule=", ".join(self.group_names),
                model=", ".join(groups_params),
            )


# ---- presets ----------------------------------------------------------------------------


def make_preset(
    preset: str,
    group_names: list[str],
    epochs: int = 5,
    steps_per_epoch: int = 100,
    backbone_epoch: int = 1,
) -> Schedule:
    """Build one of the course's transfer-learning strategies as a schedule.

    `group_names` go from the input to the output; the last one is the head."""
    n = len(group_names)
    head_only = [0 if i == n - 1 else None for i in range(n)]
    common = dict(epochs=epochs, steps_per_epoch=steps_per_epoch, optimizer="adamw",
                  weight_decay=1e-4, lr_min=0.0)

    if preset == "feature_extraction":
        # Freeze the backbone, train only the classifier; a new head can take a high LR.
        groups = _groups(group_names, head_only)
        return Schedule(groups=groups, lr_max=1e-3, warmup_steps=0, **common)

    if preset == "full_finetuning":
        # Everything learns from the start at the course's fine-tuning LR (AdamW 1e-4,
        # weight decay 1e-4), with one epoch of warmup when there is room for it.
        groups = _groups(group_names, [0] * n)
        return Schedule(groups=groups, lr_max=1e-4, warmup_epochs=1 if epochs > 1 else 0, **common)

    if preset == "gradual_unfreezing":
        # The head first, then one more group per epoch towards the input; groups whose
        # turn would come after the last epoch stay frozen.
        epochs_in = [n - 1 - i for i in range(n)]
        groups = _groups(group_names, [e if e < epochs else None for e in epochs_in])
        return Schedule(groups=groups, lr_max=1e-3, lr_decay=0.1, **common)

    if preset == "frozen_then_discriminative":
        # One epoch with only the head, then every group with a factor 10 per group:
        # head 1e-3, layer4 1e-4, layer3 1e-5... (the course's example).
        unfreeze = [0 if i == n - 1 else min(1, epochs - 1) for i in range(n)]
        groups = _groups(group_names, unfreeze)
        return Schedule(groups=groups, lr_max=1e-3, lr_decay=0.1, **common)

    if preset == "backbone_at_epoch":
        # The head alone until epoch N, then the whole backbone at a tenth of its LR.
        start = min(max(backbone_epoch, 0), epochs - 1)
        groups = tuple(
            GroupSchedule(name=name, unfreeze_epoch=0, lr_max=None) if i == n - 1
            else GroupSchedule(name=name, unfreeze_epoch=start, lr_max=1e-4)
            for i, name in enumerate(group_names)
        )
        return Schedule(groups=groups, lr_max=1e-3, **common)

    raise LabError("ft.err_preset", preset=preset, allowed=", ".join(PRESETS))


def _groups(names: list[str], unfreeze_epochs: list[int | None]) -> tuple[GroupSchedule, ...]:
    return tuple(GroupSchedule(name=n, unfreeze_epoch=e) for n, e in zip(names, unfreeze_epochs))


# ---- helpers ------------------------------------------------------------------------------


def _round_significant(value: float) -> float:
    return float(f"{value:.{_LR_SIGNIFICANT_DIGITS}g}")


def _no_decay_names(model: nn.Module) -> set[str]:
    """BatchNorm parameters and every bias: weight decay would only pull them to zero."""
    names = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(module, _BATCH_NORM_TYPES) or param_name == "bias":
                names.add(full)
    return names


def _batch_norm_groups(
    model: nn.Module, groups_params: Mapping[str, Iterable[str]]
) -> list[tuple[nn.Module, str]]:
    """List (BatchNorm module, group) pairs, the group being the one that contains its weight."""
    group_of = {p: g for g, names in groups_params.items() for p in names}
    pairs = []
    for module_name, module in model.named_modules():
        if not isinstance(module, _BATCH_NORM_TYPES):
            continue
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if full in group_of:
                pairs.append((module, group_of[full]))
                break
    return pairs


# JSON field kinds: what each key of the schedule object may hold.
_SCHEDULE_FIELDS = {
    "version": "int",
    "groups": "list",
    "epochs": "int",
    "steps_per_epoch": "int",
    "optimizer": "str",
    "lr_max": "float",
    "lr_min": "float",
    "lr_decay": "float",
    "warmup_steps": "int",
    "warmup_epochs": "int",
    "warmup_start_factor": "float",
    "momentum": "float",
    "weight_decay": "float",
    "no_decay_bn_bias": "bool",
    "frozen_bn": "str",
}
_GROUP_FIELDS = {
    "name": "str",
    "unfreeze_epoch": "int?",
    "lr_max": "float?",
    "modules": "str-list",
}


def _check_keys(data: Mapping[str, Any], allowed: Mapping[str, str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise LabError("ft.err_json_unknown", where=where, fields=", ".join(map(str, unknown)))


def _coerce(key: str, value: Any, kind: str) -> Any:
    """Check a JSON value against its field kind; ints are accepted where floats are."""
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int" and is_int:
        return value
    if kind == "float" and (is_int or isinstance(value, float)):
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "str-list" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise LabError("ft.err_json_field", field=key, detail=repr(value)[:80])


def _group_from_dict(item: Any) -> GroupSchedule:
    if not isinstance(item, Mapping):
        raise LabError("ft.err_json_field", field="groups", detail=repr(item)[:80])
    _check_keys(item, _GROUP_FIELDS, where="groups")
    if "name" not in item:
        raise LabError("ft.err_json_field", field="groups.name", detail="missing")
    kwargs = {key: _coerce(f"groups.{key}", item[key], _GROUP_FIELDS[key]) for key in item}
    return GroupSchedule(**kwargs)
