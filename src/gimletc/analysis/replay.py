"""Deterministic event-driven replay of one request through a scheduled graph.

Each op takes its `seconds` attribute (0 without one) and occupies resources:
every device in its `devices` attribute, else its `device`; an `exec.send`
occupies its `channel` (a link) instead. An op is ready once the producers of
all its operands (data and tokens) have finished; ready ops start in graph
order as soon as all their resources are free, and a resource runs one op at a
time. `agent.loop` and `agent.branch` run their regions as nested graphs: a
loop lasts `expected` times its body's makespan, a branch the probability-
weighted sum of its arms', and either occupies every resource its regions use.

The same rules apply at every level, so agent or model ops carrying `device`
and `seconds` replay too.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from gimletc.ir import Graph, IRError, Op
from gimletc.ir.core import _uses_including_regions

__all__ = ["Event", "Timeline", "replay", "run_on_resources"]


@dataclass(frozen=True, slots=True)
class Event:
    """One op's run: `depth` 0 for the top-level graph, +1 per enclosing loop or branch."""

    op: str
    kind: str
    of: str | None
    resources: tuple[str, ...]
    start: float
    end: float
    depth: int = 0

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Timeline:
    """The replay of one request.

    `events` lists every top-level op in graph order, each loop or branch
    followed by the events of one iteration (or its most probable arm) at
    depth + 1, offset to its start. `busy` maps each resource used to its busy
    seconds, loop bodies scaled by `expected` and arms by their probability.
    `predecessor` maps each top-level op to the op (data producer or previous
    holder of one of its resources) whose end released it, or None."""

    events: tuple[Event, ...]
    makespan: float
    busy: Mapping[str, float]
    channels: frozenset[str] = frozenset()
    predecessor: Mapping[str, str | None] = field(default_factory=dict, repr=False, compare=False)

    @property
    def resources(self) -> tuple[str, ...]:
        """Every resource any op occupied, sorted."""
        return tuple(sorted(self.busy))

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(r for r in self.resources if r not in self.channels)

    def event(self, op: str) -> Event:
        """The event of top-level op `op`."""
        for e in self.events:
            if e.op == op and e.depth == 0:
                return e
        raise KeyError(op)

    def utilisation(self, resource: str) -> float:
        """Busy seconds of `resource` over the makespan (0 for an unused resource or an empty span)."""
        return self.busy.get(resource, 0.0) / self.makespan if self.makespan > 0 else 0.0

    def critical_path(self) -> list[str]:
        """Top-level op names on the chain that sets the makespan, first to last.

        Starts at the op that ends last (the latest in graph order on a tie) and
        follows each op's predecessor; with no idle gaps in a replay, the
        durations along it add up to the makespan."""
        top = [e for e in self.events if e.depth == 0]
        if not top:
            return []
        last = max(range(len(top)), key=lambda k: (top[k].end, k))
        path, cur = [], top[last].op
        while cur is not None:
            path.append(cur)
            cur = self.predecessor.get(cur)
        return path[::-1]


def replay(graph: Graph) -> Timeline:
    """Replay `graph` for one request from time 0.

    O((ops + edges) log ops) when each op needs one resource; an op needing
    several is re-queued at most once per op that takes one of them first.

    Raises IRError if a branch's probabilities do not match its regions or an
    op can never start (a use before definition in an unverified graph)."""
    sim = _simulate(graph, 0)
    busy = MappingProxyType({r: sim.busy.get(r, 0.0) for r in sorted(sim.used)})
    return Timeline(tuple(sim.events), sim.makespan, busy, frozenset(sim.channels), MappingProxyType(sim.pred))


@dataclass
class _Sim:
    events: list[Event]
    makespan: float
    busy: dict[str, float]
    used: set[str]
    channels: set[str]
    pred: dict[str, str | None]


def _own_resources(op: Op) -> tuple[str, ...]:
    if op.kind == "exec.send" and isinstance(op.attr("channel"), str):
        return (op.attr("channel"),)
    devices = op.attr("devices")
    if isinstance(devices, tuple) and devices:
        return tuple(dict.fromkeys(str(d) for d in devices))
    device = op.attr("device")
    return (device,) if isinstance(device, str) else ()


def _region_weights(op: Op) -> list[float]:
    """How many times each region runs on average."""
    if op.kind == "agent.loop":
        return [float(op.attr("expected", 1.0))]
    if op.kind == "agent.branch":
        probs = op.attr("probabilities", ())
        if len(probs) != len(op.regions):
            raise IRError(f"op @{op.name} (agent.branch): {len(probs)} probabilities for {len(op.regions)} regions")
        return [float(p) for p in probs]
    return [1.0] * len(op.regions)


