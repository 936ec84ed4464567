"""The command line under torchrun: DistributedDataParallel with 2 CPU processes (gloo).

Kept tiny (digits capped at 20 per class, 12×12 inputs, 2 epochs) since it starts two
Python processes that each import torch.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from core import checkpoints
from core.checkpoints import load_run_model
from core.models import ResNetConfig, build_resnet
from tests.test_engine import run_config

REPO_ROOT = Path(__file__).resolve().parent.parent
PROGRESS_LINE = re.compile(
    r"^step +\d+/\d+ \| epoch \d+ \| loss \d+\.\d{4} \| acc \d\.\d{4} \| grad_norm \d+\.\d{3} \| "
    r"lr \d\.\d\de[+-]\d\d \| \d+ img/s \| eta \d+:\d\d:\d\d$")


def test_torchrun_two_cpu_processes(tmp_path):
    # The stem stays frozen the whole run, which exercises DDP with parameters that get no gradient.
    config = run_config(epochs=2, data={"source": "digits", "max_per_class": 20}, unfreeze={"stem": None},
                        train={"batch_size": 8, "log_every_steps": 2})
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    out = tmp_path / "run"
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}

    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "core.train_cli", "--config", str(config_path), "--out", str(out)],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    lines = completed.stdout.splitlines()
    progress = [line for line in lines if line.startswith("step")]
    assert progress and all(PROGRESS_LINE.match(line) for line in progress), progress
    assert len([line for line in lines if line.startswith("val")]) == 2  # rank 0 prints, once per epoch

    saved = checkpoints.read_run_config(out)
    assert saved["world_size"] == 2
    # 160 training images, 80 per process, batch 8: 10 steps per epoch, not the 20 of one process.
    assert saved["schedule"]["steps_per_epoch"] == 10

    initial = build_resnet(ResNetConfig.from_dict(saved["architecture"]), seed=0).state_dict()
    final = load_run_model(out).model.state_dict()
    stem = [name for name in final if name.startswith(("conv1.", "bn1."))]
    assert all(torch.equal(initial[name], final[name]) for name in stem)
    assert not torch.equal(initial["layer1.0.conv1.weight"], final["layer1.0.conv1.weight"])
