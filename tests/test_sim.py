"""Replay and traces: hand-built exec graphs with known timelines, and properties on random DAGs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gimletc.ir import ASYNC_TOKEN, Graph, IRError, Op, Type, Value, verify
from gimletc.analysis import Timeline, chrome_trace, replay, write_chrome_trace

LINK = "nvlink:g0-g1"


def tok(name: str) -> Value:
    return Value(f"{name}.t", ASYNC_TOKEN)


def compute(name: str, device: str, seconds: float, *deps: str, devices: tuple[str, ...] = ()) -> Op:
    attrs = {"of": f"model.{name}", "device": device, "seconds": seconds}
    if devices:
        attrs["devices"] = devices
    return Op("exec.compute", name, tuple(f"{d}.t" for d in deps), (tok(name),), attrs)


def send(name: str, seconds: float, *deps: str, channel: str = LINK) -> Op:
    attrs = {"src": "g0", "dst": "g1", "route": "direct", "bytes": 1e6, "seconds": seconds, "channel": channel}
    return Op("exec.send", name, tuple(f"{d}.t" for d in deps), (tok(name),), attrs)


def recv(name: str, *deps: str, channel: str = LINK) -> Op:
    attrs = {"src": "g0", "dst": "g1", "bytes": 1e6, "channel": channel}
    return Op("exec.recv", name, tuple(f"{d}.t" for d in deps), (Value(f"{name}.v", Type("kv", 1e6)), tok(name)), attrs)


def wait(name: str, *deps: str) -> Op:
    return Op("exec.await", name, tuple(f"{d}.t" for d in deps), (tok(name),))


def graph(*ops: Op) -> Graph:
    return verify(Graph(ops))


def spans(tl: Timeline) -> dict[str, tuple[float, float]]:
    return {e.op: (e.start, e.end) for e in tl.events if e.depth == 0}


def test_chain_adds_durations():
    g = graph(compute("a", "g0", 1.0), compute("b", "g1", 2.0, "a"), wait("w", "b"), compute("c", "g0", 0.5, "w"))
    tl = replay(g)
    assert spans(tl) == {"a": (0, 1), "b": (1, 3), "w": (3, 3), "c": (3, 3.5)}
    assert tl.makespan == 3.5
    assert tl.critical_path() == ["a", "b", "w", "c"]


def test_different_devices_overlap_and_one_device_serialises_in_graph_order():
    tl = replay(graph(compute("a", "g0", 2.0), compute("b", "g1", 3.0), compute("c", "g0", 1.0)))
    assert spans(tl) == {"a": (0, 2), "b": (0, 3), "c": (2, 3)}
    assert tl.makespan == 3.0
    # a later op that is ready earlier does not wait for an earlier one that is not ready
    tl = replay(graph(compute("x", "g1", 5.0), compute("y", "g0", 1.0, "x"), compute("z", "g0", 1.0)))
    assert spans(tl)["z"] == (0, 1) and spans(tl)["y"] == (5, 6)


def test_multi_device_op_occupies_all_its_devices():
    tl = replay(graph(compute("tp", "g0", 2.0, devices=("g0", "g1")), compute("b", "g1", 1.0)))
    assert spans(tl) == {"tp": (0, 2), "b": (2, 3)}
    assert tl.event("tp").resources == ("g0", "g1")
    assert tl.busy == {"g0": 2.0, "g1": 3.0}


def test_send_occupies_its_channel_and_recv_finishes_with_it():
    tl = replay(
        graph(
            compute("a", "g0", 1.0),
            compute("z", "g1", 0.0),
            send("s1", 2.0, "a"),
            send("s2", 2.0, "z"),  # the same channel, ready at 0
            recv("r1", "s1"),
            compute("b", "g1", 1.0, "r1"),
        )
    )
    sp = spans(tl)
    assert sp["s2"] == (0, 2) and sp["s1"] == (2, 4)  # s2 is ready first and takes the link
    assert sp["r1"] == (4, 4) and sp["b"] == (4, 5)
    assert tl.event("s1").resources == (LINK,) and tl.event("r1").resources == ()
    assert tl.channels == {LINK} and tl.devices == ("g0", "g1")
    assert tl.critical_path() == ["z", "s2", "s1", "r1", "b"]  # the link, not the data, held s1 back


def loop_graph(expected: float) -> Graph:
    body = Graph((compute("l1", "g0", 2.0, "pre"), compute("l2", "g1", 1.0, "l1"), Op("agent.yield", "ly", ("l2.t",))))
    loop = Op("agent.loop", "loop", (), (tok("loop"),), {"expected": expected, "max": 8}, (body,))
    return graph(compute("pre", "g0", 1.0), loop, compute("post", "g1", 1.0, "loop"))


def test_loop_scales_its_body_by_expected():
    tl = replay(loop_graph(2.5))
    sp = spans(tl)
    assert sp["loop"] == (1.0, 1.0 + 2.5 * 3.0) and sp["post"] == (8.5, 9.5)
    assert tl.makespan == 9.5
    assert tl.event("loop").resources == ("g0", "g1")
    body = {e.op: (e.start, e.end, e.depth) for e in tl.events if e.depth == 1}
    assert body == {"l1": (1.0, 3.0, 1), "l2": (3.0, 4.0, 1), "ly": (4.0, 4.0, 1)}
    assert tl.busy["g0"] == pytest.approx(1.0 + 2.5 * 2.0) and tl.busy["g1"] == pytest.approx(2.5 * 1.0 + 1.0)
    assert tl.critical_path() == ["pre", "loop", "post"]


def test_branch_takes_the_expectation_and_shows_the_likelier_arm():
    arms = (
        Graph((compute("cheap", "g0", 4.0, "a"), Op("agent.yield", "y1"))),
        Graph((compute("dear", "g1", 8.0, "a"), Op("agent.yield", "y2"))),
    )
    br = Op("agent.branch", "br", (), (), {"probabilities": (0.25, 0.75)}, arms)
    tl = replay(graph(compute("a", "g0", 1.0), br))
    assert spans(tl) == {"a": (0.0, 1.0), "br": (1.0, 1.0 + 0.25 * 4 + 0.75 * 8)}  # the arms capture %a.t
    assert tl.makespan == 8.0 and tl.event("br").resources == ("g0", "g1")
    assert tl.busy == {"g0": pytest.approx(1.0 + 1.0), "g1": pytest.approx(6.0)}
    assert [(e.op, e.start, e.end) for e in tl.events if e.depth == 1] == [("dear", 1.0, 9.0), ("y2", 1.0, 1.0)]
    with pytest.raises(IRError, match="2 probabilities for 1 regions"):
        replay(graph(compute("a", "g0", 1.0), Op("agent.branch", "b", (), (), {"probabilities": (0.5, 0.5)}, arms[:1])))


def test_branch_waits_for_its_shared_device():
    arms = (Graph((compute("c", "g0", 4.0), Op("agent.yield", "y1"))),)
    tl = replay(graph(compute("a", "g0", 1.0), Op("agent.branch", "br", (), (), {"probabilities": (0.5,)}, arms)))
    assert spans(tl) == {"a": (0.0, 1.0), "br": (1.0, 3.0)}
    assert tl.busy == {"g0": 3.0}


def test_busy_utilisation_and_mixed_levels():
    q = Value("q", Type("tokens", 100))
    kv = Value("kv", Type("kv", 1e9))
    out = Value("out", Type("tokens", 10))
    g = graph(
        Op("agent.input", "in", (), (q,), {"tokens": 100}),
        Op("model.prefill", "pf", ("q",), (kv,), {"model": "m", "tokens": 100, "device": "g0", "seconds": 0.2}),
        Op("model.decode", "dc", ("kv",), (out,), dict(model="m", tokens=10, ctx=100, device="g1", seconds=0.6)),
        Op("agent.output", "o", ("out",)),
    )
    tl = replay(g)
    assert tl.makespan == pytest.approx(0.8)
    assert tl.utilisation("g0") == pytest.approx(0.25) and tl.utilisation("g1") == pytest.approx(0.75)
    assert tl.utilisation("nowhere") == 0.0
    assert tl.critical_path() == ["in", "pf", "dc", "o"]
    assert replay(Graph()).makespan == 0.0 and replay(Graph()).critical_path() == []


def test_critical_path_follows_what_finished_last():
    a, b, c = compute("a", "g0", 1.0), compute("b", "g0", 2.0, "a"), compute("c", "g1", 5.0)
    g = graph(a, b, c, compute("d", "g0", 1.0, "b", "c"))
    tl = replay(g)
    assert tl.critical_path() == ["c", "d"]
    tl = replay(graph(compute("x", "g0", 3.0), compute("y", "g0", 1.0)))
    assert tl.critical_path() == ["x", "y"] and tl.predecessor["y"] == "x"


def test_chrome_trace_has_a_track_per_device_and_channel(tmp_path):
    tl = replay(loop_graph(2.0).replace_ops([*loop_graph(2.0).ops, send("s", 0.5, "post"), recv("r", "s")]))
    trace = chrome_trace(tl, name="req")
    assert trace["displayTimeUnit"] == "ms"
    evs = trace["traceEvents"]
    threads = {e["tid"]: e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert [threads[t] for t in sorted(threads)] == ["g0", "g1", LINK]
    assert any(e["name"] == "process_name" and e["args"]["name"] == "req" for e in evs)
    drawn = sorted((threads[e["tid"]], e["name"], e["ts"], e["dur"], e["cat"]) for e in evs if e["ph"] == "X")
    want = sorted(
        (r, e.op, pytest.approx(e.start * 1e6), pytest.approx((e.end - e.start) * 1e6), e.kind)
        for e in tl.events
        for r in e.resources
    )
    assert drawn == want
    computes = [e for e in evs if e.get("cat") == "exec.compute"]
    assert computes and all(e["args"] == {"of": f"model.{e['name']}", "kind": "exec.compute"} for e in computes)
    assert chrome_trace(tl, name="req") == trace  # deterministic
    path = tmp_path / "trace.json"
    write_chrome_trace(tl, path, name="req")
    assert json.loads(path.read_text()) == trace
    assert list(tmp_path.iterdir()) == [path]


# ---- properties on random exec DAGs ------------------------------------------------------------

DEVICES = ("g0", "g1", "g2")
CHANNELS = ("l01", "l12")


@st.composite
def exec_dags(draw) -> Graph:
    """Acyclic by construction: operands are drawn only from earlier ops' tokens."""
    ops: list[Op] = []
    for i in range(draw(st.integers(1, 30))):
        name = f"o{i}"
        earlier = [op.name for op in ops]
        deps = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
        secs = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 3.0]))
        kind = draw(st.sampled_from(["compute", "compute", "tp", "send", "recv", "await"]))
        if kind in ("send", "recv", "await") and not deps:
            kind = "compute"
        if kind == "compute":
            ops.append(compute(name, draw(st.sampled_from(DEVICES)), secs, *deps))
        elif kind == "tp":
            devs = tuple(draw(st.lists(st.sampled_from(DEVICES), min_size=2, max_size=3, unique=True)))
            ops.append(compute(name, devs[0], secs, *deps, devices=devs))
        elif kind == "send":
            ops.append(send(name, secs, *deps, channel=draw(st.sampled_from(CHANNELS))))
        elif kind == "recv":
            ops.append(recv(name, *deps, channel=draw(st.sampled_from(CHANNELS))))
        else:
            ops.append(wait(name, *deps))
    return verify(Graph(tuple(ops)))


