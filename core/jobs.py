"""Background jobs: runs persisted in SQLite, executed by a separate worker process.

A job is a function `run_job(config: dict, ctx: JobContext) -> None` named by import string in
JOB_KINDS. Pages call `submit(...)`, then `ensure_worker()`, and poll `get(run_id)` and
`metrics(run_id)`; they never run a job themselves. The worker (core/worker.py) claims queued runs
one at a time per device, so at most MAX_RUNNING_PER_DEVICE runs train on a device at once
(default 1, env RESNET_LAB_MAX_RUNNING_PER_DEVICE) and the others wait with a queue position.

Layout under the runs dir (default `<project>/runs`, env RESNET_LAB_RUNS_DIR overrides):

    lab.sqlite3          runs, metrics and workers tables, WAL mode
    <run_id>/            the files of one run (config.json, checkpoints, eval.json, ...)
    <run_id>/CANCEL      present once a cancel was requested: `should_stop()` is a file check,
                         cheap enough for every training step
    worker.log           stdout and stderr of the worker processes

A run whose worker died (killed, server restart) is found by `recover_orphans()`, which sets
its status to "interrupted". `resume(run_id)` queues it again, and the job then reads
`ctx.resuming` and continues from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.errors import LabError

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "lab.sqlite3"
WORKER_LOG = "worker.log"
CANCEL_FILE = "CANCEL"

JOB_KINDS = {
    "train": "core.engine:run_job",
    "lr_find": "core.lr_finder:run_job",
    "degradation": "core.degradation:run_job",
}

QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE_STATUSES = (QUEUED, RUNNING)
FINAL_STATUSES = (DONE, FAILED, CANCELLED, INTERRUPTED)

# A worker writes a heartbeat every HEARTBEAT_S; one silent for HEARTBEAT_TIMEOUT_S is dead even
# when its pid is alive (the pid was reused, or the process hangs outside Python).
HEARTBEAT_S = 2.0
HEARTBEAT_TIMEOUT_S = 30.0
# Metrics are buffered in the worker and written at most this often, so the page (polling once a
# second) reads fresh values without one SQLite transaction per training step.
METRICS_FLUSH_S = 0.5

RUN_ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    owner TEXT,
    device TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    queued_at REAL NOT NULL,
    started REAL,
    finished REAL,
    worker_pid INTEGER,
    progress_done INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    resume INTEGER NOT NULL DEFAULT 0,
    message_key TEXT,
    message_params TEXT
);
CREATE INDEX IF NOT EXISTS runs_queue ON runs(device, status, queued_at);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    series TEXT NOT NULL,
    step INTEGER NOT NULL,
    time REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics(run_id, series, step);
CREATE TABLE IF NOT EXISTS workers (
    pid INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL
);
"""


def runs_dir() -> Path:
    """Return the folder of the database and the run folders (read from the environment each call)."""
    configured = os.environ.get("RESNET_LAB_RUNS_DIR")
    return Path(configured).resolve() if configured else PROJECT_ROOT / "runs"


def max_running_per_device() -> int:
    return max(1, int(os.environ.get("RESNET_LAB_MAX_RUNNING_PER_DEVICE", "1")))


def default_device() -> str:
    """Return the device a run goes to unless its config names one ("cpu", "cuda", "cuda:1", ...)."""
    from core.device import pick_device

    return str(pick_device())


