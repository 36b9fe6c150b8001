"""Engines: the mechanism that runs batches on groups of accelerators.

An engine is one placed group of accelerators; it runs one iteration at a time and holds
all of its devices while it does. Groups that share a device wait for it first come, first
served (a waiting engine keeps later ones off its devices, so wide groups are not starved).
What an iteration runs is its batching policy's decision (`gimletc.sim.batching`); this
module queues jobs on engines, gives engines their devices, prices and starts iterations
with the cost model (`gimletc.sim.steps`), and moves jobs on when iterations end. Runs of
decode iterations over an unchanging batch go as one event (`gimletc.sim.decode_runs`).

Ops the simulator does not batch (draft/verify, attention/FFN blocks) run as jobs of their
compiled seconds on their engine, before any batch.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING

from gimletc.hardware import get_chip
from gimletc.hardware.schema import Chip
from gimletc.sim.batching import DecodeStep, MixedStep, PrefillStep
from gimletc.sim.config import SimConfig, SimulationError
from gimletc.sim.decode_runs import DecodeRuns
from gimletc.sim.engine_setup import assign_policies, index_devices, link_engines, load_models
from gimletc.sim.kv import KEY_SPAN
from gimletc.sim.results import note_iteration
from gimletc.sim.roles import ROLE_PARTS, role_cost
from gimletc.sim.state import EV_ITER, EV_MARK, Engine, Job, ModelQueue, Req, has_work, request_tokens
from gimletc.sim.steps import SoftwareProfile, StepCost
from gimletc.sim.template import Tail
from gimletc.sim.workload import TaskSpec, Workload

if TYPE_CHECKING:
    from gimletc.sim.loop import Simulator

__all__ = ["Engines", "price_mixed"]


class Engines:
    """Every engine of a workload, its devices, KV memory and batching policy."""

    def __init__(self, sim: Simulator, wl: Workload, cfg: SimConfig, profile: SoftwareProfile):
        self.sim, self.wl, self.cfg, self.profile = sim, wl, cfg, profile
        self.ec = cfg.engine
        # Devices: every engine's iteration holds all of its devices; KV memory is kept per device.
        self.dev_ids, dev_idx, self.dev_chip = index_devices(wl)
        nd = len(self.dev_ids)
        self.dev_holder = [-1] * nd
        self.dev_nblocked = [0] * nd
        self.dev_busy_s = [0.0] * nd
        self.dev_active_s = [0.0] * nd
        self.blocked: list[Engine] = []  # engines waiting for devices, first come first served
        self.engines = [Engine(i, s, tuple(dev_idx[d] for d in s.devices), tuple(dev_idx[d] for d in s.aux))
                        for i, s in enumerate(wl.engines)]
        link_engines(self.engines)
        self.pools = [tuple(p) for p in wl.pools]
        self.pool_rr = [0] * len(self.pools)
        self.costs: dict[tuple[str, str, int], StepCost] = {}
        self.kv = load_models(self.engines, wl.engine_models, self.cost, self.dev_ids, self.dev_chip,
                              self.ec.mem_fraction)
        self.kv.wake = self.kick
        self.policy_name, self.decoded = assign_policies(self.engines, self.ec, self.kv, profile.name)
        self.runs = DecodeRuns(self)
        self._seq = itertools.count(1)  # orders jobs by arrival at their engine

    def cost(self, model: str, chip: Chip, n: int, part: tuple = ()) -> StepCost:
        key = (model, chip.name, n, part)
        c = self.costs.get(key)
        if c is None:
            if part and part[0] in ROLE_PARTS:
                c = role_cost(self.cfg.model(model), chip, n, self.profile, part, self.cfg.model, get_chip)
            else:
                c = StepCost(self.cfg.model(model), chip, n, self.profile, part)
            self.costs[key] = c
        return c

    def pick(self, pool: int) -> int:
        """The engine of `pool` with the fewest outstanding jobs; ties rotate."""
        engines = self.pools[pool]
        if len(engines) == 1:
            return engines[0]
        k = len(engines)
        start = self.pool_rr[pool]
        best, best_load = -1, math.inf
        for j in range(k):
            e = engines[(start + j) % k]
            load = self.engines[e].outstanding
            if load < best_load:
                best, best_load = e, load
        self.pool_rr[pool] = (start + 1) % k
        return best

    # -- jobs arriving --
    def enqueue_prefill(self, req: Req, task: int, s: TaskSpec, t: float) -> None:
        e = self.pick(s.resource)
        eng = self.engines[e]
        mq = eng.mq_by_model[(s.model, s.chips, s.part)]
        tokens, ctx = request_tokens(req, s)
        tpl = req.tpl
        kv_tokens = ctx + tokens
        d = tpl.adopt[task]
        out = 0
        if d >= 0:
            out, _ = request_tokens(req, tpl.spec[d])
            if not eng.grows:  # reserved whole now, else grown token by token
                kv_tokens += out
        kv = mq.cost.kv_bytes(kv_tokens, s.seqs)
        req.engine[task] = e
        job = Job(req, task, tokens, ctx, s.seqs, kv, next(self._seq))
        job.out = out
        if s.prompt and s.seqs == 1 and ctx == 0 and self.kv.caches[e] is not None:
            chain = tpl.chain[task]
            if chain:
                job.prefix = chain
                job.mq = mq
                given = tpl.given[task]
                # A prompt whose chain is one tail (nothing another prompt can share) finds nothing cached, and
                # its values are never looked up: it needs neither its offset nor a lookup.
                if given or chain[0][0].__class__ is not Tail:
                    job.look = True
                    job.koff = req.id * KEY_SPAN  # keys of values are this request's own
                    job.given = given
        mq.pq.append(job)
        eng.outstanding += 1
        self.kick(eng, t)

    def enqueue_decode(self, req: Req, task: int, s: TaskSpec, t: float) -> None:
        tpl = req.tpl
        h = tpl.head[task]
        req.ready[task] = t
        src = req.engine.get(h, -1) if h >= 0 else -1
        if s.resource < 0:
            if src < 0:
                raise SimulationError(f"decode {s.of or s.label}: runs where its prefill ran, but has none")
            e = src
        else:
            e = self.pick(s.resource)
        eng = self.engines[e]
        mq = eng.mq_by_model[(s.model, s.chips, s.part)]
        tokens, ctx = request_tokens(req, s)
        adopted = tpl.adopts[task] >= 0
        kv = 0.0 if adopted else mq.cost.kv_bytes(ctx + (0 if eng.grows else tokens), s.seqs)
        job = Job(req, task, tokens, ctx, s.seqs, kv, next(self._seq))
        eng.outstanding += 1
        if s.kv_xfer and src >= 0 and src != e and self.wl.route is not None:
            nbytes = self.engines[src].mq_by_model[(s.model, s.chips, s.part)].cost.kv_bytes(ctx, s.seqs) \
                if (s.model, s.chips, s.part) in self.engines[src].mq_by_model else mq.cost.kv_bytes(ctx, s.seqs)
            name, secs = self.wl.route(src, e, nbytes)
            ch = self.sim.channel(name)

            def arrived(t2: float, job: Job = job, eng: Engine = eng, mq: ModelQueue = mq) -> None:
                if tpl.kv_user_of[task] >= 0:
                    self.kv.user_done(req, tpl.kv_user_of[task], t2)
                mq.wait.append(job)
                self.kick(eng, t2)

            self.sim.transfer(req, task, ch, secs, arrived, t)
            return
        if tpl.kv_user_of[task] >= 0:
            # The decode takes over its prefill's cache: moved (kv_xfer, above) or read in place from another
            # engine's devices. Either way the prefill's copy is freed now and the decode reserves its own when
            # admitted; holding both would let admitted prefills fill the memory their own decodes wait for.
            self.kv.user_done(req, tpl.kv_user_of[task], t)
        mq.wait.append(job)
        self.kick(eng, t)

    def enqueue_job(self, req: Req, task: int, s: TaskSpec, t: float) -> None:
        """An op run unbatched for its compiled seconds."""
        eng = self.engines[self.pick(s.resource)]
        eng.accel.append((req, task, s.seconds))
        eng.outstanding += 1
        self.kick(eng, t)

    # -- devices --
    def queued(self, eng: Engine) -> bool:
        """Whether any job waits for the engine (running batches aside)."""
        return bool(eng.accel) or eng.policy.waiting(eng)

    def contended(self, eng: Engine) -> bool:
        """Whether another engine waits for one of the engine's devices."""
        if eng.alone:
            return False
        nblocked = self.dev_nblocked
        for d in eng.devs:
            if nblocked[d]:
                return True
        return False

    def kick(self, eng: Engine, t: float) -> None:
        """Start the engine's next iteration if it has work and its devices are free (else queue for them)."""
        if eng.busy:
            if eng.ff is not None and (self.queued(eng) or self.contended(eng)):
                self.runs.cut(eng, t)
            return
        if eng.blocked or not has_work(eng):
            return
        holder, nblocked = self.dev_holder, self.dev_nblocked
        if not eng.alone and any(holder[d] >= 0 or nblocked[d] for d in eng.devs):
            eng.blocked = True
            self.blocked.append(eng)
            for d in eng.devs:
                nblocked[d] += 1
            for d in eng.devs:
                h = holder[d]
                if h >= 0 and self.engines[h].ff is not None:
                    self.runs.cut(self.engines[h], t)
            return
        self.try_start(eng, t)

    def serve_blocked(self, t: float) -> None:
        """Give freed devices to waiting engines in arrival order; an engine still waiting keeps
        later ones off all of its devices, so a wide engine is never starved by narrow ones."""
        reserved: set[int] = set()
        holder = self.dev_holder
        for eng in list(self.blocked):
            if any(holder[d] >= 0 or d in reserved for d in eng.devs):
                reserved.update(eng.devs)
                continue
            self.blocked.remove(eng)
            eng.blocked = False
            for d in eng.devs:
                self.dev_nblocked[d] -= 1
            self.try_start(eng, t)

    # -- iterations --
    def try_start(self, eng: Engine, t: float) -> None:
        """Run the engine's unbatched jobs first, else the batch its policy picks (if any)."""
        if eng.accel:
            req, task, secs = eng.accel.popleft()
            self.begin(eng, t, secs, secs, 0, ("accel", req, task), "job")
            return
        step = eng.policy.next_batch(eng)
        if step is None:
            return
        if isinstance(step, DecodeStep):
            self.runs.start(eng, step.offset, t)
        elif isinstance(step, PrefillStep):
            mq, batch = step.mq, step.jobs
            mean_tokens = max(1, round(step.tokens / step.seqs))
            ctx = max(j.ctx for j in batch)
            secs, busy = mq.cost.prefill(step.seqs, mean_tokens, ctx)
            if self.sim.schedule is not None:
                note_iteration(self.sim.schedule, self.kv, eng, t, "prefill", mq, 0,
                               [(j, j.tokens * j.seqs) for j in batch], 1)
            self.begin(eng, t, secs, busy, 0, ("prefill", mq, batch), "prefill", mq.cost.chips, step.seqs)
        else:
            assert isinstance(step, MixedStep)
            mq, parts = step.mq, step.parts
            B = mq.B if step.decode else 0
            ctx_mean = mq.ctx_sum / B if B else 0.0
            secs, busy = price_mixed(mq.cost, step, B, ctx_mean)
            kind = "mixed" if step.tokens and B else ("prefill" if step.tokens else "decode")
            if self.sim.schedule is not None:
                note_iteration(self.sim.schedule, self.kv, eng, t, kind, mq, B, parts, 1)
            self.begin(eng, t, secs, busy, B, ("chunked", mq, parts, step.decode), kind, mq.cost.chips, B + len(parts))

    def begin(self, eng: Engine, t: float, secs: float, busy: float, batch: int, what: tuple, label: str,
              chips: int | None = None, shown: int = 0, iters: int = 1) -> int | None:
        """Start `iters` iterations (one unless fast-forwarded); returns their timeline row, if recorded."""
        eng.busy = True
        eng.busy_s += secs
        if eng.owns:
            eng.active_s += busy
        else:
            for d in eng.devs:
                self.dev_holder[d] = eng.idx
                self.dev_busy_s[d] += secs
                self.dev_active_s[d] += busy
        if eng.aux:
            self.account_aux(eng, secs, busy)
        eng.iters += iters
        if batch:
            eng.batch_sum += batch * iters
            if batch > eng.max_batch_seen:
                eng.max_batch_seen = batch
        row = None
        sim = self.sim
        if sim.record and len(sim.timeline) < self.cfg.timeline_limit:
            row = len(sim.timeline)
            sim.timeline.append((eng.spec.id, t, t + secs, label, shown, iters))
        if what[0] == "prefill":
            eng.prefill_iters += 1
            # Layer-streamed prefills finish piece by piece; the last piece ends with the step.
            for job in what[2]:
                marks = job.req.tpl.marks[job.task]
                k = len(marks)
                for m_i, m in enumerate(marks):
                    sim.push(t + secs if m_i == k - 1 else t + secs * (m_i + 1) / k, EV_MARK, job, m)
        sim.push(t + secs, EV_ITER, eng, (eng.epoch, what))
        return row

    def account_aux(self, eng: Engine, secs: float, busy: float) -> None:
        """A composite engine's second kind of group works in its iterations (negative: a run cut short)."""
        r = eng.aux_r
        for d in eng.aux:
            self.dev_busy_s[d] += secs
            self.dev_active_s[d] += busy * r

    def iter_done(self, eng: Engine, what: tuple, t: float) -> None:
        # The engine stays busy while this iteration's results flow on: tasks that become
        # ready here may queue on it, but only the kick at the end starts its next iteration.
        kind = what[0]
        if kind == "accel":
            _, req, task = what
            eng.outstanding -= 1
            self.sim.complete(req, task, t)
        elif kind == "prefill":
            mq = what[1]
            for job in what[2]:
                self._prefilled(eng, mq, job)
        elif kind == "decode":
            eng.ff = None
            sim = self.sim
            sim.events -= 1  # counted as one event: count its iterations (fast-forwarded) instead
            for mq, n in what[1]:
                sim.events += n
                self.decode_step(eng, mq, t, n)
        else:  # chunked
            mq, parts = what[1], what[2]
            had_decode = what[3] and mq.B > 0
            resumed = []
            for job, take in parts:
                job.done += take
                total = job.tokens * job.seqs
                marks = job.req.tpl.marks[job.task]
                k = len(marks)
                while job.next_mark < k and job.done * k >= total * (job.next_mark + 1):
                    m = marks[job.next_mark]
                    job.next_mark += 1
                    self.mark_done(job, m, t)
                if job.done >= total:
                    mq.pq.remove(job)
                    if job.resume is not None:
                        resumed.append(job)
                    else:
                        self._prefilled(eng, mq, job)
            if had_decode:
                self.decode_step(eng, mq, t)
            for job in resumed:  # after this iteration's decode step, which they were not part of
                self._prefilled(eng, mq, job)
        eng.busy = False
        if not eng.owns:
            for d in eng.devs:
                self.dev_holder[d] = -1
        if self.blocked:
            self.serve_blocked(t)
        for o in eng.near:  # itself last among equals: waiting engines were served first
            if o is not eng:
                self.kick(o, t)
        self.kick(eng, t)

    def _prefilled(self, eng: Engine, mq: ModelQueue, job: Job) -> None:
        """A prefill job's last tokens are computed: a recompute's decode rejoins the running batch;
        a prompt whose decode is elsewhere (or none) leaves the running set."""
        redo = job.resume
        if redo is not None:
            redo.kv = job.kv
            redo.adm = job.adm
            redo.counted = job.counted
            mq.join(redo, next(self._seq))
            return
        eng.outstanding -= 1
        if job.counted and job.req.tpl.adopt[job.task] < 0:
            mq.active -= job.seqs

    def decode_step(self, eng: Engine, mq: ModelQueue, t: float, k: int = 1) -> None:
        """`k` decode iterations of `mq`'s running batch are over: sequences that are done leave."""
        kv = self.kv
        g = mq.g
        if g:
            kv.grow(eng, mq.B * k * g)
        mq.iters += k
        mq.ctx_sum += mq.B * k
        run = mq.run
        while run and run[0][0] <= mq.iters:
            _, _, job = heapq.heappop(run)
            mq.B -= job.seqs
            mq.ctx_sum -= (job.ctx + job.tokens) * job.seqs
            mq.out_sum -= (job.ctx + job.tokens) * job.seqs
            mq.base_sum -= job.ctx * job.seqs
            if job.counted:
                mq.active -= job.seqs
            eng.outstanding -= 1
            req, task = job.req, job.task
            tpl = req.tpl
            h = tpl.head[task]
            start = req.pf_end.get(h, req.ready.get(task, t)) if h >= 0 else req.ready.get(task, t)
            tpot = (t - start) / job.tokens
            req.out_tokens += job.tokens * job.seqs
            if tpot > req.tpot:
                req.tpot = tpot
            llm = tpl.spec[task].llm
            if llm and llm not in req.llm_tpot:
                req.llm_tpot[llm] = tpot
            held = job.kv + (job.tokens - job.done) * job.seqs * g if g else job.kv
            if held > 0:
                kv.free(eng, held)
            p = tpl.adopts[task]
            if p >= 0 and tpl.adopt[p] == task:
                hold = req.kv_hold.pop(p, None)
                if hold is not None:
                    kv.drop(hold)
            self.sim.complete(req, task, t)
        if mq.B == 0:
            mq.ctx_sum = mq.out_sum = mq.base_sum = 0.0
        if self.decoded:
            hook = self.decoded.get(id(eng.policy))
            if hook is not None:
                hook(eng, mq, k)

    def mark_done(self, job: Job, m: int, t: float) -> None:
        """Piece `m` of a prefill is computed; the last piece ends the prefill (its first token exists)."""
        req = job.req
        tpl = req.tpl
        marks = tpl.marks[job.task]
        if m == marks[-1]:
            if job.prefix is not None:  # its prompt's segments join its engine's prefix cache
                hold = req.kv_hold.get(job.task)
                if hold is not None:
                    self.kv.insert(job, hold)
            req.pf_end[job.task] = t
            ttft = t - req.t0
            if ttft < req.first:
                req.first = ttft
            llm = tpl.spec[job.task].llm
            if llm and llm not in req.llm_ttft:
                req.llm_ttft[llm] = ttft
            if tpl.kv_users[job.task] == 0 and tpl.adopt[job.task] < 0:
                hold = req.kv_hold.pop(job.task, None)
                if hold is not None:
                    self.kv.drop(hold, t)
        self.sim.complete(req, m, t)


def price_mixed(cost: StepCost, step: MixedStep, B: int, ctx_mean: float) -> tuple[float, float]:
    """A mixed iteration: one forward pass over the prompt chunks and the B decode tokens (the
    GEMMs see every row and read the weights once), plus the decodes' attention over their caches.
    Chunks of several sequences are priced as a prefill of that many sequences sharing the rows."""
    if step.seqs <= 1:
        return cost.mixed(step.tokens, step.chunk_ctx, B, ctx_mean)
    secs, busy = cost.prefill(step.seqs, max(1, round((step.tokens + B) / step.seqs)), step.chunk_ctx)
    if B:
        # The decodes' cache reads: what `mixed` adds to a prefill of its rows (its own split).
        t1, b1 = cost.mixed(1, 0, B, ctx_mean)
        t0, b0 = cost.prefill(1, 1 + B, 0)
        secs += t1 - t0
        busy += b1 - b0
    return secs, busy
