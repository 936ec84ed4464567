"""The worker process: claims the queued runs of one device and executes them one at a time.

Started by `core.jobs.Store.ensure_worker` as

    python -m core.worker --runs-dir runs --device cpu

in a session of its own, so it outlives the Streamlit script run that started it and a page
reload. It exits after IDLE_EXIT_S without work; the next `ensure_worker()` starts a new one.
A heartbeat thread keeps the worker's row fresh, so a hung or vanished worker's run is found
and marked interrupted by `recover_orphans()`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import threading
import time
from pathlib import Path

from core.errors import LabError
from core.jobs import CANCELLED, DONE, FAILED, HEARTBEAT_S, JOB_KINDS, JobContext, Run, Store

logger = logging.getLogger(__name__)

IDLE_EXIT_S = 10.0
POLL_S = 0.5
# Environment overrides, for servers and tests: torch threads of the worker (default: torch's
# choice) and seconds without work before the worker exits.
THREADS_ENV = "RESNET_LAB_WORKER_THREADS"
IDLE_EXIT_ENV = "RESNET_LAB_WORKER_IDLE_EXIT_S"


def resolve_job(kind: str):
    """Import the job function named by JOB_KINDS[kind] ("module:function")."""
    module_name, function_name = JOB_KINDS[kind].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def execute(store: Store, run: Run) -> str:
    """Run one claimed job to its end and record the outcome; returns the final status."""
    import torch

    context = JobContext(run_id=run.id, run_dir=store.run_dir(run.id), device=torch.device(run.device),
                         store=store, resuming=run.resume)
    context.run_dir.mkdir(parents=True, exist_ok=True)
    logger.info("run %s started (kind %s, resuming %s)", run.id, run.kind, run.resume)
    try:
        resolve_job(run.kind)(run.config, context)
    except LabError as error:
        context.close()
        logger.warning("run %s failed: %s", run.id, error)
        store.finish(run.id, FAILED, error.key, error.params)
        return FAILED
    except Exception as error:  # the worker must outlive any job; the traceback goes to the log
        context.close()
        logger.exception("run %s crashed", run.id)
        store.finish(run.id, FAILED, "errors.unexpected", {"kind": type(error).__name__})
        return FAILED

    context.close()
    status = CANCELLED if context.should_stop() else DONE
    store.finish(run.id, status)
    return status


def _beat(store: Store, pid: int, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            store.heartbeat(pid)
        except Exception:  # a locked database for a moment must not end the heartbeat
            logger.exception("worker %d: heartbeat failed", pid)


def serve(runs_dir: Path, device: str, idle_exit_s: float = IDLE_EXIT_S) -> None:
    """Claim and execute runs of `device` until none has arrived for `idle_exit_s`."""
    store = Store(runs_dir, persistent=True)
    pid = os.getpid()
    store.register_worker(pid, device)
    stop = threading.Event()
    heartbeat = threading.Thread(target=_beat, args=(store, pid, stop), daemon=True)
    heartbeat.start()
    logger.info("worker %d serving device %s in %s", pid, device, runs_dir)

    idle_since = time.monotonic()
    try:
        while True:
            run = store.claim_next(device, pid)
            if run is None:
                if time.monotonic() - idle_since > idle_exit_s:
                    break
                time.sleep(POLL_S)
                continue
            execute(store, run)
            idle_since = time.monotonic()
    finally:
        stop.set()
        store.unregister_worker(pid)
        logger.info("worker %d exits", pid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ResNet Lab background worker")
    parser.add_argument("--runs-dir", required=True, type=Path)
    parser.add_argument("--device", required=True)
    parser.add_argument("--idle-exit-s", type=float, default=float(os.environ.get(IDLE_EXIT_ENV, IDLE_EXIT_S)))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    if os.environ.get(THREADS_ENV):
        import torch

        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    serve(args.runs_dir, args.device, args.idle_exit_s)


if __name__ == "__main__":
    main()
