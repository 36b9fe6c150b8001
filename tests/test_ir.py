"""IR: golden text at agent, model and exec level, print/parse round trips on generated graphs,
verify() failures, the networkx view, Mermaid/DOT export, and (where installed) the real MLIR parser.

Regenerate the golden files with `GIMLETC_UPDATE_GOLDEN=1 pytest tests/test_ir.py`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gimletc.ir import (
    ASYNC_TOKEN,
    Graph,
    IRError,
    Op,
    Type,
    Value,
    parse_graph,
    print_graph,
    to_dot,
    to_mermaid,
    verify,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GIMLETC_UPDATE_GOLDEN") == "1"


def tok(n: float) -> Type:
    return Type("tokens", n)


def kv(n: float) -> Type:
    return Type("kv", n)


# ---- hand-built graphs, one per level -------------------------------------------------------


def agent_loop_graph() -> Graph:
    """The brief's example, grown: retrieval, a loop with a tool and code, a branch, tricky strings."""
    body = Graph(
        (
            Op(
                "agent.tool",
                "run",
                ("it",),
                (Value("run", tok(20)),),
                {"tool": "pytest", "output_tokens": 20, "cpu_s": 3.0},
            ),
            Op("agent.code", "lint", ("run",), (Value("lint", tok(8)),), {"cpu_s": 1e-05, "output_tokens": 8}),
            Op("agent.yield", "fix.yield", ("lint",)),
        ),
        args=(Value("it", tok(50)),),
    )
    short = Graph((Op("agent.yield", "answer.short", ("fix",)),))
    long = Graph(
        (
            Op(
                "agent.llm",
                "expand",
                ("fix", "docs"),
                (Value("long", tok(400)),),
                {"model": "llama-3.1-8b", "output_tokens": 400},
            ),
            Op("agent.yield", "answer.long", ("long",)),
        )
    )
    return Graph(
        (
            Op("agent.input", "req", (), (Value("req", tok(100)),), {"tokens": 100}),
            Op(
                "agent.retrieve",
                "search",
                ("req",),
                (Value("docs", tok(1536)),),
                {"index_docs": 1_000_000, "k": 3, "doc_tokens": 512, "note": 'say "hi"\\ then\nstop\t\x00'},
            ),
            Op(
                "agent.llm",
                "plan",
                ("req", "docs"),
                (Value("plan", tok(50)),),
                {
                    "model": "llama-3.1-8b",
                    "output_tokens": 50,
                    "system_tokens": 200,
                    "draft": "llama-3.2-1b",
                    "draft_k": 4,
                    "acceptance": 0.7,
                },
            ),
            Op("agent.loop", "fix", ("plan",), (Value("fix", tok(8)),), {"expected": 2.5, "max": 8}, (body,)),
            Op(
                "agent.branch",
                "answer",
                (),
                (Value("answer", tok(400)),),
                {"probabilities": (0.25, 0.75)},
                (short, long),
            ),
            Op("agent.output", "out", ("answer",), attrs={"devices": ("cpu-0", ("é", True, -1, 1e-300), ())}),
        ),
        attrs={"gimlet.level": "agent", "gimlet.source": "examples/coder.py"},
    )


def model_graph() -> Graph:
    """An LLM call expanded into prefill and decode with the KV cache as a value, partitioned and placed."""
    return Graph(
        (
            Op("agent.input", "req", (), (Value("req", tok(2048)),), {"tokens": 2048}),
            Op(
                "model.prefill",
                "chat.prefill",
                ("req",),
                (Value("chat.kv", kv(268435456)),),
                {
                    "model": "llama-3.1-8b",
                    "tokens": 2048,
                    "ctx": 0,
                    "batch": 1,
                    "of": "chat",
                    "partition": "phase",
                    "device": "h100-0",
                },
            ),
            Op(
                "model.decode",
                "chat.decode",
                ("chat.kv",),
                (Value("chat", tok(256)),),
                {
                    "model": "llama-3.1-8b",
                    "tokens": 256,
                    "ctx": 2048,
                    "of": "chat",
                    "partition": "phase",
                    "device": "corsair-0",
                    "seconds": 0.75,
                },
            ),
            Op("agent.output", "out", ("chat",)),
        ),
        attrs={"gimlet.level": "model"},
    )


