"""Ways to cut one LLM call across devices, and the passes that force one of them.

After `expand-llm`, an LLM call X is `X.prefill` (prompt -> KV cache) and
`X.decode` (KV cache -> X). A *variant* rewrites that pair:

- `whole`: prefill and decode stay together (one placement unit).
- `phase`: prefill and decode are placed apart; the KV cache moves between them.
- `layers`: a pipeline of S stages, each a range of layers with its own slice
  of the KV cache. The prefill is a chain of stages with the activations
  moving at each cut; the decode is a loop over output tokens whose body runs
  the stages in turn, moving one token's activations at each cut.
  Cut points: the fewest stages whose memory fits the chosen chip, balanced by
  dynamic programming over the per-layer step times (`best_cuts`).
- `attn-ffn`: the prefill is placed on its own; the decode is a loop over
  steps whose body alternates, layer by layer, an attention block (on the
  group holding the KV cache) and an FFN/MoE block (on the group holding the
  expert weights), with the activations moving both ways at every layer. The
  batch is split into `microbatches` that ping-pong, so one group computes
  while the other waits for its inputs (MegaScale-Infer, Step-3).
- `speculative`: a draft model proposes k tokens per round on one device, the
  target verifies them on another, the accepted tokens go back; both roll
  back their KV cache past the first rejected token. With acceptance rate a,
  a round yields (1 - a^(k+1)) / (1 - a) tokens on average; the decode is a
  loop of N / that rounds. k minimises the predicted time per token
  (`choose_k`) unless the call fixes it.

Each variant's ops carry `variant` and `unit` (ops of one unit are placed
together). `place{partitions=auto}` chooses among the variants jointly; the
passes here force one kind on every LLM call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, get_args

from annotated_types import Ge

from gimletc.cost.roofline import estimate_workload
from gimletc.dtypes import nbytes
from gimletc.errors import GimletError
from gimletc.hardware.schema import Chip
from gimletc.ir import Graph, Level, Op, Type, Value
from gimletc.models import Model, get_model, step_workload
from gimletc.models.workload import restrict
from gimletc.ir.names import decode_name
from gimletc.passes.manager import Pass, PassContext
from gimletc.passes.results import PartitionReport

Kind = Literal["whole", "phase", "layers", "attn-ffn", "speculative"]
KINDS: tuple[str, ...] = get_args(Kind)
DEFAULT_ACCEPTANCE = 0.7  # typical for a small same-family draft (Leviathan et al. 2023 report ~0.5-0.9)
MAX_DRAFT_K = 8
FIT_TOLERANCE = 1e-9  # relative: memory sums that differ by rounding alone fit alike


class PartitionError(GimletError):
    """A partitioning kind cannot apply to an LLM call (names the call and why)."""


@dataclass(frozen=True)
class Variant:
    kind: str
    stages: tuple[tuple[int, int], ...] = ()  # layers: the ranges
    microbatches: int = 1  # attn-ffn
    k: int = 0  # speculative
    acceptance: float = DEFAULT_ACCEPTANCE
    phases: str = "both"  # layers: pipeline the prefill, the decode, or both
    note: str = ""

    def describe(self) -> str:
        if self.kind == "layers":
            which = "" if self.phases == "both" else f" ({self.phases} only)"
            return "layers " + ", ".join(f"[{a}:{b})" for a, b in self.stages) + which
        if self.kind == "attn-ffn":
            return f"attn-ffn x{self.microbatches} micro-batches"
        if self.kind == "speculative":
            return f"speculative k={self.k} a={self.acceptance:g}"
        return self.kind


@dataclass
class LLMCall:
    """The prefill and decode ops of one LLM call, as expand-llm left them."""

    name: str
    prefill: Op
    decode: Op
    model: Model = field(init=False)

    def __post_init__(self) -> None:
        self.model = get_model(str(self.prefill.attr("model")))

    @property
    def batch(self) -> int:
        return int(self.decode.attr("batch", self.prefill.attr("batch", 1)))

    @property
    def prompt(self) -> int:
        return int(self.prefill.attr("tokens"))

    @property
    def out_tokens(self) -> int:
        return int(self.decode.attr("tokens"))

    @property
    def mid_ctx(self) -> int:
        return self.prompt + self.out_tokens // 2


def find_calls(graph: Graph) -> dict[str, LLMCall]:
    """Every LLM call (nested ones included) whose prefill and decode no pass has partitioned yet."""
    pre: dict[str, Op] = {}
    dec: dict[str, Op] = {}
    for op, _ in graph.walk():
        if op.attr("variant") is not None or op.attr("of") is None:
            continue
        if op.kind == "model.prefill":
            pre[str(op.attr("of"))] = op
        elif op.kind == "model.decode":
            dec[str(op.attr("of"))] = op
    return {n: LLMCall(n, pre[n], dec[n]) for n in sorted(pre) if n in dec}


# ---- speculative decoding ---------------------------------------------------------------


def expected_tokens(k: int, a: float) -> float:
    """Expected tokens one round yields: accepted drafts plus the target's own token, (1 - a^(k+1)) / (1 - a)."""
    if a >= 1.0:
        return float(k + 1)
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def round_seconds(target: Model, draft: Model, target_chip: Chip, draft_chip: Chip, k: int, batch: int, ctx: int,
                  latency_s: float, target_chips: int = 1, draft_chips: int = 1, stack: str = "reference") -> float:
    """One round: k draft steps, one verify of k + 1 positions, the two tiny transfers' latency."""
    d = _step(draft, draft_chip, "decode", batch, 1, ctx, draft_chips, stack) * k
    v = _step(target, target_chip, "verify", batch, k + 1, ctx, target_chips, stack)
    return d + v + 2 * latency_s


