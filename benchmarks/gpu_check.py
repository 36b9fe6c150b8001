"""On a machine with an NVIDIA GPU: run a built plan with its GPU partitions on the GPU and print
measured vs predicted per device.

    python benchmarks/gpu_check.py PLAN [--repeats 5] [--executor local|process]
    python benchmarks/gpu_check.py              # builds the tiny phase split first (needs IREE's compiler)

PLAN is a plan built with cuda binaries (`gimletc build PLAN --backend cuda --backend llvm-cpu`, or
benchmarks/gpu_bundle.py, which compiles them on a machine with IREE's compiler). Runs the request
once to warm up, then `--repeats` times with `--backend iree`, and prints per device the chip, what
ran it (the GPU, or a CPU stand-in), the median measured busy time and the plan's predicted time
(its cost model's `stack`, as compiled: never refitted on this run), with the relative error.
Exits 1 if there is no CUDA GPU here, if a partition placed on an NVIDIA GPU did not run on it, or
if the split's tokens differ from the unsplit model's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", nargs="?", help="a plan with cuda binaries (default: build the tiny phase split here)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--executor", default="local", choices=("local", "process"))
    a = ap.parse_args()

    from gimletc.hardware import get_chip
    from gimletc.plan import load_plan
    from gimletc.runtime.executors import gpu_drivers
    from gimletc.runtime.local import run_plan

    if "cuda" not in gpu_drivers():
        print("gpu_check: no NVIDIA GPU with a CUDA driver here (IREE's cuda driver found no device)", file=sys.stderr)
        return 1
    if a.plan is None:
        sys.path.insert(0, str(HERE))
        from gpu_bundle import build_plans

        plan_path = build_plans(Path(tempfile.mkdtemp(prefix="gimletc-gpu-")))
    else:
        plan_path = Path(a.plan)
    plan = load_plan(plan_path)
    print(f"plan {plan.name} ({plan_path}): stack {plan.stack}, pipeline {plan.pipeline}")
    run_plan(plan_path, backend="iree", executor=a.executor)  # warm-up: loads, first-call costs
    reports = [run_plan(plan_path, backend="iree", executor=a.executor) for _ in range(max(1, a.repeats))]
    last = reports[-1]
    ok = all(r.tokens_match for r in reports)
    print(f"{'device':24s} {'chip':12s} {'ran on':24s} {'measured ms':>12s} {'predicted ms':>13s} {'error':>8s}")
    for name, d in last.devices.items():
        if d.get("kind") == "link":
            continue
        measured = statistics.median(r.devices[name]["measured_ms"] for r in reports)
        pred = d["predicted_ms"]
        err = f"{(measured - pred) / pred:+.0%}" if pred > 0 else "-"
        print(f"{name:24s} {d['chip']:12s} {d['ran_on']:24s} {measured:12.3f} {pred:13.3f} {err:>8s}")
        if get_chip(d["chip"]).vendor == "nvidia" and d["ran_on"] != "this machine's GPU":
            ok = False
    gpus = [n for n, d in last.devices.items() if d.get("ran_on") == "this machine's GPU"]
    wall = statistics.median(r.measured_ms for r in reports)
    print(f"request: measured {wall:.3f} ms (median of {len(reports)}), predicted {last.predicted_ms:.3f} ms; "
          f"max |split - unsplit| {max(r.max_abs_diff for r in reports):.2g}; tokens match: {ok}; on the GPU: {', '.join(gpus) or 'none'}")
    for n in last.notes:
        print(f"note: {n}")
    if not gpus:
        print("gpu_check: no partition ran on the GPU", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