def exec_graph() -> Graph:
    """Prefill on one GPU, the KV cache sent to another vendor's GPU, converted, then decode; tokens order it.

    Exec level: the input and the output are lowered to computes too, each on its device."""
    return Graph(
        (
            Op(
                "exec.compute",
                "req",
                (),
                (Value("req", tok(512)), Value("tin", ASYNC_TOKEN)),
                {"of": "req", "device": "h100-0", "seconds": 0.0, "kind_of": "agent.input", "tokens": 512},
            ),
            Op(
                "exec.compute",
                "prefill",
                ("req", "tin"),
                (Value("kv", kv(67108864)), Value("t0", ASYNC_TOKEN)),
                {"of": "chat.prefill", "device": "h100-0", "seconds": 0.012, "kind_of": "model.prefill", "layers": (0, 32)},
            ),
            Op(
                "exec.send",
                "send.kv",
                ("kv", "t0"),
                (Value("t1", ASYNC_TOKEN),),
                {
                    "src": "h100-0",
                    "dst": "mi300x-0",
                    "route": "host",
                    "bytes": 67108864,
                    "seconds": 0.0021,
                    "channel": "chat.kv",
                    "chunks": 4,
                },
            ),
            Op(
                "exec.recv",
                "recv.kv",
                ("t1",),
                (Value("kv.remote", kv(67108864)), Value("t2", ASYNC_TOKEN)),
                {"src": "h100-0", "dst": "mi300x-0", "bytes": 67108864, "channel": "chat.kv"},
            ),
            Op(
                "exec.convert",
                "convert.kv",
                ("kv.remote", "t2"),
                (Value("kv.amd", kv(67108864)), Value("t3", ASYNC_TOKEN)),
                {
                    "device": "mi300x-0",
                    "from_layout": "paged-16",
                    "to_layout": "paged-64",
                    "from_dtype": "bf16",
                    "to_dtype": "fp8",
                    "seconds": 0.0004,
                },
            ),
            Op("exec.await", "join", ("t0", "t3"), (Value("t4", ASYNC_TOKEN),)),
            Op(
                "exec.compute",
                "decode",
                ("kv.amd", "t4"),
                (Value("chat", tok(128)), Value("t5", ASYNC_TOKEN)),
                {"of": "chat.decode", "device": "mi300x-0", "seconds": 1.5},
            ),
            Op(
                "exec.compute",
                "out",
                ("chat", "t5"),
                (Value("done", ASYNC_TOKEN),),
                {"of": "out", "device": "mi300x-0", "seconds": 0.0, "kind_of": "agent.output"},
            ),
        ),
        attrs={"gimlet.level": "exec"},
    )


GOLDEN_GRAPHS: dict[str, Callable[[], Graph]] = {
    "agent_loop": agent_loop_graph,
    "model_phase": model_graph,
    "exec_small": exec_graph,
}


def _strict(x: Any) -> Any:
    """A structure that compares attribute values by type too (Op equality says 1 == 1.0 == True)."""
    if isinstance(x, Graph):
        return ("graph", tuple(_strict(o) for o in x.ops), x.args, _strict(dict(x.attrs)))
    if isinstance(x, Op):
        regions = tuple(_strict(r) for r in x.regions)
        return ("op", x.kind, x.name, x.operands, x.results, _strict(dict(x.attrs)), regions)
    if isinstance(x, dict):
        return tuple((k, _strict(v)) for k, v in x.items())
    if isinstance(x, tuple):
        return ("tuple", tuple(_strict(v) for v in x))
    if isinstance(x, float):
        return ("float", repr(x))
    return (type(x).__name__, x)


def _assert_round_trip(g: Graph) -> str:
    text = print_graph(g)
    back = parse_graph(text)
    assert back == g
    assert _strict(back) == _strict(g)
    assert print_graph(back) == text
    return text


# ---- golden text ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN_GRAPHS))
def test_golden_text(name: str) -> None:
    g = verify(GOLDEN_GRAPHS[name]())
    text = _assert_round_trip(g)
    path = GOLDEN / f"{name}.mlir"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{path} is stale; rerun with GIMLETC_UPDATE_GOLDEN=1"
    assert verify(parse_graph(path.read_text(encoding="utf-8"))) == g


def test_print_matches_documented_format() -> None:
    body = Graph(
        (
            Op(
                "agent.tool",
                "run",
                ("it",),
                (Value("run", tok(20)),),
                {"tool": "pytest", "output_tokens": 20, "cpu_s": 3.0},
            ),
            Op("agent.yield", "fix.yield", ("run",)),
        ),
        args=(Value("it", tok(50)),),
    )
    g = Graph(
        (
            Op("agent.input", "req", (), (Value("req", tok(100)),), {"tokens": 100}),
            Op(
                "agent.llm", "plan", ("req",), (Value("plan", tok(50)),), {"model": "llama-3.1-8b", "output_tokens": 50}
            ),
            Op("agent.loop", "fix", ("plan",), (Value("fix", tok(20)),), {"expected": 2.5, "max": 8}, (body,)),
            Op("agent.output", "out", ("fix",)),
        ),
        attrs={"gimlet.level": "agent"},
    )
    assert print_graph(verify(g)) == (
        'module attributes {gimlet.level = "agent"} {\n'
        '  %req = "agent.input"() {sym_name = "req", tokens = 100 : i64} : () -> !gimlet.tokens<100>\n'
        '  %plan = "agent.llm"(%req) {model = "llama-3.1-8b", output_tokens = 50 : i64, sym_name = "plan"}'
        " : (!gimlet.tokens<100>) -> !gimlet.tokens<50>\n"
        '  %fix = "agent.loop"(%plan) ({\n'
        "  ^bb0(%it: !gimlet.tokens<50>):\n"
        '    %run = "agent.tool"(%it) {cpu_s = 3.0 : f64, output_tokens = 20 : i64, sym_name = "run", tool = "pytest"}'
        " : (!gimlet.tokens<50>) -> !gimlet.tokens<20>\n"
        '    "agent.yield"(%run) {sym_name = "fix.yield"} : (!gimlet.tokens<20>) -> ()\n'
        '  }) {expected = 2.5 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<50>) -> !gimlet.tokens<20>\n'
        '  "agent.output"(%fix) {sym_name = "out"} : (!gimlet.tokens<20>) -> ()\n'
        "}\n"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.5, "2.5 : f64"),
        (1e-05, "1.0e-05 : f64"),
        (1e16, "1.0e+16 : f64"),
        (-0.0, "-0.0 : f64"),
        (7, "7 : i64"),
        (2**64, "18446744073709551616 : i128"),
        (True, "true"),
        ((), "[]"),
        ((1, ("a", False)), '[1 : i64, ["a", false]]'),
        ('q"b\\n\n\t\x00é\u2028', '"q\\"b\\\\n\\n\\09\\00é\\E2\\80\\A8"'),
    ],
)
def test_attribute_spelling(value: Any, text: str) -> None:
    g = Graph(attrs={"x": value})
    assert print_graph(g) == f"module attributes {{x = {text}}} {{\n}}\n"
    assert _strict(parse_graph(print_graph(g))) == _strict(g)


