"""The plan's dataflow as an MLIR module, built through IREE's MLIR Python bindings.

Every exec-level op (compute calls, send, recv, convert, await, and the agent
loops and branches around them) becomes an operation in generic form with its
`!gimlet.*` value types and `!async.token` ordering; each compute that runs a
partition also carries `executables`, a dictionary of the artifacts that
implement it (path and sha256 per kind and backend). The module is built
op by op with `iree.compiler.ir` (not by parsing gimletc's own text), verified
by MLIR, printed, parsed back by the real MLIR parser and printed again: the
two texts must be identical.

The module uses unregistered dialects (`exec`, `agent`, `gimlet`): it is a
description of the program for tools and humans, not input for
`iree-compile`, which rejects (and in 3.13 crashes on) unregistered ops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gimletc.errors import GimletError
from gimletc.ir import Graph
from gimletc.ir.text import _type  # the IR's own spelling of each value type

__all__ = ["DataflowError", "dataflow_module", "roundtrip"]

_I64 = (-(2**63), 2**63 - 1)


class DataflowError(GimletError):
    """MLIR rejected the dataflow module, or it did not read back identically."""


def _attr(ir: Any, v: Any) -> Any:
    if isinstance(v, bool):
        return ir.BoolAttr.get(v)
    if isinstance(v, int):
        width = 64 if _I64[0] <= v <= _I64[1] else 128
        return ir.IntegerAttr.get(ir.IntegerType.get_signless(width), v)
    if isinstance(v, float):
        return ir.FloatAttr.get_f64(v)
    if isinstance(v, str):
        return ir.StringAttr.get(v)
    if isinstance(v, tuple | list):
        return ir.ArrayAttr.get([_attr(ir, x) for x in v])
    if isinstance(v, Mapping):
        return ir.DictAttr.get({str(k): _attr(ir, x) for k, x in sorted(v.items())})
    raise DataflowError(f"attribute value {v!r} has no MLIR form")


def _executables(artifacts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, str]]]:
    """op name -> {kind or backend -> {path, sha256}}."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for a in artifacts:
        op = a.get("op")
        if not op or a.get("kind") not in ("onnx", "iree"):
            continue
        key = str(a["backend"]) if a["kind"] == "iree" else ("onnx.draft" if a.get("role") == "draft" else "onnx")
        out.setdefault(str(op), {})[key] = {"path": str(a["path"]), "sha256": str(a["sha256"])}
    return out


def dataflow_module(graph: Graph, artifacts: Iterable[Mapping[str, Any]] = (), attrs: Mapping[str, Any] | None = None) -> str:
    """The exec-level `graph` as a verified MLIR module in generic form (text), round-tripped by MLIR.

    `artifacts` (a plan's artifact dicts) adds an `executables` attribute to each compute they implement;
    `attrs` adds module attributes (names should carry a dialect prefix, e.g. `gimlet.plan`)."""
    try:
        from iree.compiler import ir
    except ImportError:
        raise DataflowError("building the dataflow module needs IREE's compiler (pip install 'gimletc[iree]')") from None
    exe = _executables(artifacts)
    ctx = ir.Context()
    ctx.allow_unregistered_dialects = True
    with ctx, ir.Location.unknown():
        module = ir.Module.create()
        mod_attrs = {**dict(graph.attrs), **dict(attrs or {})}
        for k, v in sorted(mod_attrs.items()):
            module.operation.attributes[k] = _attr(ir, v)
        _emit(ir, graph, module.body, {}, exe)
        if not module.operation.verify():
            raise DataflowError("MLIR's verifier rejected the dataflow module")
        text = module.operation.get_asm(print_generic_op_form=True)
    return roundtrip(text)


def _emit(ir: Any, graph: Graph, block: Any, values: dict[str, Any], exe: Mapping[str, Mapping[str, Any]]) -> None:
    types: dict[str, Any] = {}

    def mlir_type(t: Any) -> Any:
        s = _type(t, "")
        if s not in types:
            types[s] = ir.Type.parse(s)
        return types[s]

    with ir.InsertionPoint(block):
        for op in graph.ops:
            operands = []
            for v in op.operands:
                if v not in values:
                    raise DataflowError(f"op @{op.name} ({op.kind}) uses %{v}, which nothing before it defines")
                operands.append(values[v])
            attributes = {"sym_name": ir.StringAttr.get(op.name)}
            attributes.update({k: _attr(ir, v) for k, v in op.attrs.items()})
            if op.kind == "exec.compute" and op.name in exe:
                attributes["executables"] = _attr(ir, exe[op.name])
            mop = ir.Operation.create(
                op.kind, results=[mlir_type(r.type) for r in op.results], operands=operands,
                attributes=attributes, regions=len(op.regions),
            )
            for region, g in zip(mop.regions, op.regions, strict=True):
                inner = region.blocks.append(*[mlir_type(a.type) for a in g.args])
                scope = dict(values)
                scope.update({a.name: inner.arguments[i] for i, a in enumerate(g.args)})
                _emit(ir, g, inner, scope, exe)
            for r, res in zip(op.results, mop.results, strict=True):
                values[r.name] = res


def roundtrip(text: str) -> str:
    """Parse `text` with MLIR (unregistered dialects allowed), print it in generic form, and check it is unchanged."""
    from iree.compiler import ir

    ctx = ir.Context()
    ctx.allow_unregistered_dialects = True
    try:
        module = ir.Module.parse(text, ctx)
    except Exception as e:  # noqa: BLE001 - MLIR raises its own diagnostics error type
        raise DataflowError(f"MLIR cannot parse the dataflow module: {' '.join(str(e).split())[:300]}") from None
    if not module.operation.verify():
        raise DataflowError("MLIR's verifier rejected the parsed dataflow module")
    again = module.operation.get_asm(print_generic_op_form=True)
    if again != text:
        raise DataflowError("the dataflow module does not print back identically after MLIR parses it")
    return text
