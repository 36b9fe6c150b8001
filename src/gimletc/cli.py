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

from gimletc.cli_serving import STACK_HELP, stack_option
from gimletc.errors import GimletError
from gimletc.graph_io import DEFAULT_LOAD_TIMEOUT_S
from gimletc.models.workload import DEFAULT_STACK

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


MAX_MESSAGE = 2000  # characters of one error line


def _fail(msg: str) -> NoReturn:
    line = " ".join(str(msg).split())
    if len(line) > MAX_MESSAGE:
        line = line[: MAX_MESSAGE - 3] + "..."
    print(f"gimletc: error: {line}", file=sys.stderr)
    raise SystemExit(2)


# Set by the top-level `--verbose` (and a command's own --verbose/-v): print an internal error's traceback.
_verbose = {"traceback": False}


@app.callback()
def _top(
    verbose: Annotated[bool, typer.Option("--verbose", help="on an internal error, also print its traceback")] = False,
) -> None:
    """gimletc: compile AI inference across mixed hardware."""
    _verbose["traceback"] = verbose


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



DTYPE_HELP = "format of {} (e.g. bf16, fp8, fp8_block, nvfp4, mxfp4, int4, int8; default: the model's)"


def _model_with_dtypes(model: str, weight: str | None, kv: str | None, compute: str | None) -> Any:
    from gimletc.models import get_model
    from gimletc.models.catalog import with_dtypes

    return with_dtypes(get_model(model), weight, kv, compute)