def test_sizes_and_types_spelling() -> None:
    g = Graph(
        (
            Op(
                "exec.recv",
                "r",
                ("x",),
                (
                    Value("a", Type("act", 3.0)),
                    Value("b", Type("bytes", 2.5)),
                    Value("c", kv(1e-05)),
                    Value("t", ASYNC_TOKEN),
                ),
            ),
        ),
        args=(Value("x", ASYNC_TOKEN),),
    )
    text = print_graph(g)
    assert "-> (!gimlet.act<3>, !gimlet.bytes<2.5>, !gimlet.kv<1.0e-05>, !async.token)" in text
    assert text.startswith("module {\n^bb0(%x: !async.token):\n")
    assert parse_graph(text) == g


# ---- generated graphs: verify, round trip, determinism -----------------------------------------

TRICKY = [
    "",
    '"',
    "\\",
    '\\"',
    "a\nb",
    "\t",
    "\x00",
    "\x7f",
    "é",
    "日本",
    "💩",
    "\u2028",
    "\u00a0",
    "\\n",
    "}",
    "{",
    "%x",
    "// c",
    "sym_name",
]
VALUE_BASE = st.one_of(
    st.from_regex(r"[A-Za-z_.$-][A-Za-z0-9_.$-]{0,6}", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}", fullmatch=True),
)
NONNEG_FLOATS = st.one_of(
    st.sampled_from([0.0, 0.1, 3.0, 1e-300, 5e-324, 1e16, 1.5e300, 2.5, 1e-05]),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False),
)
FLOATS = st.one_of(NONNEG_FLOATS, st.floats(allow_nan=False, allow_infinity=False))
INTS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([2**64, -(2**70), 0]))
NONNEG_INTS = st.integers(0, 2**40)
SIZES = st.one_of(st.integers(0, 2**40), NONNEG_FLOATS.filter(lambda x: x < 1e30))


def _strings(surrogates: bool) -> st.SearchStrategy[str]:
    extra = ["\ud800", "a\udfffb"] if surrogates else []
    return st.one_of(st.sampled_from(TRICKY + extra), st.text(max_size=10))


def _attr_values(surrogates: bool) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.booleans(), INTS, FLOATS, _strings(surrogates))
    return st.recursive(scalars, lambda c: st.lists(c, max_size=3).map(tuple), max_leaves=6)


