"""Fit a chip's efficiency factors and overheads to measured step times.

The fit minimises the squared log error of predicted over measured step time
(so a 10% miss on a 2 ms step weighs as much as one on a 45 ms step) with
bounded least squares (scipy's trust-region reflective solver), starting from
fixed values, so the result is deterministic.

With measurements of one model size, per-layer and per-step fixed costs cannot
be told apart; all fixed cost is attributed to layers (kernels live in layers)
and `step_overhead_s` stays 0. The per-layer rows (one layer's attention and
FFN blocks, each launched alone) are fitted beside the steps: they pin the
host's issue time per layer. Leave-one-out refits estimate how well the
fitted model predicts a row it has not seen.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy.optimize import least_squares

from gimletc._io import describe_validation_error, read_data, validate, write_atomic
from gimletc.errors import ConfigError
from gimletc.hardware.schema import Chip, Efficiency
from gimletc.models.arch import Model
from gimletc.models.workload import PHASES

GPU_PARAMS: dict[str, tuple[float, float, float]] = {
    # name: (start, lower, upper)
    "gemm": (0.7, 0.05, 1.0),
    "attention": (0.5, 0.05, 1.0),
    "memory": (0.85, 0.05, 1.0),
    "masked_attention": (0.3, 0.01, 1.0),
    "layer_overhead_s": (5e-5, 0.0, 5e-3),
    "launch_s_per_layer": (3e-4, 0.0, 5e-2),
}
CPU_PARAMS: dict[str, tuple[float, float, float]] = {
    "gemm": (0.5, 0.01, 1.0),
    "memory": (0.5, 0.01, 1.0),
}
# Parameters a CPU fit leaves free are tied to fitted ones: attention runs on the same
# vector units as GEMMs, and the masked path streams like everything else.
CPU_TIES = {"attention": "gemm", "masked_attention": "memory"}


class _Arch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool = False
    params: int | None = None


class Step(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    phase: str
    batch: int = Field(ge=1)
    tokens: int = Field(ge=1)
    ctx: int = Field(ge=0)
    ms: float = Field(gt=0)


class _Cpu(BaseModel):
    model_config = ConfigDict(extra="ignore")
    device: str = ""
    steps: list[Step]


class LayerSplit(BaseModel):
    """Measured time of one layer's attention block and FFN block."""

    model_config = ConfigDict(extra="ignore")
    model: str
    phase: str
    batch: int = Field(ge=1)
    ctx: int = Field(ge=0)
    attention_ms: float = Field(gt=0)
    ffn_ms: float = Field(gt=0)


class CalibrationData(BaseModel):
    """The measurement file's schema (fields gimletc uses; others are ignored)."""

    model_config = ConfigDict(extra="ignore")
    device: str = ""
    ceilings_measured: dict[str, float] = Field(default_factory=dict)
    architectures: dict[str, _Arch]
    gpu_steps: list[Step]
    gpu_layer_split: list[LayerSplit] = Field(default_factory=list)
    cpu: _Cpu | None = None

    def model(self, name: str, dtype: str) -> Model:
        if name not in self.architectures:
            raise ConfigError(f"calibration data: step names model {name!r} missing from `architectures`")
        a = self.architectures[name]
        return Model(
            name=name,
            family="llama",
            layers=a.layers,
            hidden=a.hidden,
            ffn=a.ffn,
            heads=a.heads,
            kv_heads=a.kv_heads,
            head_dim=a.head_dim,
            vocab=a.vocab,
            tied_embeddings=a.tied_embeddings,
            attention="gqa" if a.kv_heads < a.heads else "mha",
            weight_dtype=dtype,
            kv_dtype=dtype,
            act_dtype=dtype,
        )


def load_calibration(path: str | Path) -> CalibrationData:
    """The measurement file, checked as far as the fit reads it: every architecture makes a valid
    model, and every row names one of them and a known phase. Errors name the file and the field."""
    src = str(path)
    data = validate(CalibrationData, read_data(path), src)
    if not data.gpu_steps:
        raise ConfigError(f"{src}: gpu_steps: no rows (a fit needs measured steps)")
    for name in data.architectures:
        try:
            data.model(name, "bf16")
        except ValidationError as e:
            raise ConfigError(describe_validation_error(e, f"{src}: architectures.{name}")) from None
    rows = (("gpu_steps", data.gpu_steps), ("cpu.steps", data.cpu.steps if data.cpu else []),
            ("gpu_layer_split", data.gpu_layer_split))
    for field, steps in rows:
        for i, s in enumerate(steps):
            if s.model not in data.architectures:
                raise ConfigError(f"{src}: {field}[{i}].model: {s.model!r} is not in `architectures`")
            if s.phase not in PHASES:
                raise ConfigError(f"{src}: {field}[{i}].phase: {s.phase!r} is not one of {', '.join(PHASES)}")
    return data


