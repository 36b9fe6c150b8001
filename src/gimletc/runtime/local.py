"""Run a deployment plan for real on this machine.

`run_plan(plan)` reads a plan (its exec-level `ir`, cluster and `artifacts`),
starts one worker per device program (and per CPU lane, and per link
channel), and executes the exec ops in dataflow order:

- `exec.compute` of a model phase runs the partition's executable on the
  device's worker: a prefill (whole, a streamed layer group, or a partition
  of a split), a greedy or speculative decode, or one partition of a decode
  split across devices, driven step by step with the sampled token fed back;
- `exec.compute` of a tool, retrieval or code op calls the Python callable
  registered under the op's name on its CPU lane's worker; an input op
  produces the request's token ids; an output op collects the response;
- `exec.send` copies the value into new memory on its channel's worker (a
  streamed KV chunk copies that chunk's layers), so copies overlap compute on
  both ends; `exec.recv` hands the copy to the destination;
- `exec.convert` transposes and casts a KV cache on the destination's worker;
- `exec.await` joins tokens; `agent.loop` and `agent.branch` run their
  regions (`round(expected)` iterations and the most probable arm unless the
  caller decides).

Workers are threads. onnxruntime and IREE release the GIL while a partition
runs and numpy copies large arrays without it, so workers and copies really
run side by side (one core each: sessions use one intra-op thread); threads
share the process, so a "copy to another device" is a copy into a fresh
buffer, not a serialisation, which keeps the measured transfer what it is
here: a memory copy. A GPU worker would drive a stream from the same
process; separate processes would only add pickling to every transfer.

Partitions placed on a GPU run on that GPU where this machine has one and the
plan has an IREE binary for it (`backend="iree"`); otherwise every worker is
a CPU stand-in for its device, and the report says so per device. After the
run, each LLM call is replayed on the unsplit model (the plan's reference
artifact) with the same prompt: the report gives the largest absolute
difference of the logits that chose each token, and whether the tokens match.

Loading a plan executes no code from it: artifacts are ONNX and IREE files
checked against their sha256; tools are looked up by name in the mapping the
caller passes.
"""

from __future__ import annotations

import copy
import hashlib
import math
import queue
import re
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gimletc.errors import GimletError
from gimletc.hardware import get_chip
from gimletc.hardware.schema import Chip
from gimletc.models.onnx import ImportedModel, load_onnx
from gimletc.ir import Graph, Op, parse_graph, verify
from gimletc.runtime.executors import ExecutorError, IreeExecutor, OrtExecutor, gpu_drivers, ort_providers
from gimletc.runtime.kv import STEP_AXES, KVCache, KVLayoutError, axes_of, cast, known_layout, to_axes
from gimletc.runtime.llm import ModelPart, speculative_decode
from gimletc.targets.partition import MODEL_COMPUTES, graph_partitions, parse_partition, whole
from gimletc.targets.vendors import iree_backend

__all__ = ["BACKENDS", "RunError", "RunReport", "load_tools", "run_plan"]

BACKENDS = ("onnxruntime", "iree")
CALLABLE_KINDS = ("agent.tool", "agent.retrieve", "agent.code")


class RunError(GimletError):
    """The plan cannot run here, or an op failed while running: names the op, its device and why."""


# ---- results -------------------------------------------------------------------------------------


@dataclass
class OpRecord:
    """One exec op as it ran: measured time next to the cost model's prediction."""

    op: str
    kind: str
    of: str | None
    resource: str
    start_ms: float
    end_ms: float
    measured_ms: float  # busy time (summed over steps for a split decode)
    predicted_ms: float
    bytes: int = 0
    runner: str = ""
    runs: int = 1


@dataclass
class LLMCheck:
    """An LLM call's output against the unsplit model's greedy output for the same prompt."""

    llm: str
    model: str
    prompt_tokens: int
    tokens: list[int]
    reference_tokens: list[int]
    tokens_match: bool
    max_abs_diff: float
    speculative: dict[str, Any] | None = None


@dataclass
class RunReport:
    plan: str
    backend: str
    measured_ms: float
    predicted_ms: float
    max_abs_diff: float
    tokens_match: bool
    devices: dict[str, dict[str, Any]]
    ops: list[OpRecord]
    llms: dict[str, LLMCheck]
    outputs: dict[str, Any]
    notes: list[str]
    events: list[tuple[str, str, str | None, str, float, float, int]] = field(default_factory=list, repr=False)
    channels: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what `gimletc run --json` prints)."""
        return {
            "plan": self.plan,
            "backend": self.backend,
            "measured_ms": self.measured_ms,
            "predicted_ms": self.predicted_ms,
            "max_abs_diff": self.max_abs_diff,
            "tokens_match": self.tokens_match,
            "devices": self.devices,
            "llms": {k: asdict(v) for k, v in sorted(self.llms.items())},
            "ops": [asdict(o) for o in self.ops],
            "outputs": {k: _jsonable(v) for k, v in sorted(self.outputs.items())},
            "notes": self.notes,
            "source": "measured on this machine; predicted_ms from the plan's cost model and replay",
        }

    def chrome_trace(self) -> dict[str, Any]:
        """The run as a Chrome/Perfetto trace: a track per worker (device, CPU lane) and per link channel."""
        from gimletc.analysis.replay import Event, Timeline
        from gimletc.analysis.trace import chrome_trace

        events = tuple(Event(op, kind, of, (res,), start, end, depth) for op, kind, of, res, start, end, depth in self.events)
        busy: dict[str, float] = {}
        for e in events:
            busy[e.resources[0]] = busy.get(e.resources[0], 0.0) + e.duration
        tl = Timeline(events, self.measured_ms / 1e3, busy, self.channels)
        return chrome_trace(tl, f"{self.plan} (measured)")


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, KVCache):
        return {"kv_cache": v.model, "layers": sorted(v.layers), "tokens": v.length}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, int | float | str | bool) or v is None:
        return v
    return repr(v)


# ---- payloads ------------------------------------------------------------------------------------


@dataclass
class Activations:
    """Tensors one partition of a step hands to later partitions (by ONNX tensor name)."""

    tensors: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def _copy_payload(v: Any) -> Any:
    """A real copy of a value into fresh memory: what a transfer delivers."""
    if isinstance(v, np.ndarray):
        return np.array(v, copy=True)
    if isinstance(v, KVCache):
        return v.copy()
    if isinstance(v, Activations):
        return Activations({k: np.array(t, copy=True) for k, t in v.tensors.items()})
    return copy.deepcopy(v)


def _nbytes(v: Any) -> int:
    if isinstance(v, np.ndarray | KVCache | Activations):
        return int(v.nbytes)
    return 0


def load_tools(spec: str) -> dict[str, Callable[..., Any]]:
    """Import `module:attribute` or `path/to/file.py:attribute`: a mapping of op name to callable,
    or a function returning one.

    This runs the user's module: the caller asks for it by naming it (`gimletc run --tools`);
    nothing in a plan ever names code to run."""
    import importlib
    import importlib.util

    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise RunError(f"--tools takes MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE (a dict of op name -> callable); got {spec!r}")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise RunError(f"--tools {spec}: {target} does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"gimletc_tools_{path.stem}", path)
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        obj = getattr(module, attr)
    except (ImportError, AttributeError, SyntaxError) as e:
        raise RunError(f"--tools {spec}: {type(e).__name__}: {e}") from None
    if callable(obj) and not isinstance(obj, Mapping):
        obj = obj()
    if not isinstance(obj, Mapping) or not all(callable(f) for f in obj.values()):
        raise RunError(f"--tools {spec}: expected a mapping of op name to callable")
    return dict(obj)


# ---- workers -------------------------------------------------------------------------------------


class _Worker:
    """One thread running one resource's tasks in order (a device, a CPU lane or a link channel)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gimletc-{name}")

    def submit(self, fn: Callable[[], Any]) -> Future:
        return self.pool.submit(fn)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _uses(op: Op) -> list[str]:
    uses = list(op.operands)
    for r in op.regions:
        defined = {a.name for a in r.args}
        for inner, _ in r.walk():
            defined.update(v.name for v in inner.results)
            for rr in inner.regions:
                defined.update(a.name for a in rr.args)
        for inner, _ in r.walk():
            uses.extend(x for x in inner.operands if x not in defined)
    return list(dict.fromkeys(uses))


