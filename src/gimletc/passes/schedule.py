"""schedule: lower placed ops to `exec.compute` and fix each device's program order.

Every placed agent/model op becomes an `exec.compute` on its devices, keeping
its results and adding a done token. Each device (and each CPU lane of a host)
runs its ops in graph order, which is a topological order, and that order is
made explicit with `!async.token` chains: an op takes the last token of every
resource it uses.

Transfers join the chains too, as a runtime without asynchronous copies would
run them: a send sits in its source's chain after the producer (the source
waits for the copy to finish), a receive and a conversion in the
destination's chain before the consumer. `overlap` then removes the edges that
make devices wait for copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gimletc.ir import ASYNC_TOKEN, Graph, Level, Op, Value, spec
from gimletc.passes.manager import Pass, PassContext

COMPUTE = spec("exec.compute")
CHAIN = "chain"  # a token operand that orders ops on a resource (not a data dependency)


def resources(op: Op) -> tuple[str, ...]:
    devs = op.attr("devices")
    if devs:
        return tuple(str(d) for d in devs)
    dev = op.attr("device")
    return (str(dev),) if dev is not None else ()


@dataclass(frozen=True)
class Schedule(Pass):
    name: ClassVar[str] = "schedule"
    requires: ClassVar[tuple[Level, ...]] = ("transfers",)
    produces: ClassVar[Level | None] = "exec"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        producers: dict[str, Op] = {v.name: op for op, _ in graph.walk() for v in op.results}
        out = _lower(graph, producers)
        return out.with_attrs(**{"gimlet.level": "exec"})


def _lower(graph: Graph, producers: dict[str, Op]) -> Graph:
    last: dict[str, str] = {}  # resource -> last token in this scope
    ops: list[Op] = []
    # value -> resources of the first op in this scope that uses it (sends and conversions aside):
    # where a received value is consumed. Built once, so a scope of n ops costs O(n), not O(n^2).
    first_use: dict[str, tuple[str, ...]] = {}
    for other in graph.ops:
        if other.kind in ("exec.send", "exec.convert"):
            continue
        r = resources(other)
        if r:
            for v in other.operands:
                first_use.setdefault(v, r)

    def chain_tokens(res: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(last[r] for r in res if r in last))

    def advance(res: tuple[str, ...], token: str) -> None:
        for r in res:
            last[r] = token

    for op in graph.ops:
        if op.regions:
            ops.append(op.with_regions(_lower(r, producers) for r in op.regions))
            continue
        if op.kind == "agent.yield":
            ops.append(op)
            continue
        if op.kind == "exec.send":
            src_op = producers.get(op.operands[0])
            res = resources(src_op) if src_op is not None else (str(op.attr("src")),)
            tok = op.results[-1].name
            ops.append(op.with_operands((*op.operands, *chain_tokens(res))))
            advance(res, tok)
            continue
        if op.kind in ("exec.recv", "exec.convert"):
            res = first_use.get(op.results[0].name) or (str(op.attr("dst" if op.kind == "exec.recv" else "device")),)
            ops.append(op.with_operands((*op.operands, *chain_tokens(res))))
            advance(res, op.results[-1].name)
            continue
        res = resources(op)
        if not res:  # unplaced (e.g. an op kind place does not handle): keep as is
            ops.append(op)
            continue
        done = Value(f"{op.name}.done", ASYNC_TOKEN)
        attrs = {
            "of": op.name,
            "kind_of": op.kind,
            "device": str(op.attr("device")),
            "devices": tuple(res),
            "seconds": float(op.attr("seconds", 0.0)),
        }
        # Keep what the runtime and the plan need to know about the op (model, shape, partition, tool).
        allowed = {**COMPUTE.attrs, **COMPUTE.optional}
        for key, value in op.attrs.items():
            if key in allowed and key not in attrs and key not in ("of", "device", "devices", "seconds"):
                attrs[key] = value
        if op.attr("of") is not None:
            attrs["llm"] = str(op.attr("of"))
        ops.append(Op("exec.compute", op.name, (*op.operands, *chain_tokens(res)), (*op.results, done), attrs))
        advance(res, done.name)
    return graph.replace_ops(ops)
