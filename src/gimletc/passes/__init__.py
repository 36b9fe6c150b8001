"""Passes over the IR and the manager that runs them as text pipelines.

Pass modules are imported lazily through `PASS_REGISTRY`, so importing this
package loads only the manager."""

from gimletc.passes.manager import (
    PASS_REGISTRY,
    Pass,
    PassContext,
    PassFailure,
    PassManager,
    PipelineError,
    get_pass_class,
    parse_pipeline,
    register_pass,
)

__all__ = [
    "PASS_REGISTRY",
    "Pass",
    "PassContext",
    "PassFailure",
    "PassManager",
    "PipelineError",
    "get_pass_class",
    "parse_pipeline",
    "register_pass",
]
