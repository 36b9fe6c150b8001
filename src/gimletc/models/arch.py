"""Model architecture descriptions and the quantities derived from them.

A `Model` describes a decoder-only transformer precisely enough to count its
parameters, its KV-cache bytes, and the FLOPs and bytes of every phase. Counts
ignore norms' scale vectors and biases (well under 0.1% of any catalog model).
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gimletc.dtypes import DType, nbytes

AttentionKind = Literal["mha", "gqa", "mqa", "mla"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MoE(_Strict):
    """Mixture-of-experts FFN. Expert FFNs are gated (three matrices) like the dense FFN."""

    experts: int = Field(gt=0, description="routed experts per MoE layer")
    active_experts: int = Field(gt=0, description="routed experts each token visits (top-k)")
    expert_ffn: int = Field(gt=0, description="intermediate size of one routed expert")
    shared_experts: int = Field(0, ge=0, description="always-active experts per MoE layer")
    shared_expert_ffn: int | None = Field(None, gt=0, description="intermediate size of one shared expert (default expert_ffn)")
    first_dense_layers: int = Field(0, ge=0, description="leading layers with a dense FFN of size `ffn` instead")
    expert_dtype: DType | None = Field(None, description="storage format of expert weights (default: weight_dtype)")

    @model_validator(mode="after")
    def _check(self) -> MoE:
        if self.active_experts > self.experts:
            raise ValueError(f"active_experts={self.active_experts} exceeds experts={self.experts}")
        return self


class MLA(_Strict):
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds a compressed latent."""

    q_lora_rank: int | None = Field(None, gt=0)
    kv_lora_rank: int = Field(gt=0)
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0)
    v_head_dim: int = Field(gt=0)


class SlidingWindow(_Strict):
    """Local attention over the last `window` tokens on some layers."""

    window: int = Field(gt=0)
    every: int = Field(1, gt=0, description="1: every layer is windowed; 2: every other layer (the first is windowed)")


