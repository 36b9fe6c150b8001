"""Serving configurations: how a graph's models are laid out as replicas on a cluster, and the
load-simulator workload that runs them.

A configuration gives each model of the graph either
- aggregated serving: `x` replicas, each an engine of `tp` chips that runs the
  prefill and the decode of a request (the decode stays where its KV cache is);
- disaggregated serving: `x` prefill replicas of one engine kind and `y`
  decode replicas of another (chip type and tensor-parallel size may differ);
  after its prefill, a request's KV cache moves over the cluster's route to the
  least-loaded decode replica, then joins that replica's batch.

Engines are laid on concrete devices: per chip type, nodes in file order,
aligned groups of `tp` devices inside one node (prefill replicas first).

Not modelled as roles yet (docs/serving.md, "Roles not yet searched"):
draft/verify pairs (the cost model prices verify steps, but the compiler
carries speculative attributes without pricing them) and attention/FFN groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gimletc.errors import ConfigError
from gimletc.hardware import Cluster, get_chip
from gimletc.ir import Graph, Op
from gimletc.passes.costs import op_seconds
from gimletc.sim.config import SimConfig
from gimletc.sim.workload import CPU, DECODE, PREFILL, ZERO, EngineSpec, HostSpec, TaskSpec, Workload

__all__ = ["EngineKind", "ModelServing", "ServingConfig", "lower_to_model_level", "serving_workload"]

Mode = Literal["agg", "disagg"]


@dataclass(frozen=True, order=True)
class EngineKind:
    """An engine: `tp` chips of type `chip`, tensor parallel."""

    chip: str
    tp: int

    @property
    def label(self) -> str:
        return f"{self.chip} TP{self.tp}"


@dataclass(frozen=True)
class ModelServing:
    """How one model is served (see the module docstring)."""

    model: str
    mode: Mode
    prefill: EngineKind  # aggregated: the replicas' kind
    x: int  # aggregated replicas, or prefill replicas
    decode: EngineKind | None = None
    y: int = 0
    chunked: bool = False  # aggregated engines interleave prefill chunks with decode steps

    def __post_init__(self) -> None:
        if self.mode not in ("agg", "disagg"):
            raise ConfigError(f"serving mode must be 'agg' or 'disagg'; got {self.mode!r}")
        if self.x < 1:
            raise ConfigError(f"{self.model}: need at least one replica; got x={self.x}")
        if self.mode == "disagg" and (self.decode is None or self.y < 1):
            raise ConfigError(f"{self.model}: disaggregated serving needs a decode kind and y >= 1")

    def chips(self) -> dict[str, int]:
        out = {self.prefill.chip: self.x * self.prefill.tp}
        if self.mode == "disagg" and self.decode is not None:
            out[self.decode.chip] = out.get(self.decode.chip, 0) + self.y * self.decode.tp
        return out

    @property
    def label(self) -> str:
        if self.mode == "agg":
            return f"agg {self.x}x {self.prefill.label}" + (" chunked" if self.chunked else "")
        assert self.decode is not None
        return f"disagg {self.x}x {self.prefill.label} prefill + {self.y}x {self.decode.label} decode"


@dataclass(frozen=True)
class ServingConfig:
    models: tuple[ModelServing, ...]

    def chips(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.models:
            for c, k in m.chips().items():
                out[c] = out.get(c, 0) + k
        return dict(sorted(out.items()))

    @property
    def total_chips(self) -> int:
        return sum(self.chips().values())

    @property
    def label(self) -> str:
        if len(self.models) == 1:
            return self.models[0].label
        return "; ".join(f"{m.model}: {m.label}" for m in self.models)

    @property
    def mode(self) -> str:
        modes = {m.mode for m in self.models}
        return modes.pop() if len(modes) == 1 else "mixed"

    def power_w(self) -> float:
        return sum(get_chip(c).tdp_w * k for c, k in self.chips().items())

    def price_per_hour(self) -> float | None:
        prices = [(get_chip(c).price_per_hour, k) for c, k in self.chips().items()]
        if any(p is None for p, _ in prices):
            return None
        return sum(p * k for p, k in prices)  # type: ignore[operator]

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "chips": self.chips(),
            "models": [
                {"model": m.model, "mode": m.mode, "prefill" if m.mode == "disagg" else "engine":
                 {"chip": m.prefill.chip, "tp": m.prefill.tp, "replicas": m.x},
                 **({"decode": {"chip": m.decode.chip, "tp": m.decode.tp, "replicas": m.y}}
                    if m.mode == "disagg" and m.decode else {}),
                 "chunked_prefill": m.chunked}
                for m in self.models
            ],
        }


def lower_to_model_level(graph: Graph, cluster: Cluster) -> Graph:
    """The agent graph with every LLM call split into prefill and decode (expand-llm, partition-phase)."""
    from gimletc.passes.manager import PassContext, PassManager

    if graph.attrs.get("gimlet.level") == "model" or any(op.kind == "model.prefill" for op, _ in graph.walk()):
        return graph
    ctx = PassContext(cluster=cluster, objective="latency", power_budget_w=None, pins={}, dump_after=frozenset(),
                      progress=None)
    return PassManager("expand-llm,partition-phase").run(graph, ctx)


def _allocate(cluster: Cluster, kinds: list[tuple[str, EngineKind]]) -> list[tuple[str, tuple[str, ...]]]:
    """Concrete device groups for engines, in order: aligned groups of tp devices inside one node."""
    free: dict[str, list[tuple[str, list[str]]]] = {}
    for node in cluster.nodes:
        for chip, count in node.chips.items():
            devs = [f"{node.name}.{chip}.{i}" for i in range(count)]
            free.setdefault(chip, []).append((node.name, devs))
    out = []
    for eid, k in kinds:
        placed = None
        for node, devs in free.get(k.chip, []):
            if len(devs) >= k.tp:
                placed = (node, tuple(devs[:k.tp]))
                del devs[:k.tp]
                break
        if placed is None:
            have = sum(len(d) for _, d in free.get(k.chip, []))
            raise ConfigError(f"engine {eid}: needs {k.tp}x {k.chip} in one node; "
                              f"{cluster.name} has {have} of them left in no node with {k.tp} free")
        out.append(placed)
    return out


def serving_workload(graph: Graph, cluster: Cluster, config: ServingConfig, sim: SimConfig | None = None,
                     host_chip: str | None = None) -> Workload:
    """The load-simulator workload of `config`: engines, pools, and how each op of the
    (model-level) graph becomes a task. Tools, code and retrieval run on the host CPU
    of the first node (its lanes); their seconds come from the compiler's cost rules."""
    sim = sim or SimConfig()
    g = lower_to_model_level(graph, cluster)
    by_model: Mapping[str, ModelServing] = {m.model: m for m in config.models}
    models_in_graph = sorted({str(op.attr("model")) for op, _ in g.walk() if op.kind in ("model.prefill", "model.decode")})
    missing = [m for m in models_in_graph if m not in by_model]
    if missing:
        raise ConfigError(f"serving configuration has no replicas for model(s) {', '.join(missing)}")

    wanted: list[tuple[str, EngineKind]] = []
    roles: list[tuple[str, str, int]] = []  # (model, role, engine index)
    for m in config.models:
        for i in range(m.x):
            role = "agg" if m.mode == "agg" else "prefill"
            wanted.append((f"{m.model}/{role}{i}", m.prefill))
            roles.append((m.model, role, len(wanted) - 1))
        if m.mode == "disagg" and m.decode is not None:
            for i in range(m.y):
                wanted.append((f"{m.model}/decode{i}", m.decode))
                roles.append((m.model, "decode", len(wanted) - 1))
    placed = _allocate(cluster, wanted)
    engines = [EngineSpec(eid, devs, get_chip(k.chip), node) for (eid, k), (node, devs) in zip(wanted, placed, strict=True)]
    pools: list[tuple[int, ...]] = []
    pool_names: list[str] = []
    pool_of: dict[tuple[str, str], int] = {}
    for model, role, e in roles:
        key = (model, role)
        if key not in pool_of:
            pool_of[key] = len(pools)
            pools.append(())
            pool_names.append(f"{role}:{model}")
        pools[pool_of[key]] = (*pools[pool_of[key]], e)
    engine_models = []
    for (eid, k), (model, _, _) in zip(wanted, roles, strict=True):
        engine_models.append([(model, k.tp, ())])

    first = cluster.nodes[0]
    host = HostSpec(f"{first.name}.host", get_chip(host_chip or first.host.cpu), first.host.sockets, first.host.lanes)
    tp_of = {(m.model, "prefill"): m.prefill.tp for m in config.models}
    tp_of.update({(m.model, "decode"): (m.decode.tp if m.mode == "disagg" and m.decode else m.prefill.tp)
                  for m in config.models})

    def classify(op: Op) -> TaskSpec:
        k = op.kind
        if k in ("model.prefill", "model.decode"):
            model = str(op.attr("model"))
            ms = by_model[model]
            llm = str(op.attr("of", op.name))
            common = dict(model=model, tokens=int(op.attr("tokens", 1)), ctx=int(op.attr("ctx", 0)),
                          seqs=int(op.attr("batch", 1)), llm=llm, of=op.name, label=op.name)
            if k == "model.prefill":
                role = "agg" if ms.mode == "agg" else "prefill"
                return TaskSpec(PREFILL, resource=pool_of[(model, role)], chips=tp_of[(model, "prefill")], **common)
            if ms.mode == "agg":
                return TaskSpec(DECODE, resource=-1, chips=tp_of[(model, "prefill")], **common)
            return TaskSpec(DECODE, resource=pool_of[(model, "decode")], chips=tp_of[(model, "decode")],
                            kv_xfer=True, **common)
        if k in ("agent.tool", "agent.code", "agent.retrieve"):
            secs = op_seconds(op, host.chip)
            if secs <= 0:
                return TaskSpec(ZERO, label=op.name)
            return TaskSpec(CPU, resource=0, seconds=secs, is_tool=k != "agent.retrieve", label=op.name)
        if k.startswith("model."):
            raise ConfigError(f"op @{op.name}: {k} is not served by the load simulator's search configurations")
        return TaskSpec(ZERO, label=op.name)

    def route(src: int, dst: int, nbytes: float) -> tuple[str, float]:
        a, b = engines[src], engines[dst]
        r = cluster.route(a.devices[0], b.devices[0])
        if r.kind == "network":
            return f"{a.node}->{b.node}", r.time(nbytes)
        # Inside a node every chip of the group sends its own shard of the cache at once.
        par = min(len(a.devices), len(b.devices))
        return f"{a.id}->{b.id}", r.time(nbytes / par)

    chips = config.total_chips
    price = config.price_per_hour()
    return Workload(g, classify, engines, pools, pool_names, [host], engine_models, [], route,
                    str(graph.attrs.get("gimlet.name", "graph")), "calibrated", chips, config.power_w(), price or 0.0)
