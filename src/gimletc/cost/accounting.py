"""Busy time into joules and dollars: the one place it happens.

A device draws its TDP while busy and its idle power otherwise, over the span
it is held, and costs its price per chip-hour for its busy time. A host counts
once per CPU socket (its `units`); a CPU op holds one of the host's `lanes`,
so its busy time keeps 1/lanes of the host busy. The compiler's plan metrics,
placement's search and the load simulator all price through these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gimletc.hardware.schema import Chip

if TYPE_CHECKING:
    from gimletc.hardware.cluster import Cluster, Device


def units(cluster: Cluster, device: Device) -> int:
    """How many of its chip a device stands for: a host's CPU sockets, else 1."""
    return cluster.node(device.node).host.sockets if device.is_host else 1


def lanes(cluster: Cluster, device: Device) -> int:
    """CPU ops a device runs at once: a host's `Host.lanes`, else 1."""
    return cluster.node(device.node).host.lanes if device.is_host else 1


def lane_share(lanes: int) -> float:
    """The share of its host one CPU op keeps busy."""
    return 1.0 / lanes


def host_busy_s(lane_busy_s: float, lanes: int) -> float:
    """A host's busy seconds from the busy seconds summed over its lanes."""
    return lane_busy_s / lanes


def energy_j(chip: Chip, busy_s: float, span_s: float, chips: float = 1) -> float:
    """Joules `chips` chips (or CPU sockets) use over `span_s` seconds of which `busy_s` are spent working.

    Never below the idle energy of the span: busy time is clamped to [0, span]."""
    busy = min(max(busy_s, 0.0), span_s)
    return chips * (chip.tdp_w * busy + chip.idle_w * (span_s - busy))


def busy_energy_j(chip: Chip, busy_s: float, chips: float = 1) -> float:
    """The part of `energy_j` above idle that `busy_s` of work adds: TDP while busy, no idle span."""
    return busy_s * power_w(chip, chips)


def idle_energy_j(chip: Chip, span_s: float, chips: float = 1) -> float:
    """Joules `chips` chips draw idling for `span_s` seconds."""
    return chip.idle_w * chips * span_s


def cost_usd(chip: Chip, busy_s: float, chips: float = 1) -> float:
    """Dollars `busy_s` busy seconds of `chips` chips (or sockets) cost at the chip's price per hour."""
    return hourly_usd(chip, chips) / 3600 * busy_s


def power_w(chip: Chip, chips: float = 1) -> float:
    """Power at TDP of `chips` chips (or sockets)."""
    return chip.tdp_w * chips


def hourly_usd(chip: Chip, chips: float = 1) -> float:
    """Dollars per hour of `chips` chips (or sockets); a chip without a price costs nothing."""
    return (chip.price_per_hour or 0.0) * chips
