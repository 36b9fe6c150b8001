"""The agent-graph builder, the YAML/JSON/Python loaders, and the bundled examples.

The builder is checked op by op against the IR it should produce; every error
case against its message (node, field, value); loaders against the builder;
random DAGs (operands drawn from earlier values only) through both.
"""

from __future__ import annotations

import json
import random
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import gimletc
from gimletc import AgentGraph, GraphError, load_graph
from gimletc.agent import summary
from gimletc.errors import ConfigError
from gimletc.graph_io import graph_from_data
from gimletc.hardware import load_cluster
from gimletc.ir import Graph, Op, Type, Value, verify

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
HF = Path(__file__).parent / "data" / "hf"
FAST = settings(max_examples=40, deadline=None)


def seed_graph() -> AgentGraph:
    """The coding-agent graph of the brief, with a branch."""
    g = AgentGraph("coding-agent")
    req = g.input("request", tokens=2000)
    ctx = g.retrieve("repo_context", query=req, index_docs=200_000, k=8, doc_tokens=512)
    plan = g.llm("plan", model="gpt-oss-120b", prompt=[req, ctx], system_tokens=1500, output_tokens=800,
                 draft="llama-3.2-1b", draft_k=4, acceptance=0.7)  # fmt: skip
    with g.loop("fix", expected=3, max=8, carry=[plan]) as loop:
        patch = g.llm("edit", model="gpt-oss-120b", prompt=[loop.args[0], req], output_tokens=400)
        result = g.tool("run_tests", inputs=[patch], cpu_s=20.0, output_tokens=300)
        loop.yield_(result)
    fixed = loop.results[0]
    with g.branch("route", probabilities=[0.8, 0.2], inputs=[fixed]) as br:
        with br.arm():
            br.yield_(g.llm("polish", model="llama-3.1-8b", prompt=[fixed], output_tokens=100))
        with br.arm():
            br.yield_(fixed)
    g.code("lint", inputs=[fixed], cpu_s=2.0, output_tokens=50)
    g.output("answer", [br.results[0]])
    return g


# ---- the IR the builder produces ----------------------------------------------------------


def test_builder_produces_expected_ir() -> None:
    graph = seed_graph().build()
    assert dict(graph.attrs) == {"gimlet.level": "agent", "gimlet.name": "coding-agent"}
    assert [(op.kind, op.name) for op in graph.ops] == [
        ("agent.input", "request"),
        ("agent.retrieve", "repo_context"),
        ("agent.llm", "plan"),
        ("agent.loop", "fix"),
        ("agent.branch", "route"),
        ("agent.code", "lint"),
        ("agent.output", "answer"),
    ]
    tokens = {v.name: v.type for op in graph.ops for v in op.results}
    assert tokens == {
        "request": Type("tokens", 2000),
        "repo_context": Type("tokens", 8 * 512),
        "plan": Type("tokens", 800),
        "fix.results.0": Type("tokens", 300),
        "route.results.0": Type("tokens", 0.8 * 100 + 0.2 * 300),  # probability-weighted
        "lint": Type("tokens", 50),
    }
    plan = graph.op("plan")
    assert plan.operands == ("request", "repo_context")
    assert dict(plan.attrs) == {"model": "gpt-oss-120b", "output_tokens": 800, "system_tokens": 1500,
                                "draft": "llama-3.2-1b", "draft_k": 4, "acceptance": 0.7}  # fmt: skip
    assert dict(graph.op("repo_context").attrs) == {"index_docs": 200_000, "k": 8, "doc_tokens": 512}
    assert dict(graph.op("lint").attrs) == {"cpu_s": 2.0, "output_tokens": 50}

    loop = graph.op("fix")
    assert loop.operands == ("plan",) and dict(loop.attrs) == {"expected": 3, "max": 8}
    (body,) = loop.regions
    assert body.args == (Value("fix.args.0", Type("tokens", 800)),)
    assert [(op.kind, op.name) for op in body.ops] == [
        ("agent.llm", "edit"), ("agent.tool", "run_tests"), ("agent.yield", "fix.yield")]  # fmt: skip
    assert body.op("edit").operands == ("fix.args.0", "request")
    assert dict(body.op("run_tests").attrs) == {"tool": "run_tests", "cpu_s": 20.0, "output_tokens": 300}
    assert body.op("fix.yield").operands == ("run_tests",)

    branch = graph.op("route")
    assert branch.operands == ("fix.results.0",) and branch.attr("probabilities") == (0.8, 0.2)
    assert [r.ops[-1].name for r in branch.regions] == ["route.yield.0", "route.yield.1"]
    assert branch.regions[1].ops[-1].operands == ("fix.results.0",)
    assert graph.op("answer").results == () and graph.op("answer").operands == ("route.results.0",)
    assert verify(graph) is graph
    # values are the edges: the region's captures count as uses of the loop
    assert ("request", "fix") in graph.to_networkx().edges


