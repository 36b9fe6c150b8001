"""Passes, text pipelines and the pass manager.

A pass is a `@dataclass(frozen=True)` subclass of `Pass` with a `name` and its
options as fields, so `place{objective=energy}` parses into `Place(objective=
"energy")` and prints back the same. Passes are found through a lazy
name -> "module:Class" registry: a pass's module is imported only when a
pipeline names it.

Options are typed (`Literal[...]`, `T | None`, numeric bounds through
`Annotated[int, Ge(1)]`) and checked when a pass is made, so a bad option fails
when the pipeline text is parsed. Each pass declares the IR levels it runs on
(`requires`), the level it leaves (`produces`) and whether it needs a cluster;
the manager checks a pipeline's order against these before running any pass.

The manager runs a pipeline over a graph: it verifies the input and the output
of every pass (the IR level's invariants included, see gimletc.ir.levels),
times each pass, keeps the printed IR after the passes asked for, and on
failure says which pass failed after which.
"""

from __future__ import annotations

import dataclasses
import importlib
import operator
import re
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import annotated_types

from gimletc.analysis.manager import AnalysisManager
from gimletc.errors import GimletError
from gimletc.ir import LEVELS, Graph, IRError, Level, level_of, print_graph, verify
from gimletc.ir.levels import LEVEL_ATTR
from gimletc.models.workload import DEFAULT_STACK
from gimletc.passes.results import KVReuseReport, OverlapReport, PartitionReport, PlacementSearch, TransferRecord

if TYPE_CHECKING:
    from gimletc.analysis.metrics import Metrics
    from gimletc.hardware import Cluster

__all__ = [
    "PASS_REGISTRY",
    "Pass",
    "PassContext",
    "PassFailure",
    "PassManager",
    "PipelineError",
    "get_pass_class",
    "parse_pipeline",
    "register_pass",
]


class PipelineError(GimletError):
    """A pipeline text or a pass option is malformed: names the position, pass, option or value."""


class PassFailure(GimletError):
    """A pass raised or broke an IR invariant (a compiler bug): names the pass and those that ran before it."""

    def __init__(self, pass_name: str, ran: Sequence[str], original: BaseException, detail: str = ""):
        self.pass_name, self.ran, self.original = pass_name, tuple(ran), original
        after = f"after {', '.join(self.ran)}" if self.ran else "as the first pass"
        what = str(original) if isinstance(original, GimletError) else f"{type(original).__name__}: {original}"
        super().__init__(f"pass {pass_name!r} failed {after}: {detail}{what}")


# (placed graph, a context to run later passes in, objective) -> the objective's value for that placement.
PartitionScorer = Callable[[Graph, "PassContext", str], float]
# (graph, a context to run later passes in, the pass asking) -> the plan's metrics after the pipeline's passes
# that follow that pass.
RestScorer = Callable[[Graph, "PassContext", "Pass"], "Metrics"]


@dataclass
class PassContext:
    """What passes share beyond the graph: the target cluster, the goal, and results handed on.

    Results passes hand on are typed fields, each written by one pass (gimletc.passes.results);
    pure functions of a graph (its replay) are computed once per graph through `analyses`."""

    cluster: Cluster | None = None
    objective: str = "latency"
    power_budget_w: float | None = None
    pins: dict[str, str] = field(default_factory=dict)  # op name -> device id
    dump_after: frozenset[str] = frozenset()  # pass names whose output IR to keep; "*" keeps every one
    dumps: dict[str, str] = field(default_factory=dict)  # pass name -> printed IR
    timings: list[tuple[str, float]] = field(default_factory=list)  # (pass name, seconds)
    data: dict[str, Any] = field(default_factory=dict)  # free-form, for passes outside gimletc
    progress: Callable[[str], None] | None = None
    stack: str = DEFAULT_STACK  # the software stack the cost model prices (see gimletc.models.workload)
    analyses: AnalysisManager = field(default_factory=AnalysisManager)
    # Set by the compile driver: how place scores a partitioning (the user's passes after place, then
    # the plan's metrics). None: place scores by its own list-schedule.
    score_placed: PartitionScorer | None = None
    # Set by the compile driver: the plan's metrics of a graph once the passes after a given one have run
    # (kv-reuse scores its rewrites with it). None: a pass scores by its own means.
    score_rest: RestScorer | None = None
    placement: PlacementSearch | None = None  # written by place
    partitions: dict[str, PartitionReport] = field(default_factory=dict)  # by place and the partition passes
    transfers: tuple[TransferRecord, ...] = ()  # by insert-transfers
    overlap: OverlapReport | None = None  # by overlap
    kv_reuse: KVReuseReport | None = None  # by kv-reuse

    def trial(self, objective: str | None = None) -> PassContext:
        """A context to try a candidate in (a partitioning, a rewrite) before choosing it: this one's inputs
        (cluster, objective, power budget, pins, stack) and the driver's scorers, with results of its own.
        The scorers carry over so that passes run on the candidate score their choices as the finished
        pipeline will: a kv-reuse run while place scores a partitioning decides with the same metrics as
        the kv-reuse that runs after place (without them it would fall back to a shorter pipeline, and
        the candidate's score would not be the plan's)."""
        return PassContext(cluster=self.cluster, objective=objective or self.objective,
                           power_budget_w=self.power_budget_w, pins=dict(self.pins), stack=self.stack,
                           score_placed=self.score_placed, score_rest=self.score_rest)


