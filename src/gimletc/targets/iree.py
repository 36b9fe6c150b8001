"""IREE: import an ONNX subgraph to MLIR and compile it for a backend.

`iree-import-onnx` turns the ONNX model into MLIR (torch-mlir's ONNX dialect);
`iree-compile` lowers it for one backend:

| backend | flags | runs here |
|---|---|---|
| `llvm-cpu` | `--iree-hal-target-device=local --iree-hal-local-target-device-backends=llvm-cpu --iree-llvmcpu-target-cpu=host` | yes (`local-sync` driver) |
| `cuda` | `--iree-hal-target-device=cuda --iree-cuda-target=sm_80` | no GPU here; sm_80 code runs on Ampere and Hopper (IREE 3.13 fails to compile for sm_90) |
| `rocm` | `--iree-hal-target-device=hip --iree-rocm-target=gfx942` (MI300X; gfx950 for MI355X) | no |
| `vulkan-spirv` | `--iree-hal-target-device=vulkan` | no |

Compiled binaries are cached by the sha256 of the ONNX bytes, the flags and the
IREE version, so compiling the same subgraph twice costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gimletc.errors import GimletError
from gimletc.hardware.schema import Chip

__all__ = [
    "BACKENDS",
    "DRIVERS",
    "IreeError",
    "backend_for",
    "compile_onnx",
    "flags_for",
    "iree_available",
]

BACKENDS = ("llvm-cpu", "cuda", "rocm", "vulkan-spirv")
"""IREE backends gimletc compiles for."""

DRIVERS = {"llvm-cpu": "local-sync", "cuda": "cuda", "rocm": "hip", "vulkan-spirv": "vulkan"}
"""The iree.runtime driver that runs each backend's binaries."""

_ROCM_TARGETS = {"cdna3": "gfx942", "cdna4": "gfx950"}
CUDA_TARGET = "sm_80"


class IreeError(GimletError):
    """IREE is missing, or importing or compiling a subgraph failed: names the subgraph and the tool's message."""


def iree_available() -> bool:
    try:
        import iree.compiler  # noqa: F401
    except ImportError:
        return False
    return True


def backend_for(chip: Chip) -> str | None:
    """The IREE backend that runs on `chip`, or None where IREE has none (SRAM accelerators, Gaudi)."""
    if chip.kind == "cpu":
        return "llvm-cpu"
    if chip.kind == "gpu" and chip.vendor == "nvidia":
        return "cuda"
    if chip.kind == "gpu" and chip.vendor == "amd":
        return "rocm"
    return None


def flags_for(backend: str, chip: Chip | None = None, cpu: str = "host") -> list[str]:
    """iree-compile flags for `backend` (and the chip generation where the target depends on it)."""
    if backend == "llvm-cpu":
        return ["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu",
                f"--iree-llvmcpu-target-cpu={cpu}"]
    if backend == "cuda":
        return ["--iree-hal-target-device=cuda", f"--iree-cuda-target={CUDA_TARGET}"]
    if backend == "rocm":
        arch = _ROCM_TARGETS.get(chip.generation, "gfx942") if chip is not None else "gfx942"
        return ["--iree-hal-target-device=hip", f"--iree-rocm-target={arch}"]
    if backend == "vulkan-spirv":
        return ["--iree-hal-target-device=vulkan"]
    raise IreeError(f"unknown IREE backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("iree-base-compiler")
    except Exception:  # noqa: BLE001
        return "unknown"


def _tool(name: str) -> str:
    try:
        from iree.compiler.tools.binaries import find_tool
    except ImportError:
        raise IreeError("IREE's compiler is not installed (pip install 'gimletc[iree]')") from None
    return find_tool(name)


def default_cache() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "gimletc" / "iree"


@dataclass(frozen=True)
class Compiled:
    path: Path
    backend: str
    flags: tuple[str, ...]
    entry: str
    cached: bool


def compile_onnx(onnx_bytes: bytes, backend: str, out: Path, *, name: str, entry: str, chip: Chip | None = None,
                 cache_dir: Path | None = None, cpu: str = "host") -> Compiled:
    """Compile an ONNX model (bytes) for `backend` into `out` (a .vmfb), through the cache.

    `name` names the subgraph in error messages; `entry` is its function (the ONNX graph's name)."""
    flags = flags_for(backend, chip, cpu)
    key = hashlib.sha256(onnx_bytes + "\0".join([*flags, _version()]).encode()).hexdigest()
    cache = Path(cache_dir) if cache_dir is not None else default_cache()
    cached_file = cache / f"{key}.vmfb"
    out.parent.mkdir(parents=True, exist_ok=True)
    if cached_file.is_file():
        shutil.copyfile(cached_file, out)
        return Compiled(out, backend, tuple(flags), entry, True)
    with tempfile.TemporaryDirectory(prefix="gimletc-iree-") as tmp:
        src, mlir, vmfb = Path(tmp) / "in.onnx", Path(tmp) / "in.mlir", Path(tmp) / "out.vmfb"
        src.write_bytes(onnx_bytes)
        _run([sys.executable, "-m", "iree.compiler.tools.import_onnx", str(src), "-o", str(mlir)], f"iree-import-onnx of {name}")
        _run([_tool("iree-compile"), str(mlir), *flags, "-o", str(vmfb)], f"iree-compile of {name} for {backend}")
        cache.mkdir(parents=True, exist_ok=True)
        tmp_cache = cache / f".{key}.{os.getpid()}.tmp"
        shutil.copyfile(vmfb, tmp_cache)
        os.replace(tmp_cache, cached_file)
        shutil.copyfile(vmfb, out)
    return Compiled(out, backend, tuple(flags), entry, False)


def _run(cmd: list[str], what: str) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise IreeError(f"{what}: cannot start {cmd[0]}: {e.strerror or e}") from None
    if r.returncode != 0:
        lines = [x for x in (r.stderr or r.stdout).splitlines() if x.strip()]
        first = next((x for x in lines if "error" in x.lower()), lines[0] if lines else "no message")
        raise IreeError(f"{what} failed (exit {r.returncode}): {first.strip()}")
