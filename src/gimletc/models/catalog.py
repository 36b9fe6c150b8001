"""The bundled model catalog: one YAML file per model under `models/data/`."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from gimletc._io import load
from gimletc.errors import UnknownNameError
from gimletc.models.arch import Model
from gimletc.models.hf import model_from_hf_config

DATA = Path(__file__).parent / "data"


@cache
def catalog() -> dict[str, Model]:
    """All bundled models by name."""
    models = {}
    for f in sorted(DATA.glob("*.yaml")):
        m = load(Model, f)
        models[m.name] = m
    return models


def names() -> list[str]:
    return sorted(catalog())


def get_model(name_or_path: str | Path) -> Model:
    """A catalog model by name, a model from a Hugging Face config.json path, or an imported ONNX model.

    `NAME@DTYPE` (e.g. `llama-3.2-1b@mxint8`) is the model with its weights stored in DTYPE, as a
    quantised deployment would run it; the KV cache and activations keep their format."""
    key = str(name_or_path)
    models = catalog()
    if key in models:
        return models[key]
    if "@" in key and not Path(key).exists():
        return _quantised(key)
    p = Path(key)
    if p.suffix == ".onnx":
        from gimletc.models.onnx import architecture

        return architecture(p)
    from gimletc.models.onnx import imported_by_name

    if key in imported_by_name():  # an ONNX model imported earlier, by its name
        return imported_by_name()[key]
    if p.suffix == ".json" or p.is_dir() or p.exists():
        return model_from_hf_config(p)
    raise UnknownNameError("model", key, list(models))


@cache
def _quantised(key: str) -> Model:
    """`NAME@SPEC`: SPEC is a weight dtype (`llama-3.2-1b@mxint8`) or comma-separated `weight=`, `kv=`,
    `compute=`, `experts=` choices (`qwen3-32b@weight=fp8,kv=fp8`); a bare dtype is the weights'."""
    base, _, spec = key.rpartition("@")
    m = get_model(base)
    return with_dtypes(m, **parse_dtype_spec(spec), name=key)


DTYPE_KEYS = ("weight", "kv", "compute", "experts")


def parse_dtype_spec(spec: str) -> dict[str, str]:
    """The choices of a `NAME@SPEC` suffix, checked against the known formats."""
    from gimletc.dtypes import BITS

    out: dict[str, str] = {}
    for part in spec.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            k, v = "weight", k
        if k not in DTYPE_KEYS:
            raise UnknownNameError("dtype choice", k, list(DTYPE_KEYS))
        if v not in BITS:
            raise UnknownNameError(f"{k} dtype", v, list(BITS))
        out[k] = v
    return out


def dtype_spec(weight: str | None = None, kv: str | None = None, compute: str | None = None,
               experts: str | None = None) -> str:
    """The `NAME@SPEC` suffix naming these choices ("" when none is made)."""
    vals = {"weight": weight, "kv": kv, "compute": compute, "experts": experts}
    return ",".join(f"{k}={v}" for k, v in vals.items() if v)


def with_dtypes(m: Model, weight: str | None = None, kv: str | None = None, compute: str | None = None,
                experts: str | None = None, name: str | None = None) -> Model:
    """`m` with its weights (experts too, unless `experts` says otherwise), KV cache and arithmetic in
    the given formats; unknown formats fail naming the known ones."""
    from gimletc.dtypes import BITS, KV_DTYPES

    for what, v in (("weight", weight), ("kv", kv), ("compute", compute), ("experts", experts)):
        if v is not None and v not in BITS:
            raise UnknownNameError(f"{what} dtype", v, list(BITS))
    if kv is not None and kv not in KV_DTYPES:
        raise UnknownNameError("kv dtype", kv, list(KV_DTYPES))
    update: dict = {}
    if weight:
        update["weight_dtype"] = weight
    if kv:
        update["kv_dtype"] = kv
    if compute:
        update["compute_dtype"] = compute
    if m.moe is not None and (experts or (weight and m.moe.expert_dtype is not None)):
        update["moe"] = m.moe.model_copy(update={"expert_dtype": experts or weight})
    if not update:
        return m
    spec = dtype_spec(weight, kv, compute, experts)
    update["name"] = name or f"{m.name}@{spec}"
    return Model.model_validate({**m.model_dump(), **update})


def name_with_dtypes(name: str, weight: str | None = None, kv: str | None = None, compute: str | None = None) -> str:
    """The model name that resolves (`get_model`) to `name` with these formats, merged over any `@SPEC`
    it already has; checked against the known formats (and loadable) now, not when first priced."""
    if not (weight or kv or compute):
        return name
    base, at, spec = name.rpartition("@")
    if not at or Path(name).exists():
        base, spec = name, ""
    choices = parse_dtype_spec(spec) if spec else {}
    choices.update({k: v for k, v in (("weight", weight), ("kv", kv), ("compute", compute)) if v})
    out = f"{base}@{dtype_spec(**choices)}"
    get_model(out)
    return out
