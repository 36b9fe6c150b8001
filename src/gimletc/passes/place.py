"""place: assign every op to devices of the cluster.

Placement units. Each op is a unit, except that an LLM call's prefill and
decode form one unit unless `partition-phase` tagged them. Model units go to a
*slot*: a group of n chips of one kind in one node (any power of two
whose memory holds the model, up to the node's count: tensor parallel), or to a host
CPU. Tools, retrieval and code go to host CPUs unless pinned elsewhere; each
host runs up to `HOST_LANES` of them at once (its cores).

Evaluating an assignment (`Evaluator.evaluate`) list-schedules the units in
graph order: a unit starts when its inputs have arrived (producer finish +
transfer over the cluster route) and its devices are free. That gives the
request's latency, every device's busy time, energy (TDP while busy, idle power
otherwise, over the latency, for every device used), cost (price x busy time)
and the bottleneck busy time (1 / throughput). Loop bodies count `expected`
times, branch arms with their probability.

Search. When the candidates' product is at most `exact_limit`, every
assignment is evaluated (exact). Otherwise a greedy pass (earliest finish for
latency, cheapest increment for the others) is followed by a bounded local
search (one unit moved at a time, at most `max_evaluations` evaluations); for
the throughput, energy and cost objectives a HiGHS MILP over the same units
(linear in the assignment: busy time per device, busy energy, busy cost) is
solved as well and the better of the two kept. Every result reports a lower
bound on the objective and the gap to it: the MILP's dual bound where one was
solved, otherwise the sum or critical path of each unit's cheapest candidate.
Constraints: memory per device (weights once per model and device, plus each
unit's KV cache), the power envelope (TDP of every device used), pins.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, get_args

import numpy as np
from annotated_types import Ge

from gimletc.cost.energy import energy_j
from gimletc.errors import GimletError
from gimletc.hardware.schema import Chip
from gimletc.ir import Graph, Level, Op, forwarded_values
from gimletc.passes.costs import op_memory, op_seconds
from gimletc.passes.manager import Pass, PassContext
from gimletc.passes.partition import Kind

Objective = Literal["latency", "energy", "cost", "throughput"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
LOCAL_SEARCH_UNIT_STEPS = 20_000  # local search may re-schedule this many units in all
MIN_LOCAL_SEARCH = 50  # fewer evaluations than this are not worth starting a local search for
HOST_LANES = 8  # concurrent CPU ops per host (tools are single-threaded; hosts have many cores)
CPU_KINDS = ("agent.tool", "agent.code", "agent.retrieve")
IO_KINDS = ("agent.input", "agent.output")
MODEL_KINDS = ("model.prefill", "model.decode")


class PlacementError(GimletError):
    """No assignment satisfies the constraints (memory, power budget, pins)."""


@dataclass(frozen=True)
class Slot:
    """Where a unit can run: n chips of one kind in one node, or a node's host CPU."""

    id: str
    node: str
    chip: Chip
    devices: tuple[str, ...]  # device ids (for a host: the host's id)
    is_host: bool
    n: int = field(init=False)
    cls: tuple[str, str, int] = field(init=False)  # interchangeable slots share a class

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", len(self.devices))
        object.__setattr__(self, "cls", (self.node, self.chip.name, len(self.devices)))


@dataclass
class Unit:
    name: str
    ops: tuple[Op, ...]
    kind: Literal["model", "cpu", "io"]
    scale: float  # executions per request of its least frequent op (loop expectation x branch probability)
    preds: list[tuple[int, float]] = field(default_factory=list)  # (unit index, bytes)
    op_scales: tuple[float, ...] = ()  # executions per request of each op
    candidates: list[int] = field(default_factory=list)  # slot indices
    models: tuple[str, ...] = ()
    weight_bytes: float = 0.0
    kv_bytes: float = 0.0


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