class _Builder:
    """Draws valid graphs: operands only from earlier values, so acyclic by construction."""

    def __init__(self, draw: Any, surrogates: bool) -> None:
        self.draw = draw
        self.strings = _strings(surrogates)
        self.attr_values = _attr_values(surrogates)
        self.values: set[str] = set()
        self.ops: set[str] = set()

    def value(self, t: Type) -> Value:
        name = self.draw(VALUE_BASE)
        while name in self.values:
            name += "0"
        self.values.add(name)
        return Value(name, t)

    def op_name(self) -> str:
        name = self.draw(self.strings)
        while name in self.ops:
            name += "'"
        self.ops.add(name)
        return name

    def data_type(self) -> Type:
        kind = self.draw(st.sampled_from(["tokens", "kv", "act", "bytes"]))
        return Type(kind, self.draw(NONNEG_INTS if kind == "tokens" else SIZES))

    def common(self) -> dict[str, Any]:
        d = self.draw
        out: dict[str, Any] = {}
        for key, strat in (
            ("note", self.strings),
            ("device", self.strings),
            ("partition", self.strings),
            ("devices", st.lists(self.attr_values, max_size=3).map(tuple)),
            ("seconds", st.one_of(NONNEG_FLOATS, NONNEG_INTS)),
        ):
            if d(st.integers(0, 3)) == 0:
                out[key] = d(strat)
        return out

    def pick(self, avail: list[Value], lo: int, hi: int, tokens_only: bool = False) -> tuple[str, ...]:
        pool = [v for v in avail if v.type.kind == "token"] if tokens_only else avail
        return (
            tuple(v.name for v in self.draw(st.lists(st.sampled_from(pool), min_size=lo, max_size=hi))) if pool else ()
        )

    def block(self, avail: list[Value], depth: int, n: int) -> tuple[list[Op], list[Value]]:
        ops: list[Op] = []
        avail = list(avail)
        for _ in range(n):
            kinds = ["agent.input", "agent.llm", "agent.tool", "agent.code", "exec.compute"]
            if avail:
                kinds += ["agent.retrieve", "agent.output", "model.prefill", "exec.recv"]
                if depth < 2:
                    kinds += ["agent.loop", "agent.branch"]
            if any(v.type.kind == "token" for v in avail):
                kinds.append("exec.await")
            op = self.op(self.draw(st.sampled_from(kinds)), avail, depth)
            ops.append(op)
            avail.extend(op.results)
        return ops, avail

    def region(self, avail: list[Value], args: tuple[Value, ...], depth: int, n_yield: int | None) -> Graph:
        ops, inner = self.block([*avail, *args], depth + 1, self.draw(st.integers(0, 3)))
        n = n_yield if n_yield is not None else self.draw(st.integers(0, 2))
        yielded = (
            tuple(v.name for v in self.draw(st.lists(st.sampled_from(inner), min_size=n, max_size=n))) if inner else ()
        )
        return Graph((*ops, Op("agent.yield", self.op_name(), yielded)), args)

    def op(self, kind: str, avail: list[Value], depth: int) -> Op:
        d, s, name = self.draw, self.strings, self.op_name()
        attrs = self.common()
        if kind == "agent.input":
            return Op(kind, name, (), (self.value(tok(d(NONNEG_INTS))),), {**attrs, "tokens": d(NONNEG_INTS)})
        if kind in ("agent.llm", "agent.tool", "agent.code"):
            required = {
                "agent.llm": {"model": d(s), "acceptance": d(NONNEG_FLOATS)},
                "agent.tool": {"tool": d(s), "cpu_s": d(NONNEG_FLOATS)},
                "agent.code": {"cpu_s": d(st.one_of(NONNEG_FLOATS, NONNEG_INTS))},
            }[kind]
            attrs |= {**required, "output_tokens": d(NONNEG_INTS)}
            return Op(kind, name, self.pick(avail, 0, 3), (self.value(tok(d(NONNEG_INTS))),), attrs)
        if kind == "agent.retrieve":
            attrs |= {"index_docs": d(NONNEG_INTS), "k": d(NONNEG_INTS), "doc_tokens": d(NONNEG_INTS)}
            return Op(kind, name, self.pick(avail, 1, 2), (self.value(tok(d(NONNEG_INTS))),), attrs)
        if kind == "agent.output":
            return Op(kind, name, self.pick(avail, 1, 3), (), attrs)
        if kind == "model.prefill":
            attrs |= {"model": d(s), "tokens": d(NONNEG_INTS)}
            return Op(kind, name, self.pick(avail, 1, 2), (self.value(kv(d(SIZES))),), attrs)
        if kind == "exec.compute":
            attrs |= {"of": d(s), "device": d(s), "seconds": d(NONNEG_FLOATS)}
            results = tuple(self.value(self.data_type()) for _ in range(d(st.integers(0, 2))))
            return Op(kind, name, self.pick(avail, 0, 3), (*results, self.value(ASYNC_TOKEN)), attrs)
        if kind == "exec.recv":
            attrs |= {"src": d(s), "dst": d(s), "bytes": d(NONNEG_FLOATS), "channel": d(s)}
            return Op(
                kind, name, self.pick(avail, 1, 2), (self.value(self.data_type()), self.value(ASYNC_TOKEN)), attrs
            )
        if kind == "exec.await":
            return Op(kind, name, self.pick(avail, 1, 3, tokens_only=True), (self.value(ASYNC_TOKEN),), attrs)
        if kind == "agent.loop":
            operands = self.pick(avail, 1, 2)
            types = {v.name: v.type for v in avail}
            args = tuple(self.value(types[o]) for o in operands)
            body = self.region(avail, args, depth, None)
            results = tuple(self.value(self._type_in(body, y, types)) for y in body.ops[-1].operands)
            attrs |= {"expected": d(NONNEG_FLOATS), "max": d(NONNEG_INTS)}
            return Op(kind, name, operands, results, attrs, (body,))
        assert kind == "agent.branch"
        n = d(st.integers(0, 2))
        regions = tuple(self.region(avail, (), depth, n) for _ in range(d(st.integers(1, 3))))
        results = tuple(self.value(self.data_type()) for _ in range(n))
        attrs["probabilities"] = tuple(d(st.lists(NONNEG_FLOATS, min_size=len(regions), max_size=len(regions))))
        return Op(kind, name, (), results, attrs, regions)

    @staticmethod
    def _type_in(region: Graph, value: str, outer: dict[str, Type]) -> Type:
        found = {v.name: v.type for v in region.args} | {v.name: v.type for o, _ in region.walk() for v in o.results}
        return found.get(value) or outer[value]


