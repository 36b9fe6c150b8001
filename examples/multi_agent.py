"""A planner, three parallel workers with tools, and a reviewer.

qwen3-32b splits a 1,000-token task into three sub-tasks (a 600-token plan);
three llama-3.1-8b workers each run one web search (a tool: ~0.8 s of wall
time, ~600 tokens of results, a typical search API round trip) and write a
500-token report; qwen3-32b reviews the three reports and writes the 700-token
answer. The workers share no data, so a placement may run them side by side.
Token counts and latencies are typical sizes, not measurements.
"""

from __future__ import annotations

from gimletc import AgentGraph

WORKERS = 3

g = AgentGraph("multi-agent")
g.tool_spec("web_search", latency_s=0.8, output_tokens=600)
task = g.input("task", tokens=1000)
plan = g.llm("planner", model="qwen3-32b", prompt=[task], system_tokens=800, output_tokens=600)
reports = []
for i in range(WORKERS):
    found = g.tool(f"search_{i}", tool="web_search", inputs=[plan])
    report = g.llm(f"worker_{i}", model="llama-3.1-8b", prompt=[plan, found], system_tokens=300, output_tokens=500)
    reports.append(report)
review = g.llm("reviewer", model="qwen3-32b", prompt=[task, *reports], system_tokens=500, output_tokens=700)
g.output("answer", [review])

graph = g.build()

if __name__ == "__main__":
    from gimletc.agent import summary

    print(summary(graph))