def choose_k(target: Model, draft: Model, target_chip: Chip, draft_chip: Chip, a: float, batch: int, ctx: int,
             latency_s: float, target_chips: int = 1, draft_chips: int = 1, stack: str = "reference",
             ) -> tuple[int, dict[int, float]]:
    """The draft length (1..MAX_DRAFT_K) with the least predicted seconds per token, and the table."""
    table = {
        k: round_seconds(target, draft, target_chip, draft_chip, k, batch, ctx, latency_s, target_chips, draft_chips,
                         stack)
        / expected_tokens(k, a)
        for k in range(1, MAX_DRAFT_K + 1)
    }
    return min(table, key=lambda k: (table[k], k)), table


@lru_cache(maxsize=4096)
def _step_cached(model: str, chip_json: str, phase: str, batch: int, tokens: int, ctx: int, chips: int, stack: str) -> float:
    chip = Chip.model_validate_json(chip_json)
    m = _KNOWN.get(model) or get_model(model)
    return estimate_workload(m, chip, step_workload(m, phase, batch, tokens, ctx, stack), chips, check_fit=False).latency_s


_KNOWN: dict[str, Model] = {}  # models by name, for the cached step function (names may come from paths)


def _step(model: str | Model, chip: Chip, phase: str, batch: int, tokens: int, ctx: int, chips: int = 1,
          stack: str = "reference") -> float:
    if isinstance(model, Model):
        _KNOWN[model.name] = model
        model = model.name
    return _step_cached(model, chip.model_dump_json(), phase, batch, tokens, ctx, chips, stack)


# ---- layer pipelines -------------------------------------------------------------------


def layer_costs(model: Model, chip: Chip, phase: str, batch: int, tokens: int, ctx: int,
                stack: str = "reference") -> list[float]:
    """Predicted device seconds of each layer (embedding and head not included) under `stack`."""
    work = step_workload(model, phase, batch, tokens, ctx, stack)
    out = []
    for i in range(model.layers):
        part = restrict(work, model, i, i + 1)
        ops = [o for o in part.ops if o.name not in ("embed", "final_norm", "lm_head")]
        est = estimate_workload(model, chip, replace(part, ops=tuple(ops)), check_fit=False)
        out.append(est.latency_s)
    return out


def layer_memory(model: Model, tokens: int, batch: int) -> list[float]:
    """Weights and KV-cache bytes of each layer (embedding and head added by the caller's stage ends)."""
    return [
        model.stage_weight_bytes(i, i + 1) - _head_bytes(model, i, i + 1) + model.stage_kv_cache_bytes(i, i + 1, tokens, batch)
        for i in range(model.layers)
    ]