def _simulate(graph: Graph, depth: int) -> _Sim:
    ops = graph.ops
    n = len(ops)
    rid: dict[str, int] = {}
    names: list[str] = []
    dur = [0.0] * n
    res: list[tuple[int, ...]] = [()] * n
    shown: dict[int, list[Event]] = {}  # region op -> events of one iteration/arm, relative to its start
    busy: dict[str, float] = {}
    used: set[str] = set()
    channels: set[str] = set()

    def ids(rs: list[str]) -> tuple[int, ...]:
        out = []
        for r in rs:
            if r not in rid:
                rid[r] = len(names)
                names.append(r)
            out.append(rid[r])
        return tuple(out)

    for i, op in enumerate(ops):
        own = _own_resources(op)
        if op.kind == "exec.send" and own:
            channels.add(own[0])
        if op.regions:
            subs = [_simulate(r, depth + 1) for r in op.regions]
            weights = _region_weights(op)
            dur[i] = sum(w * s.makespan for w, s in zip(weights, subs))
            inner: set[str] = set().union(*(s.used for s in subs))
            for w, s in zip(weights, subs):
                channels |= s.channels
                for r, b in s.busy.items():
                    busy[r] = busy.get(r, 0.0) + w * b
            for r in own:
                if r not in inner:
                    busy[r] = busy.get(r, 0.0) + dur[i]
            rs = [*own, *sorted(inner - set(own))]
            shown[i] = subs[max(range(len(subs)), key=lambda k: (weights[k], -k))].events
        else:
            dur[i] = float(op.attr("seconds", 0.0))
            rs = list(own)
            for r in rs:
                busy[r] = busy.get(r, 0.0) + dur[i]
        used.update(rs)
        res[i] = ids(rs)

    # Dependencies: producers of the values an op (or its regions) uses, within this graph.
    producer = {v.name: i for i, op in enumerate(ops) for v in op.results}
    preds: list[tuple[int, ...]] = []
    for i, op in enumerate(ops):
        uses = _uses_including_regions(op) if op.regions else op.operands
        preds.append(tuple(sorted({producer[v] for v in uses if v in producer and producer[v] != i})))
    start, end, bind = run_on_resources(dur, res, preds, len(names))
    finished = sum(1 for x in end if not math.isnan(x))

    if finished != n:
        stuck = [ops[i].name for i in range(n) if math.isnan(end[i])][:5]
        raise IRError(f"ops never became ready (a use before definition?): {', '.join('@' + s for s in stuck)}")

    events: list[Event] = []
    for i, op in enumerate(ops):
        of = op.attr("of")
        rs = tuple(names[r] for r in res[i])
        events.append(Event(op.name, op.kind, of if isinstance(of, str) else None, rs, start[i], end[i], depth))
        for e in shown.get(i, ()):
            events.append(Event(e.op, e.kind, e.of, e.resources, e.start + start[i], e.end + start[i], e.depth))
    pred = {op.name: (ops[bind[i]].name if bind[i] >= 0 else None) for i, op in enumerate(ops)}
    return _Sim(events, max(end, default=0.0), busy, used, channels, pred)


def run_on_resources(dur: Sequence[float], res: Sequence[tuple[int, ...]], preds: Sequence[tuple[int, ...]],
                     n_res: int) -> tuple[list[float], list[float], list[int]]:
    """The replay's scheduling rule, on plain arrays: task i runs `dur[i]` seconds holding every resource in
    `res[i]` (numbered below `n_res`), once every task in `preds[i]` has ended. A resource runs one task at
    a time; ready tasks start in index order as soon as all their resources are free, and a freed resource
    goes to the lowest-index task waiting for it. Returns (start, end, bind): bind[i] is the task (a
    predecessor or the previous holder of one of its resources) whose end let task i start, or -1; a task
    that never became ready has NaN times.

    The placement search prices its assignments with the same function (`gimletc.passes.placement.evaluate`),
    so a link direction carries one transfer at a time, in the same order, in both."""
    n = len(dur)
    users: list[list[int]] = [[] for _ in range(n)]
    for i, ps in enumerate(preds):
        for j in ps:
            users[j].append(i)
    pending = [len(p) for p in preds]
    holder = [-1] * n_res  # task running on the resource, or -1
    last_on = [-1] * n_res  # task that last ran on the resource
    waits: list[list[int]] = [[] for _ in range(n_res)]  # ready tasks parked on a busy resource
    start = [math.nan] * n
    end = [math.nan] * n
    bind = [-1] * n
    running: list[tuple[float, int, int]] = []  # (end, start order, task)
    order = 0
    # Candidates to start now, in index order; `src` is the freed resource whose queue fed it, or -1.
    cand: list[tuple[int, int]] = [(i, -1) for i in range(n) if pending[i] == 0]
    t = 0.0
    while True:
        while cand:
            i, src = heapq.heappop(cand)
            blocker = next((r for r in res[i] if holder[r] >= 0), -1)
            if blocker >= 0:
                heapq.heappush(waits[blocker], i)  # invariant: tasks wait only on busy resources
            else:
                start[i], end[i] = t, t + dur[i]
                best, best_end = -1, -math.inf
                for j in (*preds[i], *(last_on[r] for r in res[i])):
                    if j >= 0 and end[j] > best_end:
                        best, best_end = j, end[j]
                bind[i] = best
                for r in res[i]:
                    holder[r] = last_on[r] = i
                heapq.heappush(running, (end[i], order, i))
                order += 1
            if src >= 0 and holder[src] < 0 and waits[src]:
                heapq.heappush(cand, (heapq.heappop(waits[src]), src))
        if not running:
            break
        t = running[0][0]
        freed = []
        while running and running[0][0] == t:
            _, _, j = heapq.heappop(running)
            for r in res[j]:
                holder[r] = -1
                freed.append(r)
            for u in users[j]:
                pending[u] -= 1
                if pending[u] == 0:
                    heapq.heappush(cand, (u, -1))
        for r in freed:
            if waits[r]:
                heapq.heappush(cand, (heapq.heappop(waits[r]), r))
    return start, end, bind
