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
    frozen_attrs,
    register,
    registered_kinds,
    spec,
    verify,
)

__all__ = [
    "ASYNC_TOKEN",
    "TOKEN_ID_BYTES",
    "Graph",
    "IRError",
    "Op",
    "OpSpec",
    "Type",
    "Value",
    "frozen_attrs",
    "register",
    "registered_kinds",
    "spec",
    "verify",
]
