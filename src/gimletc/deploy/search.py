"""A saved serving search (`gimletc search --save FILE`) as a `Deployment`.

One of the file's configurations is deployed: the best goodput per chip (rank 1) unless another rank
is asked for. Each role group of it becomes one `EngineGroup` per replica, on the devices the search
placed that engine on, all of them sharing the group's `pool` name (Dynamo deploys a pool as one
component with that many replicas; vLLM and SGLang start one server per replica). Roles:

- `agg`, `prefill`, `decode`: engines of that role; a prefill pool and a decode pool of one model are
  each other's peers (a KV connector joins them, as for a plan's disaggregated call);
- `verify` + `draft` (speculative units): the verifying engine with a `Speculation`; no engine takes
  drafts from other devices, so it drafts on its own GPUs and the description says so (a draft
  on a chip no engine runs is also listed as a `NoEngine` part);
- `attn` + `ffn` (M:N units): one engine over the unit's chips, as for a plan's attention/FFN split;
- attention data parallelism (`dp` > 1, experts over tp x dp chips): one engine tensor-parallel
  over tp x dp chips with expert parallelism, with a note.

Batching knobs are the ones the search predicted with, as saved. The request shape the benchmark
replays is the saved workload's LLM calls (a saved search holds no tools or dependencies: the calls
run one after another, each its expected number of times per request).

The caller reads and validates the file (`gimletc.serving.saved.load_search_result`, a layer beside
this one); this module reads its fields only.
"""

from __future__ import annotations

import math
from typing import Any

from gimletc.deploy.description import (
    ENGINES, Batching, Deployment, DeployError, EngineGroup, NoEngine, Parallelism, Speculation, engine_chip, k8s_name,
)
from gimletc.hardware import get_chip
from gimletc.hardware.resources import node_of_accelerator
from gimletc.sim.template import loop_probability
from gimletc.targets.vendors import toolchain

__all__ = ["from_search", "pick"]

LOOP_MAX_FACTOR = 4  # a call run r > 1 times per request on average: a loop of at most ceil(4 r) runs


def pick(saved: Any, source: str, rank: int | None) -> Any:
    """The configuration of rank `rank` (default: rank 1, the best goodput per chip, or the first
    recommendation)."""
    configs = list(saved.configurations)
    if not configs:
        raise DeployError(f"{source}: the saved search holds no configuration (none served the SLO); "
                          "search again with a looser SLO or more chips")
    if rank is None:
        return min(configs, key=lambda c: c.rank)
    for c in configs:
        if c.rank == rank:
            return c
    raise DeployError(f"{source}: no configuration of rank {rank}; it holds ranks "
                      f"{', '.join(str(c.rank) for c in sorted(configs, key=lambda c: c.rank))}")


def _node(devices: tuple[str, ...]) -> str | None:
    nodes = {node_of_accelerator(d) for d in devices}
    return nodes.pop() if len(nodes) == 1 else None


