"""TTA batching benchmark: 10 views in one batch versus 10 single-view passes (ResNet-18, 224 px, CPU).

    .venv/bin/python bench/bench_tta.py                  # all CPU threads torch uses by default
    .venv/bin/python bench/bench_tta.py --threads 1 --repeats 7

Prints one line per measurement and the ratio batched ÷ single (target ≤ 0.5). "forward" times
only the model. "end to end" also cuts the views from the decoded photo, as the TTA page does,
and there the single-view path cuts each view on its own, as a per-view loop would. Both paths
run the same model in eval mode under torch.inference_mode. Their repeats are interleaved and the medians
reported, so background load on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import tta  # noqa: E402
from core.data import imagenet_preprocessing, sample_photos  # noqa: E402
from core.images import decode_image  # noqa: E402
from core.models import build_resnet, imagenet_config  # noqa: E402

TARGET_RATIO = 0.5
VIEW_FAMILY = "ten_crop"  # exactly 10 views


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(batched, single, repeats: int) -> tuple[float, float]:
    """Return the median seconds of `batched` and `single`, interleaved repeat by repeat after a warm-up."""
    batched()
    single()
    batched_times, single_times = [], []
    for _ in range(repeats):
        batched_times.append(seconds(batched))
        single_times.append(seconds(single))
    return statistics.median(batched_times), statistics.median(single_times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each path")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_resnet(imagenet_config(18), seed=0).eval()  # same layers and shapes as torchvision's
    preprocessing = imagenet_preprocessing()  # shorter side 256, centre crop 224
    photo = next(p for p in sample_photos() if p.name == "chelsea")
    image = decode_image(photo.data, photo.file_name).image
    views = tta.expand_views([VIEW_FAMILY])
    inputs = tta.make_views(image, preprocessing, views)  # (10, 3, 224, 224)

    print(f"ResNet-18, {len(views)} views of {tuple(inputs.shape[1:])}, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, median of {args.repeats}")

    forward_batched, forward_single = measure(
        lambda: tta.forward_views(model, inputs),
        lambda: [tta.forward_views(model, inputs[i:i + 1]) for i in range(len(views))],
        args.repeats,
    )
    full_batched, full_single = measure(
        lambda: tta.run_views(model, image, preprocessing, views),
        lambda: [tta.run_views(model, image, preprocessing, [view]) for view in views],
        args.repeats,
    )

    for label, batched, single in (("forward", forward_batched, forward_single),
                                   ("end to end", full_batched, full_single)):
        ratio = batched / single
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        print(f"{label:>10}: batched {batched * 1000:8.1f} ms | 10 single {single * 1000:8.1f} ms | "
              f"ratio {ratio:.3f} ({verdict} target ≤ {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
