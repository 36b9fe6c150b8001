"""The deployment a plan asks for, as a small typed description every engine renderer reads.

`Deployment` holds the plan's engine groups (`EngineGroup`: a model served by one engine on a set of
chips, with its role, parallel sizes, formats, batching knobs and speculation), the groups no
serving engine can run (`NoEngine`: SRAM accelerators, Gaudi, host CPUs), the CPU workers of its
tools, retrieval and code ops (`CPUWorker`), and the request shape the benchmark drives
(`gimletc.deploy.request`). `from_plan` builds one from a compiled plan; `gimletc.deploy.search`
builds the same objects from a saved serving search (`gimletc search --save`), so the renderers
(`gimletc.deploy.vllm`, `.sglang`, `.dynamo`) never look at a plan.

How a plan becomes groups:
- one LLM call's prefill and decode on the same chips: an aggregated engine (role `agg`); on
  different chips: a `prefill` and a `decode` engine joined by a KV connector;
- calls of one model on the same chips share one engine (one server serves them all);
- a layer pipeline is one engine with pipeline parallelism (one stage per device group, the plan's
  uneven layer split kept); attention/FFN groups are one engine over their chips (no engine
  version here has a flag for that split, and the description says so);
- a speculative call gives its target's engine a `Speculation` (draft model, tokens drafted per
  step); a draft on other chips than the target cannot be expressed to any engine, so the engine
  drafts on the target's own chips and the description says how that differs from the plan;
- a phase on a chip with no serving engine becomes a `NoEngine` entry; where the other phase of the
  call is on a GPU, that GPU's engine serves the whole call (said in its notes).

Batching knobs are what the load simulator resolves for the engine's policy on those chips
(`gimletc simulate --json`'s `engines[].batching`): one short simulation of the plan, so the knobs
have one owner. Parallel sizes: tensor parallel = the chips of a phase (the cost model splits every
step, experts included, over them: expert parallel 1); pipeline parallel = the stages of a layer
pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gimletc.errors import ConfigError, GimletError
from gimletc.hardware import get_chip
from gimletc.hardware.resources import device_of
from gimletc.hardware.schema import Chip
from gimletc.ir import Graph, Op, parse_graph
from gimletc.ir.names import call_of_decode
from gimletc.models import get_model
from gimletc.targets.vendors import toolchain

__all__ = [
    "ENGINES", "Batching", "CPUWorker", "DeployError", "Deployment", "EngineGroup", "NoEngine", "Parallelism",
    "Speculation", "engine_chip", "from_plan", "hf_repo", "k8s_name",
]

ENGINES = ("vllm", "sglang", "dynamo")
Role = Literal["agg", "prefill", "decode"]
MEM_FRACTION = 0.9  # of each chip's memory for weights + KV cache: the load simulator's (EngineConfig.mem_fraction)


class DeployError(GimletError):
    """A plan cannot be written as a deployment: names the call, group or chip."""


@dataclass(frozen=True)
class Parallelism:
    tp: int = 1  # tensor parallel: chips per stage
    pp: int = 1  # pipeline parallel: stages
    ep: int = 1  # expert parallel (1: experts split tensor-parallel, as the cost model prices them)
    layer_split: tuple[int, ...] = ()  # layers per stage when the stages are uneven

    @property
    def chips(self) -> int:
        return self.tp * self.pp


@dataclass(frozen=True)
class Batching:
    """The knobs the engine's batching policy runs with, as the load simulator resolved them."""

    policy: str
    max_batch: int  # running requests (vLLM max_num_seqs, SGLang max_running_requests)
    max_prefill_tokens: int  # vLLM: tokens per iteration; SGLang: prompt tokens per prefill batch
    chunked: bool
    chunk_tokens: int  # SGLang's chunk size; 0 where the engine chunks by the token budget (vLLM)


@dataclass(frozen=True)
class Speculation:
    draft_model: str
    k: int  # tokens drafted per step
    acceptance: float | None  # the graph's acceptance rate (the plan's prediction assumes it)
    draft_chip: str  # where the plan drafts
    draft_devices: tuple[str, ...]
    colocated: bool  # the plan drafts on the target's own chips


