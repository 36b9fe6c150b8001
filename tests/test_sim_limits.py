"""The load simulator's limits (gimletc.sim.limits, issue 11): seeds, simulated time, tasks per request,
memory. The CLI's one-line messages for each are in tests/test_hostile.py; here the API, the numbers the
limits rest on (hand-counted tasks, measured memory), and that the limits change no result."""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _cli import run_cli

from gimletc import AgentGraph
from gimletc.compiler import compile as gcompile
from gimletc.sim import limits
from gimletc.sim.arrivals import ArrivalError, Arrivals, generate
from gimletc.sim.config import SimConfig, SimulationError
from gimletc.sim.load import simulate, workload_of_plan
from gimletc.sim.template import Shapes

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "examples" / "clusters" / "gpu_only.yaml"
RAG = ROOT / "examples" / "rag.py"


def _agent(expected: float = 3, most: int = 8) -> AgentGraph:
    """An input, a loop of (LLM call, tool) `expected` times on average, a branch of one LLM call or none."""
    g = AgentGraph("limits")
    q = g.input("q", tokens=100)
    g.tool_spec("check", cpu_s=0.05, output_tokens=20)
    with g.loop("fix", expected=expected, max=most, carry=[q]) as lp:
        e = g.llm("edit", model="llama-3.2-1b", prompt=[lp.args[0]], output_tokens=10)
        t = g.tool("run", tool="check", inputs=[e])
        lp.yield_(t)
    with g.branch("route", probabilities=[0.25, 0.75], inputs=[lp.results[0]]) as br:
        with br.arm():
            br.yield_(g.llm("polish", model="llama-3.2-1b", prompt=[lp.results[0]], output_tokens=5))
        with br.arm():
            br.yield_(lp.results[0])
    g.output("o", [br.results[0]])
    return g


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("limits")
    out = {}
    for name, graph in (("rag", RAG), ("agent", _agent())):
        out[name] = d / f"{name}.json"
        gcompile(graph, GPU, baseline=False).plan.write(out[name])
    return out


# ---- seeds and simulated time -----------------------------------------------------------------------


def test_seeds_are_non_negative_integers(plans):
    with pytest.raises(ArrivalError, match="seed must be an integer >= 0; got -1"):
        generate("poisson", 1.0, 10, seed=-1)
    wl = workload_of_plan(plans["rag"])
    with pytest.raises(SimulationError, match="seed must be an integer >= 0; got -3"):
        simulate(wl, generate("poisson", 1.0, 10), seed=-3)
    assert generate("poisson", 1.0, 10, seed=2**80).times.shape == (10,)  # any size of seed numpy takes


def test_arrivals_past_the_simulated_time_limit_are_refused(plans):
    with pytest.raises(ArrivalError, match=r"20 requests at 1e-300 req/s span 2e\+301 s"):
        generate("poisson", 1e-300, 20)
    arr = generate("constant", 1.0, 10)
    with pytest.raises(ArrivalError, match="span 1e\\+10 s"):
        arr.at_rate(1e-9)
    assert arr.at_rate(1e-8).times[-1] == pytest.approx(1e9)  # the limit itself is accepted
    wl = workload_of_plan(plans["rag"])
    made_by_hand = Arrivals(np.array([0.0, 1e300]), "trace", 1.0)
    with pytest.raises(SimulationError, match="2 arrivals span 1e\\+300 s"):
        simulate(wl, made_by_hand)


def test_a_run_that_ends_past_the_limit_is_refused(plans):
    """Arrivals within the limit, but 16 tool calls of 6e8 s on 8 CPU lanes: two waves end at 1.2e9 s."""
    data = json.loads(plans["rag"].read_text())
    data["ir"] = data["ir"].replace("seconds = 0.15 : f64", "seconds = 6.0e8 : f64", 1)
    path = plans["rag"].with_name("slow.json")
    path.write_text(json.dumps(data))
    wl = workload_of_plan(path)
    with pytest.raises(SimulationError, match=r"the run ended at 1\.2e\+09 s"):
        simulate(wl, generate("constant", 100.0, 16))


