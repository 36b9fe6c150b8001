"""gimletc: a compiler for AI inference on mixed hardware."""

from gimletc.agent import AgentGraph, GraphError
from gimletc.errors import ConfigError, DoesNotFitError, GimletError, UnknownNameError
from gimletc.graph_io import load_graph
from gimletc.models import Model, get_model

__version__ = "0.1.0"

__all__ = [
    "AgentGraph",
    "ConfigError",
    "DoesNotFitError",
    "GimletError",
    "GraphError",
    "Model",
    "UnknownNameError",
    "__version__",
    "get_model",
    "load_graph",
]
