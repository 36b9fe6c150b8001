"""SGLang's scheduler (SGLang 0.4/0.5, `python/sglang/srt/managers/scheduler.py`
`get_next_batch_to_run` / `update_running_batch`, `schedule_policy.py` `PrefillAdder`,
`schedule_batch.py` `retract_decode`).

Prefill first: whenever waiting requests can be admitted, the iteration is a prefill batch of
them and the running decodes wait a step (mixed chunks are off by default); otherwise one
decode step of the running batch.
- A prefill batch takes the prompt part-way through chunked prefill first, then waiting
  requests in arrival order (the default `fcfs` policy) while the running set is under
  `max_running_requests`, the batch's prompt tokens under `max_prefill_tokens` (a longer
  prompt runs alone) and, with chunked prefill, under `chunked_prefill_size`: the request
  that does not fit whole is cut to the room left and finishes in later batches, one such
  request at a time.
- Admission is by estimate: a request is admitted only if its prompt plus its output tokens
  (at most 4096) fit in the free KV memory less the tokens the running requests are still
  expected to make, their remaining tokens times the new-token ratio. The ratio starts at
  0.7, falls by (0.7 − 0.098) / 600 each decode step to 0.098, and is raised after a retraction.
- A decode step whose tokens' KV cache does not fit retracts running requests, the one with
  the fewest output tokens first (ties: the longest prompt); they wait at the tail of the
  queue and recompute. The ratio becomes (tokens decoded + 20 per running request) / their
  output tokens, at most 1.

Defaults (`server_args.py`): chunked prefill on; `chunked_prefill_size` 2048 below 35 GiB of
GPU memory, 8192 below 160 GiB, else 16384; `max_prefill_tokens` 16384; `max_running_requests`
the KV capacity in tokens / context length x 512, clamped to 2048..4096 and at most half the
capacity (`model_runner.py`).

The radix cache (on unless `--disable-radix-cache`; `mem_cache/radix_cache.py`): a waiting
request's prefix is matched in the tree when the prefill batch is formed (`match_prefix`, any
token: page size 1); only the rest counts against `max_prefill_tokens` and the chunk (its
`extend_input_len`) and against the memory estimate, through `cached_prefix`; unreferenced
nodes are evicted least recently used first (`gimletc.sim.kv.PrefixCache`). Not modelled: the
`lpm` order (longest prefix first; the default is `fcfs`) and a retracted request finding its
own prefix still cached (it recomputes in full).
"""

from __future__ import annotations

from gimletc.hardware.schema import Chip
from gimletc.models import Model
from gimletc.sim.batching import BatchParams, DecodeStep, Step
from gimletc.sim.config import EngineConfig
from gimletc.sim.policies.continuous import ContinuousPolicy
from gimletc.sim.state import Engine, Job, ModelQueue

__all__ = ["SGLangPolicy"]

GIB = 1 << 30
CLIP = 4096  # SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION
INIT_RATIO = 0.7  # SGLANG_INIT_NEW_TOKEN_RATIO (x schedule_conservativeness 1.0)
MIN_RATIO = INIT_RATIO * 0.14  # SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR
DECAY = (INIT_RATIO - MIN_RATIO) / 600  # SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS
RETRACT_STEPS = 20  # SGLANG_RETRACT_DECODE_STEPS


