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

from gimletc.importers.onnx_import import ImportedModel
from gimletc.ir import Op
from gimletc.runtime.device import DeviceProgram, Outcome
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

