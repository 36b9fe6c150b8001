"""Engine stacks: step times as a serving engine (vLLM, SGLang, TensorRT-LLM) runs them.

An engine stack prices each kernel of a step with a small physical model whose
dozen parameters are fitted, per chip and engine, to the kernel tables NVIDIA
measured with those engines (`aiconfigurator-core`; see
`gimletc.cost.aiconfigurator`, which refits them, and `docs/cost-model.md`):

- GEMM (projections, router, LM head), per instance, over a chip of P SMs:
  `‖2·M·N·K / (peak[dtype]·gemm_eff·u) + tiles·tile_s / P, bytes / (BW·mem_eff)‖₃ + kernel_s`,
  (`‖c, m‖₃ = (c³ + m³)^⅓`: compute and memory overlap imperfectly near the ridge, `OVERLAP`),
  `tiles = ⌈M/BM⌉·⌈N/BN⌉` output tiles (`gemm_tile`), each costing its SM `tile_s` of
  prologue and epilogue (filling the pipeline, writing the tile) besides its multiply-adds.
  `u` is the last wave's occupancy: on Ampere a GEMM launches one CTA per tile, so a grid of
  `tiles` CTAs over P SMs keeps `tiles / (⌈tiles/P⌉·P)` of them busy (at least `gemm_wave_floor`,
  what the library's tile and split-K choice recovers); Hopper and Blackwell GEMMs run persistent,
  tile-scheduled kernels (stream-K), so `u = 1` there (`gemm_wave_floor = 1`, not fitted).
  fp8 GEMMs run at `gemm_fp8_eff` of the fp8 peak after a separate kernel quantises their input
  activations (`M·K·(2a + 1)` bytes: a read for the scale, a read and a one-byte write);
  weight-only formats (int4, int8, mxfp4 on a chip without fp4 units) stream their own bytes and
  compute in bf16.
- attention, one kernel per layer for every sequence of the step, each over
  its own context (decode, a prefill chunk after its prefix, a verify of k
  tokens packed per KV head):
  `‖max((FLOPs + 4·rows·d·attn_pad_keys) / (peak·attn_eff), (√λ + √(KV bytes / (BW·attn_mem_eff)))²),
  sequences·KV heads·attn_seq_s‖₃ + 3·kernel_s`: the paged KV reads reach their own fraction of
  bandwidth, `attn_mem_eff`, through a pipeline of load latency λ (`MEM_LATENCY_S`); the per-unit
  work (paging metadata, split-KV merge) runs beside the stream; three launches (the KV-cache write,
  the attention, the split-KV merge).
- MoE (router top-k, dispatch, grouped GEMMs of the experts the step touches,
  combine). How tokens route fixes how many experts run and how many rows each
  gets: the fit and its held-out checks use the skew aiconfigurator-core's tables
  were collected with (`routing`: a power law of exponent 1.01 over experts);
  estimates route uniformly, as load-balanced trained routers do (`uniform_routing`:
  the workload's expected distinct experts, the pairs shared evenly among them); each
  touched expert's rows pad to the fused-MoE kernel's row block `BM`, and its
  columns to `BN`: the tile of the configuration the engine ships for that
  expert shape and GPU, or of its default configuration where it ships none
  (`gimletc.cost.moe_tiles`). Each output tile pays the same per-tile `tile_s`
  as a dense GEMM's, computes at the dense GEMMs' fraction of peak, and loads
  (BM·a + BN·w)·K operand bytes into shared memory at the kernel's operand-feed
  bandwidth `moe_feed_bw` (the L2-to-SM path a Triton kernel's loads take):
  `‖2·rows·3·h·f / (peak·gemm_eff) + tiles·tile_s / P, (touched·3hf·w + pairs·(2h+3f)·a) / (BW·mem_eff),
  Σ tiles·(BM·a + BN·w)·K / moe_feed_bw‖₃ + (pairs·(3f + h) + M·h)·a / (BW·mem_eff) + 6·kernel_s`
  — the last pass is the activation and the combine, separate kernels that no
  GEMM overlaps; fp8 experts compute at `gemm_fp8_eff` of the fp8 peak
  (six kernels: top-k, align, two grouped GEMMs, activation, combine).
- tensor-parallel all-reduce (the engine's own one-shot/two-shot kernel in a
  captured graph, NCCL for large messages), pipelined over chunks:
  `(√ar_latency_s + √(2·(n−1)/n · bytes / ar_bw))²`, the time of an optimally
  chunked pipeline whose stages cost `ar_latency_s`: it approaches `ar_bw` only
  for messages far above `ar_latency_s·ar_bw`.

What the tables do not measure is assumed and stated here: a layer runs
four fused elementwise kernels (`gimletc.cost.roofline.ELEMENTWISE_KERNELS`: (residual-add + RMSNorm twice,
rotary, the gated activation), each one pass over its tensors at `mem_eff`
plus `kernel_s`; a step is one graph launch (no host launch per kernel) and
pays `STEP_OVERHEAD_S` once (sampling, the graph launch).

Chips with no table get a profile derived from the nearest measured chip by
the rule in `derive_profile` (documented per chip in docs/hardware.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from gimletc.errors import GimletError, UnknownNameError
from gimletc.hardware.schema import Chip
from gimletc.models.workload import (
    DEFAULT_STACK,
    ENGINE_STACKS,
    STACK_ALIASES,
    STACKS,
    distinct_experts,
    resolve_stack,
)

__all__ = ["DEFAULT_STACK", "ENGINE_STACKS", "STACKS", "STACK_ALIASES", "EngineProfile", "engine_profile",
           "resolve_stack", "sram_floor_s"]

STEP_OVERHEAD_S = 20e-6  # per step: graph launch and sampling the engine does not overlap (assumed)

# Paged KV-cache reads are pointer chases (the page table, then the page), so an attention kernel's
# stream of KV is a pipeline whose stages wait a load's latency: by Little's law it reaches the
# bandwidth only once enough bytes are in flight. Streaming B bytes at bandwidth W with a load latency
# λ, an optimally chunked pipeline takes (√λ + √(B/W))²: λ for a tiny read, B/W for a huge one, and a
# slow approach in between. GEMMs stream contiguous weights through deep asynchronous copy pipelines
# (TMA, cp.async) that hide the latency, so their memory time stays B/W. λ = MEM_LATENCY_S is stated:
# GPU DRAM load-to-use latency is a few hundred nanoseconds to half a microsecond on A100/H100-class
# parts (published microbenchmarks, e.g. Chips and Cheese's H100 article, 2023); SRAM accelerators
# stream at zero.
MEM_LATENCY_S = 0.5e-6

# What each engine's tables are called in aiconfigurator-core, and the catalog chip of each system.
FRAMEWORK_OF: dict[str, str] = {"vllm": "vllm", "sglang": "sglang", "trtllm": "trtllm"}
SYSTEM_CHIP: dict[str, str] = {"a100_sxm": "a100-sxm-80gb", "h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200"}

DATA = Path(__file__).parent / "data" / "engines"

PARAMS: dict[str, tuple[float, float, float]] = {
    # name: (start, lower, upper) for the fit; fractions of peak are <= 1 by construction
    "gemm_eff": (0.7, 0.05, 1.0),
    "gemm_fp8_eff": (0.6, 0.05, 1.0),
    "gemm_wave_floor": (0.7, 0.2, 1.0),
    "mem_eff": (0.8, 0.05, 1.0),
    "kernel_s": (4e-6, 0.0, 5e-5),
    "tile_s": (1e-6, 0.0, 2e-5),
    "attn_eff": (0.5, 0.02, 1.0),
    "attn_mem_eff": (0.8, 0.05, 1.0),
    "attn_seq_s": (2e-8, 0.0, 1e-5),
    "attn_pad_keys": (500.0, 0.0, 1e4),
    "moe_feed_bw": (1e13, 1e11, 2e14),
    "ar_latency_s": (4e-6, 1e-8, 1e-4),
    "ar_bw": (2e11, 1e9, 2e12),
}
# A profile fits at most twelve of them: `gemm_fp8_eff` where the chip has fp8 units (elsewhere it equals
# `gemm_eff`), `gemm_wave_floor` where GEMMs are wave-quantised (Ampere; elsewhere it is 1).
MAX_FITTED = 12
WAVE_QUANTISED = frozenset({"ampere"})  # chip generations whose GEMMs launch one CTA per output tile


def fitted_params(chip: Chip) -> tuple[str, ...]:
    """The parameters a fit of `chip`'s profile adjusts (the others follow from them, see PARAMS)."""
    drop = set()
    if "fp8" not in chip.peak_flops:
        drop.add("gemm_fp8_eff")
    if chip.generation not in WAVE_QUANTISED:
        drop.add("gemm_wave_floor")
    return tuple(n for n in PARAMS if n not in drop)


