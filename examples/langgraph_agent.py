"""examples/coding_agent.py written as a LangGraph agent, imported into gimletc.

The LangGraph graph is a real one: its nodes are functions of a shared state
that it could run (here they return canned text instead of calling models and
running pytest), with a conditional edge after the tests that loops back to the
editor until they pass. gimletc reads its structure and an `Annotations`
object that says what LangGraph does not: which model each LLM node calls and
its token sizes, the test run's CPU time, the retrieval's index, and how often
the fix loop runs. The sizes are coding_agent.py's (see that file for where
they come from), so this file and that one give the same agent graph, IR text
included (tests/test_langgraph.py checks it).

    gimletc graph examples/langgraph_agent.py
    gimletc compile examples/langgraph_agent.py --cluster examples/clusters/mixed_rack.yaml -o plan.json

Needs the langgraph package: pip install 'gimletc[langgraph]'.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from langgraph.graph import END, START, StateGraph

from gimletc.importers.langgraph import Annotations, from_langgraph


class State(TypedDict, total=False):
    request: str
    context: list[str]
    plan: str
    patch: str
    test_log: str
    tests_pass: bool
    summary: str


def repo_context(state: State) -> State:
    return {"context": [f"chunk {i} of the repository" for i in range(8)]}


def plan(state: State) -> State:
    return {"plan": f"plan for: {state['request']}"}


def edit(state: State) -> State:
    return {"patch": f"patch following {state.get('test_log') or state['plan']}"}


def run_tests(state: State) -> State:
    return {"test_log": "1 passed", "tests_pass": True}


def summary(state: State) -> State:
    return {"summary": f"{state['patch']}: {state['test_log']}"}


def tests_done(state: State) -> Literal["edit", "summary"]:
    """Back to the editor until the tests pass."""
    return "summary" if state.get("tests_pass") else "edit"


builder = StateGraph(State)
builder.add_node("repo_context", repo_context)
builder.add_node("plan", plan)
builder.add_node("edit", edit)
builder.add_node("run_tests", run_tests)
builder.add_node("summary", summary)
builder.add_edge(START, "repo_context")
builder.add_edge("repo_context", "plan")
builder.add_edge("plan", "edit")
builder.add_edge("edit", "run_tests")
builder.add_conditional_edges("run_tests", tests_done)
builder.add_edge("summary", END)
app = builder.compile(name="coding-agent")

annotations = (
    Annotations()
    .input("request", tokens=2000)
    .output("answer")
    .retrieve("repo_context", index_docs=200_000, k=8, doc_tokens=512)
    .llm("plan", model="gpt-oss-120b", system_tokens=1500, system="coder", output_tokens=800,
         draft="llama-3.2-1b", draft_k=4, acceptance=0.7, reads=["request", "repo_context"])
    # "plan" here is what flows in along edit's incoming edges: the plan on the first round, the test log after.
    # It changes every round, so it comes last (examples/coding_agent.py says why).
    .llm("edit", model="gpt-oss-120b", system_tokens=1500, system="coder", output_tokens=400,
         reads=["request", "repo_context", "plan"])
    .tool("run_tests", tool="pytest", cpu_s=20.0, output_tokens=300)
    .llm("summary", model="gpt-oss-20b", output_tokens=250, reads=["request", "plan", "run_tests"])
    .loop("edit", expected=3, max=8, name="fix")
)

graph = from_langgraph(app, annotations)

if __name__ == "__main__":
    from gimletc.agent import summary as describe

    print(describe(graph.build()))
    print(app.invoke({"request": "fix the failing test"})["summary"])
