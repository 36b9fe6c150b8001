"""Scenario: Splitwise-style phase splitting of llama-3.1-70b (prefill on H100, decode on A100).

Splitwise (Patel et al., ISCA 2024; docs/sources/hardware_sources.md) reports 1.4x throughput at 20% lower
cost, or 2.35x throughput at the same power and cost, splitting prefill (H100) from decode (A100).
Workload: a batch of 16 conversational requests per engine, 1,500-token prompts, 250-token answers.
Compiled for throughput.
"""

from __future__ import annotations

from gimletc import AgentGraph

g = AgentGraph("splitwise")
prompt = g.input("prompt", tokens=1500)
reply = g.llm("chat", model="llama-3.1-70b", prompt=[prompt], output_tokens=250, batch=16)
g.output("reply", [reply])
graph = g.build()
