"""A compiled graph's per-request metrics, from its single-request replay.

`plan_metrics` is what the plan reports and what the driver's partition scorer
minimises: latency (the replay's makespan), TTFT and TPOT per LLM call, energy,
power, cost, throughput and utilisation per device. Busy time becomes joules
and dollars through `gimletc.cost.accounting`; a host's lanes fold into the host.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from gimletc.analysis.replay import Event, Timeline
from gimletc.cost import accounting
from gimletc.hardware.cluster import Cluster
from gimletc.hardware.resources import device_of, is_lane
from gimletc.ir import Graph, Op
from gimletc.ir.names import decode_name, prefill_name

__all__ = ["Interval", "LLMMetrics", "MetricBands", "Metrics", "placed_computes", "plan_metrics"]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMMetrics(_M):
    model: str
    prompt_tokens: int
    output_tokens: int
    ttft_ms: float = Field(description="time to first token: end of the prefill, from the request's start")
    tpot_ms: float = Field(description="time per output token of the decode")
    prefill_device: str
    decode_device: str


class Interval(_M):
    """Where a predicted figure lies when every prediction it is built from lies within its band."""

    lo: float
    hi: float

    def pair(self) -> tuple[float, float]:
        return self.lo, self.hi


class MetricBands(_M):
    """The uncertainty of a plan's metrics, shaped like the metrics (`gimletc.analysis.bands`): each figure's
    interval when every op lies within its band (the replay with every op at its low, then its high edge)."""

    latency_ms: Interval
    ttft_ms: dict[str, Interval] = Field(description="per LLM node")
    tpot_ms: dict[str, Interval] = Field(description="per LLM node")
    energy_j: Interval
    cost_usd: Interval
    throughput_rps: Interval
    measured: bool = Field(description="every op's band comes from held-out measurements (none stated)")
    source: str = ""


class Metrics(_M):
    latency_ms: float = Field(description="end-to-end latency of one request")
    ttft_ms: dict[str, float] = Field(description="per LLM node")
    tpot_ms: dict[str, float] = Field(description="per LLM node")
    energy_j: float = Field(description="per request: TDP while busy, idle power otherwise, devices used")
    power_w: float = Field(description="TDP of the devices the plan uses")
    cost_usd: float = Field(description="per request: price per chip-hour x busy time")
    throughput_rps: float = Field(description="1 / busiest device's busy time per request")
    utilisation: dict[str, float] = Field(description="busy fraction of the latency, per device")
    llms: dict[str, LLMMetrics] = Field(default_factory=dict)
    bands: MetricBands | None = Field(
        None, exclude_if=lambda v: v is None,
        description="uncertainty: each figure's interval from the op-level bands (docs/cost-model.md, uncertainty bands)")
    source: str = "predicted: cost model (gimletc.cost) + single-request replay (gimletc.sim)"

    def objective(self, kind: str) -> float:
        """The value an objective minimises: latency, energy and cost as they are, throughput negated."""
        return {"latency": self.latency_ms, "energy": self.energy_j, "cost": self.cost_usd,
                "throughput": -self.throughput_rps}[kind]


def placed_computes(out: Graph) -> list[Op]:
    """Every exec.compute of a placed op, once: a layer-streamed prefill counts as its last chunk,
    which keeps the op's name and results."""
    return [
        op for op, _ in out.walk()
        if op.kind == "exec.compute" and (op.attr("chunk") is None or op.attr("chunk") == op.attr("chunks") - 1)
    ]


def device_busy(tl: Timeline, cl: Cluster) -> dict[str, float]:
    """Busy seconds per device of the cluster; each CPU lane adds its busy time / the host's lanes."""
    chips = {d.id: d for d in cl.devices()}
    busy: dict[str, float] = {}
    for r, b in tl.busy.items():
        if r in tl.channels:
            continue
        dev = chips.get(device_of(r))
        if dev is not None:
            share = accounting.host_busy_s(b, accounting.lanes(cl, dev)) if is_lane(r) else b
            busy[dev.id] = busy.get(dev.id, 0.0) + share
    return busy


