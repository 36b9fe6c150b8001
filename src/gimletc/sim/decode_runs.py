"""Runs of decode iterations as one event: why the load simulator is fast.

With nothing queued for an engine or its devices, its decode batch does not change until
its first sequence finishes, so the iterations up to then are one event: their step times
sum in closed form (`StepCost.decode_run`; a step's time is linear in context between
interpolation points). Work arriving meanwhile cuts the run after the iteration in
progress, with the same results as the step-by-step simulation (`SimConfig(fast_forward=False)`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gimletc.sim.results import note_iteration
from gimletc.sim.state import EV_ITER, Engine, ModelQueue

if TYPE_CHECKING:
    from collections.abc import Callable

    from gimletc.sim.engines import Engines

__all__ = ["DecodeRuns"]


def _done_by(after: Callable[[int], tuple[float, float]], n: int, dt: float, total: float) -> int:
    """How many of a run's `n` iterations (cycles) have ended `dt` into it: the last m < n with after(m)[0] <= dt,
    `after(m)` being the time (and busy time) of the first m, which grows with m. Iterations take about equal
    time, so dt's share of the run's `total` seconds points at m, checked against its neighbours; else bisect."""
    lo = max(0, min(n - 1, int(dt / total * n))) if total > 0 else 0
    if after(lo)[0] <= dt and (lo + 1 >= n or after(lo + 1)[0] > dt):
        return lo
    lo, hi = 0, n  # after(lo) <= dt < after(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if after(mid)[0] <= dt:
            lo = mid
        else:
            hi = mid
    return lo


class DecodeRuns:
    """Starts decode iterations on an engine, fast-forwarded when nothing can change them, and cuts
    a fast-forwarded run short when something does."""

    def __init__(self, engines: Engines):
        self.engines = engines

    def start(self, eng: Engine, j: int, t: float) -> None:
        """Decode: the model `j` turns after the engine's round-robin pointer runs one iteration.

        With nothing queued for the engine or its devices, the run of iterations up to the next
        finishing sequence goes as one event instead: the running models take turns (one
        iteration each per cycle, in round-robin order) for F − 1 full cycles and, in cycle F,
        up to the first model with a finishing sequence. Step times sum in closed form
        (`StepCost.decode_run`); `cut` stops the run early when work arrives."""
        es = self.engines
        mqs = eng.mqs
        k = len(mqs)
        if k == 1:
            self._start_one(eng, t)
            return
        run = None
        if es.cfg.fast_forward and not es.queued(eng) and not es.contended(eng):
            act = []  # (index, model queue) of the running models, in turn order from model j
            F: int | None = None
            star = 0
            for x in range(j, k):
                i = (eng.rr + x) % k
                mq = mqs[i]
                if mq.B > 0:
                    f = mq.run[0][0] - mq.iters
                    if F is None or f < F:  # the first of the fewest iterations to a finishing sequence
                        F, star = f, len(act)
                    act.append((i, mq))
            cap = eng.policy.decode_limit(eng, [mq for _, mq in act]) if eng.grows else None  # cycles KV allows
            if cap is not None and cap < F:
                F, star = cap, len(act) - 1
            if F > 0:
                run = []
                for slot, (i, mq) in enumerate(act):
                    n = F if slot <= star else F - 1
                    if n > 0:
                        run.append((i, mq, n))
                eng.rr = (act[star][0] + 1) % k
        if run is None:  # one iteration; or not one whole cycle: the first model's alone (its policy made room)
            idx = (eng.rr + j) % k
            eng.rr = (idx + 1) % k
            run = [(idx, mqs[idx], 1)]
        ctx = []
        parts = []
        secs = busy = 0.0
        iters = B = seq_iters = most = 0
        for _, mq, n in run:
            b_ = mq.B
            c = mq.ctx_sum / b_
            ctx.append(c)
            parts.append((mq, n))
            a, b = mq.cost.decode(b_, c) if n == 1 else mq.cost.decode_run(b_, c, n)
            secs += a
            busy += b
            iters += n
            B += b_
            seq_iters += b_ * n
            if b_ > most:
                most = b_
        if es.sim.schedule is not None:
            for _, mq, n in run:
                note_iteration(es.sim.schedule, es.kv, eng, t, "decode", mq, mq.B, [], n)
        row = es.begin(eng, t, secs, busy, 0, ("decode", parts), "decode", None, B, iters)
        eng.batch_sum += seq_iters
        if most > eng.max_batch_seen:
            eng.max_batch_seen = most
        if iters > 1:
            eng.ff = [run, ctx, t, row, secs]

    def _start_one(self, eng: Engine, t: float) -> None:
        """`start` for an engine of one model (most): the same run, without the turn-taking."""
        es = self.engines
        mq = eng.mqs[0]
        n = 1
        if es.cfg.fast_forward and not es.queued(eng) and not es.contended(eng):
            n = mq.run[0][0] - mq.iters
            if eng.grows:
                cap = eng.policy.decode_limit(eng, [mq])
                if cap is not None and cap < n:
                    n = max(cap, 1)
        B = mq.B
        c = mq.ctx_sum / B
        secs, busy = mq.cost.decode(B, c) if n == 1 else mq.cost.decode_run(B, c, n)
        if es.sim.schedule is not None:
            note_iteration(es.sim.schedule, es.kv, eng, t, "decode", mq, B, [], n)
        row = es.begin(eng, t, secs, busy, 0, ("decode", [(mq, n)]), "decode", None, B, n)
        eng.batch_sum += B * n
        if B > eng.max_batch_seen:
            eng.max_batch_seen = B
        if n > 1:
            eng.ff = [[(0, mq, n)], [c], t, row, secs]

    def cut(self, eng: Engine, t: float) -> None:
        """Stop a fast-forwarded run after the iteration in progress at `t`."""
        es = self.engines
        run, ctx, t0, row, total = eng.ff
        eng.ff = None
        dt = t - t0
        if len(run) == 1:
            self._cut_one(eng, run[0][0], run[0][1], run[0][2], ctx[0], t0, row, dt, total)
            return

        parts = [(mq.cost.decode_run, mq.B, c, n) for (_, mq, n), c in zip(run, ctx, strict=True)]
        seen: dict[int, tuple[float, float]] = {}

        def after(cycles: int) -> tuple[float, float]:  # time and busy time of the first `cycles` cycles
            v = seen.get(cycles)
            if v is None:
                a = b = 0.0
                for decode_run, B, c, n in parts:
                    m = n if n < cycles else cycles
                    if m:
                        x, y = decode_run(B, c, m)
                        a += x
                        b += y
                v = seen[cycles] = (a, b)
            return v

        F = max(n for _, _, n in run)
        lo = _done_by(after, F, dt, total)
        # Cycle lo + 1 is in progress: find the slot running at dt.
        acc = after(lo)[0]
        cut = len(run) - 1
        for slot, ((_, mq, n), c) in enumerate(zip(run, ctx, strict=True)):
            if n > lo:
                acc += mq.cost.decode(mq.B, c + lo)[0]
                if acc > dt:
                    cut = slot
                    break
        new = [(i, mq, (lo + 1 if slot <= cut else lo) if n > lo else n) for slot, (i, mq, n) in enumerate(run)]
        if all(a[2] == b[2] for a, b in zip(new, run, strict=True)):
            return
        old_s, old_b = after(F)
        run2 = new
        secs = busy = 0.0
        for (_, mq, n), c in zip(run2, ctx, strict=True):
            if n:
                x, y = mq.cost.decode_run(mq.B, c, n)
                secs += x
                busy += y
        dropped = sum(a[2] - b[2] for a, b in zip(run, run2, strict=True))
        self._cut_short(eng, old_s - secs, old_b - busy)
        eng.iters -= dropped
        eng.batch_sum -= sum(mq.B * (a[2] - b[2]) for a, b in zip(run, run2, strict=True) for mq in (a[1],))
        eng.rr = (run2[cut][0] + 1) % len(eng.mqs)
        timeline = es.sim.timeline
        if row is not None:
            r = timeline[row]
            timeline[row] = (r[0], r[1], t0 + secs, r[3], r[4], r[5] - dropped)
        eng.epoch += 1
        es.sim.push(t0 + secs, EV_ITER, eng, (eng.epoch, ("decode", [(mq, n) for _, mq, n in run2 if n])))

    def _cut_short(self, eng: Engine, secs: float, busy: float) -> None:
        """A fast-forwarded run of the engine was cut: `secs` and `busy` seconds fewer on its devices."""
        es = self.engines
        eng.busy_s -= secs
        if eng.owns:
            eng.active_s -= busy
        else:
            for d in eng.devs:
                es.dev_busy_s[d] -= secs
                es.dev_active_s[d] -= busy
        if eng.aux:
            es.account_aux(eng, -secs, -busy)

    def _cut_one(self, eng: Engine, idx: int, mq: ModelQueue, n: int, c: float, t0: float, row: int | None,
                 dt: float, total: float) -> None:
        """`cut` for a run of one model's iterations: keep those up to the one in progress at t0 + dt."""
        es = self.engines
        B, decode_run = mq.B, mq.cost.decode_run
        seen: dict[int, tuple[float, float]] = {}

        def after(m: int) -> tuple[float, float]:  # time and busy time of the first m iterations
            v = seen.get(m)
            if v is None:
                v = seen[m] = decode_run(B, c, m)
            return v

        n2 = _done_by(after, n, dt, total) + 1
        if n2 == n:
            return
        old_s, old_b = after(n)
        secs, busy = after(n2)
        dropped = n - n2
        self._cut_short(eng, old_s - secs, old_b - busy)
        eng.iters -= dropped
        eng.batch_sum -= B * dropped
        eng.rr = (idx + 1) % len(eng.mqs)
        timeline = es.sim.timeline
        if row is not None:
            r = timeline[row]
            timeline[row] = (r[0], r[1], t0 + secs, r[3], r[4], r[5] - dropped)
        eng.epoch += 1
        es.sim.push(t0 + secs, EV_ITER, eng, (eng.epoch, ("decode", [(mq, n2)])))