def _head_bytes(model: Model, first: int, last: int) -> float:
    table = model.vocab * model.hidden * nbytes(model.weight_dtype)
    return (table if first == 0 else 0.0) + (table if last == model.layers and (first != 0 or not model.tied_embeddings) else 0.0)


def best_cuts(costs: Sequence[float], mems: Sequence[float], stages: int, capacity: float,
              head: tuple[float, float] = (0.0, 0.0)) -> tuple[tuple[int, int], ...] | None:
    """Split layers into `stages` contiguous ranges minimising the slowest stage's time, each stage's memory
    (plus the embedding on the first and the head on the last, `head` = (first, last) bytes) within
    `capacity`. Dynamic programming over cut points, O(stages x L^2); None if no split fits."""
    n = len(costs)
    if stages < 1 or stages > n:
        return None
    pc = [0.0]
    pm = [0.0]
    for c, m in zip(costs, mems, strict=True):
        pc.append(pc[-1] + c)
        pm.append(pm[-1] + m)
    inf = math.inf
    # best[s][i]: the least max-stage time splitting layers [0, i) into s stages
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[-1] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                if best[s - 1][j] == inf:
                    continue
                mem = pm[i] - pm[j] + (head[0] if j == 0 else 0.0) + (head[1] if i == n else 0.0)
                if mem > capacity * (1 + FIT_TOLERANCE):  # prefix sums round; a stage exactly at capacity fits
                    continue
                t = max(best[s - 1][j], pc[i] - pc[j])
                if t < best[s][i] - 1e-15:
                    best[s][i], cut[s][i] = t, j
    if best[stages][n] == inf:
        return None
    ranges = []
    i = n
    for s in range(stages, 0, -1):
        j = cut[s][i]
        ranges.append((j, i))
        i = j
    return tuple(reversed(ranges))


def pipeline_variant(call: LLMCall, chip: Chip, min_stages: int = 2, max_stages: int = 16,
                     stack: str = "reference") -> Variant | None:
    """The fewest stages (at least `min_stages`) whose memory fits one `chip` each, balanced by `best_cuts`."""
    m = call.model
    tokens = call.prompt + call.out_tokens
    costs = layer_costs(m, chip, "decode", call.batch, 1, call.mid_ctx, stack)
    mems = layer_memory(m, tokens, call.batch)
    table = m.vocab * m.hidden * nbytes(m.weight_dtype)
    head = (table, table)  # tied or not: the last stage holds its own copy of the table (see _head_bytes)
    for s in range(min_stages, min(max_stages, m.layers) + 1):
        cuts = best_cuts(costs, mems, s, chip.capacity_bytes, head)
        if cuts is not None:
            return Variant("layers", stages=cuts, note=f"{s} stages sized for {chip.name}")
    return None


# ---- rewrites --------------------------------------------------------------------------------


def _act(model: Model, batch: int, tokens: int) -> Type:
    return Type("act", batch * tokens * model.hidden * nbytes(model.act_dtype))


def _base(op: Op) -> dict[str, Any]:
    keep = ("model", "ctx", "batch", "of")
    return {k: op.attr(k) for k in keep if op.attr(k) is not None}


