"""Which tile shape an engine's fused-MoE kernel runs for an expert shape on a chip.

vLLM and SGLang run their MoE layers with one Triton kernel (`fused_moe`) whose
launch configuration (rows x columns of each output tile, `BLOCK_SIZE_M x
BLOCK_SIZE_N`) is looked up per expert shape, GPU and dtype in JSON files the
engines ship (`E=<experts>,N=<inner size per chip>,device_name=<GPU>.json`,
tuned by each project's benchmark script), and falls back to a default
configuration in the engine's code where no file exists. The tile decides how
many bytes each multiply-add pulls into shared memory: an output tile of BM x BN
loads (BM + BN) x K operand elements for BM x BN x K multiply-adds, so the
engines' 64 x 64 defaults move twice the operand bytes of a tuned 128 x 128 or
128 x 256 tile. That is the difference between Mixtral's tuned shapes (0.55-0.65
of the bf16 peak at 8k tokens) and the untuned majority (0.2-0.45) in
aiconfigurator-core's tables; `gimletc.cost.engine.moe_s` prices it as the
kernel's operand feed, `moe_feed_bw`.

What this module knows is read from the engines' released wheels, at the
versions aiconfigurator-core measured, by `make moe-tiles`
(`gimletc.cost.moe_tiles.main`) (bf16 files only, each file's tile per token count; where
SGLang ships one shape for several Triton versions, the newest, as SGLang's own
fallback picks it) into
`data/fused_moe_tiles.json`, with each file's wheel and path. The defaults are
the engines' `get_default_config` rules for bf16, restated below (facts about
the engines, cited, not fitted). Chips no engine file names take the engine's default.

Not every MoE layer runs the Triton kernel. Library kernels pick a tactic by
autotuning when the engine starts, which no file records; gimletc takes the row
block an autotuner picks, the smallest of 16, 32, 64, 128 and 256 rows (the
row tiles CUTLASS's and trtllm-gen's grouped kernels offer on Hopper and
Blackwell) that holds an expert's average rows, 128 columns, and no operand-feed limit (their tiles are chosen to
stay compute- or memory-bound: the TensorRT-LLM fits on the H100 and H200 took
the feed bandwidth to its bound when they had one). Two kinds, by how they
read an expert's weights:

- `cutlass`: grouped GEMMs (TensorRT-LLM's CUTLASS MoE, FlashInfer's CUTLASS
  MoE), which read an expert's weights once, as Triton's grouped launch order
  does through L2;
- `trtllm-gen`: FlashInfer's TensorRT-LLM-generated MoE kernels (vLLM 0.24's
  bf16 experts on the B200, SGLang's `flashinfer_trtllm` backend), built for
  low latency with the weights on the MMA's wide side and the tokens on its
  narrow side, so each block of tokens streams the expert's weights again. On
  the B200 under vLLM, Mixtral-8x7B's experts at 8k tokens take 0.73, 1.42 and
  4.12 ms at TP8, TP4 and TP2 where computing them takes 0.32, 0.64 and 1.28
  ms at the bf16 peak, and reading their weights once 0.04, 0.09 and 0.18 ms:
  priced as grouped GEMMs, those layers came out up to 42% fast.

Which kernel ran each measured row is in aiconfigurator-core's tables
(`kernel_source`); a profile lists the shapes whose rows ran a library kernel,
with its kind (`moe_kernels`), and other shapes take the engine's default on
the chip (`DEFAULT_KERNEL`).
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from functools import cache
from pathlib import Path

from gimletc.models.workload import distinct_experts

DATA = Path(__file__).parent / "data" / "fused_moe_tiles.json"

# The GPU name each engine's files carry (torch.cuda.get_device_name with spaces as underscores).
DEVICE_NAME: dict[str, str] = {"a100-sxm-80gb": "NVIDIA_A100-SXM4-80GB", "h100-sxm": "NVIDIA_H100_80GB_HBM3",
                               "h200": "NVIDIA_H200", "b200": "NVIDIA_B200"}
# The engine versions whose files are read, per chip: the versions of aiconfigurator-core 0.12's MoE tables.
VERSIONS: dict[str, dict[str, str]] = {
    "vllm": {"a100-sxm-80gb": "0.14.0", "h100-sxm": "0.24.0", "h200": "0.24.0", "b200": "0.24.0"},
    "sglang": {"a100-sxm-80gb": "0.5.10", "h100-sxm": "0.5.14", "h200": "0.5.14", "b200": "0.5.14"},
}
TRITON_ENGINES = frozenset(VERSIONS)
NEWEST = {e: max(vs.values(), key=lambda v: tuple(int(x) for x in v.split("."))) for e, vs in VERSIONS.items()}
TRITON, CUTLASS, STREAMING = "triton", "cutlass", "trtllm-gen"
# The kernel an engine's bf16 MoE layer runs by default where its tables measured no other: TensorRT-LLM's
# CUTLASS kernels everywhere; vLLM 0.24 on Blackwell FlashInfer's TensorRT-LLM bf16 experts (every B200
# vLLM row but two shapes, which ran FlashInfer's CUTLASS kernel); Triton otherwise.
DEFAULT_KERNEL: dict[tuple[str, str], str] = {("vllm", "blackwell"): STREAMING}
LIBRARY_BN = 128  # columns of an autotuned library tile (stated: the tile column count they all offer)
_NAME = re.compile(r"E=(\d+),N=(\d+),device_name=([^,]+?)(,dtype=[^,]+?)?(,block_shape=[^,]*?)?"
                   r"(,per_channel_quant=True)?(_down)?\.json$")


def kernel_class(kernel_source: str) -> str:
    """The kind of MoE kernel an aiconfigurator-core `kernel_source` names: triton, cutlass or trtllm-gen."""
    if "triton" in kernel_source or kernel_source == "vllm_fused_moe":
        return TRITON
    return STREAMING if "flashinfer_trtllm" in kernel_source else CUTLASS


def shape_key(experts: float, topk: float, hidden: float) -> str:
    return f"{int(experts)},{int(topk)},{int(hidden)}"


def key_order(key: str) -> tuple[int, ...]:
    """Sort order of a comma-separated shape key ("E,N" or "E,k,h"): numeric, field by field."""
    return tuple(int(v) for v in key.split(","))


def moe_kernel(stack: str, generation: str, experts: float, topk: float, hidden: float,
               measured: dict[str, str] | None = None) -> str:
    """The kind of kernel `stack`'s MoE layer runs for this expert shape on a chip of `generation`: the one
    its tables measured for the shape if a library one, else the engine's default on the generation."""
    got = (measured or {}).get(shape_key(experts, topk, hidden))
    if got is not None:
        return got
    if stack not in TRITON_ENGINES:
        return CUTLASS
    return DEFAULT_KERNEL.get((stack, generation), TRITON)


