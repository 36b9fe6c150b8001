"""Step times of one model on a group of chips, as the load simulator asks for them, cached.

Every number comes from the cost model (`gimletc.cost.roofline`); this module
only decides which steps to price and remembers them, so 100,000 requests
cost a few thousand cost-model calls:

- prefill of `batch` prompts of `tokens` tokens after `ctx` cached ones:
  priced exactly and memoised per (batch, tokens, ctx);
- decode of a running batch of B sequences at mean context C: exact in B,
  linear interpolation in C between grid points `CTX_STEP` tokens apart
  (a decode step's time is linear in context: its attention reads B·C cache
  entries), memoised per grid point;
- a mixed iteration (chunked prefill): one graph-launched forward pass whose
  GEMMs see the c prompt tokens and the B decode tokens together (reading the
  weights once), while attention serves each sequence over its own context:
  the decode sequences over theirs, the chunk causally after its prefix
  (`gimletc.models.workload.mixed_workload`); exact in B, c and the chunk's
  context, linear in the decode context between grid points.

A `SoftwareProfile` says which serving stack is modelled. The engine stacks
"vllm", "sglang" and "trtllm" price kernels fitted to measured engine tables
(`gimletc.cost.engine`); "calibrated" (the `reference` stack) is the cost
model as fitted to the PyTorch-level H200 rows (~40 kernels per layer, ring
all-reduce). "fused" and "fused-engine" are deprecated names of "vllm".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gimletc.cost.roofline import ALLREDUCE_LATENCY_S, KERNELS_PER_LAYER, estimate_workload
from gimletc.dtypes import nbytes
from gimletc.errors import GimletError
from gimletc.hardware.schema import Chip
from gimletc.models import Model, step_workload
from gimletc.models.workload import DEFAULT_STACK, Workload, mixed_workload, resolve_stack, restrict

__all__ = ["CTX_STEP", "PROFILES", "SoftwareProfile", "StepCost", "profile", "profile_for_stack"]

CTX_STEP = 256  # decode interpolation grid, tokens


@dataclass(frozen=True)
class SoftwareProfile:
    """The serving stack a simulation prices steps for.

    `stack` picks the elementwise byte counts (`gimletc.models.workload`);
    `overhead_scale` multiplies the chip's fitted fixed costs (per layer, per
    launch, per step); `allreduce_latency_s`, when set, replaces the ring
    all-reduce's 2·(n−1) x 5 us latency per all-reduce of tensor-parallel steps;
    `iteration_s` adds host time to every engine iteration (0: the engine's
    scheduler fully overlaps the device); `band_edge` -1 or +1 prices every
    step at the low or high edge of its uncertainty band
    (`gimletc.cost.uncertainty.band`: chip, stack, step kind, model class) for
    the bands `simulate` and `search` report (0: the prediction itself)."""

    name: str = "calibrated"
    stack: str = "reference"
    overhead_scale: float = 1.0
    allreduce_latency_s: float | None = None
    iteration_s: float = 0.0  # host time per engine iteration (scheduling, sampling) the device waits for
    band_edge: int = 0

    def to_dict(self) -> dict:
        return {"name": self.name, "stack": self.stack, "overhead_scale": self.overhead_scale,
                "allreduce_latency_s": self.allreduce_latency_s, "iteration_s": self.iteration_s}


PROFILES: dict[str, SoftwareProfile] = {
    "calibrated": SoftwareProfile(),
    "vllm": SoftwareProfile("vllm", "vllm"),
    "sglang": SoftwareProfile("sglang", "sglang"),
    "trtllm": SoftwareProfile("trtllm", "trtllm"),
    # Deprecated names: both meant "a serving engine" before one was measured; vLLM is the closest.
    "fused": SoftwareProfile("fused", "vllm"),
    "fused-engine": SoftwareProfile("fused-engine", "vllm"),
}


def profile(name: str) -> SoftwareProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise GimletError(f"unknown software profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def profile_for_stack(stack: str | None) -> SoftwareProfile:
    """The profile that prices `stack` (a plan's; None: the default engine stack)."""
    s = resolve_stack(stack or DEFAULT_STACK)
    return PROFILES["calibrated"] if s == "reference" else PROFILES[s]


class StepCost:
    """Cached step times (seconds) and operator-busy seconds of `model` on `chips` chips of `chip`.

    `part` = (first, last, block) restricts every step to layers [first, last) and, when block is
    "attention" or "ffn", to that block (a pipeline stage or one side of an attention/FFN split);
    ("scaled", time ratio, KV ratio) is a part of the model known only by how much of the whole
    step's time and KV cache it takes (a compiled op that no longer says which layers it covers);
    () is the whole model."""

    def __init__(self, model: Model, chip: Chip, chips: int, prof: SoftwareProfile = PROFILES["calibrated"],
                 part: tuple = ()):
        self.model, self.chips, self.profile, self.part = model, chips, prof, tuple(part)
        if prof.overhead_scale != 1.0:
            e = chip.efficiency
            s = prof.overhead_scale
            eff = e.model_copy(update={
                "layer_overhead_s": e.layer_overhead_s * s,
                "launch_s_per_layer": e.launch_s_per_layer * s,
                "step_overhead_s": e.step_overhead_s * s,
            })
            chip = chip.model_copy(update={"efficiency": eff})
        self.chip = chip
        self._max_ctx = (model.max_context or 1 << 30) - 1
        self._dec: dict[tuple[int, int], tuple[float, float]] = {}
        self._pre: dict[tuple[int, int, int], tuple[float, float]] = {}
        self._mix: dict[tuple[int, int, int, int], tuple[float, float]] = {}
        self._edge: dict[str, float] = {}
        # Seconds to read one cached token of one sequence (all layers) at the achieved bandwidth.
        bw = chip.stream_bw * chip.efficiency.memory * chips
        self._kv_read_s_per_token = self.kv_bytes(1, 1) / bw
        self.calls = 0  # cost-model calls made (for benchmarks)

    # ---- the cost model, with the profile's all-reduce correction --------------------------
    def _price(self, phase: str, batch: int, tokens: int, ctx: int) -> tuple[float, float]:
        return self._price_work(step_workload(self.model, phase, batch, tokens, ctx, self.profile.stack))

    def _price_work(self, work: Workload) -> tuple[float, float]:
        self.calls += 1
        m, n = self.model, self.chips
        phase, batch, tokens = work.phase, work.batch, work.tokens
        scale = 1.0
        if self.part and self.part[0] == "scaled":
            scale = self.part[1]
        elif self.part:
            first, last, block = self.part
            work = restrict(work, m, first, last, block)
        est = estimate_workload(m, self.chip, work, n, check_fit=False)
        busy = est.compute_s + est.memory_s
        t = est.latency_s
        ar = self.profile.allreduce_latency_s
        if ar is not None and n > 1:
            L, share = work.layers, work.overhead_share
            delta = 2 * L * share * (ar - 2 * (n - 1) * ALLREDUCE_LATENCY_S)
            if phase == "prefill":
                # Eager: the chain is max(L·c, L·g) + min(c, g); shift the device time per layer g.
                e = self.chip.efficiency
                payload = batch * tokens * m.hidden * nbytes(m.act_dtype)
                one = 2 * (n - 1) / n * payload / self.chip.scale_up_bw + 2 * (n - 1) * ALLREDUCE_LATENCY_S
                comm = 2 * L * share * one
                g = (busy + comm + delta) / L + e.layer_overhead_s * share
                c = e.launch_s_per_layer * share
                t = max(L * c, L * g) + min(c, g) / KERNELS_PER_LAYER + e.step_overhead_s
            else:
                t = max(busy, t + delta)
        if self.profile.band_edge:
            f = self._edge_factor(phase)
            t, busy = t * f, busy * f
        return t * scale + self.profile.iteration_s, busy * scale

    def _edge_factor(self, phase: str) -> float:
        f = self._edge.get(phase)
        if f is None:
            from gimletc.cost.uncertainty import band, edge_factor

            b = band(self.chip, self.profile.stack, phase, moe=self.model.moe is not None)
            f = self._edge[phase] = edge_factor(b, self.profile.band_edge)
        return f

    # ---- what the simulator asks ------------------------------------------------------------
    def prefill(self, batch: int, tokens: int, ctx: int = 0) -> tuple[float, float]:
        """(seconds, operator-busy seconds) of one prefill step of `batch` prompts of `tokens` tokens."""
        key = (batch, tokens, ctx)
        v = self._pre.get(key)
        if v is None:
            tokens = max(1, min(tokens, self._max_ctx + 1 - ctx))
            v = self._pre[key] = self._price("prefill", batch, tokens, ctx)
        return v

    def _dec_point(self, batch: int, k: int) -> tuple[float, float]:
        key = (batch, k)
        v = self._dec.get(key)
        if v is None:
            ctx = min(k * CTX_STEP, self._max_ctx)
            v = self._dec[key] = self._price("decode", batch, 1, ctx)
        return v

    def decode(self, batch: int, ctx: float) -> tuple[float, float]:
        """(seconds, operator-busy seconds) of one decode step of `batch` sequences at mean context `ctx`."""
        x = ctx / CTX_STEP
        k = int(x)
        t0, b0 = self._dec_point(batch, k)
        f = x - k
        if f <= 0.0:
            return t0, b0
        t1, b1 = self._dec_point(batch, k + 1)
        return t0 + (t1 - t0) * f, b0 + (b1 - b0) * f

    def decode_run(self, batch: int, ctx: float, k: int) -> tuple[float, float]:
        """Σ over i < k of decode(batch, ctx + i): k iterations of an unchanging batch whose every
        sequence grows by one token per iteration. Closed form: the interpolation is linear
        inside each grid cell, so each cell's iterations sum as an arithmetic series."""
        total_t = total_b = 0.0
        i = 0
        S = CTX_STEP
        points = self._dec
        ceil = math.ceil
        while i < k:
            c = ctx + i
            x = c / S
            cell = int(x)
            end = ceil((cell + 1) * S - ctx)
            if end <= i:
                end = i + 1
            if end > k:
                end = k
            n = end - i
            p0 = points.get((batch, cell))
            t0, b0 = p0 if p0 is not None else self._dec_point(batch, cell)
            p1 = points.get((batch, cell + 1))
            t1, b1 = p1 if p1 is not None else self._dec_point(batch, cell + 1)
            off = n * (x - cell) + n * (n - 1) / 2 / S  # Σ of the interpolation fractions
            total_t += n * t0 + (t1 - t0) * off  # the points include iteration_s, once per iteration
            total_b += n * b0 + (b1 - b0) * off
            i = end
        return total_t, total_b

    def _mixed_point(self, chunk: int, chunk_ctx: int, batch: int, k: int) -> tuple[float, float]:
        key = (chunk, chunk_ctx, batch, k)
        v = self._mix.get(key)
        if v is None:
            ctx = min(k * CTX_STEP, self._max_ctx)
            chunk = max(1, min(chunk, self._max_ctx + 1 - chunk_ctx))
            v = self._mix[key] = self._price_work(
                mixed_workload(self.model, batch, ctx, chunk, chunk_ctx, self.profile.stack))
        return v

    def mixed(self, chunk: int, chunk_ctx: int, batch: int, ctx: float) -> tuple[float, float]:
        """A chunked-prefill iteration: `chunk` prompt tokens (after `chunk_ctx`) and `batch` decode tokens
        at mean context `ctx`, as one step (linear in `ctx` between grid points, like decode)."""
        if batch == 0:
            return self.prefill(1, chunk, chunk_ctx)
        if chunk == 0:
            return self.decode(batch, ctx)
        x = ctx / CTX_STEP
        k = int(x)
        t0, b0 = self._mixed_point(chunk, chunk_ctx, batch, k)
        f = x - k
        if f <= 0.0:
            return t0, b0
        t1, b1 = self._mixed_point(chunk, chunk_ctx, batch, k + 1)
        return t0 + (t1 - t0) * f, b0 + (b1 - b0) * f

    def kv_bytes(self, tokens: int, seqs: int = 1) -> float:
        """KV-cache bytes of `seqs` sequences of `tokens` tokens in the layers this cost covers."""
        if not self.part:
            return self.model.kv_cache_bytes(tokens, seqs)
        if self.part[0] == "scaled":
            return self.model.kv_cache_bytes(tokens, seqs) * self.part[2]
        first, last, block = self.part
        return 0.0 if block == "ffn" else self.model.stage_kv_cache_bytes(first, last, tokens, seqs)

    @property
    def weight_bytes(self) -> float:
        if not self.part:
            return self.model.weight_bytes
        if self.part[0] == "scaled":
            return self.model.weight_bytes * min(1.0, self.part[2] or self.part[1])
        first, last, block = self.part
        return self.model.stage_weight_bytes(first, last, block)


def ceil_pow2(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1.0, x))))
