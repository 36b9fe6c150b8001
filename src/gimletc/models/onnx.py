"""Import an ONNX transformer: map its nodes to layers, attention and FFN, and infer its architecture.

An imported model is split into *segments*, in execution order:

    embed, layer0.attention, layer0.ffn, layer1.attention, ..., head

Each node gets exactly one segment, so any contiguous range of segments (a
pipeline stage, one attention block, ...) is a subgraph whose inputs and
outputs are the tensors that cross its boundary (`gimletc.targets.partition`).

Where the segment of a node comes from, in order:

1. its scope: the module path the exporter recorded, either in the node's
   `pkg.torch.onnx.name_scopes` metadata (torch's dynamo exporter) or in its
   name (`/layers.0/self_attn/q_proj/MatMul`, torch's TorchScript exporter).
   `layers.N.self_attn` / `input_layernorm` map to layer N's attention,
   `layers.N.mlp` / `post_attention_layernorm` to its FFN, `embed_tokens` to
   the embedding, `norm` / `lm_head` to the head (Hugging Face and GPT-2
   names are recognised too);
2. nodes the exporter's optimiser created carry no scope: they inherit the
   latest segment of their producers (a residual add in layer N's scope joins
   the FFN once the FFN's output feeds it);
3. nodes with no scoped producer (shape arithmetic on the inputs) go to the
   earliest segment that uses them, and no later than the segment owning any
   graph input they read (the token ids belong to the embedding, layer N's
   past KV to layer N's attention), so they never pull a KV cache across a cut;
4. `Shape` of layer N's past KV reads layer 0's instead (all layers' caches
   have the same length), so no layer's subgraph needs another layer's cache;
5. finally every node is moved to at least the segment of each producer, so
   tensors only flow forward and every contiguous range is a valid subgraph.

Before mapping, `Constant` nodes become initializers and `Identity` nodes of
initializers are removed, so constants are copied into every subgraph that
uses them instead of crossing cuts as runtime tensors; nodes get unique names.
Initializers the exporter deduplicated (identical tensors shared by several
layers) are likewise copied into each subgraph that reads them.

Loading a model only parses protobuf and literal strings (`ast.literal_eval`):
it never executes code from the file.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gimletc.errors import ConfigError
from gimletc.models.arch import Model

__all__ = [
    "EMBED",
    "HEAD",
    "ImportedModel",
    "KVBinding",
    "ModelImportError",
    "architecture",
    "load_onnx",
    "node_scope",
    "prepare",
    "segment_names",
]

EMBED = "embed"
HEAD = "head"

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")
_ATTENTION_SCOPES = frozenset(
    {"self_attn", "attn", "attention", "self_attention", "input_layernorm", "ln_1", "attention_norm"}
)
_FFN_SCOPES = frozenset(
    {"mlp", "ffn", "feed_forward", "post_attention_layernorm", "ln_2", "ffn_norm", "block_sparse_moe", "moe"}
)
_EMBED_SCOPES = frozenset({"embed_tokens", "wte", "wpe", "tok_embeddings", "word_embeddings", "embed", "embeddings"})
_HEAD_SCOPES = frozenset({"lm_head", "norm", "ln_f", "final_layernorm", "final_norm", "output"})
_NO_SCOPE = "_empty_nn_module_stack"
_ONNX_DTYPES = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}


class ModelImportError(ConfigError):
    """An ONNX model cannot be imported: names the file and what is missing."""


def segment_names(layers: int) -> tuple[str, ...]:
    """`embed`, `layer0.attention`, `layer0.ffn`, ..., `head`."""
    inner = tuple(f"layer{i}.{part}" for i in range(layers) for part in ("attention", "ffn"))
    return (EMBED, *inner, HEAD)


@dataclass(frozen=True)
class KVBinding:
    """The graph inputs and outputs of one layer's KV cache (layout [batch, kv_heads, tokens, head_dim])."""

    layer: int
    past_key: str
    past_value: str
    present_key: str
    present_value: str