# ---- passes and their options ------------------------------------------------------------


@dataclass(frozen=True)
class Pass(ABC):
    """Base of every pass: subclasses are `@dataclass(frozen=True)` with `name: ClassVar[str]`.

    Fields are the pass's options; supported option types are int, float,
    bool (`true`/`false`), str, `Literal[...]`, `T | None` (`none`; except for
    str), `tuple[T, ...]` (comma-separated, quoted in pipeline text), unions of
    these, and `Annotated[T, Ge(..), Gt(..), Le(..), Lt(..), Interval(..)]`
    (bounds from `annotated_types`). Every value is checked against its type
    and bounds when the pass is made, so a pipeline's options fail when it is
    parsed, not when it runs.

    What a pass needs and makes is declared on the class: `requires`, the IR
    levels it runs on (empty: any); `produces`, the level of its output (None:
    the input's); `needs_cluster`. The manager checks a pipeline's order
    against these before it runs a pass (see `PassManager.check`)."""

    name: ClassVar[str]
    requires: ClassVar[tuple[Level, ...]] = ()
    produces: ClassVar[Level | None] = None
    needs_cluster: ClassVar[bool] = False

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for f in _option_fields(type(self)):
            tp, v = hints[f.name], getattr(self, f.name)
            if not _fits(tp, v):
                raise PipelineError(f"pass {_pass_name(type(self))!r}: option {f.name}={_format_value(v)} "
                                    f"is not {_describe(tp)}")

    @abstractmethod
    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        """Return the transformed graph; never mutate `graph` or its ops."""

    def __str__(self) -> str:
        """Pipeline text: `name{k=v,...}` listing, in field order, the fields that differ from their defaults."""
        opts = []
        for f in _option_fields(type(self)):
            v = getattr(self, f.name)
            if _default(f) is dataclasses.MISSING or v != _default(f):
                opts.append(f"{f.name}={_format_value(v)}")
        return f"{self.name}{{{','.join(opts)}}}" if opts else self.name

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> Pass:
        """An instance from option strings, each converted to its field's type and checked against its bounds.

        An unknown option, a value that does not convert or is out of bounds,
        or a missing required option raises PipelineError naming the pass, the
        option, the value and what the option takes."""
        pname = _pass_name(cls)
        fields = {f.name: f for f in _option_fields(cls)}
        hints = _type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, text in options.items():
            f = fields.get(key.replace("-", "_"))
            if f is None:
                known = ", ".join(fields) or "none"
                raise PipelineError(f"pass {pname!r} has no option {key!r} (given {text!r}); its options: {known}")
            tp = hints[f.name]
            try:
                kwargs[f.name] = _convert(tp, text)
            except ValueError:
                raise PipelineError(f"pass {pname!r}: option {f.name}={_quote(text)} is not {_describe(tp)}") from None
            except TypeError as e:
                raise PipelineError(f"pass {pname!r}: option {f.name}: {e}") from None
        missing = [n for n, f in fields.items() if n not in kwargs and _default(f) is dataclasses.MISSING]
        if missing:
            raise PipelineError(f"pass {pname!r} needs option(s) {', '.join(missing)}")
        try:
            return cls(**kwargs)
        except PipelineError:
            raise
        except (TypeError, ValueError) as e:
            raise PipelineError(f"pass {pname!r}: {e}") from None


