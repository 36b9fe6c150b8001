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
    from gimletc.dtypes import BITS

    base, _, dtype = key.rpartition("@")
    if dtype not in BITS:
        raise UnknownNameError("weight dtype", dtype, list(BITS))
    m = get_model(base)
    update: dict = {"name": key, "weight_dtype": dtype}
    if m.moe is not None and m.moe.expert_dtype is not None:
        update["moe"] = m.moe.model_copy(update={"expert_dtype": dtype})
    return Model.model_validate({**m.model_dump(), **update})
