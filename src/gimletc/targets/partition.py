"""Partitions of an imported model and their ONNX subgraphs.

A partition is a contiguous range of an imported model's segments
(`embed, layer0.attention, layer0.ffn, ..., head`). Its text form:

| text | segments |
|---|---|
| `all` | the whole step |
| `layers[a:b]` | layers a .. b-1, with the embedding when a = 0 and the head when b = layers (a pipeline stage) |
| `attention[i]`, `ffn[i]` | one block of layer i |
| `embed`, `head`, `layer3.ffn` | one segment |
| `embed+attention[0]` | several contiguous terms joined by `+` |

`extract(model, partition)` cuts the subgraph with `onnx.utils.Extractor`:
its inputs are the step inputs it reads (token ids, its layers' past KV) and
the tensors earlier segments produce for it; its outputs are the step outputs
it produces (logits, its layers' present KV) and the tensors later segments
read from it. Each subgraph gets a unique graph name, so several can be
imported into one MLIR context or loaded side by side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import onnx

from gimletc.errors import GimletError
from gimletc.models.onnx import ImportedModel, tensor_bytes

__all__ = [
    "Partition",
    "PartitionError",
    "Subgraph",
    "attention_block",
    "chunk_partition",
    "extract",
    "ffn_block",
    "graph_partitions",
    "layer_range",
    "parse_partition",
    "partition_of",
    "stage_ranges",
    "whole",
]


class PartitionError(GimletError):
    """A partition text or range does not fit the model: names the text and the model."""


@dataclass(frozen=True, order=True)
class Partition:
    """Segments [start, end) of a model with `layers` layers."""

    start: int
    end: int
    layers: int

    def __post_init__(self) -> None:
        n = 2 * self.layers + 2
        if not (0 <= self.start < self.end <= n):
            raise PartitionError(f"segment range [{self.start}:{self.end}) is empty or outside 0..{n} of a {self.layers}-layer model")

    @property
    def segments(self) -> range:
        return range(self.start, self.end)

    @property
    def is_whole(self) -> bool:
        return self.start == 0 and self.end == 2 * self.layers + 2

    @property
    def has_embed(self) -> bool:
        return self.start == 0

    @property
    def has_head(self) -> bool:
        return self.end == 2 * self.layers + 2

    @property
    def kv_layers(self) -> tuple[int, ...]:
        """Layers whose attention (and so whose KV cache) this partition holds."""
        return tuple(i for i in range(self.layers) if self.start <= 1 + 2 * i < self.end)

    def layer_span(self) -> tuple[int, int]:
        """(first, last + 1) of the layers any of whose segments it holds (empty: (k, k))."""
        touched = [i for i in range(self.layers) if self.start <= 1 + 2 * i < self.end or self.start <= 2 + 2 * i < self.end]
        return (touched[0], touched[-1] + 1) if touched else (0, 0)

    def __str__(self) -> str:
        if self.is_whole:
            return "all"
        for a in range(self.layers + 1):
            for b in range(a + 1, self.layers + 1):
                if layer_range(a, b, self.layers) == self:
                    return f"layers[{a}:{b}]"
        names = []
        for s in self.segments:
            if s == 0:
                names.append("embed")
            elif s == 2 * self.layers + 1:
                names.append("head")
            else:
                i, part = divmod(s - 1, 2)
                names.append(f"{'attention' if part == 0 else 'ffn'}[{i}]")
        return "+".join(names)

    @property
    def slug(self) -> str:
        """A name usable in file names and MLIR symbols."""
        return re.sub(r"[^A-Za-z0-9]+", "_", str(self)).strip("_")


def whole(layers: int) -> Partition:
    return Partition(0, 2 * layers + 2, layers)


def layer_range(a: int, b: int, layers: int) -> Partition:
    """Layers a .. b-1 as a pipeline stage: with the embedding when a = 0 and the head when b = layers."""
    if not (0 <= a < b <= layers):
        raise PartitionError(f"layers[{a}:{b}] is empty or outside the model's {layers} layers")
    return Partition(0 if a == 0 else 1 + 2 * a, 2 * layers + 2 if b == layers else 1 + 2 * b, layers)


def attention_block(i: int, layers: int) -> Partition:
    if not 0 <= i < layers:
        raise PartitionError(f"attention[{i}]: the model has layers 0..{layers - 1}")
    return Partition(1 + 2 * i, 2 + 2 * i, layers)


def ffn_block(i: int, layers: int) -> Partition:
    if not 0 <= i < layers:
        raise PartitionError(f"ffn[{i}]: the model has layers 0..{layers - 1}")
    return Partition(2 + 2 * i, 3 + 2 * i, layers)


_TERM = re.compile(r"^(?:(all|embed|head)|layers\[(\d+):(\d+)\]|(attention|ffn)\[(\d+)\]|layer(\d+)\.(attention|ffn))$")


def parse_partition(text: str, layers: int) -> Partition:
    """Parse the text form (see the module docstring); terms joined by `+` must be contiguous."""
    ranges: list[Partition] = []
    for term in text.replace(" ", "").split("+"):
        m = _TERM.match(term)
        if not m:
            raise PartitionError(
                f"partition {text!r}: cannot read {term!r}; expected all, embed, head, layers[a:b], attention[i], ffn[i] "
                "or layerN.attention / layerN.ffn, joined by +"
            )
        if m.group(1) == "all":
            ranges.append(whole(layers))
        elif m.group(1) == "embed":
            ranges.append(Partition(0, 1, layers))
        elif m.group(1) == "head":
            ranges.append(Partition(2 * layers + 1, 2 * layers + 2, layers))
        elif m.group(2) is not None:
            ranges.append(layer_range(int(m.group(2)), int(m.group(3)), layers))
        else:
            kind, idx = (m.group(4), m.group(5)) if m.group(4) else (m.group(7), m.group(6))
            ranges.append((attention_block if kind == "attention" else ffn_block)(int(idx), layers))
    ranges.sort()
    for a, b in zip(ranges, ranges[1:], strict=False):
        if b.start != a.end:
            raise PartitionError(f"partition {text!r}: its terms are not contiguous segments of the model")
    return Partition(ranges[0].start, ranges[-1].end, layers)


@dataclass(frozen=True, eq=False)
class Subgraph:
    """One partition's ONNX model and how it connects to the rest of the step."""

    partition: Partition
    proto: onnx.ModelProto
    step_inputs: tuple[str, ...]  # token ids and past KV it reads
    boundary_inputs: tuple[str, ...]  # tensors produced by earlier segments
    step_outputs: tuple[str, ...]  # logits and present KV it produces
    boundary_outputs: tuple[str, ...]  # tensors later segments read
    weight_bytes: int

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*self.step_inputs, *self.boundary_inputs)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (*self.step_outputs, *self.boundary_outputs)

    def serialized(self) -> bytes:
        return self.proto.SerializeToString(deterministic=True)


