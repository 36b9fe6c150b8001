"""The rule that gives a chip with no measurements its efficiency factors.

Only the reference chips are fitted to measurements (`gimletc calibrate`):
`h200` for GPUs and SRAM accelerators, `xeon-host-16c` for CPUs. Every other
chip borrows its reference's fractions of peak and fixed overheads unchanged,
and its `origin` says so, so a plan never presents a borrowed number as a
measured one.

One exception: SRAM accelerators keep the fractions of peak but have no fixed
per-layer or launch overheads. Their toolchains (Groq's compiler, d-Matrix
Aviator, Cerebras' graph compiler) schedule a whole step as one static
program, so there are no kernel boundaries or host launches for the GPU's
fitted overheads to stand for. This is an assumption, not a measurement.
"""

from __future__ import annotations

from gimletc.errors import ConfigError
from gimletc.hardware.schema import Chip, ChipKind, Efficiency

# SRAM accelerators share the GPU reference: both run the same transformer
# kernels as matrix engines fed from a fast memory, and there is no SRAM-chip
# measurement yet to do better.
REFERENCE_CHIP: dict[ChipKind, str] = {"gpu": "h200", "sram-accelerator": "h200", "cpu": "xeon-host-16c"}


def derive_efficiency(chip: Chip, reference: Chip) -> Efficiency:
    """`reference`'s efficiency (the chip named by `REFERENCE_CHIP[chip.kind]`; the catalog's
    `reference_for(chip)`), with an `origin` naming the reference and saying that `chip` itself
    was not measured."""
    want = REFERENCE_CHIP[chip.kind]
    if reference.name != want:
        raise ConfigError(
            f"chip {chip.name}: the efficiency reference for kind {chip.kind} is {want}, not {reference.name}"
        )
    if chip.kind == "sram-accelerator":
        origin = (
            f"derived: same fractions of peak as {reference.name} ({reference.efficiency.origin}), "
            f"no fixed overheads (statically scheduled); no measurement of {chip.name}"
        )
        zero = {"layer_overhead_s": 0.0, "step_overhead_s": 0.0, "launch_s_per_layer": 0.0}
        return reference.efficiency.model_copy(update={**zero, "origin": origin})
    origin = (
        f"derived: same fractions of peak and overheads as {reference.name} "
        f"({reference.efficiency.origin}); no measurement of {chip.name}"
    )
    return reference.efficiency.model_copy(update={"origin": origin})