_MICRO = re.compile(r"\.m(\d+)$")


@dataclass
class _Call:
    """One LLM call as it runs: its sequences' prompts, generated tokens and the logits rows that chose them."""

    model: str
    batch: int
    prompts: np.ndarray  # [batch, prompt tokens]
    tokens: list[list[int]]
    rows: list[list[np.ndarray]]
    target: int  # tokens the call should generate
    speculative: dict[str, Any] | None = None

    def emit(self, offset: int, logits_rows: np.ndarray) -> np.ndarray:
        """Greedy tokens for sequences offset.. from their logits rows ([n, vocab]); returns them as [n, 1]."""
        toks = np.argmax(logits_rows, axis=-1).astype(np.int64)
        for i, (t, r) in enumerate(zip(toks, logits_rows, strict=True)):
            self.tokens[offset + i].append(int(t))
            self.rows[offset + i].append(np.array(r, copy=True))
        return toks[:, None]

    @property
    def generated(self) -> int:
        return min(len(t) for t in self.tokens)

    def output(self) -> np.ndarray:
        out = np.array([t[: self.target] for t in self.tokens], dtype=np.int64)
        return out[0] if self.batch == 1 else out


# ---- the runtime ---------------------------------------------------------------------------------


class LocalRuntime:
    """A plan loaded for running: workers, executables, tools. `run()` executes one request."""

    def __init__(
        self,
        plan: Any,
        plan_dir: Path,
        *,
        backend: str = "onnxruntime",
        tools: Mapping[str, Callable[..., Any]] | None = None,
        inputs: Mapping[str, Any] | None = None,
        loops: Mapping[str, int] | None = None,
        pace_links: float = 0.0,
        check: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise RunError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.plan, self.dir, self.backend = plan, Path(plan_dir), backend
        self.tools = dict(tools or {})
        self.inputs = dict(inputs or {})
        self.loops = dict(loops or {})
        self.pace = float(pace_links)
        self.check = check
        self.notes: list[str] = []
        if not plan.ir.strip():
            raise RunError(f"plan {plan.name} has no exec IR")
        try:
            self.graph = verify(parse_graph(plan.ir))
        except GimletError as e:
            raise RunError(f"plan {plan.name}: its exec IR does not load: {e}") from None
        self.chips: dict[str, Chip] = {d.id: get_chip(d.chip) for d in plan.cluster.devices}
        self.ops: dict[str, Op] = {op.name: op for op, _ in self.graph.walk()}
        self.producer: dict[str, Op] = {v.name: op for op, _ in self.graph.walk() for v in op.results}
        self._artifacts()
        self.partitions = graph_partitions(self.graph, self._model_of)
        self.parts: dict[tuple[str, str], ModelPart] = {}
        self.runner_of: dict[str, str] = {}
        self._load_parts()
        self._check_callables()
        self._micro_rows()
        self.request = self._request()

    # ---- loading ----------------------------------------------------------------------------------
    def _file(self, a: Mapping[str, Any]) -> bytes:
        p = self.dir / str(a["path"])
        try:
            data = p.read_bytes()
        except OSError as e:
            raise RunError(f"artifact {a['path']} (op {a.get('op', '-')}): cannot read: {e.strerror or e}; "
                           "run `gimletc build` on the plan first") from None
        if hashlib.sha256(data).hexdigest() != a.get("sha256"):
            raise RunError(f"artifact {a['path']} does not match its sha256 in the plan; rebuild the artifacts")
        return data

    def _artifacts(self) -> None:
        self.by_op: dict[str, list[dict[str, Any]]] = {}
        self.references: dict[str, ImportedModel] = {}
        self.reference_data: dict[str, bytes] = {}
        for a in self.plan.artifacts:
            if a.get("kind") == "onnx-reference":
                data = self._file(a)
                self.references[str(a["model"])] = load_onnx(_proto(data, a), name=str(a["model"]))
                self.reference_data[str(a["model"])] = data
            elif a.get("op"):
                self.by_op.setdefault(str(a["op"]), []).append(dict(a))
        for op, _ in self.graph.walk():
            if op.kind == "exec.compute" and op.attr("kind_of") in MODEL_COMPUTES and not self.by_op.get(op.name):
                model = str(op.attr("model"))
                if model.endswith(".onnx") and not self.plan.artifacts:
                    raise RunError(f"plan {self.plan.name} has no artifacts; run `gimletc build` on it first")
                if not model.endswith(".onnx"):
                    raise RunError(
                        f"op {op.name} runs model {model}, which has no executable: `gimletc run` executes models "
                        "imported from ONNX (give the agent graph an .onnx model path)"
                    )

    def _check_callables(self) -> None:
        missing = []
        for op, _ in self.graph.walk():
            if op.kind == "exec.compute" and op.attr("kind_of") in CALLABLE_KINDS:
                if str(op.attr("of")) not in self.tools:
                    missing.append(f"{op.attr('of')} ({op.attr('kind_of')})")
        if missing:
            raise RunError(
                f"no callable registered for {', '.join(missing)}: pass tools={{op name: callable}} "
                "(or `gimletc run --tools module:registry`)"
            )

    def _reference_for(self, model_name: str, op: Op) -> ImportedModel:
        im = self.references.get(model_name)
        if im is None:
            raise RunError(f"op {op.name}: the plan has no reference artifact for model {model_name}")
        return im

    def _model_of(self, op: Op) -> Any:
        """The architecture of the model `op` runs (from its artifacts, else its ONNX file)."""
        model = next((a["model"] for a in self.by_op.get(op.name, []) if a.get("role") != "draft"), None)
        if model is not None:
            return self._reference_for(str(model), op).model
        from gimletc.models import get_model

        return get_model(str(op.attr("model")))

    def worker_of(self, op: Op) -> str:
        devs = op.attr("devices") or ()
        if len(devs) == 1 and "#" in str(devs[0]):
            return str(devs[0])
        return str(op.attr("device"))

    def chip_of(self, resource: str) -> Chip:
        return self.chips[resource.split("#", 1)[0]]

    def _executor(self, op: Op, arts: list[dict[str, Any]], role: str | None) -> tuple[Any, str]:
        chip = self.chip_of(str(op.attr("device")))
        mine = [a for a in arts if a.get("role") == role]
        if not mine:
            raise RunError(f"op {op.name}: no artifact in the plan; run `gimletc build` on it first")
        name = f"{op.name}{' draft' if role else ''} ({mine[0]['model']} {mine[0]['partition']})"
        if self.backend == "iree":
            native = iree_backend(chip)
            choice = None
            if native in ("cuda", "rocm") and {"cuda": "cuda", "rocm": "hip"}[native] in gpu_drivers():
                choice = next((a for a in mine if a["kind"] == "iree" and a["backend"] == native), None)
            if choice is None:
                choice = next((a for a in mine if a["kind"] == "iree" and a["backend"] == "llvm-cpu"), None)
            if choice is None:
                raise RunError(f"op {op.name}: backend iree needs an llvm-cpu (or this machine's GPU) binary; "
                               "build the plan's artifacts with IREE")
            self._file(choice)
            ex = IreeExecutor.load(name, self.dir / choice["path"], choice["entry"], choice["inputs"], choice["outputs"],
                                   choice["driver"])
            where = "GPU" if choice["backend"] != "llvm-cpu" else ("native" if chip.kind == "cpu" else "CPU stand-in")
            return ex, f"iree {choice['backend']} ({choice['driver']}, {where})"
        onnx_art = next((a for a in mine if a["kind"] == "onnx"), None)
        if onnx_art is None:
            raise RunError(f"op {op.name}: no ONNX artifact in the plan")
        data = self._file(onnx_art)
        ep = onnx_art.get("ep")
        provider = ep if ep and ep in ort_providers() else "CPUExecutionProvider"
        ex = OrtExecutor.load(name, data, provider)
        where = "native" if provider != "CPUExecutionProvider" or chip.kind == "cpu" else "CPU stand-in"
        return ex, f"onnxruntime {provider} ({where})"

    def _load_parts(self) -> None:
        for name, part in self.partitions.items():
            if part is None:
                continue
            op = self.ops[name]
            arts = self.by_op.get(name, [])
            main = [a for a in arts if a.get("role") != "draft"]
            if not main:
                raise RunError(f"op {name} ({op.attr('model')}) has no artifacts in the plan; run `gimletc build` on it first")
            im = self._reference_for(str(main[0]["model"]), op)
            if parse_partition(str(main[0]["partition"]), im.layers) != part:
                raise RunError(f"op {name}: its artifact runs partition {main[0]['partition']}, but the op runs {part}")
            try:
                ex, runner = self._executor(op, arts, None)
                self.parts[(name, "")] = ModelPart(name, im, part, ex, runner)
                self.runner_of[name] = runner
                draft = [a for a in arts if a.get("role") == "draft"]
                if draft:
                    dim = self._reference_for(str(draft[0]["model"]), op)
                    dex, _ = self._executor(op, arts, "draft")
                    self.parts[(name, "draft")] = ModelPart(name, dim, whole(dim.layers), dex, runner)
                    self.draft_k = {**getattr(self, "draft_k", {}), name: int(draft[0].get("draft_k", 4))}
            except ExecutorError as e:
                raise RunError(str(e)) from None

    def _micro_rows(self) -> None:
        """(first row, rows) of the batch each model step op works on: micro-batch j of an attn-ffn decode."""
        sizes: dict[tuple[str, int], int] = {}
        index: dict[str, int] = {}
        for name in self.partitions:
            op = self.ops[name]
            j = op.attr("microbatch")
            if j is None:
                m = _MICRO.search(name)
                j = int(m.group(1)) if m and op.attr("kind_of") in ("model.attention", "model.ffn") else None
            if j is not None:
                index[name] = int(j)
                sizes[(str(op.attr("llm")), int(j))] = int(op.attr("batch", 1))
        self.rows: dict[str, tuple[int, int]] = {}
        for name, j in index.items():
            llm = str(self.ops[name].attr("llm"))
            offset = sum(sizes.get((llm, i), 0) for i in range(j))
            self.rows[name] = (offset, sizes[(llm, j)])

    # ---- running ---------------------------------------------------------------------------------
    def run(self) -> RunReport:
        self.t0 = time.perf_counter()
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, str | None, str, float, float, int]] = []
        self.records: dict[str, OpRecord] = {}
        self.channels: set[str] = set()
        self.mail: dict[str, Any] = {}
        self.chunk_kv: dict[str, KVCache] = {}
        self.streamed: dict[str, set[int]] = {}
        self.scratch: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.prefill_kv: dict[tuple[str, str], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self.state: dict[tuple[str, int], dict[str, Any]] = {}
        self.calls: dict[str, _Call] = {}
        self.outputs: dict[str, Any] = {}
        self.workers: dict[str, _Worker] = {}
        self.coord = ThreadPoolExecutor(max_workers=64, thread_name_prefix="gimletc-coord")
        env: dict[str, Any] = {}
        try:
            self._run_graph(self.graph, env, 0)
        finally:
            for w in self.workers.values():
                w.close()
            self.coord.shutdown(wait=True)
        wall = (time.perf_counter() - self.t0) * 1e3
        return self._report(wall)

    def _worker(self, name: str) -> _Worker:
        with self.lock:
            w = self.workers.get(name)
            if w is None:
                w = self.workers[name] = _Worker(name)
            return w

    def _now(self) -> float:
        return time.perf_counter() - self.t0

    def _record(self, op: Op, resource: str, start: float, end: float, depth: int, nbytes: int = 0) -> None:
        with self.lock:
            self.events.append((op.name, op.kind, op.attr("of"), resource, start, end, depth))
            rec = self.records.get(op.name)
            busy = (end - start) * 1e3
            if rec is None:
                pred = float(op.attr("seconds", 0.0)) * 1e3
                self.records[op.name] = OpRecord(op.name, op.kind, op.attr("of"), resource, start * 1e3, end * 1e3, busy, pred,
                                                 nbytes, self.runner_of.get(op.name, ""))
            else:  # ops in loop bodies: every run adds to the op's busy time and prediction
                rec.end_ms = max(rec.end_ms, end * 1e3)
                rec.measured_ms += busy
                rec.predicted_ms += float(op.attr("seconds", 0.0)) * 1e3
                rec.bytes += nbytes
                rec.runs += 1

    def _run_graph(self, graph: Graph, env: dict[str, Any], depth: int) -> None:
        """Execute `graph`'s ops in dataflow order (each on its worker); results land in `env`."""
        done_q: queue.Queue = queue.Queue()
        waiting: dict[str, set[str]] = {}
        users: dict[str, list[str]] = {}
        by_name = {op.name: op for op in graph.ops}
        inflight = 0
        failure: BaseException | None = None

        def submit(name: str) -> None:
            nonlocal inflight
            fut = self._dispatch(by_name[name], env, depth)
            inflight += 1
            fut.add_done_callback(lambda f, n=name: done_q.put((n, f)))

        ready = []
        for op in graph.ops:
            missing = {v for v in _uses(op) if v not in env}
            if missing:
                waiting[op.name] = missing
                for v in missing:
                    users.setdefault(v, []).append(op.name)
            else:
                ready.append(op.name)
        for name in ready:
            submit(name)
        while inflight:
            name, fut = done_q.get()
            inflight -= 1
            exc = fut.exception()
            if exc is not None:
                failure = failure or exc
                continue
            if failure is not None:
                continue
            results = fut.result() or {}
            env.update(results)
            for v in results:
                for user in users.pop(v, []):
                    w = waiting.get(user)
                    if w is None:
                        continue
                    w.discard(v)
                    if not w:
                        del waiting[user]
                        submit(user)
        if failure is not None:
            if isinstance(failure, GimletError):
                raise failure
            raise RunError(f"{type(failure).__name__}: {failure}") from failure
        if waiting:
            stuck = sorted(waiting)[:5]
            raise RunError(f"ops never became ready: {', '.join(stuck)} (waiting on {sorted(waiting[stuck[0]])[:3]})")

    def _dispatch(self, op: Op, env: dict[str, Any], depth: int) -> Future:
        if op.regions:
            return self.coord.submit(self._guard(op.name, lambda: self._run_region_op(op, env, depth)))
        if op.kind == "exec.send":
            channel = str(op.attr("channel"))
            with self.lock:
                self.channels.add(channel)
            return self._worker(channel).submit(self._guard(op.name, lambda: self._send(op, env, depth)))
        if op.kind in ("exec.recv", "exec.await", "agent.yield"):
            f: Future = Future()
            try:
                f.set_result(self._recv(op) if op.kind == "exec.recv" else {v.name: None for v in op.results})
            except BaseException as e:  # noqa: BLE001 - handed to the scheduler, which reports it
                f.set_exception(e)
            return f
        if op.kind == "exec.convert":
            return self._worker(str(op.attr("device"))).submit(self._guard(op.name, lambda: self._convert(op, env, depth)))
        if op.kind == "exec.compute":
            return self._worker(self.worker_of(op)).submit(self._guard(op.name, lambda: self._compute(op, env, depth)))
        raise RunError(f"op {op.name}: the runtime cannot execute {op.kind}")

    def _guard(self, name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            try:
                return fn()
            except GimletError:
                raise
            except Exception as e:  # noqa: BLE001 - report the op that failed, in one line
                raise RunError(f"op {name} failed: {type(e).__name__}: {e}") from e

        return run

    # ---- transfers ---------------------------------------------------------------------------------
    def _send(self, op: Op, env: dict[str, Any], depth: int) -> dict[str, Any]:
        start = self._now()
        src = op.operands[0]
        prod = self.producer.get(src)
        if prod is not None and prod.attr("chunk") is not None and not self._is_data(src):
            # A streamed chunk (overlap pass): a KV cache moves the layers its prefill chunk produced;
            # other values (a stage's activations) exist only once the last chunk ends, so nothing moves early.
            final = op.name.rsplit(".chunk", 1)[0]
            whole_send = self.ops.get(final)
            streams_kv = whole_send is not None and whole_send.operands and not self._is_data(src) and \
                self._value_kind(whole_send.operands[0]) == "kv"
            part = self.chunk_kv.get(prod.name) if streams_kv else None
            payload = part.copy() if part is not None else None
            if part is not None:
                with self.lock:
                    self.streamed.setdefault(final, set()).update(part.layers)
        else:
            value = env[src]
            if isinstance(value, KVCache) and op.name in self.streamed:
                payload = value.copy(set(value.layers) - self.streamed[op.name])
            else:
                payload = _copy_payload(value)
        nbytes = _nbytes(payload)
        if self.pace > 0:
            delay = start + float(op.attr("seconds", 0.0)) * self.pace - self._now()
            if delay > 0:
                time.sleep(delay)
        self._record(op, str(op.attr("channel")), start, self._now(), depth, nbytes)
        with self.lock:
            self.mail[op.results[-1].name] = payload
        return {op.results[-1].name: None}

    def _recv(self, op: Op) -> dict[str, Any]:
        with self.lock:
            parts = [self.mail.pop(t) for t in op.operands if t in self.mail]
        parts = [p for p in parts if p is not None]
        if not parts:
            raise RunError(f"op {op.name}: nothing was sent to it")
        value = KVCache.merge(parts) if len(parts) > 1 and all(isinstance(p, KVCache) for p in parts) else parts[0]
        return {op.results[0].name: value, op.results[1].name: None}

    def _convert(self, op: Op, env: dict[str, Any], depth: int) -> dict[str, Any]:
        start = self._now()
        kv = env[op.operands[0]]
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
        if not exact:
            self._note(f"{op.name}: {to_dtype} is not emulated here; the KV cache kept {kv.dtype}")
        for lay in (src, dst):
            if not known_layout(lay):
                self._note(f"KV layout {lay} is vendor-internal; the runtime keeps it head-major (bhsd)")
        self._record(op, str(op.attr("device")), start, self._now(), depth, out.nbytes)
        return {op.results[0].name: out, op.results[1].name: None}

    def _note(self, text: str) -> None:
        with self.lock:
            if text not in self.notes:
                self.notes.append(text)

    # ---- computes ----------------------------------------------------------------------------------
    def _compute(self, op: Op, env: dict[str, Any], depth: int) -> dict[str, Any]:
        kind = str(op.attr("kind_of"))
        start = self._now()
        if kind == "model.prefill":
            results = self._prefill(op, env)
        elif kind == "model.decode" and self._whole_decode(op):
            results = self._decode(op, env)
        elif kind in ("model.decode", "model.attention", "model.ffn"):
            results = self._step(op, env)
        elif kind == "model.draft":
            results = self._draft(op, env)
        elif kind == "model.verify":
            results = self._verify(op, env)
        elif kind == "model.kv_rollback":
            results = self._rollback(op, env)
        elif kind in CALLABLE_KINDS:
            fn = self.tools[str(op.attr("of"))]
            out = fn(*[env[v] for v in op.operands if v in env and self._is_data(v)])
            data = [v for v in op.results if v.type.kind != "token"]
            results = {data[0].name: out} if data else {}
        elif kind == "agent.input":
            results = {op.results[0].name: self._input(op)}
        elif kind == "agent.output":
            with self.lock:
                self.outputs[str(op.attr("of"))] = [env[v] for v in op.operands if self._is_data(v)]
            results = {}
        else:
            raise RunError(f"op {op.name}: the runtime cannot execute a compute of {kind}")
        self._record(op, self.worker_of(op), start, self._now(), depth)
        results.update({v.name: None for v in op.results if v.type.kind == "token"})
        return results

    def _value_kind(self, name: str) -> str | None:
        p = self.producer.get(name)
        return None if p is None else next(v for v in p.results if v.name == name).type.kind

    def _is_data(self, name: str) -> bool:
        p = self.producer.get(name)
        if p is None:
            return True
        return next(v for v in p.results if v.name == name).type.kind != "token"

    def _data(self, op: Op, env: dict[str, Any]) -> list[Any]:
        return [env[v] for v in op.operands if self._is_data(v) and v in env]

    def _whole_decode(self, op: Op) -> bool:
        part = self.partitions.get(op.name)
        return part is not None and part.is_whole and op.attr("stage") is None and not re.search(r"\.decode\.s\d+$", op.name)

    def _input(self, op: Op) -> np.ndarray:
        return np.array(self.request[op.name], copy=True)

    def _request(self) -> dict[str, np.ndarray]:
        """The request's input token ids, made before the run starts: the caller's, else fixed pseudo-random ids."""
        out = {}
        for op, _ in self.graph.walk():
            if op.kind == "exec.compute" and op.attr("kind_of") == "agent.input":
                name = str(op.attr("of"))
                if name in self.inputs:
                    out[op.name] = np.asarray(self.inputs[name], dtype=np.int64).reshape(-1)
                else:
                    rng = np.random.default_rng(zlib.crc32(name.encode()))
                    out[op.name] = rng.integers(0, 2**31 - 1, size=int(op.attr("tokens", 0)), dtype=np.int64)
        return out

    def _prompts(self, op: Op, env: dict[str, Any], vocab: int) -> np.ndarray:
        """[batch, tokens] prompt ids: the operands' ids, after the call's fixed system-prompt ids up to
        `tokens`; sequence i of a batch shifts every id by i (mod vocab), so sequences differ."""
        pieces = []
        for x in self._data(op, env):
            if isinstance(x, KVCache | Activations):
                continue
            try:
                pieces.append(np.asarray(x, dtype=np.int64).reshape(-1))
            except (TypeError, ValueError):
                raise RunError(f"op {op.name}: an operand is not token ids ({type(x).__name__})") from None
        ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        want = int(op.attr("tokens", len(ids)))
        if len(ids) < want:
            rng = np.random.default_rng(zlib.crc32(str(op.attr("llm") or op.name).encode()))
            ids = np.concatenate([rng.integers(0, vocab, size=want - len(ids), dtype=np.int64), ids])
        batch = int(op.attr("batch", 1))
        return np.stack([(ids + i) % vocab for i in range(batch)])

    def _native(self, kv: dict[int, tuple[np.ndarray, np.ndarray]], chip: Chip) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        dst = axes_of(chip.kv_layout)
        if not known_layout(chip.kv_layout):
            self._note(f"KV layout {chip.kv_layout} ({chip.name}) is vendor-internal; the runtime keeps it head-major (bhsd)")
        return {i: (to_axes(k, STEP_AXES, dst), to_axes(v, STEP_AXES, dst)) for i, (k, v) in kv.items()}

    def _step_kv(self, kv: KVCache, part: ModelPart, chip: Chip, op: Op, layers: Any = None,
                 rows: tuple[int, int] | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """A KV cache (its `layers`, batch `rows`) as the step reads it, after checking it is in this device's layout."""
        if kv.layers and kv.layout != chip.kv_layout:
            raise KVLayoutError(
                f"op {op.name}: the KV cache of {kv.model} arrives in layout {kv.layout}, but {op.attr('device')} "
                f"({chip.name}) keeps {chip.kv_layout}; the plan needs an exec.convert before it"
            )
        want = kv.layers if layers is None else [i for i in layers if i in kv.layers]
        out = {}
        for i in want:
            k, v = kv.in_step_layout(i, part.kv_dtype)
            if rows is not None:
                k, v = k[rows[0]:rows[0] + rows[1]], v[rows[0]:rows[0] + rows[1]]
            out[i] = (k, v)
        return out

    def _call(self, llm: str) -> _Call:
        c = self.calls.get(llm)
        if c is None:
            raise RunError(f"LLM call {llm}: a decode step ran before its prefill")
        return c

    def _prefill(self, op: Op, env: dict[str, Any]) -> dict[str, Any]:
        part = self.parts.get((op.name, ""))
        device = str(op.attr("device"))
        chip = self.chip_of(device)
        llm = str(op.attr("llm") or op.attr("of"))
        draft_prefill = str(op.attr("of", "")).endswith(".draft_prefill")
        group = str(op.attr("of"))
        results: dict[str, Any] = {}
        if part is None:  # an empty chunk (more chunks than layers)
            return results
        im, p = part.model, part.partition
        scratch = self.scratch.setdefault((group.split(".chunk")[0], device), {})
        boundary = dict(scratch)
        for x in self._data(op, env):
            if isinstance(x, Activations):
                boundary.update(x.tensors)
        ids = None
        if im.token_input in part.run.inputs:
            ids = self._prompts(op, env, im.model.vocab)
            if not draft_prefill:
                with self.lock:
                    self.calls[llm] = _Call(im.name, ids.shape[0], ids, [[] for _ in ids], [[] for _ in ids],
                                            self._target_tokens(llm))
        present, acts, logits = part.step(ids, {}, boundary)
        scratch.update(acts)
        native = self._native(present, chip)
        length = int(op.attr("tokens", 0))
        dtype = im.model.kv_dtype
        history = next_tok = None
        rows: list[np.ndarray] = []
        if logits is not None:
            last = logits[:, -1]
            if draft_prefill:
                prompts = ids
                nxt = np.argmax(last, axis=-1)[:, None]
            else:
                call = self._call(llm)
                prompts = call.prompts
                nxt = call.emit(0, last)
            history = np.concatenate([prompts, nxt], axis=1)
            next_tok = nxt
            rows = [last]
        if op.attr("chunk") is not None:  # a streamed layer group: the last one defines the whole cache
            produced = self.prefill_kv.setdefault((group.split(".chunk")[0], device), {})
            produced.update(native)
            self.chunk_kv[op.name] = KVCache(im.name, dict(native), chip.kv_layout, dtype, length)
            native = dict(produced)
        for v in op.results:
            if v.type.kind == "kv":
                results[v.name] = KVCache(im.name, native, chip.kv_layout, dtype, length, history, next_tok, rows)
            elif v.type.kind == "act":
                results[v.name] = Activations({**boundary, **acts})
            elif v.type.kind == "tokens":
                if next_tok is None:
                    raise RunError(f"op {op.name}: partition {p} yields a token but does not hold the head")
                results[v.name] = np.array(next_tok, copy=True)
        return results

    def _target_tokens(self, llm: str) -> int:
        loop = self.ops.get(f"{llm}.decode")
        if loop is not None and loop.kind == "agent.loop":
            return int(loop.attr("max"))
        dec = [op for op in self.ops.values() if op.kind == "exec.compute" and op.attr("kind_of") == "model.decode"
               and op.attr("llm") == llm and op.attr("tokens") is not None]
        return max([int(op.attr("tokens")) for op in dec] or [1])

    def _decode(self, op: Op, env: dict[str, Any]) -> dict[str, Any]:
        """A whole decode in one op: greedy (or speculative, with a draft artifact) from the prefill's cache."""
        part = self.parts[(op.name, "")]
        chip = self.chip_of(str(op.attr("device")))
        kvs = [x for x in self._data(op, env) if isinstance(x, KVCache)]
        if not kvs:
            raise RunError(f"op {op.name}: decode needs the prefill's KV cache")
        kv = KVCache.merge(kvs)
        if kv.next_token is None or kv.history is None:
            raise RunError(f"op {op.name}: the KV cache carries no first token")
        llm = str(op.attr("llm") or op.attr("of"))
        call = self._call(llm)
        past = self._step_kv(kv, part, chip, op)
        count = int(op.attr("tokens", 1))
        draft = self.parts.get((op.name, "draft"))
        if count > 1 and draft is None:
            tok = kv.next_token
            for _ in range(count - 1):
                present, _, logits = part.step(np.asarray(tok, dtype=np.int64), past, {})
                past = present
                tok = call.emit(0, logits[:, -1])
        elif count > 1:
            if call.batch != 1:
                raise RunError(f"op {op.name}: speculative decoding runs one sequence; the call has {call.batch}")
            toks, rows, spec = speculative_decode(part, draft, past, kv.history[0], count - 1, self.draft_k[op.name])
            for t, r in zip(toks, rows, strict=True):
                call.tokens[0].append(int(t))
                call.rows[0].append(r)
            call.speculative = {"draft": draft.model.name, "draft_k": self.draft_k[op.name], "drafted": spec.drafted,
                                "accepted": spec.accepted, "acceptance": spec.acceptance, "target_steps": spec.target_steps}
        out = [v for v in op.results if v.type.kind != "token"]
        return {out[0].name: call.output()} if out else {}

    def _step(self, op: Op, env: dict[str, Any]) -> dict[str, Any]:
        """One decode step of one partition (a pipeline stage, an attention or FFN block); its layers'
        KV cache stays on the device between steps, initialised from the cache it is given."""
        part = self.parts[(op.name, "")]
        p = part.partition
        chip = self.chip_of(str(op.attr("device")))
        llm = str(op.attr("llm"))
        call = self._call(llm)
        offset, size = self.rows.get(op.name, (0, call.batch))
        data = self._data(op, env)
        kv_in = next((x for x in data if isinstance(x, KVCache)), None)
        boundary: dict[str, np.ndarray] = {}
        ids = None
        for x in data:
            if isinstance(x, Activations):
                boundary.update(x.tensors)
            elif isinstance(x, np.ndarray):
                ids = x
        key = (op.name, id(kv_in))
        st = self.state.get(key)
        if st is None:
            past = self._step_kv(kv_in, part, chip, op, p.kv_layers, (offset, size)) if kv_in is not None else {}
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
        results: dict[str, Any] = {}
        for v in op.results:
            if v.type.kind == "act":
                results[v.name] = Activations({**boundary, **acts})
            elif v.type.kind == "tokens":
                if logits is None:
                    raise RunError(f"op {op.name}: partition {p} yields a token but does not hold the head")
                results[v.name] = call.emit(offset, logits[:, -1])
        return results

    # ---- speculative decoding (the compiler's draft / verify / rollback loop) -------------------------
    def _draft(self, op: Op, env: dict[str, Any]) -> dict[str, Any]:
        part = self.parts[(op.name, "")]
        chip = self.chip_of(str(op.attr("device")))
        data = self._data(op, env)
        kv_in = next(x for x in data if isinstance(x, KVCache))
        new = next(np.asarray(x, dtype=np.int64) for x in data if isinstance(x, np.ndarray))
        if new.shape[0] != 1:
            raise RunError(f"op {op.name}: speculative decoding runs one sequence; got {new.shape[0]}")
        k = self._draft_k(op)
        key = (op.name, id(kv_in))
        st = self.state.get(key)
        if st is None:
            past = self._step_kv(kv_in, part, chip, op)
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
        return {out[0].name: np.array([[st["seq"][-1], *proposals]], dtype=np.int64)}

    def _draft_k(self, op: Op) -> int:
        if op.attr("draft_k") is not None:
            return int(op.attr("draft_k"))
        out = [v for v in op.results if v.type.kind == "tokens"]
        return int(out[0].type.size) if out else 4

    def _verify_state(self, llm: str) -> dict[str, Any]:
        st = self.state.get((f"{llm}.verify", 0))
        if st is None:
            raise RunError(f"LLM call {llm}: kv_rollback before verify")
        return st

    def _verify(self, op: Op, env: dict[str, Any]) -> dict[str, Any]:
        part = self.parts[(op.name, "")]
        chip = self.chip_of(str(op.attr("device")))
        llm = str(op.attr("llm"))
        call = self._call(llm)
        data = self._data(op, env)
        kv_in = next(x for x in data if isinstance(x, KVCache))
        proposed = next(np.asarray(x, dtype=np.int64) for x in data if isinstance(x, np.ndarray))
        st = self.state.get((f"{llm}.verify", 0))
        if st is None or st.get("kv") is not kv_in:
            st = self.state[(f"{llm}.verify", 0)] = {"kv": kv_in, "past": self._step_kv(kv_in, part, chip, op), "keep": None}
        if st["keep"] is not None:  # no rollback op ran: apply it here
            self._truncate(st)
        _, props = int(proposed[0, 0]), [int(t) for t in proposed[0, 1:]]
        present, _, logits = part.step(proposed, st["past"], {})
        greedy = [int(np.argmax(logits[0, i])) for i in range(len(props) + 1)]
        n = 0
        while n < len(props) and props[n] == greedy[n]:
            n += 1
        new = props[:n] + [greedy[n]]
        length = next(iter(st["past"].values()))[0].shape[2] if st["past"] else 0
        st["past"], st["keep"] = present, length + 1 + n
        for i, t in enumerate(new):
            call.tokens[0].append(t)
            call.rows[0].append(np.array(logits[0, i], copy=True))
        spec = call.speculative or {"drafted": 0, "accepted": 0, "target_steps": 0, "draft_k": len(props)}
        spec["drafted"] += len(props)
        spec["accepted"] += n
        spec["target_steps"] += 1
        spec["acceptance"] = spec["accepted"] / spec["drafted"] if spec["drafted"] else 0.0
        call.speculative = spec
        out = [v for v in op.results if v.type.kind != "token"]
        return {out[0].name: np.array([new], dtype=np.int64)}

    @staticmethod
    def _truncate(st: dict[str, Any]) -> None:
        keep = st["keep"]
        st["past"] = {i: (a[:, :, :keep], b[:, :, :keep]) for i, (a, b) in st["past"].items()}
        st["keep"] = None

    def _rollback(self, op: Op, env: dict[str, Any]) -> dict[str, Any]:
        st = self._verify_state(str(op.attr("llm")))
        if st["keep"] is not None:
            self._truncate(st)
        return {}

    # ---- regions -----------------------------------------------------------------------------------
    def _run_region_op(self, op: Op, env: dict[str, Any], depth: int) -> dict[str, Any]:
        start = self._now()
        if op.kind == "agent.loop":
            body = op.regions[0]
            llm = op.name.removesuffix(".decode") if op.name.endswith(".decode") else None
            decode_loop = llm is not None and any(
                o.kind == "exec.compute" and str(o.attr("kind_of", "")).startswith("model.") for o, _ in body.walk())
            limit = int(op.attr("max"))
            n = self.loops.get(op.name)
            if n is None:
                n = int(math.floor(float(op.attr("expected")) + 0.5))
            n = max(1, min(limit, n))
            carried = [env[v] for v in op.operands]
            it = 0
            while True:
                if decode_loop:  # a decode runs until its call has all its tokens
                    if self._call(llm).generated >= self._call(llm).target or it >= limit:
                        break
                elif it >= n:
                    break
                inner = dict(env)
                inner.update({a.name: x for a, x in zip(body.args, carried, strict=True)})
                self._run_graph(Graph(body.ops[:-1], body.args), inner, depth + 1)
                carried = [inner[v] for v in body.ops[-1].operands]
                it += 1
            results = dict(zip([r.name for r in op.results], carried, strict=True))
            if decode_loop and op.results:
                results[op.results[0].name] = self._call(llm).output()
        elif op.kind == "agent.branch":
            probs = list(op.attr("probabilities"))
            arm = self.loops.get(op.name, max(range(len(probs)), key=lambda i: probs[i]))
            region = op.regions[arm]
            inner = dict(env)
            self._run_graph(Graph(region.ops[:-1], region.args), inner, depth + 1)
            results = {r.name: inner[v] for r, v in zip(op.results, region.ops[-1].operands, strict=True)}
        else:
            raise RunError(f"op {op.name}: the runtime cannot execute {op.kind} with regions")
        with self.lock:
            self.events.append((op.name, op.kind, op.attr("of"), "regions", start, self._now(), depth))
        return results

    # ---- report ------------------------------------------------------------------------------------
    def _report(self, wall_ms: float) -> RunReport:
        from gimletc.analysis.replay import replay

        tl = replay(self.graph)
        llms = self._checks() if self.check else {}
        devices: dict[str, dict[str, Any]] = {}
        for r in sorted({rec.resource for rec in self.records.values()} - self.channels):
            chip = self.chip_of(r)
            ops = [rec for rec in self.records.values() if rec.resource == r]
            runners = sorted({rec.runner for rec in ops if rec.runner})
            gpu_here = any("GPU" in x for x in runners)
            devices[r] = {
                "chip": chip.name,
                "kind": chip.kind,
                "ran_on": "this machine's GPU" if gpu_here else "CPU worker" + (" (stand-in)" if chip.kind != "cpu" else ""),
                "runners": runners,
                "ops": sum(rec.runs for rec in ops),
                "measured_ms": sum(rec.measured_ms for rec in ops),
                "predicted_ms": sum(rec.predicted_ms for rec in ops),
            }
        for ch in sorted(self.channels):
            ops = [rec for rec in self.records.values() if rec.resource == ch]
            devices[ch] = {"kind": "link", "transfers": sum(o.runs for o in ops), "bytes": sum(o.bytes for o in ops),
                           "measured_ms": sum(o.measured_ms for o in ops), "predicted_ms": sum(o.predicted_ms for o in ops)}
        stand_ins = sorted({d["chip"] for d in devices.values() if d.get("kind") in ("gpu", "sram-accelerator")
                            and d["ran_on"].startswith("CPU")})
        notes = list(self.notes)
        if stand_ins:
            notes.insert(0, f"no {'/'.join(stand_ins)} here: partitions placed on them ran on CPU workers standing in "
                            "for those devices; measured times are this machine's, predictions are for the plan's chips")
        if self.pace > 0:
            notes.append(f"transfers paced to {self.pace:g}x their predicted time")
        diffs = [c.max_abs_diff for c in llms.values()]
        return RunReport(
            plan=self.plan.name, backend=self.backend, measured_ms=wall_ms, predicted_ms=tl.makespan * 1e3,
            max_abs_diff=max(diffs) if diffs else 0.0, tokens_match=all(c.tokens_match for c in llms.values()),
            devices=devices, ops=sorted(self.records.values(), key=lambda r: (r.start_ms, r.op)), llms=llms,
            outputs=self.outputs, notes=notes, events=sorted(self.events, key=lambda e: (e[4], e[0])),
            channels=frozenset(self.channels),
        )

    def _checks(self) -> dict[str, LLMCheck]:
        """Each call's tokens and logits against the unsplit model's greedy decode of the same prompts."""
        out: dict[str, LLMCheck] = {}
        for llm, call in sorted(self.calls.items()):
            data = self.reference_data.get(call.model)
            if data is None or not call.tokens[0]:
                continue
            im = self.references[call.model]
            ref = OrtExecutor.load(f"reference {call.model}", data, "CPUExecutionProvider", threads=1)
            part = ModelPart(f"{llm}.reference", im, whole(im.layers), ref, "onnxruntime reference")
            n = max(len(t) for t in call.tokens)
            present, _, logits = part.step(call.prompts, {}, {})
            ref_rows = [logits[:, -1]]
            past = present
            for _ in range(n - 1):
                tok = np.argmax(ref_rows[-1], axis=-1)[:, None]
                present, _, logits = part.step(tok, past, {})
                past = present
                ref_rows.append(logits[:, -1])
            ref_tokens = [[int(np.argmax(r[b])) for r in ref_rows] for b in range(call.batch)]
            diff = 0.0
            match = True
            for b in range(call.batch):
                got = call.tokens[b]
                upto = len(got)
                for i, (x, y) in enumerate(zip(got, ref_tokens[b], strict=False)):
                    if x != y:
                        upto, match = i + 1, False
                        break
                for i in range(min(upto, len(call.rows[b]))):
                    diff = max(diff, float(np.max(np.abs(call.rows[b][i].astype(np.float64) - ref_rows[i][b].astype(np.float64)))))
            out[llm] = LLMCheck(
                llm, call.model, int(call.prompts.shape[1]),
                [int(t) for seq in call.tokens for t in seq],
                [int(t) for b in range(call.batch) for t in ref_tokens[b][: len(call.tokens[b])]],
                match, diff, call.speculative,
            )
        return out


def _proto(data: bytes, a: Mapping[str, Any]) -> Any:
    import onnx

    try:
        return onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001
        raise RunError(f"artifact {a['path']}: not an ONNX model ({e})") from None


def run_plan(
    plan: Any,
    *,
    plan_dir: str | Path | None = None,
    backend: str = "onnxruntime",
    tools: Mapping[str, Callable[..., Any]] | None = None,
    inputs: Mapping[str, Any] | None = None,
    loops: Mapping[str, int] | None = None,
    pace_links: float = 0.0,
    check: bool = True,
) -> RunReport:
    """Execute one request of `plan` (a DeploymentPlan or a path to its JSON) on this machine.

    `backend`: `onnxruntime` (the ONNX subgraphs) or `iree` (the compiled binaries: the GPU's
    where this machine has that GPU, else llvm-cpu). `tools`: op name -> callable for tool,
    retrieval and code ops (called with the op's input values; returns its output). `inputs`:
    input op name -> token ids (default: fixed pseudo-random ids per input). `loops`: loop name ->
    iterations, branch name -> arm (default: round(expected), the most probable arm). `pace_links`:
    make each transfer last at least this multiple of its predicted time (0: as fast as memory
    copies here). `check`: replay each LLM call on the unsplit model and compare."""
    from gimletc.plan import DeploymentPlan, load_plan

    if isinstance(plan, DeploymentPlan):
        base = Path(plan_dir) if plan_dir is not None else Path.cwd()
    else:
        path = Path(plan)
        plan = load_plan(path)
        base = Path(plan_dir) if plan_dir is not None else path.parent
    rt = LocalRuntime(plan, base, backend=backend, tools=tools, inputs=inputs, loops=loops, pace_links=pace_links, check=check)
    return rt.run()
