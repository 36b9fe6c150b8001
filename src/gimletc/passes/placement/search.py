"""The placement search: which methods run for a problem, and the bound each result reports.

When the candidates' product is at most `exact_limit`, every assignment is
evaluated (exact). Otherwise a greedy pass is followed by a bounded local
search (at most `max_evaluations` evaluations); for the throughput, energy and
cost objectives a HiGHS MILP over the same units is solved as well and the
better of the two kept. Every result reports a lower bound on the objective
and the gap to it: the MILP's dual bound where one was solved, otherwise the
sum or critical path of each unit's cheapest candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gimletc.passes.placement.evaluate import Evaluation, Evaluator
from gimletc.passes.placement.exact import exhaustive, lower_bound, milp
from gimletc.passes.placement.heuristic import greedy, local_search
from gimletc.passes.placement.problem import PlacementError, Problem

LOCAL_SEARCH_UNIT_STEPS = 20_000  # local search may re-schedule this many units in all
MIN_LOCAL_SEARCH = 50  # fewer evaluations than this are not worth starting a local search for


@dataclass(frozen=True)
class SearchResult:
    assign: tuple[int, ...]
    evaluation: Evaluation
    method: str
    evaluated: int
    bound: float


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
        bound = max(bound, m_bound)
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
    if problem.pipelines:
        call, stage_units = next(iter(problem.pipelines.items()))
        stages = len({int(op.attr("stage")) for u in stage_units for op in problem.units[u].ops})
        return (f"no placement fits the cluster's memory with the {stages} stages of {call}'s layer pipeline on "
                f"separate devices (cluster {problem.cluster.name})")
    return "no placement fits the cluster's memory"
