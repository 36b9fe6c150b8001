"""Numeric formats and their storage size.

Block-scaled formats carry their scale overhead: MXFP4 stores 32 four-bit
elements with one 8-bit shared exponent, so 4.25 bits per element (OCP
Microscaling spec v1.0); MXINT8 is 8 bits plus one 8-bit scale per 32;
NVFP4 stores 16 four-bit elements with one fp8 scale (4.5 bits); block fp8
(DeepSeek-style) keeps one fp32 scale per 128 x 128 weight block.

A model names three formats, each its own choice: the weights' storage
(`weight_dtype`, and `expert_dtype` for MoE experts), the KV cache's
(`kv_dtype`), and the arithmetic (`compute_dtype`; by default the weights'
format where the chip computes in it, else bf16 for weight-only formats).
"""

from __future__ import annotations

from typing import Literal

from gimletc.errors import GimletError

DType = Literal[
    "fp32", "tf32", "bf16", "fp16", "fp8", "fp8_block", "int8", "mxint8", "fp6", "fp4", "nvfp4", "mxfp4", "int4", "mxint4"
]

BITS: dict[str, float] = {
    "fp32": 32,
    "tf32": 32,
    "bf16": 16,
    "fp16": 16,
    "fp8": 8,
    "fp8_block": 8 + 32 / (128 * 128),
    "int8": 8,
    "mxint8": 8 + 8 / 32,
    "fp6": 6,
    "fp4": 4,
    "nvfp4": 4 + 8 / 16,
    "mxfp4": 4 + 8 / 32,
    "int4": 4,
    "mxint4": 4 + 8 / 32,
}

# The arithmetic a format is computed in on a chip whose peak table lacks it:
# block-scaled weights are dequantised into the activation format.
COMPUTE_FALLBACK: dict[str, tuple[str, ...]] = {
    "mxfp4": ("fp4", "bf16"),
    "nvfp4": ("fp4", "bf16"),
    "fp8_block": ("fp8", "bf16"),
    "fp4": ("fp8", "bf16"),
    "int4": ("int8", "bf16"),
    "mxint4": ("mxint8", "int8", "bf16"),
    "mxint8": ("int8", "fp8", "bf16"),
    "fp6": ("fp8", "bf16"),
    "fp8": ("bf16",),
    "int8": ("bf16",),
    "fp16": ("bf16", "fp32"),
    "bf16": ("fp16", "fp32"),
    "tf32": ("fp32",),
    "fp32": ("tf32",),
}


def nbytes(dtype: str) -> float:
    """Bytes per element of `dtype` (fractional for sub-byte formats)."""
    return BITS[dtype] / 8


# Formats whose arithmetic runs in the format itself when the chip has units for it (the key):
# block-scaled fp8 and fp4 run on the fp8 / fp4 tensor cores. Integer weights are weight-only
# unless a compute dtype says otherwise (int4/int8 weight-only kernels dequantise to bf16).
NATIVE: dict[str, str] = {"fp8": "fp8", "fp8_block": "fp8", "fp4": "fp4", "nvfp4": "fp4", "mxfp4": "fp4",
                          "bf16": "bf16", "fp16": "fp16", "fp32": "fp32", "tf32": "tf32", "mxint8": "mxint8",
                          "mxint4": "mxint4", "fp6": "fp6"}
WEIGHT_ONLY: frozenset[str] = frozenset({"int4", "int8"})
KV_DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp8", "fp32", "int8", "mxint8")


def compute_dtype(weight: str, peaks: dict, requested: str | None = None, chip: str = "chip") -> str:
    """The format a GEMM over `weight`-format weights computes in on a chip with peak table `peaks`.

    `requested` (a model's compute_dtype) must be one the chip has; otherwise the weights' own
    format where the chip computes in it, else the widest of bf16/fp16/fp32 it has (weight-only:
    dequantised on load), else its slowest listed format."""
    if requested is not None:
        if requested not in peaks:
            raise GimletError(f"{chip} cannot compute in {requested}; it computes in {', '.join(peaks)}")
        return requested
    native = NATIVE.get(weight)
    if native is not None and native in peaks and weight not in WEIGHT_ONLY:
        return native
    for alt in ("bf16", "fp16", "fp32"):
        if alt in peaks:
            return alt
    for alt in COMPUTE_FALLBACK.get(weight, ()):
        if alt in peaks:
            return alt
    return min(peaks, key=peaks.__getitem__)