def is_engine(stack: str) -> bool:
    return STACK_ALIASES.get(stack, stack) in ENGINE_STACKS


@dataclass(frozen=True)
class EngineProfile:
    """Fitted (or derived) parameters of one engine stack on one chip."""

    chip: str
    stack: str
    gemm_eff: float
    gemm_fp8_eff: float
    mem_eff: float
    kernel_s: float
    tile_s: float
    attn_eff: float
    attn_mem_eff: float
    attn_seq_s: float
    attn_pad_keys: float
    moe_feed_bw: float
    ar_latency_s: float
    ar_bw: float
    gemm_wave_floor: float = 1.0
    mem_latency_s: float = MEM_LATENCY_S  # stated, not fitted
    origin: str = ""
    bands: dict[str, float] = field(default_factory=dict, compare=False)  # op kind -> held-out p90 |rel. error|
    moe_kernels: dict[str, str] = field(default_factory=dict, compare=False)  # "E,k,h" -> library kernel measured
    measured: bool = True

    def params(self) -> dict[str, float]:
        return {n: getattr(self, n) for n in PARAMS}

    def with_params(self, values: dict[str, float]) -> EngineProfile:
        return replace(self, **values)


def profile_path(chip: str, stack: str) -> Path:
    return DATA / f"{chip}.{stack}.json"


