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

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from gimletc.cost.uncertainty import Band, combine
from gimletc.errors import ConfigError, GimletError
from gimletc.hardware import Cluster
from gimletc.ir import Graph
from gimletc.serving.layout import (
    MODES,
    Group,
    ModelServing,
    ServingConfig,
    Speculation,
    lower_to_model_level,
    serving_workload,
)
from gimletc.serving.mix import _fits, best_split, solve
from gimletc.serving.options import (
    Call,
    _budgets,
    _ModelSpace,
    _Option,
    _space,
    calls_of,
)
from gimletc.serving.settings import SearchSettings
from gimletc.sim.arrivals import generate
from gimletc.sim.config import SimulationError
from gimletc.sim.load import simulate
from gimletc.sim.metrics import SLO, GoodputPoint, GoodputResult, goodput, point
from gimletc.sim.results import LoadResult

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