def from_search(saved: Any, source: str, engine: str, rank: int | None = None, policy: str | None = None) -> Deployment:
    """The deployment of one configuration of a saved search (see the module docstring), for `engine`;
    `policy` is the batching policy the engines run (a group the search priced with another policy's
    knobs gets a note: its knobs are passed as the prediction assumed them)."""
    if engine not in ENGINES:
        raise DeployError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    cfg = pick(saved, source, rank)
    policy = policy or ("vllm" if engine == "dynamo" else engine)
    groups: list[EngineGroup] = []
    unserved: list[NoEngine] = []
    notes: list[str] = [f"configuration #{cfg.rank} of the saved search ({cfg.label}): the batching knobs are "
                        "those its prediction assumed"]
    for m in cfg.models:
        calls = tuple(c.llm for c in saved.workload[m.model].calls)
        by_role = {g.role: g for g in m.groups}
        base = {role: k8s_name(f"{m.model.split('@')[0]}-{role}") for role in ("agg", "prefill", "decode")}
        for g in m.groups:
            if g.role in ("draft", "ffn"):
                continue  # folded into their verify / attn units below
            role = g.role if g.role in ("agg", "prefill", "decode") else "agg"
            pool = base[role]
            chip = get_chip(g.chip)
            engines = [tuple(e.devices) for e in g.engines]
            aux = [tuple(e.aux_devices) for e in g.engines]
            if not engine_chip(chip):
                devs = tuple(d for ds in engines for d in ds)
                unserved.append(NoEngine(pool, m.model, role, chip.name, devs, calls, (),
                                         f"runs on {chip.name} ({chip.vendor}): vLLM, SGLang and Dynamo serve on NVIDIA "
                                         "and AMD GPUs only", toolchain(chip)))
                continue
            extra: list[str] = []
            par = Parallelism(tp=g.tp * g.dp, ep=g.ep)
            if g.dp > 1:
                extra.append(f"the search priced attention data parallelism ({g.dp} ranks of TP{g.tp}, experts over "
                             f"{g.ep} chips); this engine runs tensor parallel over {g.tp * g.dp} chips with expert "
                             "parallelism")
            spec = None
            if g.role == "verify" and m.spec is not None:
                draft = by_role.get("draft")
                ddevs = aux[0] if aux and aux[0] else ()
                dchip = draft.chip if draft is not None else chip.name
                colocated = not ddevs or all(set(a) <= set(e) for a, e in zip(aux, engines, strict=True))
                spec = Speculation(m.spec.draft, m.spec.k, m.spec.acceptance, dchip, ddevs, colocated)
                if not colocated:
                    extra.append(f"the search drafts with {m.spec.draft} on {dchip} beside each verifying engine; no "
                                 "serving engine takes drafts from another device, so each engine drafts on its own "
                                 "GPUs and the search's speculative timing does not hold")
                    if draft is not None and not engine_chip(get_chip(draft.chip)):
                        unserved.append(NoEngine(k8s_name(f"{m.spec.draft}-draft"), m.spec.draft, "draft",
                                                 draft.chip, tuple(d for a in aux for d in a), calls, (),
                                                 f"runs on {draft.chip}: vLLM, SGLang and Dynamo serve on NVIDIA and "
                                                 "AMD GPUs only", toolchain(get_chip(draft.chip))))
            if g.role == "attn":
                engines = [tuple(dict.fromkeys(e + a)) for e, a in zip(engines, aux, strict=True)]
                par = Parallelism(tp=len(engines[0]) if engines else g.tp)
                extra.append(f"the search splits attention from the FFN ({m.split.attn if m.split else 1}:"
                             f"{m.split.ffn if m.split else 1} per unit); no flag of vLLM 0.31.0, SGLang 0.5.21 or "
                             f"Dynamo 1.6.1 separates them, so one engine runs both over the unit's {par.tp} chips")
            if g.policy != policy:
                extra.append(f"the search predicted this group with the {g.policy} policy's batching knobs; they are "
                             f"passed to {engine} as they are")
            b = g.batching
            knobs = Batching(g.policy, b.max_batch, b.max_prefill_tokens, b.chunked_prefill, b.chunk_tokens)
            peer = base["decode"] if role == "prefill" else base["prefill"] if role == "decode" else None
            replicas = engines or [()] * g.replicas
            for i, devs in enumerate(replicas):
                node = _node(devs) if devs else None
                groups.append(EngineGroup(
                    name=pool if len(replicas) == 1 else f"{pool}-{i + 1}", model=m.model, role=role,  # type: ignore[arg-type]
                    chip=chip.name, replicas=1, parallel=par, devices=devs,
                    nodes=tuple(sorted({node_of_accelerator(d) for d in devs})), node=node, calls=calls, peer=peer,
                    batching=knobs, speculation=spec, notes=tuple(extra), pool=pool))
    if not groups:
        raise DeployError(f"{source}: configuration #{cfg.rank} ({cfg.label}) runs on no chip a serving engine runs on")
    notes.append("a saved search holds the LLM calls only: no tools, retrieval or code ops (no CPU workers), and the "
                 "benchmark sends the calls one after another; deploy the compiled plan for the whole agent")
    return Deployment(name=saved.graph, source=f"search {source} (configuration #{cfg.rank}: {cfg.label})",
                      stack=saved.stack, groups=tuple(groups), no_engine=tuple(unserved), cpu_workers=(),
                      request=request_shape(saved), notes=tuple(notes), prediction=prediction(saved, cfg))


def prediction(saved: Any, cfg: Any) -> dict[str, Any] | None:
    """The configuration's figures from the search's load simulation, in `gimletc simulate --json`'s shape
    (what `gimletc compare` reads; p90s, throughput and, for a search, goodput), or None where none were
    simulated."""
    sim = cfg.simulated
    if sim is None:
        return None
    slo = saved.slo
    return {
        "name": saved.graph,
        "source": f"predicted: serving search (cost model + load simulation, {sim.requests} Poisson requests), "
                  f"configuration #{cfg.rank}: {cfg.label}",
        "arrivals": {"kind": "poisson", "rate_req_s": sim.rate_req_s, "requests": sim.requests},
        "ttft_ms": {"p90": sim.ttft_p90_ms}, "tpot_ms": {"p90": sim.tpot_p90_ms},
        "throughput_tok_s": sim.tok_s,
        "goodput_req_s": sim.rate_req_s if saved.kind == "search" else None,
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "share": slo.share},
        "slo_attainment": sim.attainment,
    }


def request_shape(saved: Any) -> dict[str, Any]:
    """The benchmark's request shape (`gimletc.deploy.request`'s format) of a saved search's workload:
    its first call, then the others, each after the one before; a call run r times per request on
    average is a branch taken with probability r (r < 1) or a loop of expected r runs (r > 1)."""
    from gimletc.deploy.request import FORMAT

    calls = [(model, c) for model, sm in sorted(saved.workload.items()) for c in sm.calls]
    calls.sort(key=lambda mc: not mc[1].first)  # stable: the request's first call leads
    nodes: list[dict[str, Any]] = []
    prev: list[str] = []
    for model, c in calls:
        node: dict[str, Any] = {"id": c.llm, "kind": "llm", "model": model,
                                "input_tokens": c.context_tokens + c.prompt_tokens, "output_tokens": c.output_tokens,
                                "batch": c.sequences, "after": []}
        r = c.runs_per_request
        if math.isclose(r, 1.0):
            node["after"] = prev
        elif r < 1:
            node = {"id": f"{c.llm}.taken", "kind": "branch", "probabilities": [r, 1 - r], "arms": [[node], []],
                    "after": prev}
        else:
            most = math.ceil(LOOP_MAX_FACTOR * r)
            node = {"id": f"{c.llm}.runs", "kind": "loop", "expected": r, "max": most,
                    "p": loop_probability(r, most), "body": [node], "after": prev}
        nodes.append(node)
        prev = [node["id"]]
    return {"format": FORMAT, "name": saved.graph, "nodes": nodes}
