"""`gimletc simulate` and `gimletc search`: serving under load (docs/serving.md).

`register(app)` adds both commands to the main typer app. Bad input raises a
GimletError with one line naming the argument and the number; the CLI's
`main()` prints it and exits 2. Nothing is written unless the whole result is
ready; files are written atomically. Progress goes to stderr only on a
terminal or with --verbose.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gimletc.errors import GimletError

__all__ = ["register"]


class ArrivalKind(str, Enum):
    poisson = "poisson"
    bursty = "bursty"
    constant = "constant"


class ProfileName(str, Enum):
    vllm = "vllm"
    sglang = "sglang"
    trtllm = "trtllm"
    calibrated = "calibrated"  # the reference stack
    fused = "fused"  # deprecated: vllm
    fused_engine = "fused-engine"  # deprecated: vllm


class PolicyName(str, Enum):
    vllm = "vllm"
    sglang = "sglang"
    trtllm = "trtllm"
    prefill_first = "prefill-first"


class LoopMode(str, Enum):
    geometric = "geometric"
    mean = "mean"


class ToolTimes(str, Enum):
    fixed = "fixed"
    exponential = "exponential"


def _out() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _progress(verbose: bool) -> Any:
    err = Console(stderr=True, highlight=False)
    if verbose or sys.stderr.isatty():
        return lambda msg: err.print(f"[dim]{msg}[/dim]")
    return None


def _positive(name: str, value: float | None, integer: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value <= 0 or (integer and value != int(value)):
        kind = "a positive integer" if integer else "a positive number"
        raise GimletError(f"{name} must be {kind}; got {value:g}")


def _slo(ttft_ms: float | None, tpot_ms: float | None, share: float) -> Any:
    from gimletc.sim.metrics import SLO

    _positive("--slo-ttft-ms", ttft_ms)
    _positive("--slo-tpot-ms", tpot_ms)
    if not 0 < share <= 1:
        raise GimletError(f"--slo-share must be in (0, 1]; got {share:g}")
    return SLO(None if ttft_ms is None else ttft_ms / 1e3, None if tpot_ms is None else tpot_ms / 1e3, share)


def _dtype(name: str, value: str | None) -> str | None:
    from gimletc.dtypes import BITS

    if value is not None and value not in BITS:
        raise GimletError(f"{name} must be one of {', '.join(sorted(BITS))}; got {value!r}")
    return value


def _sim_config(max_batch: int | None, max_prefill_tokens: int | None, chunked: bool | None,
                chunk_tokens: int | None, profile: str | None, host_lanes: int | None, loops: str = "geometric",
                tool_times: str = "fixed", timeline: bool = False, weight_dtype: str | None = None,
                kv_dtype: str | None = None, policy: str | None = None, prefix_caching: bool | None = None) -> Any:
    from gimletc.sim.load import EngineConfig, SimConfig
    from gimletc.sim.steps import profile as get_profile

    for name, v in (("--max-batch", max_batch), ("--max-prefill-tokens", max_prefill_tokens),
                    ("--chunk-tokens", chunk_tokens), ("--host-lanes", host_lanes)):
        _positive(name, v, integer=True)
    return SimConfig(
        engine=EngineConfig(max_batch=max_batch, max_prefill_tokens=max_prefill_tokens, chunked_prefill=chunked,
                            chunk_tokens=chunk_tokens, policy=policy, prefix_caching=prefix_caching),
        profile=get_profile(profile) if profile else None, host_lanes=host_lanes, loops=loops, tool_times=tool_times,  # type: ignore[arg-type]
        record_timeline=timeline, weight_dtype=_dtype("--weight-dtype", weight_dtype),
        kv_dtype=_dtype("--kv-dtype", kv_dtype),
    )


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def register(app: typer.Typer) -> None:
    """Add `simulate` and `search` to the gimletc app."""

    @app.command("simulate")
    def simulate_cmd(
        plan: Annotated[Path, typer.Argument(help="a plan written by `gimletc compile`")],
        rate: Annotated[float | None, typer.Option("--rate", help="mean arrival rate, requests/s")] = None,
        requests: Annotated[int | None, typer.Option("--requests", "-n", help="requests to simulate")] = None,
        slo_ttft_ms: Annotated[float | None, typer.Option("--slo-ttft-ms", help="TTFT target, ms")] = None,
        slo_tpot_ms: Annotated[float | None, typer.Option("--slo-tpot-ms", help="TPOT target, ms")] = None,
        slo_share: Annotated[float, typer.Option("--slo-share", help="share of requests that must meet the SLO")] = 0.9,
        arrivals: Annotated[ArrivalKind, typer.Option(help="arrival process")] = ArrivalKind.poisson,
        cv: Annotated[float, typer.Option(help="coefficient of variation of gaps for bursty arrivals")] = 3.0,
        arrival_trace: Annotated[Path | None, typer.Option("--arrival-trace",
                                                           help="CSV/JSONL of arrival_s[,input_tokens,output_tokens]")] = None,
        seed: Annotated[int, typer.Option(help="random seed (arrivals, loops, branches, tool times)")] = 0,
        policy: Annotated[PolicyName | None, typer.Option(
            help="batching policy (default: the software stack's engine; docs/serving.md)")] = None,
        max_batch: Annotated[int | None, typer.Option(
            help="running-set cap, sequences (prefill-first: the decode batch; default: the policy's)")] = None,
        max_prefill_tokens: Annotated[int | None, typer.Option(
            help="token budget per iteration (prefill-first, sglang: prompt tokens per prefill batch)")] = None,
        chunked_prefill: Annotated[bool | None, typer.Option(
            "--chunked-prefill/--no-chunked-prefill",
            help="split prompts across iterations (default: the policy's; vllm and sglang chunk)")] = None,
        chunk_tokens: Annotated[int | None, typer.Option(
            help="chunk size (per policy: docs/serving.md; prefill-first: tokens per mixed iteration)")] = None,
        prefix_caching: Annotated[bool | None, typer.Option(
            "--prefix-caching/--no-prefix-caching",
            help="engines keep prompt prefixes' KV cache and reuse it (default: on for vllm, sglang and trtllm)")] = None,
        profile: Annotated[ProfileName | None, typer.Option(
            help="software stack the step times model (default: the one the plan was compiled for)")] = None,
        host_lanes: Annotated[int | None, typer.Option(
            help="concurrent tool/code/retrieval tasks per host (default: each host's lanes in its cluster)")] = None,
        loops: Annotated[LoopMode, typer.Option(help="loop iterations: geometric with the loop's mean, or the mean")] = LoopMode.geometric,
        tool_times: Annotated[ToolTimes, typer.Option(help="tool/code times: as given, or exponential with that mean")] = ToolTimes.fixed,
        goodput: Annotated[bool, typer.Option(help="with an SLO, bisect the rate for the goodput")] = True,
        timeline: Annotated[Path | None, typer.Option(help="write the per-device timeline as a Chrome/Perfetto trace")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="progress on stderr (default on a terminal)")] = False,
    ) -> None:
        """Simulate a plan under load: latency percentiles, throughput, goodput under SLOs, energy."""
        from gimletc._io import write_atomic
        from gimletc.plan import load_plan
        from gimletc.sim.arrivals import generate, load_trace
        from gimletc.sim.load import simulate_plan
        from gimletc.sim.metrics import goodput as find_goodput
        from gimletc.sim.metrics import summary, timeline_trace

        _positive("--rate", rate)
        _positive("--requests", requests, integer=True)
        if arrivals == ArrivalKind.bursty:
            _positive("--cv", cv)
        slo = _slo(slo_ttft_ms, slo_tpot_ms, slo_share)
        cfg = _sim_config(max_batch, max_prefill_tokens, chunked_prefill, chunk_tokens,
                          profile.value if profile else None, host_lanes,
                          loops.value, tool_times.value, timeline is not None,
                          policy=policy.value if policy else None, prefix_caching=prefix_caching)
        p = load_plan(plan)
        if arrival_trace is not None:
            arr = load_trace(arrival_trace)
            if requests is not None:
                arr = arr.head(requests)
            if rate is not None:
                arr = arr.at_rate(rate)
        else:
            if rate is None:
                raise GimletError("--rate is required (or give --arrival-trace)")
            arr = generate(arrivals.value, rate, requests or 1000, seed, cv)
        progress = _progress(verbose)
        if progress:
            progress(f"simulating {len(arr)} requests of {p.name} at {arr.rate:.4g} req/s ({arr.kind})")
        result = simulate_plan(p, arr, cfg, seed, progress=progress)
        good = None
        if goodput and not slo.empty:
            if progress:
                progress(f"goodput: bisecting the rate for {slo.share:.0%} within the SLO")
            quiet = dataclasses.replace(cfg, record_timeline=False)

            def tell(pt: Any) -> None:
                if progress:
                    progress(f"  {pt.rate:.4g} req/s -> {pt.attainment:.1%} meet the SLO")

            good = find_goodput(lambda r: simulate_plan(p, arr.at_rate(r), quiet, seed), slo, arr.rate, progress=tell)
        d = summary(result, slo, good)
        trace_text = json.dumps(timeline_trace(result), sort_keys=True) + "\n" if timeline is not None else None
        if timeline is not None and trace_text is not None:
            write_atomic(timeline, trace_text)
        if as_json:
            sys.stdout.write(json.dumps(d, indent=2, sort_keys=True, allow_nan=False) + "\n")
            return
        _print_simulation(d)
        if timeline is not None:
            _out().print(f"wrote {timeline}")

    @app.command("search")
    def search_cmd(
        graph: Annotated[Path, typer.Argument(help="agent graph: a .py file defining `graph`, or .yaml/.json")],
        cluster: Annotated[str, typer.Option("--cluster", "-c", help="cluster file or preset name")],
        slo_ttft_ms: Annotated[float | None, typer.Option("--slo-ttft-ms", help="TTFT target, ms")] = None,
        slo_tpot_ms: Annotated[float | None, typer.Option("--slo-tpot-ms", help="TPOT target, ms")] = None,
        slo_share: Annotated[float, typer.Option("--slo-share", help="share of requests that must meet the SLO")] = 0.9,
        plot: Annotated[Path | None, typer.Option(help="save the Pareto frontier as a PNG")] = None,
        top: Annotated[int, typer.Option(help="configurations to list per ranking")] = 5,
        configs: Annotated[int, typer.Option(help="configurations to simulate (best predicted first)")] = 8,
        max_chips: Annotated[int | None, typer.Option(help="chip budget over all types (default: the cluster's)")] = None,
        requests: Annotated[int, typer.Option("--requests", "-n", help="requests per simulation")] = 1000,
        seed: Annotated[int, typer.Option(help="random seed")] = 0,
        tp: Annotated[str | None, typer.Option(help="tensor-parallel sizes to try, e.g. 1,2,4")] = None,
        modes: Annotated[str, typer.Option(help="agg, disagg or both (comma-separated)")] = "agg,disagg",
        chips: Annotated[str | None, typer.Option(help="chip types to use (default: all accelerators)")] = None,
        profile: Annotated[ProfileName, typer.Option(help="software stack the step times model")] = ProfileName.vllm,
        weight_dtype: Annotated[str | None, typer.Option(help="serve every model's weights in this format, e.g. fp8")] = None,
        kv_dtype: Annotated[str | None, typer.Option(help="keep KV caches in this format, e.g. fp8")] = None,
        policy: Annotated[PolicyName | None, typer.Option(
            help="batching policy (default: the software stack's engine; docs/serving.md)")] = None,
        max_batch: Annotated[int | None, typer.Option(
            help="running-set cap, sequences (default: the policy's)")] = None,
        host_lanes: Annotated[int | None, typer.Option(
            help="concurrent tool/code/retrieval tasks on the host (default: its lanes in the cluster)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="progress on stderr (default on a terminal)")] = False,
    ) -> None:
        """Search replica mixes and chip types for the best goodput per chip, per watt and per dollar under SLOs."""
        from gimletc.graph_io import load_graph
        from gimletc.hardware import load_cluster
        from gimletc._io import write_atomic
        from gimletc.serving.plot import frontier_png
        from gimletc.serving.search import SearchSettings, search

        slo = _slo(slo_ttft_ms, slo_tpot_ms, slo_share)
        if slo.empty:
            raise GimletError("search needs --slo-ttft-ms, --slo-tpot-ms or both")
        _positive("--top", top, integer=True)
        _positive("--configs", configs, integer=True)
        _positive("--max-chips", max_chips, integer=True)
        _positive("--requests", requests, integer=True)
        tps = None
        if tp:
            try:
                tps = tuple(int(x) for x in tp.split(","))
            except ValueError:
                raise GimletError(f"--tp takes comma-separated integers; got {tp!r}") from None
            for x in tps:
                _positive("--tp", x, integer=True)
        mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
        if not mode_list or any(m not in ("agg", "disagg") for m in mode_list):
            raise GimletError(f"--modes takes agg, disagg or agg,disagg; got {modes!r}")
        cfg = _sim_config(max_batch, None, None, None, profile.value, host_lanes,
                          weight_dtype=weight_dtype, kv_dtype=kv_dtype, policy=policy.value if policy else None)
        cl = load_cluster(cluster)
        chip_list = tuple(c.strip() for c in chips.split(",")) if chips else None
        if chip_list:
            have = sorted({d.chip.name for d in cl.accelerators()})
            for c in chip_list:
                if c not in have:
                    raise GimletError(f"--chips: {cl.name} has no {c!r}; it has {', '.join(have) or 'no accelerators'}")
        settings = SearchSettings(requests=requests, seed=seed, top_k=configs, max_chips=max_chips, tp=tps,
                                  modes=mode_list, chips=chip_list, sim=cfg)
        g = load_graph(graph)
        result = search(g, cl, slo, settings, progress=_progress(verbose))
        png = None
        if plot is not None:
            slo_d = slo.to_dict()
            parts = [f"{k[:-3].upper()} <= {v:g} ms" for k, v in slo_d.items() if k.endswith("_ms") and v is not None]
            png = frontier_png(result.points(), f"{g.attrs.get('gimlet.name', graph.stem)} on {cl.name}: "
                                                f"{', '.join(parts)} for {slo.share:.0%}")
        if png is not None and plot is not None:
            write_atomic(plot, png)
        if as_json:
            d = result.to_dict(top)
            d["plot"] = str(plot) if plot else None
            sys.stdout.write(json.dumps(d, indent=2, sort_keys=True, allow_nan=False) + "\n")
            return
        _print_search(result, top)
        if plot is not None:
            _out().print(f"wrote {plot}")


def _print_simulation(d: dict) -> None:
    out = _out()
    a = d["arrivals"]
    out.print(f"[bold]{d['name']}[/bold] under load: {d['requests']} requests, {a['kind']} arrivals at "
              f"{a['rate_req_s']:.4g} req/s, {d['duration_s']:.4g} s simulated; {d['policy']} batching")
    t = Table(title="latency (ms, predicted)")
    for col in ("metric", "p50", "p90", "p99", "mean", "max"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "end-to-end")):
        v = d[key]
        t.add_row(label, *(_fmt(v[k]) for k in ("p50", "p90", "p99", "mean", "max")))
    out.print(t)
    t = Table(title="throughput and energy (predicted)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("output tokens/s", d["throughput_tok_s"]),
        ("requests/s", d["throughput_req_s"]),
        ("energy per request, J", d["energy_per_request_j"]),
        ("energy per output token, J", d["energy_per_token_j"]),
        ("preemptions (KV cache full)", d["preemptions"]),
        ("tokens recomputed after preemption", d["recomputed_tokens"]),
    ]
    pc = d.get("prefix_cache")
    if pc:
        rows += [("prefix cache hits / lookups", f"{pc['hits']} / {pc['lookups']}"),
                 ("prompt tokens served from the prefix cache", pc["saved_tokens"]),
                 ("prefix cache evictions (segments)", pc["evictions"])]
    if d.get("slo"):
        rows.append((f"share meeting the SLO ({_slo_text(d['slo'])})", d["slo_attainment"]))
        rows.append((f"goodput, req/s ({d['slo']['share']:.0%} within the SLO)", d["goodput_req_s"]))
    for k, v in rows:
        t.add_row(k, v if isinstance(v, str) else _fmt(v))
    out.print(t)
    t = Table(title="engines")
    for col in ("engine", "chip", "models", "iterations", "mean batch", "max batch", "utilisation"):
        t.add_column(col, justify="right" if col in ("iterations", "mean batch", "max batch", "utilisation") else "left")
    for e in d["engines"]:
        t.add_row(e["id"], e["chip"], ", ".join(e["models"]), str(e["iterations"]), f"{e['mean_decode_batch']:.1f}",
                  str(e["max_decode_batch"]), f"{e['utilisation']:.1%}")
    out.print(t)


def _slo_text(slo: dict) -> str:
    parts = []
    if slo.get("ttft_ms") is not None:
        parts.append(f"TTFT <= {slo['ttft_ms']:g} ms")
    if slo.get("tpot_ms") is not None:
        parts.append(f"TPOT <= {slo['tpot_ms']:g} ms")
    return ", ".join(parts)


def _print_search(result: Any, top: int) -> None:
    out = _out()
    s = result.settings
    out.print(f"[bold]serving search[/bold]: {result.candidates} candidate configurations, {len(result.evaluations)} "
              f"simulated ({s.requests} Poisson requests each, seed {s.seed}); SLO {_slo_text(result.slo.to_dict())} "
              f"for {result.slo.share:.0%} of requests")
    names = {"per_chip": "goodput per chip (output tok/s/chip)", "per_watt": "goodput per watt (tok/J at TDP)",
             "per_dollar": "goodput per dollar (tok/$)"}
    for metric, title in names.items():
        t = Table(title=f"top {top} by {title}")
        for col in ("#", "configuration", "chips", "goodput req/s", "tok/s", "tok/s/chip", "tok/J", "tok/$",
                    "tok/s/user"):
            t.add_column(col, justify="left" if col == "configuration" else "right")
        for i, e in enumerate(result.top(metric, top), 1):
            at = e.at_goodput
            t.add_row(str(i), e.config.label, str(e.chips), _fmt(e.goodput_req_s), _fmt(e.goodput_tok_s),
                      _fmt(e.per_chip), _fmt(e.per_watt), _fmt(e.per_dollar), _fmt(at.tok_s_per_user if at else None))
        out.print(t)
    t = Table(title="Pareto frontier: tokens/s per user vs tokens/s per chip (operating points meeting the SLO)")
    for col in ("configuration", "rate req/s", "tok/s/user", "tok/s/chip"):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for p in result.pareto():
        t.add_row(p.label, _fmt(p.rate), _fmt(p.tok_s_per_user), _fmt(p.tok_s_per_chip))
    out.print(t)
    for what, why in result.skipped:
        out.print(f"[dim]skipped {what}: {why}[/dim]")
    for what, why in result.failed:
        out.print(f"[dim]failed {what}: {why}[/dim]")