def extract(model: ImportedModel, partition: Partition | str) -> Subgraph:
    """The ONNX subgraph of `partition` (cached per model and partition)."""
    if isinstance(partition, str):
        partition = parse_partition(partition, model.layers)
    if partition.layers != model.layers:
        raise PartitionError(f"partition {partition} is for {partition.layers} layers; model {model.name} has {model.layers}")
    return _extract(model, partition)


@cache
def _extract(model: ImportedModel, p: Partition) -> Subgraph:
    g = model.proto.graph
    seg = model.node_segment
    inside = [n for n in g.node if p.start <= seg[n.name] < p.end]
    produced = {o for n in inside for o in n.output if o}
    inits = {t.name for t in g.initializer}
    graph_inputs = [i.name for i in g.input]
    read = {x for n in inside for x in n.input if x}
    step_inputs = tuple(x for x in graph_inputs if x in read)
    boundary_in = sorted({x for x in read if x not in produced and x not in inits and x not in graph_inputs})
    later: set[str] = set()
    for n in g.node:
        if seg[n.name] >= p.end:
            later.update(x for x in n.input if x in produced)
    graph_outputs = [o.name for o in g.output]
    step_outputs = tuple(o for o in graph_outputs if o in produced)
    boundary_out = sorted(later - set(step_outputs))
    ex = model.extractor
    missing = [x for x in [*boundary_in, *boundary_out] if x not in ex.value_infos]
    if missing:
        raise PartitionError(
            f"model {model.name}, partition {p}: no type known for boundary tensor(s) {', '.join(missing[:5])} "
            "(ONNX shape inference could not type them)"
        )
    inputs = [*step_inputs, *boundary_in]
    outputs = [*step_outputs, *boundary_out]
    if not outputs:
        raise PartitionError(f"model {model.name}, partition {p}: produces nothing later segments or the step use")
    sub = ex.extract_model(inputs, outputs)
    sub.graph.name = re.sub(r"[^A-Za-z0-9_]", "_", f"{model.name}__{p.slug}")
    sub.ir_version = model.proto.ir_version
    del sub.metadata_props[:]
    for k, v in (
        ("gimletc.model", model.name),
        ("gimletc.partition", str(p)),
        ("gimletc.source_sha256", model.sha256),
    ):
        sub.metadata_props.add(key=k, value=v)
    return Subgraph(p, sub, step_inputs, tuple(boundary_in), step_outputs, tuple(boundary_out), tensor_bytes(sub))


