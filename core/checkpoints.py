"""Checkpoints of a run: safetensors weights plus the run config as JSON.

Files in a run folder:

    config.json              everything needed to rebuild the model and judge it: architecture,
                             schedule, data spec, class names (index order), preprocessing,
                             training options, initial weights
    model.safetensors        the final weights (the best epoch's when restore_best is on)
    best.safetensors         the best epoch's weights so far (kept for resuming)
    last.safetensors         the weights at the end of the last finished epoch
    last_state.pt            optimizer state and loop counters of that epoch, for resuming;
                             tensors and plain containers only, read with weights_only=True

Weights never go through pickle; the training state file is loaded with `weights_only=True`,
which refuses anything but tensors and plain Python containers.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import LabError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
LAST_FILE = "last.safetensors"
STATE_FILE = "last_state.pt"


def save_weights(model_or_state: nn.Module | dict[str, torch.Tensor], path: Path,
                 metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically (a reader never sees half a file)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}
    temporary = path.with_name(path.name + ".tmp")
    save_file(tensors, str(temporary), metadata=metadata)
    os.replace(temporary, path)


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors state dict to the CPU; raises LabError if the file is missing or damaged."""
    if not path.is_file():
        raise LabError("train.err_checkpoint_missing", path=str(path))
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise LabError("train.err_checkpoint_damaged", path=str(path), detail=str(error)[:200]) from error


def save_training_state(path: Path, optimizer: torch.optim.Optimizer, counters: dict) -> None:
    """Optimizer state and loop counters (plain numbers) for resuming after an interruption."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"optimizer": optimizer.state_dict(), "counters": counters}, temporary)
    os.replace(temporary, path)


def load_training_state(path: Path) -> dict:
    if not path.is_file():
        raise LabError("train.err_checkpoint_missing", path=str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refusals and truncated files alike
        raise LabError("train.err_checkpoint_damaged", path=str(path), detail=str(error)[:200]) from error


def write_run_config(run_dir: Path, config: dict) -> Path:
    path = run_dir / CONFIG_FILE
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_run_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise LabError("train.err_checkpoint_missing", path=str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LabError("train.err_checkpoint_damaged", path=str(path), detail=str(error)[:200]) from error


def final_weights_path(run_dir: Path) -> Path | None:
    """Return the weights a finished run offers: model.safetensors, else the best or last epoch's."""
    for name in (MODEL_FILE, BEST_FILE, LAST_FILE):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


@dataclass
class RunModel:
    """A trained model with what is needed to feed it and name its outputs."""

    model: nn.Module  # in eval mode, on the CPU
    config: dict  # the run's config.json
    class_names: list[str]  # index i of the output is class_names[i]
    preprocessing: dict  # as stored; core.data rebuilds its Preprocessing from it
    weights_path: Path


def load_run_model(run_dir: Path) -> RunModel:
    """Rebuild a run's model from config.json and load its final weights (strict)."""
    from core.models import ResNetConfig, build_resnet

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    weights_path = final_weights_path(run_dir)
    if weights_path is None:
        raise LabError("train.err_no_weights", run=run_dir.name)

    model = build_resnet(ResNetConfig.from_dict(config["architecture"]))
    state = load_weights(weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise LabError("train.err_checkpoint_mismatch", path=str(weights_path), detail=str(error)[:300]) from error
    model.eval()
    logger.info("loaded run model from %s", weights_path)
    return RunModel(model=model, config=config, class_names=list(config.get("class_names", [])),
                    preprocessing=dict(config.get("preprocessing") or {}), weights_path=weights_path)
