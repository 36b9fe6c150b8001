"""place: assign every op to devices of the cluster, choosing each LLM call's partitioning.

The problem (`gimletc.passes.placement.problem`): each op is a placement unit,
except that an LLM call's prefill and decode form one unit unless
`partition-phase` tagged them. Model units go to a *slot*: a group of n chips
of one kind in one node (any power of two whose memory holds the model, up to
the node's count: tensor parallel), or to a host CPU. Tools, retrieval and
code go to host CPUs unless pinned elsewhere; each host runs up to its
`Host.lanes` of them at once (its cores).

Evaluating an assignment (`gimletc.passes.placement.evaluate`) list-schedules
the units in graph order: a unit starts when its inputs have arrived (producer
finish + transfer over the cluster route) and its devices are free. That gives
the request's latency, every device's busy time, energy (TDP while busy, idle
power otherwise, over the latency, for every device used), cost (price x busy
time) and the bottleneck busy time (1 / throughput). Loop bodies count
`expected` times, branch arms with their probability.

Search (`gimletc.passes.placement.search`). When the candidates' product is at
most `exact_limit`, every assignment is evaluated (exact). Otherwise a greedy
pass (earliest finish for latency, cheapest increment for the others) is
followed by a bounded local search (one unit moved at a time, at most
`max_evaluations` evaluations); for the throughput, energy and cost objectives
a HiGHS MILP over the same units (linear in the assignment: busy time per
device, busy energy, busy cost) is solved as well and the better of the two
kept. Every result reports a lower bound on the objective and the gap to it:
the MILP's dual bound where one was solved, otherwise the sum or critical path
of each unit's cheapest candidate. Constraints: memory per device (weights once
per model and device, plus each unit's KV cache), the power envelope (TDP of
every device used), pins, and the stages of a layer pipeline on separate
devices (stages sharing a group would be the whole model on that group).

Partitioning (`gimletc.passes.joint`): with LLM calls whose partitioning is
open, the variants of each call are searched jointly with the placement;
small graphs score each configuration with the driver's scorer
(`PassContext.score_placed`: the user's own passes after place, then the
plan's metrics), larger ones with the placement's own list-schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from annotated_types import Ge

from gimletc.ir import Graph, Level, Op
from gimletc.models.workload import StackName
from gimletc.passes.joint import choose_partitions
from gimletc.passes.manager import Pass, PassContext
from gimletc.passes.partition import KINDS, Kind, find_calls
from gimletc.passes.placement.evaluate import Evaluation
from gimletc.passes.placement.problem import OBJECTIVES, Objective, PlacementError, Problem, Slot
from gimletc.passes.placement.search import search
from gimletc.passes.results import PlacementSearch

__all__ = ["OBJECTIVES", "HOST_SLOWDOWN_WARNING", "Place", "PlacementError", "host_warnings"]

HOST_SLOWDOWN_WARNING = 10.0  # a model phase on a host CPU this many times slower than on an accelerator is a warning


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
    stack: StackName | None = None  # none: the compile's stack (PassContext.stack)
    partitions: Literal["auto", "none"] | Kind = "auto"
    joint_units: Annotated[int, Ge(0)] = 60  # up to this many units, variants are compared by the driver's scorer

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if ctx.cluster is None:
            raise PlacementError("place needs a cluster")
        objective = self.objective or ctx.objective
        if objective not in OBJECTIVES:
            raise PlacementError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.partitions not in ("auto", "none", *KINDS):
            raise PlacementError(f"unknown partitions {self.partitions!r}; choose auto, none or one of {', '.join(KINDS)}")
        calls = find_calls(graph) if self.partitions != "none" else {}
        if calls:
            return choose_partitions(graph, calls, ctx, objective, self.place, self.partitions, self.joint_units)
        return self.place(graph, ctx, objective)[0]

    def place(self, graph: Graph, ctx: PassContext, objective: str) -> tuple[Graph, Evaluation]:
        """Place a graph whose partitioning is fixed; records the search in `ctx.placement`."""
        problem = Problem(graph, ctx.cluster, ctx, self.stack or ctx.stack)
        result = search(problem, objective, ctx.power_budget_w, self.exact_limit, self.max_evaluations)
        ev = result.evaluation
        placed: dict[str, tuple[Slot, tuple[str, ...], int]] = {}
        for u, unit in enumerate(problem.units):
            s = result.assign[u]
            for op in unit.ops:
                placed[op.name] = (problem.slots[s], ev.lanes[u], s)
        value = ev.objective(objective)
        ctx.placement = PlacementSearch(
            objective=objective,
            method=result.method,
            evaluated=result.evaluated,
            objective_value=value,
            bound=result.bound,
            gap=0.0 if value == 0 else (value - result.bound) / value,
            units=len(problem.units),
            search_space_log10=sum(math.log10(len(u.candidates)) for u in problem.units),
            latency_s=ev.latency,
            energy_j=ev.energy,
            power_w=ev.power_w,
            warnings=host_warnings(problem, result.assign, objective, ctx),
        )

        def annotate(op: Op) -> Op:
            if op.name not in placed:
                return op
            slot, res, s = placed[op.name]
            secs = problem.op_seconds_on(op, s)
            return op.with_attrs(device=slot.devices[0], devices=tuple(res), seconds=secs)

        out = graph.map_ops(annotate).with_attrs(**{"gimlet.level": "placed", "gimlet.objective": objective})
        return out, ev


def host_warnings(problem: Problem, assign: tuple[int, ...], objective: str, ctx: PassContext) -> tuple[str, ...]:
    """One line per model unit placed on a host CPU of a cluster with accelerators, where the cost model
    predicts it at least `HOST_SLOWDOWN_WARNING` times slower there than on the fastest accelerator group
    (memory aside): its time on each, and why the host (no accelerator group holds it, a pin, or the
    objective)."""
    accelerators = [s for s, sl in enumerate(problem.slots) if not sl.is_host]
    if not accelerators:
        return ()
    out = []
    for u, unit in enumerate(problem.units):
        slot = problem.slots[assign[u]]
        if unit.kind != "model" or not slot.is_host:
            continue
        here = problem.sec(u, assign[u])
        best = min(accelerators, key=lambda s: (problem.sec(u, s), s))
        there = problem.sec(u, best)
        if there <= 0 or here < HOST_SLOWDOWN_WARNING * there:
            continue
        need = unit.weight_bytes + unit.kv_bytes
        if not any(problem.slot_capacity[s] >= need for s in accelerators):
            why = f"no accelerator group of the cluster holds its {need / 1e9:.0f} GB of weights and KV cache"
        elif problem.pinned(unit) is not None:
            why = f"it is pinned to {problem.pinned(unit)!r}"
        else:
            budget = " within the power budget" if ctx.power_budget_w is not None else ""
            why = f"an accelerator group holds it, but the {objective} objective{budget} chose the host"
        calls = sorted({str(op.attr("of")) for op in unit.ops if op.attr("of") is not None})
        what = f"LLM call {', '.join(calls)}" if calls else f"model unit {unit.name}"
        models = ", ".join(sorted({str(op.attr("model")) for op in unit.ops if op.attr("model") is not None}))
        names = [op.name for op in unit.ops]
        ops = ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}, {len(names)} ops"
        b = problem.slots[best]
        out.append(f"{what} ({models}: {ops}) runs on host CPU {slot.devices[0]}: "
                   f"{here:.3g} s, {here / there:.0f}x the {there:.3g} s it takes on {b.n}x {b.chip.name} "
                   f"(cost model); {why}")
    return tuple(out)
