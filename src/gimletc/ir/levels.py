"""IR levels: what a graph labelled `gimlet.level = L` may hold, checked by `verify()`.

The passes lower a graph through five levels, in this order:

- `agent`: only `agent.*` ops (what `AgentGraph.build()` gives).
- `model`: every LLM call expanded (no `agent.llm`), `model.*` ops allowed, no `exec.*`.
- `placed`: as `model`, and every op that runs carries the `device` it runs on
  (structural ops, `agent.loop`, `agent.branch` and `agent.yield`, run nowhere).
- `transfers`: as `placed`, plus `exec.send`/`exec.recv`/`exec.convert`, and no
  value is used on a device other than the one that holds it: a use across
  devices goes through a receive (or a conversion) on the user's device. A
  loop's body argument lives where the loop's operand for it lives, and the
  body yields the next iteration's value on that device too (the back edge);
  each arm of a branch yields a result on the device of the first arm's.
- `exec`: only `exec.*` ops and the structural agent ops; every compute runs on
  a device; no value is used across devices without a transfer.

A graph without the attribute is not checked here (`level_of` infers one for
the pass manager). An unknown level is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from gimletc.ir.core import LEVEL_CHECKS, Graph, IRError, Op, forwarded_values

__all__ = ["LEVELS", "Level", "level_of", "verify_level"]

Level = Literal["agent", "model", "placed", "transfers", "exec"]
LEVELS: tuple[Level, ...] = get_args(Level)  # in lowering order
LEVEL_ATTR = "gimlet.level"

STRUCTURAL = frozenset({"agent.loop", "agent.branch", "agent.yield"})  # ops that run on no device
TRANSFER_KINDS = frozenset({"exec.send", "exec.recv", "exec.convert"})


def level_of(graph: Graph) -> Level:
    """The graph's `gimlet.level`, or, for a graph without one, the level its ops show.

    Inference: any `exec.compute` -> exec; any transfer -> transfers; any placed
    op -> placed; any `model.*` op -> model; else agent."""
    level = graph.attrs.get(LEVEL_ATTR)
    if level is not None:
        if level not in LEVELS:
            raise IRError(f"unknown IR level {level!r} ({LEVEL_ATTR}); known: {', '.join(LEVELS)}")
        return level  # type: ignore[return-value]
    kinds = graph.kinds()
    if "exec.compute" in kinds:
        return "exec"
    if kinds & TRANSFER_KINDS:
        return "transfers"
    if any(op.attr("device") is not None for op, _ in graph.walk()):
        return "placed"
    if any(k.startswith("model.") for k in kinds):
        return "model"
    return "agent"


def verify_level(graph: Graph, level: Level | None = None) -> Graph:
    """Check the invariants of `level` (default: the graph's own label) on a graph that verifies otherwise.

    Raises IRError naming the level, the op and, for a use across devices, the
    value and both devices. Returns the graph."""
    level = level if level is not None else graph.attrs.get(LEVEL_ATTR)
    if level is None:
        return graph
    if level not in LEVELS:
        raise IRError(f"unknown IR level {level!r} ({LEVEL_ATTR}); known: {', '.join(LEVELS)}")
    allowed = _ALLOWED[level]
    for op, _ in graph.walk():
        if not allowed(op):
            raise IRError(f"{level}-level IR holds op @{op.name} ({op.kind}){_WHY[level]}")
        if level in ("placed", "transfers") and op.dialect != "exec" and op.kind not in STRUCTURAL \
                and op.attr("device") is None:
            raise IRError(f"{level}-level IR: op @{op.name} ({op.kind}) is not placed (it has no device)")
    if level in ("transfers", "exec"):
        _check_no_cross_device_use(graph, level)
    return graph


_ALLOWED: dict[str, Callable[[Op], bool]] = {
    "agent": lambda op: op.dialect == "agent",
    "model": lambda op: op.dialect in ("agent", "model") and op.kind != "agent.llm",
    "placed": lambda op: op.dialect in ("agent", "model") and op.kind != "agent.llm",
    "transfers": lambda op: (op.dialect in ("agent", "model") and op.kind != "agent.llm") or op.kind in TRANSFER_KINDS,
    "exec": lambda op: op.dialect == "exec" or op.kind in STRUCTURAL,
}
_WHY = {
    "agent": ": only agent.* ops belong to the agent level",
    "model": ": an LLM call is expanded (expand-llm) and exec ops come later (schedule)",
    "placed": ": an LLM call is expanded (expand-llm) and exec ops come later (schedule)",
    "transfers": ": an LLM call is expanded (expand-llm) and computes are lowered later (schedule)",
    "exec": ": every agent and model op is lowered to exec.compute (schedule)",
}


def _device(op: Op) -> str | None:
    """The device whose memory holds what `op` defines (a receive's destination; a send defines only a token)."""
    if op.kind == "exec.recv":
        return str(op.attr("dst"))
    if op.kind == "exec.send":
        return None
    dev = op.attr("device")
    return str(dev) if dev is not None else None


def _check_no_cross_device_use(graph: Graph, level: str) -> None:
    """Every data value (not an !async.token) is used on the device that holds it."""
    home: dict[str, str] = {}
    types: dict[str, str] = {}
    for op, _ in graph.walk():
        dev = _device(op)
        for v in op.results:
            types[v.name] = v.type.kind
            if dev is not None:
                home[v.name] = dev
        for r in op.regions:
            types.update({a.name: a.type.kind for a in r.args})
    # Loop and branch results and loop body arguments live where what they forward lives; repeat until
    # nothing changes, so that values forwarded through nested regions resolve too.
    pairs = forwarded_values(graph)
    changed = True
    while changed:
        changed = False
        for v, src in pairs:
            if src in home and home.get(v) != home[src]:
                home[v] = home[src]
                changed = True
    for op, _ in graph.walk():
        if op.kind in ("agent.loop", "agent.branch"):
            _check_region_edges(op, home, types, level)
        if op.kind in STRUCTURAL or op.kind == "exec.recv":
            continue
        at = str(op.attr("src")) if op.kind == "exec.send" else _device(op)
        if at is None:
            continue
        for v in op.operands:
            if types.get(v) == "token" or v not in home:
                continue
            if home[v] != at:
                raise IRError(
                    f"{level}-level IR: op @{op.name} ({op.kind}) on {at} uses %{v}, which lives on {home[v]}, "
                    "without a transfer (run insert-transfers after place)"
                )


LEVEL_CHECKS.update({level: verify_level for level in LEVELS})


def _check_region_edges(op: Op, home: dict[str, str], types: dict[str, str], level: str) -> None:
    """What a region yields lives where the value it becomes lives: a loop body yields each carried value on
    the device of the loop's operand for it (the back edge into the next iteration), and every arm of a
    branch yields each result on the device where the first arm's yield puts it."""
    if op.kind == "agent.loop":
        body = op.regions[0]
        for arg, init, y in zip(body.args, op.operands, body.ops[-1].operands, strict=False):
            if types.get(y) == "token" or y not in home or init not in home or home[y] == home[init]:
                continue
            raise IRError(
                f"{level}-level IR: loop @{op.name} yields %{y} on {home[y]} as body argument %{arg.name}, which "
                f"lives on {home[init]}, without a transfer (the back edge; run insert-transfers after place)"
            )
        return
    for region in op.regions[1:]:
        for res, y in zip(op.results, region.ops[-1].operands, strict=False):
            if types.get(y) == "token" or y not in home or res.name not in home or home[y] == home[res.name]:
                continue
            raise IRError(
                f"{level}-level IR: branch @{op.name} yields %{y} on {home[y]} as result %{res.name}, which lives "
                f"on {home[res.name]}, without a transfer (run insert-transfers after place)"
            )