class SGLangPolicy(ContinuousPolicy):
    name = "sglang"
    prefix_cache = "sglang"
    grows_kv = True
    resume_front = False
    whole_prompts_only = False  # a prompt longer than max_prefill_tokens runs alone

    @classmethod
    def resolve(cls, config: EngineConfig, model: Model, chip: Chip, kv_tokens: float) -> BatchParams:
        chunked = True if config.chunked_prefill is None else config.chunked_prefill
        mem = chip.capacity_bytes
        chunk = config.chunk_tokens or (2048 if mem < 35 * GIB else 8192 if mem < 160 * GIB else 16384)
        context = model.max_context or 4096
        cap = config.max_batch
        if cap is None:
            cap = max(1, min(min(max(int(kv_tokens / context * 512), 2048), 4096), int(kv_tokens // 2)))
        return BatchParams(cap, config.max_prefill_tokens or 16384, chunked, chunk)

    def setup(self, eng: Engine, mq: ModelQueue) -> None:
        super().setup(eng, mq)
        mq.state.ratio = INIT_RATIO

    def cached_prefix(self, job: Job) -> int:
        """Prompt tokens of a waiting `job` already in the radix cache (`probe` looked them up)."""
        return job.done if not job.adm else 0

    def expected(self, mq: ModelQueue, ratio: float) -> float:
        """KV bytes the running requests are still expected to add."""
        return ratio * mq.g * min(mq.out_sum - mq.ctx_sum, CLIP * mq.B)

    def need(self, mq: ModelQueue, job: Job) -> float:
        """KV bytes `job` is admitted against: its prompt and its output tokens (at most 4096)."""
        return job.kv + mq.g * min(job.out, CLIP) * job.seqs

    def next_batch(self, eng: Engine) -> Step | None:
        mqs = eng.mqs
        k = len(mqs)
        for j in range(k):
            mq = mqs[(eng.rr + j) % k]
            if not (mq.B or mq.wait or mq.pq):
                continue
            p = mq.params
            self.join_decodes(eng, mq)
            parts: list[tuple[Job, int]] = []
            rem_input = p.max_tokens
            rem_chunk = p.chunk_tokens if p.chunked else None
            for job in self.partials(mq):
                n = self.portion(mq, job, 1 << 62, rem_chunk or 0)
                if n <= 0:
                    break
                parts.append((job, n))
                rem_input -= n
                if rem_chunk is not None:
                    rem_chunk -= n
            room = self.kv.room(eng) - self.expected(mq, mq.state.ratio)
            for job in mq.pq:
                if job.adm:
                    continue
                if rem_input <= 0 or (rem_chunk is not None and rem_chunk <= 0) or not self.room_for(mq, job):
                    break
                self.probe(eng, mq, job)
                need = self.need(mq, job)
                if need >= room:
                    break
                left = job.tokens * job.seqs - self.cached_prefix(job)
                # Within max_prefill_tokens, except a prompt alone; within the chunk size when chunking.
                n = self.portion(mq, job, rem_input if parts else max(rem_input, left), rem_chunk or 0)
                if n <= 0 or not self.admit_prompt(eng, mq, job):
                    break
                parts.append((job, n))
                rem_input -= n
                if rem_chunk is not None:
                    rem_chunk -= n
                room -= need
                if n < left:  # cut: it finishes in later prefill batches, the one chunked request
                    mq.state.partial.append(job)
                    break
            if parts:
                return self.batch(eng, j, mq, parts, decode=False)
            if mq.B:
                if self.make_room(eng, mq):
                    decoded = mq.ctx_sum - mq.base_sum
                    total = mq.out_sum - mq.base_sum
                    mq.state.ratio = min(1.0, (decoded + RETRACT_STEPS * mq.B) / total) if total > 0 else 1.0
                if mq.B:
                    return DecodeStep(j)
        return None

    def victim(self, mq: ModelQueue) -> tuple[int, int, Job]:
        """The running request with the fewest output tokens; ties: the longest prompt."""
        return min(mq.run, key=lambda e: (e[2].tokens - (e[0] - mq.iters), -e[2].ctx, e[1]))

    def decoded(self, eng: Engine, mq: ModelQueue, k: int) -> None:
        mq.state.ratio = max(MIN_RATIO, mq.state.ratio - k * DECAY)

    def waiting(self, eng: Engine) -> bool:
        for mq in eng.mqs:
            if (mq.wait and self.decode_ready(eng, mq)) or (mq.state.partial and self.partials(mq)):
                return True
            if not mq.pq or (mq.active >= mq.params.max_batch and mq.active):
                continue
            job = self.fresh(mq)
            if job is not None:
                self.probe(eng, mq, job)
            # Admissible at the lowest ratio the run could reach (the room only shrinks as tokens are made).
            if job is not None and self.room_for(mq, job) and \
                    self.need(mq, job) < self.kv.room(eng) - self.expected(mq, MIN_RATIO):
                return True
        return False