def validate_run_id(run_id: str) -> str:
    """Return `run_id` if it has the shape `new_run_id` makes, else raise LabError.

    Run ids arrive from the URL and become folder names, so nothing else may pass.
    """
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise LabError("train.err_bad_run_id", run_id=str(run_id)[:40])
    return run_id


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class Run:
    """One row of the runs table, as the pages read it."""

    id: str
    kind: str
    name: str
    owner: str | None
    device: str
    config: dict
    status: str
    created: float
    queued_at: float
    started: float | None
    finished: float | None
    worker_pid: int | None
    progress_done: int
    progress_total: int
    cancel_requested: bool
    resume: bool
    message_key: str | None
    message_params: dict
    queue_position: int | None = None  # 1 = next to start; None when not queued

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def progress(self) -> float:
        return self.progress_done / self.progress_total if self.progress_total else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left, extrapolated from the time per unit of progress so far."""
        if self.status != RUNNING or not self.started or not self.progress_done or not self.progress_total:
            return None
        elapsed = time.time() - self.started
        return elapsed / self.progress_done * (self.progress_total - self.progress_done)


def _pid_alive(pid: int | None) -> bool:
    """True if `pid` is a running process (a zombie counts as dead; one of our children is reaped)."""
    if not pid or pid <= 0:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class Store:
    """The SQLite database of one runs dir. Every method opens its own short connection."""

    def __init__(self, root: Path | None = None, persistent: bool = False) -> None:
        """Open (and create if needed) the database of `root`, by default `runs_dir()`.

        A `persistent` store keeps one connection per thread open, which the worker uses: opening
        and closing a connection per write costs milliseconds (closing the last connection
        checkpoints the WAL), too much for a training loop.
        """
        self.root = Path(root) if root is not None else runs_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / DB_NAME
        self._local = threading.local() if persistent else None
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self._local is not None:
            if getattr(self._local, "connection", None) is None:
                self._local.connection = self._open()
            yield self._local.connection
            return
        connection = self._open()
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Open an IMMEDIATE transaction, so writers wait for the lock instead of failing on an upgrade."""
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def run_dir(self, run_id: str) -> Path:
        return self.root / validate_run_id(run_id)

    # --- submitting and reading runs -------------------------------------------------------

    def submit(self, kind: str, config: dict, name: str | None = None, owner: str | None = None,
               device: str | None = None) -> str:
        """Queue a job and return its run id. The config must be JSON-serialisable."""
        if kind not in JOB_KINDS:
            raise LabError("train.err_unknown_kind", kind=kind, allowed=", ".join(JOB_KINDS))
        device = device or config.get("device") or default_device()
        run_id = new_run_id()
        now = time.time()
        self.run_dir(run_id).mkdir(parents=True)
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO runs (id, kind, name, owner, device, config, status, created, queued_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, kind, name or run_id, owner, device, json.dumps(config), QUEUED, now, now),
            )
        logger.info("run %s submitted (kind %s, device %s, owner %s)", run_id, kind, device, owner)
        return run_id

    def _row_to_run(self, row: sqlite3.Row, position: int | None) -> Run:
        return Run(
            id=row["id"], kind=row["kind"], name=row["name"], owner=row["owner"], device=row["device"],
            config=json.loads(row["config"]), status=row["status"], created=row["created"],
            queued_at=row["queued_at"], started=row["started"], finished=row["finished"],
            worker_pid=row["worker_pid"], progress_done=row["progress_done"],
            progress_total=row["progress_total"], cancel_requested=bool(row["cancel_requested"]),
            resume=bool(row["resume"]), message_key=row["message_key"],
            message_params=json.loads(row["message_params"] or "{}"), queue_position=position,
        )

    def _queue_position(self, connection: sqlite3.Connection, row: sqlite3.Row) -> int | None:
        if row["status"] != QUEUED:
            return None
        ahead = connection.execute(
            "SELECT COUNT(*) FROM runs WHERE device = ? AND status = ? AND (queued_at < ? OR (queued_at = ? AND id < ?))",
            (row["device"], QUEUED, row["queued_at"], row["queued_at"], row["id"]),
        ).fetchone()[0]
        return ahead + 1

    def get(self, run_id: str) -> Run | None:
        validate_run_id(run_id)
        with self._connect() as connection:
            row = connection.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            return self._row_to_run(row, self._queue_position(connection, row))

    def list_runs(self, kind: str | None = None) -> list[Run]:
        """Return all runs, newest first."""
        with self._connect() as connection:
            if kind is None:
                rows = connection.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
            else:
                rows = connection.execute("SELECT * FROM runs WHERE kind = ? ORDER BY created DESC", (kind,)).fetchall()
            return [self._row_to_run(row, self._queue_position(connection, row)) for row in rows]

    # --- metrics ----------------------------------------------------------------------------

    def append_metrics(self, rows: list[tuple[str, str, int, float, dict]]) -> None:
        """Write (run_id, series, step, time, {name: value}) rows in one transaction."""
        if not rows:
            return
        with self._transaction() as connection:
            connection.executemany(
                "INSERT INTO metrics (run_id, series, step, time, payload) VALUES (?, ?, ?, ?, ?)",
                [(run_id, series, step, at, json.dumps(values)) for run_id, series, step, at, values in rows],
            )

    def discard_metrics_after(self, run_id: str, step: int) -> None:
        """Delete metric rows past `step`: a resumed run redoes those steps."""
        with self._transaction() as connection:
            connection.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (validate_run_id(run_id), step))

    def metrics(self, run_id: str, series: str | None = None, since_step: int | None = None,
                max_points: int | None = None) -> pd.DataFrame:
        """Return a run's metrics as a DataFrame: columns series, step, time and one per metric name.

        `since_step` keeps only rows with a larger step, for incremental polling. `max_points`
        keeps about that many rows per series by striding in SQL, the last row included, so a
        chart of an hour-long run costs the same as a chart of a short one.
        """
        validate_run_id(run_id)
        clauses, params = ["run_id = ?"], [run_id]
        if series is not None:
            clauses.append("series = ?")
            params.append(series)
        if since_step is not None:
            clauses.append("step > ?")
            params.append(int(since_step))
        where = " AND ".join(clauses)

        with self._connect() as connection:
            if max_points:
                counts = connection.execute(
                    f"SELECT series, COUNT(*), MAX(id) FROM metrics WHERE {where} GROUP BY series", params).fetchall()
                parts = []
                for series_name, count, last_id in counts:
                    stride = max(1, math.ceil(count / max_points))
                    parts.extend(connection.execute(
                        f"SELECT series, step, time, payload FROM metrics WHERE {where} AND series = ?"
                        " AND (step % ? = 0 OR id = ?) ORDER BY step, id",
                        [*params, series_name, stride, last_id]).fetchall())
                rows = parts
            else:
                rows = connection.execute(
                    f"SELECT series, step, time, payload FROM metrics WHERE {where} ORDER BY series, step, id",
                    params).fetchall()

        records = [{"series": row[0], "step": row[1], "time": row[2], **json.loads(row[3])} for row in rows]
        if not records:
            return pd.DataFrame(columns=["series", "step", "time"])
        return pd.DataFrame.from_records(records)

    # --- lifecycle ------------------------------------------------------------------------------

    def update_progress(self, run_id: str, done: int, total: int) -> None:
        with self._transaction() as connection:
            connection.execute("UPDATE runs SET progress_done = ?, progress_total = ? WHERE id = ?",
                               (int(done), int(total), run_id))

    def cancel(self, run_id: str) -> None:
        """Stop a run: a queued or interrupted one at once, a running one at its next step."""
        run_dir = self.run_dir(run_id)
        with self._transaction() as connection:
            row = connection.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise LabError("train.err_unknown_run", run_id=run_id)
            if row["status"] in (QUEUED, INTERRUPTED):
                connection.execute(
                    "UPDATE runs SET status = ?, finished = ?, cancel_requested = 1 WHERE id = ?",
                    (CANCELLED, time.time(), run_id))
            elif row["status"] == RUNNING:
                connection.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / CANCEL_FILE).touch()
        logger.info("run %s: cancel requested (was %s)", run_id, row["status"])

    def delete(self, run_id: str) -> None:
        """Remove a finished run: its rows and its folder. Active runs must be cancelled first."""
        run_dir = self.run_dir(run_id)
        with self._transaction() as connection:
            row = connection.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise LabError("train.err_unknown_run", run_id=run_id)
            if row["status"] in ACTIVE_STATUSES:
                raise LabError("train.err_delete_active", run_id=run_id)
            connection.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            connection.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(run_dir, ignore_errors=True)
        logger.info("run %s deleted", run_id)

    def resume(self, run_id: str) -> None:
        """Queue an interrupted run again; its job continues from the last checkpoint."""
        run_dir = self.run_dir(run_id)
        with self._transaction() as connection:
            row = connection.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise LabError("train.err_unknown_run", run_id=run_id)
            if row["status"] != INTERRUPTED:
                raise LabError("train.err_resume_status", run_id=run_id, status=row["status"])
            connection.execute(
                "UPDATE runs SET status = ?, queued_at = ?, resume = 1, cancel_requested = 0, worker_pid = NULL,"
                " finished = NULL, message_key = NULL, message_params = NULL WHERE id = ?",
                (QUEUED, time.time(), run_id))
        (run_dir / CANCEL_FILE).unlink(missing_ok=True)
        logger.info("run %s queued for resuming", run_id)

    def claim_next(self, device: str, pid: int) -> Run | None:
        """Atomically move the oldest queued run of `device` to running, if the device has room."""
        self.recover_orphans()
        with self._transaction() as connection:
            running = connection.execute(
                "SELECT COUNT(*) FROM runs WHERE device = ? AND status = ?", (device, RUNNING)).fetchone()[0]
            if running >= max_running_per_device():
                return None
            row = connection.execute(
                "SELECT id FROM runs WHERE device = ? AND status = ? ORDER BY queued_at, id LIMIT 1",
                (device, QUEUED)).fetchone()
            if row is None:
                return None
            connection.execute(
                "UPDATE runs SET status = ?, started = COALESCE(started, ?), worker_pid = ? WHERE id = ?",
                (RUNNING, time.time(), pid, row["id"]))
        return self.get(row["id"])

    def finish(self, run_id: str, status: str, message_key: str | None = None,
               message_params: dict | None = None) -> None:
        """Set a final status; without `message_key` the message the job set stays."""
        with self._transaction() as connection:
            if message_key is None:
                connection.execute("UPDATE runs SET status = ?, finished = ? WHERE id = ?",
                                   (status, time.time(), run_id))
            else:
                connection.execute(
                    "UPDATE runs SET status = ?, finished = ?, message_key = ?, message_params = ? WHERE id = ?",
                    (status, time.time(), message_key, json.dumps(message_params or {}, default=str), run_id))
        logger.info("run %s finished: %s %s", run_id, status, message_key or "")

    def set_message(self, run_id: str, key: str | None, params: dict | None = None) -> None:
        with self._transaction() as connection:
            connection.execute("UPDATE runs SET message_key = ?, message_params = ? WHERE id = ?",
                               (key, json.dumps(params or {}, default=str), run_id))

    # --- workers and orphans --------------------------------------------------------------

    def register_worker(self, pid: int, device: str) -> None:
        now = time.time()
        with self._transaction() as connection:
            connection.execute("INSERT OR REPLACE INTO workers (pid, device, started, heartbeat) VALUES (?, ?, ?, ?)",
                               (pid, device, now, now))

    def heartbeat(self, pid: int) -> None:
        with self._transaction() as connection:
            connection.execute("UPDATE workers SET heartbeat = ? WHERE pid = ?", (time.time(), pid))

    def unregister_worker(self, pid: int) -> None:
        with self._transaction() as connection:
            connection.execute("DELETE FROM workers WHERE pid = ?", (pid,))

    def _worker_alive(self, connection: sqlite3.Connection, pid: int | None) -> bool:
        if not _pid_alive(pid):
            return False
        row = connection.execute("SELECT heartbeat FROM workers WHERE pid = ?", (pid,)).fetchone()
        return row is not None and time.time() - row["heartbeat"] < HEARTBEAT_TIMEOUT_S

    def live_workers(self, device: str) -> list[int]:
        with self._connect() as connection:
            pids = [row["pid"] for row in connection.execute("SELECT pid FROM workers WHERE device = ?", (device,))]
            return [pid for pid in pids if self._worker_alive(connection, pid)]

    def recover_orphans(self) -> list[str]:
        """Mark running runs whose worker is gone as interrupted; forget dead workers. Returns their ids."""
        orphans = []
        with self._transaction() as connection:
            for row in connection.execute("SELECT id, worker_pid FROM runs WHERE status = ?", (RUNNING,)).fetchall():
                if not self._worker_alive(connection, row["worker_pid"]):
                    orphans.append(row["id"])
                    connection.execute(
                        "UPDATE runs SET status = ?, finished = ?, message_key = ?, message_params = ? WHERE id = ?",
                        (INTERRUPTED, time.time(), "train.msg_interrupted", "{}", row["id"]))
            for row in connection.execute("SELECT pid FROM workers").fetchall():
                if not self._worker_alive(connection, row["pid"]):
                    connection.execute("DELETE FROM workers WHERE pid = ?", (row["pid"],))
        for run_id in orphans:
            logger.warning("run %s: its worker is gone, marked interrupted", run_id)
        return orphans

    def ensure_worker(self, device: str | None = None) -> list[int]:
        """Start a worker process for each device (or just `device`) where runs wait and none is alive.

        Returns the pids of the workers serving those devices (empty when nothing is queued).
        """
        self.recover_orphans()
        with self._connect() as connection:
            waiting = [row["device"] for row in connection.execute(
                "SELECT DISTINCT device FROM runs WHERE status = ?", (QUEUED,))]
        pids = []
        for queued_device in waiting:
            if device is not None and queued_device != device:
                continue
            live = self.live_workers(queued_device)
            pids.append(live[0] if live else self._spawn_worker(queued_device))
        return pids

    def _spawn_worker(self, device: str) -> int:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), environment.get("PYTHONPATH")]))
        environment["RESNET_LAB_RUNS_DIR"] = str(self.root)
        with open(self.root / WORKER_LOG, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "core.worker", "--runs-dir", str(self.root), "--device", device],
                cwd=PROJECT_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        # Registered here as well as by the worker itself, so a second caller arriving before the
        # worker has imported torch finds it alive and does not start another one.
        self.register_worker(process.pid, device)
        logger.info("worker %d started for device %s", process.pid, device)
        return process.pid


