"""Batching policies: hand-worked schedules on tiny traces (which request runs in which iteration),
the overload case where the running-set cap bounds TPOT, preemption under KV pressure, and a
property that no policy exceeds its cap or its token budget in any iteration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gimletc.hardware import get_chip
from gimletc.ir import ASYNC_TOKEN, Graph, Op, Type, Value
from gimletc.models import get_model
from gimletc.sim.arrivals import Arrivals, generate
from gimletc.sim.load import EngineConfig, SimConfig, SimulationError, plan_workload, simulate
from gimletc.sim.policies import default_policy
from gimletc.sim.steps import PROFILES, StepCost

SMALL = "llama-3.2-1b"
H200 = {"n.g0": ("n", get_chip("h200"), "accelerator")}


def one_call(prompt: int, out: int, model: str = SMALL) -> Graph:
    """One LLM call: its prefill, then its decode on the same engine, which continues its KV cache."""
    kv = Type("kv", get_model(model).kv_cache_bytes(prompt))
    c = {"llm": "a", "model": model, "device": "n.g0", "devices": ("n.g0",), "seconds": 0.0}
    return Graph((
        Op("exec.compute", "a.prefill", (), (Value("a.kv", kv), Value("a.prefill.done", ASYNC_TOKEN)),
           {"kind_of": "model.prefill", "of": "a.prefill", "tokens": prompt, "ctx": 0, **c}),
        Op("exec.compute", "a.decode", ("a.kv",), (Value("a", Type("tokens", out)), Value("a.decode.done", ASYNC_TOKEN)),
           {"kind_of": "model.decode", "of": "a.decode", "tokens": out, "ctx": prompt, **c}),
    ))


def at_zero(n: int) -> Arrivals:
    return Arrivals(np.zeros(n), "trace", 1.0)


def schedule(policy: str, n: int, prompt: int, out: int, **eng) -> list[tuple]:
    """Every iteration as (kind, [(request, prompt tokens)], [decoding requests]), step by step."""
    cfg = SimConfig(engine=EngineConfig(policy=policy, **eng), record_schedule=True, fast_forward=False)
    res = simulate(plan_workload(one_call(prompt, out), H200), at_zero(n), cfg)
    assert res.completed == n
    return [(r["kind"], [(p[0], p[1]) for p in r["prefills"]], r["decoding"]) for r in res.schedule]


P, D, M = "prefill", "decode", "mixed"


# ---- hand-worked schedules -----------------------------------------------------------------------


def test_vllm_caps_the_running_set_and_admits_as_slots_free():
    # Four requests at t = 0: r0 starts alone (the engine is idle when it arrives); from then on
    # running decodes get one token an iteration and a waiting prompt joins the same iteration
    # whenever the running set (cap 2) has room: r1 beside r0's first token, r2 when r0 is done,
    # r3 when r1 is.
    assert schedule("vllm", 4, 100, 3, max_batch=2, max_prefill_tokens=4096, chunked_prefill=False) == [
        (P, [(0, 100)], []),
        (M, [(1, 100)], [0]),
        (D, [], [0, 1]), (D, [], [0, 1]),
        (M, [(2, 100)], [1]),
        (M, [(3, 100)], [2]),
        (D, [], [2, 3]), (D, [], [2, 3]),
        (D, [], [3]),
    ]


def test_prefill_first_caps_only_the_decode_batch():
    # The old behaviour: r1-r3 are prefilled together as soon as r0's step ends, then wait for
    # decode slots (cap 2) while r0 and r1 decode.
    assert schedule("prefill-first", 4, 100, 3, max_batch=2) == [
        (P, [(0, 100)], []),
        (P, [(1, 100), (2, 100), (3, 100)], []),
        (D, [], [0, 1]), (D, [], [0, 1]), (D, [], [0, 1]),
        (D, [], [2, 3]), (D, [], [2, 3]), (D, [], [2, 3]),
    ]


def test_vllm_chunked_prefill_mixes_decodes_and_chunks_under_the_budget():
    # Budget 64 tokens an iteration: r0's 100-token prompt takes 64 then 36 (r1 starts in the
    # room left); from iteration 3 r0 decodes, one token each, beside r1's chunks.
    assert schedule("vllm", 2, 100, 2, max_batch=3, max_prefill_tokens=64) == [
        (P, [(0, 64)], []),
        (P, [(0, 36), (1, 28)], []),
        (M, [(1, 63)], [0]),
        (M, [(1, 9)], [0]),
        (D, [], [1]), (D, [], [1]),
    ]
    # A chunk size of 50 (--chunk-tokens) caps the budget at 50 tokens an iteration: r0's prompt
    # takes two iterations alone, r1 starts beside r0's decode token (49), then 50, then its last 1.
    assert schedule("vllm", 2, 100, 1, max_batch=3, max_prefill_tokens=64, chunk_tokens=50) == [
        (P, [(0, 50)], []),
        (P, [(0, 50)], []),
        (M, [(1, 49)], [0]),
        (P, [(1, 50)], []),
        (P, [(1, 1)], []),
        (D, [], [1]),
    ]


def test_sglang_runs_prefill_batches_first_one_chunked_request_at_a_time():
    # chunked_prefill_size 64: r0 is cut at 64; the next batch finishes it and cuts r1 at 28; r0's
    # decode then waits while r1's chunks run (prefill first, no mixed batches); both decode last.
    assert schedule("sglang", 2, 100, 2, chunk_tokens=64) == [
        (P, [(0, 64)], []),
        (P, [(0, 36), (1, 28)], []),
        (P, [(1, 64)], []),
        (P, [(1, 8)], []),
        (D, [], [0, 1]), (D, [], [0, 1]),
    ]
    # max_running_requests 1: r1 waits for r0 to finish.
    assert schedule("sglang", 2, 100, 2, max_batch=1, chunked_prefill=False) == [
        (P, [(0, 100)], []), (D, [], [0]), (D, [], [0]),
        (P, [(1, 100)], []), (D, [], [1]), (D, [], [1]),
    ]


def test_trtllm_in_flight_batching_whole_prompts_or_block_chunks():
    # max_num_tokens 250, max_batch_size 2: generation tokens first, then whole prompts; r2 waits
    # for a slot although its prompt would fit the budget.
    assert schedule("trtllm", 3, 100, 2, max_batch=2, max_prefill_tokens=250) == [
        (P, [(0, 100)], []),
        (M, [(1, 100)], [0]),
        (D, [], [0, 1]),
        (M, [(2, 100)], [1]),
        (D, [], [2]), (D, [], [2]),
    ]
    # Chunked context, unit 32, 80 tokens an iteration: chunks are multiples of 32 but a prompt's last.
    assert schedule("trtllm", 2, 100, 2, max_batch=2, max_prefill_tokens=80, chunked_prefill=True) == [
        (P, [(0, 64)], []),
        (P, [(0, 36), (1, 32)], []),
        (M, [(1, 68)], [0]),
        (D, [], [0, 1]),
        (D, [], [1]),
    ]


# ---- overload: the running-set cap bounds TPOT ------------------------------------------------------


def test_overload_tpot_hand_computed_for_a_small_case():
    """4 requests at once, 100-token prompts, 3 output tokens, cap 1, no chunked prefill. With
    P_k the prefill of k prompts and D = d_0 + d_1 + d_2 the three decode steps of one sequence at
    context 100, 101, 102 (both from the cost model):

    vLLM: r_k is prefilled once r_(k-1) is done, then decodes alone: TTFT(r_k) = (k+1) P_1 + k D
    and TPOT = D / 3 for every request, however many wait.
    Prefill-first: r0 is prefilled alone, r1-r3 together (P_3) as soon as r0's step ends; the
    decode batch of 1 then serves them in turn, so TPOT(r_k) = (k+1) D / 3 for k >= 1 (and
    (P_3 + D) / 3 for r0): it grows with the queue."""
    cost = StepCost(get_model(SMALL), get_chip("h200"), 1, PROFILES["calibrated"])
    D = sum(cost.decode(1, 100 + i)[0] for i in range(3))
    p1, p3 = cost.prefill(1, 100, 0)[0], cost.prefill(3, 100, 0)[0]
    wl = plan_workload(one_call(100, 3), H200)
    cap = simulate(wl, at_zero(4), SimConfig(engine=EngineConfig(policy="vllm", max_batch=1,
                                                                 chunked_prefill=False)))
    assert cap.tpot == pytest.approx([D / 3] * 4, rel=1e-9)
    assert cap.ttft == pytest.approx([(k + 1) * p1 + k * D for k in range(4)], rel=1e-9)
    old = simulate(wl, at_zero(4), SimConfig(engine=EngineConfig(policy="prefill-first", max_batch=1)))
    assert old.ttft == pytest.approx([p1] + [p1 + p3] * 3, rel=1e-9)
    assert old.tpot == pytest.approx([(p3 + D) / 3, 2 * D / 3, 3 * D / 3, 4 * D / 3], rel=1e-9)


@pytest.fixture(scope="module")
def vidur_overload():
    """The issue's workload: Llama-3-8B on one A100 80GB, 1,024-token prompts, 128-token answers,
    Poisson at 14 req/s (past capacity), 2,000 requests, batch cap 128, 4,096 tokens an iteration."""
    wl = plan_workload(one_call(1024, 128, "llama-3.1-8b"), {"n.g0": ("n", get_chip("a100-sxm-80gb"), "accelerator")})
    arr = generate("poisson", 14.0, 2000, seed=0)
    run = {}
    for policy in ("vllm", "sglang", "trtllm", "prefill-first"):
        eng = EngineConfig(policy=policy, max_batch=128, max_prefill_tokens=4096, chunked_prefill=False)
        run[policy] = simulate(wl, arr, SimConfig(engine=eng))
    return run


def test_overload_without_chunked_prefill_tpot_stays_bounded_by_the_cap(vidur_overload):
    """With the running set capped, each of the 128 running requests makes one token an iteration and
    about one finishes an iteration, so TPOT is about one iteration, 1 / throughput; prefill-first
    lets prompts in past the cap and their TPOT takes in the wait for a decode slot."""
    for policy in ("vllm", "sglang", "trtllm"):
        r = vidur_overload[policy]
        tpot = float(np.median(r.tpot))
        assert tpot <= 1.05 / r.throughput_req_s, policy
        assert r.engines[0]["max_decode_batch"] <= 128
    old = vidur_overload["prefill-first"]
    assert float(np.median(old.tpot)) > 2.5 / old.throughput_req_s
    assert float(np.median(old.tpot)) > 2.5 * float(np.median(vidur_overload["vllm"].tpot))


# ---- KV pressure -------------------------------------------------------------------------------------


def test_vllm_preempts_the_newest_request_and_recomputes_its_tokens():
    """Room for 230 tokens of KV cache, two requests at t = 0 (100-token prompts, 20 output tokens).
    r0 is prefilled alone (it arrives first); r1's prompt joins r0's first decode token (200
    tokens held); each decode iteration then adds 2 tokens. After 14 of them (229 tokens) the next
    does not fit: vLLM preempts r1, the last admitted, which had made 14 tokens, and r0 decodes
    its last 5 tokens alone. Only when r0 is done does r1's prompt and its 14 tokens fit again:
    114 tokens recomputed, then r1 makes its last 6 tokens."""
    m, chip = get_model(SMALL), get_chip("h200")
    frac = (m.weight_bytes + m.kv_cache_bytes(230)) / chip.capacity_bytes
    cfg = SimConfig(engine=EngineConfig(policy="vllm", mem_fraction=frac), record_schedule=True, fast_forward=False)
    res = simulate(plan_workload(one_call(100, 20), H200), at_zero(2), cfg)
    assert res.completed == 2 and list(res.out_tokens) == [20, 20]
    assert res.preemptions == 1 and res.recomputed_tokens == 114
    assert res.engines[0]["preemptions"] == 1 and res.engines[0]["recomputed_tokens"] == 114
    rows = [(r["kind"], [(p[0], p[1], p[2]) for p in r["prefills"]], r["decoding"]) for r in res.schedule]
    assert rows[:2] == [(P, [(0, 100, False)], []), (M, [(1, 100, False)], [0])]
    assert rows[2:16] == [(D, [], [0, 1])] * 14
    assert rows[16:21] == [(D, [], [0])] * 5  # r1 preempted; r0 makes its last 5 tokens alone
    assert rows[21] == (P, [(1, 114, True)], [])  # r1's prompt and 14 tokens, recomputed
    assert rows[22:] == [(D, [], [1])] * 6
    used = [r["kv_used_gb"] / (m.kv_cache_bytes(1) / 1e9) for r in res.schedule]
    assert max(used) <= 230 + 1e-6 and used[15] == pytest.approx(227)
    # The fast-forwarded runs give the same results.
    fast = simulate(plan_workload(one_call(100, 20), H200), at_zero(2),
                    SimConfig(engine=EngineConfig(policy="vllm", mem_fraction=frac)))
    assert np.allclose(fast.e2e, res.e2e, rtol=1e-12) and np.allclose(fast.tpot, res.tpot, rtol=1e-12)
    assert fast.preemptions == 1 and fast.recomputed_tokens == 114


def test_trtllm_guarantees_no_eviction_and_sglang_admits_by_estimate():
    m, chip = get_model(SMALL), get_chip("h200")
    frac = (m.weight_bytes + m.kv_cache_bytes(230)) / chip.capacity_bytes
    wl = plan_workload(one_call(100, 20), H200)
    trt = simulate(wl, at_zero(2), SimConfig(engine=EngineConfig(policy="trtllm", mem_fraction=frac),
                                             record_schedule=True))
    # A request reserves prompt and output (120 tokens): the second does not fit until the first ends.
    assert trt.preemptions == 0 and trt.schedule[0]["prefills"] == [(0, 100, False)]
    sg = simulate(wl, at_zero(2), SimConfig(engine=EngineConfig(policy="sglang", mem_fraction=frac),
                                            record_schedule=True))
    # A request is admitted against its prompt and all its output (100 + 20 tokens): after r0, 230 - 120 = 110 < 120.
    assert sg.preemptions == 0 and sg.schedule[0]["prefills"] == [(0, 100, False)]


def test_a_sequence_that_can_never_fit_is_an_error():
    m, chip = get_model(SMALL), get_chip("h200")
    frac = (m.weight_bytes + m.kv_cache_bytes(110)) / chip.capacity_bytes
    with pytest.raises(SimulationError, match="can never finish"):
        simulate(plan_workload(one_call(100, 20), H200), at_zero(1),
                 SimConfig(engine=EngineConfig(policy="vllm", mem_fraction=frac)))


def test_option_errors_name_the_knob():
    with pytest.raises(SimulationError, match="unknown batching policy 'tgi'"):
        EngineConfig(policy="tgi")
    with pytest.raises(SimulationError, match="max_batch 512 is above the token budget 256"):
        simulate(plan_workload(one_call(100, 2), H200), at_zero(1),
                 SimConfig(engine=EngineConfig(policy="vllm", max_batch=512, max_prefill_tokens=256)))
    with pytest.raises(SimulationError, match="a 300-token prompt .* does not fit the 256-token budget"):
        simulate(plan_workload(one_call(300, 2), H200), at_zero(1),
                 SimConfig(engine=EngineConfig(policy="vllm", max_batch=8, max_prefill_tokens=256,
                                               chunked_prefill=False)))


def test_defaults_come_from_the_stack_and_the_engine_version():
    assert [default_policy(s) for s in ("reference", "calibrated", "fused", "fused-engine")] == ["vllm"] * 4
    assert [default_policy(s) for s in ("vllm", "sglang", "trtllm")] == ["vllm", "sglang", "trtllm"]
    res = simulate(plan_workload(one_call(100, 2), H200), at_zero(1))
    assert res.policy == "vllm"
    # vLLM on a GPU of at least 70 GiB (not an A100): 1024 sequences, 8192 tokens, chunked prefill.
    assert res.engines[0]["batching"][SMALL] == {"max_batch": 1024, "max_prefill_tokens": 8192,
                                                 "chunked_prefill": True, "chunk_tokens": 0}
    a100 = plan_workload(one_call(100, 2), {"n.g0": ("n", get_chip("a100-sxm-80gb"), "accelerator")})
    assert simulate(a100, at_zero(1)).engines[0]["batching"][SMALL] == {
        "max_batch": 256, "max_prefill_tokens": 2048, "chunked_prefill": True, "chunk_tokens": 0}
    trt = simulate(a100, at_zero(1), SimConfig(engine=EngineConfig(policy="trtllm")))
    assert trt.engines[0]["batching"][SMALL] == {"max_batch": 2048, "max_prefill_tokens": 8192,
                                                 "chunked_prefill": False, "chunk_tokens": 0}
    # A chunk size caps vLLM's token budget (and its default running-set cap with it).
    small = simulate(a100, at_zero(1), SimConfig(engine=EngineConfig(chunk_tokens=512)))
    assert small.engines[0]["batching"][SMALL] == {"max_batch": 256, "max_prefill_tokens": 512,
                                                   "chunked_prefill": True, "chunk_tokens": 0}
    sg = simulate(a100, at_zero(1), SimConfig(engine=EngineConfig(policy="sglang")))
    assert sg.engines[0]["batching"][SMALL]["chunk_tokens"] == 8192
    assert 2048 <= sg.engines[0]["batching"][SMALL]["max_batch"] <= 4096


# ---- the property ----------------------------------------------------------------------------------


@st.composite
def runs(draw):
    policy = draw(st.sampled_from(["vllm", "sglang", "trtllm", "prefill-first"]))
    n = draw(st.integers(1, 8))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.001, 0.01, 0.05]), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outs = draw(st.lists(st.integers(1, 12), min_size=n, max_size=n))
    cap = draw(st.integers(1, 6))
    budget = draw(st.integers(max(cap, 300) if policy == "trtllm" else cap, 600))
    chunked = draw(st.booleans())
    chunk = draw(st.integers({"vllm": cap, "trtllm": max(cap, 32)}.get(policy, 1), budget))
    room = draw(st.integers(320, 3000))  # KV tokens: always room for the longest request alone
    return policy, np.cumsum(gaps), prompts, outs, cap, budget, chunked, chunk, room


@settings(max_examples=120, deadline=None)
@given(runs())
def test_no_policy_exceeds_its_cap_or_its_budget_in_any_iteration(case):
    policy, times, prompts, outs, cap, budget, chunked, chunk, room = case
    if policy in ("vllm", "trtllm") and not chunked:
        budget = max(budget, max(prompts))  # the engines require a whole prompt to fit without chunking
    m, chip = get_model(SMALL), get_chip("h200")
    frac = (m.weight_bytes + m.kv_cache_bytes(room)) / chip.capacity_bytes
    eng = EngineConfig(policy=policy, max_batch=cap, max_prefill_tokens=budget, chunked_prefill=chunked,
                       chunk_tokens=chunk, mem_fraction=frac)
    arr = Arrivals(np.asarray(times, dtype=float), "trace", 1.0, np.asarray(prompts) - 1, np.asarray(outs))
    wl = plan_workload(one_call(1, 1), H200)
    res = simulate(wl, arr, SimConfig(engine=eng, record_schedule=True, fast_forward=False))
    assert res.completed == len(times)
    assert list(res.out_tokens) == outs
    kv_room = m.kv_cache_bytes(room) / 1e9
    for r in res.schedule:
        seqs = r["decodes"] + len(r["prefills"])
        prompt_tokens = sum(p[1] for p in r["prefills"])
        assert r["kv_used_gb"] <= kv_room * (1 + 1e-9)
        if policy == "prefill-first":
            assert r["decodes"] <= cap
            if chunked:
                assert r["tokens"] <= max(chunk, r["decodes"])
            elif r["kind"] == "prefill" and len(r["prefills"]) > 1:
                assert prompt_tokens <= budget
            continue
        assert seqs <= cap and r["running"] <= cap
        if policy == "sglang":
            if r["prefills"]:
                assert r["decodes"] == 0
                assert len(r["prefills"]) == 1 or prompt_tokens <= budget
                if chunked:
                    assert prompt_tokens <= chunk
        else:
            assert r["tokens"] <= (min(budget, chunk) if chunked else budget)


@pytest.mark.parametrize("policy", ["vllm", "sglang", "trtllm"])
def test_fast_forward_changes_nothing_but_speed_for_each_policy(policy):
    """Two requests' worth of tight memory on a Poisson stream, so runs are cut by arrivals and
    by KV growth (preemptions), step by step against fast-forwarded."""
    m, chip = get_model(SMALL), get_chip("h200")
    frac = (m.weight_bytes + m.kv_cache_bytes(20_000)) / chip.capacity_bytes
    wl = plan_workload(one_call(1000, 300), H200)
    arr = generate("poisson", 30.0, 200, seed=3)
    eng = EngineConfig(policy=policy, mem_fraction=frac, max_batch=16, max_prefill_tokens=2048)
    slow = simulate(wl, arr, SimConfig(engine=eng, fast_forward=False))
    fast = simulate(wl, arr, SimConfig(engine=eng))
    assert np.allclose(fast.e2e, slow.e2e, rtol=1e-9) and np.allclose(fast.tpot, slow.tpot, rtol=1e-9)
    assert fast.preemptions == slow.preemptions and fast.recomputed_tokens == slow.recomputed_tokens
    assert fast.events == slow.events and fast.heap_events < slow.heap_events
