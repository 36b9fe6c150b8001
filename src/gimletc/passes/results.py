"""What passes hand each other and the plan: typed results, each with one owner.

Each result is written by one pass (named below) into its `PassContext` field
and read by later passes and by the compile driver, which turns it into the
plan's own models. Results that are pure functions of a graph (the replay
timeline) are not stored here but computed through `PassContext.analyses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlacementSearch:
    """How `place` searched (`PassContext.placement`): the method, its effort and the bound it reached."""

    objective: str
    method: str  # exhaustive | greedy | greedy+local-search | milp ... (see gimletc.passes.place)
    evaluated: int
    objective_value: float
    bound: float  # a lower bound on the objective no placement beats
    gap: float  # (objective - bound) / objective
    units: int
    search_space_log10: float
    latency_s: float  # the placement's own list-schedule prediction
    energy_j: float
    power_w: float
    partition_configs: int | None = None  # partitioning configurations compared (joint choice only)
    partition_scoring: str | None = None  # "replay" (the driver's scorer) | "list-schedule"
    warnings: tuple[str, ...] = ()  # one line each: model phases placed on a host CPU far slower than an accelerator


@dataclass(frozen=True)
class ConvertRecord:
    """A KV-cache layout or dtype conversion `insert-transfers` added on a transfer's destination."""

    op: str
    device: str
    from_layout: str
    to_layout: str
    from_dtype: str
    to_dtype: str
    seconds: float


@dataclass(frozen=True)
class TransferRecord:
    """One cross-device move `insert-transfers` inserted (`PassContext.transfers`)."""

    value: str
    src: str
    dst: str
    route: str
    hops: tuple[str, ...]
    bytes: float
    seconds: float
    send: str  # the exec.send op's name
    recv: str
    convert: ConvertRecord | None = None


@dataclass(frozen=True)
class OverlapReport:
    """What `overlap` kept (`PassContext.overlap`): each rewrite only where the replay did not grow."""

    before_s: float
    after_s: float
    async_transfers: bool
    streamed: bool

    def to_plan(self) -> dict[str, Any]:
        """The plan's `overlap` object."""
        return {"after_s": self.after_s, "async": self.async_transfers, "before_s": self.before_s,
                "streamed": self.streamed}


@dataclass(frozen=True)
class PartitionReport:
    """How one LLM call was partitioned (`PassContext.partitions`), by `place` or a forcing pass."""

    kind: str
    detail: str = ""
    note: str = ""
    objective: float | None = None  # the plan's objective with this choice (predicted)
    runner_up: str | None = None
    runner_up_objective: float | None = None
    options: tuple[str, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class ReuseRecord:
    """A prefill that reuses a cached prompt prefix (`kv-reuse`): on its first run (in a loop, its first
    iteration) `cached_first` of its `prompt_tokens` come from cache, on later iterations `cached_later`."""

    op: str
    llm: str
    model: str
    devices: tuple[str, ...]
    prompt_tokens: int
    cached_first: int
    cached_later: int
    sources: tuple[str, ...]  # prefills whose KV it reuses; its own name: its previous iteration
    route: str  # local: the KV is where it runs | moved: the call was moved there | transfer: the KV moves to it
    runs: float  # executions per request
    seconds: float  # predicted seconds per execution with reuse (the mean over its loop's iterations)
    seconds_without: float
    kv_bytes: float  # the longest reused prefix's KV cache, kept on its devices

    @property
    def saved_s(self) -> float:
        """Prefill seconds saved per request."""
        return self.runs * (self.seconds_without - self.seconds)


@dataclass(frozen=True)
class KVReuseReport:
    """What `kv-reuse` kept (`PassContext.kv_reuse`), and the plan's metrics with and without it."""

    reused: tuple[ReuseRecord, ...]
    kept: str  # all | local (moves and transfers dropped) | none (no reuse, or it did not pay)
    scoring: str  # how the two were compared: "plan" (the driver's passes after kv-reuse) | "replay" (its own)
    latency_s: float
    energy_j: float
    latency_s_without: float
    energy_j_without: float
    ttft_s_without: tuple[tuple[str, float], ...] = ()  # (LLM call, its TTFT without reuse), for the reusing calls
