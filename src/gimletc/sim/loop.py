"""The event loop of the load simulator: arrivals, a heap of timed events, and each request's
tasks flowing from one resource to the next.

A task starts when all its inputs (data and ordering tokens) are done, then queues for its
resource: prefill and decode for an engine (`gimletc.sim.engines`), unbatched model ops for
their engine; tools, code and retrieval for a host CPU lane (a host has `host_lanes` lanes,
FIFO), optionally exponentially distributed; transfers for their link channel, one at a
time per channel (FIFO); conversions take their seconds without holding a resource.

Everything is deterministic for a seed: a seeded numpy Generator per concern (loop/branch
choices, tool times), and an event heap of plain tuples ordered by (time, sequence number),
dispatched on small integers.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gimletc.sim.arrivals import Arrivals
from gimletc.sim.config import SimConfig, SimulationError
from gimletc.sim.engines import Engines
from gimletc.sim.limits import MAX_SPAN_S, TEMPLATE_CACHE_TASKS, check_seed, check_tasks, estimate, span_problem
from gimletc.sim.results import LoadResult, Outcomes, load_result
from gimletc.sim.state import EV_CPU, EV_DONE, EV_ITER, EV_MARK, EV_XFER, Pool, Req
from gimletc.sim.steps import PROFILES
from gimletc.sim.template import Builder, Shapes, Template, reference_tokens
from gimletc.sim.workload import ACCEL, CPU, DECODE, DELAY, MARK, PREFILL, XFER, ZERO, Workload

__all__ = ["Simulator"]


class Simulator:
    """One simulation of `arrivals` through a workload (`run` it once)."""

    def __init__(self, wl: Workload, arrivals: Arrivals, cfg: SimConfig, seed: int):
        self.wl, self.arr, self.cfg = wl, arrivals, cfg
        # What the run may ask for (gimletc.sim.limits), checked before anything is built.
        check_seed(seed)
        why = span_problem(float(arrivals.times[-1]), f"{len(arrivals):,} arrivals") if len(arrivals) else None
        if why:
            raise SimulationError(why)
        self.mem = estimate(wl, len(arrivals), cfg, check_tasks(wl.graph, cfg.loops))
        self.mem.check(f"{wl.name}: ")
        self.finished = 0  # requests done (those arrived and not done are in flight)
        self.template_tasks = 0  # tasks of the cached templates
        ss = np.random.SeedSequence([int(seed), 0x6C6F6164])
        s_shape, s_tool = ss.spawn(2)
        self.rng_shape = np.random.default_rng(s_shape)
        self.rng_tool = np.random.default_rng(s_tool)
        self.shapes = Shapes(wl.graph, cfg.loops)
        self.builder = Builder(wl.graph, wl.classify)
        self.templates: dict[tuple, Template] = {}
        self.heap: list[tuple] = []
        self._seq = itertools.count(1)
        self.events = 0  # arrivals, task and iteration ends (each fast-forwarded iteration counts)
        self.heap_events = 0
        self.hosts = [Pool(cfg.host_lanes or h.lanes) for h in wl.hosts]
        self.channel_names = list(wl.channels)  # plus those a deployment's routes open while running
        self.channel_ids: dict[str, int] = {c: i for i, c in enumerate(self.channel_names)}
        self.channels = [Pool(1) for _ in self.channel_names]
        self.timeline: list[tuple[str, float, float, str, int, int]] = []
        self.record = cfg.record_timeline
        self.schedule: list[dict] | None = [] if cfg.record_schedule else None
        self.engines = Engines(self, wl, cfg, cfg.profile or PROFILES[wl.stack_profile])
        self.kv = self.engines.kv
        self.outcomes = Outcomes(len(arrivals))
        # reference token counts for traces
        self.ref_in, self.ref_out = reference_tokens(wl.graph)

    def push(self, t: float, code: int, a: Any, b: Any = None) -> None:
        heapq.heappush(self.heap, (t, next(self._seq), code, a, b))

    def run(self, progress: Callable[[str], None] | None = None) -> LoadResult:
        arr = self.arr
        n = len(arr)
        step = max(1, n // 10)
        next_report = step if progress is not None and n >= 10_000 else n + 1
        times = arr.times
        ins = arr.input_tokens
        outs = arr.output_tokens
        heap = self.heap
        engines = self.engines
        i = 0
        t = 0.0
        static_tpl = None
        if self.shapes.static:
            static_tpl = self._template(())
        while i < n or heap:
            if i < n and (not heap or times[i] <= heap[0][0]):
                t = float(times[i])
                d_in = int(ins[i]) - self.ref_in if ins is not None else 0
                r_out = float(outs[i]) / self.ref_out if outs is not None and self.ref_out > 0 else 1.0
                tpl = static_tpl if static_tpl is not None else self._template(
                    self.shapes.sample(self.wl.graph, self.rng_shape))
                req = Req(i, t, tpl, d_in, r_out)
                self.events += 1
                i += 1
                if not i & 1023:  # the requests in flight still fit in memory?
                    self.mem.check_in_flight(i - self.finished, t, arr.rate)
                if i >= next_report:
                    next_report += step
                    progress(f"  {i:,} of {n:,} requests arrived by t = {t:,.1f} s; {self.events:,} events")  # type: ignore[misc]
                self.start(req, tpl.roots, t)
                continue
            t, _, code, a, b = heapq.heappop(heap)
            self.events += 1
            self.heap_events += 1
            if code == EV_DONE:
                self.complete(a, b, t)
            elif code == EV_ITER:
                if b[0] != a.epoch:
                    self.events -= 1  # a run that was cut short: not an event
                    continue
                engines.iter_done(a, b[1], t)
            elif code == EV_CPU:
                req, task, hp = a
                pool = self.hosts[hp]
                if pool.q:
                    r2, t2, s2 = pool.q.popleft()
                    self._run_cpu(r2, t2, hp, s2, t)
                else:
                    pool.free += 1
                self.complete(req, task, t)
            elif code == EV_XFER:
                req, task, ch, then = a
                pool = self.channels[ch]
                if pool.q:
                    r2, t2, s2, then2 = pool.q.popleft()
                    self._run_xfer(r2, t2, ch, s2, then2, t)
                else:
                    pool.free += 1
                if then is None:
                    self.complete(req, task, t)
                else:
                    then(t)
            elif code == EV_MARK:
                engines.mark_done(a, b, t)
        if t > MAX_SPAN_S:
            raise SimulationError(f"{self.wl.name}: the run ended at {t:.3g} s of simulated time, past the "
                                  f"{MAX_SPAN_S:.0e} s where the simulator's float64 seconds resolve "
                                  f"{np.spacing(MAX_SPAN_S):.1g} s; its times would be rounded off")
        return load_result(self, t)

    def _template(self, shape: tuple) -> Template:
        tpl = self.templates.get(shape)
        if tpl is None:
            tpl = self.builder.build(shape)
            if self.template_tasks + tpl.n > TEMPLATE_CACHE_TASKS:  # bounded: rebuilt when seen again
                self.templates.clear()
                self.template_tasks = 0
            self.templates[shape] = tpl
            self.template_tasks += tpl.n
        return tpl

    # -- task flow --
    def start(self, req: Req, tasks: Sequence[int], t: float) -> None:
        for task in tasks:
            self.dispatch(req, task, t)

    def complete(self, req: Req, task: int, t: float) -> None:
        """`task` of `req` is done: its successors whose inputs are all done start."""
        stack = [task]
        tpl = req.tpl
        succ, pending = tpl.succ, req.pending
        while stack:
            x = stack.pop()
            req.left -= 1
            u = tpl.kv_user_of[x]
            if u >= 0 and tpl.kind[x] == XFER:
                self.kv.user_done(req, u, t)
            for s in succ[x]:
                pending[s] -= 1
                if pending[s] == 0:
                    if tpl.kind[s] == ZERO:
                        stack.append(s)
                    else:
                        self.dispatch(req, s, t)
        if req.left == 0:
            self._finish_request(req, t)

    def dispatch(self, req: Req, task: int, t: float) -> None:
        """Queue a ready task for its resource."""
        tpl = req.tpl
        k = tpl.kind[task]
        s = tpl.spec[task]
        if k == ZERO:
            self.complete(req, task, t)
        elif k == DELAY:
            self.push(t + s.seconds, EV_DONE, req, task)
        elif k == CPU:
            secs = s.seconds
            if s.is_tool and self.cfg.tool_times == "exponential":
                secs = secs * float(self.rng_tool.exponential())
            pool = self.hosts[s.resource]
            if pool.free > 0:
                pool.free -= 1
                self._run_cpu(req, task, s.resource, secs, t)
            else:
                pool.q.append((req, task, secs))
        elif k == XFER:
            secs = s.seconds
            h = tpl.scale_head[task]
            if h >= 0 and req.d_in:
                ps = tpl.spec[h]
                base = ps.ctx + ps.tokens
                secs = s.latency + (s.seconds - s.latency) * max(1, base + req.d_in) / max(1, base)
            self.transfer(req, task, s.resource, secs, None, t)
        elif k == PREFILL:
            self.engines.enqueue_prefill(req, task, s, t)
        elif k == DECODE:
            self.engines.enqueue_decode(req, task, s, t)
        elif k == MARK:
            pass  # completed by its prefill's engine
        elif k == ACCEL:
            self.engines.enqueue_job(req, task, s, t)
        else:  # pragma: no cover
            raise SimulationError(f"unknown task kind {k}")

    def _run_cpu(self, req: Req, task: int, host: int, secs: float, t: float) -> None:
        self.hosts[host].busy_s += secs
        if self.record and len(self.timeline) < self.cfg.timeline_limit:
            self.timeline.append((self.wl.hosts[host].id, t, t + secs, req.tpl.spec[task].label, 1, 1))
        self.push(t + secs, EV_CPU, (req, task, host))

    def _run_xfer(self, req: Req, task: int, ch: int, secs: float, then: Any, t: float) -> None:
        self.channels[ch].busy_s += secs
        if self.record and len(self.timeline) < self.cfg.timeline_limit:
            self.timeline.append((self.channel_names[ch], t, t + secs, "transfer", 1, 1))
        self.push(t + secs, EV_XFER, (req, task, ch, then))

    def transfer(self, req: Req, task: int, ch: int, secs: float, then: Callable[[float], None] | None,
                 t: float) -> None:
        """Move data over channel `ch` (FIFO, one transfer at a time); then `then(t)`, or the task completes."""
        pool = self.channels[ch]
        if pool.free > 0:
            pool.free -= 1
            self._run_xfer(req, task, ch, secs, then, t)
        else:
            pool.q.append((req, task, secs, then))

    def channel(self, name: str) -> int:
        """The index of link channel `name`, opened on first use."""
        c = self.channel_ids.get(name)
        if c is None:
            c = self.channel_ids[name] = len(self.channels)
            self.channels.append(Pool(1))
            self.channel_names.append(name)
        return c

    def _finish_request(self, req: Req, t: float) -> None:
        self.finished += 1
        self.outcomes.record(req, t)
        engines = self.engines.engines
        for hold in list(req.kv_hold.values()):  # nothing should be left; free defensively
            self.kv.drop(hold, t)
        req.kv_hold.clear()
