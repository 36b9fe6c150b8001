"""The folder `gimletc deploy` writes, whole or not at all.

    DIR/README.md               what runs where, each engine's command, what no engine runs, CPU workers,
                                how to benchmark the deployment and compare it with the prediction
    DIR/deployment.json         the typed description, the launches and endpoints (machine-readable)
    DIR/vllm/GROUP.sh           (--engine vllm) one launch script per engine group
    DIR/sglang/GROUP.sh         (--engine sglang) one per group, and one per prefill/decode router
    DIR/dynamo/deployment.yaml  (--engine dynamo) the DynamoGraphDeployment; cpu-workers.yaml beside it
    DIR/benchmark/bench.py      the benchmark client (Python 3.9+, standard library only)
    DIR/benchmark/workload.json the request shape, and the endpoint serving each call
    DIR/benchmark/predicted.json (a search result) the search's own prediction, in simulate --json's shape
    DIR/artifacts/...           ONNX partitions for chips no engine runs (`gimletc build`'s), where the
                                plan's models are ONNX files

Everything is written into a staging folder beside DIR and renamed into place at the end: a failure
leaves DIR as it was. An existing DIR is replaced only if it is empty or an earlier `gimletc deploy`
folder (it holds a deployment.json of this format).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

from gimletc.deploy.common import VERSIONS, Rendered, pools
from gimletc.deploy.description import Deployment, NoEngine
from gimletc.errors import ConfigError

__all__ = ["FORMAT", "check_folder", "render", "write_folder"]

FORMAT = "gimletc-deploy/1"


def check_folder(out: str | Path) -> Path:
    """`out` once it is known the deployment can be written there (ConfigError naming it otherwise)."""
    p = Path(out)
    if str(out) in ("", "-"):
        raise ConfigError("deploy writes a folder: give -o DIR")
    parent = p.parent
    if not parent.is_dir():
        raise ConfigError(f"output {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or not os.stat(parent).st_mode & 0o222:
        raise ConfigError(f"output {p}: folder {parent} is read-only")
    if p.is_symlink():
        raise ConfigError(f"output {p}: is a symbolic link; give a folder")
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"output {p}: exists and is not a folder")
        entries = list(p.iterdir())
        if entries and not _ours(p):
            raise ConfigError(f"output {p}: exists and is not an earlier `gimletc deploy` folder (no deployment.json "
                              f"of format {FORMAT}); give a new or empty folder")
    return p


def _ours(p: Path) -> bool:
    try:
        return json.loads((p / "deployment.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def render(d: Deployment, engine: str, backend: str = "vllm") -> Rendered:
    """The engine's files for `d` (no README, description or benchmark yet)."""
    if engine == "vllm":
        from gimletc.deploy.vllm import render as r
        return r(d)
    if engine == "sglang":
        from gimletc.deploy.sglang import render as r
        return r(d)
    from gimletc.deploy.dynamo import render as r
    return r(d, backend)


def _workload(d: Deployment, r: Rendered) -> dict[str, Any]:
    served = {}
    for g in d.groups:
        served[g.model] = g.base_model
    return {**d.request, "served_models": dict(sorted(served.items())), "endpoints": dict(sorted(r.endpoints.items()))}


def _bench_source() -> str:
    return (Path(__file__).resolve().parent / "bench_client.py").read_text()


