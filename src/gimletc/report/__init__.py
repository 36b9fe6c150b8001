"""`gimletc report`: a deployment plan as one self-contained HTML page.

The page holds, with no network fetch (CSS, JavaScript and SVG inline):
- the plan's metrics against its single-chip-type baseline, with each
  metric's uncertainty band where the plan carries one (`charts.metric_band`);
- the compiled graph: every op in program order, coloured by the chip it runs
  on, loops and branches as boxes, values as arcs (transfers dashed);
- the per-device timeline of the single-request replay: compute, transfers on
  their links, conversions, and how much transfer time overlaps compute;
- the transfers, with routes, bytes, chunks and conversions;
- with a search result (`gimletc search --json`), the serving Pareto frontier
  and the best configurations.

Every figure on the page is copied from the plan (or the search result), which
says where it comes from: the cost model and the single-request replay, or the
load simulator; the page repeats those sources. Same plan, same bytes: nothing
depends on the clock, the machine or dictionary order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from gimletc._io import read_data
from gimletc.report.charts import check_search, fmt, frontier_svg, metrics_html, search_table
from gimletc.report.graph import flow, graph_svg

__all__ = ["chip_colours", "load_search", "render_report", "transfer_overlap"]

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#8F7B00", "#6A3D9A", "#B15928",
           "#1B9E77")
HOST_GREYS = ("#6E6E6E", "#9A9A9A", "#4A4A4A")


def load_search(path: str | Path) -> Mapping[str, Any]:
    """A saved search result (`gimletc search ... --json > FILE`), checked for what the report reads."""
    return check_search(read_data(path), str(path))


def chip_colours(plan: Mapping[str, Any]) -> dict[str, str]:
    """One colour per chip of the cluster: accelerators from a colour-blind-safe palette, hosts in grey,
    in the order the cluster lists them (so the same cluster always gets the same colours)."""
    acc: list[str] = []
    host: list[str] = []
    for d in plan["cluster"]["devices"]:
        group = acc if d["role"] == "accelerator" else host
        if d["chip"] not in acc and d["chip"] not in host:
            group.append(d["chip"])
    out = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(acc)}
    out.update({c: HOST_GREYS[i % len(HOST_GREYS)] for i, c in enumerate(host)})
    return out


def _row_chip(key: str, device_chip: Mapping[str, str]) -> tuple[str, str]:
    """(kind, chip) of a program's row: a device, a CPU lane of a host (`host#i`), or a link (`a->b`)."""
    if "->" in key:
        return "link", ""
    return ("lane" if "#" in key else "device"), device_chip.get(key.split("#")[0], "")


