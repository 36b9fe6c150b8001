"""Simulation: an event-driven replay of one request and its Chrome / Perfetto trace."""

from gimletc.sim.replay import Event, Timeline, replay
from gimletc.sim.trace import chrome_trace, write_chrome_trace
from gimletc.sim.arrivals import Arrivals, generate, load_trace
from gimletc.sim.load import EngineConfig, LoadResult, SimConfig, SimulationError, simulate, simulate_plan
from gimletc.sim.metrics import SLO, goodput, summary

__all__ = ["Event", "Timeline", "chrome_trace", "replay", "write_chrome_trace"]
__all__ += ["SLO", "Arrivals", "EngineConfig", "LoadResult", "SimConfig", "SimulationError", "generate", "goodput",
            "load_trace", "simulate", "simulate_plan", "summary"]