def build_slots(cluster: Any) -> list[Slot]:
    """Every accelerator group (sizes 1, 2, 4, ... up to the node's count, aligned) and every host."""
    slots: list[Slot] = []
    by_node: dict[str, list[Any]] = {}
    hosts = []
    for d in cluster.devices():
        if d.role == "host":
            hosts.append(d)
        else:
            by_node.setdefault((d.node, d.chip.name), []).append(d)
    for (node, chip_name), devs in by_node.items():
        size = 1
        while size <= len(devs):
            for off in range(0, len(devs) - size + 1, size):
                grp = devs[off : off + size]
                ids = tuple(x.id for x in grp)
                sid = ids[0] if size == 1 else f"{ids[0]}+{size - 1}"
                slots.append(Slot(sid, node, grp[0].chip, ids, False))
            size *= 2
    for h in hosts:
        slots.append(Slot(h.id, h.node, h.chip, (h.id,), True))
    return slots


def _device_capacity(cluster: Any) -> dict[str, float]:
    return {d.id: float(d.memory_bytes) for d in cluster.devices()}


def _device_power(cluster: Any) -> dict[str, float]:
    out = {}
    for d in cluster.devices():
        sockets = 1
        if d.role == "host":
            sockets = getattr(cluster.node(d.node).host, "sockets", 1)
        out[d.id] = d.chip.tdp_w * sockets
    return out


def _node_signatures(cluster: Any) -> dict[str, str]:
    """Nodes with equal signatures are interchangeable: same chips, host, fabric and host link,
    and the same multiset of links to other nodes."""
    import json

    out = {}
    for node in cluster.nodes:
        spec = node.model_dump(mode="json", exclude={"name"})
        links = sorted((lk.kind, lk.bandwidth, lk.latency) for lk in cluster.links if node.name in lk.between)
        out[node.name] = json.dumps([spec, links], sort_keys=True)
    return out


