"""The fused-MoE kernel's tile: what the engines ship (gimletc.cost.moe_tiles) and what it costs (moe_s)."""

from __future__ import annotations

import json
import zipfile

import pytest

from gimletc.cost.engine import EngineProfile, measured_profiles, moe_s, uniform_routing
from gimletc.cost.moe_tiles import (
    CUTLASS,
    DATA,
    STREAMING,
    TRITON,
    autotuned_block,
    build,
    default_tile,
    kernel_class,
    main,
    moe_kernel,
    read_wheel,
)
from gimletc.cost.moe_tiles import moe_tile as _moe_tile


def moe_tile(*a, **kw):  # (rows, columns) of a Triton tile, checking that Triton tiles are fed and not streamed
    bm, bn, fed, streamed = _moe_tile(*a, **kw)
    assert (fed, streamed) == (1.0, 0.0)
    return bm, bn


def test_the_engines_tuned_files_and_defaults_decide_the_tile():
    # vLLM 0.24 ships a tuned file for Mixtral-8x7B's experts at TP2 (E=8, N=7168) on the H200: 128 x 256 tiles
    # at 8k tokens, 16-row blocks for a decode step
    assert moe_tile("vllm", "h200", 8, 7168, 8192) == (128, 256)
    assert moe_tile("vllm", "h200", 8, 7168, 1)[0] == 16
    # at TP1 (N=14336) the H100 has no vLLM file: vLLM 0.24's default, 128 x 128 beyond 512 tokens
    assert moe_tile("vllm", "h100-sxm", 8, 14336, 8192) == (128, 128)
    # SGLang's default is 64 x 64 (16 x 32 while tokens <= experts), e.g. Qwen3-235B's experts at TP4 on the H200
    assert moe_tile("sglang", "h200", 128, 384, 8192) == (128, 256)  # tuned (E=128, N=384)
    assert moe_tile("sglang", "h200", 128, 96, 8192) == (64, 64)
    assert moe_tile("sglang", "h200", 128, 96, 64) == (16, 32)
    # vLLM 0.14 (the A100's tables) had SGLang's old default
    assert moe_tile("vllm", "a100-sxm-80gb", 128, 96, 8192) == (64, 64)
    # a chip no engine file names takes the newest default of the engine
    assert moe_tile("vllm", "mi300x", 8, 7168, 8192) == default_tile("vllm", "0.24.0", 8192, 8) == (128, 128)


def test_nearest_tuned_size_is_taken_as_the_engines_do():
    t = json.loads((__import__("gimletc.cost.moe_tiles", fromlist=["DATA"]).DATA).read_text())
    rows = t["engines"]["vllm"]["h200"]["tuned"]["8,7168"]
    sizes = [r[0] for r in rows]
    for tokens in (3, 100, 700, 5000, 100000):
        m, bm, bn = min(rows, key=lambda r: abs(r[0] - tokens))
        assert moe_tile("vllm", "h200", 8, 7168, tokens) == (bm, bn)
        assert m in sizes


def test_library_kernels_take_an_autotuned_block_unfed_and_trtllm_gen_streams_weights_per_block():
    assert [kernel_class(k) for k in ("vllm_fused_moe", "sglang_fused_moe_triton",
                                      "vllm_unquantizedfusedmoe_triton_tritonexperts")] == [TRITON] * 3
    assert kernel_class("vllm_unquantizedfusedmoe_flashinfer_trtllm_trtllmbf16experts") == STREAMING
    assert kernel_class("sglang_flashinfer_trtllm_moe") == STREAMING
    assert [kernel_class(k) for k in ("sglang_flashinfer_cutlass_moe", "moe_torch_flow_cutlass", "moe_torch_flow")] \
        == [CUTLASS] * 3
    # defaults: TensorRT-LLM's CUTLASS kernels; vLLM on Blackwell FlashInfer's trtllm-gen; Triton otherwise,
    # unless the engine's tables measured a library kernel for the shape
    assert moe_kernel("trtllm", "hopper", 8, 2, 4096) == CUTLASS
    assert moe_kernel("vllm", "blackwell", 8, 2, 4096) == STREAMING
    assert moe_kernel("vllm", "hopper", 8, 2, 4096) == TRITON
    assert moe_kernel("sglang", "hopper", 128, 6, 2688, {"128,6,2688": CUTLASS}) == CUTLASS
    # Mixtral-8x7B at 8k tokens: 2048 rows an expert, 256-row blocks; a decode step of 16 tokens: 4 rows, 16;
    # Qwen3-235B (128 experts, top-8) at 2048 tokens: 128 rows an expert
    assert autotuned_block(8192, 2, 8) == 256 and autotuned_block(16, 2, 8) == 16 and autotuned_block(96, 2, 8) == 32
    assert autotuned_block(2048, 8, 128) == 128 and autotuned_block(2049, 8, 128) == 256
    assert _moe_tile("vllm", "b200", 8, 7168, 8192, 2, STREAMING) == (256, 128, 0.0, 1.0)
    assert _moe_tile("trtllm", "h200", 8, 7168, 512, 2, CUTLASS) == (128, 128, 0.0, 0.0)


