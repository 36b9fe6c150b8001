"""Pricing one full assignment (a slot per unit) by list scheduling.

`Evaluator.evaluate` list-schedules the units in graph order: a unit starts
when its inputs have arrived (producer finish + transfer over the cluster
route) and its devices (or, for a CPU op, the host lane that frees first) are
free. A unit whose result a loop carries back to an earlier unit finishes
once those back-edge transfers are done too. That gives the request's latency, every device's busy time, energy (TDP
while busy, idle power otherwise, over the latency, for every device used),
cost (price x busy time) and the bottleneck busy time (1 / throughput), and
whether the assignment fits memory and the power envelope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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



class PartialSchedule:
    """A partial schedule: units placed so far, in graph order (see `Evaluator`)."""

    def __init__(self, p: Problem):
        self.p = p
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

    def trial(self, u: int, s: int) -> tuple[float, float, tuple[str, ...]]:
        """(start, duration, resources) unit u would get on slot s after the units placed so far."""
        p = self.p
        unit, slot = p.units[u], p.slots[s]
        dur = p.sec(u, s)
        ready = 0.0
        for pu, nbytes in unit.preds:
            t = self.finish[pu] + p.transfer(self.assign[pu], s, nbytes) * min(unit.scale, p.units[pu].scale)
            ready = max(ready, t)
        free = self.free
        if slot.is_host:
            all_lanes = p.host_lanes[slot.devices[0]]
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
        return t0, dur, res

    def back_delay(self, u: int, s: int) -> float:
        """Seconds unit u's loop back edges add after it on slot s: its result moving to the next iteration's
        reader, once per iteration after the first (0 where they share a device)."""
        back = self.p.units[u].back
        if not back:
            return 0.0
        return sum(count * self.p.transfer(s, self.assign[c], nbytes) for c, nbytes, count in back)

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
        t0, dur, res = self.trial(u, s)
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
        self.start[u], self.finish[u] = t0, t0 + dur + self.back_delay(u, s)
        self.latency = max(self.latency, self.finish[u])
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

    def evaluate(self, assign: Sequence[int]) -> Evaluation:
        st = PartialSchedule(self.p)
        for u, s in enumerate(assign):
            st.commit(u, s)
        return self.summarise(st)

    def summarise(self, st: PartialSchedule) -> Evaluation:
        p = self.p
        latency = st.latency
        why = ""
        for d, m in st.mem.items():
            if m > p.capacity[d] * (1 + 1e-9):
                why = f"device {d} would hold {m / 1e9:.1f} GB; it has {p.capacity[d] / 1e9:.1f} GB"
                break
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