def _intervals_union(iv: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def transfer_overlap(plan: Mapping[str, Any]) -> tuple[float, float]:
    """(ms of transfer time on links, ms of it during which some device computes) in the replay."""
    busy = _intervals_union([(s["start_ms"], s["end_ms"]) for k, steps in plan["programs"].items() if "->" not in k
                             for s in steps if s["kind"] == "exec.compute" and s["end_ms"] > s["start_ms"]])
    total = hidden = 0.0
    for k, steps in plan["programs"].items():
        if "->" not in k:
            continue
        for s in steps:
            a, b = s["start_ms"], s["end_ms"]
            total += b - a
            hidden += sum(max(0.0, min(b, e) - max(a, st)) for st, e in busy if st < b and e > a)
    return total, hidden


def _timeline_data(plan: Mapping[str, Any], colour: Mapping[str, str]) -> dict[str, Any]:
    device_chip = {d["id"]: d["chip"] for d in plan["cluster"]["devices"]}
    order = {d["id"]: i for i, d in enumerate(plan["cluster"]["devices"])}
    rank = {"device": 0, "lane": 1, "link": 2}

    def key(k: str) -> tuple:
        kind, _ = _row_chip(k, device_chip)
        return (rank[kind], order.get(k.split("#")[0].split("->")[0], len(order)), k)

    rows: list[dict[str, Any]] = []
    t1 = max([1e-9, *(s["end_ms"] for steps in plan["programs"].values() for s in steps)])
    # A loop's body is in the programs once (its first iteration); its span runs until the first compute
    # after the body starts, so the expected remaining iterations show as the loop's bar.
    f = flow(plan)
    for i, r in enumerate(f.rows):
        if r.kind != "loop":
            continue
        body = {x.name for x in f.rows[i + 1:r.end + 1] if x.kind == "op"}
        steps = [s for v in plan["programs"].values() for s in v]
        inside = [s for s in steps if s["kind"] == "exec.compute" and (s.get("of") or s["op"]) in body]
        if not inside:
            continue
        a, b = min(s["start_ms"] for s in inside), max(s["end_ms"] for s in inside)
        after = [s["start_ms"] for s in steps if s["kind"] == "exec.compute" and (s.get("of") or s["op"]) not in body
                 and s["start_ms"] >= b]
        end = min(after, default=t1)
        rows.append({"id": f"loop {r.name}", "kind": "loop", "chip": "", "colour": "#b8b8c0",
                     "steps": [[round(a, 6), round(end, 6), "loop", f"loop {r.name}: {r.detail}; its body's steps "
                                "below are the first iteration", ""]]})
    for k in sorted(plan["programs"], key=key):
        kind, chip = _row_chip(k, device_chip)
        steps = [[round(s["start_ms"], 6), round(s["end_ms"], 6), s["kind"].removeprefix("exec."), s["op"],
                  s.get("of") or ""] for s in plan["programs"][k]]
        rows.append({"id": k, "kind": kind, "chip": chip, "colour": colour.get(chip, "#888888"), "steps": steps})
    return {"t0": 0.0, "t1": round(t1, 6), "rows": rows}


def _json_script(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _legend(colour: Mapping[str, str]) -> str:
    items = "".join(f'<li><span class="swatch" style="background:{c}"></span>{escape(chip)}</li>'
                    for chip, c in colour.items())
    return f'<ul class="legend" id="chip-legend">{items}</ul>'


def _transfers_table(plan: Mapping[str, Any]) -> str:
    rows = []
    for t in plan["transfers"]:
        conv = t.get("convert")
        c = (f"{conv['from_layout']}/{conv['from_dtype']} → {conv['to_layout']}/{conv['to_dtype']} on "
             f"{conv['device']} ({fmt(conv['seconds'] * 1e3)} ms)") if conv else ""
        rows.append(f"<tr><td>%{escape(t['value'])}</td><td>{escape(t['src'])} → {escape(t['dst'])}</td>"
                    f"<td>{escape(t['route'])} ({escape(' + '.join(t['hops']))})</td>"
                    f'<td class="num">{fmt(t["bytes"])}</td><td class="num">{fmt(t["seconds"] * 1e3)}</td>'
                    f'<td class="num">{t["chunks"]}</td><td>{escape(c)}</td></tr>')
    if not rows:
        return '<p class="muted">No value crosses devices in this plan.</p>'
    return ('<table id="transfers-table"><thead><tr><th>value</th><th>from → to</th><th>route (links)</th>'
            '<th class="num">bytes</th><th class="num">ms</th><th class="num">chunks</th><th>conversion</th></tr>'
            "</thead><tbody>" + "".join(rows) + "</tbody></table>")


def _versus_baseline(plan: Mapping[str, Any], key: str, metric: str, form: str) -> str:
    """`1.180x (0.79x-1.78x within bands: not distinguishable)`: a ratio to the baseline with its interval
    and verdict where the plan carries them (`comparison`)."""
    v = plan.get(key)
    if v is None:
        return "-"
    c = (plan.get("comparison") or {})
    iv = c.get(key)
    if not iv:
        return form.format(v)
    return f"{form.format(v)} ({form.format(iv['lo'])}-{form.format(iv['hi'])} within bands: {c[metric]})"


def _facts(plan: Mapping[str, Any]) -> str:
    base = plan.get("baseline")
    s = plan.get("search")
    facts = [
        ("cluster", f"{plan['cluster']['name']} ({len(plan['cluster']['devices'])} devices, "
                    f"{fmt(plan['cluster']['power_w'])} W)"),
        ("objective", plan["objective"] + (f", power budget {fmt(plan['power_budget_w'])} W"
                                           if plan.get("power_budget_w") else "")),
        ("software stack priced", plan.get("stack", "reference")),
        ("pipeline", plan["pipeline"]),
        ("baseline", (base.get("note") or f"{base['chips']}x {base['chip']}") if base else "none"),
        ("speedup over the baseline", _versus_baseline(plan, "speedup", "latency", "{:.3f}x")),
        ("energy ratio (plan / baseline)", _versus_baseline(plan, "energy_ratio", "energy", "{:.3f}")),
        ("placement search", f"{s['method']}, {s['evaluated']} evaluations, gap to bound {s['gap']:.2%}" if s else "-"),
        ("gimletc", f"{plan['gimletc_version']}, plan schema {plan['schema_version']}, inputs {plan['digest'][:16]}"),
    ]
    return '<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts) + "</dl>"


def render_report(plan: Any, search: Mapping[str, Any] | None = None) -> str:
    """The HTML page of `plan` (a DeploymentPlan or its JSON dict) and, optionally, a search result."""
    p: Mapping[str, Any] = plan.model_dump(mode="json") if hasattr(plan, "model_dump") else plan
    colour = chip_colours(p)
    main_colour = next(iter(colour.values()), PALETTE[0])
    total, hidden = transfer_overlap(p)
    ov = p.get("overlap") or {}
    overlap_line = (f"Transfers occupy links for {fmt(total)} ms in the replay; {fmt(hidden)} ms of it "
                    f"({hidden / total:.0%}) runs while some device computes." if total > 0 else
                    "No transfers in the replay.")
    if ov.get("before_s") is not None and ov.get("after_s") is not None:
        overlap_line += (f" The overlap pass took the makespan from {fmt(ov['before_s'] * 1e3)} ms to "
                         f"{fmt(ov['after_s'] * 1e3)} ms (layer-streamed: {'yes' if ov.get('streamed') else 'no'}).")
    sources = "".join(f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in sorted(p.get("sources", {}).items()))
    sections = [
        f'<section id="metrics"><h2>Metrics against the baseline</h2><p class="muted">'
        f'{escape(p["metrics"].get("source", ""))}. Bands show the cost model\'s uncertainty where the plan '
        f"carries one.</p>{metrics_html(p, main_colour)}</section>",
        f'<section id="graph"><h2>Compiled graph: where each op runs</h2>{_legend(colour)}<p class="muted">'
        "Ops in program order; colour is the chip. Arcs are values: solid on one device, dashed across devices "
        "(a transfer), dotted into a loop's next iteration. Hover for times, bytes and routes.</p>"
        f'<div class="scroll">{graph_svg(p, colour)}</div></section>',
        '<section id="timeline-section"><h2>Per-device timeline (single-request replay)</h2>'
        f'<p class="muted">{escape(overlap_line)} A loop\'s body is drawn once, its first iteration; the loop\'s bar '
        "spans its expected iterations. Drag across the chart to zoom, click a bar to zoom to it.</p>"
        '<p><button id="timeline-reset" type="button">show all</button> <span id="timeline-window" class="muted">'
        '</span></p><div id="timeline" class="scroll"></div>'
        f'<script type="application/json" id="timeline-data">{_json_script(_timeline_data(p, colour))}</script>'
        "</section>",
        f'<section id="transfers"><h2>Transfers</h2>{_transfers_table(p)}</section>',
    ]
    if search is not None:
        slo = search["slo"]
        parts = [f"{k[:-3].upper()} ≤ {v:g} ms" for k, v in sorted(slo.items()) if k.endswith("_ms") and v is not None]
        sections.append(
            f'<section id="frontier"><h2>Serving Pareto frontier</h2><p class="muted">Operating points that met '
            f'{escape(", ".join(parts))} for {float(slo.get("share", 0)):.0%} of requests in the load simulator '
            f'({len(search["evaluations"])} configurations simulated of {search.get("candidates", "?")}); '
            f"the line joins the points no other beats on both axes.</p>"
            f"{frontier_svg(search, PALETTE)}{search_table(search)}</section>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>gimletc report: {escape(p['name'])}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        f'<header><h1>{escape(p["name"])} <span class="muted">on {escape(p["cluster"]["name"])}</span></h1>'
        f"{_facts(p)}</header><main>{''.join(sections)}</main>"
        f'<footer><p>Sources of the figures:</p><ul>{sources}</ul>'
        "<p>Written by <code>gimletc report</code> from the plan file alone.</p></footer>"
        f"<script>{_JS}</script></body></html>\n"
    )


_CSS = """
:root{--fg:#1d1d1f;--muted:#6b6b70;--line:#d9d9de;--bg:#fff;--panel:#f6f6f8}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}header,main,footer{max-width:1160px;margin:0 auto;padding:12px 20px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);
padding-bottom:4px}.muted{color:var(--muted)}.num{text-align:right;font-variant-numeric:tabular-nums}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}dt{color:var(--muted)}dd{margin:0}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{padding:4px 8px;border-bottom:1px solid var(--line);
vertical-align:middle}th{text-align:left;font-weight:600;background:var(--panel)}.scroll{overflow-x:auto}
ul.legend{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;gap:6px 16px}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.frontier-swatch{background:#111;height:3px;vertical-align:3px}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;fill:var(--fg)}
.op-name{font-weight:600}.op-where{fill:var(--muted)}.box{fill:#fafafc;stroke:#b8b8c0;stroke-dasharray:5 3}
.box-arm{fill:none;stroke:#cfcfd6;stroke-dasharray:2 3}.box-label{font-weight:600}
.edge{fill:none;stroke:#777;stroke-width:1.2}.edge.transfer{stroke:#C0392B;stroke-dasharray:6 3;stroke-width:1.6}
.edge.carried{stroke:#555;stroke-dasharray:1.5 3}.band{stroke:#111;stroke-width:1.3;fill:none}
.grid{stroke:#ececf0}.tick{fill:var(--muted)}.axis{fill:var(--fg)}.frontier{fill:none;stroke:#111;stroke-width:2}
.front-pt{fill:none;stroke:#111;stroke-width:1.5}.step{cursor:zoom-in;stroke:#fff;stroke-width:.5}.step.send,.step.recv{fill:#C0392B}
.step.convert{fill:#F1C40F}.step.loop{fill:#e4e4ea;stroke:#b8b8c0;stroke-dasharray:4 2}.brush{fill:#0072B2;fill-opacity:.12;stroke:#0072B2}
button{font:inherit;padding:2px 10px}
"""

_JS = r"""
(function(){
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("timeline-data").textContent);
  var host = document.getElementById("timeline");
  var W = 1120, L = 230, R = 36, T = 26, RH = 22;
  var view = [data.t0, data.t1];
  function el(name, attrs, parent){
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function fmtMs(t){
    var a = Math.abs(t);
    if (a >= 1000) { return (t / 1000).toPrecision(4) + " s"; }
    if (a >= 1 || a === 0) { return t.toPrecision(4) + " ms"; }
    return (t * 1000).toPrecision(3) + " \u00b5s";
  }
  function ticks(a, b){
    var raw = (b - a) / 8, step = Math.pow(10, Math.floor(Math.log10(raw)));
    [1, 2, 5, 10].some(function(m){ if (raw <= m * step) { step = m * step; return true; } return false; });
    var out = [];
    for (var t = Math.ceil(a / step) * step; t <= b + 1e-12; t += step) { out.push(t); }
    return out;
  }
  function render(){
    while (host.firstChild) { host.removeChild(host.firstChild); }
    var H = T + data.rows.length * RH + 8;
    var svg = el("svg", {id: "timeline-svg", width: W, height: H, viewBox: "0 0 " + W + " " + H}, host);
    var span = view[1] - view[0];
    function sx(t){ return L + (t - view[0]) / span * (W - L - R); }
    ticks(view[0], view[1]).forEach(function(t){
      el("line", {"class": "grid", x1: sx(t), x2: sx(t), y1: T - 6, y2: H - 4}, svg);
      el("text", {"class": "tick", x: sx(t), y: T - 10, "text-anchor": "middle"}, svg).textContent = fmtMs(t);
    });
    data.rows.forEach(function(row, i){
      var y = T + i * RH;
      var label = el("text", {x: 6, y: y + 15, "class": "row-label"}, svg);
      label.textContent = row.id + (row.chip ? "  " + row.chip : "");
      row.steps.forEach(function(s){
        if (s[1] < view[0] || s[0] > view[1]) { return; }
        var x0 = Math.max(sx(s[0]), L), x1 = Math.min(sx(s[1]), W - R);
        var r = el("rect", {"class": "step " + s[2], x: x0, y: y + 3, width: Math.max(x1 - x0, 1), height: RH - 6,
                            "data-op": s[3]}, svg);
        if (s[2] === "compute") { r.setAttribute("fill", row.colour); }
        el("title", {}, r).textContent = s[3] + (s[4] && s[4] !== s[3] ? " (" + s[4] + ")" : "") + ": " +
          fmtMs(s[0]) + " \u2192 " + fmtMs(s[1]) + " (" + fmtMs(s[1] - s[0]) + ", predicted)";
        r.addEventListener("click", function(ev){
          var pad = Math.max((s[1] - s[0]) * 2, span * 1e-6);
          zoom(s[0] - pad, s[1] + pad); ev.stopPropagation();
        });
      });
    });
    var start = null, brush = null;
    function toT(ev){
      var box = svg.getBoundingClientRect();
      var x = (ev.clientX - box.left) * W / box.width;
      return view[0] + (Math.min(Math.max(x, L), W - R) - L) / (W - L - R) * span;
    }
    svg.addEventListener("mousedown", function(ev){
      start = toT(ev);
      brush = el("rect", {"class": "brush", x: sx(start), y: T - 6, width: 0, height: H - T + 2}, svg);
    });
    svg.addEventListener("mousemove", function(ev){
      if (start === null) { return; }
      var t = toT(ev);
      brush.setAttribute("x", sx(Math.min(start, t)));
      brush.setAttribute("width", Math.abs(sx(t) - sx(start)));
    });
    svg.addEventListener("mouseup", function(ev){
      if (start === null) { return; }
      var t = toT(ev), a = Math.min(start, t), b = Math.max(start, t);
      start = null;
      if (sx(b) - sx(a) > 4) { zoom(a, b); } else if (brush) { brush.remove(); }
    });
    document.getElementById("timeline-window").textContent =
      "showing " + fmtMs(view[0]) + " \u2013 " + fmtMs(view[1]) + " of " + fmtMs(data.t1);
  }
  function zoom(a, b){
    view = [Math.max(data.t0, a), Math.min(data.t1, b)];
    if (view[1] <= view[0]) { view = [data.t0, data.t1]; }
    render();
  }
  document.getElementById("timeline-reset").addEventListener("click", function(){ zoom(data.t0, data.t1); });
  render();
})();
"""
