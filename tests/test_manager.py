"""Pass manager: pipeline text, option conversion, the registry, and running passes with checks."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
import typing
from typing import Annotated, ClassVar, Literal

import pytest
from annotated_types import Ge, Gt, Interval
from hypothesis import given
from hypothesis import strategies as st

from gimletc.errors import ConfigError, DoesNotFitError
from gimletc.ir import Graph, IRError, Level, Op, Type, Value
from gimletc.passes import (
    PASS_REGISTRY,
    Pass,
    PassContext,
    PassFailure,
    PassManager,
    PipelineError,
    get_pass_class,
    parse_pipeline,
    register_pass,
)
from gimletc.passes import manager


@dataclass(frozen=True)
class Opts(Pass):
    name: ClassVar[str] = "toy-opts"
    objective: Literal["latency", "energy", "cost"] = "latency"
    k: int = 2
    alpha: float = 0.5
    exact: bool = False
    label: str = "x"
    devices: tuple[str, ...] = ()
    budget_w: float | None = None

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph


@dataclass(frozen=True)
class Tag(Pass):
    """Adds a note to every top-level op (a valid rewrite)."""

    name: ClassVar[str] = "tag"
    note: str = "seen"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        ctx.data.setdefault("tagged", []).append(self.note)
        return graph.replace_ops(op.with_attrs(note=self.note) for op in graph.ops)


@dataclass(frozen=True)
class BreakIR(Pass):
    """Makes the last op use a value nobody defines."""

    name: ClassVar[str] = "break-ir"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        *rest, last = graph.ops
        return graph.replace_ops([*rest, last.with_operands(["nowhere"])])


@dataclass(frozen=True)
class Raise(Pass):
    """Raises the error named by `what`."""

    name: ClassVar[str] = "raise"
    what: Literal["key", "fit", "config", "ir", "none"] = "key"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.what == "key":
            return {}["missing"]
        if self.what == "fit":
            raise DoesNotFitError("llama-3.1-405b decode", "h100-0", 810e9, 80e9)
        if self.what == "config":
            raise ConfigError("cluster.yaml: nodes.0.chips: unknown chip 'h900'")
        if self.what == "ir":
            raise IRError("op @x uses %y before it is defined")
        return None  # type: ignore[return-value]


@dataclass(frozen=True)
class Required(Pass):
    name: ClassVar[str] = "toy-required"
    n: int

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph


@dataclass(frozen=True)
class ByPath(Pass):
    name: ClassVar[str] = "toy-by-path"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph


TOYS = (Opts, Tag, BreakIR, Raise, Required)


@pytest.fixture(autouse=True)
def toy_registry():
    saved, loaded = dict(PASS_REGISTRY), dict(manager._LOADED)
    for cls in TOYS:
        register_pass(cls.name, cls)
    yield
    PASS_REGISTRY.clear()
    PASS_REGISTRY.update(saved)
    manager._LOADED.clear()
    manager._LOADED.update(loaded)


def small_graph() -> Graph:
    q = Value("q", Type("tokens", 12))
    return Graph((Op("agent.input", "in", (), (q,), {"tokens": 12}), Op("agent.output", "out", ("q",))))


def canonical(text: str) -> str:
    return ",".join(map(str, parse_pipeline(text)))


# ---- pipeline text ------------------------------------------------------------------------------


def test_parse_converts_options_to_field_types():
    text = 'toy-opts{objective=energy, k=3, alpha=1e-3, exact=true, label="a b", devices="g0,g1", budget_w=700}'
    (p,) = parse_pipeline(text)
    assert p == Opts("energy", 3, 1e-3, True, "a b", ("g0", "g1"), 700.0)
    assert isinstance(p.k, int) and isinstance(p.alpha, float) and p.exact is True


def test_printing_lists_only_changed_options_in_field_order():
    assert str(Opts()) == "toy-opts"
    assert str(Opts(k=3, objective="energy")) == "toy-opts{objective=energy,k=3}"
    assert canonical(" tag , toy-opts{ k = 3 , objective = energy } ,tag{note=x}") == (
        "tag,toy-opts{objective=energy,k=3},tag{note=x}"
    )
    assert canonical("toy-opts{k=2,objective=latency}") == "toy-opts"  # defaults vanish
    assert canonical("") == "" and canonical("   ") == ""


def test_quoted_values_round_trip():
    p = Opts(label='say "hi", then {go}', devices=("g0", "g1"))
    assert str(p) == 'toy-opts{label="say \\"hi\\", then {go}",devices="g0,g1"}'
    assert parse_pipeline(str(p)) == [p]
    assert parse_pipeline(str(Opts(label=""))) == [Opts(label="")]


@given(
    objective=st.sampled_from(["latency", "energy", "cost"]),
    k=st.integers(-(10**6), 10**6),
    alpha=st.floats(allow_nan=False),
    exact=st.booleans(),
    label=st.text(max_size=12),
    devices=st.lists(st.from_regex(r"[a-z0-9.\-]{1,6}", fullmatch=True), max_size=3).map(tuple),
    budget_w=st.none() | st.floats(0, 1e4),
)
def test_print_parse_round_trip(objective, k, alpha, exact, label, devices, budget_w):
    p = Opts(objective, k, alpha, exact, label, devices, budget_w)
    (back,) = parse_pipeline(str(p))
    assert back == p
    assert canonical(str(p)) == str(p)


def test_option_errors_name_pass_option_and_value():
    cases = {
        "toy-opts{k=three}": ["'toy-opts'", "option k=three", "is not an int"],
        "toy-opts{objective=fast}": ["'toy-opts'", "objective=fast", "one of latency, energy, cost"],
        "toy-opts{exact=yes}": ["exact=yes", "true or false"],
        "toy-opts{alpha=big}": ["alpha=big", "not a number"],
        "toy-opts{budget_w=lots}": ["budget_w=lots", "not a number or none"],
        'toy-opts{label="a b",speed=9}': ["'toy-opts'", "no option 'speed'", "'9'", "objective, k, alpha"],
        "toy-required": ["'toy-required'", "needs option", "n"],
    }
    for text, parts in cases.items():
        with pytest.raises(PipelineError) as e:
            parse_pipeline(text)
        assert all(part in str(e.value) for part in parts), (text, str(e.value))
        assert "\n" not in str(e.value)


@dataclass(frozen=True)
class Bounded(Pass):
    name: ClassVar[str] = "toy-bounded"
    chunks: Annotated[int, Ge(1)] = 8
    share: Annotated[float, Interval(gt=0, le=1)] = 0.5
    stages: Literal[0] | Annotated[int, Ge(2)] = 0
    limit: Annotated[int, Ge(0)] | None = None
    ks: tuple[Annotated[int, Gt(0)], ...] = ()

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("toy-bounded{chunks=0}", "option chunks=0 is not an int >= 1"),
        ("toy-bounded{chunks=-3}", "option chunks=-3 is not an int >= 1"),
        ("toy-bounded{share=0}", "option share=0.0 is not a number > 0 and <= 1"),
        ("toy-bounded{share=1.5}", "option share=1.5 is not a number > 0 and <= 1"),
        ("toy-bounded{share=nan}", "option share=nan is not a number > 0 and <= 1"),
        ("toy-bounded{stages=1}", "option stages=1 is not 0 or an int >= 2"),
        ("toy-bounded{limit=-1}", "option limit=-1 is not an int >= 0 or none"),
        ('toy-bounded{ks="1,0"}', 'option ks="1,0" is not a comma-separated list of an int > 0'),
    ],
)
def test_out_of_bounds_options_fail_at_parse_time(text, shown):
    register_pass("toy-bounded", Bounded)
    with pytest.raises(PipelineError) as e:
        parse_pipeline(text)
    assert str(e.value) == f"pass 'toy-bounded': {shown}"


def test_bounds_hold_at_their_edges_and_for_passes_made_in_python():
    register_pass("toy-bounded", Bounded)
    (p,) = parse_pipeline('toy-bounded{chunks=1,share=1,stages=2,limit=none,ks="1,2"}')
    assert p == Bounded(1, 1.0, 2, None, (1, 2))
    assert parse_pipeline(str(p)) == [p]
    assert parse_pipeline("toy-bounded{stages=0,limit=0}") == [Bounded(stages=0, limit=0)]
    with pytest.raises(PipelineError, match=r"^pass 'toy-bounded': option chunks=0 is not an int >= 1$"):
        Bounded(chunks=0)
    with pytest.raises(PipelineError, match="option chunks=true is not an int >= 1"):
        Bounded(chunks=True)  # a bool is not an int here
    with pytest.raises(PipelineError, match="option objective=fast is not one of latency, energy, cost"):
        Opts(objective="fast")  # type: ignore[arg-type]


def test_an_annotation_that_does_not_resolve_is_an_error_not_an_unchecked_option():
    @dataclass(frozen=True)
    class Unresolved(Pass):
        name: ClassVar[str] = "toy-unresolved"
        mode: NoSuchType = "a"  # type: ignore[name-defined]  # noqa: F821

        def run(self, graph: Graph, ctx: PassContext) -> Graph:
            return graph

    with pytest.raises(PipelineError, match="'toy-unresolved': its annotations do not resolve"):
        Unresolved()


# Every option of every registered pass: what it takes, as the parse error says it.
PASS_OPTIONS = {
    "expand-llm": {},
    "partition-phase": {},
    "partition-layers": {"phases": "one of both, prefill, decode", "stages": "0 or an int >= 2"},
    "partition-attn-ffn": {},
    "speculative": {},
    "place": {
        "objective": "one of latency, energy, cost, throughput, none",
        "exact_limit": "an int >= 0",
        "max_evaluations": "an int >= 0",
        "stack": "one of reference, fused, vllm, sglang, trtllm, none",
        "partitions": "one of auto, none, whole, phase, layers, attn-ffn, speculative",
        "joint_units": "an int >= 0",
    },
    "insert-transfers": {},
    "schedule": {},
    "overlap": {"chunks": "an int >= 1", "stream": "a bool (true or false)"},
}


def test_every_pass_option_is_typed_and_described():
    assert set(PASS_OPTIONS) <= set(PASS_REGISTRY)
    for name, options in PASS_OPTIONS.items():
        cls = get_pass_class(name)
        hints = manager._type_hints(cls)
        assert set(hints) == set(options), name
        for opt, takes in options.items():
            assert manager._describe(hints[opt]) == takes, (name, opt)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("expand-llm,place{objective=fast}", ["'place'", "objective=fast", "latency, energy, cost, throughput"]),
        ("place{exact_limit=-5}", ["'place'", "exact_limit=-5", "an int >= 0"]),
        ("place{max_evaluations=-1}", ["'place'", "max_evaluations=-1", "an int >= 0"]),
        ("place{joint_units=-1}", ["'place'", "joint_units=-1", "an int >= 0"]),
        ("place{partitions=pipeline}", ["'place'", "partitions=pipeline", "auto, none, whole, phase, layers"]),
        ("place{stack=tpu}", ["'place'", "stack=tpu", "reference, fused, vllm, sglang, trtllm"]),
        ("overlap{chunks=0}", ["'overlap'", "chunks=0", "an int >= 1"]),
        ("overlap{stream=maybe}", ["'overlap'", "stream=maybe", "true or false"]),
        ("partition-layers{stages=1}", ["'partition-layers'", "stages=1", "0 or an int >= 2"]),
        ("partition-layers{phases=all}", ["'partition-layers'", "phases=all", "both, prefill, decode"]),
    ],
)
def test_real_pass_options_fail_when_parsed(text, parts):
    with pytest.raises(PipelineError) as e:
        PassManager(text)  # parsing alone: no graph, no cluster, nothing runs
    assert all(part in str(e.value) for part in parts), str(e.value)


def test_option_choices_have_one_owner():
    from gimletc.models.workload import MASKED_VERIFY
    from gimletc.passes.partition import KINDS
    from gimletc.passes.place import OBJECTIVES, Place

    hints = manager._type_hints(Place)
    assert typing.get_args(typing.get_args(hints["objective"])[0]) == OBJECTIVES
    assert tuple(MASKED_VERIFY) == typing.get_args(typing.get_args(hints["stack"])[0])
    assert [c for m in typing.get_args(hints["partitions"]) for c in typing.get_args(m)] == ["auto", "none", *KINDS]
    place = parse_pipeline("place{objective=energy,stack=fused,partitions=none,exact_limit=0}")[0]
    assert str(place) == "place{objective=energy,exact_limit=0,stack=fused,partitions=none}"
    assert parse_pipeline("place{objective=none}") == [Place()]


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("tag,,toy-opts", 4, "expected a pass name"),
        ("tag,", 4, "expected a pass name"),
        ("tag toy-opts", 4, "expected ',' between passes"),
        ("toy-opts{k}", 10, "expected '=' after option 'k'"),
        ("toy-opts{k=1", 12, "expected ',' or '}'"),
        ("toy-opts{k=1,k=2}", 13, "option 'k' of toy-opts given twice"),
        ('toy-opts{label="abc}', 15, "unterminated quoted value"),
        ("toy-opts{k=}", 11, "expected an option value"),
    ],
)
def test_syntax_errors_name_position_and_problem(text, position, problem):
    with pytest.raises(PipelineError) as e:
        parse_pipeline(text)
    assert f"position {position}" in str(e.value) and problem in str(e.value)


def test_unknown_pass_lists_known_names():
    with pytest.raises(PipelineError) as e:
        parse_pipeline("tag,plaec{objective=energy}")
    msg = str(e.value)
    assert "unknown pass 'plaec'" in msg and "position 4" in msg
    assert "place" in msg and "expand-llm" in msg and "toy-opts" in msg
    with pytest.raises(PipelineError, match="unknown pass 'nope'"):
        get_pass_class("nope")


def test_registry_is_lazy_and_loads_by_path():
    assert {"expand-llm", "partition-phase", "place", "insert-transfers", "schedule", "overlap"} <= set(PASS_REGISTRY)
    code = (
        "import sys, gimletc.passes; "
        "print(any(m.startswith('gimletc.passes.') and m not in ('gimletc.passes.manager', 'gimletc.passes.results')"
        " for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

    register_pass("toy-by-path", f"{__name__}:ByPath")
    assert get_pass_class("toy-by-path") is ByPath
    register_pass("ghost", "gimletc.passes.no_such_module:Ghost")
    with pytest.raises(PipelineError, match="'ghost' is registered as gimletc.passes.no_such_module:Ghost"):
        parse_pipeline("ghost")
    with pytest.raises(PipelineError, match="is named 'tag'"):
        register_pass("other", Tag)


# ---- the manager -------------------------------------------------------------------------------


def test_manager_runs_in_order_and_records_timings_dumps_progress():
    seen: list[str] = []
    ctx = PassContext(dump_after=frozenset({"tag"}), progress=seen.append)
    pm = PassManager("tag{note=a},toy-opts,tag{note=b}")
    g = small_graph()
    out = pm.run(g, ctx)
    assert str(pm) == "tag{note=a},toy-opts,tag{note=b}"
    assert [op.attr("note") for op in out.ops] == ["b", "b"]
    assert g == small_graph()  # the input is untouched
    assert ctx.data["tagged"] == ["a", "b"]
    assert [name for name, _ in ctx.timings] == ["tag", "toy-opts", "tag"]
    assert all(s >= 0 for _, s in ctx.timings)
    assert set(ctx.dumps) == {"tag", "tag#2"}
    assert "in" in ctx.dumps["tag"] and "a" in ctx.dumps["tag"] and "b" in ctx.dumps["tag#2"]
    assert len(seen) == 3 and seen[0].startswith("tag done in ")


def test_dump_everything_with_star():
    ctx = PassContext(dump_after=frozenset({"*"}))
    PassManager([Tag(), Opts()]).run(small_graph(), ctx)
    assert set(ctx.dumps) == {"tag", "toy-opts"}


def test_broken_ir_is_a_pass_failure_naming_the_pass_and_those_before():
    with pytest.raises(PassFailure) as e:
        PassManager("tag,toy-opts,break-ir,tag").run(small_graph())
    err = e.value
    assert str(err).startswith("pass 'break-ir' failed after tag, toy-opts: its output does not verify: ")
    assert "%nowhere" in str(err)
    assert err.pass_name == "break-ir" and err.ran == ("tag", "toy-opts")
    assert isinstance(err.original, IRError) and err.__cause__ is err.original
    # without verification the broken graph goes through
    assert PassManager("break-ir", verify_each=False).run(small_graph()).ops[-1].operands == ("nowhere",)


@pytest.mark.parametrize(
    ("what", "shown"), [("key", "KeyError: 'missing'"), ("ir", "op @x uses %y"), ("none", "not a Graph")]
)
def test_compiler_bugs_become_pass_failures(what, shown):
    with pytest.raises(PassFailure) as e:
        PassManager([Raise(what)]).run(small_graph())
    assert str(e.value).startswith("pass 'raise' failed as the first pass: ") and shown in str(e.value)
    assert e.value.ran == ()


@pytest.mark.parametrize("what", ["fit", "config"])
def test_user_errors_pass_through_unchanged(what):
    with pytest.raises((DoesNotFitError, ConfigError)) as e:
        PassManager([Tag(), Raise(what)]).run(small_graph())
    assert not isinstance(e.value, PassFailure)
    assert e.value.pass_name == "raise"
    assert "failed" not in str(e.value)


def test_invalid_input_is_reported_before_any_pass():
    bad = small_graph().replace_ops([Op("agent.output", "out", ("q",))])
    ctx = PassContext()
    with pytest.raises(IRError, match="input graph does not verify"):
        PassManager([Tag()]).run(bad, ctx)
    assert ctx.timings == []


# ---- what passes require and produce: the pipeline's order, checked before anything runs -------------


def chat_graph() -> Graph:
    from gimletc import AgentGraph

    g = AgentGraph("chat")
    q = g.input("q", tokens=1000)
    a = g.llm("answer", model="llama-3.1-8b", prompt=[q], output_tokens=100)
    g.output("out", [a])
    return g.build()


REQUIRES_PRODUCES = {  # pass -> (the levels it runs on, the level it leaves or None, needs a cluster)
    "expand-llm": (("agent", "model"), "model", False),
    "partition-phase": (("model",), None, False),
    "partition-layers": (("model",), None, True),
    "partition-attn-ffn": (("model",), None, True),
    "speculative": (("model",), None, True),
    "place": (("model",), "placed", True),
    "insert-transfers": (("placed",), "transfers", True),
    "schedule": (("transfers",), "exec", False),
    "overlap": (("exec",), None, False),
}


def test_every_pass_declares_what_it_requires_and_produces():
    for name, (requires, produces, cluster) in REQUIRES_PRODUCES.items():
        cls = get_pass_class(name)
        assert (cls.requires, cls.produces, cls.needs_cluster) == (requires, produces, cluster), name


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("expand-llm,insert-transfers,schedule",
         "pass 'insert-transfers' runs on placed-level IR, but after expand-llm the IR is model-level; "
         "run place before it"),
        ("insert-transfers",
         "pass 'insert-transfers' runs on placed-level IR, but at the start the IR is agent-level; "
         "run expand-llm, place before it"),
        ("expand-llm,place,schedule",
         "pass 'schedule' runs on transfers-level IR, but after place the IR is placed-level; "
         "run insert-transfers before it"),
        ("expand-llm,schedule",
         "pass 'schedule' runs on transfers-level IR, but after expand-llm the IR is model-level; "
         "run place, insert-transfers before it"),
        ("partition-phase,expand-llm",
         "pass 'partition-phase' runs on model-level IR, but at the start the IR is agent-level; run expand-llm before it"),
        ("expand-llm,place,partition-layers",
         "pass 'partition-layers' runs on model-level IR, but after place the IR is placed-level; "
         "it cannot come after place"),
        ("expand-llm,place,insert-transfers,schedule,overlap,place",
         "pass 'place' runs on model-level IR, but after overlap the IR is exec-level; it cannot come after place"),
    ],
)
def test_out_of_order_pipelines_are_one_line_errors_naming_the_pass_and_the_fix(pipeline, message):
    with pytest.raises(PipelineError) as e:
        PassManager(pipeline).check("agent")
    assert str(e.value) == f"pipeline {pipeline!r}: {message}"


def test_order_is_checked_against_the_input_level_before_any_pass_runs():
    ctx = PassContext()
    with pytest.raises(PipelineError, match="pass 'insert-transfers' runs on placed-level IR") as e:
        PassManager("expand-llm,insert-transfers").run(chat_graph(), ctx)
    assert not isinstance(e.value, PassFailure) and ctx.timings == []
    # the same pass list is fine on a graph that is already at the level it needs
    model = PassManager("expand-llm").run(chat_graph())
    assert model.attrs["gimlet.level"] == "model"
    assert PassManager("partition-phase").check("model") == "model"
    with pytest.raises(PipelineError, match="at the start the IR is model-level; it cannot run on this input"):
        PassManager([AgentOnly()]).run(model)


def test_a_pass_that_needs_a_cluster_fails_before_running_without_one():
    ctx = PassContext()
    with pytest.raises(PipelineError) as e:
        PassManager("expand-llm,place,insert-transfers,schedule").run(chat_graph(), ctx)
    assert str(e.value) == ("pipeline 'expand-llm,place,insert-transfers,schedule': pass 'place' needs a cluster, "
                            "and none was given")
    assert ctx.timings == []


def test_insert_transfers_without_a_cluster_is_a_typed_error_not_a_compiler_bug():
    from gimletc.hardware import load_cluster

    placed = PassManager("expand-llm,place").run(chat_graph(), PassContext(cluster=load_cluster("mixed-rack")))
    with pytest.raises(PipelineError, match="pass 'insert-transfers' needs a cluster") as e:
        PassManager("insert-transfers").run(placed, PassContext())
    assert not isinstance(e.value, PassFailure)


def test_goal_says_which_passes_are_missing():
    with pytest.raises(PipelineError) as e:
        PassManager("expand-llm", goal="exec").check("agent")
    assert str(e.value) == ("pipeline 'expand-llm' ends with model-level IR, but exec-level IR is required "
                            "(a deployment plan is built from it); add place, insert-transfers, schedule")
    with pytest.raises(PipelineError, match="ends with agent-level IR.*add expand-llm, place, insert-transfers, schedule"):
        PassManager("", goal="exec").check("agent")
    assert PassManager("expand-llm,place,insert-transfers,schedule", goal="exec").check("agent") == "exec"
    with pytest.raises(PipelineError, match="unknown IR level 'runnable'"):
        PassManager("", goal="runnable")  # type: ignore[arg-type]


@pytest.mark.parametrize("pipeline", ["expand-llm", "expand-llm,partition-phase", "", "toy-opts"])
def test_compile_rejects_a_pipeline_that_cannot_make_a_plan(pipeline):
    from gimletc.compiler import compile as gcompile

    with pytest.raises(PipelineError, match="exec-level IR is required"):
        gcompile(chat_graph(), "mixed-rack", pipeline=pipeline, baseline=False)


def test_gimletc_compile_without_place_exits_2_with_one_line(capsys, tmp_path):
    from _cli import run_cli

    graph = tmp_path / "chat.py"
    graph.write_text(
        "from gimletc import AgentGraph\n"
        "g = AgentGraph('chat')\n"
        "q = g.input('q', tokens=100)\n"
        "g.output('out', [g.llm('answer', model='llama-3.1-8b', prompt=[q], output_tokens=10)])\n"
        "graph = g.build()\n"
    )
    plan = tmp_path / "plan.json"
    code, out, err = run_cli(capsys, "compile", str(graph), "--cluster", "mixed-rack", "--pipeline", "expand-llm",
                             "-o", str(plan), "--no-baseline", "-q")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("gimletc: error: pipeline 'expand-llm' ends with model-level IR")
    assert not plan.exists()


@dataclass(frozen=True)
class Mislabel(Pass):
    """Declares model-level output but leaves the label as it was."""

    name: ClassVar[str] = "toy-mislabel"
    produces: ClassVar[Level | None] = "model"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph.with_attrs(**{"gimlet.level": "agent"})


@dataclass(frozen=True)
class AgentOnly(Pass):
    name: ClassVar[str] = "toy-agent-only"
    requires: ClassVar[tuple[Level, ...]] = ("agent",)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph


def test_a_pass_must_label_its_output_with_the_level_it_declares():
    register_pass("toy-mislabel", Mislabel)
    with pytest.raises(PassFailure) as e:
        PassManager("tag,toy-mislabel").run(chat_graph())
    assert str(e.value) == ("pass 'toy-mislabel' failed after tag: it declares model-level output but labels it "
                            "gimlet.level = 'agent'")


# ---- gimletc opt ----------------------------------------------------------------------------------


def test_opt_reads_stdin_writes_a_file_and_round_trips(capsys, tmp_path, monkeypatch):
    import io

    from _cli import run_cli
    from gimletc.ir import parse_graph, print_graph

    text = print_graph(chat_graph())
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    out = tmp_path / "model.mlir"
    code, stdout, err = run_cli(capsys, "opt", "-", "--pipeline", "expand-llm", "-o", str(out))
    assert (code, stdout, err) == (0, "", "")
    model = parse_graph(out.read_text())
    assert model == PassManager("expand-llm").run(chat_graph())
    code, stdout, _ = run_cli(capsys, "opt", str(out))  # no pipeline: verify and print back
    assert code == 0 and stdout == out.read_text()


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda d: d, [], "is a directory"),
        (lambda d: d / "missing.mlir", [], "missing.mlir: no such file"),
        (lambda d: (d / "bin.mlir", (d / "bin.mlir").write_bytes(b"\xff\xfe module"))[0], [], "not UTF-8 text"),
        (lambda d: (d / "bad.mlir", (d / "bad.mlir").write_text("module {\n  %x = \n}\n"))[0], [], "line 3, column 1"),
        (lambda d: d / "missing.mlir", ["--pipeline", "overlap{chunks=0}"], "option chunks=0 is not an int >= 1"),
        (lambda d: d / "any.mlir", ["--pin", "nodevice"], "--pin takes OP=DEVICE"),
    ],
)
def test_opt_bad_input_is_one_line_and_exit_2(capsys, tmp_path, make, args, message):
    from _cli import run_cli

    path = make(tmp_path)
    out = tmp_path / "out.mlir"
    code, stdout, err = run_cli(capsys, "opt", str(path), *args, "-o", str(out))
    assert code == 2 and stdout == "" and err.count("\n") == 1 and err.startswith("gimletc: error: ")
    assert message in err
    assert not out.exists()