def test_a_streaming_kernel_reads_each_experts_weights_once_per_row_block():
    """Hand-computed: 8192 tokens, top-2 of 8 experts (2048 rows each, 16 blocks of 128), h=4096, f=7168, bf16:
    each expert's 3·4096·7168·2 B = 176,160,768 B, read once (cutlass) or 16 times (trtllm-gen); with compute,
    feed and fixed costs negligible and 1 TB/s, the layer takes the weight stream plus the activations'
    (16384 pairs x (2·4096 + 3·7168) x 2 B) and the activation/combine pass."""
    p = EngineProfile(chip="x", stack="vllm", gemm_eff=1.0, gemm_fp8_eff=1.0, mem_eff=1.0, kernel_s=0.0, tile_s=0.0,
                      attn_eff=1.0, attn_mem_eff=1.0, attn_seq_s=0.0, attn_pad_keys=0.0, moe_feed_bw=1e12,
                      ar_latency_s=1e-6, ar_bw=1e11)
    touched, rows, blocks = uniform_routing(8192, 2, 8, 128)
    assert (touched, blocks) == (pytest.approx(8.0), pytest.approx(128.0))
    w = 3 * 4096 * 7168 * 2
    act = 16384 * (2 * 4096 + 3 * 7168) * 2
    aux = (16384 * (3 * 7168 + 4096) + 8192 * 4096) * 2
    once = moe_s(p, 1e30, 1e12, 8192, 4096, 7168, 2, touched, rows, blocks, 2.0, 2.0, sms=132, tile=(128, 128, 0.0, 0.0))
    every = moe_s(p, 1e30, 1e12, 8192, 4096, 7168, 2, touched, rows, blocks, 2.0, 2.0, sms=132, tile=(128, 128, 0.0, 1.0))
    assert once == pytest.approx((8 * w + act + aux) / 1e12, rel=1e-9)
    assert every == pytest.approx((128 * w + act + aux) / 1e12, rel=1e-9)


def test_default_tile_rules():
    assert [default_tile("vllm", "0.24.0", m, 8)[0] for m in (1, 32, 33, 96, 97, 512, 513)] == [16, 16, 32, 32, 64, 64, 128]
    assert [default_tile("vllm", "0.24.0", m, 8)[1] for m in (64, 65)] == [64, 128]
    assert default_tile("sglang", "0.5.14", 8, 8) == (16, 32) and default_tile("sglang", "0.5.14", 9, 8) == (64, 64)


def _wheel(path, name, files):
    w = path / name
    with zipfile.ZipFile(w, "w") as z:
        for n, cfg in files.items():
            z.writestr(n, json.dumps(cfg))
    return w


