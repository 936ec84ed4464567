"""The device training uses, and its description for the environment panel."""

from __future__ import annotations

import torch


def pick_device() -> torch.device:
    """Return CUDA when present, then Apple MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device() -> dict:
    """Return {"kind", "name", "memory_gib", "threads"} for the device `pick_device` chooses."""
    device = pick_device()
    description = {"kind": device.type, "name": "CPU", "memory_gib": None, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(0)
        description["name"] = properties.name
        description["memory_gib"] = round(properties.total_memory / 2**30, 1)
    elif device.type == "mps":
        description["name"] = "Apple MPS"
    return description
