"""Analytical cost of one forward step of a model on a chip.

Each operator of the step (see `gimletc.models.workload`) is priced with a
roofline: time = max(FLOPs / (peak x eff_compute), bytes / (bandwidth x
eff_memory)). Operators run one after another, so their times add; then the
fixed costs of the software stack are added:

- graph-captured steps (decode, verify): + layers x layer_overhead + step_overhead
- eager steps (prefill): the host issues each layer's kernels in
  `launch_s_per_layer` while the device computes; a chain of L layers whose
  device time per layer is g and host time c finishes after
  max(L.c, L.g) + min(c, g), plus step_overhead.

Multi-token verification (speculative decoding) attends with a mask, which the
decode kernel cannot do: it runs a masked attention path that reads the KV
cache expanded to every query head, and that parallelises only over
(sequence, query head) pairs, so it fills min(1, B.H / compute_units) of the
chip.

On chips with on-chip SRAM, weights resident in SRAM stream at SRAM bandwidth;
the rest stream from off-chip memory. A step may be split over `chips` chips
(tensor parallel): work and bytes divide evenly, and every layer adds two
ring all-reduces of the activations over the chip's scale-up link.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gimletc.cost.accounting import energy_j
from gimletc.dtypes import nbytes
from gimletc.errors import DoesNotFitError, EstimateError
from gimletc.hardware.schema import Chip
from gimletc.models.arch import Model
from gimletc.models.workload import MASKED_VERIFY, Op, Workload, step_workload

ALLREDUCE_LATENCY_S = 5e-6  # per ring step; NCCL small-message latency on NVLink is a few microseconds


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


def _op_cost(op: Op, model: Model, chip: Chip, phase: str, chips: int, tiers: _Tiers, masked: bool = True) -> OpCost:
    e = chip.efficiency
    n = op.count
    flops, wbytes = op.flops * n / chips, op.weight_bytes * n / chips
    dbytes = (op.act_bytes + op.kv_bytes) * n / chips
    stream = op.act_bytes * n / chips / (chip.stream_bw * e.memory) + _tiered_s(chip, op.kv_bytes * n / chips, tiers.kv)
    if op.kind == "gemm":
        dtype = model.expert_dtype if op.name == "moe.experts" else model.weight_dtype
        _, peak = chip.flops_for(dtype)
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


def _allreduce_s(model: Model, chip: Chip, work: Workload, chips: int) -> float:
    """Two ring all-reduces of the layer's activations per layer when split over `chips` chips."""
    if chips == 1:
        return 0.0
    if chip.scale_up_bw is None:
        raise EstimateError(f"chip {chip.name} has no scale_up_bw, so a step cannot be split over {chips} chips")
    m = work.batch * work.tokens
    payload = m * model.hidden * nbytes(model.act_dtype)
    one = 2 * (chips - 1) / chips * payload / chip.scale_up_bw + 2 * (chips - 1) * ALLREDUCE_LATENCY_S
    return 2 * work.layers * one * work.overhead_share  # one all-reduce per block and layer


def estimate_workload(model: Model, chip: Chip, work: Workload, chips: int = 1, check_fit: bool = True) -> PhaseEstimate:
    """Price an already-built workload on `chips` chips of one kind."""
    if chips < 1:
        raise EstimateError(f"chips must be >= 1; got {chips}")
    need = memory_need(model, work.batch, work.tokens, work.ctx)
    if check_fit:
        check_fits(model, chip, need, chips)
    tiers = sram_tiers(model, chip, need, chips)
    masked = MASKED_VERIFY[work.stack]
    costs = tuple(_op_cost(op, model, chip, work.phase, chips, tiers, masked) for op in work.ops)
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
        latency = max(L * c, L * g) + min(c, g) + e.step_overhead_s
    else:  # captured graph
        latency = device_s + comm_s + L * e.layer_overhead_s * share + e.step_overhead_s
    overhead_s = latency - device_s

    # The units work during operator time; fixed overheads leave them near idle.
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
        overhead_s=overhead_s,
        energy_j=energy,
        memory=need,
        weights_in_sram=tiers.weights,
        ops=costs,
    )


def estimate(
    model: Model,
    chip: Chip,
    phase: str,
    batch: int = 1,
    tokens: int = 1,
    ctx: int = 0,
    chips: int = 1,
    check_fit: bool = True,
) -> PhaseEstimate:
    """Predicted latency, FLOPs, bytes, bound and energy of one step of `phase`.

    Raises DoesNotFitError (naming the model, the chip and both byte counts)
    when weights + KV + activations exceed the chips' memory."""
    return estimate_workload(model, chip, step_workload(model, phase, batch, tokens, ctx), chips, check_fit)
