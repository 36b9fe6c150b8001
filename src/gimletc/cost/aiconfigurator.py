"""Fit engine-stack profiles to the kernel tables of `aiconfigurator-core`.

NVIDIA's `aiconfigurator-core` (Apache-2.0, an optional extra:
`pip install 'gimletc[aiconfigurator]'`) ships per-kernel latencies measured
with vLLM, SGLang and TensorRT-LLM on each system, as parquet tables under
`aiconfigurator_core/systems/data/<system>/<op>/<framework>/<version>/`.
This module reads the newest version of each table that holds the rows the
fit uses, fits the dozen parameters of `gimletc.cost.engine` (physics, not
rows), and validates the fitted model on *steps* of catalog models composed
from the tables (the sum of a step's measured kernels: projections,
attention, MoE, all-reduce, LM head), held out of the fit:

- by model: the fit sees no row with that model's attention head layout,
  MoE shape, or GEMM widths (N or K equal to one of its projections');
- by range: the fit sees only steps of up to 2048 tokens (GEMM M, prompts and
  MoE tokens <= 2048; decode batch <= 32 and context <= 4095) and is checked
  on larger ones (8192-token prefills; decode at batch 64-256 or 16k context).

Table lookups for the composed steps are exact on the tables' grids, except
GEMM widths between grid points (bilinear in N and K, where a GEMM's time is
linear in each) and all-reduce sizes between powers of two (linear).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import metadata
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from gimletc._io import write_atomic
from gimletc.cost.engine import (
    DATA,
    ENGINE_STACKS,
    FRAMEWORK_OF,
    PARAMS,
    SYSTEM_CHIP,
    MAX_FITTED,
    EngineProfile,
    allreduce_s,
    attention_s,
    fitted_params,
    gemm_s,
    gemm_tile,
    moe_s,
    profile_path,
    routing,
)
from gimletc.cost.moe_tiles import TRITON, kernel_class, key_order, moe_tile, shape_key
from gimletc.errors import GimletError, UnknownNameError
from gimletc.models.arch import Model
from gimletc.models.workload import visible_keys

PACKAGE = "aiconfigurator-core"
DISTRIBUTION = "power_law_1.01"  # aiconfigurator's default MoE routing skew
TRAIN_RANGE = {"gemm_m": 2048, "batch": 32, "ctx": 4095, "isl": 2048, "moe_tokens": 2048}

# Steps composed from the tables to validate against: (model, tensor-parallel size).
DENSE_CASES = (("llama-3.2-3b", 1), ("llama-3.1-8b", 1), ("llama-3.1-8b", 2), ("qwen3-32b", 2), ("qwen3-32b", 4),
               ("llama-3.1-70b", 4), ("llama-3.1-70b", 8))
MOE_CASES = (("mixtral-8x7b", 2), ("qwen3-235b-a22b", 4), ("gpt-oss-20b", 1), ("gpt-oss-120b", 1), ("gpt-oss-120b", 2))
DECODE_POINTS = tuple((b, c) for b in (1, 4, 16, 64, 256) for c in (1023, 4095, 16383))
PREFILL_POINTS = ((1, 512), (1, 2048), (1, 8192), (4, 2048))


def _bf(x: str) -> str:
    return {"bf16": "bfloat16"}.get(x, x)


def package_root() -> Path:
    """The tables' root folder; GimletError when the optional extra is missing."""
    try:
        import aiconfigurator_core  # noqa: PLC0415
    except ImportError:
        raise GimletError(
            f"{PACKAGE} is not installed; install the extra: pip install 'gimletc[aiconfigurator]'"
        ) from None
    try:
        import pandas  # noqa: F401, PLC0415
    except ImportError:
        raise GimletError("reading the aiconfigurator tables needs pandas and pyarrow; "
                          "install the extra: pip install 'gimletc[aiconfigurator]'") from None
    return Path(aiconfigurator_core.__file__).parent / "systems" / "data"


def package_version() -> str:
    return metadata.version(PACKAGE)


def systems() -> list[str]:
    return sorted(p.name for p in package_root().iterdir() if p.is_dir())


def _version_key(v: str) -> Any:
    from packaging.version import InvalidVersion, Version  # a dependency of aiconfigurator-core

    try:
        return (1, Version(v))
    except InvalidVersion:
        return (0, v)


def _newest(system: str, op: str, framework: str, table: str, want: Any = None) -> tuple[Path, Any] | None:
    """The newest version's table `table` (and its rows passing `want`), or None when no version has it."""
    import pandas as pd

    base = package_root() / system / op / framework
    if not base.is_dir():
        return None
    for v in sorted((d.name for d in base.iterdir() if d.is_dir()), key=_version_key, reverse=True):
        f = base / v / f"{table}.parquet"
        if f.exists():
            df = pd.read_parquet(f)
            if want is not None:
                df = df[want(df)]
            if len(df):
                return f, df
    return None


