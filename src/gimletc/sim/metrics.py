"""Serving metrics from a load simulation: latency percentiles, throughput, SLO attainment,
goodput (by bisection over the arrival rate), energy, utilisation, and the per-device timeline.

Definitions (docs/serving.md):
- TTFT of a request: from its arrival to the end of its first prefill (the first
  token of its first LLM call). Per LLM call: the end of that call's first prefill.
- TPOT of an LLM call: (end of its decode − end of its prefill) / output tokens,
  so admission waits and KV transfers count, as a user sees them; a request's
  TPOT is the worst of its calls.
- Goodput under an SLO: the highest arrival rate at which at least `share`
  (default 90%) of the requests meet TTFT <= ttft and TPOT <= tpot.
- Tokens/s per user: 1 / median TPOT; tokens/s per chip at a rate: rate x mean output
  tokens per request / chips (the steady state the rate sustains; a run's own average,
  `throughput_tok_s`, also counts its ramp-up and drain).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gimletc.errors import GimletError
from gimletc.sim.results import LoadResult

__all__ = ["SLO", "GoodputPoint", "GoodputResult", "goodput", "percentiles", "summary", "timeline_trace"]


@dataclass(frozen=True)
class SLO:
    """Service-level objectives in seconds (None: no limit on that axis) and the share that must meet them."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    share: float = 0.9

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise GimletError(f"SLO {name[:-2]} must be a positive number of seconds; got {v!r}")
        if not (isinstance(self.share, (int, float)) and 0 < self.share <= 1):
            raise GimletError(f"SLO share must be in (0, 1]; got {self.share!r}")

    @property
    def empty(self) -> bool:
        return self.ttft_s is None and self.tpot_s is None

    def met(self, result: LoadResult) -> float:
        return result.attainment(self.ttft_s, self.tpot_s)

    def to_dict(self) -> dict:
        ms = lambda v: None if v is None else v * 1e3  # noqa: E731
        return {"ttft_ms": ms(self.ttft_s), "tpot_ms": ms(self.tpot_s), "share": self.share}


def percentiles(x: np.ndarray, scale: float = 1e3) -> dict[str, float | None]:
    """p50, p90, p99, mean and max of the finite values of `x` times `scale` (None when there are none)."""
    v = x[np.isfinite(x)]
    if len(v) == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {"p50": float(p50) * scale, "p90": float(p90) * scale, "p99": float(p99) * scale,
            "mean": float(v.mean()) * scale, "max": float(v.max()) * scale}


@dataclass(frozen=True)
class GoodputPoint:
    """One evaluation of the bisection: an operating point of the deployment."""

    rate: float
    attainment: float
    throughput_tok_s: float  # served: rate x mean output tokens per request (steady state)
    tok_s_per_user: float  # 1 / median TPOT (0 when no decode)
    ttft_p90_ms: float | None
    tpot_p90_ms: float | None
    measured_tok_s: float = 0.0  # output tokens / simulated span (ramp-up and drain included)

    def to_dict(self) -> dict:
        return {"rate_req_s": self.rate, "attainment": self.attainment, "throughput_tok_s": self.throughput_tok_s,
                "measured_tok_s": self.measured_tok_s, "tok_s_per_user": self.tok_s_per_user,
                "ttft_p90_ms": self.ttft_p90_ms, "tpot_p90_ms": self.tpot_p90_ms}


@dataclass
class GoodputResult:
    """The highest rate found that meets the SLO (0 if even a trickle fails), and every rate tried."""

    rate: float
    slo: SLO
    points: list[GoodputPoint] = field(default_factory=list)
    best: LoadResult | None = None  # the simulation at `rate`

    @property
    def passing(self) -> list[GoodputPoint]:
        return [p for p in self.points if p.attainment >= self.slo.share]

    def to_dict(self) -> dict:
        return {"goodput_req_s": self.rate, "slo": self.slo.to_dict(), "evaluations": len(self.points),
                "points": [p.to_dict() for p in sorted(self.points, key=lambda p: p.rate)]}


def point(rate: float, result: LoadResult, slo: SLO) -> GoodputPoint:
    """The operating point of a simulation at `rate`: its throughput is what the rate serves in steady
    state (rate x mean output tokens per request), not the run's average over its ramp-up and drain."""
    tpot = result.tpot[np.isfinite(result.tpot)]
    med = float(np.median(tpot)) if len(tpot) else 0.0
    ttft = percentiles(result.ttft)["p90"]
    served = rate * float(result.out_tokens.mean()) if len(result.out_tokens) else 0.0
    return GoodputPoint(rate, slo.met(result), served, 1.0 / med if med > 0 else 0.0,
                        ttft, percentiles(result.tpot)["p90"], result.throughput_tok_s)