def load_profile_file(path: Path) -> EngineProfile:
    raw = json.loads(path.read_text())
    names = {f.name for f in fields(EngineProfile)}
    kw: dict[str, Any] = {k: raw[k] for k in ("chip", "stack")}
    missing = [n for n in PARAMS if n not in raw["params"]]
    if missing:
        raise GimletError(f"engine profile {path.name} lacks {', '.join(missing)} (written by an older gimletc); "
                          f"refit it: make calibrate")
    kw.update({k: float(v) for k, v in raw["params"].items() if k in names})
    kw["origin"] = raw.get("origin", "")
    kw["bands"] = {k: float(v) for k, v in raw.get("bands", {}).items()}
    kw["moe_kernels"] = {str(k): str(v) for k, v in raw.get("moe_kernels", {}).items()}
    return EngineProfile(**kw)


@cache
def measured_profiles() -> dict[tuple[str, str], EngineProfile]:
    """Every committed profile, by (chip, stack)."""
    out = {}
    for f in sorted(DATA.glob("*.json")):
        p = load_profile_file(f)
        out[(p.chip, p.stack)] = p
    return out


def _nearest(chip: Chip, stack: str) -> EngineProfile:
    """The measured profile of `stack` whose chip is nearest to `chip` in (memory bandwidth, bf16 peak), log scale."""
    from gimletc.hardware.catalog import get_chip  # the catalog does not import this module

    cands = [p for (c, s), p in measured_profiles().items() if s == stack]
    if not cands:
        raise GimletError(f"no measured profile of stack {stack!r} to derive {chip.name}'s from")
    bw = chip.stream_bw or 1.0
    peak = chip.flops_for("bf16")[1]

    def dist(p: EngineProfile) -> tuple[float, str]:
        r = get_chip(p.chip)
        return abs(math.log(bw / r.stream_bw)) + abs(math.log(peak / r.flops_for("bf16")[1])), p.chip

    return min(cands, key=dist)


