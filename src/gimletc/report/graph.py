"""The report's graph view: the compiled graph's ops in program order, where each runs, what flows.

Read from the plan's exec-level IR (`DeploymentPlan.ir`): one row per placed op
(the pieces a layer-streamed op was cut into share their op's row), loops and
branches as boxes around their bodies and arms, and one arc per value that
flows between two rows, dashed where the value crosses devices (a transfer,
with the route, bytes and time of its send) and dotted where a loop carries it
into the next iteration. Colour is the chip the row runs on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

from gimletc.ir import Graph, Op, parse_graph

ROW_H = 30
INDENT = 16


@dataclass
class Row:
    kind: str  # op | loop | branch | arm
    name: str
    depth: int
    detail: str  # op kind, or a loop's / arm's counts
    device: str = ""
    chip: str = ""
    seconds: float | None = None
    runs: float | None = None
    end: int = -1  # containers: index of the last row inside


@dataclass(frozen=True)
class Hop:
    """How a value reached a row: a transfer's description, or None on the same device."""

    text: str
    carried: bool = False
    value: str = ""  # the value's name where it was made (before the transfer renamed it)


@dataclass
class Flow:
    rows: list[Row] = field(default_factory=list)
    edges: dict[tuple[int, int], list[tuple[str, Hop | None]]] = field(default_factory=dict)


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def flow(plan: Mapping[str, Any]) -> Flow:
    """Rows and value edges of the plan's compiled graph."""
    g = parse_graph(plan["ir"])
    placed = {p["op"]: p for p in plan["placements"]}
    out = Flow()
    src: dict[str, list[tuple[int, Hop | None]]] = {}  # value -> (row, how it got there)
    sends: dict[str, tuple[list[tuple[int, Hop | None]], Mapping[str, Any]]] = {}
    consumers: dict[str, list[int]] = {}
    row_of: dict[str, int] = {}

    def data(op: Op, names: tuple[str, ...]) -> list[str]:
        return [n for n in names if n in src or n in sends]

    def edge(s: int, d: int, value: str, hop: Hop | None) -> None:
        if s != d:
            out.edges.setdefault((s, d), []).append((hop.value if hop and hop.value else value, hop))

    def walk(gr: Graph, depth: int) -> None:
        for op in gr.ops:
            a = op.attrs
            if op.kind == "exec.compute":
                of = str(a.get("of", op.name))
                if of not in row_of:
                    p = placed.get(of, {})
                    row_of[of] = len(out.rows)
                    out.rows.append(Row("op", of, depth, str(a.get("kind_of", "")), str(a.get("device", "")),
                                        str(p.get("chip", "")), p.get("seconds"), p.get("runs")))
                r = row_of[of]
                for o in data(op, op.operands):
                    for s, hop in src.get(o, []):
                        edge(s, r, o, hop)
                    consumers.setdefault(o, []).append(r)
                for v in op.results:
                    if v.type.kind != "token":
                        src[v.name] = [(r, None)]
            elif op.kind == "exec.send":
                for v in op.results:
                    sends[v.name] = (src.get(op.operands[0], []), {**a, "value": op.operands[0]})
            elif op.kind == "exec.recv":
                origin, sa = sends.get(op.operands[0], ([], {}))
                route = f"{sa.get('src', a.get('src'))} → {sa.get('dst', a.get('dst'))}, {sa.get('route', '')}"
                text = f"{_fmt_bytes(float(a.get('bytes', 0.0)))} {route}, {_fmt_s(float(sa.get('seconds', 0.0)))}"
                for v in op.results:
                    if v.type.kind != "token":
                        src[v.name] = [(s, Hop(text, value=str(sa.get("value", "")))) for s, _ in origin]
            elif op.kind == "agent.loop":
                body = op.regions[0]
                head = len(out.rows)
                out.rows.append(Row("loop", op.name, depth,
                                    f"{float(a['expected']):g} iterations expected, at most {a['max']}"))
                for arg, init in zip(body.args, op.operands, strict=False):
                    src[arg.name] = list(src.get(init, []))
                walk(body, depth + 1)
                y = body.ops[-1]
                for arg, yv in zip(body.args, y.operands, strict=False):
                    for s, _ in src.get(yv, []):
                        for d in consumers.get(arg.name, []):
                            edge(s, d, arg.name, Hop("carried into the next iteration", carried=True))
                for res, yv in zip(op.results, y.operands, strict=False):
                    src[res.name] = list(src.get(yv, []))
                out.rows[head].end = len(out.rows) - 1
            elif op.kind == "agent.branch":
                head = len(out.rows)
                probs = list(a.get("probabilities", ()))
                out.rows.append(Row("branch", op.name, depth, f"{len(op.regions)} arms"))
                yields: list[tuple[str, ...]] = []
                for i, arm in enumerate(op.regions):
                    start = len(out.rows)
                    p = f"p = {float(probs[i]):.3g}" if i < len(probs) else ""
                    out.rows.append(Row("arm", f"arm {i}", depth + 1, p))
                    walk(arm, depth + 2)
                    out.rows[start].end = len(out.rows) - 1
                    yields.append(arm.ops[-1].operands)
                for j, res in enumerate(op.results):
                    src[res.name] = [x for y in yields if j < len(y) for x in src.get(y[j], [])]
                out.rows[head].end = len(out.rows) - 1
            elif op.kind != "agent.yield":  # converts, awaits: values pass through
                ins = [x for o in op.operands for x in src.get(o, [])]
                for v in op.results:
                    if v.type.kind != "token":
                        src[v.name] = [(s, Hop((h.text if h else "") + " + layout/dtype convert", value=h.value if h else ""))
                                       for s, h in ins]

    walk(g, 0)
    return out


