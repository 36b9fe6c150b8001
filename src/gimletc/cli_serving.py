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


# ---- the software stack: one option, one set of names, on every command --------------------------

STACK_HELP = ("software stack the cost model prices: vllm, sglang, trtllm (serving engines, fitted to measured kernel "
              "tables; on CPUs and SRAM accelerators, where no engine runs, the chip's own fixed costs apply: "
              "docs/cost-model.md) or reference (PyTorch-level, calibrated on the H200 rows); fused: deprecated name "
              "of vllm")
PROFILE_HELP = "deprecated: use --stack (calibrated = reference; fused, fused-engine = vllm)"
# The simulator's old profile names: the stack each meant.
PROFILE_ALIASES: dict[str, str] = {"calibrated": "reference", "fused": "vllm", "fused-engine": "vllm"}


def _warn(msg: str) -> None:
    print(f"gimletc: warning: {msg}", file=sys.stderr)


def stack_option(stack: str | None, profile: str | None = None, default: str | None = None) -> str | None:
    """The canonical stack named by `--stack` or the deprecated `--profile` (`default` when neither is given).

    A deprecated name prints a one-line note on stderr; an unknown one, or `--stack` and `--profile`
    naming different stacks, is a GimletError naming what is available."""
    from gimletc.models.workload import STACK_ALIASES, STACKS, resolve_stack

    if profile is not None:
        new = PROFILE_ALIASES.get(profile, profile)
        if new not in STACKS:
            old = ", ".join(f"{a} (= {b})" for a, b in PROFILE_ALIASES.items())
            raise GimletError(f"unknown --profile {profile!r}; --profile is deprecated: use --stack "
                              f"{' | '.join(STACKS)} (old names: {old})")
        _warn(f"--profile is deprecated; use --stack {new}" + (f" ({profile} is {new})" if new != profile else ""))
        if stack is not None and resolve_stack(stack) != new:
            raise GimletError(f"--stack {stack} and --profile {profile} name different stacks; give --stack only")
        return new
    if stack is None:
        return default
    canonical = resolve_stack(stack)
    if stack in STACK_ALIASES:
        _warn(f"stack {stack!r} is deprecated; it is {canonical} (use --stack {canonical})")
    return canonical


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
                chunk_tokens: int | None, stack: str | None, host_lanes: int | None, loops: str = "geometric",
                tool_times: str = "fixed", timeline: bool = False, weight_dtype: str | None = None,
                kv_dtype: str | None = None, policy: str | None = None, prefix_caching: bool | None = None) -> Any:
    from gimletc.sim.load import EngineConfig, SimConfig
    from gimletc.sim.steps import profile_for_stack

    for name, v in (("--max-batch", max_batch), ("--max-prefill-tokens", max_prefill_tokens),
                    ("--chunk-tokens", chunk_tokens), ("--host-lanes", host_lanes)):
        _positive(name, v, integer=True)
    return SimConfig(
        engine=EngineConfig(max_batch=max_batch, max_prefill_tokens=max_prefill_tokens, chunked_prefill=chunked,
                            chunk_tokens=chunk_tokens, policy=policy, prefix_caching=prefix_caching),
        profile=profile_for_stack(stack) if stack else None, host_lanes=host_lanes, loops=loops, tool_times=tool_times,  # type: ignore[arg-type]
        record_timeline=timeline, weight_dtype=_dtype("--weight-dtype", weight_dtype),
        kv_dtype=_dtype("--kv-dtype", kv_dtype),
    )


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


SIM_REQUESTS = 1000  # simulate's generated arrivals when --requests is not given