# SRAM accelerators: a per-step floor that no bandwidth or FLOP figure explains: instruction issue per
# layer, and, split over several cards, a synchronisation (a PCIe round trip and a small all-reduce)
# twice per layer. Per chip: (issue s per layer, sync s per cross-card all-reduce).
# d-Matrix Corsair, from d-Matrix's published figures (EE Times, Jan 2025): ~1 ms/token for Llama3-8B
# (32 layers) on 8 cards at batch 48-64, ~2 ms/token for Llama3-70B (80 layers) on a 128-chiplet (16-card)
# rack. Weights sit in SRAM in both, so streaming takes microseconds: the time is the floor. With 2 us
# of issue per layer (assumed), 32 x 2 us + 64 syncs x s = 1 ms gives s = 14.6 us; the 70B rack then
# predicts 80 x 2 us + 160 x 14.6 us = 2.5 ms against the published 2 ms (+25%).
# Cerebras WSE-3, from Cerebras' launch post ("Introducing Cerebras Inference", 27 Aug 2024): 1,800 tokens/s
# for Llama3.1-8B and 450 tokens/s for Llama3.1-70B, both at batch 1 in 16-bit weights. The 8B model fits
# one wafer (no cross-wafer sync): 0.556 ms / 32 layers = 17.4 us per layer; the 70B model needs four
# wafers: 2.22 ms = 80 x 17.4 us + 160 syncs x s gives s = 5.2 us.
# Groq LPU, from the same post ("2.4x faster than Groq" on Llama3.1-8B, so ~750 tokens/s): 1.33 ms per
# token over 32 layers; with Corsair's 2 us of issue per layer, 64 syncs take the rest: 19.8 us each.
# Groq's chip-to-chip bandwidth is not in its chip file, so gimletc cannot split a step over LPUs yet.
SRAM_FLOOR: dict[str, tuple[float, float]] = {
    "dmatrix-corsair": (2e-6, 14.6e-6),
    "groq-lpu": (2e-6, 19.8e-6),
    "cerebras-wse3": (17.4e-6, 5.2e-6),
}
SRAM_FLOOR_DEFAULT = (2e-6, 14.6e-6)


def sram_floor_s(chip: Chip, layers: float, chips: int) -> float:
    """The per-step latency floor of an SRAM accelerator running `layers` layers split over `chips` cards."""
    issue, sync = SRAM_FLOOR.get(chip.name, SRAM_FLOOR_DEFAULT)
    return layers * issue + (2 * layers * sync if chips > 1 else 0.0)
DERIVED_BAND_WIDENING = 0.15  # a derived GPU profile's band: its reference's band + 15 points (stated)
SRAM_BAND = 0.5  # SRAM accelerators and CPUs under an engine stack: +-50% (no measurement; stated)


def derive_profile(chip: Chip, stack: str) -> EngineProfile:
    """The profile of an unmeasured chip, by rule.

    GPUs take the nearest measured chip's (same stack) fractions of peak and
    fixed costs unchanged. SRAM accelerators take the same fractions of peak,
    no per-kernel costs (one statically scheduled program per step) and a
    per-step floor `SRAM_STEP_FLOOR_S`. CPUs take the nearest GPU's
    fractions for nothing: their engine-stack steps are priced by their own
    fitted efficiency (`gimletc.cost.roofline`), so this profile only carries
    the band."""
    ref = _nearest(chip, stack)
    bands = {k: v + DERIVED_BAND_WIDENING for k, v in ref.bands.items()}
    if chip.kind == "gpu":
        from gimletc.hardware.catalog import get_chip

        origin = (f"derived: {ref.chip} {stack} profile (nearest measured chip in memory bandwidth and bf16 peak), "
                  f"all-reduce bandwidth scaled by scale-up bandwidth, fused-MoE operand feed by bf16 peak; "
                  f"no measurement of {chip.name}")
        r = get_chip(ref.chip)
        ar_bw = ref.ar_bw * (chip.scale_up_bw or r.scale_up_bw or 1.0) / (r.scale_up_bw or 1.0)
        # The operand feed (L2 to the SMs) grows with the SMs and their clock, as the bf16 peak does.
        feed = ref.moe_feed_bw * chip.flops_for("bf16")[1] / r.flops_for("bf16")[1]
        return replace(ref, chip=chip.name, origin=origin, bands=bands, measured=False, ar_bw=ar_bw, moe_feed_bw=feed)
    # No cache hierarchy to feed tiles through either: a static program multiplies operands where they sit.
    zero = {"kernel_s": 0.0, "attn_seq_s": 0.0, "tile_s": 0.0, "gemm_wave_floor": 1.0, "mem_latency_s": 0.0,
            "moe_feed_bw": SRAM_FEED_BW}
    issue, sync = SRAM_FLOOR.get(chip.name, SRAM_FLOOR_DEFAULT)
    origin = (f"derived: {ref.chip} {stack} fractions of peak, no per-kernel costs (one static program per step), "
              f"per-step floor of {issue * 1e6:.3g} us issue per layer + {sync * 1e6:.3g} us per cross-card sync "
              f"({chip.kind}); no measurement of {chip.name}")
    return replace(ref, chip=chip.name, origin=origin, measured=False,
                   bands={k: SRAM_BAND for k in ref.bands}, **zero)


