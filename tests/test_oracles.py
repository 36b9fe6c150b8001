"""Hand-computed oracles for the numbers a plan and the load simulator report.

Every expected value below is a literal worked out on paper from the definitions in
docs/compiler.md (plan metrics, baseline) and docs/serving.md (load simulation), with the working
in a comment; none is computed by calling gimletc's own helpers. The graphs use ops whose times
the input fixes (tools with `latency_s`, transfers over links of round bandwidth and latency in the
clusters under tests/data/oracles/), so the oracles hold whatever the LLM cost model predicts.
The one test that needs an LLM reads the prefill and decode seconds the cost model gave from the
plan's placements and checks only the arithmetic built on them.

Definitions the working assumes:
- a transfer of B bytes over one link takes latency + B / bandwidth; a token id is 4 bytes;
  one link direction carries one transfer at a time (docs/compiler.md, Limits);
- busy time: an accelerator's seconds of work; a host's lane-seconds / 8 (8 CPU lanes per host);
- energy per device = sockets x (TDP x busy + idle power x (latency - busy)), summed over the
  devices the plan uses; power = sockets x TDP of those devices;
- cost = price per chip-hour x busy seconds / 3600; throughput = 1 / the busiest device's busy time;
  utilisation = busy / latency;
- baseline: per accelerator type, one node of floor((envelope - host TDP x sockets) / chip TDP)
  chips beside that type's node's host, compiled without pins; the best by the objective;
  speedup = baseline latency / plan latency; energy_ratio = plan energy / baseline energy;
- load simulation: span from t = 0 to the last completion; an accelerator draws TDP while it
  runs and idle power for the rest of the span; a host that ran anything draws
  sockets x (TDP x lane-seconds / 8 + idle x (span - lane-seconds / 8)).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gimletc import AgentGraph
from gimletc.compiler import compile
from gimletc.hardware import get_chip, load_cluster
from gimletc.sim import generate, simulate_plan, summary

DATA = Path(__file__).parent / "data" / "oracles"
ONE_GPU = DATA / "one_gpu.yaml"
ONE_GPU_TWO_SOCKETS = DATA / "one_gpu_two_sockets.yaml"
TWO_NODES = DATA / "two_nodes.yaml"
TWO_HOST_KINDS = DATA / "two_host_kinds.yaml"
THREE_HOSTS = DATA / "three_hosts.yaml"

EXACT = 1e-9  # relative tolerance: the working is exact; only float rounding separates it from the code


def approx(x: float) -> object:
    return pytest.approx(x, rel=EXACT, abs=1e-12)


def test_catalog_figures_the_oracles_assume():
    """The catalog figures the working below uses; if one changes, fix the working, not the code."""
    figures = {(c, f): getattr(get_chip(c), f) for c in ("h100-sxm", "a100-sxm-80gb", "xeon-host-16c",
                                                         "xeon-6980p", "epyc-9965")
               for f in ("tdp_w", "idle_w", "price_per_hour")}
    assert figures == {
        ("h100-sxm", "tdp_w"): 700, ("h100-sxm", "idle_w"): 90, ("h100-sxm", "price_per_hour"): 3.0,
        ("a100-sxm-80gb", "tdp_w"): 400, ("a100-sxm-80gb", "idle_w"): 55, ("a100-sxm-80gb", "price_per_hour"): 1.8,
        ("xeon-host-16c", "tdp_w"): 150, ("xeon-host-16c", "idle_w"): 40, ("xeon-host-16c", "price_per_hour"): None,
        ("xeon-6980p", "tdp_w"): 500, ("xeon-6980p", "idle_w"): 110, ("xeon-6980p", "price_per_hour"): None,
        ("epyc-9965", "tdp_w"): 500, ("epyc-9965", "idle_w"): 110, ("epyc-9965", "price_per_hour"): None,
    }


# ---- a chain of two tools, the second on the GPU ------------------------------------------


def chain_graph():
    """q (100 tokens) -> tool a (2 s, 1,000 tokens out) -> tool b (3 s, 10 tokens out) -> o."""
    g = AgentGraph("chain")
    q = g.input("q", tokens=100)
    a = g.tool("a", inputs=[q], latency_s=2.0, output_tokens=1000)
    b = g.tool("b", inputs=[a], latency_s=3.0, output_tokens=10)
    g.output("o", [b])
    return g.build()


CHAIN_PINS = {"b": "n0.h100-sxm.0"}  # a tool pinned to an accelerator runs there for its latency_s


def test_chain_plan_metrics_by_hand():
    # Replay: a on a host lane 0-2 s; a's 1,000 tokens = 4,000 B to the GPU: 1 ms + 4,000 / 4e6 s = 2 ms,
    # 2-2.002 s; b on the GPU 2.002-5.002 s; b's 10 tokens = 40 B back: 1 ms + 40 / 4e6 s = 1.01 ms,
    # 5.002-5.00301 s; o (0 s) at 5.00301 s.
    p = compile(chain_graph(), ONE_GPU, pins=CHAIN_PINS).plan
    m = p.metrics
    assert m.latency_ms == approx(5003.01)
    assert sorted((t.value, t.bytes, t.seconds) for t in p.transfers) == [
        ("a", 4000.0, approx(0.002)), ("b", 40.0, approx(0.00101))]
    # Busy: GPU 3 s; host 2 lane-s / 8 lanes = 0.25 s.
    # Energy: GPU 700 x 3 + 90 x (5.00301 - 3) = 2,100 + 180.2709 = 2,280.2709 J
    #         host 150 x 0.25 + 40 x (5.00301 - 0.25) = 37.5 + 190.1204 = 227.6204 J; total 2,507.8913 J.
    assert m.energy_j == approx(2507.8913)
    assert m.power_w == approx(850.0)  # 700 + 150
    # Cost: the GPU's 3 busy seconds at 3.0 USD/h = 0.0025 USD; the host has no price.
    assert m.cost_usd == approx(0.0025)
    assert m.throughput_rps == approx(1 / 3)  # the GPU is the busiest device: 3 s
    assert m.utilisation == {"n0.h100-sxm.0": approx(3 / 5.00301), "n0.host": approx(0.25 / 5.00301)}
    assert m.ttft_ms == {} and m.tpot_ms == {} and m.llms == {}
    # Baseline: envelope = the plan's 850 W; h100-sxm: floor((850 - 150) / 700) = 1 chip.
    # Unpinned, everything runs on the host: a on lane 0 0-2 s, b on lane 1 2-5 s, o at 5 s.
    # Host busy 5 / 8 = 0.625 s: 150 x 0.625 + 40 x (5 - 0.625) = 93.75 + 175 = 268.75 J; power 150 W.
    b = p.baseline
    assert b is not None and (b.chip, b.chips) == ("h100-sxm", 1)
    assert b.power_w == approx(150.0)
    assert b.metrics.latency_ms == approx(5000.0)
    assert b.metrics.energy_j == approx(268.75)
    assert b.metrics.cost_usd == 0.0
    assert b.metrics.throughput_rps == approx(1.6)  # 1 / 0.625
    assert p.speedup == approx(5.0 / 5.00301)  # baseline latency / plan latency = 0.99940
    assert p.energy_ratio == approx(2507.8913 / 268.75)  # plan energy / baseline energy = 9.3317


def test_chain_with_a_two_socket_host_counts_both_sockets():
    # As above, but each of the host's 2 sockets draws 150 W busy and 40 W idle:
    # host 2 x 227.6204 = 455.2408 J; total 2,280.2709 + 455.2408 = 2,735.5117 J; power 700 + 2 x 150 = 1,000 W.
    p = compile(chain_graph(), ONE_GPU_TWO_SOCKETS, pins=CHAIN_PINS).plan
    assert p.metrics.latency_ms == approx(5003.01)
    assert p.metrics.energy_j == approx(2735.5117)
    assert p.metrics.power_w == approx(1000.0)
    assert p.metrics.cost_usd == approx(0.0025)  # the host has no price, whatever its sockets
    # Baseline: floor((1,000 - 300) / 700) = 1 H100; host only: 2 x 268.75 = 537.5 J at 300 W.
    b = p.baseline
    assert b is not None and (b.chip, b.chips) == ("h100-sxm", 1)
    assert b.metrics.energy_j == approx(537.5)
    assert b.power_w == approx(300.0)
    assert p.energy_ratio == approx(2735.5117 / 537.5)


def test_chain_under_load_energy_by_hand():
    # Two requests, at 10 s and 20 s ("constant" arrivals start one gap in); each runs alone as in
    # the replay (5.00301 s < the 10 s gap), so the span is 20 + 5.00301 = 25.00301 s.
    # GPU: 2 x 3 s at 700 W + (25.00301 - 6) s at 90 W = 4,200 + 1,710.2709 = 5,910.2709 J.
    # Host: 2 x 2 lane-s = 4 lane-s = 0.5 s of the host: 150 x 0.5 + 40 x (25.00301 - 0.5)
    #       = 75 + 980.1204 = 1,055.1204 J.  Total 6,965.3913 J, 3,482.69565 J per request.
    cl = load_cluster(ONE_GPU)
    p = compile(chain_graph(), cl, pins=CHAIN_PINS, baseline=False).plan
    r = simulate_plan(p, generate("constant", 0.1, 2), cluster=cl)
    assert r.span == approx(25.00301)
    assert list(r.e2e) == [approx(5.00301), approx(5.00301)]
    assert r.energy_j == approx(6965.3913)
    assert summary(r)["energy_per_request_j"] == approx(3482.69565)
    assert r.utilisation["n0.h100-sxm.0"] == approx(6 / 25.00301)
    assert r.utilisation["n0.host"] == approx(0.5 / 25.00301)
    assert (r.chips, r.power_w, r.price_per_hour) == (1, 700.0, 3.0)


def test_chain_under_load_counts_host_sockets():
    # As above with a two-socket host: host 2 x 1,055.1204 = 2,110.2408 J; total 8,020.5117 J.
    cl = load_cluster(ONE_GPU_TWO_SOCKETS)
    p = compile(chain_graph(), cl, pins=CHAIN_PINS, baseline=False).plan
    r = simulate_plan(p, generate("constant", 0.1, 2), cluster=cl)
    assert r.span == approx(25.00301)
    assert r.energy_j == approx(8020.5117)
    assert summary(r)["energy_per_request_j"] == approx(4010.25585)


# ---- sixteen parallel tools over two nodes ------------------------------------------------


def fan_graph(tools: int, tokens: int = 250):
    """q -> `tools` parallel tools (1 s each) -> o; q and every tool's result are `tokens` long
    (250 tokens = 1,000 B)."""
    g = AgentGraph(f"fan{tools}")
    q = g.input("q", tokens=tokens)
    outs = [g.tool(f"t{i:02d}", inputs=[q], latency_s=1.0, output_tokens=tokens) for i in range(tools)]
    g.output("o", outs)
    return g.build()


def test_fan_out_over_two_hosts_beats_the_one_node_baseline():
    # 16 tools, 8 lanes per host. Latency objective: t00-t07 on n0's lanes (0-1 s); t08-t15 on n1's,
    # after q crosses the node link (1 ms + 1,000 / 1e6 s = 2 ms): 0.002-1.002 s; their 8 results come
    # back over the one n1 -> n0 link direction one at a time, 2 ms each: the last lands at
    # 1.002 + 8 x 0.002 = 1.018 s, when o runs.
    p = compile(fan_graph(16), TWO_NODES, pins={"q": "n0.host", "o": "n0.host"}, power_budget_w=1000).plan
    m = p.metrics
    assert {x.op: x.device for x in p.placements} == {
        "q": "n0.host", "o": "n0.host", **{f"t{i:02d}": "n0.host" if i < 8 else "n1.host" for i in range(16)}}
    assert m.latency_ms == approx(1018.0)
    # Each host: 8 lane-s = 1 s busy: 150 x 1 + 40 x 0.018 = 150.72 J; two hosts 301.44 J, 300 W.
    assert m.energy_j == approx(301.44)
    assert m.power_w == approx(300.0)
    assert m.throughput_rps == approx(1.0)  # the busiest device works 1 s per request
    assert m.utilisation == {"n0.host": approx(1 / 1.018), "n1.host": approx(1 / 1.018)}
    assert m.cost_usd == 0.0
    # Baseline at the 1,000 W budget: floor((1,000 - 150) / 700) = 1 H100 beside one host: the 16
    # tools take two rounds of 8 lanes: 2 s; host busy 2 s of 2 s: 150 x 2 = 300 J at 150 W.
    b = p.baseline
    assert b is not None and (b.chip, b.chips) == ("h100-sxm", 1)
    assert b.metrics.latency_ms == approx(2000.0)
    assert b.metrics.energy_j == approx(300.0)
    assert b.metrics.throughput_rps == approx(0.5)
    assert p.speedup == approx(2 / 1.018)  # 1.9646
    assert p.energy_ratio == approx(301.44 / 300)  # 1.0048


def test_fan_out_under_load_host_energy_by_hand():
    # One request arriving at 1 s: it runs as in the replay (1.018 s), span 2.018 s. No accelerator
    # works, so only the two hosts draw: each 8 lane-s = 1 s busy: 150 x 1 + 40 x (2.018 - 1)
    # = 190.72 J; total 381.44 J.
    cl = load_cluster(TWO_NODES)
    p = compile(fan_graph(16), cl, pins={"q": "n0.host", "o": "n0.host"}, baseline=False).plan
    r = simulate_plan(p, generate("constant", 1.0, 1), cluster=cl)
    assert r.span == approx(2.018)
    assert list(r.e2e) == [approx(1.018)]
    assert r.energy_j == approx(381.44)
    assert summary(r)["energy_per_request_j"] == approx(381.44)
    assert r.utilisation["n0.host"] == approx(1 / 2.018)
    assert (r.chips, r.power_w) == (0, 0.0)  # no accelerator in the deployment


# ---- loops and branches -----------------------------------------------------------------------


def test_loop_and_branch_count_their_expectation():
    g = AgentGraph("control")
    q = g.input("q", tokens=100)
    with g.loop("fix", expected=2.5, max=8, carry=[q]) as fix:
        fix.yield_(g.tool("work", inputs=[fix.args[0]], latency_s=2.0, output_tokens=100))
    with g.branch("route", probabilities=[0.25, 0.75], inputs=fix.results) as br:
        with br.arm():
            br.yield_(g.tool("cheap", inputs=fix.results, latency_s=4.0, output_tokens=10))
        with br.arm():
            br.yield_(g.tool("dear", inputs=fix.results, latency_s=8.0, output_tokens=10))
    g.output("o", [br.results[0]])
    p = compile(g.build(), ONE_GPU).plan
    m = p.metrics
    # All on the host. The loop: 2.5 x 2 s = 5 s; the branch: 0.25 x 4 + 0.75 x 8 = 7 s; latency 12 s.
    assert m.latency_ms == approx(12000.0)
    assert {x.op: x.runs for x in p.placements if x.kind == "agent.tool"} == {"work": 2.5, "cheap": 0.25, "dear": 0.75}
    # Host: 12 lane-s = 1.5 s busy: 150 x 1.5 + 40 x (12 - 1.5) = 225 + 420 = 645 J.
    assert m.energy_j == approx(645.0)
    assert m.power_w == approx(150.0)
    assert m.throughput_rps == approx(1 / 1.5)
    assert m.utilisation == {"n0.host": approx(1.5 / 12)}
    # The plan draws 150 W; a baseline node needs 150 W for the host plus 700 W per H100: none fits.
    assert p.baseline is None and p.speedup is None and p.energy_ratio is None
    assert "no single-chip-type cluster" in p.sources["baseline"]


def test_loop_carried_value_goes_back_to_its_consumer_every_iteration():
    """The coding agent's loop on two hosts 0.4 s apart (a 1-token message: 0.39 + 4 / 400 s): `plan` on b
    writes the first carried value; each round `edit` (b) reads it, `test` (a) checks the edit, and the
    next round's `edit` reads `test`'s log, which must come back to b: the loop's back edge.
    q on a; q -> b 0-0.4 s; plan 0.4-1.4 s. Round 1: edit 1.4-2.4, edit -> a 2.4-2.8, test 2.8-3.8,
    test -> b 3.8-4.2 (back edge); round 2: 4.2-7.0 likewise; the loop's result is already on b, where o
    runs: 7.0 s. (Without the back edge: 6.6 s, the last 0.4 s being the result's own move to o.)"""
    g = AgentGraph("carry")
    q = g.input("q", tokens=1)
    plan = g.tool("plan", inputs=[q], latency_s=1.0, output_tokens=1)
    with g.loop("fix", expected=2, max=8, carry=[plan]) as fix:
        edit = g.tool("edit", inputs=[fix.args[0]], latency_s=1.0, output_tokens=1)
        fix.yield_(g.tool("test", inputs=[edit], latency_s=1.0, output_tokens=1))
    g.output("o", [fix.results[0]])
    pins = {"q": "a.host", "plan": "b.host", "edit": "b.host", "test": "a.host", "o": "b.host"}
    p = compile(g.build(), DATA / "two_hosts.yaml", pins=pins, baseline=False).plan
    assert p.metrics.latency_ms == approx(7000.0)
    # q -> b once, edit -> a and test -> b each round (2 rounds); nothing moves after the loop.
    assert sorted((t.value, t.src, t.dst) for t in p.transfers) == [
        ("edit", "b.host", "a.host"), ("q", "a.host", "b.host"), ("test", "a.host", "b.host")]
    assert all(t.seconds == approx(0.4) for t in p.transfers)
    # The placer prices the same back edge: its own estimate equals the replay.
    assert p.search is not None and p.search.objective_value == approx(7.0)


# ---- an LLM call: TTFT and TPOT ---------------------------------------------------------------


def test_llm_ttft_tpot_energy_on_top_of_the_cost_model():
    """TTFT, TPOT, energy and cost of an LLM call from its prefill and decode seconds.

    P and D are the cost model's (issue 10 recalibrates them); the test reads them from the plan's
    placements and checks what the plan builds on them against the working."""
    g = AgentGraph("ask")
    q = g.input("q", tokens=100)
    t = g.tool("t", inputs=[q], latency_s=1.0, output_tokens=50)
    a = g.llm("ans", model="llama-3.2-1b", prompt=[t], output_tokens=20)
    g.output("o", [a])
    p = compile(g.build(), ONE_GPU, pins={"ans": "n0.h100-sxm.0"}).plan
    secs = {x.op: x.seconds for x in p.placements}
    P, D = secs["ans.prefill"], secs["ans.decode"]
    assert P > 0 and D > 0
    # t on a host lane 0-1 s; its 50 tokens = 200 B to the GPU: 1 ms + 200 / 4e6 s = 1.05 ms; prefill
    # P; decode D; the 20-token answer (80 B) back: 1 ms + 80 / 4e6 s = 1.02 ms.
    ttft = 1.0 + 0.00105 + P
    latency = ttft + D + 0.00102
    m = p.metrics
    assert m.ttft_ms == {"ans": approx(ttft * 1e3)}
    assert m.tpot_ms == {"ans": approx(D / 20 * 1e3)}  # decode seconds per output token
    llm = m.llms["ans"]
    assert (llm.model, llm.prompt_tokens, llm.output_tokens) == ("llama-3.2-1b", 50, 20)
    assert (llm.prefill_device, llm.decode_device) == ("n0.h100-sxm.0", "n0.h100-sxm.0")
    assert m.latency_ms == approx(latency * 1e3)
    # GPU busy P + D; host busy 1 lane-s / 8 = 0.125 s.
    assert m.energy_j == approx(700 * (P + D) + 90 * (latency - P - D) + 150 * 0.125 + 40 * (latency - 0.125))
    assert m.cost_usd == approx(3.0 * (P + D) / 3600)
    assert m.throughput_rps == approx(1 / max(P + D, 0.125))
    assert m.utilisation == {"n0.h100-sxm.0": approx((P + D) / latency), "n0.host": approx(0.125 / latency)}


# ---- the baseline picks the best chip type ----------------------------------------------------


def test_baseline_is_the_best_chip_type_by_the_objective():
    g = AgentGraph("one")
    q = g.input("q", tokens=100)
    g.output("o", [g.tool("a", inputs=[q], latency_s=2.0, output_tokens=10)])
    p = compile(g.build(), TWO_HOST_KINDS, objective="energy", power_budget_w=1200).plan
    # The plan: everything on g's 150 W host (exhaustive over 2 hosts per op): latency 2 s, host busy
    # 2 / 8 = 0.25 s: 150 x 0.25 + 40 x 1.75 = 37.5 + 70 = 107.5 J at 150 W.
    assert p.metrics.latency_ms == approx(2000.0)
    assert p.metrics.energy_j == approx(107.5)
    # Baselines at 1,200 W: h100-sxm: floor((1,200 - 150) / 700) = 1 chip beside xeon-host-16c: 107.5 J;
    # a100-sxm-80gb: floor((1,200 - 500) / 400) = 1 chip beside xeon-6980p:
    # 500 x 0.25 + 110 x 1.75 = 125 + 192.5 = 317.5 J. The lower energy wins.
    b = p.baseline
    assert b is not None and (b.chip, b.chips) == ("h100-sxm", 1)
    assert b.metrics.energy_j == approx(107.5)
    assert p.energy_ratio == approx(1.0) and p.speedup == approx(1.0)


# ---- the greedy placer's energy rule ------------------------------------------------------------


def test_greedy_energy_placement_keeps_tools_off_a_far_cheap_host():
    """Ten 1 s tools fanned out from host a: 3^10 = 59,049 assignments (> the exact limit of 20,000),
    so the greedy placer runs. For energy it adds each tool where busy energy plus the idle energy of a
    newly used device grows least:
      - on a: 500 W x 1 s / 8 lanes = 62.5 J;
      - on b: 150 W x 1 s / 8 = 18.75 J, plus b's 40 W idle over the plan so far, at least until the
        tool ends: q (1 token = 4 B) takes 0.98 + 4 / 400 = 0.99 s to reach b, so 1.99 s:
        18.75 + 40 x 1.99 = 98.35 J;
    so all ten stay on a. (The latency rule would send t8, t9 to b: 1.99 s < 2 s on a's busy lanes; the
    MILP, pricing busy energy only, would send all ten to b: both cost more energy once a's idle
    time while the tools travel is counted.)

    This pins the greedy's result, not an optimum: by the placer's own estimate, two tools on a and
    eight on b cost 654.5 J, which single-unit moves from this plan do not reach; the replay queues
    those eight results on the b -> a link (9.9 s) and puts that plan at 1,694 J. See the strict xfail
    at the end of this file."""
    p = compile(fan_graph(10, tokens=1), THREE_HOSTS, objective="energy", pins={"q": "a.host", "o": "a.host"}).plan
    assert p.search is not None and p.search.method.startswith("greedy") and p.search.units == 12
    assert {x.device for x in p.placements} == {"a.host"}
    # a's 8 lanes: t00-t07 0-1 s, t08, t09 1-2 s; latency 2 s. Busy 10 / 8 = 1.25 s:
    # 500 x 1.25 + 110 x 0.75 = 625 + 82.5 = 707.5 J.
    assert p.metrics.latency_ms == approx(2000.0)
    assert p.metrics.energy_j == approx(707.5)
    assert p.metrics.power_w == approx(500.0)
    assert p.metrics.throughput_rps == approx(0.8)
    assert p.baseline is None  # no accelerators: no single-chip-type baseline


# ---- the placer's schedule and the replay agree on links ----------------------------------------


def test_exact_placement_is_optimal_under_the_replay():
    """Ten 1 s tools from host a: 2^10 = 1,024 assignments, so the search is exhaustive.
    All on a: 8 lanes, two rounds: 2.0 s. t8 and t9 on b: q reaches b at 0.4 s (moved once), they run
    0.4-1.4 s, and their two results share the b -> a link: 1.4-1.8 s and 1.8-2.2 s: 2.2 s. One tool on
    b: its result lands at 1.8 s, while a's ninth tool runs 1-2 s: 2.0 s. The placer used to let the two
    results cross the link at once (1.8 s, reported as optimal with gap 0)."""
    pins = {"q": "a.host", "o": "a.host"}
    p = compile(fan_graph(10, tokens=1), DATA / "two_hosts.yaml", pins=pins, baseline=False).plan
    assert p.search is not None and p.search.method == "exhaustive" and p.search.gap == 0.0
    assert p.metrics.latency_ms == approx(2000.0)
    assert p.search.objective_value == approx(2.0)  # the placer's own estimate is the replay's
    both = compile(fan_graph(10, tokens=1), DATA / "two_hosts.yaml", pins={**pins, "t08": "b.host", "t09": "b.host"},
                   baseline=False).plan
    assert both.metrics.latency_ms == approx(2200.0)
    assert both.search is not None and both.search.objective_value == approx(2.2)