@dataclass(frozen=True)
class RowResult:
    model: str
    phase: str
    batch: int
    tokens: int
    ctx: int
    measured_ms: float
    predicted_ms: float
    loo_predicted_ms: float  # predicted by a fit that did not see this row
    bound: str

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1

    @property
    def loo_error(self) -> float:
        return self.loo_predicted_ms / self.measured_ms - 1


@dataclass(frozen=True)
class ChipFit:
    chip: str
    dtype: str
    efficiency: Efficiency
    rows: tuple[RowResult, ...]
    params: tuple[str, ...]

    def errors(self, loo: bool = False) -> list[float]:
        return [abs(r.loo_error if loo else r.error) for r in self.rows]

    @property
    def median_error(self) -> float:
        return median(self.errors())

    @property
    def max_error(self) -> float:
        return max(self.errors())


def _efficiency(base: Efficiency, names: tuple[str, ...], x: np.ndarray, origin: str, ties: dict[str, str]) -> Efficiency:
    values = {n: float(v) for n, v in zip(names, x, strict=True)}
    values.update({k: values[v] for k, v in ties.items() if v in values})
    values.setdefault("step_overhead_s", 0.0)
    return base.model_copy(update={**values, "origin": origin})


def _predict_ms(chip: Chip, models: dict[str, Model], step: Step) -> float:
    from gimletc.cost.roofline import estimate  # late import: roofline imports nothing from here

    return estimate(models[step.model], chip, step.phase, step.batch, step.tokens, step.ctx, check_fit=False).latency_s * 1e3


# Share of a reference-stack layer's kernels (so of its host issue time and per-kernel device cost) in
# each block: attention (two RMSNorm upcasts of 7 kernels, rotary 5 x 2, QKV and output GEMMs, SDPA,
# the output copy, a residual add: ~27 kernels) and FFN (gate/up and down GEMMs, SiLU and multiply,
# a residual add: ~5 kernels, plus the next layer's norm it is timed with: ~12).
BLOCK_SHARE = {"attention": 27 / 39, "ffn": 12 / 39}


def _split_ms(chip: Chip, model: Model, r: LayerSplit, block: str) -> float:
    """One middle layer's `block` launched and timed on its own: a chain of one layer (eager prefill:
    the host's issue time plus the device's, nothing to overlap with; captured decode: device time
    plus the block's share of the layer's fixed cost)."""
    from dataclasses import replace

    from gimletc.cost.roofline import estimate_workload
    from gimletc.models.workload import restrict, step_workload

    tokens, ctx = (r.ctx, 0) if r.phase == "prefill" else (1, r.ctx)
    work = step_workload(model, r.phase, r.batch, tokens, ctx)
    one = min(1, model.layers - 1)
    part = replace(restrict(work, model, one, one + 1, block), overhead_share=BLOCK_SHARE[block])
    step = chip.efficiency.step_overhead_s if r.phase == "prefill" else 0.0  # a block alone skips the model's setup
    return (estimate_workload(model, chip, part, 1, check_fit=False).latency_s - step) * 1e3


def _solve(chip: Chip, models: dict[str, Model], steps: list[Step], space: dict, ties: dict[str, str],
           splits: tuple[tuple[Model, LayerSplit], ...] = ()) -> np.ndarray:
    names = tuple(space)
    start = np.array([space[n][0] for n in names])
    lo = np.array([space[n][1] for n in names])
    hi = np.array([space[n][2] for n in names])
    scale = np.where(start > 0, start, 1.0)  # solve in O(1) units: overheads are ~1e-4 s, fractions ~1

    def residuals(z: np.ndarray) -> np.ndarray:
        eff = _efficiency(chip.efficiency, names, z * scale, "fit", ties)
        c = chip.model_copy(update={"efficiency": eff})
        r = [math.log(_predict_ms(c, models, s) / s.ms) for s in steps]
        r += [math.log(_split_ms(c, m, sp, b) / getattr(sp, f"{b}_ms")) for m, sp in splits for b in BLOCK_SHARE]
        return np.array(r)

    res = least_squares(residuals, start / scale, bounds=(lo / scale, hi / scale), method="trf", x_scale=1.0)
    return res.x * scale


