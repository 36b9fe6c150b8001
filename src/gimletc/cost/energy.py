"""Energy from power over time: a chip draws its TDP while busy and its idle power otherwise."""

from __future__ import annotations

from gimletc.hardware.schema import Chip


def energy_j(chip: Chip, busy_s: float, span_s: float, chips: float = 1) -> float:
    """Joules `chips` chips (or CPU sockets) use over `span_s` seconds of which `busy_s` are spent working.

    Never below the idle energy of the span: busy time is clamped to [0, span]."""
    busy = min(max(busy_s, 0.0), span_s)
    return chips * (chip.tdp_w * busy + chip.idle_w * (span_s - busy))
