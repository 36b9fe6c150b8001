"""A tiny Llama-shaped transformer with fixed, seeded weights, for tests and examples.

`TinyLlama` is a decoder-only transformer in the shape of Llama 3 (RMSNorm,
grouped-query attention with rotary embeddings, a SwiGLU FFN, untied LM head)
small enough to export, split and run in seconds. Its forward pass is one
*step*: T new tokens on top of P tokens already in an explicit KV cache,

    logits, present.0.key, present.0.value, ... = model(input_ids, past.0.key, past.0.value, ...)

with `input_ids` [B, T] int64, each `past.i.key/value` [B, kv_heads, P, head_dim]
(P = 0 for a prefill) and each `present.i.*` [B, kv_heads, P + T, head_dim]:
prefill, decode and a speculative verify step are the same graph. Module
names follow Hugging Face's Llama (`layers.0.self_attn.q_proj`, ...), so the
exported ONNX nodes carry the scopes the importer maps to layers, attention
and FFN.

Needs torch (the `torch` extra); importing this module without it raises
ImportError.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from gimletc.errors import GimletError

__all__ = ["LLAMA_1B_SHAPE", "TinyConfig", "TinyLlama", "build", "draft_of", "export_onnx", "input_names", "output_names"]


@dataclass(frozen=True)
class TinyConfig:
    """Architecture and seed. `deep_scale` scales the output projections of layers after the
    first, so a one-layer draft cut from the model (`draft_of`) agrees with it often."""

    name: str = "tiny-llama"
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    ffn: int = 128
    vocab: int = 256
    rope_theta: float = 10000.0
    eps: float = 1e-5
    seed: int = 0
    deep_scale: float = 1.0


LLAMA_1B_SHAPE = TinyConfig(name="llama-3.2-1b-shape", layers=2, hidden=2048, heads=32, kv_heads=8, head_dim=64, ffn=8192,
                            vocab=16384, rope_theta=500000.0, eps=1e-5, seed=0)
"""Llama-3.2-1B's layer shapes (hidden 2048, 32 query / 8 KV heads of 64, SwiGLU FFN 8192, rope theta
5e5) with 2 of its 16 layers and its 128,256-token vocabulary cut to 16,384 (the embedding and head
would be 1 GB each in fp32); exported with seeded weights (`export_onnx(..., seeded=True)`)."""


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, c: TinyConfig):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.hidden, c.heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.heads * c.head_dim, c.hidden, bias=False)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        c = self.c
        b, t, _ = x.shape
        p = past_k.shape[2]
        q = self.q_proj(x).view(b, t, c.heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        # Rotary embedding of positions p .. p+t-1 (computed here, per layer, from the cache length).
        pos = torch.arange(t, device=x.device, dtype=torch.float32) + p
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, device=x.device, dtype=torch.float32) / c.head_dim))
        ang = pos[:, None] * inv[None, :]
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k_all = torch.cat((past_k, k), dim=2)
        v_all = torch.cat((past_v, v), dim=2)
        rep = c.heads // c.kv_heads
        kk = k_all.repeat_interleave(rep, dim=1)
        vv = v_all.repeat_interleave(rep, dim=1)
        scores = (q @ kk.transpose(-1, -2)) / math.sqrt(c.head_dim)
        # Causal over the cache: query i (at position p+i) sees keys 0 .. p+i.
        qi = torch.arange(t, device=x.device)[:, None] + p
        kj = torch.arange(p + t, device=x.device)[None, :]
        scores = scores.masked_fill(kj > qi, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ vv
        out = out.transpose(1, 2).reshape(b, t, c.heads * c.head_dim)
        return self.o_proj(out), k_all, v_all


class MLP(nn.Module):
    def __init__(self, c: TinyConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden, c.ffn, bias=False)
        self.up_proj = nn.Linear(c.hidden, c.ffn, bias=False)
        self.down_proj = nn.Linear(c.ffn, c.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: TinyConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden, c.eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden, c.eps)
        self.mlp = MLP(c)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        a, k, v = self.self_attn(self.input_layernorm(x), past_k, past_v)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, k, v


class TinyLlama(nn.Module):
    """One forward step over an explicit KV cache (see the module docstring)."""

    def __init__(self, c: TinyConfig):
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.hidden, c.eps)
        self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor):
        x = self.embed_tokens(input_ids)
        present = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, past[2 * i], past[2 * i + 1])
            present += [k, v]
        return (self.lm_head(self.norm(x)), *present)

    def empty_cache(self, batch: int = 1) -> list[torch.Tensor]:
        c = self.config
        return [torch.zeros(batch, c.kv_heads, 0, c.head_dim) for _ in range(2 * c.layers)]

    def arch(self) -> dict:
        """The architecture as `gimletc.models.Model` fields (stored in the exported ONNX's metadata)."""
        c = self.config
        return {
            "name": c.name, "family": "llama", "layers": c.layers, "hidden": c.hidden, "ffn": c.ffn,
            "heads": c.heads, "kv_heads": c.kv_heads, "head_dim": c.head_dim, "vocab": c.vocab,
            "attention": "mha" if c.kv_heads == c.heads else "mqa" if c.kv_heads == 1 else "gqa",
            "weight_dtype": "fp32", "kv_dtype": "fp32", "act_dtype": "fp32",
        }


def build(config: TinyConfig | None = None, **overrides) -> TinyLlama:
    """A TinyLlama with weights drawn from a generator seeded by `config.seed` (same seed, same bytes)."""
    c = replace(config or TinyConfig(), **overrides)
    model = TinyLlama(c)
    gen = torch.Generator().manual_seed(c.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))  # distinct per layer: no deduplication
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else 1
                std = 1.0 if name == "embed_tokens.weight" else 1.0 / math.sqrt(fan_in)
                deep = name.startswith("layers.") and int(name.split(".")[1]) > 0
                if deep and name.endswith(("o_proj.weight", "down_proj.weight")):
                    std *= c.deep_scale
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return model.eval()


