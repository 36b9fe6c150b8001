"""What a load simulation is asked to do: how engines batch (`EngineConfig`) and everything else
a run depends on (`SimConfig`), with the error every part of the simulator raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gimletc.errors import GimletError
from gimletc.models import Model, get_model
from gimletc.sim.steps import SoftwareProfile

__all__ = ["POLICIES", "EngineConfig", "SimConfig", "SimulationError"]


class SimulationError(GimletError):
    """The load simulation cannot run as asked (names the engine, model and the number)."""


POLICIES = ("vllm", "sglang", "trtllm", "prefill-first")


@dataclass(frozen=True)
class EngineConfig:
    """How each engine batches: its policy (None: the software stack's, `gimletc.sim.policies.default_policy`)
    and the policy's knobs, None for the policy's own default (docs/serving.md lists them, and the
    engine version they come from)."""

    max_batch: int | None = None  # the running-set cap, in sequences
    max_prefill_tokens: int | None = None  # the per-iteration token budget
    chunked_prefill: bool | None = None
    chunk_tokens: int | None = None  # the chunk size
    mem_fraction: float = 0.9  # of each chip's memory for weights + KV cache
    policy: str | None = None
    prefix_caching: bool | None = None  # None: the policy's engine's default (on for vllm, sglang, trtllm)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_prefill_tokens", "chunk_tokens"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise SimulationError(f"engine {name} must be a positive integer; got {v!r}")
        if self.chunked_prefill is not None and not isinstance(self.chunked_prefill, bool):
            raise SimulationError(f"engine chunked_prefill must be true or false; got {self.chunked_prefill!r}")
        if self.prefix_caching is not None and not isinstance(self.prefix_caching, bool):
            raise SimulationError(f"engine prefix_caching must be true or false; got {self.prefix_caching!r}")
        if not 0 < self.mem_fraction <= 1:
            raise SimulationError(f"engine mem_fraction must be in (0, 1]; got {self.mem_fraction!r}")
        if self.policy is not None and self.policy not in POLICIES:
            raise SimulationError(f"unknown batching policy {self.policy!r}; choose one of {', '.join(POLICIES)}")

    def to_dict(self) -> dict:
        """As asked: None where the policy's default applies (each engine's summary has the values it ran with)."""
        return {"max_batch": self.max_batch, "max_prefill_tokens": self.max_prefill_tokens,
                "chunked_prefill": self.chunked_prefill, "chunk_tokens": self.chunk_tokens,
                "mem_fraction": self.mem_fraction, "policy": self.policy, "prefix_caching": self.prefix_caching}


@dataclass(frozen=True)
class SimConfig:
    engine: EngineConfig = EngineConfig()
    profile: SoftwareProfile | None = None  # None: the stack the plan was compiled for (else "calibrated")
    host_lanes: int | None = None  # CPU lanes of every host; None: each host's own (Host.lanes)
    loops: Literal["geometric", "mean"] = "geometric"
    tool_times: Literal["fixed", "exponential"] = "fixed"
    weight_dtype: str | None = None  # override every model's weight format (e.g. fp8)
    kv_dtype: str | None = None  # override every model's KV-cache format
    record_timeline: bool = False
    timeline_limit: int = 200_000  # iterations/tasks kept in the timeline
    fast_forward: bool = True  # run unchanging decode batches to their next finish in one event
    record_schedule: bool = False  # keep every iteration's batch (who ran, how many tokens) in the result
    memory_limit: float | None = None  # bytes a run may hold; None: gimletc.sim.limits.available_memory()

    def __post_init__(self) -> None:
        if self.host_lanes is not None and (not isinstance(self.host_lanes, int) or self.host_lanes < 1):
            raise SimulationError(f"host_lanes must be a positive integer; got {self.host_lanes!r}")
        if self.loops not in ("geometric", "mean"):
            raise SimulationError(f"loops must be 'geometric' or 'mean'; got {self.loops!r}")
        if self.tool_times not in ("fixed", "exponential"):
            raise SimulationError(f"tool_times must be 'fixed' or 'exponential'; got {self.tool_times!r}")
        m = self.memory_limit
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < float("inf")):
            raise SimulationError(f"memory_limit must be a positive number of bytes; got {m!r}")

    def model(self, name: str) -> Model:
        m = get_model(name)
        upd = {k: v for k, v in (("weight_dtype", self.weight_dtype), ("kv_dtype", self.kv_dtype)) if v}
        return m.model_copy(update=upd) if upd else m

    def to_dict(self) -> dict:
        return {"engine": self.engine.to_dict(), "profile": self.profile.to_dict() if self.profile else None,
                "host_lanes": self.host_lanes,
                "loops": self.loops, "tool_times": self.tool_times, "weight_dtype": self.weight_dtype,
                "kv_dtype": self.kv_dtype}
