"""The compile passes: unit tests per pass, properties over generated graphs and clusters,
and the placement search against an independent brute force through the whole pipeline."""

from __future__ import annotations

import itertools
import runpy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gimletc import AgentGraph
from gimletc.compiler import DEFAULT_PIPELINE, compile
from gimletc.hardware import Cluster
from gimletc.ir import Graph, verify
from gimletc.models import get_model
from gimletc.passes.expand_llm import ExpandLLM
from gimletc.passes.manager import PassContext, PassManager
from gimletc.passes.place import PlacementError
from gimletc.passes.placement.problem import Problem, build_slots
from gimletc.analysis.replay import replay

EXAMPLES = Path(__file__).parents[1] / "examples"


def cluster(nodes: list[dict], links: list[dict] | None = None, name: str = "test") -> Cluster:
    return Cluster.model_validate({"name": name, "nodes": nodes, "links": links or []})


def gpu_node(name: str, chips: dict[str, int], fabric: bool = True) -> dict:
    n = {
        "name": name,
        "chips": chips,
        "host": {"cpu": "xeon-6980p", "memory_bytes": 1e12},
        "host_link": {"kind": "pcie", "bandwidth": 64e9, "latency": 2e-6},
    }
    if fabric:
        n["fabric"] = {"kind": "nvlink", "bandwidth": 450e9, "latency": 1e-6}
    return n


def rdma(a: str, b: str) -> dict:
    return {"between": [a, b], "kind": "rdma", "bandwidth": 50e9, "latency": 5e-6}


def chat_graph(model: str = "llama-3.1-8b", prompt: int = 1000, out: int = 100) -> Graph:
    g = AgentGraph("chat")
    q = g.input("q", tokens=prompt)
    a = g.llm("answer", model=model, prompt=[q], output_tokens=out)
    g.output("out", [a])
    return g.build()


def run(graph: Graph, cl: Cluster, pipeline: str, **ctx_kw) -> tuple[Graph, PassContext]:
    ctx = PassContext(cluster=cl, **ctx_kw)
    return PassManager(pipeline).run(graph, ctx), ctx


# ---- unit tests per pass ---------------------------------------------------------------


def test_expand_llm_splits_into_prefill_and_decode_with_kv():
    g = chat_graph(prompt=1000, out=100)
    out = ExpandLLM().run(g, PassContext())
    verify(out)
    kinds = [op.kind for op in out.ops]
    assert kinds == ["agent.input", "model.prefill", "model.decode", "agent.output"]
    prefill, decode = out.ops[1], out.ops[2]
    m = get_model("llama-3.1-8b")
    assert prefill.attr("tokens") == 1000 and decode.attr("ctx") == 1000 and decode.attr("tokens") == 100
    assert prefill.results[0].type.kind == "kv"
    assert prefill.results[0].type.size == pytest.approx(m.kv_cache_bytes(1000))
    assert decode.results[0].name == "answer"  # users of the LLM's output are unchanged


def test_partition_phase_lets_phases_land_apart():
    cl = cluster([gpu_node("n0", {"h100-sxm": 1, "h200": 1})])
    g = chat_graph()
    whole, _ = run(g, cl, "expand-llm,place")
    split, _ = run(g, cl, "expand-llm,partition-phase,place")
    devs = lambda gr: {op.name: op.attr("device") for op in gr.ops if op.kind.startswith("model.")}  # noqa: E731
    assert devs(whole)["answer.prefill"] == devs(whole)["answer.decode"]
    # Pinned apart, the KV cache must move: one transfer, from the prefill's chip to the decode's.
    pinned, ctx = run(g, cl, "expand-llm,partition-phase,place,insert-transfers",
                      pins={"answer.prefill": "n0.h100-sxm.0", "answer.decode": "n0.h200.0"})
    kv = [t for t in ctx.transfers if t.value == "answer.kv"]
    assert len(kv) == 1 and kv[0].src == "n0.h100-sxm.0" and kv[0].dst == "n0.h200.0"
    assert split is not None


def test_place_puts_tools_on_cpus_and_models_on_accelerators():
    cl = cluster([gpu_node("n0", {"h100-sxm": 2})])
    g = AgentGraph("t")
    q = g.input("q", tokens=100)
    r = g.retrieve("docs", query=q, index_docs=10_000, k=4, doc_tokens=200)
    a = g.llm("a", model="llama-3.1-8b", prompt=[q, r], output_tokens=50)
    t = g.tool("lint", inputs=[a], cpu_s=1.0, output_tokens=20)
    g.output("o", [t])
    out, ctx = run(g.build(), cl, "expand-llm,place")
    dev = {op.name: op.attr("device") for op in out.ops}
    assert dev["docs"] == dev["lint"] == "n0.host"
    assert dev["a.prefill"].startswith("n0.h100-sxm")
    assert ctx.placement.method == "exhaustive"