@dataclass(eq=False)
class ImportedModel:
    """An ONNX transformer step with every node mapped to a segment.

    `proto` is the prepared model (constants folded, unique node names, shapes
    inferred); `node_segment` maps each node name to its segment index in
    `segments`. The step reads `token_input` ([batch, tokens] int64) and each
    layer's past KV, and writes `logits_output` and each layer's present KV."""

    name: str
    proto: onnx.ModelProto
    model: Model
    token_input: str
    logits_output: str
    kv: tuple[KVBinding, ...]
    node_segment: dict[str, int]
    sha256: str
    path: Path | None = None
    kv_axes: str = "bhsd"  # the step's KV tensor layout: [batch, heads, tokens, head_dim]
    notes: tuple[str, ...] = ()
    _extractor: Any = field(default=None, repr=False)

    @property
    def layers(self) -> int:
        return self.model.layers

    @cached_property
    def segments(self) -> tuple[str, ...]:
        return segment_names(self.layers)

    def attention_segment(self, layer: int) -> int:
        return 1 + 2 * layer

    def ffn_segment(self, layer: int) -> int:
        return 2 + 2 * layer

    @property
    def head_segment(self) -> int:
        return 2 * self.layers + 1

    def input_owner(self, name: str) -> int:
        """The segment that owns a graph input: the embedding for token ids, layer N's attention for its KV."""
        for b in self.kv:
            if name in (b.past_key, b.past_value):
                return self.attention_segment(b.layer)
        return 0

    def nodes_in(self, segments: Iterable[int]) -> list[onnx.NodeProto]:
        want = set(segments)
        return [n for n in self.proto.graph.node if self.node_segment[n.name] in want]

    def segment_counts(self) -> dict[str, int]:
        counts = {s: 0 for s in self.segments}
        for n in self.proto.graph.node:
            counts[self.segments[self.node_segment[n.name]]] += 1
        return counts

    @property
    def extractor(self) -> onnx.utils.Extractor:
        if self._extractor is None:
            self._extractor = onnx.utils.Extractor(self.proto)
        return self._extractor


# ---- preparation ------------------------------------------------------------------------------


def _constant_tensor(node: onnx.NodeProto) -> TensorProto | None:
    """The tensor a Constant node holds, or None for kinds kept as nodes (sparse, strings)."""
    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name == "value_float":
            return numpy_helper.from_array(np.array(a.f, dtype=np.float32))
        if a.name == "value_floats":
            return numpy_helper.from_array(np.array(list(a.floats), dtype=np.float32))
        if a.name == "value_int":
            return numpy_helper.from_array(np.array(a.i, dtype=np.int64))
        if a.name == "value_ints":
            return numpy_helper.from_array(np.array(list(a.ints), dtype=np.int64))
    return None


