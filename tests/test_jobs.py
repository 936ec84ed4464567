"""The run store: queue order and positions, the per-device limit, cancel, delete, metrics, orphans.

These use a real SQLite database in a temporary folder; the worker process itself is exercised
end to end in tests/test_engine.py (kill and resume).
"""

import json
import math
import os
import subprocess
import sys

import pytest

from core import jobs
from core.errors import LabError
from core.jobs import CANCELLED, INTERRUPTED, QUEUED, RUNNING, JobContext, Store

CONFIG = {"device": "cpu", "note": "store test"}


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "runs")


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_database_uses_wal(store):
    with store._connect() as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_submit_creates_queued_run_with_folder(store):
    run_id = store.submit("train", CONFIG, name="first", owner="alice")
    run = store.get(run_id)
    assert (run.status, run.name, run.owner, run.device, run.config) == (QUEUED, "first", "alice", "cpu", CONFIG)
    assert store.run_dir(run_id).is_dir()


def test_unknown_kind_refused(store):
    with pytest.raises(LabError) as error:
        store.submit("mine_bitcoin", CONFIG)
    assert error.value.key == "train.err_unknown_kind"


def test_queue_positions_follow_submission_order(store):
    ids = [store.submit("train", CONFIG) for _ in range(3)]
    assert [store.get(run_id).queue_position for run_id in ids] == [1, 2, 3]


def test_one_run_per_device_by_default(store):
    first, second = store.submit("train", CONFIG), store.submit("train", CONFIG)
    claimed = store.claim_next("cpu", os.getpid())
    store.register_worker(os.getpid(), "cpu")
    assert claimed.id == first
    assert store.claim_next("cpu", os.getpid()) is None
    assert store.get(second).queue_position == 1


def test_other_device_not_blocked(store):
    store.submit("train", CONFIG)
    other = store.submit("train", {"device": "cuda:1"})
    store.register_worker(os.getpid(), "cpu")
    store.claim_next("cpu", os.getpid())
    assert store.claim_next("cuda:1", os.getpid()).id == other


