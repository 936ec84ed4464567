"""Train headless from a config file, with the same engine the Entrenamiento page uses.

    python -m core.train_cli --config cfg.json --out runs/cli-digits
    torchrun --standalone --nproc_per_node 2 -m core.train_cli --config cfg.json --out /tmp/ddp

`cfg.json` is a run config as the page submits it (keys in core.engine.run_job), for example

    {"architecture": {"stage_blocks": [1, 1, 1], "stem": "cifar", "base_width": 8},
     "data": {"source": "digits"}, "train": {"batch_size": 32}, "epochs": 3}

Under torchrun each process trains its share of every batch through DistributedDataParallel
(NCCL on CUDA, gloo on the CPU). Rank 0 prints and writes the run folder, which
`core.checkpoints.load_run_model` reads like any run of the page. Ctrl-C stops at the next
step and still restores and saves the best weights.

One fixed-format line per log interval (rank 0 only):

    step     40/132 | epoch 1 | loss 0.4512 | acc 0.8750 | grad_norm 1.234 | lr 1.00e-02 | 1530 img/s | eta 0:00:12
    val    epoch 1 | val_loss 0.2064 | val_acc 0.9526
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import torch

from core.engine import train_run
from core.errors import LabError

logger = logging.getLogger(__name__)


class ProgressPrinter:
    """The CLI's job context: prints progress lines, stops on Ctrl-C (agreed by all processes)."""

    def __init__(self, rank: int, world_size: int, check_every_steps: int, device: torch.device) -> None:
        self.rank, self.world_size = rank, world_size
        self.check_every_steps = check_every_steps
        self.device = device
        self.interrupted = False
        self.stop_agreed = False
        self.calls = 0
        self.done, self.total = 0, 0
        self.started = time.monotonic()

    def request_stop(self, *_: object) -> None:
        self.interrupted = True

    def set_progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def should_stop(self) -> bool:
        """Every process must stop at the same step under DDP, so the flag is all-reduced now and then."""
        self.calls += 1
        if self.world_size == 1:
            return self.interrupted
        if not self.stop_agreed and self.calls % self.check_every_steps == 0:
            flag = torch.tensor([1 if self.interrupted else 0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            self.stop_agreed = bool(flag.item())
        return self.stop_agreed

    def log_metrics(self, step: int, metrics: dict[str, float], series: str = "train") -> None:
        if self.rank != 0:
            return
        if series == "val":
            print(f"val    epoch {int(metrics['epoch']) + 1} | val_loss {metrics['loss']:.4f} | "
                  f"val_acc {metrics['acc']:.4f}", flush=True)
            return
        if "images_per_s" not in metrics:  # one line per log interval: the row that closes it
            return
        lr = max((value for name, value in metrics.items() if name.startswith("lr/")), default=0.0)
        elapsed = time.monotonic() - self.started
        remaining = elapsed / (step + 1) * max(0, self.total - step - 1)
        print(f"step {step + 1:>6}/{self.total} | epoch {int(metrics['epoch']) + 1} | "
              f"loss {metrics['loss']:.4f} | acc {metrics['acc']:.4f} | grad_norm {metrics['grad_norm']:.3f} | "
              f"lr {lr:.2e} | {metrics['images_per_s']:.0f} img/s | "
              f"eta {datetime.timedelta(seconds=round(remaining))}", flush=True)


def _distributed_setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; a single process without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        from core.device import pick_device

        return 0, 1, pick_device()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    torch.distributed.init_process_group(backend=backend)
    return torch.distributed.get_rank(), world_size, device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a ResNet Lab run config headless.")
    parser.add_argument("--config", required=True, type=Path, help="run config JSON (see core.engine.run_job)")
    parser.add_argument("--out", type=Path, help="run folder to write (default runs/cli-<time>)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (single process only)")
    args = parser.parse_args(argv)

    rank, world_size, device = _distributed_setup()
    if args.device and world_size == 1:
        device = torch.device(args.device)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)

    config = json.loads(args.config.read_text(encoding="utf-8"))
    if args.out is None:
        from core.jobs import runs_dir

        args.out = runs_dir() / ("cli-" + time.strftime("%Y%m%d-%H%M%S"))
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)

    check_every = int((config.get("train") or {}).get("log_every_steps", 10))
    printer = ProgressPrinter(rank, world_size, check_every, device)
    signal.signal(signal.SIGINT, printer.request_stop)
    status = 0
    try:
        result = train_run(config, printer, args.out, device, rank=rank, world_size=world_size)
        if rank == 0:
            print(f"done   {result.stop_reason} | epochs {result.state.epoch} | best epoch {result.state.best_epoch}"
                  f" | out {args.out}", flush=True)
    except LabError as error:
        print(f"error  {error}", file=sys.stderr, flush=True)
        status = 2
    finally:
        if world_size > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
