"""`gimletc build` (a plan's executables) and `gimletc run` (execute a plan on this machine).

Registered on the main CLI by `register(app)`; errors follow the CLI's rules
(one line on stderr, exit 2, nothing half-written).
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from gimletc._io import brief, read_data
from gimletc.errors import GimletError

__all__ = ["register"]


class RunBackend(str, Enum):
    onnxruntime = "onnxruntime"
    iree = "iree"


class RunExecutor(str, Enum):
    local = "local"
    process = "process"
    ray = "ray"


def _parse_drafts(specs: list[str]) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for s in specs:
        llm, sep, rest = s.partition("=")
        if not sep or not llm or not rest:
            raise GimletError(f"--draft takes LLM=DRAFT.onnx[:K]; got {s!r}")
        path, _, k = rest.rpartition(":") if rest.rsplit(":", 1)[-1].isdigit() else (rest, "", "4")
        if not path:
            raise GimletError(f"--draft {s}: no draft model before ':{k}'")
        if int(k) < 1:
            raise GimletError(f"--draft {s}: K = {int(k)} tokens drafted per step; speculative decoding drafts at least 1")
        if llm in out:
            raise GimletError(f"--draft {llm}: given twice ({out[llm][0]}, then {path})")
        out[llm] = (path, int(k))
    return out


def _read_inputs(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = read_data(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(x, int) for x in v) for v in data.values()):
        raise GimletError(f"{path}: expected an object mapping input names to lists of token ids")
    for name, ids in data.items():
        bad = next((x for x in ids if isinstance(x, bool) or not -(2**63) <= x < 2**63), None)
        if bad is not None:
            raise GimletError(f"{path}: {name}: token id {brief(bad)} is not a 64-bit integer")
    return data


def register(app: typer.Typer) -> None:
    """Add `build` and `run` to the gimletc CLI."""

    @app.command("build")
    def build_cmd(
        plan: Annotated[Path, typer.Argument(help="a plan written by `gimletc compile`")],
        artifacts: Annotated[Path | None, typer.Option("--artifacts", help="folder for the executables (default: PLAN's name + .artifacts)")] = None,
        backend: Annotated[list[str], typer.Option("--backend", help="IREE backend to compile every partition for (repeatable): llvm-cpu, cuda, rocm, vulkan-spirv; default: each chip's own plus llvm-cpu")] = [],  # noqa: B006
        no_iree: Annotated[bool, typer.Option("--no-iree", help="ONNX subgraphs only, no IREE binaries")] = False,
        draft: Annotated[list[str], typer.Option("--draft", help="LLM=DRAFT.onnx[:K]: speculative decoding for that call, K tokens drafted per step")] = [],  # noqa: B006
        output: Annotated[Path | None, typer.Option("--output", "-o", help="where to write the plan with its artifacts (default: in place)")] = None,
    ) -> None:
        """Build a plan's executables (ONNX subgraphs, IREE binaries, the dataflow MLIR) and record them in the plan."""
        from gimletc._io import check_outputs
        from gimletc.plan import load_plan
        from gimletc.targets.build import build_plan_artifacts

        dest = output if output is not None else plan
        check_outputs([dest])  # the plan is rewritten (or written to -o) last; it must be writable first
        drafts = _parse_drafts(draft)
        p = load_plan(plan)
        out_dir = artifacts if artifacts is not None else plan.with_name(plan.stem + ".artifacts")
        backends: tuple[str, ...] | None = () if no_iree else (tuple(backend) if backend else None)
        arts = build_plan_artifacts(p, out_dir, plan_dir=dest.parent, backends=backends, drafts=drafts,
                                    model_base=plan.parent)
        root = Path(os.path.relpath(out_dir.resolve(), dest.parent.resolve())).as_posix()
        p.model_copy(update={"artifacts": arts, "artifact_root": root}).write(dest)
        kinds: dict[str, int] = {}
        for a in arts:
            key = a["kind"] + (f" ({a['backend']})" if a.get("backend") else "")
            kinds[key] = kinds.get(key, 0) + 1
        print(f"wrote {len(arts)} artifacts to {out_dir} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}) and {dest}")

    @app.command("run")
    def run_cmd(
        plan: Annotated[Path, typer.Argument(help="a plan with artifacts (`gimletc build`)")],
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        backend: Annotated[RunBackend, typer.Option(help="run partitions with onnxruntime or IREE's compiled binaries")] = RunBackend.onnxruntime,
        tools: Annotated[str | None, typer.Option(help="MODULE:ATTR, a dict of op name -> callable for tool/retrieve/code ops (imports and runs that module)")] = None,
        inputs: Annotated[Path | None, typer.Option(help="JSON object: input op name -> token ids")] = None,
        trace: Annotated[Path | None, typer.Option(help="write a Chrome/Perfetto trace of the real run")] = None,
        pace_links: Annotated[float, typer.Option("--pace-links", help="make each transfer last at least this multiple of its predicted time")] = 0.0,
        executor: Annotated[RunExecutor, typer.Option(help="where device programs run: threads here (local), a worker process each (process), a Ray actor each (ray)")] = RunExecutor.local,
        address: Annotated[str | None, typer.Option(help="with --executor ray: the Ray cluster to use (HOST:PORT or auto); default: a local one for this run")] = None,
        retries: Annotated[int, typer.Option(help="with process or ray: how often a lost worker is replaced and the request replayed")] = 1,
    ) -> None:
        """Execute a plan on this machine and check the split model against the unsplit one."""
        from gimletc._io import check_outputs, write_atomic
        from gimletc.runtime.local import load_tools, run_plan

        check_outputs([trace])  # before the run: a trace that cannot be written is known now
        registry = load_tools(tools) if tools else None
        if address is not None and executor is not RunExecutor.ray:
            raise GimletError("--address names a Ray cluster; it needs --executor ray")
        report = run_plan(plan, backend=backend.value, tools=registry, inputs=_read_inputs(inputs), pace_links=pace_links,
                          executor=executor.value, address=address, retries=retries)
        trace_text = json.dumps(report.chrome_trace(), sort_keys=True, separators=(",", ":")) + "\n" if trace else None
        if trace is not None and trace_text is not None:
            write_atomic(trace, trace_text)
        if as_json:
            sys.stdout.write(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
            return
        _print_report(report)
        if trace is not None:
            print(f"wrote {trace}")


def _print_report(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    out.print(f"[bold]{report.plan}[/bold]: measured {report.measured_ms:.3f} ms here, predicted {report.predicted_ms:.3f} ms "
              f"on the plan's chips ({report.backend}, {report.executor} executor"
              f"{f', {report.attempts} attempts' if report.attempts > 1 else ''})")
    t = Table(title="devices (measured here vs predicted)")
    for col in ("device", "chip", "ran on", "ops", "measured ms", "predicted ms"):
        t.add_column(col, justify="right" if col in ("ops", "measured ms", "predicted ms") else "left")
    for name, d in report.devices.items():
        if d.get("kind") == "link":
            t.add_row(name, "link", f"{d['transfers']} copies, {d['bytes']} B", str(d["transfers"]),
                      f"{d['measured_ms']:.3f}", f"{d['predicted_ms']:.3f}")
        else:
            t.add_row(name, d["chip"], d["ran_on"], str(d["ops"]), f"{d['measured_ms']:.3f}", f"{d['predicted_ms']:.3f}")
    out.print(t)
    for name, c in report.llms.items():
        status = "tokens match" if c.tokens_match else "TOKENS DIFFER"
        spec = ""
        if c.speculative:
            s = c.speculative
            spec = f"; speculative: {s['accepted']}/{s['drafted']} drafted tokens accepted"
        out.print(f"{name} ({c.model}): {len(c.tokens)} tokens, {status} with the unsplit model, "
                  f"max |logits diff| {c.max_abs_diff:.3g}{spec}")
    for n in report.notes:
        out.print(f"[dim]note: {n}[/dim]")
