"""The bundled hardware catalog: one YAML file per chip under `data/chips/` and
one per preset cluster under `data/clusters/`."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gimletc._io import load, read_data, validate
from gimletc.errors import ConfigError, UnknownNameError
from gimletc.hardware.efficiency import REFERENCE_CHIP, derive_efficiency
from gimletc.hardware.schema import Chip

if TYPE_CHECKING:
    from gimletc.hardware.cluster import Cluster

DATA = Path(__file__).parent / "data"
CHIPS = DATA / "chips"
CLUSTERS = DATA / "clusters"


def _chip_with_efficiency(raw: Any, source: str, references: dict[str, Chip]) -> Chip:
    """Validate one chip file's data; a file with no `efficiency` block gets the derived one."""
    chip = validate(Chip, raw, source)
    if "efficiency" in raw:
        return chip
    ref_name = REFERENCE_CHIP[chip.kind]
    if ref_name not in references:
        raise ConfigError(f"{source}: no efficiency block, and reference chip {ref_name} has none to derive it from")
    derived = derive_efficiency(chip, references[ref_name])
    return validate(Chip, {**raw, "efficiency": derived.model_dump()}, source)


@cache
def chip_catalog() -> dict[str, Chip]:
    """All bundled chips by name; chips without an `efficiency` block carry the derived one."""
    raws = {f: read_data(f) for f in sorted(CHIPS.glob("*.yaml"))}
    # Chips with their own efficiency first: they are the references the others derive from.
    order = sorted(raws, key=lambda f: not (isinstance(raws[f], dict) and "efficiency" in raws[f]))
    chips: dict[str, Chip] = {}
    for f in order:
        raw = raws[f]
        chip = _chip_with_efficiency(raw, str(f), chips)
        if chip.name != f.stem:
            raise ConfigError(f"{f}: name: {chip.name!r} differs from the file name {f.stem!r}")
        chips[chip.name] = chip
    return dict(sorted(chips.items()))


def chip_names() -> list[str]:
    return sorted(chip_catalog())


def get_chip(name: str) -> Chip:
    """The catalog chip called `name`; UnknownNameError listing the known names otherwise."""
    chips = chip_catalog()
    if name not in chips:
        raise UnknownNameError("chip", name, list(chips))
    return chips[name]


def chip_file(name: str) -> Path:
    """The bundled file that describes catalog chip `name` (where `gimletc calibrate --write` stores a fit)."""
    get_chip(name)  # unknown names fail with the list of known ones
    return CHIPS / f"{name}.yaml"


def load_chip(path: str | Path) -> Chip:
    """A chip from a YAML/JSON file outside the catalog, its efficiency derived from the
    catalog's reference chip when the file has none."""
    raw = read_data(path)
    return _chip_with_efficiency(raw, str(path), chip_catalog())


def cluster_presets() -> dict[str, Path]:
    """Preset cluster name -> its file."""
    return {f.stem: f for f in sorted(CLUSTERS.glob("*.yaml"))}


def load_cluster(name_or_path: str | Path) -> Cluster:
    """A preset cluster by name, or a cluster from a YAML/JSON file path."""
    from gimletc.hardware.cluster import Cluster  # cluster.py resolves chip names through this module

    key = str(name_or_path)
    presets = cluster_presets()
    if key in presets:
        return load(Cluster, presets[key])
    p = Path(key)
    if p.suffix in {".yaml", ".yml", ".json"} or p.exists():
        return load(Cluster, p)
    raise UnknownNameError("cluster", key, list(presets))
