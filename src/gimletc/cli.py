"""The `gimletc` command line.

Every error a user can cause prints one line on stderr and exits 2; nothing
is written unless the whole result is ready.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from gimletc.errors import GimletError

app = typer.Typer(
    help="gimletc: compile AI inference across mixed hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Bundled model architectures.", no_args_is_help=True)
hw_app = typer.Typer(help="Bundled chips and cluster presets.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(hw_app, name="hw")

# Wide enough for the tables when output goes to a pipe or file (rich assumes 80 columns there).
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _fail(msg: str) -> NoReturn:
    print(f"gimletc: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _fmt_rate(n: float, unit: str) -> str:
    for prefix, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if n >= size:
            return f"{n / size:.4g} {prefix}{unit}"
    return f"{n:.4g} {unit}"


# ---- estimate -----------------------------------------------------------------


class PhaseName(str, Enum):
    prefill = "prefill"
    decode = "decode"
    verify = "verify"



@app.command()
def estimate(
    model: Annotated[str, typer.Option(help="catalog model name, or a path to a Hugging Face config.json")],
    chip: Annotated[str, typer.Option(help="catalog chip name (see `gimletc hw list`)")],
    phase: Annotated[PhaseName, typer.Option(help="step kind", case_sensitive=False)],
    batch: Annotated[int, typer.Option(help="sequences in the step")] = 1,
    tokens: Annotated[
        int | None,
        typer.Option(help="new tokens per sequence: the prompt for prefill, 1 for decode, draft tokens checked for verify"),
    ] = None,
    ctx: Annotated[int, typer.Option(help="tokens already in the KV cache before the step")] = 0,
    chips: Annotated[int, typer.Option(help="chips of this kind the step is split over (tensor parallel)")] = 1,
    stack: Annotated[str, typer.Option(help="software stack: reference (calibrated) | fused")] = "reference",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Predict the latency, FLOPs, bytes, bound and energy of one step of a model on a chip."""
    from gimletc.cost.roofline import estimate_workload
    from gimletc.hardware import get_chip
    from gimletc.models import get_model, step_workload

    phase = phase.value
    if tokens is None:
        if phase != "decode":
            _fail(f"--tokens is required for phase {phase!r} (prompt length for prefill, draft tokens for verify)")
        tokens = 1
    m, c = get_model(model), get_chip(chip)
    est = estimate_workload(m, c, step_workload(m, phase, batch, tokens, ctx, stack), chips)
    d = est.to_dict()
    d["stack"] = stack
    d["efficiency_origin"] = c.efficiency.origin
    if as_json:
        _print_json(d)
        return
    t = Table(title=f"{m.name} {phase} on {chips}x {c.name}" if chips > 1 else f"{m.name} {phase} on {c.name}")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    rows = [
        ("batch x tokens, ctx", f"{batch} x {tokens}, {ctx}"),
        ("latency", f"{est.latency_ms:.3f} ms"),
        ("bound", est.bound),
        ("compute / memory / overhead", f"{est.compute_s * 1e3:.3f} / {est.memory_s * 1e3:.3f} / {est.overhead_s * 1e3:.3f} ms"),
        ("FLOPs", _fmt_rate(est.flops, "FLOP")),
        ("bytes moved", _fmt_bytes(est.bytes)),
        ("tokens/s", f"{est.tokens_per_s:,.1f}"),
        ("energy", f"{est.energy_j:.4g} J"),
        ("memory needed", f"{_fmt_bytes(est.memory.total)} of {_fmt_bytes(c.capacity_bytes * chips)}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    out.print(f"[dim]cost model; {c.name} efficiency {c.efficiency.origin}[/dim]")


# ---- models -------------------------------------------------------------------


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the bundled models."""
    from gimletc.models import catalog

    rows = [m.summary() for m in catalog().values()]
    if as_json:
        _print_json(rows)
        return
    t = Table(title="models")
    for col in ("name", "params (B)", "active (B)", "weights (GB)", "KV KB/token", "layers", "attention", "MoE", "dtype"):
        t.add_column(col, justify="left" if col in ("name", "attention", "MoE", "dtype") else "right")
    for r in rows:
        t.add_row(
            r["name"], f"{r['params_b']:.2f}", f"{r['active_params_b']:.2f}", f"{r['weight_gb']:.1f}",
            f"{r['kv_kb_per_token']:.1f}", str(r["layers"]), r["attention"], r["moe"], r["weight_dtype"],
        )
    out.print(t)


@models_app.command("show")
def models_show(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one model (catalog name or config.json path) and its derived quantities."""
    from gimletc.models import get_model

    m = get_model(name)
    d = {**m.model_dump(mode="json", exclude_none=True), "derived": m.summary()}
    if as_json:
        _print_json(d)
        return
    out.print_json(json.dumps(d))


# ---- hardware -----------------------------------------------------------------


@hw_app.command("list")
def hw_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the bundled chips and cluster presets."""
    from gimletc.hardware import chip_catalog, cluster_presets

    chips = chip_catalog()
    if as_json:
        _print_json({"chips": sorted(chips), "clusters": sorted(cluster_presets())})
        return
    t = Table(title="chips")
    for col in ("name", "vendor", "kind", "bf16 peak", "memory", "mem BW", "SRAM", "TDP W", "efficiency"):
        t.add_column(col)
    for c in chips.values():
        bf16 = c.peak_flops.get("bf16") or c.peak_flops.get("fp16")
        t.add_row(
            c.name, c.vendor, c.kind, _fmt_rate(bf16, "FLOP/s") if bf16 else "-", _fmt_bytes(c.memory_bytes),
            _fmt_rate(c.memory_bw, "B/s") if c.memory_bw else "-", _fmt_bytes(c.sram_bytes) if c.sram_bytes else "-",
            f"{c.tdp_w:.0f}", c.efficiency.origin.split(":")[0],
        )
    out.print(t)
    out.print("cluster presets: " + ", ".join(sorted(cluster_presets())))


@hw_app.command("show")
def hw_show(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one chip (with the source of every figure) or a cluster preset."""
    from gimletc.hardware import chip_catalog, cluster_presets, get_chip, load_cluster

    if name not in chip_catalog() and (name in cluster_presets() or Path(name).exists()):
        cl = load_cluster(name)
        d = cl.model_dump(mode="json", exclude_none=True)
    else:
        d = get_chip(name).model_dump(mode="json", exclude_none=True)
    if as_json:
        _print_json(d)
        return
    out.print_json(json.dumps(d))


# ---- compile / show / graph ---------------------------------------------------------------


class ObjectiveName(str, Enum):
    latency = "latency"
    energy = "energy"
    cost = "cost"
    throughput = "throughput"


class GraphFormat(str, Enum):
    mermaid = "mermaid"
    dot = "dot"
    mlir = "mlir"


def _parse_pins(pins: list[str]) -> dict[str, str]:
    out = {}
    for p in pins:
        op, sep, dev = p.partition("=")
        if not sep or not op or not dev:
            _fail(f"--pin takes OP=DEVICE (a device id, node, chip name or 'cpu'); got {p!r}")
        out[op] = dev
    return out


@app.command("compile")
def compile_cmd(
    graph: Annotated[Path, typer.Argument(help="agent graph: a .py file defining `graph`, or .yaml/.json")],
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="cluster file or preset name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the plan (JSON)")] = Path("plan.json"),
    objective: Annotated[ObjectiveName, typer.Option(help="what placement minimises")] = ObjectiveName.latency,
    power_budget: Annotated[float | None, typer.Option("--power-budget", help="watts of chips the plan may use")] = None,
    pipeline: Annotated[str | None, typer.Option(help="pass pipeline text (default: the standard one)")] = None,
    stack: Annotated[str, typer.Option(help="software stack to price: reference (calibrated) | fused (serving engine)")] = "reference",
    pin: Annotated[list[str], typer.Option(help="OP=DEVICE: keep an op on a device, node, chip or 'cpu'")] = [],  # noqa: B006
    trace: Annotated[Path | None, typer.Option(help="write a Chrome/Perfetto trace of the replay")] = None,
    dump_ir_after: Annotated[list[str], typer.Option("--dump-ir-after", help="print the IR after this pass")] = [],  # noqa: B006
    baseline: Annotated[bool, typer.Option(help="also compile the best single-chip-type plan at the same power")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print no summary")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="report each pass on stderr (default on a terminal)")] = False,
) -> None:
    """Compile an agent graph for a cluster into a deployment plan."""
    from gimletc.compiler import DEFAULT_PIPELINE, compile as run_compile
    from gimletc.analysis.trace import chrome_trace

    err = Console(stderr=True, highlight=False)
    show_progress = verbose or (not quiet and sys.stderr.isatty())
    progress = (lambda msg: err.print(f"[dim]{msg}[/dim]")) if show_progress else None
    result = run_compile(
        graph,
        cluster,
        objective=objective.value,
        power_budget_w=power_budget,
        pins=_parse_pins(pin),
        pipeline=pipeline or DEFAULT_PIPELINE,
        baseline=baseline,
        dump_after=frozenset(dump_ir_after),
        progress=progress,
        stack=stack,
    )
    # Everything is computed before anything is written; each file is written atomically.
    plan_text = result.plan.to_json()
    trace_text = json.dumps(chrome_trace(result.timeline, result.plan.name), sort_keys=True) + "\n" if trace else None
    from gimletc._io import write_atomic

    write_atomic(output, plan_text)
    if trace is not None and trace_text is not None:
        write_atomic(trace, trace_text)
    for name in dump_ir_after:
        if name in result.ctx.dumps:
            sys.stdout.write(f"// IR after {name}\n{result.ctx.dumps[name]}")
    if not quiet:
        _print_plan(result.plan)
        out.print(f"wrote {output}" + (f" and {trace}" if trace else ""))


def _print_plan(plan: Any) -> None:
    from gimletc.plan import DeploymentPlan

    p: DeploymentPlan = plan
    m = p.metrics
    out.print(f"[bold]{p.name}[/bold] on {p.cluster.name}: objective {p.objective}, pipeline {p.pipeline}")
    t = Table(title="placements (predicted, cost model)")
    for col in ("op", "kind", "device", "chip", "seconds", "runs"):
        t.add_column(col, justify="right" if col in ("seconds", "runs") else "left")
    for pl in p.placements:
        t.add_row(pl.op, pl.kind, ",".join(pl.devices) if len(pl.devices) > 1 else pl.device, pl.chip,
                  f"{pl.seconds:.4f}", f"{pl.runs:g}")
    out.print(t)
    if p.transfers:
        t = Table(title="transfers")
        for col in ("value", "from", "to", "route", "bytes", "ms", "chunks", "convert"):
            t.add_column(col)
        for tr in p.transfers:
            conv = f"{tr.convert.from_layout}->{tr.convert.to_layout}" if tr.convert else ""
            t.add_row(tr.value, tr.src, tr.dst, tr.route, _fmt_bytes(tr.bytes), f"{tr.seconds * 1e3:.3f}", str(tr.chunks), conv)
        out.print(t)
    t = Table(title="metrics per request (predicted)")
    t.add_column("metric")
    t.add_column("this plan", justify="right")
    t.add_column(f"baseline: {p.baseline.chips}x {p.baseline.chip}" if p.baseline else "baseline", justify="right")
    b = p.baseline.metrics if p.baseline else None
    rows = [
        ("latency ms", m.latency_ms, b.latency_ms if b else None),
        ("energy J", m.energy_j, b.energy_j if b else None),
        ("power W", m.power_w, b.power_w if b else None),
        ("cost USD", m.cost_usd, b.cost_usd if b else None),
        ("throughput req/s", m.throughput_rps, b.throughput_rps if b else None),
    ]
    for name in sorted(m.ttft_ms):
        rows.append((f"TTFT {name} ms", m.ttft_ms[name], b.ttft_ms.get(name) if b else None))
        rows.append((f"TPOT {name} ms", m.tpot_ms[name], b.tpot_ms.get(name) if b else None))
    for name, a, bb in rows:
        t.add_row(name, f"{a:.4g}", "-" if bb is None else f"{bb:.4g}")
    out.print(t)
    if p.speedup is not None:
        out.print(f"speedup over the baseline: {p.speedup:.2f}x; energy ratio (plan / baseline): {p.energy_ratio:.2f}")
    if p.search:
        s = p.search
        out.print(f"placement: {s.method}, {s.evaluated} evaluations over 10^{s.search_space_log10:.1f} assignments; "
                  f"objective {s.objective_value:.4g}, bound {s.bound:.4g} (gap {s.gap:.1%})")
    out.print(f"critical path: {' -> '.join(p.critical_path)}")
    for w in p.warnings:
        out.print(f"warning: {w}", style="yellow", markup=False, soft_wrap=True)


@app.command()
def show(plan: Annotated[Path, typer.Argument(help="a plan written by `gimletc compile`")]) -> None:
    """Print a readable summary of a plan (loading a plan never executes code)."""
    from gimletc.plan import load_plan

    _print_plan(load_plan(plan))


@app.command("graph")
def graph_cmd(
    graph: Annotated[Path, typer.Argument(help="agent graph: .py, .yaml or .json")],
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.mlir,
) -> None:
    """Print an agent graph as Mermaid, Graphviz dot or MLIR generic text."""
    from gimletc.graph_io import load_graph
    from gimletc.ir import print_graph, to_dot, to_mermaid

    g = load_graph(graph)
    text = {"mermaid": to_mermaid, "dot": to_dot, "mlir": print_graph}[fmt.value](g)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


# ---- calibrate ------------------------------------------------------------------


@app.command()
def calibrate(
    data: Annotated[Path, typer.Argument(help="measurement file, e.g. ../shared/data/h200_llama_calibration.json")],
    gpu: Annotated[str, typer.Option(help="catalog chip the GPU rows were measured on")] = "h200",
    cpu: Annotated[str, typer.Option(help="catalog chip the CPU rows were measured on")] = "xeon-host-16c",
    write: Annotated[bool, typer.Option("--write", help="store the fitted values in the catalog and the docs table")] = False,
    doc: Annotated[Path, typer.Option(help="markdown file whose calibration table --write regenerates")] = Path(
        "docs/cost-model.md"
    ),
) -> None:
    """Fit the GPU's and host CPU's efficiency factors to measured step times."""
    from gimletc.cost.calibrate import calibrate as fit
    from gimletc.cost.calibrate import layer_split_table, load_calibration, markdown_table, update_doc, write_efficiency
    from gimletc.hardware.catalog import chip_file, get_chip

    fits = fit(data, get_chip(gpu), get_chip(cpu))
    for f in fits:
        out.print(markdown_table(f), markup=False)
        out.print()
    fitted_gpu = get_chip(gpu).model_copy(update={"efficiency": fits[0].efficiency})
    split = layer_split_table(load_calibration(data), fitted_gpu)
    out.print(split, markup=False)
    if write:
        for f in fits:
            write_efficiency(chip_file(f.chip), f.efficiency)
        update_doc(doc, fits, str(data), split)
        out.print(f"wrote fitted efficiency of {', '.join(f.chip for f in fits)} and the table in {doc}")


# ---- demo -----------------------------------------------------------------------

DEMO_MODELS = ("llama-3.1-8b", "qwen3-32b", "llama-3.1-70b", "gpt-oss-120b", "deepseek-v3")
DEMO_CHIPS = ("h100-sxm", "h200", "b200", "mi300x", "gaudi3", "dmatrix-corsair", "xeon-6980p")


@app.command()
def demo(
    batch: Annotated[int, typer.Option(help="decode batch")] = 16,
    prompt: Annotated[int, typer.Option(help="prompt tokens (prefill) and context (decode)")] = 4096,
) -> None:
    """Estimate prefill and decode of bundled models on bundled chips (the quick-start job)."""
    from gimletc.cost.roofline import estimate, min_chips
    from gimletc.hardware import get_chip

    from gimletc.models import get_model

    t = Table(title=f"predicted step times (cost model): prefill {prompt} tokens; decode batch {batch} at ctx {prompt}")
    for col in ("model", "chip", "chips", "prefill ms", "TTFT bound", "decode ms", "decode bound", "tok/s", "J/token"):
        t.add_column(col, justify="left" if col in ("model", "chip") or "bound" in col else "right")
    for mname in DEMO_MODELS:
        m = get_model(mname)
        for cname in DEMO_CHIPS:
            c = get_chip(cname)
            n = max(min_chips(m, c, 1, prompt, 0), min_chips(m, c, batch, 1, prompt))
            if c.sram_bytes and c.scale_up_bw:  # SRAM chips are deployed with the weights in SRAM when 8 cards hold them
                in_sram = -(-int(m.weight_bytes) // int(c.sram_bytes))
                n = max(n, in_sram) if in_sram <= 8 else n
            if n > 8 or (n > 1 and c.scale_up_bw is None):
                t.add_row(m.name, c.name, f">{n - 1}" if n > 8 else str(n), "-", "does not fit", "-", "", "", "")
                continue
            pre = estimate(m, c, "prefill", 1, prompt, 0, chips=n)
            dec = estimate(m, c, "decode", batch, 1, prompt, chips=n)
            t.add_row(
                m.name, c.name, str(n), f"{pre.latency_ms:.1f}", pre.bound, f"{dec.latency_ms:.2f}", dec.bound,
                f"{dec.tokens_per_s:,.0f}", f"{dec.energy_j / batch:.3f}",
            )
    out.print(t)
    out.print("[dim]All figures come from the cost model: h200 and xeon-host-16c fitted to measurements, "
              "other chips derived by rule (see docs/cost-model.md).[/dim]")


from gimletc.cli_serving import register as _register_serving; _register_serving(app)  # noqa: E402, E702
from gimletc.cli_runtime import register as _register_runtime; _register_runtime(app)  # noqa: E402, E702
from gimletc.cli_report import register as _register_report; _register_report(app)  # noqa: E402, E702
from gimletc.cli_opt import register as _register_opt; _register_opt(app)  # noqa: E402, E702


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors with exit code 2, never a traceback, for anything a user can cause."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except GimletError as e:
        _fail(str(e))
    except typer.Abort:
        _fail("aborted")
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except FileNotFoundError as e:
        _fail(f"{e.filename}: no such file")
    except Exception as e:
        # Usage errors of the (vendored or installed) click parser: bad option, missing argument.
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            msg = " ".join(e.format_message().split())
            if not msg:  # no arguments: the help was printed
                raise SystemExit(2) from None
            _fail(msg)
        raise
    if isinstance(rv, int) and rv:
        raise SystemExit(rv)


if __name__ == "__main__":
    main()
