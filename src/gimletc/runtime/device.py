"""One device's program as it runs on its worker: the partitions' executors and the KV caches
the device keeps between steps.

A `DeviceProgram` is built from a `DeviceSpec` (plain data) wherever the device's worker lives:
a thread of this process, a worker process, or a Ray actor. It runs the model ops placed on the
device (prefill, greedy or speculative decode, one partition of a split step, draft, verify,
rollback) and KV conversions, and answers each with an `Outcome`: the op's result values, the
tokens it chose (with the logits rows that chose them) and notes. It knows nothing of the graph
around the op: the interpreter hands it the op, its input values and the context it needs
(prompts, batch rows, which KV cache a state belongs to).

Executor choice happens here, on the machine that runs the device: with `backend="iree"` a
partition placed on an NVIDIA (AMD) GPU runs its cuda (rocm) binary where this machine has such a
GPU, else the llvm-cpu binary; with `onnxruntime` its ONNX subgraph on the chip's execution
provider where installed, else on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gimletc.hardware import get_chip
from gimletc.hardware.schema import Chip
from gimletc.models.onnx import ImportedModel
from gimletc.ir import Op
from gimletc.runtime.executors import ExecutorError, IreeExecutor, OrtExecutor, gpu_drivers, ort_providers
from gimletc.runtime.kv import STEP_AXES, KVCache, KVLayoutError, axes_of, cast, known_layout, to_axes
from gimletc.runtime.llm import ModelPart, speculative_decode
from gimletc.runtime.loader import DeviceSpec, PartSpec, onnx_model
from gimletc.runtime.values import Activations, RunError
from gimletc.targets.partition import parse_partition
from gimletc.targets.vendors import iree_backend

__all__ = ["DeviceProgram", "Emit", "Outcome", "convert_kv", "op_from_wire", "op_to_wire", "step_kv"]

KV = dict[int, tuple[np.ndarray, np.ndarray]]


@dataclass
class Emit:
    """Tokens an op chose for sequences `offset`.. of LLM call `llm`, with the logits rows that chose them."""

    llm: str
    offset: int
    tokens: np.ndarray  # [n]
    rows: np.ndarray  # [n, vocab]


@dataclass
class Outcome:
    """What a device op hands back: result values by name, chosen tokens, speculative counts, notes."""

    values: dict[str, Any] = field(default_factory=dict)
    emits: list[Emit] = field(default_factory=list)
    speculative: dict[str, Any] | None = None
    chunk_kv: KVCache | None = None  # a streamed prefill chunk's own layers (what its send moves)
    notes: list[str] = field(default_factory=list)


def _thaw(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return type(v)(_thaw(x) for x in v)
    return v


def op_to_wire(op: Op) -> tuple[Any, ...]:
    """A device op as plain data (IR attributes are read-only mappings, which do not pickle)."""
    return (op.kind, op.name, op.operands, op.results, _thaw(op.attrs))


def op_from_wire(wire: tuple[Any, ...]) -> Op:
    kind, name, operands, results, attrs = wire
    return Op(kind, name, operands, results, attrs)


def step_kv(kv: KVCache, part: ModelPart | None, chip: Chip, op: Op, layers: Any = None,
            rows: tuple[int, int] | None = None) -> KV:
    """A KV cache (its `layers`, batch `rows`) as the step reads it, after checking it is in this device's layout."""
    if kv.layers and kv.layout != chip.kv_layout:
        raise KVLayoutError(
            f"op {op.name}: the KV cache of {kv.model} arrives in layout {kv.layout}, but {op.attr('device')} "
            f"({chip.name}) keeps {chip.kv_layout}; the plan needs an exec.convert before it"
        )
    assert part is not None
    want = kv.layers if layers is None else [i for i in layers if i in kv.layers]
    out = {}
    for i in want:
        k, v = kv.in_step_layout(i, part.kv_dtype)
        if rows is not None:
            k, v = k[rows[0]:rows[0] + rows[1]], v[rows[0]:rows[0] + rows[1]]
        out[i] = (k, v)
    return out


