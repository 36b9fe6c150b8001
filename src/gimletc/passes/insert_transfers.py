"""insert-transfers: give every cross-device edge exactly one transfer.

For each value used on a device other than the one that produced it, one
`exec.send` (on the source) and one `exec.recv` (on the destination) move it,
over the route the cluster gives (direct peer copy, host bounce, network),
with its bytes and predicted seconds. Consumers on that device then use the
received value. A KV cache moving between chips whose KV layouts differ, or to
a chip that does not compute in the cache's dtype, also gets an
`exec.convert` on the destination.

A value defined outside a loop or branch and used inside it is moved once,
before the loop, not on every iteration. This is the only pass that inserts
transfers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gimletc.dtypes import nbytes as dtype_bytes
from gimletc.hardware.resources import channel_id
from gimletc.hardware.schema import Chip
from gimletc.ir import ASYNC_TOKEN, Graph, Level, Op, Type, Value, forwarded_values
from gimletc.models import get_model
from gimletc.passes.manager import Pass, PassContext
from gimletc.passes.results import ConvertRecord, TransferRecord


@dataclass(frozen=True)
class InsertTransfers(Pass):
    name: ClassVar[str] = "insert-transfers"
    requires: ClassVar[tuple[Level, ...]] = ("placed",)
    produces: ClassVar[Level | None] = "transfers"
    needs_cluster: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        cluster = ctx.cluster
        chips = {d.id: d.chip for d in cluster.devices()}
        home: dict[str, str] = {}  # value -> device it lives on
        model_of: dict[str, str] = {}  # kv value -> model name
        for op, _ in graph.walk():
            dev = op.attr("device")
            for v in op.results:
                if dev is not None:
                    home[v.name] = str(dev)
                if v.type.kind == "kv" and op.attr("model"):
                    model_of[v.name] = str(op.attr("model"))
        for v, src in forwarded_values(graph):  # region values live where what they forward lives
            if src in home:
                home[v] = home[src]
        values = {v.name: v for op, _ in graph.walk() for v in op.results}
        for op, _ in graph.walk():
            for r in op.regions:
                values.update({a.name: a for a in r.args})
        builder = _Builder(cluster, chips, home, model_of, values, ctx)
        out = builder.scope(graph, {})
        ctx.transfers = tuple(builder.records)
        return out.with_attrs(**{"gimlet.level": "transfers"})


class _Builder:
    def __init__(self, cluster: Any, chips: dict[str, Chip], home: dict[str, str], model_of: dict[str, str],
                 values: dict[str, Value], ctx: PassContext):
        self.cluster, self.chips, self.home, self.model_of, self.values = cluster, chips, home, model_of, values
        self.ctx = ctx
        self.records: list[TransferRecord] = []

    def scope(self, graph: Graph, moved: dict[tuple[str, str], str]) -> Graph:
        """Rewrite one graph; `moved` maps (value, device) to the name of the value already moved there."""
        moved = dict(moved)
        out: list[Op] = []
        for op in graph.ops:
            if op.regions:
                # Values captured from outside the region: move them before the region op, once.
                inner_uses: list[tuple[str, str]] = []
                defined = {a.name for r in op.regions for a in r.args} | {
                    v.name for r in op.regions for o, _ in r.walk() for v in o.results
                }
                for r in op.regions:
                    for inner, _ in r.walk():
                        dev = inner.attr("device")
                        if dev is None:
                            continue
                        inner_uses.extend((v, str(dev)) for v in inner.operands if v not in defined)
                for v, dev in dict.fromkeys(inner_uses):
                    self._ensure(v, dev, moved, out)
                op = op.with_regions(self.scope(r, moved) for r in op.regions)
            dev = op.attr("device")
            if dev is not None:
                new_operands = [self._ensure(v, str(dev), moved, out) for v in op.operands]
                op = op.with_operands(new_operands)
            out.append(op)
        return graph.replace_ops(out)

    def _ensure(self, v: str, dst: str, moved: dict[tuple[str, str], str], out: list[Op]) -> str:
        """The name under which value v is available on device dst, inserting the transfer if needed."""
        src = self.home.get(v)
        if src is None or src == dst:
            return v
        if (v, dst) in moved:
            return moved[(v, dst)]
        val = self.values[v]
        route = self.cluster.route(src, dst)
        nbytes = val.type.nbytes
        seconds = route.time(nbytes)
        base = f"{v}.to.{dst}"
        send_tok = Value(f"{base}.sent", ASYNC_TOKEN)
        channel = channel_id(src, dst)
        out.append(
            Op(
                "exec.send",
                f"send.{base}",
                (v,),
                (send_tok,),
                {
                    "src": src,
                    "dst": dst,
                    "route": route.kind,
                    "bytes": float(nbytes),
                    "seconds": seconds,
                    "latency": float(sum(h.latency for h in route.hops)),
                    "channel": channel,
                },
            )
        )
        recv_val = Value(base, val.type)
        self.values[base] = recv_val
        out.append(
            Op(
                "exec.recv",
                f"recv.{base}",
                (send_tok.name,),
                (recv_val, Value(f"{base}.recv", ASYNC_TOKEN)),
                {"src": src, "dst": dst, "bytes": float(nbytes), "channel": channel},
            )
        )
        result, convert = recv_val.name, None
        if val.type.kind == "kv":
            conv = self._convert(v, src, dst, recv_val, out)
            if conv is not None:
                result, convert = conv
        self.records.append(TransferRecord(
            value=v, src=src, dst=dst, route=route.kind, hops=tuple(h.kind for h in route.hops), bytes=float(nbytes),
            seconds=seconds, send=f"send.{base}", recv=f"recv.{base}", convert=convert,
        ))
        moved[(v, dst)] = result
        self.home[result] = dst
        return result

    def _convert(self, v: str, src: str, dst: str, received: Value, out: list[Op]) -> tuple[str, ConvertRecord] | None:
        a, b = self.chips[src], self.chips[dst]
        model = self.model_of.get(v)
        kv_dtype = get_model(model).kv_dtype if model else "bf16"
        to_dtype = kv_dtype if kv_dtype in b.dtypes else ("bf16" if "bf16" in b.dtypes else b.dtypes[0])
        if a.kv_layout == b.kv_layout and to_dtype == kv_dtype:
            return None
        in_bytes = received.type.size
        out_bytes = in_bytes * dtype_bytes(to_dtype) / dtype_bytes(kv_dtype)
        bw = b.stream_bw * b.efficiency.memory
        seconds = (in_bytes + out_bytes) / bw  # read the cache once, write it once in the new layout
        name = f"{received.name}.converted"
        conv_val = Value(name, Type("kv", out_bytes))
        attrs = {
            "device": dst,
            "from_layout": a.kv_layout,
            "to_layout": b.kv_layout,
            "from_dtype": kv_dtype,
            "to_dtype": to_dtype,
            "seconds": seconds,
        }
        op_name = f"convert.{received.name}"
        out.append(Op("exec.convert", op_name, (received.name,), (conv_val, Value(f"{name}.done", ASYNC_TOKEN)), attrs))
        self.values[name] = conv_val
        return name, ConvertRecord(op=op_name, **attrs)