class Problem:
    """Units, slots, costs and routes of one placement problem."""

    def __init__(self, graph: Graph, cluster: Any, ctx: PassContext, stack: str = "reference"):
        self.cluster = cluster
        self.slots = build_slots(cluster)
        self.capacity = _device_capacity(cluster)
        self.device_power = _device_power(cluster)
        self.stack = stack
        self.units: list[Unit] = []
        self._unit_of_op: dict[str, int] = {}
        self._unit_key: dict[str, int] = {}
        self._collect(graph, 1.0, ())
        self._memory()
        self._link_preds(graph)
        self._route_cache: dict[tuple, tuple[float, float]] = {}
        self._cost_cache: dict[tuple, float] = {}
        self.pins = dict(ctx.pins)
        self.slot_capacity = [sum(self.capacity[d] for d in sl.devices) for sl in self.slots]
        self.host_lanes = {sl.devices[0]: tuple(f"{sl.devices[0]}#{i}" for i in range(HOST_LANES)) for sl in self.slots if sl.is_host}
        self.node_sig = _node_signatures(cluster)
        self._candidates()
        # seconds[u][s] for candidate slots
        self._unit_sec: list[dict[tuple, float]] = [{} for _ in self.units]

    # ---- units --------------------------------------------------------------------
    def _collect(self, graph: Graph, scale: float, arm_preds: tuple[int, ...]) -> None:
        """Gather units, recursing into loops and branches. Ops sharing a `unit` attribute, or the phases
        of one LLM call that no pass split, form one unit wherever they are nested."""
        for op in graph.ops:
            if op.kind == "agent.loop":
                self._collect(op.regions[0], scale * float(op.attr("expected")), arm_preds)
                continue
            if op.kind == "agent.branch":
                prev: tuple[int, ...] = ()
                for region, p in zip(op.regions, op.attr("probabilities"), strict=True):
                    first = len(self.units)
                    self._collect(region, scale * float(p), prev)
                    prev = tuple(range(first, len(self.units)))  # arms run one after another in expectation
                continue
            if op.kind == "agent.yield":
                continue
            of = op.attr("of")
            key = op.attr("unit")
            if key is None and op.kind in MODEL_KINDS and of and op.attr("partition") != "phase":
                key = of
            if key is not None and key in self._unit_key:
                idx = self._unit_key[key]
                u = self.units[idx]
                u.ops = (*u.ops, op)
                u.op_scales = (*u.op_scales, scale)
                u.scale = min(u.scale, scale)
                self._unit_of_op[op.name] = idx
                continue
            kind = "model" if op.kind.startswith("model.") else "io" if op.kind in IO_KINDS else "cpu"
            idx = len(self.units)
            unit = Unit(str(key) if key is not None else op.name, (op,), kind, scale, op_scales=(scale,))
            unit.preds.extend((p, 0.0) for p in arm_preds)
            self.units.append(unit)
            self._unit_of_op[op.name] = idx
            if key is not None:
                self._unit_key[str(key)] = idx

    def _memory(self) -> None:
        for u in self.units:
            weights: dict[str, float] = {}
            kv: dict[str, float] = {}
            for key, w, k in (op_memory(op) for op in u.ops):
                if key:
                    weights[key] = w
                    kv[key] = max(kv.get(key, 0.0), k)  # the phases of one call share its cache
            u.models = tuple(sorted(weights))
            u.weight_bytes = sum(weights.values())
            u.kv_bytes = sum(kv.values())

    def _link_preds(self, graph: Graph) -> None:
        producer: dict[str, tuple[int, float]] = {}
        for op, _ in graph.walk():
            for v in op.results:
                if op.name in self._unit_of_op:
                    producer[v.name] = (self._unit_of_op[op.name], v.type.nbytes)
        # Loop and branch results, and loop body arguments, come from the values they forward.
        sizes = {v.name: v.type.nbytes for op, _ in graph.walk() for v in op.results}
        sizes.update({a.name: a.type.nbytes for op, _ in graph.walk() for r in op.regions for a in r.args})
        for v, src in forwarded_values(graph):
            if src in producer:
                producer[v] = (producer[src][0], sizes[v])
        for op, _ in graph.walk():
            if op.name not in self._unit_of_op:
                continue
            u = self._unit_of_op[op.name]
            for v in op.operands:
                # Units are scheduled in order; an input from a later unit (a cycle between two units, as
                # attention and FFN groups or draft and target form) is left to the replay.
                if v in producer and producer[v][0] < u:
                    p, nbytes = producer[v]
                    self.units[u].preds.append((p, nbytes))

    # ---- candidates and costs -------------------------------------------------------
    def _fits(self, unit: Unit, slot: Slot) -> bool:
        return unit.weight_bytes + unit.kv_bytes <= sum(self.capacity[d] for d in slot.devices)

    def _candidates(self) -> None:
        for unit in self.units:
            if unit.kind == "model":
                need = unit.weight_bytes + unit.kv_bytes
                # Every slot that holds it: one chip or any tensor-parallel group of 2, 4, 8... in a node.
                cands = [i for i, cap in enumerate(self.slot_capacity) if need <= cap]
            else:
                cands = [i for i, s in enumerate(self.slots) if s.is_host]
            pin = self._pin_for(unit)
            if pin is not None:
                pool = [i for i, s in enumerate(self.slots) if unit.kind != "model" or self._fits(unit, s)]
                # A device id or slot id means exactly that slot; otherwise any slot that includes it.
                cands = [i for i in pool if self.slots[i].id == pin] or [
                    i for i in pool if self._matches(self.slots[i], pin)
                ]
                if not cands:
                    anywhere = any(self._matches(sl, pin) for sl in self.slots)
                    raise PlacementError(
                        f"op {unit.name} is pinned to {pin!r}, but "
                        + ("no device there can hold it" if anywhere else "that names no device, node or chip")
                        + f" of cluster {self.cluster.name} (devices: {', '.join(d.id for d in self.cluster.devices())})"
                    )
            if not cands:
                if unit.kind == "model":
                    m = unit.models[0] if unit.models else unit.name
                    best = max(sum(self.capacity[d] for d in s.devices) for s in self.slots)
                    raise PlacementError(
                        f"model {m} of op {unit.name} needs {(unit.weight_bytes + unit.kv_bytes) / 1e9:.1f} GB "
                        f"(weights + KV cache); the largest device group of cluster {self.cluster.name} "
                        f"holds {best / 1e9:.1f} GB"
                    )
                raise PlacementError(f"op {unit.name} needs a host CPU, and cluster {self.cluster.name} has none")
            unit.candidates = cands

    def _pin_for(self, unit: Unit) -> str | None:
        pins = set()
        for op in unit.ops:
            for key in (op.name, op.attr("unit"), op.attr("of")):
                if key and key in self.pins:
                    pins.add(self.pins[key])
            if op.attr("pinned"):
                pins.add(str(op.attr("pinned")))
        if len(pins) > 1:
            raise PlacementError(f"ops placed together as {unit.name} are pinned to different places: {', '.join(sorted(pins))}")
        return next(iter(pins), None)

    @staticmethod
    def _matches(slot: Slot, pin: str) -> bool:
        return pin in slot.devices or pin == slot.id or pin == slot.node or pin == slot.chip.name or (
            pin in ("cpu", "host") and slot.is_host
        )

    def sec(self, u: int, s: int) -> float:
        """Predicted seconds of one execution of unit u on slot s (cached per unit and slot class)."""
        slot = self.slots[s]
        per = self._unit_sec[u]
        t = per.get(slot.cls)
        if t is None:
            unit = self.units[u]
            t = per[slot.cls] = sum(self.op_seconds_on(op, s) * sc for op, sc in zip(unit.ops, unit.op_scales, strict=True))
        return t

    def share(self, u: int, s: int) -> float:
        """Share of each of slot s's devices unit u occupies: one CPU lane of a host, or the whole device."""
        return 1.0 / HOST_LANES if self.slots[s].is_host and self.units[u].kind != "model" else 1.0

    def busy_energy(self, u: int, s: int) -> float:
        """Joules unit u's work draws on slot s at TDP (idle power over the plan's span not included)."""
        return self.sec(u, s) * sum(self.device_power[d] for d in self.slots[s].devices) * self.share(u, s)

    def busy_cost(self, u: int, s: int) -> float:
        """USD of unit u's busy chip-time on slot s."""
        slot = self.slots[s]
        return self.sec(u, s) * (slot.chip.price_per_hour or 0.0) / 3600 * slot.n

    def op_seconds_on(self, op: Op, s: int) -> float:
        slot = self.slots[s]
        key = (op.kind, tuple(op.attrs.items()), slot.chip.name, slot.n)
        if key not in self._cost_cache:
            self._cost_cache[key] = op_seconds(op, slot.chip, slot.n, self.stack)
        return self._cost_cache[key]

    def transfer(self, a: int, b: int, nbytes: float) -> float:
        """Seconds to move nbytes from slot a's first device to slot b's (0 when they share a device)."""
        if a == b or nbytes <= 0:
            return 0.0
        sa, sb = self.slots[a], self.slots[b]
        if sa.devices[0] == sb.devices[0]:
            return 0.0
        same_node = sa.node == sb.node
        key = (sa.node, sa.is_host, sb.node, sb.is_host, same_node and not sa.is_host and not sb.is_host)
        if key not in self._route_cache:
            r = self.cluster.route(sa.devices[0], sb.devices[0])
            lat = sum(h.latency for h in r.hops)
            inv_bw = sum(1.0 / h.bandwidth for h in r.hops)
            self._route_cache[key] = (lat, inv_bw)
        lat, inv_bw = self._route_cache[key]
        return lat + nbytes * inv_bw


