"""AppTest helpers: page files are resolved from the repository root, whatever the test's folder."""

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_TIMEOUT_S = 120


def open_page(relative_path: str, lang: str = "es", **session: object) -> AppTest:
    """Return an AppTest for `pages/x.py` (or `app.py`) with the language and any state preset."""
    at = AppTest.from_file(str(REPO_ROOT / relative_path), default_timeout=APP_TIMEOUT_S)
    at.session_state["lang"] = lang
    for key, value in session.items():
        at.session_state[key] = value
    return at


@pytest.fixture
def page():
    return open_page


def stop_workers(store: jobs.Store) -> None:
    """End the worker processes started for `store` (by pid) and wait until they are gone."""
    for pid in store.live_workers("cpu"):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not jobs._pid_alive(pid):
                break
            time.sleep(0.1)


@contextmanager
def isolated_runs_store(tmp_path_factory, name: str) -> Iterator[jobs.Store]:
    """Point RESNET_LAB_RUNS_DIR at a fresh folder with a one-thread worker; stop its workers after."""
    patch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp(name)
    patch.setenv("RESNET_LAB_RUNS_DIR", str(root))
    patch.setenv("RESNET_LAB_WORKER_THREADS", "1")
    store = jobs.Store(root)
    try:
        yield store
    finally:
        stop_workers(store)
        patch.undo()