def goodput(run: Callable[[float], LoadResult], slo: SLO, start: float, rtol: float = 0.03,
            max_evals: int = 24, floor_factor: float = 2.0**-12,
            progress: Callable[[GoodputPoint], None] | None = None) -> GoodputResult:
    """Bisect the arrival rate for the highest one at which `slo.share` of requests meet `slo`.

    `run(rate)` simulates at a rate. From `start`, the rate doubles while the
    SLO holds (or halves while it fails) to bracket the answer, then the
    bracket is bisected geometrically until hi/lo < 1 + rtol or `max_evals`
    simulations were run. Returns 0 if the SLO fails even at start·floor_factor.
    Attainment is assumed to fall with rate; with a seeded arrival pattern
    scaled by rate it does, up to the noise of a finite run."""
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start > 0):
        raise GimletError(f"goodput search needs a positive starting rate; got {start!r}")
    out = GoodputResult(0.0, slo)
    cache: dict[float, GoodputPoint] = {}
    kept: dict[float, LoadResult] = {}  # only the highest passing rate's run: `lo` never falls (bounded memory)

    def ok(rate: float) -> bool:
        if rate not in cache:
            res = run(rate)
            pt = cache[rate] = point(rate, res, slo)
            out.points.append(pt)
            if pt.attainment >= slo.share and all(rate > r for r in kept):
                kept.clear()
                kept[rate] = res
            if progress:
                progress(pt)
        return cache[rate].attainment >= slo.share

    lo, hi = None, None
    r = float(start)
    if ok(r):
        lo = r
        while len(out.points) < max_evals:
            r *= 2
            if ok(r):
                lo = r
            else:
                hi = r
                break
    else:
        hi = r
        floor = start * floor_factor
        while len(out.points) < max_evals and r > floor:
            r /= 2
            if ok(r):
                lo = r
                break
            hi = r
    if lo is None:
        return out
    if hi is not None:
        while hi / lo > 1 + rtol and len(out.points) < max_evals:
            mid = math.sqrt(lo * hi)
            if ok(mid):
                lo = mid
            else:
                hi = mid
    out.rate = lo
    out.best = kept[lo]
    return out


def summary(result: LoadResult, slo: SLO | None = None, good: GoodputResult | None = None) -> dict[str, Any]:
    """One JSON-ready object: latency percentiles (ms), throughput, SLO attainment, goodput, energy, utilisation."""
    tokens = int(result.out_tokens.sum())
    n = len(result.e2e)
    d: dict[str, Any] = {
        "name": result.name,
        "requests": n,
        "completed": result.completed,
        "arrivals": result.arrivals.describe(),
        "duration_s": result.span,
        "ttft_ms": percentiles(result.ttft),
        "tpot_ms": percentiles(result.tpot),
        "e2e_ms": percentiles(result.e2e),
        "throughput_tok_s": result.throughput_tok_s,
        "throughput_req_s": result.throughput_req_s,
        "output_tokens": tokens,
        "energy_j": result.energy_j,
        "energy_per_request_j": result.energy_j / n if n else 0.0,
        "energy_per_token_j": result.energy_j / tokens if tokens else None,
        "chips": result.chips,
        "power_w": result.power_w,
        "utilisation": result.utilisation,
        "engines": result.engines,
        "llms": {
            name: {"ttft_ms": percentiles(result.llm_ttft[name]),
                   "tpot_ms": percentiles(result.llm_tpot[name]) if name in result.llm_tpot else None}
            for name in result.llm_ttft
        },
        "events": result.events,
        "heap_events": result.heap_events,
        "policy": result.policy,
        "preemptions": result.preemptions,
        "recomputed_tokens": result.recomputed_tokens,
        "prefix_cache": result.prefix_cache,
        "config": result.config.to_dict(),
        "slo": slo.to_dict() if slo is not None and not slo.empty else None,
        "slo_attainment": slo.met(result) if slo is not None and not slo.empty else None,
        "goodput_req_s": good.rate if good is not None else None,
        "goodput": good.to_dict() if good is not None else None,
        "source": "predicted: cost model (gimletc.cost) + load simulation (gimletc.sim.load)",
    }
    if result.chips:
        d["throughput_tok_s_per_chip"] = result.throughput_tok_s / result.chips
    return d


def timeline_trace(result: LoadResult) -> dict[str, Any]:
    """The recorded per-device timeline (SimConfig(record_timeline=True)) as a Chrome/Perfetto trace:
    one track per engine, host and link; an event per iteration (or run of identical decode
    iterations, `args.iterations`) or task, `args.batch` its batch."""
    tracks = sorted({r for r, *_ in result.timeline})
    tid = {r: i + 1 for i, r in enumerate(tracks)}
    events: list[dict[str, Any]] = [{"ph": "M", "pid": 1, "tid": 0, "name": "process_name",
                                     "args": {"name": f"{result.name} under load"}}]
    for r in tracks:
        events.append({"ph": "M", "pid": 1, "tid": tid[r], "name": "thread_name", "args": {"name": r}})
    rows = sorted(result.timeline, key=lambda e: (tid[e[0]], e[1], e[2], e[3]))
    for r, start, end, label, batch, iters in rows:
        events.append({"ph": "X", "pid": 1, "tid": tid[r], "ts": round(start * 1e6, 3),
                       "dur": round((end - start) * 1e6, 3), "name": label, "cat": label,
                       "args": {"batch": batch, "iterations": iters}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}