@dataclass
class Tables:
    """The rows one fit uses, as numpy columns, with where they came from."""

    system: str
    framework: str
    gemm: dict[str, np.ndarray]
    attn: dict[str, np.ndarray]
    moe: dict[str, np.ndarray] | None
    ar: dict[str, np.ndarray] | None
    files: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    lookup: dict[str, Any] = field(default_factory=dict)  # DataFrames for composing steps
    moe_kernels: dict[str, str] = field(default_factory=dict)  # "E,k,h" -> the library kernel its fastest rows ran


def _cols(df: Any, names: list[str]) -> dict[str, np.ndarray]:
    return {n: df[n].to_numpy(dtype=float) for n in names}


@cache
def load_tables(system: str, framework: str) -> Tables:
    """Newest tables of `framework` on `system` with the rows the fit uses (min over kernel sources per shape)."""
    root = package_root()
    if system not in systems():
        raise UnknownNameError("aiconfigurator system", system, systems())
    if framework not in FRAMEWORK_OF.values():
        raise UnknownNameError("framework", framework, list(FRAMEWORK_OF.values()))
    files: dict[str, str] = {}
    rows: dict[str, int] = {}
    look: dict[str, Any] = {}

    g = _newest(system, "gemm", framework, "gemm_perf", lambda d: d.gemm_dtype.isin(["bfloat16", "fp8"]))
    if g is None:
        raise GimletError(f"{PACKAGE}: no bf16/fp8 GEMM table for {framework} on {system}")
    f, df = g
    df = df[(df.n >= 256) & (df.k >= 256)].groupby(["gemm_dtype", "m", "n", "k"], as_index=False).latency.min()
    files["gemm"], rows["gemm"], look["gemm"] = str(f.relative_to(root)), len(df), df
    gemm = _cols(df, ["m", "n", "k", "latency"])
    gemm["fp8"] = (df.gemm_dtype == "fp8").to_numpy(dtype=float)

    parts = []
    for table, kind in (("context_attention_perf", 0.0), ("generation_attention_perf", 1.0)):
        # Head layouts of the models gimletc prices: head dim 64 or 128, at least 4 query heads per chip.
        a = _newest(system, "attention", framework, table,
                    lambda d: (d.beam_width == 1) & d.kv_cache_dtype.isin(["bfloat16", "fp8"])
                    & d.head_dim.isin([64, 128]) & (d.num_heads >= 4))
        if a is None:
            raise GimletError(f"{PACKAGE}: no {table} table for {framework} on {system}")
        f, df = a
        keys = ["batch_size", "isl", "step", "num_heads", "num_key_value_heads", "head_dim", "window_size", "kv_cache_dtype"]
        for col in ("step", "window_size"):  # older tables have no windows (and context rows no step)
            if col not in df:
                df = df.assign(**{col: 0})
        df = df.groupby(keys, as_index=False).latency.min()
        files[table], rows[table], look[table] = str(f.relative_to(root)), len(df), df
        c = _cols(df, keys[:-1] + ["latency"])
        c["kv_fp8"] = (df.kv_cache_dtype == "fp8").to_numpy(dtype=float)
        c["decode"] = np.full(len(df), kind)
        parts.append(c)
    attn = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    moe, moe_kernels = None, {}
    # fp8 experts: the block-scaled kernels (what fp8 MoE checkpoints use); vLLM's per-tensor fp8 MoE
    # kernel measures ~3x slower than bf16 on Hopper and is left out. Expert parallelism is left out too
    # (the engines' default for MoE under tensor parallelism is to split every expert).
    m = _newest(system, "moe", framework, "moe_perf",
                lambda d: d.moe_dtype.isin(["bfloat16", "fp8_block"]) & (d.distribution == DISTRIBUTION)
                & (d.moe_ep_size == 1) & (d.moe_tp_size <= 8))
    if m is not None:
        f, df = m
        keys = ["moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size", "moe_ep_size"]
        df = df.loc[df.groupby(keys).latency.idxmin()].sort_values(keys).reset_index(drop=True)  # fastest kernel
        files["moe"], rows["moe"], look["moe"] = str(f.relative_to(root)), len(df), df
        moe = _cols(df, keys[1:] + ["latency"])
        moe["fp8"] = (df.moe_dtype == "fp8_block").to_numpy(dtype=float)
        # The kernel each row ran (Triton fused_moe or a library's) and its tile (the engine's file for the
        # shape, else its default; a library's autotuned block): facts of the tables and engines, not fitted.
        kind = [kernel_class(str(k)) for k in df.kernel_source]
        found = {shape_key(e, k, h): x for e, k, h, x in zip(moe["num_experts"], moe["topk"], moe["hidden_size"], kind,
                                                            strict=True) if x != TRITON}
        moe_kernels = {k: found[k] for k in sorted(found, key=key_order)}
        tiles = np.array([moe_tile(framework, SYSTEM_CHIP[system], e, f / tp, n, k, x) for n, e, f, tp, k, x in
                          zip(moe["num_tokens"], moe["num_experts"], moe["inter_size"], moe["moe_tp_size"],
                              moe["topk"], kind, strict=True)])
        moe["bm"], moe["bn"], moe["fed"], moe["streamed"] = tiles[:, 0], tiles[:, 1], tiles[:, 2], tiles[:, 3]
        # The rows' routing (experts touched, padded rows, row blocks): fixed by the shape and tile, not fitted.
        r = np.array([routing(int(n), int(k), int(e), int(bm)) for n, k, e, bm in
                      zip(moe["num_tokens"], moe["topk"], moe["num_experts"], moe["bm"], strict=True)])
        moe["touched"], moe["rows"], moe["blocks"] = r[:, 0], r[:, 1], r[:, 2]

    ar = None
    r = _newest(system, "comm", framework, "custom_allreduce_perf",
                lambda d: (d.allreduce_dtype == "bfloat16") & (d.backend.str.endswith("graph") if "backend" in d else True))
    if r is not None:
        f, df = r
        df = df.groupby(["num_gpus", "message_size"], as_index=False).latency.min()
        files["allreduce"], rows["allreduce"], look["allreduce"] = str(f.relative_to(root)), len(df), df
        ar = _cols(df, ["num_gpus", "message_size", "latency"])
    return Tables(system, framework, gemm, attn, moe, ar, files, rows, look, moe_kernels)


