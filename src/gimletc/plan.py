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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gimletc._io import brief_text, read_data, validate, write_atomic
from gimletc.analysis.metrics import Interval, LLMMetrics, MetricBands, Metrics
from gimletc.errors import ConfigError
from gimletc.hardware.resources import DEFAULT_HOST_LANES

__all__ = ["Baseline", "ClusterDevice", "ClusterSummary", "Comparison", "Convert", "DeploymentPlan", "HostSummary",
           "Interval", "KVReuse", "LLMMetrics", "MetricBands", "Metrics", "PartitionChoice", "Placement", "ReusedPrefix",
           "Search", "Step", "Transfer", "load_plan", "plan_schema", "schema_text"]

SCHEMA_VERSION = "1"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)



class Placement(_M):
    op: str = Field(description="op name in the compiled graph")
    kind: str = Field(description="op kind before lowering (model.prefill, agent.tool, ...)")
    llm: str | None = Field(None, description="the LLM call this phase belongs to")
    model: str | None = None
    device: str = Field(description="primary device id")
    devices: list[str] = Field(description="every device (or CPU lane) the op occupies")
    chip: str
    seconds: float = Field(ge=0, description="predicted seconds of one execution (cost model)")
    runs: float = Field(1.0, ge=0, description="expected executions per request (loops, branches)")


class Step(_M):
    op: str
    kind: str = Field(description="exec op kind")
    of: str | None = Field(None, description="the op it runs, for exec.compute")
    seconds: float = Field(ge=0)
    start_ms: float = Field(ge=0, description="predicted start in the single-request replay")
    end_ms: float = Field(ge=0)


class Convert(_M):
    op: str
    device: str
    from_layout: str
    to_layout: str
    from_dtype: str
    to_dtype: str
    seconds: float = Field(ge=0)


class Transfer(_M):
    value: str
    src: str
    dst: str
    route: str = Field(description="local | direct | host-bounce | network")
    hops: list[str] = Field(description="link kinds crossed")
    bytes: float = Field(ge=0)
    seconds: float = Field(ge=0, description="latency + bytes / bandwidth summed over hops (cost model)")
    chunks: int = Field(1, ge=1, description="layer-streamed pieces (overlap pass)")
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
    chips: int = Field(ge=1)
    power_w: float = Field(ge=0)
    metrics: Metrics
    placements: list[Placement]
    note: str = ""


class Comparison(_M):
    """This plan against its baseline when every prediction lies within its band (`metrics.bands`)."""

    speedup: Interval = Field(description="baseline latency / this plan's latency over their bands: "
                                          "[baseline lo / plan hi, baseline hi / plan lo]")
    energy_ratio: Interval = Field(description="this plan's energy / baseline energy over their bands")
    latency: Literal["faster", "slower", "not distinguishable"] = Field(
        description="not distinguishable when the two latency bands overlap (the speedup interval holds 1)")
    energy: Literal["less", "more", "not distinguishable"] = Field(
        description="not distinguishable when the two energy bands overlap")


class ClusterDevice(_M):
    id: str
    node: str
    chip: str
    role: str


class HostSummary(_M):
    sockets: int = Field(1, ge=1, description="CPU packages: power, idle power and price count once per socket")
    lanes: int = Field(DEFAULT_HOST_LANES, ge=1, description="CPU ops (tools, code, retrieval) the host runs at once")


class ClusterSummary(_M):
    name: str
    devices: list[ClusterDevice]
    power_w: float = Field(ge=0)
    hosts: dict[str, HostSummary] = Field(
        default_factory=dict, description="per host device: what the load simulator needs to price it as the compiler did")


