"""Pictures of a graph: Mermaid flowcharts and Graphviz DOT, for docs and debugging.

Both are deterministic (equal graphs give identical text). Every op, nested
ones included, is a node labelled with its name and kind; each region of an op
is a box (a Mermaid `subgraph`, a DOT `cluster_`) drawn right after the op's
node and holding the region's ops. Each edge is one used value, labelled with
its name and size; a region argument's edge starts at the op that owns the
region. Edges only join nodes, never boxes, since Mermaid renders edges to
subgraphs unreliably. Ops with a `device` attribute (placed or exec-level
graphs) are coloured by device.
"""

from __future__ import annotations

import re

from gimletc.ir.core import Graph, Op, Type

__all__ = ["to_dot", "to_mermaid"]

# Colour-blind-safe fills (Okabe-Ito, lightened), assigned to devices in sorted order.
_PALETTE = ("#cfe8f7", "#fde3b3", "#c9ecdf", "#f9d3e3", "#fbf5b5", "#d9d2ec", "#f6d0bf", "#e0e0e0")
_MERMAID_RESERVED = frozenset(
    {
        "end",
        "graph",
        "flowchart",
        "subgraph",
        "style",
        "class",
        "classdef",
        "click",
        "linkstyle",
        "direction",
        "default",
    }
)
_SAFE_LABEL = re.compile(r"[A-Za-z0-9 _.,:;@$%+\-/]")


def to_mermaid(graph: Graph) -> str:
    """A `flowchart TD`: a node per op (`name<br/>kind`), a `subgraph` per region.

    Edges read `src -->|%value size| dst`. Node ids are op names reduced to
    `[A-Za-z0-9_]`, made unique and kept clear of Mermaid keywords; label text
    Mermaid could misread is written as entity codes (`#34;`)."""
    v = _View(graph)
    lines = ["flowchart TD"]

    def emit(g: Graph, depth: int) -> None:
        ind = "  " * depth
        for op in g.ops:
            nid = v.ids[op.name]
            lines.append(f'{ind}{nid}["{_mermaid_text(op.name)}<br/>{_mermaid_text(op.kind)}"]')
            for i, r in enumerate(op.regions):
                lines.append(f'{ind}subgraph {v.region_ids[op.name, i]}["{_mermaid_text(_region_label(op, i))}"]')
                emit(r, depth + 1)
                lines.append(f"{ind}end")

    emit(graph, 1)
    for src, dst, value, t in v.edges():
        lines.append(f"  {src} -->|%{_mermaid_text(value)} {_size_label(t)}| {dst}")
    for i, (_, nids) in enumerate(v.by_device()):
        lines.append(f"  classDef dev{i} fill:{_PALETTE[i % len(_PALETTE)]},stroke:#555")
        lines.append(f"  class {','.join(nids)} dev{i}")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph) -> str:
    """A Graphviz `digraph`: a box per op, a `cluster_` subgraph per region.

    Node ids are the same as `to_mermaid`'s; edges carry the value name and
    size as their label, `!async.token` edges are dashed."""
    v = _View(graph)
    colour = {nid: _PALETTE[i % len(_PALETTE)] for i, (_, nids) in enumerate(v.by_device()) for nid in nids}
    lines = [
        "digraph gimlet {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    if graph.attrs:
        caption = ", ".join(f"{k}={graph.attrs[k]}" for k in graph.attrs)
        lines.append(f"  label={_dot_str(caption)};")

    def node(op: Op, ind: str) -> None:
        nid = v.ids[op.name]
        extra = f", fillcolor={_dot_str(colour[nid])}" if nid in colour else ""
        device = op.attr("device")
        text = f"{op.name}\n{op.kind}" + (f"\n@ {device}" if isinstance(device, str) else "")
        lines.append(f"{ind}{_dot_str(nid)} [label={_dot_str(text)}{extra}];")

    def emit(g: Graph, depth: int) -> None:
        ind = "  " * depth
        for op in g.ops:
            node(op, ind)
            for i, r in enumerate(op.regions):
                lines.append(f"{ind}subgraph {_dot_str('cluster_' + v.region_ids[op.name, i])} {{")
                lines.append(f'{ind}  label={_dot_str(_region_label(op, i))}; style="rounded,dashed";')
                emit(r, depth + 1)
                lines.append(f"{ind}}}")

    emit(graph, 1)
    for src, dst, value, t in v.edges():
        style = ", style=dashed" if t.kind == "token" else ""
        lines.append(f"  {_dot_str(src)} -> {_dot_str(dst)} [label={_dot_str(f'%{value} {_size_label(t)}')}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


class _View:
    """Node ids and edges of a graph and all its regions."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.ids: dict[str, str] = {}
        self.region_ids: dict[tuple[str, int], str] = {}
        taken: set[str] = set()
        for op, _ in graph.walk():
            if op.name not in self.ids:
                self.ids[op.name] = _unique_id(op.name, taken)
            for i in range(len(op.regions)):
                self.region_ids.setdefault((op.name, i), _unique_id(f"{op.name}__r{i}", taken))

    def edges(self) -> list[tuple[str, str, str, Type]]:
        """(source id, destination id, value name, type) per distinct use, in op order.

        Names resolve as in SSA: a region sees the values defined before its op
        and its own arguments (whose source is the op owning the region)."""
        out: list[tuple[str, str, str, Type]] = []
        seen: set[tuple[str, str, str]] = set()

        def rec(g: Graph, scope: dict[str, tuple[str, Type]]) -> None:
            for op in g.ops:
                dst = self.ids[op.name]
                for value in op.operands:
                    src, t = scope.get(value, ("", None))
                    if src and t is not None and src != dst and (src, dst, value) not in seen:
                        seen.add((src, dst, value))
                        out.append((src, dst, value, t))
                for r in op.regions:
                    rec(r, {**scope, **{a.name: (dst, a.type) for a in r.args}})
                scope.update((v.name, (dst, v.type)) for v in op.results)

        rec(self.graph, {})
        return out

    def by_device(self) -> list[tuple[str, list[str]]]:
        """(device, node ids placed on it) per device, devices sorted."""
        groups: dict[str, list[str]] = {}
        for op, _ in self.graph.walk():
            device = op.attr("device")
            if isinstance(device, str) and self.ids[op.name] not in groups.get(device, []):
                groups.setdefault(device, []).append(self.ids[op.name])
        return sorted(groups.items())


def _region_label(op: Op, i: int) -> str:
    return f"{op.name} body" if len(op.regions) == 1 else f"{op.name} region {i}"


def _unique_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "op"
    if base[0].isdigit() or base.lower() in _MERMAID_RESERVED:
        base = f"op_{base}"
    nid, k = base, 2
    while nid in taken:
        nid, k = f"{base}_{k}", k + 1
    taken.add(nid)
    return nid


def _size_label(t: Type) -> str:
    if t.kind == "token":
        return "token"
    if t.kind == "tokens":
        return f"{int(t.size)} tok" if float(t.size).is_integer() else f"{t.size:.3g} tok"
    n = float(t.size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _mermaid_text(s: str) -> str:
    """`s` with every character Mermaid might read as syntax written as an entity code."""
    return "".join(ch if _SAFE_LABEL.fullmatch(ch) else f"#{ord(ch)};" for ch in s)


def _dot_str(s: str) -> str:
    """A DOT double-quoted string; newlines become DOT's centred line breaks."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
