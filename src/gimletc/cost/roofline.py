"""Analytical cost of one forward step of a model on a chip.

Each operator of the step (see `gimletc.models.workload`) is priced with a
roofline: time = max(FLOPs / (peak x eff_compute), bytes / (bandwidth x
eff_memory)). Operators run one after another, so their times add; then the
fixed costs of the software stack are added:

- graph-captured steps (decode, verify, mixed): + layers x layer_overhead
- eager steps (prefill): the host issues each layer's kernels in
  `launch_s_per_layer` while the device computes; a chain of L layers whose
  device time per layer is g and host time c finishes after
  max(L.c, L.g) + min(c, g) / K (host and device overlap kernel by kernel,
  K = KERNELS_PER_LAYER), plus step_overhead (the host's own work per
  eager forward: inputs, masks, rotary tables, the embedding and LM head
  launches, that a graph replay does not redo).

Multi-token verification (speculative decoding) attends with a mask, which the
decode kernel cannot do: it runs a masked attention path that reads the KV
cache expanded to every query head, and that parallelises only over
(sequence, query head) pairs, so it fills min(1, B.H / compute_units) of the
chip.

On chips with on-chip SRAM, weights resident in SRAM stream at SRAM bandwidth;
the rest stream from off-chip memory. A step may be split over `chips` chips
(tensor parallel): work and bytes divide evenly, and every layer adds two
ring all-reduces of the activations over the chip's scale-up link.

That is the `reference` stack. Engine stacks (vllm, sglang, trtllm) price each
kernel with the fitted physics of `gimletc.cost.engine` instead: one graph
launch per step, per-kernel fixed costs, the engine's all-reduce. CPUs have no
engine: under an engine stack they run the fused operator counts with their
own fitted efficiency. SRAM accelerators under any stack pay their per-step
floor (`gimletc.cost.engine.sram_floor_s`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gimletc.cost.accounting import energy_j
from gimletc.cost.engine import (
    ATTN_KERNELS,
    MOE_KERNELS,
    STEP_OVERHEAD_S,
    EngineProfile,
    allreduce_s,
    attention_s,
    engine_profile,
    gemm_s,
    gemm_tile,
    moe_s,
    routing,
    sram_floor_s,
    uniform_routing,
)
from gimletc.cost.moe_tiles import moe_kernel, moe_tile
from gimletc.dtypes import compute_dtype, nbytes
from gimletc.errors import DoesNotFitError, EstimateError
from gimletc.hardware.schema import Chip
from gimletc.models.arch import Model
from gimletc.models.workload import ENGINE_STACKS, MASKED_VERIFY, Op, Workload, step_workload, visible_keys

ALLREDUCE_LATENCY_S = 5e-6
# Kernels in one reference-stack layer: host issue and device work overlap kernel by kernel, so an eager
# chain waits on one kernel's issue (or run) beyond the longer of the two, not on a whole layer's.
KERNELS_PER_LAYER = 40  # per ring step; NCCL small-message latency on NVLink is a few microseconds


@dataclass(frozen=True, slots=True)
class OpCost:
    """Predicted time of one operator kind in a step (all its instances together)."""

    name: str
    kind: str
    seconds: float
    compute_s: float
    memory_s: float
    flops: float
    bytes: float

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"


@dataclass(frozen=True)
class MemoryNeed:
    weights: float
    kv: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.kv + self.activations


@dataclass(frozen=True)
class PhaseEstimate:
    """Predicted cost of one step; every number here comes from the cost model."""

    model: str
    chip: str
    phase: str
    batch: int
    tokens: int
    ctx: int
    chips: int
    latency_s: float
    flops: float
    bytes: float
    compute_s: float  # time of the operators bound by compute
    memory_s: float  # time of the operators bound by memory
    overhead_s: float  # fixed costs (launch, kernel boundaries, step) and communication
    energy_j: float
    memory: MemoryNeed
    weights_in_sram: float  # fraction of weights resident in on-chip SRAM
    ops: tuple[OpCost, ...] = field(default_factory=tuple)

    @property
    def bound(self) -> str:
        """Which term dominates: "compute", "memory" or "overhead"."""
        parts = {"compute": self.compute_s, "memory": self.memory_s, "overhead": self.overhead_s}
        return max(parts, key=parts.__getitem__)

    @property
    def latency_ms(self) -> float:
        return self.latency_s * 1e3

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.tokens / self.latency_s

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "chip": self.chip,
            "chips": self.chips,
            "phase": self.phase,
            "batch": self.batch,
            "tokens": self.tokens,
            "ctx": self.ctx,
            "latency_ms": self.latency_s * 1e3,
            "flops": self.flops,
            "bytes": self.bytes,
            "bound": self.bound,
            "compute_ms": self.compute_s * 1e3,
            "memory_ms": self.memory_s * 1e3,
            "overhead_ms": self.overhead_s * 1e3,
            "energy_j": self.energy_j,
            "tokens_per_s": self.tokens_per_s,
            "memory_needed_bytes": {
                "weights": self.memory.weights,
                "kv_cache": self.memory.kv,
                "activations": self.memory.activations,
                "total": self.memory.total,
            },
            "weights_in_sram": self.weights_in_sram,
            "source": "cost model (gimletc.cost.roofline)",
        }


def memory_need(model: Model, batch: int, tokens: int, ctx: int) -> MemoryNeed:
    """Bytes a step needs resident: all weights, the KV cache after the step, peak activations."""
    return MemoryNeed(
        model.weight_bytes, model.kv_cache_bytes(ctx + tokens, batch), model.activation_bytes(batch, tokens)
    )


def min_chips(model: Model, chip: Chip, batch: int = 1, tokens: int = 1, ctx: int = 0) -> int:
    """Fewest chips of this kind whose combined memory holds the step's weights, KV and activations."""
    need = memory_need(model, batch, tokens, ctx).total
    return max(1, -(-int(need) // max(1, int(chip.capacity_bytes))))


def check_fits(model: Model, chip: Chip, need: MemoryNeed, chips: int) -> None:
    cap = chip.capacity_bytes * chips
    if need.total > cap:
        n = -(-int(need.total) // max(1, int(chip.capacity_bytes)))
        on = chip.name if chips == 1 else f"{chips}x {chip.name}"
        raise DoesNotFitError(
            model.name,
            on,
            need.total,
            cap,
            f"weights {need.weights / 1e9:.1f} GB + KV cache {need.kv / 1e9:.1f} GB + activations "
            f"{need.activations / 1e9:.1f} GB; needs at least {n} chips of this kind",
        )


def _tiered_s(chip: Chip, nbytes: float, sram_fraction: float) -> float:
    """Seconds to stream `nbytes`, the fraction held in SRAM at SRAM bandwidth and the rest from off-chip memory."""
    eff = chip.efficiency.memory
    in_sram = nbytes * sram_fraction
    t = in_sram / (chip.sram_bw * eff) if in_sram else 0.0
    rest = nbytes - in_sram
    if rest:
        t += rest / (chip.stream_bw * eff)
    return t


@dataclass(frozen=True)
class _Tiers:
    """Fractions of the weights and of the KV cache resident in on-chip SRAM."""

    weights: float = 0.0
    kv: float = 0.0


def sram_tiers(model: Model, chip: Chip, need: MemoryNeed, chips: int) -> _Tiers:
    """Weights fill SRAM first, then the KV cache takes what room is left; the rest lives off-chip."""
    if not chip.sram_bytes:
        return _Tiers()
    room = chip.sram_bytes * chips
    w = min(1.0, room / need.weights) if need.weights else 1.0
    left = max(0.0, room - need.weights)
    kv = min(1.0, left / need.kv) if need.kv else 1.0
    return _Tiers(w, kv)


def _op_cost(op: Op, model: Model, chip: Chip, phase: str, chips: int, tiers: _Tiers, masked: bool = True,
             peaks: tuple[float, float] | None = None) -> OpCost:
    """`peaks`: (weights', experts') GEMM peak FLOP/s, when the caller has them."""
    e = chip.efficiency
    n = op.count
    flops, wbytes = op.flops * n / chips, op.weight_bytes * n / chips
    dbytes = (op.act_bytes + op.kv_bytes) * n / chips
    stream = op.act_bytes * n / chips / (chip.stream_bw * e.memory) + _tiered_s(chip, op.kv_bytes * n / chips, tiers.kv)
    if op.kind == "gemm":
        if peaks is None:
            peaks = _gemm_peaks(model, chip)
        peak = peaks[1] if op.name == "moe.experts" else peaks[0]
        compute = flops / (peak * e.gemm)
        memory = _tiered_s(chip, wbytes, tiers.weights) + stream
    elif op.kind == "attention":
        _, peak = chip.flops_for(model.act_dtype)
        compute = flops / (peak * e.attention)
        memory = stream
        if phase == "verify" and masked and op.m > 1 and model.mla is None:
            # Masked path: K and V expanded to every query head, parallel over (sequence, head) pairs only.
            expand = model.heads / model.kv_heads
            # Only GPUs schedule this path as one thread block per pair over their SMs.
            occupancy = min(1.0, op.parallel / chips / chip.compute_units) if chip.kind == "gpu" else 1.0
            memory = op.kv_bytes * expand * n / chips / (chip.stream_bw * e.masked_attention * occupancy)
            memory += op.act_bytes * n / chips / (chip.stream_bw * e.memory)
    else:  # elementwise, embed: pure data movement
        compute = 0.0
        memory = _tiered_s(chip, wbytes, tiers.weights) + stream
    return OpCost(op.name, op.kind, max(compute, memory), compute, memory, flops * chips, (wbytes + dbytes) * chips)


def _gemm_peaks(model: Model, chip: Chip) -> tuple[float, float]:
    """Peak FLOP/s of the GEMMs over the model's weights and over its experts, in their compute formats."""
    w = chip.flops_for(compute_dtype(model.weight_dtype, chip.peak_flops, model.compute_dtype, chip.name))[1]
    if model.moe is None or model.expert_dtype == model.weight_dtype:
        return w, w
    return w, chip.flops_for(compute_dtype(model.expert_dtype, chip.peak_flops, model.compute_dtype, chip.name))[1]


def _allreduce_s(model: Model, chip: Chip, work: Workload, chips: int) -> float:
    """Two ring all-reduces of the layer's activations per layer when split over `chips` chips."""
    if chips == 1:
        return 0.0
    if chip.scale_up_bw is None:
        raise EstimateError(f"chip {chip.name} has no scale_up_bw, so a step cannot be split over {chips} chips")
    m = sum(b * t for b, t in _token_parts(work))
    payload = m * model.hidden * nbytes(model.act_dtype)
    one = 2 * (chips - 1) / chips * payload / chip.scale_up_bw + 2 * (chips - 1) * ALLREDUCE_LATENCY_S
    return 2 * work.layers * one * work.overhead_share  # one all-reduce per block and layer


def estimate_workload(model: Model, chip: Chip, work: Workload, chips: int = 1, check_fit: bool = True,
                      profile: EngineProfile | None = None, table_routing: bool = False) -> PhaseEstimate:
    """Price an already-built workload on `chips` chips of one kind.

    Engine stacks use `profile` (default: the chip's committed or derived profile of the stack). MoE tokens
    route uniformly (`uniform_routing`), unless `table_routing` asks for the skew aiconfigurator-core's
    tables were measured with (`routing`: the held-out checks against those tables)."""
    if chips < 1:
        raise EstimateError(f"chips must be >= 1; got {chips}")
    need = memory_need(model, work.batch, work.tokens, work.ctx)
    if check_fit:
        check_fits(model, chip, need, chips)
    tiers = sram_tiers(model, chip, need, chips)
    if work.stack in ENGINE_STACKS and chip.kind != "cpu":
        return _engine_estimate(model, chip, work, chips, need, tiers, profile or engine_profile(chip, work.stack),
                                table_routing)
    masked = MASKED_VERIFY[work.stack]
    peaks = _gemm_peaks(model, chip)
    costs = tuple(_op_cost(op, model, chip, work.phase, chips, tiers, masked, peaks) for op in work.ops)
    device_s = sum(c.seconds for c in costs)
    compute_s = sum(c.seconds for c in costs if c.bound == "compute")
    memory_s = device_s - compute_s
    comm_s = _allreduce_s(model, chip, work, chips)

    # Fixed costs scale with the layers this workload covers (a pipeline stage covers some; one block of
    # an attention/FFN split carries half of each layer's kernels).
    e, L, share = chip.efficiency, work.layers, work.overhead_share
    if work.phase == "prefill":  # eager: host issue overlaps device work layer by layer
        g = (device_s + comm_s) / L + e.layer_overhead_s * share
        c = e.launch_s_per_layer * share
        latency = max(L * c, L * g) + min(c, g) / KERNELS_PER_LAYER + e.step_overhead_s
    else:  # captured graph: one replay, no per-step host work to wait for
        latency = device_s + comm_s + L * e.layer_overhead_s * share
    if chip.kind == "sram-accelerator":
        latency = max(latency, sram_floor_s(chip, L * share, chips))
    return _result(model, chip, work, chips, need, tiers, costs, latency, compute_s, memory_s)


def _result(model: Model, chip: Chip, work: Workload, chips: int, need: MemoryNeed, tiers: _Tiers,
            costs: tuple[OpCost, ...], latency: float, compute_s: float, memory_s: float) -> PhaseEstimate:
    # The units work during operator time; fixed overheads leave them near idle.
    device_s = compute_s + memory_s
    energy = energy_j(chip, device_s, latency, chips)
    return PhaseEstimate(
        model=model.name,
        chip=chip.name,
        phase=work.phase,
        batch=work.batch,
        tokens=work.tokens,
        ctx=work.ctx,
        chips=chips,
        latency_s=latency,
        flops=work.flops,
        bytes=work.bytes,
        compute_s=compute_s,
        memory_s=memory_s,
        overhead_s=latency - device_s,
        energy_j=energy,
        memory=need,
        weights_in_sram=tiers.weights,
        ops=costs,
    )


# ---- engine stacks -------------------------------------------------------------------------

ROW_PARALLEL = frozenset({"attn.o", "ffn.down", "moe.shared.down"})  # split along K under tensor parallelism
REPLICATED = frozenset({"moe.router"})  # every chip computes the whole router
LOW_PRECISION = frozenset({"fp8", "fp4", "fp6", "int8", "int4", "mxint8", "mxint4"})
ELEMENTWISE_KERNELS = {"norm_residual_rope": 3, "ffn.act": 1, "moe.act": 1}  # fused kernels per layer (assumed)


def _tier_bw(chip: Chip, sram_fraction: float) -> float:
    """Effective bandwidth of bytes of which `sram_fraction` stream from SRAM and the rest off-chip."""
    if not sram_fraction or not chip.sram_bw:
        return chip.stream_bw
    if sram_fraction >= 1.0 or not chip.memory_bw:
        return chip.sram_bw
    return 1.0 / (sram_fraction / chip.sram_bw + (1.0 - sram_fraction) / chip.memory_bw)


def _gemm_mode(chip: Chip, model: Model, dtype: str) -> tuple[float, bool]:
    """(peak FLOP/s, low precision?) of GEMMs over weights stored in `dtype`."""
    c = compute_dtype(dtype, chip.peak_flops, model.compute_dtype, chip.name)
    return chip.flops_for(c)[1], c in LOW_PRECISION


def _engine_estimate(model: Model, chip: Chip, work: Workload, chips: int, need: MemoryNeed, tiers: _Tiers,
                     p: EngineProfile, table_routing: bool = False) -> PhaseEstimate:
    ab = nbytes(model.act_dtype)
    wb, eb = nbytes(model.weight_dtype), nbytes(model.expert_dtype)
    bw, bw_w, bw_kv = chip.stream_bw, _tier_bw(chip, tiers.weights), _tier_bw(chip, tiers.kv)
    peak_w, low_w = _gemm_mode(chip, model, model.weight_dtype)
    peak_a = chip.flops_for(model.act_dtype)[1]
    sms, tile = float(chip.compute_units), gemm_tile(chip)
    costs: list[OpCost] = []
    compute_s = memory_s = 0.0
    for op in work.ops:
        n = op.count
        flops, nb = op.flops * n, op.bytes * n
        if op.name == "moe.experts":
            moe = model.moe
            assert moe is not None
            peak_e, low_e = _gemm_mode(chip, model, model.expert_dtype)
            kernel = moe_kernel(p.stack, chip.generation, moe.experts, moe.active_experts, model.hidden, p.moe_kernels)
            tile = moe_tile(p.stack, chip.name, moe.experts, op.n / chips, op.seqs, moe.active_experts, kernel)
            touched, rows, blocks = (routing(int(op.seqs), moe.active_experts, moe.experts, tile[0]) if table_routing
                                     else uniform_routing(op.seqs, moe.active_experts, moe.experts, tile[0]))
            t1 = moe_s(p, peak_e, bw_w, op.seqs, op.k, op.n / chips, moe.active_experts, touched, rows, blocks, eb, ab,
                       low_e, sms, tile)
            fixed = MOE_KERNELS * p.kernel_s
            comp = op.flops / chips / (peak_e * (p.gemm_fp8_eff if low_e else p.gemm_eff))
            mem = op.bytes / chips / (bw_w * p.mem_eff)
        elif op.kind == "gemm":
            k, cols = op.k, op.n
            if op.name in ROW_PARALLEL:
                k /= chips
            elif op.name not in REPLICATED:
                cols /= chips
            t1 = gemm_s(p, peak_w, bw_w, op.m, cols, k, wb, ab, low_w, sms, tile)
            fixed = p.kernel_s
            comp = 2.0 * op.m * cols * k / (peak_w * (p.gemm_fp8_eff if low_w else p.gemm_eff))
            mem = (cols * k * wb + op.m * (k + cols) * ab) / (bw_w * p.mem_eff)
        elif op.kind == "attention":
            kv_heads = max(1.0, model.kv_heads / chips)
            rows = op.seqs * op.m * model.heads / chips
            d = op.flops / max(1.0, 4.0 * op.seqs * model.heads * visible_keys(int(op.m), int(op.ctx), None)) \
                if model.mla is not None else model.head_dim
            fixed = ATTN_KERNELS * p.kernel_s + op.seqs * kv_heads * p.attn_seq_s
            t1 = attention_s(p, peak_a, bw_kv, op.flops / chips, op.kv_bytes / chips, op.act_bytes / chips, rows, d,
                             op.seqs * kv_heads)
            comp = op.flops / chips / (peak_a * p.attn_eff)
            mem = op.kv_bytes / chips / (bw_kv * p.attn_mem_eff)
        else:  # fused elementwise kernels and the embedding gather: one pass over their bytes
            kernels = ELEMENTWISE_KERNELS.get(op.name, 1)
            fixed = kernels * p.kernel_s
            comp, mem = 0.0, op.bytes / chips / (bw * p.mem_eff)
            t1 = mem + fixed
        c = OpCost(op.name, op.kind, t1 * n, comp * n, mem * n, flops, nb)
        costs.append(c)
        busy = (t1 - fixed) * n
        if c.bound == "compute":
            compute_s += busy
        else:
            memory_s += busy
    L, share = work.layers, work.overhead_share
    if chips > 1:
        payload = sum(b * t for b, t in _token_parts(work)) * model.hidden * ab
        if chip.kind == "gpu":
            one = allreduce_s(p, payload, chips)
        else:  # cross-card latency is in the chip's step floor; the bytes cross its scale-up link
            if chip.scale_up_bw is None:
                raise EstimateError(f"chip {chip.name} has no scale_up_bw, so a step cannot be split over {chips} chips")
            one = 2 * (chips - 1) / chips * payload / chip.scale_up_bw
        ar = 2 * L * share * one
        costs.append(OpCost("allreduce", "comm", ar, 0.0, 0.0, 0.0, 2 * L * share * payload))
    latency = sum(c.seconds for c in costs)
    if chip.kind == "sram-accelerator":
        latency = max(latency, sram_floor_s(chip, L * share, chips))
    else:
        latency += STEP_OVERHEAD_S
    return _result(model, chip, work, chips, need, tiers, tuple(costs), latency, compute_s, memory_s)


def _token_parts(work: Workload) -> list[tuple[int, int]]:
    """(sequences, new tokens each) of a workload: the attention ops' parts (a mixed step has two)."""
    seen = [(int(o.seqs), int(o.m)) for o in work.ops if o.kind == "attention"]
    parts = list(dict.fromkeys(seen)) if seen else [(work.batch, work.tokens)]
    return parts


def estimate(
    model: Model,
    chip: Chip,
    phase: str,
    batch: int = 1,
    tokens: int = 1,
    ctx: int = 0,
    chips: int = 1,
    check_fit: bool = True,
    stack: str = "reference",
) -> PhaseEstimate:
    """Predicted latency, FLOPs, bytes, bound and energy of one step of `phase` under `stack`.

    Raises DoesNotFitError (naming the model, the chip and both byte counts)
    when weights + KV + activations exceed the chips' memory."""
    return estimate_workload(model, chip, step_workload(model, phase, batch, tokens, ctx, stack), chips, check_fit)