def test_numbers_are_normalised() -> None:
    g = AgentGraph("t")
    q = g.input("q", tokens=10.0)
    with g.loop("l", expected=3, max=8.0) as lp:
        lp.yield_(g.code("c", inputs=q, cpu_s=2, output_tokens=3))
    g.output("o", lp.results)
    graph = g.build()
    for op, key, want in ((graph.op("q"), "tokens", int), (graph.op("l"), "expected", float),
                          (graph.op("l"), "max", int), (graph.op("l").regions[0].op("c"), "cpu_s", float)):  # fmt: skip
        assert type(op.attr(key)) is want


def test_build_is_deterministic_and_vals_know_sizes() -> None:
    g = seed_graph()
    assert g.build() == g.build() == seed_graph().build()
    v = AgentGraph("t").input("q", tokens=7)
    assert v.name == "q" and v.tokens == 7 and v.value == Value("q", Type("tokens", 7))


def test_tool_specs_are_inherited_and_overridden() -> None:
    g = AgentGraph("t")
    q = g.input("q", tokens=10)
    g.tool_spec("pytest", cpu_s=20.0, output_tokens=300)
    a = g.tool("a", tool="pytest", inputs=[q])
    b = g.tool("b", tool="pytest", inputs=[q], latency_s=1.5, output_tokens=20)
    g.output("out", [a, b])
    graph = g.build()
    assert dict(graph.op("a").attrs) == {"tool": "pytest", "cpu_s": 20.0, "output_tokens": 300}
    assert dict(graph.op("b").attrs) == {"tool": "pytest", "latency_s": 1.5, "output_tokens": 20}


def test_loop_with_several_values_and_hf_model_path() -> None:
    g = AgentGraph("t")
    q = g.input("q", tokens=10)
    with g.loop("it", expected=2.5, max=4, carry=[q, q]) as lp:
        x = g.llm("x", model=HF / "llama-3.1-8b", prompt=list(lp.args), output_tokens=5)
        lp.yield_(x, lp.args[1])
    g.output("o", list(lp.results))
    graph = g.build()
    assert [r.name for r in graph.op("it").results] == ["it.results.0", "it.results.1"]
    assert graph.op("it").attr("expected") == 2.5
    assert graph.op("it").regions[0].op("x").attr("model") == str(HF / "llama-3.1-8b")


# ---- errors: each names the node, the field and the value -----------------------------------


def fresh() -> tuple[AgentGraph, Any]:
    g = AgentGraph("t")
    return g, g.input("q", tokens=10)


