"""Heuristic search for large placement problems: a greedy pass in graph order (earliest finish
for latency, the cheapest increment for the other objectives) and a bounded local search that
moves one unit at a time."""

from __future__ import annotations

from gimletc.cost import accounting
from gimletc.passes.placement.evaluate import Evaluation, Evaluator, PartialSchedule


def greedy(ev: Evaluator, objective: str) -> tuple[tuple[int, ...], Evaluation, int]:
    """Place units one by one in graph order, each where the partial plan's objective grows least.

    Infeasible steps (memory, power) are avoided when any candidate allows it."""
    p = ev.p
    st = PartialSchedule(p)
    count = 0
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