def test_reading_a_wheel_keeps_bf16_files_of_the_measured_gpus_newest_triton_first(tmp_path):
    cfg = lambda bm, bn: {"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32}, "4096": {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn}}  # noqa: E731
    d = "sglang/srt/layers/moe/moe_runner/triton_utils/configs"
    w = _wheel(tmp_path, "sglang-0.5.14-cp311-cp311-manylinux_2_34_x86_64.whl", {
        f"{d}/triton_3_1_0/E=8,N=7168,device_name=NVIDIA_H200.json": cfg(64, 64),
        f"{d}/triton_3_5_1/E=8,N=7168,device_name=NVIDIA_H200.json": cfg(128, 256),  # newer Triton: this one
        f"{d}/triton_3_5_1/E=8,N=7168,device_name=NVIDIA_H200,dtype=fp8_w8a8.json": cfg(32, 32),  # fp8: not bf16
        f"{d}/triton_3_5_1/E=16,N=1024,device_name=AMD_Instinct_MI300X.json": cfg(32, 32),  # no measured chip
        f"{d}/triton_3_5_1/E=16,N=1024,device_name=NVIDIA_A100-SXM4-80GB.json": cfg(32, 32),  # A100: 0.5.10's
        f"{d}/README.md": "",
    })
    got = read_wheel(w)["sglang"]
    assert set(got) == {"h100-sxm", "h200", "b200"}
    assert got["h200"]["tuned"] == {"8,7168": [[1, 16, 32], [4096, 128, 256]]}
    assert got["h200"]["files"]["8,7168"].endswith("triton_3_5_1/E=8,N=7168,device_name=NVIDIA_H200.json")
    assert got["h100-sxm"]["tuned"] == {} and got["h200"]["version"] == "0.5.14"
    with pytest.raises(ValueError, match="no wheel given for: vllm a100-sxm-80gb 0.14.0"):
        build([str(w)])
    assert main([]) == 2  # usage
    before = DATA.read_bytes()
    assert main(["--write", str(w)]) == 2  # a missing wheel: one line, nothing written
    assert main(["--write", str(tmp_path / "nope-1.0-py3-none-any.whl")]) == 2
    (tmp_path / "vllm-0.24.0-py3-none-any.whl").write_text("not a zip")
    assert main(["--write", str(tmp_path / "vllm-0.24.0-py3-none-any.whl")]) == 2
    assert DATA.read_bytes() == before


def test_the_operand_feed_is_what_the_tiles_load(tmp_path):
    """Hand-computed: 256 tokens, top-2 of 8 experts, h=1024, f=512 per chip, bf16, 64 x 128 tiles. Uniform
    routing: 8 experts x 64 rows = 8 blocks; gate/up 8 x ceil(1024/128) = 64 tiles of K=1024, down
    8 x ceil(1024/128) = 64 tiles of K=512; each loads (64·2 + 128·2) B per K: (64·1024 + 64·512)·384 B
    = 37,748,736 B, 37.75 us at 1 TB/s. Compute, memory and fixed costs are made negligible."""
    p = EngineProfile(chip="x", stack="vllm", gemm_eff=1.0, gemm_fp8_eff=1.0, mem_eff=1.0, kernel_s=0.0, tile_s=0.0,
                      attn_eff=1.0, attn_mem_eff=1.0, attn_seq_s=0.0, attn_pad_keys=0.0, moe_feed_bw=1e12,
                      ar_latency_s=1e-6, ar_bw=1e11)
    touched, rows, blocks = uniform_routing(256, 2, 8, 64)
    assert (touched, rows, blocks) == (pytest.approx(8.0), pytest.approx(512.0), pytest.approx(8.0))
    t = moe_s(p, 1e30, 1e30, 256, 1024, 512, 2, touched, rows, blocks, 2.0, 2.0, sms=132, tile=(64, 128, 1.0, 0.0))
    assert t == pytest.approx(37_748_736 / 1e12, rel=1e-9)
    # 128-row tiles over 64 rows an expert: as many blocks (each half padding), each loading (128·2 + 128·2) B
    # per K: bigger tiles cost more where experts get few rows, less where they get many
    touched, rows, blocks = uniform_routing(256, 2, 8, 128)
    assert (rows, blocks) == (pytest.approx(1024.0), pytest.approx(8.0))
    t2 = moe_s(p, 1e30, 1e30, 256, 1024, 512, 2, touched, rows, blocks, 2.0, 2.0, sms=132, tile=(128, 128, 1.0, 0.0))
    assert t2 == pytest.approx((64 * 1024 + 64 * 512) * 512 / 1e12, rel=1e-9)
    touched, rows, blocks = uniform_routing(4096, 2, 8, 128)  # 1024 rows an expert: 8 blocks of 128 each
    t3 = moe_s(p, 1e30, 1e30, 4096, 1024, 512, 2, touched, rows, blocks, 2.0, 2.0, sms=132, tile=(128, 128, 1.0, 0.0))
    touched, rows, blocks = uniform_routing(4096, 2, 8, 64)
    t4 = moe_s(p, 1e30, 1e30, 4096, 1024, 512, 2, touched, rows, blocks, 2.0, 2.0, sms=132, tile=(64, 64, 1.0, 0.0))
    assert t4 == pytest.approx(2 * t3, rel=1e-9)  # half the tile edge, twice the operand bytes per multiply-add


def test_the_fitted_feed_is_a_physical_l2_bandwidth():
    """moe_feed_bw is fitted per chip and engine on the rows that ran Triton kernels; it must land where
    on-chip L2-to-SM bandwidths are (a few TB/s on the A100, more on Hopper and the B200), not at a bound of
    the fit. (vLLM on the B200 ran no Triton MoE kernel: nothing to fit, and no estimate uses it.)"""
    got = {k: p.moe_feed_bw for k, p in measured_profiles().items() if k[1] in ("vllm", "sglang")}
    for key, bw in got.items():
        if key != ("b200", "vllm"):
            assert 1e12 < bw < 1e14, (key, bw)
    for stack in ("vllm", "sglang"):
        assert got[("a100-sxm-80gb", stack)] < got[("h100-sxm", stack)]
    assert got[("h200", "sglang")] < got[("b200", "sglang")]
    assert measured_profiles()[("b200", "vllm")].moe_kernels  # the shapes its tables ran on library kernels
