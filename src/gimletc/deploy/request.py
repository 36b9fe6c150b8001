"""The request shape a plan serves, as the benchmark replays it: each LLM call's model and token
counts, each tool, retrieval and code op's time, the agent's loops and branches, and what waits for
what.

The shape is a JSON object (`request_shape`), read by the standalone benchmark script
(`gimletc/deploy/bench_client.py`, which imports nothing from gimletc):

    {"name": ..., "nodes": [NODE, ...]}
    NODE = {"id", "kind": "llm", "model", "input_tokens", "output_tokens", "batch", "after": [ids]}
         | {"id", "kind": "cpu", "op_kind": "tool|code|retrieve", "seconds", "after"}
         | {"id", "kind": "loop", "expected", "max", "p", "body": [NODE, ...], "after"}
         | {"id", "kind": "branch", "probabilities", "arms": [[NODE, ...], ...], "after"}

A loop runs min(max, G) times with G geometric with success probability `p`, the distribution the
load simulator samples (`gimletc.sim.template.loop_probability`: its mean is the loop's expected
count), so the benchmark's requests have the simulated requests' shapes. `after` names nodes of the
same level only: a loop's or branch's body waits for the whole node, and each iteration for the one
before, as in the simulator. Token counts are the plan's: a call's prompt is its prefill's tokens, its
output the decode's (or the decode loop's) tokens; `batch` sequences are sent as that many requests
at once. Times of CPU ops are the plan's (the graph's given time for tools and code, the cost model's
for retrieval).
"""

from __future__ import annotations

from typing import Any

from gimletc.ir import Graph, Op
from gimletc.ir.core import _uses_including_regions
from gimletc.ir.names import call_of_decode, decode_name
from gimletc.sim.template import loop_probability

__all__ = ["FORMAT", "request_shape"]

FORMAT = "gimletc-request/1"
_CPU = ("agent.tool", "agent.code", "agent.retrieve")


def _call_of(op: Op) -> str | None:
    """The LLM call an exec op belongs to (None for ops of no call)."""
    if op.kind == "exec.compute" and str(op.attr("kind_of", "")).startswith("model."):
        return str(op.attr("llm") or call_of_decode(op.name) or op.name.split(".")[0])
    return None


def _tokens(t: Any) -> int:
    return int(round(float(getattr(t, "size", 0) or 0)))


def request_shape(plan: Any, graph: Graph) -> dict[str, Any]:
    """The benchmark's request shape of a compiled plan (see the module docstring)."""
    calls: dict[str, dict[str, Any]] = {}
    for op, _ in graph.walk():
        c = _call_of(op)
        if c is not None:
            info = calls.setdefault(c, {"model": "", "input_tokens": 0, "output_tokens": 0, "batch": 1})
            ko = str(op.attr("kind_of"))
            unit = str(op.attr("unit") or "")
            if ko == "model.prefill" and not unit.endswith(".draft"):
                info["model"] = info["model"] or str(op.attr("model") or "")
                info["input_tokens"] = max(info["input_tokens"], int(op.attr("tokens", 0) or 0))
                info["batch"] = max(info["batch"], int(op.attr("batch", 1) or 1))
            if op.name == decode_name(c) and ko == "model.decode":
                info["output_tokens"] = int(op.attr("tokens", 0) or 0)
        elif op.kind == "agent.loop" and call_of_decode(op.name) and op.results:
            c2 = call_of_decode(op.name)
            info = calls.setdefault(c2, {"model": "", "input_tokens": 0, "output_tokens": 0, "batch": 1})  # type: ignore[arg-type]
            info["output_tokens"] = _tokens(op.results[0].type)
    producer: dict[str, Op] = {}
    for op, _ in graph.walk():
        for v in op.results:
            # A send's token carries its data to the receive; other tokens are the schedule's ordering.
            if v.type.kind != "token" or op.kind == "exec.send":
                producer[v.name] = op
    return {"format": FORMAT, "name": plan.name, "nodes": _level(graph.ops, calls, producer)}


def _is_decode_loop(op: Op) -> bool:
    c = call_of_decode(op.name)
    return op.kind == "agent.loop" and c is not None and any(_call_of(o) == c for o, _ in _walk_region(op))


def _walk_region(op: Op) -> list[tuple[Op, int]]:
    out: list[tuple[Op, int]] = []
    for r in op.regions:
        for o in r.ops:
            out.append((o, 0))
            if o.regions:
                out.extend(_walk_region(o))
    return out


def _level(ops: list[Op], calls: dict[str, dict[str, Any]], producer: dict[str, Op]) -> list[dict[str, Any]]:
    """The nodes of one level of the graph (the top level, or a loop body, or a branch arm)."""
    owner: dict[str, str] = {}  # op name -> node id at this level
    nodes: list[dict[str, Any]] = []
    index: dict[str, dict[str, Any]] = {}
    for op in ops:
        c = _call_of(op)
        if c is not None and calls.get(c, {}).get("model"):
            if c not in index:
                info = calls[c]
                index[c] = {"id": c, "kind": "llm", "model": info["model"], "input_tokens": info["input_tokens"],
                            "output_tokens": info["output_tokens"], "batch": info["batch"], "after": []}
                nodes.append(index[c])
            owner[op.name] = c
        elif op.kind == "agent.loop" and _is_decode_loop(op):
            c = call_of_decode(op.name)
            owner[op.name] = c  # type: ignore[assignment]
            for o, _ in _walk_region(op):
                owner[o.name] = c  # type: ignore[assignment]
        elif op.kind == "exec.compute" and str(op.attr("kind_of", "")) in _CPU:
            nid = str(op.attr("of", op.name))
            index[nid] = {"id": nid, "kind": "cpu", "op_kind": str(op.attr("kind_of")).split(".", 1)[1],
                          "seconds": float(op.attr("seconds", 0.0)), "after": []}
            nodes.append(index[nid])
            owner[op.name] = nid
        elif op.kind == "agent.loop":
            expected, most = float(op.attr("expected", 1.0)), int(op.attr("max", 1))
            index[op.name] = {"id": op.name, "kind": "loop", "expected": expected, "max": most,
                              "p": loop_probability(expected, most),
                              "body": _level(op.regions[0].ops, calls, producer), "after": []}
            nodes.append(index[op.name])
            owner[op.name] = op.name
            for o, _ in _walk_region(op):
                owner[o.name] = op.name
        elif op.kind == "agent.branch":
            probs = [float(p) for p in op.attr("probabilities", ())]
            index[op.name] = {"id": op.name, "kind": "branch", "probabilities": probs,
                              "arms": [_level(r.ops, calls, producer) for r in op.regions], "after": []}
            nodes.append(index[op.name])
            owner[op.name] = op.name
            for o, _ in _walk_region(op):
                owner[o.name] = op.name
    # Dependencies: the node owning each data value an op uses, seen through ops of no node (sends,
    # receives, conversions, inputs), at this level; the schedule's ordering tokens are not followed.
    memo: dict[str, set[str]] = {}

    def sources(value: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if value in memo:
            return memo[value]
        op = producer.get(value)
        out: set[str] = set()
        if op is not None and op.name not in seen:
            if op.name in owner:
                out = {owner[op.name]}
            else:
                for v in _uses_including_regions(op):
                    out |= sources(v, seen | {op.name})
        memo[value] = out
        return out

    for op in ops:
        me = owner.get(op.name)
        if me is None:
            continue
        for v in _uses_including_regions(op):
            for src in sources(v):
                if src != me and src not in index[me]["after"]:
                    index[me]["after"].append(src)
    for n in nodes:
        n["after"] = sorted(n["after"])
    return nodes
