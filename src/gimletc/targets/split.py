"""Split an LLM call's phases across devices in a compiled exec graph: pipeline stages, attention/FFN.

`split_llm(graph, cluster, llm, prefill=[(partition, device), ...], decode=[...])`
replaces the call's prefill and decode computes (streamed chunks included)
and their transfers with one compute per partition, in segment order, and
the transfers between them over the cluster's routes (a convert where a KV
part changes layout or dtype), in the form the runtime executes:

- prefill part j: `%<llm>.prefill.p<j>` on its device, reading the prompt
  (the part with the embedding) and the activations of earlier parts; its
  results are its activations for later parts (`!gimlet.act`), the KV cache
  of its layers (`%<llm>.kv.p<j>`) and, for the part with the head, the first
  token (`%<llm>.next`, `!gimlet.tokens<1>`);
- decode part j: `%<llm>.decode.p<j>`, reading the prefill KV parts of its
  layers, the first token (the part with the embedding) and the activations
  of earlier parts; the part with the head defines the call's result. The
  runtime runs the decode parts once per generated token and feeds each token
  back from the head's device to the embedding's.

Partitions must tile the model (contiguous, embedding to head). Each part's
predicted seconds are the phase's, scaled by its share of the weights. The
last decode part must stay on the device the compiler chose for the decode
(its result's transfers to later ops start there).

This rewrite stands in for the compiler's own partition kinds (model.layers,
attention, ffn) until the pipeline emits them; it inserts transfers itself,
with the same naming and route rules as `insert-transfers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gimletc.dtypes import nbytes as dtype_bytes
from gimletc.errors import GimletError
from gimletc.hardware import Cluster
from gimletc.importers.onnx_import import ImportedModel, load_onnx
from gimletc.ir import ASYNC_TOKEN, Graph, Op, Type, Value, verify
from gimletc.targets.partition import Partition, extract, parse_partition, whole

__all__ = ["SplitError", "split_llm"]


class SplitError(GimletError):
    """A split does not fit the graph, the model or the cluster: names the call, the partition and the device."""


def _tile(parts: Sequence[tuple[str, str]], im: ImportedModel, what: str) -> list[tuple[Partition, str]]:
    out = [(parse_partition(p, im.layers), d) for p, d in parts]
    if not out:
        raise SplitError(f"{what}: no partitions given")
    ordered = sorted(out, key=lambda x: x[0].start)
    if ordered[0][0].start != 0 or ordered[-1][0].end != 2 * im.layers + 2 or any(
        b[0].start != a[0].end for a, b in zip(ordered, ordered[1:], strict=False)
    ):
        raise SplitError(f"{what}: partitions {', '.join(str(p) for p, _ in out)} do not tile {im.name} from embed to head")
    return ordered


class _Split:
    def __init__(self, graph: Graph, cluster: Cluster, llm: str, im: ImportedModel):
        self.g, self.cluster, self.llm, self.im = graph, cluster, llm, im
        self.chips = {d.id: d.chip for d in cluster.devices()}
        self.values = {v.name: v for op, _ in graph.walk() for v in op.results}
        self.home: dict[str, str] = {}
        self.moved: dict[tuple[str, str], str] = {}
        self.total_weights = extract(im, whole(im.layers)).weight_bytes

    def device(self, d: str, what: str) -> str:
        if d not in self.chips:
            raise SplitError(f"{what}: device {d} is not in cluster {self.cluster.name}")
        return d

    def ensure(self, v: str, dst: str, out: list[Op]) -> str:
        """The name of value v on dst, adding a send/recv (and a convert for a KV part) when it lives elsewhere."""
        src = self.home[v]
        if src == dst:
            return v
        if (v, dst) in self.moved:
            return self.moved[(v, dst)]
        val = self.values[v]
        route = self.cluster.route(src, dst)
        n = float(val.type.nbytes)
        base = f"{v}.to.{dst}"
        channel = f"{src}->{dst}"
        sent = Value(f"{base}.sent", ASYNC_TOKEN)
        out.append(Op("exec.send", f"send.{base}", (v,), (sent,), {
            "src": src, "dst": dst, "route": route.kind, "bytes": n, "seconds": route.time(n),
            "latency": float(sum(h.latency for h in route.hops)), "channel": channel}))
        recv = Value(base, val.type)
        out.append(Op("exec.recv", f"recv.{base}", (sent.name,), (recv, Value(f"{base}.recv", ASYNC_TOKEN)),
                      {"src": src, "dst": dst, "bytes": n, "channel": channel}))
        self.values[base] = recv
        result = base
        if val.type.kind == "kv":
            a, b = self.chips[src], self.chips[dst]
            kv_dtype = self.im.model.kv_dtype
            to_dtype = kv_dtype if kv_dtype in b.dtypes else ("bf16" if "bf16" in b.dtypes else b.dtypes[0])
            if a.kv_layout != b.kv_layout or to_dtype != kv_dtype:
                out_bytes = n * dtype_bytes(to_dtype) / dtype_bytes(kv_dtype)
                conv = Value(f"{base}.converted", Type("kv", out_bytes))
                bw = (b.memory_bw or b.sram_bw) * b.efficiency.memory
                out.append(Op("exec.convert", f"convert.{base}", (base,), (conv, Value(f"{conv.name}.done", ASYNC_TOKEN)), {
                    "device": dst, "from_layout": a.kv_layout, "to_layout": b.kv_layout, "from_dtype": kv_dtype,
                    "to_dtype": to_dtype, "seconds": (n + out_bytes) / bw}))
                self.values[conv.name] = conv
                result = conv.name
        self.moved[(v, dst)] = result
        self.home[result] = dst
        return result

    def phase(self, phase: str, parts: list[tuple[Partition, str]], proto: Op, inputs: dict[str, Any], out: list[Op],
              result: Value | None) -> dict[str, str]:
        """Emit one phase's parts; returns the values it defines for the next phase (kv parts by layer, next token)."""
        im = self.im
        tokens = int(proto.attr("tokens"))
        act_bytes = tokens * im.model.hidden * dtype_bytes(im.model.act_dtype) if phase == "prefill" else im.model.hidden * dtype_bytes(im.model.act_dtype)
        producer_of: dict[str, str] = {}  # boundary tensor -> act value that carries it
        defined: dict[str, str] = {}
        seconds = float(proto.attr("seconds"))
        for j, (p, dev) in enumerate(parts):
            sub = extract(im, p)
            name = f"{self.llm}.{phase}.p{j}"
            operands: list[str] = []
            if im.token_input in sub.step_inputs:
                for v in inputs["tokens"]:
                    operands.append(self.ensure(v, dev, out))
            for layer in p.kv_layers if phase == "decode" else ():
                v = inputs["kv"].get(layer)
                if v is None:
                    raise SplitError(f"{name}: no prefill part holds the KV cache of layer {layer}")
                moved = self.ensure(v, dev, out)
                if moved not in operands:
                    operands.append(moved)
            for t in sub.boundary_inputs:
                v = producer_of.get(t)
                if v is None:
                    raise SplitError(f"{name} ({p}): tensor {t} comes from no earlier part")
                moved = self.ensure(v, dev, out)
                if moved not in operands:
                    operands.append(moved)
            results: list[Value] = []
            if sub.boundary_outputs:
                act = Value(f"{name}.act", Type("act", act_bytes))
                results.append(act)
                for t in sub.boundary_outputs:
                    producer_of[t] = act.name
            if phase == "prefill" and p.kv_layers:
                kv = Value(f"{self.llm}.kv.p{j}", Type("kv", im.model.kv_cache_bytes(tokens) * len(p.kv_layers) / im.layers))
                results.append(kv)
                for layer in p.kv_layers:
                    defined[f"kv{layer}"] = kv.name
            if p.has_head:
                if phase == "prefill":
                    results.append(Value(f"{self.llm}.next", Type("tokens", 1)))
                    defined["next"] = f"{self.llm}.next"
                elif result is not None:
                    results.append(result)
            results.append(Value(f"{name}.done", ASYNC_TOKEN))
            attrs = {k: proto.attr(k) for k in ("model", "tokens", "ctx", "batch", "llm") if proto.attr(k) is not None}
            share = sub.weight_bytes / self.total_weights if self.total_weights else 1 / len(parts)
            attrs.update({"of": f"{self.llm}.{phase}", "kind_of": f"model.{phase}", "partition": str(p), "device": dev,
                          "devices": (dev,), "seconds": seconds * share})
            out.append(Op("exec.compute", name, tuple(operands), tuple(results), attrs))
            for r in results:
                self.values[r.name] = r
                self.home[r.name] = dev
        return defined


