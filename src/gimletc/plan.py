"""The deployment plan: what runs where, what moves, in which order, and what it costs.

`DeploymentPlan` is written as deterministic JSON (sorted keys, fixed
indentation) with a published JSON schema (`docs/plan.schema.json`, from
`plan_schema()`). Loading a plan only parses JSON and validates it: it never
imports or executes anything named in it.

Every metric is a prediction: the cost model prices each op and transfer, and
the single-request replay (`gimletc.analysis.replay`) orders them; `sources` says so.
The metrics' models (`Metrics`, `LLMMetrics`) live with the analysis that computes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gimletc._io import read_data, validate, write_atomic
from gimletc.analysis.metrics import LLMMetrics, Metrics
from gimletc.hardware.resources import DEFAULT_HOST_LANES

__all__ = ["Baseline", "ClusterDevice", "ClusterSummary", "Convert", "DeploymentPlan", "HostSummary", "KVReuse",
           "LLMMetrics", "Metrics", "PartitionChoice", "Placement", "ReusedPrefix", "Search", "Step", "Transfer",
           "load_plan", "plan_schema", "schema_text"]

SCHEMA_VERSION = "1"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Placement(_M):
    op: str = Field(description="op name in the compiled graph")
    kind: str = Field(description="op kind before lowering (model.prefill, agent.tool, ...)")
    llm: str | None = Field(None, description="the LLM call this phase belongs to")
    model: str | None = None
    device: str = Field(description="primary device id")
    devices: list[str] = Field(description="every device (or CPU lane) the op occupies")
    chip: str
    seconds: float = Field(description="predicted seconds of one execution (cost model)")
    runs: float = Field(1.0, description="expected executions per request (loops, branches)")


class Step(_M):
    op: str
    kind: str = Field(description="exec op kind")
    of: str | None = Field(None, description="the op it runs, for exec.compute")
    seconds: float
    start_ms: float = Field(description="predicted start in the single-request replay")
    end_ms: float


class Convert(_M):
    op: str
    device: str
    from_layout: str
    to_layout: str
    from_dtype: str
    to_dtype: str
    seconds: float


class Transfer(_M):
    value: str
    src: str
    dst: str
    route: str = Field(description="local | direct | host-bounce | network")
    hops: list[str] = Field(description="link kinds crossed")
    bytes: float
    seconds: float = Field(description="latency + bytes / bandwidth summed over hops (cost model)")
    chunks: int = Field(1, description="layer-streamed pieces (overlap pass)")
    convert: Convert | None = None


class Search(_M):
    objective: str
    method: str = Field(description="exhaustive | greedy+local-search | milp ...")
    evaluated: int
    objective_value: float
    bound: float = Field(description="a lower bound on the objective no placement beats")
    gap: float = Field(description="(objective - bound) / objective")
    units: int
    search_space_log10: float = Field(description="log10 of the number of possible assignments")


class PartitionChoice(_M):
    kind: str = Field(description="whole | phase | layers | attn-ffn | speculative")
    detail: str = ""
    note: str = ""
    objective: float | None = Field(None, description="the plan's objective with this choice (predicted)")
    runner_up: str | None = Field(None, description="the best other kind for this call")
    runner_up_objective: float | None = Field(None, description="the objective with the runner-up (predicted)")
    options: list[str] = Field(default_factory=list, description="the kinds that applied to this call")
    why: str = ""


class ReusedPrefix(_M):
    op: str = Field(description="the prefill that reuses a cached prompt prefix")
    llm: str
    model: str
    devices: list[str] = Field(description="where it runs, and where the prefix's KV cache is kept")
    prompt_tokens: int
    cached_first: int = Field(description="prompt tokens served from cache on its first run (in a loop: its first "
                                          "iteration)")
    cached_later: int = Field(description="prompt tokens served from cache on its loop's later iterations")
    sources: list[str] = Field(description="prefills whose KV cache it reuses (its own name: its previous iteration)")
    route: str = Field(description="local: it runs where the prefix is | moved: the call was moved there | transfer: "
                                   "the prefix's KV cache moves to it (an exec transfer)")
    runs: float = Field(description="expected executions per request")
    seconds: float = Field(description="predicted prefill seconds per execution with reuse (mean over its loop)")
    seconds_without: float = Field(description="predicted prefill seconds per execution without reuse")
    saved_s: float = Field(description="prefill seconds saved per request: runs x (seconds_without - seconds)")
    kv_bytes: float = Field(description="KV cache bytes of the longest reused prefix, kept on its devices")


class KVReuse(_M):
    reused: list[ReusedPrefix] = Field(description="each prefill that reuses a prefix (empty: none paid)")
    kept: str = Field(description="all | local (moves and transfers did not pay) | none")
    saved_prefill_s: float = Field(description="prefill seconds saved per request (predicted)")
    latency_ms_without: float = Field(description="this plan's predicted latency without reuse")
    energy_j_without: float = Field(description="this plan's predicted energy per request without reuse")
    ttft_ms_without: dict[str, float] = Field(default_factory=dict,
                                              description="TTFT of each reusing LLM call without reuse (predicted)")
    source: str = "predicted: cost model + single-request replay, with and without reuse (kv-reuse pass)"


class Baseline(_M):
    chip: str = Field(description="the one chip type this plan uses")
    chips: int
    power_w: float
    metrics: Metrics
    placements: list[Placement]
    note: str = ""


class ClusterDevice(_M):
    id: str
    node: str
    chip: str
    role: str


class HostSummary(_M):
    sockets: int = Field(1, description="CPU packages: power, idle power and price count once per socket")
    lanes: int = Field(DEFAULT_HOST_LANES, description="CPU ops (tools, code, retrieval) the host runs at once")


class ClusterSummary(_M):
    name: str
    devices: list[ClusterDevice]
    power_w: float
    hosts: dict[str, HostSummary] = Field(
        default_factory=dict, description="per host device: what the load simulator needs to price it as the compiler did")


class DeploymentPlan(_M):
    schema_version: str = SCHEMA_VERSION
    gimletc_version: str
    name: str
    digest: str = Field(description="sha256 of the inputs: graph text, cluster, options")
    inputs: dict[str, Any]
    objective: str
    power_budget_w: float | None
    pipeline: str
    stack: str = Field("reference", description="software stack the cost model priced: reference | fused")
    cluster: ClusterSummary
    placements: list[Placement]
    programs: dict[str, list[Step]] = Field(description="per device (or CPU lane, or link): ordered exec ops")
    transfers: list[Transfer]
    metrics: Metrics
    critical_path: list[str]
    search: Search | None = None
    overlap: dict[str, Any] = Field(default_factory=dict)
    baseline: Baseline | None = None
    speedup: float | None = Field(None, description="baseline latency / this plan's latency (>1: faster)")
    energy_ratio: float | None = Field(None, description="this plan's energy / baseline energy (<1: less energy)")
    partitions: dict[str, PartitionChoice] = Field(
        default_factory=dict, description="per LLM call: how it was partitioned, and the runner-up"
    )
    kv_reuse: KVReuse | None = Field(
        None, exclude_if=lambda v: v is None,
        description="prompt prefixes whose KV cache later calls reuse, and what that saves (kv-reuse pass)")
    ir: str = Field("", description="the compiled exec-level graph in MLIR generic text (gimletc.ir.parse_graph)")
    artifacts: list[dict[str, Any]] = Field(default_factory=list)
    artifact_root: str | None = Field(
        None, exclude_if=lambda v: v is None,
        description="folder `gimletc build` wrote the artifacts to, relative to the plan's folder (default: the plan's "
                    "folder); `gimletc run` reads no artifact that resolves outside it",
    )
    sources: dict[str, str] = Field(default_factory=dict)

    def to_json(self) -> str:
        """Deterministic JSON: sorted keys, two-space indentation, trailing newline."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2, allow_nan=False) + "\n"

    def write(self, path: str | Path) -> None:
        write_atomic(path, self.to_json())


def load_plan(path: str | Path) -> DeploymentPlan:
    """Parse and validate a plan file. Executes nothing."""
    return validate(DeploymentPlan, read_data(path), str(path))


def plan_schema() -> dict[str, Any]:
    return DeploymentPlan.model_json_schema()


def schema_text() -> str:
    """The published JSON schema (docs/plan.schema.json), deterministic."""
    return json.dumps(plan_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m gimletc.plan > docs/plan.schema.json
    import sys

    sys.stdout.write(schema_text())
