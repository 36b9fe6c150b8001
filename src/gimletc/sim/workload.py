"""What a load simulation runs: the engines, CPU pools and links of a deployment, and how each op
of its graph becomes a task on them (`Workload`); `plan_workload` builds one from a compiled plan.

`gimletc.serving.layout.serving_workload` builds the other kind, from a serving configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gimletc.cost import accounting
from gimletc.hardware.resources import DEFAULT_HOST_LANES, device_of
from gimletc.hardware.schema import Chip
from gimletc.ir import Graph, Op
from gimletc.models import get_model
from gimletc.sim.config import EngineConfig, SimulationError
from gimletc.sim.steps import StepCost, profile_for_stack

__all__ = [
    "ACCEL", "CPU", "DECODE", "DELAY", "MARK", "PREFILL", "XFER", "ZERO",
    "Classifier", "EngineSpec", "HostSpec", "TaskSpec", "Workload", "plan_workload",
]

# Task kinds.
ZERO, DELAY, CPU, XFER, PREFILL, DECODE, MARK, ACCEL = range(8)


@dataclass(frozen=True)
class EngineSpec:
    """A group of accelerators that runs one iteration at a time.

    `aux`: the devices of a second kind of group the engine drives in the same iterations (a
    speculative pair's draft group, the FFN groups of an attention/FFN split: `gimletc.sim.roles`),
    chips of type `aux_chip`; they hold that group's weights and no KV cache. `policy` and
    `engine`: its batching policy and knobs, where they differ from the simulation's (None: the
    simulation's `SimConfig.engine`)."""

    id: str
    devices: tuple[str, ...]
    chip: Chip
    node: str = ""
    aux: tuple[str, ...] = ()
    aux_chip: Chip | None = None
    policy: str | None = None
    engine: EngineConfig | None = None


@dataclass(frozen=True)
class HostSpec:
    id: str
    chip: Chip
    sockets: int = 1
    lanes: int = DEFAULT_HOST_LANES


@dataclass(slots=True)
class TaskSpec:
    """One task of a request, before per-request token adjustments."""

    kind: int
    resource: int = -1  # CPU: host; XFER: channel; PREFILL/DECODE/ACCEL: pool (-1 for DECODE: its prefill's engine)
    seconds: float = 0.0
    latency: float = 0.0  # XFER: the part of seconds that does not scale with bytes
    model: str = ""
    chips: int = 1
    tokens: int = 0
    ctx: int = 0
    seqs: int = 1
    llm: str = ""
    chunk: int = -1  # layer-streamed prefill piece i of `chunks`
    chunks: int = 1
    of: str = ""
    kv_xfer: bool = False  # DECODE: move the KV cache from its prefill's engine first (route chosen then)
    part: tuple = ()  # PREFILL/DECODE: (first layer, last layer, block) of a pipeline stage or split; () whole
    is_tool: bool = False  # CPU: a tool/code call whose time may be sampled
    label: str = ""
    prompt: tuple = ()  # PREFILL: its prompt's segments in order, as kv-reuse recorded them (prefix caching)
    prompt_tokens: tuple = ()  # and each segment's tokens


# classify(op) -> the task `op` becomes (the same TaskSpec for every request: treat it as read-only).
Classifier = Callable[[Op], TaskSpec]


@dataclass
class Workload:
    """What a simulation runs: a graph whose ops become tasks, and the resources they run on.

    `pools[i]` lists the engines (indices into `engines`) that serve pool i;
    a task of that pool goes to the one with the fewest outstanding requests.
    `route(src_engine, dst_engine, bytes)` gives (channel name, seconds) for
    KV transfers the deployment decides at run time (disaggregated search
    configurations); plan workloads carry their transfers as ops instead."""

    graph: Graph
    classify: Classifier
    engines: list[EngineSpec]
    pools: list[tuple[int, ...]]
    pool_names: list[str]
    hosts: list[HostSpec]
    engine_models: list[list[tuple[str, int, tuple]]]  # per engine: (model name, chips, part) it serves
    channels: list[str] = field(default_factory=list)
    route: Callable[[int, int, float], tuple[str, float]] | None = None
    name: str = "graph"
    stack_profile: str = "calibrated"  # the profile used when the SimConfig names none
    chips: int = 0  # accelerators used
    power_w: float = 0.0  # their TDP
    price_per_hour: float = 0.0


# ---- plans -------------------------------------------------------------------------------------


def _devs_of(op: Op) -> tuple[str, ...]:
    ds = op.attr("devices")
    if isinstance(ds, tuple) and ds:
        return tuple(dict.fromkeys(device_of(str(d)) for d in ds))
    d = op.attr("device")
    return (device_of(str(d)),) if isinstance(d, str) else ()


class _PlanLayout:
    """A compiled exec-level graph laid on its cluster: every placed group of accelerators is an
    engine (groups that share a device take turns on it), every host a CPU pool, every channel a
    link; `classify` says which task an op becomes on them."""

    def __init__(self, graph: Graph, devices: Mapping[str, tuple[str, Chip, str]], sockets: Mapping[str, int],
                 stack: str, lanes: Mapping[str, int]):
        self.devices = devices
        self.order = {d: i for i, d in enumerate(devices)}
        self.group_idx: dict[tuple[str, ...], int] = {}
        self.engines: list[EngineSpec] = []
        for op, _ in graph.walk():
            if op.kind != "exec.compute":
                continue
            ds = _devs_of(op)
            if not ds or all(self.is_host(d) for d in ds):
                continue
            accel = self.accelerators(ds)
            if accel in self.group_idx:
                continue
            kinds = {devices[d][1].name for d in accel}
            if len(kinds) > 1:
                raise SimulationError(f"op @{op.name}: runs on different chips at once ({', '.join(sorted(kinds))})")
            self.group_idx[accel] = len(self.engines)
            self.engines.append(EngineSpec("+".join(accel), accel, devices[accel[0]][1], devices[accel[0]][0]))
        hosts_ids = [d for d, info in devices.items() if info[2] == "host"]
        self.host_idx = {h: i for i, h in enumerate(hosts_ids)}
        self.hosts = [HostSpec(h, devices[h][1], sockets.get(h, 1), lanes.get(h, DEFAULT_HOST_LANES)) for h in hosts_ids]
        self.channels: list[str] = []
        self.chan_idx: dict[str, int] = {}
        self.prof = profile_for_stack(stack)
        self.whole: dict[tuple[str, str, int], StepCost] = {}

    def is_host(self, d: str) -> bool:
        info = self.devices.get(d)
        if info is None:
            raise SimulationError(f"device {d!r} of the plan's graph is not in its cluster")
        return info[2] == "host"

    def accelerators(self, ds: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted((d for d in ds if not self.is_host(d)), key=self.order.__getitem__))

    def engine_for(self, ds: tuple[str, ...]) -> int:
        return self.group_idx[self.accelerators(ds)]

    def scaled_part(self, op: Op, ko: str, chip: Chip, n: int) -> tuple:
        """() when the op's compiled seconds are the whole model's; else ("scaled", time ratio, KV ratio)."""
        secs = float(op.attr("seconds", 0.0)) * int(op.attr("chunks", 1))
        if secs <= 0 or (ko == "model.prefill" and op.attr("kv_reuse") is not None):
            return ()  # a prefill priced for a reused prefix is the whole model's (the simulator prices hits itself)
        key = (str(op.attr("model")), chip.name, n)
        cost = self.whole.get(key)
        if cost is None:
            cost = self.whole[key] = StepCost(get_model(key[0]), chip, n, self.prof)
        seqs, tokens, ctx = int(op.attr("batch", 1)), int(op.attr("tokens", 1)), int(op.attr("ctx", 0))
        if ko == "model.prefill":
            mine = cost.prefill(seqs, tokens, ctx)[0]
        else:
            mine = tokens * cost.decode(seqs, ctx + tokens // 2)[0]
        ratio = secs / mine if mine > 0 else 1.0
        if abs(ratio - 1.0) <= 1e-3:
            return ()
        kv_ratio = ratio
        kv_res = [v for v in op.results if v.type.kind == "kv"]
        if ko == "model.prefill" and kv_res:
            full = cost.kv_bytes(ctx + tokens, seqs)
            kv_ratio = kv_res[0].type.nbytes / full if full > 0 else ratio
        return ("scaled", round(ratio, 9), round(min(1.0, kv_ratio), 9))

    def model_step(self, op: Op, ko: str, ds: tuple[str, ...], label: str) -> TaskSpec:
        """A prefill or decode: batched by the engine of its accelerators, priced for its layers."""
        if not self.accelerators(ds):
            raise SimulationError(f"op @{op.name}: the {ko} runs on host {', '.join(ds) or '(none)'}; the load "
                                  "simulator batches model steps on accelerators only")
        e = self.engine_for(ds)
        n = len([d for d in ds if not self.is_host(d)])
        layers = op.attr("layers")
        if layers is not None:
            part: tuple = (int(layers[0]), int(layers[1]), None)
        else:
            part = self.scaled_part(op, ko, self.engines[e].chip, n)
        spec = TaskSpec(
            PREFILL if ko == "model.prefill" else DECODE,
            resource=e, model=str(op.attr("model")), chips=n, tokens=int(op.attr("tokens", 1)),
            ctx=int(op.attr("ctx", 0)), seqs=int(op.attr("batch", 1)), llm=str(op.attr("llm", "") or ""),
            of=label, label=label, part=part,
        )
        if ko == "model.prefill" and op.attr("prompt") is not None:
            spec.prompt = tuple(str(x) for x in op.attr("prompt"))
            spec.prompt_tokens = tuple(int(x) for x in op.attr("prompt_tokens", ()))
        if ko == "model.prefill" and op.attr("chunk") is not None:
            spec.chunk, spec.chunks = int(op.attr("chunk")), int(op.attr("chunks", 1))
            if spec.chunk > 0:
                spec.kind = MARK
        return spec

    def classify(self, op: Op) -> TaskSpec:
        k = op.kind
        if k == "exec.compute":
            ko = str(op.attr("kind_of", ""))
            ds = _devs_of(op)
            secs = float(op.attr("seconds", 0.0))
            label = str(op.attr("of", op.name))
            if ko in ("model.prefill", "model.decode"):
                return self.model_step(op, ko, ds, label)
            if secs <= 0:
                return TaskSpec(ZERO, label=label)
            if ds and all(self.is_host(d) for d in ds):
                return TaskSpec(CPU, resource=self.host_idx[ds[0]], seconds=secs,
                                is_tool=ko in ("agent.tool", "agent.code"), label=label)
            if ds:
                return TaskSpec(ACCEL, resource=self.engine_for(ds), seconds=secs, label=label)
            return TaskSpec(DELAY, seconds=secs, label=label)
        if k == "exec.send":
            ch = str(op.attr("channel", f"{op.attr('src')}->{op.attr('dst')}"))
            if ch not in self.chan_idx:
                self.chan_idx[ch] = len(self.channels)
                self.channels.append(ch)
            return TaskSpec(XFER, resource=self.chan_idx[ch], seconds=float(op.attr("seconds", 0.0)),
                            latency=float(op.attr("latency", 0.0)), label=op.name)
        if k == "exec.convert":
            secs = float(op.attr("seconds", 0.0))
            return TaskSpec(DELAY if secs > 0 else ZERO, seconds=secs, label=op.name)
        secs = float(op.attr("seconds", 0.0)) if isinstance(op.attr("seconds"), (int, float)) else 0.0
        return TaskSpec(DELAY if secs > 0 else ZERO, seconds=secs, label=op.name)


def plan_workload(graph: Graph, devices: Mapping[str, tuple[str, Chip, str]], name: str = "graph",
                  sockets: Mapping[str, int] | None = None, stack: str = "reference",
                  lanes: Mapping[str, int] | None = None) -> Workload:
    """A workload that runs a compiled exec-level graph as placed.

    `devices` maps each device id to (node, chip, role: "accelerator" or "host").
    Every group of accelerators an op is placed on becomes an engine (groups that
    share a device take turns on it); every host becomes a CPU pool; every
    channel a link."""
    lay = _PlanLayout(graph, devices, sockets or {}, stack, lanes or {})
    engines = lay.engines
    pools = [(i,) for i in range(len(engines))]
    engine_models: list[list[tuple[str, int, tuple]]] = [[] for _ in engines]
    # Classify every op once now: it fills the channel table and each engine's models.
    for op, _ in graph.walk():
        if op.regions or op.kind == "agent.yield":
            continue
        s = lay.classify(op)
        if s.kind in (PREFILL, DECODE, MARK):
            pair = (s.model, s.chips, s.part)
            if pair not in engine_models[s.resource]:
                engine_models[s.resource].append(pair)
    specs = {op.name: lay.classify(op) for op, _ in graph.walk() if not op.regions and op.kind != "agent.yield"}

    def cached(op: Op) -> TaskSpec:
        return specs[op.name]

    used = sorted({d for e in engines for d in e.devices})
    power = sum(accounting.power_w(devices[d][1]) for d in used)
    price = sum(accounting.hourly_usd(devices[d][1]) for d in used)
    return Workload(graph, cached, engines, pools, [e.id for e in engines], lay.hosts, engine_models, lay.channels,
                    None, name, lay.prof.name, len(used), power, price)
