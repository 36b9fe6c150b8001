"""Pass manager: pipeline text, option conversion, the registry, and running passes with checks."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gimletc.errors import ConfigError, DoesNotFitError
from gimletc.ir import Graph, IRError, Op, Type, Value
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
        "toy-opts{k=three}": ["'toy-opts'", "k='three'", "not an int"],
        "toy-opts{objective=fast}": ["'toy-opts'", "objective='fast'", "latency, energy, cost"],
        "toy-opts{exact=yes}": ["exact='yes'", "true or false"],
        "toy-opts{alpha=big}": ["alpha='big'", "not a number"],
        "toy-opts{speed=9}": ["'toy-opts'", "no option 'speed'", "'9'", "objective, k, alpha"],
        "toy-required": ["'toy-required'", "needs option", "n"],
    }
    for text, parts in cases.items():
        with pytest.raises(PipelineError) as e:
            parse_pipeline(text)
        assert all(part in str(e.value) for part in parts), (text, str(e.value))


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