def draft_of(target: TinyLlama, layers: int = 1, name: str | None = None) -> TinyLlama:
    """A smaller draft: the target's embedding, first `layers` layers, final norm and LM head."""
    c = replace(target.config, layers=layers, name=name or f"{target.config.name}-draft")
    draft = TinyLlama(c)
    sd = {k: v for k, v in target.state_dict().items() if not k.startswith("layers.") or int(k.split(".")[1]) < layers}
    draft.load_state_dict(sd)
    return draft.eval()


def input_names(layers: int) -> list[str]:
    return ["input_ids"] + [f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def output_names(layers: int) -> list[str]:
    return ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def export_onnx(model: TinyLlama, path: str | Path, *, exporter: str = "dynamo", opset: int = 18, seeded: bool = False) -> Path:
    """Export one step of `model` to ONNX at `path` with dynamic batch, new-token and cache axes.

    `seeded`: drop the bytes of every weight of 1 MiB or more and mark it to be generated from the
    config's seed where the model runs (`gimletc.importers.seeded`), so the file stays small.

    `exporter`: "dynamo" (torch.export + onnxscript; nodes carry `pkg.torch.onnx.name_scopes`)
    or "torchscript" (scopes in node names). The architecture is stored in the model's
    metadata under `gimletc.arch` so the importer need not infer it."""
    import onnx

    c = model.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Example sizes of 2, 3 and 5: torch.export specialises axes of size 0 or 1.
    ids = torch.zeros(2, 3, dtype=torch.int64)
    past = [torch.zeros(2, c.kv_heads, 5, c.head_dim) for _ in range(2 * c.layers)]
    ins, outs = input_names(c.layers), output_names(c.layers)
    if exporter == "dynamo":
        b, t, p = torch.export.Dim("batch", max=64), torch.export.Dim("tokens", max=4096), torch.export.Dim("past", max=4096)
        shapes = ({0: b, 1: t}, *({0: b, 2: p} for _ in past))
        prog = torch.onnx.export(model, (ids, *past), dynamo=True, dynamic_shapes=(shapes[0], shapes[1:]),
                                 input_names=ins, output_names=outs, opset_version=opset, optimize=True)
        prog.save(str(path))
    elif exporter == "torchscript":
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "logits": {0: "batch", 1: "tokens"}}
        axes.update({n: {0: "batch", 2: "past"} for n in ins[1:]})
        axes.update({n: {0: "batch", 2: "total"} for n in outs[1:]})
        torch.onnx.export(model, (ids, *past), str(path), dynamo=False, input_names=ins, output_names=outs,
                          dynamic_axes=axes, opset_version=opset)
    else:
        raise GimletError(f"unknown exporter {exporter!r}; choose dynamo or torchscript")
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for n in m.graph.node:  # keep the scopes; drop stack traces (local paths) and FX dumps (size)
        keep = [p for p in n.metadata_props if p.key in ("pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy")]
        del n.metadata_props[:]
        n.metadata_props.extend(keep)
    m.metadata_props.add(key="gimletc.arch", value=json.dumps(model.arch(), sort_keys=True))
    m.metadata_props.add(key="gimletc.tiny_config", value=json.dumps(asdict(c), sort_keys=True))
    if seeded:
        from gimletc.importers.seeded import seed_weights

        seed_weights(m, c.seed)
    onnx.save(m, str(path))
    return path