class _State:
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
            self.busy[host] = self.busy.get(host, 0.0) + dur * len(res) / HOST_LANES
        else:
            for d in res:
                self.busy[d] = self.busy.get(d, 0.0) + dur
        self.start[u], self.finish[u] = t0, t0 + dur
        self.latency = max(self.latency, t0 + dur)
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
        st = _State(self.p)
        for u, s in enumerate(assign):
            st.commit(u, s)
        return self.summarise(st)

    def summarise(self, st: _State) -> Evaluation:
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
            c = self.chips[d]
            energy += energy_j(c, st.busy.get(d, 0.0), latency, p.device_power[d] / c.tdp_w)  # host sockets
            cost += (c.price_per_hour or 0.0) / 3600.0 * st.busy.get(d, 0.0)
        bottleneck = max(st.busy.values(), default=0.0)
        n = len(st.assign)
        return Evaluation(
            not why, why, latency, energy, cost, bottleneck, power, dict(st.busy),
            tuple(st.start[:n]), tuple(st.finish[:n]), tuple(st.lanes),
        )


# ---- search ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchResult:
    assign: tuple[int, ...]
    evaluation: Evaluation
    method: str
    evaluated: int
    bound: float


def lower_bound(problem: Problem, objective: str) -> float:
    """A bound no feasible assignment beats: each unit at its cheapest candidate, no transfers, no waiting."""
    units = problem.units
    best_t = [min(problem.sec(u, s) for s in unit.candidates) for u, unit in enumerate(units)]
    if objective == "latency":
        longest = [0.0] * len(units)
        for u, unit in enumerate(units):
            longest[u] = best_t[u] + max((longest[p] for p, _ in unit.preds), default=0.0)
        # Nor can the work outrun the machine: each unit occupies at least its cheapest amount of
        # device-seconds (a CPU lane counts as 1/HOST_LANES of its host), and every device and host
        # does one device-second per second.
        work = 0.0
        for u, unit in enumerate(units):
            work += min(problem.sec(u, s) * problem.share(u, s) * problem.slots[s].n for s in unit.candidates)
        capacity = max(1, len(problem.cluster.devices()))
        return max(max(longest, default=0.0), work / capacity)
    if objective == "throughput":
        devices = max(1, len([d for d in problem.cluster.devices() if d.role != "host"]))
        return max(max(best_t, default=0.0), sum(best_t) / devices)
    busy = problem.busy_energy if objective == "energy" else problem.busy_cost
    return sum(min(busy(u, s) for s in unit.candidates) for u, unit in enumerate(units))


