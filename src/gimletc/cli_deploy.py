"""`gimletc deploy` (a plan as serving-engine launch commands and manifests, with a benchmark) and
`gimletc compare` (a prediction against a measurement of the deployment).

Registered on the main CLI by `register(app)`; errors follow the CLI's rules (one line on stderr,
exit 2, nothing half-written: the deployment folder appears whole or not at all).
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


class EngineName(str, Enum):
    vllm = "vllm"
    sglang = "sglang"
    dynamo = "dynamo"


class DynamoBackend(str, Enum):
    vllm = "vllm"
    sglang = "sglang"


def register(app: typer.Typer) -> None:
    """Add `deploy` and `compare` to the gimletc app."""

    @app.command("deploy")
    def deploy_cmd(
        plan: Annotated[Path, typer.Argument(
            help="a plan written by `gimletc compile`, or a search result saved by `gimletc search ... --save FILE`")],
        engine: Annotated[EngineName, typer.Option("--engine", "-e", help="serving engine to write for")],
        output: Annotated[Path, typer.Option("--output", "-o", help="folder to write (new, empty, or an earlier deploy "
                                                                     "folder, which is replaced whole)")],
        backend: Annotated[DynamoBackend, typer.Option(
            "--dynamo-backend", help="with --engine dynamo: the workers' engine")] = DynamoBackend.vllm,
        config: Annotated[int | None, typer.Option(
            "--config", min=1, help="with a saved search: the rank of the configuration to deploy (default: 1, the "
                                    "best goodput per chip, or the first recommendation)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the deployment description as JSON")] = False,
    ) -> None:
        """Write a plan, or a saved search's configuration, as launch commands and configs for vLLM, SGLang or
        Dynamo (Kubernetes), with a benchmark script that measures the deployment in the shape
        `gimletc simulate --json` predicts."""
        from gimletc._io import read_data
        from gimletc.deploy.description import from_plan
        from gimletc.deploy.search import from_search
        from gimletc.deploy.write import check_folder, render, summary_lines, write_folder
        from gimletc.errors import ConfigError
        from gimletc.plan import load_plan
        from gimletc.serving.saved import FORMAT as SEARCH_FORMAT
        from gimletc.serving.saved import load_search_result

        check_folder(output)  # before any work
        policy = backend.value if engine is EngineName.dynamo else engine.value
        raw = read_data(plan)
        if isinstance(raw, dict) and raw.get("format") == SEARCH_FORMAT:
            saved = load_search_result(plan)
            d = from_search(saved, str(plan), engine.value, config, policy)
            p = None
        else:
            if config is not None:
                raise ConfigError(f"--config {config}: {plan} is a plan, not a saved search result; --config picks "
                                  "one configuration of a search saved with --save")
            p = load_plan(plan)
            d = from_plan(p, engine.value, policy)
        r = render(d, engine.value, backend.value)
        d = write_folder(output, d, engine.value, r, backend=backend.value, plan=p, plan_path=plan if p else None)
        if as_json:
            sys.stdout.write((output / "deployment.json").read_text())
            return
        for line in summary_lines(d, engine.value, r):
            print(line)
        print(f"wrote {output} (README.md, deployment.json, benchmark/bench.py and the {engine.value} files)")

    @app.command("compare")
    def compare_cmd(
        predicted: Annotated[Path, typer.Argument(help="`gimletc simulate PLAN ... --json` output")],
        measured: Annotated[Path, typer.Argument(help="the deployment benchmark's output (benchmark/bench.py --out)")],
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ) -> None:
        """Print a prediction beside a measurement of the deployment, with the prediction's uncertainty band,
        and whether each measured figure lies within it."""
        from rich.console import Console
        from rich.table import Table

        from gimletc._io import read_data
        from gimletc.deploy.compare import compare, workload_mismatches

        pred, meas = read_data(predicted), read_data(measured)
        rows = compare(pred, meas, str(predicted), str(measured))
        warnings = workload_mismatches(pred, meas)
        if as_json:
            sys.stdout.write(json.dumps({"rows": [r.to_dict() for r in rows], "warnings": warnings},
                                        indent=2, sort_keys=True) + "\n")
            return
        out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        t = Table(title=f"{pred.get('name')}: predicted (cost model + load simulation) vs measured (benchmark)")
        for col in ("figure", "predicted", "band", "measured", "error", "measured within band?"):
            t.add_column(col, justify="left" if col in ("figure", "measured within band?") else "right")
        for r in rows:
            band = "-" if r.lo is None or r.hi is None else f"{r.lo:.4g} .. {r.hi:.4g}"
            t.add_row(r.figure, "-" if r.predicted is None else f"{r.predicted:.4g}", band,
                      "-" if r.measured is None else f"{r.measured:.4g}", "-" if r.error is None else f"{r.error:+.1%}",
                      {"within band": "yes", "below band": "no (below)", "above band": "no (above)"}.get(r.verdict, r.verdict))
        out.print(t)
        judged = [r for r in rows if r.verdict in ("within band", "below band", "above band")]
        inside = sum(r.verdict == "within band" for r in judged)
        out.print(f"{inside} of {len(judged)} measured figures lie within the prediction's band"
                  + (f"; {len(rows) - len(judged)} not compared (" + ", ".join(sorted({r.verdict for r in rows if r not in judged}))
                     + ")" if len(judged) < len(rows) else ""))
        for w in warnings:
            out.print(f"warning: {w}", style="yellow", markup=False, soft_wrap=True)
