"""The manifest of the load simulator's outputs: (plan, options) -> sha256 of what it reports.

Structural changes to `gimletc.sim` must leave every output byte-identical; a change
that alters outputs on purpose (a new default policy, a bug fix) rewrites the manifest
with `.venv/bin/python tests/sim_manifest.py --write` in its own commit saying why.

Each case hashes what a user sees: the `simulate --json` text (run through the CLI,
or `summary()` for the Python API's cases), every per-request array (TTFT, TPOT,
end-to-end, output tokens, per-LLM figures) as raw bytes, the cost-model call count,
and the Chrome trace of the timeline where one is recorded; the search case hashes
its `--json` object. Cases cover arrival rates from light load to overload, chunked
prefill, geometric and mean loops, exponential tool times, a trace of arrivals with
token counts, bursty arrivals, contended host lanes and links, KV admission under
tight memory, pipeline stages, speculative and attention/FFN jobs, a disaggregated
serving configuration, the serving search on a small case, each batching policy by name
(overload, KV pressure with preemption), and prefix caching (evictions under KV pressure; off).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "tests" / "data" / "sim_manifest.json"
EX = REPO / "examples"
GPU_ONLY = str(EX / "clusters" / "gpu_only.yaml")
MIXED = str(EX / "clusters" / "mixed_rack.yaml")
SC = EX / "scenarios"

# name -> (graph, cluster, compile options)
PLANS: dict[str, tuple[str, str, dict]] = {
    "rag": (str(EX / "rag.py"), GPU_ONLY, {}),
    "coding": (str(EX / "coding_agent.py"), GPU_ONLY, {}),
    "coding-mixed-fused": (str(EX / "coding_agent.py"), MIXED, {"stack": "fused"}),
    # The reference stack: under vllm the placer puts two workers' prefills on the host CPU, which the
    # load simulator refuses (a model step on a host); the case guards the simulator, not the placer.
    "multi-agent": (str(EX / "multi_agent.py"), GPU_ONLY, {"stack": "reference"}),
    "splitwise": (str(SC / "splitwise.py"), str(SC / "clusters" / "h100_a100.yaml"), {}),
    "speculative": (str(SC / "speculative.py"), str(SC / "clusters" / "gpu_corsair.yaml"),
                    {"stack": "fused", "pipeline": "expand-llm,place{partitions=speculative},insert-transfers,schedule,overlap"}),
    "moe-layers": (str(SC / "moe_attn_ffn.py"), str(SC / "clusters" / "h200_x16.yaml"),
                   {"pipeline": "expand-llm,place{partitions=layers},insert-transfers,schedule,overlap"}),
    "moe-attn-ffn": (str(SC / "moe_attn_ffn.py"), str(SC / "clusters" / "h200_x16.yaml"),
                     {"pipeline": "expand-llm,place{partitions=attn-ffn},insert-transfers,schedule,overlap"}),
    "cross-vendor": (str(SC / "cross_vendor.py"), str(SC / "clusters" / "mi300x_h200.yaml"), {}),
}

_TMP = Path(tempfile.mkdtemp(prefix="gimletc-sim-manifest-"))


@functools.lru_cache(maxsize=None)
def plan_path(name: str) -> str:
    from gimletc.compiler import compile

    g, c, opts = PLANS[name]
    path = _TMP / f"{name}.json"
    compile(g, c, baseline=False, **opts).plan.write(path)
    return str(path)


@functools.lru_cache(maxsize=None)
def trace_path() -> str:
    """A trace of 120 arrivals with per-request prompt and answer lengths (seeded)."""
    import numpy as np

    rng = np.random.default_rng(42)
    t = np.cumsum(rng.exponential(1 / 6.0, 120))
    ins = rng.integers(200, 3000, 120)
    outs = rng.integers(20, 400, 120)
    path = _TMP / "trace.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n" +
                    "".join(f"{a:.6f},{i},{o}\n" for a, i, o in zip(t, ins, outs, strict=True)))
    return str(path)


def _arrays(res) -> str:
    h = hashlib.sha256()
    for a in (res.ttft, res.tpot, res.e2e, res.out_tokens):
        h.update(a.tobytes())
    for d in (res.llm_ttft, res.llm_tpot):
        for k in sorted(d):
            h.update(k.encode())
            h.update(d[k].tobytes())
    return f"arrays {h.hexdigest()} cost-model calls {res.cost_model_calls}\n"


def _cli(*args: str) -> str:
    """stdout of `gimletc ARGS` run in-process (and the timeline file it wrote, if any)."""
    from gimletc.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(list(args))
        except SystemExit as e:
            if e.code not in (0, None):
                raise RuntimeError(f"gimletc {' '.join(args)} exited {e.code}") from None
    text = out.getvalue()
    if "--timeline" in args:
        text += Path(args[args.index("--timeline") + 1]).read_text()
    return text


def simulate_cli(plan: str, *args: str) -> Callable[[], str]:
    def run() -> str:
        extra = list(args)
        if "TIMELINE" in extra:
            extra[extra.index("TIMELINE")] = str(_TMP / f"timeline-{plan}.json")
        if "TRACE" in extra:
            extra[extra.index("TRACE")] = trace_path()
        return _cli("simulate", plan_path(plan), *extra, "--json")
    return run


def simulate_api(plan: str, rate: float, n: int, seed: int = 0, kind: str = "poisson", **cfg) -> Callable[[], str]:
    """`simulate_plan` with a SimConfig (for options the CLI does not expose), plus the per-request arrays."""
    def run() -> str:
        from gimletc.sim.arrivals import generate
        from gimletc.sim.load import EngineConfig, SimConfig, simulate_plan
        from gimletc.sim.metrics import summary, timeline_trace

        rest = {k: v for k, v in cfg.items() if k != "engine"}
        c = SimConfig(engine=EngineConfig(**cfg.get("engine", {})), **rest)
        res = simulate_plan(plan_path(plan), generate(kind, rate, n, seed), c, seed)
        text = json.dumps(summary(res), indent=2, sort_keys=True, allow_nan=False) + "\n" + _arrays(res)
        if c.record_timeline:
            text += json.dumps(timeline_trace(res), sort_keys=True) + "\n"
        return text
    return run


def _llm_graph(prompt: int, out: int, decode_on: str = "n.g0", send_s: float = 0.0):
    """One LLM call of llama-3.2-1b prefilled on n.g0 (its KV cache sent over g0->g1 when decoded on n.g1)."""
    from gimletc.ir import ASYNC_TOKEN, Graph, Op, Type, Value
    from gimletc.models import get_model

    m = get_model("llama-3.2-1b")
    kv = Type("kv", m.kv_cache_bytes(prompt))
    common = {"llm": "a", "model": "llama-3.2-1b", "seconds": 0.0}
    ops = [Op("exec.compute", "a.prefill", (), (Value("a.kv", kv), Value("a.prefill.done", ASYNC_TOKEN)),
              {"kind_of": "model.prefill", "of": "a.prefill", "tokens": prompt, "ctx": 0, "device": "n.g0",
               "devices": ("n.g0",), **common})]
    kv_in = "a.kv"
    if decode_on != "n.g0":
        ops.append(Op("exec.send", "send.kv", ("a.kv",), (Value("send.kv.sent", ASYNC_TOKEN),),
                      {"src": "n.g0", "dst": decode_on, "bytes": kv.nbytes, "seconds": send_s, "latency": 0.0,
                       "channel": "g0->g1", "route": "direct"}))
        ops.append(Op("exec.recv", "recv.kv", ("send.kv.sent",), (Value("a.kv.in", kv), Value("recv.done", ASYNC_TOKEN)),
                      {"src": "n.g0", "dst": decode_on, "bytes": kv.nbytes, "channel": "g0->g1"}))
        kv_in = "a.kv.in"
    ops.append(Op("exec.compute", "a.decode", (kv_in,), (Value("a", Type("tokens", out)), Value("a.decode.done", ASYNC_TOKEN)),
                  {"kind_of": "model.decode", "of": "a.decode", "tokens": out, "ctx": prompt, "device": decode_on,
                   "devices": (decode_on,), **common}))
    return Graph(tuple(ops))


def simulate_graph(prompt: int, out: int, rate: float, n: int, decode_on: str = "n.g0", send_s: float = 0.0,
                   kv_requests: float | None = None, **eng) -> Callable[[], str]:
    """A hand-built one-call graph on two H200s; `kv_requests`: memory for that many requests' KV caches."""
    def run() -> str:
        from gimletc.hardware import get_chip
        from gimletc.models import get_model
        from gimletc.sim.arrivals import generate
        from gimletc.sim.load import EngineConfig, SimConfig, plan_workload, simulate
        from gimletc.sim.metrics import summary

        devices = {"n.host": ("n", get_chip("xeon-host-16c"), "host"), "n.g0": ("n", get_chip("h200"), "accelerator"),
                   "n.g1": ("n", get_chip("h200"), "accelerator")}
        e = dict(eng)
        if kv_requests is not None:
            m, chip = get_model("llama-3.2-1b"), get_chip("h200")
            e["mem_fraction"] = (m.weight_bytes + kv_requests * m.kv_cache_bytes(prompt + out)) / chip.capacity_bytes
        wl = plan_workload(_llm_graph(prompt, out, decode_on, send_s), devices)
        res = simulate(wl, generate("poisson", rate, n, 3), SimConfig(engine=EngineConfig(**e)), 3)
        return json.dumps(summary(res), indent=2, sort_keys=True, allow_nan=False) + "\n" + _arrays(res)
    return run


