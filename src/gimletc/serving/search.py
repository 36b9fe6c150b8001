"""SLO-aware search over serving configurations: replica counts per role and chip types.

For each model of the graph, the candidates are
- aggregated: for every accelerator type of the cluster and every tensor-parallel
  size that holds the model (powers of two up to a node's chips), as many
  replicas as the chip budget allows, with and without chunked prefill;
- disaggregated: for every pair of (prefill kind, decode kind), the split of the
  budget into x prefill and y decode replicas that the cost model predicts
  serves the most requests.

Two stages keep a search bounded:
1. Prediction (no simulation): from the cost model, a prefill replica serves
   1 / (prefill time per request) requests/s; a decode replica runs the largest
   batch B whose step time fits the TPOT target and whose KV caches fit, and
   serves B / (output tokens x step time) requests/s. Kinds that cannot meet
   the SLO even alone (prefill longer than the TTFT target, or a batch-1 step
   slower than the TPOT target) are dropped, with the reason reported.
2. Measurement: the `top_k` candidates by predicted goodput per chip (at least
   the best aggregated and the best disaggregated one) are simulated under
   Poisson load, and their goodput found by bisection over the arrival rate
   (`gimletc.sim.metrics.goodput`) with a fixed number of requests and a seed.

Every simulated operating point that meets the SLO (each rate the bisection
tried, and `frontier` fractions of the goodput) is a point (tokens/s per user,
tokens/s per chip); the Pareto frontier is the set of points no other point
beats on both.

Graphs with several models: the budget is shared in proportion to each model's
predicted chip-seconds per request, and the i-th best candidate of every model
(per mode) are combined — a heuristic, unlike the single-model search.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gimletc.errors import ConfigError, GimletError
from gimletc.hardware import Cluster, get_chip
from gimletc.ir import Graph
from gimletc.sim.arrivals import generate
from gimletc.sim.config import SimConfig, SimulationError
from gimletc.sim.load import simulate
from gimletc.sim.results import LoadResult
from gimletc.sim.metrics import SLO, GoodputPoint, GoodputResult, goodput, point
from gimletc.sim.policies import batch_params
from gimletc.sim.steps import StepCost, profile_for_stack
from gimletc.serving.deploy import EngineKind, ModelServing, ServingConfig, lower_to_model_level, serving_workload

__all__ = [
    "Candidate",
    "Evaluation",
    "ParetoPoint",
    "SearchResult",
    "SearchSettings",
    "pareto_front",
    "predict",
    "search",
]


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
    modes: tuple[str, ...] = ("agg", "disagg")
    chunked: tuple[bool, ...] = (False, True)  # aggregated variants
    chips: tuple[str, ...] | None = None  # chip types to use (default: every accelerator type)
    frontier: tuple[float, ...] = (0.25, 0.5, 0.75)  # extra operating points, as fractions of each goodput
    sim: SimConfig = SimConfig()

    def __post_init__(self) -> None:
        if self.requests < 10:
            raise ConfigError(f"search needs at least 10 requests per simulation; got {self.requests}")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1; got {self.top_k}")
        if self.max_chips is not None and self.max_chips < 1:
            raise ConfigError(f"max_chips must be >= 1; got {self.max_chips}")
        bad = [m for m in self.modes if m not in ("agg", "disagg")]
        if bad or not self.modes:
            raise ConfigError(f"modes must be a non-empty subset of agg, disagg; got {', '.join(self.modes)}")

    def to_dict(self) -> dict:
        return {"requests": self.requests, "seed": self.seed, "top_k": self.top_k, "rtol": self.rtol,
                "max_evals": self.max_evals, "max_chips": self.max_chips,
                "tp": list(self.tp) if self.tp else None, "modes": list(self.modes),
                "chunked": list(self.chunked), "chips": list(self.chips) if self.chips else None,
                "frontier": list(self.frontier),
                "arrivals": "poisson", "sim": self.sim.to_dict()}


# ---- stage 1: prediction ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    llm: str
    prompt: int
    ctx: int
    out: int
    seqs: int
    runs: float  # expected executions per request
    first: bool  # the request's first LLM call (its TTFT is the request's)


def _calls(g: Graph) -> dict[str, list[_Call]]:
    """LLM calls per model, with their expected executions per request."""
    out: dict[str, list[_Call]] = {}
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
                out.setdefault(str(op.attr("model")), []).append(
                    _Call(llm, prompt, int(p.attr("ctx", 0)) if p is not None else 0, int(op.attr("tokens")),
                          int(op.attr("batch", 1)), scale, first))
            elif op.kind == "agent.loop":
                rec(op.regions[0], scale * float(op.attr("expected", 1.0)), False)
            elif op.kind == "agent.branch":
                for r, pr in zip(op.regions, op.attr("probabilities", ()), strict=False):
                    rec(r, scale * float(pr), False)

    rec(g, 1.0, True)
    return out


@dataclass(frozen=True)
class _KindPrediction:
    kind: EngineKind
    prefill_s: float  # prefill seconds per request (all the model's calls)
    prefill_ok: bool
    decode_batch: int  # largest batch meeting TPOT with KV room (0: none)
    decode_req_s: float  # requests/s one decode replica serves at that batch
    why: str = ""

    @property
    def prefill_req_s(self) -> float:
        return 1.0 / self.prefill_s if self.prefill_s > 0 else math.inf


def _predict_kind(model: str, kind: EngineKind, calls: list[_Call], slo: SLO, sim: SimConfig) -> _KindPrediction:
    chip = get_chip(kind.chip)
    cost = StepCost(sim.model(model), chip, kind.tp, sim.profile or profile_for_stack(None))
    m = cost.model
    kv_cap = chip.capacity_bytes * kind.tp * sim.engine.mem_fraction - m.weight_bytes
    if kv_cap <= 0:
        return _KindPrediction(kind, 0, False, 0, 0.0, f"weights {m.weight_bytes / 1e9:.1f} GB do not fit")
    pre = sum(c.runs * cost.prefill(c.seqs, c.prompt, c.ctx)[0] for c in calls)
    first = [c for c in calls if c.first]
    why = ""
    ok = True
    if slo.ttft_s is not None and first and cost.prefill(first[0].seqs, first[0].prompt, first[0].ctx)[0] > slo.ttft_s:
        ok = False
        why = f"prefill {cost.prefill(first[0].seqs, first[0].prompt, first[0].ctx)[0] * 1e3:.0f} ms > TTFT target"
    # Decode: the largest batch under the TPOT target whose caches fit.
    heaviest = max(calls, key=lambda c: c.prompt + c.ctx + c.out)
    mid = heaviest.prompt + heaviest.ctx + heaviest.out // 2
    kv_one = m.kv_cache_bytes(heaviest.prompt + heaviest.ctx + heaviest.out, heaviest.seqs)
    cap = batch_params(sim, m, chip, kv_cap / max(m.kv_cache_bytes(1), 1e-30)).max_batch
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
        return _KindPrediction(kind, pre, ok, 0, 0.0, "; ".join(x for x in (why, reason) if x))
    step = cost.decode(best_b, mid)[0]
    work = sum(c.runs * c.out * step / best_b for c in calls)  # decode seconds per request at that batch
    return _KindPrediction(kind, pre, ok, best_b, 1.0 / work if work > 0 else math.inf, why)


@dataclass(frozen=True)
class Candidate:
    config: ServingConfig
    predicted_req_s: float

    @property
    def predicted_per_chip(self) -> float:
        return self.predicted_req_s / max(1, self.config.total_chips)


def _kinds(cluster: Cluster, model: str, settings: SearchSettings) -> list[EngineKind]:
    sim = settings.sim
    m = sim.model(model)
    per_node: dict[str, int] = {}
    for node in cluster.nodes:
        for chip, count in node.chips.items():
            per_node[chip] = max(per_node.get(chip, 0), count)
    out = []
    for chip_name in sorted(per_node):
        if settings.chips and chip_name not in settings.chips:
            continue
        chip = get_chip(chip_name)
        usable = chip.capacity_bytes * sim.engine.mem_fraction
        n_min = max(1, math.ceil(m.weight_bytes / usable))
        tp = 1 << max(0, math.ceil(math.log2(n_min)))
        while tp <= min(8, per_node[chip_name]):
            if (tp == 1 or chip.scale_up_bw) and (settings.tp is None or tp in settings.tp):
                out.append(EngineKind(chip_name, tp))
            tp *= 2
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
            out[chip] = out.get(chip, 0) + count
    return out


def predict(graph: Graph, cluster: Cluster, slo: SLO, settings: SearchSettings = SearchSettings()
            ) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Stage 1: every candidate configuration with its predicted goodput, and the kinds dropped (why)."""
    g = lower_to_model_level(graph, cluster)
    calls = _calls(g)
    if not calls:
        raise ConfigError("the graph has no LLM calls: nothing to serve")
    budgets = _budgets(cluster, settings)
    total_budget = settings.max_chips or sum(budgets.values())
    skipped: list[tuple[str, str]] = []
    per_model: dict[str, dict[str, list[tuple[ModelServing, float]]]] = {}
    weights: dict[str, float] = {}
    preds: dict[str, list[_KindPrediction]] = {}
    for model, cs in sorted(calls.items()):
        ps = []
        for kind in _kinds(cluster, model, settings):
            p = _predict_kind(model, kind, cs, slo, settings.sim)
            if p.why:
                skipped.append((f"{model} on {kind.label}", p.why))
            ps.append(p)
        if not ps:
            raise ConfigError(_nothing_holds(model, cluster, settings))
        preds[model] = ps
        usable = [p for p in ps if p.decode_req_s > 0]
        weights[model] = min((p.kind.tp * (p.prefill_s + 1.0 / p.decode_req_s) for p in usable), default=1.0)
    wsum = sum(weights.values())
    for model, ps in preds.items():
        # Each model gets at least room for one prefill and one decode replica of its smallest kind.
        least = 2 * min(p.kind.tp for p in ps)
        share = total_budget if len(preds) == 1 else max(least, int(total_budget * weights[model] / wsum))
        per_model[model] = _model_candidates(model, ps, budgets, share, settings)
    configs: list[Candidate] = []
    seen = set()
    for mode in settings.modes:
        lists = [per_model[m][mode] for m in sorted(per_model)]
        if any(not lst for lst in lists):
            continue
        for i in range(max(len(lst) for lst in lists)):
            parts = tuple(lst[min(i, len(lst) - 1)] for lst in lists)
            cfg = ServingConfig(tuple(p[0] for p in parts))
            if cfg in seen or not _within(cfg, budgets, total_budget):
                continue
            seen.add(cfg)
            rate = min(p[1] for p in parts)
            configs.append(Candidate(cfg, rate))
    configs.sort(key=lambda c: (-c.predicted_per_chip, c.config.label))
    return configs, skipped


