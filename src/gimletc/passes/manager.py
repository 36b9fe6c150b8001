"""Passes, text pipelines and the pass manager.

A pass is a `@dataclass(frozen=True)` subclass of `Pass` with a `name` and its
options as fields, so `place{objective=energy}` parses into `Place(objective=
"energy")` and prints back the same. Passes are found through a lazy
name -> "module:Class" registry: a pass's module is imported only when a
pipeline names it.

The manager runs a pipeline over a graph: it verifies the input and the output
of every pass, times each pass, keeps the printed IR after the passes asked
for, and on failure says which pass failed after which.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from gimletc.analysis.manager import AnalysisManager
from gimletc.errors import GimletError
from gimletc.ir import Graph, IRError, verify
from gimletc.passes.results import OverlapReport, PartitionReport, PlacementSearch, TransferRecord

if TYPE_CHECKING:
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
    stack: str = "reference"  # the software stack the cost model prices (see gimletc.models.workload)
    analyses: AnalysisManager = field(default_factory=AnalysisManager)
    # Set by the compile driver: how place scores a partitioning (the user's passes after place, then
    # the plan's metrics). None: place scores by its own list-schedule.
    score_placed: PartitionScorer | None = None
    placement: PlacementSearch | None = None  # written by place
    partitions: dict[str, PartitionReport] = field(default_factory=dict)  # by place and the partition passes
    transfers: tuple[TransferRecord, ...] = ()  # by insert-transfers
    overlap: OverlapReport | None = None  # by overlap


# ---- passes and their options ------------------------------------------------------------


@dataclass(frozen=True)
class Pass(ABC):
    """Base of every pass: subclasses are `@dataclass(frozen=True)` with `name: ClassVar[str]`.

    Fields are the pass's options; supported option types are int, float,
    bool (`true`/`false`), str, `Literal[...]`, `T | None` (`none`; except for
    str) and `tuple[T, ...]` (comma-separated, quoted in pipeline text)."""

    name: ClassVar[str]

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
        """An instance from option strings, each converted to its field's type.

        An unknown option, a value that does not convert or a missing required
        option raises PipelineError naming the pass, the option and the value."""
        pname = getattr(cls, "name", cls.__name__)
        fields = {f.name: f for f in _option_fields(cls)}
        hints = _type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, text in options.items():
            f = fields.get(key.replace("-", "_"))
            if f is None:
                known = ", ".join(fields) or "none"
                raise PipelineError(f"pass {pname!r} has no option {key!r} (given {text!r}); its options: {known}")
            try:
                kwargs[f.name] = _convert(hints.get(f.name, f.type), text)
            except ValueError as e:
                raise PipelineError(f"pass {pname!r}: option {f.name}={text!r} {e}") from None
        missing = [n for n, f in fields.items() if n not in kwargs and _default(f) is dataclasses.MISSING]
        if missing:
            raise PipelineError(f"pass {pname!r} needs option(s) {', '.join(missing)}")
        try:
            return cls(**kwargs)
        except PipelineError:
            raise
        except (TypeError, ValueError) as e:
            raise PipelineError(f"pass {pname!r}: {e}") from None


def _option_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: fall back to the raw field types
        return {}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _convert(tp: Any, text: str) -> Any:
    """`text` as a value of type `tp`; ValueError says why not (it follows `option k='v'`)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        for choice in args:
            if text == _format_value(choice) or text == str(choice):
                return choice
        raise ValueError(f"is not one of {', '.join(_format_value(c) for c in args)}")
    if _is_union(tp):
        inner = [a for a in args if a is not type(None)]
        if text == "none" and len(inner) < len(args) and str not in inner:
            return None
        for a in inner:
            try:
                return _convert(a, text)
            except ValueError:
                continue
        raise ValueError(f"is not a {' or '.join(_type_name(a) for a in args)}")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        return tuple(_convert(args[0], p) for p in parts)
    if tp is bool or tp == "bool":
        if text in ("true", "false"):
            return text == "true"
        raise ValueError("is not a bool (true or false)")
    if tp is int or tp == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError("is not an int") from None
    if tp is float or tp == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError("is not a number") from None
    if tp is str or tp == "str":
        return text
    raise ValueError(f"has an option type gimletc cannot parse ({_type_name(tp)})")


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
    """Runs passes in order, verifying and timing each one."""

    def __init__(self, passes: Sequence[Pass] | str, verify_each: bool = True):
        self.passes: tuple[Pass, ...] = tuple(parse_pipeline(passes) if isinstance(passes, str) else passes)
        self.verify_each = verify_each

    def __str__(self) -> str:
        return ",".join(map(str, self.passes))

    def __repr__(self) -> str:
        return f"PassManager({str(self)!r}, verify_each={self.verify_each})"

    def run(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        """The graph after every pass, in order.

        The input is verified first (an invalid input raises IRError), and each
        pass's output after it when verify_each. Records (name, seconds) in
        ctx.timings, keeps printed IR in ctx.dumps for names in ctx.dump_after,
        and reports to ctx.progress. A user error (a GimletError that is not an
        IRError or PassFailure) propagates unchanged with `.pass_name` set; any
        other exception becomes a PassFailure naming the pass and those that ran."""
        ctx = ctx if ctx is not None else PassContext()
        try:
            verify(graph)
        except IRError as e:
            raise IRError(f"the input graph does not verify: {e}") from e
        ran: list[str] = []
        for p in self.passes:
            detail = ""
            try:
                t0 = time.perf_counter()
                out = p.run(graph, ctx)
                seconds = time.perf_counter() - t0
                if not isinstance(out, Graph):
                    raise TypeError(f"run() returned {type(out).__name__}, not a Graph")
                if self.verify_each:
                    detail = "its output does not verify: "
                    verify(out)
                detail = ""
                if p.name in ctx.dump_after or "*" in ctx.dump_after:
                    detail = "printing its output: "
                    ctx.dumps[_dump_key(ctx.dumps, p.name)] = _print(out)
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


def _dump_key(dumps: Mapping[str, str], name: str) -> str:
    """`name`, or `name#k` for the k-th run of a pass that appears more than once."""
    if name not in dumps:
        return name
    k = 2
    while f"{name}#{k}" in dumps:
        k += 1
    return f"{name}#{k}"


def _print(graph: Graph) -> str:
    """The graph's text form (gimletc.ir.text), or a plain listing while that module is absent."""
    try:
        from gimletc.ir.text import print_graph  # lazy: the text form is optional here
    except ImportError as e:
        if e.name != "gimletc.ir.text":
            raise
        return _plain_listing(graph)
    return print_graph(graph)


def _plain_listing(graph: Graph, indent: str = "") -> str:
    lines = []
    for op in graph.ops:
        res = ", ".join(f"%{v.name}" for v in op.results)
        attrs = ", ".join(f"{k} = {v!r}" for k, v in op.attrs.items())
        args = ", ".join(f"%{o}" for o in op.operands)
        lines.append(f"{indent}{res + ' = ' if res else ''}{op.kind} @{op.name}({args}) {{{attrs}}}")
        for r in op.regions:
            lines.append(_plain_listing(r, indent + "  "))
    return "\n".join(lines)