@st.composite
def graphs(draw: Any, surrogates: bool = True) -> Graph:
    """Valid graphs; with surrogates=False, also valid MLIR (which wants dotted module attribute names)."""
    b = _Builder(draw, surrogates)
    ops, _ = b.block([], 0, draw(st.integers(1, 8)))
    # Not gimlet.level: verify() checks a level's invariants (tests/test_levels.py has its own graphs).
    keys = st.one_of(st.sampled_from(["gimlet.name", "a-b", "true", "x y", "é"]),
                     st.text(min_size=1, max_size=6).filter(lambda k: k != "gimlet.level"))
    if not surrogates:
        keys = keys.map(lambda k: k if "." in k else f"gimlet.{k}")
    attrs = draw(st.dictionaries(keys, b.attr_values, max_size=3))
    return Graph(tuple(ops), attrs=attrs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_print_parse_round_trip(g: Graph) -> None:
    verify(g)
    text = _assert_round_trip(g)
    assert print_graph(g) == text  # deterministic
    assert to_mermaid(g) == to_mermaid(g) and to_dot(g) == to_dot(g)


# ---- printer and parser errors -------------------------------------------------------------


def _one(op: Op, args: tuple[Value, ...] = ()) -> Graph:
    return Graph((op,), args)


@pytest.mark.parametrize(
    ("graph", "match"),
    [
        (_one(Op("agent.input", "i", (), (Value("a b", tok(1)),))), r"@i .*%a b"),
        (_one(Op("agent.input", "i", (), (Value("0a", tok(1)),))), r"@i .*%0a"),
        (_one(Op("agent.input", "i", (), (Value("", tok(1)),))), r"@i .*value name"),
        (_one(Op("agent.input", "i", attrs={"f": float("inf")})), r"@i .*inf.*attribute f"),
        (_one(Op("agent.input", "i", attrs={"f": (1.0, float("nan"))})), r"@i .*nan"),
        (_one(Op("agent.input", "i", attrs={"sym_name": "x"})), r"@i .*sym_name"),
        (_one(Op("agent.output", "o", ("ghost",))), r"@o .*%ghost"),
        (_one(Op("agent.loop", "l", regions=(Graph(attrs={"k": 1}),))), r"@l .*region 0"),
        (Graph(attrs={"": 1}), "empty name"),
    ],
)
def test_print_rejects_what_has_no_text_form(graph: Graph, match: str) -> None:
    with pytest.raises(IRError, match=match):
        print_graph(graph)


def test_types_reject_infinite_sizes_and_sized_tokens() -> None:
    with pytest.raises(IRError, match="infinite"):
        Type("kv", float("inf"))
    with pytest.raises(IRError, match="async.token"):
        Type("token", 3)


def test_print_resolves_forward_uses_for_dumps() -> None:
    """An invalid graph (use before definition) still prints, so a failing pass can dump it."""
    g = Graph(
        (
            Op("agent.output", "o", ("x",)),
            Op("agent.input", "i", (), (Value("x", tok(3)),), {"tokens": 3}),
        )
    )
    assert parse_graph(print_graph(g)) == g
    with pytest.raises(IRError, match="@o"):
        verify(g)


GOOD_OP = '  %a = "agent.input"() {sym_name = "i", tokens = 1 : i64} : () -> !gimlet.tokens<1>\n'


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"line 1, column 1: expected 'module'"),
        ("module {\n" + GOOD_OP, r"line 3, column 1: expected '\}' to close the region, got end of input"),
        ("module {\n" + GOOD_OP + "}\n}", r"line 4, column 1: expected end of input"),
        (
            "module {\n" + GOOD_OP.replace("tokens<1>", "tokenz<1>") + "}",
            r"line 2, column .*unknown type !gimlet.tokenz<1>",
        ),
        ("module {\n" + GOOD_OP.replace("<1>", "<x>") + "}", r"line 2.*numeric size"),
        ("module {\n" + GOOD_OP.replace("<1>", "<-1>") + "}", r"line 2.*negative"),
        ("module {\n" + GOOD_OP.replace('"i"', '"i\\q"') + "}", r"line 2, column 38: unknown escape '\\q'"),
        ("module {\n" + GOOD_OP.replace('"i"', '"i\\FF"') + "}", r"line 2.*not valid UTF-8"),
        ("module {\n" + GOOD_OP.replace('"i"', '"i') + "}", r"line 2.*no closing"),
        (
            "module {\n" + GOOD_OP.replace('sym_name = "i", ', "") + "}",
            r"line 2, column 3: op agent.input has no sym_name",
        ),
        ("module {\n" + GOOD_OP.replace("%a = ", "%a, %b = ") + "}", r"line 2.*@i .*2 results but 1 result types"),
        ("module {\n" + GOOD_OP.replace("()", "(%q)", 1) + "}", r"line 2.*@i .*1 operands but 0 operand types"),
        ("module {\n" + GOOD_OP.replace("1 : i64", "1.5 : i64") + "}", r"line 2.*1.5 cannot have type i64"),
        (
            "module {\n" + GOOD_OP.replace("tokens = 1", "tokens = 1, tokens = 1") + "}",
            r"line 2.*tokens is given twice",
        ),
        ("module {\n" + GOOD_OP.replace("%a", "%0a") + "}", r"line 2, column 3: invalid value name %0a"),
        ("module {\n" + GOOD_OP + "  # oops\n}", r"line 3, column 3: unexpected character '#'"),
        ("module {\n  ^bb1:\n" + GOOD_OP + "  ^bb2:\n}", r"line 4.*one block"),
        (
            "module {\n" + GOOD_OP + '  "agent.output"(%a) {sym_name = "o"} : (!async.token) -> ()\n}',
            r"line 3.*@o .*uses %a as !async.token, but it was defined as !gimlet.tokens<1>",
        ),
        (
            'module {\n  "agent.yield"() ({\n  }) {sym_name = "y"} : () -> ()\n  %x = \n}',
            r"line 5, column 1: expected an op kind",
        ),
    ],
)
def test_parse_errors_name_the_line(text: str, match: str) -> None:
    with pytest.raises(IRError, match=match):
        parse_graph(text)