def measured_bounds(chip: Chip, data: CalibrationData, dtype: str) -> dict[str, float]:
    """Upper bounds on efficiency fractions from the file's measured ceilings (GPU rows only).

    No real GEMM beats the measured large-GEMM rate, so `gemm` may not exceed
    it as a fraction of the datasheet peak."""
    bounds = {}
    gemm = data.ceilings_measured.get(f"{dtype}_gemm_tflops_8192cube")
    if gemm:
        bounds["gemm"] = min(1.0, gemm * 1e12 / chip.flops_for(dtype)[1])
    return bounds


def fit_chip(chip: Chip, data: CalibrationData, steps: list[Step], dtype: str, origin: str,
             splits: list[LayerSplit] | None = None) -> ChipFit:
    """Fit `chip`'s efficiency to `steps` (models built from `data.architectures` in `dtype`) and to the
    per-layer `splits` (one layer's blocks timed on their own; they pin the host's launch time per
    layer, which otherwise only the shortest prefill shows)."""
    space, ties = (CPU_PARAMS, CPU_TIES) if chip.kind == "cpu" else (GPU_PARAMS, {})
    if chip.kind != "cpu":
        caps = measured_bounds(chip, data, dtype)
        space = {n: (min(s, caps.get(n, hi) * 0.99), lo, caps.get(n, hi)) for n, (s, lo, hi) in space.items()}
    names = tuple(space)
    models = {s.model: data.model(s.model, dtype) for s in steps}
    sp = tuple((data.model(r.model, dtype), r) for r in (splits or []))
    x = _solve(chip, models, steps, space, ties, sp)
    eff = _efficiency(chip.efficiency, names, x, origin, ties)
    fitted = chip.model_copy(update={"efficiency": eff})

    rows = []
    for i, s in enumerate(steps):
        rest = steps[:i] + steps[i + 1 :]
        if len(rest) >= len(names):  # leave-one-out needs at least as many rows as parameters
            xi = _solve(chip, models, rest, space, ties, sp)
            loo_chip = chip.model_copy(update={"efficiency": _efficiency(chip.efficiency, names, xi, "loo", ties)})
            loo = _predict_ms(loo_chip, models, s)
        else:
            loo = float("nan")
        from gimletc.cost.roofline import estimate

        est = estimate(models[s.model], fitted, s.phase, s.batch, s.tokens, s.ctx, check_fit=False)
        rows.append(RowResult(s.model, s.phase, s.batch, s.tokens, s.ctx, s.ms, est.latency_s * 1e3, loo, est.bound))
    return ChipFit(chip.name, dtype, eff, tuple(rows), names)


def calibrate(path: str | Path, gpu: Chip, cpu: Chip | None) -> list[ChipFit]:
    """Fit the GPU (bf16 rows) and, when the file has them, the host CPU (fp32 rows)."""
    data = load_calibration(path)
    src = Path(path).name
    n = len(data.gpu_steps) + len(data.gpu_layer_split)
    fits = [fit_chip(gpu, data, data.gpu_steps, "bf16", f"fitted: gimletc calibrate {src} ({n} rows)", data.gpu_layer_split)]
    if cpu is not None and data.cpu is not None and data.cpu.steps:
        n = len(data.cpu.steps)
        fits.append(fit_chip(cpu, data, data.cpu.steps, "fp32", f"fitted: gimletc calibrate {src} ({n} cpu rows)"))
    return fits


