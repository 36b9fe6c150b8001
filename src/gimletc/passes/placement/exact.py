"""Exact methods and bounds: every assignment where the space is small, the HiGHS MILP over the
linear part of an objective (busy time per device, busy energy, busy cost), and a lower bound no
feasible assignment beats."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from gimletc.passes.placement.evaluate import Evaluation, Evaluator
from gimletc.passes.placement.problem import Problem


def lower_bound(problem: Problem, objective: str) -> float:
    """A bound no feasible assignment beats: each unit at its cheapest candidate, no transfers, no waiting."""
    units = problem.units
    best_t = [min(problem.sec(u, s) for s in unit.candidates) for u, unit in enumerate(units)]
    if objective == "latency":
        longest = [0.0] * len(units)
        for u, unit in enumerate(units):
            longest[u] = best_t[u] + max((longest[p] for p, _, _ in unit.preds), default=0.0)
        # Nor can the work outrun the machine: each unit occupies at least its cheapest amount of
        # device-seconds (a CPU lane counts as 1/lanes of its host), and every device and host
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
    for stage_units in problem.pipelines.values():  # a layer pipeline's stages on separate devices
        for d in devices:
            idx = [var[(u, s)] for u in stage_units for s in units[u].candidates if d in slots[s].devices]
            if len(idx) > 1:
                row(idx, [1.0] * len(idx), -inf, 1.0)
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