def err(fn: Any) -> str:
    with pytest.raises(GraphError) as e:
        fn()
    assert isinstance(e.value, ConfigError) and "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda g, q: g.input("x", tokens=0), ["input 'x'", "tokens", "0"]),
        (lambda g, q: g.input("y", tokens=-5), ["input 'y'", "tokens", "-5"]),
        (lambda g, q: g.llm("a", model="llama-3.1-8b", prompt=[q], output_tokens=-1), ["llm 'a'", "output_tokens", "-1"]),
        (lambda g, q: g.llm("a", model="llama-3.1-8b", prompt=q, output_tokens=1, system_tokens=0),
         ["llm 'a'", "system_tokens", "0"]),
        (lambda g, q: g.llm("a", model="gpt-9", prompt=[q], output_tokens=1), ["llm 'a'", "model", "'gpt-9'"]),
        (lambda g, q: g.llm("a", model="llama-3.1-8b", prompt=q, output_tokens=1, draft="tiny"), ["llm 'a'", "draft", "'tiny'"]),
        (lambda g, q: g.llm("a", model=HF / "mamba-130m", prompt=q, output_tokens=1), ["llm 'a'", "model", "mamba"]),
        (lambda g, q: g.llm("a", model="llama-3.1-8b", prompt=q, output_tokens=1, draft_k=4), ["llm 'a'", "draft_k", "without a draft"]),
        (lambda g, q: g.llm("a", model="llama-3.1-8b", prompt=q, output_tokens=1, draft="llama-3.2-1b", acceptance=1.5),
         ["llm 'a'", "acceptance", "1.5"]),
        (lambda g, q: g.llm("a", model="llama-3.1-8b", output_tokens=1), ["llm 'a'", "prompt", "empty"]),
        (lambda g, q: g.retrieve("r", query=q, index_docs=5, k=8, doc_tokens=10), ["retrieve 'r'", "k=8", "index_docs=5"]),
        (lambda g, q: g.retrieve("r", query=[], index_docs=5, k=1, doc_tokens=10), ["retrieve 'r'", "query"]),
        (lambda g, q: g.retrieve("r", query=q, index_docs=5, k=1, doc_tokens=-3), ["retrieve 'r'", "doc_tokens", "-3"]),
        (lambda g, q: g.code("c", inputs=[q], cpu_s=-1.0, output_tokens=3), ["code 'c'", "cpu_s", "-1.0"]),
        (lambda g, q: g.tool("t", inputs=[q], output_tokens=3), ["unknown tool 't' at node 't'"]),
        (lambda g, q: g.tool("call1", tool="pytest", inputs=[q]), ["unknown tool 'pytest' at node 'call1'"]),
        (lambda g, q: g.tool("t", inputs=[q], cpu_s=1.0, latency_s=2.0, output_tokens=3), ["tool 't'", "cpu_s", "latency_s"]),
        (lambda g, q: g.tool("t", inputs=[q], cpu_s=1.0), ["tool 't'", "output_tokens"]),
        (lambda g, q: g.tool_spec("s", output_tokens=3), ["tool spec 's'", "cpu_s", "latency_s"]),
        (lambda g, q: g.loop("l", expected=5, max=3), ["loop 'l'", "expected=5", "max=3"]),
        (lambda g, q: g.loop("l", expected=0.5, max=3), ["loop 'l'", "expected", "0.5"]),
        (lambda g, q: g.loop("l", expected=1, max=0), ["loop 'l'", "max", "0"]),
        (lambda g, q: g.branch("b", probabilities=[0.5, 0.2]), ["branch 'b'", "probabilities", "0.7"]),
        (lambda g, q: g.branch("b", probabilities=[1.5, -0.5]), ["branch 'b'", "probabilities", "1.5"]),
        (lambda g, q: g.input("q", tokens=3), ["input 'q'", "already used by input 'q'"]),
        (lambda g, q: g.input("bad name", tokens=3), ["input 'bad name'", "not a valid IR name"]),
        (lambda g, q: g.input("9lives", tokens=3), ["'9lives'", "not a valid IR name"]),
        (lambda g, q: g.llm("a", model="llama-3.1-8b", prompt=["q"], output_tokens=1), ["llm 'a'", "prompt", "'q'"]),
        (lambda g, q: g.output("o", []), ["output 'o'", "inputs"]),
        (lambda g, q: g.build(), ["no output"]),
    ],
)
def test_errors_name_node_field_and_value(call: Any, expected: list[str]) -> None:
    g, q = fresh()
    msg = err(lambda: call(g, q))
    assert msg.startswith("graph t: ")
    for part in expected:
        assert part in msg, (part, msg)


def test_value_from_another_graph() -> None:
    other = AgentGraph("other").input("x", tokens=3)
    g, _ = fresh()
    msg = err(lambda: g.llm("a", model="llama-3.1-8b", prompt=[other], output_tokens=1))
    assert "llm 'a'" in msg and "%x" in msg and "'other'" in msg


def test_value_used_outside_its_region() -> None:
    g, q = fresh()
    with g.loop("fix", expected=2, max=3, carry=[q]) as lp:
        inner = g.code("inner", inputs=[lp.args[0]], cpu_s=1.0, output_tokens=3)
        lp.yield_(inner)
    msg = err(lambda: g.code("lint", inputs=[inner], cpu_s=1.0, output_tokens=3))
    assert "code 'lint'" in msg and "%inner" in msg and "loop 'fix'" in msg
    msg = err(lambda: g.code("lint", inputs=[lp.args[0]], cpu_s=1.0, output_tokens=3))
    assert "%fix.args.0" in msg and "loop 'fix'" in msg

    with g.branch("b", probabilities=[0.5, 0.5]) as br:
        with br.arm():
            a = g.code("a", inputs=[q], cpu_s=1.0, output_tokens=3)
            br.yield_(a)
        with br.arm():
            msg = err(lambda: g.code("c", inputs=[a], cpu_s=1.0, output_tokens=3))
            assert "code 'c'" in msg and "arm 0 of branch 'b'" in msg
            br.yield_(q)


