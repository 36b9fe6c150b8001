"""What the engines' policies share: a running set capped at `max_batch` (prefilling, waiting
for a decode slot and decoding sequences alike), admission in arrival order, and preemption by
recompute when KV caches that grow as tokens are made no longer fit.

A preempted request frees its whole KV cache and waits again; to resume, its prompt and every
token it had produced are prefilled again (the "recomputed tokens" the results count), and
then it decodes the rest. The engines also offer swapping caches to host memory; vLLM's V1
engine and SGLang recompute, which is what is modelled.
"""

from __future__ import annotations

from typing import ClassVar

from gimletc.models.workload import cached_prefix_tokens
from gimletc.sim.batching import BatchPolicy, MixedStep, PrefillStep, Step
from gimletc.sim.config import SimulationError
from gimletc.sim.state import Engine, Job, ModelQueue

__all__ = ["ContinuousPolicy", "ModelState"]


class ModelState:
    """A policy's per-model state: prompts admitted and part-way through (chunked), in admission order."""

    __slots__ = ("partial", "ratio")

    def __init__(self) -> None:
        self.partial: list[Job] = []
        self.ratio = 0.0  # SGLang's new-token ratio


class ContinuousPolicy(BatchPolicy):
    """Base of the engines' policies (vLLM, SGLang, TensorRT-LLM)."""

    resume_front: ClassVar[bool] = True  # a preempted request waits at the head of the queue (else the tail)

    def setup(self, eng: Engine, mq: ModelQueue) -> None:
        super().setup(eng, mq)
        mq.state = ModelState()

    # -- what is admitted --
    @staticmethod
    def partials(mq: ModelQueue) -> list[Job]:
        """Admitted prompts not yet fully prefilled, in admission order."""
        st = mq.state
        if st.partial:
            st.partial = [j for j in st.partial if j.done < j.tokens * j.seqs]
        return st.partial

    def probe(self, eng: Engine, mq: ModelQueue, job: Job) -> None:
        """Before a prompt is admitted: the tokens its engine's prefix cache (or a prefix sent to it) already
        holds, counted as done, and the KV cache it still needs. Looked up again whenever it is considered,
        as engines do when they schedule a waiting request (the cache changes while it waits)."""
        if not job.look or job.adm:
            return  # nothing to look up (a prompt with only its own segments finds nothing), or admitted
        cache = self.kv.caches[eng.idx]
        if cache is None or job.seen == cache.version:
            return  # nothing joined or left the cache since its last lookup
        job.seen = cache.version
        node, hit = cache.match(mq, job.prefix, job.koff, job.tokens)
        given = cached_prefix_tokens(job.given, job.tokens, cache.block) if job.given else 0
        if given >= hit and given > 0:  # its prefix's KV cache was sent here: reserved as part of its own
            job.node, job.done, job.kv = None, given, job.kv_full
        else:
            job.node, job.done = node, hit
            job.kv = job.kv_full - self.kv.kv_bytes(mq, hit) if hit else job.kv_full

    @staticmethod
    def fresh(mq: ModelQueue) -> Job | None:
        """The first prompt in the queue not yet admitted."""
        for job in mq.pq:
            if not job.adm:
                return job
        return None

    def decode_ready(self, eng: Engine, mq: ModelQueue) -> bool:
        """Whether the first decode waiting on this engine could join the running batch now."""
        if not mq.wait:
            return False
        job = mq.wait[0]
        tpl = job.req.tpl
        if tpl.adopts[job.task] >= 0:
            return True
        return self.room_for(mq, job) and self.kv.fits(eng, job.kv)

    def room_for(self, mq: ModelQueue, job: Job) -> bool:
        """Whether `job` could start under the running-set cap (a request wider than the cap runs alone)."""
        return mq.active + job.seqs <= mq.params.max_batch or mq.active == 0

    def admit_prompt(self, eng: Engine, mq: ModelQueue, job: Job, pending: float = 0.0) -> bool:
        """Reserve a prompt's KV cache and count it in the running set; `pending`: bytes this
        iteration's decode tokens will take, which the running requests were given first."""
        what = f"{mq.name} prefill of {job.tokens} tokens"
        if pending and not self.kv.fits(eng, job.kv + pending):
            return False
        if job.resume is not None:
            if not self.kv.reserve(eng, job.kv, what):
                return False
        elif not self.kv.admit_prefill(eng, job, what):
            return False
        mq.active += job.seqs
        job.counted = True
        job.adm = next(self._adm)
        return True

    def join_decodes(self, eng: Engine, mq: ModelQueue, new_ok: bool = True) -> None:
        """Decodes ready on this engine join the running batch in FIFO order. One that continues its
        own prefill's cache was counted when its prompt was admitted; one whose cache came from
        elsewhere is a new admission (the cap, its KV cache, and `new_ok`)."""
        wait = mq.wait
        while wait:
            job = wait[0]
            req, tpl = job.req, job.req.tpl
            h = tpl.adopts[job.task]
            if h < 0:  # not continuing its own prefill's cache: a new admission
                if not new_ok or not self.room_for(mq, job):
                    break
                if mq.g and not self.kv.fits(eng, job.kv + (mq.B + job.seqs) * mq.g):
                    break  # its cache and this iteration's tokens, the running ones' first
                if job.kv > 0 and not self.kv.reserve(eng, job.kv, f"{mq.name} decode at context {job.ctx}"):
                    break
                mq.active += job.seqs
                job.counted = True
            else:  # the last decode of its prefill's cache takes over the prefill's place
                job.counted = tpl.adopt[h] == job.task
            wait.popleft()
            u = tpl.kv_user_of[job.task]
            if u >= 0 and not tpl.spec[job.task].kv_xfer:
                self.kv.user_done(req, u, 0.0, kick=False)  # it has its own cache now
            job.adm = next(self._adm)
            mq.join(job, next(self._seq))

    # -- KV pressure --
    def make_room(self, eng: Engine, mq: ModelQueue) -> bool:
        """Room for the running decodes' next tokens, preempting (`victim` first) until there is;
        returns whether anyone was preempted."""
        g = mq.g
        if not g or not mq.B:
            return False
        preempted = False
        while mq.B and not self.kv.fits(eng, mq.B * g):
            self.preempt(eng, mq, self.victim(mq))
            preempted = True
        return preempted

    def victim(self, mq: ModelQueue) -> tuple[int, int, Job]:
        """The running decode to preempt first: the last admitted (vLLM's `running.pop()`)."""
        return max(mq.run, key=lambda e: e[2].adm)

    def preempt(self, eng: Engine, mq: ModelQueue, entry: tuple[int, int, Job]) -> None:
        """Free a running decode's KV cache and queue the prefill that will rebuild it."""
        job = entry[2]
        req, tpl = job.req, job.req.tpl
        made = mq.leave(entry)
        ctx = job.ctx + made
        if mq.cost.kv_bytes(ctx + 1, job.seqs) > self.kv.capacity_bytes(eng):
            raise SimulationError(
                f"{mq.name} decode at context {ctx} needs {mq.cost.kv_bytes(ctx + 1, job.seqs) / 1e9:.2f} GB of KV "
                f"cache on engine {eng.spec.id}, which has {self.kv.capacity_bytes(eng) / 1e9:.2f} GB after weights; "
                "it can never finish")
        self.kv.free(eng, job.kv + (made - job.done) * job.seqs * mq.g)
        h = tpl.adopts[job.task]
        if h >= 0:
            hold = req.kv_hold.pop(h, None)  # the prompt's cache, which it continued
            if hold is not None:
                self.kv.drop(hold)
        if job.counted:
            mq.active -= job.seqs
            job.counted = False
        job.done = made
        job.kv = 0.0
        redo = Job(req, job.task, ctx, 0, job.seqs, mq.cost.kv_bytes(ctx, job.seqs), next(self._seq))
        redo.resume = job
        redo.out = job.tokens - made
        if self.resume_front:
            mq.pq.appendleft(redo)
        else:
            mq.pq.append(redo)
        eng.preemptions += 1
        eng.recomputed += ctx * job.seqs

    def decode_limit(self, eng: Engine, mqs: list[ModelQueue]) -> int | None:
        per_cycle = mqs[0].B * mqs[0].g
        for mq in mqs[1:]:
            per_cycle += mq.B * mq.g
        if per_cycle <= 0:
            return None
        return int((self.kv.room(eng) + 1e-6 * eng.n) // per_cycle)

    # -- the batch --
    def portion(self, mq: ModelQueue, job: Job, budget: int, limit: int = 0) -> int:
        """Prompt tokens `job` gets this iteration within `budget` (and `limit`, when set); 0: it waits.
        A request of several sequences (a batched op) goes as that many requests: whole sequences
        while they fit, chunked within one only with chunked prefill."""
        p = mq.params
        left = job.tokens * job.seqs - job.done
        room = min(budget, limit) if limit else budget
        if left <= room:
            return left
        if job.seqs > 1 and job.done % job.tokens == 0 and room >= job.tokens:
            return room // job.tokens * job.tokens
        if not p.chunked:
            if min(job.tokens, left) > p.max_tokens and self.whole_prompts_only:
                raise SimulationError(
                    f"{self.name} without chunked prefill: a {job.tokens}-token prompt of {mq.name} does not fit "
                    f"the {p.max_tokens}-token budget (the engine requires a budget of at least the context length)")
            return 0
        return self.chunk(mq, room)

    whole_prompts_only: ClassVar[bool] = True  # without chunked prefill, a prompt longer than the budget is an error

    def chunk(self, mq: ModelQueue, room: int) -> int:
        """The chunk of a prompt that does not fit whole into `room` tokens."""
        return room

    @staticmethod
    def batch(eng: Engine, j: int, mq: ModelQueue, parts: list[tuple[Job, int]], decode: bool) -> Step:
        """The step for `parts` (and the running decodes when `decode`): whole prompts alone are a prefill step."""
        k = len(eng.mqs)
        eng.rr = (eng.rr + j + 1) % k
        c = sum(p[1] for p in parts)
        if (not decode or mq.B == 0) and all(job.done == 0 and take == job.tokens * job.seqs for job, take in parts):
            for job, _ in parts:
                mq.pq.remove(job)
            return PrefillStep(mq, [job for job, _ in parts], c, sum(job.seqs for job, _ in parts))
        seqs = 0
        ctx = 0
        for job, take in parts:
            whole = job.seqs > 1 and job.done % job.tokens == 0 and take % job.tokens == 0
            seqs += take // job.tokens if whole else 1
            ctx = max(ctx, job.ctx + (job.done % job.tokens if job.seqs > 1 else job.done))
        return MixedStep(mq, parts, c, ctx, decode, seqs)
