"""Uncertainty bands of a serving search: each simulated configuration's goodput again with every
engine step at the low edge of its band, then at the high edge, and what the rankings and the Pareto
frontier can and cannot tell apart within those bands.

- `evaluation_bands`: per configuration, the interval of its goodput (req/s and tok/s), goodput per
  chip, per watt, per dollar and tokens/s per user at the goodput rate, over the search's own
  simulation and two reruns of its goodput bisection with the steps at their band edges
  (`gimletc.sim.bands.edge_config`; arrivals and seeds as the search's). The KV transfers of
  disaggregated configurations and host work stay at their predicted times.
- `rank_ties`: in a ranking, the configuration each one is not distinguishable from (the best-ranked
  one whose interval overlaps its own), so a ranking never declares a winner within the bands.
- `within_bands_of_frontier`: configurations off the Pareto frontier that no frontier point beats by
  more than the bands on both axes (each point takes its configuration's relative bands).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gimletc.cost.uncertainty import overlaps
from gimletc.errors import ConfigError
from gimletc.hardware import Cluster
from gimletc.ir import Graph
from gimletc.serving.search import Evaluation, ParetoPoint, SearchResult, SearchSettings, evaluate
from gimletc.sim.bands import SOURCE, edge_config
from gimletc.sim.config import SimulationError
from gimletc.sim.metrics import SLO

__all__ = ["METRICS", "SOURCE", "EvaluationBands", "evaluation_bands", "rank_ties", "within_bands_of_frontier"]

Pair = tuple[float, float]
# Figures of an evaluation that get an interval: (attribute of Evaluation / of its band, key of --json).
METRICS: tuple[tuple[str, str], ...] = (
    ("goodput_req_s", "goodput_req_s"), ("goodput_tok_s", "goodput_tok_s"), ("per_chip", "tok_s_per_chip"),
    ("per_watt", "tok_per_joule"), ("per_dollar", "tok_per_dollar"), ("tok_s_per_user", "tok_s_per_user"),
)


def _user(e: Evaluation) -> float | None:
    at = e.at_goodput
    return at.tok_s_per_user if at is not None else None


def _get(e: Evaluation, attr: str) -> float | None:
    return _user(e) if attr == "tok_s_per_user" else getattr(e, attr)


@dataclass(frozen=True)
class EvaluationBands:
    """Intervals of one configuration's figures (None where the figure is missing, e.g. no price)."""

    goodput_req_s: Pair
    goodput_tok_s: Pair
    per_chip: Pair
    per_watt: Pair
    per_dollar: Pair | None
    tok_s_per_user: Pair | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr, key in METRICS:
            v = getattr(self, attr)
            out[key] = None if v is None else {"lo": v[0], "hi": v[1]}
        return out


def _span(evs: Sequence[Evaluation], attr: str) -> Pair | None:
    vs = [_get(e, attr) for e in evs]
    if any(v is None for v in vs):
        return None
    return min(vs), max(vs)  # type: ignore[type-var]


def evaluation_bands(graph: Graph, cluster: Cluster, slo: SLO, settings: SearchSettings, result: SearchResult,
                     progress: Callable[[str], None] | None = None) -> dict[str, EvaluationBands]:
    """Per configuration label of `result` (a search of `graph` on `cluster` under `slo` and `settings`),
    the intervals of its figures with every engine step within its band."""
    out: dict[str, EvaluationBands] = {}
    for ev in result.evaluations:
        runs = [ev]
        for edge in (-1, 1):
            st = replace(settings, frontier=(), sim=edge_config(settings.sim, None, edge))
            start = ev.goodput_req_s if ev.goodput_req_s > 0 else max(ev.predicted_req_s * 0.8, 1e-3)
            if progress:
                progress(f"bands: {ev.config.label} with every step at the {'low' if edge < 0 else 'high'} edge")
            try:
                runs.append(evaluate(graph, cluster, ev.config, slo, st, start))
            except (SimulationError, ConfigError):  # e.g. a KV cache no longer fits: the band is unknown
                runs = []
                break
        if not runs:
            continue
        spans = {attr: _span(runs, attr) for attr, _ in METRICS}
        out[ev.config.label] = EvaluationBands(**spans)  # type: ignore[arg-type]
    return out


def rank_ties(ranked: Sequence[Evaluation], metric: str, bands: dict[str, EvaluationBands]) -> list[int | None]:
    """For each configuration of `ranked` (best first by `metric`: per_chip, per_watt or per_dollar), the
    index of the best-ranked one above it whose `metric` interval overlaps its own, else None."""
    out: list[int | None] = []
    for i, e in enumerate(ranked):
        mine = getattr(bands.get(e.config.label), metric, None)
        tie = None
        if mine is not None:
            for j in range(i):
                theirs = getattr(bands.get(ranked[j].config.label), metric, None)
                if theirs is not None and overlaps(mine, theirs):
                    tie = j
                    break
        out.append(tie)
    return out


def _rel(band: Pair | None, value: float | None) -> Pair:
    if band is None or not value:
        return 1.0, 1.0
    return band[0] / value, band[1] / value


def within_bands_of_frontier(points: Sequence[ParetoPoint], front: Sequence[ParetoPoint],
                             evaluations: Sequence[Evaluation], bands: dict[str, EvaluationBands]) -> list[str]:
    """Configurations with no point on the frontier `front` (of `points`) but a point that no frontier
    point beats on both tokens/s per user and tokens/s per chip by more than their bands."""
    rel: dict[str, tuple[Pair, Pair]] = {}
    for e in evaluations:
        b = bands.get(e.config.label)
        if b is not None:
            rel[e.config.label] = (_rel(b.tok_s_per_user, _user(e)), _rel(b.per_chip, e.per_chip))

    def box(p: ParetoPoint) -> tuple[Pair, Pair] | None:
        r = rel.get(p.label)
        if r is None:
            return None
        (u0, u1), (c0, c1) = r
        return (p.tok_s_per_user * u0, p.tok_s_per_user * u1), (p.tok_s_per_chip * c0, p.tok_s_per_chip * c1)

    on_front = {p.label for p in front}
    out = set()
    for q in points:
        if q.label in on_front or q.label in out:
            continue
        bq = box(q)
        if bq is None:
            continue
        beaten = False
        for p in front:
            bp = box(p)
            if bp is not None and bp[0][0] > bq[0][1] and bp[1][0] > bq[1][1]:
                beaten = True
                break
        if not beaten:
            out.add(q.label)
    return sorted(out)
