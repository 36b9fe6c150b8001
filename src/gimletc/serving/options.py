"""Stage 1 of the serving search: what one engine (or unit) of every kind serves for one model.

For each LLM call of a model (`calls_of`) and each engine kind that holds the model (`_kinds`: a chip
type, a tensor-parallel size, attention data-parallel ranks for MoE models), the cost model predicts
the prefill time per request and the largest decode batch under the SLO (`_predict`); each role of a
mode gets its options (`_space`: aggregated, prefill and decode replicas, speculative pairs with k
chosen, attention/FFN units with M:N ratios and micro-batches), each with its band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gimletc.cost.uncertainty import Band, band, combine
from gimletc.errors import ConfigError
from gimletc.hardware import Cluster, get_chip
from gimletc.ir import Graph
from gimletc.passes.partition import DEFAULT_ACCEPTANCE, MAX_DRAFT_K
from gimletc.serving.layout import (
    EngineKind,
    Split,
)
from gimletc.serving.settings import SearchSettings
from gimletc.sim.config import SimConfig
from gimletc.sim.metrics import SLO
from gimletc.sim.policies import batch_params
from gimletc.sim.roles import DPCost, SpecCost, SplitCost
from gimletc.sim.steps import StepCost, profile_for_stack

# ---- stage 1: prediction ------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One LLM call of a model: its shape and expected executions per request."""

    llm: str
    prompt: int
    ctx: int
    out: int
    seqs: int
    runs: float  # expected executions per request
    first: bool  # the request's first LLM call (its TTFT is the request's)
    draft: str | None = None
    acceptance: float | None = None
    draft_k: int | None = None

    def to_dict(self) -> dict:
        return {"llm": self.llm, "prompt_tokens": self.prompt, "context_tokens": self.ctx, "output_tokens": self.out,
                "sequences": self.seqs, "runs_per_request": self.runs, "first": self.first, "draft": self.draft}


def calls_of(g: Graph) -> dict[str, list[Call]]:
    """LLM calls per model of a model-level graph, with their expected executions per request."""
    out: dict[str, list[Call]] = {}
    pre: dict[str, Any] = {}
    first_seen = [False]

    def rec(gr: Graph, scale: float, top: bool) -> None:
        for op in gr.ops:
            if op.kind == "model.prefill":
                pre[str(op.attr("of", op.name))] = (op, top and not first_seen[0])
                first_seen[0] = True
            elif op.kind == "model.decode":
                llm = str(op.attr("of", op.name))
                p, first = pre.get(llm, (None, False))
                prompt = int(p.attr("tokens")) if p is not None else int(op.attr("ctx"))
                acc = op.attr("acceptance")
                k = op.attr("draft_k")
                out.setdefault(str(op.attr("model")), []).append(
                    Call(llm, prompt, int(p.attr("ctx", 0)) if p is not None else 0, int(op.attr("tokens")),
                         int(op.attr("batch", 1)), scale, first,
                         str(op.attr("draft")) if op.attr("draft") is not None else None,
                         float(acc) if acc is not None else None, int(k) if k is not None else None))
            elif op.kind == "agent.loop":
                rec(op.regions[0], scale * float(op.attr("expected", 1.0)), False)
            elif op.kind == "agent.branch":
                for r, pr in zip(op.regions, op.attr("probabilities", ()), strict=False):
                    rec(r, scale * float(pr), False)

    rec(g, 1.0, True)
    return out


@dataclass(frozen=True)
class _Perf:
    """What one engine (or unit) of a kind is predicted to serve for one model."""

    prefill_s: float  # prefill seconds per request (all the model's calls)
    prefill_ok: bool
    decode_batch: int  # largest batch meeting TPOT with KV room (0: none)
    decode_req_s: float  # requests/s one engine serves at that batch
    why: str = ""
    decode_s: float = 0.0  # decode seconds per request at that batch (for the band)

    @property
    def prefill_req_s(self) -> float:
        return 1.0 / self.prefill_s if self.prefill_s > 0 else math.inf

    @property
    def agg_req_s(self) -> float:
        return 1.0 / (self.prefill_s + 1.0 / self.decode_req_s) if self.decode_req_s > 0 else 0.0


