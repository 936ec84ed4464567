"""Summary cache benchmark: the first ResNet-152 summary versus the cached one the page gets after.

    .venv/bin/python bench/bench_summary_cache.py
    .venv/bin/python bench/bench_summary_cache.py --repeats 50

Calls `ui.arch_cache.cached_summary`, the very function the Arquitectura page calls, outside a
Streamlit server (st.cache_data then keeps its entries in memory, as it does per server process).
A small CIFAR summary runs first so that the one-time cost of loading PyTorch's meta-device
kernels is not charged to the baseline. The baseline is measured in the same run: the cache is
cleared, the first call builds and summarises, and every later call must come from the cache.
Prints one line per measurement and the ratio first ÷ cached.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from streamlit.logger import set_log_level

set_log_level("error")  # st.cache_data warns "no runtime found" outside a server: expected here
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.models import cifar_config, imagenet_config  # noqa: E402
from ui.arch_cache import cached_summary  # noqa: E402

DEPTH = 152


def timed(config_dict: dict) -> tuple[float, object]:
    start = time.perf_counter()
    summary = cached_summary(config_dict)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="cached calls to time (median reported)")
    args = parser.parse_args()

    cached_summary.clear()
    timed(cifar_config(20).to_dict())  # warm-up: loads the meta-device kernels once

    config_dict = imagenet_config(DEPTH).to_dict()
    first_s, summary = timed(config_dict)
    cached_s = [timed(config_dict)[0] for _ in range(args.repeats)]
    median_cached_s = statistics.median(cached_s)

    print(f"ResNet-{DEPTH}: {summary.total_params:,} parameters, {summary.total_macs / 1e9:.3f} GMACs")
    print(f"first (build + summary): {first_s * 1000:9.2f} ms")
    print(f"cached (median of {args.repeats}):  {median_cached_s * 1000:9.2f} ms")
    print(f"ratio first / cached:    {first_s / median_cached_s:9.1f}x")


if __name__ == "__main__":
    main()
