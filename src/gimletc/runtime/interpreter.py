"""The interpreter: executes a plan's exec ops in dataflow order, each on its resource's worker.

- `exec.compute` of a model phase and `exec.convert` go to the device's program (`DeviceHandle`),
  called on the device's worker thread, with the op's input values and the LLM call's context;
- `exec.compute` of a tool, retrieval or code op calls the Python callable registered under the
  op's name on its CPU lane's worker; an input op produces the request's token ids; an output op
  collects the response;
- `exec.send` copies the value into new memory on its channel's worker (a streamed KV chunk
  copies that chunk's layers), so copies overlap compute on both ends; `exec.recv` hands the
  copy to the destination;
- `exec.await` joins tokens; `agent.loop` and `agent.branch` run their regions (an LLM's decode
  loop until the call has all its tokens; other loops `round(expected)` iterations and the most
  probable arm unless the caller decides).

It records when each op ran on which resource (`OpRecord`s and trace events) and never decides
how a model computes: that is the device program's.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from gimletc.errors import GimletError
from gimletc.hardware.resources import is_lane
from gimletc.ir import Graph, Op
from gimletc.ir.names import call_of_decode
from gimletc.runtime.calls import CallBook
from gimletc.runtime.device import Outcome
from gimletc.runtime.kv import KVCache
from gimletc.runtime.loader import CALLABLE_KINDS, LoadedPlan
from gimletc.runtime.report import OpRecord
from gimletc.runtime.values import Remote, RunError, copy_payload, nbytes
from gimletc.runtime.workers import DeviceHandle, ThreadWorker

__all__ = ["Interpreter", "worker_of"]

Event = tuple[str, str, str | None, str, float, float, int]


def worker_of(op: Op) -> str:
    """The resource an op runs on: its CPU lane (`device#lane`) where it has one, else its device."""
    devs = op.attr("devices") or ()
    if len(devs) == 1 and is_lane(str(devs[0])):
        return str(devs[0])
    return str(op.attr("device"))


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


class Interpreter:
    """One request of a loaded plan, run on its device programs and tools."""

    def __init__(self, loaded: LoadedPlan, devices: Mapping[str, DeviceHandle], tools: Mapping[str, Callable[..., Any]],
                 request: Mapping[str, np.ndarray], loops: Mapping[str, int], pace: float,
                 fetch: Callable[[Any], Any] | None = None) -> None:
        self.loaded, self.devices, self.tools = loaded, devices, tools
        # Values device programs keep where they are (`Remote`, with Ray) come here only for tools and outputs.
        self.fetch = fetch or (lambda v: v)
        self.moved = [0, 0]  # transfers handed from device to device without passing through here, their bytes
        self.request, self.loops, self.pace = request, loops, pace
        self.producer = loaded.producer
        self.runner_of = {op: r for h in devices.values() for op, r in h.runners.items()}
        self.lock = threading.Lock()
        self.book = CallBook(loaded)
        self.events: list[Event] = []
        self.records: dict[str, OpRecord] = {}
        self.channels: set[str] = set()
        self.mail: dict[str, Any] = {}
        self.chunk_kv: dict[str, KVCache] = {}
        self.streamed: dict[str, set[int]] = {}
        self.outputs: dict[str, Any] = {}
        self.notes: list[str] = []
        self.workers: dict[str, ThreadWorker] = {}

    def run(self) -> float:
        """Execute the request; returns its wall time in ms."""
        self.t0 = time.perf_counter()
        self.coord = ThreadPoolExecutor(max_workers=64, thread_name_prefix="gimletc-coord")
        try:
            self.run_graph(self.loaded.graph, {}, 0)
        finally:
            for w in self.workers.values():
                w.close()
            self.coord.shutdown(wait=True)
        return (time.perf_counter() - self.t0) * 1e3

    def _worker(self, name: str) -> ThreadWorker:
        with self.lock:
            w = self.workers.get(name)
            if w is None:
                w = self.workers[name] = ThreadWorker(name)
            return w

    def _now(self) -> float:
        return time.perf_counter() - self.t0

    def _note(self, text: str) -> None:
        with self.lock:
            if text not in self.notes:
                self.notes.append(text)

    def _record(self, op: Op, resource: str, start: float, end: float, depth: int, size: int = 0) -> None:
        with self.lock:
            self.events.append((op.name, op.kind, op.attr("of"), resource, start, end, depth))
            rec = self.records.get(op.name)
            busy = (end - start) * 1e3
            if rec is None:
                pred = float(op.attr("seconds", 0.0)) * 1e3
                self.records[op.name] = OpRecord(op.name, op.kind, op.attr("of"), resource, start * 1e3, end * 1e3, busy, pred,
                                                 size, self.runner_of.get(op.name, ""))
            else:  # ops in loop bodies: every run adds to the op's busy time and prediction
                rec.end_ms = max(rec.end_ms, end * 1e3)
                rec.measured_ms += busy
                rec.predicted_ms += float(op.attr("seconds", 0.0)) * 1e3
                rec.bytes += size
                rec.runs += 1

    # ---- scheduling ------------------------------------------------------------------------------
    def run_graph(self, graph: Graph, env: dict[str, Any], depth: int) -> None:
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
            return self._worker(str(op.attr("device"))).submit(self._guard(op.name, lambda: self._on_device(op, env, depth)))
        if op.kind == "exec.compute":
            return self._worker(worker_of(op)).submit(self._guard(op.name, lambda: self._compute(op, env, depth)))
        raise RunError(f"op {op.name}: the runtime cannot execute {op.kind}")

    @staticmethod
    def _guard(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            try:
                return fn()
            except GimletError:
                raise
            except Exception as e:  # noqa: BLE001 - report the op that failed, in one line
                raise RunError(f"op {name} failed: {type(e).__name__}: {e}") from e

        return run

    # ---- values ----------------------------------------------------------------------------------
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

    # ---- transfers -------------------------------------------------------------------------------
    def _send(self, op: Op, env: dict[str, Any], depth: int) -> dict[str, Any]:
        start = self._now()
        src = op.operands[0]
        prod = self.producer.get(src)
        if prod is not None and prod.attr("chunk") is not None and not self._is_data(src):
            # A streamed chunk (overlap pass): a KV cache moves the layers its prefill chunk produced;
            # other values (a stage's activations) exist only once the last chunk ends, so nothing moves early.
            final = op.name.rsplit(".chunk", 1)[0]
            whole_send = self.loaded.ops.get(final)
            streams_kv = whole_send is not None and whole_send.operands and not self._is_data(src) and \
                self._value_kind(whole_send.operands[0]) == "kv"
            part = self.chunk_kv.get(prod.name) if streams_kv else None
            payload = self._move(op, part) if part is not None else None
            if part is not None:
                with self.lock:
                    self.streamed.setdefault(final, set()).update(part.layers)
        else:
            value = env[src]
            keep = None
            if isinstance(value, KVCache | Remote) and value.layers and op.name in self.streamed:
                keep = set(value.layers) - self.streamed[op.name]
            payload = self._move(op, value, keep)
        size = nbytes(payload)
        if self.pace > 0:
            delay = start + float(op.attr("seconds", 0.0)) * self.pace - self._now()
            if delay > 0:
                time.sleep(delay)
        self._record(op, str(op.attr("channel")), start, self._now(), depth, size)
        with self.lock:
            self.mail[op.results[-1].name] = payload
        return {op.results[-1].name: None}

    def _move(self, op: Op, value: Any, keep: set[int] | None = None) -> Any:
        """What a send delivers: a copy of `value` (of its `keep` layers) in fresh memory of the destination.

        A `Remote` value moves from the actor that holds it to the destination's actor (which pulls it
        from Ray's object store and keeps the copy), or here, where the destination has no program."""
        if isinstance(value, Remote):
            receive = getattr(self.devices.get(str(op.attr("dst"))), "receive", None)
            if receive is not None:
                moved = receive(value, keep, op.name)
                with self.lock:
                    self.moved[0] += 1
                    self.moved[1] += moved.nbytes
                return moved
            value = self.fetch(value)
        if isinstance(value, KVCache) and keep is not None:
            return value.copy(keep)
        return copy_payload(value)

    def _recv(self, op: Op) -> dict[str, Any]:
        with self.lock:
            parts = [self.mail.pop(t) for t in op.operands if t in self.mail]
        parts = [p for p in parts if p is not None]
        if not parts:
            raise RunError(f"op {op.name}: nothing was sent to it")
        value = parts[0]
        if len(parts) > 1 and all(isinstance(p, KVCache) for p in parts):
            value = KVCache.merge(parts)
        elif len(parts) > 1 and all(isinstance(p, Remote) and p.kind == "kv" for p in parts):
            # Streamed parts stay where they are; the device that reads them merges them.
            value = Remote(kind="kv", nbytes=sum(p.nbytes for p in parts), device=str(op.attr("dst")),
                           layers=tuple(sorted({i for p in parts for i in p.layers})), parts=tuple(parts))
        return {op.results[0].name: value, op.results[1].name: None}

    # ---- computes --------------------------------------------------------------------------------
    def _on_device(self, op: Op, env: dict[str, Any], depth: int) -> dict[str, Any]:
        """A model compute or a KV conversion on its device's program."""
        start = self._now()
        device = str(op.attr("device"))
        handle = self.devices.get(device)
        if handle is None:
            raise RunError(f"op {op.name}: device {device} has no program in this run")
        data = self._data(op, env)
        ctx = self.book.context(op, data) if op.kind == "exec.compute" else {}
        out: Outcome = handle.execute(op, data, ctx)
        for n in out.notes:
            self._note(n)
        if out.chunk_kv is not None:
            with self.lock:
                self.chunk_kv[op.name] = out.chunk_kv
        results = self.book.record(op, out)
        size = out.values[op.results[0].name].nbytes if op.kind == "exec.convert" else 0
        self._record(op, device if op.kind == "exec.convert" else worker_of(op), start, self._now(), depth, size)
        return results

    def _compute(self, op: Op, env: dict[str, Any], depth: int) -> dict[str, Any]:
        kind = str(op.attr("kind_of"))
        if kind.startswith("model."):
            results = self._on_device(op, env, depth)
            results.update({v.name: None for v in op.results if v.type.kind == "token"})
            return results
        start = self._now()
        if kind in CALLABLE_KINDS:
            fn = self.tools[str(op.attr("of"))]
            out = fn(*[self.fetch(env[v]) for v in op.operands if v in env and self._is_data(v)])
            data = [v for v in op.results if v.type.kind != "token"]
            results = {data[0].name: out} if data else {}
        elif kind == "agent.input":
            results = {op.results[0].name: np.array(self.request[op.name], copy=True)}
        elif kind == "agent.output":
            with self.lock:
                self.outputs[str(op.attr("of"))] = [self.fetch(env[v]) for v in op.operands if self._is_data(v)]
            results = {}
        else:
            raise RunError(f"op {op.name}: the runtime cannot execute a compute of {kind}")
        self._record(op, worker_of(op), start, self._now(), depth)
        results.update({v.name: None for v in op.results if v.type.kind == "token"})
        return results

    # ---- regions ---------------------------------------------------------------------------------
    def _run_region_op(self, op: Op, env: dict[str, Any], depth: int) -> dict[str, Any]:
        start = self._now()
        if op.kind == "agent.loop":
            body = op.regions[0]
            llm = call_of_decode(op.name)
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
                    assert llm is not None
                    if self.book.call(llm).generated >= self.book.call(llm).target or it >= limit:
                        break
                elif it >= n:
                    break
                inner = dict(env)
                inner.update({a.name: x for a, x in zip(body.args, carried, strict=True)})
                self.run_graph(Graph(body.ops[:-1], body.args), inner, depth + 1)
                carried = [inner[v] for v in body.ops[-1].operands]
                it += 1
            results = dict(zip([r.name for r in op.results], carried, strict=True))
            if decode_loop and op.results:
                assert llm is not None
                results[op.results[0].name] = self.book.call(llm).output()
        elif op.kind == "agent.branch":
            probs = list(op.attr("probabilities"))
            arm = self.loops.get(op.name, max(range(len(probs)), key=lambda i: probs[i]))
            region = op.regions[arm]
            inner = dict(env)
            self.run_graph(Graph(region.ops[:-1], region.args), inner, depth + 1)
            results = {r.name: inner[v] for r, v in zip(op.results, region.ops[-1].operands, strict=True)}
        else:
            raise RunError(f"op {op.name}: the runtime cannot execute {op.kind} with regions")
        with self.lock:
            self.events.append((op.name, op.kind, op.attr("of"), "regions", start, self._now(), depth))
        return results
