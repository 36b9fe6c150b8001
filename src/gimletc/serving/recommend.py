"""The least hardware for a rate: the fewest chips, the least power and the least cost that serve R
requests/s within the SLO, each predicted by the search's integer program with the rate as a floor and
checked by simulation at that rate."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gimletc.cost.uncertainty import combine
from gimletc.errors import ConfigError, GimletError
from gimletc.hardware import Cluster
from gimletc.ir import Graph
from gimletc.serving.layout import (
    MODES,
    ServingConfig,
)
from gimletc.serving.mix import solve
from gimletc.serving.options import (
    Call,
    _ModelSpace,
)
from gimletc.serving.search import MODE_OPTION_ROLES, Candidate, Evaluation, _config_band, _runner, _serving, _setup
from gimletc.serving.settings import SearchSettings
from gimletc.sim.config import SimulationError
from gimletc.sim.metrics import SLO, GoodputResult, point
from gimletc.sim.results import LoadResult

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