def exhaustive(ev: Evaluator, objective: str) -> tuple[tuple[int, ...] | None, Evaluation | None, int]:
    best, best_ev, count = None, None, 0
    for assign in itertools.product(*(u.candidates for u in ev.p.units)):
        e = ev.evaluate(assign)
        count += 1
        if e.feasible and (best_ev is None or e.key(objective) < best_ev.key(objective)):
            best, best_ev = assign, e
    return best, best_ev, count


def greedy(ev: Evaluator, objective: str) -> tuple[tuple[int, ...], Evaluation, int]:
    """Place units one by one in graph order, each where the partial plan's objective grows least.

    Infeasible steps (memory, power) are avoided when any candidate allows it."""
    p = ev.p
    st = _State(p)
    count = 0
    for u, unit in enumerate(p.units):
        # Slots of interchangeable nodes (equal signatures) differ only in when they free up and
        # in how close they are to the unit's inputs: try the one that frees first in each class,
        # and those in the nodes that hold the unit's inputs.
        near = {p.slots[st.assign[pu]].node for pu, _ in unit.preds}
        first: dict[tuple, tuple[float, int]] = {}
        for s in unit.candidates:
            slot = p.slots[s]
            where = ("node", slot.node) if slot.node in near else ("sig", p.node_sig[slot.node])
            key = (where, slot.chip.name, slot.n, slot.is_host)
            prev = first.get(key)
            if prev is not None and prev[0] == 0.0:
                continue  # nothing frees earlier than idle
            avail = max(st.free.get(r, 0.0) for r in (p.host_lanes[slot.devices[0]] if slot.is_host else slot.devices))
            if prev is None or avail < prev[0]:
                first[key] = (avail, s)
        best_s, best_key = None, None
        for _, s in first.values():
            t0, dur, res = st.trial(u, s)
            count += 1
            slot = p.slots[s]
            # Candidates fit empty devices; only devices that already hold something need checking.
            over_mem = unit.kind == "model" and any(d in st.mem for d in slot.devices) and any(
                m > p.capacity[d] * (1 + 1e-9) for d, m in st.mem_after(u, s).items()
            )
            new = [d for d in slot.devices if d not in st.used]
            power = st.power + sum(p.device_power[d] for d in new)
            over_power = ev.budget is not None and power > ev.budget * (1 + 1e-9)
            finish = t0 + dur
            if objective == "latency":
                primary = finish
            elif objective == "throughput":
                primary = max([st.busy.get(d, 0.0) + dur * p.share(u, s) for d in slot.devices] + [st.bottleneck])
            elif objective == "energy":
                primary = p.busy_energy(u, s) + sum(ev.chips[d].idle_w * max(st.latency, finish) for d in new)
            else:
                primary = dur * (slot.chip.price_per_hour or 0.0) / 3600 * slot.n
            key = (over_mem or over_power, primary, finish, s)
            if best_key is None or key < best_key:
                best_s, best_key = s, key
        st.commit(u, best_s)
    return tuple(st.assign), ev.summarise(st), count