class DeploymentPlan(_M):
    schema_version: str = SCHEMA_VERSION
    gimletc_version: str
    name: str
    digest: str = Field(description="sha256 of the inputs: graph text, cluster, options")
    inputs: dict[str, Any]
    objective: str
    power_budget_w: float | None = Field(gt=0)
    pipeline: str
    stack: str = Field("reference", description="software stack the cost model priced: vllm | sglang | trtllm | reference "
                                                "(plans from before engine stacks: reference | fused)")
    cluster: ClusterSummary
    placements: list[Placement]
    programs: dict[str, list[Step]] = Field(description="per device (or CPU lane, or link): ordered exec ops")
    transfers: list[Transfer]
    metrics: Metrics
    critical_path: list[str]
    search: Search | None = None
    overlap: dict[str, Any] = Field(default_factory=dict)
    baseline: Baseline | None = None
    speedup: float | None = Field(None, ge=0, description="baseline latency / this plan's latency (>1: faster)")
    energy_ratio: float | None = Field(None, ge=0, description="this plan's energy / baseline energy (<1: less energy)")
    comparison: Comparison | None = Field(
        None, exclude_if=lambda v: v is None,
        description="speedup and energy ratio as intervals over the bands, and whether each difference is "
                    "distinguishable from the bands")
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
    warnings: list[str] = Field(
        default_factory=list,
        description="one line each: what in this plan is likely not what the user meant, e.g. a model phase on "
                    "a host CPU far slower than on an accelerator of the cluster (times from the cost model)")

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: str) -> str:
        if v != SCHEMA_VERSION:
            raise ValueError(f"plan schema version {brief_text(repr(v), 40)} is not one this gimletc reads "
                             f"({SCHEMA_VERSION!r}); recompile the plan with this version")
        return v

    @model_validator(mode="after")
    def _metrics_are_quantities(self) -> DeploymentPlan:
        """Times, energies, powers, costs and rates are finite (pydantic: allow_inf_nan=False) and >= 0."""
        for where, m in (("metrics", self.metrics), ("baseline.metrics", self.baseline.metrics if self.baseline else None)):
            if m is None:
                continue
            for name in ("latency_ms", "energy_j", "power_w", "cost_usd", "throughput_rps"):
                _non_negative(f"{where}.{name}", getattr(m, name))
            for field in ("ttft_ms", "tpot_ms", "utilisation"):
                for k, v in getattr(m, field).items():
                    _non_negative(f"{where}.{field}.{k}", v)
            if set(m.ttft_ms) != set(m.tpot_ms):
                odd = sorted(set(m.ttft_ms) ^ set(m.tpot_ms))[0]
                raise ValueError(f"{where}: LLM call {odd!r} has a TTFT or a TPOT but not both")
            for k, llm in m.llms.items():
                _non_negative(f"{where}.llms.{k}.ttft_ms", llm.ttft_ms)
                _non_negative(f"{where}.llms.{k}.tpot_ms", llm.tpot_ms)
        return self

    def to_json(self) -> str:
        """Deterministic JSON: sorted keys, two-space indentation, trailing newline. A plan without
        warnings leaves the field out (it reads back as empty), so plans written before it are unchanged."""
        data = self.model_dump(mode="json")
        if not data["warnings"]:
            del data["warnings"]
        return json.dumps(data, sort_keys=True, indent=2, allow_nan=False) + "\n"

    def write(self, path: str | Path) -> None:
        write_atomic(path, self.to_json())


def _non_negative(field: str, v: float) -> None:
    if not v >= 0:
        raise ValueError(f"{field} = {v} is not a quantity >= 0")


def load_plan(path: str | Path) -> DeploymentPlan:
    """Parse and validate a plan file: its schema and version, every quantity finite and >= 0, and
    its `ir` (the compiled graph's text) parsed and verified. Executes nothing. Errors are one-line
    ConfigErrors naming the file and the field."""
    plan = validate(DeploymentPlan, read_data(path), str(path))
    check_ir(plan, str(path))
    return plan


def check_ir(plan: DeploymentPlan, source: str) -> None:
    """Parse and verify the plan's `ir` (empty: none recorded); a ConfigError naming `source` and the field."""
    from gimletc.ir import IRError, parse_graph, verify

    if not plan.ir:
        return
    try:
        verify(parse_graph(plan.ir))
    except IRError as e:
        raise ConfigError(f"{source}: ir: {brief_text(str(e))}") from None
    except RecursionError:
        raise ConfigError(f"{source}: ir: regions nested too deeply") from None


def plan_schema() -> dict[str, Any]:
    return DeploymentPlan.model_json_schema()


def schema_text() -> str:
    """The published JSON schema (docs/plan.schema.json), deterministic."""
    return json.dumps(plan_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m gimletc.plan > docs/plan.schema.json
    import sys

    sys.stdout.write(schema_text())
