"""The bundled model catalog: one YAML file per model under `models/data/`."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from gimletc._io import load
from gimletc.errors import UnknownNameError
from gimletc.models.arch import Model

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
    """A catalog model by name, a model from a Hugging Face config.json path, or an imported ONNX model."""
    key = str(name_or_path)
    models = catalog()
    if key in models:
        return models[key]
    p = Path(key)
    if p.suffix == ".onnx":
        from gimletc.importers.onnx_import import architecture

        return architecture(p)
    if p.suffix == ".json" or p.is_dir() or p.exists():
        return Model.from_hf_config(p)
    raise UnknownNameError("model", key, list(models))
