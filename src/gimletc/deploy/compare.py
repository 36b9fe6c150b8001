"""A prediction against a measurement: `gimletc simulate --json` beside the deployment benchmark's output.

For each figure both carry (TTFT, TPOT and end-to-end p50/p90/p99, output tokens/s, goodput), the
predicted value, the interval the prediction's uncertainty band gives it (`bands` of `simulate --json`:
the same simulation with every step at the low, then the high edge of its cost-model band), the
measured value, the error (measured / predicted - 1), and whether the measurement lies within the band.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gimletc.errors import ConfigError

__all__ = ["FIGURES", "Row", "compare", "workload_mismatches"]

FIGURES: tuple[tuple[str, str | None, str], ...] = (
    ("ttft_ms", "p50", "TTFT p50 ms"), ("ttft_ms", "p90", "TTFT p90 ms"), ("ttft_ms", "p99", "TTFT p99 ms"),
    ("tpot_ms", "p50", "TPOT p50 ms"), ("tpot_ms", "p90", "TPOT p90 ms"), ("tpot_ms", "p99", "TPOT p99 ms"),
    ("e2e_ms", "p50", "end-to-end p50 ms"), ("e2e_ms", "p90", "end-to-end p90 ms"), ("e2e_ms", "p99", "end-to-end p99 ms"),
    ("throughput_tok_s", None, "output tokens/s"), ("goodput_req_s", None, "goodput req/s"),
)


@dataclass(frozen=True)
class Row:
    figure: str
    predicted: float | None
    lo: float | None
    hi: float | None
    measured: float | None
    error: float | None  # measured / predicted - 1
    verdict: str  # within band | below band | above band | no band | not measured | not predicted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _get(d: Mapping[str, Any], key: str, sub: str | None) -> Any:
    v = d.get(key)
    if sub is not None:
        v = v.get(sub) if isinstance(v, Mapping) else None
    return v


def _check(d: Any, what: str, source: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping) or not isinstance(d.get("ttft_ms"), Mapping):
        raise ConfigError(f"{what}: not a {'`gimletc simulate --json`' if source == 'predicted' else 'benchmark'} "
                          "result (no ttft_ms percentiles)")
    src = str(d.get("source", ""))
    if not src.startswith(source):
        raise ConfigError(f"{what}: its source says {src[:60]!r}, not {source!r}; give the "
                          + ("prediction (`gimletc simulate ... --json`) first" if source == "predicted" else
                             "benchmark's output (benchmark/bench.py --out) second"))
    return d


def compare(predicted: Any, measured: Any, pred_name: str = "PREDICTED", meas_name: str = "MEASURED") -> list[Row]:
    """One Row per figure of `FIGURES` (see the module docstring)."""
    p = _check(predicted, pred_name, "predicted")
    m = _check(measured, meas_name, "measured")
    bands = p.get("bands") if isinstance(p.get("bands"), Mapping) else {}
    rows = []
    for key, sub, label in FIGURES:
        pv, mv = _num(_get(p, key, sub)), _num(_get(m, key, sub))
        b = _get(bands, key, sub)
        lo = _num(b.get("lo")) if isinstance(b, Mapping) else None
        hi = _num(b.get("hi")) if isinstance(b, Mapping) else None
        err = (mv / pv - 1.0) if pv and mv is not None else None
        if pv is None:
            verdict = "not predicted"
        elif mv is None:
            verdict = "not measured"
        elif lo is None or hi is None:
            verdict = "no band"
        elif mv < lo:
            verdict = "below band"
        elif mv > hi:
            verdict = "above band"
        else:
            verdict = "within band"
        rows.append(Row(label, pv, lo, hi, mv, err, verdict))
    return rows


def workload_mismatches(predicted: Mapping[str, Any], measured: Mapping[str, Any]) -> list[str]:
    """Ways the two runs were not the same workload (a comparison of them compares different things)."""
    out = []
    if predicted.get("name") != measured.get("name"):
        out.append(f"graph: predicted {predicted.get('name')!r}, measured {measured.get('name')!r}")
    pa, ma = predicted.get("arrivals") or {}, measured.get("arrivals") or {}
    pr, mr = _num(pa.get("rate_req_s")), _num(ma.get("rate_req_s"))
    if pr is not None and mr is not None and abs(pr - mr) > 1e-9 * max(pr, mr):
        out.append(f"arrival rate: predicted {pr:g} req/s, measured {mr:g} req/s")
    if pa.get("requests") != ma.get("requests"):
        out.append(f"requests: predicted {pa.get('requests')}, measured {ma.get('requests')}")
    if (predicted.get("slo") or None) != (measured.get("slo") or None):
        out.append(f"SLO: predicted {predicted.get('slo')}, measured {measured.get('slo')}")
    failed = measured.get("failed")
    if isinstance(failed, int) and failed:
        out.append(f"{failed} measured request(s) failed: {'; '.join(measured.get('errors') or [])[:300]}")
    return out
