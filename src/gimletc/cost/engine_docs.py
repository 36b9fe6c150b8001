"""The engine stacks' tables in the docs, written by `make calibrate` from the committed profiles.

Kept apart from `gimletc.cost.engine` (the pricing) because the sensitivity table prices steps
through `gimletc.cost.roofline`, which itself prices through the engine module."""

from __future__ import annotations

import json
from pathlib import Path

from gimletc.cost.engine import DATA, PARAMS, SRAM_BAND, SRAM_FLOOR, SRAM_FLOOR_DEFAULT, engine_profile
from gimletc.models.workload import DEFAULT_STACK

def engine_docs() -> str:
    """Markdown: per engine stack and chip, the fitted parameters, fit and held-out errors and bands,
    as recorded in the committed profiles (`gimletc calibrate --from-aiconfigurator ... --write`)."""
    rows = []
    for f in sorted(DATA.glob("*.json")):
        raw = json.loads(f.read_text())
        prov = raw.get("provenance", {})

        def cell(d: dict, kind: str) -> str:
            v = d.get(kind)
            return "n/a" if not v else f"{v['median']:.1%} / {v['max']:.1%} ({v['steps']})"

        fit, held = prov.get("fit_error_per_step", {}), prov.get("held_out_error_per_step", {})
        k = prov.get("fit_error_per_kernel", {})
        kern = ", ".join(f"{g} {v['median']:.0%}" for g, v in sorted(k.items()))
        b = raw.get("bands", {})
        rows.append(f"| {raw['stack']} | {raw['chip']} | {prov.get('system', '')} | {cell(fit, 'dense')} | "
                    f"{cell(fit, 'moe')} | {cell(held, 'dense')} | {cell(held, 'moe')} | "
                    f"±{b.get('prefill', float('nan')):.0%} / ±{b.get('decode', float('nan')):.0%} | {kern} |")
    rows.sort()
    head = ["| stack | chip | system | fit: dense median / max (steps) | fit: MoE | held out: dense | held out: MoE "
            "| band prefill / decode | kernel fit median per group |",
            "|---|---|---|---:|---:|---:|---:|---:|---|"]
    params = ["", "Parameters (fitted ones plain; a value in brackets is fixed by rule, not fitted: `gemm_fp8_eff` "
              "= `gemm_eff` without fp8 units, `gemm_wave_floor` = 1 under persistent GEMM kernels):", "",
              "| stack | chip | fitted | " + " | ".join(PARAMS) + " |", "|---|---|---:|" + "---:|" * len(PARAMS)]
    prow = []
    for f in sorted(DATA.glob("*.json")):
        raw = json.loads(f.read_text())
        fitted = set(raw.get("fitted", PARAMS))
        cells = [f"{raw['params'][n]:.4g}" if n in fitted else f"({raw['params'][n]:.4g})" for n in PARAMS]
        prow.append(f"| {raw['stack']} | {raw['chip']} | {len(fitted)} | " + " | ".join(cells) + " |")
    pkg = ""
    for f in sorted(DATA.glob("*.json")):
        pkg = json.loads(f.read_text()).get("provenance", {}).get("package", "")
        break
    intro = [f"_Written by `make calibrate` from the committed profiles in `src/gimletc/cost/data/engines/` "
             f"(fitted to {pkg}); do not edit by hand._", ""]
    return "\n".join(intro + head + rows + params + sorted(prow))


def update_doc_block(doc: Path, name: str, body: str) -> None:
    """Replace the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` of `doc` (append the block
    when it has none)."""
    from gimletc._io import write_atomic

    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body}\n{end}"
    text = doc.read_text() if doc.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_atomic(doc, text)


def doc_blocks() -> dict[tuple[str, str], str]:
    """(doc file, block name) -> the text `make calibrate` writes there, from the committed profiles."""
    return {("docs/cost-model.md", "engines"): engine_docs(), ("docs/cost-model.md", "derived"): derived_docs(),
            ("docs/hardware.md", "sram-floor"): sram_sensitivity_docs()}


def write_doc_blocks(root: Path) -> list[Path]:
    out = []
    for (doc, name), body in doc_blocks().items():
        update_doc_block(root / doc, name, body)
        out.append(root / doc)
    return sorted(set(out))


def derived_docs(stack: str = DEFAULT_STACK) -> str:
    """Markdown: how every catalog chip gets its `stack` profile (measured, or derived by which rule)."""
    from gimletc.hardware.catalog import chip_catalog

    out = [f"| chip | kind | `{stack}` profile | decode band (dense) |", "|---|---|---|---:|"]
    for c in chip_catalog().values():
        if c.kind == "cpu":
            out.append(f"| {c.name} | cpu | no engine: the chip's own fitted or derived efficiency, fused operator "
                       f"counts | ±{SRAM_BAND:.0%} (stated) |")
            continue
        p = engine_profile(c, stack)
        how = "measured" if p.measured else p.origin.split(";")[0].removeprefix("derived: ")
        out.append(f"| {c.name} | {c.kind} | {how} | ±{p.bands.get('decode', float('nan')):.0%} |")
    return "\n".join(out)


def sram_sensitivity_docs() -> str:
    """Markdown: SRAM-accelerator decode steps with the per-step floor halved, as stated, and doubled."""
    from gimletc.cost.roofline import estimate
    from gimletc.hardware.catalog import get_chip
    from gimletc.models.catalog import get_model

    rows = ["| chip | model | cards | batch | floor x0.5 ms | floor x1 ms | floor x2 ms |", "|---|---|---:|---:|---:|---:|---:|"]
    cases = (("dmatrix-corsair", "llama-3.2-1b@mxint8", 1, 1), ("dmatrix-corsair", "llama-3.1-8b@mxint8", 8, 1),
             ("dmatrix-corsair", "llama-3.1-8b@mxint8", 8, 64), ("groq-lpu", "llama-3.2-1b@int8", 1, 1),
             ("cerebras-wse3", "llama-3.1-8b", 1, 1))
    for chip, model, n, b in cases:
        c, m = get_chip(chip), get_model(model)
        base = SRAM_FLOOR.get(chip, SRAM_FLOOR_DEFAULT)
        cells = []
        for f in (0.5, 1.0, 2.0):
            SRAM_FLOOR[chip] = (base[0] * f, base[1] * f)
            try:
                cells.append(f"{estimate(m, c, 'decode', b, 1, 1024, chips=n, check_fit=False, stack=DEFAULT_STACK).latency_ms:.3f}")
            finally:
                SRAM_FLOOR[chip] = base
        rows.append(f"| {chip} | {model} | {n} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
