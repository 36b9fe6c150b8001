"""What flows between exec ops at run time, and the runtime's errors.

Values in a run are numpy arrays (token ids), `KVCache`s (gimletc.runtime.kv),
`Activations` (tensors one partition hands the next) and whatever a tool
returns. A transfer delivers a real copy into fresh memory (`copy_payload`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from gimletc.errors import GimletError
from gimletc.runtime.kv import KVCache

__all__ = ["Activations", "Remote", "RunError", "WorkerLost", "copy_payload", "jsonable", "nbytes"]


class RunError(GimletError):
    """The plan cannot run here, or an op failed while running: names the op, its device and why."""


class WorkerLost(RunError):
    """The worker running a device's program died (its process exited, its Ray actor was killed).

    Everything that device held (its KV caches) died with it; `device`, `op` and `why` say which,
    while doing what, and how it ended."""

    def __init__(self, device: str, op: str, why: str) -> None:
        super().__init__(f"device {device} was lost while running op {op}: {why}")
        self.device, self.op, self.why = device, op, why

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries (a Ray actor reports a lost value)
        return (WorkerLost, (self.device, self.op, self.why))


@dataclass
class Activations:
    """Tensors one partition of a step hands to later partitions (by ONNX tensor name)."""

    tensors: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


@dataclass(frozen=True)
class Remote:
    """A value that stays in Ray's object store, on the node of the device actor that holds it; the
    interpreter holds only this reference. `parts`: KV cache parts (streamed chunks) that the device
    reading them merges."""

    ref: Any = None  # a Ray ObjectRef
    kind: str = ""  # kv | act | value
    nbytes: int = 0
    device: str = ""
    layers: tuple[int, ...] = ()
    parts: tuple[Remote, ...] = ()


def copy_payload(v: Any) -> Any:
    """A real copy of a value into fresh memory: what a transfer delivers."""
    if isinstance(v, np.ndarray):
        return np.array(v, copy=True)
    if isinstance(v, KVCache):
        return v.copy()
    if isinstance(v, Activations):
        return Activations({k: np.array(t, copy=True) for k, t in v.tensors.items()})
    return copy.deepcopy(v)


def nbytes(v: Any) -> int:
    if isinstance(v, np.ndarray | KVCache | Activations | Remote):
        return int(v.nbytes)
    return 0


def jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, KVCache):
        return {"kv_cache": v.model, "layers": sorted(v.layers), "tokens": v.length}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, int | float | str | bool) or v is None:
        return v
    return repr(v)