def graph_svg(plan: Mapping[str, Any], colour: Mapping[str, str], width: int = 980) -> str:
    """The graph view as an inline SVG element (deterministic)."""
    f = flow(plan)
    n = len(f.rows)
    max_span = max((abs(d - s) for s, d in f.edges), default=1)
    gutter = 40 + min(220, 14 * max_span)
    top = 10
    h = top + n * ROW_H + 10
    parts = [f'<svg id="graph-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'viewBox="0 0 {width} {h}" role="img" aria-label="compiled graph: ops, devices and dataflow">']
    # containers first, so rows draw over them
    for i, r in enumerate(f.rows):
        if r.kind in ("loop", "branch", "arm"):
            x = gutter + r.depth * INDENT
            y = top + i * ROW_H + 2
            hh = (r.end - i + 1) * ROW_H - 4
            cls = "box-arm" if r.kind == "arm" else "box"
            parts.append(f'<rect class="{cls}" x="{x}" y="{y}" width="{width - x - 6}" height="{hh}" rx="6"/>')
            title = "loop" if r.kind == "loop" else "branch" if r.kind == "branch" else ""
            label = f"{title} {r.name}".strip()
            parts.append(f'<text class="box-label" x="{x + 8}" y="{y + 17}">{escape(label)}'
                         f'<tspan class="muted" dx="8">{escape(r.detail)}</tspan></text>')
    for i, r in enumerate(f.rows):
        if r.kind != "op":
            continue
        x = gutter + r.depth * INDENT
        y = top + i * ROW_H + 4
        fill = colour.get(r.chip, "#999999")
        runs = f" × {r.runs:g}" if r.runs is not None and r.runs != 1 else ""
        secs = _fmt_s(r.seconds) if r.seconds is not None else ""
        tip = f"{r.name} ({r.detail}) on {r.device} [{r.chip}]: {secs} per run{runs} (predicted, cost model)"
        parts.append(f'<g class="op-row" data-op="{escape(r.name)}" data-chip="{escape(r.chip)}">'
                     f'<title>{escape(tip)}</title>'
                     f'<rect x="{x}" y="{y}" width="{width - x - 12}" height="{ROW_H - 8}" rx="4" '
                     f'fill="{fill}" fill-opacity="0.18" stroke="{fill}"/>'
                     f'<rect x="{x}" y="{y}" width="6" height="{ROW_H - 8}" fill="{fill}"/>'
                     f'<text x="{x + 12}" y="{y + 15}"><tspan class="op-name">{escape(r.name)}</tspan>'
                     f'<tspan class="muted" dx="8">{escape(r.detail)}</tspan></text>'
                     f'<text class="op-where" x="{width - 20}" y="{y + 15}" text-anchor="end">'
                     f'{escape(r.device)} · {escape(secs)}{escape(runs)}</text></g>')
    for (s, d), vals in sorted(f.edges.items()):
        hop = next((hp for _, hp in vals if hp is not None), None)
        y1, y2 = top + s * ROW_H + ROW_H / 2, top + d * ROW_H + ROW_H / 2
        xs, xd = gutter + f.rows[s].depth * INDENT, gutter + f.rows[d].depth * INDENT
        bend = gutter - 14 - min(gutter - 24, 12 * abs(d - s))
        cls = "edge carried" if hop is not None and hop.carried else "edge transfer" if hop is not None else "edge"
        names = ", ".join(dict.fromkeys("%" + v for v, _ in vals))
        tip = names + (f": {hop.text}" if hop is not None else ": same device")
        parts.append(f'<path class="{cls}" d="M{xs} {y1:g} C{bend} {y1:g} {bend} {y2:g} {xd} {y2:g}" '
                     f'marker-end="url(#arrow)"><title>{escape(tip)}</title></path>')
    parts.append('<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" '
                 'orient="auto-start-reverse"><path d="M0 0 L8 4 L0 8 z" fill="#555"/></marker></defs>')
    parts.append("</svg>")
    return "".join(parts)