# ---- the physics, on table rows ----------------------------------------------------------


def _chip(system: str) -> Any:
    from gimletc.hardware.catalog import get_chip

    if system not in SYSTEM_CHIP:
        raise UnknownNameError("system with a catalog chip", system, list(SYSTEM_CHIP))
    return get_chip(SYSTEM_CHIP[system])


def _peaks(chip: Any) -> tuple[float, float, float]:
    bf16 = chip.flops_for("bf16")[1]
    fp8 = chip.peak_flops.get("fp8", bf16)
    return bf16, fp8, chip.memory_bw


def _gemm_pred(p: EngineProfile, chip: Any, c: dict[str, np.ndarray]) -> np.ndarray:
    bf16, fp8, bw = _peaks(chip)
    lo = c["fp8"] > 0
    sms, tile = float(chip.compute_units), gemm_tile(chip)
    t = gemm_s(p, bf16, bw, c["m"], c["n"], c["k"], 2.0, sms=sms, tile=tile)
    t8 = gemm_s(p, fp8, bw, c["m"], c["n"], c["k"], 1.0, low_precision=True, sms=sms, tile=tile)
    return np.where(lo, t8, t)


def _attn_shape(c: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FLOPs, KV bytes, activation bytes) of each attention row."""
    b, H, KV, d = c["batch_size"], c["num_heads"], c["num_key_value_heads"], c["head_dim"]
    dec = c["decode"] > 0
    win = np.where(c["window_size"] > 0, c["window_size"], 1e18)
    T = np.where(dec, 1.0, c["isl"])
    C = np.where(dec, c["step"], 0.0)
    keys = _visible(T, C, win)
    kvb = np.where(c["kv_fp8"] > 0, 1.0, 2.0)
    flops = 2.0 * b * H * 2.0 * d * keys
    kv = b * (np.minimum(C, win) + T) * 2.0 * KV * d * kvb
    act = b * T * H * d * 2.0 * 2.0
    return flops, kv, act


def _visible(T: Any, C: Any, W: Any) -> Any:
    """Vectorised `visible_keys`: Σ over T queries after C cached keys of min(W, C + i)."""
    full = T * C + T * (T + 1) / 2
    n = np.minimum(T, np.maximum(0.0, W - C))
    capped = n * C + n * (n + 1) / 2 + (T - n) * W
    return np.where(W >= C + T, full, capped)


def _attn_pred(p: EngineProfile, chip: Any, c: dict[str, np.ndarray]) -> np.ndarray:
    bf16, _, bw = _peaks(chip)
    flops, kv, act = _attn_shape(c)
    T = np.where(c["decode"] > 0, 1.0, c["isl"])
    rows = c["batch_size"] * T * c["num_heads"]
    return attention_s(p, bf16, bw, flops, kv, act, rows, c["head_dim"], c["batch_size"] * c["num_key_value_heads"])


def _moe_pred(p: EngineProfile, chip: Any, c: dict[str, np.ndarray]) -> np.ndarray:
    bf16, fp8, bw = _peaks(chip)
    tokens, h, f, k = c["num_tokens"], c["hidden_size"], c["inter_size"] / c["moe_tp_size"], c["topk"]
    lo = c["fp8"] > 0
    sms = float(chip.compute_units)
    args = (tokens, h, f, k, c["touched"], c["rows"], c["blocks"])
    tile = (c["bm"], c["bn"], c["fed"], c["streamed"])
    t = moe_s(p, bf16, bw, *args, 2.0, sms=sms, tile=tile)
    t8 = moe_s(p, fp8, bw, *args, 1.0, low_precision=True, sms=sms, tile=tile)
    return np.where(lo, t8, t)


def _ar_pred(p: EngineProfile, chip: Any, c: dict[str, np.ndarray]) -> np.ndarray:
    return allreduce_s(p, c["message_size"], c["num_gpus"])


GROUPS: dict[str, tuple[tuple[str, ...], Any]] = {
    "gemm": (("gemm_eff", "mem_eff", "kernel_s", "tile_s", "gemm_wave_floor"), _gemm_pred),
    "gemm_fp8": (("gemm_fp8_eff",), _gemm_pred),
    "attn": (("attn_eff", "attn_mem_eff", "attn_seq_s", "attn_pad_keys"), _attn_pred),
    "moe": (("moe_feed_bw",), _moe_pred),  # its tiles pay the dense GEMMs' tile_s, at their gemm_eff
    "ar": (("ar_latency_s", "ar_bw"), _ar_pred),
}


def _select(c: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in c.items()}


# The fit's loss on log(predicted / measured): soft-L1 with a 10% scale, quadratic for residuals within
# about 10% and linear beyond. The tables mix kernels that run tuned launch configurations with ones that
# fall back to an engine's defaults (SGLang's fused-MoE kernels on the H200 reach ~0.55 of the bf16 peak at
# 8k tokens on shapes it ships tuned configurations for, ~0.23 on others), a difference no shape term
# explains; a least-squares fit lets that minority pull every parameter toward it, a robust one does not.
# A stated choice of method, the same for every chip and engine (see docs/cost-model.md).
FIT_LOSS = "soft_l1"
FIT_SCALE = 0.1


def _fit_group(p: EngineProfile, chip: Any, group: str, rows: dict[str, np.ndarray]) -> EngineProfile:
    names, pred = GROUPS[group]
    names = tuple(n for n in names if n in fitted_params(chip))
    start = np.array([getattr(p, n) for n in names])
    lo = np.array([PARAMS[n][1] for n in names])
    hi = np.array([PARAMS[n][2] for n in names])
    scale = np.array([PARAMS[n][0] for n in names])
    t = rows["latency"] * 1e-3  # the tables are in milliseconds

    def resid(z: np.ndarray) -> np.ndarray:
        q = p.with_params(dict(zip(names, z * scale, strict=True)))
        return np.log(pred(q, chip, rows) / t)

    z0 = np.clip(start, lo, hi) / scale
    res = least_squares(resid, z0, bounds=(lo / scale, hi / scale), method="trf", x_scale=1.0,
                        loss=FIT_LOSS, f_scale=FIT_SCALE)
    return p.with_params(dict(zip(names, (float(v) for v in res.x * scale), strict=True)))


def _masks(t: Tables, held: tuple[Model, int] | None, low_range: bool) -> dict[str, np.ndarray | None]:
    """Which rows of each group a fit may see."""
    g, a = t.gemm, t.attn
    mg = np.ones(len(g["m"]), bool)
    ma = np.ones(len(a["latency"]), bool)
    mm = None if t.moe is None else np.ones(len(t.moe["latency"]), bool)
    mr = None if t.ar is None else np.ones(len(t.ar["latency"]), bool)
    if low_range:
        mg &= g["m"] <= TRAIN_RANGE["gemm_m"]
        dec = a["decode"] > 0
        ma &= np.where(dec, (a["batch_size"] <= TRAIN_RANGE["batch"]) & (a["step"] <= TRAIN_RANGE["ctx"]),
                       a["batch_size"] * a["isl"] <= TRAIN_RANGE["isl"])
        if mm is not None:
            mm &= t.moe["num_tokens"] <= TRAIN_RANGE["moe_tokens"]
        if mr is not None:
            mr &= t.ar["message_size"] <= TRAIN_RANGE["gemm_m"] * 8192 * 2
    if held is not None:
        model, tp = held
        dims = set()
        for n, k, nn in _gemm_shapes(model, tp):
            dims.update((k, nn))
        mg &= ~np.isin(g["n"], list(dims)) & ~np.isin(g["k"], list(dims))
        H, KV = _heads(model, tp)
        ma &= ~((a["num_heads"] == H) & (a["num_key_value_heads"] == KV) & (a["head_dim"] == model.head_dim))
        if mm is not None and model.moe is not None:
            mo = model.moe
            mm &= ~((t.moe["hidden_size"] == model.hidden) & (t.moe["inter_size"] == mo.expert_ffn)
                    & (t.moe["topk"] == mo.active_experts) & (t.moe["num_experts"] == mo.experts))
    return {"gemm": mg, "attn": ma, "moe": mm, "ar": mr}


def start_profile(chip: Any, stack: str) -> EngineProfile:
    """The fit's starting point; parameters `chip` does not fit take their fixed values."""
    start = {n: v[0] for n, v in PARAMS.items()}
    if "gemm_wave_floor" not in fitted_params(chip):
        start["gemm_wave_floor"] = 1.0  # persistent, tile-scheduled GEMMs: no part-empty last wave
    assert len(fitted_params(chip)) <= MAX_FITTED
    return EngineProfile(chip=chip.name, stack=stack, **start)


