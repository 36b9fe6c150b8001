"""A coding agent: plan with a large model, then edit and test until the tests pass.

The request (a task plus the files it names, ~2,000 tokens) retrieves repository
context (8 chunks of 512 tokens from an index of 200,000 chunks, a mid-sized
monorepo chunked for embedding search); gpt-oss-120b writes a plan, drafted by
llama-3.2-1b for speculative decoding; then a loop of edit (gpt-oss-120b writes a
~400-token patch) -> run the test suite on CPU (~20 s, the log tail ~300 tokens)
repeats until the tests pass: 3 rounds on average, at most 8; gpt-oss-20b
summarises what changed.

The prompts are ordered as a coding agent orders them: what stays the same first,
what changes last. Both gpt-oss-120b calls open with the same 1,500-token system
prompt (named "coder"), then the task and the repository context; only the tail
differs (nothing for the plan; the plan, then each round's test log, for an edit).
A serving engine keeps that ~7,600-token prefix's KV cache, so every edit prefills
only its last few hundred tokens; `kv-reuse` (in the default pipeline) finds the
shared prefix, keeps the edits where the prefix's KV is, and prices only the new
tokens (the plan's `kv_reuse` and `gimletc show` say what it saves).

The speculative configuration is the published d-Matrix scenario in
docs/sources/hardware_sources.md: a gpt-oss-120b target with a ~1.6B-class draft,
4 drafted tokens per step, acceptance 0.7 (Leviathan et al., 2023, report
acceptance rates of roughly 0.5-0.9 for small drafts). llama-3.2-1b (~1.2B
parameters) stands in for the draft's size: the catalog has no small model
sharing gpt-oss's tokenizer, which a real draft needs. Token counts are typical
sizes, not measurements; change them to fit your workload.
"""

from __future__ import annotations

from gimletc import AgentGraph

g = AgentGraph("coding-agent")
request = g.input("request", tokens=2000)
context = g.retrieve("repo_context", query=request, index_docs=200_000, k=8, doc_tokens=512)
plan = g.llm(
    "plan",
    model="gpt-oss-120b",
    prompt=[request, context],
    system_tokens=1500,
    system="coder",
    output_tokens=800,
    draft="llama-3.2-1b",
    draft_k=4,
    acceptance=0.7,
)
g.tool_spec("pytest", cpu_s=20.0, output_tokens=300)
with g.loop("fix", expected=3, max=8, carry=[plan]) as fix:
    # fix.args[0] is the plan on the first round and the last test log after that: it changes every
    # round, so it comes last, after the system prompt, the task and the context the plan's call sent.
    patch = g.llm("edit", model="gpt-oss-120b", prompt=[request, context, fix.args[0]], system_tokens=1500,
                  system="coder", output_tokens=400)
    tests = g.tool("run_tests", tool="pytest", inputs=[patch])
    fix.yield_(tests)
summary = g.llm("summary", model="gpt-oss-20b", prompt=[request, plan, fix.results[0]], output_tokens=250)
g.output("answer", [summary])

graph = g.build()

if __name__ == "__main__":
    from gimletc.agent import summary

    print(summary(graph))