def write_folder(out: Path, d: Deployment, engine: str, r: Rendered, *, backend: str = "vllm", plan: Any = None,
                 plan_path: Path | None = None) -> Deployment:
    """Write the deployment folder (see the module docstring); returns `d` with the no-engine groups'
    artifacts filled in."""
    check_folder(out)
    stage = out.parent / f".{out.name}.{os.getpid()}.staging"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        d = _artifacts(d, stage, plan, plan_path)
        files = dict(r.files)
        files["benchmark/bench.py"] = _bench_source()
        files["benchmark/workload.json"] = json.dumps(_workload(d, r), indent=2, sort_keys=True) + "\n"
        if d.prediction is not None:
            files["benchmark/predicted.json"] = json.dumps(d.prediction, indent=2, sort_keys=True) + "\n"
        files["deployment.json"] = json.dumps(_description(d, engine, backend, r), indent=2, sort_keys=True) + "\n"
        files["README.md"] = readme(d, engine, backend, r)
        for rel, text in sorted(files.items()):
            dest = stage / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            if rel in r.executables or rel == "benchmark/bench.py":
                dest.chmod(dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        _swap(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return d


def _swap(stage: Path, out: Path) -> None:
    """Put the staged folder at `out`, replacing an earlier one only once the new one is complete."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.{os.getpid()}.old"
        os.rename(out, old)
    try:
        os.rename(stage, out)
    except OSError as e:
        if old is not None:
            os.rename(old, out)
        raise ConfigError(f"output {out}: cannot put it in place: {e.strerror or e}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _artifacts(d: Deployment, stage: Path, plan: Any, plan_path: Path | None) -> Deployment:
    """`gimletc build`'s ONNX partitions (no IREE) for the groups no engine runs, where the plan's models are
    ONNX files (`gimletc.targets.build`); catalog models have no weights to build."""
    if not d.no_engine or plan is None:
        return d
    from gimletc.ir import parse_graph
    from gimletc.targets.build import build_plan_artifacts, model_computes, resolve_model_path

    g = parse_graph(plan.ir)
    if not any(resolve_model_path(str(op.attr("model"))) is not None for op in model_computes(g)):
        return d
    arts = build_plan_artifacts(plan, stage / "artifacts", plan_dir=stage, backends=(), graph=g,
                                model_base=plan_path.parent if plan_path is not None else None)
    out = []
    for n in d.no_engine:
        mine = tuple(a for a in arts if a.get("op") in n.ops and a["kind"] == "onnx")
        out.append(replace(n, artifacts=mine))
    return replace(d, no_engine=tuple(out))


def _description(d: Deployment, engine: str, backend: str, r: Rendered) -> dict[str, Any]:
    return {"format": FORMAT, "engine": engine, "backend": backend if engine == "dynamo" else None,
            "versions": {k: v for k, v in VERSIONS.items()}, "deployment": d.to_dict(),
            "launches": [{"group": lc.group, "node": lc.node, "env": dict(lc.env), "argv": list(lc.argv)}
                         for lc in r.launches],
            "endpoints": dict(sorted(r.endpoints.items())), "notes": [*d.notes, *r.notes]}


def _no_engine_text(n: NoEngine) -> list[str]:
    lines = [f"- **{n.name}** ({n.role} of {n.model} for call(s) {', '.join(n.calls)}) on "
             f"{len(n.devices)}x {n.chip}: {n.reason}."]
    if n.toolchain:
        lines.append(f"  Its partitions are compiled by the vendor's toolchain, {n.toolchain}, from ONNX.")
    if n.artifacts:
        for a in n.artifacts:
            lines.append(f"  - `{a['path']}` (op {a['op']}, {a['partition']}; sha256 {a['sha256'][:16]}...)")
    elif n.toolchain:
        lines.append(f"  No ONNX artifact: {n.model.split('@')[0]} is a catalog architecture without weights; compile the "
                     "graph from the model's ONNX file and run `gimletc build` (or deploy again) to get its partitions.")
    return lines


def readme(d: Deployment, engine: str, backend: str, r: Rendered) -> str:
    ver = f"{engine} {VERSIONS[engine]}" + (f" with {backend} {VERSIONS[backend]} workers" if engine == "dynamo" else "")
    out = [f"# {d.name}: deployment for {ver}", "",
           f"Written by `gimletc deploy` from {d.source}, priced for the `{d.stack}` stack. Flags are those of "
           f"{ver} (docs/deploy.md names the source file of each).", "", "## Engine groups", "",
           "| group | role | model | chips | TP x PP | node | calls | batching (max seqs / tokens / chunk) |",
           "|---|---|---|---|---|---|---|---|"]
    for g in d.groups:
        b = g.batching
        chunk = ("off" if not b.chunked else str(b.chunk_tokens) if b.chunk_tokens else "by budget") if b else ""
        knobs = f"{b.max_batch} / {b.max_prefill_tokens} / {chunk}" if b else "engine defaults"
        out.append(f"| {g.name} | {g.role} | {g.model} | {g.parallel.chips}x {g.chip} | {g.parallel.tp} x {g.parallel.pp} | "
                   f"{g.node or 'several'} | {', '.join(g.calls)} | {knobs} |")
    out += ["", ("Batching knobs are the ones the load simulator resolved for the engine's policy on these chips "
                 "(`gimletc simulate --json`, `engines[].batching`)" if d.prediction is None and not d.source.startswith("search")
                 else "Batching knobs are the ones the search predicted with (saved per group in the result)")
            + ", passed explicitly so the engine runs what the prediction assumed.", "", "## Launch", ""]
    if engine == "dynamo":
        out += ["```sh", "kubectl apply -f dynamo/deployment.yaml", "```", "",
                "The frontend serves every model on port 8000 (`kubectl port-forward` to reach it). The workers run:", ""]
    out += ["```sh"] + [f"# {lc.group}" + (f" (node {lc.node})" if lc.node else "") + "\n" + lc.command() for lc in r.launches]
    out += ["```", ""]
    if d.no_engine:
        out += ["## Parts no serving engine runs", ""]
        for n in d.no_engine:
            out += _no_engine_text(n)
        out.append("")
    if d.cpu_workers:
        out += ["## CPU workers (tools, retrieval, code)", "",
                "| host | workers x CPUs | ops (predicted seconds x runs per request) |", "|---|---|---|"]
        for w in d.cpu_workers:
            ops = ", ".join(f"{op} ({kind}: {s:.3g} s x {runs:g})" for op, kind, s, runs in w.ops)
            out.append(f"| {w.host} ({w.cpu}) | {w.lanes} x {w.cpus_per_worker} | {ops} |")
        out += ["", "One single-CPU worker per lane: the plan's host runs that many CPU ops at once."
                + (" `dynamo/cpu-workers.yaml` has them as Kubernetes Deployments (set the image)." if engine == "dynamo" else ""), ""]
    notes = [*d.notes, *r.notes, *[f"{p[0].pool or p[0].name}: {n}" for p in pools(d) for n in p[0].notes]]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in dict.fromkeys(notes)] + [""]
    endpoints = ", ".join(f"{c} -> {u}" for c, u in sorted(r.endpoints.items())) or "none"
    out += ["## Benchmark: prediction against measurement", ""]
    out += _plan_bench(endpoints, engine) if d.prediction is None else _search_bench(d, endpoints, engine)
    return "\n".join(out)


def _plan_bench(endpoints: str, engine: str) -> list[str]:
    return ["Once the deployment is up (endpoints: " + endpoints + "):", "", "```sh",
            "python3 benchmark/bench.py --rate 0.5 --requests 200 --slo-ttft-ms 2000 --slo-tpot-ms 50 --out measured.json"
            + (" --base-url http://localhost:8000" if engine == "dynamo" else ""),
            "gimletc simulate PLAN.json --rate 0.5 --requests 200 --slo-ttft-ms 2000 --slo-tpot-ms 50 --json > predicted.json",
            "gimletc compare predicted.json measured.json", "```", "",
            "`bench.py` needs Python 3.9+ and nothing else; it replays the plan's request shape "
            "(`benchmark/workload.json`) and writes the figures of `simulate --json`, measured. Use the same rate, "
            "requests and SLO for both; `--goodput` bisects the rate on the deployment as the simulator does.", ""]


def _search_bench(d: Deployment, endpoints: str, engine: str) -> list[str]:
    """A search result's deployment: its own prediction is benchmark/predicted.json, at the rate it was simulated."""
    p = d.prediction or {}
    a, slo = p.get("arrivals", {}), p.get("slo") or {}
    opts = f"--rate {a.get('rate_req_s', 0)!r} --requests {a.get('requests', 200)}"  # the rate exactly: compare checks it
    for key, flag in (("ttft_ms", "--slo-ttft-ms"), ("tpot_ms", "--slo-tpot-ms")):
        if slo.get(key) is not None:
            opts += f" {flag} {slo[key]:g}"
    return ["Once the deployment is up (endpoints: " + endpoints + "):", "", "```sh",
            f"python3 benchmark/bench.py {opts} --out measured.json"
            + (" --base-url http://localhost:8000" if engine == "dynamo" else ""),
            "gimletc compare benchmark/predicted.json measured.json", "```", "",
            "`benchmark/predicted.json` is the search's own prediction for this configuration (its load simulation at "
            "that rate: TTFT and TPOT p90, output tokens/s and, for a search, the goodput), so the benchmark runs at "
            "the same rate, requests and SLO. `bench.py` needs Python 3.9+ and nothing else; it replays the saved "
            "workload's LLM calls (`benchmark/workload.json`).", ""]


def summary_lines(d: Deployment, engine: str, r: Rendered) -> list[str]:
    """What `gimletc deploy` prints: one line per group and per part no engine runs."""
    lines = [f"{d.name}: {len(d.groups)} engine group(s) for {engine}"]
    for lc in r.launches:
        lines.append(f"  {lc.group}: {lc.command()}")
    for n in d.no_engine:
        lines.append(f"  no engine: {n.name} ({n.role} of {n.model} on {len(n.devices)}x {n.chip})"
                     + (f": toolchain {n.toolchain}" if n.toolchain else "")
                     + (f", {len(n.artifacts)} ONNX artifact(s)" if n.artifacts else ""))
    for w in d.cpu_workers:
        lines.append(f"  CPU workers on {w.host}: {w.lanes} x {w.cpus_per_worker} CPU")
    return lines