def test_place_respects_memory():
    """llama-3.1-70b (141 GB of weights) needs two H100s; a single-chip slot never holds it."""
    cl = cluster([gpu_node("n0", {"h100-sxm": 4})])
    out, _ = run(chat_graph("llama-3.1-70b"), cl, "expand-llm,place")
    prefill = next(op for op in out.ops if op.kind == "model.prefill")
    assert len(prefill.attr("devices")) >= 2


def test_model_that_fits_nowhere_names_model_and_sizes():
    node = gpu_node("n0", {"h100-sxm": 1})
    node["host"]["memory_bytes"] = 64e9  # the host CPU could run a model that fits its memory; this one does not
    cl = cluster([node])
    with pytest.raises(PlacementError, match=r"llama-3.1-70b.*GB.*80\.0 GB"):
        run(chat_graph("llama-3.1-70b"), cl, "expand-llm,place")


def test_power_budget_limits_devices_and_infeasible_budget_is_clear():
    cl = cluster([gpu_node("n0", {"h100-sxm": 4})])
    out, _ = run(chat_graph("llama-3.1-70b"), cl, "expand-llm,place", power_budget_w=500 + 2 * 700)
    prefill = next(op for op in out.ops if op.kind == "model.prefill")
    assert len(prefill.attr("devices")) == 2  # 4 chips would be faster but exceed the budget
    with pytest.raises(PlacementError, match="infeasible power budget: 400 W"):  # below even the host CPU's 500 W
        run(chat_graph("llama-3.1-70b"), cl, "expand-llm,place", power_budget_w=400)


def test_pins_are_obeyed_and_bad_pins_named():
    cl = cluster([gpu_node("n0", {"h100-sxm": 2})])
    out, _ = run(chat_graph(), cl, "expand-llm,place", pins={"answer": "n0.h100-sxm.1"})
    assert {op.attr("device") for op in out.ops if op.kind.startswith("model.")} == {"n0.h100-sxm.1"}
    with pytest.raises(PlacementError, match="answer.*pinned to 'nowhere'"):
        run(chat_graph(), cl, "expand-llm,place", pins={"answer": "nowhere"})


def test_insert_transfers_converts_kv_between_layouts():
    cl = cluster([gpu_node("a", {"mi300x": 1}), gpu_node("b", {"h200": 1})], [rdma("a", "b")])
    _, ctx = run(chat_graph(), cl, "expand-llm,partition-phase,place,insert-transfers",
                 pins={"answer.prefill": "a.mi300x.0", "answer.decode": "b.h200.0"})
    kv = next(t for t in ctx.transfers if t.value == "answer.kv")
    assert kv.route == "network" and kv.convert is not None
    assert kv.convert.from_layout == "paged-hnd" and kv.convert.to_layout == "paged-nhd"


def test_schedule_chains_each_device_and_overlap_never_lengthens():
    cl = cluster([gpu_node("n0", {"h100-sxm": 1, "h200": 1})])
    pins = {"answer.prefill": "n0.h100-sxm.0", "answer.decode": "n0.h200.0"}
    g = chat_graph(prompt=8000, out=20)
    before, _ = run(g, cl, "expand-llm,partition-phase,place,insert-transfers,schedule", pins=pins)
    after, ctx = run(g, cl, "expand-llm,partition-phase,place,insert-transfers,schedule,overlap", pins=pins)
    assert all(op.kind.startswith(("exec.", "agent.")) for op in after.ops)
    assert replay(after).makespan <= replay(before).makespan + 1e-12
    assert ctx.overlap.after_s <= ctx.overlap.before_s


def test_kv_streams_layer_by_layer_when_that_is_faster():
    """A long prompt's KV over a slow network: streaming hides most of the transfer behind the prefill."""
    cl = cluster([gpu_node("a", {"h100-sxm": 1}), gpu_node("b", {"h100-sxm": 1})],
                 [{"between": ["a", "b"], "kind": "ethernet", "bandwidth": 5e9, "latency": 10e-6}])
    pins = {"answer.prefill": "a.h100-sxm.0", "answer.decode": "b.h100-sxm.0"}
    out, ctx = run(chat_graph(prompt=16000, out=10), cl, DEFAULT_PIPELINE, pins=pins)
    assert ctx.overlap.streamed is True
    sends = [op for op in out.ops if op.kind == "exec.send" and op.attr("chunks")]
    assert len(sends) == 8


# ---- properties over generated graphs and clusters ----------------------------------------

SMALL_MODELS = ["llama-3.2-1b", "llama-3.2-3b"]