def prepare(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with Constant nodes as initializers, Identity-of-initializer nodes removed,
    unique node names and inferred shapes (so every intermediate tensor has a type)."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    inits = {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    kept: list[onnx.NodeProto] = []
    for n in g.node:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.output[0] not in outputs:
            t = _constant_tensor(n)
            if t is not None:
                t = TensorProto().__class__.FromString(t.SerializeToString())
                t.name = n.output[0]
                g.initializer.append(t)
                inits.add(t.name)
                continue
        if n.op_type == "Identity" and n.domain in ("", "ai.onnx") and n.input[0] in inits and n.output[0] not in outputs:
            rename[n.output[0]] = n.input[0]
            continue
        kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    seen: set[str] = set()
    for i, n in enumerate(g.node):
        base = n.name or f"{n.op_type}_{i}"
        name, k = base, 1
        while name in seen:
            name, k = f"{base}__{k}", k + 1
        n.name = name
        seen.add(name)
    # Inputs listed as initializers too (IR < 4) are constants, not inputs.
    real_inputs = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(real_inputs)
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference is best effort; missing types are reported at extraction
        pass
    return m


# ---- scopes and segments ------------------------------------------------------------------------


def node_scope(node: onnx.NodeProto) -> str | None:
    """The dotted module path a node was exported from (`layers.0.self_attn.q_proj`), or None."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                parts = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            if not isinstance(parts, list) or len(parts) < 2 or any(_NO_SCOPE in str(x) for x in parts):
                return None
            scope = str(parts[-2])  # the last entry is the op itself
            return scope or None
    if node.name.startswith("/"):
        comps = node.name.strip("/").split("/")[:-1]
        return ".".join(comps) or None
    return None


def _scope_segment(scope: str | None, layers: int) -> tuple[int | None, int | None]:
    """(segment, layer): the segment a scope names, or (None, layer) inside a layer but outside its blocks."""
    if not scope:
        return None, None
    m = _LAYER.search(scope)
    if m:
        layer = int(m.group(1))
        if layer >= layers:
            return None, None
        rest = scope[m.end():].split(".")
        first = rest[0] if rest and rest[0] else ""
        if first in _ATTENTION_SCOPES:
            return 1 + 2 * layer, layer
        if first in _FFN_SCOPES:
            return 2 + 2 * layer, layer
        return None, layer
    comps = scope.split(".")
    if any(c in _EMBED_SCOPES for c in comps):
        return 0, None
    if any(c in _HEAD_SCOPES for c in comps):
        return 2 * layers + 1, None
    return None, None


def assign_segments(proto: onnx.ModelProto, layers: int, input_owner: dict[str, int]) -> dict[str, int]:
    """Node name -> segment index (see the module docstring for the rules)."""
    g = proto.graph
    producer: dict[str, onnx.NodeProto] = {o: n for n in g.node for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for x in n.input:
            if x:
                consumers.setdefault(x, []).append(n)
    seg: dict[str, int] = {}
    source: set[str] = set()
    for n in g.node:
        own, layer = _scope_segment(node_scope(n), layers)
        preds = [seg[producer[x].name] for x in n.input if x in producer and producer[x].name not in source]
        if own is not None:
            seg[n.name] = own
        elif layer is not None:  # inside layer N but outside its attention and FFN: inherit within the layer
            lo, hi = 1 + 2 * layer, 2 + 2 * layer
            seg[n.name] = min(hi, max([lo, *preds]))
        elif preds:
            seg[n.name] = max(preds)
        else:
            source.add(n.name)
    for n in reversed(g.node):
        if n.name not in source:
            continue
        users = [seg[c.name] for o in n.output for c in consumers.get(o, ()) if c.name in seg]
        owners = [input_owner[x] for x in n.input if x in input_owner]
        if any(o.name in (n.output) for o in g.output):
            users.append(2 * layers + 1)
        seg[n.name] = min(users or [0])
        if owners:
            seg[n.name] = min(seg[n.name], *owners)
    # Sources reading other sources: a source can be no later than the sources it reads from
    # the KV inputs through (propagate owner bounds forward), then monotone forward.
    bound: dict[str, int] = {}
    for n in g.node:
        b = [input_owner[x] for x in n.input if x in input_owner]
        b += [bound[producer[x].name] for x in n.input if x in producer and producer[x].name in bound]
        if n.name in source and b:
            bound[n.name] = min(b)
            seg[n.name] = min(seg[n.name], bound[n.name])
    for n in g.node:
        preds = [seg[producer[x].name] for x in n.input if x in producer]
        if preds:
            seg[n.name] = max(seg[n.name], *preds)
    return seg


# ---- bindings and architecture -----------------------------------------------------------------


def _elem_type(v: onnx.ValueInfoProto) -> int:
    return v.type.tensor_type.elem_type


def _dims(v: onnx.ValueInfoProto) -> list[int | str]:
    out: list[int | str] = []
    for d in v.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else d.dim_param or "?")
    return out


_KV_NAME = re.compile(r"(\d+)")


def _kv_role(name: str) -> str | None:
    low = name.lower()
    if re.search(r"(^|[._/])(key|k)($|[._/])", low) or "key" in low:
        return "key"
    if re.search(r"(^|[._/])(value|v)($|[._/])", low) or "value" in low:
        return "value"
    return None


def _pair_kv(values: list[onnx.ValueInfoProto], source: str, what: str) -> list[tuple[str, str]]:
    """[(key, value)] per layer from 4-D float tensors, by the layer number and key/value in their names,
    else in order (key, value, key, value, ...)."""
    by_layer: dict[int, dict[str, str]] = {}
    named = True
    for v in values:
        nums, role = _KV_NAME.findall(v.name), _kv_role(v.name)
        if not nums or role is None:
            named = False
            break
        by_layer.setdefault(int(nums[-1]), {})[role] = v.name
    if named and by_layer and all(len(d) == 2 for d in by_layer.values()) and sorted(by_layer) == list(range(len(by_layer))):
        return [(by_layer[i]["key"], by_layer[i]["value"]) for i in range(len(by_layer))]
    if len(values) % 2:
        raise ModelImportError(f"{source}: {len(values)} KV-cache {what} (4-D float tensors); expected a key and a value per layer")
    return [(values[i].name, values[i + 1].name) for i in range(0, len(values), 2)]


def _bindings(proto: onnx.ModelProto, source: str) -> tuple[str, str, tuple[KVBinding, ...]]:
    g = proto.graph
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    ints = [i for i in g.input if _elem_type(i) in (TensorProto.INT64, TensorProto.INT32)]
    if not ints:
        raise ModelImportError(f"{source}: no integer input for the token ids")
    token = ints[0].name
    past = [i for i in g.input if _elem_type(i) in floats and len(_dims(i)) == 4]
    present = [o for o in g.output if _elem_type(o) in floats and len(_dims(o)) == 4]
    others = [o for o in g.output if o not in present and _elem_type(o) in floats]
    if not others:
        raise ModelImportError(f"{source}: no float output for the logits")
    logits = next((o.name for o in others if "logit" in o.name.lower()), others[0].name)
    pp, qq = _pair_kv(past, source, "inputs") if past else [], _pair_kv(present, source, "outputs") if present else []
    if len(pp) != len(qq):
        raise ModelImportError(
            f"{source}: {len(pp)} past KV input pairs but {len(qq)} present KV output pairs; a step model takes "
            "each layer's past KV cache and returns its present one"
        )
    kv = tuple(KVBinding(i, pk, pv, qk, qv) for i, ((pk, pv), (qk, qv)) in enumerate(zip(pp, qq, strict=True)))
    return token, logits, kv


def _arch_metadata(proto: onnx.ModelProto) -> dict[str, Any] | None:
    for p in proto.metadata_props:
        if p.key == "gimletc.arch":
            try:
                data = json.loads(p.value)
            except json.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _layer_count(proto: onnx.ModelProto) -> int:
    found = set()
    for n in proto.graph.node:
        s = node_scope(n)
        m = _LAYER.search(s) if s else None
        if m:
            found.add(int(m.group(1)))
    return max(found) + 1 if found else 0


def _infer_arch(proto: onnx.ModelProto, name: str, source: str, kv: tuple[KVBinding, ...], token: str, layers: int) -> dict[str, Any]:
    """Model fields from the weights and the KV inputs, for a model exported without `gimletc.arch`."""
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    vi = {v.name: v for v in [*g.input, *g.value_info, *g.output]}
    if not kv:
        raise ModelImportError(f"{source}: no KV-cache inputs; a step model takes each layer's past KV cache")
    kd = _dims(vi[kv[0].past_key])
    if not (isinstance(kd[1], int) and isinstance(kd[3], int)):
        raise ModelImportError(f"{source}: KV input {kv[0].past_key} has dims {kd}; kv_heads and head_dim must be static")
    kv_heads, head_dim = int(kd[1]), int(kd[3])
    embed = next((n for n in g.node if n.op_type == "Gather" and n.input[0] in inits and token in _ancestors_inputs(g, n)), None)
    if embed is None:
        raise ModelImportError(f"{source}: no embedding lookup (a Gather of a weight by the token ids)")
    vocab, hidden = (int(d) for d in inits[embed.input[0]].dims)
    dtype = _ONNX_DTYPES.get(inits[embed.input[0]].data_type, "fp32")
    seg = assign_segments(proto, layers, {})
    widths: dict[int, list[int]] = {}
    for n in g.node:
        if n.op_type in ("MatMul", "Gemm"):
            for x in n.input[1:2]:
                t = inits.get(x)
                if t is not None and len(t.dims) == 2 and int(t.dims[0]) == hidden:
                    widths.setdefault(seg[n.name], []).append(int(t.dims[1]))
    q = [w for w in widths.get(1, []) if w % head_dim == 0]
    f = widths.get(2, [])
    if not q or not f:
        raise ModelImportError(
            f"{source}: cannot infer heads or FFN width from layer 0's projection weights; store the architecture "
            "as JSON in the model's metadata under 'gimletc.arch'"
        )
    heads = max(q) // head_dim
    head_w = widths.get(2 * layers + 1, [])
    tied = vocab not in head_w
    attention = "mha" if kv_heads == heads else "mqa" if kv_heads == 1 else "gqa"
    return {
        "name": name, "family": "llama", "layers": layers, "hidden": hidden, "ffn": max(f), "heads": heads,
        "kv_heads": kv_heads, "head_dim": head_dim, "vocab": vocab, "tied_embeddings": tied, "attention": attention,
        "weight_dtype": dtype, "kv_dtype": dtype, "act_dtype": dtype,
    }


def _ancestors_inputs(g: onnx.GraphProto, node: onnx.NodeProto) -> set[str]:
    producer = {o: n for n in g.node for o in n.output}
    seen: set[str] = set()
    stack = list(node.input)
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        p = producer.get(x)
        if p is not None:
            stack.extend(p.input)
    return seen


def _validated_model(data: dict[str, Any], source: str) -> Model:
    from gimletc._io import validate

    data = {**data, "source": data.get("source") or f"{source} (imported ONNX)"}
    return validate(Model, data, source)


# ---- loading -------------------------------------------------------------------------------------

_CACHE: dict[tuple[str, int, int], ImportedModel] = {}
_ARCH_CACHE: dict[tuple[str, int, int], Model] = {}
_BY_NAME: dict[str, Model] = {}


def imported_by_name() -> dict[str, Model]:
    """Architectures of the ONNX models imported so far in this process, by model name
    (so passes that refer to a model by `Model.name` find it; catalog names take precedence)."""
    return _BY_NAME


def _file_key(p: Path) -> tuple[str, int, int]:
    st = p.stat()
    return (str(p.resolve()), st.st_mtime_ns, st.st_size)


def _read(path: Path) -> tuple[onnx.ModelProto, bytes]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelImportError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return onnx.load_from_string(data), data
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise ModelImportError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None


def load_onnx(source: str | Path | onnx.ModelProto, name: str | None = None) -> ImportedModel:
    """Import an ONNX step model (a path or a ModelProto); results for a path are cached by file identity."""
    if isinstance(source, onnx.ModelProto):
        return _import(source, source.SerializeToString(), name or source.graph.name or "model", "<ModelProto>", None)
    path = Path(source)
    try:
        key = _file_key(path)
    except OSError as e:
        raise ModelImportError(f"{path}: cannot read: {e.strerror or e}") from None
    hit = _CACHE.get(key)
    if hit is not None and (name is None or hit.name == name):
        return hit
    proto, data = _read(path)
    imported = _import(proto, data, name, str(path), path)
    _CACHE[key] = imported
    return imported


def _import(proto: onnx.ModelProto, data: bytes, name: str | None, source: str, path: Path | None) -> ImportedModel:
    meta = _arch_metadata(proto)
    default_name = (meta or {}).get("name") or (path.stem if path else proto.graph.name) or "model"
    name = name or default_name
    prepared = prepare(proto)
    token, logits, kv = _bindings(prepared, source)
    layers = len(kv) or _layer_count(prepared)
    if layers == 0:
        raise ModelImportError(f"{source}: no layers found (no KV-cache inputs and no layers.N scopes)")
    arch = dict(meta) if meta else _infer_arch(prepared, name, source, kv, token, layers)
    arch["name"] = name
    model = _validated_model(arch, source)
    if model.layers != layers:
        raise ModelImportError(f"{source}: architecture says {model.layers} layers but the graph has {layers} KV pairs")
    _share_kv_shapes(prepared, kv)
    owners = {token: 0}
    for b in kv:
        owners[b.past_key] = owners[b.past_value] = 1 + 2 * b.layer
    seg = assign_segments(prepared, layers, owners)
    notes = []
    scoped = sum(1 for n in prepared.graph.node if _scope_segment(node_scope(n), layers)[0] is not None)
    if scoped == 0:
        notes.append("no node carries a scope: every node maps to the embedding; only whole-model partitions are meaningful")
    return ImportedModel(
        name=name, proto=prepared, model=model, token_input=token, logits_output=logits, kv=kv, node_segment=seg,
        sha256=hashlib.sha256(data).hexdigest(), path=path, notes=tuple(notes),
    )


def _share_kv_shapes(proto: onnx.ModelProto, kv: tuple[KVBinding, ...]) -> None:
    """Point `Shape`/`Size` of a layer's past KV at layer 0's, in place.

    Every layer's cache holds the same tokens, so their batch and length agree; exporters
    read those sizes from whichever input they like (torch's dynamo exporter takes the
    last layer's), which would make layer 0's subgraph read layer N's cache."""
    if not kv:
        return
    g = proto.graph
    dims = {i.name: _dims(i) for i in g.input}
    first = {"key": kv[0].past_key, "value": kv[0].past_value}
    for n in g.node:
        if n.op_type not in ("Shape", "Size") or not n.input:
            continue
        for b in kv[1:]:
            for role, name in (("key", b.past_key), ("value", b.past_value)):
                if n.input[0] == name and dims.get(name) == dims.get(first[role]):
                    n.input[0] = first[role]


def architecture(path: str | Path) -> Model:
    """The `Model` an ONNX step model implements (from its `gimletc.arch` metadata, else inferred)."""
    p = Path(path)
    try:
        key = _file_key(p)
    except OSError as e:
        raise ModelImportError(f"{p}: cannot read: {e.strerror or e}") from None
    hit = _ARCH_CACHE.get(key)
    if hit is not None:
        return hit
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise ModelImportError(f"{p}: not an ONNX model ({type(e).__name__}: {e})") from None
    meta = _arch_metadata(proto)
    if meta is not None:
        model = _validated_model({**meta, "name": meta.get("name") or p.stem}, str(p))
    else:
        model = load_onnx(p).model
    _ARCH_CACHE[key] = model
    _BY_NAME[model.name] = model
    return model


def tensor_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of a model's initializers (its weights)."""
    total = 0
    for t in proto.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        total += n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total
