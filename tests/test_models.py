"""Model architectures, the catalog, per-phase workloads and Hugging Face config loading.

Hand-computed figures are written out with their arithmetic; properties run
over small generated models of every attention kind, with and without MoE,
MLA and sliding windows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gimletc.dtypes import nbytes
from gimletc.errors import ConfigError, EstimateError, UnsupportedArchitectureError
from gimletc.models import (
    MLA,
    PHASES,
    Model,
    MoE,
    SlidingWindow,
    catalog,
    distinct_experts,
    get_model,
    step_workload,
    visible_keys,
)
from gimletc.models.hf import SUPPORTED, model_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FAST = settings(max_examples=60, deadline=None)


def cat(name: str) -> Model:
    return catalog()[name]


# ---- catalog against published figures ---------------------------------------


@pytest.mark.parametrize("name", sorted(catalog()))
def test_catalog_params_match_published(name: str) -> None:
    m = cat(name)
    assert m.published_params is not None
    assert m.params == pytest.approx(m.published_params, rel=0.02)


@pytest.mark.parametrize("name", sorted(n for n, m in catalog().items() if m.moe is not None))
def test_catalog_active_params_match_published(name: str) -> None:
    m = cat(name)
    assert m.published_active_params is not None
    if m.family == "gpt_oss":
        # OpenAI counts the unembedding (a matmul every token) but not the input embedding
        # (a row lookup): 120b: 4.552B non-embedding + 0.579B LM head = 5.13B ("5.1B");
        # 20b: 3.028B + 0.579B = 3.61B ("3.6B"). `active_params` counts both tables.
        counted = m.active_params - m.vocab * m.hidden
    else:
        counted = m.active_params
    assert counted == pytest.approx(m.published_active_params, rel=0.05)


def test_catalog_shapes_are_consistent() -> None:
    for m in catalog().values():
        assert m.dense_layers + m.moe_layers == m.layers
        assert sum(n for _, _, n in m.layer_groups()) == m.layers
        assert m.active_params <= m.params
        assert m.weight_bytes > 0 and m.kv_bytes_per_token > 0


# ---- derived quantities, by hand -----------------------------------------------

LLAMA8_ATTN = 4096 * (32 + 2 * 8) * 128 + 4096 * 4096  # qkv + o = 25_165_824 + 16_777_216 = 41_943_040
LLAMA8_FFN = 3 * 4096 * 14336  # gate, up, down = 176_160_768
LLAMA8_EMBED = 2 * 128256 * 4096  # untied input table + LM head = 1_050_673_152
LLAMA8_PARAMS = 32 * (LLAMA8_ATTN + LLAMA8_FFN) + LLAMA8_EMBED  # 6_979_321_856 + 1_050_673_152


def test_llama_8b_params_and_bytes() -> None:
    m = cat("llama-3.1-8b")
    assert LLAMA8_PARAMS == 8_029_995_008
    assert m.attention_params_per_layer == LLAMA8_ATTN
    assert m.embedding_params == LLAMA8_EMBED
    assert m.params == LLAMA8_PARAMS
    assert m.active_params == m.params
    assert m.weight_bytes == 2 * 8_029_995_008  # bf16: 16_059_990_016
    # K and V, 8 KV heads of 128, 2 bytes, 32 layers
    assert m.kv_bytes_per_token_layer() == 2 * 8 * 128 * 2 == 4096
    assert m.kv_bytes_per_token == 2 * 8 * 128 * 2 * 32 == 131_072
    assert m.kv_cache_bytes(1000, batch=3) == 3 * 1000 * 131_072


def test_llama_1b_tied_embeddings() -> None:
    m = cat("llama-3.2-1b")
    attn = 2048 * (32 + 2 * 8) * 64 + 2048 * 2048  # 6_291_456 + 4_194_304
    ffn = 3 * 2048 * 8192  # 50_331_648
    assert m.params == 16 * (attn + ffn) + 128256 * 2048  # one shared table: 1_235_746_816


def test_deepseek_v3_mla() -> None:
    m = cat("deepseek-v3")
    # The cache holds the compressed latent plus the decoupled rope key, bf16
    assert m.kv_bytes_per_token_layer() == (512 + 64) * 2 == 1152
    assert m.kv_bytes_per_token == 61 * 1152
    # q_a 7168·1536, q_b 1536·128·192, kv_a 7168·576, kv_b 512·128·256, o 128·128·7168
    attn = 7168 * 1536 + 1536 * 128 * (128 + 64) + 7168 * (512 + 64) + 512 * 128 * (128 + 128) + 128 * 128 * 7168
    assert m.attention_params_per_layer == attn == 187_105_280
    assert m.moe_layers == 58 and m.dense_layers == 3
    assert m.weight_bytes == m.params  # fp8: one byte each


def test_gpt_oss_120b_mxfp4_weight_bytes() -> None:
    m = cat("gpt-oss-120b")
    routed = 36 * 128 * 3 * 2880 * 2880  # 114_661_785_600 expert params, mxfp4 at 4.25 bits
    attn = 36 * (2880 * (64 + 2 * 8) * 64 + 64 * 64 * 2880)  # 36 · 26_542_080 = 955_514_880
    router = 36 * 2880 * 128  # 13_271_040
    embed = 2 * 201088 * 2880  # 1_158_266_880
    assert m.params == routed + attn + router + embed == 116_788_838_400
    assert m.routed_expert_weight_bytes == routed * 4.25 / 8 == 60_914_073_600
    assert m.weight_bytes == (attn + router + embed) * 2 + routed * 4.25 / 8 == 65_168_179_200


def test_mixtral_active_params() -> None:
    m = cat("mixtral-8x7b")
    attn = 4096 * (32 + 2 * 8) * 128 + 4096 * 4096  # 41_943_040
    two_experts = 2 * 3 * 4096 * 14336  # 352_321_536
    router = 4096 * 8  # 32_768
    embed = 2 * 32000 * 4096  # 262_144_000
    assert m.active_params == 32 * (attn + two_experts + router) + embed == 12_879_659_008
    assert m.params == m.active_params + 32 * 6 * 3 * 4096 * 14336  # plus the 6 idle experts


def test_gpt_oss_kv_cache_window_cap() -> None:
    m = cat("gpt-oss-120b")
    per = 2 * 8 * 64 * 2  # 2048 bytes per token per layer
    assert m.kv_bytes_per_token_layer() == per
    assert m.sliding_layers == 18  # layers 0, 2, ..., 34
    # Below the window every layer holds every token.
    assert m.kv_cache_bytes(100) == per * 36 * 100 == 7_372_800
    # Above it the 18 windowed layers keep 128 tokens: 2048 · (18·1000 + 18·128) = 2048 · 20_304
    assert m.kv_cache_bytes(1000) == per * (18 * 1000 + 18 * 128) == 41_582_592
    assert m.kv_cache_bytes(1000, batch=4) == 4 * 41_582_592


# ---- workloads, by hand --------------------------------------------------------


@pytest.mark.parametrize("t", [1, 7, 2048])
def test_llama_8b_prefill_flops(t: int) -> None:
    m = cat("llama-3.1-8b")
    w = step_workload(m, "prefill", batch=1, tokens=t, ctx=0)
    linear = 2 * (LLAMA8_PARAMS - LLAMA8_EMBED) * t  # every non-embedding weight once per token
    attention = 2 * 32 * (2 * 128) * 32 * (t * (t + 1) / 2)  # heads · (d_qk + d_v) · layers · causal pairs
    lm_head = 2 * 4096 * 128256  # the last position only
    assert w.flops == pytest.approx(linear + attention + lm_head, rel=1e-12)
    if t == 2048:
        assert w.flops == pytest.approx(28_587_302_322_176 + 1_100_048_498_688 + 1_050_673_152, rel=1e-12)
    w4 = step_workload(m, "prefill", batch=4, tokens=t, ctx=0)
    assert w4.flops == pytest.approx(4 * w.flops, rel=1e-12)


def test_llama_8b_decode_bytes() -> None:
    m = cat("llama-3.1-8b")
    ctx = 4096
    w = step_workload(m, "decode", batch=1, tokens=1, ctx=ctx)
    # All weights but the input table, plus the one embedding row looked up: 15_009_325_056
    weights = (LLAMA8_PARAMS - 128256 * 4096) * 2 + 4096 * 2
    kv = 131_072 * ctx + 131_072  # read the cached 4096 tokens, write the new one: 537_001_984
    assert w.weight_bytes == weights == 15_009_325_056
    assert w.kv_bytes == kv == 537_001_984
    assert w.bytes == pytest.approx(weights + kv, rel=0.005)  # activations are noise at batch 1
    assert w.bytes >= weights + kv


def test_verify_runs_lm_head_on_every_draft_token() -> None:
    m = cat("llama-3.1-8b")
    k, batch, ctx = 5, 2, 300
    v = step_workload(m, "verify", batch=batch, tokens=k, ctx=ctx)
    p = step_workload(m, "prefill", batch=batch, tokens=k, ctx=ctx)
    (head,) = [o for o in v.ops if o.name == "lm_head"]
    assert head.m == batch * k
    assert head.flops == 2 * batch * k * 4096 * 128256
    # Same step otherwise: verify costs (k − 1) more LM-head rows per sequence than prefill.
    assert v.flops - p.flops == pytest.approx(2 * batch * (k - 1) * 4096 * 128256, rel=1e-9)


def test_gpt_oss_decode_reads_windowed_kv() -> None:
    m = cat("gpt-oss-120b")
    w = step_workload(m, "decode", batch=1, tokens=1, ctx=10_000)
    # 18 full layers read 10_000 tokens, 18 windowed ones 128; each writes 1 token; 2048 bytes each
    assert w.kv_bytes == 2048 * (18 * (10_000 + 1) + 18 * (128 + 1))
    # One token touches exactly 4 experts per MoE layer.
    (experts,) = [o for o in w.ops if o.name == "moe.experts"]
    assert experts.weight_bytes == pytest.approx(4 * 3 * 2880 * 2880 * 4.25 / 8)


def test_visible_keys_by_hand() -> None:
    assert visible_keys(3, 0, None) == 1 + 2 + 3
    assert visible_keys(2, 5, None) == 6 + 7
    assert visible_keys(1, 99, None) == 100
    assert visible_keys(3, 2, 100) == 3 + 4 + 5  # a window wider than everything changes nothing
    assert visible_keys(4, 0, 2) == 1 + 2 + 2 + 2
    assert visible_keys(3, 2, 4) == 3 + 4 + 4
    assert visible_keys(3, 10, 4) == 4 + 4 + 4
    assert visible_keys(1, 10_000, 128) == 128


@given(t=st.integers(1, 60), c=st.integers(0, 200), w=st.none() | st.integers(1, 300))
def test_visible_keys_matches_brute_force(t: int, c: int, w: int | None) -> None:
    expect = sum(c + i if w is None else min(w, c + i) for i in range(1, t + 1))
    assert visible_keys(t, c, w) == expect


def test_distinct_experts_limits() -> None:
    assert distinct_experts(8, 2, 1) == pytest.approx(2)  # one token: its top-k
    assert distinct_experts(128, 4, 1) == pytest.approx(4)
    assert distinct_experts(8, 2, 0) == 0
    assert distinct_experts(8, 2, 10_000) == pytest.approx(8)  # many tokens: all of them
    assert distinct_experts(256, 8, 100_000) == pytest.approx(256)
    assert distinct_experts(4, 4, 3) == 4  # top-E touches everything
    # Two tokens, 8 choose 2: 8·(1 − (6/8)²) = 3.5
    assert distinct_experts(8, 2, 2) == pytest.approx(3.5)


@given(e=st.integers(1, 256), data=st.data())
def test_distinct_experts_bounded_and_monotone(e: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, e))
    m = data.draw(st.integers(1, 5000))
    d = distinct_experts(e, k, m)
    assert k - 1e-9 <= d <= e + 1e-9
    assert distinct_experts(e, k, m + 1) >= d - 1e-9


# ---- properties over generated models --------------------------------------------


@st.composite
def models(draw: st.DrawFn) -> Model:
    """Small valid Models: mha/gqa/mqa/mla attention, optional MoE and sliding window."""
    kind = draw(st.sampled_from(["mha", "gqa", "mqa", "mla"]))
    if kind == "gqa":
        kv = draw(st.sampled_from([1, 2, 4]))
        heads = kv * draw(st.integers(2, 4))
    else:
        heads = draw(st.integers(1, 8))
        kv = 1 if kind == "mqa" else heads
    mla = None
    if kind == "mla":
        mla = MLA(
            q_lora_rank=draw(st.none() | st.integers(8, 64)),
            kv_lora_rank=draw(st.integers(8, 64)),
            qk_nope_head_dim=draw(st.integers(4, 32)),
            qk_rope_head_dim=draw(st.integers(4, 16)),
            v_head_dim=draw(st.integers(4, 32)),
        )
    layers = draw(st.integers(1, 6))
    moe = None
    if draw(st.booleans()):
        experts = draw(st.integers(1, 16))
        moe = MoE(
            experts=experts,
            active_experts=draw(st.integers(1, experts)),
            expert_ffn=draw(st.integers(8, 128)),
            shared_experts=draw(st.integers(0, 2)),
            first_dense_layers=draw(st.integers(0, layers)),
            expert_dtype=draw(st.sampled_from([None, "mxfp4", "fp8"])),
        )
    window = None
    if draw(st.booleans()):
        window = SlidingWindow(window=draw(st.integers(1, 64)), every=draw(st.integers(1, 3)))
    return Model(
        name="gen",
        family="test",
        layers=layers,
        hidden=draw(st.sampled_from([32, 64, 96, 128])),
        ffn=draw(st.integers(16, 256)),
        heads=heads,
        kv_heads=kv,
        head_dim=draw(st.sampled_from([8, 16, 32])),
        vocab=draw(st.integers(16, 1000)),
        tied_embeddings=draw(st.booleans()),
        attention=kind,
        mla=mla,
        moe=moe,
        sliding_window=window,
        weight_dtype=draw(st.sampled_from(["bf16", "fp8", "fp16"])),
    )


@st.composite
def steps(draw: st.DrawFn) -> tuple[str, int, int, int]:
    """(phase, batch, tokens, ctx) valid for step_workload."""
    phase = draw(st.sampled_from(PHASES))
    tokens = 1 if phase == "decode" else draw(st.integers(1, 64))
    return phase, draw(st.integers(1, 8)), tokens, draw(st.integers(0, 300))


@FAST
@given(m=models(), step=steps(), delta=st.integers(1, 50))
def test_workload_nonnegative_and_monotone(m: Model, step: tuple[str, int, int, int], delta: int) -> None:
    phase, batch, tokens, ctx = step
    base = step_workload(m, phase, batch, tokens, ctx)
    for o in base.ops:
        assert o.flops >= 0 and o.weight_bytes >= 0 and o.act_bytes >= 0 and o.kv_bytes >= 0 and o.count >= 0
    assert base.flops > 0 and base.bytes > 0
    bigger = [step_workload(m, phase, batch + delta, tokens, ctx), step_workload(m, phase, batch, tokens, ctx + delta)]
    if phase != "decode":
        bigger.append(step_workload(m, phase, batch, tokens + delta, ctx))
    for w in bigger:
        assert w.flops >= base.flops
        assert w.bytes >= base.bytes
        assert w.kv_bytes >= base.kv_bytes


@FAST
@given(m=models(), batch=st.integers(1, 64), ctx=st.integers(0, 300))
def test_decode_touches_all_non_expert_weights(m: Model, batch: int, ctx: int) -> None:
    w = step_workload(m, "decode", batch, 1, ctx)
    wb = nbytes(m.weight_dtype)
    input_table = 0 if m.tied_embeddings else m.vocab * m.hidden * wb  # only looked-up rows are read
    non_expert = m.weight_bytes - m.routed_expert_weight_bytes - input_table
    top_k = 0 if m.moe is None else m.moe_layers * m.moe.active_experts * m.expert_params * nbytes(m.expert_dtype)
    assert w.weight_bytes >= (non_expert + top_k) * (1 - 1e-9)
    # ... and never more than every weight plus the looked-up rows.
    assert w.weight_bytes <= (m.weight_bytes + batch * m.hidden * wb) * (1 + 1e-9)


@FAST
@given(m=models(), bad=st.integers(-5, 0), tokens=st.integers(2, 10))
def test_step_workload_rejects_bad_arguments(m: Model, bad: int, tokens: int) -> None:
    with pytest.raises(EstimateError, match="tokens"):
        step_workload(m, "decode", 1, tokens, 0)
    with pytest.raises(EstimateError, match="batch"):
        step_workload(m, "prefill", bad, 4, 0)
    with pytest.raises(EstimateError, match="tokens"):
        step_workload(m, "verify", 1, bad, 0)
    with pytest.raises(EstimateError, match="ctx"):
        step_workload(m, "decode", 1, 1, bad - 1)
    with pytest.raises(EstimateError, match="phase"):
        step_workload(m, "train", 1, 1, 0)


def test_step_workload_rejects_context_past_max() -> None:
    m = cat("mixtral-8x7b")  # max_context 32768
    step_workload(m, "decode", 1, 1, 32767)
    with pytest.raises(EstimateError, match="32768"):
        step_workload(m, "decode", 1, 1, 32768)


@FAST
@given(m=models())
def test_generated_model_invariants(m: Model) -> None:
    assert m.active_params <= m.params
    assert m.embedding_params <= m.params
    assert sum(n for _, _, n in m.layer_groups()) == m.layers
    assert sum(n for _, s, n in m.layer_groups() if s) == m.sliding_layers
    assert m.kv_cache_bytes(10) <= m.kv_cache_bytes(11)
    assert m.kv_cache_bytes(0) == 0


# ---- Hugging Face configs --------------------------------------------------------

IN_CATALOG = [
    "llama-3.1-8b",
    "llama-3.2-1b",
    "qwen3-32b",
    "qwen3-235b-a22b",
    "mixtral-8x7b",
    "deepseek-v3",
    "gpt-oss-120b",
]
STRUCTURE_ONLY = {"name", "source", "published_params", "published_active_params", "max_context"}


@pytest.mark.parametrize("name", IN_CATALOG)
def test_hf_config_matches_catalog(name: str) -> None:
    m = model_from_hf_config(HF / name / "config.json")
    c = cat(name)
    assert m.name == name  # from the folder
    assert m.model_dump(exclude=STRUCTURE_ONLY) == c.model_dump(exclude=STRUCTURE_ONLY)
    assert m.params == pytest.approx(c.params, rel=0.005)


def test_hf_structures() -> None:
    llama = model_from_hf_config(HF / "llama-3.1-8b")  # a folder works too
    assert (llama.family, llama.attention, llama.kv_heads, llama.head_dim) == ("llama", "gqa", 8, 128)
    assert llama.max_context == 131072 and llama.weight_dtype == "bf16" and llama.moe is None

    assert model_from_hf_config(HF / "llama-3.2-1b").tied_embeddings

    qwen25 = model_from_hf_config(HF / "qwen2.5-7b")
    assert (qwen25.family, qwen25.layers, qwen25.hidden, qwen25.ffn) == ("qwen2", 28, 3584, 18944)
    assert (qwen25.heads, qwen25.kv_heads, qwen25.head_dim, qwen25.vocab) == (28, 4, 128, 152064)
    assert qwen25.sliding_window is None  # sliding_window is set but use_sliding_window is false
    assert qwen25.params == pytest.approx(7.61e9, rel=0.01)  # Qwen2.5 model card: 7.61B

    qwen3 = model_from_hf_config(HF / "qwen3-32b")
    assert qwen3.head_dim == 128 != qwen3.hidden // qwen3.heads  # explicit head_dim wins
    assert qwen3.max_context == 40960

    q_moe = model_from_hf_config(HF / "qwen3-235b-a22b")
    assert q_moe.moe == MoE(experts=128, active_experts=8, expert_ffn=1536)

    mixtral = model_from_hf_config(HF / "mixtral-8x7b")
    assert mixtral.moe == MoE(experts=8, active_experts=2, expert_ffn=14336)
    assert mixtral.sliding_window is None  # sliding_window: null

    ds = model_from_hf_config(HF / "deepseek-v3")
    assert ds.attention == "mla" and ds.weight_dtype == "fp8" and ds.kv_dtype == "bf16"
    assert ds.mla == MLA(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    assert ds.moe == MoE(experts=256, active_experts=8, expert_ffn=2048, shared_experts=1, first_dense_layers=3)

    oss = model_from_hf_config(HF / "gpt-oss-120b", name="oss")
    assert oss.name == "oss"
    assert oss.sliding_window == SlidingWindow(window=128, every=2)
    assert oss.moe is not None and oss.moe.expert_dtype == "mxfp4" and oss.weight_dtype == "bf16"


def test_get_model_accepts_hf_paths() -> None:
    assert get_model(HF / "qwen2.5-7b").name == "qwen2.5-7b"
    assert get_model(str(HF / "qwen2.5-7b" / "config.json")).family == "qwen2"


def test_hf_unsupported_architecture() -> None:
    path = HF / "mamba-130m" / "config.json"
    with pytest.raises(UnsupportedArchitectureError) as e:
        model_from_hf_config(path)
    msg = str(e.value)
    assert "MambaForCausalLM" in msg and str(path) in msg
    assert all(a in msg for a in SUPPORTED)
    assert isinstance(e.value, ConfigError)


def _variant(tmp_path: Path, base: str, **changes: object) -> Path:
    """A copy of fixture `base` with keys changed (None deletes the key)."""
    cfg = json.loads((HF / base / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    folder = tmp_path / base
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder / "config.json"


@pytest.mark.parametrize(
    "key", ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"]
)
def test_hf_missing_key_is_named(tmp_path: Path, key: str) -> None:
    path = _variant(tmp_path, "llama-3.1-8b", **{key: None})
    with pytest.raises(ConfigError, match=rf"{key}") as e:
        model_from_hf_config(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    ("base", "key", "value"),
    [
        ("llama-3.1-8b", "hidden_size", -4096),
        ("llama-3.1-8b", "num_hidden_layers", "32"),
        ("llama-3.1-8b", "num_key_value_heads", 5),
        ("llama-3.1-8b", "torch_dtype", "float8"),
        ("llama-3.1-8b", "tie_word_embeddings", "no"),
        ("mixtral-8x7b", "num_experts_per_tok", 9),
        ("deepseek-v3", "first_k_dense_replace", 62),
        ("deepseek-v3", "moe_layer_freq", 2),
        ("qwen3-235b-a22b", "mlp_only_layers", [3, 7]),
        ("qwen3-235b-a22b", "decoder_sparse_step", 2),
        ("gpt-oss-120b", "layer_types", ["full_attention", "sliding_attention"] * 18),
        ("gpt-oss-120b", "layer_types", ["sliding_attention"] * 35),
        ("llama-3.1-8b", "quantization_config", {"quant_method": "gptq", "bits": 4}),
    ],
)
def test_hf_bad_value_is_named(tmp_path: Path, base: str, key: str, value: object) -> None:
    path = _variant(tmp_path, base, **{key: value})
    with pytest.raises(ConfigError, match=key) as e:
        model_from_hf_config(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_hf_malformed_json(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"architectures": ["LlamaForCausalLM"], ')
    with pytest.raises(ConfigError, match="malformed JSON"):
        model_from_hf_config(tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        model_from_hf_config(tmp_path / "nowhere")


def test_hf_model_type_fallback_and_unknown(tmp_path: Path) -> None:
    m = model_from_hf_config(_variant(tmp_path, "mixtral-8x7b", architectures=None))
    assert m.family == "mixtral" and m.moe is not None
    with pytest.raises(UnsupportedArchitectureError, match="'mamba'"):
        model_from_hf_config(_variant(tmp_path, "mamba-130m", architectures=None))


def test_hf_layouts_and_dtypes(tmp_path: Path) -> None:
    q = model_from_hf_config(_variant(tmp_path, "qwen3-235b-a22b", mlp_only_layers=[0, 1]))
    assert q.moe is not None and q.moe.first_dense_layers == 2
    oss = model_from_hf_config(_variant(tmp_path, "gpt-oss-120b", layer_types=["sliding_attention"] * 36))
    assert oss.sliding_window == SlidingWindow(window=128, every=1)
    oss = model_from_hf_config(_variant(tmp_path, "gpt-oss-120b", layer_types=None))  # transformers' default
    assert oss.sliding_window == SlidingWindow(window=128, every=2)
    mix = model_from_hf_config(_variant(tmp_path, "mixtral-8x7b", sliding_window=4096))
    assert mix.sliding_window == SlidingWindow(window=4096, every=1)
    qw = model_from_hf_config(
        _variant(tmp_path, "qwen2.5-7b", use_sliding_window=True, max_window_layers=0, sliding_window=4096)
    )
    assert qw.sliding_window == SlidingWindow(window=4096, every=1)
    qw = model_from_hf_config(_variant(tmp_path, "qwen2.5-7b", use_sliding_window=True))  # max_window_layers = all 28
    assert qw.sliding_window is None
    mha = model_from_hf_config(_variant(tmp_path, "llama-3.1-8b", num_key_value_heads=None, torch_dtype="float16"))
    assert (mha.attention, mha.kv_heads, mha.weight_dtype, mha.kv_dtype) == ("mha", 32, "fp16", "fp16")
    path = _variant(tmp_path, "llama-3.1-8b", num_key_value_heads=1, torch_dtype=None, dtype="float32")
    mqa = model_from_hf_config(path)
    assert (mqa.attention, mqa.weight_dtype) == ("mqa", "fp32")
    fp8 = model_from_hf_config(_variant(tmp_path, "qwen3-32b", quantization_config={"quant_method": "fp8"}))
    assert fp8.weight_dtype == "fp8" and fp8.weight_bytes == fp8.params


def test_hf_folder_copy_takes_its_name(tmp_path: Path) -> None:
    dest = tmp_path / "my-llama"
    shutil.copytree(HF / "llama-3.2-1b", dest)
    assert model_from_hf_config(dest).name == "my-llama"