def test_parse_accepts_comments_and_defaults() -> None:
    """Untyped literals and comments, as hand-written text has them."""
    g = parse_graph(
        "// a comment\nmodule {\n"
        '  "agent.output"() {f = 2.5, i = 3, j = 4 : f64, sym_name = "o"} : () -> ()  // end\n'
        "}\n"
    )
    assert _strict(g.ops[0].attrs["f"]) == ("float", "2.5")
    assert _strict(g.ops[0].attrs["i"]) == ("int", 3)
    assert _strict(g.ops[0].attrs["j"]) == ("float", "4.0")


def test_parse_does_not_verify() -> None:
    text = 'module {\n  "nope.op"(%ghost) {sym_name = "x"} : (!async.token) -> ()\n}\n'
    g = parse_graph(text)
    assert g.ops[0].kind == "nope.op" and g.ops[0].operands == ("ghost",)
    with pytest.raises(IRError, match="nope.op"):
        verify(g)
    with pytest.raises(IRError, match="@x .*%ghost"):
        print_graph(g)  # the type of %ghost is unknown


# ---- verify() failures name the op ---------------------------------------------------------


def _input(name: str = "in", value: str = "x") -> Op:
    return Op("agent.input", name, (), (Value(value, tok(10)),), {"tokens": 10})


def _tool(name: str, operand: str, result: str, **extra: Any) -> Op:
    return Op("agent.tool", name, (operand,), (Value(result, tok(5)),), {"tool": "t", "output_tokens": 5, **extra})


def _loop(name: str, operands: tuple[str, ...], body: Graph, results: tuple[Value, ...]) -> Op:
    return Op("agent.loop", name, operands, results, {"expected": 1.5, "max": 3}, (body,))


VERIFY_FAILURES: dict[str, tuple[Graph, str]] = {
    "use before definition": (Graph((_tool("early", "x", "y"), _input())), r"@early .*uses %x before"),
    "duplicate op names": (Graph((_input("dup"), _tool("dup", "x", "y"))), r"@dup is used twice"),
    "duplicate name inside a region": (
        Graph(
            (
                _input(),
                _loop(
                    "l", ("x",), Graph((_tool("in", "a", "b"), Op("agent.yield", "y", ("b",)))), (Value("r", tok(5)),)
                ),
            )
        ),
        r"@in is used twice",
    ),
    "unknown attribute": (Graph((_input(), _tool("t", "x", "y", colour="red"))), r"@t .*unknown attribute colour"),
    "wrong attribute type": (
        Graph((Op("agent.input", "in", (), (Value("x", tok(10)),), {"tokens": "ten"}),)),
        r"@in .*attribute tokens should be int",
    ),
    "bool is not an int": (
        Graph((Op("agent.input", "in", (), (Value("x", tok(10)),), {"tokens": True}),)),
        r"@in .*attribute tokens should be int",
    ),
    "missing required attribute": (
        Graph((Op("agent.input", "in", (), (Value("x", tok(10)),)),)),
        r"@in .*missing attribute tokens",
    ),
    "negative attribute": (Graph((_input(), _tool("t", "x", "y", cpu_s=-1.0))), r"@t .*cpu_s is negative"),
    "region not ending in agent.yield": (
        Graph((_input(), _loop("l", ("x",), Graph((_tool("t", "a", "b"),), (Value("a", tok(10)),)), ()))),
        r"@l .*must end with agent.yield",
    ),
    "loop operands vs body args": (
        Graph((_input(), _loop("l", ("x",), Graph((Op("agent.yield", "y"),)), ()))),
        r"@l .*1 operands for 0 body arguments",
    ),
    "loop yields vs results": (
        Graph((_input(), _loop("l", ("x",), Graph((Op("agent.yield", "y", ("a",)),), (Value("a", tok(10)),)), ()))),
        r"@l .*yields 1 values for 0 results",
    ),
    "terminator not last": (
        Graph(
            (
                _input(),
                _loop(
                    "l", ("x",), Graph((Op("agent.yield", "y"), Op("agent.yield", "y2")), (Value("a", tok(10)),)), ()
                ),
            )
        ),
        r"@y .*must be the last op",
    ),
    "wrong result count": (Graph((Op("agent.input", "in", (), (), {"tokens": 1}),)), r"@in .*0 results, expected 1..1"),
    "region value used outside": (
        Graph(
            (
                _input(),
                _loop(
                    "l",
                    ("x",),
                    Graph((_tool("t", "a", "inner"), Op("agent.yield", "y", ("inner",))), (Value("a", tok(10)),)),
                    (Value("r", tok(5)),),
                ),
                _tool("after", "inner", "z"),
            )
        ),
        r"@after .*%inner",
    ),
    "exec op without a done token": (
        Graph((Op("exec.compute", "c", (), (Value("v", kv(8)),), {"of": "x", "device": "d", "seconds": 1.0}),)),
        r"@c .*last result must be an !async.token",
    ),
    "await on data": (
        Graph((_input(), Op("exec.await", "w", ("x",), (Value("t", ASYNC_TOKEN),)))),
        r"@w .*%x is not an !async.token",
    ),
}