def serving_disagg() -> str:
    from gimletc.graph_io import load_graph
    from gimletc.hardware import load_cluster
    from gimletc.serving import EngineKind, ModelServing, ServingConfig, serving_workload
    from gimletc.sim.arrivals import generate
    from gimletc.sim.load import simulate
    from gimletc.sim.metrics import summary

    g, cl = load_graph(EX / "rag.py"), load_cluster(GPU_ONLY)
    cfg = ServingConfig((ModelServing.disagg("llama-3.1-8b", EngineKind("h100-sxm", 1), 2,
                                      EngineKind("h100-sxm", 2), 1),))
    res = simulate(serving_workload(g, cl, cfg), generate("poisson", 9.0, 300, seed=1), seed=1)
    return json.dumps(summary(res), indent=2, sort_keys=True, allow_nan=False) + "\n" + _arrays(res)


def search_small() -> str:
    return _cli("search", str(EX / "rag.py"), "--cluster", GPU_ONLY, "--slo-ttft-ms", "500", "--slo-tpot-ms", "20",
                "--requests", "100", "--configs", "2", "--max-chips", "2", "--json")


CASES: dict[str, Callable[[], str]] = {
    "rag cli rate 8 slo goodput": simulate_cli("rag", "--rate", "8", "-n", "300", "--slo-ttft-ms", "500",
                                               "--slo-tpot-ms", "20"),
    "rag cli rate 12 chunked 1024": simulate_cli("rag", "--rate", "12", "-n", "300", "--chunked-prefill",
                                                 "--chunk-tokens", "1024"),
    "rag cli overload batch 16 prefill 4096": simulate_cli("rag", "--rate", "40", "-n", "400", "--max-batch", "16",
                                                           "--max-prefill-tokens", "4096"),
    "rag cli overload chunked batch 16": simulate_cli("rag", "--rate", "40", "-n", "400", "--max-batch", "16",
                                                      "--chunked-prefill", "--chunk-tokens", "512"),
    "rag cli bursty timeline": simulate_cli("rag", "--rate", "6", "-n", "200", "--arrivals", "bursty", "--cv", "2.5",
                                            "--timeline", "TIMELINE"),
    "rag cli constant fused-engine": simulate_cli("rag", "--rate", "3", "-n", "100", "--arrivals", "constant",
                                                  "--profile", "fused-engine"),
    "rag cli arrival trace": simulate_cli("rag", "--arrival-trace", "TRACE", "--slo-ttft-ms", "800", "--no-goodput"),
    "rag cli arrival trace at rate": simulate_cli("rag", "--arrival-trace", "TRACE", "--rate", "10", "-n", "80"),
    "coding cli geometric loops": simulate_cli("coding", "--rate", "0.3", "-n", "150", "--seed", "2"),
    "coding cli mean loops exponential tools": simulate_cli("coding", "--rate", "0.3", "-n", "150", "--loops", "mean",
                                                            "--tool-times", "exponential"),
    "coding api step by step": simulate_api("coding", 0.3, 120, 4, fast_forward=False),
    "coding api chunked step by step": simulate_api("coding", 0.3, 120, 4, fast_forward=False,
                                                    engine={"chunked_prefill": True}),
    "coding api chunked fast": simulate_api("coding", 0.3, 120, 4, engine={"chunked_prefill": True}),
    "coding-mixed-fused cli 2 host lanes": simulate_cli("coding-mixed-fused", "--rate", "0.5", "-n", "150",
                                                        "--host-lanes", "2", "--tool-times", "exponential"),
    "multi-agent cli": simulate_cli("multi-agent", "--rate", "0.2", "-n", "100"),
    "splitwise cli link contention": simulate_cli("splitwise", "--rate", "0.5", "-n", "200"),
    "splitwise api timeline fp8": simulate_api("splitwise", 0.3, 100, 1, record_timeline=True, weight_dtype="fp8",
                                               kv_dtype="fp8"),
    "speculative cli": simulate_cli("speculative", "--rate", "0.8", "-n", "150"),
    "moe-layers cli": simulate_cli("moe-layers", "--rate", "0.03", "-n", "6", "--arrivals", "constant"),
    "moe-attn-ffn cli": simulate_cli("moe-attn-ffn", "--rate", "0.04", "-n", "6"),
    "cross-vendor cli": simulate_cli("cross-vendor", "--rate", "0.2", "-n", "100"),
    "one call tight KV memory": simulate_graph(1000, 200, 40.0, 200, kv_requests=3.5),
    "one call tight KV chunked": simulate_graph(1000, 200, 40.0, 200, kv_requests=3.5, chunked_prefill=True,
                                                chunk_tokens=512),
    "one call disaggregated over a link": simulate_graph(2000, 100, 30.0, 300, decode_on="n.g1", send_s=0.01,
                                                         max_batch=8),
    "one call decode cap 4": simulate_graph(500, 300, 60.0, 300, max_batch=4, max_prefill_tokens=1000),
    "serving disaggregated rag": serving_disagg,
    "search rag 2 chips": search_small,
    # Batching policies by name (the default above is the stack's: vLLM for these plans).
    "rag cli overload prefill-first": simulate_cli("rag", "--rate", "40", "-n", "400", "--max-batch", "16",
                                                   "--max-prefill-tokens", "4096", "--policy", "prefill-first"),
    "rag cli overload sglang no chunked": simulate_cli("rag", "--rate", "40", "-n", "400", "--max-batch", "16",
                                                       "--policy", "sglang", "--no-chunked-prefill"),
    "rag cli overload trtllm chunked": simulate_cli("rag", "--rate", "40", "-n", "400", "--max-batch", "16",
                                                    "--policy", "trtllm", "--chunked-prefill", "--chunk-tokens", "64"),
    "one call tight KV vllm preempts": simulate_graph(1000, 200, 40.0, 200, kv_requests=3.5, policy="vllm",
                                                      max_batch=16),
    "one call tight KV sglang retracts": simulate_graph(1000, 200, 40.0, 200, kv_requests=3.5, policy="sglang",
                                                        max_batch=16),
    "one call tight KV trtllm no evict": simulate_graph(1000, 200, 40.0, 200, kv_requests=3.5, policy="trtllm",
                                                        max_batch=16),
    # Prefix caching (on by default for the engines' policies): evictions under KV pressure, and switched off.
    "rag api prefix cache evicts under KV pressure": simulate_api("rag", 20.0, 400, 1, engine={"mem_fraction": 0.1}),
    "coding cli no prefix caching": simulate_cli("coding", "--rate", "0.3", "-n", "150", "--seed", "2",
                                                 "--no-prefix-caching"),
    "search rag 2 chips trtllm": lambda: _cli(
        "search", str(EX / "rag.py"), "--cluster", GPU_ONLY, "--slo-ttft-ms", "500", "--slo-tpot-ms", "20",
        "--requests", "100", "--configs", "2", "--max-chips", "2", "--policy", "trtllm", "--json"),
}


def digest(name: str) -> str:
    text = CASES[name]().replace(str(_TMP), "<tmp>").replace(str(REPO), "<repo>")
    return hashlib.sha256(text.encode()).hexdigest()


def main(argv: list[str]) -> int:
    digests = {}
    for name in CASES:
        digests[name] = digest(name)
        print(name, digests[name][:12], flush=True)
    if "--write" in argv:
        MANIFEST.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