@dataclass(frozen=True)
class EngineGroup:
    """One engine (times `replicas`) serving one model."""

    name: str  # a Kubernetes-safe label, unique in the deployment
    model: str  # the catalog model, with any @dtype choices (`qwen3-32b@weight=fp8,kv=fp8`)
    role: Role
    chip: str
    replicas: int
    parallel: Parallelism
    devices: tuple[str, ...] = ()  # one replica's devices (plans); () for a search result
    nodes: tuple[str, ...] = ()  # the nodes they are on
    node: str | None = None  # the node, where there is one
    calls: tuple[str, ...] = ()
    peer: str | None = None  # the other half of a disaggregated pair
    batching: Batching | None = None
    speculation: Speculation | None = None
    mem_fraction: float = MEM_FRACTION  # of each chip's memory this engine may take
    notes: tuple[str, ...] = ()
    pool: str = ""  # a search result's role group this engine is one replica of ("" for a plan's groups)

    @property
    def base_model(self) -> str:
        return self.model.rpartition("@")[0] if "@" in self.model else self.model


@dataclass(frozen=True)
class NoEngine:
    """A part of the plan no serving engine runs: what it is and what to do with it instead."""

    name: str
    model: str
    role: str  # prefill | decode | agg | draft
    chip: str
    devices: tuple[str, ...]
    calls: tuple[str, ...]
    ops: tuple[str, ...]
    reason: str
    toolchain: str | None  # the vendor toolchain that compiles its ONNX partitions (targets.vendors)
    artifacts: tuple[dict[str, Any], ...] = ()  # `gimletc build`'s artifacts of its ops, where its model is ONNX


@dataclass(frozen=True)
class CPUWorker:
    """A host's tools, retrieval and code ops: `lanes` single-CPU workers run them, as the plan's host does."""

    name: str
    host: str
    cpu: str  # the host's chip
    lanes: int
    ops: tuple[tuple[str, str, float, float], ...]  # (op, kind, predicted seconds per run, runs per request)
    cpus_per_worker: int = 1  # tools are single-threaded (gimletc.hardware.resources.DEFAULT_HOST_LANES)


@dataclass(frozen=True)
class Deployment:
    name: str
    source: str  # "plan <digest>" or "search <file>"
    stack: str  # the software stack the plan was priced for
    groups: tuple[EngineGroup, ...]
    no_engine: tuple[NoEngine, ...] = ()
    cpu_workers: tuple[CPUWorker, ...] = ()
    request: dict[str, Any] = field(default_factory=dict)  # the benchmark's request shape (gimletc.deploy.request)
    notes: tuple[str, ...] = ()
    # a search result's own prediction for the configuration, in `gimletc simulate --json`'s shape (the
    # figures the search's load simulation saved); None for a plan, which `gimletc simulate` predicts
    prediction: dict[str, Any] | None = None

    def group(self, name: str) -> EngineGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"name": self.name, "source": self.source, "stack": self.stack,
                "groups": [asdict(g) for g in self.groups], "no_engine": [asdict(n) for n in self.no_engine],
                "cpu_workers": [asdict(w) for w in self.cpu_workers], "notes": list(self.notes)}


# ---- facts about models and chips ------------------------------------------------------------------


_REPO = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+) config\.json")


def hf_repo(model: str) -> str | None:
    """The Hugging Face repository a catalog model was read from (its `source` names it), or None."""
    base = model.rpartition("@")[0] if "@" in model else model
    try:
        m = get_model(base)
    except GimletError:
        return None
    hit = _REPO.match(m.source or "")
    return hit.group(1) if hit else None


def engine_chip(chip: Chip) -> bool:
    """Whether serving engines (vLLM, SGLang, Dynamo's workers) run on `chip`: NVIDIA and AMD GPUs.
    Chips whose partitions go to a vendor toolchain (SRAM accelerators, Gaudi) and CPUs do not."""
    return chip.kind == "gpu" and toolchain(chip) is None


def k8s_name(text: str) -> str:
    """`text` as a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)."""
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (s[:63].rstrip("-")) or "group"


# ---- the plan's model ops ---------------------------------------------------------------------------

_DECODE_SIDE = ("model.decode", "model.verify", "model.attention", "model.ffn", "model.kv_rollback")


@dataclass
class _Call:
    name: str
    model: str = ""
    prefill: list[tuple[str, ...]] = field(default_factory=list)  # device groups of the target's prefill ops
    decode: list[tuple[str, ...]] = field(default_factory=list)
    stages: dict[tuple[int, int], tuple[str, ...]] = field(default_factory=dict)  # layer range -> devices
    attn: set[str] = field(default_factory=set)
    ffn: set[str] = field(default_factory=set)
    draft_model: str | None = None
    draft_devices: tuple[str, ...] = ()
    draft_k: int = 0
    acceptance: float | None = None
    ops: list[str] = field(default_factory=list)


