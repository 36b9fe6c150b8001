"""What runs one partition on a worker: an onnxruntime session or an IREE module.

Both take and return tensors by the partition's ONNX input and output names.
onnxruntime sessions run with one intra-op thread, so each worker uses one core
and workers run side by side; IREE modules run on the `local-sync` driver (on
the calling worker thread) for llvm-cpu binaries, or on the GPU driver of
their backend where this machine has such a GPU; before any IREE call on a GPU
driver, the calling thread binds the GPU's primary context (`gpu_context.bind`):
IREE does not, and a worker thread without it fails with CUDA_ERROR_INVALID_CONTEXT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from gimletc.errors import GimletError

__all__ = ["ExecutorError", "IreeExecutor", "OrtExecutor", "gpu_drivers", "ort_providers"]


class ExecutorError(GimletError):
    """A partition could not be loaded or run: names the partition and the backend's message."""


@cache
def ort_providers() -> tuple[str, ...]:
    import onnxruntime as ort

    return tuple(ort.get_available_providers())


@cache
def gpu_drivers() -> tuple[str, ...]:
    """IREE GPU drivers (cuda, hip) with at least one device on this machine."""
    try:
        import iree.runtime as rt
    except ImportError:
        return ()
    found = []
    for name in ("cuda", "hip"):
        try:
            if rt.get_driver(name).query_available_devices():
                found.append(name)
        except Exception:  # noqa: BLE001 - a missing driver library raises RuntimeError
            continue
    return tuple(found)


def _seeded_weights(name: str, data: bytes) -> dict[str, np.ndarray]:
    """The model's seeded initializers, generated (none for an ordinary model)."""
    import onnx

    from gimletc.importers.seeded import materialize, seeded_tensors

    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001
        raise ExecutorError(f"{name}: not an ONNX model: {' '.join(str(e).split())[:300]}") from None
    return {t.name: materialize(t) for t in seeded_tensors(proto)}


@dataclass
class OrtExecutor:
    """An onnxruntime session over one partition's ONNX bytes."""

    name: str
    session: object
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    provider: str

    @classmethod
    def load(cls, name: str, data: bytes, provider: str = "CPUExecutionProvider", threads: int = 1) -> OrtExecutor:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
        weights = _seeded_weights(name, data)
        if weights:  # generated here from their seeds (gimletc.importers.seeded); onnxruntime copies them in
            opts.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()])
        try:
            s = ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExecutorError(f"{name}: onnxruntime cannot load it: {' '.join(str(e).split())[:300]}") from None
        return cls(name, s, tuple(i.name for i in s.get_inputs()), tuple(o.name for o in s.get_outputs()), provider)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self.session.run(None, {k: feeds[k] for k in self.inputs})  # type: ignore[attr-defined]
        except KeyError as e:
            raise ExecutorError(f"{self.name}: no value for its input {e.args[0]}") from None
        except Exception as e:  # noqa: BLE001
            raise ExecutorError(f"{self.name}: onnxruntime failed: {' '.join(str(e).split())[:300]}") from None
        return dict(zip(self.outputs, out, strict=True))


@dataclass
class IreeExecutor:
    """An IREE module (a .vmfb) whose entry function takes the partition's inputs in order."""

    name: str
    function: object
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    driver: str
    _context: object

    @classmethod
    def load(cls, name: str, vmfb: Path | bytes, entry: str, inputs: Sequence[str], outputs: Sequence[str],
             driver: str) -> IreeExecutor:
        try:
            import iree.runtime as rt
        except ImportError:
            raise ExecutorError(f"{name}: IREE's runtime is not installed (pip install 'gimletc[iree]')") from None
        _bind(name, driver)
        try:
            config = rt.Config(driver)
            ctx = rt.SystemContext(config=config)
            data = vmfb if isinstance(vmfb, bytes) else vmfb.read_bytes()
            ctx.add_vm_module(rt.VmModule.copy_buffer(config.vm_instance, data))
            fn = ctx.modules.module[entry]
        except Exception as e:  # noqa: BLE001
            what = vmfb.name if isinstance(vmfb, Path) else "its binary"
            raise ExecutorError(f"{name}: IREE cannot load {what} on driver {driver}: {' '.join(str(e).split())[:300]}") from None
        return cls(name, fn, tuple(inputs), tuple(outputs), driver, ctx)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            args = [np.require(feeds[k], requirements='C') for k in self.inputs]  # keeps 0-d arrays 0-d
        except KeyError as e:
            raise ExecutorError(f"{self.name}: no value for its input {e.args[0]}") from None
        _bind(self.name, self.driver)
        try:
            res = self.function(*args)  # type: ignore[operator]
        except Exception as e:  # noqa: BLE001
            raise ExecutorError(f"{self.name}: IREE failed: {' '.join(str(e).split())[:300]}") from None
        if not isinstance(res, list | tuple):
            res = [res]
        # Copy out: host views of device buffers do not outlive the buffers.
        return {n: np.array(r.to_host() if hasattr(r, "to_host") else r, copy=True) for n, r in zip(self.outputs, res, strict=True)}


def _bind(name: str, driver: str) -> None:
    """Make the GPU's primary context current on this thread before IREE uses it (no-op for CPU drivers)."""
    from gimletc.runtime import gpu_context

    try:
        gpu_context.bind(driver)
    except gpu_context.GpuContextError as e:
        raise ExecutorError(f"{name}: {e}") from None
