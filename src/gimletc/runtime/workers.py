"""Where ops run: one worker per resource (a device, a CPU lane, a link channel), and the handle
through which the interpreter reaches a device's program.

A resource's worker is a thread that runs that resource's tasks one at a time, in the order they
became ready; the interpreter never runs two ops of one device at once. A device's program
(`DeviceProgram`) sits behind a `DeviceHandle`: in this thread's process (`InProcessDevice`, the
default: onnxruntime and IREE release the GIL, so devices run side by side and a transfer is a
copy into fresh memory, not a serialisation).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from gimletc.models.onnx import ImportedModel
from gimletc.ir import Op
from gimletc.runtime.device import DeviceProgram, Outcome, op_from_wire, op_to_wire
from gimletc.runtime.loader import DeviceSpec

__all__ = ["DeviceHandle", "InProcessDevice", "ThreadWorker"]


class ThreadWorker:
    """One thread running one resource's tasks in order (a device, a CPU lane or a link channel)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gimletc-{name}")

    def submit(self, fn: Callable[[], Any]) -> Future:
        return self.pool.submit(fn)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class DeviceHandle(Protocol):
    """A device's program, wherever it runs."""

    device: str
    runners: dict[str, str]

    def execute(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome: ...

    def forget(self) -> None: ...

    def close(self) -> None: ...


class InProcessDevice:
    """A device program in this process, called on the device's worker thread."""

    def __init__(self, spec: DeviceSpec, models: dict[str, ImportedModel] | None = None) -> None:
        self.device = spec.device
        self.program = DeviceProgram(spec, models)
        self.runners = dict(self.program.runners)

    def execute(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome:
        return self.program.execute(op, data, ctx)

    def forget(self) -> None:
        self.program.forget()

    def close(self) -> None:
        pass


# ---- a device in its own process -----------------------------------------------------------------


def _serve(conn: Any, spec: DeviceSpec) -> None:
    """A worker process: build the device's program, then answer the interpreter's requests in order."""
    try:
        program = DeviceProgram(spec)
    except BaseException as e:  # noqa: BLE001 - sent back, raised in the interpreter
        conn.send(("error", _portable(e)))
        return
    conn.send(("ok", dict(program.runners)))
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the interpreter went away
            return
        what = msg[0]
        if what == "close":
            return
        try:
            if what == "forget":
                program.forget()
                conn.send(("ok", None))
            else:
                _, wire, data, ctx = msg
                conn.send(("ok", program.execute(op_from_wire(wire), data, ctx)))
        except BaseException as e:  # noqa: BLE001
            conn.send(("error", _portable(e)))


def _portable(e: BaseException) -> BaseException:
    """`e` if it survives pickling as itself, else a RunError with its one-line message."""
    import pickle

    from gimletc.runtime.values import RunError

    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RunError(f"{type(e).__name__}: {e}")


def _death(exitcode: int | None) -> str:
    import signal

    if exitcode is None:
        return "its process stopped answering"
    if exitcode < 0:
        try:
            return f"its process was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"its process was killed by signal {-exitcode}"
    return f"its process exited with status {exitcode}"


class ProcessDevice:
    """A device program in a worker process of its own (spawned, so nothing is inherited but the spec).

    Values cross the process boundary pickled, so this is slower than threads; what it buys is a
    worker that can die alone: a dead process is noticed within `poll_s` of the interpreter's next
    wait on it (`WorkerLost`, naming the device, the op and how the process ended), and an op that
    gets no answer in `timeout_s` is a lost worker too (the process is killed), so a run never hangs."""

    def __init__(self, spec: DeviceSpec, timeout_s: float = 600.0, poll_s: float = 0.05) -> None:
        import multiprocessing as mp
        import threading

        self.device, self.timeout_s, self.poll_s = spec.device, timeout_s, poll_s
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, spec), name=f"gimletc-{spec.device}", daemon=True)
        self.process.start()
        child.close()
        self.lock = threading.Lock()
        self.runners: dict[str, str] = self._answer("loading its partitions", self.timeout_s)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def _answer(self, doing: str, timeout_s: float) -> Any:
        import time

        from gimletc.runtime.values import WorkerLost

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.conn.poll(self.poll_s):
                    status, payload = self.conn.recv()
                    break
            except (EOFError, OSError):
                self.process.join(1.0)
                raise WorkerLost(self.device, doing, _death(self.process.exitcode)) from None
            if not self.process.is_alive():
                raise WorkerLost(self.device, doing, _death(self.process.exitcode))
            if time.monotonic() > deadline:
                self.process.kill()
                raise WorkerLost(self.device, doing, f"no answer in {timeout_s:g} s (its process was killed)")
        if status == "error":
            raise payload
        return payload

    def _ask(self, msg: tuple[Any, ...], doing: str) -> Any:
        from gimletc.runtime.values import WorkerLost

        with self.lock:
            try:
                self.conn.send(msg)
            except (BrokenPipeError, EOFError, OSError):
                self.process.join(1.0)
                raise WorkerLost(self.device, doing, _death(self.process.exitcode)) from None
            return self._answer(doing, self.timeout_s)

    def execute(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome:
        return self._ask(("execute", op_to_wire(op), data, ctx), op.name)

    def forget(self) -> None:
        self._ask(("forget",), "forgetting its KV caches")

    def close(self) -> None:
        try:
            with self.lock:
                self.conn.send(("close",))
        except (BrokenPipeError, EOFError, OSError):
            pass
        self.process.join(2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2.0)
        self.conn.close()
