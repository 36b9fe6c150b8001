"""Scenario: cross-vendor disaggregation: prefill on AMD MI300X, decode on NVIDIA H200.

The KV cache changes vendor on the way: MI300X keeps it head-major (paged-hnd, vLLM on ROCm),
H200 token-major (paged-nhd), so the plan converts it on the H200 after the transfer. Workload: a
long-document question (16,000-token prompt) on llama-3.1-70b, 500-token answer, batch 1.
"""

from __future__ import annotations

from gimletc import AgentGraph

g = AgentGraph("cross-vendor")
doc = g.input("document", tokens=16000)
answer = g.llm("answer", model="llama-3.1-70b", prompt=[doc], output_tokens=500)
g.output("out", [answer])
graph = g.build()
