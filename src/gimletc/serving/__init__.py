"""Serving under load: configurations of engines per role and chip type, the SLO-aware search over them,
the least hardware for a rate, and search results saved for deployment."""

from gimletc.serving.layout import (
    MODES,
    ROLES,
    EngineKind,
    Group,
    ModelServing,
    ServingConfig,
    Speculation,
    Split,
    serving_workload,
)
from gimletc.serving.search import (
    Candidate,
    Evaluation,
    ParetoPoint,
    Recommendation,
    SearchResult,
    SearchSettings,
    pareto_front,
    predict,
    recommend,
    search,
)

__all__ = [
    "MODES",
    "ROLES",
    "Candidate",
    "EngineKind",
    "Evaluation",
    "Group",
    "ModelServing",
    "ParetoPoint",
    "Recommendation",
    "SearchResult",
    "SearchSettings",
    "ServingConfig",
    "Speculation",
    "Split",
    "pareto_front",
    "predict",
    "recommend",
    "search",
    "serving_workload",
]