@st.composite
def agent_graphs(draw, max_ops: int = 5):
    g = AgentGraph("gen")
    vals = [g.input("in", tokens=draw(st.integers(1, 4000)))]
    for i in range(draw(st.integers(1, max_ops))):
        kind = draw(st.sampled_from(["llm", "llm", "tool", "code", "retrieve"]))
        ins = draw(st.lists(st.sampled_from(vals), min_size=1, max_size=2, unique_by=lambda v: v.name))
        if kind == "llm":
            v = g.llm(f"llm{i}", model=draw(st.sampled_from(SMALL_MODELS)), prompt=ins,
                      output_tokens=draw(st.integers(1, 200)))
        elif kind == "tool":
            v = g.tool(f"tool{i}", inputs=ins, cpu_s=draw(st.floats(0.0, 2.0)), output_tokens=draw(st.integers(1, 500)))
        elif kind == "code":
            v = g.code(f"code{i}", inputs=ins, cpu_s=draw(st.floats(0.0, 2.0)), output_tokens=draw(st.integers(1, 100)))
        else:
            v = g.retrieve(f"ret{i}", query=ins[0], index_docs=draw(st.integers(10, 100_000)), k=3, doc_tokens=100)
        vals.append(v)
    g.output("out", [vals[-1]])
    return g.build()


@st.composite
def clusters(draw):
    nodes = []
    for i in range(draw(st.integers(1, 2))):
        chip = draw(st.sampled_from(["h100-sxm", "h200", "mi300x"]))
        nodes.append(gpu_node(f"n{i}", {chip: draw(st.integers(1, 2))}, fabric=draw(st.booleans())))
    links = [rdma("n0", "n1")] if len(nodes) == 2 else []
    return cluster(nodes, links, "gen")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agent_graphs(), clusters(), st.booleans())
def test_pipeline_invariants(g, cl, split):
    pipeline = DEFAULT_PIPELINE if split else WHOLE
    ctx = PassContext(cluster=cl)
    placed = PassManager(pipeline.split(",insert-transfers")[0]).run(g, PassContext(cluster=cl))  # verify() after every pass
    out = PassManager(pipeline).run(g, ctx)
    # every op placed exactly once
    placed_ops = [op for op, _ in placed.walk() if op.kind not in ("agent.yield",)]
    assert all(op.attr("device") is not None for op in placed_ops)
    computes = [op for op, _ in out.walk() if op.kind == "exec.compute" and op.attr("chunk") in (None, op.attr("chunks", 1) - 1)]
    assert sorted(op.attr("of") for op in computes) == sorted(op.name for op in placed_ops)
    # every cross-device edge gets exactly one transfer
    dev = {v.name: op.attr("device") for op in placed_ops for v in op.results}
    needed = {(v, op.attr("device")) for op in placed_ops for v in op.operands if dev.get(v) not in (None, op.attr("device"))}
    moved = [(t.value, t.dst) for t in ctx.transfers]
    assert sorted(moved) == sorted(needed)
    # the replay respects data and token order
    tl = replay(out)
    ends = {e.op: e.end for e in tl.events if e.depth == 0}
    starts = {e.op: e.start for e in tl.events if e.depth == 0}
    producer = {v.name: op.name for op in out.ops for v in op.results}
    for op in out.ops:
        for v in op.operands:
            if v in producer:
                assert starts[op.name] >= ends[producer[v]] - 1e-12
    # overlap never lengthens
    assert ctx.overlap.after_s <= ctx.overlap.before_s + 1e-12


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agent_graphs(max_ops=3), clusters())
def test_compiling_twice_gives_identical_bytes(g, cl):
    a = compile(g, cl, baseline=False).plan.to_json()
    b = compile(g, cl, baseline=False).plan.to_json()
    assert a == b


WHOLE = "expand-llm,place{partitions=whole},insert-transfers,schedule,overlap"


def _brute_force_latency(g: Graph, cl: Cluster) -> float:
    """Independent oracle: pin every placement unit to every candidate slot, compile, replay, keep the best."""
    expanded = ExpandLLM().run(g, PassContext())
    problem = Problem(expanded, cl, PassContext(cluster=cl))
    slots = build_slots(cl)
    best = float("inf")
    for choice in itertools.product(*(u.candidates for u in problem.units)):
        pins = {u.name: slots[s].id for u, s in zip(problem.units, choice, strict=True)}
        try:
            r = compile(g, cl, pins=pins, baseline=False, pipeline=WHOLE)
        except PlacementError:
            continue
        best = min(best, r.plan.metrics.latency_ms)
    return best


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agent_graphs(max_ops=2), clusters())
def test_place_finds_the_exhaustive_optimum_on_small_instances(g, cl):
    got = compile(g, cl, baseline=False, pipeline=WHOLE).plan.metrics.latency_ms
    assert got == pytest.approx(_brute_force_latency(g, cl), rel=1e-9)


# ---- examples -------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["coding_agent.py", "rag.py", "multi_agent.py"])
def test_examples_compile_on_the_mixed_rack(example):
    g = runpy.run_path(str(EXAMPLES / example))["graph"]
    r = compile(g, EXAMPLES / "clusters" / "mixed_rack.yaml")
    p = r.plan
    assert p.metrics.latency_ms > 0 and p.metrics.energy_j > 0
    assert p.baseline is not None and p.speedup is not None and p.speedup > 0
    assert p.critical_path[-1] in {op.name for op in r.graph.ops}
