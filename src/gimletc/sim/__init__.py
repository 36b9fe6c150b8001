"""The load simulator: arrivals, the discrete-event simulation of a deployment under load, and its
serving metrics. (The single-request replay and its trace are `gimletc.analysis`.)"""

from gimletc.sim.arrivals import Arrivals, generate, load_trace
from gimletc.sim.load import EngineConfig, LoadResult, SimConfig, SimulationError, simulate, simulate_plan
from gimletc.sim.metrics import SLO, goodput, summary

__all__ = ["SLO", "Arrivals", "EngineConfig", "LoadResult", "SimConfig", "SimulationError", "generate", "goodput",
           "load_trace", "simulate", "simulate_plan", "summary"]
