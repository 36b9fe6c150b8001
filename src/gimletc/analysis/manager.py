"""The analysis cache: results of pure functions over an immutable graph, computed once per graph.

Graphs are immutable, so a result computed for one graph object stays valid as
long as that object lives; the cache keeps a reference to each graph it holds a
result for, so an entry's graph is never collected and its id never reused.
A pass that rewrites the graph makes a new object and so gets fresh results.
Passes reach the cache through `PassContext.analyses`; the compile driver
reads the same cache, so the replay the overlap pass ran is not run again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from gimletc.analysis.replay import Timeline, replay
from gimletc.ir import Graph

T = TypeVar("T")


class AnalysisManager:
    """Caches `fn(graph)` per (function, graph object) for pure functions `fn` of a graph."""

    def __init__(self) -> None:
        self._results: dict[tuple[Callable[[Graph], Any], int], tuple[Graph, Any]] = {}

    def get(self, fn: Callable[[Graph], T], graph: Graph) -> T:
        """`fn(graph)`, computed on first request for this graph object."""
        key = (fn, id(graph))
        hit = self._results.get(key)
        if hit is not None and hit[0] is graph:
            return hit[1]
        value = fn(graph)
        self._results[key] = (graph, value)
        return value

    def cached(self, fn: Callable[[Graph], Any], graph: Graph) -> bool:
        hit = self._results.get((fn, id(graph)))
        return hit is not None and hit[0] is graph

    def timeline(self, graph: Graph) -> Timeline:
        """The single-request replay of `graph` (`gimletc.analysis.replay.replay`)."""
        return self.get(replay, graph)

    def clear(self) -> None:
        self._results.clear()
