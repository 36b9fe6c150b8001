"""Bind a GPU's primary context to the calling thread before IREE touches the GPU.

IREE's CUDA (HIP) driver works in the device's primary context but does not make it current on
the threads that later call into it: loading and calling a module on the main thread works, while
calling it from a worker thread fails with `CUDA_ERROR_INVALID_CONTEXT` (201) on the first buffer
copy. Every runtime worker thread that runs a GPU partition therefore calls `bind(driver)` first:

    CUDA: cuInit(0); cuDeviceGet(&dev, ordinal); cuDevicePrimaryCtxRetain(&ctx, dev); cuCtxSetCurrent(ctx)
    HIP:  hipInit(0); hipDeviceGet(&dev, ordinal); hipDevicePrimaryCtxRetain(&ctx, dev); hipCtxSetCurrent(ctx)

through the driver library (libcuda.so.1, libamdhip64.so) with ctypes. The primary context is
retained once per process and device, made current once per thread. Drivers other than cuda and
hip (local-sync, local-task, vulkan) need nothing.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

from gimletc.errors import GimletError

__all__ = ["GpuContextError", "bind", "needs_binding"]


class GpuContextError(GimletError):
    """The GPU driver library is missing, or one of its calls failed: names the call and the driver's error."""


@dataclass(frozen=True)
class _Api:
    libraries: tuple[str, ...]
    init: str
    device_get: str
    retain: str
    set_current: str
    error_name: str


_APIS = {
    "cuda": _Api(("libcuda.so.1", "libcuda.so"), "cuInit", "cuDeviceGet", "cuDevicePrimaryCtxRetain", "cuCtxSetCurrent",
                 "cuGetErrorName"),
    "hip": _Api(("libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"), "hipInit", "hipDeviceGet",
                "hipDevicePrimaryCtxRetain", "hipCtxSetCurrent", "hipGetErrorName"),
}
_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}
_contexts: dict[tuple[str, int], ctypes.c_void_p] = {}
_bound = threading.local()


def needs_binding(driver: str) -> bool:
    """Whether IREE's `driver` runs on a GPU whose context must be current on the calling thread."""
    return driver in _APIS


def _library(driver: str) -> ctypes.CDLL:
    lib = _libs.get(driver)
    if lib is not None:
        return lib
    api = _APIS[driver]
    for name in api.libraries:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        raise GpuContextError(f"{driver}: cannot load {' or '.join(api.libraries)}; is the GPU driver installed?")
    _libs[driver] = lib
    return lib


def _check(driver: str, lib: ctypes.CDLL, call: str, status: int) -> None:
    if status == 0:
        return
    name = f"error {status}"
    try:
        fn = getattr(lib, _APIS[driver].error_name)
        if driver == "cuda":
            text = ctypes.c_char_p()
            if fn(ctypes.c_int(status), ctypes.byref(text)) == 0 and text.value:
                name = f"{text.value.decode()} ({status})"
        else:
            fn.restype = ctypes.c_char_p
            raw = fn(ctypes.c_int(status))
            if raw:
                name = f"{raw.decode()} ({status})"
    except (AttributeError, OSError):
        pass
    raise GpuContextError(f"{driver}: {call} failed: {name}")


def _retain(driver: str, ordinal: int) -> ctypes.c_void_p:
    key = (driver, ordinal)
    ctx = _contexts.get(key)
    if ctx is not None:
        return ctx
    lib = _library(driver)
    api = _APIS[driver]
    _check(driver, lib, f"{api.init}(0)", getattr(lib, api.init)(ctypes.c_uint(0)))
    dev = ctypes.c_int()
    _check(driver, lib, f"{api.device_get}({ordinal})", getattr(lib, api.device_get)(ctypes.byref(dev), ctypes.c_int(ordinal)))
    ctx = ctypes.c_void_p()
    _check(driver, lib, api.retain, getattr(lib, api.retain)(ctypes.byref(ctx), dev))
    _contexts[key] = ctx
    return ctx


def bind(driver: str, ordinal: int = 0) -> bool:
    """Make GPU `ordinal`'s primary context current on this thread (once per thread); False for non-GPU drivers."""
    if not needs_binding(driver):
        return False
    done = getattr(_bound, "keys", None)
    if done is None:
        done = _bound.keys = set()
    if (driver, ordinal) in done:
        return True
    with _lock:
        ctx = _retain(driver, ordinal)
        lib = _library(driver)
    api = _APIS[driver]
    _check(driver, lib, api.set_current, getattr(lib, api.set_current)(ctx))
    done.add((driver, ordinal))
    return True
