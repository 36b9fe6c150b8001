"""Serving configurations: how a graph's models are laid out as engines on a cluster, by role, and
the load-simulator workload that runs them.

A configuration gives each model of the graph one *mode* and its engines in *groups*: a group
is `replicas` engines of one `EngineKind` (a chip type, a tensor-parallel size `tp`, and `dp`
attention data-parallel ranks, each of `tp` chips, whose experts are sharded over all `tp x dp`
chips: expert parallelism) serving one *role*:

| mode | roles | what an engine does |
|---|---|---|
| `agg` | `agg` | prefill and decode of a request (the decode stays where its KV cache is) |
| `disagg` | `prefill`, `decode` | prefill replicas hand each KV cache over the cluster's route to the least-loaded decode replica |
| `spec` | `verify`, `draft` | a unit is one verify engine (the target model: prefill, then verification of the draft's k tokens per round) and one draft engine (the draft model proposing them); `replicas` counts units, the same in both groups |
| `attn-ffn` | `prefill`, `attn`, `ffn` | prefill replicas as in `disagg`; a decode unit is M attention engines feeding N FFN engines (`Split`), with ping-pong micro-batches |

Each role may mix chip types: several groups of one role (prefill on H100 and H200 together)
form one pool, and a request goes to the engine of the pool with the fewest outstanding jobs.
A speculative or attention/FFN unit has one kind per side. Each group may name its own
batching policy (None: the simulation's).

Engines are laid on concrete devices: groups in order (prefill first), per chip type, nodes in
file order, aligned blocks of an engine's chips inside one node. The simulator runs a
speculative or attention/FFN unit as one engine whose second side is its aux devices, priced
by `gimletc.sim.roles`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from gimletc.errors import ConfigError
from gimletc.hardware import Cluster, get_chip
from gimletc.ir import Graph, Op
from gimletc.passes.costs import op_seconds
from gimletc.sim.config import POLICIES, EngineConfig, SimConfig
from gimletc.sim.policies import batch_params
from gimletc.sim.steps import profile_for_stack
from gimletc.sim.workload import CPU, DECODE, PREFILL, ZERO, EngineSpec, HostSpec, TaskSpec, Workload

__all__ = ["MODES", "ROLES", "EngineKind", "Group", "ModelServing", "ServingConfig", "Speculation", "Split",
           "lower_to_model_level", "serving_workload"]

Mode = Literal["agg", "disagg", "spec", "attn-ffn"]
MODES: tuple[str, ...] = ("agg", "disagg", "spec", "attn-ffn")
ROLES: tuple[str, ...] = ("agg", "prefill", "decode", "verify", "draft", "attn", "ffn")
MODE_ROLES: dict[str, tuple[str, ...]] = {"agg": ("agg",), "disagg": ("prefill", "decode"),
                                          "spec": ("verify", "draft"), "attn-ffn": ("prefill", "attn", "ffn")}


@dataclass(frozen=True, order=True)
class EngineKind:
    """An engine: `tp x dp` chips of type `chip`. `tp`: tensor-parallel size; `dp` > 1: attention
    data-parallel ranks of `tp` chips each, with the experts (or the FFN) sharded over all of the
    engine's chips (expert parallelism, EP = tp x dp)."""

    chip: str
    tp: int
    dp: int = 1

    def __post_init__(self) -> None:
        if self.tp < 1 or self.dp < 1:
            raise ConfigError(f"engine kind {self.chip}: tp and dp must be >= 1; got tp={self.tp}, dp={self.dp}")

    @property
    def chips(self) -> int:
        return self.tp * self.dp

    @property
    def ep(self) -> int:
        """Expert-parallel size: 1 for tensor parallelism alone."""
        return self.chips if self.dp > 1 else 1

    @property
    def label(self) -> str:
        return f"{self.chip} TP{self.tp}" + (f" DP{self.dp} EP{self.ep}" if self.dp > 1 else "")

    @property
    def part(self) -> tuple:
        """The simulator's cost part for one engine of this kind (gimletc.sim.roles)."""
        return ("dp", self.dp) if self.dp > 1 else ()

    def to_dict(self) -> dict:
        return {"chip": self.chip, "tp": self.tp, "dp": self.dp, "ep": self.ep}


@dataclass(frozen=True)
class Group:
    """`replicas` engines of one kind serving one role (`policy`: their batching policy, None: the simulation's)."""

    role: str
    kind: EngineKind
    replicas: int
    policy: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"unknown serving role {self.role!r}; known: {', '.join(ROLES)}")
        if self.replicas < 1:
            raise ConfigError(f"a {self.role} group needs at least one replica; got {self.replicas}")
        if self.policy is not None and self.policy not in POLICIES:
            raise ConfigError(f"{self.role} group: unknown batching policy {self.policy!r}; "
                              f"choose one of {', '.join(POLICIES)}")

    @property
    def chips(self) -> int:
        return self.replicas * self.kind.chips

    @property
    def label(self) -> str:
        return f"{self.replicas}x {self.kind.label}"