def plan_metrics(out: Graph, tl: Timeline, cl: Cluster) -> Metrics:
    """Per-request metrics of a compiled graph from its replay (every figure predicted)."""
    chips = {d.id: d for d in cl.devices()}
    busy = device_busy(tl, cl)
    span = tl.makespan
    energy = cost = power = 0.0
    for d in sorted(busy):
        dev = chips[d]
        units = accounting.units(cl, dev)
        energy += accounting.energy_j(dev.chip, busy[d], span, units)
        cost += accounting.cost_usd(dev.chip, busy[d], units)
        power += accounting.power_w(dev.chip, units)
    ttft, tpot, llms = _llm_metrics(out, tl)
    bottleneck = max(busy.values(), default=0.0)
    return Metrics(
        latency_ms=span * 1e3,
        ttft_ms=ttft,
        tpot_ms=tpot,
        energy_j=energy,
        power_w=power,
        cost_usd=cost,
        # 0 where no device is busy, or busy so briefly that 1 / busy overflows (not a JSON number)
        throughput_rps=1.0 / bottleneck if bottleneck > 0 and math.isfinite(1.0 / bottleneck) else 0.0,
        utilisation={d: (busy[d] / span if span > 0 else 0.0) for d in sorted(busy)},
        llms=llms,
    )


def _llm_metrics(out: Graph, tl: Timeline) -> tuple[dict[str, float], dict[str, float], dict[str, LLMMetrics]]:
    """TTFT and TPOT (ms) and the metrics of each LLM call."""
    # Events at any depth: an LLM call inside a loop is measured on the loop's first iteration.
    events: dict[str, Event] = {}
    for e in tl.events:
        events.setdefault(e.op, e)
    ops = {op.name: op for op, _ in out.walk()}
    calls: dict[str, dict[str, list[Op]]] = {}
    for op in placed_computes(out):
        if op.attr("llm") is not None:
            calls.setdefault(str(op.attr("llm")), {}).setdefault(str(op.attr("kind_of")), []).append(op)
    ttft: dict[str, float] = {}
    tpot: dict[str, float] = {}
    llms: dict[str, LLMMetrics] = {}
    for name in sorted(calls):
        c = calls[name]
        prefills = c.get("model.prefill", [])
        if not prefills:
            continue
        target = max(prefills, key=lambda o: int(o.attr("stage", 0)))  # the last pipeline stage emits the token
        target = next((o for o in prefills if o.name == prefill_name(name)), target)
        end = max((events[o.name].end for o in prefills if o.name in events), default=0.0)
        loop = ops.get(decode_name(name))
        if loop is not None and loop.kind == "agent.loop":
            out_tokens = int(loop.attr("max"))
            decode_s = events[loop.name].duration if loop.name in events else 0.0
            inner = [o for o, _ in loop.regions[0].walk() if o.kind == "exec.compute"]
            decode_dev = str(inner[-1].attr("device")) if inner else str(target.attr("device"))
        else:
            d = c.get("model.decode", [None])[0]
            out_tokens = int(d.attr("tokens", 0)) if d is not None else 0
            decode_s = float(d.attr("seconds")) if d is not None else 0.0
            decode_dev = str(d.attr("device")) if d is not None else str(target.attr("device"))
        ttft[name] = end * 1e3
        tpot[name] = decode_s / out_tokens * 1e3 if out_tokens else 0.0
        llms[name] = LLMMetrics(
            model=str(target.attr("model")),
            prompt_tokens=int(target.attr("tokens", 0)),
            output_tokens=out_tokens,
            ttft_ms=ttft[name],
            tpot_ms=tpot[name],
            prefill_device=str(target.attr("device")),
            decode_device=decode_dev,
        )
    return ttft, tpot, llms
