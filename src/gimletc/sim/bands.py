"""Uncertainty bands of a load simulation: the same run with every step at the low edge of its band,
then at the high edge.

Under load a step's error does not carry through linearly (a slower step lengthens queues), so the
bands of what `simulate` reports are found by simulating again, not by arithmetic: once with every
engine step priced at the low edge of its band (`SoftwareProfile.band_edge`: the chip, stack, step
kind and model class of `gimletc.cost.uncertainty.band`) and every other op the plan prices
(transfers, verify and draft steps, conversions, retrieval) at the low edge of its own
(`gimletc.analysis.bands.edge_graph`), then at the high edges. Arrivals, seeds and tool times stay
as they are. Each figure's interval spans the three runs (the prediction and its two edges), so it
always holds the prediction even where batching makes a figure move against the steps' direction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from gimletc.analysis.bands import edge_graph
from gimletc.hardware import get_chip
from gimletc.ir import Op, parse_graph
from gimletc.ir.text import print_graph
from gimletc.sim.config import SimConfig
from gimletc.sim.steps import SoftwareProfile, profile_for_stack

__all__ = ["BANDED", "SOURCE", "edge_config", "edge_plan", "edge_profile", "intervals", "summary_bands"]

SOURCE = ("each figure's interval over the simulation and its two reruns with every step at the low, then the high "
          "edge of its cost-model band (docs/cost-model.md, uncertainty bands)")
# The figures of `summary()` that get an interval: percentile tables and plain numbers.
BANDED = ("ttft_ms", "tpot_ms", "e2e_ms", "throughput_tok_s", "throughput_req_s", "throughput_tok_s_per_chip",
          "energy_j", "energy_per_request_j", "energy_per_token_j", "slo_attainment", "goodput_req_s")


def _engine_step(op: Op) -> bool:
    """Prefills and decodes: the simulator prices them itself, step by step (`StepCost`)."""
    return op.kind == "exec.compute" and op.attr("kind_of") in ("model.prefill", "model.decode")


def edge_profile(profile: SoftwareProfile | None, stack: str | None, edge: int) -> SoftwareProfile:
    """`profile` (None: the one `stack` runs under) pricing every step at band edge `edge` (-1 or +1)."""
    return replace(profile or profile_for_stack(stack), band_edge=edge)


def edge_config(cfg: SimConfig, stack: str | None, edge: int) -> SimConfig:
    """`cfg` with its steps at band edge `edge`, recording no timeline."""
    return replace(cfg, profile=edge_profile(cfg.profile, stack, edge), record_timeline=False)


def plan_stack(plan: Any) -> str:
    """The stack a plan was compiled for (plans from before stacks were recorded: reference)."""
    return str((plan.inputs.get("options") or {}).get("stack") or "reference")


def edge_plan(plan: Any, edge: int) -> Any:
    """`plan` with every op its IR prices (but the engine steps the simulator prices) at band edge `edge`."""
    chips = {d.id: get_chip(d.chip) for d in plan.cluster.devices}
    g = edge_graph(parse_graph(plan.ir), chips, plan_stack(plan), edge, keep=_engine_step)
    return plan.model_copy(update={"ir": print_graph(g)})


def intervals(values: Iterable[float | None]) -> dict[str, float] | None:
    """{"lo", "hi"} spanning `values`, or None when any is missing."""
    vs = list(values)
    if not vs or any(v is None for v in vs):
        return None
    return {"lo": min(vs), "hi": max(vs)}  # type: ignore[type-var]


def summary_bands(nominal: Mapping[str, Any], edges: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The `bands` object of `simulate --json`: for each figure of `BANDED` in `nominal` (a `summary()`),
    its interval over `nominal` and the `edges` runs' summaries, shaped like the figure ({"lo", "hi"},
    or one per percentile)."""
    runs = [nominal, *edges]
    out: dict[str, Any] = {}
    for key in BANDED:
        v = nominal.get(key)
        if isinstance(v, Mapping):
            per = {k: intervals(r.get(key, {}).get(k) for r in runs) for k in sorted(v)}
            out[key] = {k: iv for k, iv in per.items() if iv is not None}
        elif isinstance(v, int | float) and not isinstance(v, bool):
            iv = intervals(r.get(key) for r in runs)
            if iv is not None:
                out[key] = iv
    out["source"] = SOURCE
    return out
