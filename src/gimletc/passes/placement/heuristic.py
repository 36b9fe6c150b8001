"""Heuristic search for large placement problems: a greedy pass in graph order (earliest finish
for latency, the cheapest increment for the other objectives) and a bounded local search that
moves one unit at a time."""

from __future__ import annotations

import math

from gimletc.cost import accounting
from gimletc.passes.placement.evaluate import Evaluation, Evaluator, PartialSchedule
from gimletc.passes.placement.problem import Problem


def greedy(ev: Evaluator, objective: str) -> tuple[tuple[int, ...], Evaluation, int]:
    """Place units one by one in graph order, each where the partial plan's objective grows least.

    Infeasible steps (memory, power, a layer pipeline's stages sharing a device) are avoided when any
    candidate allows it."""
    p = ev.p
    st = PartialSchedule(p)
    count = 0
    pipeline_of = {u: units for units in p.pipelines.values() for u in units}
    # Where the accelerators alone can give every stage of a pipeline devices of its own, the greedy keeps
    # its stages on accelerators (a stage on a host CPU is orders of magnitude slower).
    on_accelerators = {units: _disjoint_slots(p, {c for w in units for c in p.units[w].candidates
                                                  if not p.slots[c].is_host}) >= len(units)
                       for units in p.pipelines.values()}
    for u, unit in enumerate(p.units):
        # Slots of interchangeable nodes (equal signatures) differ only in when they free up and
        # in how close they are to the unit's inputs: try the one that frees first in each class,
        # and those in the nodes that hold the unit's inputs.
        near = {p.slots[st.assign[pu]].node for pu, _, _ in unit.preds}
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
            t0, dur, res, finish = st.place(u, s)
            count += 1
            slot = p.slots[s]
            # Candidates fit empty devices; only devices that already hold something need checking.
            over_mem = unit.kind == "model" and any(d in st.mem for d in slot.devices) and any(
                m > p.capacity[d] * (1 + 1e-9) for d, m in st.mem_after(u, s).items()
            )
            new = [d for d in slot.devices if d not in st.used]
            power = st.power + sum(p.device_power[d] for d in new)
            over_power = ev.budget is not None and power > ev.budget * (1 + 1e-9)
            if objective == "latency":
                primary = finish
            elif objective == "throughput":
                primary = max([st.busy.get(d, 0.0) + dur * p.share(u, s) for d in slot.devices] + [st.bottleneck])
            elif objective == "energy":
                span = max(st.latency, finish)
                primary = p.busy_energy(u, s) + sum(
                    accounting.idle_energy_j(ev.chips[d], span, p.device_units[d]) for d in new)
            else:
                primary = p.busy_cost(u, s)
            shared = False
            if u in pipeline_of:
                acc = on_accelerators[pipeline_of[u]]
                shared = (acc and slot.is_host) or st.shares(u, s) is not None or not _room_for_later_stages(
                    p, st, u, s, pipeline_of[u], acc)
            key = (over_mem or over_power or shared, primary, finish, s)
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


def _room_for_later_stages(p: Problem, st: PartialSchedule, u: int, s: int, stages: tuple[int, ...],
                           accelerators: bool) -> bool:
    """Whether, with stage unit u on slot s, the pipeline's later stages can still each get devices of their
    own (on accelerators only, with `accelerators`)."""
    later = [w for w in stages if w > u]
    if not later:
        return True
    before = {d for w in stages if w < u for d in p.slots[st.assign[w]].devices}
    if accelerators:  # at most a fair share of the accelerators left: the least power of two >= left / stages
        left = sum(1 for d in {d for w in (u, *later) for c in p.units[w].candidates for d in p.slots[c].devices
                               if not p.slots[c].is_host} if d not in before)
        share = 1 << max(0, math.ceil(math.log2(max(1.0, left / (len(later) + 1)))))
        if p.slots[s].n > share:
            return False
    used = before | set(p.slots[s].devices)
    free = {c for w in later for c in p.units[w].candidates
            if used.isdisjoint(p.slots[c].devices) and not (accelerators and p.slots[c].is_host)}
    return _disjoint_slots(p, free) >= len(later)


def _disjoint_slots(p: Problem, slots: set[int]) -> int:
    """How many pairwise disjoint slots `slots` holds. Slots are aligned groups within a node (and hosts), so
    any two are nested or disjoint: the smallest ones (holding no other) are pairwise disjoint."""
    sets = {c: set(p.slots[c].devices) for c in slots}
    return sum(1 for c in slots if not any(o != c and sets[o] < sets[c] for o in slots))
