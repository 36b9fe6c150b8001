"""Engine stacks: step times as a serving engine (vLLM, SGLang, TensorRT-LLM) runs them.

An engine stack prices each kernel of a step with a small physical model whose
dozen parameters are fitted, per chip and engine, to the kernel tables NVIDIA
measured with those engines (`aiconfigurator-core`; see
`gimletc.cost.aiconfigurator`, which refits them, and `docs/cost-model.md`):

- GEMM (projections, router, LM head), per instance:
  `max(2·M·N·K / (peak[dtype]·gemm_eff), bytes / (BW·mem_eff)) + kernel_s`;
  fp8 GEMMs run at `gemm_fp8_eff` of the fp8 peak and first quantise their
  input activations (one more pass over them); weight-only formats (int4,
  int8, mxfp4 on a chip without fp4 units) stream their own bytes and compute
  in bf16.
- attention, one kernel per layer for every sequence of the step, each over
  its own context (decode, a prefill chunk after its prefix, a verify of k
  tokens packed per KV head):
  `max((FLOPs + 4·rows·d·attn_pad_keys) / (peak·attn_eff), KV bytes / (BW·mem_eff))
  + attn_kernel_s + sequences·KV heads·attn_seq_s`.
- MoE (router top-k, dispatch, grouped GEMMs of the experts the step touches,
  combine): the grouped GEMM pads each touched expert's rows by
  `moe_pad_tokens` (its tile), reads the touched experts' weights and moves
  every token-expert pair's activations twice (dispatch and combine):
  `max(2·(pairs + touched·pad)·3·h·f / (peak·moe_eff), bytes / (BW·mem_eff)) + 6·kernel_s`;
  fp8 experts run at `moe_eff · gemm_fp8_eff / gemm_eff` of the fp8 peak
  (six kernels: top-k, permute, two grouped GEMMs, activation, combine).
- tensor-parallel all-reduce (the engine's own one-shot/two-shot kernel in a
  captured graph): `ar_latency_s + 2·(n−1)/n · bytes / ar_bw`.

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
from functools import cache
from pathlib import Path
from typing import Any

from gimletc.errors import GimletError, UnknownNameError
from gimletc.hardware.schema import Chip
from gimletc.models.workload import DEFAULT_STACK, ENGINE_STACKS, STACK_ALIASES, STACKS, resolve_stack

__all__ = ["DEFAULT_STACK", "ENGINE_STACKS", "STACKS", "STACK_ALIASES", "EngineProfile", "engine_profile",
           "resolve_stack", "sram_floor_s"]

STEP_OVERHEAD_S = 20e-6  # per step: graph launch and sampling the engine does not overlap (assumed)

# What each engine's tables are called in aiconfigurator-core, and the catalog chip of each system.
FRAMEWORK_OF: dict[str, str] = {"vllm": "vllm", "sglang": "sglang", "trtllm": "trtllm"}
SYSTEM_CHIP: dict[str, str] = {"a100_sxm": "a100-sxm-80gb", "h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200"}

DATA = Path(__file__).parent / "data" / "engines"

PARAMS: dict[str, tuple[float, float, float]] = {
    # name: (start, lower, upper) for the fit; fractions of peak are <= 1 by construction
    "gemm_eff": (0.7, 0.05, 1.0),
    "gemm_fp8_eff": (0.6, 0.05, 1.0),
    "mem_eff": (0.8, 0.05, 1.0),
    "kernel_s": (4e-6, 0.0, 5e-5),
    "attn_eff": (0.5, 0.02, 1.0),
    "attn_kernel_s": (1e-5, 0.0, 1e-4),
    "attn_seq_s": (2e-8, 0.0, 1e-5),
    "attn_pad_keys": (500.0, 0.0, 1e4),
    "moe_eff": (0.5, 0.02, 1.0),
    "moe_pad_tokens": (32.0, 0.0, 512.0),
    "ar_latency_s": (8e-6, 0.0, 1e-4),
    "ar_bw": (2e11, 1e9, 2e12),
}


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
    attn_eff: float
    attn_kernel_s: float
    attn_seq_s: float
    attn_pad_keys: float
    moe_eff: float
    moe_pad_tokens: float
    ar_latency_s: float
    ar_bw: float
    origin: str = ""
    bands: dict[str, float] = field(default_factory=dict, compare=False)  # op kind -> held-out p90 |rel. error|
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
    kw.update({k: float(v) for k, v in raw["params"].items() if k in names})
    kw["origin"] = raw.get("origin", "")
    kw["bands"] = {k: float(v) for k, v in raw.get("bands", {}).items()}
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
                  f"all-reduce bandwidth scaled by scale-up bandwidth; no measurement of {chip.name}")
        r = get_chip(ref.chip)
        ar_bw = ref.ar_bw * (chip.scale_up_bw or r.scale_up_bw or 1.0) / (r.scale_up_bw or 1.0)
        return replace(ref, chip=chip.name, origin=origin, bands=bands, measured=False, ar_bw=ar_bw)
    zero = {"kernel_s": 0.0, "attn_kernel_s": 0.0, "attn_seq_s": 0.0}
    issue, sync = SRAM_FLOOR.get(chip.name, SRAM_FLOOR_DEFAULT)
    origin = (f"derived: {ref.chip} {stack} fractions of peak, no per-kernel costs (one static program per step), "
              f"per-step floor of {issue * 1e6:.3g} us issue per layer + {sync * 1e6:.3g} us per cross-card sync "
              f"({chip.kind}); no measurement of {chip.name}")
    return replace(ref, chip=chip.name, origin=origin, measured=False,
                   bands={k: SRAM_BAND for k in ref.bands}, **zero)


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


def gemm_s(p: EngineProfile, peak: float, bw: float, m, n, k, wbytes: float, abytes: float = 2.0,  # noqa: ANN001
           low_precision: bool = False):  # noqa: ANN201
    """Seconds of one GEMM of M rows, N columns, inner size K (weights `wbytes` per element)."""
    eff = p.gemm_fp8_eff if low_precision else p.gemm_eff
    comp = 2.0 * m * n * k / (peak * eff)
    act = (m * k + m * n) * abytes
    if low_precision:  # quantise the input activations first: read them, write them at one byte
        act = act + m * k * (abytes + 1.0)
    mem = (n * k * wbytes + act) / (bw * p.mem_eff)
    return _max(comp, mem) + p.kernel_s


def attention_s(p: EngineProfile, peak: float, bw: float, flops, kv_bytes, act_bytes, rows, head_dim,  # noqa: ANN001
                units):  # noqa: ANN001, ANN201
    """Seconds of one attention kernel doing `flops` over `rows` query rows (sequences x new tokens x
    query heads) of `head_dim`, reading `kv_bytes` of KV cache, scheduled as `units` (sequence, KV head)
    work units. Each query row also pays for `attn_pad_keys` keys of fixed work (its tile's prologue,
    softmax rescaling, the causal diagonal), each unit for `attn_seq_s` (paging metadata, split-KV merge)."""
    comp = (flops + 4.0 * rows * head_dim * p.attn_pad_keys) / (peak * p.attn_eff)
    mem = (kv_bytes + act_bytes) / (bw * p.mem_eff)
    return _max(comp, mem) + p.attn_kernel_s + units * p.attn_seq_s


MOE_KERNELS = 6  # per MoE layer: top-k, align/permute, two grouped GEMMs, activation, combine (assumed)


def moe_s(p: EngineProfile, peak: float, bw: float, tokens, hidden, inter, topk, experts, touched,  # noqa: ANN001
          wbytes: float, abytes: float = 2.0, low_precision: bool = False):  # noqa: ANN201
    """Seconds of one MoE layer's fused kernels for `tokens` tokens on one chip holding `experts`
    experts of inner size `inter` (already divided by tensor parallelism); `touched` of them run.
    Low-precision (fp8, fp4) grouped GEMMs keep the fraction of their peak that the chip's dense
    low-precision GEMMs keep: `moe_eff · gemm_fp8_eff / gemm_eff`."""
    pairs = tokens * topk
    rows = pairs + touched * p.moe_pad_tokens  # each touched expert's rows padded to its tiles
    eff = p.moe_eff * (p.gemm_fp8_eff / p.gemm_eff if low_precision else 1.0)
    comp = 2.0 * rows * 3.0 * hidden * inter / (peak * eff)
    mem = (touched * 3.0 * hidden * inter * wbytes + pairs * (2.0 * hidden + 3.0 * inter) * abytes * 2.0) / (bw * p.mem_eff)
    return _max(comp, mem) + MOE_KERNELS * p.kernel_s


def allreduce_s(p: EngineProfile, nbytes, n):  # noqa: ANN001, ANN201
    """Seconds of one all-reduce of `nbytes` over `n` chips."""
    return p.ar_latency_s + 2.0 * (n - 1) / n * nbytes / p.ar_bw
