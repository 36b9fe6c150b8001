"""Analyses of a compiled graph: the single-request replay and its trace, how often each op runs,
the plan's per-request metrics, and the cache passes and the driver share them through.

Everything here is a pure function of a graph (and the cluster it was placed on); nothing
here transforms a graph or chooses anything."""

from gimletc.analysis.manager import AnalysisManager
from gimletc.analysis.metrics import LLMMetrics, Metrics, placed_computes, plan_metrics
from gimletc.analysis.replay import Event, Timeline, replay
from gimletc.analysis.runs import runs
from gimletc.analysis.trace import chrome_trace, write_chrome_trace

__all__ = ["AnalysisManager", "Event", "LLMMetrics", "Metrics", "Timeline", "chrome_trace", "placed_computes",
           "plan_metrics", "replay", "runs", "write_chrome_trace"]
