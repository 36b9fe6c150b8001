"""`compile()`: an agent graph and a cluster in, a deployment plan out.

Runs the pass pipeline (default `DEFAULT_PIPELINE`), replays the result for
one request, collects placements, per-device programs, transfers and metrics,
and compiles the same graph onto single-chip-type clusters at the same power
to report the best homogeneous baseline beside the plan.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gimletc import __version__
from gimletc.analysis.bands import metric_bands
from gimletc.analysis.metrics import placed_computes, plan_metrics
from gimletc.analysis.replay import Timeline
from gimletc.analysis.runs import runs as expected_runs
from gimletc.cost import accounting
from gimletc.cost.uncertainty import interval_ratio, verdict
from gimletc.errors import GimletError
from gimletc.graph_io import load_graph
from gimletc.hardware import Cluster, get_chip, load_cluster
from gimletc.ir import Graph, Op
from gimletc.ir.text import print_graph
from gimletc.models.workload import DEFAULT_STACK, resolve_stack
from gimletc.passes.manager import Pass, PartitionScorer, PassContext, PassManager, RestScorer
from gimletc.passes.place import OBJECTIVES, Place, PlacementError
from gimletc.passes.results import PartitionReport
from gimletc.analysis.metrics import Interval, Metrics
from gimletc.plan import (
    Baseline,
    ClusterDevice,
    Comparison,
    ClusterSummary,
    Convert,
    DeploymentPlan,
    HostSummary,
    KVReuse,
    PartitionChoice,
    Placement,
    ReusedPrefix,
    Search,
    Step,
    Transfer,
)

DEFAULT_PIPELINE = "expand-llm,place,kv-reuse,insert-transfers,schedule,overlap"
MAX_BASELINE_CHIPS = 64


@dataclass
class CompileResult:
    plan: DeploymentPlan
    graph: Graph  # the exec-level graph
    timeline: Timeline
    ctx: PassContext = field(repr=False)


def _as_graph(graph: Any) -> Graph:
    if isinstance(graph, Graph):
        return graph
    if hasattr(graph, "build"):
        return graph.build()
    return load_graph(graph)


def _with_dtypes(g: Graph, weight: str | None, kv: str | None, compute: str | None) -> Graph:
    """`g` with every LLM call's model named in the given formats."""
    from gimletc.models.catalog import name_with_dtypes

    def rename(op: Any) -> Any:
        if op.kind == "agent.llm" and op.attr("model") is not None:
            return op.with_attrs(model=name_with_dtypes(str(op.attr("model")), weight, kv, compute))
        return op

    return g.map_ops(rename)


def _as_cluster(cluster: Any) -> Cluster:
    return cluster if isinstance(cluster, Cluster) else load_cluster(cluster)


def compile(  # noqa: A001 - the product's verb
    graph: Any,
    cluster: Any,
    *,
    objective: str = "latency",
    power_budget_w: float | None = None,
    pins: Mapping[str, str] | None = None,
    pipeline: str = DEFAULT_PIPELINE,
    baseline: bool = True,
    dump_after: frozenset[str] = frozenset(),
    progress: Callable[[str], None] | None = None,
    stack: str = DEFAULT_STACK,
    weight_dtype: str | None = None,
    kv_dtype: str | None = None,
    compute_dtype: str | None = None,
) -> CompileResult:
    """Compile `graph` (an ir.Graph, an AgentGraph or a file path) for `cluster` (a Cluster, preset or file).

    `stack` is the software stack the cost model prices: an engine stack ("vllm", the default, "sglang",
    "trtllm"; see gimletc.cost.engine) or "reference" (the PyTorch-level stack the H200 rows calibrate);
    "fused" is a deprecated name of "vllm". The dtypes, when given, apply to every LLM call's model
    (not to drafts, which name their own): the plan's ops then name e.g. `qwen3-32b@weight=fp8,kv=fp8`."""
    # A compile allocates many short-lived, acyclic objects: the cycle collector only costs time here.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        g = _as_graph(graph)
        if weight_dtype or kv_dtype or compute_dtype:
            g = _with_dtypes(g, weight_dtype, kv_dtype, compute_dtype)
        return _compile(g, cluster, objective, power_budget_w, pins, pipeline, baseline, dump_after, progress, stack)
    finally:
        if was_enabled:
            gc.enable()