def test_region_structure_errors() -> None:
    g, q = fresh()
    with pytest.raises(GraphError, match="loop 'l': has no yield"):
        with g.loop("l", expected=1, max=2, carry=[q]):
            g.code("c", inputs=[q], cpu_s=1.0, output_tokens=3)
    g, q = fresh()
    with pytest.raises(GraphError, match="branch 'b': probabilities: 2 given for 1 arms"):
        with g.branch("b", probabilities=[0.5, 0.5]) as br, br.arm():
            br.yield_(q)
    g, q = fresh()
    with pytest.raises(GraphError, match="arms yield different numbers of values"):
        with g.branch("b", probabilities=[0.5, 0.5]) as br:
            with br.arm():
                br.yield_(q)
            with br.arm():
                br.yield_(q, q)
    g, q = fresh()
    with pytest.raises(GraphError, match="arm 0 has no yield"):
        with g.branch("b", probabilities=[1.0]) as br, br.arm():
            pass
    g, q = fresh()
    with pytest.raises(GraphError, match="code 'c': is inside branch 'b' but outside its arms"):
        with g.branch("b", probabilities=[1.0]):
            g.code("c", inputs=[q], cpu_s=1.0, output_tokens=3)
    g, q = fresh()
    with pytest.raises(GraphError, match="output 'o': must be at the top level, not inside loop 'l'"):
        with g.loop("l", expected=1, max=2) as lp:
            g.output("o", [q])
    g, q = fresh()
    with g.loop("l", expected=1, max=2) as lp:
        with pytest.raises(GraphError, match="build\\(\\) called inside loop 'l'"):
            g.build()
        with pytest.raises(GraphError, match="results exist only after"):
            _ = lp.results
        lp.yield_(q)
    with pytest.raises(GraphError, match="input 'l.yield': name 'l.yield' is already used by loop 'l'"):
        g.input("l.yield", tokens=1)
    g.input("m.args.0", tokens=1)
    with pytest.raises(GraphError, match="loop 'm': name 'm.args.0' is already used by input 'm.args.0'"):
        with g.loop("m", expected=1, max=2, carry=[q]):
            pass


def test_errors_inside_a_block_leave_the_builder_usable() -> None:
    g, q = fresh()
    with pytest.raises(GraphError):
        with g.loop("l", expected=1, max=2):
            g.input("bad", tokens=0)
    with pytest.raises(GraphError, match="has no yield"):
        with g.loop("l", expected=1, max=2):
            g.code("inner", inputs=[q], cpu_s=1.0, output_tokens=1)
    with g.loop("l", expected=1, max=2) as lp:  # the failed blocks freed their names
        lp.yield_(g.code("inner", inputs=[q], cpu_s=1.0, output_tokens=1))
    g.output("o", lp.results)
    assert [op.name for op in g.build().ops] == ["q", "l", "o"]  # the failed loops added nothing


# ---- loading YAML, JSON and Python ---------------------------------------------------------


def test_yaml_equals_python_for_rag() -> None:
    from_yaml = load_graph(EXAMPLES / "graphs" / "rag.yaml")
    from_py = runpy.run_path(str(EXAMPLES / "rag.py"))["graph"]
    assert from_yaml == from_py == load_graph(EXAMPLES / "rag.py")


