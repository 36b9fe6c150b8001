"""TensorRT-LLM's in-flight batching (TensorRT-LLM 1.0, PyTorch backend:
`tensorrt_llm/_torch/pyexecutor/scheduler.py`, the C++ `CapacityScheduler` and
`MicroBatchScheduler` it binds).

- Capacity, `GUARANTEED_NO_EVICT` (the default policy): a new request starts only if the KV
  cache can hold it to completion, prompt and output, next to what the started requests will
  still need; a started request is never paused (so nothing is preempted). Started requests
  are at most `max_batch_size`.
- Micro-batch: generation requests first, one token each, then context (prompt) requests in
  order, all in one forward pass, while the batch stays within `max_batch_size` requests and
  `max_num_tokens` tokens. Without chunked context a prompt goes whole or waits; with it
  (`FIRST_COME_FIRST_SERVED`), prompts are cut to the room left in multiples of the chunk
  unit (the KV block, `tokens_per_block`), the last chunk of a prompt any size.

Defaults (`tensorrt_llm/llmapi/llm_args.py`): `max_batch_size` 2048, `max_num_tokens` 8192,
chunked prefill off, `tokens_per_block` 32. TensorRT-LLM has no chunk size apart from the token
budget: a chunk size given (`--chunk-tokens`) caps `max_num_tokens` when chunking.
`MAX_UTILIZATION` (admit greedily, pause under KV pressure) is not modelled. KV block reuse
(`enable_block_reuse`, on by default): a new request reuses the cached blocks its prompt starts
with, whole 32-token blocks, and computes and reserves only the rest (`gimletc.sim.kv.PrefixCache`).
"""

from __future__ import annotations

from gimletc.hardware.schema import Chip
from gimletc.models import Model
from gimletc.sim.batching import BatchParams, DecodeStep, Step
from gimletc.sim.config import EngineConfig, SimulationError
from gimletc.sim.policies.continuous import ContinuousPolicy
from gimletc.sim.state import Engine, Job, ModelQueue

__all__ = ["TRTLLMPolicy"]

CHUNK_UNIT = 32  # tokens_per_block, the default KV block: context chunks are multiples of it


class TRTLLMPolicy(ContinuousPolicy):
    name = "trtllm"
    prefix_cache = "trtllm"
    grows_kv = False  # guaranteed no evict: a request's whole cache is reserved when it starts

    @classmethod
    def resolve(cls, config: EngineConfig, model: Model, chip: Chip, kv_tokens: float) -> BatchParams:
        chunked = bool(config.chunked_prefill)
        budget = config.max_prefill_tokens or 8192
        if chunked and config.chunk_tokens:  # the chunk size: what one iteration's context tokens may be
            budget = min(budget, config.chunk_tokens)
        cap = config.max_batch if config.max_batch is not None else 2048
        if cap > budget:
            raise SimulationError(f"trtllm: max_batch {cap} is above the token budget {budget} (max_prefill_tokens, "
                                  "or chunk_tokens with chunked prefill); every running sequence's token must fit "
                                  "an iteration")
        if chunked and budget < CHUNK_UNIT:
            raise SimulationError(f"trtllm: a chunked iteration of {budget} tokens is below the {CHUNK_UNIT}-token "
                                  "KV block its context chunks are made of")
        return BatchParams(cap, budget, chunked, 0)

    def take(self, mq: ModelQueue, job: Job, budget: int) -> int:
        return self.portion(mq, job, budget)

    def chunk(self, mq: ModelQueue, room: int) -> int:
        """Chunks are whole multiples of the chunk unit (the KV block); the last chunk of a prompt any size."""
        return room // CHUNK_UNIT * CHUNK_UNIT

    def next_batch(self, eng: Engine) -> Step | None:
        mqs = eng.mqs
        k = len(mqs)
        for j in range(k):
            mq = mqs[(eng.rr + j) % k]
            if not (mq.B or mq.wait or mq.pq):
                continue
            self.join_decodes(eng, mq)
            budget = mq.params.max_tokens - mq.B
            parts: list[tuple[Job, int]] = []
            for job in self.partials(mq):
                n = self.take(mq, job, budget)
                if n <= 0:
                    break
                parts.append((job, n))
                budget -= n
            for job in mq.pq:
                if budget <= 0:
                    break
                if job.adm:
                    continue
                self.probe(eng, mq, job)
                n = self.take(mq, job, budget)
                if n <= 0 or not self.room_for(mq, job) or not self.admit_prompt(eng, mq, job):
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
