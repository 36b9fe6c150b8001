"""Time 10,000 cost-model estimates over a mix of models, chips, phases and shapes, per stack.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_estimate.py [N] [STACK ...]`; default stacks:
vllm, the default engine stack, and reference).
Prints wall time, estimates per second and microseconds per estimate for each stack.
"""

from __future__ import annotations

import itertools
import platform
import sys
import time

from gimletc.cost.roofline import estimate
from gimletc.hardware import get_chip
from gimletc.models import get_model

MODELS = ["llama-3.2-1b", "llama-3.1-8b", "qwen3-32b", "mixtral-8x7b", "gpt-oss-20b"]
CHIPS = ["h100-sxm", "h200", "b200", "mi300x", "gaudi3"]
SHAPES = [("prefill", 1, 2048, 0), ("decode", 32, 1, 4096), ("verify", 8, 5, 2048), ("decode", 1, 1, 512)]


def main(n: int = 10_000, stacks: tuple[str, ...] = ("vllm", "reference")) -> None:
    cases = list(itertools.product([get_model(m) for m in MODELS], [get_chip(c) for c in CHIPS], SHAPES))
    for stack in stacks:
        for m, c, (phase, b, t, ctx) in cases:  # warm caches and imports
            estimate(m, c, phase, b, t, ctx, check_fit=False, stack=stack)
        start = time.perf_counter()
        for i in range(n):
            m, c, (phase, b, t, ctx) = cases[i % len(cases)]
            estimate(m, c, phase, b + i % 7, t, ctx + i % 13, check_fit=False, stack=stack)
        wall = time.perf_counter() - start
        print(f"{stack}: {n} estimates in {wall:.3f} s: {n / wall:,.0f} estimates/s, {wall / n * 1e6:.1f} us each "
              f"({platform.processor() or platform.machine()}, Python {platform.python_version()})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, tuple(sys.argv[2:]) or ("vllm", "reference"))
