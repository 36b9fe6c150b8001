"""Validation of the load simulator: queueing theory, and agreement with the single-request replay.

Run:   .venv/bin/python benchmarks/serving_validation.py [--seeds 8] [--requests 200000] [--write]
--write regenerates the tables between the serving-validation markers of docs/serving.md.

1. Queueing theory. M/M/1: one CPU lane, Poisson arrivals, exponential tool times; M/D/1: one
   engine running one 1,000-token llama-3.2-1b prefill per step (the cost model's time, D), Poisson
   arrivals. Mean waiting time against W = rho·s/(1−rho) (M/M/1) and rho·D/(2(1−rho)) (M/D/1), each
   over several seeds, at the nominal load and at the load each sample actually offered.
2. Low load. Examples compiled onto the example clusters and simulated with one request at a time
   (constant arrivals far apart, loops at their mean count): end-to-end latency over the replay's
   makespan (`gimletc.analysis.replay`), for every partitioning the compiler can choose (partitionings
   that compile to the same plan as one listed before are left out).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import numpy as np

from gimletc.compiler import compile
from gimletc.cost.roofline import estimate
from gimletc.hardware import get_chip
from gimletc.ir import ASYNC_TOKEN, Graph, Op, Type, Value, parse_graph
from gimletc.models import get_model
from gimletc.analysis.replay import replay
from gimletc.sim.arrivals import generate
from gimletc.sim.load import EngineConfig, SimConfig, plan_workload, simulate, simulate_plan

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from serving_comparison import DOC, write_section  # noqa: E402

DEVICES = {"n.host": ("n", get_chip("xeon-host-16c"), "host"), "n.g0": ("n", get_chip("h200"), "accelerator")}
SMALL = "llama-3.2-1b"


def _tool() -> Graph:
    res = (Value("t.out", Type("tokens", 10)), Value("t.done", ASYNC_TOKEN))
    attrs = {"kind_of": "agent.tool", "of": "t", "device": "n.host", "devices": ("n.host#0",), "seconds": 1.0}
    return Graph((Op("exec.compute", "t", (), res, attrs),))


def _prefill() -> Graph:
    res = (Value("p.kv", Type("kv", get_model(SMALL).kv_cache_bytes(1000))), Value("p.done", ASYNC_TOKEN))
    attrs = {"kind_of": "model.prefill", "of": "a.prefill", "llm": "a", "model": SMALL, "tokens": 1000, "ctx": 0,
             "device": "n.g0", "devices": ("n.g0",), "seconds": 0.0}
    return Graph((Op("exec.compute", "p", (), res, attrs),))


def queueing(seeds: int, n: int) -> list[str]:
    D = estimate(get_model(SMALL), get_chip("h200"), "prefill", 1, 1000, 0).latency_s
    rows = ["| queue | load | theory W / service | mean error, nominal load | sd | worst | "
            "mean error, offered load | sd | worst |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("M/M/1", "M/D/1"):
        for rho in (0.3, 0.5, 0.8):
            nominal, offered = [], []
            for seed in range(seeds):
                if name == "M/M/1":
                    arr = generate("poisson", rho, n, seed)
                    cfg = SimConfig(host_lanes=1, tool_times="exponential", record_timeline=True, timeline_limit=n)
                    res = simulate(plan_workload(_tool(), DEVICES), arr, cfg, seed)
                    s = np.array([row[2] - row[1] for row in res.timeline])
                    wait = float((res.e2e - s).mean())
                    mean_s, theory = float(s.mean()), rho / (1 - rho)
                    rho_hat = n / arr.times[-1] * mean_s
                    theory_hat = rho_hat * mean_s / (1 - rho_hat)
                else:
                    arr = generate("poisson", rho / D, n, seed)
                    res = simulate(plan_workload(_prefill(), DEVICES), arr,
                                   SimConfig(engine=EngineConfig(max_prefill_tokens=1000, policy="prefill-first")), seed)
                    wait = float((res.ttft - D).mean())
                    theory = rho * D / (2 * (1 - rho))
                    rho_hat = n / arr.times[-1] * D
                    theory_hat = rho_hat * D / (2 * (1 - rho_hat))
                nominal.append(wait / theory - 1)
                offered.append(wait / theory_hat - 1)
            ratio = rho / (1 - rho) if name == "M/M/1" else rho / (2 * (1 - rho))
            a, b = np.array(nominal), np.array(offered)
            rows.append(f"| {name} | {rho} | {ratio:.3f} | {a.mean():+.2%} | {a.std():.2%} | {np.abs(a).max():.2%} | "
                        f"{b.mean():+.2%} | {b.std():.2%} | {np.abs(b).max():.2%} |")
    return rows


def low_load() -> list[str]:
    ex, sc = ROOT / "examples", ROOT / "examples" / "scenarios"
    spec = runpy.run_path(str(sc / "speculative.py"))["make_graph"](0.7)
    moe = runpy.run_path(str(sc / "moe_attn_ffn.py"))["graph"]
    cases = [("rag", str(ex / "rag.py"), "clusters/gpu_only.yaml"),
             ("rag", str(ex / "rag.py"), "clusters/mixed_rack.yaml"),
             ("coding_agent", str(ex / "coding_agent.py"), "clusters/mixed_rack.yaml"),
             ("multi_agent", str(ex / "multi_agent.py"), "clusters/h200_mi300x.yaml"),
             ("scenarios/speculative", spec, "scenarios/clusters/gpu_corsair.yaml"),
             ("scenarios/moe_attn_ffn", moe, "scenarios/clusters/h200_x16.yaml")]
    rows = ["| graph | cluster | partitioning | stack | model ops | replay s | simulated s | ratio |",
            "|---|---|---|---|---|---:|---:|---:|"]
    seen: set[tuple] = set()
    for name, g, cl in cases:
        for kind in ("auto", "phase", "layers", "attn-ffn", "speculative"):
            for stack in ("reference", "fused"):
                pipe = f"expand-llm,place{{partitions={kind}}},insert-transfers,schedule,overlap"
                try:
                    plan = compile(g, str(ex / cl), pipeline=pipe, baseline=False, stack=stack).plan
                except Exception:  # noqa: BLE001 - a partitioning that does not apply to this graph
                    continue
                graph = parse_graph(plan.ir)
                ops = sorted({str(op.attr("kind_of")).split(".")[1] for op, _ in graph.walk()
                              if op.kind == "exec.compute" and str(op.attr("kind_of")).startswith("model.")})
                span = replay(graph).makespan
                key = (name, cl, stack, tuple(ops), round(span, 9))
                if key in seen:  # this partitioning compiled to the same plan as an earlier one
                    continue
                seen.add(key)
                # prefill-first: the replay prefills a batched op (scenarios with `batch` 512) whole,
                # where an engine's token budget would split its sequences over iterations.
                res = simulate_plan(plan, generate("constant", 1 / (3 * span + 1), 3),
                                    SimConfig(loops="mean", engine=EngineConfig(policy="prefill-first")))
                sim = float(res.e2e.mean())
                rows.append(f"| {name} | {Path(cl).stem} | {kind} | {stack} | {', '.join(ops)} | {span:.3f} | "
                            f"{sim:.3f} | {sim / span:.4f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    cmd = f".venv/bin/python benchmarks/serving_validation.py --seeds {args.seeds} --requests {args.requests} --write"
    q = queueing(args.seeds, args.requests)
    body = "\n".join([f"_Generated by `{cmd}`; do not edit by hand._", "",
                      f"Mean waiting time, {args.seeds} seeds of {args.requests:,} requests each:", "", *q, "",
                      "One request at a time, against the single-request replay:", "", *low_load()])
    print(body)
    if args.write:
        write_section(DOC, "serving-validation", body)


if __name__ == "__main__":
    main()