@pytest.mark.parametrize("case", sorted(VERIFY_FAILURES))
def test_verify_failure_names_the_op(case: str) -> None:
    graph, match = VERIFY_FAILURES[case]
    with pytest.raises(IRError, match=match):
        verify(graph)


def test_verify_unknown_op_kind_names_the_kind() -> None:
    with pytest.raises(IRError, match="unknown op kind 'agent.dance'"):
        verify(Graph((Op("agent.dance", "shuffle"),)))


def test_verify_unknown_op_kind_names_the_op() -> None:
    with pytest.raises(IRError, match="@shuffle"):
        verify(Graph((Op("agent.dance", "shuffle"),)))


# ---- the networkx view ---------------------------------------------------------------------


def test_to_networkx_edges_and_bytes() -> None:
    g = agent_loop_graph()
    G = g.to_networkx()
    assert list(G.nodes) == [op.name for op in g.ops]
    assert G["req"]["search"] == {"values": ("req",), "bytes": 400}
    assert G["req"]["plan"]["bytes"] == 400 and G["search"]["plan"]["values"] == ("docs",)
    # values captured by a region count as used by the region's op
    assert G["plan"]["fix"]["values"] == ("plan",)
    assert G["search"]["answer"] == {"values": ("docs",), "bytes": 1536 * 4}
    assert G["fix"]["answer"]["values"] == ("fix",)
    assert nx.is_directed_acyclic_graph(G)
    assert set(G.edges) == {
        ("req", "search"),
        ("req", "plan"),
        ("search", "plan"),
        ("plan", "fix"),
        ("fix", "answer"),
        ("search", "answer"),
        ("answer", "out"),
    }


def test_to_networkx_tokens_and_merged_values() -> None:
    g = exec_graph()
    G = g.to_networkx()
    assert G["prefill"]["send.kv"] == {"values": ("kv", "t0"), "bytes": 67108864.0}
    assert G["prefill"]["join"]["bytes"] == 0
    H = g.to_networkx(tokens=False)
    assert not H.has_edge("prefill", "join") and not H.has_edge("send.kv", "recv.kv")
    assert H["prefill"]["send.kv"] == {"values": ("kv",), "bytes": 67108864.0}
    assert list(nx.topological_sort(G)) == [op.name for op in g.ops]


def test_to_networkx_nested_region_args_do_not_capture_outer_names() -> None:
    """%z is an argument of the inner loop's body; a later top-level op also defines %z (valid SSA)."""
    inner = Graph((_tool("use_z", "z", "w"), Op("agent.yield", "iy", ("w",))), (Value("z", tok(5)),))
    body = Graph(
        (_loop("B", ("x2",), inner, (Value("b", tok(5)),)), Op("agent.yield", "ay", ("b",))), (Value("x2", tok(10)),)
    )
    g = verify(Graph((_input(), _loop("A", ("x",), body, (Value("a", tok(5)),)), _tool("later", "a", "z"))))
    assert parse_graph(print_graph(g)) == g
    assert set(g.to_networkx().edges) == {("in", "A"), ("A", "later")}


# ---- Mermaid and DOT ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN_GRAPHS))
def test_mermaid_and_dot_smoke(name: str) -> None:
    g = GOLDEN_GRAPHS[name]()
    mm, dot = to_mermaid(g), to_dot(g)
    assert mm == to_mermaid(GOLDEN_GRAPHS[name]()) and dot == to_dot(GOLDEN_GRAPHS[name]())
    assert mm.startswith("flowchart TD\n") and dot.startswith("digraph gimlet {\n") and dot.endswith("}\n")
    for op, _ in g.walk():
        ident = re.sub(r"[^A-Za-z0-9_]", "_", op.name)
        assert re.search(rf"^\s*{re.escape(ident)}\[", mm, re.M), op.name
        assert f'"{ident}" [label=' in dot, op.name
    assert mm.count("subgraph ") == sum(line.strip() == "end" for line in mm.splitlines())
    assert dot.count("{") == dot.count("}")