def _within(cfg: ServingConfig, budgets: dict[str, int], total: int) -> bool:
    chips = cfg.chips()
    return sum(chips.values()) <= total and all(k <= budgets.get(c, 0) for c, k in chips.items())


def _model_candidates(model: str, ps: list[_KindPrediction], budgets: dict[str, int], share: int,
                      settings: SearchSettings) -> dict[str, list[tuple[ModelServing, float]]]:
    out: dict[str, list[tuple[ModelServing, float]]] = {"agg": [], "disagg": []}
    for p in ps:  # aggregated: replicas fill the budget
        if not p.prefill_ok or p.decode_req_s <= 0:
            continue
        x = min(budgets.get(p.kind.chip, 0), share) // p.kind.tp
        if x < 1:
            continue
        per_replica = 1.0 / (p.prefill_s + 1.0 / p.decode_req_s)
        for chunked in settings.chunked:
            out["agg"].append((ModelServing(model, "agg", p.kind, x, chunked=chunked), x * per_replica))
    for pp in ps:  # disaggregated: the best split of the budget
        if not pp.prefill_ok:
            continue
        for pd in ps:
            if pd.decode_req_s <= 0:
                continue
            best: tuple[float, int, int] | None = None
            same = pp.kind.chip == pd.kind.chip
            for x in range(1, share // pp.kind.tp + 1):
                left_same = budgets.get(pd.kind.chip, 0) - (x * pp.kind.tp if same else 0)
                if same and x * pp.kind.tp > budgets.get(pp.kind.chip, 0):
                    break
                room = min(left_same, share - x * pp.kind.tp)
                y = room // pd.kind.tp
                if y < 1:
                    continue
                rate = min(x * pp.prefill_req_s, y * pd.decode_req_s)
                # Fewer decode replicas when they would idle: the smallest y that reaches the rate.
                y_need = max(1, math.ceil(rate / pd.decode_req_s - 1e-9))
                y = min(y, y_need)
                key = (rate, -(x * pp.kind.tp + y * pd.kind.tp), x)
                if best is None or key > (best[0], -(best[1] * pp.kind.tp + best[2] * pd.kind.tp), best[1]):
                    best = (rate, x, y)
            if best is not None:
                rate, x, y = best
                out["disagg"].append((ModelServing(model, "disagg", pp.kind, x, pd.kind, y), rate))
    for mode in out:
        out[mode].sort(key=lambda c: (-c[1] / max(1, sum(c[0].chips().values())), c[0].label))
    return out


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


def evaluate(graph: Graph, cluster: Cluster, config: ServingConfig, slo: SLO, settings: SearchSettings,
             start: float, progress: Callable[[str], None] | None = None) -> Evaluation:
    """Simulate one configuration and bisect its goodput."""
    g = lower_to_model_level(graph, cluster)
    sim = settings.sim
    # The aggregated variants, with and without chunked prefill, ask for it explicitly (the engines' own default is on).
    sim = replace(sim, engine=replace(sim.engine, chunked_prefill=any(m.chunked for m in config.models)))
    wl = serving_workload(g, cluster, config, sim)
    base = generate("poisson", 1.0, settings.requests, settings.seed)

    def run(rate: float) -> LoadResult:
        return simulate(wl, base.at_rate(rate), sim, settings.seed)

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
    cands, skipped = predict(g, cluster, slo, settings)
    if not cands:
        why = "; ".join(f"{w}: {y}" for w, y in skipped[:4])
        raise GimletError(f"no configuration can meet the SLO on {cluster.name}" + (f" ({why})" if why else ""))
    chosen: list[Candidate] = list(cands[: settings.top_k])
    for mode in settings.modes:  # the best of each mode is always measured
        if not any(c.config.mode == mode for c in chosen):
            extra = next((c for c in cands if c.config.mode == mode), None)
            if extra is not None:
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
        evals.append(ev)
    return SearchResult(slo, settings, evals, len(cands), skipped, failed)