def _devices(op: Op) -> tuple[str, ...]:
    ds = op.attr("devices")
    if isinstance(ds, tuple) and ds:
        return tuple(dict.fromkeys(device_of(str(d)) for d in ds))
    d = op.attr("device")
    return (device_of(str(d)),) if isinstance(d, str) else ()


def _calls(graph: Graph) -> dict[str, _Call]:
    """Every LLM call of the compiled graph: where its phases run."""
    calls: dict[str, _Call] = {}
    for op, _ in graph.walk():
        if op.kind != "exec.compute":
            continue
        ko = str(op.attr("kind_of", ""))
        if not ko.startswith("model."):
            continue
        llm = str(op.attr("llm") or call_of_decode(op.name) or op.name.split(".")[0])
        c = calls.setdefault(llm, _Call(llm))
        c.ops.append(op.name)
        devs = _devices(op)
        unit = str(op.attr("unit") or "")
        if ko == "model.draft" or (ko == "model.prefill" and unit.endswith(".draft")):
            c.draft_model = str(op.attr("model"))
            c.draft_devices = tuple(dict.fromkeys(c.draft_devices + devs))
            if ko == "model.draft":
                c.draft_k = int(op.attr("draft_k", 0) or 0)
            continue
        if op.attr("model"):
            c.model = c.model or str(op.attr("model"))
        layers = op.attr("layers")
        if ko == "model.prefill":
            c.prefill.append(devs)
            if isinstance(layers, tuple) and op.attr("variant") != "attn-ffn":
                c.stages[(int(layers[0]), int(layers[1]))] = devs
        elif ko in _DECODE_SIDE:
            c.decode.append(devs)
            if ko == "model.attention":
                c.attn.update(devs)
            elif ko == "model.ffn":
                c.ffn.update(devs)
            if ko == "model.verify" and op.attr("acceptance") is not None:
                c.acceptance = float(op.attr("acceptance"))
    return calls


# ---- plan -> deployment -----------------------------------------------------------------------------


@dataclass
class _Draft:
    """A group while it is being assembled."""

    model: str
    role: str
    devices: tuple[str, ...]
    calls: list[str]
    ops: list[str]
    parallel: Parallelism
    speculation: Speculation | None = None
    peer: tuple[str, ...] | None = None  # the peer's devices
    notes: list[str] = field(default_factory=list)
    spec_calls: list[str] = field(default_factory=list)  # the calls that speculate in the plan


