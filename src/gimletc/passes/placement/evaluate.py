"""Pricing one full assignment (a slot per unit) by list scheduling.

`Evaluator.evaluate` list-schedules the units in graph order: a unit starts
when its inputs have arrived (producer finish + transfer over the cluster
route) and its devices (or, for a CPU op, the host lane that frees first) are
free. A value moves once per device that reads it, and a link direction
carries one transfer at a time, each in the earliest stretch of its channel
that holds it from when its value is ready (`Link`); where that passes over a
shorter idle stretch, the assignment is re-timed by the replay's own rule
(`gimletc.analysis.replay.run_on_resources`), so the times are the replay's
with copies asynchronous, as `overlap` makes them.
A unit whose result a loop carries back to an earlier unit finishes once
those back-edge transfers are done too. That gives the request's latency,
every device's busy time, energy (TDP while busy, idle power otherwise, over
the latency, for every device used), cost (price x busy time) and the
bottleneck busy time (1 / throughput), and whether the assignment fits memory
and the power envelope."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from gimletc.analysis.replay import run_on_resources
from gimletc.cost import accounting
from gimletc.passes.placement.problem import Problem


@dataclass(frozen=True)
class Evaluation:
    feasible: bool
    why: str
    latency: float
    energy: float
    cost: float
    bottleneck: float  # busiest device's busy seconds per request
    power_w: float
    busy: dict[str, float]
    start: tuple[float, ...]
    finish: tuple[float, ...]
    lanes: tuple[tuple[str, ...], ...]  # resources each unit occupied

    def objective(self, kind: str) -> float:
        return {"latency": self.latency, "energy": self.energy, "cost": self.cost, "throughput": self.bottleneck}[kind]

    def key(self, kind: str) -> tuple[float, ...]:
        """Objective first, then the others as tie-breakers (deterministic choice)."""
        return (self.objective(kind), self.latency, self.energy, self.cost)



class Link:
    """One link direction's transfers: disjoint busy stretches, sorted. The list schedule books each transfer
    in the earliest free stretch from its value's readiness that holds it, so a transfer placed later in
    graph order but ready earlier goes first where it fits, as in the replay."""

    __slots__ = ("ends", "starts")

    def __init__(self, starts: list[float] | None = None, ends: list[float] | None = None):
        self.starts: list[float] = starts if starts is not None else []
        self.ends: list[float] = ends if ends is not None else []

    def copy(self) -> Link:
        return Link(list(self.starts), list(self.ends))

    def fit(self, ready: float, seconds: float) -> tuple[float, bool]:
        """The earliest start at or after `ready` from which the channel is free for `seconds`, and whether a
        shorter idle stretch was passed over on the way (the replay would have started the transfer there,
        delaying the transfers booked after it)."""
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, ready)
        t = ready
        skipped = False
        while i < len(starts) and starts[i] < t + seconds:
            if starts[i] > t:
                skipped = True
            if ends[i] > t:
                t = ends[i]
            i += 1
        return t, skipped

    def book(self, start: float, end: float) -> None:
        starts = self.starts
        if not starts or start >= starts[-1]:  # the common case: after everything booked so far
            starts.append(start)
            self.ends.append(end)
            return
        i = bisect_right(starts, start)
        starts.insert(i, start)
        self.ends.insert(i, end)


Move = tuple[float, int, float, str, tuple[int, str], int]  # ready, order, seconds, channel, (value, device), unit


class PartialSchedule:
    """A partial schedule: units placed so far, in graph order (see `Evaluator`).

    With `record`, committing a unit also records it as tasks for `run_on_resources`, the replay's own
    scheduling rule: the unit on its devices (after the previous unit on each, as `schedule` chains them),
    each transfer on its channel. Where the list schedule passed over idle time on a channel (`inexact`),
    `Evaluator.summarise` schedules the assignment again with `record` and `retime`s it through that rule,
    so an evaluation's times are the replay's."""

    def __init__(self, p: Problem, record: bool = False):
        self.p = p
        self.record = record
        n = len(p.units)
        self.start, self.finish = [0.0] * n, [0.0] * n
        self.assign: list[int] = []
        self.free: dict[str, float] = {}
        self.busy: dict[str, float] = {}
        self.lanes: list[tuple[str, ...]] = []
        self.resident: dict[str, set[str]] = {}
        self.mem: dict[str, float] = {}
        self.used: set[str] = set()
        self.latency = 0.0
        self.power = 0.0  # TDP of the devices used so far
        self.bottleneck = 0.0  # busiest device's busy seconds so far
        self.links: dict[str, Link] = {}  # channel -> its transfers so far
        self.arrived: dict[tuple[int, str], float] = {}  # (value id, device) -> when the value got there
        self.inexact = False  # a transfer passed over idle time on its channel: `retime` before trusting times
        self.shared: tuple[int, int, str] | None = None  # two stages of a layer pipeline on one device
        # The committed units as tasks: seconds, resources, predecessor tasks.
        self.task_seconds: list[float] = []
        self.task_resources: list[tuple[str, ...]] = []
        self.task_preds: list[tuple[int, ...]] = []
        self.unit_task: list[int] = []  # the task running each unit
        self.done: list[tuple[int, ...]] = []  # the tasks whose ends make each unit's result available
        self._moved: dict[tuple[int, str], int] = {}  # (value id, device) -> the task moving it there
        self._last: dict[str, int] = {}  # resource -> the last task on it

    def trial(self, u: int, s: int) -> tuple[float, float, tuple[str, ...]]:
        """(start, duration, resources) unit u would get on slot s after the units placed so far."""
        return self.place(u, s)[:3]

    def place(self, u: int, s: int, commit: bool = False) -> tuple[float, float, tuple[str, ...], float]:
        """(start, duration, resources, finish) of unit u on slot s; with `commit`, its transfers are booked and
        its tasks recorded."""
        p = self.p
        unit, slot = p.units[u], p.slots[s]
        dur = p.sec(u, s)
        ready = 0.0
        moves: list[Move] = []
        rec = commit and self.record
        deps: list[int] = []
        dst = slot.devices[0]
        finish, assign, arrived, units = self.finish, self.assign, self.arrived, p.units
        i = -1
        for pu, nbytes, vid in unit.preds:
            i += 1
            t = finish[pu]
            if nbytes > 0:
                a = assign[pu]
                secs = p.transfer(a, s, nbytes)
                if secs > 0:
                    key = (vid, dst)
                    got = arrived.get(key)
                    if got is None:
                        scale = units[pu].scale
                        if unit.scale < scale:
                            scale = unit.scale
                        moves.append((t, i, secs * scale, p.channel(a, s), key, pu))
                        continue
                    t = got
                    if rec:
                        deps.append(self._moved[key])
                elif rec:
                    deps.extend(self.done[pu])
            elif rec:
                deps.extend(self.done[pu])
            if t > ready:
                ready = t
        if len(moves) == 1 and not rec:  # the common case, inline: one transfer, nothing to record
            t_ready, _, secs, ch, key, _ = moves[0]
            link = self.links.get(ch)
            if link is None:
                t = t_ready + secs
                if commit:
                    link = self.links[ch] = Link()
                    link.starts.append(t_ready)
                    link.ends.append(t)
                    self.arrived[key] = t
            else:
                t, skipped = link.fit(t_ready, secs)
                t += secs
                if commit:
                    link.book(t - secs, t)
                    self.arrived[key] = t
                    if skipped:
                        self.inexact = True
            if t > ready:
                ready = t
        elif moves:
            ready = max(ready, self._move(moves, commit))
        free = self.free
        if slot.is_host:
            all_lanes = p.host_lanes[dst]
            if unit.kind == "model":
                res = all_lanes
            else:  # the lane that frees first (lowest index on ties)
                best, best_t = all_lanes[0], free.get(all_lanes[0], 0.0)
                for r in all_lanes[1:]:
                    t = free.get(r, 0.0)
                    if t < best_t:
                        best, best_t = r, t
                res = (best,)
        else:
            res = slot.devices
        t0 = ready
        for r in res:
            t = free.get(r, 0.0)
            if t > t0:
                t0 = t
        end = t0 + dur
        back: list[Move] = []
        if unit.back:  # loop back edges: the result goes back to the next iteration's reader
            for i, (c, nbytes, count) in enumerate(unit.back):
                secs = count * p.transfer(s, self.assign[c], nbytes)
                if secs > 0:
                    back.append((end, i, secs, p.channel(s, self.assign[c]), (-1, ""), u))
            if back:
                end = max(end, self._move(back, commit))
        if rec:
            self._record(u, dur, res, deps, moves, back)
        return t0, dur, res, end

    def _move(self, moves: list[Move], commit: bool) -> float:
        """Book transfers in order of readiness, each on its channel's earliest free stretch that holds it
        (`Link`); returns when the last arrives. Without `commit` the booking is tried on copies."""
        links = self.links
        if len(moves) == 1:  # the common case, without copies
            ready, _, secs, ch, key, _ = moves[0]
            link = links.get(ch)
            if link is None:
                if not commit:
                    return ready + secs
                link = links[ch] = Link()
            start, skipped = link.fit(ready, secs)
            end = start + secs
            if commit:
                link.book(start, end)
                if skipped:
                    self.inexact = True
                if key[0] >= 0:
                    self.arrived[key] = end
            return end
        last = 0.0
        local: dict[str, Link] = {}
        seen: dict[tuple[int, str], float] = {}
        for ready, _, secs, ch, key, _ in sorted(moves):
            if key in seen:
                end = seen[key]
            else:
                link = local.get(ch) or links.get(ch)
                if link is None:
                    link = Link()
                    (links if commit else local)[ch] = link
                elif not commit and ch not in local:
                    link = local[ch] = link.copy()
                start, skipped = link.fit(ready, secs)
                end = start + secs
                link.book(start, end)
                if commit and skipped:
                    self.inexact = True
                if key[0] >= 0:
                    seen[key] = end
                    if commit:
                        self.arrived[key] = end
            if end > last:
                last = end
        return last

    def _record(self, u: int, dur: float, res: tuple[str, ...], deps: list[int], moves: list[Move],
                back: list[Move]) -> None:
        """Unit u as tasks: its new transfers (in graph order, as insert-transfers emits the sends), the unit
        after them and after the previous task on each of its resources, then its back-edge transfers."""
        for _, _, secs, ch, key, pu in moves:
            tid = self._moved.get(key)
            if tid is None:
                tid = self._moved[key] = self._task(secs, (ch,), self.done[pu])
            deps.append(tid)
        chain = [self._last[r] for r in res if r in self._last]
        ut = self._task(dur, res, (*deps, *chain))
        for r in res:
            self._last[r] = ut
        self.unit_task.append(ut)
        self.done.append((ut, *(self._task(secs, (ch,), (ut,)) for _, _, secs, ch, _, _ in back)))

    def _task(self, seconds: float, resources: tuple[str, ...], preds: Sequence[int]) -> int:
        self.task_seconds.append(seconds)
        self.task_resources.append(resources)
        self.task_preds.append(tuple(sorted(set(preds))))
        return len(self.task_seconds) - 1

    def retime(self) -> None:
        """Start and finish of every committed unit by the replay's rule (`run_on_resources`) over the
        recorded tasks, and the latency they give."""
        ids: dict[str, int] = {}
        res = [tuple(ids.setdefault(r, len(ids)) for r in rs) for rs in self.task_resources]
        start, end, _ = run_on_resources(self.task_seconds, res, self.task_preds, len(ids))
        latency = 0.0
        for u, ut in enumerate(self.unit_task):
            self.start[u] = start[ut]
            self.finish[u] = max(end[t] for t in self.done[u])
            latency = max(latency, self.finish[u])
        self.latency = latency
        self.inexact = False

    def shares(self, u: int, s: int) -> tuple[int, str] | None:
        """An earlier stage of unit u's layer pipeline, and the device, that slot s would share, or None."""
        p = self.p
        for w in p.units[u].apart:
            devs = p.slots[self.assign[w]].devices
            for d in p.slots[s].devices:
                if d in devs:
                    return w, d
        return None

    def mem_after(self, u: int, s: int) -> dict[str, float]:
        """Memory each of slot s's devices would hold with unit u added."""
        p = self.p
        unit, slot = p.units[u], p.slots[s]
        out: dict[str, float] = {}
        if unit.kind != "model":
            return out
        for d in slot.devices:
            have = self.resident.get(d, set())
            new = [m for m in unit.models if m not in have]
            share = (unit.weight_bytes * (len(new) / max(1, len(unit.models))) + unit.kv_bytes) / slot.n
            out[d] = self.mem.get(d, 0.0) + share
        return out

    def commit(self, u: int, s: int) -> None:
        p = self.p
        unit, slot = p.units[u], p.slots[s]
        t0, dur, res, end = self.place(u, s, commit=True)
        if unit.apart and self.shared is None:
            hit = self.shares(u, s)
            if hit is not None:
                self.shared = (hit[0], u, hit[1])
        for d, m in self.mem_after(u, s).items():
            self.mem[d] = m
            self.resident.setdefault(d, set()).update(unit.models)
        for r in res:
            self.free[r] = t0 + dur
        if slot.is_host:
            host = slot.devices[0]
            self.busy[host] = self.busy.get(host, 0.0) + accounting.host_busy_s(dur * len(res), p.lanes[host])
        else:
            for d in res:
                self.busy[d] = self.busy.get(d, 0.0) + dur
        self.start[u], self.finish[u] = t0, end
        self.latency = max(self.latency, end)
        self.assign.append(s)
        self.lanes.append(res)
        for d in slot.devices:
            if d not in self.used:
                self.used.add(d)
                self.power += p.device_power[d]
            self.bottleneck = max(self.bottleneck, self.busy.get(d, 0.0))


