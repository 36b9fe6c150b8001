"""SLO-aware search over serving configurations: modes, roles, chip types and replica counts.

For each model of the graph, the search predicts what one engine of every *kind* serves
(`EngineKind`: a chip type, a tensor-parallel size, and, for MoE models, attention
data-parallel ranks with expert parallelism), and what one *unit* of the two-sided roles
serves (a speculative pair: a verify engine of the target and a draft engine of the draft
model; an attention/FFN unit: M attention engines feeding an FFN engine). Then, per mode
(`gimletc.serving.layout`):
- `agg`: replicas of one kind filling the budget, with and without chunked prefill; and the
  mix of kinds over chip types with the highest predicted rate;
- `disagg`: for every (prefill kind, decode kind), the split of the budget that the cost model
  predicts serves the most requests, each side within its own chip type's budget; and mixes,
  where a role's replicas span chip types (prefill on H100 and H200 together);
- `spec`: units of one (verify kind, draft kind, k) filling the budget, k chosen per pair;
- `attn-ffn`: prefill replicas and attention/FFN units, split as `disagg` splits.
A mix is the exact optimum of a small integer program (scipy's HiGHS): the most requests/s
every role serves, within each chip type's budget and the total, then the fewest chips.

Two stages keep a search bounded:
1. Prediction (no simulation): from the cost model, a prefill replica serves
   1 / (prefill time per request) requests/s; a decode engine runs the largest batch B whose
   step time fits the TPOT target and whose KV caches fit, and serves B / (output tokens x
   step time) requests/s. Kinds that cannot meet the SLO even alone are dropped, with the
   reason reported.
2. Measurement: the `top_k` candidates by predicted goodput per chip (at least the best of
   each mode, and the best that mixes chip types) are simulated under Poisson load, and
   their goodput found by bisection over the arrival rate (`gimletc.sim.metrics.goodput`).

Every simulated operating point that meets the SLO is a point (tokens/s per user, tokens/s
per chip); the Pareto frontier is the set of points no other point beats on both.

`recommend` answers the other question: the fewest chips (and the least power, and the least
cost) that serve a given rate within the SLO, each predicted by the same integer program
with the rate as a floor and checked by simulation at that rate.

Graphs with several models: the budget is shared in proportion to each model's predicted
chip-seconds per request, and the i-th best candidate of every model (per mode) are combined
— a heuristic, unlike the single-model search.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from gimletc.cost.uncertainty import Band, band, combine
from gimletc.errors import ConfigError, GimletError
from gimletc.hardware import Cluster, get_chip
from gimletc.ir import Graph
from gimletc.passes.partition import DEFAULT_ACCEPTANCE, MAX_DRAFT_K
from gimletc.serving.layout import (
    MODES,
    EngineKind,
    Group,
    ModelServing,
    ServingConfig,
    Speculation,
    Split,
    lower_to_model_level,
    serving_workload,
)
from gimletc.sim.arrivals import generate
from gimletc.sim.config import POLICIES, SimConfig, SimulationError
from gimletc.sim.load import simulate
from gimletc.sim.metrics import SLO, GoodputPoint, GoodputResult, goodput, point
from gimletc.sim.policies import batch_params
from gimletc.sim.results import LoadResult
from gimletc.sim.roles import DPCost, SpecCost, SplitCost
from gimletc.sim.steps import StepCost, profile_for_stack

__all__ = [
    "Candidate",
    "Evaluation",
    "ParetoPoint",
    "Recommendation",
    "SearchResult",
    "SearchSettings",
    "pareto_front",
    "predict",
    "recommend",
    "search",
]

ROLE_POLICY_ROLES = ("agg", "prefill", "decode", "spec", "attn")  # roles whose engines a --role-policy may set


@dataclass(frozen=True)
class SearchSettings:
    """What a search simulates; every figure it reports names these."""

    requests: int = 1000  # per simulation
    seed: int = 0
    top_k: int = 8  # configurations simulated
    rtol: float = 0.05  # bisection stops when hi/lo < 1 + rtol
    max_evals: int = 14  # simulations per bisection
    max_chips: int | None = None  # budget over all chip types (default: the cluster's accelerators)
    tp: tuple[int, ...] | None = None  # tensor-parallel sizes to try (default: powers of two that fit)
    modes: tuple[str, ...] | None = None  # None: agg, disagg, spec where a draft is named, attn-ffn for MoE models
    chunked: tuple[bool, ...] = (False, True)  # aggregated variants
    chips: tuple[str, ...] | None = None  # chip types to use (default: every accelerator type)
    frontier: tuple[float, ...] = (0.25, 0.5, 0.75)  # extra operating points, as fractions of each goodput
    sim: SimConfig = SimConfig()
    dp: tuple[int, ...] | None = None  # attention data-parallel sizes (EP over tp x dp); None: 2, 4, 8 for MoE models
    ratios: tuple[int, ...] = (1, 2, 4, 8)  # attn-ffn: attention engines per FFN engine (M of M:1)
    micro: tuple[int, ...] = (1, 2, 3, 4)  # attn-ffn: ping-pong micro-batches tried
    draft: str | None = None  # spec: the draft model (default: the one the graph's LLM call names)
    acceptance: float | None = None  # spec: per-token acceptance (default: the call's, else DEFAULT_ACCEPTANCE)
    mix: bool = True  # let a role's replicas span chip types
    role_policy: tuple[tuple[str, str], ...] = ()  # (role, batching policy) for that role's engines

    def __post_init__(self) -> None:
        if self.requests < 10:
            raise ConfigError(f"search needs at least 10 requests per simulation; got {self.requests}")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1; got {self.top_k}")
        if self.max_chips is not None and self.max_chips < 1:
            raise ConfigError(f"max_chips must be >= 1; got {self.max_chips}")
        if self.modes is not None:
            bad = [m for m in self.modes if m not in MODES]
            if bad or not self.modes:
                raise ConfigError(f"modes must be a non-empty subset of {', '.join(MODES)}; got {', '.join(self.modes)}")
        for name, vals in (("dp", self.dp or ()), ("ratios", self.ratios), ("micro", self.micro)):
            if any(v < 1 for v in vals):
                raise ConfigError(f"{name} sizes must be >= 1; got {', '.join(map(str, vals))}")
        if self.acceptance is not None and not 0 <= self.acceptance < 1:
            raise ConfigError(f"speculative acceptance must be in [0, 1); got {self.acceptance:g}")
        for role, pol in self.role_policy:
            if role not in ROLE_POLICY_ROLES:
                raise ConfigError(f"role policy: unknown role {role!r}; roles: {', '.join(ROLE_POLICY_ROLES)}")
            if pol not in POLICIES:
                raise ConfigError(f"role policy {role}: unknown batching policy {pol!r}; choose one of "
                                  f"{', '.join(POLICIES)}")

    def policy_of(self, role: str) -> str | None:
        return dict(self.role_policy).get(role)

    def to_dict(self) -> dict:
        return {"requests": self.requests, "seed": self.seed, "top_k": self.top_k, "rtol": self.rtol,
                "max_evals": self.max_evals, "max_chips": self.max_chips,
                "tp": list(self.tp) if self.tp else None, "modes": list(self.modes) if self.modes else None,
                "chunked": list(self.chunked), "chips": list(self.chips) if self.chips else None,
                "frontier": list(self.frontier), "dp": list(self.dp) if self.dp else None,
                "ratios": list(self.ratios), "micro": list(self.micro), "draft": self.draft,
                "acceptance": self.acceptance, "mix": self.mix,
                "role_policy": {r: p for r, p in self.role_policy},
                "arrivals": "poisson", "sim": self.sim.to_dict()}


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


@dataclass(frozen=True)
class Candidate:
    """A configuration with the requests/s the cost model predicts it serves, and that prediction's band."""

    config: ServingConfig
    predicted_req_s: float
    band: Band | None = None

    @property
    def predicted_per_chip(self) -> float:
        return self.predicted_req_s / max(1, self.config.total_chips)

    def to_dict(self) -> dict:
        return {"req_s": self.predicted_req_s, "req_s_per_chip": self.predicted_per_chip,
                "band": self.band.to_dict() if self.band else None, "source": "cost model (stage 1 of the search)"}


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