def register(app: typer.Typer) -> None:
    """Add `simulate` and `search` to the gimletc app."""

    @app.command("simulate")
    def simulate_cmd(
        plan: Annotated[Path, typer.Argument(help="a plan written by `gimletc compile`")],
        rate: Annotated[float | None, typer.Option("--rate", help="mean arrival rate, requests/s")] = None,
        requests: Annotated[int | None, typer.Option(
            "--requests", "-n",
            help=f"requests to simulate (default: {SIM_REQUESTS} generated arrivals; with --arrival-trace, "
                 "every request of the trace)")] = None,
        slo_ttft_ms: Annotated[float | None, typer.Option("--slo-ttft-ms", help="TTFT target, ms")] = None,
        slo_tpot_ms: Annotated[float | None, typer.Option("--slo-tpot-ms", help="TPOT target, ms")] = None,
        slo_share: Annotated[float, typer.Option("--slo-share", help="share of requests that must meet the SLO")] = 0.9,
        arrivals: Annotated[ArrivalKind, typer.Option(help="arrival process")] = ArrivalKind.poisson,
        cv: Annotated[float, typer.Option(help="coefficient of variation of gaps for bursty arrivals")] = 3.0,
        arrival_trace: Annotated[Path | None, typer.Option("--arrival-trace",
                                                           help="CSV/JSONL of arrival_s[,input_tokens,output_tokens]")] = None,
        seed: Annotated[int, typer.Option(help="random seed (arrivals, loops, branches, tool times)")] = 0,
        memory_limit: Annotated[float | None, typer.Option(
            "--memory-limit", help="GB the simulation may hold (default: 80% of the memory available)")] = None,
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
        stack: Annotated[str | None, typer.Option(
            help=STACK_HELP + " (default: the stack the plan was compiled for, which compile defaults to vllm)")] = None,
        profile: Annotated[str | None, typer.Option(help=PROFILE_HELP)] = None,
        host_lanes: Annotated[int | None, typer.Option(
            help="concurrent tool/code/retrieval tasks per host (default: each host's lanes in its cluster)")] = None,
        loops: Annotated[LoopMode, typer.Option(help="loop iterations: geometric with the loop's mean, or the mean")] = LoopMode.geometric,
        tool_times: Annotated[ToolTimes, typer.Option(help="tool/code times: as given, or exponential with that mean")] = ToolTimes.fixed,
        goodput: Annotated[bool, typer.Option(help="with an SLO, bisect the rate for the goodput")] = True,
        timeline: Annotated[Path | None, typer.Option(help="write the per-device timeline as a Chrome/Perfetto trace")] = None,
        bands: Annotated[bool, typer.Option(
            help="also simulate with every step at the low and the high edge of its uncertainty band, for the "
                 "band of each figure (about three times the work)")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="progress on stderr (default on a terminal)")] = False,
    ) -> None:
        """Simulate a plan under load: latency percentiles, throughput, goodput under SLOs, energy, each with its band."""
        from gimletc._io import check_outputs, write_atomic
        from gimletc.plan import load_plan
        from gimletc.sim.arrivals import generate, load_trace
        from gimletc.sim.limits import MAX_SPAN_S, estimate
        from gimletc.sim.load import simulate, workload_of_plan
        from gimletc.sim.metrics import goodput as find_goodput
        from gimletc.sim.metrics import summary, timeline_trace

        check_outputs([timeline])
        _positive("--rate", rate)
        _positive("--requests", requests, integer=True)
        _positive("--memory-limit", memory_limit)
        if seed < 0:
            raise GimletError(f"--seed must be an integer >= 0; got {seed}")
        if arrivals == ArrivalKind.bursty:
            _positive("--cv", cv)
        slo = _slo(slo_ttft_ms, slo_tpot_ms, slo_share)
        cfg = _sim_config(max_batch, max_prefill_tokens, chunked_prefill, chunk_tokens,
                          stack_option(stack, profile), host_lanes,
                          loops.value, tool_times.value, timeline is not None,
                          policy=policy.value if policy else None, prefix_caching=prefix_caching)
        if memory_limit is not None:
            cfg = dataclasses.replace(cfg, memory_limit=memory_limit * 1e9)
        p = load_plan(plan)
        wl = workload_of_plan(p, source=str(plan))  # what the simulator relies on in the plan, checked
        if arrival_trace is not None:
            arr = load_trace(arrival_trace)
            if requests is not None:
                arr = arr.head(requests)
            estimate(wl, len(arr), cfg).check(f"{plan}: ")
            if rate is not None:
                arr = arr.at_rate(rate)
        else:
            if rate is None:
                raise GimletError("--rate is required (or give --arrival-trace)")
            estimate(wl, requests or SIM_REQUESTS, cfg).check(f"{plan}: ")  # before the arrivals are drawn
            arr = generate(arrivals.value, rate, requests or SIM_REQUESTS, seed, cv)
        progress = _progress(verbose)
        if progress:
            progress(f"simulating {len(arr)} requests of {p.name} at {arr.rate:.4g} req/s ({arr.kind})")
        result = simulate(wl, arr, cfg, seed, progress=progress)
        good = None
        if goodput and not slo.empty:
            if progress:
                progress(f"goodput: bisecting the rate for {slo.share:.0%} within the SLO")
            quiet = dataclasses.replace(cfg, record_timeline=False)

            def tell(pt: Any) -> None:
                if progress:
                    progress(f"  {pt.rate:.4g} req/s -> {pt.attainment:.1%} meet the SLO")

            # The bisection lowers the rate at most to where the arrivals would span MAX_SPAN_S.
            floor = max(2.0**-12, 2 * float(arr.times[-1]) / MAX_SPAN_S)
            good = find_goodput(lambda r: simulate(wl, arr.at_rate(r), quiet, seed), slo, arr.rate,
                                floor_factor=floor, progress=tell)
        d = summary(result, slo, good)
        if bands:
            d["bands"] = _simulation_bands(p, arr, cfg, seed, slo, good, d, progress)
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
        graph: Annotated[Path | None, typer.Argument(
            help="agent graph: a .py file defining `graph`, or .yaml/.json")] = None,
        cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="cluster file or preset name")] = None,
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
        modes: Annotated[str | None, typer.Option(
            help="agg, disagg, spec, attn-ffn (comma-separated; default: agg, disagg, spec where the call names a "
                 "draft, attn-ffn for MoE models)")] = None,
        chips: Annotated[str | None, typer.Option(help="chip types to use (default: all accelerators)")] = None,
        stack: Annotated[str | None, typer.Option(help=STACK_HELP + " (default: vllm)")] = None,
        profile: Annotated[str | None, typer.Option(help=PROFILE_HELP)] = None,
        weight_dtype: Annotated[str | None, typer.Option(help="serve every model's weights in this format, e.g. fp8")] = None,
        kv_dtype: Annotated[str | None, typer.Option(help="keep KV caches in this format, e.g. fp8")] = None,
        policy: Annotated[PolicyName | None, typer.Option(
            help="batching policy (default: the software stack's engine; docs/serving.md)")] = None,
        max_batch: Annotated[int | None, typer.Option(
            help="running-set cap, sequences (default: the policy's)")] = None,
        host_lanes: Annotated[int | None, typer.Option(
            help="concurrent tool/code/retrieval tasks on the host (default: its lanes in the cluster)")] = None,
        bands: Annotated[bool, typer.Option(
            help="also bisect each configuration's goodput with every step at the low and the high edge of its "
                 "band, so rankings and the frontier say which configurations are not distinguishable")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="progress on stderr (default on a terminal)")] = False,
        recommend: Annotated[bool, typer.Option(
            "--recommend", help="the fewest chips, least power and least cost that serve --rate within the SLO")] = False,
        rate: Annotated[float | None, typer.Option("--rate", help="with --recommend: requests/s to serve")] = None,
        save: Annotated[Path | None, typer.Option(
            "--save", help="write the result as a versioned JSON for deployment (docs/serving.md)")] = None,
        draft: Annotated[str | None, typer.Option(help="spec: the draft model (default: the one the call names)")] = None,
        acceptance: Annotated[float | None, typer.Option(
            help="spec: per-token acceptance of the draft (default: the call's, else 0.7; docs/serving.md)")] = None,
        dp: Annotated[str | None, typer.Option(
            help="attention data-parallel sizes with expert parallelism, e.g. 2,4,8 (default: those for MoE models)")] = None,
        ratios: Annotated[str, typer.Option(help="attn-ffn: attention engines per FFN engine to try (M of M:1)")] = "1,2,4,8",
        mix: Annotated[bool, typer.Option("--mix/--no-mix", help="let a role's replicas span chip types")] = True,
        role_policy: Annotated[str | None, typer.Option(
            "--role-policy", help="a role's own batching policy, e.g. prefill=sglang,decode=vllm")] = None,
        load: Annotated[Path | None, typer.Option(
            "--load", help="print a result saved with --save (validated) instead of searching")] = None,
    ) -> None:
        """Search replica mixes and chip types for the best goodput per chip, per watt and per dollar under SLOs."""
        from gimletc.graph_io import load_graph
        from gimletc.hardware import load_cluster
        from gimletc._io import write_atomic
        from gimletc.serving.plot import frontier_png
        from gimletc.serving.search import SearchSettings, search

        if load is not None:
            _print_saved(load, as_json)
            return
        if graph is None or cluster is None:
            raise GimletError("search needs an agent graph and --cluster (or --load FILE)")

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
        mode_list = _modes(modes)
        from gimletc.models.workload import DEFAULT_STACK

        cfg = _sim_config(max_batch, None, None, None, stack_option(stack, profile, DEFAULT_STACK), host_lanes,
                          weight_dtype=weight_dtype, kv_dtype=kv_dtype, policy=policy.value if policy else None)
        cl = load_cluster(cluster)
        chip_list = tuple(c.strip() for c in chips.split(",")) if chips else None
        if chip_list:
            have = sorted({d.chip.name for d in cl.accelerators()})
            for c in chip_list:
                if c not in have:
                    raise GimletError(f"--chips: {cl.name} has no {c!r}; it has {', '.join(have) or 'no accelerators'}")
        if recommend != (rate is not None):
            raise GimletError("--recommend and --rate go together: --recommend --rate R finds the least hardware "
                              "that serves R requests/s")
        _positive("--rate", rate)
        if recommend and plot is not None:
            raise GimletError("--plot draws a search's frontier; --recommend has none")
        if draft is not None:
            from gimletc.models import get_model

            get_model(draft)  # an unknown model is its own one-line error
        if acceptance is not None and not 0 <= acceptance < 1:
            raise GimletError(f"--acceptance must be in [0, 1); got {acceptance:g}")
        settings = SearchSettings(requests=requests, seed=seed, top_k=configs, max_chips=max_chips, tp=tps,
                                  modes=mode_list, chips=chip_list, sim=cfg, dp=_ints("--dp", dp),
                                  ratios=_ints("--ratios", ratios) or (1,), draft=draft, acceptance=acceptance,
                                  mix=mix, role_policy=_role_policy(role_policy))
        g = load_graph(graph)
        if recommend:
            _recommend(g, cl, slo, float(rate or 0.0), settings, save, as_json, verbose)
            return
        result = search(g, cl, slo, settings, progress=_progress(verbose))
        eval_bands = None
        if bands:
            from gimletc.serving.bands import evaluation_bands

            eval_bands = evaluation_bands(g, cl, slo, settings, result, progress=_progress(verbose))
        png = None
        if plot is not None:
            slo_d = slo.to_dict()
            parts = [f"{k[:-3].upper()} <= {v:g} ms" for k, v in slo_d.items() if k.endswith("_ms") and v is not None]
            png = frontier_png(result.points(), f"{g.attrs.get('gimlet.name', graph.stem)} on {cl.name}: "
                                                f"{', '.join(parts)} for {slo.share:.0%}")
        saved = None
        if save is not None:
            from gimletc.serving.saved import document_text, search_document

            saved = document_text(search_document(result, g, cl))
        if png is not None and plot is not None:
            write_atomic(plot, png)
        if saved is not None and save is not None:
            write_atomic(save, saved)
        if as_json:
            d = result.to_dict(top)
            d["plot"] = str(plot) if plot else None
            if eval_bands is not None:
                _add_search_bands(d, result, eval_bands, top)
            sys.stdout.write(json.dumps(d, indent=2, sort_keys=True, allow_nan=False) + "\n")
            return
        _print_search(result, top, eval_bands)
        if plot is not None:
            _out().print(f"wrote {plot}")
        if save is not None:
            _out().print(f"wrote {save}")