LOOPY: dict[str, Any] = {
    "name": "loopy",
    "tools": {"pytest": {"cpu_s": 20.0, "output_tokens": 300}},
    "nodes": [
        {"op": "output", "name": "out", "inputs": ["route"]},  # listed first: order is free
        {"op": "branch", "name": "route", "probabilities": [0.8, 0.2], "inputs": ["fix"], "arms": [
            {"nodes": [{"op": "llm", "name": "polish", "model": "llama-3.1-8b", "prompt": "fix", "output_tokens": 100}],
             "yield": ["polish"]},
            {"yield": "fix.results.0"},
        ]},
        {"op": "loop", "name": "fix", "expected": 3, "max": 8, "carry": ["plan"], "body": [
            {"op": "tool", "name": "run_tests", "tool": "pytest", "inputs": ["edit"]},
            {"op": "llm", "name": "edit", "model": "gpt-oss-120b", "prompt": ["fix.args.0", "request"], "output_tokens": 400},
        ], "yield": ["run_tests"]},
        {"op": "llm", "name": "plan", "model": "gpt-oss-120b", "prompt": ["request", "repo_context"],
         "system_tokens": 1500, "output_tokens": 800, "draft": "llama-3.2-1b", "draft_k": 4, "acceptance": 0.7},
        {"op": "retrieve", "name": "repo_context", "query": "request", "index_docs": 200000, "k": 8, "doc_tokens": 512},
        {"op": "input", "name": "request", "tokens": 2000},
        {"op": "code", "name": "lint", "inputs": ["fix"], "cpu_s": 2.0, "output_tokens": 50},
    ],
}  # fmt: skip


def python_loopy() -> Graph:
    g = AgentGraph("loopy")
    g.tool_spec("pytest", cpu_s=20.0, output_tokens=300)
    req = g.input("request", tokens=2000)
    ctx = g.retrieve("repo_context", query=req, index_docs=200_000, k=8, doc_tokens=512)
    plan = g.llm("plan", model="gpt-oss-120b", prompt=[req, ctx], system_tokens=1500, output_tokens=800,
                 draft="llama-3.2-1b", draft_k=4, acceptance=0.7)  # fmt: skip
    with g.loop("fix", expected=3, max=8, carry=[plan]) as lp:
        edit = g.llm("edit", model="gpt-oss-120b", prompt=[lp.args[0], req], output_tokens=400)
        lp.yield_(g.tool("run_tests", tool="pytest", inputs=[edit]))
    with g.branch("route", probabilities=[0.8, 0.2], inputs=lp.results) as br:
        with br.arm():
            br.yield_(g.llm("polish", model="llama-3.1-8b", prompt=lp.results, output_tokens=100))
        with br.arm():
            br.yield_(lp.results)
    g.output("out", br.results)
    g.code("lint", inputs=lp.results, cpu_s=2.0, output_tokens=50)
    return g.build()


def test_unordered_nodes_with_loop_and_branch_load(tmp_path: Path) -> None:
    got = graph_from_data(LOOPY, "loopy.yaml")
    assert [op.name for op in got.ops] == ["request", "repo_context", "plan", "fix", "route", "out", "lint"]
    assert got == python_loopy()
    (tmp_path / "loopy.json").write_text(json.dumps(LOOPY))
    (tmp_path / "loopy.yml").write_text(yaml.safe_dump(LOOPY))
    assert load_graph(tmp_path / "loopy.json") == load_graph(tmp_path / "loopy.yml") == got


