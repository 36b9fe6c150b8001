"""The work of one forward step as a list of operators with FLOPs and bytes.

Every phase is "T new tokens per sequence on top of C tokens already cached":
prefill (T = prompt length), decode (T = 1) and verify (T = k draft tokens).
The cost model prices each operator on a chip; totals are the sums.

Counting conventions (each unit-tested against hand-computed values):
- A GEMM of M rows, inner size K and N columns costs 2·M·K·N FLOPs and moves
  its weights once plus its input and output activations.
- Attention over `keys` cached-or-new keys costs 2·(d_qk + d_v) FLOPs per
  (query, key) pair and head; causal masking counts only visible pairs:
  query i (1-based) of T sees min(W, C + i) keys.
- MoE layers read the weights of the experts the batch actually touches:
  E·(1 − (1 − k/E)^M) distinct experts for M tokens with uniform routing.
- The LM head runs on the positions whose logits are needed: the last one for
  prefill and decode, all T for verify.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from gimletc.dtypes import nbytes
from gimletc.errors import EstimateError
from gimletc.models.arch import Model

Phase = Literal["prefill", "decode", "verify", "mixed"]
PHASES: tuple[str, ...] = ("prefill", "decode", "verify")
OpKind = Literal["gemm", "attention", "elementwise", "embed"]


@dataclass(frozen=True, slots=True)
class Op:
    """One operator, repeated `count` times per step (once per layer of its kind)."""

    name: str
    kind: OpKind
    flops: float  # per instance
    weight_bytes: float = 0.0  # per instance
    act_bytes: float = 0.0  # activations read + written, per instance
    kv_bytes: float = 0.0  # KV cache read + written, per instance
    count: int = 1
    m: float = 0.0  # GEMM rows (tokens) per weight matrix; attention: query tokens per sequence
    parallel: float = 0.0  # attention: independent (sequence, query-head) pairs
    k: float = 0.0  # GEMM: inner size
    n: float = 0.0  # GEMM: output columns
    seqs: float = 0.0  # attention: sequences
    ctx: float = 0.0  # attention: tokens each sequence has cached before the step

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.act_bytes + self.kv_bytes


@dataclass(frozen=True)
class Workload:
    """All operators of one step of `phase` for `batch` sequences."""

    model: str
    phase: str
    batch: int
    tokens: int
    ctx: int
    layers: int
    ops: tuple[Op, ...] = field(default_factory=tuple)
    overhead_share: float = 1.0  # share of each layer's fixed cost this workload carries (1/2 for one block)
    stack: str = "reference"

    @property
    def flops(self) -> float:
        return sum(o.flops * o.count for o in self.ops)

    @property
    def bytes(self) -> float:
        return sum(o.bytes * o.count for o in self.ops)

    @property
    def weight_bytes(self) -> float:
        return sum(o.weight_bytes * o.count for o in self.ops)

    @property
    def kv_bytes(self) -> float:
        return sum(o.kv_bytes * o.count for o in self.ops)

    def by_kind(self, kind: str) -> tuple[Op, ...]:
        return tuple(o for o in self.ops if o.kind == kind)


@dataclass(frozen=True)
class ElementwiseBytes:
    """Bytes moved per activation element (2-byte activations) by the elementwise work of a layer."""

    norm: float  # one RMSNorm
    residual: float  # one residual add
    rope: float  # rotary embedding, per element of q and k
    act: float  # gated activation, per element of the FFN's intermediate width
    attn_out_copy: float  # making the attention output contiguous


# Software stacks. The engine stacks (vLLM, SGLang, TensorRT-LLM) are priced by kernels fitted to measured
# engine tables (gimletc.cost.engine); their elementwise work is fused and verification runs through
# the engine's paged attention (no masked path). "reference" is what the calibration measured: PyTorch without fusion (the Hugging Face
# Llama code path), decode and verify captured as CUDA graphs, verification through a masked attention
# path. "fused" is a serving engine (vLLM, TensorRT-LLM, SGLang): fused elementwise kernels, and
# multi-token verification through the same paged decode kernels as decode (no masked path). Its fixed
# overheads are still the reference stack's fitted ones (no measurement of a serving engine yet).
ENGINE_STACKS: tuple[str, ...] = ("vllm", "sglang", "trtllm")
STACKS: tuple[str, ...] = (*ENGINE_STACKS, "reference")
DEFAULT_STACK = "vllm"
# Deprecated names kept so old command lines work: `fused` was the cost model's idea of a serving
# engine before any engine was measured; vLLM is the closest measured engine stack.
STACK_ALIASES: dict[str, str] = {"fused": "vllm"}
MASKED_VERIFY: dict[str, bool] = {"reference": True, "fused": False, **{s: False for s in ENGINE_STACKS}}
# Every name a `--stack` option or `place{stack=...}` accepts (canonical names and deprecated aliases).
StackName = Literal["reference", "fused", "vllm", "sglang", "trtllm"]
assert get_args(StackName) == tuple(MASKED_VERIFY)


# Prefix caching: a serving engine reuses a cached prompt prefix in whole KV blocks, and always computes
# at least a prompt's last token (its logits start the answer). Block sizes by stack: vLLM 0.11's default
# `block_size` 16 (`vllm/config/cache.py`), SGLang's radix cache at its default `page_size` 1 (any
# token), TensorRT-LLM 1.0's `tokens_per_block` 32 with `enable_block_reuse` on (`llm_args.py`
# KvCacheConfig); the reference stack (PyTorch, `past_key_values` kept by the caller) any token.
PREFIX_BLOCK: dict[str, int] = {"vllm": 16, "sglang": 1, "trtllm": 32, "reference": 1}


def cached_prefix_tokens(prefix: int, prompt: int, block: int) -> int:
    """Tokens of a `prompt`-token prompt an engine takes from a cached `prefix`-token prefix: whole
    `block`s only, and never the prompt's last token."""
    usable = min(prefix, prompt - 1)
    return max(0, usable // block * block) if block > 1 else max(0, usable)


def resolve_stack(stack: str) -> str:
    """The canonical name of `stack` (deprecated aliases mapped); EstimateError naming the known ones."""
    s = STACK_ALIASES.get(stack, stack)
    if s not in STACKS:
        aliases = ", ".join(f"{a} (= {b}, deprecated)" for a, b in STACK_ALIASES.items())
        raise EstimateError(f"unknown stack {stack!r}; known: {', '.join(STACKS)}, {aliases}")
    return s

# "reference": PyTorch without fusion, as in the calibration measurements (the Hugging Face
# Llama code path): RMSNorm upcasts to fp32 and runs as seven kernels (to-fp32 r2 w4, pow r4 w4,
# mean r4, scale r4 w4, to-bf16 r4 w2, weight r2 w2: 36 bytes), rotary as five (q*cos r2 w2,
# neg r2 w2, cat r4 w4... about 20 bytes), silu then multiply (r2 w2 + r4 w2 = 10 bytes).
# "fused": one read and one write per tensor, as serving engines with fused kernels do.
ELEMENTWISE: dict[str, ElementwiseBytes] = {
    "reference": ElementwiseBytes(norm=36, residual=6, rope=20, act=10, attn_out_copy=4),
    "fused": ElementwiseBytes(norm=4, residual=6, rope=4, act=6, attn_out_copy=0),
}
ELEMENTWISE.update({s: ELEMENTWISE["fused"] for s in ENGINE_STACKS})


def visible_keys(tokens: int, ctx: int, window: int | None) -> float:
    """Σ over the T new queries of the keys each sees (causal, optionally windowed)."""
    t, c = tokens, ctx
    if window is None or window >= c + t:
        return t * c + t * (t + 1) / 2
    # query i sees min(W, c + i) keys; the first n = max(0, W - c) queries are uncapped.
    n = min(t, max(0, window - c))
    return n * c + n * (n + 1) / 2 + (t - n) * window


def distinct_experts(experts: int, active: int, tokens: float) -> float:
    """Expected number of distinct experts touched by `tokens` tokens routing top-`active` uniformly."""
    return experts * (1.0 - (1.0 - active / experts) ** tokens)


def _gemm(name: str, m: float, k: int, n: int, wbytes: float, abytes: float, count: int) -> Op:
    return Op(name, "gemm", 2.0 * m * k * n, k * n * wbytes, (m * k + m * n) * abytes, 0.0, count, m, 0.0, k, n)


def step_workload(model: Model, phase: str, batch: int, tokens: int, ctx: int, stack: str = "reference") -> Workload:
    """Operators of one step: `batch` sequences each adding `tokens` tokens after `ctx` cached ones.

    `stack` picks how elementwise work is counted (see ELEMENTWISE) and how the cost model prices the
    step; deprecated aliases are resolved ("fused" is "vllm")."""
    stack = resolve_stack(stack)
    if phase not in PHASES:
        raise EstimateError(f"phase must be one of {', '.join(PHASES)}; got {phase!r}")
    for arg, val, lo in (("batch", batch, 1), ("tokens", tokens, 1), ("ctx", ctx, 0)):
        if val < lo:
            raise EstimateError(f"{arg} must be >= {lo}; got {val}")
    if phase == "decode" and tokens != 1:
        raise EstimateError(f"decode adds one token per sequence; got tokens={tokens}")
    if model.max_context is not None and ctx + tokens > model.max_context:
        raise EstimateError(
            f"{model.name}: ctx + tokens = {ctx + tokens} exceeds its max context of {model.max_context}"
        )
    m_head = batch * (tokens if phase == "verify" else 1)
    ops = _step_ops(model, stack, phase, ((batch, tokens, ctx),), m_head)
    return Workload(model.name, phase, batch, tokens, ctx, model.layers, ops, stack=stack)


def mixed_workload(model: Model, decode_batch: int, decode_ctx: int, chunk: int, chunk_ctx: int,
                   stack: str = "reference") -> Workload:
    """One chunked-prefill iteration as an engine runs it: one forward pass whose GEMMs see the
    `decode_batch` decode tokens and the `chunk` prompt tokens together, while attention serves each
    sequence over its own context (the decode sequences over `decode_ctx`, the chunk causally after
    its `chunk_ctx` cached tokens). Logits for every decode sequence and the chunk's last token."""
    stack = resolve_stack(stack)
    for arg, val, lo in (("decode_batch", decode_batch, 0), ("chunk", chunk, 0), ("decode_ctx", decode_ctx, 0),
                         ("chunk_ctx", chunk_ctx, 0)):
        if val < lo:
            raise EstimateError(f"{arg} must be >= {lo}; got {val}")
    if decode_batch + chunk == 0:
        raise EstimateError("a mixed step needs decode sequences or prompt tokens")
    parts = tuple(p for p in ((decode_batch, 1, decode_ctx), (1, chunk, chunk_ctx)) if p[0] and p[1])
    m_head = decode_batch + (1 if chunk else 0)
    ops = _step_ops(model, stack, "mixed", parts, m_head)
    return Workload(model.name, "mixed", decode_batch + (1 if chunk else 0), 1, decode_ctx, model.layers, ops,
                    stack=stack)


def _step_ops(model: Model, stack: str, phase: str, parts: tuple[tuple[int, int, int], ...], m_head: int) -> tuple[Op, ...]:
    """Operators of a step whose sequences come in `parts` of (sequences, new tokens each, cached tokens)."""
    wb, ab = nbytes(model.weight_dtype), nbytes(model.act_dtype)
    m = sum(b * t for b, t, _ in parts)
    h = model.hidden
    ew = ELEMENTWISE[stack]
    ops: list[Op] = [Op("embed", "embed", 0.0, m * h * wb, m * h * ab, 0.0, 1, m)]

    # Attention projections: the same on every layer.
    for name, k, n in model.attention_gemms():
        ops.append(_gemm(f"attn.{name}", m, k, n, wb, ab, model.layers))

    # Attention core, per kind of layer (full or windowed), per part of the step.
    kv_tok = model.kv_bytes_per_token_layer()
    if model.mla is not None:
        mla = model.mla
        if phase == "prefill":  # decompressed heads
            d_qk, d_v = mla.qk_nope_head_dim + mla.qk_rope_head_dim, mla.v_head_dim
        else:  # weight-absorbed: attend over the latent directly
            d_qk, d_v = mla.kv_lora_rank + mla.qk_rope_head_dim, mla.kv_lora_rank
    else:
        d_qk = d_v = model.head_dim
    sliding_count = model.sliding_layers
    for sliding, count in ((False, model.layers - sliding_count), (True, sliding_count)):
        if count == 0:
            continue
        window = model.window_for(sliding)
        name = "attn.core.window" if sliding else "attn.core"
        for batch, tokens, ctx in parts:
            keys = visible_keys(tokens, ctx, window)
            flops = 2.0 * batch * model.heads * (d_qk + d_v) * keys
            # Read the cached keys and values once (flash kernels re-read them per query tile from
            # on-chip cache), write the new tokens' entries.
            kv = batch * (ctx if window is None else min(ctx, window)) * kv_tok + batch * tokens * kv_tok
            act = batch * tokens * model.heads * (d_qk + d_v) * ab  # read q, write o
            ops.append(Op(name, "attention", flops, 0.0, act, kv, count, tokens, batch * model.heads, 0.0, 0.0,
                          batch, ctx))

    # FFN: dense layers and MoE layers.
    if model.dense_layers:
        ops.append(_gemm("ffn.gate_up", m, h, 2 * model.ffn, wb, ab, model.dense_layers))
        ops.append(_gemm("ffn.down", m, model.ffn, h, wb, ab, model.dense_layers))
        act = m * model.ffn * ew.act * ab / 2
        ops.append(Op("ffn.act", "elementwise", 0.0, 0.0, act, 0.0, model.dense_layers, m))
    if model.moe is not None and model.moe_layers:
        moe, L = model.moe, model.moe_layers
        ops.append(_gemm("moe.router", m, h, moe.experts, wb, ab, L))
        touched = distinct_experts(moe.experts, moe.active_experts, m)
        pairs = m * moe.active_experts  # token-expert pairs
        ewb = nbytes(model.expert_dtype)
        per_expert_w = 3 * h * moe.expert_ffn
        ops.append(
            Op(
                "moe.experts",
                "gemm",
                2.0 * pairs * per_expert_w,
                touched * per_expert_w * ewb,
                pairs * (2 * h + 3 * moe.expert_ffn) * ab,
                0.0,
                L,
                pairs / touched,
                0.0,
                h,
                moe.expert_ffn,
                m,
            )
        )
        if moe.shared_experts:
            sf = moe.shared_experts * (moe.shared_expert_ffn or moe.expert_ffn)
            ops.append(_gemm("moe.shared.gate_up", m, h, 2 * sf, wb, ab, L))
            ops.append(_gemm("moe.shared.down", m, sf, h, wb, ab, L))
        act_width = moe.active_experts * moe.expert_ffn + moe.shared_experts * (moe.shared_expert_ffn or moe.expert_ffn)
        ops.append(Op("moe.act", "elementwise", 0.0, 0.0, m * act_width * ew.act * ab / 2, 0.0, L, m))

    # Norms, residual adds, rotary and the attention-output copy, at the stack's bytes per element.
    scale = ab / 2  # the tables count 2-byte activations
    rope_width = model.q_dim + (model.mla.qk_rope_head_dim if model.mla else model.kv_heads * model.head_dim)
    per_token = 2 * ew.norm * h + 2 * ew.residual * h + ew.rope * rope_width + ew.attn_out_copy * model.attn_out_dim
    ops.append(Op("norm_residual_rope", "elementwise", 0.0, 0.0, m * per_token * scale, 0.0, model.layers, m))

    # Final norm and LM head on the positions whose logits are needed.
    ops.append(Op("final_norm", "elementwise", 0.0, 0.0, m_head * h * ew.norm * ab / 2, 0.0, 1, m_head))
    ops.append(_gemm("lm_head", m_head, h, model.vocab, wb, ab, 1))
    return tuple(ops)


HEAD_OPS = ("embed", "final_norm", "lm_head")
BLOCKS = ("attention", "ffn")


def in_block(name: str, block: str | None) -> bool:
    """Whether operator `name` belongs to `block`: "attention" (with the token stream: embedding, norms,
    residuals, LM head) or "ffn" (dense FFN or MoE experts); None: every operator."""
    if block is None:
        return True
    ffn = name.startswith(("ffn.", "moe."))
    return ffn if block == "ffn" else not ffn


def restrict(work: Workload, model: Model, first: int, last: int, block: str | None = None) -> Workload:
    """The part of a step that layers [first, last) (and, optionally, one block of them) compute.

    The embedding goes with the first layer, the final norm and LM head with the last."""
    L = model.layers
    if not (0 <= first < last <= L):
        raise EstimateError(f"{model.name}: layer range [{first}, {last}) is not inside [0, {L})")
    if block not in (None, *BLOCKS):
        raise EstimateError(f"block must be one of {', '.join(BLOCKS)}; got {block!r}")
    kinds = model.layer_kinds()[first:last]
    n_moe = sum(1 for m, _ in kinds if m)
    n_window = sum(1 for _, w in kinds if w)
    ops = []
    for op in work.ops:
        if not in_block(op.name, block):
            continue
        if op.name == "embed":
            count = 1 if first == 0 else 0
        elif op.name in ("final_norm", "lm_head"):
            count = 1 if last == L else 0
        elif op.name == "attn.core":
            count = (last - first) - n_window
        elif op.name == "attn.core.window":
            count = n_window
        elif op.name.startswith("ffn.") or op.name == "ffn.act":
            count = (last - first) - n_moe
        elif op.name.startswith("moe."):
            count = n_moe
        else:
            count = last - first
        if count:
            ops.append(replace(op, count=count))
    share = 1.0 if block is None else 0.5
    return replace(work, layers=last - first, ops=tuple(ops), overhead_share=share)
