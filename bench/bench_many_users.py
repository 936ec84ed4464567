"""Training throughput with and without ten students exploring the lab in their browsers.

    .venv/bin/python bench/bench_many_users.py                       # 60 s per phase, 10 students
    .venv/bin/python bench/bench_many_users.py --phase-s 40 --students 5

Starts `streamlit run app.py` on a free local port with a runs dir of its own. Submits one
training run (CIFAR ResNet-8 on the embedded digits, batch 32, as long as the benchmark needs).
Reads its images/s from the run's metrics in the SQLite store (`core.jobs.Store.metrics`).
Three phases: quiet for `--phase-s` seconds; students exploring (tests/browser/users.py:
each in their own browser context, their own language and network; opening the lab and choosing
a network, then `--phase-s` seconds walking through the pages); quiet again. It prints the median images/s of each phase and the ratio busy ÷ quiet, quiet being
the mean of the two quiet phases (the machine's other load drifts; bracketing shows it).

Chromium and Playwright run on the same machine as the server here, so the ratio is a lower
bound for a classroom, where the browsers run on the students' own computers. The server and the
worker get one torch thread each (OMP_NUM_THREADS=1, RESNET_LAB_WORKER_THREADS=1) unless the
environment sets them. Everything is stopped at the end: the run is cancelled, the server ended.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from core import jobs  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, serve_app  # noqa: E402
from tests.browser.users import (  # noqa: E402
    background_run_config,
    choose_networks,
    close_sessions,
    explore,
    make_students,
    open_sessions,
)

RUN_START_TIMEOUT_S = 180
RUN_EPOCHS = 500  # far more than three phases need; the run is cancelled at the end


def wait_until_training(store: jobs.Store, run_id: str) -> None:
    deadline = time.monotonic() + RUN_START_TIMEOUT_S
    while time.monotonic() < deadline:
        run = store.get(run_id)
        if not run.is_active:
            raise RuntimeError(f"the run ended before the benchmark: {run.status} {run.message_key} {run.message_params}")
        if run.status == jobs.RUNNING and run.progress_done >= 5:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the run did not train within {RUN_START_TIMEOUT_S} s")


def throughput(store: jobs.Store, run_id: str, start: float, end: float) -> dict[str, float]:
    """Median and mean images/s of the training steps logged between `start` and `end` (time.time())."""
    frame = store.metrics(run_id, series="train")
    rows = frame[(frame["time"] >= start) & (frame["time"] < end)]
    values = rows["images_per_s"].dropna().tolist() if "images_per_s" in rows else []
    if not values:
        raise RuntimeError(f"no training step logged between {start:.0f} and {end:.0f}")
    return {"median": statistics.median(values), "mean": statistics.fmean(values), "steps": len(values)}


def quiet_phase(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def busy_phase(browser, students_count: int, url: str, seconds: float) -> tuple[float, float, int]:
    """Students open the lab and choose their networks, then walk the pages for `seconds` more."""
    students = make_students(students_count)
    start = time.time()
    try:
        open_sessions(browser, students, url)
        choose_networks(students)
        visits = explore(students, until=time.monotonic() + seconds)
        problems = [problem for student in students for problem in student.problems]
    finally:
        close_sessions(students)
    if problems:
        print("pages showed errors while measuring:\n  " + "\n  ".join(problems))
    return start, time.time(), visits


def report(name: str, stats: dict[str, float], start: float, end: float) -> None:
    print(f"{name:<8} {end - start:6.0f} s  {stats['steps']:5d} steps  median {stats['median']:7.1f} images/s"
          f"  mean {stats['mean']:7.1f} images/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-s", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--students", type=int, default=10)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-many-users-"))
    runs_dir, log_path = work / "runs", work / "server.log"
    os.environ.setdefault("RESNET_LAB_WORKER_THREADS", "1")  # the worker is spawned from this process
    with serve_app(runs_dir, log_path) as url:
        measure(url, runs_dir, args)
    print(f"server log: {log_path}")


def measure(url: str, runs_dir: Path, args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    store = jobs.Store(runs_dir)
    run_id = store.submit("train", background_run_config(RUN_EPOCHS), name="bench", owner="bench")
    store.ensure_worker()
    try:
        wait_until_training(store, run_id)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                quiet_1 = quiet_phase(args.phase_s)
                busy_start, busy_end, visits = busy_phase(browser, args.students, url, args.phase_s)
                quiet_2 = quiet_phase(args.phase_s)
            finally:
                browser.close()

        stats_1 = throughput(store, run_id, *quiet_1)
        stats_busy = throughput(store, run_id, busy_start, busy_end)
        stats_2 = throughput(store, run_id, *quiet_2)
        report("quiet", stats_1, *quiet_1)
        report("busy", stats_busy, busy_start, busy_end)
        report("quiet", stats_2, *quiet_2)
        quiet = (stats_1["median"] + stats_2["median"]) / 2
        print(f"{args.students} students, {visits} page visits while busy, besides opening the lab")
        print(f"ratio busy / quiet (median images/s): {stats_busy['median'] / quiet:.2f}", flush=True)
    finally:
        if store.get(run_id).is_active:
            store.cancel(run_id)
        deadline = time.monotonic() + 60
        while store.get(run_id).is_active and time.monotonic() < deadline:
            time.sleep(0.5)


if __name__ == "__main__":
    main()
