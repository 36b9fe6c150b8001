"""Model partitions as the runtime drives them: one step, and speculative decoding in one op.

A `ModelPart` wraps the executor of one partition with the names of the
step's token input, KV inputs and outputs, and logits, so callers deal in
token ids, per-layer KV arrays and boundary tensors. Speculative decoding
(for a whole decode given a draft at build time) drafts `k` tokens with
a draft model, checks them with one target step over all of them, keeps the
longest prefix the target agrees with plus the target's own next token, and
rolls both KV caches back to the tokens kept, so its output is exactly the
target's greedy output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gimletc.models.onnx import ImportedModel
from gimletc.targets.partition import Partition

__all__ = ["ModelPart", "SpecStats", "speculative_decode"]

KV = dict[int, tuple[np.ndarray, np.ndarray]]


@dataclass
class ModelPart:
    """One partition of an imported model, ready to run on a worker."""

    op: str
    model: ImportedModel
    partition: Partition
    run: Any  # OrtExecutor | IreeExecutor
    runner: str  # what runs it, for the report

    @property
    def kv_dtype(self) -> np.dtype:
        return np.dtype(np.float16) if self.model.model.kv_dtype == "fp16" else np.dtype(np.float32)

    def empty_past(self, layer: int, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
        m = self.model.model
        z = np.zeros((batch, m.kv_heads, 0, m.head_dim), dtype=self.kv_dtype)
        return z, z.copy()

    def step(self, ids: np.ndarray | None, past: KV, boundary: dict[str, np.ndarray]) -> tuple[KV, dict[str, np.ndarray], np.ndarray | None]:
        """Run the partition once: (present KV of its layers, tensors for later partitions, logits or None)."""
        im = self.model
        feeds: dict[str, np.ndarray] = {}
        for name in self.run.inputs:
            if name == im.token_input:
                if ids is None:
                    raise ValueError(f"{self.op}: partition {self.partition} reads the token ids but none were given")
                feeds[name] = ids.astype(np.int64, copy=False)
            elif name in boundary:
                feeds[name] = boundary[name]
        batch = ids.shape[0] if ids is not None else next(
            (t.shape[0] for t in [*(kv[0] for kv in past.values()), *boundary.values()] if t.ndim >= 3), 1)
        for b in im.kv:
            if b.past_key in self.run.inputs:
                k, v = past[b.layer] if b.layer in past else self.empty_past(b.layer, batch)
                feeds[b.past_key], feeds[b.past_value] = k, v
        out = self.run(feeds)
        present = {b.layer: (out[b.present_key], out[b.present_value]) for b in im.kv if b.present_key in out}
        step_outputs = {im.logits_output} | {n for b in im.kv for n in (b.present_key, b.present_value)}
        return present, {k: v for k, v in out.items() if k not in step_outputs}, out.get(im.logits_output)


@dataclass
class SpecStats:
    drafted: int = 0
    accepted: int = 0
    target_steps: int = 0
    rounds: list[int] = field(default_factory=list)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def _truncate(kv: KV, n: int) -> KV:
    return {i: (k[:, :, :n, :], v[:, :, :n, :]) for i, (k, v) in kv.items()}


def speculative_decode(target: ModelPart, draft: ModelPart, past: KV, history: np.ndarray, count: int, k: int) -> tuple[list[int], list[np.ndarray], SpecStats]:
    """Generate `count` tokens after `history` (prompt + the first token) with a draft proposing `k` per round.

    `past` is the target's KV of `history[:-1]`. Returns the generated tokens (after history's
    last), the target logits row that chose each, and the draft statistics."""
    seq = [int(t) for t in history]
    target_kv = past
    draft_kv: KV = {}
    draft_len = 0
    out: list[int] = []
    rows: list[np.ndarray] = []
    stats = SpecStats()
    while len(out) < count:
        want = count - len(out)
        k_eff = max(1, min(k, want))
        # The draft catches up on the tokens it has not seen, then proposes k_eff tokens.
        proposals: list[int] = []
        feed = seq[draft_len:]
        for _ in range(k_eff):
            present, _, logits = draft.step(np.array([feed], dtype=np.int64), draft_kv, {})
            assert logits is not None
            draft_kv = present
            proposals.append(int(np.argmax(logits[0, -1])))
            feed = [proposals[-1]]
        # One target step over the last token and every proposal.
        present, _, logits = target.step(np.array([[seq[-1], *proposals]], dtype=np.int64), target_kv, {})
        assert logits is not None
        stats.target_steps += 1
        greedy = [int(np.argmax(logits[0, i])) for i in range(k_eff + 1)]
        n = 0
        while n < k_eff and proposals[n] == greedy[n]:
            n += 1
        new = (proposals[:n] + [greedy[n]])[:want]
        stats.drafted += k_eff
        stats.accepted += min(n, want)
        stats.rounds.append(n)
        before = len(seq)
        rows.extend(logits[0, i] for i in range(len(new)))
        out.extend(new)
        seq.extend(new)
        target_kv = _truncate(present, before + n)  # last token + accepted proposals
        draft_len = before + min(n, k_eff - 1)
        draft_kv = _truncate(draft_kv, draft_len)
    return out, rows, stats