class Evaluator:
    """Prices a full assignment (one slot per unit) by list scheduling; see the module docstring."""

    def __init__(self, problem: Problem, power_budget_w: float | None):
        self.p = problem
        self.budget = power_budget_w
        self.chips = {d.id: d.chip for d in problem.cluster.devices()}

    def _retimed(self, assign: Sequence[int]) -> PartialSchedule:
        st = PartialSchedule(self.p, record=True)
        for u, s in enumerate(assign):
            st.commit(u, s)
        st.retime()
        return st

    def evaluate(self, assign: Sequence[int]) -> Evaluation:
        st = PartialSchedule(self.p)
        for u, s in enumerate(assign):
            st.commit(u, s)
        return self.summarise(st)

    def summarise(self, st: PartialSchedule) -> Evaluation:
        """The evaluation of the units committed so far (retimed by the replay's rule where needed)."""
        p = self.p
        if st.inexact:
            st = self._retimed(st.assign)
        latency = st.latency
        why = ""
        for d, m in st.mem.items():
            if m > p.capacity[d] * (1 + 1e-9):
                why = f"device {d} would hold {m / 1e9:.1f} GB; it has {p.capacity[d] / 1e9:.1f} GB"
                break
        if not why and st.shared is not None:
            w, u, d = st.shared
            why = f"stages {p.units[w].name} and {p.units[u].name} of a layer pipeline would share device {d}"
        power = sum(p.device_power[d] for d in st.used)
        if not why and self.budget is not None and power > self.budget * (1 + 1e-9):
            why = f"devices used draw {power:.0f} W; the power budget is {self.budget:.0f} W"
        energy = cost = 0.0
        for d in sorted(st.used):
            c, units = self.chips[d], p.device_units[d]
            energy += accounting.energy_j(c, st.busy.get(d, 0.0), latency, units)
            cost += accounting.cost_usd(c, st.busy.get(d, 0.0), units)
        bottleneck = max(st.busy.values(), default=0.0)
        n = len(st.assign)
        return Evaluation(
            not why, why, latency, energy, cost, bottleneck, power, dict(st.busy),
            tuple(st.start[:n]), tuple(st.finish[:n]), tuple(st.lanes),
        )