def convert_kv(op: Op, kv: Any) -> Outcome:
    """An exec.convert for real: a transposing copy between layouts, a cast where numpy holds the dtype."""
    if not isinstance(kv, KVCache):
        raise RunError(f"op {op.name}: converts a KV cache, got {type(kv).__name__}")
    src, dst = str(op.attr("from_layout")), str(op.attr("to_layout"))
    if kv.layers and kv.layout != src:
        raise KVLayoutError(f"op {op.name}: the KV cache arrives in layout {kv.layout}, the convert expects {src}")
    to_dtype = str(op.attr("to_dtype"))
    a, b = axes_of(src), axes_of(dst)
    layers = {}
    exact = True
    for i, (k, v) in kv.layers.items():
        k2, ok1 = cast(to_axes(k, a, b), to_dtype)
        v2, ok2 = cast(to_axes(v, a, b), to_dtype)
        exact = exact and ok1 and ok2
        layers[i] = (k2, v2)
    out = KVCache(kv.model, layers, dst, to_dtype if exact else kv.dtype, kv.length, kv.history, kv.next_token, kv.logits)
    res = Outcome({op.results[0].name: out, op.results[1].name: None})
    if not exact:
        res.notes.append(f"{op.name}: {to_dtype} is not emulated here; the KV cache kept {kv.dtype}")
    for lay in (src, dst):
        if not known_layout(lay):
            res.notes.append(f"KV layout {lay} is vendor-internal; the runtime keeps it head-major (bhsd)")
    return res


def _executor(spec: DeviceSpec, chip: Chip, p: PartSpec) -> tuple[Any, str]:
    a0 = p.artifacts[0][0]
    name = f"{p.op}{' draft' if p.role else ''} ({a0['model']} {a0['partition']})"
    if spec.backend == "iree":
        native = iree_backend(chip)
        choice = None
        if native in ("cuda", "rocm") and {"cuda": "cuda", "rocm": "hip"}[native] in gpu_drivers():
            choice = next(((a, d) for a, d in p.artifacts if a["backend"] == native), None)
        if choice is None:
            choice = next(((a, d) for a, d in p.artifacts if a["backend"] == "llvm-cpu"), None)
        if choice is None:
            raise RunError(f"op {p.op}: backend iree needs an llvm-cpu (or this machine's GPU) binary; "
                           "build the plan's artifacts with IREE")
        a, data = choice
        ex = IreeExecutor.load(name, data, a["entry"], a["inputs"], a["outputs"], a["driver"])
        where = "GPU" if a["backend"] != "llvm-cpu" else ("native" if chip.kind == "cpu" else "CPU stand-in")
        return ex, f"iree {a['backend']} ({a['driver']}, {where})"
    a, data = p.artifacts[0]
    ep = a.get("ep")
    provider = ep if ep and ep in ort_providers() else "CPUExecutionProvider"
    ex = OrtExecutor.load(name, data, provider)
    where = "native" if provider != "CPUExecutionProvider" or chip.kind == "cpu" else "CPU stand-in"
    return ex, f"onnxruntime {provider} ({where})"


