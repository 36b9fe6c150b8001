"""Time compiles of generated agent graphs (10, 100, 1,000 ops) on clusters of 8, 64 and 256 devices.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_compile.py`). Graphs are seeded
random DAGs of LLM calls (three model sizes), tools, code and retrieval; clusters are
nodes of 8 GPUs (H100 and H200 alternating) with NVLink inside and 400 Gb/s RDMA between
every pair of nodes, plus one host CPU per node. Prints one table row per size: wall
seconds of the full compile (pass pipeline, replay, plan; the homogeneous baseline off
and on), the placement method and its gap to the lower bound.
"""

from __future__ import annotations

import random
import sys
import time

from gimletc import AgentGraph
from gimletc.compiler import compile
from gimletc.hardware import Cluster

MODELS = ["llama-3.2-1b", "llama-3.1-8b", "qwen3-32b"]


def generated_graph(n_ops: int, seed: int = 0):
    rng = random.Random(seed)
    g = AgentGraph(f"gen{n_ops}")
    vals = [g.input("request", tokens=2000)]
    for i in range(n_ops - 2):
        ins = rng.sample(vals[-8:], k=min(len(vals[-8:]), rng.randint(1, 2)))
        r = rng.random()
        if r < 0.5:
            v = g.llm(f"llm{i}", model=rng.choice(MODELS), prompt=ins, output_tokens=rng.randint(20, 400))
        elif r < 0.75:
            v = g.tool(f"tool{i}", inputs=ins, cpu_s=rng.uniform(0.05, 2.0), output_tokens=rng.randint(10, 500))
        elif r < 0.9:
            v = g.code(f"code{i}", inputs=ins, cpu_s=rng.uniform(0.05, 1.0), output_tokens=rng.randint(10, 200))
        else:
            v = g.retrieve(f"ret{i}", query=ins[0], index_docs=rng.randint(1_000, 1_000_000), k=4, doc_tokens=256)
        vals.append(v)
    g.output("answer", [vals[-1]])
    return g.build()


def generated_cluster(devices: int) -> Cluster:
    nodes = []
    for i in range(max(1, devices // 8)):
        nodes.append({
            "name": f"n{i}",
            "chips": {"h100-sxm" if i % 2 == 0 else "h200": min(8, devices)},
            "host": {"cpu": "xeon-6980p", "memory_bytes": 2e12},
            "fabric": {"kind": "nvlink", "bandwidth": 450e9, "latency": 1e-6},
            "host_link": {"kind": "pcie", "bandwidth": 64e9, "latency": 2e-6},
        })
    links = [
        {"between": [a["name"], b["name"]], "kind": "rdma", "bandwidth": 50e9, "latency": 5e-6}
        for k, a in enumerate(nodes) for b in nodes[k + 1:]
    ]
    return Cluster.model_validate({"name": f"gen{devices}", "nodes": nodes, "links": links})


def main(sizes=(10, 100, 1000), devices=(8, 64, 256)) -> None:
    print("| ops | devices | compile s (no baseline) | compile s (with baseline) | placement | gap |")
    print("|---:|---:|---:|---:|---|---:|")
    for n in sizes:
        g = generated_graph(n)
        for d in devices:
            cl = generated_cluster(d)
            t0 = time.perf_counter()
            r = compile(g, cl, baseline=False)
            t1 = time.perf_counter()
            compile(g, cl, baseline=True)
            t2 = time.perf_counter()
            s = r.plan.search
            print(f"| {n} | {d} | {t1 - t0:.3f} | {t2 - t1:.3f} | {s.method} | {s.gap:.1%} |", flush=True)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*( [tuple(args[:1]), tuple(args[1:]) ] if len(args) >= 2 else []))
