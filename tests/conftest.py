"""Test-wide settings: one torch thread, and every path the lab writes to inside a temp folder."""

import os
import tempfile
from pathlib import Path

import pytest
import torch

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="resnet-lab-tests-"))
# Set before any lab module is imported, so nothing in a test writes to the user's runs/ or caches,
# and nothing can find (or download) real weights.
os.environ.setdefault("RESNET_LAB_RUNS_DIR", str(_SESSION_DIR / "runs"))
os.environ.setdefault("RESNET_LAB_DATA_DIR", str(_SESSION_DIR / "data"))
os.environ.setdefault("TORCH_HOME", str(_SESSION_DIR / "torch-home"))

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