def autotuned_block(tokens: float, topk: float, experts: float) -> int:
    """Rows per block of an autotuned library kernel: the smallest of 16, 32, 64, 128, 256 that holds an
    expert's average rows (the token-expert pairs over the distinct experts they touch)."""
    touched = max(1.0, distinct_experts(experts, topk, tokens)) if experts > 0 else 1.0
    rows = tokens * topk / touched
    for bm in (16, 32, 64, 128):
        if rows <= bm:
            return bm
    return 256


def default_tile(stack: str, version: str, tokens: float, experts: float) -> tuple[int, int]:
    """(BLOCK_SIZE_M, BLOCK_SIZE_N) of the engine's default bf16 fused-MoE configuration for `tokens` tokens.

    vLLM from 0.2x (`fused_moe.get_default_config`, read at 0.24.0): rows 16/32/64/128 up to 32/96/512 tokens
    and beyond, columns 64 up to 64 tokens, else 128. vLLM 0.14 and SGLang 0.5.x: 16 x 32 while tokens <= experts,
    else 64 x 64."""
    if stack == "vllm" and tuple(int(x) for x in version.split(".")[:2]) >= (0, 20):
        bm = 16 if tokens <= 32 else 32 if tokens <= 96 else 64 if tokens <= 512 else 128
        return bm, 64 if tokens <= 64 else 128
    return (16, 32) if tokens <= experts else (64, 64)


@cache
def _table() -> dict:
    return json.loads(DATA.read_text())


def moe_tile(stack: str, chip: str, experts: float, n: float, tokens: float, topk: float = 1.0,
             kernel: str = TRITON) -> tuple[int, int, float, float]:
    """(rows, columns, fed, streamed) of the output tile `stack`'s MoE `kernel` runs on `chip` for experts of
    inner size `n` per chip, at `tokens` tokens. Triton: the tuned file's configuration for the nearest size it
    lists where the engine ships one for the shape, else the engine's default. Libraries: the autotuned block.
    `fed` is 1 where the tile's operand feed limits the kernel (Triton), `streamed` 1 where each row block
    streams the expert's weights again (trtllm-gen)."""
    if kernel != TRITON or stack not in TRITON_ENGINES:
        return autotuned_block(tokens, topk, experts), LIBRARY_BN, 0.0, 1.0 if kernel == STREAMING else 0.0
    entry = _table()["engines"].get(stack, {}).get(chip)
    version = entry["version"] if entry else NEWEST[stack]
    if entry is not None:
        tuned = entry["tuned"].get(f"{int(experts)},{int(round(n))}")
        if tuned is not None:  # the engines take the configuration of the nearest tuned size (the first on a tie)
            m, bm, bn = min(tuned, key=lambda row: abs(row[0] - tokens))
            return int(bm), int(bn), 1.0, 0.0
    bm, bn = default_tile(stack, version, tokens, experts)
    return bm, bn, 1.0, 0.0


# ---- reading the engines' wheels (refit time only) ---------------------------------------------


