"""partition-phase: let an LLM call's prefill and decode land on different chips.

Without this pass, `place` keeps each call's prefill and decode together (one
placement unit). With it, each phase is its own unit tagged
`partition = "phase"`; when they land apart, `insert-transfers` moves the KV
cache between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gimletc.ir import Graph, Level, Op
from gimletc.passes.manager import Pass, PassContext


@dataclass(frozen=True)
class PartitionPhase(Pass):
    name: ClassVar[str] = "partition-phase"
    requires: ClassVar[tuple[Level, ...]] = ("model",)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        def tag(op: Op) -> Op:
            if op.kind in ("model.prefill", "model.decode") and op.attr("variant") is None:
                return op.with_attrs(partition="phase", variant="phase")
            return op

        return graph.map_ops(tag)
