"""What a load simulation reports: per-request outcomes as they finish (`Outcomes`), and the
`LoadResult` built from them and from each resource's busy time (utilisation, energy).

Energy: an accelerator draws TDP during the operator time of its iterations and idle power
otherwise, from time 0 to the last completion; a host draws TDP over its lanes' busy fraction
(per socket) and idle power over the rest, when it ran anything at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gimletc.cost import accounting
from gimletc.sim.arrivals import Arrivals
from gimletc.sim.config import SimConfig, SimulationError
from gimletc.sim.kv import KVMemory
from gimletc.sim.state import Engine, Job, ModelQueue, Req

if TYPE_CHECKING:
    from gimletc.sim.loop import Simulator

__all__ = ["LoadResult", "Outcomes", "load_result", "note_iteration"]


@dataclass
class LoadResult:
    """Per-request outcomes and per-resource usage of one simulation (times in seconds)."""

    name: str
    arrivals: Arrivals
    arrival: np.ndarray
    ttft: np.ndarray  # first token of the request (end of its first prefill), from arrival; nan if none
    tpot: np.ndarray  # the worst per-call mean time per output token; nan if no decode
    e2e: np.ndarray
    out_tokens: np.ndarray
    llm_ttft: dict[str, np.ndarray]  # per LLM call: its first execution's TTFT (nan where it did not run)
    llm_tpot: dict[str, np.ndarray]
    span: float  # first arrival to last completion
    events: int
    engines: list[dict[str, Any]]
    utilisation: dict[str, float]
    energy_j: float
    chips: int
    power_w: float
    price_per_hour: float
    config: SimConfig
    # (resource, start, end, what, batch, iterations): engine iterations, tasks on hosts, transfers on links
    timeline: list[tuple[str, float, float, str, int, int]] = field(default_factory=list)
    cost_model_calls: int = 0
    heap_events: int = 0  # events taken off the heap (fast-forwarded iterations count once)
    policy: str = ""  # the batching policy the engines ran
    preemptions: int = 0  # running requests sent back to wait under KV pressure, all engines
    recomputed_tokens: int = 0  # tokens prefilled again to rebuild preempted requests' KV caches
    prefix_cache: dict[str, Any] | None = None  # prefix-cache totals over the engines (None: caching off)
    # Every iteration's batch when SimConfig(record_schedule=True) (a fast-forwarded run is one row).
    schedule: list[dict[str, Any]] | None = None

    @property
    def completed(self) -> int:
        return int(np.isfinite(self.e2e).sum())

    @property
    def throughput_tok_s(self) -> float:
        return float(self.out_tokens.sum()) / self.span if self.span > 0 else 0.0

    @property
    def throughput_req_s(self) -> float:
        return self.completed / self.span if self.span > 0 else 0.0

    def attainment(self, ttft_s: float | None, tpot_s: float | None) -> float:
        """Share of requests whose TTFT <= ttft_s and TPOT <= tpot_s (None: no limit on that axis)."""
        ok = np.isfinite(self.e2e)
        if ttft_s is not None:
            ok &= ~(self.ttft > ttft_s)  # nan (no LLM call) passes
        if tpot_s is not None:
            ok &= ~(self.tpot > tpot_s)
        return float(ok.mean()) if len(ok) else 0.0



def note_iteration(schedule: list[dict[str, Any]], kv: KVMemory, eng: Engine, t: float, kind: str, mq: ModelQueue,
                   decodes: int, parts: list[tuple[Job, int]], iters: int) -> None:
    """Keep an iteration's batch (SimConfig(record_schedule=True)): who decodes, which prompt tokens
    run (request, tokens, whether recomputed), the running set and the KV memory held as it starts."""
    schedule.append({
        "engine": eng.spec.id, "start": t, "kind": kind, "model": mq.name, "iterations": iters,
        "decodes": decodes, "decoding": sorted(e[2].req.id for e in mq.run) if decodes else [],
        "prefills": [(job.req.id, take, job.resume is not None) for job, take in parts],
        "tokens": decodes + sum(take for _, take in parts), "running": mq.active,
        "kv_used_gb": sum(kv.used[d] for d in eng.devs) / 1e9,
    })


class Outcomes:
    """Per-request figures, filled in as requests finish (nan where a request has none)."""

    def __init__(self, n: int):
        self.n = n
        self.ttft = np.full(n, np.nan)
        self.tpot = np.full(n, np.nan)
        self.e2e = np.full(n, np.nan)
        self.out = np.zeros(n, dtype=np.int64)
        self.llm_ttft: dict[str, np.ndarray] = {}
        self.llm_tpot: dict[str, np.ndarray] = {}

    def record(self, req: Req, t: float) -> None:
        i = req.id
        self.e2e[i] = t - req.t0
        if req.first < math.inf:
            self.ttft[i] = req.first
        if req.out_tokens:
            self.tpot[i] = req.tpot
        self.out[i] = req.out_tokens
        n = self.n
        for llm, v in req.llm_ttft.items():
            arr = self.llm_ttft.get(llm)
            if arr is None:
                arr = self.llm_ttft[llm] = np.full(n, np.nan)
            arr[i] = v
        for llm, v in req.llm_tpot.items():
            arr = self.llm_tpot.get(llm)
            if arr is None:
                arr = self.llm_tpot[llm] = np.full(n, np.nan)
            arr[i] = v


def load_result(sim: Simulator, t_end: float) -> LoadResult:
    """The result of a finished simulation whose last request completed at `t_end`."""
    arr = sim.arr
    res = sim.outcomes
    es = sim.engines
    if np.isnan(res.e2e).any():
        stuck = int(np.isnan(res.e2e).sum())
        raise SimulationError(f"{stuck} of {len(arr)} requests never finished (a task waits on nothing?)")
    span = t_end  # from time 0, where the arrival process starts, to the last completion
    util: dict[str, float] = {}
    energy = 0.0
    engines = []
    held, active = list(es.dev_busy_s), list(es.dev_active_s)
    for e in es.engines:  # devices an engine owns are accounted on the engine (`Engine.owns`)
        if e.owns:
            for d in e.devs:
                held[d], active[d] = e.busy_s, e.active_s
    for d, dev in enumerate(es.dev_ids):
        chip = es.dev_chip[d]
        util[dev] = held[d] / span if span > 0 else 0.0
        energy += accounting.energy_j(chip, active[d], span)
    totals: dict[str, Any] | None = None
    for e in es.engines:
        chip = e.spec.chip
        u = e.busy_s / span if span > 0 else 0.0
        pc = _prefix_counts(es.kv.caches[e.idx])
        if pc is not None:
            totals = {k: (totals or {}).get(k, 0) + v for k, v in pc.items() if k != "block"} | {"block": pc["block"]}
        engines.append({
            "id": e.spec.id,
            "devices": list(e.spec.devices),
            "chip": chip.name,
            "models": sorted({m.name for m in e.mqs}),
            "iterations": e.iters,
            "prefill_iterations": e.prefill_iters,
            "mean_decode_batch": (e.batch_sum / (e.iters - e.prefill_iters)) if e.iters > e.prefill_iters else 0.0,
            "max_decode_batch": e.max_batch_seen,
            "busy_s": e.busy_s,
            "utilisation": u,
            "kv_capacity_gb": es.kv.capacity_bytes(e) / 1e9,
            "policy": e.policy.name,
            "batching": {m.name: m.params.to_dict() for m in e.mqs},
            "preemptions": e.preemptions,
            "recomputed_tokens": e.recomputed,
            "prefix_cache": pc,
        })
    if totals is not None:
        totals["hit_rate"] = totals["hits"] / totals["lookups"] if totals["lookups"] else 0.0
    for h, pool in zip(sim.wl.hosts, sim.hosts, strict=True):
        busy = accounting.host_busy_s(pool.busy_s, pool.lanes)
        util[h.id] = busy / span if span > 0 else 0.0
        if pool.busy_s > 0:
            energy += accounting.energy_j(h.chip, busy, span, h.sockets)
    for name, pool in zip(sim.channel_names, sim.channels, strict=True):
        util[name] = pool.busy_s / span if span > 0 else 0.0
    return LoadResult(
        name=sim.wl.name,
        arrivals=arr,
        arrival=np.asarray(arr.times, dtype=float),
        ttft=res.ttft,
        tpot=res.tpot,
        e2e=res.e2e,
        out_tokens=res.out,
        llm_ttft=dict(sorted(res.llm_ttft.items())),
        llm_tpot=dict(sorted(res.llm_tpot.items())),
        span=span,
        events=sim.events,
        engines=engines,
        utilisation=dict(sorted(util.items())),
        energy_j=energy,
        chips=sim.wl.chips,
        power_w=sim.wl.power_w,
        price_per_hour=sim.wl.price_per_hour,
        config=sim.cfg,
        timeline=sim.timeline,
        cost_model_calls=sum(c.calls for c in es.costs.values()),
        heap_events=sim.heap_events,
        policy=es.policy_name,
        preemptions=sum(e.preemptions for e in es.engines),
        recomputed_tokens=sum(e.recomputed for e in es.engines),
        prefix_cache=totals,
        schedule=sim.schedule,
    )


def _prefix_counts(cache: Any) -> dict[str, Any] | None:
    """An engine's prefix-cache counters (None when it has no prefix cache)."""
    if cache is None:
        return None
    return {"block": cache.block, "lookups": cache.lookups, "hits": cache.hits, "misses": cache.lookups - cache.hits,
            "saved_tokens": cache.hit_tokens, "inserted": cache.inserted, "evictions": cache.evictions,
            "evicted_tokens": cache.evicted_tokens}