def from_plan(plan: Any, engine: str, policy: str | None = None) -> Deployment:
    """The deployment `plan` asks for, written for `engine` (vllm | sglang | dynamo); `policy` is the
    batching policy whose knobs the engines get (default: the engine's own; Dynamo: its backend's)."""
    if engine not in ENGINES:
        raise DeployError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if not plan.ir.strip():
        raise DeployError(f"plan {plan.name}: has no compiled IR (field `ir`); recompile it with this gimletc")
    graph = parse_graph(plan.ir)
    order = {d.id: i for i, d in enumerate(plan.cluster.devices)}
    info = {d.id: d for d in plan.cluster.devices}
    chips = {d.id: get_chip(d.chip) for d in plan.cluster.devices}

    def sort(devs: Iterable[str]) -> tuple[str, ...]:
        ds = set(devs)
        missing = sorted(d for d in ds if d not in order)
        if missing:
            raise DeployError(f"plan {plan.name}: device {missing[0]} of its graph is not in its cluster")
        return tuple(sorted(ds, key=order.__getitem__))

    notes: list[str] = []
    drafts: list[_Draft] = []
    unserved: list[NoEngine] = []

    def no_engine(model: str, role: str, devs: tuple[str, ...], call: str, ops: list[str]) -> None:
        chip = chips[devs[0]]
        where = "a host CPU" if info[devs[0]].role == "host" else f"{chip.name} ({chip.vendor})"
        reason = (f"runs on {where}: vLLM, SGLang and Dynamo serve on NVIDIA and AMD GPUs only"
                  + ("; the plan warns about model phases on host CPUs" if info[devs[0]].role == "host" else ""))
        unserved.append(NoEngine(k8s_name(f"{call}-{role}"), model, role, chip.name, devs, (call,), tuple(ops),
                                 reason, toolchain(chip) if info[devs[0]].role != "host" else None))

    def served(devs: tuple[str, ...]) -> bool:
        return all(info[d].role != "host" and engine_chip(chips[d]) for d in devs)

    kinds = {name: pc.kind for name, pc in plan.partitions.items()}
    for name, c in sorted(_calls(graph).items()):
        if not c.model or not c.prefill:
            continue
        pre = sort(d for ds in c.prefill for d in ds)
        dec = sort(d for ds in c.decode for d in ds) if c.decode else pre
        kind = kinds.get(name, "")
        par = Parallelism(tp=len(pre))
        extra: list[str] = []
        if c.stages and kind == "layers":
            ranges = sorted(c.stages)
            sizes = [len(c.stages[r]) for r in ranges]
            tp = min(sizes)
            split = tuple(b - a for a, b in ranges)
            par = Parallelism(tp=tp, pp=len(ranges), layer_split=split if len(set(split)) > 1 else ())
            if len(set(sizes)) > 1:
                extra.append(f"call {name}: the plan's pipeline stages use {', '.join(map(str, sizes))} chips; vLLM "
                             f"and SGLang need the same tensor-parallel size in every stage, so each stage gets {tp} "
                             f"({tp * len(ranges)} of the plan's {len(pre)} chips)")
            dec = pre if set(dec) <= set(pre) else dec
        if kind == "attn-ffn":
            both = sort(c.attn | c.ffn)
            split_note = ("on the same chips" if c.attn == c.ffn else
                          f"attention on {len(c.attn)}, FFN on {len(c.ffn)} chips")
            extra.append(f"call {name}: the plan splits attention from the FFN ({split_note}); no flag of vLLM "
                         "0.31.0, SGLang 0.5.21 or Dynamo 1.6.1 separates them, so one engine runs both "
                         f"tensor-parallel over {len(both)} chips")
            dec = both
        spec = None
        if c.draft_model:
            ddevs = sort(c.draft_devices)
            colocated = set(ddevs) <= set(dec)
            spec = Speculation(c.draft_model, c.draft_k or 1, c.acceptance, chips[ddevs[0]].name, ddevs, colocated)
            if not colocated:
                extra.append(
                    f"call {name}: the plan drafts with {c.draft_model} on {len(ddevs)}x {chips[ddevs[0]].name} and "
                    f"verifies on {chips[dec[0]].name}; no serving engine takes drafts from another device, so the "
                    f"draft runs on the target's own GPUs here and the plan's speculative timing does not hold")
                if not served(ddevs):
                    no_engine(c.draft_model, "draft", ddevs, name, [o for o in c.ops if "draft" in o])
        if set(pre) <= set(dec) or set(dec) <= set(pre):  # one set of chips runs both phases
            pre = dec = sort(set(pre) | set(dec))
            if kind != "layers":
                par = Parallelism(tp=len(pre))
        pre_ok, dec_ok = served(pre), served(dec)
        if set(pre) == set(dec):
            if pre_ok:
                drafts.append(_Draft(c.model, "agg", pre, [name], c.ops, par, spec, notes=extra))
            else:
                no_engine(c.model, "agg", pre, name, c.ops)
            continue
        if pre_ok and dec_ok:
            dpar = replace(par, tp=len(dec), pp=1, layer_split=()) if kind != "layers" else par
            drafts.append(_Draft(c.model, "prefill", pre, [name], c.ops, replace(par, tp=len(pre)), None, dec, extra))
            drafts.append(_Draft(c.model, "decode", dec, [name], c.ops, dpar, spec, pre, []))
            continue
        ops_pre = [o for o in c.ops if "prefill" in o]
        ops_dec = [o for o in c.ops if o not in ops_pre]
        if pre_ok:  # the decode has no engine: the prefill's GPUs serve the whole call
            no_engine(c.model, "decode", dec, name, ops_dec)
            extra.append(f"call {name}: the plan decodes on {len(dec)}x {chips[dec[0]].name}, where no serving engine "
                         f"runs; this engine serves the whole call on the prefill's {len(pre)}x {chips[pre[0]].name}, "
                         "so the plan's TPOT for it does not hold")
            drafts.append(_Draft(c.model, "agg", pre, [name], c.ops, par, spec, notes=extra))
        elif dec_ok:
            no_engine(c.model, "prefill", pre, name, ops_pre)
            extra.append(f"call {name}: the plan prefills on {len(pre)}x {chips[pre[0]].name}, where no serving engine "
                         f"runs; this engine serves the whole call on the decode's {len(dec)}x {chips[dec[0]].name}, "
                         "so the plan's TTFT for it does not hold")
            drafts.append(_Draft(c.model, "agg", dec, [name], c.ops, Parallelism(tp=len(dec)), spec, notes=extra))
        else:
            no_engine(c.model, "prefill", pre, name, ops_pre)
            no_engine(c.model, "decode", dec, name, ops_dec)

    merged = _merge(drafts)
    groups = _name_groups(merged, chips, info)
    groups = _share_memory(groups)
    knobs, why = _batching(plan, engine, policy)
    groups = tuple(replace(g, batching=_knobs_for(g, knobs, order)) for g in groups)
    if why:
        notes.append(why)
    from gimletc.deploy.request import request_shape

    return Deployment(
        name=plan.name, source=f"plan {plan.name} (digest {plan.digest[:12]})", stack=plan.stack, groups=groups,
        no_engine=tuple(_merge_unserved(unserved)), cpu_workers=_cpu_workers(graph, plan), request=request_shape(plan, graph),
        notes=tuple(notes),
    )