@dataclass
class JobContext:
    """The job function's view of the system: where to write, what to report, when to stop.

    Metrics and progress are handed to a writer thread that stores them every METRICS_FLUSH_S,
    so the training loop never waits for SQLite. `close()` (the worker calls it when the job
    returns) writes what is left and stops the thread.
    """

    run_id: str
    run_dir: Path
    device: "torch.device"  # noqa: F821 (torch is imported by the job, not by the store)
    store: Store | None = None
    resuming: bool = False  # True when an interrupted run continues from its last checkpoint
    _buffer: list = field(default_factory=list, repr=False)
    _progress: tuple[int, int] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # guards the buffer, briefly
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # keeps writes in order
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _writer: threading.Thread | None = field(default=None, repr=False)

    def log_metrics(self, step: int, metrics: dict[str, float], series: str = "train") -> None:
        """Record the metrics of one step; the writer thread stores them within METRICS_FLUSH_S."""
        values = {name: float(value) for name, value in metrics.items()}
        with self._lock:
            self._buffer.append((self.run_id, series, int(step), time.time(), values))
        self._start_writer()

    def set_progress(self, done: int, total: int) -> None:
        with self._lock:
            self._progress = (int(done), int(total))
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None and self.store is not None:
            self._writer = threading.Thread(target=self._write_periodically, name=f"metrics-{self.run_id}",
                                            daemon=True)
            self._writer.start()

    def _write_periodically(self) -> None:
        while not self._stop.wait(METRICS_FLUSH_S):
            try:
                self.flush()
            except sqlite3.Error:  # a locked database for a moment: the rows stay for the next try
                logger.exception("run %s: writing metrics failed", self.run_id)

    def flush(self) -> None:
        """Store the buffered metrics and the latest progress now, in order."""
        with self._write_lock:
            with self._lock:
                rows, self._buffer = self._buffer, []
                progress, self._progress = self._progress, None
            if self.store is None:
                return
            try:
                self.store.append_metrics(rows)
                if progress is not None:
                    self.store.update_progress(self.run_id, *progress)
            except sqlite3.Error:
                with self._lock:  # keep them for the next write
                    self._buffer = rows + self._buffer
                    self._progress = self._progress or progress
                raise

    def close(self) -> None:
        """Stop the writer thread and store everything still buffered."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join()
        self.flush()

    def should_stop(self) -> bool:
        """Return True once a cancel was requested (a file check, cheap enough for every step)."""
        return (self.run_dir / CANCEL_FILE).exists()

    def save_json(self, name: str, obj: object) -> Path:
        """Write `obj` as JSON to `run_dir/name` atomically (readers never see half a file)."""
        if "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"save_json takes a plain file name, got {name!r}")
        path = self.run_dir / name
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
        os.replace(temporary, path)
        return path

    def set_message(self, key: str | None, **params: object) -> None:
        """Store the catalog message the page shows with the run (e.g. why training stopped early)."""
        if self.store is not None:
            self.store.set_message(self.run_id, key, params)

    def discard_metrics_after(self, step: int) -> None:
        """Delete stored rows past `step` (a resumed run redoes them), after storing the buffer."""
        self.flush()
        if self.store is not None:
            self.store.discard_metrics_after(self.run_id, step)


# Module-level API over the default runs dir; each call reads RESNET_LAB_RUNS_DIR, so tests that
# set it to a temporary folder get their own database.

def submit(kind: str, config: dict, name: str | None = None, owner: str | None = None) -> str:
    return Store().submit(kind, config, name=name, owner=owner)


def get(run_id: str) -> Run | None:
    return Store().get(run_id)


def list_runs(kind: str | None = None) -> list[Run]:
    return Store().list_runs(kind)


def metrics(run_id: str, series: str | None = None, since_step: int | None = None,
            max_points: int | None = None) -> pd.DataFrame:
    return Store().metrics(run_id, series=series, since_step=since_step, max_points=max_points)


def cancel(run_id: str) -> None:
    Store().cancel(run_id)


def delete(run_id: str) -> None:
    Store().delete(run_id)


def resume(run_id: str) -> None:
    store = Store()
    store.resume(run_id)
    store.ensure_worker(store.get(run_id).device)


def recover_orphans() -> list[str]:
    return Store().recover_orphans()


def ensure_worker(device: str | None = None) -> list[int]:
    return Store().ensure_worker(device)


def run_dir(run_id: str) -> Path:
    return Store().run_dir(run_id)
