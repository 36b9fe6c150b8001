"""Weights generated from a seed where the model runs, so its ONNX files stay small.

A large initializer (>= `MIN_BYTES`) of an exported model can be *seeded*: its bytes are dropped
and the tensor is marked external with location `gimletc-seeded` and the numbers that regenerate
it: a seed, a mean and a standard deviation. Whoever runs the model (the runtime's executors, the
differential check's reference) calls `materialize` for each seeded tensor: a uniform draw from
numpy's PCG64 seeded with (seed, crc32 of the tensor's name) with that mean and deviation, so every worker
on every machine gets the same bytes without moving them. The values are not the exporting
module's own weights; they have their scale, which is what a layer's run time depends on.

Everything else (shapes, names, graph) is ordinary ONNX: the importer, the partitioner and
onnxruntime read such files; IREE cannot compile them (its importer needs the bytes).
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["LOCATION", "MIN_BYTES", "is_seeded", "materialize", "seed_weights", "seeded_tensors"]

LOCATION = "gimletc-seeded"
MIN_BYTES = 1 << 20


def is_seeded(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL and any(e.key == "location" and e.value == LOCATION
                                                          for e in t.external_data)


def seeded_tensors(proto: onnx.ModelProto) -> list[TensorProto]:
    """The model's seeded initializers (none for an ordinary model)."""
    return [t for t in proto.graph.initializer if is_seeded(t)]


def seed_weights(proto: onnx.ModelProto, seed: int, min_bytes: int = MIN_BYTES) -> int:
    """Seed every initializer of `proto` of at least `min_bytes` in place (keeping its mean and
    standard deviation); returns the bytes dropped."""
    dropped = 0
    for t in proto.graph.initializer:
        n = int(np.prod(t.dims)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize if len(t.dims) else 0
        if n < min_bytes or is_seeded(t):
            continue
        a = numpy_helper.to_array(t).astype(np.float64)
        mean, std = float(a.mean()), float(a.std())
        t.ClearField("raw_data")
        for f in ("float_data", "int32_data", "int64_data", "double_data"):
            t.ClearField(f)
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", LOCATION), ("seed", str(int(seed))), ("mean", repr(mean)), ("std", repr(std))):
            t.external_data.add(key=k, value=v)
        dropped += n
    return dropped


def materialize(t: TensorProto) -> np.ndarray:
    """The bytes of seeded tensor `t`, the same on every machine."""
    meta = {e.key: e.value for e in t.external_data}
    rng = np.random.default_rng([int(meta["seed"]), zlib.crc32(t.name.encode())])
    # Uniform with the tensor's mean and standard deviation: a few times cheaper to draw than normal.
    a = rng.random(tuple(int(d) for d in t.dims), dtype=np.float32)
    a -= np.float32(0.5)
    a *= np.float32(float(meta["std"]) * 12 ** 0.5)
    a += np.float32(float(meta["mean"]))
    return a.astype(helper.tensor_dtype_to_np_dtype(t.data_type), copy=False)