def _compile(
    graph: Any,
    cluster: Any,
    objective: str,
    power_budget_w: float | None,
    pins: Mapping[str, str] | None,
    pipeline: str,
    baseline: bool,
    dump_after: frozenset[str],
    progress: Callable[[str], None] | None,
    stack: str,
) -> CompileResult:
    stack = resolve_stack(stack)
    if objective not in OBJECTIVES:
        raise GimletError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if power_budget_w is not None and not (power_budget_w > 0 and math.isfinite(power_budget_w)):
        raise GimletError(f"power budget must be a positive, finite number of watts; got {power_budget_w} W")
    objective = pipeline_objective(pipeline, objective)
    g, cl = _as_graph(graph), _as_cluster(cluster)
    result = _compile_one(g, cl, objective, power_budget_w, dict(pins or {}), pipeline, dump_after, progress, stack)
    if baseline:
        if progress:
            progress("baseline: compiling onto single-chip-type clusters at the same power")
        envelope = power_budget_w if power_budget_w is not None else result.plan.metrics.power_w
        base = best_baseline(g, cl, objective, envelope, pipeline, stack)
        plan = result.plan
        if base is not None:
            speedup = base.metrics.latency_ms / plan.metrics.latency_ms if plan.metrics.latency_ms > 0 else None
            ratio = plan.metrics.energy_j / base.metrics.energy_j if base.metrics.energy_j > 0 else None
            plan = plan.model_copy(update={"baseline": base, "speedup": speedup, "energy_ratio": ratio,
                                           "comparison": compare(plan.metrics, base.metrics)})
        else:
            sources = {**plan.sources, "baseline": "no single-chip-type cluster at this power holds every model"}
            plan = plan.model_copy(update={"sources": sources})
        result.plan = plan
    return result


def pipeline_objective(pipeline: str | Sequence[Pass], objective: str) -> str:
    """The objective the pipeline's placement optimises: its `place{objective=...}` where it names one
    (the last place pass's), else `objective`. The plan records it, the baseline is chosen by it and
    `compile` prints it, so a header never names an objective the placement did not use."""
    passes = PassManager(pipeline).passes
    named = [p.objective for p in passes if isinstance(p, Place) and p.objective is not None]
    return named[-1] if named else objective


def _compile_one(
    g: Graph,
    cl: Cluster,
    objective: str,
    budget: float | None,
    pins: dict[str, str],
    pipeline: str,
    dump_after: frozenset[str],
    progress: Callable[[str], None] | None,
    stack: str = DEFAULT_STACK,
) -> CompileResult:
    pm = PassManager(pipeline, goal="exec")  # a plan is built from exec-level IR
    unknown = sorted(dump_after - {p.name for p in pm.passes} - {"*"})
    if unknown:
        raise GimletError(f"--dump-ir-after {', '.join(unknown)}: no such pass in pipeline {str(pm)!r}")
    ctx = PassContext(cluster=cl, objective=objective, power_budget_w=budget, pins=pins, dump_after=dump_after,
                      progress=progress, stack=stack, score_placed=partition_scorer(pm.passes),
                      score_rest=rest_scorer(pm.passes))
    out = pm.run(g, ctx)
    check_pins_used(g, out, pins)
    if progress:
        progress("plan: replaying the compiled graph, collecting placements, programs and metrics")
    timeline = ctx.analyses.timeline(out)
    plan = build_plan(g, cl, out, timeline, ctx, str(pm), objective, budget)
    return CompileResult(plan, out, timeline, ctx)


