"""LangGraph in: real LangGraph StateGraphs, imported, against the same agents built by hand.

Each structure (sequence, fan-out and join, branch, branch to END, while-loop
with work in the continuing arm, do-while loop, nested loops, Command routing)
is imported and compared, as MLIR text, with the graph built with
`AgentGraph` calls; each unsupported or under-annotated structure raises a
one-line GraphError naming the node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypedDict

import pytest

pytest.importorskip("langgraph")

from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.types import Command  # noqa: E402

from gimletc import AgentGraph, GraphError, load_graph  # noqa: E402
from gimletc.compiler import compile  # noqa: E402
from gimletc.errors import ConfigError  # noqa: E402
from gimletc.importers.langgraph import Annotations, from_langgraph  # noqa: E402
from gimletc.ir import print_graph  # noqa: E402

from _cli import run_cli  # noqa: E402  tests/_cli.py

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
M = "llama-3.1-8b"


class S(TypedDict, total=False):
    x: str


def node(state: S) -> S:
    return {}


def sg(*names: str) -> StateGraph:
    b = StateGraph(S)
    for n in names:
        b.add_node(n, node)
    return b


def text(g: AgentGraph) -> str:
    return print_graph(g.build())


def same(imported: AgentGraph, by_hand: AgentGraph) -> None:
    assert text(imported) == text(by_hand)


def ann(tokens: int = 100) -> Annotations:
    return Annotations().input("q", tokens=tokens)


# ---- the example: the Done-when ---------------------------------------------------------------


def test_example_compiles_to_the_same_ir_as_the_hand_built_coding_agent() -> None:
    lg, hand = load_graph(EXAMPLES / "langgraph_agent.py"), load_graph(EXAMPLES / "coding_agent.py")
    assert print_graph(lg) == print_graph(hand)
    cluster = EXAMPLES / "clusters" / "h200_mi300x.yaml"
    a, b = compile(lg, cluster, baseline=False), compile(hand, cluster, baseline=False)
    assert a.plan.ir and a.plan.ir == b.plan.ir
    assert a.plan.to_json() == b.plan.to_json()


def test_example_graph_runs_in_langgraph() -> None:
    """The imported graph is a working LangGraph agent, not only a structure."""
    import runpy

    mod = runpy.run_path(str(EXAMPLES / "langgraph_agent.py"))
    out = mod["app"].invoke({"request": "fix it"})
    assert out["summary"].endswith("1 passed")


def test_cli_graph_reads_the_example(capsys) -> None:
    code, out, err = run_cli(capsys, "graph", str(EXAMPLES / "langgraph_agent.py"))
    assert code == 0, err
    assert '"agent.loop"' in out and 'sym_name = "fix"' in out


# ---- structures ---------------------------------------------------------------------------------


def test_sequence_with_reads_in_order() -> None:
    b = sg("look", "answer")
    b.add_edge(START, "look")
    b.add_edge("look", "answer")
    b.add_edge("answer", END)
    a = (ann().output("out").retrieve("look", index_docs=1000, k=4, doc_tokens=50)
         .llm("answer", model=M, output_tokens=30, reads=["q"]))
    g = AgentGraph("seq")
    q = g.input("q", tokens=100)
    look = g.retrieve("look", query=q, index_docs=1000, k=4, doc_tokens=50)
    g.output("out", [g.llm("answer", model=M, prompt=[q, look], output_tokens=30)])
    same(from_langgraph(b, a, name="seq"), g)


def test_fan_out_and_join() -> None:
    b = sg("search", "lookup", "merge")
    b.add_edge(START, "search")
    b.add_edge(START, "lookup")
    b.add_edge(["search", "lookup"], "merge")  # a waiting edge: merge runs when both finished
    b.add_edge("merge", END)
    a = (ann().tool("search", latency_s=0.5, output_tokens=200).code("lookup", cpu_s=0.1, output_tokens=80)
         .llm("merge", model=M, output_tokens=40))
    g = AgentGraph("fan")
    q = g.input("q", tokens=100)
    s1 = g.tool("search", inputs=[q], latency_s=0.5, output_tokens=200)
    s2 = g.code("lookup", inputs=[q], cpu_s=0.1, output_tokens=80)
    g.output("output", [g.llm("merge", model=M, prompt=[s1, s2], output_tokens=40)])
    same(from_langgraph(b, a, name="fan"), g)


def route(state: S) -> Literal["small", "big"]:
    return "small"


def test_branch_that_merges() -> None:
    b = sg("classify", "small", "big", "polish")
    b.add_edge(START, "classify")
    b.add_conditional_edges("classify", route)
    b.add_edge("small", "polish")
    b.add_edge("big", "polish")
    b.add_edge("polish", END)
    a = (ann().llm("classify", model=M, output_tokens=5).llm("small", model=M, output_tokens=100)
         .llm("big", model="llama-3.1-70b", output_tokens=400).llm("polish", model=M, output_tokens=50)
         .branch("classify", probabilities={"big": 0.3, "small": 0.7}))
    g = AgentGraph("br")
    q = g.input("q", tokens=100)
    c = g.llm("classify", model=M, prompt=[q], output_tokens=5)
    with g.branch("route", probabilities=[0.7, 0.3], inputs=[c]) as br:  # arms in the edge's order: small, big
        with br.arm():
            br.yield_(g.llm("small", model=M, prompt=[c], output_tokens=100))
        with br.arm():
            br.yield_(g.llm("big", model="llama-3.1-70b", prompt=[c], output_tokens=400))
    g.output("output", [g.llm("polish", model=M, prompt=[br.results[0]], output_tokens=50)])
    same(from_langgraph(b, a, name="br"), g)


def test_branch_with_an_arm_straight_to_end_and_a_path_map() -> None:
    b = sg("draft", "review")
    b.add_edge(START, "draft")
    b.add_conditional_edges("draft", lambda s: "ok", {"ok": END, "check": "review"})
    b.add_edge("review", END)
    a = (ann().llm("draft", model=M, output_tokens=200).llm("review", model=M, output_tokens=20)
         .branch("draft", probabilities={END: 0.9, "review": 0.1}, name="gate"))
    g = AgentGraph("gate")
    q = g.input("q", tokens=100)
    d = g.llm("draft", model=M, prompt=[q], output_tokens=200)
    with g.branch("gate", probabilities=[0.9, 0.1], inputs=[d]) as br:
        with br.arm():
            br.yield_(d)
        with br.arm():
            br.yield_(g.llm("review", model=M, prompt=[d], output_tokens=20))
    g.output("output", [br.results[0]])
    same(from_langgraph(b, a, name="gate"), g)


def should_continue(state: S) -> Literal["tools", "__end__"]:
    return END


def test_react_loop_with_work_in_the_continuing_arm() -> None:
    """The ReAct shape: agent -> (tools -> agent | END); the test is in the middle of the body."""
    b = sg("agent", "tools")
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", should_continue)
    b.add_edge("tools", "agent")
    a = (ann().llm("agent", model=M, output_tokens=150).tool("tools", cpu_s=1.5, output_tokens=400)
         .loop("agent", expected=4, max=10, name="react")
         .branch("agent", probabilities={"tools": 0.75, END: 0.25}))
    g = AgentGraph("react")
    q = g.input("q", tokens=100)
    with g.loop("react", expected=4, max=10, carry=[q]) as lp:
        ag = g.llm("agent", model=M, prompt=[lp.args[0]], output_tokens=150)
        with g.branch("should_continue", probabilities=[0.75, 0.25], inputs=[ag]) as br:
            with br.arm():
                br.yield_(g.tool("tools", inputs=[ag], cpu_s=1.5, output_tokens=400))
            with br.arm():
                br.yield_(ag)
        lp.yield_(br.results[0])
    g.output("output", [lp.results[0]])
    same(from_langgraph(b.compile(), a, name="react"), g)


def again(state: S) -> Literal["write", "grade"]:
    return "grade"


def done(state: S) -> Literal["research", "publish"]:
    return "publish"


def test_nested_loops() -> None:
    """research -> (write -> grade ->? write) ->? research -> publish: a loop inside a loop."""
    b = sg("research", "write", "grade", "publish")
    b.add_edge(START, "research")
    b.add_edge("research", "write")
    b.add_edge("write", "grade")
    b.add_conditional_edges("grade", lambda s: "x", {"again": "write", "ok": "check"})
    b.add_node("check", node)
    b.add_conditional_edges("check", done)
    b.add_edge("publish", END)
    a = (ann().retrieve("research", index_docs=10_000, k=4, doc_tokens=100)
         .llm("write", model=M, output_tokens=300, reads=["q", "research"])
         .llm("grade", model=M, output_tokens=10).passthrough("check").llm("publish", model=M, output_tokens=50)
         .loop("research", expected=2, max=4, name="outer").loop("write", expected=1.5, max=3, name="inner"))
    g = AgentGraph("nest")
    q = g.input("q", tokens=100)
    with g.loop("outer", expected=2, max=4, carry=[q]) as outer:
        r = g.retrieve("research", query=[outer.args[0]], index_docs=10_000, k=4, doc_tokens=100)
        with g.loop("inner", expected=1.5, max=3, carry=[r]) as inner:
            w = g.llm("write", model=M, prompt=[q, inner.args[0]], output_tokens=300)
            inner.yield_(g.llm("grade", model=M, prompt=[w], output_tokens=10))
        outer.yield_(inner.results[0])  # `check` costs nothing: the grade flows through it
    g.output("output", [g.llm("publish", model=M, prompt=[outer.results[0]], output_tokens=50)])
    same(from_langgraph(b, a, name="nest"), g)


def test_command_routing_with_declared_destinations() -> None:
    def pick(state: S) -> Command[Literal["a", "b"]]:
        return Command(goto="a")

    b = StateGraph(S)
    b.add_node("pick", pick)
    b.add_node("a", node)
    b.add_node("b", node)
    b.add_edge(START, "pick")
    b.add_edge("a", END)
    b.add_edge("b", END)
    a = (ann().code("pick", cpu_s=0.01, output_tokens=1).llm("a", model=M, output_tokens=10)
         .llm("b", model=M, output_tokens=20).branch("pick", probabilities={"a": 0.5, "b": 0.5}, name="goto"))
    g = AgentGraph("cmd")
    q = g.input("q", tokens=100)
    p = g.code("pick", inputs=[q], cpu_s=0.01, output_tokens=1)
    with g.branch("goto", probabilities=[0.5, 0.5], inputs=[p]) as br:
        with br.arm():
            br.yield_(g.llm("a", model=M, prompt=[p], output_tokens=10))
        with br.arm():
            br.yield_(g.llm("b", model=M, prompt=[p], output_tokens=20))
    g.output("output", [br.results[0]])
    same(from_langgraph(b, a, name="cmd"), g)


def test_import_is_deterministic() -> None:
    runs = {text(load_graph_module()) for _ in range(3)}
    assert len(runs) == 1


def load_graph_module() -> AgentGraph:
    import runpy

    return runpy.run_path(str(EXAMPLES / "langgraph_agent.py"))["graph"]


# ---- errors: one line, naming the node ----------------------------------------------------------


def react() -> StateGraph:
    b = sg("agent", "tools")
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", should_continue)
    b.add_edge("tools", "agent")
    return b


def full_react() -> Annotations:
    return (ann().llm("agent", model=M, output_tokens=150).tool("tools", cpu_s=1.5, output_tokens=400)
            .loop("agent", expected=4, max=10).branch("agent", probabilities={"tools": 0.75, END: 0.25}))


def error(b: StateGraph, a: Annotations) -> str:
    with pytest.raises(GraphError) as e:
        from_langgraph(b, a, name="t").build()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_full_react_annotation_imports() -> None:
    from_langgraph(react(), full_react(), name="t").build()


def test_missing_node_annotation_names_the_node() -> None:
    a = ann().llm("agent", model=M, output_tokens=150).loop("agent", expected=4, max=10) \
        .branch("agent", probabilities={"tools": 0.75, END: 0.25})
    assert error(react(), a) == ("graph t: langgraph node 'tools' has no annotation: say what it is with "
                                 "Annotations.llm, tool, retrieve, code or passthrough")


def test_missing_annotation_through_the_cli_is_one_line_exit_2(tmp_path, capsys) -> None:
    src = (EXAMPLES / "langgraph_agent.py").read_text().replace(
        '    .tool("run_tests", tool="pytest", cpu_s=20.0, output_tokens=300)\n', "")
    f = tmp_path / "agent.py"
    f.write_text(src)
    code, out, err = run_cli(capsys, "graph", str(f))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "'run_tests' has no annotation" in err and str(f) in err


def test_missing_loop_annotation() -> None:
    a = ann().llm("agent", model=M, output_tokens=150).tool("tools", cpu_s=1.5, output_tokens=400)
    assert "cycle through 'agent', 'tools' has no loop annotation" in error(react(), a)
    assert "Annotations.loop('agent'" in error(react(), a)


def test_missing_branch_probabilities() -> None:
    a = ann().llm("agent", model=M, output_tokens=150).tool("tools", cpu_s=1.5, output_tokens=400) \
        .loop("agent", expected=4, max=10)
    assert "conditional edge 'should_continue' from 'agent' has no probabilities" in error(react(), a)


def test_branch_probabilities_must_name_every_destination() -> None:
    a = ann().llm("agent", model=M, output_tokens=150).tool("tools", cpu_s=1.5, output_tokens=400) \
        .loop("agent", expected=4, max=10).branch("agent", probabilities={"tools": 1.0})
    assert "has no probability for '__end__'" in error(react(), a)
    a = ann().llm("agent", model=M, output_tokens=150).tool("tools", cpu_s=1.5, output_tokens=400) \
        .loop("agent", expected=4, max=10).branch("agent", probabilities={"tools": 0.5, END: 0.3, "x": 0.2})
    assert "names 'x', not a destination" in error(react(), a)


def test_branch_probabilities_checked_by_the_builder() -> None:
    a = ann().llm("agent", model=M, output_tokens=150).tool("tools", cpu_s=1.5, output_tokens=400) \
        .loop("agent", expected=4, max=10).branch("agent", probabilities={"tools": 0.5, END: 0.3})
    assert "sum to 0.8, not 1" in error(react(), a)


def test_annotating_the_loop_test_as_a_branch_is_an_error() -> None:
    import runpy

    mod = runpy.run_path(str(EXAMPLES / "langgraph_agent.py"))
    ann_ = mod["annotations"].branch("run_tests", probabilities={"edit": 0.6, "summary": 0.4})
    with pytest.raises(GraphError, match="branch annotation for 'run_tests' is not used: its conditional edge is the "
                                         "test of the loop"):
        from_langgraph(mod["app"], ann_)


def test_unknown_nodes_in_annotations() -> None:
    assert "annotation for unknown node 'agnet'" in error(react(), full_react().code("agnet", cpu_s=1, output_tokens=1))
    a = full_react()
    a.nodes["agent"] = a.nodes["agent"].__class__("llm", {"model": M, "output_tokens": 5}, ("nope",))
    assert "'agent' reads unknown node 'nope'" in error(react(), a)


def test_reading_a_value_that_is_not_there() -> None:
    b = sg("one", "two")
    b.add_edge(START, "one")
    b.add_edge("one", "two")
    b.add_edge("two", END)
    a = ann().llm("one", model=M, output_tokens=5, reads=["two"]).llm("two", model=M, output_tokens=5)
    assert "'one' reads 'two', which is not available there" in error(b, a)


def test_annotated_twice_and_missing_input() -> None:
    with pytest.raises(GraphError, match="'agent': annotated twice"):
        ann().llm("agent", model=M, output_tokens=1).code("agent", cpu_s=1, output_tokens=1)
    a = Annotations().llm("agent", model=M, output_tokens=150)
    assert "no input annotation" in error(react(), a)


def test_bad_field_values_name_the_node() -> None:
    a = full_react()
    a.nodes["tools"] = a.nodes["tools"].__class__("tool", {"cpu_s": -1.0, "output_tokens": 3}, ())
    assert error(react(), a) == ("graph t: tool 'tools': cpu_s must be a finite number of seconds >= 0, got -1.0")
    a = full_react()
    a.nodes["agent"] = a.nodes["agent"].__class__("llm", {"model": "gpt-9", "output_tokens": 150}, ())
    assert "llm 'agent': model: unknown model 'gpt-9'" in error(react(), a)


def test_irreducible_cycle() -> None:
    b = sg("a", "b")
    b.add_conditional_edges(START, lambda s: "a", ["a", "b"])
    b.add_edge("a", "b")
    b.add_conditional_edges("b", lambda s: "a", ["a", END])
    a = ann().code("a", cpu_s=1, output_tokens=1).code("b", cpu_s=1, output_tokens=1)
    assert "the cycle through 'a', 'b' is entered at 'a' and 'b'" in error(b, a)


def test_plain_edge_out_of_a_loop() -> None:
    b = react()
    b.add_node("log", node)
    b.add_edge("tools", "log")
    b.add_edge("log", END)
    a = full_react().code("log", cpu_s=0.1, output_tokens=1)
    assert "node 'tools' in the loop at 'agent' has a plain edge to 'log' outside it" in error(b, a)


def test_loop_with_two_exit_targets() -> None:
    b = sg("agent", "tools", "fail")
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", lambda s: "x", ["tools", END])
    b.add_conditional_edges("tools", lambda s: "x", ["agent", "fail"])
    b.add_edge("fail", END)
    a = ann().code("agent", cpu_s=1, output_tokens=1).code("tools", cpu_s=1, output_tokens=1) \
        .code("fail", cpu_s=1, output_tokens=1).loop("agent", expected=2, max=4)
    assert "the loop at 'agent' leaves to 'fail' and 'END'; gimletc needs one exit target" in error(b, a)


def test_unstructured_branch() -> None:
    b = sg("c", "x", "y", "z")
    b.add_edge(START, "c")
    b.add_conditional_edges("c", lambda s: "x", ["x", "y"])
    b.add_edge("c", "z")  # z runs whatever c chose, and feeds arm x's node
    b.add_edge("z", "x")
    b.add_edge("x", END)
    b.add_edge("y", END)
    a = ann().code("c", cpu_s=1, output_tokens=1).code("x", cpu_s=1, output_tokens=1) \
        .code("y", cpu_s=1, output_tokens=1).code("z", cpu_s=1, output_tokens=1) \
        .branch("c", probabilities={"x": 0.5, "y": 0.5})
    assert error(b, a) == ("graph t: the branch at 'c' is not structured: 'x' is reached from its arm to 'x' and "
                           "from 'z' outside that arm")


def test_an_arm_that_runs_into_the_other_arm_is_an_if_then() -> None:
    """c -> (x -> y | y): y post-dominates c, so the branch is `if x` and y runs after it."""
    b = sg("c", "x", "y")
    b.add_edge(START, "c")
    b.add_conditional_edges("c", lambda s: "x", ["x", "y"])
    b.add_edge("x", "y")
    b.add_edge("y", END)
    a = ann().code("c", cpu_s=1, output_tokens=1).code("x", cpu_s=2, output_tokens=2) \
        .code("y", cpu_s=3, output_tokens=3).branch("c", probabilities={"x": 0.4, "y": 0.6}, name="if_x")
    g = AgentGraph("t")
    q = g.input("q", tokens=100)
    c = g.code("c", inputs=[q], cpu_s=1, output_tokens=1)
    with g.branch("if_x", probabilities=[0.4, 0.6], inputs=[c]) as br:
        with br.arm():
            br.yield_(g.code("x", inputs=[c], cpu_s=2, output_tokens=2))
        with br.arm():
            br.yield_(c)
    g.output("output", [g.code("y", inputs=[br.results[0]], cpu_s=3, output_tokens=3)])
    same(from_langgraph(b, a, name="t"), g)


def test_unused_loop_annotation_and_unreachable_node() -> None:
    b = sg("one")
    b.add_edge(START, "one")
    b.add_edge("one", END)
    a = ann().code("one", cpu_s=1, output_tokens=1).loop("one", expected=2, max=3)
    assert "loop annotation for 'one' is not used" in error(b, a)
    b.add_node("island", node)
    b.add_edge("island", END)
    assert "'island' is not reachable from START" in error(b, ann().code("one", cpu_s=1, output_tokens=1))


def test_not_a_state_graph() -> None:
    with pytest.raises(ConfigError, match="expected a langgraph StateGraph"):
        from_langgraph(object(), ann())
