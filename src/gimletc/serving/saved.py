"""Search results saved for deployment: `gimletc search --save FILE` writes one versioned JSON
document (`SavedSearch`, schema in docs/serving.md and docs/search.schema.json), and
`load_search_result` reads one back, validated: the file's fields (unknown ones are errors), and
that every configuration is one the search could have made (roles, units, chip counts).

What a saved configuration says is what `gimletc deploy` needs to start engines: per model its
mode and dtypes; per group its role, chip type, parallelism (tp, dp, ep), replicas, batching
policy and the knobs the engine runs with, and each engine's devices; the workload's shape and
SLO it was chosen for; and the figures behind the choice, each saying where it came from
(cost model or simulation). Writing is deterministic (sorted keys, fixed indentation) and
atomic; loading parses JSON and executes nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gimletc._io import read_data, validate, write_atomic
from gimletc.errors import ConfigError
from gimletc.hardware import Cluster, get_chip
from gimletc.ir import Graph
from gimletc.serving.layout import (
    EngineKind,
    Group,
    ModelServing,
    ServingConfig,
    Speculation,
    Split,
    serving_workload,
)
from gimletc.serving.search import Call, Evaluation, Recommendation, SearchResult, SearchSettings
from gimletc.sim.config import SimConfig
from gimletc.sim.metrics import SLO
from gimletc.sim.policies import batch_params, policy_name
from gimletc.sim.steps import profile_for_stack

__all__ = ["FORMAT", "VERSION", "SavedSearch", "document_text", "load_search_result", "recommendation_document",
           "save_recommendation", "save_search", "saved_schema_text", "search_document"]

FORMAT = "gimletc-search"
VERSION = 1


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SavedCall(_M):
    llm: str = Field(description="the LLM call's name in the graph")
    prompt_tokens: int = Field(ge=1)
    context_tokens: int = Field(ge=0, description="tokens cached before the prompt")
    output_tokens: int = Field(ge=1)
    sequences: int = Field(ge=1, description="sequences per execution (the call's batch)")
    runs_per_request: float = Field(ge=0, description="expected executions per request (loops, branches)")
    first: bool = Field(description="the request's first LLM call: its TTFT is the request's")
    draft: str | None = Field(None, description="draft model the call names for speculative decoding")


class SavedModel(_M):
    weight_dtype: str
    kv_dtype: str
    calls: list[SavedCall]


class SavedSLO(_M):
    ttft_ms: float | None = Field(None, gt=0)
    tpot_ms: float | None = Field(None, gt=0)
    share: float = Field(gt=0, le=1, description="share of requests that must meet both targets")


class Batching(_M):
    """The knobs the engines of a group run with (the policy's defaults resolved as the engine resolves them)."""

    max_batch: int = Field(ge=1, description="running-set cap, sequences")
    max_prefill_tokens: int = Field(ge=1, description="token budget per iteration")
    chunked_prefill: bool
    chunk_tokens: int = Field(ge=0)


class SavedEngine(_M):
    id: str
    devices: list[str] = Field(min_length=1, description="device ids (node.chip.index) of this engine")
    aux_devices: list[str] = Field(default_factory=list,
                                   description="spec: the paired draft engine's devices; attn-ffn: the unit's FFN devices")


class SavedGroup(_M):
    role: Literal["agg", "prefill", "decode", "verify", "draft", "attn", "ffn"]
    chip: str
    tp: int = Field(ge=1, description="tensor-parallel size")
    dp: int = Field(1, ge=1, description="attention data-parallel ranks (each of tp chips)")
    ep: int = Field(1, ge=1, description="expert-parallel size: tp x dp when dp > 1, else 1")
    replicas: int = Field(ge=1)
    policy: str = Field(description="batching policy: vllm, sglang, trtllm or prefill-first")
    batching: Batching
    engines: list[SavedEngine] = Field(default_factory=list, description="where each engine runs (spec and attn-ffn: "
                                       "listed on the verify and attn groups, one per unit)")


class SavedSpec(_M):
    draft: str
    k: int = Field(ge=1, description="draft tokens per round")
    acceptance: float = Field(ge=0, le=1, description="per-token acceptance the prediction assumed")


class SavedSplit(_M):
    attn: int = Field(ge=1, description="attention engines per unit (M)")
    ffn: int = Field(ge=1, description="FFN engines per unit (N)")
    micro_batches: int = Field(ge=1)


class SavedModelServing(_M):
    model: str
    mode: Literal["agg", "disagg", "spec", "attn-ffn"]
    chunked_prefill: bool
    weight_dtype: str
    kv_dtype: str
    groups: list[SavedGroup] = Field(min_length=1)
    spec: SavedSpec | None = None
    split: SavedSplit | None = None


class Predicted(_M):
    req_s: float = Field(ge=0, description="requests/s the cost model predicts the configuration serves")
    band_rel: float | None = Field(None, ge=0, description="the prediction's relative band (cost model's held-out error)")
    source: str = "cost model (stage 1 of the search)"


class Simulated(_M):
    rate_req_s: float = Field(ge=0, description="the arrival rate of this operating point (the goodput, or the "
                                                "recommended rate)")
    attainment: float = Field(ge=0, le=1, description="share of requests within the SLO there")
    tok_s: float = Field(ge=0)
    tok_s_per_chip: float = Field(ge=0)
    tok_s_per_user: float = Field(ge=0)
    tok_per_joule: float = Field(ge=0, description="output tokens per joule of TDP")
    tok_per_dollar: float | None = None
    ttft_p90_ms: float | None = None
    tpot_p90_ms: float | None = None
    requests: int = Field(ge=1, description="requests simulated")
    source: str = "load simulator (Poisson arrivals)"


class SavedConfig(_M):
    rank: int = Field(ge=1)
    label: str
    chips: dict[str, int] = Field(description="chips per chip type")
    power_w: float = Field(ge=0, description="TDP of those chips")
    price_per_hour: float | None = None
    models: list[SavedModelServing] = Field(min_length=1)
    predicted: Predicted
    simulated: Simulated | None = None
    chosen_for: list[str] = Field(default_factory=list,
                                  description="what it is best at: per_chip, per_watt, per_dollar (search); "
                                              "chips, power, price (recommend)")


class SavedSearch(_M):
    format: Literal["gimletc-search"]
    version: Literal[1]
    kind: Literal["search", "recommend"]
    graph: str
    cluster: str
    stack: str = Field(description="software stack the step times model")
    policy: str = Field(description="the batching policy engines run unless their group names another")
    slo: SavedSLO
    rate_req_s: float | None = Field(None, gt=0, description="recommend: the rate the configurations serve")
    workload: dict[str, SavedModel] = Field(description="per model: dtypes and LLM calls per request")
    settings: dict[str, Any] = Field(description="the search's settings (SearchSettings.to_dict)")
    configurations: list[SavedConfig]

    def configs(self) -> list[ServingConfig]:
        """Each configuration as the search made it (the loader has checked each one builds); a group running
        the document's default policy comes back with none of its own."""
        return [_config(c, self.policy) for c in self.configurations]

    def slo_(self) -> SLO:
        s = self.slo
        return SLO(None if s.ttft_ms is None else s.ttft_ms / 1e3, None if s.tpot_ms is None else s.tpot_ms / 1e3,
                   s.share)


def _config(c: SavedConfig, default_policy: str | None = None) -> ServingConfig:
    models = []
    for m in c.models:
        groups = tuple(Group(g.role, EngineKind(g.chip, g.tp, g.dp), g.replicas,
                             None if g.policy == default_policy else g.policy) for g in m.groups)
        spec = Speculation(m.spec.draft, m.spec.k, m.spec.acceptance) if m.spec else None
        split = Split(m.split.attn, m.split.ffn, m.split.micro_batches) if m.split else None
        models.append(ModelServing(m.model, m.mode, groups, m.chunked_prefill, spec, split))
    return ServingConfig(tuple(models))


def load_search_result(path: str | Path) -> SavedSearch:
    """Parse and validate a saved search result; one-line ConfigError naming the file and what is wrong."""
    src = str(path)
    d = read_data(path)
    if isinstance(d, dict) and d.get("format") != FORMAT:
        raise ConfigError(f"{src}: not a saved search result (format {d.get('format')!r}; "
                          f"write one with gimletc search ... --save FILE)")
    if isinstance(d, dict) and d.get("version") != VERSION:
        raise ConfigError(f"{src}: saved search version {d.get('version')!r}; this gimletc reads version {VERSION}")
    s = validate(SavedSearch, d, src)
    for i, c in enumerate(s.configurations):
        where = f"{src}: configurations[{i}] ({c.label})"
        try:
            cfg = _config(c, s.policy)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        for m in c.models:
            for g in m.groups:
                try:
                    get_chip(g.chip)
                except Exception as e:  # noqa: BLE001 - the catalog's own error, as one line
                    raise ConfigError(f"{where}: {e}") from None
                if g.ep != (g.tp * g.dp if g.dp > 1 else 1):
                    raise ConfigError(f"{where}: {m.model} {g.role} group: ep {g.ep} is not tp x dp "
                                      f"({g.tp} x {g.dp}) with dp > 1, or 1")
        if cfg.chips() != dict(sorted(c.chips.items())):
            raise ConfigError(f"{where}: chips {c.chips} are not what its groups use ({cfg.chips()})")
        if [x.model for x in c.models] != [x.model for x in cfg.models] or \
                any(m.model not in s.workload for m in c.models):
            raise ConfigError(f"{where}: a model it serves is not in the workload")
    return s


def _knobs(sim: SimConfig, model: str, kind: EngineKind, chunked: bool, policy: str | None) -> Batching:
    """The knobs one engine of `kind` runs `model` with under the search's engine settings."""
    chip = get_chip(kind.chip)
    m = sim.model(model)
    ec = replace(sim.engine, chunked_prefill=chunked, policy=policy or sim.engine.policy)
    room = max(1.0, chip.capacity_bytes * kind.chips * ec.mem_fraction - m.weight_bytes)
    p = batch_params(replace(sim, engine=ec), m, chip, room / max(m.kv_cache_bytes(1), 1e-30))
    return Batching(max_batch=p.max_batch, max_prefill_tokens=p.max_tokens, chunked_prefill=p.chunked,
                    chunk_tokens=p.chunk_tokens)


def _saved_config(rank: int, cfg: ServingConfig, graph: Graph, cluster: Cluster, sim: SimConfig, predicted: float,
                  band_rel: float | None, simulated: Simulated | None, chosen_for: list[str]) -> SavedConfig:
    wl = serving_workload(graph, cluster, cfg, sim)
    default = policy_name(sim, (sim.profile or profile_for_stack(None)).name)
    engines: dict[tuple[str, str], list[SavedEngine]] = {}
    for e in wl.engines:
        model, rest = e.id.rsplit("/", 1)
        role = rest.rstrip("0123456789")
        role = {"spec": "verify", "afd": "attn"}.get(role, role)
        engines.setdefault((model, role), []).append(SavedEngine(id=e.id, devices=list(e.devices),
                                                                 aux_devices=list(e.aux)))
    chunked = any(m.chunked for m in cfg.models)
    models = []
    for m in cfg.models:
        mm = sim.model(m.model)
        groups = []
        taken: dict[str, int] = {}
        for g in m.groups:
            pol = g.policy or default
            mine = engines.get((m.model, g.role), [])
            start = taken.get(g.role, 0)
            n = m.units if g.role in ("verify", "attn") else (0 if g.role in ("draft", "ffn") else g.replicas)
            taken[g.role] = start + n
            batching_model = m.spec.draft if g.role == "draft" and m.spec else m.model
            groups.append(SavedGroup(role=g.role, chip=g.kind.chip, tp=g.kind.tp, dp=g.kind.dp, ep=g.kind.ep,  # type: ignore[arg-type]
                                     replicas=g.replicas, policy=pol,
                                     batching=_knobs(sim, batching_model, g.kind, chunked, pol),
                                     engines=mine[start:start + n]))
        models.append(SavedModelServing(
            model=m.model, mode=m.mode, chunked_prefill=m.chunked, weight_dtype=mm.weight_dtype, kv_dtype=mm.kv_dtype,
            groups=groups,
            spec=SavedSpec(draft=m.spec.draft, k=m.spec.k, acceptance=m.spec.acceptance) if m.spec else None,
            split=SavedSplit(attn=m.split.attn, ffn=m.split.ffn, micro_batches=m.split.micro) if m.split else None))
    return SavedConfig(rank=rank, label=cfg.label, chips=cfg.chips(), power_w=cfg.power_w(),
                       price_per_hour=cfg.price_per_hour(), models=models,
                       predicted=Predicted(req_s=predicted, band_rel=band_rel), simulated=simulated,
                       chosen_for=chosen_for)


def _simulated(e: Evaluation, requests: int) -> Simulated | None:
    at = e.at_goodput
    if at is None or e.goodput_req_s <= 0:
        return None
    return Simulated(rate_req_s=at.rate, attainment=at.attainment, tok_s=at.throughput_tok_s,
                     tok_s_per_chip=at.throughput_tok_s / e.chips if e.chips else 0.0, tok_s_per_user=at.tok_s_per_user,
                     tok_per_joule=at.throughput_tok_s / e.power_w if e.power_w else 0.0,
                     tok_per_dollar=(at.throughput_tok_s * 3600.0 / e.price_per_hour) if e.price_per_hour else None,
                     ttft_p90_ms=at.ttft_p90_ms, tpot_p90_ms=at.tpot_p90_ms, requests=requests)


def _workload(calls: dict[str, list[Call]], sim: SimConfig) -> dict[str, SavedModel]:
    out = {}
    for model, cs in sorted(calls.items()):
        m = sim.model(model)
        out[model] = SavedModel(weight_dtype=m.weight_dtype, kv_dtype=m.kv_dtype,
                                calls=[SavedCall(**c.to_dict()) for c in cs])
    return out


def _document(kind: str, graph: Graph, cluster: Cluster, slo: SLO, settings: SearchSettings, calls: dict[str, list[Call]],
              configs: list[SavedConfig], rate: float | None = None) -> SavedSearch:
    sim = settings.sim
    prof = sim.profile or profile_for_stack(None)
    s = slo.to_dict()
    return SavedSearch(format=FORMAT, version=VERSION, kind=kind, graph=str(graph.attrs.get("gimlet.name", "graph")),  # type: ignore[arg-type]
                       cluster=cluster.name, stack=prof.stack, policy=policy_name(sim, prof.name),
                       slo=SavedSLO(ttft_ms=s["ttft_ms"], tpot_ms=s["tpot_ms"], share=s["share"]), rate_req_s=rate,
                       workload=_workload(calls, sim), settings=json.loads(json.dumps(settings.to_dict())),
                       configurations=configs)


def document_text(doc: SavedSearch) -> str:
    """The file's text: deterministic JSON (sorted keys, two-space indentation)."""
    return json.dumps(doc.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=False) + "\n"


def save_search(path: str | Path, result: SearchResult, graph: Graph, cluster: Cluster) -> SavedSearch:
    """Write `search_document` to `path` (atomically); returns what was written."""
    doc = search_document(result, graph, cluster)
    write_atomic(path, document_text(doc))
    return doc


def save_recommendation(path: str | Path, rec: Recommendation, graph: Graph, cluster: Cluster) -> SavedSearch:
    """Write `recommendation_document` to `path` (atomically); returns what was written."""
    doc = recommendation_document(rec, graph, cluster)
    write_atomic(path, document_text(doc))
    return doc


def search_document(result: SearchResult, graph: Graph, cluster: Cluster) -> SavedSearch:
    """Every simulated configuration of a search, best goodput per chip first."""
    best = {m: {id(e) for e in result.top(m, 1)} for m in ("per_chip", "per_watt", "per_dollar")}
    configs = []
    for i, e in enumerate(result.top("per_chip", len(result.evaluations)), 1):
        configs.append(_saved_config(i, e.config, graph, cluster, result.settings.sim, e.predicted_req_s,
                                     e.band.rel if e.band else None, _simulated(e, result.settings.requests),
                                     [m for m in best if id(e) in best[m] and e.goodput_req_s > 0]))
    return _document("search", graph, cluster, result.slo, result.settings, result.calls, configs)


def recommendation_document(rec: Recommendation, graph: Graph, cluster: Cluster) -> SavedSearch:
    """A recommendation's configurations (one per distinct configuration, saying which objectives chose it)."""
    order: list[Evaluation] = []
    chosen: dict[int, list[str]] = {}
    for objective, e in rec.picks.items():
        same = next((x for x in order if x.config == e.config), None)
        if same is None:
            order.append(e)
            same = e
        chosen.setdefault(id(same), []).append(objective)
    configs = [_saved_config(i, e.config, graph, cluster, rec.settings.sim, e.predicted_req_s,
                             e.band.rel if e.band else None, _simulated(e, rec.settings.requests), chosen[id(e)])
               for i, e in enumerate(order, 1)]
    return _document("recommend", graph, cluster, rec.slo, rec.settings, rec.calls, configs, rec.rate)


def saved_schema_text() -> str:
    """The published JSON schema of a saved search (docs/search.schema.json), deterministic."""
    return json.dumps(SavedSearch.model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m gimletc.serving.saved > docs/search.schema.json
    import sys

    sys.stdout.write(saved_schema_text())
