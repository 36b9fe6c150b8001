"""Speed of the load simulator: simulated events per second, and the wall time of 100,000
requests through a generated 20-op agent graph.

Run: `.venv/bin/python benchmarks/bench_serving.py [requests] [--write]` (default 100000); --write
puts the table into docs/serving.md (between the serving-speed markers).

Workloads, each compiled by `gimletc.compiler.compile` (no baseline) and simulated from the
plan (`gimletc.sim.load.simulate_plan`) under Poisson arrivals, seed 0:
- mm1: one tool on one CPU lane with exponential times (the M/M/1 validation case), load 0.8;
- one call: a single LLM call (llama-3.2-1b, 1,000-token prompt, 200-token answer) on one H200,
  10,000 requests at 20 req/s (the single-call speed the simulator is held to: about a second);
- rag: examples/rag.py on examples/clusters/gpu_only.yaml at 10 req/s;
- agent20: a seeded 20-op agent graph (input, 2 retrievals, 7 LLM calls on three model sizes,
  5 tools, 3 code runs, a loop of an LLM call and a tool run 2 times on average and at most 4, output)
  on the same 8x H100 node, at the rate the plan's busiest device sustains when every step
  runs at batch 1 (`plan.metrics.throughput_rps`); continuous batching keeps it well below
  saturation.
An event is an arrival, a task's end or an engine iteration (whatever its batch; a fast-forwarded
run of identical decode iterations counts its iterations); heap events are what was taken off the
event heap. Prints a markdown table.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np

from gimletc import AgentGraph
from gimletc.compiler import compile
from gimletc.hardware import get_chip
from gimletc.ir import ASYNC_TOKEN, Graph, Op, Type, Value
from gimletc.models import get_model
from gimletc.sim.arrivals import generate
from gimletc.sim.load import SimConfig, plan_workload, simulate, simulate_plan

ROOT = Path(__file__).parents[1]
CLUSTER = str(ROOT / "examples" / "clusters" / "gpu_only.yaml")
MODELS = ["llama-3.2-3b", "llama-3.1-8b", "qwen3-32b"]


def agent20(seed: int = 0):
    """Twenty agent ops: input, 2 retrievals, 7 LLM calls, 5 tools, 3 code runs, a loop (its LLM call and
    tool count among the above), output."""
    rng = random.Random(seed)
    g = AgentGraph("agent20")
    req = g.input("request", tokens=600)
    vals = [req]
    ret = [g.retrieve(f"ret{i}", query=req, index_docs=rng.randint(50_000, 500_000), k=4, doc_tokens=256)
           for i in range(2)]
    vals += ret
    plan = g.llm("plan", model="qwen3-32b", prompt=[req, *ret], system_tokens=400, output_tokens=200)
    vals.append(plan)
    with g.loop("refine", expected=2, max=4, carry=[plan]) as lp:
        draft = g.llm("draft", model="llama-3.1-8b", prompt=[lp.args[0], req], output_tokens=150)
        check = g.tool("check", inputs=[draft], cpu_s=0.2, output_tokens=100)
        lp.yield_(check)
    vals.append(lp.results[0])
    for i in range(5):
        ins = rng.sample(vals[-4:], k=min(2, len(vals[-4:])))
        v = g.llm(f"llm{i}", model=rng.choice(MODELS), prompt=ins, output_tokens=rng.randint(50, 300))
        vals.append(v)
        if i < 4:
            vals.append(g.tool(f"tool{i}", inputs=[v], cpu_s=rng.uniform(0.05, 0.5), output_tokens=rng.randint(50, 300)))
    for i in range(3):
        vals.append(g.code(f"code{i}", inputs=[vals[-1]], cpu_s=rng.uniform(0.05, 0.3), output_tokens=100))
    g.output("answer", [vals[-1]])
    graph = g.build()
    n_ops = sum(1 for op, _ in graph.walk() if op.kind != "agent.yield")
    assert n_ops == 20, n_ops
    return graph


def _tool_graph() -> Graph:
    res = (Value("t.out", Type("tokens", 10)), Value("t.done", ASYNC_TOKEN))
    attrs = {"kind_of": "agent.tool", "of": "t", "device": "n.host", "devices": ("n.host#0",), "seconds": 1.0}
    return Graph((Op("exec.compute", "t", (), res, attrs),))


def _one_call_graph(prompt: int = 1000, out: int = 200) -> Graph:
    kv = Type("kv", get_model("llama-3.2-1b").kv_cache_bytes(prompt))
    common = {"llm": "a", "model": "llama-3.2-1b", "device": "n.g0", "devices": ("n.g0",), "seconds": 0.0}
    return Graph((
        Op("exec.compute", "a.prefill", (), (Value("a.kv", kv), Value("a.prefill.done", ASYNC_TOKEN)),
           {"kind_of": "model.prefill", "of": "a.prefill", "tokens": prompt, "ctx": 0, **common}),
        Op("exec.compute", "a.decode", ("a.kv",), (Value("a", Type("tokens", out)), Value("a.decode.done", ASYNC_TOKEN)),
           {"kind_of": "model.decode", "of": "a.decode", "tokens": out, "ctx": prompt, **common}),
    ))


def run(name: str, fn, requests: int) -> dict:
    t0 = time.perf_counter()
    res = fn()
    wall = time.perf_counter() - t0
    util = max((e["utilisation"] for e in res.engines), default=0.0)
    return {"name": name, "requests": requests, "events": res.events, "heap": res.heap_events, "wall": wall,
            "eps": res.events / wall,
            "util": util, "batch": max((e["mean_decode_batch"] for e in res.engines), default=0.0),
            "p50": float(np.nanmedian(res.e2e)), "calls": res.cost_model_calls}


def main(requests: int = 100_000, write: bool = False) -> None:
    rows = []
    devices = {"n.host": ("n", get_chip("xeon-host-16c"), "host")}
    wl = plan_workload(_tool_graph(), devices)
    rows.append(run("mm1 (1 tool lane, load 0.8)", lambda: simulate(
        wl, generate("poisson", 0.8, 200_000, 0), SimConfig(host_lanes=1, tool_times="exponential")), 200_000))
    one = plan_workload(_one_call_graph(), {"n.g0": ("n", get_chip("h200"), "accelerator")})
    rows.append(run("one call on 1x H200 at 20 req/s", lambda: simulate(one, generate("poisson", 20.0, 10_000, 0)),
                    10_000))
    rag = compile(str(ROOT / "examples" / "rag.py"), CLUSTER, baseline=False).plan
    rows.append(run("rag on 8x H100 at 10 req/s", lambda: simulate_plan(rag, generate("poisson", 10.0, 20_000, 0)),
                    20_000))
    t0 = time.perf_counter()
    plan = compile(agent20(), CLUSTER, baseline=False).plan
    compile_s = time.perf_counter() - t0
    rate = plan.metrics.throughput_rps
    rows.append(run(f"agent20 on 8x H100 at {rate:.3g} req/s", lambda: simulate_plan(
        plan, generate("poisson", rate, requests, 0)), requests))
    lines = [f"agent20: 20 agent ops, {len(plan.placements)} placed ops, compiled in {compile_s:.2f} s; "
             f"single-request latency {plan.metrics.latency_ms / 1e3:.2f} s.", "",
             "| workload | requests | events | heap events | wall s | events/s | heap events/s | busiest engine "
             "| its mean decode batch | median e2e s | cost-model calls |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['requests']:,} | {r['events']:,} | {r['heap']:,} | {r['wall']:.2f} | "
                     f"{r['eps']:,.0f} | {r['heap'] / r['wall']:,.0f} | {r['util']:.0%} | {r['batch']:.1f} | "
                     f"{r['p50']:.3g} | {r['calls']:,} |")
    body = "\n".join([f"_Generated by `.venv/bin/python benchmarks/bench_serving.py {requests} --write`; "
                      "wall times are this machine's._", "", *lines])
    print(body)
    if write:
        sys.path.insert(0, str(Path(__file__).parent))
        from serving_comparison import DOC, write_section

        write_section(DOC, "serving-speed", body)


if __name__ == "__main__":
    nums = [int(a) for a in sys.argv[1:] if a.isdigit()]
    main(*nums[:1], write="--write" in sys.argv[1:])
