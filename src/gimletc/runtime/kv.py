"""KV caches as the runtime moves them: per-layer arrays in a chip's own layout and dtype.

A chip keeps its KV cache in its own layout (the chip catalog's `kv_layout`):
NVIDIA's paged caches are token-major (`paged-nhd`: [batch, tokens, heads,
head_dim]), AMD's and the host CPUs' head-major (`paged-hnd`,
`contiguous-bhsd`: [batch, heads, tokens, head_dim]). A worker stores the
KV its partition produces in its chip's layout and checks, before reading a
cache, that it arrives in that layout: a cache moved between vendors without
the plan's `exec.convert` is an error, not silently wrong numbers. Vendor
layouts whose internals are not public (the SRAM accelerators' and Gaudi's)
are kept head-major; the report says so.

`convert` applies an exec.convert for real: a transposing copy between
layouts and a cast between dtypes numpy can hold (fp32, fp16, bf16, fp8 via
ml_dtypes); block-scaled formats (MX) are not emulated and keep their source
dtype, which the report also says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gimletc.errors import GimletError

__all__ = ["KVCache", "KVLayoutError", "STEP_AXES", "axes_of", "cast", "known_layout", "to_axes"]

STEP_AXES = "bhsd"  # the ONNX step model's KV tensors: [batch, kv_heads, tokens, head_dim]
_AXES = {"paged-nhd": "bshd", "paged-hnd": "bhsd", "contiguous-bhsd": "bhsd"}


class KVLayoutError(GimletError):
    """A KV cache reached a device in a layout or dtype that device does not keep."""


def known_layout(layout: str) -> bool:
    return layout in _AXES


def axes_of(layout: str) -> str:
    """Axis order of `layout` (b: batch, h: heads, s: tokens, d: head_dim); head-major for undisclosed vendor layouts."""
    return _AXES.get(layout, STEP_AXES)


def to_axes(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """A contiguous copy of `x` with its axes reordered from `src` to `dst` order."""
    if src == dst:
        return np.array(x, copy=True)
    return np.ascontiguousarray(np.transpose(x, [src.index(c) for c in dst]))


def _np_dtype(name: str) -> np.dtype | None:
    table: dict[str, object] = {"fp32": np.float32, "fp16": np.float16, "fp64": np.float64}
    try:
        import ml_dtypes

        table.update({"bf16": ml_dtypes.bfloat16, "fp8": ml_dtypes.float8_e4m3fn})
    except ImportError:  # pragma: no cover - ml_dtypes comes with onnx
        pass
    t = table.get(name)
    return np.dtype(t) if t is not None else None


def cast(x: np.ndarray, dtype: str) -> tuple[np.ndarray, bool]:
    """(x stored as `dtype`, True) where numpy can hold it; (a copy of x, False) otherwise."""
    t = _np_dtype(dtype)
    if t is None:
        return np.array(x, copy=True), False
    return x.astype(t, copy=True), True


@dataclass
class KVCache:
    """Some or all layers of one sequence batch's KV cache, as it sits on a device.

    `layers` maps a layer index to its (key, value) arrays in `layout` and `dtype`;
    `length` is the tokens cached. The part of a cache that holds the model's head
    also carries the token history (prompt and generated), the next token to feed,
    and the logits rows that chose each generated token (for the differential check)."""

    model: str
    layers: dict[int, tuple[np.ndarray, np.ndarray]]
    layout: str
    dtype: str
    length: int
    history: np.ndarray | None = None
    next_token: int | None = None
    logits: list[np.ndarray] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        n = sum(k.nbytes + v.nbytes for k, v in self.layers.values())
        return n + (self.history.nbytes if self.history is not None else 0)

    def copy(self, layers: set[int] | None = None) -> KVCache:
        """A deep copy (of `layers` only, when given): what a transfer writes into the destination's memory."""
        keep = sorted(self.layers if layers is None else layers & set(self.layers))
        return KVCache(
            self.model,
            {i: (np.array(self.layers[i][0], copy=True), np.array(self.layers[i][1], copy=True)) for i in keep},
            self.layout, self.dtype, self.length,
            None if self.history is None else np.array(self.history, copy=True), self.next_token,
            [np.array(r, copy=True) for r in self.logits],
        )

    @staticmethod
    def merge(parts: list[KVCache]) -> KVCache:
        """One cache from parts of the same cache (streamed chunks, pipeline stages)."""
        if not parts:
            raise KVLayoutError("no KV cache parts to merge")
        base = next((p for p in parts if p.history is not None), parts[0])
        out = KVCache(base.model, {}, base.layout, base.dtype, base.length, base.history, base.next_token, list(base.logits))
        for p in parts:
            if p.layers and (p.layout != out.layout or p.dtype != out.dtype):
                raise KVLayoutError(f"KV parts of {base.model} disagree: {p.layout}/{p.dtype} vs {out.layout}/{out.dtype}")
            out.layers.update(p.layers)
            out.length = max(out.length, p.length)
        return out

    def in_step_layout(self, layer: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Layer `layer` as the step model reads it ([batch, heads, tokens, head_dim] in `dtype`)."""
        src = axes_of(self.layout)
        k, v = self.layers[layer]
        return (to_axes(k, src, STEP_AXES).astype(dtype, copy=False), to_axes(v, src, STEP_AXES).astype(dtype, copy=False))
