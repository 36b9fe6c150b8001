"""Compile time and memory against graph size: 10,000, 30,000 and 100,000-op agent graphs, the way
`gimletc compile GRAPH.json -c examples/clusters/gpu_only.yaml` runs them.

Run: `.venv/bin/python benchmarks/bench_compile_scale.py [SIZES...]` (default 10000 30000 100000);
`--write` also puts the table into docs/reliability.md (between its `bench_compile_scale` markers);
`--profile N` prints where the time of one N-op compile goes (cProfile, top functions by own time).

The graph is a long-running agent: one request, then a chain in which each op reads one or two of
the four ops before it; every 50th op is an LLM call (llama-3.2-1b or llama-3.1-8b, 20-200 output
tokens), the others tools (60%), code (30%) and retrieval (10%); seeded, so every run compiles the
same graph. It is written as a JSON graph file and loaded from it, as the CLI does. Each size runs in
a fresh process (so its peak memory is its own); the phases are: load (parse + build + verify),
each pass of the default pipeline, the plan (replay, placements, programs, metrics), the homogeneous
baseline (the same graph compiled onto single-chip-type clusters), and writing the plan's JSON.
Wall-clock seconds on the machine that runs it; speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "examples" / "clusters" / "gpu_only.yaml"
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- bench_compile_scale: begin -->", "<!-- bench_compile_scale: end -->"
PASSES = ("expand-llm", "place", "insert-transfers", "schedule", "overlap")


def long_agent(n_ops: int, seed: int = 0, llm_every: int = 50) -> dict:
    """The benchmark's graph as graph-file data (docs/agent-graphs.md): `n_ops` ops in all."""
    rng = random.Random(seed)
    nodes: list[dict] = [{"op": "input", "name": "request", "tokens": 500}]
    names = ["request"]
    models = ["llama-3.2-1b", "llama-3.1-8b"]
    for i in range(n_ops - 2):
        ins = rng.sample(names[-4:], k=min(len(names[-4:]), rng.randint(1, 2)))
        if i % llm_every == llm_every - 1:
            n = {"op": "llm", "name": f"llm{i}", "model": rng.choice(models), "prompt": ins,
                 "output_tokens": rng.randint(20, 200)}
        else:
            r = rng.random()
            if r < 0.6:
                n = {"op": "tool", "name": f"tool{i}", "inputs": ins, "cpu_s": round(rng.uniform(0.01, 0.5), 3),
                     "output_tokens": rng.randint(10, 300)}
            elif r < 0.9:
                n = {"op": "code", "name": f"code{i}", "inputs": ins, "cpu_s": round(rng.uniform(0.01, 0.2), 3),
                     "output_tokens": rng.randint(10, 100)}
            else:
                n = {"op": "retrieve", "name": f"ret{i}", "query": ins[0], "index_docs": 10_000, "k": 4, "doc_tokens": 128}
        nodes.append(n)
        names.append(n["name"])
    nodes.append({"op": "output", "name": "answer", "inputs": [names[-1]]})
    return {"name": f"long{n_ops}", "nodes": nodes}


def one(n_ops: int) -> dict:
    """Time every phase of compiling the n-op graph (in this process) and report peak memory."""
    from gimletc.compiler import compile
    from gimletc.graph_io import load_graph

    marks: dict[str, float] = {}

    def progress(msg: str) -> None:  # compile() reports each pass, then the plan, then the baseline
        marks.setdefault(msg.split(":")[0].split(" ")[0], time.perf_counter())

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"long{n_ops}.json"
        path.write_text(json.dumps(long_agent(n_ops)))
        t0 = time.perf_counter()
        g = load_graph(path)
        t_load = time.perf_counter() - t0
        t_start = time.perf_counter()
        r = compile(g, CLUSTER, progress=progress)
        t_end = time.perf_counter()
        t0 = time.perf_counter()
        (Path(d) / "plan.json").write_text(r.plan.to_json())
        t_write = time.perf_counter() - t0
    passes = dict(r.ctx.timings)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"ops": n_ops, "load": t_load, **{p: passes.get(p, 0.0) for p in PASSES},
            "plan": marks["baseline"] - marks["plan"], "baseline": t_end - marks["baseline"], "write": t_write,
            "total": t_load + (t_end - t_start) + t_write, "rss_mb": rss_mb}


def table(rows: list[dict]) -> str:
    cols = ["ops", "load", *PASSES, "plan", "baseline", "write", "total", "s per 1k ops", "peak MB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    for r in rows:
        cells = [f"{r['ops']:,}", *(f"{r[k]:.1f}" for k in ("load", *PASSES, "plan", "baseline", "write", "total")),
                 f"{1000 * r['total'] / r['ops']:.2f}", f"{r['rss_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{DOC} has no {BEGIN} marker")
    cmd = "`.venv/bin/python benchmarks/bench_compile_scale.py --write`"
    DOC.write_text(f"{head}{BEGIN}\n{text}\n\nWritten by {cmd}; seconds of wall time.\n{END}{tail}")


def profile(n_ops: int) -> None:
    import cProfile
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    one(n_ops)
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(one(int(argv[1]))))
        return
    if argv[:1] == ["--profile"]:
        profile(int(argv[1]))
        return
    write = "--write" in argv
    sizes = [int(a) for a in argv if a.isdigit()] or [10_000, 30_000, 100_000]
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{n} ops: {rows[-1]['total']:.1f} s", file=sys.stderr, flush=True)
    text = table(rows)
    print(text)
    if write:
        write_doc(text)


if __name__ == "__main__":
    main(sys.argv[1:])