def test_limit_can_be_raised(store, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_MAX_RUNNING_PER_DEVICE", "2")
    store.submit("train", CONFIG), store.submit("train", CONFIG)
    store.register_worker(os.getpid(), "cpu")
    assert store.claim_next("cpu", os.getpid()) is not None
    assert store.claim_next("cpu", os.getpid()) is not None


def test_cancel_queued_run_is_immediate(store):
    run_id = store.submit("train", CONFIG)
    store.cancel(run_id)
    assert store.get(run_id).status == CANCELLED


def test_cancel_running_run_signals_its_context(store):
    run_id = store.submit("train", CONFIG)
    store.register_worker(os.getpid(), "cpu")
    store.claim_next("cpu", os.getpid())
    context = JobContext(run_id, store.run_dir(run_id), device="cpu", store=store)
    assert not context.should_stop()
    store.cancel(run_id)
    assert context.should_stop()
    assert store.get(run_id).status == RUNNING  # the job ends it at its next step


def test_metrics_round_trip_and_incremental_read(store):
    run_id = store.submit("train", CONFIG)
    context = JobContext(run_id, store.run_dir(run_id), device="cpu", store=store)
    for step in range(5):
        context.log_metrics(step, {"loss": 1.0 / (step + 1), "lr/head": 0.1})
    context.log_metrics(4, {"loss": 0.5, "acc": 0.75}, series="val")
    context.flush()

    frame = store.metrics(run_id, series="train")
    assert frame["step"].tolist() == [0, 1, 2, 3, 4]
    assert frame["loss"].tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert store.metrics(run_id, series="train", since_step=2)["step"].tolist() == [3, 4]
    assert store.metrics(run_id, series="val")["acc"].tolist() == [0.75]


def test_metrics_downsampled_in_sql_keep_last_row(store):
    run_id = store.submit("train", CONFIG)
    store.append_metrics([(run_id, "train", step, 0.0, {"loss": float(step)}) for step in range(1000)])
    frame = store.metrics(run_id, series="train", max_points=100)
    assert len(frame) <= 101
    assert frame["step"].iloc[-1] == 999
    assert frame["step"].iloc[0] == 0


def test_metrics_of_unknown_run_is_empty(store):
    frame = store.metrics("20000101-000000-abcdef")
    assert frame.empty and list(frame.columns) == ["series", "step", "time"]


def test_delete_refuses_active_run(store):
    run_id = store.submit("train", CONFIG)
    with pytest.raises(LabError) as error:
        store.delete(run_id)
    assert error.value.key == "train.err_delete_active"


def test_delete_removes_rows_and_folder(store):
    run_id = store.submit("train", CONFIG)
    store.append_metrics([(run_id, "train", 0, 0.0, {"loss": 1.0})])
    store.cancel(run_id)
    store.delete(run_id)
    assert store.get(run_id) is None
    assert not store.run_dir(run_id).exists()
    assert store.metrics(run_id).empty


@pytest.mark.parametrize("bad", ["../etc", "/tmp/x", "20000101-000000-ABCDEF", "", "20000101-000000-abcdef/.."])
def test_run_ids_from_urls_are_validated(store, bad):
    with pytest.raises(LabError):
        store.get(bad)


def test_run_with_dead_worker_becomes_interrupted_and_resumable(store):
    run_id = store.submit("train", CONFIG)
    pid = dead_pid()
    store.register_worker(pid, "cpu")
    # What a worker that died after claiming the run leaves behind.
    with store._transaction() as connection:
        connection.execute("UPDATE runs SET status = ?, worker_pid = ? WHERE id = ?", (RUNNING, pid, run_id))

    assert store.recover_orphans() == [run_id]
    assert store.get(run_id).status == INTERRUPTED
    assert store.get(run_id).message_key == "train.msg_interrupted"

    store.resume(run_id)
    run = store.get(run_id)
    assert (run.status, run.resume, run.queue_position) == (QUEUED, True, 1)


def test_stale_heartbeat_counts_as_dead(store):
    run_id = store.submit("train", CONFIG)
    store.register_worker(os.getpid(), "cpu")
    store.claim_next("cpu", os.getpid())
    with store._transaction() as connection:
        connection.execute("UPDATE workers SET heartbeat = heartbeat - ?", (jobs.HEARTBEAT_TIMEOUT_S + 1,))
    assert store.recover_orphans() == [run_id]


def test_live_worker_run_is_not_an_orphan(store):
    run_id = store.submit("train", CONFIG)
    store.register_worker(os.getpid(), "cpu")
    store.claim_next("cpu", os.getpid())
    assert store.recover_orphans() == []
    assert store.get(run_id).status == RUNNING


def test_resume_only_interrupted_runs(store):
    run_id = store.submit("train", CONFIG)
    with pytest.raises(LabError) as error:
        store.resume(run_id)
    assert error.value.key == "train.err_resume_status"


def test_save_json_writes_inside_run_dir_only(store):
    run_id = store.submit("train", CONFIG)
    context = JobContext(run_id, store.run_dir(run_id), device="cpu", store=store)
    path = context.save_json("summary.json", {"acc": 0.5, "nan": math.inf})
    assert json.loads(path.read_text())["acc"] == 0.5
    with pytest.raises(ValueError):
        context.save_json("../escape.json", {})


def test_module_api_uses_environment_runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(tmp_path / "elsewhere"))
    run_id = jobs.submit("train", CONFIG, owner="bob")
    assert (tmp_path / "elsewhere" / run_id).is_dir()
    assert [run.id for run in jobs.list_runs("train")] == [run_id]


def test_ensure_worker_without_queued_runs_starts_nothing(store):
    assert store.ensure_worker() == []