def split_llm(
    graph: Graph,
    cluster: Cluster,
    llm: str,
    *,
    prefill: Sequence[tuple[str, str]] | None = None,
    decode: Sequence[tuple[str, str]] | None = None,
    model_base: str | Path | None = None,
) -> Graph:
    """`graph` with LLM call `llm`'s prefill and decode run as the given (partition, device) parts.

    None keeps a phase whole on the device the compiler chose. Raises SplitError naming the
    call, the partition or the device that does not fit."""
    top = graph.ops
    pre = [op for op in top if op.kind == "exec.compute" and op.attr("of") == f"{llm}.prefill"]
    dec = [op for op in top if op.kind == "exec.compute" and op.attr("of") == f"{llm}.decode"]
    if not pre or len(dec) != 1:
        raise SplitError(f"LLM call {llm}: expected its prefill and one decode compute at the top level of the graph")
    d_op = dec[0]
    model_ref = str(d_op.attr("model"))
    path = Path(model_ref)
    if path.suffix != ".onnx":
        raise SplitError(f"LLM call {llm}: model {model_ref} is not an ONNX file; only imported models can be split")
    if not path.exists() and model_base is not None:
        path = Path(model_base) / path
    im = load_onnx(path)
    s = _Split(graph, cluster, llm, im)
    dev_p, dev_d = str(pre[-1].attr("device")), str(d_op.attr("device"))
    pparts = _tile(prefill or [("all", dev_p)], im, f"prefill of {llm}")
    dparts = _tile(decode or [("all", dev_d)], im, f"decode of {llm}")
    for p, d in [*pparts, *dparts]:
        s.device(d, f"{llm}: partition {p}")
    if dparts[-1][1] != dev_d:
        raise SplitError(f"decode of {llm}: its last part ({dparts[-1][0]}) must stay on {dev_d}, where the compiler "
                         f"placed the decode; got {dparts[-1][1]}")
    result = d_op.results[0] if d_op.results and d_op.results[0].type.kind != "token" else None
    # What goes away: the phases' computes and every transfer derived from their results (not the call's result).
    removed = {op.name: ("prefill" if op in pre else "decode") for op in [*pre, *dec]}
    derived: dict[str, str] = {v.name: removed[op.name] for op in [*pre, *dec] for v in op.results}
    if result is not None:
        derived.pop(result.name)
    for op in top:
        if op.kind in ("exec.send", "exec.recv", "exec.convert") and op.operands and op.operands[0] in derived:
            side = derived[op.operands[0]]
            removed[op.name] = side
            derived.update({v.name: side for v in op.results})
    prompt = [v for v in pre[0].operands if s.values.get(v) is None or s.values[v].type.kind != "token"]
    for op, _ in graph.walk():
        dev = op.attr("device") or op.attr("dst")
        for v in op.results:
            if dev is not None:
                s.home.setdefault(v.name, str(op.attr("dst") if op.kind == "exec.recv" else dev))
    new_pre: list[Op] = []
    defined = s.phase("prefill", pparts, pre[-1], {"tokens": prompt}, new_pre, None)
    new_dec: list[Op] = []
    kv_by_layer = {int(k[2:]): v for k, v in defined.items() if k.startswith("kv")}
    s.phase("decode", dparts, d_op, {"tokens": [defined["next"]], "kv": kv_by_layer}, new_dec, result)
    last_done = {"prefill": new_pre[-1].results[-1].name if new_pre else None,
                 "decode": next(o for o in reversed(new_dec) if o.kind == "exec.compute").results[-1].name}
    token_map = {v: last_done[side] for v, side in derived.items() if s.values.get(v) is not None and s.values[v].type.kind == "token"}
    first_pre = min(i for i, op in enumerate(top) if removed.get(op.name) == "prefill")
    ops: list[Op] = []
    for i, op in enumerate(top):
        if i == first_pre:
            ops.extend(new_pre)
        if op.name == d_op.name:
            ops.extend(new_dec)
        if op.name in removed:
            continue
        if any(v in token_map or v in derived for v in op.operands):
            bad = [v for v in op.operands if v in derived and v not in token_map]
            if bad:
                raise SplitError(f"op {op.name} reads %{bad[0]}, which the split of {llm} removes")
            op = op.with_operands(dict.fromkeys(token_map.get(v, v) for v in op.operands))
        ops.append(op)
    out = graph.replace_ops(ops)
    try:
        return verify(out)
    except GimletError as e:
        raise SplitError(f"split of {llm} produced an invalid graph: {e}") from None
