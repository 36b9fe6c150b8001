"""Host.lanes: a hardware fact in the cluster, read by placement, plan metrics and the load simulator."""

from __future__ import annotations

import pytest

from gimletc import AgentGraph
from gimletc.compiler import compile, inputs_digest
from gimletc.hardware import Cluster
from gimletc.hardware.resources import DEFAULT_HOST_LANES, device_of, host_lane_ids, is_lane
from gimletc.sim.arrivals import generate
from gimletc.sim.load import SimConfig, simulate_plan


def node(lanes: int | None = None) -> dict:
    host = {"cpu": "xeon-6980p", "memory_bytes": 1e12, "sockets": 2}
    if lanes is not None:
        host["lanes"] = lanes
    return {"name": "n0", "chips": {"h100-sxm": 1}, "host": host,
            "host_link": {"kind": "pcie", "bandwidth": 64e9, "latency": 2e-6}}


def cluster(lanes: int | None = None) -> Cluster:
    return Cluster.model_validate({"name": "lanes", "nodes": [node(lanes)], "links": []})


def four_tools():
    """Four independent 1-CPU-second tools fed by the input, joined by the output."""
    g = AgentGraph("tools")
    q = g.input("q", tokens=10)
    outs = [g.tool(f"t{i}", inputs=[q], cpu_s=1.0, output_tokens=10) for i in range(4)]
    g.output("o", outs)
    return g.build()


def test_default_lanes_are_eight_and_leave_cluster_bytes_unchanged():
    assert DEFAULT_HOST_LANES == 8
    assert cluster().nodes[0].host.lanes == 8
    assert "lanes" not in cluster().model_dump(mode="json")["nodes"][0]["host"]
    assert cluster(4).model_dump(mode="json")["nodes"][0]["host"]["lanes"] == 4
    # a host written with the default says the same as one that does not name it
    assert inputs_digest(four_tools(), cluster(8), {}) == inputs_digest(four_tools(), cluster(), {})
    assert inputs_digest(four_tools(), cluster(4), {}) != inputs_digest(four_tools(), cluster(), {})


def test_lane_names_are_built_and_parsed_in_one_place():
    lanes = host_lane_ids("n0.host", 3)
    assert lanes == ("n0.host#0", "n0.host#1", "n0.host#2")
    assert all(is_lane(r) and device_of(r) == "n0.host" for r in lanes)
    assert not is_lane("n0.host") and device_of("n0.h100-sxm.0") == "n0.h100-sxm.0"


@pytest.mark.parametrize("lanes, latency_s", [(8, 1.0), (4, 1.0), (2, 2.0), (1, 4.0)])
def test_placement_and_plan_metrics_use_the_hosts_lanes(lanes, latency_s):
    plan = compile(four_tools(), cluster(lanes), baseline=False).plan
    m = plan.metrics
    # four 1-second tools on `lanes` lanes: ceil(4 / lanes) rounds of one second
    assert m.latency_ms == pytest.approx(latency_s * 1e3)
    # 4 lane-seconds keep the host busy 4 / lanes seconds
    host_busy = 4.0 / lanes
    assert m.utilisation["n0.host"] == pytest.approx(host_busy / latency_s)
    assert m.throughput_rps == pytest.approx(1.0 / host_busy)
    # xeon-6980p: 500 W TDP, 110 W idle, two sockets; only the host is used
    assert m.energy_j == pytest.approx(2 * (500 * host_busy + 110 * (latency_s - host_busy)))
    used = {r for r in plan.programs if r.startswith("n0.host")}
    assert used <= set(host_lane_ids("n0.host", lanes)) and len(used) >= min(lanes, 4)


@pytest.mark.parametrize("lanes", [1, 4])
def test_the_load_simulator_runs_each_host_on_its_lanes(lanes):
    plan = compile(four_tools(), cluster(lanes), baseline=False).plan
    arr = generate("constant", 0.01, 3)  # one request every 100 s: none overlaps another
    res = simulate_plan(plan, arr, SimConfig(), cluster=cluster(lanes))
    assert res.e2e.tolist() == pytest.approx([4.0 / min(lanes, 4)] * 3)
    # the CLI's --host-lanes still overrides every host
    res1 = simulate_plan(plan, arr, SimConfig(host_lanes=1), cluster=cluster(lanes))
    assert res1.e2e.tolist() == pytest.approx([4.0] * 3)


def test_a_plan_carries_its_hosts_so_simulate_prices_them_as_the_compiler_did():
    """The compiler counts a 2-socket host twice; `simulate` on the plan alone (no cluster) must too."""
    arr = generate("constant", 0.01, 3)
    plan = compile(four_tools(), cluster(2), baseline=False).plan
    assert {h: (s.sockets, s.lanes) for h, s in plan.cluster.hosts.items()} == {"n0.host": (2, 2)}
    alone = simulate_plan(plan, arr, SimConfig())
    given = simulate_plan(plan, arr, SimConfig(), cluster=cluster(2))
    assert alone.energy_j == given.energy_j and alone.e2e.tolist() == given.e2e.tolist() == pytest.approx([2.0] * 3)
    # By hand: requests at 100, 200, 300 s, 2 s each: span 302 s; the host's 3 x 4 lane-seconds on 2 lanes
    # keep it busy 6 s; 2 sockets of xeon-6980p (500 W busy, 110 W idle): 2 x (500 x 6 + 110 x 296) = 71,120 J.
    assert alone.span == pytest.approx(302.0) and alone.energy_j == pytest.approx(71120.0)
    # a plan without the record (written before it) falls back to one socket and the default lanes
    plan = compile(four_tools(), cluster(), baseline=False).plan
    bare = plan.model_copy(update={"cluster": plan.cluster.model_copy(update={"hosts": {}})})
    two, one = simulate_plan(plan, arr, SimConfig()), simulate_plan(bare, arr, SimConfig())
    assert one.energy_j == pytest.approx(two.energy_j / 2)  # only the host draws power here
