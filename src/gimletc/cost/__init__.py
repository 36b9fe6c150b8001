"""Cost model: roofline per operator, calibrated efficiencies, transfers, energy."""

from gimletc.cost.roofline import MemoryNeed, OpCost, PhaseEstimate, check_fits, estimate, estimate_workload, memory_need, min_chips

__all__ = ["MemoryNeed", "OpCost", "PhaseEstimate", "check_fits", "estimate", "estimate_workload", "memory_need", "min_chips"]
