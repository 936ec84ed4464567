"""Schedule overhead benchmark: what `Schedule.apply` adds to every training step.

    .venv/bin/python bench/bench_schedule.py
    .venv/bin/python bench/bench_schedule.py --depth 152 --repeats 200

`Schedule.apply` runs before every optimizer step of a run (LRs, requires_grad, frozen
BatchNorm modes). It is timed on an ImageNet ResNet (parameters and modules only, no forward).
The baseline, measured in the same run, is one real engine step (`core.engine.TrainStep`) of a
CIFAR ResNet-20 on a batch of 32 images of 32×32 on the CPU. Also times the preview the
Fine-tuning page draws (`Schedule.lr_curves`) for a long schedule. Prints one line per
measurement and the ratio step ÷ apply.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.engine import TrainStep  # noqa: E402
from core.groups import default_groups  # noqa: E402
from core.models import build_resnet, cifar_config, imagenet_config  # noqa: E402
from core.schedule import make_preset  # noqa: E402


def median_s(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50, help="ImageNet ResNet depth for the apply timing")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: on a shared machine more threads only add contention

    model = build_resnet(imagenet_config(args.depth))
    schedule = make_preset("gradual_unfreezing", list(default_groups(model)), epochs=5, steps_per_epoch=100)
    groups_params = schedule.group_params(model)
    optimizer = schedule.build_optimizer(model, groups_params)
    model.train()
    steps = iter(range(10**9))
    apply_s = median_s(lambda: schedule.apply(next(steps) % schedule.total_steps, model, optimizer, groups_params),
                       args.repeats)

    small = build_resnet(cifar_config(20), seed=0)
    small_schedule = make_preset("full_finetuning", list(default_groups(small)), epochs=1, steps_per_epoch=10)
    small_groups = small_schedule.group_params(small)
    small_optimizer = small_schedule.build_optimizer(small, small_groups)
    step = TrainStep(small, small_optimizer, small_groups, torch.device("cpu"), amp=False, channels_last=False)
    images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))  # (B, C, H, W), (B,)
    step(images, labels)  # warm-up
    step_s = median_s(lambda: step(images, labels), max(5, args.repeats // 10))

    long_schedule = make_preset("frozen_then_discriminative", list(default_groups(model)), epochs=100,
                                steps_per_epoch=1000)
    preview_s = median_s(long_schedule.lr_curves, 5)

    print(f"Schedule.apply, ResNet-{args.depth} ({len(list(model.parameters()))} tensors): {apply_s * 1e6:9.1f} µs")
    print(f"TrainStep, CIFAR ResNet-20, batch 32, CPU:                {step_s * 1e3:9.2f} ms")
    print(f"ratio step / apply:                                       {step_s / apply_s:9.1f}x")
    print(f"lr_curves preview, 100 epochs × 1000 steps:               {preview_s * 1e3:9.2f} ms")


if __name__ == "__main__":
    main()
