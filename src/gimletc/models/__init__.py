"""Model architectures, the bundled catalog, and per-phase workloads."""

from gimletc.models.arch import MLA, Model, MoE, SlidingWindow
from gimletc.models.catalog import catalog, get_model, names
from gimletc.models.workload import PHASES, Op, Workload, distinct_experts, step_workload, visible_keys

__all__ = [
    "MLA",
    "PHASES",
    "Model",
    "MoE",
    "Op",
    "SlidingWindow",
    "Workload",
    "catalog",
    "distinct_experts",
    "get_model",
    "names",
    "step_workload",
    "visible_keys",
]