def _merge(drafts: list[_Draft]) -> list[_Draft]:
    """Calls of one model in one role on the same chips share one engine."""
    out: dict[tuple[str, str, tuple[str, ...]], _Draft] = {}
    for d in drafts:
        key = (d.model, d.role, d.devices)
        have = out.get(key)
        if have is None:
            d.spec_calls = list(d.calls) if d.speculation else []
            out[key] = d
            continue
        have.calls += [c for c in d.calls if c not in have.calls]
        have.ops += d.ops
        have.notes += [n for n in d.notes if n not in have.notes]
        if d.speculation is not None:
            have.spec_calls += d.calls
            if have.speculation is None:
                have.speculation = d.speculation
            elif have.speculation != d.speculation:
                raise DeployError(f"calls {', '.join(have.calls)} of {d.model} share an engine but speculate "
                                  "differently (draft model or tokens per step); one engine has one speculative config")
        if have.parallel != d.parallel:
            raise DeployError(f"calls {', '.join(have.calls)} of {d.model} share chips {', '.join(d.devices)} with "
                              "different parallel layouts; one engine has one layout")
    for d in out.values():
        plain = [c for c in d.calls if c not in d.spec_calls]
        if d.speculation is not None and plain:
            d.notes.append(f"speculative decoding applies to every request of this engine, so call(s) {', '.join(plain)} "
                           "(not speculative in the plan) are drafted too")
    return list(out.values())


def _name_groups(drafts: list[_Draft], chips: Mapping[str, Chip], info: Mapping[str, Any]) -> tuple[EngineGroup, ...]:
    """EngineGroups with unique Kubernetes-safe names (model and role, numbered where they repeat)."""
    base = [k8s_name(f"{d.model.split('@')[0]}-{d.role}") for d in drafts]
    count: dict[str, int] = {}
    names = []
    for b in base:
        count[b] = count.get(b, 0) + 1
    seen: dict[str, int] = {}
    for b in base:
        if count[b] == 1:
            names.append(b)
        else:
            seen[b] = seen.get(b, 0) + 1
            names.append(f"{b}-{seen[b]}")
    by_devs = {(d.model, d.devices): n for d, n in zip(drafts, names, strict=True)}
    out = []
    for d, n in zip(drafts, names, strict=True):
        peer = None
        if d.peer is not None:
            peer = by_devs.get((d.model, d.peer))
        nodes = sorted({info[x].node for x in d.devices})
        out.append(EngineGroup(
            name=n, model=d.model, role=d.role, chip=chips[d.devices[0]].name, replicas=1, parallel=d.parallel,  # type: ignore[arg-type]
            devices=d.devices, nodes=tuple(nodes), node=nodes[0] if len(nodes) == 1 else None, calls=tuple(d.calls), peer=peer,
            speculation=d.speculation, notes=tuple(d.notes)))
    return tuple(out)


