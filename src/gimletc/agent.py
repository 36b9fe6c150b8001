"""The agent-graph builder: Python calls that return values, values that are the edges.

```python
g = AgentGraph("rag")
q = g.input("question", tokens=200)
docs = g.retrieve("docs", query=q, index_docs=1_000_000, k=5, doc_tokens=400)
ans = g.llm("answer", model="llama-3.1-8b", prompt=[q, docs], output_tokens=300)
g.output("out", [ans])
graph = g.build()          # a verified gimletc.ir.Graph at the agent level
```

Every call checks its own arguments at once and raises `GraphError` naming the
graph, the node, the field and the value; `build()` checks the whole graph
(no open `with` block, at least one output) and runs `ir.verify`.

IR value names: an op's single result is named after the op (`%answer`); a
loop's body arguments are `%fix.args.0`, ...; a loop's or branch's results are
`%fix.results.0`, .... A loop's terminator is the op `fix.yield`, a branch
arm's `route.yield.0`, ....
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from gimletc.errors import ConfigError, GimletError
from gimletc.ir import Graph, Op, Type, Value, verify
from gimletc.models import get_model

LEVEL = "agent"
PROBABILITY_TOLERANCE = 1e-6
# MLIR's suffix-id: a decimal number, or a letter or one of $._- followed by letters, digits and $._-
_SUFFIX_ID = re.compile(r"(?:[0-9]+|[A-Za-z$._-][A-Za-z0-9$._-]*)")


class GraphError(ConfigError):
    """An agent graph is malformed: the message names the graph, the node, the field and the value."""


@dataclass(eq=False)
class _Region:
    """Ops being collected for one region (or the top level) while its `with` block is open."""

    where: str  # "the top level", "loop 'fix'", "arm 1 of branch 'route'", "branch 'route'"
    args: tuple[Value, ...] = ()
    ops: list[Op] = field(default_factory=list)
    accepts_ops: bool = True  # a branch's own level holds arms, not ops


@dataclass(frozen=True, eq=False)
class Val:
    """A value of an agent graph, an edge: its IR value name and type (kind and size).

    Vals compare by identity; use them only in the graph, and the region, that made them."""

    name: str
    type: Type
    _graph: AgentGraph = field(repr=False)
    _region: _Region = field(repr=False)

    @property
    def tokens(self) -> float:
        """Its size in tokens (a branch result's is the probability-weighted mean over the arms)."""
        return self.type.tokens

    @property
    def value(self) -> Value:
        return Value(self.name, self.type)

    def __repr__(self) -> str:
        return f"Val(%{self.name}: {self.type.size:g} {self.type.kind})"


@dataclass(frozen=True)
class _ToolSpec:
    cpu_s: float | None
    latency_s: float | None
    output_tokens: int


def _one_cost(cpu_s: Any, latency_s: Any) -> str:
    return f"give exactly one of cpu_s and latency_s, got cpu_s={cpu_s}, latency_s={latency_s}"


def _label(kind: str, name: str) -> str:
    return f"{kind} {name!r}"


def _flatten(vals: Any) -> list[Any]:
    """`x`, `[x, y]` or `(x, y)` as a list; anything else as a one-element list (checked later)."""
    if isinstance(vals, list | tuple):
        return list(vals)
    return [vals]


class AgentGraph:
    """Builds an agent graph: each call adds one node and returns its `Val` (or a context manager
    for loops and branches); `build()` returns the verified `ir.Graph`."""

    def __init__(self, name: str):
        if not isinstance(name, str) or not name.strip():
            raise GraphError(f"graph name must be a non-empty string, got {name!r}")
        self.name = name
        self._root = _Region("the top level")
        self._stack: list[_Region] = [self._root]
        self._names: dict[str, str] = {}  # op or value name -> the node that claimed it
        self._tools: dict[str, _ToolSpec] = {}
        self._systems: dict[str, tuple[int, str]] = {}  # system prompt name -> (its tokens, the first call naming it)
        self._outputs = 0

    def __repr__(self) -> str:
        return f"AgentGraph({self.name!r}, {len(self._root.ops)} top-level ops)"

    # ---- checks shared by every node ----------------------------------------------------
    def _error(self, node: str | None, msg: str) -> GraphError:
        return GraphError(f"graph {self.name}: {node}: {msg}" if node else f"graph {self.name}: {msg}")

    def _begin(self, kind: str, name: Any, top_level_only: bool = False) -> str:
        """Check that a node called `name` may be added here; returns its label for messages."""
        if not isinstance(name, str) or not _SUFFIX_ID.fullmatch(name):
            raise self._error(
                _label(kind, str(name)),
                f"name {name!r} is not a valid IR name (letters, digits and _ . $ - only; not starting with a digit "
                "unless all digits)",
            )
        label = _label(kind, name)
        if name in self._names:
            raise self._error(label, f"name {name!r} is already used by {self._names[name]}")
        top = self._stack[-1]
        if not top.accepts_ops:
            raise self._error(label, f"is inside {top.where} but outside its arms; open one with `with br.arm():`")
        if top_level_only and top is not self._root:
            raise self._error(label, f"must be at the top level, not inside {top.where}")
        return label

    def _release(self, mark: int) -> None:
        """Forget the names claimed after the first `mark` (those of a block that failed)."""
        for name in list(self._names)[mark:]:
            del self._names[name]

    def _claim(self, name: str, owner: str) -> None:
        if not _SUFFIX_ID.fullmatch(name):
            raise self._error(owner, f"derived value name {name!r} is not a valid IR name")
        if name in self._names:
            raise self._error(owner, f"name {name!r} is already used by {self._names[name]}")
        self._names[name] = owner

    def _count(self, label: str, field_: str, v: Any) -> int:
        """A positive whole number (an integral float such as 1e6 is accepted)."""
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
            raise self._error(label, f"{field_} must be a positive integer, got {v!r}")
        return int(v)

    def _seconds(self, label: str, field_: str, v: Any) -> float:
        if not isinstance(v, Real) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise self._error(label, f"{field_} must be a finite number of seconds >= 0, got {v!r}")
        return float(v)  # always a float, so `20` and `20.0` give the same op and the same text

    def _model(self, label: str, field_: str, model: Any) -> str:
        if isinstance(model, Path):
            model = str(model)
        if not isinstance(model, str) or not model:
            raise self._error(label, f"{field_} must be a model name or a path to a config.json, got {model!r}")
        try:
            get_model(model)
        except (GimletError, OSError) as e:
            raise self._error(label, f"{field_}: {e}") from None
        return model

    def _vals(self, label: str, field_: str, vals: Any, at_least: int = 0) -> tuple[Val, ...]:
        """`vals` (a Val or a sequence of Vals), each checked to be made by this graph and visible here."""
        out = []
        for v in _flatten(vals):
            if not isinstance(v, Val):
                raise self._error(label, f"{field_}: expected a Val returned by a builder call, got {v!r}")
            if v._graph is not self:
                raise self._error(label, f"{field_}: value %{v.name} belongs to graph {v._graph.name!r}, not this one")
            if v._region not in self._stack:
                raise self._error(
                    label,
                    f"{field_}: value %{v.name} is defined inside {v._region.where} and cannot be used outside it"
                    + ("; use the loop's results" if v._region.where.startswith("loop") else ""),
                )
            out.append(v)
        if len(out) < at_least:
            raise self._error(label, f"{field_}: needs at least {at_least} value(s), got {len(out)}")
        return tuple(out)

    def _operands(self, label: str, field_: str, vals: Any, at_least: int = 0) -> tuple[str, ...]:
        """IR names of `vals`, checked as `_vals` does."""
        return tuple(v.name for v in self._vals(label, field_, vals, at_least))

    def _append(
        self, kind: str, name: str, operands: tuple[str, ...], attrs: dict[str, Any], results: tuple[Value, ...]
    ) -> _Region:
        """Append the op (attributes set to None left out) to the innermost region, which it returns."""
        self._claim(name, _label(kind, name))
        region = self._stack[-1]
        kept = {k: v for k, v in attrs.items() if v is not None}
        region.ops.append(Op(f"agent.{kind}", name, operands, results, kept))
        return region

    def _add(self, kind: str, name: str, operands: tuple[str, ...], attrs: dict[str, Any], tokens: int) -> Val:
        """Append an op whose one result, named after it, holds `tokens` tokens; returns that result."""
        t = Type("tokens", tokens)
        return Val(name, t, self, self._append(kind, name, operands, attrs, (Value(name, t),)))

    # ---- nodes --------------------------------------------------------------------------
    def input(self, name: str, *, tokens: int) -> Val:
        """The request's input of `tokens` tokens (top level only)."""
        label = self._begin("input", name, top_level_only=True)
        n = self._count(label, "tokens", tokens)
        return self._add("input", name, (), {"tokens": n}, n)

    def llm(
        self,
        name: str,
        *,
        model: str | Path,
        prompt: Val | Sequence[Val] = (),
        output_tokens: int,
        system_tokens: int | None = None,
        system: str | None = None,
        draft: str | Path | None = None,
        draft_k: int | None = None,
        acceptance: float | None = None,
        batch: int | None = None,
    ) -> Val:
        """An LLM call: the prompt is `system_tokens` of system prompt first, then the `prompt` values in
        order; the result has `output_tokens` tokens. `system` names the system prompt's text: calls that
        name the same one send the same tokens, so a serving engine can reuse their KV cache across calls
        (prefix caching; the `kv-reuse` pass); a call that names none has a system prompt of its own. Put
        what stays the same first and what changes last, as agents do: a cached prefix ends at the first
        value that differs. `draft` names a draft model for speculative decoding, proposing
        `draft_k` tokens per step of which a fraction `acceptance` (0 < a <= 1) is accepted.
        `batch` (default 1) runs the call for that many sequences at once (a batch job, or one
        engine's share of concurrent requests); the result's size is one sequence's."""
        label = self._begin("llm", name)
        m = self._model(label, "model", model)
        vals = self._vals(label, "prompt", prompt)
        ops = tuple(v.name for v in vals)
        out = self._count(label, "output_tokens", output_tokens)
        sys_t = self._count(label, "system_tokens", system_tokens) if system_tokens is not None else None
        sys_name = self._system(label, system, sys_t)
        if not ops and sys_t is None:
            raise self._error(label, "prompt: empty, and no system_tokens: the model would see no input")
        d = self._model(label, "draft", draft) if draft is not None else None
        prompt_t = int(sum(v.type.tokens for v in vals)) + (sys_t or 0)
        for field_, name_ in (("model", m), ("draft", d)):
            limit = get_model(name_).max_context if name_ is not None else None
            if limit is not None and prompt_t + out > limit:
                raise self._error(label, f"prompt ({prompt_t} tokens) + output_tokens ({out}) = {prompt_t + out} tokens "
                                         f"exceed {field_} {name_}'s max context of {limit} tokens")
        if d is None and (draft_k is not None or acceptance is not None):
            given = "draft_k" if draft_k is not None else "acceptance"
            raise self._error(label, f"{given} given without a draft model")
        k = self._count(label, "draft_k", draft_k) if draft_k is not None else None
        if acceptance is not None and (
            not isinstance(acceptance, Real) or isinstance(acceptance, bool) or not 0 < acceptance <= 1
        ):
            raise self._error(label, f"acceptance must be a rate in (0, 1], got {acceptance!r}")
        b = self._count(label, "batch", batch) if batch is not None else None
        attrs = {"model": m, "output_tokens": out, "system_tokens": sys_t, "system": sys_name, "draft": d,
                 "draft_k": k, "batch": b}
        attrs["acceptance"] = float(acceptance) if acceptance is not None else None
        val = self._add("llm", name, ops, attrs, out)
        if sys_name is not None:
            self._systems.setdefault(sys_name, (int(sys_t or 0), name))
        return val

    def _system(self, label: str, system: Any, tokens: int | None) -> str | None:
        """A system prompt's name, checked: a valid IR name, with system_tokens, and as long as every other
        call naming it."""
        if system is None:
            return None
        if not isinstance(system, str) or not _SUFFIX_ID.fullmatch(system):
            raise self._error(label, f"system {system!r} is not a valid name (letters, digits and _ . $ - only)")
        if tokens is None:
            raise self._error(label, f"system {system!r} given without system_tokens")
        seen = self._systems.get(system)
        if seen is not None and seen[0] != tokens:
            raise self._error(label, f"system prompt {system!r} has {tokens} tokens here but {seen[0]} in llm "
                                     f"{seen[1]!r}: one named system prompt is one text")
        return system

    def tool_spec(
        self, name: str, *, cpu_s: float | None = None, latency_s: float | None = None, output_tokens: int
    ) -> None:
        """Declare tool `name` once: its cost (exactly one of cpu_s, latency_s) and output size;
        later `tool(..., tool=name)` calls inherit whatever they do not give."""
        label = f"tool spec {name!r}"
        if not isinstance(name, str) or not name:
            raise self._error(label, "a tool's name must be a non-empty string")
        if name in self._tools:
            raise self._error(label, "is declared twice")
        if (cpu_s is None) == (latency_s is None):
            raise self._error(label, _one_cost(cpu_s, latency_s))
        cpu = self._seconds(label, "cpu_s", cpu_s) if cpu_s is not None else None
        lat = self._seconds(label, "latency_s", latency_s) if latency_s is not None else None
        self._tools[name] = _ToolSpec(cpu, lat, self._count(label, "output_tokens", output_tokens))

    def tool(
        self,
        name: str,
        *,
        inputs: Val | Sequence[Val] = (),
        tool: str | None = None,
        cpu_s: float | None = None,
        latency_s: float | None = None,
        output_tokens: int | None = None,
    ) -> Val:
        """A call of tool `tool` (default: `name`) costing `cpu_s` of CPU time or `latency_s` of wall
        time and returning `output_tokens`; what is not given comes from `tool_spec(tool, ...)`."""
        label = self._begin("tool", name)
        tool_name = name if tool is None else tool
        if not isinstance(tool_name, str) or not tool_name:
            raise self._error(label, f"tool must be a non-empty string, got {tool_name!r}")
        ops = self._operands(label, "inputs", inputs)
        declared = self._tools.get(tool_name)
        if cpu_s is not None and latency_s is not None:
            raise self._error(label, _one_cost(cpu_s, latency_s))
        if cpu_s is None and latency_s is None:
            if declared is None:
                raise self._error(
                    None,
                    f"unknown tool {tool_name!r} at node {name!r}: declare it with tool_spec() or give cpu_s or "
                    "latency_s",
                )
            cpu_s, latency_s = declared.cpu_s, declared.latency_s
        cpu = self._seconds(label, "cpu_s", cpu_s) if cpu_s is not None else None
        lat = self._seconds(label, "latency_s", latency_s) if latency_s is not None else None
        if output_tokens is None:
            if declared is None:
                raise self._error(label, f"output_tokens missing, and tool {tool_name!r} is not declared")
            output_tokens = declared.output_tokens
        out = self._count(label, "output_tokens", output_tokens)
        attrs = {"tool": tool_name, "output_tokens": out, "cpu_s": cpu, "latency_s": lat}
        return self._add("tool", name, ops, attrs, out)

    def retrieve(
        self,
        name: str,
        *,
        query: Val | Sequence[Val],
        index_docs: int,
        k: int,
        doc_tokens: int,
        embed_dim: int | None = None,
    ) -> Val:
        """Vector retrieval of the `k` nearest of `index_docs` documents; the result is
        k * doc_tokens tokens."""
        label = self._begin("retrieve", name)
        ops = self._operands(label, "query", query, at_least=1)
        n_docs = self._count(label, "index_docs", index_docs)
        kk = self._count(label, "k", k)
        if kk > n_docs:
            raise self._error(label, f"k={kk} is larger than index_docs={n_docs}")
        per_doc = self._count(label, "doc_tokens", doc_tokens)
        dim = self._count(label, "embed_dim", embed_dim) if embed_dim is not None else None
        attrs = {"index_docs": n_docs, "k": kk, "doc_tokens": per_doc, "embed_dim": dim}
        return self._add("retrieve", name, ops, attrs, kk * per_doc)

    def code(self, name: str, *, inputs: Val | Sequence[Val] = (), cpu_s: float, output_tokens: int) -> Val:
        """Code execution on a CPU taking `cpu_s` seconds and printing `output_tokens` tokens."""
        label = self._begin("code", name)
        ops = self._operands(label, "inputs", inputs)
        cpu = self._seconds(label, "cpu_s", cpu_s)
        out = self._count(label, "output_tokens", output_tokens)
        return self._add("code", name, ops, {"cpu_s": cpu, "output_tokens": out}, out)

    def output(self, name: str, inputs: Val | Sequence[Val]) -> None:
        """The request's response: the `inputs` values (top level only; a graph needs at least one)."""
        label = self._begin("output", name, top_level_only=True)
        ops = self._operands(label, "inputs", inputs, at_least=1)
        self._append("output", name, ops, {}, ())
        self._outputs += 1

    def loop(
        self, name: str, *, expected: float, max: int, carry: Val | Sequence[Val] = ()  # noqa: A002 - the IR's name
    ) -> Loop:
        """A loop whose body runs `expected` times on average, at most `max`; use it as
        `with g.loop(...) as lp:`. `lp.args[i]` is `carry[i]` inside the body; `lp.yield_(...)`
        gives the loop's results (and the next iteration's args when the counts match)."""
        label = self._begin("loop", name)
        if name.isdigit():
            raise self._error(label, f"name {name!r}: a loop's name may not be all digits (its values are {name}.args.0)")
        carried = self._vals(label, "carry", carry)
        most = self._count(label, "max", max)
        if not isinstance(expected, Real) or isinstance(expected, bool) or not math.isfinite(expected) or expected < 1:
            raise self._error(label, f"expected must be a number of iterations >= 1, got {expected!r}")
        if expected > most:
            raise self._error(label, f"expected={expected} is larger than max={most}")
        return Loop(self, name, carried, {"expected": float(expected), "max": most})

    def branch(self, name: str, *, probabilities: Sequence[float], inputs: Val | Sequence[Val] = ()) -> Branch:
        """A choice of one arm, arm i with `probabilities[i]`; `inputs` are the values the choice
        depends on. Use it as `with g.branch(...) as br:` and one `with br.arm():` per arm."""
        label = self._begin("branch", name)
        if name.isdigit():
            raise self._error(label, f"name {name!r}: a branch's name may not be all digits")
        ops = self._operands(label, "inputs", inputs)
        probs = _flatten(probabilities)
        if not probs:
            raise self._error(label, "probabilities: empty")
        for p in probs:
            if not isinstance(p, Real) or isinstance(p, bool) or not 0 <= p <= 1:
                raise self._error(label, f"probabilities: {p!r} is not a probability in [0, 1]")
        total = math.fsum(probs)
        if abs(total - 1) > PROBABILITY_TOLERANCE:
            raise self._error(label, f"probabilities {list(probs)} sum to {total:g}, not 1")
        return Branch(self, name, ops, tuple(float(p) for p in probs))

    # ---- the result ---------------------------------------------------------------------
    def build(self) -> Graph:
        """The verified `ir.Graph` (attrs gimlet.level=agent, gimlet.name); building twice gives equal graphs."""
        if len(self._stack) > 1:
            raise self._error(None, f"build() called inside {self._stack[-1].where}; close its `with` block first")
        if self._outputs == 0:
            raise self._error(None, "no output: add one with g.output(name, [values])")
        graph = Graph(tuple(self._root.ops), attrs={"gimlet.level": LEVEL, "gimlet.name": self.name})
        return verify(graph)


class _Block:
    """A `with` block adding one loop or branch; on any error, it adds nothing and frees its names."""

    _g: AgentGraph
    _label: str
    _top: _Region  # the region it pushes
    _state = "new"
    _mark = 0  # how many names were claimed before it

    @property
    def results(self) -> tuple[Val, ...]:
        if self._results is None:
            raise self._g._error(self._label, "results exist only after its `with` block ends")
        return self._results

    def _enter(self, claims: list[str]) -> None:
        g = self._g
        if self._state != "new":
            raise g._error(self._label, "its `with` block may be entered only once")
        self._mark = len(g._names)
        try:
            for name in claims:
                g._claim(name, self._label)
        except GraphError:
            g._release(self._mark)
            raise
        g._stack.append(self._top)
        self._state = "open"

    def _finish(self) -> None:
        raise NotImplementedError

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        g = self._g
        if g._stack and g._stack[-1] is self._top:
            g._stack.pop()
        self._state = "closed"
        if exc_type is None:
            try:
                self._finish()
                return False
            except GraphError:
                g._release(self._mark)
                raise
        g._release(self._mark)
        return False


class Loop(_Block):
    """A loop being built; a context manager. `args` are the body's values of the carried
    values; after the `with` block, `results` are the values the body yielded."""

    def __init__(self, g: AgentGraph, name: str, carry: tuple[Val, ...], attrs: dict[str, Any]):
        self._g, self.name, self._attrs, self._carried = g, name, attrs, carry
        self._carry = tuple(v.name for v in carry)
        self._label = _label("loop", name)
        self._body = _Region(f"loop {name!r}", tuple(Value(f"{name}.args.{i}", v.type) for i, v in enumerate(carry)))
        self.args: tuple[Val, ...] = tuple(Val(a.name, a.type, g, self._body) for a in self._body.args)
        self._top = self._body
        self._yielded: tuple[Val, ...] | None = None
        self._results: tuple[Val, ...] | None = None

    def __enter__(self) -> Loop:
        g = self._g
        if self._state == "new":
            g._begin("loop", self.name)  # the name may have been taken, or the region changed, since g.loop()
            g._vals(self._label, "carry", self._carried)
        self._enter([self.name, *(a.name for a in self._body.args), f"{self.name}.yield"])
        return self

    def yield_(self, *vals: Val | Sequence[Val]) -> None:
        """End the body with `vals` (given as arguments or as one list): they become the loop's results."""
        g = self._g
        if self._state != "open":
            raise g._error(self._label, "yield_ must be called inside its `with` block")
        if g._stack[-1] is not self._body:
            raise g._error(self._label, f"yield_ must be called directly in its body, not inside {g._stack[-1].where}")
        if self._yielded is not None:
            raise g._error(self._label, "yield_ called twice")
        self._yielded = g._vals(self._label, "yield", _flatten(vals[0]) if len(vals) == 1 else list(vals))

    def _finish(self) -> None:
        g = self._g
        if self._yielded is None:
            raise g._error(self._label, "has no yield: end its body with loop.yield_(values)")
        yield_op = Op("agent.yield", f"{self.name}.yield", tuple(v.name for v in self._yielded))
        body = Graph((*self._body.ops, yield_op), self._body.args)
        results = tuple(Value(f"{self.name}.results.{i}", v.type) for i, v in enumerate(self._yielded))
        for r in results:
            g._claim(r.name, self._label)
        parent = g._stack[-1]
        parent.ops.append(Op("agent.loop", self.name, self._carry, results, self._attrs, (body,)))
        self._results = tuple(Val(r.name, r.type, g, parent) for r in results)


class Branch(_Block):
    """A branch being built; a context manager holding one `with br.arm():` block per arm.
    After it, `results` are the arms' yielded values, sized by the probability-weighted mean."""

    def __init__(self, g: AgentGraph, name: str, inputs: tuple[str, ...], probabilities: tuple[float, ...]):
        self._g, self.name, self._inputs, self.probabilities = g, name, inputs, probabilities
        self._label = _label("branch", name)
        self._top = _Region(f"branch {name!r}", accepts_ops=False)
        self._arms: list[tuple[_Region, tuple[Val, ...]]] = []
        self._arm: _Region | None = None
        self._yielded: tuple[Val, ...] | None = None
        self._results: tuple[Val, ...] | None = None

    def __enter__(self) -> Branch:
        if self._state == "new":
            self._g._begin("branch", self.name)
        self._enter([self.name])
        return self

    @contextmanager
    def arm(self) -> Iterator[None]:
        """One arm: the ops built in this block; it must end with `br.yield_(...)`."""
        g = self._g
        if self._state != "open" or g._stack[-1] is not self._top:
            raise g._error(self._label, "arm() must be used directly inside the branch's `with` block")
        i = len(self._arms)
        region = _Region(f"arm {i} of branch {self.name!r}")
        g._claim(f"{self.name}.yield.{i}", self._label)
        g._stack.append(region)
        self._arm, self._yielded = region, None
        try:
            yield
        finally:
            if g._stack[-1] is region:
                g._stack.pop()
            self._arm = None
        if self._yielded is None:
            raise g._error(self._label, f"arm {i} has no yield: end it with br.yield_(values)")
        self._arms.append((region, self._yielded))

    def yield_(self, *vals: Val | Sequence[Val]) -> None:
        """End the current arm with `vals` (as arguments or as one list)."""
        g = self._g
        if self._arm is None:
            raise g._error(self._label, "yield_ must be called inside a `with br.arm():` block")
        if g._stack[-1] is not self._arm:
            raise g._error(self._label, f"yield_ must be called directly in the arm, not inside {g._stack[-1].where}")
        if self._yielded is not None:
            raise g._error(self._label, f"arm {len(self._arms)}: yield_ called twice")
        self._yielded = g._vals(self._label, "yield", _flatten(vals[0]) if len(vals) == 1 else list(vals))

    def _finish(self) -> None:
        g = self._g
        n, probs = len(self._arms), self.probabilities
        if n == 0:
            raise g._error(self._label, "has no arms: add them with `with br.arm():`")
        if len(probs) != n:
            raise g._error(self._label, f"probabilities: {len(probs)} given for {n} arms")
        counts = [len(y) for _, y in self._arms]
        if len(set(counts)) > 1:
            raise g._error(self._label, f"arms yield different numbers of values: {counts}")
        results = []
        for j in range(counts[0]):
            types = [y[j].type for _, y in self._arms]
            kinds = {t.kind for t in types}
            if len(kinds) > 1:
                raise g._error(self._label, f"arms yield values of different kinds at position {j}: {sorted(kinds)}")
            sizes = [t.size for t in types]
            size = sizes[0] if len(set(sizes)) == 1 else math.fsum(p * s for p, s in zip(probs, sizes, strict=True))
            results.append(Value(f"{self.name}.results.{j}", Type(types[0].kind, size)))
        for r in results:
            g._claim(r.name, self._label)
        regions = tuple(
            Graph((*region.ops, Op("agent.yield", f"{self.name}.yield.{i}", tuple(v.name for v in y))))
            for i, (region, y) in enumerate(self._arms)
        )
        parent = g._stack[-1]
        op = Op("agent.branch", self.name, self._inputs, tuple(results), {"probabilities": probs}, regions)
        parent.ops.append(op)
        self._results = tuple(Val(r.name, r.type, g, parent) for r in results)


def summary(graph: Graph) -> str:
    """A human-readable listing of an agent graph: one line per op (nested ops indented) with its
    attributes, operands and result sizes."""
    lines = [f"graph {graph.attrs.get('gimlet.name', '?')} ({graph.attrs.get('gimlet.level', '?')} level)"]

    def rec(g: Graph, depth: int) -> None:
        pad = "  " * depth
        if g.args:
            lines.append(pad + "args: " + ", ".join(f"%{a.name} {a.type.size:g} {a.type.kind}" for a in g.args))
        for op in g.ops:
            attrs = " ".join(f"{k}={v}" for k, v in op.attrs.items())
            uses = f" ({', '.join('%' + o for o in op.operands)})" if op.operands else ""
            res = ", ".join(f"%{r.name} {r.type.size:g} {r.type.kind}" for r in op.results)
            line = f"{pad}{op.kind} @{op.name}{uses}" + (f" [{attrs}]" if attrs else "")
            lines.append(line + (f" -> {res}" if res else ""))
            for i, r in enumerate(op.regions):
                if op.kind == "agent.branch":
                    lines.append(f"{pad}  arm {i} (p={op.attrs['probabilities'][i]:g}):")
                rec(r, depth + 2 if op.kind == "agent.branch" else depth + 1)

    rec(graph, 1)
    return "\n".join(lines)