def _pass_name(cls: type) -> str:
    return getattr(cls, "name", cls.__name__)


def _option_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """The option fields' types, `Annotated` bounds kept (cached per class).

    An annotation that does not resolve raises PipelineError: options would go unchecked otherwise."""
    if cls not in _HINTS:
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as e:
            raise PipelineError(f"pass {_pass_name(cls)!r}: its annotations do not resolve ({e})") from None
        _HINTS[cls] = {f.name: hints[f.name] for f in _option_fields(cls) if f.name in hints}
    return _HINTS[cls]


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _bounds(tp: Any) -> tuple[Any, list[Any]]:
    """(the base type, its bound markers) of `Annotated[T, ...]`; (tp, []) for any other type."""
    if typing.get_origin(tp) is not Annotated:
        return tp, []
    base, *meta = typing.get_args(tp)
    flat: list[Any] = []
    for m in meta:
        flat.extend(m if isinstance(m, annotated_types.GroupedMetadata) else [m])
    for m in flat:
        if not isinstance(m, _BOUND_OPS):
            raise TypeError(f"option bound {m!r} is not one gimletc checks (Ge, Gt, Le, Lt, Interval)")
    return base, flat


# bound marker -> (its sign, the attribute holding its limit, the comparison)
_BOUNDS: dict[type, tuple[str, str, Callable[[Any, Any], bool]]] = {
    annotated_types.Ge: (">=", "ge", operator.ge),
    annotated_types.Gt: (">", "gt", operator.gt),
    annotated_types.Le: ("<=", "le", operator.le),
    annotated_types.Lt: ("<", "lt", operator.lt),
}
_BOUND_OPS = tuple(_BOUNDS)


