"""What runs a partition on each kind of chip: onnxruntime execution provider, IREE backend, vendor toolchain.

| chip | onnxruntime EP | IREE backend | toolchain marker |
|---|---|---|---|
| NVIDIA GPU | CUDAExecutionProvider | cuda | - |
| AMD GPU | MIGraphXExecutionProvider | rocm | - |
| CPU (Intel, AMD) | CPUExecutionProvider | llvm-cpu | - |
| Intel Gaudi | - | - | intel-gaudi (SynapseAI) |
| d-Matrix Corsair | - | - | d-matrix (Aviator) |
| Groq LPU | - | - | groq (GroqWare) |
| Cerebras WSE | - | - | cerebras (CSoft) |

SRAM accelerators compile ONNX with their vendor's own toolchain, which is not
available here: their partitions ship as ONNX subgraphs whose metadata names
the toolchain (`gimletc.toolchain`), and run locally on a CPU stand-in.
"""

from __future__ import annotations

from gimletc.hardware.schema import Chip
from gimletc.targets.iree import backend_for

__all__ = ["execution_provider", "iree_backend", "toolchain"]

_EP = {("nvidia", "gpu"): "CUDAExecutionProvider", ("amd", "gpu"): "MIGraphXExecutionProvider"}
_TOOLCHAINS = {
    "d-matrix": "d-matrix (Aviator SDK)",
    "groq": "groq (GroqWare SDK)",
    "cerebras": "cerebras (CSoft SDK)",
    "intel": "intel-gaudi (SynapseAI)",
}


def execution_provider(chip: Chip) -> str | None:
    """The onnxruntime execution provider for `chip`, or None where partitions go to a vendor toolchain."""
    if chip.kind == "cpu":
        return "CPUExecutionProvider"
    return _EP.get((chip.vendor, chip.kind))


def iree_backend(chip: Chip) -> str | None:
    return backend_for(chip)


def toolchain(chip: Chip) -> str | None:
    """The vendor toolchain that compiles ONNX for `chip` when neither onnxruntime nor IREE targets it."""
    if execution_provider(chip) is not None or backend_for(chip) is not None:
        return None
    return _TOOLCHAINS.get(chip.vendor, f"{chip.vendor} (vendor toolchain)")
