"""The batching-policy interface: what an engine's next iteration runs.

The engine (`gimletc.sim.engines`) asks its policy for the next batch whenever it is free
and holds its devices; the policy admits waiting work under its caps and the KV memory
(`gimletc.sim.kv`) and names the batch; the engine prices it with the cost model, runs it
and, when it ends, moves its jobs on. A new policy is a new `BatchPolicy` subclass in
`gimletc.sim.policies` (the engines' policies and today's prefill-first one live there).

A batch is one of three steps:
- `PrefillStep`: whole prompts only, priced as one prefill of that many sequences at
  their mean length (layer-streamed prompts finish piece by piece within it);
- `DecodeStep`: one decode iteration of a model's running batch, or, with nothing that
  could change it, the run of them up to the next finishing sequence (`decode_runs`);
- `MixedStep`: prompt chunks, with the running decodes unless `decode` is off.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from gimletc.hardware.schema import Chip
from gimletc.models import Model
from gimletc.sim.config import EngineConfig
from gimletc.sim.kv import KVMemory
from gimletc.sim.state import Engine, Job, ModelQueue

__all__ = ["BatchParams", "BatchPolicy", "DecodeStep", "MixedStep", "PrefillStep", "Step"]


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
    """Prompt chunks of one model, (job, its tokens this iteration) in `parts`, `tokens` of them
    in all, after `chunk_ctx` cached tokens; with the model's running decodes (one token each)
    unless `decode` is False. `seqs`: the prompt sequences the chunks belong to, when the
    policy prices them as that many sequences (0: as one sequence of `tokens`, as prefill-first does)."""

    mq: ModelQueue
    parts: list[tuple[Job, int]]
    tokens: int
    chunk_ctx: int
    decode: bool = True
    seqs: int = 0


Step = PrefillStep | DecodeStep | MixedStep


@dataclass(frozen=True)
class BatchParams:
    """A policy's knobs for one model on one engine, defaults resolved as its engine resolves them.

    `max_batch`: the running-set cap in sequences (prefill-first: the decode batch);
    `max_tokens`: the per-iteration token budget (prefill-first and SGLang: prompt tokens
    per prefill batch); `chunked`: whether prompts are split across iterations;
    `chunk_tokens`: the chunk size where the engine has one (SGLang: the prompt tokens of one
    prefill batch; prefill-first: the tokens of a mixed iteration); 0 for vLLM and
    TensorRT-LLM, whose chunks are what the token budget leaves (a chunk size asked for caps
    `max_tokens` instead)."""

    max_batch: int
    max_tokens: int
    chunked: bool
    chunk_tokens: int

    def to_dict(self) -> dict:
        return {"max_batch": self.max_batch, "max_prefill_tokens": self.max_tokens,
                "chunked_prefill": self.chunked, "chunk_tokens": self.chunk_tokens}


class BatchPolicy(ABC):
    """Decides each iteration of an engine; the engine runs it (mechanism apart from policy)."""

    name: ClassVar[str]
    # Whether KV caches grow as tokens are made (reserved per decoded token, so a policy may have
    # to preempt), or are reserved whole, output included, when a request is admitted.
    grows_kv: ClassVar[bool] = False
    # The engine whose prefix cache it runs (`gimletc.models.workload.PREFIX_BLOCK`), None: it has none.
    prefix_cache: ClassVar[str | None] = None

    def __init__(self, config: EngineConfig, kv: KVMemory):
        self.ec = config
        self.kv = kv
        self._seq = itertools.count(1)  # orders sequences that finish in the same iteration
        self._adm = itertools.count(1)  # orders admissions (whom to preempt)

    @classmethod
    @abstractmethod
    def resolve(cls, config: EngineConfig, model: Model, chip: Chip, kv_tokens: float) -> BatchParams:
        """The knobs `config` leaves unset, as the engine would set them for `model` on `chip`
        with room for `kv_tokens` tokens of KV cache."""

    def setup(self, eng: Engine, mq: ModelQueue) -> None:
        """Resolve the policy's knobs for one model on one engine (before any request arrives)."""
        cost = mq.cost
        kv_tokens = self.kv.room(eng) / max(cost.kv_bytes(1, 1), 1e-30)
        mq.params = self.resolve(self.ec, cost.model, eng.spec.chip, kv_tokens)
        if self.grows_kv:
            # Bytes a sequence adds per token once past any sliding window (windowed layers stop growing).
            w = cost.model.sliding_window.window if cost.model.sliding_window else 0
            mq.g = cost.kv_bytes(w + 2, 1) - cost.kv_bytes(w + 1, 1)

    @abstractmethod
    def next_batch(self, eng: Engine) -> Step | None:
        """The engine's next iteration, with its jobs admitted (KV reserved); None when it has none."""

    @abstractmethod
    def waiting(self, eng: Engine) -> bool:
        """Whether work waits that could change the engine's next iterations; while none does and
        nobody waits for its devices, the engine runs its decode batch to the next finish as one event."""

    def decode_limit(self, eng: Engine, mqs: list[ModelQueue]) -> int | None:
        """The most decode cycles (each model of `mqs` one iteration) the policy lets run before it
        must look again (KV growth); None for no limit."""
        return None

    def decoded(self, eng: Engine, mq: ModelQueue, k: int) -> None:
        """`k` decode iterations of `mq` are over (a policy that adapts per step hears it here)."""