def fit(t: Tables, stack: str, held: tuple[Model, int] | None = None, low_range: bool = False,
        fallback: EngineProfile | None = None) -> EngineProfile:
    """Fit every parameter group of `stack` on `t`'s rows (minus what `held`/`low_range` hold out)."""
    chip = _chip(t.system)
    p = replace(start_profile(chip, stack), moe_kernels=t.moe_kernels)
    masks = _masks(t, held, low_range)
    data = {"gemm": t.gemm, "gemm_fp8": t.gemm, "attn": t.attn, "moe": t.moe, "ar": t.ar}
    lo = t.gemm["fp8"] > 0
    masks["gemm_fp8"] = masks["gemm"] & lo
    masks["gemm"] = masks["gemm"] & ~lo
    masks["attn"] = masks["attn"] & ~(t.attn["kv_fp8"] > 0)  # fp8 caches dequantise on the fly: another kernel
    if t.moe is not None and masks["moe"] is not None:  # fp8 experts follow the dense GEMMs' fp8 ratio
        masks["moe"] = masks["moe"] & ~(t.moe["fp8"] > 0)
    for group in ("gemm", "gemm_fp8", "attn", "moe", "ar"):
        rows, mask = data[group], masks[group]
        if group == "gemm_fp8" and (mask is None or mask.sum() < 8):  # no fp8 rows (A100): bf16's fraction
            p = p.with_params({"gemm_fp8_eff": p.gemm_eff})
            continue
        if rows is None or mask is None or mask.sum() < 8:
            if fallback is None:
                raise GimletError(f"{PACKAGE}: no {group} rows to fit for {t.framework} on {t.system}")
            p = p.with_params({n: getattr(fallback, n) for n in GROUPS[group][0] if n in fitted_params(chip)})
            continue
        p = _fit_group(p, chip, group, _select(rows, mask))
    return p


