"""Predicted time of one agent- or model-level op on a chip (the cost model, per op).

- `model.prefill`: one prefill step of the prompt (`gimletc.cost.estimate`).
- `model.decode`: `tokens` decode steps; step time is linear in context, so
  the step at the middle context times `tokens` is the sum.
- `agent.tool` / `agent.code`: the user's `cpu_s` (CPU seconds on one core)
  or `latency_s` (wall time, e.g. a remote API).
- `agent.retrieve`: an exact scan of the index (index_docs x embed_dim
  2-byte vectors, memory-bound) plus fetching k documents.
- `agent.input` / `agent.output` / `agent.yield`: free.
"""

from __future__ import annotations

from gimletc.cost.roofline import estimate_workload
from gimletc.errors import EstimateError
from gimletc.hardware.schema import Chip
from gimletc.ir import Op
from gimletc.models import Model, get_model, step_workload

DEFAULT_EMBED_DIM = 768  # a common sentence-embedding width (e.g. all-mpnet-base-v2)
VECTOR_BYTES = 2  # fp16 vectors


def _phase_seconds(model: str, chip: Chip, phase: str, tokens: int, ctx: int, chips: int, stack: str) -> float:
    m = get_model(model)
    return estimate_workload(m, chip, step_workload(m, phase, 1, tokens, ctx, stack), chips, check_fit=False).latency_s


def model_of(op: Op) -> Model:
    return get_model(str(op.attr("model")))


def op_seconds(op: Op, chip: Chip, chips: int = 1, stack: str = "reference") -> float:
    """Predicted seconds of `op` on `chips` chips of `chip` (one execution, no loop scaling)."""
    k = op.kind
    if k == "model.prefill":
        return _phase_seconds(str(op.attr("model")), chip, "prefill", int(op.attr("tokens")), int(op.attr("ctx", 0)), chips, stack)
    if k == "model.decode":
        n = int(op.attr("tokens"))
        if n == 0:
            return 0.0
        mid = int(op.attr("ctx")) + n // 2
        return n * _phase_seconds(str(op.attr("model")), chip, "decode", 1, mid, chips, stack)
    if k in ("agent.tool", "agent.code"):
        return float(op.attr("cpu_s", op.attr("latency_s", 0.0)))
    if k == "agent.retrieve":
        dim = int(op.attr("embed_dim", DEFAULT_EMBED_DIM))
        scan = int(op.attr("index_docs")) * dim * VECTOR_BYTES
        fetch = int(op.attr("k")) * int(op.attr("doc_tokens")) * 4
        bw = (chip.memory_bw or chip.sram_bw) * chip.efficiency.memory * chips
        return (scan + fetch) / bw
    if k in ("agent.input", "agent.output", "agent.yield"):
        return 0.0
    if k == "agent.llm":
        raise EstimateError(f"op {op.name}: agent.llm must be expanded (run expand-llm) before it is priced")
    raise EstimateError(f"op {op.name}: no cost model for op kind {k}")


def op_memory(op: Op) -> tuple[str | None, float, float]:
    """(model name or None, weight bytes, KV + activation bytes) `op` needs resident while it runs."""
    if op.kind not in ("model.prefill", "model.decode"):
        return None, 0.0, 0.0
    m = model_of(op)
    if op.kind == "model.prefill":
        tokens = int(op.attr("tokens")) + int(op.attr("ctx", 0))
        return m.name, m.weight_bytes, m.kv_cache_bytes(tokens) + m.activation_bytes(1, int(op.attr("tokens")))
    tokens = int(op.attr("ctx")) + int(op.attr("tokens"))
    return m.name, m.weight_bytes, m.kv_cache_bytes(tokens) + m.activation_bytes(1, 1)

