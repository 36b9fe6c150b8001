"""Numeric formats and their storage size.

Block-scaled formats carry their scale overhead: MXFP4 stores 32 four-bit
elements with one 8-bit shared exponent, so 4.25 bits per element (OCP
Microscaling spec v1.0); MXINT8 is 8 bits plus one 8-bit scale per 32.
"""

from __future__ import annotations

from typing import Literal

DType = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "mxint8", "fp6", "fp4", "mxfp4", "int4", "mxint4"]

BITS: dict[str, float] = {
    "fp32": 32,
    "tf32": 32,
    "bf16": 16,
    "fp16": 16,
    "fp8": 8,
    "int8": 8,
    "mxint8": 8 + 8 / 32,
    "fp6": 6,
    "fp4": 4,
    "mxfp4": 4 + 8 / 32,
    "int4": 4,
    "mxint4": 4 + 8 / 32,
}

# The arithmetic a format is computed in on a chip whose peak table lacks it:
# block-scaled weights are dequantised into the activation format.
COMPUTE_FALLBACK: dict[str, tuple[str, ...]] = {
    "mxfp4": ("fp4", "bf16"),
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
