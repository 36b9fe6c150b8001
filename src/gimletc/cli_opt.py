"""`gimletc opt`: IR text in, a pass pipeline over it, IR text out (as `mlir-opt` and `xdsl-opt` do).

The input is the IR's MLIR generic text form (`gimletc.ir.text`; what
`gimletc compile --dump-ir-after` and `gimletc graph --format mlir` print), at
any level: the pipeline's order is checked against the input's
`gimlet.level` before any pass runs. Passes that place ops or move data
(`place`, `insert-transfers`, the partitioners) need `--cluster`.

Registered on the main CLI by `register(app)`; errors follow the CLI's rules
(one line on stderr, exit 2, nothing half-written).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gimletc.errors import GimletError

if TYPE_CHECKING:
    from gimletc.passes import PassManager

__all__ = ["register", "run_opt"]


def run_opt(text: str, pipeline: str, cluster: str | None = None, pins: dict[str, str] | None = None) -> str:
    """The printed IR after running `pipeline` over the IR `text` (for `cluster`, a file or preset name, if any;
    `pins`: op or placement unit -> device, node, chip name or 'cpu', as `compile --pin` takes).

    Raises a GimletError (IRError, PipelineError, PassFailure, ...) naming what is wrong."""
    from gimletc.passes import PassManager

    return _run(PassManager(pipeline), text, cluster, pins or {})


def _run(pm: PassManager, text: str, cluster: str | None, pins: dict[str, str]) -> str:
    from gimletc.compiler import check_pins_used, partition_scorer
    from gimletc.hardware import load_cluster
    from gimletc.ir import parse_graph, print_graph
    from gimletc.passes import PassContext

    graph = parse_graph(text)
    # Partitionings are scored as `compile` scores them: the pipeline's own passes after place.
    ctx = PassContext(cluster=load_cluster(cluster) if cluster is not None else None, pins=dict(pins),
                      score_placed=partition_scorer(pm.passes))
    out = pm.run(graph, ctx)
    if pins and not any(p.name in ("place", "kv-reuse") for p in pm.passes):  # kv-reuse moves no pinned call
        raise GimletError(f"--pin {next(iter(pins))}: pipeline {str(pm)!r} has no place pass to pin ops for")
    check_pins_used(graph, out, pins)
    return print_graph(out)


def _parse_pins(pins: list[str]) -> dict[str, str]:
    out = {}
    for p in pins:
        op, sep, dev = p.partition("=")
        if not sep or not op or not dev:
            raise GimletError(f"--pin takes OP=DEVICE (a device id, node, chip name or 'cpu'); got {p!r}")
        if op in out:
            raise GimletError(f"--pin {op}: given twice ({out[op]}, then {dev}); pin each op to one place")
        out[op] = dev
    return out


def _read(path: str) -> str:
    """The IR text in `path` (`-`: standard input); a missing, unreadable, non-regular, oversized or
    non-UTF-8 file is a one-line ConfigError naming it."""
    if path == "-":
        return sys.stdin.read()
    from gimletc._io import read_text

    return read_text(path, "file of IR text")


def register(app: typer.Typer) -> None:
    """Add `opt` to the gimletc CLI."""

    @app.command("opt")
    def opt_cmd(
        ir: Annotated[str, typer.Argument(help="IR text (MLIR generic form, see gimletc.ir.text); - reads stdin")],
        pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="pass pipeline text; empty: verify and reprint")] = "",
        cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="cluster file or preset name (place, insert-transfers and the partitioners need one)")] = None,
        output: Annotated[str | None, typer.Option("--output", "-o", help="where to write the IR (default, or -: stdout)")] = None,
        pin: Annotated[list[str], typer.Option(help="OP=DEVICE: keep an op or placement unit on a device, node, chip or 'cpu'")] = [],  # noqa: B006
    ) -> None:
        """Run a pass pipeline over IR text and print the resulting IR text."""
        from gimletc.passes import PassManager

        from gimletc._io import check_outputs, write_outputs

        if output is not None:
            check_outputs([output], allow_stdout=True)  # before any work
        pins = _parse_pins(pin)
        pm = PassManager(pipeline)  # options fail here, before the input is read
        result = _run(pm, _read(ir), cluster, pins)
        if output is None:
            sys.stdout.write(result)
            return
        write_outputs([(output, result)], allow_stdout=True)
