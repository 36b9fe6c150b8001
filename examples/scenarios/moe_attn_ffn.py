"""Scenario: attention/FFN disaggregation of an MoE model's decode (qwen3-235b-a22b).

MegaScale-Infer (ByteDance, 2025; docs/sources/hardware_sources.md) reports up to 1.9x per-GPU decode
throughput by running attention (KV-cache bound) and the experts (weight bound) on separate GPU
groups with ping-pong micro-batches. Workload: a decode-heavy batch of 512 sequences, 2,000-token
prompts, 200 generated tokens each. Compiled for throughput.
"""

from __future__ import annotations

from gimletc import AgentGraph

g = AgentGraph("moe-decode")
prompt = g.input("prompt", tokens=2000)
out = g.llm("gen", model="qwen3-235b-a22b", prompt=[prompt], output_tokens=200, batch=512)
g.output("out", [out])
graph = g.build()