@dataclass(frozen=True)
class Speculation:
    """A speculative pair: `draft` proposes `k` tokens a round, each accepted with probability `acceptance`."""

    draft: str
    k: int
    acceptance: float

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"speculative decoding needs k >= 1 draft tokens a round; got {self.k}")
        if not 0 <= self.acceptance <= 1:
            raise ConfigError(f"speculative acceptance must be in [0, 1]; got {self.acceptance}")


@dataclass(frozen=True)
class Split:
    """An attention/FFN decode unit: `attn` attention engines feeding `ffn` FFN engines (M:N), `micro` micro-batches."""

    attn: int
    ffn: int
    micro: int

    def __post_init__(self) -> None:
        if min(self.attn, self.ffn, self.micro) < 1:
            raise ConfigError(f"attention/FFN unit {self.attn}:{self.ffn} with {self.micro} micro-batches: "
                              "each must be >= 1")


@dataclass(frozen=True)
class ModelServing:
    """How one model is served: its mode and engine groups (see the module docstring)."""

    model: str
    mode: Mode
    groups: tuple[Group, ...]
    chunked: bool = False  # aggregated engines interleave prefill chunks with decode steps
    spec: Speculation | None = None
    split: Split | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"serving mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        allowed = MODE_ROLES[self.mode]
        for g in self.groups:
            if g.role not in allowed:
                raise ConfigError(f"{self.model}: a {self.mode} configuration has no {g.role} role "
                                  f"(its roles: {', '.join(allowed)})")
        for role in allowed:
            if not self.role(role):
                raise ConfigError(f"{self.model}: a {self.mode} configuration needs a {role} group")
        if self.mode == "spec":
            if self.spec is None:
                raise ConfigError(f"{self.model}: speculative serving needs a draft model, k and an acceptance")
            v, d = self.role("verify"), self.role("draft")
            if len(v) != 1 or len(d) != 1 or v[0].replicas != d[0].replicas:
                raise ConfigError(f"{self.model}: speculative units pair one verify and one draft engine: "
                                  "one group of each, with as many replicas")
        if self.mode == "attn-ffn":
            if self.split is None:
                raise ConfigError(f"{self.model}: attention/FFN serving needs its M:N ratio and micro-batches")
            a, f = self.role("attn"), self.role("ffn")
            if len(a) != 1 or len(f) != 1 or a[0].replicas % self.split.attn or f[0].replicas % self.split.ffn \
                    or a[0].replicas // self.split.attn != f[0].replicas // self.split.ffn:
                raise ConfigError(f"{self.model}: attention/FFN units of {self.split.attn}:{self.split.ffn} need one "
                                  "attn and one ffn group whose replicas make whole units")

    @classmethod
    def agg(cls, model: str, kind: EngineKind, x: int, chunked: bool = False) -> ModelServing:
        return cls(model, "agg", (Group("agg", kind, x),), chunked)

    @classmethod
    def disagg(cls, model: str, prefill: EngineKind, x: int, decode: EngineKind, y: int) -> ModelServing:
        return cls(model, "disagg", (Group("prefill", prefill, x), Group("decode", decode, y)))

    def role(self, role: str) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.role == role)

    @property
    def units(self) -> int:
        """Speculative pairs or attention/FFN units (0 in the other modes)."""
        if self.mode == "spec":
            return self.role("verify")[0].replicas
        if self.mode == "attn-ffn" and self.split is not None:
            return self.role("attn")[0].replicas // self.split.attn
        return 0

    def chips(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self.groups:
            out[g.kind.chip] = out.get(g.kind.chip, 0) + g.chips
        return out

    @property
    def label(self) -> str:
        def groups(role: str) -> str:
            return " + ".join(g.label for g in self.role(role))

        if self.mode == "agg":
            return f"agg {groups('agg')}" + (" chunked" if self.chunked else "")
        if self.mode == "disagg":
            return f"disagg {groups('prefill')} prefill + {groups('decode')} decode"
        if self.mode == "spec":
            assert self.spec is not None
            v, d = self.role("verify")[0], self.role("draft")[0]
            return (f"spec {v.replicas}x ({v.kind.label} verify + {d.kind.label} draft {self.spec.draft} "
                    f"k={self.spec.k})")
        assert self.split is not None
        a, f = self.role("attn")[0], self.role("ffn")[0]
        return (f"attn-ffn {groups('prefill')} prefill + {self.units}x ({self.split.attn}x {a.kind.label} attn : "
                f"{self.split.ffn}x {f.kind.label} ffn, {self.split.micro} micro-batches)")

    def to_dict(self) -> dict:
        return {
            "model": self.model, "mode": self.mode, "chunked_prefill": self.chunked,
            "groups": [{"role": g.role, **g.kind.to_dict(), "replicas": g.replicas, "policy": g.policy}
                       for g in self.groups],
            "spec": None if self.spec is None else {"draft": self.spec.draft, "k": self.spec.k,
                                                    "acceptance": self.spec.acceptance},
            "split": None if self.split is None else {"attn": self.split.attn, "ffn": self.split.ffn,
                                                      "micro_batches": self.split.micro},
        }


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

    @property
    def mixed_types(self) -> bool:
        """Whether the configuration uses more than one chip type."""
        return len(self.chips()) > 1

    def power_w(self) -> float:
        return sum(get_chip(c).tdp_w * k for c, k in self.chips().items())

    def price_per_hour(self) -> float | None:
        prices = [(get_chip(c).price_per_hour, k) for c, k in self.chips().items()]
        if any(p is None for p, _ in prices):
            return None
        return sum(p * k for p, k in prices)  # type: ignore[operator]

    def to_dict(self) -> dict:
        return {"label": self.label, "chips": self.chips(), "models": [m.to_dict() for m in self.models]}


def lower_to_model_level(graph: Graph, cluster: Cluster) -> Graph:
    """The agent graph with every LLM call split into prefill and decode (expand-llm, partition-phase)."""
    from gimletc.passes.manager import PassContext, PassManager

    if graph.attrs.get("gimlet.level") == "model" or any(op.kind == "model.prefill" for op, _ in graph.walk()):
        return graph
    ctx = PassContext(cluster=cluster, objective="latency", power_budget_w=None, pins={}, dump_after=frozenset(),
                      progress=None)
    return PassManager("expand-llm,partition-phase").run(graph, ctx)


class _Devices:
    """Free accelerators per chip type: per node in file order, device ids in order."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.free: dict[str, list[tuple[str, list[str]]]] = {}
        for node in cluster.nodes:
            for chip, count in node.chips.items():
                self.free.setdefault(chip, []).append((node.name, [f"{node.name}.{chip}.{i}" for i in range(count)]))

    def take(self, eid: str, kind: EngineKind) -> tuple[str, tuple[str, ...]]:
        """An aligned block of the kind's chips inside one node."""
        n = kind.chips
        for node, devs in self.free.get(kind.chip, []):
            if len(devs) >= n:
                got = tuple(devs[:n])
                del devs[:n]
                return node, got
        have = sum(len(d) for _, d in self.free.get(kind.chip, []))
        raise ConfigError(f"engine {eid}: needs {n}x {kind.chip} in one node; "
                          f"{self.cluster.name} has {have} of them left in no node with {n} free")


def _scaled_knobs(sim: SimConfig, model_name: str, kind: EngineKind, times: int) -> EngineConfig:
    """The knobs of an engine that batches for `times` attention groups at once: each group's running-set cap
    and token budget, times `times` (where the simulation does not set them)."""
    chip = get_chip(kind.chip)
    m = sim.model(model_name)
    room = max(1.0, chip.capacity_bytes * kind.chips * sim.engine.mem_fraction - m.weight_bytes)
    p = batch_params(sim, m, chip, room / max(m.kv_cache_bytes(1), 1e-30))
    ec = sim.engine
    return replace(ec, max_batch=ec.max_batch or p.max_batch * times,
                   max_prefill_tokens=ec.max_prefill_tokens or p.max_tokens * times)


@dataclass
class _Engines:
    """Engines as they are laid out: specs, the models each runs, and the pools of each (model, role)."""

    specs: list[EngineSpec] = field(default_factory=list)
    models: list[list[tuple[str, int, tuple]]] = field(default_factory=list)
    pools: list[tuple[int, ...]] = field(default_factory=list)
    pool_names: list[str] = field(default_factory=list)
    pool_of: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, spec: EngineSpec, model: str, chips: int, part: tuple, pool: tuple[str, str]) -> None:
        self.specs.append(spec)
        self.models.append([(model, chips, part)])
        if pool not in self.pool_of:
            self.pool_of[pool] = len(self.pools)
            self.pools.append(())
            self.pool_names.append(f"{pool[1]}:{pool[0]}")
        p = self.pool_of[pool]
        self.pools[p] = (*self.pools[p], len(self.specs) - 1)


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

    devs = _Devices(cluster)
    es = _Engines()

    def engine(eid: str, kind: EngineKind, model: str, part: tuple, pool: tuple[str, str], policy: str | None,
               aux: tuple[str, ...] = (), aux_chip: str | None = None, knobs: EngineConfig | None = None,
               devices: tuple[str, ...] | None = None, node: str | None = None) -> None:
        if devices is None:
            node, devices = devs.take(eid, kind)
        es.add(EngineSpec(eid, devices, get_chip(kind.chip), node or "", aux, get_chip(aux_chip) if aux_chip else None,
                          policy, knobs), model, len(devices), part, pool)

    for m in config.models:
        n = {role: 0 for role in ROLES}
        # Prefill and aggregated groups first, then decode-side groups.
        for grp in sorted(m.groups, key=lambda x: x.role not in ("agg", "prefill")):
            if grp.role not in ("agg", "prefill", "decode"):
                continue
            for _ in range(grp.replicas):
                engine(f"{m.model}/{grp.role}{n[grp.role]}", grp.kind, m.model, grp.kind.part, (m.model, grp.role),
                       grp.policy)
                n[grp.role] += 1
        if m.mode == "spec":
            assert m.spec is not None
            v, d = m.role("verify")[0], m.role("draft")[0]
            for i in range(m.units):
                node, vd = devs.take(f"{m.model}/spec{i}", v.kind)
                _, dd = devs.take(f"{m.model}/spec{i}.draft", d.kind)
                r = cluster.route(vd[0], dd[0])
                link_s = r.time(4.0 * m.spec.k) + r.time(4.0 * (m.spec.k + 1))  # proposed tokens out, verdict back
                part = ("spec", m.spec.draft, d.kind.chip, d.kind.chips, m.spec.k, m.spec.acceptance, link_s)
                engine(f"{m.model}/spec{i}", v.kind, m.model, part, (m.model, "spec"), v.policy, dd, d.kind.chip,
                       devices=vd, node=node)
        elif m.mode == "attn-ffn":
            assert m.split is not None
            a, f = m.role("attn")[0], m.role("ffn")[0]
            sp = m.split
            for i in range(m.units):
                blocks = [devs.take(f"{m.model}/afd{i}.attn{j}", a.kind) for j in range(sp.attn)]
                ffn = [devs.take(f"{m.model}/afd{i}.ffn{j}", f.kind) for j in range(sp.ffn)]
                r = cluster.route(blocks[0][1][0], ffn[0][1][0])
                part = ("split", f.kind.chip, sp.ffn * f.kind.chips, sp.attn, sp.micro, r.latency, r.bandwidth)
                engine(f"{m.model}/afd{i}", a.kind, m.model, part, (m.model, "decode"), a.policy,
                       tuple(d for _, ds in ffn for d in ds), f.kind.chip,
                       knobs=_scaled_knobs(sim, m.model, a.kind, sp.attn),
                       devices=tuple(d for _, ds in blocks for d in ds), node=blocks[0][0])

    first = cluster.nodes[0]
    host = HostSpec(f"{first.name}.host", get_chip(host_chip or first.host.cpu), first.host.sockets, first.host.lanes)
    pool_of = es.pool_of

    def classify(op: Op) -> TaskSpec:
        k = op.kind
        if k in ("model.prefill", "model.decode"):
            model = str(op.attr("model"))
            ms = by_model[model]
            llm = str(op.attr("of", op.name))
            # Pools may mix engine sizes: tasks name the model alone (chips -1), each engine runs it its way.
            common = dict(model=model, tokens=int(op.attr("tokens", 1)), ctx=int(op.attr("ctx", 0)),
                          seqs=int(op.attr("batch", 1)), llm=llm, of=op.name, label=op.name, chips=-1)
            if k == "model.prefill":
                role = {"agg": "agg", "spec": "spec"}.get(ms.mode, "prefill")
                return TaskSpec(PREFILL, resource=pool_of[(model, role)], **common)
            if ms.mode in ("agg", "spec"):
                return TaskSpec(DECODE, resource=-1, **common)
            return TaskSpec(DECODE, resource=pool_of[(model, "decode")], kv_xfer=True, **common)
        if k in ("agent.tool", "agent.code", "agent.retrieve"):
            secs = op_seconds(op, host.chip)
            if secs <= 0:
                return TaskSpec(ZERO, label=op.name)
            return TaskSpec(CPU, resource=0, seconds=secs, is_tool=k != "agent.retrieve", label=op.name)
        if k.startswith("model."):
            raise ConfigError(f"op @{op.name}: {k} is not served by the load simulator's search configurations")
        return TaskSpec(ZERO, label=op.name)

    engines = es.specs

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
    # Without a profile, price as the search predicts: the default engine stack (not the reference one).
    stack = (sim.profile or profile_for_stack(None)).name
    return Workload(g, classify, engines, es.pools, es.pool_names, [host], es.models, [], route,
                    str(graph.attrs.get("gimlet.name", "graph")), stack, chips, config.power_w(), price or 0.0)
