"""The local runtime: execute a deployment plan for real on this machine (`gimletc.runtime.local`)."""

from __future__ import annotations

from typing import Any

__all__ = ["RunError", "RunReport", "load_tools", "run_plan"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gimletc.runtime import local

        return getattr(local, name)
    raise AttributeError(name)
