"""Joint choice of each LLM call's partitioning together with the placement of everything.

The search space is one variant per LLM call (whole, phase, layers,
attn-ffn, speculative, where each applies; see `gimletc.passes.partition`)
times the placements of the resulting ops. For a choice of variants, `place`
finds the placement (exactly or heuristically, with a bound); the choices are
searched as follows:

1. Uniform configurations: every call takes the same kind (or stays
   phase-split where the kind does not apply).
2. Coordinate descent from the best of them: one call at a time switches to
   each of its other variants while that improves the objective (at most two
   sweeps and `MAX_CONFIGS` configurations in all). Whole and phase split are
   not moves of their own: phase split places a superset of what whole does.
3. The runner-up of each call: the best configuration in which that call
   takes another kind, the rest as chosen.

Small graphs (at most `joint_units` ops) score each configuration with the
driver's scorer (`PassContext.score_placed`): the user's own passes after
place, then the plan's metrics on the replay, the same numbers the plan
reports (so a pipeline without overlap scores without it). Each configuration
is tried in a context of its own that carries the driver's scorers
(`PassContext.trial`), so the passes the scorer runs (kv-reuse) choose their
rewrites as they will after place. Larger graphs, and
pipelines run without a driver (no scorer), score by the placement's own
list-schedule; larger ones also skip steps 2-3, evaluating one configuration
per kind that applies beyond phase (phase split places a superset of what
whole does). Because every uniform configuration is among the candidates, the
joint result is never worse than the best single
kind applied alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from gimletc.ir import Graph
from gimletc.ir.names import decode_name, prefill_name
from gimletc.passes.manager import PassContext
from gimletc.passes.partition import KINDS, LLMCall, Variant, apply_variants, variant_for
from gimletc.passes.placement.evaluate import Evaluation
from gimletc.passes.placement.problem import PlacementError
from gimletc.passes.results import PartitionReport, PlacementSearch

MAX_CONFIGS = 40

# (graph with the partitioning applied, a context to record the search in, objective) -> placed graph
PlaceFn = Callable[[Graph, PassContext, str], tuple[Graph, Evaluation]]


def choose_partitions(graph: Graph, calls: dict[str, LLMCall], ctx: PassContext, objective: str, place: PlaceFn,
                      partitions: str = "auto", joint_units: int = 60) -> Graph:
    """The graph with every call in `calls` partitioned and everything placed by `place`, the variants
    chosen jointly (see the module docstring); records `ctx.partitions` and `ctx.placement`."""
    kinds = KINDS if partitions == "auto" else (partitions,)
    options: dict[str, dict[str, Variant]] = {}
    for n, call in calls.items():
        opts = {k: v for k in kinds if (v := variant_for(k, call, ctx.cluster, ctx.stack)) is not None}
        if not opts:  # a forced kind that does not apply to this call: it stays whole
            opts = {"whole": Variant("whole")}
        if prefill_name(n) in ctx.pins or decode_name(n) in ctx.pins:  # pinning the phases implies splitting them
            opts = {"phase": Variant("phase", note="its phases are pinned")}
        options[n] = opts
    small = sum(1 for _ in graph.walk()) <= joint_units
    scorer = ctx.score_placed if small else None

    cache: dict[tuple, tuple[float, Graph | None, PlacementSearch | None]] = {}
    first_error: list[Exception] = []

    def evaluate(config: dict[str, str]) -> float:
        key = tuple(sorted(config.items()))
        if key in cache:
            return cache[key][0]
        g = apply_variants(graph, calls, {n: options[n][k] for n, k in config.items()})
        sub = ctx.trial(objective)
        try:
            placed, ev = place(g, sub, objective)
            score = scorer(placed, sub, objective) if scorer is not None else ev.objective(objective)
        except PlacementError as e:
            if not first_error:
                first_error.append(e)
            cache[key] = (math.inf, None, None)
            return math.inf
        cache[key] = (score, placed, sub.placement)
        return score

    def fallback(n: str) -> str:
        return "phase" if "phase" in options[n] else next(iter(options[n]))

    present = [k for k in KINDS if any(k in o for o in options.values())]
    if not small:
        present = [k for k in present if k != "whole" or "phase" not in present]
    for k in present:
        evaluate({n: (k if k in options[n] else fallback(n)) for n in calls})
    if not cache or all(v[0] == math.inf for v in cache.values()):
        raise first_error[0] if first_error else PlacementError("no partitioning of the LLM calls fits the cluster")
    best = dict(min(cache, key=lambda k: (cache[k][0], k)))

    def moves(n: str) -> list[str]:
        # Phase split places a superset of what whole does, so switching between the two is not a move.
        return [k for k in options[n] if not (k == "whole" and "phase" in options[n])]

    if small:
        for _ in range(2):
            improved = False
            for n in calls:
                for k in moves(n):
                    if k == best[n] or len(cache) >= MAX_CONFIGS:
                        continue
                    trial = {**best, n: k}
                    if evaluate(trial) < evaluate(best):
                        best, improved = trial, True
            if not improved:
                break
        for n in calls:  # runner-ups
            for k in moves(n):
                if k != best[n] and len(cache) < MAX_CONFIGS:
                    evaluate({**best, n: k})

    score, placed, placement = cache[tuple(sorted(best.items()))]
    assert placed is not None and placement is not None
    for n in calls:
        alts = [(cache[key][0], dict(key)[n]) for key in cache if dict(key)[n] != best[n] and cache[key][0] < math.inf]
        runner = min(alts) if alts else None
        v = options[n][best[n]]
        ctx.partitions[n] = PartitionReport(
            kind=best[n],
            detail=v.describe(),
            note=v.note,
            objective=score,
            runner_up=runner[1] if runner else None,
            runner_up_objective=runner[0] if runner else None,
            options=tuple(sorted(options[n])),
        )
    ctx.placement = replace(placement, partition_configs=len(cache),
                            partition_scoring="replay" if scorer is not None else "list-schedule")
    return placed
