"""The placement problem: units (what is placed together), slots (where a unit may run), and what
one unit costs on one slot (seconds, memory, busy energy and cost, transfer time between slots).

Placement units. Each op is a unit, except that an LLM call's prefill and
decode form one unit unless `partition-phase` tagged them, and ops sharing a
`unit` attribute form one. Model units go to a *slot*: a group of n chips of
one kind in one node (any power of two whose memory holds the model, up to the
node's count: tensor parallel), or to a host CPU. Tools, retrieval and code go
to host CPUs unless pinned elsewhere; each host runs up to `Host.lanes` of them
at once (its cores). Loop bodies count `expected` times, branch arms with their
probability. Busy time becomes joules and dollars through
`gimletc.cost.accounting`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gimletc.cost import accounting
from gimletc.errors import GimletError
from gimletc.hardware.resources import channel_id, host_lane_ids
from gimletc.hardware.schema import Chip
from gimletc.ir import Graph, Op, forwarded_values
from gimletc.passes.costs import op_memory, op_seconds
from gimletc.passes.manager import PassContext

Objective = Literal["latency", "energy", "cost", "throughput"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
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
    preds: list[tuple[int, float, int]] = field(default_factory=list)  # (unit index, bytes, value id)
    # Loop back edges from this unit's result to an earlier unit that reads it in the next iteration:
    # (that unit's index, bytes, transfers per request).
    back: list[tuple[int, float, float]] = field(default_factory=list)
    # Earlier units this one may share no device with: the other stages of its layer pipeline.
    apart: tuple[int, ...] = ()
    op_scales: tuple[float, ...] = ()  # executions per request of each op
    candidates: list[int] = field(default_factory=list)  # slot indices
    models: tuple[str, ...] = ()
    weight_bytes: float = 0.0
    kv_bytes: float = 0.0



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
    return {d.id: accounting.power_w(d.chip, accounting.units(cluster, d)) for d in cluster.devices()}


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
        self.device_units = {d.id: accounting.units(cluster, d) for d in cluster.devices()}  # a host's sockets
        self.stack = stack
        self.units: list[Unit] = []
        self._unit_of_op: dict[str, int] = {}
        self._unit_key: dict[str, int] = {}
        self.value_ids: dict[str, int] = {}  # values units read from other units, numbered
        self._collect(graph, 1.0, ())
        self.pipelines = self._pipelines()
        self._memory()
        self._link_preds(graph)
        self._route_cache: dict[tuple, tuple[float, float]] = {}
        self._cost_cache: dict[tuple, float] = {}
        self._channels: dict[int, str] = {}
        self.pins = dict(ctx.pins)
        self.slot_capacity = [sum(self.capacity[d] for d in sl.devices) for sl in self.slots]
        self.lanes = {d.id: accounting.lanes(cluster, d) for d in cluster.devices() if d.is_host}
        self.host_lanes = {h: host_lane_ids(h, n) for h, n in self.lanes.items()}
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
            unit.preds.extend((p, 0.0, -1) for p in arm_preds)
            self.units.append(unit)
            self._unit_of_op[op.name] = idx
            if key is not None:
                self._unit_key[str(key)] = idx

    def _pipelines(self) -> dict[str, tuple[int, ...]]:
        """Each layer pipeline's stage units, by LLM call; every stage unit is kept apart (no shared device)
        from the other stages: stages sharing a device group would be the whole model on that group."""
        stages: dict[str, dict[int, list[int]]] = {}
        for u, unit in enumerate(self.units):
            for op in unit.ops:
                if op.attr("variant") == "layers" and op.attr("stage") is not None and op.attr("of") is not None:
                    stages.setdefault(str(op.attr("of")), {}).setdefault(int(op.attr("stage")), []).append(u)
        out: dict[str, tuple[int, ...]] = {}
        for call, by_stage in stages.items():
            if len(by_stage) < 2:
                continue
            stage_of = {u: st for st, us in by_stage.items() for u in us}
            for u in stage_of:
                self.units[u].apart = tuple(sorted(w for w in stage_of if w < u and stage_of[w] != stage_of[u]))
            out[call] = tuple(sorted(stage_of))
        return out

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
                    self.units[u].preds.append((p, nbytes, self.value_ids.setdefault(v, len(self.value_ids))))
        # A loop's back edge: the body's yield feeds the next iteration's first reader of the body argument
        # (expected - 1 times per run of the loop; insert-transfers moves it where the two differ).
        for op, _ in graph.walk():
            if op.kind != "agent.loop":
                continue
            body = op.regions[0]
            expected = float(op.attr("expected", 1.0))
            for arg, y in zip(body.args, body.ops[-1].operands, strict=False):
                if y == arg.name or y not in producer or expected <= 1.0:
                    continue
                p, nbytes = producer[y]
                c = next((self._unit_of_op[o.name] for o, _ in body.walk()
                          if arg.name in o.operands and o.name in self._unit_of_op), None)
                if c is None or c >= p:
                    continue  # a reader in the same or a later unit: the list schedule already orders them
                count = min(self.units[p].scale, self.units[c].scale) * (1.0 - 1.0 / expected)
                self.units[p].back.append((c, nbytes, count))

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
                cands = self._pinned(unit, pin)
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

    def pinned(self, unit: Unit) -> str | None:
        """Where unit `unit` is pinned, or None."""
        return self._pin_for(unit)

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

    def _pinned(self, unit: Unit, pin: str) -> list[int]:
        """The slots a pin allows unit `unit`: a device or slot id means exactly that slot; a node name means
        the node's host CPU for a tool, retrieval or code op and the node's accelerators for an LLM phase; a
        chip name every slot of that chip; `cpu` or `host` every host. Raises PlacementError (one line:
        the op, the pin and why) where no allowed slot can run it."""
        where = f"op {unit.name} is pinned to {pin!r}, but"
        exact = [i for i, sl in enumerate(self.slots) if sl.id == pin]
        if any(n.name == pin for n in self.cluster.nodes):
            host = unit.kind != "model"
            match = [i for i, sl in enumerate(self.slots) if sl.node == pin and sl.is_host == host]
            if not match:
                raise PlacementError(
                    f"{where} node {pin} has no accelerators to run an LLM phase on (a pin to a node means its "
                    f"accelerators for model ops; pin it to '{pin}.host' to run it on the host CPU)")
        else:
            match = exact or [i for i, sl in enumerate(self.slots) if self._matches(sl, pin)]
        if not match:
            raise PlacementError(
                f"{where} that names no device, node or chip of cluster {self.cluster.name} "
                f"(devices: {', '.join(d.id for d in self.cluster.devices())})")
        if unit.kind != "model":
            return match
        fits = [i for i in match if self._fits(unit, self.slots[i])]
        if not fits:
            m = unit.models[0] if unit.models else unit.name
            best = max(self.slot_capacity[i] for i in match)
            raise PlacementError(
                f"{where} no device group there holds {m}: it needs {(unit.weight_bytes + unit.kv_bytes) / 1e9:.1f} "
                f"GB (weights + KV cache) and the largest holds {best / 1e9:.1f} GB")
        return fits

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
        slot = self.slots[s]
        return accounting.lane_share(self.lanes[slot.devices[0]]) if slot.is_host and self.units[u].kind != "model" else 1.0

    def _slot_units(self, s: int) -> int:
        """Chips a slot stands for: its devices, a host once per CPU socket."""
        slot = self.slots[s]
        return slot.n * self.device_units[slot.devices[0]]

    def busy_energy(self, u: int, s: int) -> float:
        """Joules unit u's work draws on slot s at TDP (idle power over the plan's span not included)."""
        return accounting.busy_energy_j(self.slots[s].chip, self.sec(u, s) * self.share(u, s), self._slot_units(s))

    def busy_cost(self, u: int, s: int) -> float:
        """USD of unit u's busy chip-time on slot s."""
        return accounting.cost_usd(self.slots[s].chip, self.sec(u, s) * self.share(u, s), self._slot_units(s))

    def op_seconds_on(self, op: Op, s: int) -> float:
        slot = self.slots[s]
        key = (op.kind, tuple(op.attrs.items()), slot.chip.name, slot.n)
        if key not in self._cost_cache:
            self._cost_cache[key] = op_seconds(op, slot.chip, slot.n, self.stack)
        return self._cost_cache[key]

    def channel(self, a: int, b: int) -> str:
        """The channel a transfer from slot a to slot b occupies: `channel_id` of the device holding the value
        and the device reading it (each slot's first device, as placed ops name them), the name
        insert-transfers gives the send that the replay runs on it."""
        key = a * len(self.slots) + b
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = channel_id(self.slots[a].devices[0], self.slots[b].devices[0])
        return ch

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