def test_mermaid_edges_and_regions() -> None:
    mm = to_mermaid(agent_loop_graph())
    assert "  req -->|%req 100 tok| plan\n" in mm
    assert "  fix -->|%it 50 tok| run\n" in mm  # a region argument comes from the loop
    assert '  subgraph fix__r0["fix body"]\n' in mm
    assert '  subgraph answer__r1["answer region 1"]\n' in mm
    assert "search -->|%docs 1536 tok| expand" in mm  # captured from outside the region
    assert 'fix_yield["fix.yield<br/>agent.yield"]' in mm


def test_exec_graphs_are_coloured_by_device() -> None:
    mm, dot = to_mermaid(exec_graph()), to_dot(exec_graph())
    assert "class req,prefill dev0" in mm and "class convert_kv,decode,out dev1" in mm
    assert "prefill -->|%kv 67.1 MB| send_kv" in mm
    assert '"send_kv" -> "recv_kv" [label="%t1 token", style=dashed];' in dot
    assert '"prefill" [label="prefill\\nexec.compute\\n@ h100-0", fillcolor="#cfe8f7"];' in dot


def test_export_ids_are_sanitised_and_unique() -> None:
    g = Graph(
        (
            Op("agent.input", "a.b", (), (Value("x", tok(1)),), {"tokens": 1}),
            Op("agent.input", "a_b", (), (Value("y", tok(1)),), {"tokens": 1}),
            Op("agent.input", "end", (), (Value("z", tok(1)),), {"tokens": 1}),
            Op("agent.output", 'say "hi" | 1', ("x", "y", "z")),
        )
    )
    mm = to_mermaid(verify(g))
    assert 'a_b["a.b<br/>agent.input"]' in mm and 'a_b_2["a_b<br/>agent.input"]' in mm
    assert 'op_end["end<br/>agent.input"]' in mm
    assert 'say__hi____1["say #34;hi#34; #124; 1<br/>agent.output"]' in mm
    assert "a_b_2 -->|%y 1 tok| say__hi____1" in mm
    assert '"say__hi____1" [label="say \\"hi\\" | 1\\nagent.output"];' in to_dot(g)


# ---- the real MLIR parser -------------------------------------------------------------------


def _mlir_attr(a: Any) -> Any:
    from iree.compiler import ir

    if isinstance(a, ir.IntegerAttr) and not isinstance(a, ir.BoolAttr):
        width = ir.IntegerType(a.type).width  # the bindings read wide signless ints as unsigned
        return a.value - (1 << width) if a.value >= 1 << (width - 1) else a.value
    for cls in (ir.BoolAttr, ir.FloatAttr, ir.StringAttr):
        if isinstance(a, cls):
            return a.value
    assert isinstance(a, ir.ArrayAttr), a
    return tuple(_mlir_attr(x) for x in a)


def _mlir_ops(block: Any) -> tuple:
    """Kind, attributes, result types and regions of each op, as MLIR itself read them."""
    out = []
    for o in (x.operation for x in block.operations):
        attrs = {k: _mlir_attr(o.attributes[k]) for k in o.attributes}
        regions = tuple((tuple(str(a.type) for a in b.arguments), _mlir_ops(b)) for r in o.regions for b in r.blocks)
        out.append((o.name, _strict(attrs), tuple(str(r.type) for r in o.results), regions))
    return tuple(out)


def _our_ops(g: Graph) -> tuple:
    from gimletc.ir.text import _type

    out = []
    for op in g.ops:
        attrs = dict(sorted({"sym_name": op.name, **op.attrs}.items()))
        regions = tuple((tuple(_type(a.type, "") for a in r.args), _our_ops(r)) for r in op.regions)
        out.append((op.kind, _strict(attrs), tuple(_type(v.type, "") for v in op.results), regions))
    return tuple(out)


def _mlir_read(text: str) -> tuple:
    from iree.compiler import ir

    ctx = ir.Context()
    ctx.allow_unregistered_dialects = True
    module = ir.Module.parse(text, ctx)
    attrs = {k: _mlir_attr(module.operation.attributes[k]) for k in module.operation.attributes}
    return _strict(attrs), _mlir_ops(module.body)


@pytest.mark.parametrize("name", sorted(GOLDEN_GRAPHS))
def test_golden_text_parses_with_mlir(name: str) -> None:
    pytest.importorskip("iree.compiler")
    g = GOLDEN_GRAPHS[name]()
    assert _mlir_read(print_graph(g)) == (_strict(dict(g.attrs)), _our_ops(g))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(surrogates=False))
def test_generated_text_reads_the_same_in_mlir(g: Graph) -> None:
    """MLIR reads every name, string, float, int and type exactly as we wrote it."""
    pytest.importorskip("iree.compiler")
    assert _mlir_read(print_graph(g)) == (_strict(dict(g.attrs)), _our_ops(g))
