"""insert-transfers: give every cross-device edge exactly one transfer.

For each value used on a device other than the one that produced it, one
`exec.send` (on the source) and one `exec.recv` (on the destination) move it,
over the route the cluster gives (direct peer copy, host bounce, network),
with its bytes and predicted seconds. Consumers on that device then use the
received value. A KV cache moving between chips whose KV layouts differ, or to
a chip that does not compute in the cache's dtype, also gets an
`exec.convert` on the destination.

A value defined outside a loop or branch and used inside it is moved once,
before the loop, not on every iteration.

Loops and branches forward values. A loop's carried value (body argument)
lives on one device D in every iteration: the loop's operand for it moves to D
once, before the loop, and the body yields the next iteration's value on D, so
where the value's producer and D differ, the body ends by moving it there (the
loop's back edge, run every iteration, the last included: the loop's result is
the value on D). D is the cheapest of the initial value's device, the devices
that use the argument in the body and the producer's device, by the route
times of what moves per loop: the initial value to D once, the yielded value
to D and the argument to each other user every iteration (the body's expected
count), and the result to each device that uses it after the loop. Every arm
of a branch yields each result on the device where the first arm puts it.

This is the only pass that inserts transfers.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        users: dict[str, list[str]] = {}  # value -> devices of the placed ops using it, in walk order
        for op, _ in graph.walk():
            dev = op.attr("device")
            for v in op.results:
                if dev is not None:
                    home[v.name] = str(dev)
                if v.type.kind == "kv" and op.attr("model"):
                    model_of[v.name] = str(op.attr("model"))
            if dev is not None:
                for v in op.operands:
                    users.setdefault(v, []).append(str(dev))
        # Region values (loop and branch results, body arguments) get their device as the rewrite reaches
        # them (see _Builder.scope); until then they live where what they forward lives.
        for v, src in forwarded_values(graph):
            if src in home:
                home[v] = home[src]
        values = {v.name: v for op, _ in graph.walk() for v in op.results}
        for op, _ in graph.walk():
            for r in op.regions:
                values.update({a.name: a for a in r.args})
        builder = _Builder(cluster, chips, home, model_of, values, ctx, users)
        out = builder.scope(graph, {})
        ctx.transfers = tuple(builder.records)
        return out.with_attrs(**{"gimlet.level": "transfers"})


class _Builder:
    def __init__(self, cluster: Any, chips: dict[str, Chip], home: dict[str, str], model_of: dict[str, str],
                 values: dict[str, Value], ctx: PassContext, users: dict[str, list[str]]):
        self.cluster, self.chips, self.home, self.model_of, self.values = cluster, chips, home, model_of, values
        self.ctx = ctx
        self.users = users
        self.records: list[TransferRecord] = []
        self._route_s: dict[tuple[str, str, float], float] = {}

    def scope(self, graph: Graph, moved: dict[tuple[str, str], str], yield_to: Sequence[str | None] = ()) -> Graph:
        """Rewrite one graph; `moved` maps (value, device) to the name of the value already moved there;
        `yield_to` gives the device each operand of the graph's final yield must be on (None: anywhere)."""
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
                if op.kind == "agent.loop":
                    op = self._loop(op, moved, out)
                elif op.kind == "agent.branch":
                    op = self._branch(op, moved)
                else:
                    op = op.with_regions(self.scope(r, moved) for r in op.regions)
            elif op.kind == "agent.yield" and yield_to:
                op = op.with_operands(
                    self._ensure(v, d, moved, out) if d is not None else v
                    for v, d in zip(op.operands, [*yield_to, *[None] * len(op.operands)], strict=False))
            dev = op.attr("device")
            if dev is not None:
                new_operands = [self._ensure(v, str(dev), moved, out) for v in op.operands]
                op = op.with_operands(new_operands)
            out.append(op)
        return graph.replace_ops(out)

    def _loop(self, op: Op, moved: dict[tuple[str, str], str], out: list[Op]) -> Op:
        """Each carried value on its device (see the module docstring): the operands moved there before the
        loop, the body's yield moved there on the back edge; the results live there."""
        body = op.regions[0]
        yields = body.ops[-1].operands
        expected = float(op.attr("expected", 1.0))
        operands: list[str] = []
        where: list[str | None] = []
        for arg, init, y, res in zip(body.args, op.operands, yields, op.results, strict=True):
            d = self._carried_home(arg, init, y, res.name, expected)
            if d is not None:
                init = self._ensure(init, d, moved, out)
                self.home[arg.name] = self.home[res.name] = d
            operands.append(init)
            where.append(d)
        return op.with_operands(operands).with_regions([self.scope(body, moved, where)])

    def _branch(self, op: Op, moved: dict[tuple[str, str], str]) -> Op:
        """The first arm decides where each result lives; the other arms yield their values there."""
        first = self.scope(op.regions[0], moved)
        where = [self.home.get(v) for v in first.ops[-1].operands]
        for res, d in zip(op.results, where, strict=False):
            if d is not None:
                self.home[res.name] = d
        return op.with_regions([first, *(self.scope(r, moved, where) for r in op.regions[1:])])

    def _carried_home(self, arg: Value, init: str, y: str, result: str, expected: float) -> str | None:
        """The device a loop's carried value lives on: the candidate moving the least per loop (module docstring)."""
        src = self.home.get(init)
        inside = list(dict.fromkeys(self.users.get(arg.name, ())))
        after = list(dict.fromkeys(self.users.get(result, ())))
        producer = None if y == arg.name else self.home.get(y)
        candidates = list(dict.fromkeys(d for d in (src, *inside, producer) if d is not None))
        if not candidates:
            return None
        y_bytes = self.values[y].type.nbytes if y in self.values else 0.0

        def moves(d: str) -> float:
            t = self._seconds(src, d, self.values[init].type.nbytes) if src is not None else 0.0
            if producer is not None:
                t += expected * self._seconds(producer, d, y_bytes)
            t += expected * sum(self._seconds(d, u, arg.type.nbytes) for u in inside)
            return t + sum(self._seconds(d, u, y_bytes) for u in after)

        return min(candidates, key=moves)  # the first candidate on a tie: the initial value's device

    def _seconds(self, src: str, dst: str, nbytes: float) -> float:
        if src == dst:
            return 0.0
        key = (src, dst, nbytes)
        if key not in self._route_s:
            self._route_s[key] = self.cluster.route(src, dst).time(nbytes)
        return self._route_s[key]

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
