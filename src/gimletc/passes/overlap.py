"""overlap: hide transfers behind compute by rewriting token edges.

Two rewrites, each kept only if the replayed latency does not grow (so the
pass never lengthens a plan):

1. Asynchronous copies. `schedule` puts sends and receives in the devices'
   program order, so a device waits while its copy runs. Here the next op on
   the source takes the token the send itself waited for (the copy runs
   beside later compute), and a receive keeps only its dependency on the send
   (it is hoisted above the destination's earlier compute, as a prefetch).
2. Layer-streamed KV. A prefill whose KV cache moves to another chip is split
   into `chunks` layer groups, each followed by a send of that group's KV, so
   group i's KV moves while group i+1 computes; the receive waits for the
   last chunk. The split keeps the prefill's total time and bytes; each chunk
   pays the route latency again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from annotated_types import Ge

from gimletc.ir import ASYNC_TOKEN, Graph, Level, Op, Value
from gimletc.passes.manager import Pass, PassContext
from gimletc.passes.results import OverlapReport

TRANSFER_KINDS = ("exec.send", "exec.recv", "exec.convert")


def _token_names(graph: Graph) -> set[str]:
    return {v.name for op, _ in graph.walk() for v in op.results if v.type.kind == "token"}


def async_transfers(graph: Graph) -> Graph:
    """Let devices run past their copies: drop the chain edges through sends and receives."""
    tokens = _token_names(graph)
    # chain-token operands of each transfer op (its token operands that are not its own data input)
    skip: dict[str, tuple[str, ...]] = {}
    for op, _ in graph.walk():
        if op.kind == "exec.send":
            skip[op.results[-1].name] = tuple(v for v in op.operands[1:] if v in tokens)
        elif op.kind == "exec.recv":
            skip[op.results[-1].name] = tuple(v for v in op.operands[1:] if v in tokens)

    def resolve(tok: str) -> tuple[str, ...]:
        out: list[str] = []
        stack = [tok]
        while stack:
            t = stack.pop()
            if t in skip:
                stack.extend(reversed(skip[t]))
            else:
                out.append(t)
        return tuple(out)

    def rewrite(op: Op) -> Op:
        if op.kind == "exec.send":
            return op.with_operands(op.operands[:1])  # depends on its data only
        if op.kind == "exec.recv":
            return op.with_operands(op.operands[:1])  # depends on its send only
        if not op.kind.startswith("exec."):
            return op  # agent ops (loops, yields) take data operands only, positionally
        new: list[str] = []
        for v in op.operands:
            new.extend(resolve(v) if v in skip else (v,))
        return op.with_operands(dict.fromkeys(new))

    return graph.map_ops(rewrite)


def stream_kv(graph: Graph, chunks: int) -> Graph:
    """Split each prefill whose KV cache is sent elsewhere into `chunks` layer groups with one send each."""
    graph = graph.replace_ops(
        op.with_regions(stream_kv(r, chunks) for r in op.regions) if op.regions else op for op in graph.ops
    )
    by_value: dict[str, Op] = {v.name: op for op in graph.ops for v in op.results}
    kinds = {v.name: v.type.kind for op in graph.ops for v in op.results}
    sends = [op for op in graph.ops if op.kind == "exec.send" and op.operands[0] in by_value]
    targets: dict[str, list[Op]] = {}
    for s in sends:
        prod = by_value[s.operands[0]]
        # Only a KV cache fills layer by layer as the prefill runs; activations exist at its end.
        if prod.kind == "exec.compute" and prod.attr("kind_of") == "model.prefill" and kinds[s.operands[0]] == "kv":
            targets.setdefault(prod.name, []).append(s)
    if not targets:
        return graph
    out: list[Op] = []
    recv_extra: dict[str, tuple[str, ...]] = {}
    replaced_sends: dict[str, int] = {}  # send -> its chunk count
    for op in graph.ops:
        if op.name in targets:
            k = min(chunks, _layers(op))
            secs = float(op.attr("seconds")) / k
            prev: tuple[str, ...] = tuple(v for v in op.operands)
            pieces: list[str] = []
            for i in range(k - 1):
                tok = Value(f"{op.name}.chunk{i}.done", ASYNC_TOKEN)
                out.append(
                    Op(
                        "exec.compute",
                        f"{op.name}.chunk{i}",
                        prev,
                        (tok,),
                        {**op.attrs, "seconds": secs, "chunk": i, "chunks": k},
                    )
                )
                pieces.append(tok.name)
                prev = (tok.name,)
            last = Op(op.kind, op.name, prev, op.results, {**op.attrs, "seconds": secs, "chunk": k - 1, "chunks": k})
            out.append(last)
            for s in targets[op.name]:
                toks = []
                for i, piece in enumerate(pieces):
                    t = Value(f"{s.name}.chunk{i}.sent", ASYNC_TOKEN)
                    attrs = {**s.attrs, "bytes": float(s.attr("bytes")) / k, "chunks": k, "seconds": _chunk_seconds(s, k)}
                    out.append(Op("exec.send", f"{s.name}.chunk{i}", (piece,), (t,), attrs))
                    toks.append(t.name)
                recv_extra[s.results[-1].name] = tuple(toks)
                replaced_sends[s.name] = k
            continue
        if op.name in replaced_sends:
            k = replaced_sends[op.name]
            attrs = {**op.attrs, "bytes": float(op.attr("bytes")) / k, "chunks": k}
            attrs["seconds"] = _chunk_seconds(op, k)
            out.append(Op(op.kind, op.name, op.operands, op.results, attrs))
            continue
        if op.kind == "exec.recv" and op.operands[0] in recv_extra:
            op = op.with_operands((*op.operands, *recv_extra[op.operands[0]]))
        out.append(op)
    return graph.replace_ops(out)


def _layers(op: Op) -> int:
    """Layers a prefill compute covers (a pipeline stage's range, or the whole model)."""
    rng = op.attr("layers")
    if rng is not None:
        return max(1, int(rng[1]) - int(rng[0]))
    from gimletc.models import get_model

    return get_model(str(op.attr("model"))).layers if op.attr("model") else 1


def _chunk_seconds(send: Op, k: int) -> float:
    """One of k chunks: the route's full latency plus a k-th of the bandwidth time."""
    lat = float(send.attr("latency", 0.0))
    return lat + (float(send.attr("seconds")) - lat) / k


@dataclass(frozen=True)
class Overlap(Pass):
    name: ClassVar[str] = "overlap"
    requires: ClassVar[tuple[Level, ...]] = ("exec",)
    chunks: Annotated[int, Ge(1)] = 8  # layer groups for streamed KV transfers (1: no streaming)
    stream: bool = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        # Replays go through the analysis cache: the driver reads the kept graph's replay from it.
        replay = ctx.analyses.timeline
        tl = replay(graph)
        best, best_tl = graph, tl
        before, use_async, streamed = tl.makespan, False, False
        cand = async_transfers(best)
        tl = replay(cand)
        if tl.makespan <= best_tl.makespan:
            best, best_tl, use_async = cand, tl, True
        if self.stream and self.chunks > 1:
            cand = stream_kv(best, self.chunks)
            if cand is not best:
                tl = replay(cand)
                if tl.makespan < best_tl.makespan:
                    best, best_tl, streamed = cand, tl, True
        ctx.overlap = OverlapReport(before_s=before, after_s=best_tl.makespan, async_transfers=use_async, streamed=streamed)
        return best