def check_pins_used(g: Graph, out: Graph, pins: Mapping[str, str]) -> None:
    """A pin that names no op, LLM call or placement unit of the compiled graph would be ignored: refuse it."""
    if not pins:
        return
    known: set[str] = set()
    for op, _ in out.walk():
        known.add(op.name)
        for key in ("of", "llm", "unit"):
            v = op.attr(key)
            if v is not None:
                known.add(str(v))
    unused = sorted(k for k in pins if k not in known)
    if unused:
        names = [op.name for op, _ in g.walk() if op.kind != "agent.yield"]
        shown = ", ".join(names[:15]) + (" ..." if len(names) > 15 else "")
        raise GimletError(
            f"--pin {unused[0]}={pins[unused[0]]}: graph {g.attrs.get('gimlet.name', 'graph')} has no op, LLM call or "
            f"placement unit named {unused[0]!r} (its ops: {shown}; an LLM call's parts are NAME.prefill, "
            "NAME.decode, ... after the pass that makes them)"
        )


def partition_scorer(passes: Sequence[Pass]) -> PartitionScorer | None:
    """How `place` scores a partitioning of the LLM calls for this pipeline: the passes after the
    first `place`, run on the placed graph, then the plan's metrics on its replay (the numbers the
    plan reports). None when the pipeline has no `place`."""
    at = next((i for i, p in enumerate(passes) if isinstance(p, Place)), None)
    if at is None:
        return None
    after = tuple(passes[at + 1:])

    def score(placed: Graph, ctx: PassContext, objective: str) -> float:
        g = placed
        for p in after:
            g = p.run(g, ctx)
        return plan_metrics(g, ctx.analyses.timeline(g), ctx.cluster).objective(objective)

    return score


def rest_scorer(passes: Sequence[Pass]) -> RestScorer:
    """How a pass scores a rewrite for this pipeline: the passes after it, run on its output, then the plan's
    metrics on the replay (what the plan reports)."""
    passes = tuple(passes)

    def score(graph: Graph, ctx: PassContext, after: Pass) -> Any:
        at = next((i for i, p in enumerate(passes) if p is after), None)
        if at is None:
            raise GimletError(f"pass {after.name!r} asked to score the passes after it, but it is not in the "
                              f"pipeline {','.join(map(str, passes))!r}")
        g = graph
        for p in passes[at + 1:]:
            g = p.run(g, ctx)
        return plan_metrics(g, ctx.analyses.timeline(g), ctx.cluster)

    return score


# ---- plan assembly ------------------------------------------------------------------------


