"""Plan metrics (gimletc.analysis.metrics) on exec-level graphs built by hand, with times fixed
by the ops' `seconds`, so every expected value is worked out on paper (in the comments).

The graphs have the shapes the partitionings give an LLM call (docs/partitioning.md): a layer
pipeline whose prefill and decode run in stages, attention and FFN on different GPUs in a decode
loop, speculative decoding with a draft prefill, and a layer-streamed (chunked) prefill. Figures:
h100-sxm 700 W busy, 90 W idle, 3.0 USD/h (pinned by test_oracles.py).
"""

from __future__ import annotations

import pytest

from gimletc.analysis import replay
from gimletc.analysis.metrics import placed_computes, plan_metrics
from gimletc.hardware import Cluster
from gimletc.ir import ASYNC_TOKEN, Graph, Op, Value, verify

G0, G1, G2, HOST = "n0.h100-sxm.0", "n0.h100-sxm.1", "n0.h100-sxm.2", "n0.host"
CLUSTER = Cluster.model_validate({"name": "metrics", "links": [], "nodes": [
    {"name": "n0", "chips": {"h100-sxm": 3}, "host": {"cpu": "xeon-host-16c", "memory_bytes": 1e12},
     "host_link": {"kind": "pcie", "bandwidth": 4e6, "latency": 1e-3}}]})


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def compute(name: str, device: str, seconds: float, *deps: str, **attrs: object) -> Op:
    return Op("exec.compute", name, tuple(f"{d}.t" for d in deps), (Value(f"{name}.t", ASYNC_TOKEN),),
              {"of": name, "device": device, "seconds": seconds, **attrs})


def llm(call: str, kind: str, **attrs: object) -> dict[str, object]:
    return {"llm": call, "kind_of": kind, "model": "big", **attrs}


def loop(name: str, rounds: int, body: list[Op], expected: float | None = None) -> Op:
    ops = (*body, Op("agent.yield", f"{name}.yield", (f"{body[-1].name}.t",)))
    return Op("agent.loop", name, (), (Value(f"{name}.t", ASYNC_TOKEN),),
              {"expected": float(rounds if expected is None else expected), "max": rounds}, (Graph(ops),))


def metrics(*ops: Op):
    g = verify(Graph(ops))
    return plan_metrics(g, replay(g), CLUSTER)


def test_layer_pipeline_ttft_tpot_and_devices():
    # Prefill in three stages, one per GPU, 1 s each: 0-1, 1-2, 2-3 s; TTFT is the last stage's end: 3 s.
    # Decode: a loop of 4 rounds (4 tokens), each 0.25 s on G0, 0.25 s on G1, 0.5 s on G2: 4 x 1 s, 3-7 s;
    # TPOT = 4 s / 4 tokens = 1 s. The token comes from the last stage: prefill and decode on G2.
    m = metrics(
        compute("a.prefill.s0", G0, 1.0, **llm("a", "model.prefill", tokens=100, stage=0)),
        compute("a.prefill.s1", G1, 1.0, "a.prefill.s0", **llm("a", "model.prefill", tokens=100, stage=1)),
        compute("a.prefill.s2", G2, 1.0, "a.prefill.s1", **llm("a", "model.prefill", tokens=100, stage=2)),
        loop("a.decode", 4, [
            compute("a.decode.s0", G0, 0.25, "a.prefill.s2", **llm("a", "model.decode", tokens=1, stage=0)),
            compute("a.decode.s1", G1, 0.25, "a.decode.s0", **llm("a", "model.decode", tokens=1, stage=1)),
            compute("a.decode.s2", G2, 0.5, "a.decode.s1", **llm("a", "model.decode", tokens=1, stage=2)),
        ]),
    )
    assert m.latency_ms == approx(7000.0)
    assert m.ttft_ms == {"a": approx(3000.0)} and m.tpot_ms == {"a": approx(1000.0)}
    a = m.llms["a"]
    assert (a.model, a.prompt_tokens, a.output_tokens, a.ttft_ms, a.tpot_ms) == ("big", 100, 4, approx(3000.0),
                                                                                 approx(1000.0))
    assert (a.prefill_device, a.decode_device) == (G2, G2)
    # Busy: G0 1 + 4 x 0.25 = 2 s, G1 2 s, G2 1 + 4 x 0.5 = 3 s, of 7 s:
    # energy 700 x 7 + 90 x (5 + 5 + 4) = 4,900 + 1,260 = 6,160 J; cost 3.0 x 7 / 3,600 USD.
    assert m.energy_j == approx(6160.0) and m.power_w == approx(2100.0)
    assert m.cost_usd == approx(7 * 3.0 / 3600)
    assert m.throughput_rps == approx(1 / 3)  # G2 is the busiest: 3 s
    assert m.utilisation == {G0: approx(2 / 7), G1: approx(2 / 7), G2: approx(3 / 7)}


def test_attention_and_ffn_apart_put_the_decode_on_the_ffn_gpu():
    # Prefill on G0 0-2 s (TTFT 2 s); 3 decode rounds of attention (G0) and FFN (G1) over two layers:
    # 0.1 + 0.2 + 0.1 + 0.1 = 0.5 s a round, 2-3.5 s; TPOT 1.5 s / 3 = 0.5 s. The last op of a round, the
    # last layer's FFN, gives the decode's device: G1, not the prefill's G0.
    m = metrics(
        compute("a.prefill", G0, 2.0, **llm("a", "model.prefill", tokens=50)),
        loop("a.decode", 3, [
            compute("a.attn0.m0", G0, 0.1, "a.prefill", **llm("a", "model.attention", tokens=1)),
            compute("a.ffn0.m0", G1, 0.2, "a.attn0.m0", **llm("a", "model.ffn", tokens=1)),
            compute("a.attn1.m0", G0, 0.1, "a.ffn0.m0", **llm("a", "model.attention", tokens=1)),
            compute("a.ffn1.m0", G1, 0.1, "a.attn1.m0", **llm("a", "model.ffn", tokens=1)),
        ]),
    )
    assert m.latency_ms == approx(3500.0)
    assert m.ttft_ms == {"a": approx(2000.0)} and m.tpot_ms == {"a": approx(500.0)}
    assert (m.llms["a"].prefill_device, m.llms["a"].decode_device) == (G0, G1)
    assert (m.llms["a"].prompt_tokens, m.llms["a"].output_tokens) == (50, 3)


