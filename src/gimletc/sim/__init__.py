"""Simulation: an event-driven replay of one request and its Chrome / Perfetto trace."""

from gimletc.sim.replay import Event, Timeline, replay
from gimletc.sim.trace import chrome_trace, write_chrome_trace

__all__ = ["Event", "Timeline", "chrome_trace", "replay", "write_chrome_trace"]
