"""A small agent on real ONNX models: answer a question with the tiny Llama, then post-process the answer.

The LLM call names the one-layer draft (`tiny-llama-draft.onnx`) for speculative
decoding; `post` is a tool whose callable lives in `tools.py` (`gimletc run --tools`).
Compile it with the prefill on an MI300X and the decode on an H200, so the KV
cache crosses vendors and needs a layout conversion (see examples/run_tiny.py).
"""

from __future__ import annotations

from pathlib import Path

from gimletc import AgentGraph

HERE = Path(__file__).resolve().parent

g = AgentGraph("tiny-chat")
question = g.input("question", tokens=24)
answer = g.llm("answer", model=str(HERE / "tiny-llama.onnx"), prompt=[question], system_tokens=8, output_tokens=16,
               draft=str(HERE / "tiny-llama-draft.onnx"), draft_k=4)
g.tool_spec("detokenize", latency_s=0.002, output_tokens=16)
post = g.tool("post", tool="detokenize", inputs=[answer])
g.output("reply", [post])

graph = g.build()
