"""Placement scores partitionings with the driver's scorer: the user's own passes after place."""

from __future__ import annotations

import pytest

from gimletc import AgentGraph
from gimletc.analysis.metrics import plan_metrics
from gimletc.compiler import compile, partition_scorer
from gimletc.hardware import Cluster
from gimletc.passes.manager import PassContext, PassManager, parse_pipeline

PINS = {"answer.prefill": "a.h100-sxm.0", "answer.decode": "b.h100-sxm.0"}


def slow_pair() -> Cluster:
    """Two nodes over a slow network: a KV cache moving between them hides only if overlap streams it."""
    def node(name: str) -> dict:
        return {"name": name, "chips": {"h100-sxm": 1}, "host": {"cpu": "xeon-6980p", "memory_bytes": 1e12},
                "host_link": {"kind": "pcie", "bandwidth": 64e9, "latency": 2e-6}}
    return Cluster.model_validate({"name": "pair", "nodes": [node("a"), node("b")],
                                   "links": [{"between": ["a", "b"], "kind": "ethernet", "bandwidth": 5e9,
                                              "latency": 10e-6}]})


def chat():
    g = AgentGraph("chat")
    q = g.input("q", tokens=16000)
    a = g.llm("answer", model="llama-3.1-8b", prompt=[q], output_tokens=10)
    g.output("out", [a])
    return g.build()


def placed(cl: Cluster):
    ctx = PassContext(cluster=cl, pins=dict(PINS))
    return PassManager("expand-llm,partition-phase,place").run(chat(), ctx)


def test_the_scorer_runs_the_users_passes_after_place():
    cl = slow_pair()
    g = placed(cl)
    with_overlap = partition_scorer(parse_pipeline("expand-llm,place,insert-transfers,schedule,overlap"))
    without = partition_scorer(parse_pipeline("expand-llm,place,insert-transfers,schedule"))
    a = with_overlap(g, PassContext(cluster=cl), "latency")
    b = without(g, PassContext(cluster=cl), "latency")
    assert a < b  # overlap streams the KV cache behind the prefill; without it the copy is exposed
    # each equals the plan metrics of that pipeline's own result
    for text, score in (("insert-transfers,schedule,overlap", a), ("insert-transfers,schedule", b)):
        ctx = PassContext(cluster=cl)
        out = PassManager(text).run(g, ctx)
        assert score == plan_metrics(out, ctx.analyses.timeline(out), cl).objective("latency")
    assert partition_scorer(parse_pipeline("expand-llm,insert-transfers")) is None  # nothing to score without place


@pytest.mark.parametrize("pipeline", ["expand-llm,place,insert-transfers,schedule,overlap",
                                      "expand-llm,place,insert-transfers,schedule"])
def test_compile_scores_by_replay_and_a_bare_manager_by_list_schedule(pipeline):
    cl = slow_pair()
    r = compile(chat(), cl, pipeline=pipeline, baseline=False)
    assert r.ctx.placement is not None and r.ctx.placement.partition_scoring == "replay"
    # the plan's partition objective is the plan's own objective (the same numbers the plan reports)
    choice = r.plan.partitions["answer"]
    assert choice.objective == pytest.approx(r.plan.metrics.latency_ms)
    ctx = PassContext(cluster=cl)
    PassManager(pipeline).run(chat(), ctx)
    assert ctx.placement is not None and ctx.placement.partition_scoring == "list-schedule"


def test_place_tries_each_partitioning_with_the_drivers_scorers():
    """The context place scores a partitioning in carries the compile's inputs and both of the driver's
    scorers (a kv-reuse run by the partition scorer then decides as the one after place does), with results
    of its own (the caller's are not written by a candidate)."""
    cl = slow_pair()
    seen: list[PassContext] = []

    def rest(graph, ctx, after):  # a stand-in RestScorer: the scorer's context must carry it
        raise AssertionError("not called here")

    def score_placed(graph, ctx, objective):
        seen.append(ctx)
        return plan_metrics(graph, ctx.analyses.timeline(graph), cl).objective(objective)

    ctx = PassContext(cluster=cl, objective="energy", power_budget_w=5000.0, pins={"answer": "a.h100-sxm.0"},
                      stack="reference", score_placed=score_placed, score_rest=rest)
    PassManager("expand-llm,place").run(chat(), ctx)
    assert seen
    for sub in seen:
        assert sub is not ctx and sub.score_rest is rest and sub.score_placed is score_placed
        assert (sub.cluster, sub.objective, sub.power_budget_w, sub.pins, sub.stack) == \
            (cl, "energy", 5000.0, {"answer": "a.h100-sxm.0"}, "reference")
        assert sub.partitions == {} and sub.kv_reuse is None and sub.pins is not ctx.pins
    assert ctx.placement is not None and set(ctx.partitions) == {"answer"}
