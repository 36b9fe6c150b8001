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

Combining bands (docs/cost-model.md, "How bands combine"): a total the replay
builds from many ops (a request's latency, TTFT, energy, cost) lies between the
replay with every op at the low edge of its band and the replay with every op at
its high edge (`edge_factor`); for a chain of ops that is the time-weighted mean
of their bands (`combine`). A ratio a/b of two intervals lies in
[a_lo / b_hi, a_hi / b_lo] (`ratio_interval`, `interval_ratio`), and two
predictions are "not distinguishable" when their intervals overlap
(`distinguishable`, `overlaps`).
"""

from __future__ import annotations

import json
import math
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
# Ops the cost model prices with no measurement behind them: transfers (latency + bytes / bandwidth per
# hop), layout/dtype conversions and retrieval scans. Stated, as for unmeasured chips.
STATED_BAND = UNMEASURED_BAND
NOT_DISTINGUISHABLE = "not distinguishable"


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


GIVEN = Band(0.0, "given by the graph (a tool's or code's stated time), not predicted", True)
NO_TIME = Band(0.0, "takes no time", True)


def stated(what: str) -> Band:
    """The stated band of something the cost model prices with no measurement behind it."""
    return Band(STATED_BAND, f"stated: {what} not measured", False)


def edge_factor(b: Band, edge: int) -> float:
    """The factor a prediction takes at the low (`edge` -1) or high (+1) edge of band `b` (0: itself);
    never below zero (a band wider than 100% reaches zero time, not negative time)."""
    return max(0.0, 1.0 + edge * b.rel)


def combine(parts: list[tuple[float, Band]]) -> Band:
    """The band of a sum of predictions (seconds, band): the sum's error is at most the sum of the
    parts' errors, so if every part lies in its band the sum lies within the time-weighted mean of the
    bands, whatever the errors' correlation (and errors of one model are correlated: a sum gains no
    root-sum-square shrinkage). Equal to the edge replay of a chain of ops; measured only if every
    part is."""
    total = sum(t for t, _ in parts)
    if total <= 0:
        return Band(0.0, "no time", True)
    rel = sum(t * b.rel for t, b in parts) / total
    return Band(rel, "combined: time-weighted mean of " + str(len(parts)) + " bands", all(b.measured for _, b in parts))


def ratio_interval(a: float, band_a: Band, b: float, band_b: Band) -> tuple[float, float]:
    """The interval a / b lies in when each side lies in its band."""
    return interval_ratio((band_a.low(a), band_a.high(a)), (band_b.low(b), band_b.high(b)))


def distinguishable(a: float, band_a: Band, b: float, band_b: Band) -> bool:
    """Whether two predictions differ by more than their bands: their intervals do not overlap."""
    return not overlaps((band_a.low(a), band_a.high(a)), (band_b.low(b), band_b.high(b)))


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether intervals (lo, hi) `a` and `b` share a point: then neither side is the winner."""
    return a[0] <= b[1] and b[0] <= a[1]


def interval_ratio(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """The interval a / b lies in when a lies in interval `a` and b in interval `b` (both positive);
    [0, inf) when b's interval reaches zero. The sides are taken as independent: conservative when
    both come from one model (errors they share cancel in the ratio)."""
    if b[0] <= 0:
        return 0.0, math.inf
    return a[0] / b[1], a[1] / b[0]


def band_text(value: float, lo: float, hi: float) -> str:
    """`±8%` when [lo, hi] sits symmetrically about `value` (to the printed percent), else `-6%/+9%`;
    "" when there is no band to show."""
    if value == 0 and lo == hi == 0:
        return ""
    if value <= 0 or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"[{lo:.4g}, {hi:.4g}]"
    down, up = (value - lo) / value, (hi - value) / value
    d, u = f"{down:.0%}", f"{up:.0%}"
    return f"±{u}" if d == u else f"-{d}/+{u}"


def with_band(value: float, interval: tuple[float, float] | None, digits: int = 4) -> str:
    """`6.3 ±8%`: a predicted value followed by its band (just the value when it has none)."""
    text = band_text(value, *interval) if interval is not None else ""
    return f"{value:.{digits}g} {text}" if text else f"{value:.{digits}g}"


def verdict(a: tuple[float, float], b: tuple[float, float], lower_is_better: bool = True,
            words: tuple[str, str] = ("better", "worse")) -> str:
    """`a` against `b` given their intervals: "not distinguishable" when they overlap, else the
    first of `words` when `a` is the better side (lower, or higher with lower_is_better False)."""
    if overlaps(a, b):
        return NOT_DISTINGUISHABLE
    a_lower = a[1] < b[0]
    return words[0] if a_lower == lower_is_better else words[1]
