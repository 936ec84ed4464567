"""Real-browser fixtures: `streamlit run app.py` on a free local port, Debian's Chromium via Playwright.

Browser tests are skipped when /usr/bin/chromium is missing (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("RESNET_LAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
SERVER_START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {SERVER_START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def streamlit_runs_dir(tmp_path_factory) -> Path:
    """The runs dir (SQLite store and run folders) of the session's server; tests may read it."""
    return tmp_path_factory.mktemp("browser-runs")


@pytest.fixture(scope="session")
def streamlit_log_path(tmp_path_factory) -> Path:
    """The server's stdout and stderr: tracebacks and the lab's logged errors end up here."""
    return tmp_path_factory.mktemp("streamlit-log") / "server.log"


@contextmanager
def serve_app(runs_dir: Path, log_path: Path):
    """Run `streamlit run app.py` on a free local port until the block ends; yield its base URL."""
    port = _free_port()
    environment = {**os.environ, "RESNET_LAB_RUNS_DIR": str(runs_dir), "PYTHONUNBUFFERED": "1"}
    # One torch thread in the server and in its training worker, as in tests/conftest.py: on a
    # small shared machine two threads per process oversubscribe the cores and every step crawls.
    environment.setdefault("OMP_NUM_THREADS", "1")
    environment.setdefault("RESNET_LAB_WORKER_THREADS", "1")
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def streamlit_server(streamlit_runs_dir, streamlit_log_path):
    """Start the dashboard once per test session and yield its base URL."""
    with serve_app(streamlit_runs_dir, streamlit_log_path) as url:
        yield url


@pytest.fixture
def fresh_streamlit_server(tmp_path):
    """A server of this test's own, not visited yet: what a student meets right after a restart."""
    with serve_app(tmp_path / "runs", tmp_path / "server.log") as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}; install Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def browser_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


def wait_for_app(page, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(500)


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/ (kept by CI for a person to look at)."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    path = ARTIFACTS_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# NOTE: the whole-class journey and the ten-session test pass on a 2-core machine of their own
# in about five minutes, but can time out when other heavy processes share it. A Playwright
# timeout gets one more try, and a failed assertion or a second timeout fails the run.
_LOAD_SENSITIVE_FILES = ("test_journey.py", "test_many_users.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.fspath.basename in _LOAD_SENSITIVE_FILES:
            item.add_marker(pytest.mark.flaky(reruns=1, only_rerun=["TimeoutError"]))