def _print_saved(path: Path, as_json: bool) -> None:
    from gimletc.serving.saved import document_text, load_search_result

    doc = load_search_result(path)
    if as_json:
        sys.stdout.write(document_text(doc))
        return
    out = _out()
    what = f"the least hardware for {doc.rate_req_s:g} req/s" if doc.kind == "recommend" else "a serving search"
    s = doc.slo
    slo = _slo_text({"ttft_ms": s.ttft_ms, "tpot_ms": s.tpot_ms})
    out.print(f"[bold]{path}[/bold]: {what} for {doc.graph} on {doc.cluster} ({doc.stack} stack, {doc.policy} batching), "
              f"{slo} for {s.share:.0%} of requests; {len(doc.configurations)} configurations")
    t = Table(title="saved configurations (predicted: cost model; simulated: load simulator)")
    for col in ("#", "configuration", "chips", "chosen for", "predicted req/s", "simulated req/s", "tok/s/chip",
                "TPOT p90 ms"):
        t.add_column(col, justify="left" if col in ("configuration", "chosen for") else "right")
    for c in doc.configurations:
        sim = c.simulated
        t.add_row(str(c.rank), c.label, str(sum(c.chips.values())), ", ".join(c.chosen_for) or "-",
                  _fmt(c.predicted.req_s), _fmt(sim.rate_req_s if sim else None),
                  _fmt(sim.tok_s_per_chip if sim else None), _fmt(sim.tpot_p90_ms if sim else None))
    out.print(t)


