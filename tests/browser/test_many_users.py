"""Ten students on one server while a run trains: no session sees another's settings, no page fails.

One Chromium with ten browser contexts (ten Streamlit sessions). Each student picks a language
and a network of their own on Arquitectura, then walks through the other pages, all of them at
about the same time, while a training run is in the worker. At the end every session must
still show its own language and network, no page may have shown an exception or an error
banner, and the server log must hold no traceback. Throughput with and without the students
is measured by bench/bench_many_users.py.
"""

from __future__ import annotations

import time

import pytest

from core import jobs
from tests.browser.helpers import full_screenshot, log_offset, new_log_problems
from tests.browser.users import (
    background_run_config,
    choose_networks,
    close_sessions,
    explore,
    isolation_problems,
    make_students,
    open_sessions,
)

STUDENTS = 10
ROUNDS = 2  # pages each student visits besides Arquitectura; tours start at different pages, so all are hit
EXPLORE_BUDGET_S = 240  # no new round starts after this
RUN_START_TIMEOUT_S = 120


def wait_until_running(store: jobs.Store, run_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = store.get(run_id)
        if run.status == jobs.RUNNING and run.progress_done > 0:
            return
        assert run.is_active, f"background run ended early: {run.status} {run.message_key} {run.message_params}"
        time.sleep(0.5)
    raise AssertionError(f"background run did not start training within {timeout_s} s")


def stop_run(store: jobs.Store, run_id: str, timeout_s: float = 60) -> None:
    """Cancel the run and wait for the worker to let it go, so nothing keeps training after the test."""
    if store.get(run_id).is_active:
        store.cancel(run_id)
    deadline = time.monotonic() + timeout_s
    while store.get(run_id).is_active and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.fixture
def background_run(streamlit_server, streamlit_runs_dir, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_WORKER_THREADS", "1")  # read by the worker this fixture may spawn
    store = jobs.Store(streamlit_runs_dir)
    run_id = store.submit("train", background_run_config(epochs=50), name="many-users", owner="test")
    store.ensure_worker()
    try:
        yield store, run_id
    finally:
        stop_run(store, run_id)


def test_ten_students_while_training(streamlit_server, browser, streamlit_log_path, background_run):
    store, run_id = background_run
    offset = log_offset(streamlit_log_path)
    students = make_students(STUDENTS)
    try:
        open_sessions(browser, students, streamlit_server)
        wait_until_running(store, run_id, RUN_START_TIMEOUT_S)
        steps_before = store.get(run_id).progress_done

        choose_networks(students)
        visits = explore(students, rounds=ROUNDS, until=time.monotonic() + EXPLORE_BUDGET_S)

        run = store.get(run_id)
        assert run.status == jobs.RUNNING, f"the run should still train while students explore: {run.status}"
        assert run.progress_done > steps_before, "the run made no progress while the students explored"
        isolation = [problem for student in students for problem in isolation_problems(student)]
        problems = [problem for student in students for problem in student.problems]
        for student in students[:2]:
            full_screenshot(student.page, f"many-users-{student.number}-{student.lang}")
    finally:
        close_sessions(students)

    assert visits >= STUDENTS, f"only {visits} page visits"
    assert not isolation, "\n".join(isolation)
    assert not problems, "\n".join(problems)
    logged = new_log_problems(streamlit_log_path, offset)
    assert not logged, "the server logged errors:\n\n" + "\n\n".join(logged)
