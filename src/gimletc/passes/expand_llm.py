"""expand-llm: `agent.llm` -> `model.prefill` + `model.decode`, with the KV cache as a value.

The prompt is the call's fixed system tokens, then the operands' tokens in order (the prefill keeps the
name of a named system prompt as `system`, for `kv-reuse`). The
prefill's result is the KV cache after the prompt, sized from the model
(`Model.kv_cache_bytes`); the decode consumes it and defines the LLM's
original result value, so users of the LLM's output are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gimletc.ir import Graph, Level, Op, Type, Value
from gimletc.ir.names import decode_name, prefill_name
from gimletc.models import get_model
from gimletc.passes.manager import Pass, PassContext


def prompt_tokens(graph_values: dict[str, Value], op: Op) -> int:
    """Tokens an LLM call reads: its operands' tokens plus its system tokens."""
    return int(sum(graph_values[v].type.tokens for v in op.operands)) + int(op.attr("system_tokens", 0))


@dataclass(frozen=True)
class ExpandLLM(Pass):
    name: ClassVar[str] = "expand-llm"
    requires: ClassVar[tuple[Level, ...]] = ("agent", "model")
    produces: ClassVar[Level | None] = "model"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        values = _all_values(graph)

        def expand(op: Op) -> Op | list[Op]:
            if op.kind != "agent.llm":
                return op
            model = get_model(str(op.attr("model")))
            prompt = prompt_tokens(values, op)
            out = op.results[0]
            batch = {"batch": int(op.attr("batch"))} if op.attr("batch") is not None else {}
            system = {"system": str(op.attr("system"))} if op.attr("system") is not None else {}
            kv = Value(f"{op.name}.kv", Type("kv", model.kv_cache_bytes(prompt, int(op.attr("batch", 1)))))
            prefill = Op(
                "model.prefill",
                prefill_name(op.name),
                op.operands,
                (kv,),
                {"model": str(op.attr("model")), "tokens": prompt, "ctx": 0, "of": op.name, **batch, **system},
            )
            spec = {k: op.attr(k) for k in ("draft", "draft_k", "acceptance") if op.attr(k) is not None}
            decode = Op(
                "model.decode",
                decode_name(op.name),
                (kv.name,),
                (out,),
                {"model": str(op.attr("model")), "tokens": int(op.attr("output_tokens")), "ctx": prompt, "of": op.name,
                 **spec, **batch},
            )
            return [prefill, decode]

        return graph.map_ops(expand).with_attrs(**{"gimlet.level": "model"})


def _all_values(graph: Graph) -> dict[str, Value]:
    vals: dict[str, Value] = {}
    for op, _ in graph.walk():
        vals.update({v.name: v for v in op.results})
        for r in op.regions:
            vals.update({a.name: a for a in r.args})
    vals.update({a.name: a for a in graph.args})
    return vals