def _convert(tp: Any, text: str) -> Any:
    """`text` as a value of type `tp` (bounds are checked later, by `_fits`).

    ValueError: the text is not such a value; TypeError: gimletc cannot parse this option type."""
    tp, _ = _bounds(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        for choice in args:
            if text == _format_value(choice) or text == str(choice):
                return choice
        raise ValueError(text)
    if _is_union(tp):
        inner = [a for a in args if a is not type(None)]
        if text == "none" and len(inner) < len(args) and str not in inner:
            return None
        for a in inner:
            try:
                return _convert(a, text)
            except ValueError:
                continue
        raise ValueError(text)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        return tuple(_convert(args[0], p) for p in parts)
    if tp is bool:
        if text in ("true", "false"):
            return text == "true"
        raise ValueError(text)
    if tp is int:
        return int(text)
    if tp is float:
        return float(text)
    if tp is str:
        return text
    raise TypeError(f"has an option type gimletc cannot parse ({_type_name(tp)})")


def _fits(tp: Any, v: Any) -> bool:
    """Whether `v` is a value of option type `tp`, inside its bounds. Types gimletc cannot check pass."""
    tp, bounds = _bounds(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        ok = any(type(v) is type(c) and v == c for c in args)
    elif _is_union(tp):
        ok = any(_fits(a, v) for a in args)
    elif tp is type(None):
        ok = v is None
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        ok = isinstance(v, tuple) and all(_fits(args[0], x) for x in v)
    elif tp is bool:
        ok = isinstance(v, bool)
    elif tp is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif tp is float:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
    elif tp is str:
        ok = isinstance(v, str)
    else:
        ok = True
    for b in bounds:
        _, attr, holds = _BOUNDS[type(b)]
        ok = ok and holds(v, getattr(b, attr))
    return ok


def _describe(tp: Any) -> str:
    """What an option of type `tp` takes, in words: `one of latency, energy, none`, `0 or an int >= 2`."""
    tp, bounds = _bounds(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if bounds:
        limits = " and ".join(f"{_BOUNDS[type(b)][0]} {getattr(b, _BOUNDS[type(b)][1])}" for b in bounds)
        return f"{_describe(tp)} {limits}"
    if origin is Literal or _is_union(tp):
        members = args if _is_union(tp) else (tp,)
        choices = [_format_value(c) for m in members if typing.get_origin(_bounds(m)[0]) is Literal
                   for c in typing.get_args(_bounds(m)[0])]
        others = [m for m in members if typing.get_origin(_bounds(m)[0]) is not Literal]
        if choices and type(None) in others:
            choices.append("none")
            others.remove(type(None))
        parts = ([f"one of {', '.join(choices)}" if len(choices) > 1 else choices[0]] if choices else [])
        return " or ".join(parts + [_describe(m) for m in others])
    if tp is type(None):
        return "none"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a comma-separated list of {_describe(args[0])}"
    return {bool: "a bool (true or false)", int: "an int", float: "a number", str: "a string"}.get(
        tp, f"a {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


_BARE = re.compile(r'[^\s,{}="\\]+')


def _format_value(v: Any) -> str:
    """An option value as pipeline text that parses back to `v`."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, tuple):
        return _quote(",".join(x if isinstance(x, str) else _format_value(x) for x in v))
    s = str(v)
    return s if _BARE.fullmatch(s) else _quote(s)


def _quote(s: str) -> str:
    if _BARE.fullmatch(s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- the registry ----------------------------------------------------------------------------

PASS_REGISTRY: dict[str, str] = {
    "expand-llm": "gimletc.passes.expand_llm:ExpandLLM",
    "partition-layers": "gimletc.passes.partition:PartitionLayers",
    "partition-attn-ffn": "gimletc.passes.partition:PartitionAttnFFN",
    "speculative": "gimletc.passes.partition:Speculative",
    "partition-phase": "gimletc.passes.partition_phase:PartitionPhase",
    "place": "gimletc.passes.place:Place",
    "kv-reuse": "gimletc.passes.kv_reuse:KVReuse",
    "insert-transfers": "gimletc.passes.insert_transfers:InsertTransfers",
    "schedule": "gimletc.passes.schedule:Schedule",
    "overlap": "gimletc.passes.overlap:Overlap",
}
_LOADED: dict[str, type[Pass]] = {}


def register_pass(name: str, cls_or_path: type[Pass] | str) -> type[Pass] | str:
    """Make pass `name` available to pipelines, as a class or a lazy "module:Class" path; returns it."""
    if isinstance(cls_or_path, str):
        if ":" not in cls_or_path:
            raise PipelineError(f"pass {name!r}: expected 'module:Class', got {cls_or_path!r}")
        _LOADED.pop(name, None)
        PASS_REGISTRY[name] = cls_or_path
        return cls_or_path
    if not (isinstance(cls_or_path, type) and issubclass(cls_or_path, Pass)):
        raise PipelineError(f"pass {name!r}: {cls_or_path!r} is not a Pass subclass")
    if getattr(cls_or_path, "name", None) != name:
        has = getattr(cls_or_path, "name", None)
        raise PipelineError(f"pass class {cls_or_path.__qualname__} is named {has!r}, not {name!r}")
    PASS_REGISTRY[name] = f"{cls_or_path.__module__}:{cls_or_path.__qualname__}"
    _LOADED[name] = cls_or_path
    return cls_or_path


def get_pass_class(name: str) -> type[Pass]:
    """The class of pass `name`, importing its module on first use.

    An unknown name raises PipelineError listing the known ones."""
    if name in _LOADED:
        return _LOADED[name]
    path = PASS_REGISTRY.get(name)
    if path is None:
        raise PipelineError(f"unknown pass {name!r}; known: {', '.join(sorted(PASS_REGISTRY))}")
    module, _, attr = path.partition(":")
    try:
        cls = importlib.import_module(module)
        for part in attr.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as e:
        raise PipelineError(f"pass {name!r} is registered as {path} but cannot be loaded: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Pass)) or getattr(cls, "name", None) != name:
        raise PipelineError(f"pass {name!r}: {path} is not a Pass named {name!r}")
    _LOADED[name] = cls
    return cls


# ---- pipeline text ---------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_BARE_VALUE = re.compile(r'[^\s,{}="]+')


class _Parser:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def fail(self, problem: str) -> PipelineError:
        found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
        return PipelineError(f"pipeline {self.text!r}, position {self.pos}: {problem}, found {found}")

    def ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, ch: str) -> bool:
        self.ws()
        return self.text.startswith(ch, self.pos)

    def expect(self, ch: str, problem: str) -> None:
        if not self.peek(ch):
            raise self.fail(problem)
        self.pos += len(ch)

    def name(self, what: str) -> str:
        self.ws()
        m = _NAME.match(self.text, self.pos)
        if not m:
            raise self.fail(f"expected {what}")
        self.pos = m.end()
        return m.group()

    def value(self) -> str:
        self.ws()
        if self.peek('"'):
            start, self.pos, out = self.pos, self.pos + 1, []
            while self.pos < len(self.text) and self.text[self.pos] != '"':
                if self.text[self.pos] == "\\" and self.pos + 1 < len(self.text):
                    self.pos += 1
                out.append(self.text[self.pos])
                self.pos += 1
            if self.pos >= len(self.text):
                self.pos = start
                raise self.fail("unterminated quoted value")
            self.pos += 1
            return "".join(out)
        m = _BARE_VALUE.match(self.text, self.pos)
        if not m:
            raise self.fail("expected an option value")
        self.pos = m.end()
        return m.group()

    def pipeline(self) -> list[tuple[str, int, dict[str, str]]]:
        """(pass name, its position, options) for each pass in the text."""
        out: list[tuple[str, int, dict[str, str]]] = []
        self.ws()
        if self.pos == len(self.text):
            return out
        while True:
            self.ws()
            at = self.pos
            pname = self.name("a pass name")
            opts: dict[str, str] = {}
            if self.peek("{"):
                self.pos += 1
                if not self.peek("}"):
                    while True:
                        key_at = self.pos
                        key = self.name(f"an option name in {pname}{{...}}")
                        if key.replace("-", "_") in opts:
                            self.pos = key_at
                            self.ws()
                            raise self.fail(f"option {key!r} of {pname} given twice")
                        self.expect("=", f"expected '=' after option {key!r}")
                        opts[key.replace("-", "_")] = self.value()
                        if not self.peek(","):
                            break
                        self.pos += 1
                self.expect("}", f"expected ',' or '}}' in the options of {pname}")
            out.append((pname, at, opts))
            self.ws()
            if self.pos == len(self.text):
                return out
            self.expect(",", "expected ',' between passes")


def parse_pipeline(text: str) -> list[Pass]:
    """The passes named by `text` (`name{k=v,...},name2,...`), options converted to their types.

    Whitespace is allowed between tokens; values may be "quoted" (with \\" and
    \\\\ escapes). `",".join(map(str, parse_pipeline(t)))` is the canonical text.
    Errors raise PipelineError naming the position (or pass) and the problem."""
    passes = []
    for pname, at, opts in _Parser(text).pipeline():
        try:
            cls = get_pass_class(pname)
        except PipelineError as e:
            raise PipelineError(f"pipeline {text!r}, position {at}: {e}") from e.__cause__
        passes.append(cls.from_options(opts))
    return passes


# ---- the manager -------------------------------------------------------------------------------


class PassManager:
    """Runs passes in order, checking their order first, then verifying and timing each one.

    `goal`: the IR level the pipeline must end at (the compile driver asks for
    "exec", the level a deployment plan is built from); None: any level."""

    def __init__(self, passes: Sequence[Pass] | str, verify_each: bool = True, *, goal: Level | None = None):
        self.passes: tuple[Pass, ...] = tuple(parse_pipeline(passes) if isinstance(passes, str) else passes)
        self.verify_each = verify_each
        if goal is not None and goal not in LEVELS:
            raise PipelineError(f"unknown IR level {goal!r}; known: {', '.join(LEVELS)}")
        self.goal = goal

    def __str__(self) -> str:
        return ",".join(map(str, self.passes))

    def __repr__(self) -> str:
        return f"PassManager({str(self)!r}, verify_each={self.verify_each}, goal={self.goal!r})"

    def check(self, start: Level, cluster: bool = True) -> Level:
        """The level the pipeline leaves a `start`-level graph at, without running it.

        Raises PipelineError, one line naming the pipeline and the pass, at the
        first pass that needs another IR level than the passes before it leave
        (saying which passes to run before it, or which pass it must precede),
        or a cluster when `cluster` is false; or when the pipeline does not end
        at `goal`, saying which passes to add."""
        level, prev = start, ""
        raised: list[tuple[str, str]] = []  # (pass, the level it left the IR at), for each pass that changed it
        for p in self.passes:
            if p.requires and level not in p.requires:
                where = f"after {prev}" if prev else "at the start"
                raise PipelineError(f"pipeline {str(self)!r}: pass {p.name!r} runs on {_levels_text(p.requires)} IR, "
                                    f"but {where} the IR is {level}-level; {_fix(level, p.requires, raised)}")
            if p.needs_cluster and not cluster:
                raise PipelineError(f"pipeline {str(self)!r}: pass {p.name!r} needs a cluster, and none was given")
            if p.produces is not None and p.produces != level:
                level = p.produces
                raised.append((p.name, level))
            prev = p.name
        if self.goal is not None and level != self.goal:
            why = " (a deployment plan is built from it)" if self.goal == "exec" else ""
            raise PipelineError(f"pipeline {str(self)!r} ends with {level}-level IR, but {self.goal}-level IR is "
                                f"required{why}; {_fix(level, (self.goal,), raised, 'add')}")
        return level

    def run(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        """The graph after every pass, in order.

        The input is verified first (an invalid input raises IRError), then the
        pipeline's order is checked against the input's level and the context's
        cluster (`check`; PipelineError before any pass runs), and each pass's
        output is verified after it when verify_each, its level included: a pass
        that declares `produces` must label its output with that level. Records
        (name, seconds) in ctx.timings, keeps printed IR in ctx.dumps for names
        in ctx.dump_after, and reports to ctx.progress. A user error (a
        GimletError that is not an IRError or PassFailure) propagates unchanged
        with `.pass_name` set; any other exception becomes a PassFailure naming
        the pass and those that ran."""
        ctx = ctx if ctx is not None else PassContext()
        try:
            verify(graph)
        except IRError as e:
            raise IRError(f"the input graph does not verify: {e}") from e
        self.check(level_of(graph), cluster=ctx.cluster is not None)
        ran: list[str] = []
        for p in self.passes:
            detail = ""
            try:
                t0 = time.perf_counter()
                out = p.run(graph, ctx)
                seconds = time.perf_counter() - t0
                if not isinstance(out, Graph):
                    raise TypeError(f"run() returned {type(out).__name__}, not a Graph")
                if p.produces is not None and out.attrs.get(LEVEL_ATTR) != p.produces:
                    raise IRError(f"it declares {p.produces}-level output but labels it "
                                  f"{LEVEL_ATTR} = {out.attrs.get(LEVEL_ATTR)!r}")
                if self.verify_each:
                    detail = "its output does not verify: "
                    verify(out)
                detail = ""
                if p.name in ctx.dump_after or "*" in ctx.dump_after:
                    detail = "printing its output: "
                    ctx.dumps[_dump_key(ctx.dumps, p.name)] = print_graph(out)
                    detail = ""
            except GimletError as e:
                if isinstance(e, IRError | PassFailure):
                    raise PassFailure(p.name, ran, e, detail) from e
                if getattr(e, "pass_name", None) is None:
                    e.pass_name = p.name  # type: ignore[attr-defined]
                raise
            except Exception as e:
                raise PassFailure(p.name, ran, e, detail) from e
            ctx.timings.append((p.name, seconds))
            if ctx.progress is not None:
                ctx.progress(f"{p.name} done in {seconds * 1e3:.1f} ms")
            ran.append(p.name)
            graph = out
        return graph


def _levels_text(levels: Sequence[str]) -> str:
    return " or ".join(f"{lv}-level" for lv in levels)


def _producers() -> dict[str, str]:
    """IR level -> the first registered pass (in registry order) that produces it; loads every pass class."""
    out: dict[str, str] = {}
    for name in PASS_REGISTRY:
        try:
            made = get_pass_class(name).produces
        except PipelineError:
            continue
        if made is not None:
            out.setdefault(made, name)
    return out


def _fix(level: str, wanted: Sequence[str], raised: Sequence[tuple[str, str]], verb: str = "run") -> str:
    """How to reach one of the `wanted` levels from `level`: the passes to run first, or the pass to precede."""
    rank = {lv: i for i, lv in enumerate(LEVELS)}
    above = [rank[w] for w in wanted if rank[w] > rank[level]]
    if not above:
        top = max(rank[w] for w in wanted)
        first = next((name for name, lv in raised if rank[lv] > top), None)
        return f"it cannot come after {first}" if first else "it cannot run on this input"
    producers = _producers()
    path = [producers.get(lv, f"a pass producing {lv}-level IR") for lv in LEVELS[rank[level] + 1 : min(above) + 1]]
    return f"{verb} {', '.join(path)} before it" if verb == "run" else f"{verb} {', '.join(path)}"


def _dump_key(dumps: Mapping[str, str], name: str) -> str:
    """`name`, or `name#k` for the k-th run of a pass that appears more than once."""
    if name not in dumps:
        return name
    k = 2
    while f"{name}#{k}" in dumps:
        k += 1
    return f"{name}#{k}"
