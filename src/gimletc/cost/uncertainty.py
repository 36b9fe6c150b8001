"""How far a prediction may be off: a band per chip, stack and op kind.

A band is the 90th percentile of the model's |relative error| on steps held
out of its fit (`docs/cost-model.md` says which and how): about nine
predictions in ten land within it. Where nothing was measured, the band is a
stated, wider one, and says so.

- engine stacks on a measured chip: the profile's held-out bands
  (`gimletc.cost.aiconfigurator`), per op kind, dense and MoE apart (a class
  with no held-out step borrows the other's, plus `DERIVED_BAND_WIDENING`);
- engine stacks on a GPU derived from a measured one: its reference's band
  plus `DERIVED_BAND_WIDENING`;
- the reference stack on the calibrated H200: the leave-one-out errors of
  `gimletc calibrate` (`data/reference_bands.json`); on other GPUs that band
  plus the same widening;
- CPUs and SRAM accelerators: `UNMEASURED_BAND` (stated: nothing measured).

Combining bands (see docs/cost-model.md): a sum of predictions made by the
same model errs together, so its band is the time-weighted mean of the parts'
bands (`combine`); a ratio a/b lies in [a(1-ra)/(b(1+rb)), a(1+ra)/(b(1-rb))]
(`ratio_interval`), and two predictions are "not distinguishable" when their
intervals overlap (`distinguishable`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from gimletc.cost.engine import DERIVED_BAND_WIDENING, SRAM_BAND, engine_profile
from gimletc.errors import GimletError
from gimletc.hardware.schema import Chip
from gimletc.models.workload import ENGINE_STACKS, resolve_stack

OP_KINDS: tuple[str, ...] = ("prefill", "decode", "verify", "mixed")
UNMEASURED_BAND = SRAM_BAND  # CPUs and SRAM accelerators: +-50%, stated (no held-out measurement)
REFERENCE_BANDS = Path(__file__).parent / "data" / "reference_bands.json"
REFERENCE_CHIP = "h200"


@dataclass(frozen=True)
class Band:
    """A symmetric relative band: the truth lies within value x (1 +- rel) about nine times in ten."""

    rel: float
    source: str
    measured: bool

    def low(self, value: float) -> float:
        return value * (1.0 - self.rel)

    def high(self, value: float) -> float:
        return value * (1.0 + self.rel)

    def __str__(self) -> str:
        return f"±{self.rel:.0%}"

    def to_dict(self) -> dict:
        return {"rel": self.rel, "source": self.source, "measured": self.measured}


@cache
def reference_bands() -> dict[str, float]:
    """The reference stack's bands on the calibrated H200 (leave-one-out p90 per op kind)."""
    if not REFERENCE_BANDS.exists():
        return {}
    return {k: float(v) for k, v in json.loads(REFERENCE_BANDS.read_text())["bands"].items()}


def _chip(chip: Chip | str) -> Chip:
    if isinstance(chip, Chip):
        return chip
    from gimletc.hardware.catalog import get_chip

    return get_chip(chip)


def band(chip: Chip | str, stack: str, op_kind: str, moe: bool = False) -> Band:
    """The band of a `op_kind` step (prefill, decode, verify, mixed) of a dense or MoE model priced
    under `stack` on `chip`."""
    if op_kind not in OP_KINDS:
        raise GimletError(f"unknown op kind {op_kind!r} for a band; known: {', '.join(OP_KINDS)}")
    c = _chip(chip)
    s = resolve_stack(stack)
    if c.kind != "gpu":
        return Band(UNMEASURED_BAND, f"stated: no measurement of a {c.kind} ({c.name}) under any stack", False)
    if s in ENGINE_STACKS:
        p = engine_profile(c, s)
        key = ("moe." if moe else "") + op_kind
        how = "held-out p90 |error|" if p.measured else f"derived (+{DERIVED_BAND_WIDENING:.0%} over the reference's held-out p90)"
        if key in p.bands:
            return Band(p.bands[key], f"{how}: {c.name} {s} {key}", p.measured)
        # No held-out step of this class (e.g. no MoE shape in an engine's tables): the other class's band,
        # widened as for an unmeasured chip.
        rel = p.bands.get(op_kind, max(p.bands.values(), default=UNMEASURED_BAND)) + DERIVED_BAND_WIDENING
        return Band(rel, f"{how}: {c.name} {s} {op_kind} (no {key} steps held out) + {DERIVED_BAND_WIDENING:.0%}", False)
    ref = reference_bands()
    rel = ref.get(op_kind, max(ref.values(), default=UNMEASURED_BAND))
    if c.name == REFERENCE_CHIP:
        return Band(rel, f"leave-one-out p90 |error|: {c.name} reference {op_kind}", True)
    return Band(rel + DERIVED_BAND_WIDENING,
                f"derived: {REFERENCE_CHIP} reference {op_kind} leave-one-out p90 + {DERIVED_BAND_WIDENING:.0%}", False)


def combine(parts: list[tuple[float, Band]]) -> Band:
    """The band of a sum of predictions (seconds, band): they err together (one model), so the band is
    the time-weighted mean of the parts' bands; measured only if every part is."""
    total = sum(t for t, _ in parts)
    if total <= 0:
        return Band(0.0, "no time", True)
    rel = sum(t * b.rel for t, b in parts) / total
    return Band(rel, "combined: time-weighted mean of " + str(len(parts)) + " bands", all(b.measured for _, b in parts))


def ratio_interval(a: float, band_a: Band, b: float, band_b: Band) -> tuple[float, float]:
    """The interval a / b lies in when each side lies in its band."""
    lo_b, hi_b = band_b.low(b), band_b.high(b)
    if lo_b <= 0:
        return 0.0, float("inf")
    return band_a.low(a) / hi_b, band_a.high(a) / lo_b


def distinguishable(a: float, band_a: Band, b: float, band_b: Band) -> bool:
    """Whether two predictions differ by more than their bands: their intervals do not overlap."""
    return band_a.high(a) < band_b.low(b) or band_b.high(b) < band_a.low(a)