def chunk_partition(i: int, k: int, layers: int, base: Partition | None = None) -> Partition | None:
    """Chunk i of a prefill (or of a pipeline stage `base`) streamed in k layer groups by the
    `overlap` pass: layers a + floor(i·n/k) .. a + floor((i+1)·n/k) - 1 of the n layers [a, a+n),
    the embedding with chunk 0 and the head with the last (where `base` has them); None when the
    chunk holds no segment (more chunks than layers)."""
    if not 0 <= i < k:
        raise PartitionError(f"chunk {i} of {k} does not exist")
    base = base or whole(layers)
    a, e = base.layer_span()
    n = e - a
    lo, hi = a + i * n // k, a + (i + 1) * n // k
    start = base.start if i == 0 else 1 + 2 * lo
    end = base.end if i == k - 1 else 1 + 2 * hi
    return Partition(start, end, layers) if start < end else None


MODEL_COMPUTES = ("model.prefill", "model.decode", "model.attention", "model.ffn", "model.draft", "model.verify")
"""exec.compute kinds that run a partition of a model (model.kv_rollback only shortens a cache)."""

_STAGE = re.compile(r"\.(prefill|decode)\.s(\d+)(?:\.chunk\d+)?$")
_BLOCK = re.compile(r"\.(attn|ffn)(\d+)\.m\d+$")


def _layers_attr(attrs: Mapping[str, Any]) -> tuple[int, int] | None:
    v = attrs.get("layers")
    if isinstance(v, tuple | list) and len(v) == 2:
        return int(v[0]), int(v[1])
    return None