def inputs_digest(g: Graph, cl: Cluster, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    gtext = print_graph(g)
    ctext = json.dumps(cl.model_dump(mode="json"), sort_keys=True)
    inputs = {
        "graph_sha256": hashlib.sha256(gtext.encode()).hexdigest(),
        "cluster_sha256": hashlib.sha256(ctext.encode()).hexdigest(),
        "options": dict(sorted(options.items())),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return digest, inputs


def build_plan(
    g: Graph, cl: Cluster, out: Graph, tl: Timeline, ctx: PassContext, pipeline: str, objective: str, budget: float | None
) -> DeploymentPlan:
    chips = {d.id: d for d in cl.devices()}
    runs = expected_runs(out)
    computes = placed_computes(out)
    placements = []
    for op in computes:
        dev = str(op.attr("device"))
        placements.append(
            Placement(
                op=op.name,
                kind=str(op.attr("kind_of")),
                llm=op.attr("llm"),
                model=op.attr("model"),
                device=dev,
                devices=[str(d) for d in op.attr("devices")],
                chip=chips[dev].chip.name,
                seconds=_total_seconds(op),
                runs=runs.get(op.name, 1.0),
            )
        )
    placements.sort(key=lambda p: p.op)

    # Per-resource programs, in replay order.
    kinds = {op.name: op for op, _ in out.walk()}
    programs: dict[str, list[Step]] = {}
    for e in sorted(tl.events, key=lambda e: (e.start, e.end, e.op)):
        op = kinds.get(e.op)
        if op is None or not op.kind.startswith("exec."):
            continue
        for r in e.resources:
            programs.setdefault(r, []).append(
                Step(op=e.op, kind=op.kind, of=op.attr("of"), seconds=float(op.attr("seconds", 0.0)),
                     start_ms=e.start * 1e3, end_ms=e.end * 1e3)
            )
    programs = dict(sorted(programs.items()))

    chunks = {op.name: int(op.attr("chunks", 1)) for op, _ in out.walk() if op.kind == "exec.send"}
    transfers = []
    for rec in ctx.transfers:
        conv = Convert(**dataclasses.asdict(rec.convert)) if rec.convert is not None else None
        transfers.append(
            Transfer(value=rec.value, src=rec.src, dst=rec.dst, route=rec.route, hops=list(rec.hops),
                     bytes=rec.bytes, seconds=rec.seconds, chunks=chunks.get(rec.send, 1), convert=conv)
        )

    metrics = plan_metrics(out, tl, cl)
    metrics = metrics.model_copy(update={"bands": metric_bands(out, cl, ctx.stack, metrics)})
    pl = ctx.placement
    search = None
    if pl is not None:
        search = Search(objective=pl.objective, method=pl.method, evaluated=pl.evaluated,
                        objective_value=pl.objective_value, bound=pl.bound, gap=pl.gap, units=pl.units,
                        search_space_log10=pl.search_space_log10)
    options = {"objective": objective, "power_budget_w": budget, "pipeline": pipeline, "pins": dict(sorted(ctx.pins.items())),
               "stack": ctx.stack}
    digest, inputs = inputs_digest(g, cl, options)
    devices = [ClusterDevice(id=d.id, node=d.node, chip=d.chip.name, role=d.role) for d in cl.devices()]
    hosts = {d.id: HostSummary(sockets=accounting.units(cl, d), lanes=accounting.lanes(cl, d)) for d in cl.devices()
             if d.is_host}
    return DeploymentPlan(
        gimletc_version=__version__,
        name=str(g.attrs.get("gimlet.name", "graph")),
        digest=digest,
        inputs=inputs,
        objective=objective,
        power_budget_w=budget,
        pipeline=pipeline,
        stack=ctx.stack,
        cluster=ClusterSummary(name=cl.name, devices=devices, power_w=cl.power_w(), hosts=hosts),
        placements=placements,
        programs=programs,
        transfers=transfers,
        metrics=metrics,
        critical_path=tl.critical_path(),
        search=search,
        overlap=dict(sorted(ctx.overlap.to_plan().items())) if ctx.overlap is not None else {},
        partitions={n: _partition_choice(v) for n, v in sorted(ctx.partitions.items())},
        kv_reuse=_kv_reuse(ctx),
        ir=print_graph(out),
        warnings=list(pl.warnings) if pl is not None else [],
        sources={
            "metrics": "predicted by the cost model and the single-request replay, not measured",
            "efficiency": "h200 and xeon-host-16c fitted to measurements; other chips derived by rule (docs/cost-model.md)",
            "bands": "metrics.bands: each figure's interval when every op lies within its cost-model band (held-out "
                     "errors, or stated where nothing was measured; docs/cost-model.md, uncertainty bands)",
        },
    )


def compare(plan: Metrics, base: Metrics) -> Comparison | None:
    """This plan's metrics against the baseline's over their bands (None without both bands, or where a
    denominator's band reaches zero and the ratio has no upper bound)."""
    if plan.bands is None or base.bands is None:
        return None
    p, b = plan.bands, base.bands
    lat, base_lat = p.latency_ms.pair(), b.latency_ms.pair()
    en, base_en = p.energy_j.pair(), b.energy_j.pair()
    if lat[0] <= 0 or base_en[0] <= 0:
        return None
    s_lo, s_hi = interval_ratio(base_lat, lat)
    e_lo, e_hi = interval_ratio(en, base_en)
    return Comparison(
        speedup=Interval(lo=s_lo, hi=s_hi), energy_ratio=Interval(lo=e_lo, hi=e_hi),
        latency=verdict(lat, base_lat, words=("faster", "slower")),  # type: ignore[arg-type]
        energy=verdict(en, base_en, words=("less", "more")),  # type: ignore[arg-type]
    )


def _total_seconds(op: Op) -> float:
    """An op's full time, its layer-streamed chunks included."""
    if op.attr("chunks") is None:
        return float(op.attr("seconds"))
    return float(op.attr("seconds")) * int(op.attr("chunks"))


def _kv_reuse(ctx: PassContext) -> KVReuse | None:
    """The plan's `kv_reuse`: what kv-reuse kept (None when no prefill shares a prefix)."""
    r = ctx.kv_reuse
    if r is None:
        return None
    reused = [ReusedPrefix(op=x.op, llm=x.llm, model=x.model, devices=list(x.devices), prompt_tokens=x.prompt_tokens,
                           cached_first=x.cached_first, cached_later=x.cached_later, sources=list(x.sources),
                           route=x.route, runs=x.runs, seconds=x.seconds, seconds_without=x.seconds_without,
                           saved_s=x.saved_s, kv_bytes=x.kv_bytes) for x in r.reused]
    return KVReuse(reused=reused, kept=r.kept, saved_prefill_s=sum(x.saved_s for x in r.reused),
                   latency_ms_without=r.latency_s_without * 1e3, energy_j_without=r.energy_j_without,
                   ttft_ms_without={llm: s * 1e3 for llm, s in sorted(r.ttft_s_without)})


def _partition_choice(r: PartitionReport) -> PartitionChoice:
    return PartitionChoice(kind=r.kind, detail=r.detail, note=r.note, objective=r.objective, runner_up=r.runner_up,
                           runner_up_objective=r.runner_up_objective, options=list(r.options), why=r.why)


# ---- the homogeneous baseline ----------------------------------------------------------------


def baseline_cluster(cl: Cluster, chip: str, envelope_w: float) -> Cluster | None:
    """One node of as many `chip`s as fit `envelope_w` beside a host like the cluster's, or None."""
    node = next((n for n in cl.nodes if chip in n.chips), None)
    if node is None:
        return None
    host = node.host
    c = get_chip(chip)
    host_w = get_chip(host.cpu).tdp_w * host.sockets
    n = min(MAX_BASELINE_CHIPS, int(math.floor((envelope_w - host_w) / c.tdp_w + 1e-9)))
    if n < 1:
        return None
    spec: dict[str, Any] = {
        "name": f"baseline-{chip}-x{n}",
        "nodes": [{"name": "base", "chips": {chip: n}, "host": host.model_dump(mode="json")}],
        "links": [],
    }
    if node.host_link is not None:
        spec["nodes"][0]["host_link"] = node.host_link.model_dump(mode="json")
    if node.fabric is not None:
        spec["nodes"][0]["fabric"] = node.fabric.model_dump(mode="json")
    elif c.scale_up_bw:
        spec["nodes"][0]["fabric"] = {"kind": "chip-to-chip", "bandwidth": c.scale_up_bw, "latency": 2e-6}
    return Cluster.model_validate(spec)


def best_baseline(g: Graph, cl: Cluster, objective: str, envelope_w: float, pipeline: str,
                  stack: str = DEFAULT_STACK) -> Baseline | None:
    """The best plan on one accelerator type at the same power envelope (None if no type holds the models)."""
    best: tuple[tuple, Baseline] | None = None
    for chip in sorted({d.chip.name for d in cl.devices() if d.role != "host"}):
        bc = baseline_cluster(cl, chip, envelope_w)
        if bc is None:
            continue
        try:
            r = _compile_one(g, bc, objective, envelope_w, {}, pipeline, frozenset(), None, stack)
        except PlacementError:
            continue
        m = r.plan.metrics
        value = m.objective(objective)
        n = sum(1 for d in bc.devices() if d.role != "host")
        b = Baseline(chip=chip, chips=n, power_w=m.power_w, metrics=m, placements=r.plan.placements,
                     note=f"{n}x {chip} in one node with the cluster's host CPU, power envelope {envelope_w:.0f} W")
        key = (value, m.latency_ms, chip)
        if best is None or key < best[0]:
            best = (key, b)
    return best[1] if best else None
