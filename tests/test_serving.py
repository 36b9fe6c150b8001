"""Serving under load: queueing theory, agreement with the single-request replay, batching,
admission, contention, determinism, goodput, the search and its frontier, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gimletc.compiler import compile as compile_graph
from gimletc.cost.roofline import estimate
from gimletc.errors import GimletError
from gimletc.hardware import get_chip, load_cluster
from gimletc.ir import ASYNC_TOKEN, Graph, Op, Type, Value, parse_graph
from gimletc.models import get_model
from gimletc.serving import ModelServing, EngineKind, ServingConfig, SearchSettings, pareto_front, search
from gimletc.serving.plot import plot_frontier
from gimletc.serving.search import ParetoPoint
from gimletc.analysis.replay import replay
from gimletc.sim.arrivals import ArrivalError, Arrivals, generate, load_trace
from gimletc.sim.load import (
    EngineConfig,
    SimConfig,
    SimulationError,
    loop_probability,
    plan_workload,
    simulate,
    simulate_plan,
)
from gimletc.sim.metrics import SLO, goodput, summary

from _cli import run_cli  # tests/_cli.py

EXAMPLES = Path(__file__).parents[1] / "examples"
GPU_ONLY = str(EXAMPLES / "clusters" / "gpu_only.yaml")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

DEVICES = {
    "n.host": ("n", get_chip("xeon-host-16c"), "host"),
    "n.g0": ("n", get_chip("h200"), "accelerator"),
    "n.g1": ("n", get_chip("h200"), "accelerator"),
}
SMALL = "llama-3.2-1b"


# ---- hand-built exec graphs ---------------------------------------------------------------------


def tool_graph(seconds: float) -> Graph:
    res = (Value("tool.out", Type("tokens", 10)), Value("tool.done", ASYNC_TOKEN))
    attrs = {"kind_of": "agent.tool", "of": "tool", "device": "n.host", "devices": ("n.host#0",), "seconds": seconds}
    return Graph((Op("exec.compute", "tool", (), res, attrs),))


def llm_graph(prompt: int, out: int, prefill_on: str = "n.g0", decode_on: str = "n.g0",
              send_s: float = 0.0) -> Graph:
    """One LLM call (only its prefill when out == 0); with decode_on != prefill_on the KV cache
    moves over channel g0->g1 in send_s."""
    m = get_model(SMALL)
    kv = Type("kv", m.kv_cache_bytes(prompt))
    ops = [Op("exec.compute", "a.prefill", (), (Value("a.kv", kv), Value("a.prefill.done", ASYNC_TOKEN)),
              {"kind_of": "model.prefill", "of": "a.prefill", "llm": "a", "model": SMALL, "tokens": prompt, "ctx": 0,
               "device": prefill_on, "devices": (prefill_on,), "seconds": 0.0})]
    kv_in = "a.kv"
    if out == 0:
        return Graph(tuple(ops))
    if decode_on != prefill_on:
        ops.append(Op("exec.send", "send.kv", ("a.kv",), (Value("send.kv.sent", ASYNC_TOKEN),),
                      {"src": prefill_on, "dst": decode_on, "bytes": kv.nbytes, "seconds": send_s, "latency": 0.0,
                       "channel": "g0->g1", "route": "direct"}))
        ops.append(Op("exec.recv", "recv.kv", ("send.kv.sent",), (Value("a.kv.in", kv), Value("recv.done", ASYNC_TOKEN)),
                      {"src": prefill_on, "dst": decode_on, "bytes": kv.nbytes, "channel": "g0->g1"}))
        kv_in = "a.kv.in"
    ops.append(Op("exec.compute", "a.decode", (kv_in,), (Value("a", Type("tokens", out)), Value("a.decode.done", ASYNC_TOKEN)),
                  {"kind_of": "model.decode", "of": "a.decode", "llm": "a", "model": SMALL, "tokens": out,
                   "ctx": prompt, "device": decode_on, "devices": (decode_on,), "seconds": 0.0}))
    return Graph(tuple(ops))


def arrivals_at(times, outputs=None) -> Arrivals:
    t = np.asarray(times, dtype=float)
    out = None if outputs is None else np.asarray(outputs, dtype=np.int64)
    return Arrivals(t, "trace", 1.0, None, out)


@pytest.fixture(scope="module")
def rag_plan(tmp_path_factory):
    r = compile_graph(str(EXAMPLES / "rag.py"), GPU_ONLY, baseline=False)
    path = tmp_path_factory.mktemp("plans") / "rag.json"
    r.plan.write(path)
    return r, path


# ---- queueing theory -----------------------------------------------------------------------------

N_THEORY = 200_000


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.8])
def test_mm1_mean_wait_matches_theory(rho):
    """One CPU lane, Poisson arrivals, exponential tool times: W_q = rho·s / (1 − rho).

    Waits are exact per request (end-to-end minus its own sampled service time). Beside the
    textbook load, the formula is also checked at the load this sample offered (its arrival
    rate and mean service), which removes most of the sampling noise (docs/serving.md)."""
    s = 1.0
    wl = plan_workload(tool_graph(s), DEVICES)
    arr = generate("poisson", rho / s, N_THEORY, seed=7)
    cfg = SimConfig(host_lanes=1, tool_times="exponential", record_timeline=True, timeline_limit=N_THEORY)
    res = simulate(wl, arr, cfg, 7)
    service = np.array([end - start for _, start, end, *_ in res.timeline])  # FIFO: in arrival order
    wait = (res.e2e - service).mean()
    assert wait == pytest.approx(rho * s / (1 - rho), rel=0.05)
    offered_rate, offered_s = N_THEORY / arr.times[-1], service.mean()
    offered = offered_rate * offered_s
    assert wait == pytest.approx(offered * offered_s / (1 - offered), rel=0.03)


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.8])
def test_md1_mean_wait_matches_theory_on_a_prefill_engine(rho):
    """One engine, one prompt per prefill step, Poisson arrivals: W_q = rho·D / (2(1 − rho))."""
    D = estimate(get_model(SMALL), get_chip("h200"), "prefill", 1, 1000, 0).latency_s
    wl = plan_workload(llm_graph(1000, 0), DEVICES)
    cfg = SimConfig(engine=EngineConfig(max_prefill_tokens=1000))
    arr = generate("poisson", rho / D, N_THEORY, seed=11)
    res = simulate(wl, arr, cfg, 11)
    wait = (res.ttft - D).mean()
    assert wait == pytest.approx(rho * D / (2 * (1 - rho)), rel=0.05)
    offered = N_THEORY / arr.times[-1] * D
    assert wait == pytest.approx(offered * D / (2 * (1 - offered)), rel=0.03)


def test_single_server_follows_lindley_exactly():
    """The same arrivals through Lindley's recursion W' = max(0, W + D - A) give the same waits."""
    D = estimate(get_model(SMALL), get_chip("h200"), "prefill", 1, 1000, 0).latency_s
    arr = generate("poisson", 0.7 / D, 3000, seed=3)
    res = simulate(plan_workload(llm_graph(1000, 0), DEVICES), arr, SimConfig(engine=EngineConfig(max_prefill_tokens=1000)))
    w, waits = 0.0, []
    gaps = np.diff(arr.times, prepend=arr.times[0])
    for g in gaps:
        w = max(0.0, w + (D if waits else 0.0) - g) if waits else 0.0
        waits.append(w)
    assert np.allclose(res.ttft - D, waits, atol=1e-9)


# ---- agreement with the single-request replay ------------------------------------------------------


def test_low_load_matches_the_single_request_replay(rag_plan):
    """Without prefix caching every request is the replay's; with it (the engines' default) the first is, and
    later ones find the shared system prompt cached (tests/test_kv_reuse.py prices that)."""
    result, path = rag_plan
    tl = replay(parse_graph(result.plan.ir))
    arr = generate("constant", 0.05, 20)  # one request every 20 s; each takes ~2 s
    res = simulate_plan(path, arr, SimConfig(engine=EngineConfig(prefix_caching=False)))
    assert np.allclose(res.e2e, tl.makespan, rtol=1e-3)
    cached = simulate_plan(path, arr)
    assert cached.e2e[0] == pytest.approx(tl.makespan, rel=1e-3)
    assert (cached.e2e[1:] < tl.makespan).all()
    assert np.allclose(res.ttft, result.plan.metrics.ttft_ms["answer"] / 1e3, rtol=1e-3)
    assert np.allclose(res.tpot, result.plan.metrics.tpot_ms["answer"] / 1e3, rtol=1e-3)


@pytest.fixture(scope="module")
def coding_plan():
    return compile_graph(str(EXAMPLES / "coding_agent.py"), GPU_ONLY, baseline=False)


def test_loops_unroll_with_the_loop_mean(coding_plan):
    p = coding_plan
    makespan = replay(parse_graph(p.plan.ir)).makespan
    res = simulate_plan(p.plan, generate("constant", 0.002, 3), SimConfig(loops="mean"))
    assert np.allclose(res.e2e, makespan, rtol=0.02)
    # Geometric counts: the mean work per request is the compiler's (3 rounds), but requests differ.
    res = simulate_plan(p.plan, generate("constant", 0.002, 60, seed=1), SimConfig(loops="geometric"), seed=1)
    assert len(set(np.round(res.e2e, 3))) > 3
    assert res.e2e.mean() == pytest.approx(makespan, rel=0.25)


@pytest.mark.parametrize("partitions", ["layers"])  # attn-ffn and speculative: benchmarks/serving_validation.py
def test_partitioned_plans_match_the_replay_at_low_load(partitions):
    """Pipeline stages are re-priced per layer range (their prefill steps and per-token decode loops)."""
    import runpy

    graph = runpy.run_path(str(EXAMPLES / "scenarios" / "moe_attn_ffn.py"))["graph"]
    pipe = f"expand-llm,place{{partitions={partitions}}},insert-transfers,schedule,overlap"
    plan = compile_graph(graph, str(EXAMPLES / "scenarios" / "clusters" / "h200_x16.yaml"), pipeline=pipe,
                         baseline=False).plan
    makespan = replay(parse_graph(plan.ir)).makespan
    # The plan prefills its 512 sequences as one batch, as prefill-first does; an engine's token
    # budget would split them over iterations (each stage still priced for its layers).
    cfg = SimConfig(loops="mean", engine=EngineConfig(policy="prefill-first"))
    res = simulate_plan(plan, generate("constant", 1 / (2 * makespan), 2), cfg)
    assert np.allclose(res.e2e, makespan, rtol=1e-3)


def test_truncated_geometric_has_the_loop_mean():
    for expected, most in ((3.0, 8), (1.5, 3), (5.0, 20)):
        p = loop_probability(expected, most)
        assert (1 - (1 - p) ** most) / p == pytest.approx(expected, rel=1e-9)
        draws = np.minimum(np.random.default_rng(0).geometric(p, 200_000), most)
        assert draws.mean() == pytest.approx(expected, rel=0.02)
    assert loop_probability(1.0, 5) == 1.0 and loop_probability(8.0, 8) == 0.0


# ---- batching, admission, contention --------------------------------------------------------------


def test_continuous_batching_grows_and_shrinks_with_the_queue():
    # Long prompts, so each sequence's cache reads show in the step time.
    wl = plan_workload(llm_graph(8000, 100), DEVICES)
    arr = arrivals_at([0.01 * i for i in range(8)], [100 * (k + 1) for k in range(8)])  # outputs 100, 200, ... 800
    res = simulate(wl, arr, SimConfig(record_timeline=True))
    decode = [((e - s) / k, b) for _, s, e, label, b, k in res.timeline if label == "decode"]
    batches = [b for _, b in decode]
    peak = batches.index(max(batches))
    assert max(batches) == 8 and batches[-1] == 1
    assert batches[:peak + 1] == sorted(batches[:peak + 1])  # grows as requests arrive
    assert batches[peak:] == sorted(batches[peak:], reverse=True)  # shrinks as they finish
    step = {b: np.mean([d for d, bb in decode if bb == b]) for b in set(batches)}
    assert step[8] > step[4] > step[1]  # step time grows with batch
    assert list(res.out_tokens) == [100 * (k + 1) for k in range(8)]


def test_kv_admission_control_queues_requests_when_memory_is_tiny():
    m, chip = get_model(SMALL), get_chip("h200")
    one = m.kv_cache_bytes(1000 + 200)
    frac = (m.weight_bytes + 1.5 * one) / chip.capacity_bytes  # room for one request's KV cache, not two
    wl = plan_workload(llm_graph(1000, 200), DEVICES)
    arr = arrivals_at([0.0, 0.0, 0.0, 0.0])
    roomy = simulate(wl, arr, SimConfig())
    tight = simulate(wl, arr, SimConfig(engine=EngineConfig(mem_fraction=frac)))
    assert roomy.engines[0]["max_decode_batch"] == 4
    assert tight.engines[0]["max_decode_batch"] == 1
    # Served one after another: the last finishes about four single-request latencies in.
    assert tight.e2e.max() == pytest.approx(4 * tight.e2e.min(), rel=0.05)
    with pytest.raises(SimulationError, match="can never be admitted"):
        simulate(wl, arr, SimConfig(engine=EngineConfig(mem_fraction=(m.weight_bytes + 0.5 * one) / chip.capacity_bytes)))


def test_decode_reading_its_prefill_cache_on_another_group_never_deadlocks():
    """The README's simulate command once ended with 'N of N requests never finished': the demo plan
    prefilled edit's prompt on four H100s and decoded it on two of them, with no transfer between. Each
    decode reserved its own cache while its prefill's copy stayed reserved until the request ended, so
    under load admitted prefills filled the memory their own decodes waited for, and nothing ran."""
    m, chip = get_model(SMALL), get_chip("h200")
    prompt, out = 1000, 200
    g = llm_graph(prompt, out)
    ops = [op.with_attrs(devices=("n.g0", "n.g1")) if op.name == "a.prefill" else op for op in g.ops]
    wl = plan_workload(Graph(tuple(ops)), DEVICES)
    assert len(wl.engines) == 2  # the prefill's group and the decode's
    # g0 holds the prefill group's half of the weights and the decode group's whole copy, then ~6 caches.
    frac = (1.5 * m.weight_bytes + 6 * m.kv_cache_bytes(prompt + out)) / chip.capacity_bytes
    res = simulate(wl, generate("poisson", 200.0, 400, seed=0), SimConfig(engine=EngineConfig(mem_fraction=frac)))
    assert res.completed == 400
    # Memory bounds the batch: each running decode holds at least its prompt's cache (7 fit beside 6 whole ones).
    assert max(e["max_decode_batch"] for e in res.engines) <= 6 * (prompt + out) // prompt


def test_two_transfers_on_one_link_serialise():
    wl = plan_workload(llm_graph(1000, 1, "n.g0", "n.g1", send_s=0.5), DEVICES)
    both = simulate(wl, arrivals_at([0.0, 0.0]), SimConfig(record_timeline=True))
    sends = sorted((s, e) for r, s, e, *_ in both.timeline if r == "g0->g1")
    assert len(sends) == 2 and sends[1][0] == pytest.approx(sends[0][1])  # the second waits for the first
    alone = simulate(wl, arrivals_at([0.0]))
    assert both.e2e.max() - alone.e2e[0] >= 0.5 - 1e-9
    # Disaggregated: the prefill engine's KV is freed once sent, the decode engine holds its own.
    assert both.utilisation["g0->g1"] > 0 and {e["id"] for e in both.engines} == {"n.g0", "n.g1"}


def test_chunked_prefill_interleaves_prompts_with_decode():
    wl = plan_workload(llm_graph(3000, 50), DEVICES)
    arr = generate("poisson", 20.0, 200, seed=2)
    plain = simulate(wl, arr, SimConfig())
    chunked = simulate(wl, arr, SimConfig(engine=EngineConfig(chunked_prefill=True, chunk_tokens=1024),
                                          record_timeline=True))
    assert chunked.completed == plain.completed == 200
    assert {"mixed"} <= {row[3] for row in chunked.timeline}
    # A decoding sequence never waits behind a whole prompt: the longest iteration is a chunk's.
    longest = lambda r: max((e - s) / k for _, s, e, _, _, k in r.timeline)  # noqa: E731
    plain = simulate(wl, arr, SimConfig(record_timeline=True))
    assert longest(chunked) < longest(plain)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("policy", ["vllm", "sglang", "trtllm", "prefill-first"])
def test_fast_forward_changes_nothing_but_speed(chunked, policy):
    """Runs of unchanging decode batches (two models taking turns on one engine here) computed in
    closed form give the step-by-step simulation's results, under every batching policy. (The reference
    stack's plan puts exactly two models on the engine; the vllm plan adds a speculative draft there,
    whose rounds break the runs.)"""
    plan = compile_graph(str(EXAMPLES / "coding_agent.py"), GPU_ONLY, baseline=False, stack="reference").plan
    arr = generate("poisson", 0.3, 120, seed=4)
    eng = EngineConfig(chunked_prefill=chunked, policy=policy)
    slow = simulate_plan(plan, arr, SimConfig(fast_forward=False, engine=eng), seed=4)
    fast = simulate_plan(plan, arr, SimConfig(engine=eng), seed=4)
    assert len(fast.engines[0]["models"]) == 2
    assert np.allclose(fast.e2e, slow.e2e, rtol=1e-9) and np.allclose(fast.tpot, slow.tpot, rtol=1e-9)
    assert fast.energy_j == pytest.approx(slow.energy_j, rel=1e-9)
    assert fast.events == slow.events and fast.heap_events < slow.heap_events / 5


# ---- determinism and reporting ---------------------------------------------------------------------


def test_same_seed_same_json_and_another_seed_differs(rag_plan):
    _, path = rag_plan
    slo = SLO(0.5, 0.02)
    a = json.dumps(summary(simulate_plan(path, generate("poisson", 8.0, 300, seed=5), seed=5), slo), sort_keys=True)
    b = json.dumps(summary(simulate_plan(path, generate("poisson", 8.0, 300, seed=5), seed=5), slo), sort_keys=True)
    c = json.dumps(summary(simulate_plan(path, generate("poisson", 8.0, 300, seed=6), seed=6), slo), sort_keys=True)
    assert a == b and a != c


def test_the_simulators_seed_defaults_to_zero(coding_plan):
    # the coding agent's loops draw their iterations from the seed
    arr = generate("constant", 1.0, 20)
    e2e = simulate_plan(coding_plan.plan, arr).e2e.tolist()
    assert e2e == simulate_plan(coding_plan.plan, arr, seed=0).e2e.tolist()
    assert e2e != simulate_plan(coding_plan.plan, arr, seed=1).e2e.tolist()


def test_summary_reports_energy_utilisation_and_per_llm_figures(rag_plan):
    _, path = rag_plan
    d = summary(simulate_plan(path, generate("bursty", 4.0, 200, seed=1, cv=3.0)))
    assert d["energy_per_request_j"] > 0 and d["energy_per_token_j"] > 0
    assert 0 < d["utilisation"]["hgx0.h100-sxm.0"] <= 1 and "hgx0.host" in d["utilisation"]
    assert set(d["llms"]) == {"answer"} and d["llms"]["answer"]["ttft_ms"]["p50"] > 0


def test_goodput_bisection_finds_the_closed_form_rate():
    """Constant arrivals into one server of service D: request k waits (k−1)(D − 1/r), so with
    TTFT <= 2D, 90 of 100 requests meet it up to r* = 89 / (88 D)."""
    D = estimate(get_model(SMALL), get_chip("h200"), "prefill", 1, 1000, 0).latency_s
    wl = plan_workload(llm_graph(1000, 0), DEVICES)
    cfg = SimConfig(engine=EngineConfig(max_prefill_tokens=1000))
    base = generate("constant", 1.0, 100)
    good = goodput(lambda r: simulate(wl, base.at_rate(r), cfg), SLO(ttft_s=2 * D), start=0.3 / D, rtol=0.01)
    r_star = 89 / (88 * D)
    assert good.rate <= r_star * (1 + 1e-9) and good.rate >= r_star / 1.01
    assert good.best is not None and good.slo.met(good.best) >= 0.9


def test_arrival_processes_and_traces(tmp_path):
    for kind in ("poisson", "bursty", "constant"):
        a = generate(kind, 5.0, 20_000, seed=1)
        assert len(a) / a.times[-1] == pytest.approx(5.0, rel=0.05)
        assert np.array_equal(a.at_rate(10.0).times, a.times / 2)
    gaps = np.diff(generate("bursty", 1.0, 20_000, seed=1, cv=3.0).times)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.15)
    with pytest.raises(ArrivalError, match="-1"):
        generate("poisson", -1.0, 10)
    f = tmp_path / "trace.csv"
    f.write_text("arrival_s,input_tokens,output_tokens\n0.0,100,5\n0.5,300,7\n")
    t = load_trace(f)
    assert list(t.times) == [0.0, 0.5] and list(t.output_tokens) == [5, 7]
    f.write_text("arrival_s\n1.0\n0.5\n")
    with pytest.raises(GimletError, match="line 3"):
        load_trace(f)


# ---- search -----------------------------------------------------------------------------------------


def test_pareto_front_keeps_only_non_dominated_points():
    pts = [ParetoPoint("a", 1, 10, 100), ParetoPoint("b", 1, 20, 50), ParetoPoint("c", 1, 15, 40),
           ParetoPoint("d", 1, 5, 120), ParetoPoint("e", 1, 20, 30)]
    assert [p.label for p in pareto_front(pts)] == ["d", "a", "b"]


@pytest.fixture(scope="module")
def rag_search():
    from gimletc.graph_io import load_graph

    g, cl = load_graph(EXAMPLES / "rag.py"), load_cluster(GPU_ONLY)
    return search(g, cl, SLO(0.5, 0.02), SearchSettings(requests=150, top_k=3, max_evals=8, rtol=0.1, max_chips=4))


def test_search_finds_both_modes_and_a_non_dominated_frontier(rag_search, tmp_path):
    r = rag_search
    assert {e.config.mode for e in r.evaluations} == {"agg", "disagg"}
    assert all(e.chips <= 4 for e in r.evaluations)
    assert all(e.goodput_req_s > 0 for e in r.evaluations)
    front = r.pareto()
    assert front
    for p in front:
        assert not any(q.tok_s_per_user >= p.tok_s_per_user and q.tok_s_per_chip >= p.tok_s_per_chip
                       and (q.tok_s_per_user, q.tok_s_per_chip) != (p.tok_s_per_user, p.tok_s_per_chip)
                       for q in r.points())
    per_chip = [e.per_chip for e in r.top("per_chip", 10)]
    assert per_chip == sorted(per_chip, reverse=True)
    out = tmp_path / "frontier.png"
    plot_frontier(r, out)
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_disaggregated_configuration_moves_kv_between_replicas():
    from gimletc.graph_io import load_graph
    from gimletc.serving import serving_workload

    g, cl = load_graph(EXAMPLES / "rag.py"), load_cluster(GPU_ONLY)
    cfg = ServingConfig((ModelServing.disagg("llama-3.1-8b", EngineKind("h100-sxm", 1), 2,
                                      EngineKind("h100-sxm", 2), 1),))
    wl = serving_workload(g, cl, cfg)
    res = simulate(wl, generate("poisson", 5.0, 200, seed=0))
    assert res.completed == 200 and res.chips == 4
    kv_links = [k for k in res.utilisation if "->" in k]
    assert kv_links and all(res.utilisation[k] > 0 for k in kv_links)
    assert {e["id"] for e in res.engines} == {"llama-3.1-8b/prefill0", "llama-3.1-8b/prefill1", "llama-3.1-8b/decode0"}


# ---- CLI -------------------------------------------------------------------------------------------------


run = run_cli


def test_cli_simulate_json_fields(capsys, rag_plan, tmp_path):
    _, path = rag_plan
    trace = tmp_path / "timeline.json"
    code, out, err = run(capsys, "simulate", str(path), "--rate", "6", "--requests", "200", "--slo-ttft-ms", "500",
                         "--slo-tpot-ms", "20", "--json", "--timeline", str(trace))
    assert code == 0, err
    d = json.loads(out)
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert set(d[key]) >= {"p50", "p90", "p99"} and d[key]["p50"] > 0
    for key in ("throughput_tok_s", "goodput_req_s", "energy_per_request_j"):
        assert d[key] > 0
    assert d["requests"] == 200 and d["slo"] == {"ttft_ms": 500, "tpot_ms": 20, "share": 0.9}
    # The batching policy: the plan's stack's default (vLLM for the reference stack), and what it ran with.
    assert d["policy"] == "vllm" and d["config"]["engine"]["policy"] is None
    assert d["preemptions"] == 0 and d["recomputed_tokens"] == 0
    assert all(e["policy"] == "vllm" and e["batching"]["llama-3.1-8b"]["chunked_prefill"] for e in d["engines"])
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("name") == "decode" for e in events)
    code, out, _ = run(capsys, "simulate", str(path), "--rate", "6", "--requests", "50")
    assert code == 0 and "TTFT" in out and "engines" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rate", "-1"], "--rate must be a positive number; got -1"),
        (["--rate", "0"], "--rate must be a positive number; got 0"),
        (["--rate", "1", "--requests", "0"], "--requests must be a positive integer; got 0"),
        (["--rate", "1", "--slo-ttft-ms", "-5"], "--slo-ttft-ms must be a positive number; got -5"),
        ([], "--rate is required"),
    ],
)
def test_cli_simulate_bad_arguments_are_one_line(capsys, rag_plan, args, needle):
    _, path = rag_plan
    code, out, err = run(capsys, "simulate", str(path), *args)
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_simulate_bad_plans_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "simulate", str(tmp_path / "missing.json"), "--rate", "1")
    assert code == 2 and "missing.json" in err and err.count("\n") == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": ')
    code, _, err = run(capsys, "simulate", str(bad), "--rate", "1")
    assert code == 2 and "malformed JSON" in err and err.count("\n") == 1
    bad.write_text('{"name": "x"}')
    code, _, err = run(capsys, "simulate", str(bad), "--rate", "1")
    assert code == 2 and "bad.json" in err and err.count("\n") == 1


def test_cli_simulate_policy_and_its_knobs(capsys, rag_plan):
    _, path = rag_plan
    code, out, err = run(capsys, "simulate", str(path), "--rate", "6", "-n", "100", "--json", "--policy", "sglang",
                         "--no-chunked-prefill", "--max-batch", "64", "--max-prefill-tokens", "4096")
    assert code == 0, err
    d = json.loads(out)
    assert d["policy"] == "sglang" and d["config"]["engine"]["policy"] == "sglang"
    assert {k: d["config"]["engine"][k] for k in ("max_batch", "max_prefill_tokens", "chunked_prefill")} == \
        {"max_batch": 64, "max_prefill_tokens": 4096, "chunked_prefill": False}
    assert all(e["batching"]["llama-3.1-8b"]["max_batch"] == 64 for e in d["engines"])
    code, _, err = run(capsys, "simulate", str(path), "--rate", "6", "--policy", "tgi")
    assert code == 2 and "tgi" in err and "Traceback" not in err
    code, _, err = run(capsys, "simulate", str(path), "--rate", "6", "--max-batch", "9000")
    assert code == 2 and err.count("\n") == 1 and "max_batch 9000 is above the token budget 8192" in err


def test_cli_simulate_model_step_on_a_host_is_one_line(capsys, tmp_path):
    """mixed_rack places a small prefill on the host CPU; the load simulator batches on accelerators only."""
    plan = tmp_path / "multi.json"
    compile_graph(str(EXAMPLES / "multi_agent.py"), str(EXAMPLES / "clusters" / "mixed_rack.yaml"),
                  baseline=False).plan.write(plan)
    code, _, err = run(capsys, "simulate", str(plan), "--rate", "0.1", "-n", "5")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "op @worker_2.prefill: the model.prefill runs on host gpu0.host" in err


def test_cli_search_prints_rankings_and_writes_the_plot(capsys, tmp_path):
    png = tmp_path / "front.png"
    code, out, err = run(capsys, "search", str(EXAMPLES / "rag.py"), "--cluster", GPU_ONLY, "--slo-ttft-ms", "500",
                         "--slo-tpot-ms", "20", "--plot", str(png), "--requests", "100", "--configs", "2",
                         "--max-chips", "2", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["evaluations"] and d["pareto"] and set(d["top"]) == {"per_chip", "per_watt", "per_dollar"}
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    code, _, err = run(capsys, "search", str(EXAMPLES / "rag.py"), "--cluster", GPU_ONLY)
    assert code == 2 and "needs --slo-ttft-ms" in err and err.count("\n") == 1
    code, _, err = run(capsys, "search", str(EXAMPLES / "rag.py"), "--cluster", GPU_ONLY, "--slo-tpot-ms", "20",
                       "--max-chips", "-3")
    assert code == 2 and "--max-chips must be a positive integer; got -3" in err