def _modes(text: str | None) -> tuple[str, ...] | None:
    from gimletc.serving.layout import MODES

    if text is None:
        return None
    out = tuple(m.strip() for m in text.split(",") if m.strip())
    if not out or any(m not in MODES for m in out):
        raise GimletError(f"--modes takes a comma-separated subset of {', '.join(MODES)}; got {text!r}")
    return out


def _ints(name: str, text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise GimletError(f"{name} takes comma-separated integers; got {text!r}") from None
    for x in out:
        _positive(name, x, integer=True)
    return out


def _role_policy(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    out = []
    for part in text.split(","):
        role, eq, pol = part.partition("=")
        if not eq or not role.strip() or not pol.strip():
            raise GimletError(f"--role-policy takes ROLE=POLICY pairs, e.g. prefill=sglang; got {part!r}")
        out.append((role.strip(), pol.strip()))
    return tuple(out)


def _recommend(g: Any, cl: Any, slo: Any, rate: float, settings: Any, save: Path | None, as_json: bool,
               verbose: bool) -> None:
    from gimletc.serving.recommend import recommend

    rec = recommend(g, cl, slo, rate, settings, progress=_progress(verbose))
    if save is not None:
        from gimletc.serving.saved import save_recommendation

        save_recommendation(save, rec, g, cl)
    if as_json:
        sys.stdout.write(json.dumps(rec.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n")
        return
    out = _out()
    s = rec.settings
    out.print(f"[bold]least hardware for {rate:g} req/s[/bold] with {rec.slo.share:.0%} of requests within "
              f"{_slo_text(rec.slo.to_dict())} (predicted by the cost model, each checked by simulating "
              f"{s.requests} Poisson requests at that rate, seed {s.seed})")
    t = Table(title="recommendation")
    for col in ("least", "configuration", "chips", "power W", "USD/h", "predicted req/s", "band",
                "share within SLO", "TTFT p90 ms", "TPOT p90 ms", "tok/s/chip"):
        t.add_column(col, justify="left" if col in ("least", "configuration") else "right")
    names = {"chips": "chips", "power": "power", "price": "cost"}
    for objective, e in rec.picks.items():
        pt = e.goodput.points[0]
        t.add_row(names[objective], e.config.label, str(e.chips), _fmt(e.power_w), _fmt(e.price_per_hour),
                  _fmt(e.predicted_req_s), str(e.band) if e.band else "-", f"{pt.attainment:.1%}",
                  _fmt(pt.ttft_p90_ms), _fmt(pt.tpot_p90_ms), _fmt(pt.throughput_tok_s / e.chips))
    out.print(t)
    for objective, label, att in rec.tried:
        out.print(f"[dim]{objective}: {label} predicted to serve it, simulated {att:.1%} within the SLO; "
                  "asked for more[/dim]")
    if save is not None:
        out.print(f"wrote {save}")


def _simulation_bands(p: Any, arr: Any, cfg: Any, seed: int, slo: Any, good: Any, d: dict,
                      progress: Any) -> dict:
    """The `bands` of `simulate --json`: the same run (and goodput bisection) with every step at the low,
    then the high edge of its band (`gimletc.sim.bands`)."""
    from gimletc.sim.bands import edge_config, edge_plan, plan_stack, summary_bands
    from gimletc.sim.limits import MAX_SPAN_S
    from gimletc.sim.load import simulate_plan
    from gimletc.sim.metrics import goodput as find_goodput
    from gimletc.sim.metrics import summary

    edges = []
    for edge in (-1, 1):
        if progress:
            progress(f"bands: the same run with every step at the {'low' if edge < 0 else 'high'} edge of its band")
        pe, ce = edge_plan(p, edge), edge_config(cfg, plan_stack(p), edge)
        res = simulate_plan(pe, arr, ce, seed)
        ge = None
        if good is not None:
            start = good.rate if good.rate > 0 else arr.rate
            # As the run's own bisection: never so low a rate that the arrivals would span MAX_SPAN_S.
            floor = max(2.0**-12, 2 * float(arr.times[-1]) * arr.rate / (start * MAX_SPAN_S))
            ge = find_goodput(lambda r, pe=pe, ce=ce: simulate_plan(pe, arr.at_rate(r), ce, seed), slo, start,
                              floor_factor=floor)
        edges.append(summary(res, slo, ge))
    return summary_bands(d, edges)


def _banded(d: dict, key: str, sub: str | None = None) -> str:
    """A figure of a simulation summary with its band (`6.3 ±8%`), "-" when missing."""
    from gimletc.cost.uncertainty import with_band

    v = d.get(key) if sub is None else (d.get(key) or {}).get(sub)
    if v is None:
        return "-"
    b = (d.get("bands") or {}).get(key)
    if sub is not None and isinstance(b, dict):
        b = b.get(sub)
    return with_band(v, (b["lo"], b["hi"]) if isinstance(b, dict) and "lo" in b else None)


def _print_simulation(d: dict) -> None:
    out = _out()
    a = d["arrivals"]
    out.print(f"[bold]{d['name']}[/bold] under load: {d['requests']} requests, {a['kind']} arrivals at "
              f"{a['rate_req_s']:.4g} req/s, {d['duration_s']:.4g} s simulated; {d['policy']} batching")
    banded = "bands" in d
    t = Table(title="latency (ms, predicted" + (", with the band each lies in)" if banded else ")"))
    for col in ("metric", "p50", "p90", "p99", "mean", "max"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "end-to-end")):
        t.add_row(label, *(_banded(d, key, k) for k in ("p50", "p90", "p99", "mean", "max")))
    out.print(t)
    t = Table(title="throughput and energy (predicted" + (", with bands)" if banded else ")"))
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("output tokens/s", _banded(d, "throughput_tok_s")),
        ("requests/s", _banded(d, "throughput_req_s")),
        ("energy per request, J", _banded(d, "energy_per_request_j")),
        ("energy per output token, J", _banded(d, "energy_per_token_j")),
        ("preemptions (KV cache full)", _fmt(d["preemptions"])),
        ("tokens recomputed after preemption", _fmt(d["recomputed_tokens"])),
    ]
    pc = d.get("prefix_cache")
    if pc:
        rows += [("prefix cache hits / lookups", f"{pc['hits']} / {pc['lookups']}"),
                 ("prompt tokens served from the prefix cache", pc["saved_tokens"]),
                 ("prefix cache evictions (segments)", pc["evictions"])]
    if d.get("slo"):
        rows.append((f"share meeting the SLO ({_slo_text(d['slo'])})", _banded(d, "slo_attainment")))
        rows.append((f"goodput, req/s ({d['slo']['share']:.0%} within the SLO)", _banded(d, "goodput_req_s")))
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


def _ties(ranked: list, metric: str, bands: dict | None) -> list[int | None]:
    if bands is None:
        return [None] * len(ranked)
    from gimletc.serving.bands import rank_ties

    return rank_ties(ranked, metric, bands)


def _slo_text(slo: dict) -> str:
    parts = []
    if slo.get("ttft_ms") is not None:
        parts.append(f"TTFT <= {slo['ttft_ms']:g} ms")
    if slo.get("tpot_ms") is not None:
        parts.append(f"TPOT <= {slo['tpot_ms']:g} ms")
    return ", ".join(parts)


def _add_search_bands(d: dict, result: Any, bands: dict, top: int) -> None:
    """Band fields of `search --json` (added beside the existing keys): each evaluation's `bands`, the
    ranked configurations not distinguishable from a better-ranked one, and the configurations within
    bands of the Pareto frontier."""
    from gimletc.serving.bands import SOURCE, rank_ties, within_bands_of_frontier

    for e, ev in zip(d["evaluations"], result.top("per_chip", len(result.evaluations)), strict=True):
        b = bands.get(ev.config.label)
        e["bands"] = b.to_dict() if b is not None else None
    ties: dict[str, list[dict]] = {}
    for metric in ("per_chip", "per_watt", "per_dollar"):
        ranked = result.top(metric, top)
        ties[metric] = [{"config": e.config.label, "rank": i + 1, "from": ranked[j].config.label, "from_rank": j + 1}
                        for i, (e, j) in enumerate(zip(ranked, rank_ties(ranked, metric, bands), strict=True))
                        if j is not None]
    d["not_distinguishable"] = ties
    d["pareto_within_bands"] = within_bands_of_frontier(result.points(), result.pareto(), result.evaluations, bands)
    d["bands_source"] = SOURCE


def _print_search(result: Any, top: int, bands: dict | None = None) -> None:
    from gimletc.cost.uncertainty import with_band

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
        ranked = result.top(metric, top)
        ties = _ties(ranked, metric, bands)
        for i, e in enumerate(ranked):
            at = e.at_goodput
            b = bands.get(e.config.label) if bands is not None else None

            def cell(v: float | None, attr: str, b: Any = b) -> str:
                iv = getattr(b, attr, None) if b is not None else None
                return "-" if v is None else with_band(v, iv)

            rank = str(i + 1) if ties[i] is None else f"={ties[i] + 1}"
            t.add_row(rank, e.config.label, str(e.chips), cell(e.goodput_req_s, "goodput_req_s"),
                      cell(e.goodput_tok_s, "goodput_tok_s"), cell(e.per_chip, "per_chip"), cell(e.per_watt, "per_watt"),
                      cell(e.per_dollar, "per_dollar"), cell(at.tok_s_per_user if at else None, "tok_s_per_user"))
        out.print(t)
        if any(x is not None for x in ties):
            out.print(f"[dim]=n: not distinguishable from #n (their {title.split(' (')[0]} bands overlap)[/dim]")
    t = Table(title="Pareto frontier: tokens/s per user vs tokens/s per chip (operating points meeting the SLO)")
    for col in ("configuration", "rate req/s", "tok/s/user", "tok/s/chip"):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for p in result.pareto():
        t.add_row(p.label, _fmt(p.rate), _fmt(p.tok_s_per_user), _fmt(p.tok_s_per_chip))
    out.print(t)
    if bands is not None:
        from gimletc.serving.bands import within_bands_of_frontier

        near = within_bands_of_frontier(result.points(), result.pareto(), result.evaluations, bands)
        out.print("[dim]not distinguishable from the frontier within bands: "
                  + (", ".join(near) if near else "none (every other configuration is beaten beyond its bands)")
                  + "[/dim]")
    for what, why in result.skipped:
        out.print(f"[dim]skipped {what}: {why}[/dim]")
    for what, why in result.failed:
        out.print(f"[dim]failed {what}: {why}[/dim]")