SRAM_FEED_BW = 1e18  # B/s: no operand-feed limit on SRAM accelerators (their feed term vanishes)

_DERIVED: dict[tuple, EngineProfile] = {}


def engine_profile(chip: Chip, stack: str) -> EngineProfile:
    """The profile of engine stack `stack` on `chip`: measured where a committed fit exists, else derived."""
    s = resolve_stack(stack)
    if s not in ENGINE_STACKS:
        raise GimletError(f"stack {stack!r} is not an engine stack; engine stacks: {', '.join(ENGINE_STACKS)}")
    p = measured_profiles().get((chip.name, s))
    if p is not None:
        return p
    key = (chip.name, s, chip.kind, chip.stream_bw, chip.scale_up_bw, chip.flops_for("bf16")[1])
    d = _DERIVED.get(key)
    if d is None:
        d = _DERIVED[key] = derive_profile(chip, s)
    return d


# ---- kernel physics (floats or numpy arrays alike) --------------------------------------------


def _max(a, b):  # noqa: ANN001, ANN202 - works on floats and numpy arrays
    return (a + b + abs(a - b)) * 0.5


def _ceil(x):  # noqa: ANN001, ANN202 - works on floats and numpy arrays
    return -(-x // 1.0)


# How a kernel's math and its memory streaming overlap. A roofline's max(compute, memory) assumes they
# overlap perfectly; near the ridge point they do not (the pipeline stalls on loads while tiles finish),
# and the kernel takes the OVERLAP-norm of the two: (c^q + m^q)^(1/q), equal to the max far from the ridge
# and 2^(1/q) = 1.26x of it on the ridge. Stated for every chip and engine (q = 3: the GEMM and fused-MoE
# tables of the H200 under vLLM, where it brings the GEMM fit from 7.2% to 6.8% median and the fused-MoE
# fit from 9.8% to 7.9%; see docs/cost-model.md), not fitted per profile. A fused-MoE kernel's operand feed is
# a third such stage: the norm takes any number of terms.
OVERLAP = 3.0


def _overlap(*terms):  # noqa: ANN002, ANN202 - works on floats and numpy arrays
    return sum(t ** OVERLAP for t in terms) ** (1.0 / OVERLAP)


def stream_s(p: EngineProfile, nbytes, bw: float, eff: float):  # noqa: ANN001, ANN201
    """Seconds for one kernel to stream `nbytes` at `eff` of `bw`, through the load-latency pipeline."""
    return (p.mem_latency_s ** 0.5 + (nbytes / (bw * eff)) ** 0.5) ** 2


# Output tile (rows, columns) of the dense GEMM kernels: CUTLASS/cuBLAS on Ampere run 128x128 tiles; Hopper
# and Blackwell's warp-specialised kernels 128x256 (stated, from the libraries' default tile shapes).
GEMM_TILE: dict[str, tuple[int, int]] = {"ampere": (128, 128)}
GEMM_TILE_DEFAULT = (128, 256)


def gemm_tile(chip: Chip) -> tuple[int, int]:
    return GEMM_TILE.get(chip.generation, GEMM_TILE_DEFAULT)


def gemm_s(p: EngineProfile, peak: float, bw: float, m, n, k, wbytes: float, abytes: float = 2.0,  # noqa: ANN001
           low_precision: bool = False, sms: float = 132.0, tile: tuple[int, int] = GEMM_TILE_DEFAULT):  # noqa: ANN201
    """Seconds of one GEMM of M rows, N columns, inner size K (weights `wbytes` per element) on `sms` SMs
    running `tile`-shaped output tiles."""
    eff = p.gemm_fp8_eff if low_precision else p.gemm_eff
    tiles = _ceil(m / tile[0]) * _ceil(n / tile[1])
    comp = 2.0 * m * n * k / (peak * eff)
    if p.gemm_wave_floor < 1.0:  # one CTA per tile: the last wave runs part-empty
        busy = tiles / (_ceil(tiles / sms) * sms)
        comp = comp / _max(busy, p.gemm_wave_floor)
    comp = comp + tiles * p.tile_s / sms
    act = m * k * (1.0 if low_precision else abytes) + m * n * abytes
    mem = (n * k * wbytes + act) / (bw * p.mem_eff)
    t = _overlap(comp, mem) + p.kernel_s
    if low_precision:  # a kernel before it quantises the input: finds its scale (one read), converts (read, write)
        t = t + m * k * (2.0 * abytes + 1.0) / (bw * p.mem_eff) + p.kernel_s
    return t


ATTN_KERNELS = 3  # per attention layer: the KV-cache write, the attention kernel, the split-KV merge (assumed)


def attention_s(p: EngineProfile, peak: float, bw: float, flops, kv_bytes, act_bytes, rows, head_dim,  # noqa: ANN001
                units):  # noqa: ANN001, ANN201
    """Seconds of one attention layer doing `flops` over `rows` query rows (sequences x new tokens x
    query heads) of `head_dim`, reading `kv_bytes` of KV cache at the attention kernels' own fraction of
    bandwidth, scheduled as `units` (sequence, KV head) work units. Each query row also pays for
    `attn_pad_keys` keys of fixed work (its tile's prologue, softmax rescaling, the causal diagonal), each
    unit for `attn_seq_s` (paging metadata, split-KV merge), the layer for its `ATTN_KERNELS` launches."""
    comp = (flops + 4.0 * rows * head_dim * p.attn_pad_keys) / (peak * p.attn_eff)
    mem = stream_s(p, kv_bytes + act_bytes, bw, p.attn_mem_eff)
    return _overlap(_max(comp, mem), units * p.attn_seq_s) + ATTN_KERNELS * p.kernel_s


MOE_KERNELS = 6  # per MoE layer: top-k, align/permute, two grouped GEMMs, activation, combine (assumed)
ROUTING_ALPHA = 1.01  # power-law exponent of tokens over experts: aiconfigurator-core's default ("power_law_1.01")


@lru_cache(maxsize=4096)
def routing(tokens: int, topk: int, experts: int, bm: int) -> tuple[float, float, float]:
    """(experts touched, rows after padding each to its `bm`-row block, row blocks) when `tokens` tokens route
    to `topk` of `experts` experts with the power-law skew the engine tables were measured with.

    aiconfigurator-core draws each expert's share from a power law of exponent `ROUTING_ALPHA` on [1, 0.8·M]
    (on [0.01, 2] when there are fewer token-expert pairs than experts), scales the shares to the M·k pairs and
    rounds them; this takes the expected draw (the E quantiles of that law) instead of a random one."""
    import numpy as np  # here, not at module level: estimates never route this way, and the CLI need not load it

    e, pairs = int(experts), int(round(tokens * topk))
    if e <= 0 or pairs <= 0:
        return 0.0, 0.0, 0.0
    lo, hi = (1.0, 0.8 * tokens) if pairs > e else (0.01, 2.0)
    a = 1.0 - ROUTING_ALPHA
    u = (np.arange(e) + 0.5) / e
    x = ((hi ** a - lo ** a) * u + lo ** a) ** (1.0 / a) if hi > lo else np.full(e, lo)
    c = np.sort(np.round(x / x.sum() * pairs))[::-1]
    d = int(pairs - c.sum())
    if d > 0:  # as the collector does: hand the remainder to the largest shares, take any excess from the smallest
        c[np.arange(d) % e] += 1.0
    elif d < 0:
        np.subtract.at(c, e - 1 - (np.arange(-d) % e), 1.0)
    c = np.maximum(c, 0.0)
    blocks = np.ceil(c / bm)
    return float((c > 0).sum()), float(blocks.sum() * bm), float(blocks.sum())


def uniform_routing(tokens: float, topk: int, experts: int, bm: int) -> tuple[float, float, float]:
    """(experts touched, padded rows, row blocks) as `routing` gives them, for a serving step whose tokens
    route top-`topk` uniformly (trained routers are load-balanced): the expected number of distinct experts
    (`distinct_experts`, the workload's count), the token-expert pairs shared evenly among them, each
    expert's share padded to the fused-MoE row block `bm`. The fit uses `routing`, the skew the tables were
    measured with, so that the fitted efficiencies are not biased by it; estimates use this."""
    pairs = tokens * topk
    if experts <= 0 or pairs <= 0:
        return 0.0, 0.0, 0.0
    touched = distinct_experts(experts, topk, tokens)
    blocks = touched * math.ceil(pairs / touched / bm - 1e-9)
    return touched, blocks * bm, blocks


def moe_s(p: EngineProfile, peak: float, bw: float, tokens, hidden, inter, topk, touched, rows, blocks,  # noqa: ANN001
          wbytes: float, abytes: float = 2.0, low_precision: bool = False, sms: float = 132.0,
          tile: tuple = (64, 64, 1.0, 0.0)):  # noqa: ANN201
    """Seconds of one MoE layer's fused kernels for `tokens` tokens on one chip holding experts of inner
    size `inter` (already divided by tensor parallelism), of which `touched` run on `rows` padded rows in
    `blocks` row blocks of the kernel's `tile` = (rows, columns, fed, streamed) (`routing`,
    `gimletc.cost.moe_tiles`). The grouped GEMMs compute at the dense GEMMs' fraction of peak
    (`gemm_fp8_eff` for low-precision experts); where `fed` (Triton kernels) they load each output tile's
    operands, (BM + BN)·K elements, at `moe_feed_bw`; where `streamed` (trtllm-gen kernels) each row block
    streams its expert's weights, elsewhere each touched expert's weights are read once."""
    bm, bn, fed, streamed = tile
    pairs = tokens * topk
    eff = p.gemm_fp8_eff if low_precision else p.gemm_eff
    oa = 1.0 if low_precision else abytes  # low-precision kernels quantise the activations they multiply
    t_up, t_down = blocks * _ceil(2.0 * inter / bn), blocks * _ceil(hidden / bn)  # gate/up, then down
    comp = 2.0 * rows * 3.0 * hidden * inter / (peak * eff) + (t_up + t_down) * p.tile_s / sms
    feed = fed * (t_up * hidden + t_down * inter) * (bm * oa + bn * wbytes) / p.moe_feed_bw
    streams = (1.0 - streamed) * touched + streamed * blocks
    mem = (streams * 3.0 * hidden * inter * wbytes + pairs * (2.0 * hidden + 3.0 * inter) * abytes) / (bw * p.mem_eff)
    aux = (pairs * (3.0 * inter + hidden) + tokens * hidden) * abytes / (bw * p.mem_eff)  # activation, combine
    return _overlap(comp, mem, feed) + aux + MOE_KERNELS * p.kernel_s


def allreduce_s(p: EngineProfile, nbytes, n):  # noqa: ANN001, ANN201
    """Seconds of one all-reduce of `nbytes` over `n` chips: a chunked pipeline of stages costing
    `ar_latency_s`, moving 2(n-1)/n of the bytes at `ar_bw`."""
    wire = 2.0 * (n - 1) / n * nbytes / p.ar_bw
    return (p.ar_latency_s ** 0.5 + wire ** 0.5) ** 2