def test_speculative_call_reports_the_target_prefill_whatever_the_order():
    # The draft's prefill (G1, 0-0.5 s) comes first in the graph; the target's (G0, 0-1 s) is the call's
    # prefill by name: TTFT is the later end, 1 s. 10 tokens in 2.5 expected rounds of draft (G1, 0.1 s),
    # verify (G0, 0.3 s), rollback (G0, 0.1 s): 2.5 x 0.5 = 1.25 s; TPOT 1.25 s / 10 = 0.125 s.
    m = metrics(
        compute("a.draft_prefill", G1, 0.5, **{**llm("a", "model.prefill", tokens=40), "model": "small"}),
        compute("a.prefill", G0, 1.0, **llm("a", "model.prefill", tokens=40)),
        loop("a.decode", 10, [
            compute("a.draft", G1, 0.1, "a.prefill", "a.draft_prefill",
                    **{**llm("a", "model.draft", tokens=4), "model": "small"}),
            compute("a.verify", G0, 0.3, "a.draft", **llm("a", "model.verify", tokens=5)),
            compute("a.rollback", G0, 0.1, "a.verify", **llm("a", "model.kv_rollback")),
        ], expected=2.5),
    )
    assert m.ttft_ms == {"a": approx(1000.0)} and m.tpot_ms == {"a": approx(125.0)}
    a = m.llms["a"]
    assert (a.model, a.prefill_device, a.decode_device, a.output_tokens) == ("big", G0, G0, 10)
    assert m.latency_ms == approx(2250.0)


def test_a_call_without_a_decode_or_without_a_prefill():
    # "b" has only its prefill (G0, 0-2 s): TTFT 2 s, no tokens out, TPOT 0, decode device = prefill's.
    # "a" has only a decode: no prefill, so no first token to time: it is left out. (Compiled plans
    # always have both phases; these are the fallbacks.)
    # "c" is a phase split: prefill on G0 (0-1 s), decode on G1 (10 tokens, 1-3 s): TPOT 0.2 s.
    m = metrics(
        compute("a.decode", G1, 1.0, **llm("a", "model.decode", tokens=5)),
        compute("b.prefill", G0, 2.0, **llm("b", "model.prefill", tokens=30)),
        compute("c.prefill", G2, 1.0, **llm("c", "model.prefill", tokens=30)),
        compute("c.decode", G1, 2.0, "c.prefill", **llm("c", "model.decode", tokens=10)),
    )
    assert m.ttft_ms == {"b": approx(2000.0), "c": approx(1000.0)} and m.tpot_ms == {"b": 0.0, "c": approx(200.0)}
    assert (m.llms["c"].prefill_device, m.llms["c"].decode_device) == (G2, G1)
    b = m.llms["b"]
    assert (b.output_tokens, b.tpot_ms, b.prefill_device, b.decode_device) == (0, 0.0, G0, G0)
    assert set(m.llms) == {"b", "c"}


def test_a_layer_streamed_prefill_counts_once_as_its_last_chunk():
    # Three chunks of 0.5 s on G0 (0-1.5 s), the last keeping the prefill's name; decode 1 s (1.5-2.5 s).
    ops = [
        compute("a.prefill.chunk0", G0, 0.5, **llm("a", "model.prefill", tokens=60, chunk=0, chunks=3)),
        compute("a.prefill.chunk1", G0, 0.5, "a.prefill.chunk0", **llm("a", "model.prefill", tokens=60, chunk=1,
                                                                      chunks=3)),
        compute("a.prefill", G0, 0.5, "a.prefill.chunk1", **llm("a", "model.prefill", tokens=60, chunk=2, chunks=3)),
        compute("a.decode", G0, 1.0, "a.prefill", **llm("a", "model.decode", tokens=10)),
    ]
    assert [op.name for op in placed_computes(verify(Graph(tuple(ops))))] == ["a.prefill", "a.decode"]
    m = metrics(*ops)
    assert m.ttft_ms == {"a": approx(1500.0)} and m.tpot_ms == {"a": approx(100.0)}
    assert m.utilisation == {G0: approx(1.0)}


def test_a_host_op_off_the_lanes_holds_the_whole_host():
    # A model on the CPU holds the whole host (resource "n0.host"): 2 s; a tool on lane 0 holds 1/8 of it:
    # 4 s / 8 = 0.5 s; host busy 2.5 s over the 4 s makespan (the tool runs 0-4 s beside the model's 0-2 s):
    # 150 x 2.5 + 40 x 1.5 = 375 + 60 = 435 J.
    m = metrics(compute("model", HOST, 2.0), compute("tool", f"{HOST}#0", 4.0))
    assert m.utilisation == {HOST: approx(2.5 / 4)}
    assert m.energy_j == approx(435.0) and m.throughput_rps == approx(1 / 2.5)


def test_an_empty_graph_has_zero_metrics():
    m = metrics()
    assert (m.latency_ms, m.energy_j, m.power_w, m.cost_usd, m.throughput_rps) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert m.utilisation == {} and m.llms == {}
