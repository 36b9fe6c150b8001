"""Retrieval-augmented generation: retrieve, rerank, answer.

A 200-token question retrieves the 20 nearest of 1,000,000 passages (400
tokens each, a chunking common for dense retrieval over a document store);
a cross-encoder reranker (a tool: ~150 ms of wall time to score 20 pairs,
an estimate for a small cross-encoder) keeps the best 5 (2,000 tokens);
llama-3.1-8b answers in ~300 tokens behind a 500-token system prompt. Token
counts and latencies are typical sizes, not measurements. The same graph is
written as data in examples/graphs/rag.yaml.
"""

from __future__ import annotations

from gimletc import AgentGraph

g = AgentGraph("rag")
g.tool_spec("cross_encoder", latency_s=0.15, output_tokens=2000)
question = g.input("question", tokens=200)
passages = g.retrieve("passages", query=question, index_docs=1_000_000, k=20, doc_tokens=400, embed_dim=768)
best = g.tool("rerank", tool="cross_encoder", inputs=[question, passages])
answer = g.llm("answer", model="llama-3.1-8b", prompt=[question, best], system_tokens=500, output_tokens=300)
g.output("response", [answer])

graph = g.build()

if __name__ == "__main__":
    from gimletc.agent import summary

    print(summary(graph))
