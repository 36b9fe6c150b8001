"""Serving under load: configurations of replicas per role, and the SLO-aware search over them."""

from gimletc.serving.deploy import EngineKind, ModelServing, ServingConfig, serving_workload
from gimletc.serving.search import (
    Candidate,
    Evaluation,
    ParetoPoint,
    SearchResult,
    SearchSettings,
    pareto_front,
    predict,
    search,
)

__all__ = [
    "Candidate",
    "EngineKind",
    "Evaluation",
    "ModelServing",
    "ParetoPoint",
    "SearchResult",
    "SearchSettings",
    "ServingConfig",
    "pareto_front",
    "predict",
    "search",
    "serving_workload",
]
