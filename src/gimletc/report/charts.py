"""The report's metrics table (this plan against its single-chip-type baseline, with uncertainty
bands where the plan carries them) and the serving Pareto frontier of a search result."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from gimletc.errors import GimletError


# ---- uncertainty bands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    lo: float
    hi: float

    def overlaps(self, other: Band) -> bool:
        return self.lo <= other.hi and other.lo <= self.hi


def metric_band(metrics: Mapping[str, Any], path: Sequence[str], value: float) -> Band | None:
    """The uncertainty band of the metric at `path` (e.g. ("latency_ms",) or ("ttft_ms", "plan")) when
    the plan carries one, else None.

    Bands are read from `metrics["bands"]`, a mapping shaped like the metrics themselves whose leaves
    are `{"lo": x, "hi": y}` (absolute), `{"rel": r}` or a bare number r (value x (1 -/+ r)). This is
    the one place that knows where a plan keeps its bands."""
    node: Any = metrics.get("bands")
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if isinstance(node, Mapping) and "lo" in node and "hi" in node:
        lo, hi = float(node["lo"]), float(node["hi"])
    elif isinstance(node, Mapping) and "rel" in node:
        r = float(node["rel"])
        lo, hi = value * (1 - r), value * (1 + r)
    elif isinstance(node, int | float) and not isinstance(node, bool):
        lo, hi = value * (1 - float(node)), value * (1 + float(node))
    else:
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        return None
    return Band(lo, hi)


# ---- metrics ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRow:
    label: str
    path: tuple[str, ...]
    unit: str
    lower_is_better: bool
    plan: float
    base: float | None
    plan_band: Band | None
    base_band: Band | None


def metric_rows(plan: Mapping[str, Any]) -> list[MetricRow]:
    m = plan["metrics"]
    b = plan["baseline"]["metrics"] if plan.get("baseline") else None
    specs: list[tuple[str, tuple[str, ...], str, bool]] = [
        ("end-to-end latency", ("latency_ms",), "ms", True),
        ("energy per request", ("energy_j",), "J", True),
        ("cost per request", ("cost_usd",), "USD", True),
        ("throughput", ("throughput_rps",), "req/s", False),
        ("power (TDP of devices used)", ("power_w",), "W", True),
    ]
    for name in sorted(m.get("ttft_ms", {})):
        specs.append((f"TTFT {name}", ("ttft_ms", name), "ms", True))
        specs.append((f"TPOT {name}", ("tpot_ms", name), "ms", True))
    rows = []
    for label, path, unit, lower in specs:
        v = _get(m, path)
        if v is None:
            continue
        bv = _get(b, path) if b is not None else None
        rows.append(MetricRow(label, path, unit, lower, v, bv, metric_band(m, path, v),
                              metric_band(b, path, bv) if b is not None and bv is not None else None))
    return rows


def _get(d: Mapping[str, Any] | None, path: Sequence[str]) -> float | None:
    node: Any = d
    for k in path:
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.3e}"
    return f"{v:,.0f}" if a >= 1000 else f"{v:.4g}"


def _band_text(v: float, band: Band | None) -> str:
    if band is None:
        return ""
    if v > 0 and math.isclose(v - band.lo, band.hi - v, rel_tol=1e-6):
        return f" ±{(band.hi - v) / v:.0%}"
    return f" [{fmt(band.lo)}, {fmt(band.hi)}]"


def _verdict(r: MetricRow) -> str:
    if r.base is None or r.base == 0 or r.plan == 0:
        return ""
    if r.plan_band is not None and r.base_band is not None and r.plan_band.overlaps(r.base_band):
        return "not distinguishable (bands overlap)"
    better = r.plan < r.base if r.lower_is_better else r.plan > r.base
    ratio = max(r.plan, r.base) / min(r.plan, r.base)
    if math.isclose(r.plan, r.base, rel_tol=5e-3):
        return "same"
    return f"{ratio:.2f}x {'better' if better else 'worse'}"


def metrics_html(plan: Mapping[str, Any], colour_plan: str, colour_base: str = "#9a9a9a") -> str:
    """The metrics table; each row has a bar pair (plan, baseline) scaled to the larger, with band whiskers."""
    rows = metric_rows(plan)
    base = plan.get("baseline")
    head = (f"baseline: {base['chips']}x {escape(base['chip'])}" if base else "baseline")
    out = ['<table id="metrics-table" class="metrics"><thead><tr><th>metric (per request)</th>'
           f'<th class="num">this plan</th><th class="num">{head}</th><th>plan vs baseline</th>'
           '<th class="bars-col">plan (colour) and baseline (grey)</th></tr></thead><tbody>']
    w = 260
    for r in rows:
        hi = max(x for x in (r.plan, r.base or 0.0, r.plan_band.hi if r.plan_band else 0.0,
                             r.base_band.hi if r.base_band else 0.0))
        scale = (w - 4) / hi if hi > 0 else 0.0
        svg = [f'<svg class="bars" width="{w}" height="26" viewBox="0 0 {w} 26" xmlns="http://www.w3.org/2000/svg">']
        for y, v, band, c, who in ((2, r.plan, r.plan_band, colour_plan, "this plan"),
                                   (14, r.base, r.base_band, colour_base, "baseline")):
            if v is None:
                continue
            svg.append(f'<rect x="0" y="{y}" width="{max(v * scale, 1.0):.2f}" height="10" fill="{c}">'
                       f'<title>{who}: {fmt(v)} {r.unit}{_band_text(v, band)}</title></rect>')
            if band is not None:
                x0, x1 = band.lo * scale, band.hi * scale
                svg.append(f'<path class="band" d="M{x0:.2f} {y + 5} H{x1:.2f} M{x0:.2f} {y + 1} V{y + 9} '
                           f'M{x1:.2f} {y + 1} V{y + 9}"/>')
        svg.append("</svg>")
        out.append(f'<tr data-metric="{escape(".".join(r.path))}"><td>{escape(r.label)} <span class="muted">'
                   f'{escape(r.unit)}</span></td><td class="num">{fmt(r.plan)}{escape(_band_text(r.plan, r.plan_band))}'
                   f'</td><td class="num">{"-" if r.base is None else fmt(r.base) + escape(_band_text(r.base, r.base_band))}'
                   f'</td><td>{escape(_verdict(r))}</td><td>{"".join(svg)}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


# ---- the serving search ----------------------------------------------------------------------------


def check_search(d: Any, source: str) -> Mapping[str, Any]:
    """A search result (`gimletc search --json`) checked for what the report reads; one-line errors."""
    if not isinstance(d, Mapping):
        raise GimletError(f"{source}: not a search result: expected a JSON object (gimletc search --json)")
    for key, kind in (("pareto", list), ("evaluations", list), ("slo", Mapping)):
        if not isinstance(d.get(key), kind):
            raise GimletError(f"{source}: not a search result: no {key!r} {kind.__name__ if kind is list else 'object'}"
                              " (write one with gimletc search ... --json > FILE)")
    for i, p in enumerate(d["pareto"]):
        for k in ("config", "tok_s_per_user", "tok_s_per_chip"):
            if not isinstance(p, Mapping) or k not in p:
                raise GimletError(f"{source}: pareto[{i}] has no {k!r}")
    for i, e in enumerate(d["evaluations"]):
        if not isinstance(e, Mapping) or not isinstance(e.get("config"), Mapping) or "chips" not in e:
            raise GimletError(f"{source}: evaluations[{i}] has no 'config' object or 'chips'")
    return d


def _label(e: Mapping[str, Any]) -> str:
    c = e["config"]
    return str(c.get("label") or e.get("label") or c)


def operating_points(search: Mapping[str, Any]) -> list[tuple[str, float, float, float]]:
    """(configuration, rate req/s, tok/s per user, tok/s per chip) of every simulated rate that met the SLO."""
    share = float(search["slo"].get("share", 0.0))
    out = []
    for e in search["evaluations"]:
        chips = float(e["chips"]) or 1.0
        for p in e.get("goodput", {}).get("points", []):
            if float(p.get("attainment", 0.0)) >= share:
                out.append((_label(e), float(p["rate_req_s"]), float(p["tok_s_per_user"]),
                            float(p["throughput_tok_s"]) / chips))
    return sorted(out)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step) + 1)]


def frontier_svg(search: Mapping[str, Any], palette: Sequence[str], width: int = 760, height: int = 420) -> str:
    """Every operating point meeting the SLO, coloured per configuration, and the Pareto frontier line."""
    pts = operating_points(search)
    front = [(str(p["config"]), float(p["tok_s_per_user"]), float(p["tok_s_per_chip"])) for p in search["pareto"]]
    xs = [p[2] for p in pts] + [p[1] for p in front]
    ys = [p[3] for p in pts] + [p[2] for p in front]
    ml, mr, mt, mb = 70, 20, 20, 50
    xmax = max(xs, default=1.0) * 1.05 or 1.0
    ymax = max(ys, default=1.0) * 1.05 or 1.0

    def sx(x: float) -> float:
        return ml + x / xmax * (width - ml - mr)

    def sy(y: float) -> float:
        return height - mb - y / ymax * (height - mt - mb)

    labels = sorted({p[0] for p in pts} | {p[0] for p in front})
    col = {lab: palette[i % len(palette)] for i, lab in enumerate(labels)}
    s = [f'<svg id="frontier-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" role="img" aria-label="serving Pareto frontier">']
    for t in _ticks(0, xmax):
        s.append(f'<line class="grid" x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{mt}" y2="{height - mb}"/>'
                 f'<text class="tick" x="{sx(t):.1f}" y="{height - mb + 16}" text-anchor="middle">{t:g}</text>')
    for t in _ticks(0, ymax):
        s.append(f'<line class="grid" x1="{ml}" x2="{width - mr}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>'
                 f'<text class="tick" x="{ml - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    s.append(f'<text class="axis" x="{(ml + width - mr) / 2}" y="{height - 10}" text-anchor="middle">'
             'tokens/s per user (1 / median TPOT)</text>'
             f'<text class="axis" transform="translate(16 {(mt + height - mb) / 2}) rotate(-90)" text-anchor="middle">'
             'output tokens/s per chip</text>')
    if len(front) > 1:
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f} {sy(y):.1f}" for i, (_, x, y) in enumerate(front))
        s.append(f'<path class="frontier" d="{d}"/>')
    for lab, rate, x, y in pts:
        s.append(f'<circle class="pt" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{col[lab]}">'
                 f'<title>{escape(lab)}: {fmt(rate)} req/s, {fmt(x)} tok/s/user, {fmt(y)} tok/s/chip</title></circle>')
    for lab, x, y in front:
        s.append(f'<circle class="front-pt" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6">'
                 f'<title>frontier: {escape(lab)}: {fmt(x)} tok/s/user, {fmt(y)} tok/s/chip</title></circle>')
    s.append("</svg>")
    legend = "".join(f'<li><span class="swatch" style="background:{col[lab]}"></span>{escape(lab)}</li>'
                     for lab in labels)
    return "".join(s) + f'<ul class="legend">{legend}<li><span class="swatch frontier-swatch"></span>' \
                        'Pareto frontier</li></ul>'


def search_table(search: Mapping[str, Any], n: int = 8) -> str:
    evs = sorted(search["evaluations"], key=lambda e: (-(e.get("tok_s_per_chip") or 0.0), _label(e)))[:n]
    rows = []
    for e in evs:
        vals = [e.get(k) for k in ("goodput_req_s", "tok_s_per_chip", "tok_per_joule", "tok_per_dollar",
                                   "tok_s_per_user")]
        cells = "".join(f'<td class="num">{"-" if v is None else fmt(float(v))}</td>' for v in vals)
        rows.append(f"<tr><td>{escape(_label(e))}</td><td>{escape(str(e.get('mode', '')))}</td>"
                    f'<td class="num">{e["chips"]}</td>{cells}</tr>')
    return ('<table id="search-table"><thead><tr><th>configuration</th><th>mode</th><th class="num">chips</th>'
            '<th class="num">goodput req/s</th><th class="num">tok/s/chip</th><th class="num">tok/J</th>'
            '<th class="num">tok/$</th><th class="num">tok/s/user</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")