def local_search(ev: Evaluator, objective: str, assign: tuple[int, ...], current: Evaluation, budget: int) -> tuple[tuple[int, ...], Evaluation, int]:
    """Move one unit at a time to its best candidate while that improves; at most `budget` evaluations."""
    p = ev.p
    best = list(assign)
    best_ev = current
    count = 0
    improved = True
    while improved and count < budget:
        improved = False
        used_nodes = {p.slots[s].node for s in best}
        for u, unit in enumerate(p.units):
            # Slots of interchangeable nodes behave alike unless the plan already uses the node:
            # try every slot of used nodes and one per class of the others.
            seen: set[tuple] = set()
            moves = []
            for s in unit.candidates:
                slot = p.slots[s]
                if slot.node not in used_nodes:
                    key = (p.node_sig[slot.node], slot.chip.name, slot.n, slot.is_host)
                    if key in seen:
                        continue
                    seen.add(key)
                moves.append(s)
            for s in moves:
                if s == best[u] or count >= budget:
                    continue
                trial = best.copy()
                trial[u] = s
                e = ev.evaluate(trial)
                count += 1
                if e.feasible and e.key(objective) < best_ev.key(objective):
                    best, best_ev, improved = trial, e, True
    return tuple(best), best_ev, count


def milp(problem: Problem, objective: str, budget_w: float | None, time_limit: float = 2.0) -> tuple[tuple[int, ...] | None, float]:
    """HiGHS MILP of the linear part of the objective: busy time per device (throughput), busy
    energy or busy cost, with memory and power constraints. Returns (assignment or None, dual bound)."""
    import highspy

    h = _quiet(highspy.Highs)
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", time_limit)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("threads", 1)
    inf = highspy.kHighsInf
    units, slots = problem.units, problem.slots
    var: dict[tuple[int, int], int] = {}
    slot_of: list[int] = []
    costs: list[float] = []
    for u, unit in enumerate(units):
        for s in unit.candidates:
            if objective == "energy":
                c = problem.busy_energy(u, s)
            elif objective == "cost":
                c = problem.busy_cost(u, s)
            else:
                c = 0.0
            var[(u, s)] = len(costs)
            slot_of.append(s)
            costs.append(c)
    devices = sorted({d for s in slots for d in s.devices})
    dev_index = {d: i for i, d in enumerate(devices)}
    nx_ = len(costs)
    z0 = nx_
    nz = len(devices)
    tvar = z0 + nz
    ncols = tvar + 1
    col_cost = np.array(costs + [0.0] * nz + [1.0 if objective == "throughput" else 0.0])
    lower = np.zeros(ncols)
    upper = np.array([1.0] * (nx_ + nz) + [inf])
    h.addVars(ncols, lower, upper)
    h.changeColsCost(ncols, np.arange(ncols, dtype=np.int32), col_cost)
    h.changeColsIntegrality(nx_ + nz, np.arange(nx_ + nz, dtype=np.int32), np.array([highspy.HighsVarType.kInteger] * (nx_ + nz)))

    def row(idx: list[int], vals: list[float], lo: float, hi: float) -> None:
        h.addRow(lo, hi, len(idx), np.array(idx, dtype=np.int32), np.array(vals, dtype=np.float64))

    for u, unit in enumerate(units):
        row([var[(u, s)] for s in unit.candidates], [1.0] * len(unit.candidates), 1.0, 1.0)
    per_dev: dict[str, list[tuple[int, int]]] = {}
    for (u, s), j in var.items():
        for d in slots[s].devices:
            per_dev.setdefault(d, []).append((u, j))
    for d, entries in per_dev.items():
        zi = z0 + dev_index[d]
        # used: x <= z (aggregated)
        row([j for _, j in entries] + [zi], [1.0] * len(entries) + [-float(len(entries))], -inf, 0.0)
        # memory (weights counted per unit: conservative)
        idx, vals = [], []
        for u, j in entries:
            unit = units[u]
            if unit.kind == "model":
                idx.append(j)
                vals.append((unit.weight_bytes + unit.kv_bytes) / slots[slot_of[j]].n)
        if idx:
            row(idx, vals, -inf, problem.capacity[d])
        if objective == "throughput":
            idx, vals = [], []
            for u, j in entries:
                s = slot_of[j]
                idx.append(j)
                vals.append(problem.sec(u, s) * problem.share(u, s))
            row(idx + [tvar], vals + [-1.0], -inf, 0.0)
    if budget_w is not None:
        row([z0 + i for i in range(nz)], [problem.device_power[d] for d in devices], -inf, budget_w)
    h.run()
    info = h.getInfo()
    bound = float(info.mip_dual_bound) if math.isfinite(info.mip_dual_bound) else 0.0
    status = h.getModelStatus()
    if status not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit) or info.primal_solution_status == 0:
        return None, bound
    x = h.getSolution().col_value
    assign = []
    for u, unit in enumerate(units):
        assign.append(max(unit.candidates, key=lambda s: (x[var[(u, s)]], -s)))
    return tuple(assign), max(0.0, bound)


