"""The bundled chip catalog: one YAML file per chip under `data/chips/`.

(Preset clusters, under `data/clusters/`, load through `gimletc.hardware.cluster`.)"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from gimletc._io import read_data, validate
from gimletc.errors import ConfigError, UnknownNameError
from gimletc.hardware.efficiency import REFERENCE_CHIP, derive_efficiency
from gimletc.hardware.schema import Chip

DATA = Path(__file__).parent / "data"
CHIPS = DATA / "chips"


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


def reference_for(chip: Chip) -> Chip:
    """The catalog chip whose measured efficiency a chip of `chip.kind` borrows (`derive_efficiency`)."""
    return get_chip(REFERENCE_CHIP[chip.kind])
