"""KV reuse across an agent's calls: the `kv-reuse` pass (prefixes found, hits priced, routes chosen, never a
worse plan) and the load simulator's prefix caches (hits, misses, evictions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gimletc import AgentGraph
from gimletc.agent import GraphError
from gimletc.compiler import DEFAULT_PIPELINE, compile
from gimletc.cost.roofline import estimate
from gimletc.hardware import get_chip
from gimletc.models import get_model
from gimletc.models.workload import cached_prefix_tokens

from _cli import run_cli  # tests/_cli.py

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CLUSTERS = ROOT / "tests" / "filecheck" / "clusters"
ONE = str(CLUSTERS / "one_h200.yaml")
TWO = str(CLUSTERS / "two_h200.yaml")
OLD_PIPELINE = "expand-llm,place,insert-transfers,schedule,overlap"
OFF = DEFAULT_PIPELINE.replace("kv-reuse", "kv-reuse{enable=false}")
M = "llama-3.1-8b"


def prefill_s(tokens: int, ctx: int = 0, model: str = M, chip: str = "h200") -> float:
    return estimate(get_model(model), get_chip(chip), "prefill", 1, tokens, ctx).latency_s


# ---- what an engine takes from its cache -----------------------------------------------------------


@pytest.mark.parametrize(("prefix", "prompt", "block", "want"), [
    (4000, 4200, 16, 4000),  # whole blocks
    (3990, 4190, 16, 3984),  # 249 blocks of 16
    (4000, 4000, 16, 3984),  # never the last token: 3999 tokens, 249 blocks
    (4000, 4000, 1, 3999),
    (15, 100, 16, 0),  # less than a block
    (1500, 1510, 32, 1472),
])
def test_cached_prefix_tokens(prefix, prompt, block, want):
    assert cached_prefix_tokens(prefix, prompt, block) == want


# ---- the builder -------------------------------------------------------------------------------------


def test_a_named_system_prompt_is_one_text():
    g = AgentGraph("x")
    q = g.input("q", tokens=10)
    g.llm("a", model=M, prompt=[q], system_tokens=100, system="s", output_tokens=5)
    with pytest.raises(GraphError, match=r"llm 'b'.*system prompt 's' has 90 tokens here but 100 in llm 'a'"):
        g.llm("b", model=M, prompt=[q], system_tokens=90, system="s", output_tokens=5)
    with pytest.raises(GraphError, match=r"system 's' given without system_tokens"):
        g.llm("c", model=M, prompt=[q], system="s", output_tokens=5)
    with pytest.raises(GraphError, match=r"system 'a b' is not a valid name"):
        g.llm("d", model=M, prompt=[q], system_tokens=100, system="a b", output_tokens=5)


# ---- the pass: a hand-computed oracle ----------------------------------------------------------------


def chain_graph() -> AgentGraph:
    """q -> a (system s, q) -> b (system s, q, a): serial, on one GPU."""
    g = AgentGraph("chain")
    q = g.input("q", tokens=1000)
    a = g.llm("a", model=M, prompt=[q], system_tokens=500, system="s", output_tokens=10)
    b = g.llm("b", model=M, prompt=[q, a], system_tokens=500, system="s", output_tokens=10)
    g.output("out", [b])
    return g


def test_saved_prefill_time_is_the_cost_models_difference_and_the_latency_saved():
    """b's 1510-token prompt starts with a's 1500 (500 system + 1000 request): on the reference stack (any
    token from the cache, never the last) b prefills 10 tokens after 1500 cached ones. Everything is serial
    on one GPU, so the request is faster by exactly the prefill time saved."""
    with_ = compile(chain_graph(), ONE, baseline=False, stack="reference")
    without = compile(chain_graph(), ONE, baseline=False, stack="reference", pipeline=OFF)
    full, hit = prefill_s(1510), prefill_s(10, 1500)
    r = with_.plan.kv_reuse
    assert r is not None and len(r.reused) == 1
    x = r.reused[0]
    assert (x.op, x.sources, x.route, x.cached_first, x.prompt_tokens) == ("b.prefill", ["a.prefill"], "local", 1500, 1510)
    assert x.seconds == pytest.approx(hit, rel=1e-12) and x.seconds_without == pytest.approx(full, rel=1e-12)
    assert x.saved_s == pytest.approx(full - hit, rel=1e-12)
    assert r.saved_prefill_s == pytest.approx(full - hit, rel=1e-12)
    saved_ms = (full - hit) * 1e3
    assert without.plan.metrics.latency_ms - with_.plan.metrics.latency_ms == pytest.approx(saved_ms, rel=1e-9)
    assert r.latency_ms_without == pytest.approx(without.plan.metrics.latency_ms, rel=1e-12)
    assert r.energy_j_without == pytest.approx(without.plan.metrics.energy_j, rel=1e-12)
    assert with_.plan.metrics.energy_j < without.plan.metrics.energy_j
    # The KV kept: 1500 tokens of llama-3.1-8b, 32 layers x 8 heads x 128 x 2 (K, V) x 2 bytes each.
    assert x.kv_bytes == 1500 * 32 * 8 * 128 * 2 * 2


def test_in_a_loop_later_iterations_reuse_more_and_the_op_costs_the_mean():
    """c's prompt is (system s, q, r, the loop's carried value). Its first iteration finds a's prefix
    (system + q = 1500 tokens); later ones their own previous iteration's (system, q and r: 2300 tokens,
    r being defined outside the loop). Three iterations expected: the op's seconds are the mean."""
    g = AgentGraph("loop")
    q = g.input("q", tokens=1000)
    r = g.code("r", inputs=[q], cpu_s=0.01, output_tokens=800)
    a = g.llm("a", model=M, prompt=[q], system_tokens=500, system="s", output_tokens=10)
    with g.loop("fix", expected=3, max=6, carry=[a]) as fix:
        c = g.llm("c", model=M, prompt=[q, r, fix.args[0]], system_tokens=500, system="s", output_tokens=10)
        t = g.tool("t", inputs=[c], cpu_s=0.5, output_tokens=10)
        fix.yield_(t)
    g.output("out", [fix.results[0]])
    res = compile(g, ONE, baseline=False, stack="reference")
    x = next(x for x in res.plan.kv_reuse.reused if x.op == "c.prefill")
    assert (x.cached_first, x.cached_later, x.prompt_tokens) == (1500, 2300, 2310)
    assert x.sources == ["a.prefill", "c.prefill"]
    mean = (prefill_s(810, 1500) + 2 * prefill_s(10, 2300)) / 3
    assert x.seconds == pytest.approx(mean, rel=1e-12)
    assert x.runs == 3.0
    assert x.saved_s == pytest.approx(3 * (prefill_s(2310) - mean), rel=1e-12)


