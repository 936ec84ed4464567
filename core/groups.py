"""Layer groups: the units that freezing, learning rates, gradient plots and logs apply to.

They are defined here once. A group is a list of module-name prefixes; every parameter of the
model must fall in exactly one group.
"""

from __future__ import annotations

from torch import nn

from core.errors import LabError

STEM_MODULES = ("conv1", "bn1")
HEAD_MODULES = ("fc",)
MAX_NAMES_IN_MESSAGE = 8


def default_groups(model: nn.Module) -> dict[str, list[str]]:
    """Return {"stem": [...], "layer1": [...], ..., "head": [...]}, input side first."""
    groups: dict[str, list[str]] = {"stem": list(STEM_MODULES)}
    for index in range(len(model.stages)):
        groups[f"layer{index + 1}"] = [f"layer{index + 1}"]
    groups["head"] = list(HEAD_MODULES)
    return groups


def _matches(parameter_name: str, prefix: str) -> bool:
    return parameter_name == prefix or parameter_name.startswith(prefix + ".")


def _shorten(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE])
    hidden = len(names) - MAX_NAMES_IN_MESSAGE
    return shown if hidden <= 0 else f"{shown} (+{hidden})"


def params_by_group(model: nn.Module, groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """Return the parameter names of each group, in model order.

    Raises LabError naming the parameters when one falls in two groups or in none.
    """
    assigned: dict[str, list[str]] = {name: [] for name in groups}
    overlaps: list[str] = []
    orphans: list[str] = []

    for parameter_name, _ in model.named_parameters():
        owners = [group for group, prefixes in groups.items()
                  if any(_matches(parameter_name, prefix) for prefix in prefixes)]
        if not owners:
            orphans.append(parameter_name)
        elif len(owners) > 1:
            overlaps.append(f"{parameter_name} ({' + '.join(owners)})")
        else:
            assigned[owners[0]].append(parameter_name)

    if overlaps:
        raise LabError("errors.groups_overlap", names=_shorten(overlaps))
    if orphans:
        raise LabError("errors.groups_orphans", names=_shorten(orphans))
    return assigned


def group_of(parameter_name: str, groups: dict[str, list[str]]) -> str:
    """Return the group a parameter belongs to (the first match; use params_by_group to validate)."""
    for group, prefixes in groups.items():
        if any(_matches(parameter_name, prefix) for prefix in prefixes):
            return group
    raise LabError("errors.groups_orphans", names=parameter_name)


def group_parameter_counts(model: nn.Module, groups: dict[str, list[str]]) -> dict[str, int]:
    """Return the number of scalar parameters in each group."""
    parameters = dict(model.named_parameters())
    return {group: sum(parameters[name].numel() for name in names)
            for group, names in params_by_group(model, groups).items()}
