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
from gimletc.models.workload import restrict

DEFAULT_EMBED_DIM = 768  # a common sentence-embedding width (e.g. all-mpnet-base-v2)
VECTOR_BYTES = 2  # fp16 vectors


def _seconds(model: str, chip: Chip, phase: str, batch: int, tokens: int, ctx: int, chips: int, stack: str,
             layers: tuple[int, int] | None = None, block: str | None = None) -> float:
    m = get_model(model)
    work = step_workload(m, phase, batch, tokens, ctx, stack)
    if layers is not None or block is not None:
        a, b = layers if layers is not None else (0, m.layers)
        work = restrict(work, m, int(a), int(b), block)
    return estimate_workload(m, chip, work, chips, check_fit=False).latency_s


def model_of(op: Op) -> Model:
    return get_model(str(op.attr("model")))


def op_seconds(op: Op, chip: Chip, chips: int = 1, stack: str = "reference") -> float:
    """Predicted seconds of `op` on `chips` chips of `chip` (one execution, no loop scaling)."""
    k = op.kind
    batch = int(op.attr("batch", 1))
    layers = op.attr("layers")
    if k == "model.prefill":
        return _seconds(str(op.attr("model")), chip, "prefill", batch, int(op.attr("tokens")), int(op.attr("ctx", 0)),
                        chips, stack, layers)
    if k == "model.decode":
        n = int(op.attr("tokens"))
        if n == 0:
            return 0.0
        mid = int(op.attr("ctx")) + n // 2
        return n * _seconds(str(op.attr("model")), chip, "decode", batch, 1, mid, chips, stack, layers)
    if k in ("model.attention", "model.ffn"):
        block = "attention" if k == "model.attention" else "ffn"
        return _seconds(str(op.attr("model")), chip, "decode", batch, 1, int(op.attr("ctx")), chips, stack, layers, block)
    if k == "model.draft":
        step = _seconds(str(op.attr("model")), chip, "decode", batch, 1, int(op.attr("ctx")), chips, stack)
        return int(op.attr("draft_k")) * step
    if k == "model.verify":
        return _seconds(str(op.attr("model")), chip, "verify", batch, int(op.attr("tokens")), int(op.attr("ctx")),
                        chips, stack)
    if k == "model.kv_rollback":
        return 0.0  # a paged cache drops rejected entries by moving its length
    if k in ("agent.tool", "agent.code"):
        return float(op.attr("cpu_s", op.attr("latency_s", 0.0)))
    if k == "agent.retrieve":
        dim = int(op.attr("embed_dim", DEFAULT_EMBED_DIM))
        scan = int(op.attr("index_docs")) * dim * VECTOR_BYTES
        fetch = int(op.attr("k")) * int(op.attr("doc_tokens")) * 4
        bw = chip.stream_bw * chip.efficiency.memory * chips
        return (scan + fetch) / bw
    if k in ("agent.input", "agent.output", "agent.yield"):
        return 0.0
    if k == "agent.llm":
        raise EstimateError(f"op {op.name}: agent.llm must be expanded (run expand-llm) before it is priced")
    raise EstimateError(f"op {op.name}: no cost model for op kind {k}")


def op_memory(op: Op) -> tuple[str | None, float, float]:
    """(weights key or None, weight bytes, KV + activation bytes) `op` needs resident while it runs.

    The key names what the weights are (a model, or a model's layer range or block), so that ops sharing
    them on one device count them once."""
    if not op.kind.startswith("model.") or op.kind == "model.kv_rollback":
        return None, 0.0, 0.0
    m = model_of(op)
    batch = int(op.attr("batch", 1))
    layers = op.attr("layers")
    a, b = (int(layers[0]), int(layers[1])) if layers is not None else (0, m.layers)
    block = {"model.attention": "attention", "model.ffn": "ffn"}.get(op.kind)
    if op.kind == "model.prefill":
        tokens = int(op.attr("tokens")) + int(op.attr("ctx", 0))
        act = m.activation_bytes(batch, int(op.attr("tokens")))
    elif op.kind == "model.decode":
        tokens = int(op.attr("ctx")) + int(op.attr("tokens"))
        act = m.activation_bytes(batch, 1)
    else:
        tokens = int(op.attr("ctx")) * 2  # the context at the end of decoding (ctx is the middle)
        act = m.activation_bytes(batch, int(op.attr("tokens", op.attr("draft_k", 1))))
    if layers is None and block is None:
        return m.name, m.weight_bytes, m.kv_cache_bytes(tokens, batch) + act
    key = f"{m.name}[{a}:{b}]" + (f"/{block}" if block else "")
    weights = m.stage_weight_bytes(a, b, block)
    # The attention side holds the KV cache of every layer it serves; the FFN side holds none.
    kv = 0.0 if block == "ffn" else m.stage_kv_cache_bytes(a, b, tokens, batch)
    return key, weights, kv + act
