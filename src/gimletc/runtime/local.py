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
from gimletc.importers.onnx_import import ImportedModel, load_onnx
from gimletc.ir import Graph, Op, parse_graph, verify
from gimletc.runtime.executors import ExecutorError, IreeExecutor, OrtExecutor, gpu_drivers, ort_providers
from gimletc.runtime.kv import KVCache, KVLayoutError, axes_of, cast, known_layout, to_axes, STEP_AXES
from gimletc.runtime.llm import ModelPart, SpecStats, greedy_decode, prefill, speculative_decode
from gimletc.targets.partition import Partition, parse_partition, partition_of

__all__ = ["BACKENDS", "RunError", "RunReport", "load_tools", "run_plan"]

BACKENDS = ("onnxruntime", "iree")
MODEL_KINDS = ("model.prefill", "model.decode")
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
        from gimletc.sim.replay import Event, Timeline
        from gimletc.sim.trace import chrome_trace

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
    """Import `module:attribute` (a mapping of op name to callable, or a function returning one).

    This runs the user's module: the caller asks for it by naming it (`gimletc run --tools`)."""
    import importlib

    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise RunError(f"--tools takes MODULE:ATTRIBUTE (a dict of op name -> callable); got {spec!r}")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise RunError(f"--tools {spec}: {e}") from None
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