def test_goodput_stays_within_the_time_limit(capsys, plans):
    """An SLO no rate meets: the bisection halves the rate, but not below where 100 arrivals span 1e9 s."""
    code, out, err = run_cli(capsys, "simulate", str(plans["rag"]), "--rate", "1e-6", "-n", "100",
                             "--slo-ttft-ms", "1e-6", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["goodput_req_s"] == 0.0
    assert min(p["rate_req_s"] for p in d["goodput"]["points"]) * 1e9 >= 100


# ---- tasks per request --------------------------------------------------------------------------------


def test_task_load_by_hand(plans):
    """Count the tasks of the agent's exec graph by hand from its ops and compare with task_load."""
    from gimletc.ir import parse_graph
    from gimletc.plan import load_plan

    graph = parse_graph(load_plan(plans["agent"]).ir)
    top = [op for op in graph.ops if op.kind != "agent.yield"]
    loop = next(op for op in top if op.kind == "agent.loop")
    branch = next(op for op in top if op.kind == "agent.branch")
    body = sum(1 for op in loop.regions[0].ops if op.kind != "agent.yield")
    arms = [sum(1 for op in r.ops if op.kind != "agent.yield") for r in branch.regions]
    assert not any(op.regions for op in loop.regions[0].ops) and body > 2
    plain = len(top) - 2
    # A loop is a start and, per iteration, its body and a join; a branch a start, an end and its arm.
    mean = plain + (1 + 3 * (body + 1)) + (2 + 0.25 * arms[0] + 0.75 * arms[1])
    high = plain + (1 + 8 * (body + 1)) + (2 + max(arms))  # expected 3 x 20 > max 8: the loop's high is max
    load = limits.task_load(graph)
    assert load.mean == pytest.approx(mean) and load.high == high
    (lp,) = load.loops
    assert (lp.name, lp.iterations, lp.high, lp.body_tasks) == ("fix", 3.0, 8, body + 1)
    mean_mode = limits.task_load(graph, "mean")
    assert mean_mode.mean == pytest.approx(mean) and mean_mode.high == plain + 1 + 3 * (body + 1) + 2 + max(arms)


def test_a_loop_too_long_to_unroll_is_refused_before_the_run_and_in_a_draw(tmp_path):
    """Before the run: a loop whose 20 x mean unrolls past the bound. In a draw: the same bound, met by
    `--loops mean` (its draw is its mean) through the sampler itself."""
    path = tmp_path / "long.json"
    gcompile(_agent(expected=400_000, most=10**7), GPU, baseline=False).plan.write(path)
    wl = workload_of_plan(path)
    with pytest.raises(SimulationError, match=r"loop @fix draws up to 8,000,000 iterations \(mean 4e\+05"):
        simulate(wl, generate("poisson", 1.0, 3))
    shapes = Shapes(wl.graph, "mean")
    with pytest.raises(SimulationError, match=r"loop @fix drew 400,000 iterations \(mean, mean 400000"):
        shapes.sample(wl.graph, np.random.default_rng(0))


def test_bounding_the_template_cache_changes_no_result(plans, monkeypatch):
    """Clearing the cache of request templates (bounded at TEMPLATE_CACHE_TASKS tasks) rebuilds the same ones."""
    import gimletc.sim.loop as loop_mod
    from gimletc.sim.template import Builder

    builds = []
    real = Builder.build
    monkeypatch.setattr(Builder, "build", lambda self, shape: (builds.append(shape), real(self, shape))[1])
    wl = workload_of_plan(plans["agent"])
    arr = generate("poisson", 2.0, 300, seed=7)
    full = simulate(wl, arr, seed=7)
    n_full = len(builds)
    monkeypatch.setattr(loop_mod, "TEMPLATE_CACHE_TASKS", 200)
    small = simulate(wl, arr, seed=7)
    assert len(builds) - n_full > n_full  # shapes seen again were rebuilt
    assert np.array_equal(full.e2e, small.e2e) and np.array_equal(full.ttft, small.ttft, equal_nan=True)
    assert full.energy_j == small.energy_j and full.events == small.events


# ---- memory -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n", [("rag", 1000), ("agent", 200)])
def test_the_memory_estimate_bounds_what_a_run_takes(plans, name, n):
    """Every request in flight at once (10^7 req/s): the peak traced memory of the run is within the
    estimate with all `n` in flight, and the estimate is not more than 4 times the peak."""
    wl = workload_of_plan(plans[name])
    simulate(wl, generate("poisson", 1.0, 5))  # cost-model caches warm, as in a long run
    gc.collect()
    tracemalloc.start()
    try:
        res = simulate(wl, generate("poisson", 1e7, n))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.completed == n
    est = limits.estimate(wl, n, SimConfig())
    assert peak <= est.total(n) <= 4 * peak, (peak, est)


def test_the_limit_comes_from_the_config_or_the_machine(plans):
    wl = workload_of_plan(plans["rag"])
    avail, source = limits.available_memory()
    assert avail > 0 and "%" in source
    est = limits.estimate(wl, 1000, SimConfig(memory_limit=5e6))
    assert est.limit == 5e6 and est.limit_source == "--memory-limit"
    assert est.arrays == 1000 * (limits.ARRAY_BYTES + limits.CALL_ARRAY_BYTES)  # rag: one LLM call
    est.check()
    with pytest.raises(SimulationError, match="simulating 100,000 requests needs about 16.0 MB"):
        limits.estimate(wl, 100_000, SimConfig(memory_limit=5e6)).check()
    with pytest.raises(SimulationError, match="memory_limit must be a positive number of bytes"):
        SimConfig(memory_limit=float("nan"))
    assert est.most_in_flight() == int((5e6 - est.fixed - est.arrays) // est.per_in_flight)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/meminfo")
def test_available_memory_is_a_share_of_memavailable():
    avail = limits._meminfo_available()
    got, _ = limits.available_memory()
    assert avail is not None and got <= limits.MEMORY_SHARE * avail * 1.05  # MemAvailable moves meanwhile