def bad(data: dict[str, Any]) -> str:
    with pytest.raises(GraphError) as e:
        graph_from_data(data, "g.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith("g.yaml: ")
    return str(e.value)


def nodes(*ns: dict[str, Any]) -> dict[str, Any]:
    return {"name": "rag", "nodes": [{"op": "input", "name": "q", "tokens": 10}, *ns]}


LLM = {"op": "llm", "model": "llama-3.1-8b", "output_tokens": 5}


def test_cycle_outside_a_loop_is_named() -> None:
    msg = bad(nodes({**LLM, "name": "a", "prompt": ["q", "b"]}, {**LLM, "name": "b", "prompt": ["a"]},
                    {"op": "output", "name": "o", "inputs": ["b"]}))  # fmt: skip
    assert msg == "g.yaml: graph rag: cycle outside a loop: a -> b -> a"
    assert bad(nodes({**LLM, "name": "a", "prompt": ["a"]})).endswith("cycle outside a loop: a -> a")
    body = [{**LLM, "name": "x", "prompt": ["y"]}, {**LLM, "name": "y", "prompt": ["x", "l.args.0"]}]
    msg = bad(nodes({"op": "loop", "name": "l", "expected": 1, "max": 2, "carry": ["q"], "body": body, "yield": ["y"]}))
    assert msg.endswith("cycle outside a loop: x -> y -> x")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({**LLM, "name": "a", "prompt": ["q"], "temperature": 0.2}, "llm 'a': unknown field 'temperature'"),
        ({**LLM, "name": "a"} | {"model": None} | {"prompt": "q"}, "llm 'a': model"),
        ({"op": "llm", "name": "a", "prompt": "q", "output_tokens": 3}, "llm 'a': missing field 'model'"),
        ({**LLM, "name": "a", "prompt": ["nope"]}, "llm 'a': prompt: unknown node 'nope'"),
        ({**LLM, "name": "a", "prompt": [3]}, "llm 'a': prompt: expected a node name"),
        ({**LLM, "name": "a", "prompt": "q", "output_tokens": -4}, "llm 'a': output_tokens must be a positive integer, got -4"),
        ({**LLM, "name": "a", "prompt": "q", "model": "gpt-9"}, "llm 'a': model: unknown model 'gpt-9'"),
        ({"op": "sing", "name": "a"}, "op: unknown op 'sing'"),
        ({"op": "input", "tokens": 3}, "nodes[1]: missing field 'name'"),
        ({"op": "input", "name": "q", "tokens": 3}, "input 'q': name 'q' is used by two nodes"),
        ({"op": "tool", "name": "w", "tool": "search", "inputs": "q"}, "unknown tool 'search' at node 'w'"),
        ({"op": "output", "name": "o", "inputs": ["l.args.0"]}, "unknown node 'l.args.0'"),
        ({"op": "loop", "name": "l", "expected": 1, "max": 2, "body": [], "yield": "l"}, "'l' is a result of loop 'l'"),
        ({"op": "loop", "name": "l", "expected": 1, "max": 2, "body": [{**LLM, "name": "z", "prompt": "q"}],
          "yeild": []}, "loop 'l': unknown field 'yeild'"),
        ({"op": "branch", "name": "b", "probabilities": [1.0], "arms": [{"yield": "q", "when": 1}]},
         "branch 'b': arms[0]: unknown field 'when'"),
    ],
)
def test_description_errors_name_file_node_and_field(extra: dict[str, Any], expected: str) -> None:
    assert expected in bad(nodes(extra, {"op": "output", "name": "out", "inputs": ["q"]}))


def test_description_errors_for_regions() -> None:
    loop = {"op": "loop", "name": "l", "expected": 1, "max": 2, "carry": ["q"],
            "body": [{**LLM, "name": "z", "prompt": "l.args.0"}], "yield": ["z"]}  # fmt: skip
    msg = bad(nodes(loop, {"op": "output", "name": "o", "inputs": ["z"]}))
    assert "output 'o': inputs: 'z' is defined inside loop 'l' and is not visible here" in msg
    msg = bad(nodes(loop, {"op": "output", "name": "o", "inputs": ["l.args.0"]}))
    assert "'l.args.0' is visible only inside the body of loop 'l'" in msg
    msg = bad(nodes(loop, {"op": "output", "name": "o", "inputs": ["l.results.1"]}))
    assert "'l.results.1' does not exist: loop 'l' has fewer results" in msg
    two = {**loop, "yield": ["z", "z"]}
    assert "has several results; name one as 'l.results.0'" in bad(nodes(two, {"op": "output", "name": "o", "inputs": ["l"]}))
    assert "unknown field 'extra'" in bad({"name": "x", "nodes": [], "extra": 1})
    assert "missing field 'nodes'" in bad({"name": "x"})
    assert "tools: s: unknown field 'gpu_s'" in bad({**nodes(), "tools": {"s": {"gpu_s": 1, "output_tokens": 3}}})


def test_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nnodes: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: malformed YAML at line \d+"):
        load_graph(broken)
    neg = tmp_path / "neg.yaml"
    neg.write_text(yaml.safe_dump(nodes({"op": "output", "name": "o", "inputs": "q"}) | {"name": "neg"}).replace("10", "-10"))
    with pytest.raises(GraphError, match=r"neg.yaml: graph neg: input 'q': tokens must be a positive integer, got -10"):
        load_graph(neg)
    with pytest.raises(ConfigError, match="unknown graph file type '.txt'"):
        load_graph(tmp_path / "g.txt")
    with pytest.raises(ConfigError, match="cannot read"):
        load_graph(tmp_path / "missing.py")