@dataclass
class _Group:
    """The partitions of one split decode: run step by step, with the transfers between them."""

    name: str
    llm: str
    computes: list[Op]  # in segment order
    ops: list[Op]  # computes and the transfers between them, in graph order
    external: list[str]  # values it reads from outside


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
        self._check_callables()
        self.groups = self._decode_groups()
        self.parts: dict[tuple[str, str], ModelPart] = {}
        self.runner_of: dict[str, str] = {}
        self._load_parts()

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
            if op.kind == "exec.compute" and op.attr("kind_of") in MODEL_KINDS:
                model = op.attr("model")
                if not self.by_op.get(op.name):
                    if not str(model).endswith(".onnx"):
                        raise RunError(
                            f"op {op.name} runs model {model}, which has no executable: `gimletc run` executes models "
                            "imported from ONNX (give the agent graph an .onnx model path)"
                        )
                    if self._partition(op) is not None:
                        raise RunError(f"op {op.name} ({model}) has no artifacts in the plan; run `gimletc build` on it first")

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

    def _layers(self, op: Op) -> int:
        """Layers of the model `op` runs (from its reference artifact, else its ONNX file)."""
        model = next((a["model"] for a in self.by_op.get(op.name, []) if a.get("role") != "draft"), None)
        if model is not None:
            return self._reference_for(str(model), op).layers
        from gimletc.models import get_model

        return get_model(str(op.attr("model"))).layers

    def _partition(self, op: Op) -> Partition | None:
        return partition_of(op.attrs, self._layers(op))

    def worker_of(self, op: Op) -> str:
        devs = op.attr("devices") or ()
        if len(devs) == 1 and "#" in str(devs[0]):
            return str(devs[0])
        return str(op.attr("device"))

    def chip_of(self, resource: str) -> Chip:
        return self.chips[resource.split("#", 1)[0]]

    def _executor(self, op: Op, arts: list[dict[str, Any]], role: str | None) -> tuple[Any, str]:
        device = str(op.attr("device"))
        chip = self.chip_of(device)
        mine = [a for a in arts if a.get("role") == role]
        onnx_art = next((a for a in mine if a["kind"] == "onnx"), None)
        name = f"{op.name}{' draft' if role else ''} ({mine[0]['model'] if mine else '?'} {mine[0]['partition'] if mine else ''})"
        if self.backend == "iree":
            native = {"nvidia": "cuda", "amd": "rocm"}.get(chip.vendor) if chip.kind == "gpu" else None
            drivers = gpu_drivers()
            choice = None
            if native and {"cuda": "cuda", "rocm": "hip"}[native] in drivers:
                choice = next((a for a in mine if a["kind"] == "iree" and a["backend"] == native), None)
            if choice is None:
                choice = next((a for a in mine if a["kind"] == "iree" and a["backend"] == "llvm-cpu"), None)
            if choice is None:
                raise RunError(f"op {op.name}: backend iree needs an llvm-cpu (or this machine's GPU) binary; "
                               "build the plan's artifacts with IREE")
            self._file(choice)
            ex = IreeExecutor.load(name, self.dir / choice["path"], choice["entry"], choice["inputs"], choice["outputs"],
                                   choice["driver"])
            where = "GPU" if choice["backend"] != "llvm-cpu" else "CPU stand-in"
            return ex, f"iree {choice['backend']} ({choice['driver']}, {where})"
        if onnx_art is None:
            raise RunError(f"op {op.name}: no ONNX artifact in the plan")
        data = self._file(onnx_art)
        ep = onnx_art.get("ep")
        provider = ep if ep and ep in ort_providers() else "CPUExecutionProvider"
        ex = OrtExecutor.load(name, data, provider)
        where = "CPU stand-in" if provider == "CPUExecutionProvider" and chip.kind != "cpu" else "native"
        return ex, f"onnxruntime {provider} ({where})"

    def _load_parts(self) -> None:
        for op, _ in self.graph.walk():
            if op.kind != "exec.compute" or op.attr("kind_of") not in MODEL_KINDS:
                continue
            arts = self.by_op.get(op.name, [])
            part = self._partition(op)
            if part is None:
                continue
            model = next(a["model"] for a in arts if a.get("role") != "draft")
            im = self._reference_for(str(model), op)
            art_part = next(a["partition"] for a in arts if a.get("role") != "draft")
            if parse_partition(str(art_part), im.layers) != part:
                raise RunError(f"op {op.name}: its artifact runs partition {art_part}, but the op runs {part}")
            try:
                ex, runner = self._executor(op, arts, None)
            except ExecutorError as e:
                raise RunError(str(e)) from None
            self.parts[(op.name, "")] = ModelPart(op.name, im, part, ex, runner)
            self.runner_of[op.name] = runner
            draft = [a for a in arts if a.get("role") == "draft"]
            if draft:
                dim = self._reference_for(str(draft[0]["model"]), op)
                dex, _ = self._executor(op, arts, "draft")
                dp = ModelPart(op.name, dim, parse_partition("all", dim.layers), dex, runner)
                dp.draft_k = int(draft[0].get("draft_k", 4))  # type: ignore[attr-defined]
                self.parts[(op.name, "draft")] = dp

    def _decode_groups(self) -> dict[str, _Group]:
        """Split decodes: computes of one LLM's decode with a `partition` other than the whole step."""
        by_llm: dict[str, list[Op]] = {}
        for op in self.graph.ops:
            if op.kind == "exec.compute" and op.attr("kind_of") == "model.decode" and op.attr("partition") not in (None, "all", "phase"):
                by_llm.setdefault(str(op.attr("llm") or op.attr("of")), []).append(op)
        groups: dict[str, _Group] = {}
        for llm, computes in by_llm.items():
            names = {c.name for c in computes}
            produced = {v.name for c in computes for v in c.results}
            members = list(computes)
            changed = True
            while changed:  # transfers whose data comes from a member (and their receives)
                changed = False
                for op in self.graph.ops:
                    if op in members or op.kind not in ("exec.send", "exec.recv", "exec.convert"):
                        continue
                    if op.operands and op.operands[0] in produced:
                        members.append(op)
                        produced.update(v.name for v in op.results)
                        changed = True
            order = {op.name: i for i, op in enumerate(self.graph.ops)}
            members.sort(key=lambda o: order[o.name])
            external = list(dict.fromkeys(v for m in members for v in _uses(m) if v not in produced))
            computes.sort(key=lambda c: (self._partition(c) or Partition(0, 1, 1)).start)
            groups[llm] = _Group(f"{llm}.decode", llm, computes, members, external)
            del names
        return groups

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
        self.llm_runs: dict[str, dict[str, Any]] = {}
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

    def _record(self, op: Op, resource: str, start: float, end: float, depth: int, nbytes: int = 0, step: int | None = None) -> None:
        with self.lock:
            label = op.name if step is None else f"{op.name}#{step}"
            self.events.append((label, op.kind, op.attr("of"), resource, start, end, depth))
            rec = self.records.get(op.name)
            busy = (end - start) * 1e3
            if rec is None:
                pred = float(op.attr("seconds", 0.0)) * 1e3
                self.records[op.name] = OpRecord(op.name, op.kind, op.attr("of"), resource, start * 1e3, end * 1e3, busy, pred,
                                                 nbytes, self.runner_of.get(op.name, ""))
            else:
                rec.end_ms = max(rec.end_ms, end * 1e3)
                rec.measured_ms += busy
                rec.bytes += nbytes

    def _run_graph(self, graph: Graph, env: dict[str, Any], depth: int) -> None:
        """Execute `graph`'s ops in dataflow order; results land in `env`."""
        groups = self.groups if depth == 0 else {}
        in_group = {m.name: g for g in groups.values() for m in g.ops}
        units: list[tuple[str, Any]] = []  # (name, Op or _Group)
        seen_groups: set[str] = set()
        for op in graph.ops:
            g = in_group.get(op.name)
            if g is None:
                units.append((op.name, op))
            elif g.name not in seen_groups:
                seen_groups.add(g.name)
                units.append((g.name, g))
        done_q: queue.Queue = queue.Queue()
        waiting: dict[str, set[str]] = {}
        users: dict[str, list[str]] = {}
        by_name = dict(units)
        inflight = 0
        failure: BaseException | None = None

        def needs(u: Any) -> list[str]:
            return u.external if isinstance(u, _Group) else _uses(u)

        def submit(name: str) -> None:
            nonlocal inflight
            u = by_name[name]
            fut = self._dispatch(u, env, depth)
            inflight += 1
            fut.add_done_callback(lambda f, n=name: done_q.put((n, f)))

        ready = []
        for name, u in units:
            missing = {v for v in needs(u) if v not in env}
            if missing:
                waiting[name] = missing
                for v in missing:
                    users.setdefault(v, []).append(name)
            else:
                ready.append(name)
        for name in ready:
            submit(name)
        while inflight:
            name, fut = done_q.get()
            inflight -= 1
            exc = fut.exception()
            if exc is not None:
                if failure is None:
                    failure = exc
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

    def _dispatch(self, u: Any, env: dict[str, Any], depth: int) -> Future:
        if isinstance(u, _Group):
            return self.coord.submit(self._guard(u.name, lambda: self._run_group(u, env, depth)))
        op: Op = u
        if op.regions:
            return self.coord.submit(self._guard(op.name, lambda: self._run_region_op(op, env, depth)))
        if op.kind == "exec.send":
            channel = str(op.attr("channel"))
            self.channels.add(channel)
            return self._worker(channel).submit(self._guard(op.name, lambda: self._send(op, env, depth)))
        if op.kind in ("exec.recv", "exec.await", "agent.yield"):
            f: Future = Future()
            try:
                f.set_result(self._recv(op, env) if op.kind == "exec.recv" else {v.name: None for v in op.results})
            except BaseException as e:  # noqa: BLE001
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
        if prod is not None and prod.attr("chunk") is not None and prod.results[-1].name == src and src not in self._data_values(prod):
            # A streamed KV chunk: the layers its prefill chunk produced.
            part = self.chunk_kv.get(prod.name)
            final = op.name.rsplit(".chunk", 1)[0]
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
            target = start + float(op.attr("seconds", 0.0)) * self.pace
            delay = target - self._now()
            if delay > 0:
                time.sleep(delay)
        end = self._now()
        self._record(op, str(op.attr("channel")), start, end, depth, nbytes)
        with self.lock:
            self.mail[op.results[-1].name] = payload
        return {op.results[-1].name: None}

    @staticmethod
    def _data_values(op: Op) -> set[str]:
        return {v.name for v in op.results if v.type.kind != "token"}

    def _recv(self, op: Op, env: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            parts = [self.mail.pop(t) for t in op.operands if t in self.mail]
        parts = [p for p in parts if p is not None]
        if not parts:
            raise RunError(f"op {op.name}: nothing was sent to it")
        if all(isinstance(p, KVCache) for p in parts) and len(parts) > 1:
            value = KVCache.merge(parts)  # type: ignore[arg-type]
        else:
            value = parts[0]
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
        elif kind == "model.decode":
            results = self._decode(op, env)
        elif kind in CALLABLE_KINDS:
            fn = self.tools[str(op.attr("of"))]
            args = [env[v] for v in op.operands if v in env and self._is_data(v)]
            out = fn(*args)
            data = [v for v in op.results if v.type.kind != "token"]
            results = {data[0].name: out} if data else {}
        elif kind == "agent.input":
            results = {op.results[0].name: self._input(op)}
        elif kind == "agent.output":
            self.outputs[str(op.attr("of"))] = [env[v] for v in op.operands if self._is_data(v)]
            results = {}
        else:
            results = {}
        self._record(op, self.worker_of(op), start, self._now(), depth)
        results.update({v.name: None for v in op.results if v.type.kind == "token"})
        return results

    def _is_data(self, name: str) -> bool:
        p = self.producer.get(name)
        if p is None:
            return True
        return next(v for v in p.results if v.name == name).type.kind != "token"

    def _input(self, op: Op) -> np.ndarray:
        name = str(op.attr("of"))
        n = int(op.attr("tokens", 0))
        if name in self.inputs:
            return np.asarray(self.inputs[name], dtype=np.int64).reshape(-1)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        return rng.integers(0, 2**31 - 1, size=n, dtype=np.int64)

    def _prompt(self, op: Op, env: dict[str, Any], vocab: int) -> np.ndarray:
        pieces = []
        for v in op.operands:
            if not self._is_data(v) or v not in env:
                continue
            x = env[v]
            if isinstance(x, KVCache | Activations):
                continue
            try:
                pieces.append(np.asarray(x, dtype=np.int64).reshape(-1))
            except (TypeError, ValueError):
                raise RunError(f"op {op.name}: operand %{v} is not token ids ({type(x).__name__})") from None
        ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        want = int(op.attr("tokens", len(ids)))
        if len(ids) < want:  # the call's system prompt: fixed ids derived from the call's name
            rng = np.random.default_rng(zlib.crc32(str(op.attr("llm") or op.name).encode()))
            ids = np.concatenate([rng.integers(0, vocab, size=want - len(ids), dtype=np.int64), ids])
        return ids % vocab

    def _native(self, kv: dict[int, tuple[np.ndarray, np.ndarray]], chip: Chip) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        dst = axes_of(chip.kv_layout)
        if not known_layout(chip.kv_layout):
            self._note(f"KV layout {chip.kv_layout} ({chip.name}) is vendor-internal; the runtime keeps it head-major (bhsd)")
        return {i: (to_axes(k, STEP_AXES, dst), to_axes(v, STEP_AXES, dst)) for i, (k, v) in kv.items()}

    def _step_kv(self, kv: KVCache, part: ModelPart, chip: Chip, op: Op) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """A received KV cache as the step reads it, after checking it is in this device's layout."""
        if kv.layers and kv.layout != chip.kv_layout:
            raise KVLayoutError(
                f"op {op.name}: the KV cache of {kv.model} arrives in layout {kv.layout}, but {op.attr('device')} "
                f"({chip.name}) keeps {chip.kv_layout}; the plan needs an exec.convert before it"
            )
        return {i: kv.in_step_layout(i, part.kv_dtype) for i in kv.layers}

    def _prefill(self, op: Op, env: dict[str, Any]) -> dict[str, Any]:
        part = self.parts.get((op.name, ""))
        of = str(op.attr("of"))
        device = str(op.attr("device"))
        chip = self.chip_of(device)
        data_results = [v for v in op.results if v.type.kind != "token"]
        if part is None:  # an empty chunk (more chunks than layers)
            if op.attr("chunk") is not None and op.attr("chunk") == op.attr("chunks") - 1:
                raise RunError(f"op {op.name}: the last prefill chunk has no partition")
            return {}
        im = part.model
        p = part.partition
        scratch = self.scratch.setdefault((of, device), {})
        boundary = dict(scratch)
        for v in op.operands:
            x = env.get(v)
            if isinstance(x, Activations):
                boundary.update(x.tensors)
        ids = self._prompt(op, env, im.model.vocab) if p.has_embed or im.token_input in part.run.inputs else None
        if ids is not None:
            self.llm_runs.setdefault(str(op.attr("llm") or of), {})["prompt"] = ids
        present, acts, logits = part.step(None if ids is None else ids[None, :], {}, boundary)
        scratch.update(acts)
        native = self._native(present, chip)
        produced = self.prefill_kv.setdefault((of, device), {})
        produced.update(native)
        results: dict[str, Any] = {}
        llm = str(op.attr("llm") or of)
        run = self.llm_runs.setdefault(llm, {})
        length = int(op.attr("tokens", 0))
        history, next_token, rows = None, None, []
        if logits is not None:
            prompt = run.get("prompt")
            row = logits[0, -1]
            next_token = int(np.argmax(row))
            history = np.concatenate([prompt, [next_token]]) if prompt is not None else None
            rows = [row]
            run["first_row"] = row
        dtype = im.model.kv_dtype
        if op.attr("chunk") is not None:
            self.chunk_kv[op.name] = KVCache(im.name, dict(native), chip.kv_layout, dtype, length)
            if data_results:  # the last chunk defines the whole cache
                results[data_results[0].name] = KVCache(im.name, dict(produced), chip.kv_layout, dtype, length,
                                                        history, next_token, rows)
            return results
        acts_out = [v for v in data_results if v.type.kind == "act"]
        kv_out = [v for v in data_results if v.type.kind == "kv"]
        tok_out = [v for v in data_results if v.type.kind == "tokens"]
        if acts_out:
            results[acts_out[0].name] = Activations(acts)
        if kv_out:
            holds_next = p.has_head and not tok_out
            results[kv_out[0].name] = KVCache(im.name, native, chip.kv_layout, dtype, length,
                                              history if holds_next else None, next_token if holds_next else None,
                                              rows if holds_next else [])
        if tok_out:
            results[tok_out[0].name] = KVCache(im.name, {}, chip.kv_layout, dtype, length, history, next_token, rows)
        return results

    def _decode(self, op: Op, env: dict[str, Any]) -> dict[str, Any]:
        part = self.parts[(op.name, "")]
        if not part.partition.is_whole:
            raise RunError(f"op {op.name}: a decode of partition {part.partition} must run with the rest of its split")
        chip = self.chip_of(str(op.attr("device")))
        kvs = [env[v] for v in op.operands if isinstance(env.get(v), KVCache)]
        if not kvs:
            raise RunError(f"op {op.name}: decode needs the prefill's KV cache")
        kv = KVCache.merge(kvs)
        if kv.next_token is None or kv.history is None:
            raise RunError(f"op {op.name}: the KV cache carries no first token")
        past = self._step_kv(kv, part, chip, op)
        count = int(op.attr("tokens", 1))
        llm = str(op.attr("llm") or op.attr("of"))
        draft = self.parts.get((op.name, "draft"))
        generated = [kv.next_token]
        rows = list(kv.logits)
        spec: SpecStats | None = None
        if count > 1:
            if draft is None:
                toks, more, _ = greedy_decode(part, past, kv.next_token, count - 1)
            else:
                toks, more, spec = speculative_decode(part, draft, past, kv.history, count - 1, draft.draft_k)  # type: ignore[attr-defined]
            generated += toks
            rows += more
        run = self.llm_runs.setdefault(llm, {})
        run.update({"model": part.model.name, "tokens": generated, "rows": rows,
                    "prompt": kv.history[:-1] if "prompt" not in run else run["prompt"]})
        if spec is not None:
            run["speculative"] = {"draft": draft.model.name, "draft_k": draft.draft_k, "drafted": spec.drafted,  # type: ignore[union-attr, attr-defined]
                                  "accepted": spec.accepted, "acceptance": spec.acceptance, "target_steps": spec.target_steps}
        out = [v for v in op.results if v.type.kind != "token"]
        return {out[0].name: np.array(generated, dtype=np.int64)} if out else {}

    # ---- split decode ------------------------------------------------------------------------------
    def _run_group(self, g: _Group, env: dict[str, Any], depth: int) -> dict[str, Any]:
        parts = [self.parts[(c.name, "")] for c in g.computes]
        if any(p is None for p in parts):
            raise RunError(f"decode of {g.llm}: a partition has no executable")
        first, last = g.computes[0], g.computes[-1]
        # Initial state on each partition's device: its layers' KV (checked against the device's layout).
        past: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        next_kv: KVCache | None = None
        for c, p in zip(g.computes, parts, strict=True):
            chip = self.chip_of(str(c.attr("device")))
            mine: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            for v in c.operands:
                x = env.get(v)
                if isinstance(x, KVCache):
                    if x.next_token is not None:
                        next_kv = x
                    if x.layers:
                        mine.update(self._step_kv(KVCache(x.model, {i: x.layers[i] for i in x.layers if i in p.partition.kv_layers},
                                                          x.layout, x.dtype, x.length), p, chip, c))
            missing = set(p.partition.kv_layers) - set(mine)
            if missing:
                raise RunError(f"op {c.name}: no KV cache for its layers {sorted(missing)}")
            past[c.name] = mine
        if next_kv is None or next_kv.history is None:
            raise RunError(f"decode of {g.llm}: no part receives the prefill's first token")
        count = int(first.attr("tokens", 1))
        generated = [int(next_kv.next_token)]  # type: ignore[arg-type]
        rows = list(next_kv.logits)
        head_dev, embed_dev = str(last.attr("device")), str(first.attr("device"))
        feedback = f"{head_dev}->{embed_dev}"
        sends = {m.operands[0]: m for m in g.ops if m.kind == "exec.send"}
        recv_of = {m.operands[0]: m for m in g.ops if m.kind == "exec.recv"}
        for step in range(count - 1):
            token = np.array([[generated[-1]]], dtype=np.int64)
            if step > 0 and head_dev != embed_dev:
                token = self._copy_on(feedback, f"{g.name}.feedback", token, depth, step)
            values: dict[str, Any] = {}
            for c, p in zip(g.computes, parts, strict=True):
                boundary: dict[str, np.ndarray] = {}
                for v in c.operands:
                    x = values.get(v)
                    if isinstance(x, Activations):
                        boundary.update(x.tensors)
                ids = token if p.partition.has_embed else None
                fut = self._worker(self.worker_of(c)).submit(
                    lambda c=c, p=p, ids=ids, boundary=boundary, s=step: self._group_step(c, p, ids, past, boundary, depth, s))
                acts, logits = fut.result()
                for v in c.results:
                    if v.type.kind == "act":
                        values[v.name] = Activations(acts)
                        send = sends.get(v.name)
                        if send is not None:  # the IR's transfer of this activation, run for real on its channel
                            moved = self._copy_on(str(send.attr("channel")), send.name, values[v.name], depth, step, send)
                            recv = recv_of.get(send.results[-1].name)
                            if recv is not None:
                                values[recv.results[0].name] = moved
                                conv = next((m for m in g.ops if m.kind == "exec.convert" and m.operands[0] == recv.results[0].name), None)
                                if conv is not None:
                                    values[conv.results[0].name] = moved
                if logits is not None:
                    row = logits[0, -1]
                    rows.append(row)
                    generated.append(int(np.argmax(row)))
        run = self.llm_runs.setdefault(g.llm, {})
        run.update({"model": parts[0].model.name, "tokens": generated, "rows": rows})
        run.setdefault("prompt", next_kv.history[:-1])
        results: dict[str, Any] = {v.name: None for m in g.ops for v in m.results}
        out = [v for v in last.results if v.type.kind == "tokens"]
        if out:
            results[out[0].name] = np.array(generated, dtype=np.int64)
        return results

    def _group_step(self, c: Op, p: ModelPart, ids: np.ndarray | None, past: dict[str, Any], boundary: dict[str, np.ndarray],
                    depth: int, step: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        start = self._now()
        present, acts, logits = p.step(ids, past[c.name], boundary)
        past[c.name] = present
        self._record(c, self.worker_of(c), start, self._now(), depth, step=step)
        return acts, logits

    def _copy_on(self, channel: str, label: str, value: Any, depth: int, step: int, op: Op | None = None) -> Any:
        self.channels.add(channel)

        def copy_it() -> Any:
            start = self._now()
            moved = _copy_payload(value)
            if self.pace > 0 and op is not None:
                delay = start + float(op.attr("seconds", 0.0)) * self.pace - self._now()
                if delay > 0:
                    time.sleep(delay)
            end = self._now()
            if op is not None:
                self._record(op, channel, start, end, depth, _nbytes(moved), step=step)
            else:
                with self.lock:
                    self.events.append((f"{label}#{step}", "exec.send", None, channel, start, end, depth))
            return moved

        return self._worker(channel).submit(copy_it).result()

    # ---- regions -----------------------------------------------------------------------------------
    def _run_region_op(self, op: Op, env: dict[str, Any], depth: int) -> dict[str, Any]:
        start = self._now()
        if op.kind == "agent.loop":
            body = op.regions[0]
            n = self.loops.get(op.name)
            if n is None:
                n = int(math.floor(float(op.attr("expected")) + 0.5))
            n = max(1, min(int(op.attr("max")), n))
            carried = [env[v] for v in op.operands]
            for _ in range(n):
                inner = dict(env)
                inner.update({a.name: x for a, x in zip(body.args, carried, strict=True)})
                self._run_graph(Graph(body.ops[:-1], body.args), inner, depth + 1)
                carried = [inner[v] for v in body.ops[-1].operands]
            results = dict(zip([r.name for r in op.results], carried, strict=True))
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
        from gimletc.sim import replay

        tl = replay(self.graph)
        llms = self._checks() if self.check else {}
        devices: dict[str, dict[str, Any]] = {}
        for r in sorted({rec.resource for rec in self.records.values()}):
            if r in self.channels:
                continue
            chip = self.chip_of(r)
            ops = [rec for rec in self.records.values() if rec.resource == r]
            runners = sorted({rec.runner for rec in ops if rec.runner})
            gpu_here = any("GPU" in x for x in runners)
            devices[r] = {
                "chip": chip.name,
                "kind": chip.kind,
                "ran_on": "this machine's GPU" if gpu_here else "CPU worker" + (" (stand-in)" if chip.kind != "cpu" else ""),
                "runners": runners,
                "ops": len(ops),
                "measured_ms": sum(rec.measured_ms for rec in ops),
                "predicted_ms": tl.busy.get(r, 0.0) * 1e3 if r in tl.busy else sum(rec.predicted_ms for rec in ops),
            }
        links = {}
        for ch in sorted(self.channels):
            ops = [rec for rec in self.records.values() if rec.resource == ch]
            links[ch] = {"transfers": len(ops), "bytes": sum(o.bytes for o in ops),
                         "measured_ms": sum(o.measured_ms for o in ops), "predicted_ms": sum(o.predicted_ms for o in ops)}
        for ch, d in links.items():
            devices[ch] = {"kind": "link", **d}
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
        out: dict[str, LLMCheck] = {}
        for llm, run in sorted(self.llm_runs.items()):
            if "tokens" not in run:
                continue
            model = str(run["model"])
            data = self.reference_data.get(model)
            if data is None:
                continue
            im = self.references[model]
            ref = OrtExecutor.load(f"reference {model}", data, "CPUExecutionProvider", threads=1)
            part = ModelPart(f"{llm}.reference", im, parse_partition("all", im.layers), ref, "onnxruntime reference")
            prompt = np.asarray(run["prompt"], dtype=np.int64)
            past, row = prefill(part, prompt)
            first = int(np.argmax(row))
            n = len(run["tokens"])
            toks, rows, _ = greedy_decode(part, past, first, n - 1)
            ref_tokens, ref_rows = [first, *toks], [row, *rows]
            got_rows = run["rows"]
            upto = n
            for i, (a, b) in enumerate(zip(run["tokens"], ref_tokens, strict=False)):
                if a != b:
                    upto = i + 1
                    break
            diff = max((float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                        for a, b in zip(got_rows[:upto], ref_rows[:upto], strict=False)), default=0.0)
            out[llm] = LLMCheck(llm, model, len(prompt), [int(t) for t in run["tokens"]], ref_tokens,
                                [int(t) for t in run["tokens"]] == ref_tokens, diff, run.get("speculative"))
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
