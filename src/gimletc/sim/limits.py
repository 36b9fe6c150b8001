"""What a load simulation may ask of this machine, checked before it runs and while it runs:
simulated time, tasks per request, and memory (docs/reliability.md, docs/serving.md).

- **Simulated time.** The simulator keeps time in float64 seconds from 0. At `MAX_SPAN_S`
  (10^9 s, about 32 years) a float64 resolves 1.2e-7 s, finer than any step or transfer the
  simulator prices; far past it, a whole request's tasks round to nothing (at 10^301 s a request
  takes "0 ms" and idle power over the span is 10^303 J). Arrivals (`gimletc.sim.arrivals`) and
  op times (`gimletc.sim.plancheck`) that would run past it are refused, and so is a run that
  ends past it.
- **Tasks per request.** Each request's graph is unrolled into tasks (`gimletc.sim.template`):
  every loop iteration is a copy of its body. A request may unroll to at most
  `MAX_TASKS_PER_REQUEST` tasks (about 1 KB each while it is built, and ~16 us of Python each).
  Before the run, each loop is taken at the most it draws short of a tail: its `max` where it
  always runs that often, else `TAIL` (20) times its mean, which a geometric draw passes about
  once in e^20; a graph whose requests would then unroll to more than the bound is refused,
  naming the loop that adds the most. A draw past the bound in the run is refused the same way.
- **Memory.** `estimate(...)` adds up what a run holds: its per-request arrays (arrival times,
  outcomes, each LLM call's TTFT and TPOT), the timeline if one is recorded, cached request
  templates, and the state of each request in flight (`IN_FLIGHT_BYTES` plus `TASK_BYTES` per
  task, measured with tracemalloc on overloaded runs of the examples, where every request is in
  flight at once). The arrays are allocated up front, so a run whose arrays would not fit is
  refused before anything is allocated; the requests in flight depend on how the deployment
  keeps up, so their memory is checked as the run goes (every 1,024 arrivals) and the run
  stops with one line once they would not fit. The limit is `SimConfig.memory_limit` (bytes;
  `gimletc simulate --memory-limit GB`), else `available_memory()`: 80% of what the machine has
  available (`MemAvailable` in /proc/meminfo) or, when the process has an address-space limit
  (`RLIMIT_AS`), of what is left under it, whichever is smaller.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gimletc.ir import Graph
from gimletc.sim.config import SimConfig, SimulationError

if TYPE_CHECKING:
    from gimletc.sim.workload import Workload

__all__ = [
    "IN_FLIGHT_BYTES", "MAX_SPAN_S", "MAX_TASKS_PER_REQUEST", "TAIL", "TASK_BYTES", "TEMPLATE_CACHE_TASKS",
    "LoopLoad", "MemoryEstimate", "TaskLoad", "available_memory", "check_seed", "check_tasks", "estimate", "task_load",
    "llm_calls", "span_problem",
]

MAX_SPAN_S = 1e9  # simulated seconds; float64 resolves 1.2e-7 s there
MAX_TASKS_PER_REQUEST = 1_000_000  # tasks one request may unroll to
TAIL = 20  # a geometric loop draws more than TAIL x its mean with probability about e^-TAIL
TEMPLATE_CACHE_TASKS = 1_000_000  # tasks of cached request templates (one per request shape) kept at once

# Measured with tracemalloc (the peak over the requests, every request in flight at once: a rate of
# 10^7 req/s): rag 1.4-1.8 KB per request (12 tasks, one shape), the fuzz graph of tests/test_fuzz_inputs.py
# 17-24 KB (358 tasks), the coding agent 204-236 KB (2,484 tasks, nearly every request its own shape and
# so its own template). IN_FLIGHT_BYTES + TASK_BYTES x tasks bounds each of those (2.9 KB, 45 KB, 300 KB).
IN_FLIGHT_BYTES = 1_500  # a request in flight: its state, jobs, queue and heap entries
TASK_BYTES = 120  # per task of a request in flight: its pending count and its share of a template
BUILD_TASK_BYTES = 1_100  # per task while a template is built (peak), freed after
TIMELINE_ROW_BYTES = 1_000  # a timeline row, and its Chrome-trace event when written
# Per request, allocated up front and held to the end: arrival times at rate 1 and at the rate (and the
# draws they came from, while they are made), TTFT, TPOT, end-to-end, output tokens, and summary
# copies (percentiles sort a copy); a goodput bisection holds a second run's. Per LLM call: TTFT, TPOT.
ARRAY_BYTES = 8 * (3 + 4 + 4 + 5)
CALL_ARRAY_BYTES = 8 * 2 * 2
MEMORY_SHARE = 0.8  # of the memory available: room for what the estimate does not see
DEFAULT_MEMORY = 4e9  # where the machine's memory cannot be read (not Linux, no sysconf)


def check_seed(seed: object, name: str = "seed") -> int:
    """`seed` as a non-negative integer (numpy's seeds are); anything else is a one-line SimulationError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SimulationError(f"{name} must be an integer >= 0; got {seed!r}")
    return seed


# ---- tasks per request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopLoad:
    """A loop's share of a request's tasks: its mean iterations and the most it draws short of the
    tail (`high`), tasks per iteration at that, and the tasks it adds to a request at its high."""

    name: str
    iterations: float
    high: int
    body_tasks: float
    tasks: float


@dataclass(frozen=True)
class TaskLoad:
    """Tasks a request of a graph unrolls to (before zero-time tasks are merged): on average (`mean`),
    and at most short of the tail (`high`: every loop at `high` iterations, every branch its largest arm)."""

    mean: float
    high: float
    loops: tuple[LoopLoad, ...]


def _iterations(expected: float, most: int, mode: str) -> tuple[float, int]:
    if mode == "mean":
        k = min(most, max(1, round(expected)))
        return float(k), k
    # Geometric, truncated at `most` so that its mean is `expected`: P(k > TAIL x mean) ~ e^-TAIL.
    mean = min(float(most), max(1.0, expected))
    return mean, most if expected >= most else min(most, math.ceil(TAIL * mean))


def task_load(graph: Graph, mode: str = "geometric") -> TaskLoad:
    """How many tasks a request of `graph` unrolls to; `mode` is `SimConfig.loops`."""
    loops: list[LoopLoad] = []

    def walk(g: Graph, weight: float) -> tuple[float, float]:
        mean = high = 0.0
        for op in g.ops:
            if op.kind == "agent.yield":
                continue
            if not op.regions:
                mean, high = mean + 1, high + 1
            elif op.kind == "agent.loop":
                k, k_high = _iterations(float(op.attr("expected", 1.0)), int(op.attr("max", 1)), mode)
                b_mean, b_high = walk(op.regions[0], weight * k_high)
                loops.append(LoopLoad(op.name, k, k_high, b_high + 1, weight * k_high * (b_high + 1)))
                mean += 1 + k * (b_mean + 1)  # a start, and each iteration's body and join
                high += 1 + k_high * (b_high + 1)
            else:  # agent.branch
                probs = [float(p) for p in op.attr("probabilities", ())]
                total = sum(probs) if len(probs) == len(op.regions) and sum(probs) > 0 else 0.0
                share = [p / total for p in probs] if total > 0 else [1.0 / len(op.regions)] * len(op.regions)
                arms = [walk(r, weight) for r in op.regions]
                mean += 2 + sum(w * m for w, (m, _) in zip(share, arms, strict=True))
                high += 2 + max(h for _, h in arms)
        return mean, high

    mean, high = walk(graph, 1.0)
    return TaskLoad(mean, high, tuple(loops))


def check_tasks(graph: Graph, mode: str = "geometric") -> TaskLoad:
    """Refuse a graph whose requests would unroll (short of a tail of e^-TAIL per loop) to more than
    `MAX_TASKS_PER_REQUEST` tasks, naming the loop that adds the most; returns the load."""
    load = task_load(graph, mode)
    if load.high <= MAX_TASKS_PER_REQUEST:
        return load
    worst = max(load.loops, key=lambda lp: lp.tasks, default=None)
    where = ""
    if worst is not None:
        draws = (f"draws up to {worst.high:,} iterations (mean {worst.iterations:,.4g}; more with probability "
                 f"e^-{TAIL})" if worst.high > worst.iterations else f"runs {worst.high:,} iterations")
        where = f"loop @{worst.name} {draws} of {worst.body_tasks:,.0f} tasks each, so "
    raise SimulationError(
        f"{where}a request would unroll to as many as {load.high:,.0f} tasks (mean {load.mean:,.0f}); the simulator "
        f"builds each request's tasks, at most {MAX_TASKS_PER_REQUEST:,} per request: lower the loop's `expected` "
        "and `max`")


# ---- memory ----------------------------------------------------------------------------------------


def _meminfo_available() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _mapped_bytes() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return float(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def available_memory() -> tuple[float, str]:
    """(bytes a simulation may take, where that figure comes from): `MEMORY_SHARE` of the machine's
    available memory, or of what is left under this process's address-space limit if that is less."""
    avail = _meminfo_available()
    source = "of the memory available (MemAvailable)"
    if avail is None:
        try:
            avail = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
            source = "of the free physical memory"
        except (ValueError, OSError, AttributeError):
            avail, source = DEFAULT_MEMORY / MEMORY_SHARE, "of gimletc's default (this machine's memory is unknown)"
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        mapped = _mapped_bytes()
        if soft != resource.RLIM_INFINITY and mapped is not None and soft - mapped < avail:
            avail, source = max(0.0, soft - mapped), "of what is left under this process's address-space limit (RLIMIT_AS)"
    except (ImportError, ValueError, OSError):
        pass
    return avail * MEMORY_SHARE, f"{MEMORY_SHARE:.0%} {source}"


def _gb(b: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= scale:
            return f"{b / scale:,.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{b:.0f} B"


@dataclass(frozen=True)
class MemoryEstimate:
    """What a run of `requests` requests holds (bytes): `fixed` (timeline, cached templates, one
    template being built), `arrays` (per-request results, allocated up front) and `per_in_flight`
    for each request in flight; `limit` and where it comes from."""

    requests: int
    mean_tasks: float
    fixed: float
    arrays: float
    per_in_flight: float
    limit: float
    limit_source: str

    def total(self, in_flight: int = 1) -> float:
        return self.fixed + self.arrays + in_flight * self.per_in_flight

    def most_in_flight(self) -> int:
        """How many requests may be in flight before the run no longer fits."""
        return max(0, int((self.limit - self.fixed - self.arrays) // self.per_in_flight))

    def check(self, what: str = "") -> None:
        """Refuse, before anything is allocated, a run whose arrays (and one request) would not fit."""
        need = self.total(1)
        if need <= self.limit:
            return
        raise SimulationError(
            f"{what}simulating {self.requests:,} requests needs about {_gb(need)} ({_gb(self.arrays)} of per-request "
            f"results, {self.arrays / self.requests:.0f} B each, plus {_gb(self.fixed + self.per_in_flight)} of state) "
            f"and the limit is {_gb(self.limit)} ({self.limit_source}): simulate fewer requests (--requests), or set "
            "--memory-limit")

    def check_in_flight(self, in_flight: int, t: float, rate: float) -> None:
        """Refuse to go on once the requests in flight would not fit (the deployment falls behind its arrivals)."""
        if in_flight <= 0 or self.total(in_flight) <= self.limit:
            return
        raise SimulationError(
            f"at {t:,.4g} s of simulated time {in_flight:,} requests were in flight at once (arrivals at {rate:.4g} req/s "
            f"outpace the deployment), about {_gb(self.total(in_flight))} with the run's results "
            f"({_gb(self.per_in_flight)} per request in flight, {self.mean_tasks:,.0f} tasks each on average); the "
            f"limit is {_gb(self.limit)} ({self.limit_source}): lower --rate or --requests, or set --memory-limit")


def llm_calls(graph: Graph) -> int:
    return len({str(op.attr("llm")) for op, _ in graph.walk() if op.attr("llm")})


def estimate(wl: Workload, requests: int, cfg: SimConfig, load: TaskLoad | None = None) -> MemoryEstimate:
    """The memory a simulation of `requests` requests through `wl` holds (see the module's docstring)."""
    graph = wl.graph
    load = task_load(graph, cfg.loops) if load is None else load
    mean = load.mean
    static = load.high == load.mean
    templates = mean * TASK_BYTES if static else min(TEMPLATE_CACHE_TASKS, requests * mean) * TASK_BYTES
    timeline = cfg.timeline_limit * TIMELINE_ROW_BYTES if cfg.record_timeline else 0.0
    # One template built at a time: the largest request, about mean x ln(requests) for geometric loop draws.
    largest = mean if static else min(mean * (1 + math.log(max(1, requests))), load.high)
    fixed = templates + timeline + largest * BUILD_TASK_BYTES
    arrays = float(requests) * (ARRAY_BYTES + CALL_ARRAY_BYTES * llm_calls(graph))
    if cfg.memory_limit is not None:
        limit, source = float(cfg.memory_limit), "--memory-limit"
    else:
        limit, source = available_memory()
    return MemoryEstimate(int(requests), mean, fixed, arrays, IN_FLIGHT_BYTES + TASK_BYTES * mean, limit, source)


def span_problem(last_arrival_s: float, what: str) -> str | None:
    """Why arrivals whose last one comes at `last_arrival_s` cannot be simulated (past `MAX_SPAN_S`), or None."""
    if math.isfinite(last_arrival_s) and last_arrival_s <= MAX_SPAN_S:
        return None
    return (f"{what} span {last_arrival_s:.3g} s of simulated time; the simulator runs at most {MAX_SPAN_S:.0e} s "
            f"(about {MAX_SPAN_S / 3.156e7:.0f} years), where its float64 seconds still resolve "
            f"{math.ulp(MAX_SPAN_S):.1g} s: raise the rate or simulate fewer requests")