# ---- budgets: how many of each option -------------------------------------------------------------


def _fits(chips: dict[str, int], budgets: dict[str, int], total: int) -> bool:
    return sum(chips.values()) <= total and all(k <= budgets.get(c, 0) for c, k in chips.items())


def _count_chips(opts: Sequence[_Option], counts: Sequence[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o, x in zip(opts, counts, strict=True):
        for c, n in o.chips:
            out[c] = out.get(c, 0) + n * x
    return out


def best_split(roles: Sequence[_Option], budgets: dict[str, int], total: int) -> tuple[float, tuple[int, ...]] | None:
    """One option per role (one or two roles): the counts with the most requests/s that every role serves,
    each option within its chip types' budgets and all within `total`; ties: fewer chips, then more of
    the first. Exact: every count of the first role is tried."""
    if len(roles) == 1:
        o = roles[0]
        x = min([total // o.total] + [budgets.get(c, 0) // n for c, n in o.chips])
        return (x * o.rate, (x,)) if x >= 1 else None
    if len(roles) != 2:
        raise GimletError("best_split takes one or two roles")
    p, d = roles
    best: tuple[float, int, int, int] | None = None  # rate, -chips, x, y
    x = 1
    while True:
        used = _count_chips((p,), (x,))
        if not _fits(used, budgets, total):
            break
        room = [budgets.get(c, 0) - used.get(c, 0) for c, _ in d.chips]
        y = min([(total - sum(used.values())) // d.total] + [r // n for r, (_, n) in zip(room, d.chips, strict=True)])
        if y >= 1:
            rate = min(x * p.rate, y * d.rate)
            y = min(y, max(1, math.ceil(rate / d.rate - 1e-9)))  # fewer decode replicas when they would idle
            key = (rate, -(x * p.total + y * d.total), x, y)
            if best is None or key[:3] > best[:3]:
                best = key
        x += 1
    if best is None:
        return None
    return best[0], (best[2], best[3])


def solve(roles: Sequence[Sequence[_Option]], budgets: dict[str, int], total: int, need: float | None = None,
          objective: str = "rate") -> tuple[float, list[list[int]]] | None:
    """How many of each option: an integer program over every role's options (scipy's HiGHS).

    objective "rate": the most requests/s R that every role serves (Σ rate·count >= R per role)
    within each chip type's budget and `total`, then the fewest chips at that R; "chips", "power",
    "price": the least of that with R >= `need`. Returns (R, counts per role), or None if infeasible."""
    opts = [o for r in roles for o in r]
    n = len(opts)
    if n == 0:
        return None
    types = sorted({c for o in opts for c, _ in o.chips})
    A: list[list[float]] = []
    lo: list[float] = []
    hi: list[float] = []
    first = 0
    for r in roles:  # Σ rate·x - R >= 0
        a = [0.0] * (n + 1)
        for i, o in enumerate(r):
            a[first + i] = o.rate
        a[n] = -1.0
        first += len(r)
        A.append(a)
        lo.append(0.0)
        hi.append(np.inf)
    for c in types:
        a = [float(dict(o.chips).get(c, 0)) for o in opts] + [0.0]
        A.append(a)
        lo.append(-np.inf)
        hi.append(float(budgets.get(c, 0)))
    A.append([float(o.total) for o in opts] + [0.0])
    lo.append(-np.inf)
    hi.append(float(total))
    ub = [float(min([total // max(1, o.total)] + [budgets.get(c, 0) // k for c, k in o.chips])) for o in opts]
    integrality = np.array([1] * n + [0])

    def weights(what: str) -> list[float]:
        if what == "chips":
            return [float(o.total) for o in opts]
        if what == "power":
            return [sum(get_chip(c).tdp_w * k for c, k in o.chips) for o in opts]
        if what == "price":
            return [sum((get_chip(c).price_per_hour or 0.0) * k for c, k in o.chips) for o in opts]
        raise GimletError(f"unknown objective {what!r}; choose rate, chips, power or price")

    rate_lo = 0.0 if need is None else need

    def split_counts(x: list[int]) -> list[list[int]]:
        out, i = [], 0
        for r in roles:
            out.append(x[i:i + len(r)])
            i += len(r)
        return out

    def achieved(x: list[int]) -> float:
        return min(sum(o.rate * k for o, k in zip(r, cs, strict=True))
                   for r, cs in zip(roles, split_counts(x), strict=True))

    def run(c: list[float], r_lo: float) -> Any:
        bounds = Bounds([0.0] * n + [r_lo], ub + [np.inf])
        with _quiet_stdout():
            return milp(np.array(c), constraints=LinearConstraint(np.array(A), np.array(lo), np.array(hi)),
                        integrality=integrality, bounds=bounds)

    if objective == "rate":
        res = run([0.0] * n + [-1.0], rate_lo)
        if res.status != 0 or res.x is None or res.x[n] <= 0:
            return None
        # The rate the integer counts serve (the solver's R may sit a tolerance above it), then the fewest chips.
        r_best = achieved([int(round(v)) for v in res.x[:n]])
        if r_best <= 0:
            return None
        res = run(weights("chips") + [0.0], r_best * (1 - 1e-7))
    else:
        w = weights(objective)
        if need is None:
            raise GimletError(f"objective {objective} needs a rate to serve")
        # Ties (equal chips, power or price): the one that serves the most.
        res = run(w + [-1e-6], rate_lo)
    if res.status != 0 or res.x is None:
        return None
    x = [int(round(v)) for v in res.x[:n]]
    rate = achieved(x)
    return (rate, split_counts(x)) if rate > 0 else None


_LIBC = ctypes.CDLL(None)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS's MIP solver prints some diagnostics with C's printf, whatever its options say; keep them off
    stdout (which may be carrying --json)."""
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real file behind stdout (captured): nothing to guard
        yield
        return
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            try:
                yield
            finally:
                _LIBC.fflush(None)  # what C buffered goes to /dev/null too
                os.dup2(saved, fd)
    finally:
        os.close(saved)


MODE_OPTION_ROLES: dict[str, tuple[str, ...]] = {"agg": ("agg",), "disagg": ("prefill", "decode"), "spec": ("spec",),
                                                 "attn-ffn": ("prefill", "afd")}


def _serving(space: _ModelSpace, mode: str, roles: Sequence[Sequence[_Option]], counts: Sequence[Sequence[int]],
             settings: SearchSettings, chunked: bool = False) -> ModelServing:
    """The model's serving configuration from option counts."""
    groups: list[Group] = []
    spec = split = None
    for opts, cs in zip(roles, counts, strict=True):
        for o, x in sorted(zip(opts, cs, strict=True), key=lambda t: t[0].kind):
            if x <= 0:
                continue
            if o.role in ("agg", "prefill", "decode"):
                groups.append(Group(o.role, o.kind, x, settings.policy_of(o.role)))
            elif o.role == "spec":
                assert o.other is not None and space.draft is not None
                groups.append(Group("verify", o.kind, x, settings.policy_of("spec")))
                groups.append(Group("draft", o.other, x))
                spec = Speculation(space.draft, o.k, o.acceptance)
            else:  # afd
                assert o.other is not None and o.split is not None
                groups.append(Group("attn", o.kind, x * o.split.attn, settings.policy_of("attn")))
                groups.append(Group("ffn", o.other, x * o.split.ffn))
                split = o.split
    return ModelServing(space.model, mode, tuple(groups), chunked, spec, split)  # type: ignore[arg-type]


def _config_band(roles: Sequence[Sequence[_Option]], counts: Sequence[Sequence[int]]) -> Band | None:
    parts = []
    for opts, cs in zip(roles, counts, strict=True):
        for o, x in zip(opts, cs, strict=True):
            if x > 0 and o.band is not None:
                parts.append((x * o.total, o.band))
    return combine(parts) if parts else None


def _type_subsets(types: list[str]) -> list[tuple[str, ...]]:
    """Non-empty subsets of chip types (all of them up to three types; else each alone and all together)."""
    if len(types) <= 3:
        return [s for r in range(1, len(types) + 1) for s in itertools.combinations(types, r)]
    return [(t,) for t in types] + [tuple(types)]


def _model_candidates(space: _ModelSpace, budgets: dict[str, int], share: int, settings: SearchSettings,
                      modes: Sequence[str]) -> dict[str, list[tuple[ModelServing, float, Band | None]]]:
    """Per mode: every configuration of one option per role at its best split, and, with `mix`, the best
    mixes of options over subsets of chip types; sorted by predicted requests/s per chip."""
    out: dict[str, list[tuple[ModelServing, float, Band | None]]] = {m: [] for m in modes}
    for mode in modes:
        role_opts = [space.options[r] for r in MODE_OPTION_ROLES[mode]]
        if any(not r for r in role_opts):
            continue
        seen: set[ModelServing] = set()

        def add(roles: Sequence[Sequence[_Option]], counts: Sequence[Sequence[int]], rate: float,
                mode: str = mode) -> None:
            variants = settings.chunked if mode == "agg" else (False,)
            for chunked in variants:
                ms = _serving(space, mode, roles, counts, settings, chunked)
                if ms not in seen and _fits(ms.chips(), budgets, share):
                    seen.add(ms)
                    out[mode].append((ms, rate, _config_band(roles, counts)))

        for combo in itertools.product(*role_opts):  # one option per role
            got = best_split(combo, budgets, share)
            if got is not None:
                add([[o] for o in combo], [[x] for x in got[1]], got[0])
        if settings.mix:
            types = sorted(budgets)
            unit_roles = {"spec", "afd"}  # a unit is one kind per side: mixes pick one unit kind at a time
            for subsets in itertools.product(_type_subsets(types), repeat=len(role_opts)):
                roles = [[o for o in opts if all(c in sub for c, _ in o.chips)]
                         for opts, sub in zip(role_opts, subsets, strict=True)]
                if any(not r for r in roles) or all(len(r) == 1 for r in roles):
                    continue
                unit_idx = [i for i, r in enumerate(MODE_OPTION_ROLES[mode]) if r in unit_roles]
                if unit_idx:
                    i = unit_idx[0]
                    firsts = sorted(roles[i], key=lambda o: (-o.per_chip, o.label))[:3]
                    choices = [[*roles[:i], [u], *roles[i + 1:]] for u in firsts]
                else:
                    choices = [roles]
                for rs in choices:
                    if all(len(r) == 1 for r in rs):
                        continue
                    got2 = solve(rs, budgets, share)
                    if got2 is not None:
                        kept = [[o for o, x in zip(r, cs, strict=True) if x > 0] for r, cs in zip(rs, got2[1], strict=True)]
                        cnts = [[x for x in cs if x > 0] for cs in got2[1]]
                        add(kept, cnts, got2[0])
    for mode in out:
        out[mode].sort(key=lambda c: (-c[1] / max(1, sum(c[0].chips().values())), c[0].label))
    return out


def predict(graph: Graph, cluster: Cluster, slo: SLO, settings: SearchSettings = SearchSettings()
            ) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Stage 1: every candidate configuration with its predicted goodput, and the kinds dropped (why)."""
    cands, skipped, _ = _predict_all(graph, cluster, slo, settings)
    return cands, skipped


def _spaces(g: Graph, cluster: Cluster, slo: SLO, settings: SearchSettings, skipped: list[tuple[str, str]]
            ) -> tuple[dict[str, _ModelSpace], dict[str, tuple[str, ...]]]:
    """Each model's options, and the modes each applies to (the asked ones, or: agg and disagg, spec where a
    draft is named, attn-ffn for MoE models)."""
    calls = calls_of(g)
    if not calls:
        raise ConfigError("the graph has no LLM calls: nothing to serve")
    spaces: dict[str, _ModelSpace] = {}
    modes_of: dict[str, tuple[str, ...]] = {}
    for model, cs in sorted(calls.items()):
        if settings.modes is not None:
            ms = settings.modes
        else:
            moe = settings.sim.model(model).moe is not None
            has_draft = settings.draft is not None or any(c.draft for c in cs)
            ms = tuple(m for m in MODES if m in ("agg", "disagg") or (m == "spec" and has_draft)
                       or (m == "attn-ffn" and moe))
        spaces[model] = _space(model, cs, cluster, slo, settings, set(ms), skipped)
        modes_of[model] = ms
    return spaces, modes_of


def _setup(graph: Graph, cluster: Cluster, slo: SLO, settings: SearchSettings
           ) -> tuple[Graph, dict[str, int], int, list[tuple[str, str]], dict[str, _ModelSpace],
                      dict[str, tuple[str, ...]]]:
    """What a search and a recommendation start from: the graph at model level, the chips per type, the
    total budget, the kinds dropped (why), and each model's options and modes."""
    g = lower_to_model_level(graph, cluster)
    budgets = _budgets(cluster, settings)
    total = min(settings.max_chips or sum(budgets.values()), sum(budgets.values()))
    skipped: list[tuple[str, str]] = []
    spaces, modes_of = _spaces(g, cluster, slo, settings, skipped)
    return g, budgets, total, skipped, spaces, modes_of


def _predict_all(graph: Graph, cluster: Cluster, slo: SLO, settings: SearchSettings
                 ) -> tuple[list[Candidate], list[tuple[str, str]], dict[str, _ModelSpace]]:
    g, budgets, total_budget, skipped, spaces, modes_of = _setup(graph, cluster, slo, settings)
    weights: dict[str, float] = {}
    for model, sp in spaces.items():
        usable = [o.perf for o in sp.options["agg"]] + [o.perf for o in sp.options["decode"]]
        tps = {id(o.perf): o.total for o in sp.options["agg"] + sp.options["decode"]}
        weights[model] = min((tps[id(p)] * (p.prefill_s + 1.0 / p.decode_req_s) for p in usable if p.decode_req_s > 0),
                             default=1.0)
    wsum = sum(weights.values())
    per_model: dict[str, dict[str, list[tuple[ModelServing, float, Band | None]]]] = {}
    for model, sp in spaces.items():
        # Each model gets at least room for one prefill and one decode replica of its smallest kind.
        smallest = min((o.total for r in sp.options.values() for o in r), default=1)
        share = total_budget if len(spaces) == 1 else max(2 * smallest, int(total_budget * weights[model] / wsum))
        per_model[model] = _model_candidates(sp, budgets, share, settings, modes_of[model])
    configs: list[Candidate] = []
    seen = set()
    # Per mode, each model that has candidates in it uses them; the others (a model without a draft under
    # spec, say) their best candidates of any mode.
    overall = {m: sorted((c for lst in per_model[m].values() for c in lst),
                         key=lambda c: (-c[1] / max(1, sum(c[0].chips().values())), c[0].label)) for m in per_model}
    for mode in MODES:
        if not any(per_model[m].get(mode) for m in per_model):
            continue
        lists = [per_model[m].get(mode) or overall[m] for m in sorted(per_model)]
        if any(not lst for lst in lists):
            continue
        for i in range(max(len(lst) for lst in lists)):
            parts = tuple(lst[min(i, len(lst) - 1)] for lst in lists)
            cfg = ServingConfig(tuple(p[0] for p in parts))
            if cfg in seen or not _fits(cfg.chips(), budgets, total_budget):
                continue
            seen.add(cfg)
            rate = min(p[1] for p in parts)
            bands = [(1.0, p[2]) for p in parts if p[2] is not None]
            configs.append(Candidate(cfg, rate, combine(bands) if bands else None))
    configs.sort(key=lambda c: (-c.predicted_per_chip, c.config.label))
    return configs, skipped, spaces


# ---- stage 2: measurement ---------------------------------------------------------------------


@dataclass
class Evaluation:
    """One simulated configuration and its goodput under the SLO."""

    config: ServingConfig
    predicted_req_s: float
    goodput: GoodputResult
    chips: int
    power_w: float
    price_per_hour: float | None
    band: Band | None = None  # of the prediction (stage 1)

    @property
    def goodput_req_s(self) -> float:
        return self.goodput.rate

    @property
    def goodput_tok_s(self) -> float:
        """Output tokens/s served at the goodput rate (rate x mean output tokens per request)."""
        at = self.at_goodput
        return at.throughput_tok_s if at is not None else 0.0

    @property
    def per_chip(self) -> float:
        """Output tokens/s per chip at the goodput rate."""
        return self.goodput_tok_s / self.chips if self.chips else 0.0

    @property
    def per_watt(self) -> float:
        """Output tokens per joule of TDP (tokens/s per watt) at the goodput rate."""
        return self.goodput_tok_s / self.power_w if self.power_w else 0.0

    @property
    def per_dollar(self) -> float | None:
        """Output tokens per dollar of rented chips at the goodput rate."""
        if not self.price_per_hour:
            return None
        return self.goodput_tok_s * 3600.0 / self.price_per_hour

    @property
    def at_goodput(self) -> GoodputPoint | None:
        pts = [p for p in self.goodput.points if p.rate == self.goodput.rate]
        return pts[0] if pts else None

    def to_dict(self) -> dict:
        at = self.at_goodput
        return {
            "config": self.config.to_dict(),
            "mode": self.config.mode,
            "chips": self.chips,
            "power_w": self.power_w,
            "price_per_hour": self.price_per_hour,
            "predicted_req_s": self.predicted_req_s,
            "predicted_band": self.band.to_dict() if self.band else None,
            "goodput_req_s": self.goodput_req_s,
            "goodput_tok_s": self.goodput_tok_s,
            "tok_s_per_chip": self.per_chip,
            "tok_per_joule": self.per_watt,
            "tok_per_dollar": self.per_dollar,
            "tok_s_per_user": at.tok_s_per_user if at else None,
            "ttft_p90_ms": at.ttft_p90_ms if at else None,
            "tpot_p90_ms": at.tpot_p90_ms if at else None,
            "goodput": self.goodput.to_dict(),
        }


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    rate: float
    tok_s_per_user: float
    tok_s_per_chip: float

    def to_dict(self) -> dict:
        return {"config": self.label, "rate_req_s": self.rate, "tok_s_per_user": self.tok_s_per_user,
                "tok_s_per_chip": self.tok_s_per_chip}


def pareto_front(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point beats on both tokens/s per user and tokens/s per chip, by per-user speed."""
    pts = sorted(points, key=lambda p: (-p.tok_s_per_user, -p.tok_s_per_chip, p.label, p.rate))
    front: list[ParetoPoint] = []
    best_chip = -math.inf
    for p in pts:
        if p.tok_s_per_chip > best_chip:
            front.append(p)
            best_chip = p.tok_s_per_chip
    return sorted(front, key=lambda p: (p.tok_s_per_user, -p.tok_s_per_chip))


@dataclass
class SearchResult:
    slo: SLO
    settings: SearchSettings
    evaluations: list[Evaluation]
    candidates: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    calls: dict[str, list[Call]] = field(default_factory=dict)  # the workload: each model's LLM calls

    def points(self) -> list[ParetoPoint]:
        out = []
        for ev in self.evaluations:
            for p in ev.goodput.passing:
                out.append(ParetoPoint(ev.config.label, p.rate, p.tok_s_per_user, p.throughput_tok_s / ev.chips))
        return out

    def pareto(self) -> list[ParetoPoint]:
        return pareto_front(self.points())

    def top(self, metric: str = "per_chip", n: int = 5) -> list[Evaluation]:
        if metric not in ("per_chip", "per_watt", "per_dollar"):
            raise GimletError(f"unknown ranking {metric!r}; choose per_chip, per_watt or per_dollar")
        key = lambda e: (getattr(e, metric) or 0.0)  # noqa: E731
        return sorted(self.evaluations, key=lambda e: (-key(e), e.config.label))[:n]

    def best(self, mode: str, metric: str = "per_chip") -> Evaluation | None:
        evs = [e for e in self.evaluations if e.config.mode == mode and e.goodput_req_s > 0]
        return max(evs, key=lambda e: (getattr(e, metric) or 0.0, e.config.label), default=None)

    def to_dict(self, n: int = 5) -> dict:
        return {
            "slo": self.slo.to_dict(),
            "settings": self.settings.to_dict(),
            "candidates": self.candidates,
            "simulated": len(self.evaluations),
            "evaluations": [e.to_dict() for e in self.top("per_chip", len(self.evaluations))],
            "top": {m: [e.config.label for e in self.top(m, n)] for m in ("per_chip", "per_watt", "per_dollar")},
            "pareto": [p.to_dict() for p in self.pareto()],
            "skipped": [{"what": w, "why": y} for w, y in self.skipped],
            "failed": [{"config": w, "why": y} for w, y in self.failed],
        }


def _runner(g: Graph, cluster: Cluster, config: ServingConfig, settings: SearchSettings
            ) -> Callable[[float], LoadResult]:
    sim = settings.sim
    # The aggregated variants, with and without chunked prefill, ask for it explicitly (the engines' own default is on).
    sim = replace(sim, engine=replace(sim.engine, chunked_prefill=any(m.chunked for m in config.models)))
    wl = serving_workload(g, cluster, config, sim)
    base = generate("poisson", 1.0, settings.requests, settings.seed)

    def run(rate: float) -> LoadResult:
        return simulate(wl, base.at_rate(rate), sim, settings.seed)

    return run


def evaluate(graph: Graph, cluster: Cluster, config: ServingConfig, slo: SLO, settings: SearchSettings,
             start: float, progress: Callable[[str], None] | None = None) -> Evaluation:
    """Simulate one configuration and bisect its goodput."""
    g = lower_to_model_level(graph, cluster)
    run = _runner(g, cluster, config, settings)

    def tell(p: GoodputPoint) -> None:
        if progress:
            progress(f"  {config.label}: {p.rate:.3g} req/s -> {p.attainment:.0%} meet the SLO")

    good = goodput(run, slo, start, rtol=settings.rtol, max_evals=settings.max_evals, progress=tell)
    if good.rate > 0:  # lighter loads: faster per user, fewer tokens per chip
        for f in settings.frontier:
            r = good.rate * f
            if all(abs(p.rate - r) > 1e-9 * r for p in good.points):
                pt = point(r, run(r), slo)
                good.points.append(pt)
                tell(pt)
    return Evaluation(config, start, good, config.total_chips, config.power_w(), config.price_per_hour())


def search(graph: Graph, cluster: Cluster, slo: SLO, settings: SearchSettings = SearchSettings(),
           progress: Callable[[str], None] | None = None) -> SearchResult:
    """Find the serving configurations with the highest goodput per chip, per watt and per dollar."""
    if slo.empty:
        raise GimletError("search needs an SLO: give a TTFT target, a TPOT target, or both")
    g = lower_to_model_level(graph, cluster)
    cands, skipped, spaces = _predict_all(g, cluster, slo, settings)
    if not cands:
        why = "; ".join(f"{w}: {y}" for w, y in skipped[:4])
        raise GimletError(f"no configuration can meet the SLO on {cluster.name}" + (f" ({why})" if why else ""))
    chosen: list[Candidate] = list(cands[: settings.top_k])
    extras = [next((c for c in cands if c.config.mode == mode), None) for mode in MODES]
    # The best configuration that mixes chip types is always measured (where one is feasible).
    extras.append(next((c for c in cands if c.config.mixed_types), None))
    for extra in extras:
        if extra is not None and extra not in chosen:
            chosen.append(extra)
    evals: list[Evaluation] = []
    failed: list[tuple[str, str]] = []
    for i, c in enumerate(chosen, 1):
        if progress:
            progress(f"[{i}/{len(chosen)}] {c.config.label} (predicted {c.predicted_req_s:.3g} req/s)")
        try:
            ev = evaluate(g, cluster, c.config, slo, settings, max(c.predicted_req_s * 0.8, 1e-3), progress)
        except (SimulationError, ConfigError) as e:
            failed.append((c.config.label, str(e)))
            continue
        ev.predicted_req_s = c.predicted_req_s
        ev.band = c.band
        evals.append(ev)
    return SearchResult(slo, settings, evals, len(cands), skipped, failed,
                        {m: list(sp.calls) for m, sp in spaces.items()})


# ---- recommend: the least hardware for a rate ----------------------------------------------------


OBJECTIVES = ("chips", "power", "price")


@dataclass
class Recommendation:
    """For each objective (fewest chips, least power, least price per hour), the configuration that serves
    `rate` requests/s within the SLO: predicted by the integer program, checked by simulation at `rate`."""

    rate: float
    slo: SLO
    settings: SearchSettings
    picks: dict[str, Evaluation]  # objective -> the configuration, simulated at `rate` (its one point)
    tried: list[tuple[str, str, float]] = field(default_factory=list)  # (objective, configuration, attainment) rejected
    skipped: list[tuple[str, str]] = field(default_factory=list)
    calls: dict[str, list[Call]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rate_req_s": self.rate, "slo": self.slo.to_dict(), "settings": self.settings.to_dict(),
                "picks": {k: {"config": e.config.to_dict(), "chips": e.chips, "power_w": e.power_w,
                              "price_per_hour": e.price_per_hour, "predicted_req_s": e.predicted_req_s,
                              "predicted_band": e.band.to_dict() if e.band else None,
                              "at_rate": e.goodput.points[0].to_dict()} for k, e in self.picks.items()},
                "rejected": [{"objective": o, "config": c, "attainment": a} for o, c, a in self.tried],
                "skipped": [{"what": w, "why": y} for w, y in self.skipped]}


def _least(spaces: dict[str, _ModelSpace], modes_of: dict[str, tuple[str, ...]], budgets: dict[str, int], total: int,
           need: float, objective: str, settings: SearchSettings) -> tuple[Candidate, float] | None:
    """The configuration with the least `objective` whose every role is predicted to serve `need` req/s
    (all models in one mode); (candidate, its objective value)."""
    best: tuple[tuple, Candidate, float] | None = None
    for mode in MODES:
        if not all(mode in modes_of[m] for m in spaces):
            continue
        per_model_roles = []
        for model in sorted(spaces):
            role_opts = [spaces[model].options[r] for r in MODE_OPTION_ROLES[mode]]
            if any(not r for r in role_opts):
                break
            if mode in ("spec", "attn-ffn"):  # one unit kind at a time: each unit option as its own choice
                i = MODE_OPTION_ROLES[mode].index("spec" if mode == "spec" else "afd")
                per_model_roles.append([[*role_opts[:i], [u], *role_opts[i + 1:]] for u in role_opts[i]])
            else:
                per_model_roles.append([role_opts])
        else:
            for choice in itertools.product(*per_model_roles):
                roles = [r for model_roles in choice for r in model_roles]
                got = solve(roles, budgets, total, need, objective)
                if got is None:
                    continue
                rate, counts = got
                ms, j = [], 0
                bands = []
                for model, model_roles in zip(sorted(spaces), choice, strict=True):
                    k = len(model_roles)
                    rs, cs = model_roles, counts[j:j + k]
                    j += k
                    kept = [[o for o, x in zip(r, c, strict=True) if x > 0] for r, c in zip(rs, cs, strict=True)]
                    cnts = [[x for x in c if x > 0] for c in cs]
                    ms.append(_serving(spaces[model], mode, kept, cnts, settings))
                    b = _config_band(kept, cnts)
                    if b is not None:
                        bands.append((1.0, b))
                cfg = ServingConfig(tuple(ms))
                value = {"chips": float(cfg.total_chips), "power": cfg.power_w(),
                         "price": cfg.price_per_hour() or 0.0}[objective]
                key = (value, -rate, cfg.label)
                if best is None or key < best[0]:
                    best = (key, Candidate(cfg, rate, combine(bands) if bands else None), value)
    return (best[1], best[2]) if best is not None else None


def recommend(graph: Graph, cluster: Cluster, slo: SLO, rate: float, settings: SearchSettings = SearchSettings(),
              progress: Callable[[str], None] | None = None, objectives: Sequence[str] = OBJECTIVES,
              retries: int = 6, margin: float = 1.15) -> Recommendation:
    """The fewest chips, the least power and the least price per hour that serve `rate` requests/s with
    `slo.share` of requests within the SLO. Each is the integer program's least configuration predicted to
    serve a floor rate (first `rate`), simulated at `rate`; while the simulation misses the SLO, the
    floor rises by `margin` (at most `retries` times)."""
    if slo.empty:
        raise GimletError("recommend needs an SLO: give a TTFT target, a TPOT target, or both")
    if not (math.isfinite(rate) and rate > 0):
        raise GimletError(f"--rate must be a positive number; got {rate:g}")
    g, budgets, total, skipped, spaces, modes_of = _setup(graph, cluster, slo, settings)
    picks: dict[str, Evaluation] = {}
    tried: list[tuple[str, str, float]] = []
    simulated: dict[ServingConfig, LoadResult] = {}
    for objective in objectives:
        need = rate
        for _ in range(retries + 1):
            got = _least(spaces, modes_of, budgets, total, need, objective, settings)
            if got is None:
                break
            cand, _value = got
            res = simulated.get(cand.config)
            if res is None:
                if progress:
                    progress(f"{objective}: {cand.config.label} (predicted {cand.predicted_req_s:.3g} req/s), "
                             f"simulating {rate:g} req/s")
                try:
                    res = simulated[cand.config] = _runner(g, cluster, cand.config, settings)(rate)
                except (SimulationError, ConfigError) as e:
                    tried.append((objective, cand.config.label, 0.0))
                    skipped.append((cand.config.label, str(e)))
                    need = max(need * margin, cand.predicted_req_s * margin)
                    continue
            pt = point(rate, res, slo)
            if pt.attainment >= slo.share:
                good = GoodputResult(rate, slo, [pt], res)
                ev = Evaluation(cand.config, cand.predicted_req_s, good, cand.config.total_chips,
                                cand.config.power_w(), cand.config.price_per_hour(), cand.band)
                picks[objective] = ev
                break
            tried.append((objective, cand.config.label, pt.attainment))
            need = max(need * margin, cand.predicted_req_s * margin)
    if not picks:
        why = "; ".join(f"{c}: {a:.0%} within the SLO" for _, c, a in tried[:3])
        raise GimletError(f"no configuration on {cluster.name} serves {rate:g} req/s within the SLO"
                          + (f" (tried {why})" if why else " (none is predicted to)"))
    return Recommendation(rate, slo, settings, picks, tried, skipped, {m: list(sp.calls) for m, sp in spaces.items()})
