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
    from gimletc.compiler import partition_scorer
    from gimletc.hardware import load_cluster
    from gimletc.ir import parse_graph, print_graph
    from gimletc.passes import PassContext

    graph = parse_graph(text)
    # Partitionings are scored as `compile` scores them: the pipeline's own passes after place.
    ctx = PassContext(cluster=load_cluster(cluster) if cluster is not None else None, pins=dict(pins),
                      score_placed=partition_scorer(pm.passes))
    return print_graph(pm.run(graph, ctx))


def _parse_pins(pins: list[str]) -> dict[str, str]:
    out = {}
    for p in pins:
        op, sep, dev = p.partition("=")
        if not sep or not op or not dev:
            raise GimletError(f"--pin takes OP=DEVICE (a device id, node, chip name or 'cpu'); got {p!r}")
        out[op] = dev
    return out


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GimletError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise GimletError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise GimletError(f"{path}: cannot read it ({e.strerror or e})") from None


def register(app: typer.Typer) -> None:
    """Add `opt` to the gimletc CLI."""

    @app.command("opt")
    def opt_cmd(
        ir: Annotated[str, typer.Argument(help="IR text (MLIR generic form, see gimletc.ir.text); - reads stdin")],
        pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="pass pipeline text; empty: verify and reprint")] = "",
        cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="cluster file or preset name (place, insert-transfers and the partitioners need one)")] = None,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="where to write the IR (default: stdout)")] = None,
        pin: Annotated[list[str], typer.Option(help="OP=DEVICE: keep an op or placement unit on a device, node, chip or 'cpu'")] = [],  # noqa: B006
    ) -> None:
        """Run a pass pipeline over IR text and print the resulting IR text."""
        from gimletc.passes import PassManager

        pins = _parse_pins(pin)
        pm = PassManager(pipeline)  # options fail here, before the input is read
        result = _run(pm, _read(ir), cluster, pins)
        if output is None:
            sys.stdout.write(result)
            return
        from gimletc._io import write_atomic

        write_atomic(output, result)