class Model(_Strict):
    """A decoder-only transformer architecture."""

    name: str
    family: str = Field(description="llama, qwen2, qwen3, mixtral, deepseek_v3, gpt_oss, ...")
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    ffn: int = Field(gt=0, description="dense FFN intermediate size (gated: gate, up and down)")
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab: int = Field(gt=0)
    tied_embeddings: bool = False
    attention: AttentionKind = "gqa"
    mla: MLA | None = None
    moe: MoE | None = None
    sliding_window: SlidingWindow | None = None
    weight_dtype: DType = "bf16"
    kv_dtype: DType = "bf16"
    act_dtype: DType = "bf16"
    compute_dtype: DType | None = Field(
        None, description="format GEMMs compute in (default: the weights' own where the chip has it, else bf16)"
    )
    max_context: int | None = Field(None, gt=0)
    published_params: float | None = Field(None, description="total parameters as published by the model's authors")
    published_active_params: float | None = None
    source: str = ""

    @model_validator(mode="after")
    def _check_attention(self) -> Model:
        kind, h, kv = self.attention, self.heads, self.kv_heads
        if kind == "mla" and self.mla is None:
            raise ValueError("attention='mla' needs an `mla` block")
        if kind != "mla" and self.mla is not None:
            raise ValueError(f"an `mla` block needs attention='mla', not {kind!r}")
        if kind == "mha" and kv != h:
            raise ValueError(f"attention='mha' needs kv_heads == heads; got kv_heads={kv}, heads={h}")
        if kind == "mqa" and kv != 1:
            raise ValueError(f"attention='mqa' needs kv_heads == 1; got {kv}")
        if kind == "gqa" and (h % kv or kv >= h):
            raise ValueError(f"attention='gqa' needs kv_heads dividing heads and fewer; got kv_heads={kv}, heads={h}")
        if self.moe is not None and self.moe.first_dense_layers > self.layers:
            raise ValueError(f"moe.first_dense_layers={self.moe.first_dense_layers} exceeds layers={self.layers}")
        return self

    # ---- layer structure ----------------------------------------------------
    @property
    def moe_layers(self) -> int:
        return 0 if self.moe is None else self.layers - self.moe.first_dense_layers

    @property
    def dense_layers(self) -> int:
        return self.layers - self.moe_layers

    @property
    def sliding_layers(self) -> int:
        sw = self.sliding_window
        return 0 if sw is None else (self.layers + sw.every - 1) // sw.every

    def layer_kinds(self) -> list[tuple[bool, bool]]:
        """(is_moe, is_sliding) of every layer, in order."""
        first_dense = self.layers if self.moe is None else self.moe.first_dense_layers
        sw = self.sliding_window
        return [(i >= first_dense, sw is not None and i % sw.every == 0) for i in range(self.layers)]

    def layer_groups(self) -> list[tuple[bool, bool, int]]:
        """(is_moe, is_sliding, count) for each distinct kind of layer, in a fixed order."""
        counts: dict[tuple[bool, bool], int] = {}
        for key in self.layer_kinds():
            counts[key] = counts.get(key, 0) + 1
        return [(m, s, n) for (m, s), n in sorted(counts.items())]

    # ---- attention shapes ---------------------------------------------------
    @property
    def q_dim(self) -> int:
        """Width of the query projection's output."""
        if self.mla is not None:
            return self.heads * (self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim)
        return self.heads * self.head_dim

    @property
    def attn_out_dim(self) -> int:
        """Width of the attention output fed to the output projection."""
        return self.heads * (self.mla.v_head_dim if self.mla is not None else self.head_dim)

    def attention_gemms(self) -> list[tuple[str, int, int]]:
        """(name, K, N) of each projection matrix of one attention block."""
        h = self.hidden
        if self.mla is not None:
            m = self.mla
            q = (
                [("q_a", h, m.q_lora_rank), ("q_b", m.q_lora_rank, self.q_dim)]
                if m.q_lora_rank
                else [("q", h, self.q_dim)]
            )
            return q + [
                ("kv_a", h, m.kv_lora_rank + m.qk_rope_head_dim),
                ("kv_b", m.kv_lora_rank, self.heads * (m.qk_nope_head_dim + m.v_head_dim)),
                ("o", self.attn_out_dim, h),
            ]
        return [("qkv", h, (self.heads + 2 * self.kv_heads) * self.head_dim), ("o", self.attn_out_dim, h)]

    # ---- parameters ---------------------------------------------------------
    @cached_property
    def attention_params_per_layer(self) -> int:
        return sum(k * n for _, k, n in self.attention_gemms())

    def gated_ffn_params(self, ffn: int) -> int:
        return 3 * self.hidden * ffn

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        return 0 if self.moe is None else self.gated_ffn_params(self.moe.expert_ffn)

    @property
    def shared_expert_params(self) -> int:
        """Parameters of all shared experts of one MoE layer."""
        if self.moe is None:
            return 0
        return self.moe.shared_experts * self.gated_ffn_params(self.moe.shared_expert_ffn or self.moe.expert_ffn)

    @property
    def router_params(self) -> int:
        return 0 if self.moe is None else self.hidden * self.moe.experts

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (one table when tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @cached_property
    def params(self) -> int:
        """Total parameters."""
        n = self.layers * self.attention_params_per_layer + self.embedding_params
        n += self.dense_layers * self.gated_ffn_params(self.ffn)
        if self.moe is not None:
            per = self.moe.experts * self.expert_params + self.shared_expert_params + self.router_params
            n += self.moe_layers * per
        return n

    @cached_property
    def active_params(self) -> int:
        """Parameters one token touches: all but the routed experts it skips.

        Embedding tables count in full (Mixtral's and DeepSeek's convention;
        OpenAI's gpt-oss figures leave out the input embedding table and keep the LM head)."""
        if self.moe is None:
            return self.params
        idle = (self.moe.experts - self.moe.active_experts) * self.expert_params
        return self.params - self.moe_layers * idle

    # ---- bytes --------------------------------------------------------------
    @property
    def expert_dtype(self) -> str:
        return (self.moe.expert_dtype if self.moe else None) or self.weight_dtype

    @cached_property
    def routed_expert_weight_bytes(self) -> float:
        return self.moe_layers * (self.moe.experts if self.moe else 0) * self.expert_params * nbytes(self.expert_dtype)

    @cached_property
    def weight_bytes(self) -> float:
        """Bytes of all weights as stored (expert weights in their own format)."""
        routed = self.moe_layers * (self.moe.experts if self.moe else 0) * self.expert_params
        return (self.params - routed) * nbytes(self.weight_dtype) + self.routed_expert_weight_bytes

    def stage_weight_bytes(self, first: int, last: int, block: str | None = None) -> float:
        """Weight bytes of layers [first, last), with the embedding on the first layer and the LM head on
        the last; `block` = "attention" or "ffn" keeps one block (embedding and head go with attention)."""
        wb = nbytes(self.weight_dtype)
        total = 0.0
        for is_moe, _ in self.layer_kinds()[first:last]:
            if block in (None, "attention"):
                total += self.attention_params_per_layer * wb
            if block in (None, "ffn"):
                if is_moe:
                    total += (self.moe.experts * self.expert_params) * nbytes(self.expert_dtype)  # type: ignore[union-attr]
                    total += (self.shared_expert_params + self.router_params) * wb
                else:
                    total += self.gated_ffn_params(self.ffn) * wb
        if block in (None, "attention"):
            table = self.vocab * self.hidden * wb
            if first == 0:
                total += table
            if last == self.layers and not self.tied_embeddings:
                total += table
            elif last == self.layers and first != 0:
                total += table  # a tied head on another chip needs its own copy of the table
        return total

    def stage_kv_cache_bytes(self, first: int, last: int, tokens: int, batch: int = 1) -> float:
        """KV-cache bytes layers [first, last) hold for `batch` sequences of `tokens` tokens."""
        per = self.kv_bytes_per_token_layer()
        window = self.sliding_window.window if self.sliding_window else None
        return batch * per * sum(
            min(tokens, window) if (sliding and window) else tokens for _, sliding in self.layer_kinds()[first:last]
        )

    def kv_bytes_per_token_layer(self) -> float:
        """KV-cache bytes one token adds to one layer."""
        if self.mla is not None:
            return (self.mla.kv_lora_rank + self.mla.qk_rope_head_dim) * nbytes(self.kv_dtype)
        return 2 * self.kv_heads * self.head_dim * nbytes(self.kv_dtype)

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes one token adds across all layers (before any window cap)."""
        return self.layers * self.kv_bytes_per_token_layer()

    def kv_cache_bytes(self, tokens: int, batch: int = 1) -> float:
        """KV-cache bytes held for `batch` sequences of `tokens` tokens; windowed layers keep at most `window`."""
        per = self.kv_bytes_per_token_layer()
        full = self.layers - self.sliding_layers
        windowed = min(tokens, self.sliding_window.window) if self.sliding_window else 0
        return batch * per * (full * tokens + self.sliding_layers * windowed)

    def activation_bytes(self, batch: int, tokens: int) -> float:
        """Peak transient activation bytes of one forward step (the widest live tensors plus fp32 logits)."""
        m = batch * tokens
        widest = max(2 * self.ffn_active_width, self.q_dim + 2 * self.kv_heads * self.head_dim, 3 * self.hidden)
        return m * widest * nbytes(self.act_dtype) + batch * self.vocab * 4

    @property
    def ffn_active_width(self) -> int:
        """Intermediate FFN width one token computes through (the widest layer kind)."""
        if self.moe is None:
            return self.ffn
        moe = self.moe.active_experts * self.moe.expert_ffn + self.moe.shared_experts * (
            self.moe.shared_expert_ffn or self.moe.expert_ffn
        )
        return max(moe, self.ffn if self.dense_layers else 0)

    def window_for(self, sliding: bool) -> int | None:
        return self.sliding_window.window if (sliding and self.sliding_window) else None

    def summary(self) -> dict:
        """Headline figures for listings."""
        return {
            "name": self.name,
            "family": self.family,
            "params_b": round(self.params / 1e9, 2),
            "active_params_b": round(self.active_params / 1e9, 2),
            "weight_gb": round(self.weight_bytes / 1e9, 2),
            "kv_kb_per_token": round(self.kv_bytes_per_token / 1e3, 1),
            "layers": self.layers,
            "attention": self.attention,
            "moe": f"{self.moe.active_experts}/{self.moe.experts}" if self.moe else "-",
            "weight_dtype": self.weight_dtype if self.moe is None or self.moe.expert_dtype is None
            else f"{self.weight_dtype}+{self.moe.expert_dtype}",
        }