def layer_split_table(data: CalibrationData, chip: Chip) -> str:
    """Predicted vs measured time of one layer's attention and FFN blocks, each launched alone (the rows
    the GPU fit uses beside the steps; a prefill row's `ctx` is its prompt length)."""
    out = [
        "| model | phase | batch | ctx | attention ms (measured / predicted) | FFN ms (measured / predicted) "
        "| attention : FFN (measured / predicted) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in data.gpu_layer_split:
        m = data.model(r.model, "bf16")
        attn, ffn = _split_ms(chip, m, r, "attention"), _split_ms(chip, m, r, "ffn")
        out.append(
            f"| {r.model} | {r.phase} | {r.batch} | {r.ctx} | {r.attention_ms:.4f} / {attn:.4f} | "
            f"{r.ffn_ms:.4f} / {ffn:.4f} | {r.attention_ms / r.ffn_ms:.2f} / {attn / ffn:.2f} |"
        )
    return "\n".join(out)


# ---- writing results -------------------------------------------------------------

_EFF_BLOCK = re.compile(r"^efficiency:\n(?:[ \t]+.*\n?)*", re.MULTILINE)


def efficiency_yaml(eff: Efficiency) -> str:
    lines = ["efficiency:"]
    for name, value in eff.model_dump().items():
        if isinstance(value, float):
            lines.append(f"  {name}: {value:.6g}")
        else:
            lines.append(f"  {name}: {value!r}" if ":" in str(value) else f"  {name}: {value}")
    return "\n".join(lines) + "\n"


def write_efficiency(chip_file: Path, eff: Efficiency) -> None:
    """Replace (or append) the `efficiency:` block of a chip's YAML file."""
    text = chip_file.read_text()
    block = efficiency_yaml(eff)
    new = _EFF_BLOCK.sub(lambda _: block, text, count=1) if _EFF_BLOCK.search(text) else text.rstrip("\n") + "\n" + block
    write_atomic(chip_file, new)


def markdown_table(fit: ChipFit) -> str:
    """Predicted vs measured for every row, with the median and max error."""
    out = [
        f"Chip `{fit.chip}` ({fit.dtype}); fitted parameters: "
        + ", ".join(f"`{n}` = {getattr(fit.efficiency, n):.4g}" for n in fit.params)
        + ".",
        "",
        "| model | phase | batch | tokens | ctx | measured ms | predicted ms | error | leave-one-out error | bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in fit.rows:
        loo = "n/a" if math.isnan(r.loo_predicted_ms) else f"{r.loo_error:+.1%}"
        out.append(
            f"| {r.model} | {r.phase} | {r.batch} | {r.tokens} | {r.ctx} | {r.measured_ms:.3f} | "
            f"{r.predicted_ms:.3f} | {r.error:+.1%} | {loo} | {r.bound} |"
        )
    loo_errs = [e for e in fit.errors(loo=True) if not math.isnan(e)]
    out.append("")
    summary = f"Absolute error: median {fit.median_error:.1%}, max {fit.max_error:.1%}"
    if loo_errs:
        summary += f"; leave-one-out: median {median(loo_errs):.1%}, max {max(loo_errs):.1%}"
    else:
        summary += "; leave-one-out: not possible (as many parameters as rows, so the fit is exact by construction)"
    out.append(summary + ".")
    return "\n".join(out)


def update_doc(doc: Path, fits: list[ChipFit], source: str, split: str = "") -> None:
    """Rewrite the text between the calibration markers of `doc`."""
    begin, end = "<!-- calibration:begin -->", "<!-- calibration:end -->"
    body = "\n\n".join(markdown_table(f) for f in fits)
    if split:
        body += "\n\nPer-layer rows (fitted with the steps): one layer's attention and FFN blocks, each launched alone, on the fitted H200.\n\n" + split
    block = f"{begin}\n_Generated by `gimletc calibrate {source} --write`; do not edit by hand._\n\n{body}\n{end}"
    text = doc.read_text() if doc.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_atomic(doc, text)


REFERENCE_BANDS = Path(__file__).parent / "data" / "reference_bands.json"


def reference_bands(fit: ChipFit) -> dict[str, float]:
    """Per step kind, the smallest band holding 90% of the leave-one-out |relative errors|;
    a mixed step (decode batch plus a prompt chunk) takes the larger of prefill and decode."""
    out = {}
    for kind in ("prefill", "decode", "verify"):
        e = sorted(abs(r.loo_error) for r in fit.rows if r.phase == kind and not math.isnan(r.loo_error))
        if e:  # the smallest band holding 90% of them (the ceil(0.9 n)-th smallest), rounded up
            v = e[max(0, math.ceil(0.9 * len(e) - 1e-9) - 1)]
            out[kind] = math.ceil(v * 1e4) / 1e4
    if "prefill" in out and "decode" in out:
        out["mixed"] = max(out["prefill"], out["decode"])
    return out


def write_reference_bands(fit: ChipFit, source: str) -> None:
    import json

    doc = {"chip": fit.chip, "stack": "reference", "source": f"leave-one-out errors of gimletc calibrate {source}",
           "bands": reference_bands(fit)}
    write_atomic(REFERENCE_BANDS, json.dumps(doc, indent=2, sort_keys=True) + "\n")
