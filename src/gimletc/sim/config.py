"""What a load simulation is asked to do: how engines batch (`EngineConfig`) and everything else
a run depends on (`SimConfig`), with the error every part of the simulator raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gimletc.errors import GimletError
from gimletc.models import Model, get_model
from gimletc.passes.place import HOST_LANES  # the compiler's CPU lanes per host
from gimletc.sim.steps import SoftwareProfile

__all__ = ["EngineConfig", "SimConfig", "SimulationError"]


class SimulationError(GimletError):
    """The load simulation cannot run as asked (names the engine, model and the number)."""


@dataclass(frozen=True)
class EngineConfig:
    """How each engine batches. Defaults follow vLLM's (max_num_seqs 256, 90% of memory)."""

    max_batch: int = 256  # sequences in a decode batch
    max_prefill_tokens: int = 8192  # prompt tokens per prefill step (a longer prompt still runs alone)
    chunked_prefill: bool = False
    chunk_tokens: int = 2048  # tokens per mixed iteration (decode tokens first, the rest prompt)
    mem_fraction: float = 0.9  # of each chip's memory for weights + KV cache

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_prefill_tokens", "chunk_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise SimulationError(f"engine {name} must be a positive integer; got {v!r}")
        if not 0 < self.mem_fraction <= 1:
            raise SimulationError(f"engine mem_fraction must be in (0, 1]; got {self.mem_fraction!r}")

    def to_dict(self) -> dict:
        return {"max_batch": self.max_batch, "max_prefill_tokens": self.max_prefill_tokens,
                "chunked_prefill": self.chunked_prefill, "chunk_tokens": self.chunk_tokens,
                "mem_fraction": self.mem_fraction}


@dataclass(frozen=True)
class SimConfig:
    engine: EngineConfig = EngineConfig()
    profile: SoftwareProfile | None = None  # None: the stack the plan was compiled for (else "calibrated")
    host_lanes: int = HOST_LANES
    loops: Literal["geometric", "mean"] = "geometric"
    tool_times: Literal["fixed", "exponential"] = "fixed"
    weight_dtype: str | None = None  # override every model's weight format (e.g. fp8)
    kv_dtype: str | None = None  # override every model's KV-cache format
    record_timeline: bool = False
    timeline_limit: int = 200_000  # iterations/tasks kept in the timeline
    fast_forward: bool = True  # run unchanging decode batches to their next finish in one event

    def __post_init__(self) -> None:
        if not isinstance(self.host_lanes, int) or self.host_lanes < 1:
            raise SimulationError(f"host_lanes must be a positive integer; got {self.host_lanes!r}")
        if self.loops not in ("geometric", "mean"):
            raise SimulationError(f"loops must be 'geometric' or 'mean'; got {self.loops!r}")
        if self.tool_times not in ("fixed", "exponential"):
            raise SimulationError(f"tool_times must be 'fixed' or 'exponential'; got {self.tool_times!r}")

    def model(self, name: str) -> Model:
        m = get_model(name)
        upd = {k: v for k, v in (("weight_dtype", self.weight_dtype), ("kv_dtype", self.kv_dtype)) if v}
        return m.model_copy(update=upd) if upd else m

    def to_dict(self) -> dict:
        return {"engine": self.engine.to_dict(), "profile": self.profile.to_dict() if self.profile else None,
                "host_lanes": self.host_lanes,
                "loops": self.loops, "tool_times": self.tool_times, "weight_dtype": self.weight_dtype,
                "kv_dtype": self.kv_dtype}
