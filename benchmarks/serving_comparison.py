"""Disaggregated vs aggregated serving of a dense ~32B model on H200s, beside the published figure.

The published result (AIConfigurator, NVIDIA; ../shared/hardware_sources.md): Qwen3-32B in FP8 on
32 H200, ISL 4000 / OSL 500, TTFT <= 300 ms and TPOT <= 10 ms: disaggregated serving reaches 573
output tokens/s per GPU, the best aggregated configuration 414 (1.38x).

Here: the same model, lengths, SLOs and GPU count through `gimletc.serving.search` (the cost model
and the load simulator; nothing measured), FP8 weights and FP8 KV cache, for each software profile
(`gimletc.sim.steps.PROFILES`): "calibrated" (the fitted PyTorch stack), "fused-engine" (a serving
engine's fused kernels; see docs/serving.md for its assumptions), and "fused-engine" with 1 ms of
host time per engine iteration (a sensitivity, not a measurement).

Run:   .venv/bin/python benchmarks/serving_comparison.py [--requests N] [--seed S]
                        [--write] [--plot docs/img/serving-qwen3-32b-h200.png]
--write regenerates the table between the serving-comparison markers of docs/serving.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from gimletc import AgentGraph
from gimletc._io import write_atomic
from gimletc.errors import GimletError
from gimletc.hardware import Cluster
from gimletc.serving.plot import frontier_png
from gimletc.serving.search import SearchResult, SearchSettings, predict, search
from gimletc.sim.load import SimConfig
from gimletc.sim.metrics import SLO
from gimletc.sim.steps import PROFILES, SoftwareProfile

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "serving.md"
PUBLISHED = {"agg": 414.0, "disagg": 573.0}
SLO_TARGET = SLO(ttft_s=0.300, tpot_s=0.010, share=0.9)
MODEL, ISL, OSL, GPUS = "qwen3-32b", 4000, 500, 32


def graph():
    g = AgentGraph(f"{MODEL}-isl{ISL}-osl{OSL}")
    prompt = g.input("prompt", tokens=ISL)
    answer = g.llm("answer", model=MODEL, prompt=[prompt], output_tokens=OSL)
    g.output("out", [answer])
    return g.build()


def cluster() -> Cluster:
    """Four HGX H200 nodes: 8 GPUs on NVLink (450 GB/s per direction), 400 Gb/s RDMA between nodes."""
    nodes = [{
        "name": f"hgx{i}",
        "chips": {"h200": 8},
        "host": {"cpu": "xeon-6980p", "sockets": 2, "memory_bytes": 2e12},
        "fabric": {"kind": "nvlink", "bandwidth": 450e9, "latency": 1e-6},
        "host_link": {"kind": "pcie", "bandwidth": 64e9, "latency": 2e-6},
    } for i in range(GPUS // 8)]
    links = [{"between": [a["name"], b["name"]], "kind": "rdma", "bandwidth": 50e9, "latency": 5e-6}
             for k, a in enumerate(nodes) for b in nodes[k + 1:]]
    return Cluster.model_validate({"name": f"{GPUS}x-h200", "nodes": nodes, "links": links})


# The profiles compared: the fitted stack, a serving engine, and the same with host time per iteration
# (scheduling and sampling that a real engine does not fully overlap with the GPU; 1 ms is an assumption).
VARIANTS: dict[str, SoftwareProfile] = {
    "calibrated": PROFILES["calibrated"],
    "fused-engine": PROFILES["fused-engine"],
    "fused-engine + 1 ms host per iteration": replace(PROFILES["fused-engine"], name="fused-engine+host",
                                                      iteration_s=1e-3),
}


def settings(profile: str, requests: int, seed: int) -> SearchSettings:
    sim = SimConfig(profile=VARIANTS[profile], weight_dtype="fp8", kv_dtype="fp8")
    return SearchSettings(requests=requests, seed=seed, top_k=10, max_chips=GPUS, sim=sim)


def _fmt(v: float | None, nd: int = 0) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def run(requests: int, seed: int, plot: Path | None) -> str:
    g, cl = graph(), cluster()
    lines: list[str] = []
    summary = ["| stack profile | best aggregated | tok/s/GPU | best disaggregated | tok/s/GPU | disagg / agg |",
               "|---|---|---:|---|---:|---:|"]
    detail: list[str] = []
    results: dict[str, SearchResult] = {}
    for prof in VARIANTS:
        t0 = time.perf_counter()
        try:
            r = search(g, cl, SLO_TARGET, settings(prof, requests, seed))
        except GimletError:
            _, skipped = predict(g, cl, SLO_TARGET, settings(prof, requests, seed))
            why = "; ".join(f"{w.split(' on ')[1]}: {y}" for w, y in skipped)
            summary.append(f"| {prof} | none meets the SLO | 0 | none meets the SLO | 0 | - |")
            detail.append(f"- `{prof}`: no configuration can meet TPOT <= 10 ms even alone ({why}).")
            continue
        results[prof] = r
        wall = time.perf_counter() - t0
        a, d = r.best("agg"), r.best("disagg")
        ratio = f"{d.per_chip / a.per_chip:.2f}x" if a and d and a.per_chip else "-"
        summary.append(f"| {prof} | {a.config.label if a else '-'} | {_fmt(a.per_chip if a else None)} | "
                       f"{d.config.label if d else '-'} | {_fmt(d.per_chip if d else None)} | {ratio} |")
        detail.append(f"- `{prof}`: {r.candidates} candidates predicted, {len(r.evaluations)} simulated in "
                      f"{wall:.0f} s ({requests:,} Poisson requests per simulation, seed {seed}).")
    summary.append("| published: AIConfigurator, TensorRT-LLM, FP8 (hardware_sources.md) | best aggregated | "
                   f"{PUBLISHED['agg']:.0f} | disaggregated | {PUBLISHED['disagg']:.0f} | "
                   f"{PUBLISHED['disagg'] / PUBLISHED['agg']:.2f}x |")
    lines += summary + [""] + detail
    r = results.get("fused-engine")
    if r is not None:
        lines += ["", "Every configuration simulated with the `fused-engine` profile, best goodput per GPU first "
                      "(operating point: the goodput rate):", "",
                  "| configuration | GPUs | predicted req/s | goodput req/s | tok/s/GPU | tok/s/user | TTFT p90 ms | "
                  "TPOT p90 ms | tok/J | tok/$ |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for e in r.top("per_chip", len(r.evaluations)):
            at = e.at_goodput
            lines.append(
                f"| {e.config.label} | {e.chips} | {e.predicted_req_s:.1f} | {e.goodput_req_s:.1f} | {e.per_chip:,.0f} "
                f"| {_fmt(at.tok_s_per_user if at else None)} | {_fmt(at.ttft_p90_ms if at else None)} | "
                f"{_fmt(at.tpot_p90_ms if at else None, 2)} | {e.per_watt:.2f} | {_fmt(e.per_dollar)} |")
        lines += ["", "Where the time goes at the goodput rate (the best configuration of each mode):", "",
                  "| configuration | engine role | engines | mean utilisation | mean decode batch |",
                  "|---|---|---:|---:|---:|"]
        for mode in ("agg", "disagg"):
            e = r.best(mode)
            if e is None or e.goodput.best is None:
                continue
            roles: dict[str, list[dict]] = {}
            for eng in e.goodput.best.engines:
                roles.setdefault(eng["id"].split("/")[1].rstrip("0123456789"), []).append(eng)
            for role, engs in sorted(roles.items()):
                util = sum(x["utilisation"] for x in engs) / len(engs)
                batch = sum(x["mean_decode_batch"] for x in engs) / len(engs)
                lines.append(f"| {e.config.label} | {role} | {len(engs)} | {util:.0%} | "
                             f"{batch:.1f} |" if role != "prefill" else
                             f"| {e.config.label} | {role} | {len(engs)} | {util:.0%} | - |")
        lines += ["", "Pareto frontier (`fused-engine`; every simulated operating point meeting the SLO that no "
                      "other beats on both axes):", "",
                  "| configuration | rate req/s | tok/s/user | tok/s/GPU |", "|---|---:|---:|---:|"]
        for p in r.pareto():
            lines.append(f"| {p.label} | {p.rate:.1f} | {p.tok_s_per_user:.0f} | {p.tok_s_per_chip:,.0f} |")
        if plot is not None:
            write_atomic(plot, frontier_png(r.points(), f"{MODEL} FP8 on {GPUS}x H200, ISL {ISL} / OSL {OSL}: "
                                                              "TTFT <= 300 ms, TPOT <= 10 ms (fused-engine)"))
    cmd = f".venv/bin/python benchmarks/serving_comparison.py --requests {requests} --seed {seed} --write"
    return "\n".join([f"_Generated by `{cmd}`; do not edit by hand._", "", *lines])


def write_section(doc: Path, name: str, body: str) -> None:
    text = doc.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{doc}: no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_atomic(doc, f"{head}{begin}\n{body}\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="regenerate the table in docs/serving.md")
    ap.add_argument("--plot", type=Path, default=None, help="save the fused-engine frontier as a PNG")
    args = ap.parse_args()
    body = run(args.requests, args.seed, args.plot)
    print(body)
    if args.write:
        write_section(DOC, "serving-comparison", body)


if __name__ == "__main__":
    main()