def test_only_prefixes_that_always_exist_first_count():
    """A call in a branch arm may not run; calls with no path between them may run at once; another
    model's cache is not this one's; a prompt starting with another value shares nothing."""
    g = AgentGraph("no")
    q = g.input("q", tokens=1000)
    with g.branch("maybe", probabilities=[0.5, 0.5], inputs=[q]) as br:
        with br.arm():
            a = g.llm("a", model=M, prompt=[q], system_tokens=500, system="s", output_tokens=10)
            br.yield_(a)
        with br.arm():
            br.yield_(q)
    par = g.llm("par", model=M, prompt=[q], system_tokens=500, system="s", output_tokens=10)  # no path to/from b
    other = g.llm("other", model="llama-3.2-1b", prompt=[q], system_tokens=500, system="s", output_tokens=10)
    b = g.llm("b", model=M, prompt=[q, br.results[0], other], system_tokens=500, system="s2", output_tokens=10)
    g.output("out", [b, par])
    res = compile(g, ONE, baseline=False, stack="reference")
    assert res.plan.kv_reuse is None  # nothing reuses anything
    ops = {op.name: op for op, _ in res.graph.walk()}
    assert ops["b.prefill"].attr("prompt") == ("sys:s2", "q", "maybe.results.0", "other")


# ---- the pass: differential and property -------------------------------------------------------------


def _without_pipeline(plan_json: str) -> dict:
    d = json.loads(plan_json)
    for k in ("pipeline", "digest"):
        d.pop(k)
    d["inputs"]["options"].pop("pipeline")
    return d


