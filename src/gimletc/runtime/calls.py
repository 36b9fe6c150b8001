"""The LLM calls of a request, as the interpreter keeps them: prompts, the tokens each device op
chose, and what a device needs to know about the call to run its next op.

Devices choose tokens (greedy, or the target's tokens in speculative decoding) and hand them back
in their `Outcome`; the call book records them in order, so the decode loop knows when a call has
all its tokens and the report can compare them with the unsplit model.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from gimletc.ir import Op
from gimletc.ir.names import decode_name
from gimletc.runtime.device import Outcome
from gimletc.runtime.kv import KVCache
from gimletc.runtime.loader import LoadedPlan
from gimletc.runtime.values import Activations, Remote, RunError

__all__ = ["Call", "CallBook"]


@dataclass
class Call:
    """One LLM call as it runs: its sequences' prompts, generated tokens and the logits rows that chose them."""

    model: str
    batch: int
    prompts: np.ndarray  # [batch, prompt tokens]
    tokens: list[list[int]]
    rows: list[list[np.ndarray]]
    target: int  # tokens the call should generate
    speculative: dict[str, Any] | None = None

    def emit(self, offset: int, tokens: np.ndarray, rows: np.ndarray) -> None:
        """Record tokens for sequences offset.. with the logits rows ([n, vocab]) that chose them."""
        for i, (t, r) in enumerate(zip(tokens, rows, strict=True)):
            self.tokens[offset + i].append(int(t))
            self.rows[offset + i].append(np.array(r, copy=True))

    @property
    def generated(self) -> int:
        return min(len(t) for t in self.tokens)

    def output(self) -> np.ndarray:
        out = np.array([t[: self.target] for t in self.tokens], dtype=np.int64)
        return out[0] if self.batch == 1 else out


class CallBook:
    """Every LLM call of one request: made by its prefill, fed by each op's outcome."""

    def __init__(self, loaded: LoadedPlan) -> None:
        self.loaded = loaded
        self.calls: dict[str, Call] = {}
        self.lock = threading.Lock()

    def call(self, llm: str) -> Call:
        c = self.calls.get(llm)
        if c is None:
            raise RunError(f"LLM call {llm}: a decode step ran before its prefill")
        return c

    def whole_decode(self, op: Op) -> bool:
        import re

        part = self.loaded.partitions.get(op.name)
        return part is not None and part.is_whole and op.attr("stage") is None and not re.search(r"\.decode\.s\d+$", op.name)

    def target_tokens(self, llm: str) -> int:
        ops = self.loaded.ops
        loop = ops.get(decode_name(llm))
        if loop is not None and loop.kind == "agent.loop":
            return int(loop.attr("max"))
        dec = [op for op in ops.values() if op.kind == "exec.compute" and op.attr("kind_of") == "model.decode"
               and op.attr("llm") == llm and op.attr("tokens") is not None]
        return max([int(op.attr("tokens")) for op in dec] or [1])

    @staticmethod
    def prompts(op: Op, data: list[Any], vocab: int) -> np.ndarray:
        """[batch, tokens] prompt ids: the operands' ids, after the call's fixed system-prompt ids up to
        `tokens`; sequence i of a batch shifts every id by i (mod vocab), so sequences differ."""
        pieces = []
        for x in data:
            if isinstance(x, KVCache | Activations | Remote):
                continue
            try:
                pieces.append(np.asarray(x, dtype=np.int64).reshape(-1))
            except (TypeError, ValueError):
                raise RunError(f"op {op.name}: an operand is not token ids ({type(x).__name__})") from None
        ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        want = int(op.attr("tokens", len(ids)))
        if len(ids) < want:
            rng = np.random.default_rng(zlib.crc32(str(op.attr("llm") or op.name).encode()))
            ids = np.concatenate([rng.integers(0, vocab, size=want - len(ids), dtype=np.int64), ids])
        batch = int(op.attr("batch", 1))
        return np.stack([(ids + i) % vocab for i in range(batch)])

    @staticmethod
    def draft_k(op: Op) -> int:
        if op.attr("draft_k") is not None:
            return int(op.attr("draft_k"))
        out = [v for v in op.results if v.type.kind == "tokens"]
        return int(out[0].type.size) if out else 4

    def context(self, op: Op, data: list[Any]) -> dict[str, Any]:
        """What the device needs besides the op's inputs to run model op `op` now (makes the call at its prefill)."""
        kind = str(op.attr("kind_of"))
        llm = str(op.attr("llm") or op.attr("of"))
        kv = next((x for x in data if isinstance(x, KVCache) or (isinstance(x, Remote) and x.kind == "kv")), None)
        ctx: dict[str, Any] = {"kv_key": id(kv) if kv is not None else None}
        if kind == "model.prefill":
            part = self.loaded.partitions.get(op.name)
            if part is None:
                return ctx
            draft_prefill = str(op.attr("of", "")).endswith(".draft_prefill")
            if part.has_embed:
                model = next(a["model"] for a in self.loaded.by_op[op.name] if a.get("role") != "draft")
                ids = ctx["prompts"] = self.prompts(op, data, self.loaded.reference_for(str(model), op).model.vocab)
                if not draft_prefill:
                    with self.lock:
                        self.calls[llm] = Call(str(model), ids.shape[0], ids, [[] for _ in ids], [[] for _ in ids],
                                               self.target_tokens(llm))
            if not draft_prefill and llm in self.calls:
                ctx["call_prompts"] = self.calls[llm].prompts
        elif kind == "model.decode" and self.whole_decode(op):
            ctx["whole_decode"] = True
            ctx["batch"] = self.call(llm).batch
        elif kind in ("model.decode", "model.attention", "model.ffn"):
            ctx["rows"] = self.loaded.rows.get(op.name, (0, self.call(str(op.attr("llm"))).batch))
        elif kind == "model.draft":
            ctx["draft_k"] = self.draft_k(op)
        elif kind == "model.verify":
            self.call(str(op.attr("llm")))
        return ctx

    def record(self, op: Op, out: Outcome) -> dict[str, Any]:
        """Record the tokens `out` chose; returns the op's result values (a whole decode's: the call's output)."""
        with self.lock:
            for e in out.emits:
                self.call(e.llm).emit(e.offset, e.tokens, e.rows)
            values = dict(out.values)
            if out.speculative is not None:
                llm = str(op.attr("llm") or op.attr("of"))
                call = self.call(llm)
                s = out.speculative
                if "draft" in s:  # a whole speculative decode: its own totals
                    call.speculative = dict(s)
                else:  # one verify step: add to the call's totals
                    spec = call.speculative or {"drafted": 0, "accepted": 0, "target_steps": 0, "draft_k": s["draft_k"]}
                    for k in ("drafted", "accepted", "target_steps"):
                        spec[k] += s[k]
                    spec["acceptance"] = spec["accepted"] / spec["drafted"] if spec["drafted"] else 0.0
                    call.speculative = spec
            if op.attr("kind_of") == "model.decode" and self.whole_decode(op):
                outs = [v for v in op.results if v.type.kind != "token"]
                llm = str(op.attr("llm") or op.attr("of"))
                if outs:
                    values[outs[0].name] = self.call(llm).output()
        return values