def _quiet(make: Any) -> Any:
    """Call `make()` with the process's stdout silenced: HiGHS prints a banner when constructed,
    before any option can turn its output off, and a compiler's stdout belongs to its user."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return make()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def search(problem: Problem, objective: str, budget_w: float | None, exact_limit: int, max_evaluations: int) -> SearchResult:
    ev = Evaluator(problem, budget_w)
    space = math.prod(len(u.candidates) for u in problem.units) if problem.units else 1
    if space <= exact_limit:
        assign, e, count = exhaustive(ev, objective)
        if assign is None:
            raise PlacementError(_infeasible_message(ev, problem, budget_w))
        return SearchResult(assign, e, "exhaustive", count, e.objective(objective))
    assign, e, count = greedy(ev, objective)
    bound = lower_bound(problem, objective)
    method = "greedy"
    # Each evaluation replays every unit: bound the work, not just the count. On large graphs the few
    # moves the budget allows cannot change much; skip the search there.
    budget = min(max_evaluations, LOCAL_SEARCH_UNIT_STEPS // max(1, len(problem.units)))
    if e.feasible and budget >= MIN_LOCAL_SEARCH:
        assign, e, more = local_search(ev, objective, assign, e, budget)
        count += more
        method = "greedy+local-search"
    if objective != "latency" and sum(len(u.candidates) for u in problem.units) <= 50_000:
        m_assign, m_bound = milp(problem, objective, budget_w)
        bound = max(bound, m_bound) if objective != "energy" else max(bound, m_bound)
        if m_assign is not None:
            me = ev.evaluate(m_assign)
            count += 1
            if me.feasible and (not e.feasible or me.key(objective) < e.key(objective)):
                assign, e, method = m_assign, me, "milp"
            else:
                method += "+milp-bound"
    if not e.feasible:
        raise PlacementError(_infeasible_message(ev, problem, budget_w))
    return SearchResult(assign, e, method, count, min(bound, e.objective(objective)))


def _infeasible_message(ev: Evaluator, problem: Problem, budget_w: float | None) -> str:
    """Why nothing fits: the least power any assignment needs vs the budget, or the memory that does not fit."""
    cheapest = 0.0
    for unit in problem.units:
        cheapest = max(cheapest, min(sum(problem.device_power[d] for d in problem.slots[s].devices) for s in unit.candidates))
    if budget_w is not None:
        return (
            f"infeasible power budget: {budget_w:.0f} W; the placement needs at least {cheapest:.0f} W "
            f"(the cheapest device group of its most demanding op), and no assignment of all ops fits the budget"
        )
    return "no placement fits the cluster's memory"


@dataclass(frozen=True)
class Place(Pass):
    """Assign every op to devices, choosing each LLM call's partitioning (see the module docstring).

    `partitions`: "auto" chooses per call among whole, phase, layers, attn-ffn and speculative (where
    they apply); a kind name forces it on every call it applies to (others stay whole); "none" keeps the
    graph's partitioning as it is."""

    name: ClassVar[str] = "place"
    requires: ClassVar[tuple[Level, ...]] = ("model",)
    produces: ClassVar[Level | None] = "placed"
    needs_cluster: ClassVar[bool] = True
    objective: Objective | None = None  # none: the compile's objective (PassContext.objective)
    exact_limit: Annotated[int, Ge(0)] = 20000  # search every placement when there are at most this many
    max_evaluations: Annotated[int, Ge(0)] = 2000  # local search budget beyond that
    stack: Literal["reference", "fused"] | None = None  # none: the compile's stack (PassContext.stack)
    partitions: Literal["auto", "none"] | Kind = "auto"
    joint_units: Annotated[int, Ge(0)] = 60  # up to this many units, variants are compared by replaying the whole plan

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if ctx.cluster is None:
            raise PlacementError("place needs a cluster")
        objective = self.objective or ctx.objective
        if objective not in OBJECTIVES:
            raise PlacementError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        from gimletc.passes.partition import KINDS, find_calls

        if self.partitions not in ("auto", "none", *KINDS):
            raise PlacementError(f"unknown partitions {self.partitions!r}; choose auto, none or one of {', '.join(KINDS)}")
        calls = find_calls(graph) if self.partitions != "none" else {}
        if calls:
            from gimletc.passes.joint import choose_partitions

            return choose_partitions(self, graph, calls, ctx, objective)
        return self.place(graph, ctx, objective)[0]

    def place(self, graph: Graph, ctx: PassContext, objective: str) -> tuple[Graph, Evaluation]:
        """Place a graph whose partitioning is fixed; records the search in ctx.data["placement"]."""
        problem = Problem(graph, ctx.cluster, ctx, self.stack or ctx.stack)
        result = search(problem, objective, ctx.power_budget_w, self.exact_limit, self.max_evaluations)
        ev = result.evaluation
        placed: dict[str, tuple[Slot, tuple[str, ...], int]] = {}
        for u, unit in enumerate(problem.units):
            s = result.assign[u]
            for op in unit.ops:
                placed[op.name] = (problem.slots[s], ev.lanes[u], s)
        ctx.data["placement"] = {
            "objective": objective,
            "method": result.method,
            "evaluated": result.evaluated,
            "objective_value": ev.objective(objective),
            "bound": result.bound,
            "gap": 0.0 if ev.objective(objective) == 0 else (ev.objective(objective) - result.bound) / ev.objective(objective),
            "units": len(problem.units),
            "search_space_log10": sum(math.log10(len(u.candidates)) for u in problem.units),
            "predicted": {"latency_s": ev.latency, "energy_j": ev.energy, "power_w": ev.power_w},
        }

        def annotate(op: Op) -> Op:
            if op.name not in placed:
                return op
            slot, res, s = placed[op.name]
            secs = problem.op_seconds_on(op, s)
            return op.with_attrs(device=slot.devices[0], devices=tuple(res), seconds=secs)

        out = graph.map_ops(annotate).with_attrs(**{"gimlet.level": "placed", "gimlet.objective": objective})
        return out, ev
