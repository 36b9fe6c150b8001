"""Hardware descriptions: chips, nodes, links and clusters.

Units are SI throughout: FLOP/s, bytes, bytes/s, seconds, watts. Every figure
of a chip carries its source in `sources` (field name -> citation); figures
with no primary source are listed in `estimated`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gimletc.dtypes import COMPUTE_FALLBACK, DType

ChipKind = Literal["gpu", "cpu", "sram-accelerator"]
LinkKind = Literal["nvlink", "xgmi", "pcie", "ethernet", "rdma", "host-bounce", "chip-to-chip"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Efficiency(_Strict):
    """Achieved fractions of peak and fixed overheads of a chip running a transformer.

    Fractions multiply the datasheet peaks; overheads are seconds. `origin`
    says whether they were fitted to measurements (and to which) or derived
    from another chip's fit by a stated rule."""

    gemm: float = Field(0.7, gt=0, le=1, description="fraction of peak FLOP/s reached by large matrix products")
    attention: float = Field(0.5, gt=0, le=1, description="fraction of peak FLOP/s reached by fused (flash) attention")
    memory: float = Field(0.85, gt=0, le=1, description="fraction of peak memory bandwidth reached when streaming")
    masked_attention: float = Field(
        0.25,
        gt=0,
        le=1,
        description="fraction of memory bandwidth reached by the masked attention path of a multi-token verify step",
    )
    layer_overhead_s: float = Field(0.0, ge=0, description="fixed device time per layer (kernel boundaries)")
    step_overhead_s: float = Field(0.0, ge=0, description="fixed time per forward step")
    launch_s_per_layer: float = Field(
        0.0, ge=0, description="host time to issue one layer's kernels when not captured in a graph (eager prefill)"
    )
    origin: str = Field("default", description="how these values were obtained")


class Chip(_Strict):
    name: str
    vendor: str
    generation: str
    kind: ChipKind
    peak_flops: dict[DType, float] = Field(description="dense peak FLOP/s (or OP/s) per data type")
    memory_bytes: float = Field(ge=0, description="off-chip memory capacity (HBM, DDR, LPDDR); 0 if none")
    memory_bw: float = Field(ge=0, description="off-chip memory bandwidth, bytes/s")
    sram_bytes: float = Field(0, ge=0, description="on-chip SRAM capacity usable for weights or KV")
    sram_bw: float = Field(0, ge=0, description="on-chip SRAM bandwidth, bytes/s")
    tdp_w: float = Field(gt=0)
    idle_w: float = Field(ge=0)
    compute_units: int = Field(gt=0, description="SMs, CUs, cores or tiles that work runs in parallel on")
    dtypes: list[DType] = Field(min_length=1, description="data types the chip computes in")
    kv_layout: str = Field(description="layout of its KV cache, e.g. paged-nhd or paged-hnd")
    price_per_hour: float | None = Field(None, ge=0, description="rental price in USD per chip-hour")
    scale_up_bw: float | None = Field(
        None, gt=0, description="chip-to-chip bandwidth per direction inside a scale-up domain (NVLink, xGMI...), bytes/s"
    )
    efficiency: Efficiency = Efficiency()
    sources: dict[str, str] = Field(description="field name -> where the figure comes from")
    estimated: list[str] = Field(default_factory=list, description="fields with no primary source")
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> Chip:
        needs = ["peak_flops", "memory_bytes", "memory_bw", "tdp_w", "idle_w", "compute_units"]
        if self.sram_bytes:
            needs += ["sram_bytes", "sram_bw"]
        needs += [f for f in ("price_per_hour", "scale_up_bw") if getattr(self, f) is not None]
        missing = [f for f in needs if f not in self.sources]
        if missing:
            raise ValueError(f"chip {self.name}: no source for {', '.join(missing)} (add them under `sources`)")
        unknown = [f for f in [*self.sources, *self.estimated] if f not in type(self).model_fields]
        if unknown:
            raise ValueError(f"chip {self.name}: sources/estimated name unknown fields {', '.join(unknown)}")
        if self.idle_w > self.tdp_w:
            raise ValueError(f"chip {self.name}: idle_w={self.idle_w} exceeds tdp_w={self.tdp_w}")
        if self.memory_bytes == 0 and self.sram_bytes == 0:
            raise ValueError(f"chip {self.name}: has neither memory_bytes nor sram_bytes")
        if self.sram_bytes and not self.sram_bw:
            raise ValueError(f"chip {self.name}: sram_bytes is set but sram_bw is 0")
        if self.memory_bytes and not self.memory_bw:
            raise ValueError(f"chip {self.name}: memory_bytes is set but memory_bw is 0")
        return self

    @property
    def stream_bw(self) -> float:
        """Peak bandwidth data streams at: off-chip memory, or SRAM on a chip without off-chip memory."""
        return self.memory_bw or self.sram_bw

    @property
    def capacity_bytes(self) -> float:
        """All memory a model's weights and KV cache may occupy (off-chip plus SRAM)."""
        return self.memory_bytes + self.sram_bytes

    def flops_for(self, dtype: str) -> tuple[str, float]:
        """(compute dtype, dense peak FLOP/s) for work stored in `dtype`.

        Falls back to the next wider format the chip computes in; when none of
        those is listed, to its slowest listed rate (a conservative guess, since
        the chip's fast rates are for formats the work is not in)."""
        if dtype in self.peak_flops:
            return dtype, self.peak_flops[dtype]
        for alt in COMPUTE_FALLBACK.get(dtype, ()):
            if alt in self.peak_flops:
                return alt, self.peak_flops[alt]
        slowest = min(self.peak_flops, key=self.peak_flops.__getitem__)
        return slowest, self.peak_flops[slowest]