def rewrite(call: LLMCall, v: Variant) -> tuple[list[Op], list[Op]]:
    """The ops replacing the call's prefill and its decode under variant v."""
    name, pre, dec, m = call.name, call.prefill, call.decode, call.model
    b = call.batch
    if v.kind == "whole":
        return [pre.with_attrs(variant="whole")], [dec.with_attrs(variant="whole")]
    if v.kind == "phase":
        return ([pre.with_attrs(variant="phase", partition="phase")],
                [dec.with_attrs(variant="phase", partition="phase")])
    first = Value(f"{name}.first", Type("tokens", 1))
    out = dec.results[0]
    n_out = call.out_tokens
    if v.kind == "layers":
        S = len(v.stages)
        staged_prefill = v.phases in ("both", "prefill")
        staged_decode = v.phases in ("both", "decode")
        pre_ops: list[Op] = []
        kvs: list[str] = []
        slices = [Value(f"{name}.kv{s}", Type("kv", m.stage_kv_cache_bytes(a, e, call.prompt, b)))
                  for s, (a, e) in enumerate(v.stages)]
        if staged_prefill:
            prev: tuple[str, ...] = pre.operands
            for s, (a, e) in enumerate(v.stages):
                head = first if s == S - 1 else Value(f"{name}.act{s}", _act(m, b, call.prompt))
                unit = f"{name}.s{s}" if staged_decode else f"{name}.prefill.s{s}"
                attrs = {**_base(pre), "tokens": call.prompt, "layers": (a, e), "stage": s, "stages": S,
                         "variant": "layers", "unit": unit}
                pre_ops.append(Op("model.prefill", f"{name}.prefill.s{s}", prev, (head, slices[s]), attrs))
                prev = (head.name,)
        else:  # one prefill writes every stage's slice of the cache
            pre_ops.append(Op("model.prefill", pre.name, pre.operands, (*slices, first),
                              {**pre.attrs, "variant": "layers", "partition": "phase"}))
        kvs = [x.name for x in slices]
        if not staged_decode:  # one decode reads every slice
            dec_op = Op("model.decode", dec.name, tuple(kvs), dec.results,
                        {**dec.attrs, "variant": "layers", "partition": "phase"})
            return pre_ops, [dec_op]
        tok = Value(f"{name}.tok", Type("tokens", 1))
        body: list[Op] = []
        prev = (tok.name,)
        for s, (a, e) in enumerate(v.stages):
            res = Value(f"{name}.next", Type("tokens", 1)) if s == S - 1 else Value(f"{name}.dact{s}", _act(m, b, 1))
            attrs = {"model": str(dec.attr("model")), "tokens": 1, "ctx": call.mid_ctx, "batch": b, "of": name,
                     "layers": (a, e), "stage": s, "stages": S, "variant": "layers", "unit": f"{name}.s{s}"}
            body.append(Op("model.decode", f"{name}.decode.s{s}", (*prev, kvs[s]), (res,), attrs))
            prev = (res.name,)
        body.append(Op("agent.yield", f"{name}.decode.yield", (f"{name}.next",)))
        loop = Op("agent.loop", decode_name(name), (first.name,), (out,),
                  {"expected": float(n_out), "max": n_out}, (Graph(tuple(body), (tok,)),))
        return pre_ops, [loop]
    if v.kind == "attn-ffn":
        mb = max(1, min(v.microbatches, b))
        kv = pre.results[0]
        prefill = Op("model.prefill", pre.name, pre.operands, (kv, first),
                     {**pre.attrs, "variant": "attn-ffn", "partition": "phase"})
        args = tuple(Value(f"{name}.tok{j}", Type("tokens", 1)) for j in range(mb))
        body = []
        cur = [a.name for a in args]
        sizes = [b // mb + (1 if j < b % mb else 0) for j in range(mb)]
        L = m.layers
        for layer in range(L):
            for j in range(mb):
                common = {"model": str(dec.attr("model")), "tokens": 1, "ctx": call.mid_ctx, "batch": sizes[j],
                          "of": name, "layers": (layer, layer + 1), "microbatch": j, "microbatches": mb,
                          "variant": "attn-ffn"}
                av = Value(f"{name}.a{layer}.m{j}", _act(m, sizes[j], 1))
                body.append(Op("model.attention", f"{name}.attn{layer}.m{j}", (cur[j], kv.name), (av,),
                               {**common, "unit": f"{name}.attn"}))
                last = layer == L - 1
                fv = Value(f"{name}.next{j}" if last else f"{name}.f{layer}.m{j}",
                           Type("tokens", 1) if last else _act(m, sizes[j], 1))
                body.append(Op("model.ffn", f"{name}.ffn{layer}.m{j}", (av.name,), (fv,), {**common, "unit": f"{name}.ffn"}))
                cur[j] = fv.name
        body.append(Op("agent.yield", f"{name}.decode.yield", tuple(cur)))
        results = (out, *(Value(f"{name}.mb{j}", Type("tokens", 1)) for j in range(1, mb)))
        loop = Op("agent.loop", decode_name(name), tuple(first.name for _ in range(mb)), results,
                  {"expected": float(n_out), "max": n_out}, (Graph(tuple(body), args),))
        return [prefill], [loop]
    if v.kind == "speculative":
        draft = str(dec.attr("draft"))
        dm = get_model(draft)
        kv = pre.results[0]
        target_prefill = Op("model.prefill", pre.name, pre.operands, (kv, first),
                            {**pre.attrs, "variant": "speculative", "unit": f"{name}.target"})
        dkv = Value(f"{name}.draft_kv", Type("kv", dm.kv_cache_bytes(call.prompt, b)))
        draft_prefill = Op("model.prefill", f"{name}.draft_prefill", pre.operands, (dkv,),
                           {"model": draft, "tokens": call.prompt, "ctx": 0, "batch": b, "of": name,
                            "variant": "speculative", "unit": f"{name}.draft"})
        e_tok = expected_tokens(v.k, v.acceptance)
        tok = Value(f"{name}.tok", Type("tokens", 1))
        proposed = Value(f"{name}.proposed", Type("tokens", v.k))
        accepted = Value(f"{name}.accepted", Type("tokens", e_tok))
        common = {"ctx": call.mid_ctx, "batch": b, "of": name, "variant": "speculative"}
        body = [
            Op("model.draft", f"{name}.draft", (tok.name, dkv.name), (proposed,),
               {**common, "model": draft, "draft_k": v.k, "unit": f"{name}.draft"}),
            Op("model.verify", f"{name}.verify", (proposed.name, kv.name), (accepted,),
               {**common, "model": str(dec.attr("model")), "tokens": v.k + 1, "acceptance": v.acceptance,
                "unit": f"{name}.target"}),
            Op("model.kv_rollback", f"{name}.rollback", (accepted.name, kv.name), (),
               {"model": str(dec.attr("model")), "of": name, "variant": "speculative", "unit": f"{name}.target"}),
            Op("agent.yield", f"{name}.decode.yield", (accepted.name,)),
        ]
        rounds = n_out / e_tok
        loop = Op("agent.loop", decode_name(name), (first.name,), (out,),
                  {"expected": rounds, "max": n_out}, (Graph(tuple(body), (tok,)),))
        return [target_prefill, draft_prefill], [loop]
    raise PartitionError(f"unknown partitioning kind {v.kind!r}; known: {', '.join(KINDS)}")


def apply_variants(graph: Graph, calls: dict[str, LLMCall], chosen: dict[str, Variant]) -> Graph:
    """The graph with each call in `chosen` rewritten by its variant."""
    by_op: dict[str, tuple[str, str]] = {}
    for n in chosen:
        by_op[calls[n].prefill.name] = (n, "prefill")
        by_op[calls[n].decode.name] = (n, "decode")

    def fn(op: Op) -> Op | list[Op]:
        hit = by_op.get(op.name)
        if hit is None:
            return op
        n, which = hit
        pre_ops, dec_ops = rewrite(calls[n], chosen[n])
        return pre_ops if which == "prefill" else dec_ops

    return graph.map_ops(fn)


# ---- choosing variants for a cluster ------------------------------------------------------


def _accelerators(cluster: Any) -> list[Chip]:
    seen: dict[str, Chip] = {}
    for d in cluster.devices():
        if d.role != "host":
            seen.setdefault(d.chip.name, d.chip)
    return [seen[k] for k in sorted(seen)]


def variant_for(kind: str, call: LLMCall, cluster: Any, stack: str = "reference") -> Variant | None:
    """The concrete variant of `kind` for this call on this cluster, or None where the kind does not apply."""
    if kind in ("whole", "phase"):
        return Variant(kind)
    chips = _accelerators(cluster)
    if kind == "layers":
        # A pipeline is for models that need several chips: stages sized for the largest accelerator.
        if not chips:
            return None
        chip = max(chips, key=lambda c: (c.capacity_bytes, c.name))
        need = call.model.weight_bytes + call.model.kv_cache_bytes(call.prompt + call.out_tokens, call.batch)
        if need <= chip.capacity_bytes:
            return None
        return pipeline_variant(call, chip, stack=stack)
    if kind == "attn-ffn":
        if call.batch < 2:  # micro-batches need at least two sequences to ping-pong
            return None
        return Variant("attn-ffn", microbatches=2, note="two micro-batches ping-pong between the groups")
    if kind == "speculative":
        draft = call.decode.attr("draft")
        if draft is None or not chips:
            return None
        a = float(call.decode.attr("acceptance", DEFAULT_ACCEPTANCE))
        given = call.decode.attr("draft_k")
        dm = get_model(str(draft))
        target = call.model
        holds = [c for c in chips if c.capacity_bytes >= target.weight_bytes]
        tchip = min(holds or chips,
                    key=lambda c: (_step(target, c, "verify", call.batch, 2, call.mid_ctx, 1, stack), c.name))
        dchip = min(chips, key=lambda c: (_step(dm, c, "decode", call.batch, 1, call.mid_ctx, 1, stack), c.name))
        latency = 10e-6  # a PCIe/network round-trip's fixed cost per tiny transfer
        if given is not None:
            return Variant("speculative", k=int(given), acceptance=a, note=f"k={given} given by the graph")
        k, _ = choose_k(target, dm, tchip, dchip, a, call.batch, call.mid_ctx, latency, stack=stack)
        return Variant("speculative", k=k, acceptance=a,
                       note=f"k={k} minimises predicted s/token with the draft on {dchip.name}, the target on {tchip.name}")
    raise PartitionError(f"unknown partitioning kind {kind!r}; known: {', '.join(KINDS)}")


def force(graph: Graph, ctx: PassContext, kind: str, phases: str = "both", stages: int = 0) -> Graph:
    calls = find_calls(graph)
    chosen = {}
    for n, call in calls.items():
        if kind == "layers" and ctx.cluster is not None and _accelerators(ctx.cluster):
            # Forced: a pipeline even where one chip would hold the model.
            chip = max(_accelerators(ctx.cluster), key=lambda c: (c.capacity_bytes, c.name))
            v = pipeline_variant(call, chip, min_stages=max(2, stages), max_stages=stages or 16, stack=ctx.stack)
            v = replace(v, phases=phases) if v is not None else None
        else:
            v = (variant_for(kind, call, ctx.cluster, ctx.stack)
                 if ctx.cluster is not None or kind in ("whole", "phase") else None)
        if v is None:
            raise PartitionError(f"LLM call {n}: partitioning kind {kind} does not apply here "
                                 + ("(no draft model)" if kind == "speculative" else "(see docs/compiler.md)"))
        chosen[n] = v
    ctx.partitions.update(
        {n: PartitionReport(kind=v.kind, detail=v.describe(), why=f"forced by the {kind} pass") for n, v in chosen.items()}
    )
    return apply_variants(graph, calls, chosen)


@dataclass(frozen=True)
class PartitionLayers(Pass):
    """Split every LLM call into a layer pipeline: stages sized for the largest accelerator (or exactly
    `stages`), balanced by dynamic programming; `phases` pipelines the prefill, the decode, or both."""

    name: ClassVar[str] = "partition-layers"
    requires: ClassVar[tuple[Level, ...]] = ("model",)
    needs_cluster: ClassVar[bool] = True
    phases: Literal["both", "prefill", "decode"] = "both"
    stages: Literal[0] | Annotated[int, Ge(2)] = 0  # 0: the fewest that fit; a pipeline has at least 2

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return force(graph, ctx, "layers", self.phases, self.stages)


@dataclass(frozen=True)
class PartitionAttnFFN(Pass):
    """Split every LLM call's decode into attention and FFN groups with ping-pong micro-batches."""

    name: ClassVar[str] = "partition-attn-ffn"
    requires: ClassVar[tuple[Level, ...]] = ("model",)
    needs_cluster: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return force(graph, ctx, "attn-ffn")


@dataclass(frozen=True)
class Speculative(Pass):
    """Decode every LLM call that names a draft model speculatively (draft and target placed apart)."""

    name: ClassVar[str] = "speculative"
    requires: ClassVar[tuple[Level, ...]] = ("model",)
    needs_cluster: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return force(graph, ctx, "speculative")