# `estimate` prices one step as measured at the PyTorch level unless told otherwise: that is what the
# bundled H200 step times (and step times people time themselves with torch) measure. compile, simulate
# and search default to the engine stack a deployment runs (issue 10).
ESTIMATE_STACK_NOTE = "; estimate's default: reference (one step as PyTorch runs it)"


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
    stack: Annotated[str, typer.Option(help=STACK_HELP + ESTIMATE_STACK_NOTE)] = "reference",
    weight_dtype: Annotated[str | None, typer.Option("--weight-dtype", help=DTYPE_HELP.format("the weights"))] = None,
    kv_dtype: Annotated[str | None, typer.Option("--kv-dtype", help=DTYPE_HELP.format("the KV cache"))] = None,
    compute_dtype: Annotated[str | None, typer.Option(
        "--compute-dtype", help="format GEMMs compute in (default: the weights' where the chip has it, else bf16)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Predict the latency, FLOPs, bytes, bound and energy of one step of a model on a chip.

    One step as PyTorch runs it by default (`--stack reference`, what the bundled H200 step times measure);
    `--stack vllm` (or sglang, trtllm) prices it as that serving engine runs it."""
    from gimletc.cost.roofline import estimate_workload
    from gimletc.cost.uncertainty import band
    from gimletc.hardware import get_chip
    from gimletc.models import step_workload

    phase = phase.value
    if tokens is None:
        if phase != "decode":
            _fail(f"--tokens is required for phase {phase!r} (prompt length for prefill, draft tokens for verify)")
        tokens = 1
    canonical = stack_option(stack)
    m, c = _model_with_dtypes(model, weight_dtype, kv_dtype, compute_dtype), get_chip(chip)
    est = estimate_workload(m, c, step_workload(m, phase, batch, tokens, ctx, canonical), chips)
    b = band(c, canonical, phase, moe=m.moe is not None)
    d = est.to_dict()
    d["stack"] = stack
    d["stack_resolved"] = canonical
    d["efficiency_origin"] = _origin(c, canonical)
    d["dtypes"] = {"weight": m.weight_dtype, "experts": m.expert_dtype, "kv": m.kv_dtype, "act": m.act_dtype,
                   "compute": m.compute_dtype}
    d["band"] = b.to_dict()
    d["latency_low_ms"], d["latency_high_ms"] = b.low(est.latency_ms), b.high(est.latency_ms)
    if as_json:
        _print_json(d)
        return
    t = Table(title=f"{m.name} {phase} on {chips}x {c.name}" if chips > 1 else f"{m.name} {phase} on {c.name}")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    rows = [
        ("batch x tokens, ctx", f"{batch} x {tokens}, {ctx}"),
        ("stack", canonical if canonical == stack else f"{canonical} ({stack} is a deprecated alias)"),
        ("latency", f"{est.latency_ms:.3f} ms {b}"),
        ("bound", est.bound),
        # latency is the sum of three parts: time in operators bound by compute, time in operators bound
        # by memory, fixed costs; a decode's GEMMs are memory-bound, so its compute part may be 0
        ("latency = compute-bound ops + memory-bound ops + overhead",
         f"{est.latency_ms:.3f} = {est.compute_s * 1e3:.3f} + {est.memory_s * 1e3:.3f} + {est.overhead_s * 1e3:.3f} ms"),
        ("FLOPs", _fmt_rate(est.flops, "FLOP")),
        ("bytes moved", _fmt_bytes(est.bytes)),
        ("tokens/s", f"{est.tokens_per_s:,.1f}"),
        ("energy", f"{est.energy_j:.4g} J"),
        ("memory needed", f"{_fmt_bytes(est.memory.total)} of {_fmt_bytes(c.capacity_bytes * chips)}"),
        ("dtypes (weights / KV / compute)", f"{m.weight_dtype} / {m.kv_dtype} / {m.compute_dtype or 'by chip'}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    out.print(f"[dim]cost model; {_origin(c, canonical)}; band {b} ({b.source})[/dim]")


def _origin(chip: Any, stack: str) -> str:
    """Where the factors that priced `stack` on `chip` come from."""
    from gimletc.cost.engine import engine_profile
    from gimletc.models.workload import ENGINE_STACKS

    if stack in ENGINE_STACKS and chip.kind != "cpu":
        return engine_profile(chip, stack).origin
    return chip.efficiency.origin


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


def parse_pins(pins: list[str]) -> dict[str, str]:
    """`--pin OP=DEVICE` options as {op: device}; a malformed one, or an op pinned twice, is a GimletError."""
    out: dict[str, str] = {}
    for p in pins:
        op, sep, dev = p.partition("=")
        if not sep or not op or not dev:
            raise GimletError(f"--pin takes OP=DEVICE (a device id, node, chip name or 'cpu'); got {p!r}")
        if op in out:
            raise GimletError(f"--pin {op}: given twice ({out[op]}, then {dev}); pin each op to one place")
        out[op] = dev
    return out


@app.command("compile")
def compile_cmd(
    graph: Annotated[Path, typer.Argument(help="agent graph: .yaml/.json, or a .py file defining `graph` (loading a .py "
                                               "file RUNS its code: compile only files you trust; see --load-timeout)")],
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="cluster file or preset name")],
    output: Annotated[str, typer.Option("--output", "-o", help="where to write the plan (JSON); - writes it to stdout "
                                                               "(the summary then goes to stderr)")] = "plan.json",
    objective: Annotated[ObjectiveName, typer.Option(help="what placement minimises")] = ObjectiveName.latency,
    power_budget: Annotated[float | None, typer.Option("--power-budget", help="watts of chips the plan may use")] = None,
    pipeline: Annotated[str | None, typer.Option(help="pass pipeline text (default: the standard one)")] = None,
    stack: Annotated[str, typer.Option(help=STACK_HELP)] = DEFAULT_STACK,
    weight_dtype: Annotated[str | None, typer.Option("--weight-dtype", help=DTYPE_HELP.format("every LLM call's weights"))] = None,
    kv_dtype: Annotated[str | None, typer.Option("--kv-dtype", help=DTYPE_HELP.format("every LLM call's KV cache"))] = None,
    compute_dtype: Annotated[str | None, typer.Option(
        "--compute-dtype", help="format every LLM call's GEMMs compute in (default: by chip)")] = None,
    pin: Annotated[list[str], typer.Option(help="OP=DEVICE: keep an op on a device, node, chip or 'cpu'")] = [],  # noqa: B006
    trace: Annotated[str | None, typer.Option(help="write a Chrome/Perfetto trace of the replay (- for stdout)")] = None,
    dump_ir_after: Annotated[list[str], typer.Option("--dump-ir-after", help="print the IR after this pass (* after every one)")] = [],  # noqa: B006
    baseline: Annotated[bool, typer.Option(help="also compile the best single-chip-type plan at the same power")] = True,
    load_timeout: Annotated[float, typer.Option("--load-timeout", help="seconds a .py graph file may run while loading")] = DEFAULT_LOAD_TIMEOUT_S,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print no summary")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="report each pass on stderr (default on a terminal, "
                                                                  "and for graphs of 2,000 ops or more)")] = False,
) -> None:
    """Compile an agent graph for a cluster into a deployment plan."""
    import time

    from rich.markup import escape

    from gimletc._io import STDOUT, check_outputs, write_outputs
    from gimletc.analysis.trace import chrome_trace
    from gimletc.compiler import DEFAULT_PIPELINE, compile as run_compile
    from gimletc.graph_io import load_graph

    _verbose["traceback"] |= verbose
    # Every output is checked before any work, and written only once all of them are ready.
    check_outputs([output, trace], allow_stdout=True)
    pins = parse_pins(pin)
    to_stdout = STDOUT in (output, trace)
    summary = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160) if to_stdout else out
    err = Console(stderr=True, highlight=False)
    started = time.perf_counter()

    def report(msg: str) -> None:
        err.print(f"[dim]{time.perf_counter() - started:7.1f} s  {escape(msg)}[/dim]", soft_wrap=True)

    g = load_graph(graph, timeout_s=load_timeout)
    n_ops = sum(1 for _ in g.walk())
    show_progress = verbose or (not quiet and (sys.stderr.isatty() or n_ops >= LONG_COMPILE_OPS))
    progress = report if show_progress else None
    if progress:
        progress(f"loaded {graph}: {n_ops} ops")
    result = run_compile(
        g,
        cluster,
        objective=objective.value,
        power_budget_w=power_budget,
        pins=pins,
        pipeline=pipeline or DEFAULT_PIPELINE,
        baseline=baseline,
        dump_after=frozenset(dump_ir_after),
        progress=progress,
        stack=stack_option(stack),
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        compute_dtype=compute_dtype,
    )
    plan_text = result.plan.to_json()
    trace_text = json.dumps(chrome_trace(result.timeline, result.plan.name), sort_keys=True) + "\n" if trace else None
    outputs: list[tuple[str, str]] = [(output, plan_text)]
    if trace is not None and trace_text is not None:
        outputs.append((trace, trace_text))
    write_outputs(outputs, allow_stdout=True)
    if progress:
        progress(f"wrote {' and '.join(str(p) for p, _ in outputs)}")
    dumps = sys.stderr if to_stdout else sys.stdout  # stdout holds the plan (or trace) when one is written there
    shown = list(result.ctx.dumps) if "*" in dump_ir_after else [n for n in dump_ir_after if n in result.ctx.dumps]
    for name in shown:
        dumps.write(f"// IR after {name}\n{result.ctx.dumps[name]}")
    if not quiet:
        _print_plan(result.plan, summary)
        written = [str(p) for p, _ in outputs if str(p) != STDOUT]
        if written:
            summary.print(f"wrote {' and '.join(written)}")


LONG_COMPILE_OPS = 2000  # from this many ops, compile reports its progress on stderr even off a terminal


def _print_plan(plan: Any, out: Console = out) -> None:
    from gimletc.cost.uncertainty import with_band
    from gimletc.plan import DeploymentPlan

    p: DeploymentPlan = plan
    out.print(f"[bold]{p.name}[/bold] on {p.cluster.name}: objective {p.objective}, pipeline {p.pipeline}")
    t = Table(title="placements (predicted, cost model; seconds with the band of the op's chip, stack and kind)")
    for col in ("op", "kind", "device", "chip", "seconds", "runs"):
        t.add_column(col, justify="right" if col in ("seconds", "runs") else "left")
    for pl in p.placements:
        t.add_row(pl.op, pl.kind, ",".join(pl.devices) if len(pl.devices) > 1 else pl.device, pl.chip,
                  _op_seconds(pl.seconds, pl.kind, pl.chip, p.stack, pl.model), f"{pl.runs:g}")
    out.print(t)
    if p.transfers:
        t = Table(title="transfers (predicted: latency + bytes / bandwidth; band stated, not measured)")
        for col in ("value", "from", "to", "route", "bytes", "ms", "chunks", "convert"):
            t.add_column(col)
        for tr in p.transfers:
            conv = f"{tr.convert.from_layout}->{tr.convert.to_layout}" if tr.convert else ""
            t.add_row(tr.value, tr.src, tr.dst, tr.route, _fmt_bytes(tr.bytes),
                      _op_seconds(tr.seconds * 1e3, "exec.send", None, p.stack, None, "{:.3f}"), str(tr.chunks), conv)
        out.print(t)
    _print_kv_reuse(p)
    t = Table(title="metrics per request (predicted, with the band each lies in: docs/cost-model.md)")
    t.add_column("metric")
    t.add_column("this plan", justify="right")
    t.add_column(f"baseline: {p.baseline.chips}x {p.baseline.chip}" if p.baseline else "baseline", justify="right")
    t.add_column("plan vs baseline")
    for name, a, bb, lower_better in _metric_rows(p):
        t.add_row(name, with_band(*a), "-" if bb is None else with_band(*bb),
                  "" if bb is None else _versus(a, bb, lower_better))
    out.print(t)
    if p.speedup is not None:
        out.print(_comparison_line(p))
    if p.search:
        s = p.search
        out.print(f"placement: {s.method}, {s.evaluated} evaluations over 10^{s.search_space_log10:.1f} assignments; "
                  f"objective {s.objective_value:.4g}, bound {s.bound:.4g} (gap {s.gap:.1%})")
    out.print(f"critical path: {' -> '.join(p.critical_path)}")
    for w in p.warnings:
        out.print(f"warning: {w}", style="yellow", markup=False, soft_wrap=True)


Figure = tuple[float, "tuple[float, float] | None"]  # a value and its band's interval, if it has one


def _metric_rows(p: Any) -> list[tuple[str, Figure, Figure | None, bool]]:
    """(label, plan figure, baseline figure or None, lower is better) of each metric a plan summary prints."""
    m, b = p.metrics, (p.baseline.metrics if p.baseline else None)

    def fig(metrics: Any, key: str, call: str | None = None) -> Figure | None:
        if metrics is None:
            return None
        v = getattr(metrics, key)
        band = getattr(metrics.bands, key) if metrics.bands is not None and hasattr(metrics.bands, key) else None
        if call is not None:
            if call not in v:
                return None
            v, band = v[call], (band.get(call) if band is not None else None)
        return v, (band.pair() if band is not None else None)

    rows: list[tuple[str, Figure, Figure | None, bool]] = [
        ("latency ms", fig(m, "latency_ms"), fig(b, "latency_ms"), True),  # type: ignore[list-item]
        ("energy J", fig(m, "energy_j"), fig(b, "energy_j"), True),  # type: ignore[list-item]
        ("power W (TDP)", fig(m, "power_w"), fig(b, "power_w"), True),  # type: ignore[list-item]
        ("cost USD", fig(m, "cost_usd"), fig(b, "cost_usd"), True),  # type: ignore[list-item]
        ("throughput req/s", fig(m, "throughput_rps"), fig(b, "throughput_rps"), False),  # type: ignore[list-item]
    ]
    for name in sorted(m.ttft_ms):
        rows.append((f"TTFT {name} ms", fig(m, "ttft_ms", name), fig(b, "ttft_ms", name), True))  # type: ignore[arg-type]
        rows.append((f"TPOT {name} ms", fig(m, "tpot_ms", name), fig(b, "tpot_ms", name), True))  # type: ignore[arg-type]
    return rows


def _op_seconds(value: float, kind: str, chip: str | None, stack: str, model: str | None, form: str = "{:.4f}") -> str:
    """One op's predicted time with its band (`0.9191 ±10%`); no band for times the graph gives."""
    from gimletc.analysis.bands import kind_band
    from gimletc.hardware import get_chip

    b = kind_band(kind, get_chip(chip) if chip else None, stack, model)
    return form.format(value) + (f" {b}" if b.rel > 0 and value > 0 else "")


def _versus(a: Figure, b: Figure, lower_is_better: bool) -> str:
    """The plan's figure against the baseline's: "not distinguishable" when their bands overlap."""
    from gimletc.cost.uncertainty import verdict

    (va, ba), (vb, bb) = a, b
    if va == vb:
        return "same"
    if ba is not None and bb is not None:
        v = verdict(ba, bb, lower_is_better)
        if v == "not distinguishable":
            return v
    if min(va, vb) <= 0:  # e.g. a cost where a chip has no price in the catalog (it then costs nothing)
        return f"no ratio: {'the baseline' if vb <= 0 else 'this plan'} is 0"
    ratio = max(va, vb) / min(va, vb)
    better = (va < vb) == lower_is_better
    return f"{ratio:.2f}x {'better' if better else 'worse'}"


def _comparison_line(p: Any) -> str:
    """The speedup and energy ratio over the baseline, with the interval each lies in and, where the
    bands overlap, "not distinguishable" instead of a winner."""
    c = p.comparison
    if c is None:  # a plan written before bands
        return f"speedup over the baseline: {p.speedup:.2f}x; energy ratio (plan / baseline): {p.energy_ratio:.2f}"
    lat = (f"{p.speedup:.2f}x (within bands {c.speedup.lo:.2f}x-{c.speedup.hi:.2f}x): "
           + ("faster than the baseline" if c.latency == "faster" else
              "slower than the baseline" if c.latency == "slower" else "not distinguishable from the baseline"))
    en = (f"{p.energy_ratio:.2f} ({c.energy_ratio.lo:.2f}-{c.energy_ratio.hi:.2f}): "
          + ("less energy" if c.energy == "less" else "more energy" if c.energy == "more" else "not distinguishable"))
    return f"speedup over the baseline: {lat}\nenergy ratio (plan / baseline): {en}"


def _print_kv_reuse(p: Any) -> None:
    """The plan's KV reuse: each prefill that reuses a cached prefix, and the metrics without it."""
    r = p.kv_reuse
    if r is None or not r.reused:
        return
    t = Table(title="KV reuse: cached prompt prefixes (predicted, cost model)")
    for col in ("prefill", "reuses", "route", "cached tokens", "ms with", "ms without", "runs", "saved ms"):
        t.add_column(col, justify="left" if col in ("prefill", "reuses", "route") else "right")
    for x in r.reused:
        cached = f"{x.cached_first}/{x.prompt_tokens}" + (
            f", then {x.cached_later}" if x.cached_later != x.cached_first else "")
        t.add_row(x.op, ", ".join(x.sources), x.route, cached, f"{x.seconds * 1e3:.2f}",
                  f"{x.seconds_without * 1e3:.2f}", f"{x.runs:g}", f"{x.saved_s * 1e3:.1f}")
    out.print(t)
    m = p.metrics
    out.print(f"KV reuse saves {r.saved_prefill_s * 1e3:.1f} ms of prefill per request: latency "
              f"{r.latency_ms_without:.4g} -> {m.latency_ms:.4g} ms, energy {r.energy_j_without:.4g} -> "
              f"{m.energy_j:.4g} J" + "".join(f", TTFT {k} {v:.4g} -> {m.ttft_ms.get(k, v):.4g} ms"
                                                for k, v in r.ttft_ms_without.items())
              + " (without -> with, predicted)")


@app.command()
def show(plan: Annotated[Path, typer.Argument(help="a plan written by `gimletc compile`")]) -> None:
    """Print a readable summary of a plan (loading a plan never executes code)."""
    from gimletc.plan import load_plan

    _print_plan(load_plan(plan))


@app.command("graph")
def graph_cmd(
    graph: Annotated[Path, typer.Argument(help="agent graph: .yaml/.json, or a .py file defining `graph` (loading a .py "
                                               "file RUNS its code: load only files you trust; see --load-timeout)")],
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.mlir,
    load_timeout: Annotated[float, typer.Option("--load-timeout", help="seconds a .py graph file may run while loading")] = DEFAULT_LOAD_TIMEOUT_S,
) -> None:
    """Print an agent graph as Mermaid, Graphviz dot or MLIR generic text."""
    from gimletc.graph_io import load_graph
    from gimletc.ir import print_graph, to_dot, to_mermaid

    g = load_graph(graph, timeout_s=load_timeout)
    text = {"mermaid": to_mermaid, "dot": to_dot, "mlir": print_graph}[fmt.value](g)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


# ---- calibrate ------------------------------------------------------------------


@app.command()
def calibrate(
    data: Annotated[Path | None, typer.Argument(
        help="measurement file, e.g. src/gimletc/cost/data/h200_llama_calibration.json (the H200 rows gimletc ships; the reference stack)")] = None,
    gpu: Annotated[str, typer.Option(help="catalog chip the GPU rows were measured on")] = "h200",
    cpu: Annotated[str, typer.Option(help="catalog chip the CPU rows were measured on")] = "xeon-host-16c",
    from_aiconfigurator: Annotated[str | None, typer.Option(
        "--from-aiconfigurator", help="fit an engine stack to aiconfigurator-core's kernel tables of this system "
        "(a100_sxm, h100_sxm, h200_sxm, b200_sxm)")] = None,
    framework: Annotated[str, typer.Option(help="engine whose tables to fit: vllm | sglang | trtllm")] = "vllm",
    write: Annotated[bool, typer.Option("--write", help="store the fitted values in the package and the docs table")] = False,
    doc: Annotated[Path, typer.Option(help="markdown file whose calibration table --write regenerates")] = Path(
        "docs/cost-model.md"
    ),
) -> None:
    """Fit efficiency factors: the reference stack to measured step times, or an engine stack to kernel tables."""
    if from_aiconfigurator is not None:
        _calibrate_engine(from_aiconfigurator, framework, write, doc)
        return
    if data is None:
        _fail("give a measurement file (reference stack) or --from-aiconfigurator SYSTEM --framework NAME")
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
        from gimletc.cost.calibrate import write_reference_bands

        for f in fits:
            write_efficiency(chip_file(f.chip), f.efficiency)
        write_reference_bands(fits[0], Path(data).name)
        update_doc(doc, fits, str(data), split)
        out.print(f"wrote fitted efficiency of {', '.join(f.chip for f in fits)} and the table in {doc}")


def _calibrate_engine(system: str, framework: str, write: bool, doc: Path) -> None:
    from gimletc.cost.aiconfigurator import calibrate_engine, summary_lines, write_profile
    from gimletc.cost.engine import measured_profiles
    from gimletc.cost.engine_docs import write_doc_blocks

    stack = framework
    fallback = measured_profiles().get((_system_chip(system), "vllm")) if framework != "vllm" else None
    c = calibrate_engine(system, framework, fallback)
    for line in summary_lines(c):
        out.print(line, markup=False)
    if write:
        path = write_profile(c)
        measured_profiles.cache_clear()
        docs = write_doc_blocks(doc.resolve().parents[1])
        out.print(f"wrote {path} and the tables in {', '.join(str(d) for d in docs)} ({c.profile.chip} {stack})")


def _system_chip(system: str) -> str:
    from gimletc.cost.engine import SYSTEM_CHIP
    from gimletc.errors import UnknownNameError

    if system not in SYSTEM_CHIP:
        raise UnknownNameError("system", system, list(SYSTEM_CHIP))
    return SYSTEM_CHIP[system]


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
from gimletc.cli_deploy import register as _register_deploy; _register_deploy(app)  # noqa: E402, E702


REPORT_BUGS = ("this is a bug in gimletc: please report it to the gimletc maintainers with the command line and "
               "its input files")


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors with exit code 2, never a traceback, for anything a user can cause.

    Anything else that escapes a command is a bug in gimletc: it is reported as one line saying
    "internal error" and where to report it, also with exit code 2; the traceback is printed too
    under `gimletc --verbose` (or a command's own --verbose)."""
    args = sys.argv[1:] if argv is None else list(argv)
    _verbose["traceback"] = False
    try:
        rv = app(args=args, standalone_mode=False)
    except GimletError as e:
        _fail(str(e))
    except typer.Abort:
        _fail("aborted")
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("gimletc: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except MemoryError:
        _fail("ran out of memory")
    except FileNotFoundError as e:
        _fail(f"{e.filename}: no such file")
    except Exception as e:
        # Usage errors of the (vendored or installed) click parser: bad option, missing argument.
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            msg = " ".join(e.format_message().split())
            if not msg:  # no arguments: the help was printed
                raise SystemExit(2) from None
            _fail(msg)
        _internal_error(e, _verbose["traceback"] or "--verbose" in args or "-v" in args)
    if isinstance(rv, int) and rv:
        raise SystemExit(rv)


def _internal_error(e: BaseException, verbose: bool) -> NoReturn:
    import traceback

    if verbose:
        traceback.print_exception(e, file=sys.stderr)
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        last = tb[-1]
        where = f" at {Path(last.filename).name}:{last.lineno}"
    hint = "" if verbose else "; `gimletc --verbose ...` prints the traceback"
    _fail(f"internal error: {type(e).__name__}: {e}{where} ({REPORT_BUGS}{hint})")


if __name__ == "__main__":
    main()
