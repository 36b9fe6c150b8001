"""Uncertainty bands of a compiled graph's metrics, from the bands of its ops.

Every op the cost model priced carries a band (`gimletc.cost.uncertainty`):
LLM steps the band of their chip, stack, step kind and model class; transfers,
conversions and retrieval scans a stated one (nothing measured); tools and
code the graph's own times, no band. A plan's figures are built by the replay
from many ops, in series and in parallel, so their bands are found the same
way: the graph is replayed with every op at the low edge of its band, then at
the high edge (`edge_graph`), and each figure's interval runs from its low
replay to its high one. Every figure the replay builds (latency, TTFT, TPOT,
busy time, hence energy and cost) only grows when an op takes longer, so if
every op lies within its band the figure lies within its interval, whatever
the errors' correlation; the critical path is found again at each edge (a
parallel branch with a wider band may overtake it). For a chain of ops the
interval is the time-weighted mean of their bands (`uncertainty.combine`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache

from gimletc.analysis.metrics import Interval, MetricBands, Metrics, plan_metrics
from gimletc.analysis.replay import replay
from gimletc.cost import uncertainty
from gimletc.cost.uncertainty import GIVEN, NO_TIME, Band, edge_factor, stated
from gimletc.hardware.cluster import Cluster
from gimletc.hardware.schema import Chip
from gimletc.ir import Graph, Op

__all__ = ["STEP_KINDS", "edge_graph", "kind_band", "metric_bands", "op_band"]

# The step kind whose band prices each model-level op: a draft step, and each side of an attention/FFN
# split, are decode steps; verify is its own kind.
STEP_KINDS: dict[str, str] = {
    "model.prefill": "prefill",
    "model.decode": "decode",
    "model.draft": "decode",
    "model.attention": "decode",
    "model.ffn": "decode",
    "model.verify": "verify",
}
GIVEN_KINDS = frozenset({"agent.tool", "agent.code"})
FREE_KINDS = frozenset({"agent.input", "agent.output", "agent.yield", "model.kv_rollback"})

SOURCE = ("each figure's interval when every op lies within its band: the single-request replay with every op at "
          "the low edge of its band, then at the high edge (docs/cost-model.md, uncertainty bands)")


@cache
def _is_moe(model: str) -> bool:
    from gimletc.models import get_model

    return get_model(model).moe is not None


def kind_band(kind: str, chip: Chip | None, stack: str, model: str | None = None) -> Band:
    """The band of the predicted seconds of an op of `kind` (an exec op kind, or the op kind an exec.compute
    runs: model.prefill, agent.tool, ...) on `chip` under `stack`; `model` for model ops."""
    if kind in STEP_KINDS and chip is not None:
        return uncertainty.band(chip, stack, STEP_KINDS[kind], moe=model is not None and _is_moe(model))
    if kind in GIVEN_KINDS:
        return GIVEN
    if kind in FREE_KINDS:
        return NO_TIME
    if kind == "exec.send":
        return stated("transfer time (latency + bytes / bandwidth per hop)")
    if kind == "exec.convert":
        return stated("layout/dtype conversion time")
    return stated(f"{kind} time (cost model)")


def op_band(op: Op, chip: Chip | None, stack: str) -> Band:
    """The band of `op`'s predicted seconds, on `chip` (its device's) under `stack`."""
    model = op.attr("model")
    kind = str(op.attr("kind_of", "")) if op.kind == "exec.compute" else op.kind
    return kind_band(kind, chip, stack, None if model is None else str(model))


def edge_graph(graph: Graph, chips: Mapping[str, Chip], stack: str, edge: int,
               keep: Callable[[Op], bool] | None = None) -> Graph:
    """`graph` with every op's `seconds` at the low (`edge` -1) or high (+1) edge of its band; `chips` maps
    device ids to their chips; ops for which `keep` says True stay as they are."""

    def at_edge(op: Op) -> Op:
        secs = op.attr("seconds")
        if not isinstance(secs, int | float) or secs <= 0 or (keep is not None and keep(op)):
            return op
        dev = op.attr("device")
        b = op_band(op, chips.get(str(dev)) if dev is not None else None, stack)
        return op if b.rel == 0 else op.with_attrs(seconds=float(secs) * edge_factor(b, edge))

    return graph.map_ops(at_edge)


def _measured(graph: Graph, chips: Mapping[str, Chip], stack: str) -> bool:
    for op, _ in graph.walk():
        secs = op.attr("seconds")
        if isinstance(secs, int | float) and secs > 0:
            dev = op.attr("device")
            if not op_band(op, chips.get(str(dev)) if dev is not None else None, stack).measured:
                return False
    return True


def metric_bands(graph: Graph, cl: Cluster, stack: str, nominal: Metrics) -> MetricBands:
    """The interval of each of `nominal`'s figures (the metrics of `graph` on `cl`) when every op lies
    within its band under `stack`."""
    chips = {d.id: d.chip for d in cl.devices()}
    edges = []
    for e in (-1, 1):
        g = edge_graph(graph, chips, stack, e)
        edges.append(plan_metrics(g, replay(g), cl))
    low, high = edges

    def iv(get: Callable[[Metrics], float]) -> Interval:
        vals = [get(nominal), get(low), get(high)]  # a replay's greedy order may change at an edge: never
        return Interval(lo=min(vals), hi=max(vals))  # let the interval leave out the prediction itself

    return MetricBands(
        latency_ms=iv(lambda m: m.latency_ms),
        ttft_ms={n: iv(lambda m, n=n: m.ttft_ms.get(n, nominal.ttft_ms[n])) for n in sorted(nominal.ttft_ms)},
        tpot_ms={n: iv(lambda m, n=n: m.tpot_ms.get(n, nominal.tpot_ms[n])) for n in sorted(nominal.tpot_ms)},
        energy_j=iv(lambda m: m.energy_j),
        cost_usd=iv(lambda m: m.cost_usd),
        throughput_rps=iv(lambda m: m.throughput_rps),
        measured=_measured(graph, chips, stack),
        source=SOURCE,
    )