@pytest.mark.parametrize(("graph", "cluster", "opts"), [
    ("coding_agent.py", "mixed_rack.yaml", {"stack": "vllm"}),  # the demo, baseline included
    ("rag.py", "gpu_only.yaml", {"baseline": False}),
])
def test_with_reuse_off_plans_equal_the_pipeline_without_it(graph, cluster, opts):
    a = compile(str(EXAMPLES / graph), str(EXAMPLES / "clusters" / cluster), pipeline=OFF, **opts)
    b = compile(str(EXAMPLES / graph), str(EXAMPLES / "clusters" / cluster), pipeline=OLD_PIPELINE, **opts)
    assert a.plan.kv_reuse is None
    assert _without_pipeline(a.plan.to_json()) == _without_pipeline(b.plan.to_json())


@st.composite
def agent_graphs(draw) -> tuple[AgentGraph, dict[str, str]]:
    """A few calls to one model over a few shared values, in random orders, with random named system
    prompts, some in a loop; and pins of some calls to one of the two GPUs (so prefixes are not always
    where the next call runs, and moves and transfers are tried)."""
    g = AgentGraph("prop")
    vals = [g.input("q", tokens=draw(st.integers(100, 3000)))]
    systems = {"s1": draw(st.integers(50, 2000)), "s2": draw(st.integers(50, 2000))}
    n = draw(st.integers(1, 4))

    def call(name: str, pool: list) -> object:
        sysname = draw(st.sampled_from([None, "s1", "s1", "s2"]))
        order = pool if draw(st.booleans()) else draw(st.permutations(pool))  # as agents do, or any order
        k = draw(st.integers(1, len(order)))
        return g.llm(name, model="llama-3.2-1b", prompt=list(order[:k]), output_tokens=draw(st.integers(5, 200)),
                     system_tokens=systems[sysname] if sysname else None, system=sysname)

    for i in range(n):
        vals.append(call(f"c{i}", vals))
    if draw(st.booleans()):
        with g.loop("lp", expected=draw(st.sampled_from([1.0, 2.0, 3.5])), max=6, carry=[vals[-1]]) as lp:
            out = call("body", [*vals, lp.args[0]])
            lp.yield_(out)
        vals.append(lp.results[0])
    g.output("out", [vals[-1]])
    names = [f"c{i}" for i in range(n)]
    pinned = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    pins = {c: draw(st.sampled_from(["g.h200.0", "g.h200.1"])) for c in pinned}
    return g, pins


@settings(max_examples=15)
@given(agent_graphs(), st.sampled_from(["latency", "energy"]))
def test_reuse_never_makes_the_predicted_latency_worse(case, objective):
    g, pins = case
    graph = g.build()
    with_ = compile(graph, TWO, baseline=False, objective=objective, pins=pins)
    without = compile(graph, TWO, baseline=False, objective=objective, pins=pins, pipeline=OLD_PIPELINE)
    assert with_.plan.metrics.latency_ms <= without.plan.metrics.latency_ms * (1 + 1e-9)
    r = with_.plan.kv_reuse
    if r is not None and r.reused:
        assert all(x.seconds <= x.seconds_without for x in r.reused)
        assert with_.plan.metrics.latency_ms <= r.latency_ms_without * (1 + 1e-9)


# ---- the demo ------------------------------------------------------------------------------------------


def test_the_coding_agent_demo_reuses_the_plans_prefix_and_show_says_what_it_saves(tmp_path, capsys):
    out = tmp_path / "plan.json"
    code, _, err = run_cli(capsys, "compile", str(EXAMPLES / "coding_agent.py"), "--cluster",
                           str(EXAMPLES / "clusters" / "mixed_rack.yaml"), "--stack", "vllm", "-o", str(out))
    assert code == 0, err
    plan = json.loads(out.read_text())
    r = plan["kv_reuse"]
    edit = next(x for x in r["reused"] if x["op"] == "edit.prefill")
    # 1500 system + 2000 task + 4096 repository context = 7596 tokens, 474 whole 16-token blocks = 7584.
    assert (edit["cached_first"], edit["cached_later"], edit["sources"]) == (7584, 7584, ["plan.prefill"])
    assert plan["metrics"]["latency_ms"] < r["latency_ms_without"]
    assert plan["metrics"]["energy_j"] < r["energy_j_without"]
    assert plan["metrics"]["ttft_ms"]["edit"] < r["ttft_ms_without"]["edit"]
    code, text, _ = run_cli(capsys, "show", str(out))
    assert code == 0
    assert "KV reuse saves" in text and "edit.prefill" in text and "7584/8396" in text