def reference_replay(g: Graph) -> dict[str, float]:
    """Start times by a plain time-stepping scan: at each event time, retire what has ended, then
    start, in graph order, every ready op whose resources are free; repeat while zero-length ops end."""
    ops = list(g.ops)
    prod = {v.name: op.name for op in ops for v in op.results}
    res = {op.name: set(replay(Graph((op,))).event(op.name).resources) for op in ops}
    dur = {op.name: float(op.attr("seconds", 0.0)) for op in ops}
    start: dict[str, float] = {}
    running: set[str] = set()
    done: set[str] = set()
    t = 0.0
    while len(done) < len(ops):
        for n in [n for n in running if start[n] + dur[n] <= t]:
            running.remove(n)
            done.add(n)
        for op in ops:
            held = set().union(*(res[n] for n in running))
            if op.name not in start and all(prod[v] in done for v in op.operands) and held.isdisjoint(res[op.name]):
                start[op.name] = t
                running.add(op.name)
        if running and not any(start[n] + dur[n] <= t for n in running):
            t = min(start[n] + dur[n] for n in running)
    return start


@settings(max_examples=150, deadline=None)
@given(exec_dags())
def test_replay_properties_on_random_dags(g):
    tl = replay(g)
    eps = 1e-9
    ev = {e.op: e for e in tl.events}
    dur = {op.name: float(op.attr("seconds", 0.0)) for op in g.ops}
    prod = {v.name: op.name for op in g.ops for v in op.results}

    # every op starts after its operands' producers end, and lasts its seconds
    for op in g.ops:
        assert ev[op.name].end - ev[op.name].start == pytest.approx(dur[op.name])
        for v in op.operands:
            assert ev[op.name].start >= ev[prod[v]].end - eps
    # no resource runs two ops at once
    by_res: dict[str, list] = {}
    for e in tl.events:
        for r in e.resources:
            by_res.setdefault(r, []).append(e)
    for r, es in by_res.items():
        es.sort(key=lambda e: (e.start, e.end))
        for a, b in zip(es, es[1:]):
            assert b.start >= a.end - eps, r
        assert tl.busy[r] == pytest.approx(sum(e.end - e.start for e in es))
    # bounds: longest dependency chain and busiest resource <= makespan <= serial time
    chain: dict[str, float] = {}
    for op in g.ops:
        chain[op.name] = dur[op.name] + max((chain[prod[v]] for v in op.operands), default=0.0)
    assert tl.makespan >= max(chain.values()) - eps
    assert tl.makespan >= max(tl.busy.values(), default=0.0) - eps
    assert tl.makespan <= sum(dur.values()) + eps
    # the critical path is gap-free from 0 to the makespan
    path = tl.critical_path()
    assert ev[path[0]].start == 0.0 and ev[path[-1]].end == pytest.approx(tl.makespan)
    for a, b in zip(path, path[1:]):
        assert ev[b].start == pytest.approx(ev[a].end)
    # and the heap-driven replay agrees with a plain scan
    ref = reference_replay(g)
    assert {n: ev[n].start for n in ref} == pytest.approx(ref)
