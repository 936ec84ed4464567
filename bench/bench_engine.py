"""How much the engine costs over a bare PyTorch loop, and what it reaches on a GPU.

    python -m bench.bench_engine                   # CPU: CIFAR ResNet-20, 32 px, batch 64
    python -m bench.bench_engine --device cuda     # adds ResNet-50, 224 px, bf16, channels_last

1. Overhead ratio: the same model, data, batch and optimizer are trained twice. Once by
   `core.engine.fit` with every metric on (loss, accuracy, LR and gradient norm per group,
   images/s), written to a real SQLite store through a JobContext, cancel checked and the
   schedule applied at every step. Once by a bare loop (forward, loss, backward, step, and one
   synchronisation at the end). Both do the same validation pass after each epoch. Runs
   alternate, and the median over the repeats of engine images/s ÷ bare images/s is reported.
   The target is ≥ 0.97. On a busy CPU pass `--threads 1` for steadier timings.
2. With CUDA: ResNet-50 at 224 px, bf16 autocast and channels_last, through the engine's
   TrainStep: images/s, and the fraction of the GPU's peak bf16 rate that implies, with the
   FLOPs per image counted by torch.utils.flop_counter (forward + backward).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.engine import EarlyStopping, EpochBatches, TrainOptions, TrainStep, evaluate, fit
from core.groups import default_groups, params_by_group
from core.jobs import JobContext, Store
from core.models import build_resnet, cifar_config, imagenet_config
from core.schedule import GroupSchedule, Schedule

# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, without sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def synthetic_data(count: int, size: int, classes: int, seed: int = 0) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, size, size, generator=generator)  # (N, C, H, W)
    labels = torch.randint(0, classes, (count,), generator=generator)
    return torch.utils.data.TensorDataset(images, labels)


def make_schedule(model: torch.nn.Module, steps_per_epoch: int, epochs: int) -> Schedule:
    groups = tuple(GroupSchedule(name=name) for name in default_groups(model))
    return Schedule(groups=groups, epochs=epochs, steps_per_epoch=steps_per_epoch, lr_max=1e-3)


def engine_images_per_s(config, train, val, device, epochs: int, batch_size: int,
                        store_root: Path) -> tuple[float, float]:
    """Return (images/s by wall clock, images/s by this process's CPU time) of `fit`."""
    model = build_resnet(config, seed=0).to(device)
    batches = EpochBatches(train, batch_size, shuffle=True, drop_last=True)
    schedule = make_schedule(model, len(batches), epochs)
    store = Store(store_root, persistent=True)  # as in the worker
    run_id = store.submit("train", {"device": str(device), "bench": True})
    context = JobContext(run_id, store.run_dir(run_id), device, store=store)
    # Same arithmetic as the bare loop (float32, default memory format): only the machinery differs.
    options = TrainOptions(batch_size=batch_size, early_stopping=EarlyStopping(patience=None), restore_best=False,
                           amp=False, channels_last=False,
                           log_every_steps=1 if device.type == "cpu" else 10)
    _sync(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    fit(model, schedule, batches, EpochBatches(val, batch_size, shuffle=False), device, options, ctx=context)
    context.close()
    _sync(device)
    images = len(batches) * batch_size * epochs
    return images / (time.perf_counter() - started), images / (time.process_time() - cpu_started)


def bare_images_per_s(config, train, val, device, epochs: int, batch_size: int) -> tuple[float, float]:
    """Return (images/s by wall clock, images/s by CPU time) of the bare loop."""
    model = build_resnet(config, seed=0).to(device)
    batches = EpochBatches(train, batch_size, shuffle=True, drop_last=True)
    schedule = make_schedule(model, len(batches), epochs)
    optimizer = schedule.build_optimizer(model, schedule.group_params(model))
    val_batches = EpochBatches(val, batch_size, shuffle=False)
    _sync(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        model.train()
        batches.set_epoch(epoch)
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        evaluate(model, val_batches, device)
    _sync(device)
    images = len(batches) * batch_size * epochs
    return images / (time.perf_counter() - started), images / (time.process_time() - cpu_started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def overhead_ratio(device: torch.device, repeats: int, steps: int, batch_size: int, epochs: int) -> None:
    config = cifar_config(20)
    train = synthetic_data(steps * batch_size, 32, 10)
    val = synthetic_data(batch_size, 32, 10, seed=1)
    bare, engine = [], []
    with tempfile.TemporaryDirectory() as folder:
        bare_images_per_s(config, train, val, device, 1, batch_size)  # warm-up: allocator, kernels, caches
        for repeat in range(repeats):
            bare.append(bare_images_per_s(config, train, val, device, epochs, batch_size))
            engine.append(engine_images_per_s(config, train, val, device, epochs, batch_size, Path(folder)))
            print(f"repeat {repeat + 1}/{repeats} | bare {bare[-1][0]:8.1f} img/s | engine {engine[-1][0]:8.1f} img/s"
                  f" | by CPU time: bare {bare[-1][1]:8.1f} engine {engine[-1][1]:8.1f}", flush=True)

    # Each engine run is paired with the bare run just before it, so slow drifts of a shared
    # machine cancel out of the per-pair ratios. Their median is the headline number. The CPU
    # time of the process (all its threads) is less disturbed by other processes on a busy
    # machine; on a GPU the wall clock is the one that counts.
    wall = statistics.median(e[0] / b[0] for e, b in zip(engine, bare))
    cpu = statistics.median(e[1] / b[1] for e, b in zip(engine, bare))
    print(f"overhead  ResNet-20 32px batch {batch_size} on {device} | bare {statistics.median(b[0] for b in bare):.1f}"
          f" img/s | engine {statistics.median(e[0] for e in engine):.1f} img/s | ratio {wall:.3f} wall clock,"
          f" {cpu:.3f} CPU time (medians of {repeats} paired runs; target >= 0.97)", flush=True)


def flops_per_image(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """Forward + backward FLOPs of one image, counted by torch (a multiply-add is 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.randn(2, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(images).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def peak_tflops(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def gpu_throughput(device: torch.device, batch_size: int, steps: int) -> None:
    config = imagenet_config(50)
    model = build_resnet(config, seed=0).to(device).to(memory_format=torch.channels_last)
    flops = flops_per_image(model, 224, device)
    groups = params_by_group(model, default_groups(model))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = TrainStep(model, optimizer, groups, device, amp=True, channels_last=True)
    images = torch.randn(batch_size, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch_size,), device=device)

    for _ in range(10):  # warm-up: cuDNN picks its algorithms
        step(images, labels)
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step(images, labels)
    _sync(device)
    images_per_s = batch_size * steps / (time.perf_counter() - started)

    achieved = images_per_s * flops / 1e12
    peak = peak_tflops(device)
    share = f"{achieved / peak:.1%} of {peak:.0f} TFLOP/s peak" if peak else "peak unknown for this GPU"
    print(f"gpu       ResNet-50 224px bf16 channels_last batch {batch_size} on {torch.cuda.get_device_name(device)} | "
          f"{images_per_s:.0f} img/s | {flops / 1e9:.1f} GFLOP/img | {achieved:.0f} TFLOP/s = {share}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch in the overhead test")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gpu-batch-size", type=int, default=256)
    parser.add_argument("--gpu-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 gives steadier timings)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overhead_ratio(device, args.repeats, args.steps, args.batch_size, args.epochs)
    if device.type == "cuda":
        gpu_throughput(device, args.gpu_batch_size, args.gpu_steps)


if __name__ == "__main__":
    main()