def _predict(cost: StepCost, kv_cap: float, chip_name: str, calls: list[Call], slo: SLO, sim: SimConfig,
             stack: str) -> _Perf:
    """Prefill time per request and the best decode batch under the SLO of one engine priced by `cost`
    (any `StepCost`, a role's composite included) with `kv_cap` bytes of KV-cache room."""
    m = cost.model
    if kv_cap <= 0:
        return _Perf(0, False, 0, 0.0, f"weights {cost.weight_bytes / 1e9:.1f} GB leave no room for a KV cache")
    pre = sum(c.runs * cost.prefill(c.seqs, c.prompt, c.ctx)[0] for c in calls)
    first = [c for c in calls if c.first]
    why = ""
    ok = True
    if slo.ttft_s is not None and first:
        t = cost.prefill(first[0].seqs, first[0].prompt, first[0].ctx)[0]
        if t > slo.ttft_s:
            ok = False
            why = f"prefill {t * 1e3:.0f} ms > TTFT target"
    # Decode: the largest batch under the TPOT target whose caches fit.
    heaviest = max(calls, key=lambda c: c.prompt + c.ctx + c.out)
    mid = heaviest.prompt + heaviest.ctx + heaviest.out // 2
    kv_one = cost.kv_bytes(heaviest.prompt + heaviest.ctx + heaviest.out, heaviest.seqs)
    cap = batch_params(sim, m, get_chip(chip_name), kv_cap / max(cost.kv_bytes(1), 1e-30), stack).max_batch
    b_kv = int(kv_cap // kv_one) if kv_one > 0 else cap
    b_max = max(0, min(cap, b_kv))
    limit = slo.tpot_s if slo.tpot_s is not None else math.inf
    best_b = 0
    lo, hi = 1, b_max
    if b_max >= 1 and cost.decode(1, mid)[0] <= limit:
        while lo < hi:  # step time grows with batch: binary search the last batch under the limit
            mid_b = (lo + hi + 1) // 2
            if cost.decode(mid_b, mid)[0] <= limit:
                lo = mid_b
            else:
                hi = mid_b - 1
        best_b = lo
    if best_b == 0:
        reason = "KV cache of one request does not fit" if b_max == 0 else \
            f"decode step {cost.decode(1, mid)[0] * 1e3:.1f} ms at batch 1 > TPOT target"
        return _Perf(pre, ok, 0, 0.0, "; ".join(x for x in (why, reason) if x))
    step = cost.decode(best_b, mid)[0]
    work = sum(c.runs * c.out * step / best_b for c in calls)  # decode seconds per request at that batch
    return _Perf(pre, ok, best_b, 1.0 / work if work > 0 else math.inf, why, work)


@dataclass(frozen=True)
class _Option:
    """One replica (or unit) that serves a role of a mode: its chips and predicted requests/s."""

    role: str  # agg | prefill | decode | spec | afd
    chips: tuple[tuple[str, int], ...]  # per chip type
    rate: float
    perf: _Perf
    kind: EngineKind
    other: EngineKind | None = None  # spec: the draft engine; afd: the FFN engine
    k: int = 0  # spec
    acceptance: float = 0.0  # spec
    split: Split | None = None  # afd
    band: Band | None = None

    @property
    def total(self) -> int:
        return sum(n for _, n in self.chips)

    @property
    def per_chip(self) -> float:
        return self.rate / max(1, self.total)

    @property
    def label(self) -> str:
        if self.role == "spec":
            return f"{self.kind.label} verify + {self.other.label if self.other else '?'} draft k={self.k}"
        if self.role == "afd" and self.split is not None:
            return f"{self.split.attn}x {self.kind.label} attn : {self.split.ffn}x {self.other.label if self.other else '?'} ffn"
        return f"{self.kind.label} {self.role}"


@dataclass(frozen=True)
class _ModelSpace:
    """Everything the search predicted for one model: its calls and options per role."""

    model: str
    calls: list[Call]
    options: dict[str, list[_Option]]  # role -> options
    draft: str | None
    acceptance: float


def _node_chips(cluster: Cluster) -> dict[str, int]:
    per_node: dict[str, int] = {}
    for node in cluster.nodes:
        for chip, count in node.chips.items():
            per_node[chip] = max(per_node.get(chip, 0), count)
    return per_node


def _kinds(cluster: Cluster, model: str, settings: SearchSettings, need_bytes: float | None = None,
           dp: bool = True) -> list[EngineKind]:
    """Engine kinds whose chips hold `need_bytes` (default: the model's weights): tensor-parallel sizes
    (powers of two up to a node's chips), and for MoE models attention-DP ranks with EP."""
    sim = settings.sim
    m = sim.model(model)
    need = m.weight_bytes if need_bytes is None else need_bytes
    per_node = _node_chips(cluster)
    out = []
    dps = settings.dp if settings.dp is not None else ((2, 4, 8) if m.moe is not None else ())
    for chip_name in sorted(per_node):
        if settings.chips and chip_name not in settings.chips:
            continue
        chip = get_chip(chip_name)
        if chip.kind == "cpu":
            continue
        usable = chip.capacity_bytes * sim.engine.mem_fraction
        n_min = max(1, math.ceil(need / usable))
        tp = 1 << max(0, math.ceil(math.log2(n_min)))
        while tp <= min(8, per_node[chip_name]):
            if (tp == 1 or chip.scale_up_bw) and (settings.tp is None or tp in settings.tp):
                out.append(EngineKind(chip_name, tp))
            tp *= 2
        if not dp or not chip.scale_up_bw:
            continue
        for d in dps:
            if d < 2:
                continue
            for tp in (1, 2, 4, 8):
                if tp * d > per_node[chip_name] or (settings.tp is not None and tp not in settings.tp):
                    continue
                if tp * d * usable < need:
                    continue
                k = EngineKind(chip_name, tp, d)
                attn = m.stage_weight_bytes(0, m.layers, "attention")
                if attn / tp + (m.weight_bytes - attn) / (tp * d) < usable:  # each chip's share fits
                    out.append(k)
    return out


def _nothing_holds(model: str, cluster: Cluster, settings: SearchSettings) -> str:
    """Why no engine kind serves `model`: the --tp or --chips filter, or no chip type large enough."""
    unfiltered = _kinds(cluster, model, replace(settings, tp=None, chips=None))
    if not unfiltered:
        return f"{model}: no chip type of {cluster.name} holds it (at tensor-parallel sizes up to a node's chips, at most 8)"
    sizes = ", ".join(f"{c} at tp {'/'.join(str(k.tp) for k in unfiltered if k.chip == c)}"
                      for c in dict.fromkeys(k.chip for k in unfiltered))
    asked = []
    if settings.tp is not None:
        asked.append(f"--tp {','.join(map(str, settings.tp))}")
    if settings.chips is not None:
        asked.append(f"--chips {','.join(settings.chips)}")
    return (f"{model}: no engine fits {' and '.join(asked)} on {cluster.name}; it can be served as {sizes} "
            "(tensor-parallel sizes are powers of two, from the smallest that holds the model up to a node's chips)")


def _budgets(cluster: Cluster, settings: SearchSettings) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in cluster.nodes:
        for chip, count in node.chips.items():
            if get_chip(chip).kind == "cpu":
                continue
            if settings.chips and chip not in settings.chips:
                continue
            out[chip] = out.get(chip, 0) + count
    return out


def _stack(settings: SearchSettings) -> str:
    return (settings.sim.profile or profile_for_stack(None)).stack


def _cost(model: str, kind: EngineKind, settings: SearchSettings) -> StepCost:
    prof = settings.sim.profile or profile_for_stack(None)
    m = settings.sim.model(model)
    if kind.dp > 1:
        return DPCost(m, get_chip(kind.chip), kind.tp, prof, kind.dp)
    return StepCost(m, get_chip(kind.chip), kind.tp, prof)


def _room(kind: EngineKind, weights: float, settings: SearchSettings, copies: int = 1) -> float:
    """KV-cache bytes left on `copies` engines of `kind` after `weights` (over all of them)."""
    chip = get_chip(kind.chip)
    return chip.capacity_bytes * kind.chips * copies * settings.sim.engine.mem_fraction - weights


def _band(chips: Sequence[tuple[str, str, float]], stack: str, moe: bool) -> Band | None:
    """The band of a prediction made of (chip, op kind, seconds) parts."""
    parts = [(s, band(c, stack, k, moe)) for c, k, s in chips if s > 0 and math.isfinite(s)]
    return combine(parts) if parts else None


def _link(cluster: Cluster, a: str, b: str) -> tuple[float, float]:
    """(latency, bandwidth) of the route between a device of chip type `a` and one of type `b`
    (another device of the same type when a == b): the first pair in the cluster's file order."""
    devs = [d for d in cluster.accelerators()]
    src = next(d for d in devs if d.chip.name == a)
    dst = next((d for d in devs if d.chip.name == b and d.id != src.id), None)
    if dst is None:
        return 0.0, math.inf
    r = cluster.route(src.id, dst.id)
    return r.latency, r.bandwidth


def _space(model: str, calls: list[Call], cluster: Cluster, slo: SLO, settings: SearchSettings, modes: set[str],
           skipped: list[tuple[str, str]]) -> _ModelSpace:
    """Every option of every role this model may use, predicted."""
    sim = settings.sim
    stack = _stack(settings)
    m = sim.model(model)
    moe = m.moe is not None
    options: dict[str, list[_Option]] = {"agg": [], "prefill": [], "decode": [], "spec": [], "afd": []}
    kinds = _kinds(cluster, model, settings)
    for kind in kinds:
        cost = _cost(model, kind, settings)
        p = _predict(cost, _room(kind, cost.weight_bytes, settings), kind.chip, calls, slo, sim, stack)
        if p.why:
            skipped.append((f"{model} on {kind.label}", p.why))
        chips = ((kind.chip, kind.chips),)
        b = _band(((kind.chip, "prefill", p.prefill_s), (kind.chip, "decode", p.decode_s)), stack, moe)
        if p.prefill_ok and p.decode_req_s > 0:
            options["agg"].append(_Option("agg", chips, p.agg_req_s, p, kind, band=b))
        if p.prefill_ok:
            options["prefill"].append(_Option("prefill", chips, p.prefill_req_s, p, kind,
                                              band=_band(((kind.chip, "prefill", p.prefill_s),), stack, moe)))
        if p.decode_req_s > 0:
            options["decode"].append(_Option("decode", chips, p.decode_req_s, p, kind,
                                             band=_band(((kind.chip, "decode", p.decode_s),), stack, moe)))
    if not kinds:
        raise ConfigError(_nothing_holds(model, cluster, settings))
    draft = settings.draft or next((c.draft for c in calls if c.draft), None)
    acc = settings.acceptance if settings.acceptance is not None else \
        next((c.acceptance for c in calls if c.acceptance is not None), DEFAULT_ACCEPTANCE)
    if "spec" in modes:
        if draft is None:
            skipped.append((f"{model} speculative", "no draft model: the graph's call names none (give --draft)"))
        else:
            options["spec"] = _spec_options(model, draft, acc, calls, kinds, cluster, slo, settings, skipped)
    if "attn-ffn" in modes:
        options["afd"] = _split_options(model, calls, cluster, slo, settings, skipped)
    return _ModelSpace(model, calls, options, draft, acc)


def _spec_options(model: str, draft: str, acc: float, calls: list[Call], kinds: list[EngineKind], cluster: Cluster,
                  slo: SLO, settings: SearchSettings, skipped: list[tuple[str, str]]) -> list[_Option]:
    """Speculative units: a verify engine of each tensor-parallel kind and a draft engine of each kind
    that holds the draft, with the k (1..MAX_DRAFT_K, unless the call fixes it) that serves the most."""
    sim = settings.sim
    stack = _stack(settings)
    prof = sim.profile or profile_for_stack(None)
    target, dm = sim.model(model), sim.model(draft)
    fixed_k = next((c.draft_k for c in calls if c.draft_k), None)
    ks = (fixed_k,) if fixed_k else tuple(range(1, MAX_DRAFT_K + 1))
    drafts = [k for k in _kinds(cluster, draft, settings, dp=False)]
    out = []
    for v in (k for k in kinds if k.dp == 1):
        for d in drafts:
            lat, bw = _link(cluster, v.chip, d.chip)
            best: tuple[float, int, _Perf] | None = None
            for k in ks:
                link_s = 2 * lat + (8.0 * k + 4.0) / bw
                cost = SpecCost(target, get_chip(v.chip), v.tp, prof, dm, get_chip(d.chip), d.tp, k, acc, link_s)
                p = _predict(cost, _room(v, target.weight_bytes, settings), v.chip, calls, slo, sim, stack)
                if p.prefill_ok and p.decode_req_s > 0 and (best is None or p.agg_req_s > best[0] * (1 + 1e-9)):
                    best = (p.agg_req_s, k, p)
            if best is None:
                skipped.append((f"{model} speculative on {v.label} verify + {d.label} draft",
                                "no draft length meets the SLO"))
                continue
            rate, k, p = best
            b = _band(((v.chip, "prefill", p.prefill_s), (v.chip, "verify", p.decode_s), (d.chip, "decode", p.decode_s)),
                      stack, target.moe is not None)
            need = {v.chip: v.chips}
            need[d.chip] = need.get(d.chip, 0) + d.chips
            chips = tuple(sorted(need.items()))
            out.append(_Option("spec", chips, rate, p, v, d, k, acc, band=b))
    return out


def _split_options(model: str, calls: list[Call], cluster: Cluster, slo: SLO, settings: SearchSettings,
                   skipped: list[tuple[str, str]]) -> list[_Option]:
    """Attention/FFN units: M attention engines (M in `settings.ratios`) of each kind that holds the
    attention weights, one FFN engine of each kind that holds the FFN weights, the micro-batch count
    (`settings.micro`) that serves the most."""
    sim = settings.sim
    stack = _stack(settings)
    prof = sim.profile or profile_for_stack(None)
    m = sim.model(model)
    L = m.layers
    attn_w, ffn_w = m.stage_weight_bytes(0, L, "attention"), m.stage_weight_bytes(0, L, "ffn")
    attn_kinds = _kinds(cluster, model, settings, attn_w, dp=False)
    ffn_kinds = _kinds(cluster, model, settings, ffn_w, dp=False)
    budgets = _budgets(cluster, settings)
    out = []
    for a in attn_kinds:
        for f in ffn_kinds:
            lat, bw = _link(cluster, a.chip, f.chip)
            for M in settings.ratios:
                need = {a.chip: M * a.chips}
                need[f.chip] = need.get(f.chip, 0) + f.chips
                if any(n > budgets.get(c, 0) for c, n in need.items()):
                    continue
                best: tuple[float, int, _Perf] | None = None
                for micro in settings.micro:
                    cost = SplitCost(m, get_chip(a.chip), a.tp, prof, get_chip(f.chip), f.chips, M, micro, (lat, bw))
                    p = _predict(cost, _room(a, M * attn_w, settings, M), a.chip, calls, slo, sim, stack)
                    if p.decode_req_s > 0 and (best is None or p.decode_req_s > best[0] * (1 + 1e-9)):
                        best = (p.decode_req_s, micro, p)
                if best is None:
                    continue
                rate, micro, p = best
                b = _band(((a.chip, "decode", p.decode_s / 2), (f.chip, "decode", p.decode_s / 2)), stack,
                          m.moe is not None)
                chips = tuple(sorted(need.items()))
                out.append(_Option("afd", chips, rate, p, a, f, split=Split(M, 1, micro), band=b))
    if not out:
        skipped.append((f"{model} attention/FFN", "no attention and FFN kinds meet the TPOT target within the budget"))
    return out