def group_errors(p: EngineProfile, t: Tables) -> dict[str, dict[str, float]]:
    """Median and max |relative error| of each kernel group on all its rows (the fit error)."""
    chip = _chip(t.system)
    out = {}
    for group, rows in (("gemm", t.gemm), ("attn", t.attn), ("moe", t.moe), ("ar", t.ar)):
        if rows is None:
            continue
        e = np.abs(GROUPS[group][1](p, chip, rows) / (rows["latency"] * 1e-3) - 1)
        out[group] = {"median": float(np.median(e)), "p90": float(np.quantile(e, 0.9)), "max": float(e.max()),
                      "rows": len(e)}
    return out


# ---- steps composed from the tables -------------------------------------------------------


def _heads(model: Model, tp: int) -> tuple[int, int]:
    return model.heads // tp, max(1, model.kv_heads // tp)


def _gemm_shapes(model: Model, tp: int) -> list[tuple[str, int, int]]:
    """(name, K, N) of each GEMM one chip runs per layer, split `tp` ways (column- then row-parallel)."""
    h = model.hidden
    qkv = (model.heads + 2 * model.kv_heads) * model.head_dim
    out = [("attn.qkv", h, qkv // tp), ("attn.o", model.heads * model.head_dim // tp, h)]
    if model.moe is None:
        out += [("ffn.gate_up", h, 2 * model.ffn // tp), ("ffn.down", model.ffn // tp, h)]
    return out


def _interp_axis(grid: np.ndarray, x: float) -> tuple[int, int, float]:
    i = int(np.searchsorted(grid, x))
    i = min(max(i, 1), len(grid) - 1)
    x0, x1 = grid[i - 1], grid[i]
    return i - 1, i, (x - x0) / (x1 - x0)


@cache
def _gemm_grid(system: str, framework: str, dtype: str, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = load_tables(system, framework).lookup["gemm"]
    s = df[(df.gemm_dtype == dtype) & (df.m == m)]
    if not len(s):
        raise GimletError(f"no GEMM rows at m={m} ({dtype}) for {framework} on {system}")
    piv = s.pivot_table(index="n", columns="k", values="latency")
    return piv.index.to_numpy(float), piv.columns.to_numpy(float), piv.to_numpy(float)


def table_gemm_ms(t: Tables, dtype: str, m: int, n: float, k: float) -> float:
    """Measured GEMM time: exact in M, bilinear (extrapolated at the ends) in N and K."""
    ns, ks, z = _gemm_grid(t.system, t.framework, dtype, m)
    i0, i1, fn = _interp_axis(ns, n)
    j0, j1, fk = _interp_axis(ks, k)
    a = z[i0, j0] + (z[i1, j0] - z[i0, j0]) * fn
    b = z[i0, j1] + (z[i1, j1] - z[i0, j1]) * fn
    v = a + (b - a) * fk
    if not math.isfinite(v):
        raise GimletError(f"GEMM table gap near m={m} n={n} k={k}")
    return float(v)


def _row(df: Any, **eq: Any) -> float:
    mask = np.ones(len(df), bool)
    for k, v in eq.items():
        mask &= (df[k] == v).to_numpy()
    s = df[mask]
    if not len(s):
        raise KeyError(eq)
    return float(s.latency.min())


def table_ar_ms(t: Tables, nbytes: float, n: int) -> float:
    df = t.lookup["allreduce"]
    s = df[df.num_gpus == n].sort_values("message_size")
    sizes, lat = s.message_size.to_numpy(float), s.latency.to_numpy(float)
    i0, i1, f = _interp_axis(sizes, nbytes)
    return float(lat[i0] + (lat[i1] - lat[i0]) * f)


def measured_step_ms(t: Tables, model: Model, tp: int, phase: str, batch: int, tokens: int, ctx: int) -> float:
    """The sum of a step's kernels as the tables measured them (KeyError where a table lacks a shape)."""
    m = batch * tokens
    H, KV = _heads(model, tp)
    total = 0.0
    for _, k, n in _gemm_shapes(model, tp):
        total += table_gemm_ms(t, "bfloat16", m, n, k) * model.layers
    win = model.sliding_window.window if model.sliding_window else 0
    for sliding, count in ((False, model.layers - model.sliding_layers), (True, model.sliding_layers)):
        if not count:
            continue
        w = win if sliding else 0
        if phase == "decode":
            lat = _row(t.lookup["generation_attention_perf"], batch_size=batch, step=ctx, num_heads=H,
                       num_key_value_heads=KV, head_dim=model.head_dim, window_size=w, kv_cache_dtype="bfloat16")
        else:
            lat = _row(t.lookup["context_attention_perf"], batch_size=batch, isl=tokens, num_heads=H,
                       num_key_value_heads=KV, head_dim=model.head_dim, window_size=w, kv_cache_dtype="bfloat16")
        total += lat * count
    if model.moe is not None:
        mo = model.moe
        total += table_gemm_ms(t, "bfloat16", m, 32, model.hidden) * model.moe_layers  # router (N <= 32)
        lat = _row(t.lookup["moe"], moe_dtype="bfloat16", num_tokens=m, hidden_size=model.hidden,
                   inter_size=mo.expert_ffn, topk=mo.active_experts, num_experts=mo.experts, moe_tp_size=tp,
                   moe_ep_size=1)
        total += lat * model.moe_layers
    if tp > 1:
        total += 2 * model.layers * table_ar_ms(t, m * model.hidden * 2, tp)
    total += table_gemm_ms(t, "bfloat16", batch, model.vocab / tp, model.hidden)  # LM head on the last positions
    return total


def predicted_kernels_ms(p: EngineProfile, model: Model, tp: int, phase: str, batch: int, tokens: int, ctx: int) -> float:
    """gimletc's engine-stack estimate of the same kernels (`gimletc.cost.roofline`, engine path), in ms."""
    from gimletc.cost.roofline import estimate_workload
    from gimletc.hardware.catalog import get_chip
    from gimletc.models.workload import step_workload

    chip = get_chip(p.chip)
    m = model.model_copy(update={"weight_dtype": "bf16", "kv_dtype": "bf16", "act_dtype": "bf16",
                                 "moe": model.moe.model_copy(update={"expert_dtype": None}) if model.moe else None})
    # the tables' MoE rows were measured with the collector's skewed routing: price that routing here
    est = estimate_workload(m, chip, step_workload(m, phase, batch, tokens, ctx, p.stack), tp, check_fit=False,
                            profile=p, table_routing=True)
    return sum(o.seconds for o in est.ops if o.kind in ("gemm", "attention", "comm")) * 1e3


@dataclass(frozen=True)
class StepCheck:
    model: str
    moe: bool
    tp: int
    phase: str
    batch: int
    tokens: int
    ctx: int
    measured_ms: float
    predicted_ms: float
    fold: str

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1


def _points(phase_filter: str | None = None) -> list[tuple[str, int, int, int]]:
    pts = [("decode", b, 1, c) for b, c in DECODE_POINTS] + [("prefill", b, s, 0) for b, s in PREFILL_POINTS]
    return [x for x in pts if phase_filter is None or x[0] == phase_filter]


def _in_train_range(phase: str, batch: int, tokens: int, ctx: int) -> bool:
    if phase == "decode":
        return batch <= TRAIN_RANGE["batch"] and ctx <= TRAIN_RANGE["ctx"]
    return batch * tokens <= TRAIN_RANGE["isl"]


def _cases(t: Tables) -> list[tuple[Model, int, list[tuple[str, int, int, int, float]]]]:
    """Catalog models with the table rows to compose their steps: (model, tp, [(phase, b, T, C, measured ms)])."""
    from gimletc.models.catalog import get_model

    out = []
    for name, tp in DENSE_CASES + MOE_CASES:
        model = get_model(name)
        pts = []
        for phase, b, T, C in _points():
            try:
                pts.append((phase, b, T, C, measured_step_ms(t, model, tp, phase, b, T, C)))
            except (KeyError, GimletError):
                continue
        if pts:
            out.append((model, tp, pts))
    return out


def held_out_checks(t: Tables, stack: str, full: EngineProfile) -> list[StepCheck]:
    """Step checks on shapes held out of the fit: by model (refit without it), and by range (refit on small steps)."""
    checks = []
    cases = _cases(t)
    low = fit(t, stack, low_range=True, fallback=full)
    for model, tp, pts in cases:
        by_model = fit(t, stack, held=(model, tp), fallback=full)
        for phase, b, T, C, meas in pts:
            pred = predicted_kernels_ms(by_model, model, tp, phase, b, T, C)
            checks.append(StepCheck(model.name, model.moe is not None, tp, phase, b, T, C, meas, pred, "model"))
            if not _in_train_range(phase, b, T, C):
                pred = predicted_kernels_ms(low, model, tp, phase, b, T, C)
                checks.append(StepCheck(model.name, model.moe is not None, tp, phase, b, T, C, meas, pred, "range"))
    return checks


def fit_checks(t: Tables, p: EngineProfile) -> list[StepCheck]:
    """The same steps predicted by the full fit (the fit error at step level)."""
    out = []
    for model, tp, pts in _cases(t):
        for phase, b, T, C, meas in pts:
            out.append(StepCheck(model.name, model.moe is not None, tp, phase, b, T, C, meas,
                                 predicted_kernels_ms(p, model, tp, phase, b, T, C), "fit"))
    return out


def summarise(checks: list[StepCheck]) -> dict[str, dict[str, float]]:
    out = {}
    for label, sel in (("dense", lambda c: not c.moe), ("moe", lambda c: c.moe)):
        e = [abs(c.error) for c in checks if sel(c)]
        if e:
            out[label] = {"median": median(e), "p90": float(np.quantile(e, 0.9)), "max": max(e), "steps": len(e)}
    return out


def coverage_band(errors: list[float], share: float = 0.9) -> float:
    """The smallest band holding at least `share` of `errors` (absolute relative errors): the
    ceil(share x n)-th smallest; a band any wider would hold more than coverage needs."""
    e = sorted(errors)
    return float(e[max(0, math.ceil(share * len(e) - 1e-9) - 1)])


CHAIN_DECODES = (1, 10, 100, 1000)  # decode steps after a prefill in the chains a band must also hold


def chain_widening(checks: list[StepCheck], got: dict[str, float], share: float = 0.9) -> float:
    """The least amount δ by which the prefill and decode bands in `got` must widen so that `share` of the
    held-out chains (per held-out model and fold: each prefill check, then 1, 10, 100 or 1000 steps of
    each decode check) lie in their combined band (`combine`: the time-weighted mean of the parts').
    A chain of relative error e and combined band b needs max(0, |e| - b): δ is the smallest that holds
    `share` of the chains, 0 when the bands already do."""
    groups: dict[tuple[str, int, str], list[StepCheck]] = {}
    for c in checks:
        groups.setdefault((c.model, c.tp, c.fold), []).append(c)
    need = []
    for cs in groups.values():
        for p in (c for c in cs if c.phase == "prefill"):
            for d in (c for c in cs if c.phase == "decode"):
                for n in CHAIN_DECODES:
                    pred = p.predicted_ms + n * d.predicted_ms
                    err = abs((p.measured_ms + n * d.measured_ms) / pred - 1.0)
                    band = (p.predicted_ms * got["prefill"] + n * d.predicted_ms * got["decode"]) / pred
                    need.append(max(0.0, err - band))
    return coverage_band(need, share) if need else 0.0


def bands(checks: list[StepCheck]) -> dict[str, float]:
    """Per op kind and model class (dense; "moe." prefix), the 90th percentile of held-out |relative
    error|, widened where needed so that 90% of held-out prefill-then-decode chains also lie in their
    combined band (a step's errors and its neighbours' are correlated only in part: `chain_widening`);
    verify and mixed steps run the same kernels as decode and prefill together, so they take the larger
    of the two."""
    out = {}
    for prefix, moe in (("", False), ("moe.", True)):
        mine = [c for c in checks if c.moe == moe]
        got = {}
        for kind in ("prefill", "decode"):
            e = [abs(c.error) for c in mine if c.phase == kind]
            if e:
                got[kind] = coverage_band(e)
        if len(got) == 2:
            widen = chain_widening(mine, got)
            got = {k: v + widen for k, v in got.items()}
        if got:
            got["verify"] = got["mixed"] = max(got.values())
        out.update({prefix + k: v for k, v in got.items()})
    return out


# ---- one command --------------------------------------------------------------------------


@dataclass
class Calibration:
    profile: EngineProfile
    tables: Tables
    fit_error: dict[str, dict[str, float]]
    step_fit: dict[str, dict[str, float]]
    held_out: dict[str, dict[str, float]]
    checks: list[StepCheck]


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _round_up(x: float) -> float:
    """`x` rounded up at its sixth significant digit."""
    if x <= 0:
        return 0.0
    scale = 10.0 ** (5 - math.floor(math.log10(x)))
    return float(f"{math.ceil(x * scale) / scale:.6g}")


def calibrate_engine(system: str, framework: str, fallback: EngineProfile | None = None) -> Calibration:
    """Fit `framework`'s profile on `system` and check it on held-out steps."""
    stack = {v: k for k, v in FRAMEWORK_OF.items()}.get(framework)
    if stack is None:
        raise UnknownNameError("framework", framework, list(FRAMEWORK_OF.values()))
    t = load_tables(system, framework)
    full = fit(t, stack, fallback=fallback)
    full = full.with_params({n: _round(getattr(full, n)) for n in PARAMS})
    checks = held_out_checks(t, stack, full)
    b = {k: _round_up(v) for k, v in bands(checks).items()}  # never below the error it must hold
    prof = EngineProfile(**{**{f: getattr(full, f) for f in ("chip", "stack", "moe_kernels", *PARAMS)},
                            "origin": f"fitted: gimletc calibrate --from-aiconfigurator {system} --framework {framework} "
                                      f"({PACKAGE} {package_version()})", "bands": b})
    return Calibration(prof, t, group_errors(prof, t), summarise(fit_checks(t, prof)), summarise(checks), checks)


def profile_json(c: Calibration) -> str:
    p = c.profile

    def r(d: dict) -> dict:
        return {k: (r(v) if isinstance(v, dict) else _round(v) if isinstance(v, float) else v) for k, v in d.items()}

    doc = {
        "chip": p.chip,
        "stack": p.stack,
        "origin": p.origin,
        "params": {n: getattr(p, n) for n in PARAMS},
        "fitted": list(fitted_params(_chip(c.tables.system))),
        "moe_kernels": p.moe_kernels,
        "bands": p.bands,
        "provenance": {
            "package": f"{PACKAGE} {package_version()}",
            "system": c.tables.system,
            "framework": c.tables.framework,
            "tables": c.tables.files,
            "rows": c.tables.rows,
            "moe_distribution": DISTRIBUTION,
            "fit_error_per_kernel": r(c.fit_error),
            "fit_error_per_step": r(c.step_fit),
            "held_out_error_per_step": r(c.held_out),
            "held_out": "by model (no row of its head layout, MoE shape or GEMM widths) and by range "
                        f"(fit on {json.dumps(TRAIN_RANGE, sort_keys=True)}, checked above)",
        },
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write_profile(c: Calibration, folder: Path = DATA) -> Path:
    path = folder / profile_path(c.profile.chip, c.profile.stack).name
    write_atomic(path, profile_json(c))
    return path


def engine_stacks_for(system: str) -> list[str]:
    root = package_root() / system
    return [s for s in ENGINE_STACKS if (root / "gemm" / FRAMEWORK_OF[s]).is_dir()]


def summary_lines(c: Calibration) -> list[str]:
    """What a calibration found, for the terminal."""
    p = c.profile
    out = [f"{p.chip} {p.stack}: {p.origin}",
           "parameters: " + ", ".join(f"{n}={getattr(p, n):.4g}" for n in PARAMS),
           "tables: " + ", ".join(f"{k}: {v} ({c.tables.rows[k]} rows)" for k, v in sorted(c.tables.files.items()))]
    for name, errs in (("kernel fit error", c.fit_error), ("step fit error", c.step_fit),
                       ("held-out step error", c.held_out)):
        out.append(name + ": " + "; ".join(
            f"{k} median {v['median']:.1%}, p90 {v['p90']:.1%}, max {v['max']:.1%}" for k, v in sorted(errs.items())))
    out.append("bands (90% of held-out steps and of prefill-then-decode chains inside): " + ", ".join(f"{k} ±{v:.0%}" for k, v in sorted(p.bands.items())))
    return out