class DeviceProgram:
    """The executors of one device's partitions and the state it keeps between ops (KV caches)."""

    def __init__(self, spec: DeviceSpec, models: dict[str, ImportedModel] | None = None) -> None:
        self.device, self.chip = spec.device, get_chip(spec.chip)
        models = dict(models or {})
        self.parts: dict[tuple[str, str], ModelPart] = {}
        self.runners: dict[str, str] = {}
        self.draft_k: dict[str, int] = {}
        for p in spec.parts:
            im = models.get(p.model)
            if im is None:
                im = models[p.model] = onnx_model(p.reference, {"path": f"reference of {p.model}", "model": p.model})
            try:
                ex, runner = _executor(spec, self.chip, p)
            except ExecutorError as e:
                raise RunError(str(e)) from None
            if not p.role:
                self.runners[p.op] = runner
            else:
                self.draft_k[p.op] = int(p.draft_k or 4)
            self.parts[(p.op, p.role)] = ModelPart(p.op, im, parse_partition(p.partition, im.layers), ex,
                                                   self.runners.get(p.op, runner))
        self.state: dict[tuple[str, Any], dict[str, Any]] = {}
        self.scratch: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.prefill_kv: dict[tuple[str, str], KV] = {}

    def forget(self) -> None:
        """Drop every KV cache and scratch tensor (a new request starts)."""
        self.state.clear()
        self.scratch.clear()
        self.prefill_kv.clear()

    def execute(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome:
        """Run model op `op` (an exec.compute) or an exec.convert on this device's inputs `data`."""
        if op.kind == "exec.convert":
            return convert_kv(op, next(iter(data)))
        kind = str(op.attr("kind_of"))
        if kind == "model.prefill":
            return self._prefill(op, data, ctx)
        if kind == "model.decode" and ctx.get("whole_decode"):
            return self._decode(op, data, ctx)
        if kind in ("model.decode", "model.attention", "model.ffn"):
            return self._step(op, data, ctx)
        if kind == "model.draft":
            return self._draft(op, data, ctx)
        if kind == "model.verify":
            return self._verify(op, data, ctx)
        if kind == "model.kv_rollback":
            return self._rollback(op)
        raise RunError(f"op {op.name}: the runtime cannot execute a compute of {kind}")

    # ---- prefill and decode ----------------------------------------------------------------------
    def _native(self, kv: KV, out: Outcome) -> KV:
        chip = self.chip
        dst = axes_of(chip.kv_layout)
        if not known_layout(chip.kv_layout):
            out.notes.append(f"KV layout {chip.kv_layout} ({chip.name}) is vendor-internal; the runtime keeps it head-major (bhsd)")
        return {i: (to_axes(k, STEP_AXES, dst), to_axes(v, STEP_AXES, dst)) for i, (k, v) in kv.items()}

    def _prefill(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome:
        res = Outcome()
        part = self.parts.get((op.name, ""))
        if part is None:  # an empty chunk (more chunks than layers)
            return res
        device, chip = str(op.attr("device")), self.chip
        llm = str(op.attr("llm") or op.attr("of"))
        group = str(op.attr("of"))
        draft_prefill = group.endswith(".draft_prefill")
        im, p = part.model, part.partition
        scratch = self.scratch.setdefault((group.split(".chunk")[0], device), {})
        boundary = dict(scratch)
        for x in data:
            if isinstance(x, Activations):
                boundary.update(x.tensors)
        ids = ctx.get("prompts") if im.token_input in part.run.inputs else None
        present, acts, logits = part.step(ids, {}, boundary)
        scratch.update(acts)
        native = self._native(present, res)
        length = int(op.attr("tokens", 0))
        dtype = im.model.kv_dtype
        history = next_tok = None
        rows: list[np.ndarray] = []
        if logits is not None:
            last = logits[:, -1]
            nxt = np.argmax(last, axis=-1).astype(np.int64)[:, None]
            if draft_prefill:
                prompts = ids
            else:
                prompts = ctx.get("call_prompts")
                if prompts is None:
                    raise RunError(f"LLM call {llm}: a decode step ran before its prefill")
                res.emits.append(Emit(llm, 0, nxt[:, 0], last))
            history = np.concatenate([prompts, nxt], axis=1)
            next_tok = nxt
            rows = [last]
        if op.attr("chunk") is not None:  # a streamed layer group: the last one defines the whole cache
            produced = self.prefill_kv.setdefault((group.split(".chunk")[0], device), {})
            produced.update(native)
            res.chunk_kv = KVCache(im.name, dict(native), chip.kv_layout, dtype, length)
            native = dict(produced)
        for v in op.results:
            if v.type.kind == "kv":
                res.values[v.name] = KVCache(im.name, native, chip.kv_layout, dtype, length, history, next_tok, rows)
            elif v.type.kind == "act":
                res.values[v.name] = Activations({**boundary, **acts})
            elif v.type.kind == "tokens":
                if next_tok is None:
                    raise RunError(f"op {op.name}: partition {p} yields a token but does not hold the head")
                res.values[v.name] = np.array(next_tok, copy=True)
        return res

    def _decode(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome:
        """A whole decode in one op: greedy (or speculative, with a draft artifact) from the prefill's cache."""
        res = Outcome()
        part = self.parts[(op.name, "")]
        kvs = [x for x in data if isinstance(x, KVCache)]
        if not kvs:
            raise RunError(f"op {op.name}: decode needs the prefill's KV cache")
        kv = KVCache.merge(kvs)
        if kv.next_token is None or kv.history is None:
            raise RunError(f"op {op.name}: the KV cache carries no first token")
        llm = str(op.attr("llm") or op.attr("of"))
        past = step_kv(kv, part, self.chip, op)
        count = int(op.attr("tokens", 1))
        draft = self.parts.get((op.name, "draft"))
        if count > 1 and draft is None:
            tok = kv.next_token
            for _ in range(count - 1):
                present, _, logits = part.step(np.asarray(tok, dtype=np.int64), past, {})
                past = present
                last = logits[:, -1]
                tok = np.argmax(last, axis=-1).astype(np.int64)[:, None]
                res.emits.append(Emit(llm, 0, tok[:, 0], last))
        elif count > 1:
            if int(ctx["batch"]) != 1:
                raise RunError(f"op {op.name}: speculative decoding runs one sequence; the call has {ctx['batch']}")
            k = self.draft_k[op.name]
            toks, rows, spec = speculative_decode(part, draft, past, kv.history[0], count - 1, k)
            for t, r in zip(toks, rows, strict=True):
                res.emits.append(Emit(llm, 0, np.array([t], dtype=np.int64), np.asarray(r)[None]))
            res.speculative = {"draft": draft.model.name, "draft_k": k, "drafted": spec.drafted,
                               "accepted": spec.accepted, "acceptance": spec.acceptance, "target_steps": spec.target_steps}
        return res

    def _step(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome:
        """One decode step of one partition (a pipeline stage, an attention or FFN block); its layers'
        KV cache stays on the device between steps, initialised from the cache it is given."""
        res = Outcome()
        part = self.parts[(op.name, "")]
        p = part.partition
        offset, size = ctx["rows"]
        kv_in = next((x for x in data if isinstance(x, KVCache)), None)
        boundary: dict[str, np.ndarray] = {}
        ids = None
        for x in data:
            if isinstance(x, Activations):
                boundary.update(x.tensors)
            elif isinstance(x, np.ndarray):
                ids = x
        key = (op.name, ctx.get("kv_key"))
        st = self.state.get(key)
        if st is None:
            past = step_kv(kv_in, part, self.chip, op, p.kv_layers, (offset, size)) if kv_in is not None else {}
            missing = set(p.kv_layers) - set(past)
            if missing:
                raise RunError(f"op {op.name}: no KV cache for its layers {sorted(missing)}")
            st = self.state[key] = {"past": past}
        if p.has_embed:
            if ids is None:
                raise RunError(f"op {op.name}: partition {p} reads the last token, which no operand carries")
            ids = np.asarray(ids, dtype=np.int64)
            if ids.shape[0] != size:
                ids = ids[offset:offset + size]
            ids = ids[:, -1:]
        present, acts, logits = part.step(ids, st["past"], boundary)
        st["past"] = present
        for v in op.results:
            if v.type.kind == "act":
                res.values[v.name] = Activations({**boundary, **acts})
            elif v.type.kind == "tokens":
                if logits is None:
                    raise RunError(f"op {op.name}: partition {p} yields a token but does not hold the head")
                last = logits[:, -1]
                toks = np.argmax(last, axis=-1).astype(np.int64)
                res.emits.append(Emit(str(op.attr("llm")), offset, toks, last))
                res.values[v.name] = toks[:, None]
        return res

    # ---- speculative decoding (the compiler's draft / verify / rollback loop) ----------------------
    def _draft(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome:
        part = self.parts[(op.name, "")]
        kv_in = next((x for x in data if isinstance(x, KVCache)), None)
        new = next(np.asarray(x, dtype=np.int64) for x in data if isinstance(x, np.ndarray))
        if new.shape[0] != 1:
            raise RunError(f"op {op.name}: speculative decoding runs one sequence; got {new.shape[0]}")
        k = int(ctx["draft_k"])
        key = (op.name, ctx.get("kv_key"))
        st = self.state.get(key)
        if st is None:
            assert kv_in is not None
            past = step_kv(kv_in, part, self.chip, op)
            st = self.state[key] = {"past": past, "seq": [int(t) for t in kv_in.history[0, :kv_in.length]],
                                    "len": kv_in.length, "base": None}
        elif st["base"] is not None:  # roll back past the first rejected proposal
            accepted = len(new[0]) - 1
            keep = st["base"] + min(accepted, k - 1)
            st["past"] = {i: (a[:, :, :keep], b[:, :, :keep]) for i, (a, b) in st["past"].items()}
            st["len"] = keep
        st["seq"].extend(int(t) for t in new[0])
        feed = st["seq"][st["len"]:]
        st["base"] = len(st["seq"])
        proposals = []
        for _ in range(k):
            present, _, logits = part.step(np.array([feed], dtype=np.int64), st["past"], {})
            st["past"] = present
            proposals.append(int(np.argmax(logits[0, -1])))
            feed = [proposals[-1]]
        st["len"] = st["base"] + k - 1
        out = [v for v in op.results if v.type.kind != "token"]
        return Outcome({out[0].name: np.array([[st["seq"][-1], *proposals]], dtype=np.int64)})

    def _verify(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome:
        part = self.parts[(op.name, "")]
        llm = str(op.attr("llm"))
        kv_in = next((x for x in data if isinstance(x, KVCache)), None)
        proposed = next(np.asarray(x, dtype=np.int64) for x in data if isinstance(x, np.ndarray))
        st = self.state.get((f"{llm}.verify", 0))
        if st is None or st.get("kv") != ctx.get("kv_key"):
            assert kv_in is not None
            st = self.state[(f"{llm}.verify", 0)] = {"kv": ctx.get("kv_key"), "past": step_kv(kv_in, part, self.chip, op),
                                                     "keep": None}
        if st["keep"] is not None:  # no rollback op ran: apply it here
            _truncate(st)
        props = [int(t) for t in proposed[0, 1:]]
        present, _, logits = part.step(proposed, st["past"], {})
        greedy = [int(np.argmax(logits[0, i])) for i in range(len(props) + 1)]
        n = 0
        while n < len(props) and props[n] == greedy[n]:
            n += 1
        new = props[:n] + [greedy[n]]
        length = next(iter(st["past"].values()))[0].shape[2] if st["past"] else 0
        st["past"], st["keep"] = present, length + 1 + n
        res = Outcome()
        for i, t in enumerate(new):
            res.emits.append(Emit(llm, 0, np.array([t], dtype=np.int64), np.array(logits[0, i:i + 1], copy=True)))
        res.speculative = {"drafted": len(props), "accepted": n, "target_steps": 1, "draft_k": len(props)}
        out = [v for v in op.results if v.type.kind != "token"]
        res.values[out[0].name] = np.array([new], dtype=np.int64)
        return res

    def _rollback(self, op: Op) -> Outcome:
        st = self.state.get((f"{op.attr('llm')}.verify", 0))
        if st is None:
            raise RunError(f"LLM call {op.attr('llm')}: kv_rollback before verify")
        if st["keep"] is not None:
            _truncate(st)
        return Outcome()


def _truncate(st: dict[str, Any]) -> None:
    keep = st["keep"]
    st["past"] = {i: (a[:, :, :keep], b[:, :, :keep]) for i, (a, b) in st["past"].items()}
    st["keep"] = None
