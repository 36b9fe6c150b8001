"""How often each op runs per request: loop expectations times branch probabilities."""

from __future__ import annotations

from gimletc.ir import Graph


def runs(graph: Graph) -> dict[str, float]:
    """Expected executions per request of every op (loop expectation x branch probability)."""
    out: dict[str, float] = {}

    def rec(gr: Graph, scale: float) -> None:
        for op in gr.ops:
            out[op.name] = scale
            if op.kind == "agent.loop":
                rec(op.regions[0], scale * float(op.attr("expected")))
            elif op.kind == "agent.branch":
                for r, p in zip(op.regions, op.attr("probabilities"), strict=True):
                    rec(r, scale * float(p))

    rec(graph, 1.0)
    return out