def _share_memory(groups: tuple[EngineGroup, ...]) -> tuple[EngineGroup, ...]:
    """Engines that share a chip split the simulator's memory fraction equally (each engine reserves its
    own memory; the simulator's engines share one pool per chip, which no engine can)."""
    per: dict[str, int] = {}
    for g in groups:
        for d in g.devices:
            per[d] = per.get(d, 0) + 1
    out = []
    for g in groups:
        n = max((per[d] for d in g.devices), default=1)
        if n > 1:
            others = sorted({o.name for o in groups if o is not g and set(o.devices) & set(g.devices)})
            g = replace(g, mem_fraction=round(MEM_FRACTION / n, 4), notes=g.notes + (
                f"shares its chips with {', '.join(others)}: each engine reserves {MEM_FRACTION / n:.0%} of every "
                f"chip's memory ({MEM_FRACTION:.0%} split {n} ways; the simulator pools it)",))
        out.append(g)
    return tuple(out)


def _merge_unserved(items: list[NoEngine]) -> list[NoEngine]:
    out: dict[tuple[str, str, tuple[str, ...]], NoEngine] = {}
    for n in items:
        key = (n.model, n.role, n.devices)
        if key in out:
            have = out[key]
            out[key] = replace(have, calls=have.calls + tuple(c for c in n.calls if c not in have.calls),
                               ops=have.ops + tuple(o for o in n.ops if o not in have.ops))
        else:
            out[key] = n
    names: dict[str, int] = {}
    result = []
    for n in out.values():
        names[n.name] = names.get(n.name, 0) + 1
        result.append(n if names[n.name] == 1 else replace(n, name=f"{n.name}-{names[n.name]}"))
    return result


def _knobs_for(g: EngineGroup, knobs: Mapping[tuple[tuple[str, ...], str], Batching],
               order: Mapping[str, int]) -> Batching | None:
    """The knobs of the simulator's engine that runs `g`'s model on `g`'s chips: the engine on exactly
    those chips, else the first (in cluster order) on some of them (a pipeline's first stage)."""
    exact = knobs.get((g.devices, g.model))
    if exact is not None:
        return exact
    inside = [(order[devs[0]], b) for (devs, m), b in knobs.items() if m == g.model and set(devs) <= set(g.devices)]
    return min(inside, key=lambda x: x[0])[1] if inside else None


def _batching(plan: Any, engine: str, policy: str | None) -> tuple[dict[tuple[tuple[str, ...], str], Batching], str]:
    """(devices, model) -> the Batching the simulator's engine on those devices runs `model` with,
    under `policy` (default: the engine's own; Dynamo's workers run vLLM here); and why there are
    none, when the simulator cannot run the plan."""
    from gimletc.sim.arrivals import generate
    from gimletc.sim.config import EngineConfig, SimConfig, SimulationError
    from gimletc.sim.load import simulate_plan

    pol = policy or ("vllm" if engine == "dynamo" else engine)
    try:
        res = simulate_plan(plan, generate("constant", 1.0, 1, 0), SimConfig(engine=EngineConfig(policy=pol)))
    except SimulationError as e:
        return {}, f"batching knobs left at each engine's defaults: the load simulator cannot run this plan ({e})"
    out: dict[tuple[tuple[str, ...], str], Batching] = {}
    for e in res.engines:
        devs = tuple(e["devices"])
        for model, b in e["batching"].items():
            out[(devs, model)] = Batching(e["policy"], int(b["max_batch"]), int(b["max_prefill_tokens"]),
                                          bool(b["chunked_prefill"]), int(b["chunk_tokens"]))
    return out, ""


def _cpu_workers(graph: Graph, plan: Any) -> tuple[CPUWorker, ...]:
    runs = {p.op: p.runs for p in plan.placements}
    hosts: dict[str, list[tuple[str, str, float, float]]] = {}
    for op, _ in graph.walk():
        ko = str(op.attr("kind_of", ""))
        if op.kind != "exec.compute" or ko not in ("agent.tool", "agent.code", "agent.retrieve"):
            continue
        devs = _devices(op)
        if not devs:
            continue
        name = str(op.attr("of", op.name))
        hosts.setdefault(devs[0], []).append((name, ko.split(".", 1)[1], float(op.attr("seconds", 0.0)),
                                             float(runs.get(name, 1.0))))
    chips = {d.id: d.chip for d in plan.cluster.devices}
    out = []
    for host, ops in sorted(hosts.items()):
        if host not in chips:
            raise ConfigError(f"plan {plan.name}: CPU op {ops[0][0]} runs on {host}, which is not in its cluster")
        lanes = plan.cluster.hosts[host].lanes if host in plan.cluster.hosts else 8
        out.append(CPUWorker(k8s_name(f"cpu-{host}"), host, chips[host], lanes, tuple(ops)))
    return tuple(out)
