"""Probe cost benchmark: one gradient-flow probe versus a plain forward+backward, same model and batch.

    .venv/bin/python bench/bench_probe.py
    .venv/bin/python bench/bench_probe.py --repeats 20 --threads 2 --device cuda

The probe (core.gradients.probe) does one forward pass with a hook per block, one backward
pass, and one norm per parameter tensor read back in a single transfer. The baseline is what
any training step does before the optimiser: zero the gradients, forward, cross-entropy,
backward. Both run on CIFAR ResNet-56 (He et al. 2016), batch 64 of 32×32 Gaussian inputs, in
training mode. Runs alternate (baseline, probe, baseline, and so on) after warm-up, so load on a
shared machine hits both alike. Ratios of the medians and of the minima are printed. Target: ≤ 1.3.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.gradients import probe  # noqa: E402
from core.models import build_resnet, cifar_config  # noqa: E402

TARGET_RATIO = 1.3


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_backward(model, images, labels) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    _ = model.fc.weight.grad.sum().item()  # one device→host transfer, as the probe makes


def timed(function, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the steadier."""
    _synchronise(device)
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    _synchronise(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = cifar_config(args.depth)
    model = build_resnet(config, seed=0).to(device).train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, config.input_size, config.input_size, generator=generator).to(device)
    labels = torch.randint(0, config.num_classes, (args.batch_size,), generator=generator).to(device)

    runs = {"forward+backward": lambda: forward_backward(model, images, labels),
            "probe": lambda: probe(model, images, labels)}
    for _ in range(args.warmup):
        for function in runs.values():
            function()

    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, function in runs.items():
            wall_s, cpu_s = timed(function, device)
            wall[name].append(wall_s)
            cpu[name].append(cpu_s)

    print(f"ResNet-{args.depth}, batch {args.batch_size}, {device}, {torch.get_num_threads()} thread(s), "
          f"{args.repeats} alternating repeats")
    for name in runs:
        print(f"  {name:<18} wall median {statistics.median(wall[name]) * 1000:8.1f} ms, "
              f"min {min(wall[name]) * 1000:8.1f} ms; CPU median {statistics.median(cpu[name]) * 1000:8.1f} ms")
    wall_ratio = statistics.median(wall["probe"]) / statistics.median(wall["forward+backward"])
    min_ratio = min(wall["probe"]) / min(wall["forward+backward"])
    cpu_ratio = statistics.median(cpu["probe"]) / statistics.median(cpu["forward+backward"])
    verdict = "within" if wall_ratio <= TARGET_RATIO else "ABOVE"
    print(f"probe / forward+backward: {wall_ratio:.3f} (wall medians), {min_ratio:.3f} (wall minima), "
          f"{cpu_ratio:.3f} (CPU medians); {verdict} the target {TARGET_RATIO}")


if __name__ == "__main__":
    main()