def _wheel_engine(name: str) -> tuple[str, str]:
    m = re.match(r"(vllm|sglang)-([0-9][^-]*)-", Path(name).name)
    if not m:
        raise ValueError(f"{name}: not a vllm or sglang wheel")
    return m.group(1), m.group(2)


def _triton_key(path: str) -> tuple[int, ...]:
    m = re.search(r"/triton_(\d+)_(\d+)_(\d+)/", path)
    return tuple(int(x) for x in m.groups()) if m else (0,)


def read_wheel(path: str | Path) -> dict[str, dict]:
    """{engine: {chip: {"version", "wheel", "tuned": {"E,N": [[tokens, BM, BN], ...]}, "files": {"E,N": path}}}}
    from one engine wheel."""
    engine, version = _wheel_engine(str(path))
    out: dict[str, dict] = {}
    with zipfile.ZipFile(path) as z:
        names = sorted((n for n in z.namelist() if "/configs/" in n and "moe" in n and n.endswith(".json")),
                       key=_triton_key, reverse=True)  # newest Triton directory first, as SGLang falls back
        for chip, dev in DEVICE_NAME.items():
            if VERSIONS[engine].get(chip) != version:
                continue
            tuned: dict[str, list[int]] = {}
            files: dict[str, str] = {}
            for n in names:
                m = _NAME.match(n.rsplit("/", 1)[-1])
                if not m or m.group(3) != dev or any(m.group(i) for i in (4, 5, 6, 7)):
                    continue
                key = f"{m.group(1)},{m.group(2)}"
                if key in tuned:
                    continue
                cfg = {int(k): v for k, v in json.loads(z.read(n)).items() if k.isdigit()}
                tuned[key] = [[m, int(cfg[m]["BLOCK_SIZE_M"]), int(cfg[m]["BLOCK_SIZE_N"])] for m in sorted(cfg)]
                files[key] = n
            order = sorted(tuned, key=key_order)
            out[chip] = {"version": version, "wheel": Path(path).name,
                         "tuned": {k: tuned[k] for k in order}, "files": {k: files[k] for k in order}}
    return {engine: out}


def build(wheels: list[str]) -> dict:
    engines: dict[str, dict] = {}
    for w in wheels:
        for engine, chips in read_wheel(w).items():
            engines.setdefault(engine, {}).update(chips)
    missing = [f"{e} {c} {v}" for e, vs in VERSIONS.items() for c, v in vs.items() if c not in engines.get(e, {})]
    if missing:
        raise ValueError(f"no wheel given for: {', '.join(missing)}")
    return {"source": "bf16 fused-MoE configuration files shipped in the engines' wheels (PyPI), read by "
                      "`make moe-tiles`; tuned: {\"E,N\": [[tokens, BLOCK_SIZE_M, "
                      "BLOCK_SIZE_N], ...]}",
            "engines": {e: dict(sorted(engines[e].items())) for e in sorted(engines)}}


def dumps(table: dict) -> str:
    """The table as JSON with one line per expert shape (diffable, a quarter of indented JSON's size)."""
    lines = ["{", f' "source": {json.dumps(table["source"])},', ' "engines": {']
    engines = list(table["engines"].items())
    for i, (engine, chips) in enumerate(engines):
        lines.append(f"  {json.dumps(engine)}: {{")
        for j, (chip, v) in enumerate(chips.items()):
            lines.append(f"   {json.dumps(chip)}: {{\"version\": {json.dumps(v['version'])}, "
                         f"\"wheel\": {json.dumps(v['wheel'])},")
            for key in ("tuned", "files"):
                rows = [f"     {json.dumps(k)}: {json.dumps(x, separators=(',', ':'))}" for k, x in v[key].items()]
                lines.append(f"    {json.dumps(key)}: {{" + ("\n" + ",\n".join(rows) + "\n    " if rows else "") + "}"
                             + ("," if key == "tuned" else ""))
            lines.append("   }" + ("," if j < len(chips) - 1 else ""))
        lines.append("  }" + ("," if i < len(engines) - 1 else ""))
    lines += [" }", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == table
    return text


def main(argv: list[str]) -> int:
    write = "--write" in argv
    wheels = [a for a in argv if a != "--write"]
    if not wheels:
        print("usage: moe_tiles [--write] WHEEL... (or make moe-tiles) (vllm 0.14.0 and 0.24.0, sglang 0.5.10 "
              "and 0.5.14: pip download --no-deps vllm==0.24.0 ...)", file=sys.stderr)
        return 2
    try:
        table = build(wheels)
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as e:  # one line, exit 2, nothing written
        print(f"moe_tiles: {e}", file=sys.stderr)
        return 2
    text = dumps(table)
    if write:
        tmp = DATA.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(DATA)
    for e, chips in table["engines"].items():
        for c, v in chips.items():
            print(f"{e} {v['version']} {c}: {len(v['tuned'])} tuned shapes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
