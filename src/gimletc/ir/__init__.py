"""The gimletc IR: typed, immutable ops in SSA form across the agent, model and exec dialects."""

from gimletc.ir.core import (
    ASYNC_TOKEN,
    TOKEN_ID_BYTES,
    Graph,
    IRError,
    Op,
    OpSpec,
    Type,
    Value,
    forwarded_values,
    frozen_attrs,
    register,
    registered_kinds,
    spec,
    verify,
)
from gimletc.ir.export import to_dot, to_mermaid
from gimletc.ir.levels import LEVELS, Level, level_of, verify_level
from gimletc.ir.text import parse_graph, print_graph

__all__ = [
    "ASYNC_TOKEN",
    "LEVELS",
    "TOKEN_ID_BYTES",
    "Graph",
    "IRError",
    "Level",
    "Op",
    "OpSpec",
    "Type",
    "Value",
    "forwarded_values",
    "frozen_attrs",
    "level_of",
    "parse_graph",
    "print_graph",
    "register",
    "registered_kinds",
    "spec",
    "to_dot",
    "to_mermaid",
    "verify",
    "verify_level",
]