def partition_of(attrs: Mapping[str, Any], layers: int, stages: Mapping[int, tuple[int, int]] | None = None,
                 name: str = "") -> Partition | None:
    """The partition an exec.compute runs, from its kind and attributes (None: an empty streamed chunk).

    - `partition` text (other than `phase`): that partition;
    - `model.attention` / `model.ffn` of layers (l, l+1): that block, with the embedding for layer 0's
      attention (it reads the token) and the head for the last layer's FFN (it yields the next token);
    - `layers` (a, b) on a prefill or decode stage: `layers[a:b]` (a pipeline stage);
    - `chunk`/`chunks`: that layer group of the (stage's) prefill;
    - otherwise the whole step (prefill, decode, draft, verify).
    Exec computes that lost their `layers` attribute are read from their name (`X.prefill.s1`,
    `X.attn3.m0`) with `stages` (stage index -> layer range, see `stage_ranges`)."""
    kind = attrs.get("kind_of")
    text = attrs.get("partition")
    if text not in (None, "", "phase", "all", "whole"):
        return parse_partition(str(text), layers)
    span = _layers_attr(attrs)
    if kind in ("model.attention", "model.ffn"):
        if span is None:
            m = _BLOCK.search(name)
            if not m:
                raise PartitionError(f"op {name}: {kind} without a `layers` attribute")
            span = (int(m.group(2)), int(m.group(2)) + 1)
        lo, hi = span
        if kind == "model.attention":
            return Partition(0 if lo == 0 else 1 + 2 * lo, 2 + 2 * (hi - 1), layers)
        return Partition(2 + 2 * lo, 2 * layers + 2 if hi == layers else 3 + 2 * (hi - 1), layers)
    base: Partition | None = None
    if span is None and stages:
        m = _STAGE.search(name)
        if m and int(m.group(2)) in stages:
            span = stages[int(m.group(2))]
    if span is not None and kind in ("model.prefill", "model.decode"):
        base = layer_range(span[0], span[1], layers)
    if attrs.get("chunk") is not None and attrs.get("chunks") is not None:
        return chunk_partition(int(attrs["chunk"]), int(attrs["chunks"]), layers, base)
    return base or whole(layers)


def stage_ranges(ops: Iterable[Any], llm: str, layers: int, per_layer_kv: float) -> dict[int, tuple[int, int]]:
    """Layer ranges of an LLM call's pipeline stages, from the sizes of its prefill stages' KV results
    (for exec computes that lost their `layers` attribute; layers are uniform in size)."""
    sizes: dict[int, float] = {}
    for op in ops:
        m = _STAGE.search(op.name)
        if not m or m.group(1) != "prefill" or op.attr("llm") != llm or ".chunk" in op.name:
            continue
        kv = [v for v in op.results if v.type.kind == "kv"]
        if kv:
            sizes[int(m.group(2))] = kv[0].type.size
    if not sizes or per_layer_kv <= 0:
        return {}
    counts = {s: max(1, round(sizes[s] / per_layer_kv)) for s in sorted(sizes)}
    if sum(counts.values()) != layers:
        return {}
    out, a = {}, 0
    for s in sorted(counts):
        out[s] = (a, a + counts[s])
        a += counts[s]
    return out


def graph_partitions(graph: Any, model_of: Any) -> dict[str, Partition | None]:
    """The partition of every exec.compute that runs a model in `graph` (nested ones included).

    `model_of(op)` gives the op's `Model` (or None for a model with no ONNX file, which is left out).
    None marks an empty streamed chunk. Pipeline stages that lost their `layers` attribute get
    their ranges from `stage_ranges`."""
    ops = [op for op, _ in graph.walk()
           if op.kind == "exec.compute" and op.attr("kind_of") in MODEL_COMPUTES and op.attr("model")]
    stages: dict[str, dict[int, tuple[int, int]]] = {}
    out: dict[str, Partition | None] = {}
    for op in ops:
        m = model_of(op)
        if m is None:
            continue
        llm = str(op.attr("llm") or op.attr("of"))
        if llm not in stages:
            pre = next((o for o in ops if o.attr("llm") == llm and _STAGE.search(o.name)), None)
            per = m.kv_cache_bytes(int(pre.attr("tokens", 1)), int(pre.attr("batch", 1))) / m.layers if pre is not None else 0.0
            stages[llm] = stage_ranges(ops, llm, m.layers, per) if pre is not None else {}
        out[op.name] = partition_of(op.attrs, m.layers, stages[llm], op.name)
    return out
