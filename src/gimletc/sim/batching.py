"""Batching policies: what an engine's next iteration runs.

The engine (`gimletc.sim.engines`) asks its policy for the next batch whenever it is free
and holds its devices; the policy admits waiting work under its caps and the KV memory
(`gimletc.sim.kv`) and names the batch; the engine prices it with the cost model, runs it
and, when it ends, moves its jobs on. A new policy is a new `BatchPolicy` subclass.

- `PrefillFirst`: a prefill step of the queued prompts (FIFO across the engine's models, up
  to `max_prefill_tokens` per step; a longer prompt runs alone) takes priority; otherwise
  one decode step of the running batch (continuous batching: sequences join when admitted,
  up to `max_batch`, and leave when they have produced their tokens). Several models on one
  engine take turns (round robin).
- `ChunkedPrefill`: every iteration carries the running decode batch plus up to
  `chunk_tokens` minus the batch of prompt tokens, taken from the queued prompts in order.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass

from gimletc.sim.config import EngineConfig
from gimletc.sim.kv import KVMemory
from gimletc.sim.state import Engine, Job, ModelQueue

__all__ = ["BatchPolicy", "ChunkedPrefill", "DecodeStep", "MixedStep", "PrefillFirst", "PrefillStep", "policy_for"]


@dataclass(slots=True)
class PrefillStep:
    """Prefill `jobs` of one model together: `tokens` prompt tokens over `seqs` sequences."""

    mq: ModelQueue
    jobs: list[Job]
    tokens: int
    seqs: int


@dataclass(slots=True)
class DecodeStep:
    """One decode iteration of the running batch of the model `offset` turns after the engine's
    round-robin pointer (or, fast-forwarded, the run of them up to the next finishing sequence)."""

    offset: int


@dataclass(slots=True)
class MixedStep:
    """One model's running decode batch plus prompt chunks: (job, its tokens this iteration) in
    `parts`, `tokens` of them in all, the first chunk after `chunk_ctx` cached tokens."""

    mq: ModelQueue
    parts: list[tuple[Job, int]]
    tokens: int
    chunk_ctx: int


Step = PrefillStep | DecodeStep | MixedStep


class BatchPolicy(ABC):
    """Decides each iteration of an engine; the engine runs it (mechanism apart from policy)."""

    def __init__(self, config: EngineConfig, kv: KVMemory):
        self.ec = config
        self.kv = kv
        self._seq = itertools.count(1)  # orders sequences that finish in the same iteration

    @abstractmethod
    def next_batch(self, eng: Engine) -> Step | None:
        """The engine's next iteration, with its jobs admitted (KV reserved); None when it has none."""

    def waiting(self, eng: Engine) -> bool:
        """Whether work waits that could change the engine's next iterations; while none does and
        nobody waits for its devices, the engine runs its decode batch to the next finish as one event."""
        for mq in eng.mqs:
            if mq.pq or mq.wait:
                return True
        return False

    def admit(self, eng: Engine, mq: ModelQueue) -> None:
        """Waiting decodes join the running batch in FIFO order, up to `max_batch` sequences and while
        their KV caches fit (a decode that adopted its prefill's cache needs none)."""
        wait = mq.wait
        cap = self.ec.max_batch
        while wait and mq.B + wait[0].seqs <= max(cap, wait[0].seqs if mq.B == 0 else cap):
            job = wait[0]
            if job.kv > 0 and not self.kv.reserve(eng, job.kv, f"{mq.name} decode at context {job.ctx}"):
                break
            wait.popleft()
            req = job.req
            u = req.tpl.kv_user_of[job.task]
            if u >= 0 and not req.tpl.spec[job.task].kv_xfer:
                self.kv.user_done(req, u, 0.0, kick=False)  # it has its own cache now
            mq.join(job, next(self._seq))


class PrefillFirst(BatchPolicy):
    """Prefill steps first (FIFO across models by arrival at the engine), else a decode step."""

    def next_batch(self, eng: Engine) -> Step | None:
        best = None
        for mq in eng.mqs:
            if mq.pq and (best is None or mq.pq[0].seq < best.pq[0].seq):
                best = mq
        if best is not None:
            batch: list[Job] = []
            total = 0
            seqs = 0
            pq = best.pq
            while pq:
                job = pq[0]
                if batch and total + job.tokens * job.seqs > self.ec.max_prefill_tokens:
                    break
                if not self.kv.admit_prefill(eng, job, f"{best.name} prefill of {job.tokens} tokens"):
                    break
                pq.popleft()
                batch.append(job)
                total += job.tokens * job.seqs
                seqs += job.seqs
            if batch:
                return PrefillStep(best, batch, total, seqs)
        # Decode: models take turns.
        k = len(eng.mqs)
        for j in range(k):
            mq = eng.mqs[(eng.rr + j) % k]
            self.admit(eng, mq)
            if mq.B > 0:
                return DecodeStep(j)
        return None


class ChunkedPrefill(BatchPolicy):
    """Each iteration: one model's decode batch plus prompt chunks up to `chunk_tokens` in all."""

    def next_batch(self, eng: Engine) -> Step | None:
        k = len(eng.mqs)
        budget_total = self.ec.chunk_tokens
        for j in range(k):
            mq = eng.mqs[(eng.rr + j) % k]
            self.admit(eng, mq)
            budget = max(0, budget_total - mq.B)
            parts: list[tuple[Job, int]] = []
            chunk_ctx = 0
            idx = 0
            while budget > 0 and idx < len(mq.pq):
                job = mq.pq[idx]
                if job.done == 0 and job.next_mark == 0 and job.task not in job.req.kv_hold:
                    if not self.kv.admit_prefill(eng, job, f"{mq.name} prefill of {job.tokens} tokens"):
                        break
                total = job.tokens * job.seqs
                take = min(budget, total - job.done)
                if not parts:
                    chunk_ctx = job.ctx + job.done // max(1, job.seqs)
                parts.append((job, take))
                budget -= take
                idx += 1
            c = sum(p[1] for p in parts)
            if c == 0 and mq.B == 0:
                continue
            if c == 0:
                return DecodeStep(j)
            eng.rr = (eng.rr + j + 1) % k
            return MixedStep(mq, parts, c, chunk_ctx)
        return None


def policy_for(config: EngineConfig, kv: KVMemory) -> BatchPolicy:
    """The policy an engine configuration asks for."""
    return ChunkedPrefill(config, kv) if config.chunked_prefill else PrefillFirst(config, kv)