def test_relative_model_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text((HF / "llama-3.1-8b" / "config.json").read_text())
    f = tmp_path / "g.yaml"
    f.write_text(yaml.safe_dump(nodes({**LLM, "name": "a", "prompt": "q", "model": "cfg/config.json"},
                                      {"op": "output", "name": "o", "inputs": "a"})))  # fmt: skip
    assert load_graph(f).op("a").attr("model") == str((tmp_path / "cfg" / "config.json").resolve())


def test_python_files(tmp_path: Path) -> None:
    builder = tmp_path / "builder.py"
    builder.write_text(
        "from gimletc import AgentGraph\n"
        "graph = AgentGraph('py')\n"
        "q = graph.input('q', tokens=10)\n"
        "graph.output('o', [q])\n"
    )
    got = load_graph(builder)
    assert isinstance(got, Graph) and got.attrs["gimlet.name"] == "py"
    built = tmp_path / "built.py"
    built.write_text(builder.read_text() + "graph = graph.build()\n")
    assert load_graph(built) == got
    none = tmp_path / "none.py"
    none.write_text("x = 1\n")
    with pytest.raises(ConfigError, match=r"none.py: defines no module-level `graph`"):
        load_graph(none)
    wrong = tmp_path / "wrong.py"
    wrong.write_text("graph = 3\n")
    with pytest.raises(ConfigError, match=r"wrong.py: `graph` is a int"):
        load_graph(wrong)
    bad_graph = tmp_path / "bad_graph.py"
    bad_graph.write_text("from gimletc import AgentGraph\nAgentGraph('b').input('q', tokens=0)\n")
    with pytest.raises(GraphError, match=r"bad_graph.py: graph b: input 'q': tokens"):
        load_graph(bad_graph)
    raising = tmp_path / "raising.py"
    raising.write_text("1 / 0\n")
    with pytest.raises(ConfigError, match=r"raising.py: running it raised ZeroDivisionError"):
        load_graph(raising)


# ---- examples ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["coding_agent", "rag", "multi_agent"])
def test_examples_build(name: str) -> None:
    graph = load_graph(EXAMPLES / f"{name}.py")
    verify(graph)
    assert graph.attrs["gimlet.level"] == "agent"
    assert any(op.kind == "agent.output" for op in graph.ops)
    assert summary(graph).count("\n") >= len(graph.ops)


def test_coding_agent_example_shape() -> None:
    graph = load_graph(EXAMPLES / "coding_agent.py")
    plan = graph.op("plan")
    assert (plan.attr("model"), plan.attr("draft"), plan.attr("draft_k"), plan.attr("acceptance")) == (
        "gpt-oss-120b", "llama-3.2-1b", 4, 0.7)  # fmt: skip
    loop = graph.op("fix")
    assert (loop.attr("expected"), loop.attr("max")) == (3, 8)
    assert {op.kind for op in loop.regions[0].ops} == {"agent.llm", "agent.tool", "agent.yield"}


def test_multi_agent_workers_are_parallel() -> None:
    import networkx as nx

    dag = load_graph(EXAMPLES / "multi_agent.py").to_networkx()
    workers = [f"worker_{i}" for i in range(3)]
    for a in workers:
        for b in workers:
            assert a == b or not nx.has_path(dag, a, b)


@pytest.mark.parametrize("path", sorted((EXAMPLES / "clusters").glob("*.yaml")), ids=lambda p: p.name)
def test_example_clusters_load(path: Path) -> None:
    cluster = load_cluster(path)
    assert cluster.devices()


def test_example_cluster_set() -> None:
    assert {p.name for p in (EXAMPLES / "clusters").glob("*.yaml")} == {"mixed_rack.yaml", "gpu_only.yaml", "h200_mi300x.yaml"}
    chips = {d.chip.name for d in load_cluster(EXAMPLES / "clusters" / "mixed_rack.yaml").devices()}
    assert {"h100-sxm", "dmatrix-corsair", "epyc-9965"} <= chips


def test_top_level_exports() -> None:
    assert gimletc.AgentGraph is AgentGraph and gimletc.load_graph is load_graph and gimletc.GraphError is GraphError


# ---- properties on random DAGs -------------------------------------------------------------

MODELS = ["llama-3.1-8b", "llama-3.2-1b", "qwen3-32b"]


