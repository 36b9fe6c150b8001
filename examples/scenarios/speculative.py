"""Scenario: an interactive coding-agent request on gpt-oss-120b with a ~1.6B-class draft model.

The published case (d-Matrix, shared/hardware_sources.md): the draft on a d-Matrix Corsair card,
verification on a GPU, 2-5x end-to-end for interactive use versus the same setup on GPUs alone at
the same power. The request: a task with repository context (2,000 + 4,096 tokens) answered with an
800-token patch at batch 1 (interactive). The draft is llama-3.2-1b stored as MXINT8 (1.27 GB, so it
fits Corsair's 2 GB SRAM); llama-3.2-1b stands in for the draft's size only (a real draft must share
gpt-oss's tokenizer). Acceptance 0.7 is the documented default (docs/serving.md).
"""

from __future__ import annotations

from gimletc import AgentGraph
from gimletc.ir import Graph


def make_graph(acceptance: float = 0.7) -> Graph:
    g = AgentGraph("speculative-coding")
    request = g.input("request", tokens=2000)
    context = g.retrieve("repo_context", query=request, index_docs=200_000, k=8, doc_tokens=512)
    patch = g.llm("patch", model="gpt-oss-120b", prompt=[request, context], output_tokens=800,
                  draft="llama-3.2-1b@mxint8", acceptance=acceptance)
    g.output("answer", [patch])
    return g.build()


graph = make_graph()
