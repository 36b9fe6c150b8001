"""Names of the ops an LLM call becomes, built and parsed in one place.

`expand-llm` turns an `agent.llm` op X into `X.prefill` (prompt -> KV cache)
and `X.decode` (KV cache -> X's result); a partitioning that loops the decode
(a layer pipeline, attention/FFN, speculative rounds) keeps the name `X.decode`
for the loop. Pins, the plan's per-call metrics, the runtime and the targets
find a call's phases by these names.
"""

from __future__ import annotations

PREFILL_SUFFIX = ".prefill"
DECODE_SUFFIX = ".decode"


def prefill_name(call: str) -> str:
    """The prefill op of LLM call `call`."""
    return f"{call}{PREFILL_SUFFIX}"


def decode_name(call: str) -> str:
    """The decode op (or decode loop) of LLM call `call`."""
    return f"{call}{DECODE_SUFFIX}"


def call_of_decode(op: str) -> str | None:
    """The LLM call whose decode op is named `op`, or None if `op` is not named as a decode."""
    return op.removesuffix(DECODE_SUFFIX) if op.endswith(DECODE_SUFFIX) else None