@st.composite
def recipes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Nodes of a random DAG as description dicts; operands only name earlier nodes."""
    n = draw(st.integers(1, 12))
    out: list[dict[str, Any]] = [{"op": "input", "name": "n0", "tokens": draw(st.integers(1, 5000))}]
    for i in range(1, n):
        earlier = [x["name"] for x in out]
        uses = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3))
        kind = draw(st.sampled_from(["input", "llm", "tool", "retrieve", "code"]))
        name = f"n{i}"
        tokens = draw(st.integers(1, 2000))
        if kind == "input":
            node = {"op": "input", "name": name, "tokens": tokens}
        elif kind == "llm":
            node = {"op": "llm", "name": name, "model": draw(st.sampled_from(MODELS)), "prompt": uses, "output_tokens": tokens}
            if draw(st.booleans()):
                node["system_tokens"] = draw(st.integers(1, 2000))
        elif kind == "tool":
            cost = draw(st.sampled_from(["cpu_s", "latency_s"]))
            node = {"op": "tool", "name": name, "inputs": uses, cost: draw(st.floats(0, 60)), "output_tokens": tokens}
        elif kind == "retrieve":
            docs = draw(st.integers(1, 10**6))
            node = {"op": "retrieve", "name": name, "query": uses, "index_docs": docs, "k": draw(st.integers(1, min(docs, 50))),
                    "doc_tokens": draw(st.integers(1, 1000))}  # fmt: skip
        else:
            node = {"op": "code", "name": name, "inputs": uses, "cpu_s": draw(st.floats(0, 60)), "output_tokens": tokens}
        out.append(node)
    out.append({"op": "output", "name": "out", "inputs": [out[-1]["name"]]})
    return out


def build_recipe(recipe: list[dict[str, Any]]) -> Graph:
    g = AgentGraph("random")
    vals: dict[str, Any] = {}
    for node in recipe:
        f = {k: v for k, v in node.items() if k not in ("op", "name")}
        for key in ("prompt", "inputs", "query"):
            if key in f:
                f[key] = [vals[x] for x in f[key]]
        if node["op"] == "output":
            g.output(node["name"], f["inputs"])
        else:
            vals[node["name"]] = getattr(g, node["op"])(node["name"], **f)
    return g.build()


@FAST
@given(recipes(), st.randoms(use_true_random=False))
def test_random_dags_verify_and_load_identically(recipe: list[dict[str, Any]], rnd: random.Random) -> None:
    graph = build_recipe(recipe)
    assert verify(graph) is graph
    assert build_recipe(recipe) == graph  # deterministic
    dag = graph.to_networkx()
    assert len(dag) == len(recipe)
    for op in graph.ops:
        assert all((u, op.name) in dag.edges for u in op.operands)
        for r in op.results:
            size = op.attr("k") * op.attr("doc_tokens") if op.kind == "agent.retrieve" else (
                op.attr("tokens") if op.kind == "agent.input" else op.attr("output_tokens"))  # fmt: skip
            assert r.type == Type("tokens", size)
    # the same nodes as data, in the file order given, load to the same graph ...
    assert graph_from_data({"name": "random", "nodes": recipe}) == graph
    # ... and in any order to the same ops, sorted topologically
    shuffled = recipe[:]
    rnd.shuffle(shuffled)
    loaded = graph_from_data({"name": "random", "nodes": shuffled})
    assert {op.name: op for op in loaded.ops} == {op.name: op for op in graph.ops}
    position = {op.name: i for i, op in enumerate(loaded.ops)}
    assert all(position[u] < position[op.name] for op in loaded.ops for u in op.operands)


def test_summary_lists_ops_and_sizes() -> None:
    text = summary(seed_graph().build())
    assert "agent.loop @fix (%plan) [expected=3.0 max=8] -> %fix.results.0 300 tokens" in text
    assert "args: %fix.args.0 800 tokens" in text and "arm 1 (p=0.2):" in text


def test_ops_are_ir_ops() -> None:
    graph = seed_graph().build()
    assert all(isinstance(op, Op) for op, _ in graph.walk())


def test_docs_python_and_yaml_examples_agree() -> None:
    text = (ROOT / "docs" / "agent-graphs.md").read_text()
    python = text.split("```python\n", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    namespace: dict[str, Any] = {}
    exec(compile(python, "docs/agent-graphs.md", "exec"), namespace)
    assert graph_from_data(data, "docs") == namespace["graph"]
