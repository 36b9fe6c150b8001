"""Prefill-first batching: the load simulator's own policy before the engines' were modelled,
kept by name (`--policy prefill-first`) so its results can be reproduced.

- Without chunked prefill: a prefill step of the queued prompts (FIFO across the engine's
  models, up to `max_prefill_tokens` per step; a longer prompt runs alone) takes priority;
  otherwise one decode step of the running batch (continuous batching: sequences join when
  admitted, up to `max_batch`, and leave when they have produced their tokens). Several
  models on one engine take turns (round robin). `max_batch` caps the decode batch only:
  prompts are admitted whenever their KV cache (prompt and output) fits, so in overload the
  prefilled requests queue for decode slots and TPOT grows (the engines cap the running set).
- With chunked prefill: every iteration carries the running decode batch plus up to
  `chunk_tokens` minus the batch of prompt tokens, taken from the queued prompts in order.

Defaults: max_batch 256, max_prefill_tokens 8192, chunked prefill off, chunk_tokens 2048.
"""

from __future__ import annotations

from gimletc.hardware.schema import Chip
from gimletc.models import Model
from gimletc.sim.batching import BatchParams, BatchPolicy, DecodeStep, MixedStep, PrefillStep, Step
from gimletc.sim.config import EngineConfig
from gimletc.sim.state import Engine, Job, ModelQueue

__all__ = ["ChunkedPrefill", "PrefillFirst"]


class _Legacy(BatchPolicy):
    name = "prefill-first"

    @classmethod
    def resolve(cls, config: EngineConfig, model: Model, chip: Chip, kv_tokens: float) -> BatchParams:
        return BatchParams(config.max_batch or 256, config.max_prefill_tokens or 8192,
                           bool(config.chunked_prefill), config.chunk_tokens or 2048)

    def waiting(self, eng: Engine) -> bool:
        for mq in eng.mqs:
            if mq.pq or mq.wait:
                return True
        return False

    def admit(self, eng: Engine, mq: ModelQueue) -> None:
        """Waiting decodes join the running batch in FIFO order, up to `max_batch` sequences and while
        their KV caches fit (a decode that adopted its prefill's cache needs none)."""
        wait = mq.wait
        cap = mq.params.max_batch
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


class PrefillFirst(_Legacy):
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
            budget = best.params.max_tokens
            while pq:
                job = pq[0]
                if batch and total + job.tokens * job.seqs > budget:
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


class ChunkedPrefill(_Legacy):
    """Each iteration: one model's decode batch plus prompt chunks up to `chunk_tokens` in all."""

    def next_batch(self, eng: Engine) -> Step | None:
        k = len(eng.mqs)
        for j in range(k):
            mq = eng.mqs[(eng.rr + j) % k]
            self.admit(eng, mq)
            budget = max(0, mq.params.chunk_tokens - mq.B)
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
