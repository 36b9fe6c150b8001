"""vLLM's V1 scheduler (vLLM 0.11, `vllm/v1/core/sched/scheduler.py`, `Scheduler.schedule`).

Each iteration has no prefill or decode phase: it gives tokens to requests until the token
budget (`max_num_batched_tokens`) is spent:
1. running requests first, in admission order: a decoding request one token, a prompt
   part-way through chunked prefill its next chunk. When the next tokens' KV cache does not
   fit, the last admitted running request is preempted (its cache freed; it waits at the head
   of the queue and recomputes);
2. then, only if nobody was preempted, waiting requests in arrival order while the running set
   is under `max_num_seqs` and the budget lasts: a prompt whole, or, with chunked prefill, as
   much as the budget (and the threshold) allows; it stops at the first that does not fit (the
   budget without chunked prefill, or its prompt's KV cache).
Decode and prompt tokens share one forward pass (a mixed iteration).

Automatic prefix caching (on by default in V1, `enable_prefix_caching`): a waiting request's
computed tokens are looked up in the cache when it is scheduled (`get_computed_blocks`), whole
16-token blocks, never the prompt's last token; only the rest counts against the token budget
and needs new KV blocks (`gimletc.sim.kv.PrefixCache`).

Defaults (`vllm/engine/arg_utils.py`, `EngineArgs._set_default_args`, OpenAI server):
chunked prefill on; `max_num_batched_tokens` 8192 on GPUs with at least 70 GiB that are not
A100s, else 2048, and `max_model_len` without chunked prefill; `max_num_seqs` 1024 on those
GPUs, else 256, and never above the token budget. vLLM has no chunk size apart from the
budget (a prompt's chunk is what the budget leaves; `long_prefill_token_threshold` is left
unset, its default): a chunk size given (`--chunk-tokens`) caps the budget, as setting
`max_num_batched_tokens` to it would. A running set wider than the budget is an error, as
vLLM's config check makes it.
"""

from __future__ import annotations

from gimletc.hardware.schema import Chip
from gimletc.models import Model
from gimletc.sim.batching import BatchParams, DecodeStep, Step
from gimletc.sim.config import EngineConfig, SimulationError
from gimletc.sim.policies.continuous import ContinuousPolicy
from gimletc.sim.state import Engine, Job, ModelQueue

__all__ = ["VLLMPolicy"]

GIB = 1 << 30


class VLLMPolicy(ContinuousPolicy):
    name = "vllm"
    prefix_cache = "vllm"
    grows_kv = True

    @classmethod
    def resolve(cls, config: EngineConfig, model: Model, chip: Chip, kv_tokens: float) -> BatchParams:
        big = chip.capacity_bytes >= 70 * GIB and "a100" not in chip.name.lower()
        chunked = True if config.chunked_prefill is None else config.chunked_prefill
        budget = config.max_prefill_tokens
        if budget is None:
            budget = (8192 if big else 2048) if chunked else (model.max_context or 8192)
        if chunked and config.chunk_tokens:  # the chunk size: a prompt's chunk is what the budget leaves
            budget = min(budget, config.chunk_tokens)
        cap = config.max_batch if config.max_batch is not None else min(1024 if big else 256, budget)
        if cap > budget:
            raise SimulationError(f"vllm: max_batch {cap} is above the token budget {budget} (max_prefill_tokens, "
                                  "or chunk_tokens with chunked prefill); every running sequence's token must fit "
                                  "an iteration (vLLM requires max_num_batched_tokens >= max_num_seqs)")
        return BatchParams(cap, budget, chunked, 0)

    def take(self, mq: ModelQueue, job: Job, budget: int) -> int:
        """Prompt tokens `job` gets this iteration (0: it waits)."""
        return self.portion(mq, job, budget)

    def next_batch(self, eng: Engine) -> Step | None:
        mqs = eng.mqs
        k = len(mqs)
        for j in range(k):
            mq = mqs[(eng.rr + j) % k]
            if not (mq.B or mq.wait or mq.pq):
                continue
            if mq.wait:
                self.join_decodes(eng, mq, new_ok=False)  # requests whose prompts were admitted here
            # Room for the running decodes' next tokens (preempting if there is none).
            preempted = bool(mq.B) and not self.kv.fits(eng, mq.B * mq.g) and self.make_room(eng, mq)
            if mq.wait and not preempted:
                self.join_decodes(eng, mq)  # decodes whose caches came from elsewhere: new requests
            budget = mq.params.max_tokens - mq.B
            parts: list[tuple[Job, int]] = []
            if mq.state.partial:
                for job in self.partials(mq):
                    n = self.take(mq, job, budget)
                    if n <= 0:
                        break
                    parts.append((job, n))
                    budget -= n
            if not preempted and mq.pq and (mq.active < mq.params.max_batch or mq.active == 0):
                for job in mq.pq:
                    if budget <= 0:
                        break
                    if job.adm:
                        continue
                    self.probe(eng, mq, job)
                    n = self.take(mq, job, budget)
                    if n <= 0 or not self.room_for(mq, job) or not self.admit_prompt(eng, mq, job, mq.B * mq.g):
                        break
                    parts.append((job, n))
                    budget -= n
                    if n < job.tokens * job.seqs:
                        mq.state.partial.append(job)
            if parts:
                return self.batch(eng, j, mq, parts, decode=True)
            if mq.B:
                return DecodeStep(j)
        return None

    def waiting(self, eng: Engine) -> bool:
        for mq in eng.mqs:
            if (mq.wait and self.decode_ready(eng, mq)) or (mq.state.partial and self.partials(mq)):
                return True
            if not mq.pq or (mq.active >= mq.params.max_batch and mq.active):
                continue
            job = self.fresh(mq)
            if job is not None:
                self.probe(eng, mq, job)
            if job is None or not self.room_for(mq, job) or not self.kv.fits(eng, job.kv):
                continue
            if mq.params.chunked or job.tokens * job.seqs - job.done <= mq.params.max_tokens - mq.B:
                return True
        return False
