"""The IR: one immutable graph type for every level of the compiler.

A `Graph` is an ordered tuple of `Op`s in SSA form: every `Value` is defined
once, by an op's results or a region's arguments, and used only after its
definition (so a graph is acyclic by construction). Op kinds are namespaced by
dialect and change as passes lower the graph:

- `agent.*`: input, llm, tool, retrieve, code, loop, branch, output, yield
- `model.*`: prefill, decode (room for layers, attention, ffn, draft, verify)
- `exec.*`: compute, send, recv, convert, await

Ordering between exec ops is explicit through values of type `!async.token`:
two ops with no token or data path between them may run at the same time.

Passes never mutate: they build new graphs (`Graph.replace_ops`, `with_attrs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal, Union

import networkx as nx

from gimletc.errors import GimletError

TypeKind = Literal["tokens", "kv", "act", "bytes", "token"]
TYPE_KINDS: tuple[str, ...] = ("tokens", "kv", "act", "bytes", "token")
TOKEN_ID_BYTES = 4  # token ids travel as int32

Scalar = Union[int, float, str, bool]
AttrValue = Union[Scalar, tuple["AttrValue", ...]]


class IRError(GimletError):
    """The IR broke an invariant; the message names the op and the value."""


@dataclass(frozen=True, slots=True)
class Type:
    """A value's type and size: `tokens` in tokens; `kv`, `act`, `bytes` in bytes; `token` orders ops."""

    kind: TypeKind
    size: float = 0

    def __post_init__(self) -> None:
        if self.kind not in TYPE_KINDS:
            raise IRError(f"unknown value type {self.kind!r}; known: {', '.join(TYPE_KINDS)}")
        if not (0 <= self.size < float("inf")):
            raise IRError(f"value type {self.kind} has a negative, infinite or NaN size {self.size}")
        if self.kind == "token" and self.size:
            raise IRError(f"!async.token carries no size; got {self.size}")

    @property
    def nbytes(self) -> float:
        """Bytes a value of this type occupies when moved."""
        if self.kind == "tokens":
            return self.size * TOKEN_ID_BYTES
        if self.kind == "token":
            return 0.0
        return float(self.size)

    @property
    def tokens(self) -> float:
        return self.size if self.kind == "tokens" else 0.0


ASYNC_TOKEN = Type("token")


@dataclass(frozen=True, slots=True)
class Value:
    """An SSA value: a unique name (printed `%name`) and a type."""

    name: str
    type: Type


def _freeze(v: Any) -> AttrValue:
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, bool | int | float | str):
        return v
    raise IRError(f"attribute values must be int, float, str, bool or tuples of them; got {type(v).__name__}")


def _typed(v: AttrValue) -> Any:
    return tuple(_typed(x) for x in v) if isinstance(v, tuple) else (type(v).__name__, v)


def _typed_items(attrs: Mapping[str, AttrValue]) -> tuple:
    """Attributes as a comparable tuple in which 1, 1.0 and True differ."""
    return tuple((k, _typed(v)) for k, v in attrs.items())


def frozen_attrs(attrs: Mapping[str, Any] | None) -> Mapping[str, AttrValue]:
    """An immutable, key-sorted attribute mapping."""
    return MappingProxyType({k: _freeze(attrs[k]) for k in sorted(attrs or {})})


@dataclass(frozen=True, eq=False)
class Op:
    """One operation. `name` is unique in its graph; results are the values it defines."""

    kind: str
    name: str
    operands: tuple[str, ...] = ()
    results: tuple[Value, ...] = ()
    attrs: Mapping[str, AttrValue] = field(default_factory=lambda: frozen_attrs({}))
    regions: tuple[Graph, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", tuple(self.operands))
        object.__setattr__(self, "results", tuple(self.results))
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "attrs", frozen_attrs(self.attrs))

    @property
    def dialect(self) -> str:
        return self.kind.split(".", 1)[0]

    @property
    def short_kind(self) -> str:
        return self.kind.split(".", 1)[1]

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def with_attrs(self, **updates: Any) -> Op:
        """A copy with attributes set (a value of None removes the attribute)."""
        merged = {k: v for k, v in {**self.attrs, **updates}.items() if v is not None}
        return Op(self.kind, self.name, self.operands, self.results, frozen_attrs(merged), self.regions)

    def with_operands(self, operands: Iterable[str]) -> Op:
        return Op(self.kind, self.name, tuple(operands), self.results, self.attrs, self.regions)

    def with_regions(self, regions: Iterable[Graph]) -> Op:
        return Op(self.kind, self.name, self.operands, self.results, self.attrs, tuple(regions))

    def _key(self) -> tuple:
        return (self.kind, self.name, self.operands, self.results, _typed_items(self.attrs), self.regions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Op) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Op({self.kind} @{self.name})"


@dataclass(frozen=True, eq=False)
class Graph:
    """An ordered, immutable list of ops; a region's graph also has arguments."""

    ops: tuple[Op, ...] = ()
    args: tuple[Value, ...] = ()
    attrs: Mapping[str, AttrValue] = field(default_factory=lambda: frozen_attrs({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.attrs, MappingProxyType):
            object.__setattr__(self, "attrs", frozen_attrs(self.attrs))

    def _key(self) -> tuple:
        return (self.ops, self.args, _typed_items(self.attrs))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    # ---- lookups (cached: the graph never changes) ------------------------------
    @cached_property
    def _by_name(self) -> dict[str, Op]:
        return {op.name: op for op in self.ops}

    @cached_property
    def _producer(self) -> dict[str, Op]:
        return {v.name: op for op in self.ops for v in op.results}

    @cached_property
    def _values(self) -> dict[str, Value]:
        vals = {v.name: v for v in self.args}
        vals.update({v.name: v for op in self.ops for v in op.results})
        return vals

    @cached_property
    def _users(self) -> dict[str, tuple[Op, ...]]:
        users: dict[str, list[Op]] = {}
        for op in self.ops:
            for o in dict.fromkeys(op.operands):
                users.setdefault(o, []).append(op)
        return {k: tuple(v) for k, v in users.items()}

    def op(self, name: str) -> Op:
        try:
            return self._by_name[name]
        except KeyError:
            raise IRError(f"no op named {name!r} in the graph") from None

    def has_op(self, name: str) -> bool:
        return name in self._by_name

    def value(self, name: str) -> Value:
        try:
            return self._values[name]
        except KeyError:
            raise IRError(f"no value named %{name} in the graph") from None

    def producer(self, value: str) -> Op | None:
        """The op defining `value`, or None for region arguments and outer values."""
        return self._producer.get(value)

    def users(self, value: str) -> tuple[Op, ...]:
        return self._users.get(value, ())

    def walk(self) -> Iterator[tuple[Op, tuple[Op, ...]]]:
        """Every op, nested ones included, with the chain of enclosing ops (outermost first)."""

        def rec(g: Graph, parents: tuple[Op, ...]) -> Iterator[tuple[Op, tuple[Op, ...]]]:
            for op in g.ops:
                yield op, parents
                for r in op.regions:
                    yield from rec(r, (*parents, op))

        return rec(self, ())

    def kinds(self) -> set[str]:
        return {op.kind for op, _ in self.walk()}

    # ---- building new graphs ------------------------------------------------------
    def replace_ops(self, ops: Iterable[Op]) -> Graph:
        return Graph(tuple(ops), self.args, self.attrs)

    def with_attrs(self, **updates: Any) -> Graph:
        merged = {k: v for k, v in {**self.attrs, **updates}.items() if v is not None}
        return Graph(self.ops, self.args, frozen_attrs(merged))

    def map_ops(self, fn: Callable[[Op], Op | Iterable[Op]]) -> Graph:
        """Apply `fn` to every op, innermost regions first; `fn` may return several ops."""
        out: list[Op] = []
        for op in self.ops:
            if op.regions:
                op = op.with_regions(r.map_ops(fn) for r in op.regions)
            res = fn(op)
            out.extend([res] if isinstance(res, Op) else res)
        return self.replace_ops(out)

    # ---- analysis -------------------------------------------------------------------
    def to_networkx(self, tokens: bool = True) -> nx.DiGraph:
        """A DiGraph of this graph's top-level ops; an edge per used value (its name and bytes as data).

        Values used inside an op's regions count as used by that op. With
        tokens=False, `!async.token` edges are left out."""
        g = nx.DiGraph()
        for op in self.ops:
            g.add_node(op.name, op=op)
        for op in self.ops:
            for v in _uses_including_regions(op):
                src = self._producer.get(v)
                if src is None or src.name == op.name:
                    continue
                t = self._values[v].type
                if not tokens and t.kind == "token":
                    continue
                if g.has_edge(src.name, op.name):
                    g[src.name][op.name]["values"] += (v,)
                    g[src.name][op.name]["bytes"] += t.nbytes
                else:
                    g.add_edge(src.name, op.name, values=(v,), bytes=t.nbytes)
        return g


def forwarded_values(graph: Graph) -> list[tuple[str, str]]:
    """(value, source) for every value a region op forwards, in walk order: each loop or branch result
    stands for what its (first) region yields, each loop body argument for its initial operand."""
    pairs: list[tuple[str, str]] = []
    for op, _ in graph.walk():
        if op.kind in ("agent.loop", "agent.branch"):
            y = op.regions[0].ops[-1]
            pairs.extend((res.name, src) for res, src in zip(op.results, y.operands, strict=False))
        if op.kind == "agent.loop":
            pairs.extend((arg.name, init) for arg, init in zip(op.regions[0].args, op.operands, strict=True))
    return pairs


def _uses_including_regions(op: Op) -> list[str]:
    """Operands of `op` and outer values its regions capture (in first-use order)."""
    uses = list(op.operands)
    for r in op.regions:
        defined = {a.name for a in r.args} | {v.name for o, _ in r.walk() for v in o.results}
        defined |= {a.name for o, _ in r.walk() for rr in o.regions for a in rr.args}
        for inner, _ in r.walk():
            uses.extend(x for x in inner.operands if x not in defined)
    return list(dict.fromkeys(uses))


# ---- op specifications and verification -------------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    """What an op kind requires: attribute names and types, operand and result counts, regions."""

    kind: str
    attrs: Mapping[str, type | tuple[type, ...]] = field(default_factory=dict)
    optional: Mapping[str, type | tuple[type, ...]] = field(default_factory=dict)
    operands: tuple[int, int | None] = (0, None)  # (min, max); None: no maximum
    results: tuple[int, int | None] = (0, None)
    regions: tuple[int, int | None] = (0, 0)
    terminator: bool = False
    doc: str = ""


_NUM = (int, float)
_SPECS: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    _SPECS[spec.kind] = spec
    return spec


def spec(kind: str) -> OpSpec:
    try:
        return _SPECS[kind]
    except KeyError:
        raise IRError(f"unknown op kind {kind!r}") from None


def registered_kinds() -> list[str]:
    return sorted(_SPECS)


# Placement attributes any op may carry once placed or scheduled.
COMMON_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "device": str,
    "devices": tuple,
    "seconds": _NUM,
    "pinned": str,
    "note": str,
    "partition": str,
}

# What kv-reuse records on a prefill: its prompt's segments in order ("sys:NAME" for a system prompt, else a
# value's name) with their tokens, and, where a cached prefix is reused, how many tokens hit and from where.
_PREFIX_ATTRS: dict[str, type | tuple[type, ...]] = {
    "system": str,  # the system prompt's name (agent.llm's `system`)
    "prompt": tuple,
    "prompt_tokens": tuple,
    "kv_reuse": str,  # local | moved | transfer
    "cached_first": int,  # prompt tokens served from cache on its first run (in a loop: the first iteration)
    "cached_later": int,  # on later iterations of its loop
    "cached_from": tuple,  # the prefills whose KV it reuses (its own name: its previous iteration)
}

# Attributes the partitioning passes set on model ops.
_PARTITION_ATTRS: dict[str, type | tuple[type, ...]] = {
    "layers": tuple,  # (first, last): a pipeline stage's or a block's layer range
    "stage": int,
    "stages": int,
    "microbatch": int,
    "microbatches": int,
    "variant": str,  # the partitioning kind: whole, phase, layers, attn-ffn, speculative
    "unit": str,  # ops with the same unit are placed together
}

for _s in (
    OpSpec("agent.input", {"tokens": int}, operands=(0, 0), results=(1, 1), doc="a request's input tokens"),
    OpSpec(
        "agent.llm",
        {"model": str, "output_tokens": int},
        {"system_tokens": int, "system": str, "draft": str, "draft_k": int, "acceptance": _NUM, "batch": int},
        results=(1, 1),
        doc="an LLM call: prompt = system tokens (of the system prompt named `system`, if any), then the operands in "
        "order; produces output_tokens (per sequence of `batch`)",
    ),
    OpSpec(
        "agent.tool",
        {"tool": str, "output_tokens": int},
        {"cpu_s": _NUM, "latency_s": _NUM},
        results=(1, 1),
        doc="a tool call taking cpu_s of CPU time or latency_s of wall time",
    ),
    OpSpec(
        "agent.retrieve",
        {"index_docs": int, "k": int, "doc_tokens": int},
        {"embed_dim": int},
        operands=(1, None),
        results=(1, 1),
        doc="vector retrieval of k documents from an index",
    ),
    OpSpec("agent.code", {"cpu_s": _NUM, "output_tokens": int}, results=(1, 1), doc="code execution on a CPU"),
    OpSpec(
        "agent.loop",
        {"expected": _NUM, "max": int},
        results=(0, None),
        regions=(1, 1),
        doc="a loop body run `expected` times on average, at most `max`",
    ),
    OpSpec("agent.branch", {"probabilities": tuple}, results=(0, None), regions=(1, None), doc="one region runs"),
    OpSpec("agent.output", {}, operands=(1, None), results=(0, 0), doc="the request's response"),
    OpSpec("agent.yield", {}, results=(0, 0), terminator=True, doc="ends a region; operands become the parent's results"),
    OpSpec(
        "model.prefill",
        {"model": str, "tokens": int},
        {"ctx": int, "batch": int, "of": str, **_PARTITION_ATTRS, **_PREFIX_ATTRS},
        operands=(1, None),
        results=(1, None),
        doc="prefill of `tokens` prompt tokens (of layers `layers`, when a pipeline stage): results are the "
        "KV cache, or the activations to the next stage and the stage's KV cache, and, on the last stage of a "
        "partitioned call, the first token",
    ),
    OpSpec(
        "model.decode",
        {"model": str, "tokens": int, "ctx": int},
        {"batch": int, "of": str, "draft": str, "draft_k": int, "acceptance": _NUM, "kv_from": str, **_PARTITION_ATTRS},
        operands=(1, None),
        results=(1, 1),
        doc="decode of `tokens` tokens after `ctx` context tokens from a KV cache (a stage's layers if `layers`)",
    ),
    OpSpec(
        "model.attention",
        {"model": str, "tokens": int, "ctx": int},
        {"batch": int, "of": str, **_PARTITION_ATTRS},
        operands=(1, None),
        results=(1, 1),
        doc="the attention block of layers `layers` for one decode step of `batch` sequences (attention/FFN split)",
    ),
    OpSpec(
        "model.ffn",
        {"model": str, "tokens": int, "ctx": int},
        {"batch": int, "of": str, **_PARTITION_ATTRS},
        operands=(1, None),
        results=(1, 1),
        doc="the FFN or MoE block of layers `layers` for one decode step (attention/FFN split)",
    ),
    OpSpec(
        "model.draft",
        {"model": str, "draft_k": int, "ctx": int},
        {"batch": int, "of": str, **_PARTITION_ATTRS},
        operands=(1, None),
        results=(1, 1),
        doc="speculative decoding: the draft model proposes draft_k tokens (rolling back its own KV first)",
    ),
    OpSpec(
        "model.verify",
        {"model": str, "tokens": int, "ctx": int},
        {"batch": int, "of": str, "acceptance": _NUM, **_PARTITION_ATTRS},
        operands=(1, None),
        results=(1, 1),
        doc="speculative decoding: the target checks `tokens` positions at once; result: the accepted tokens",
    ),
    OpSpec(
        "model.kv_rollback",
        {"model": str},
        {"of": str, **_PARTITION_ATTRS},
        operands=(1, None),
        results=(0, 0),
        doc="speculative decoding: drop the rejected draft tokens' KV entries (a length update)",
    ),
    OpSpec(
        "exec.compute",
        {"of": str, "device": str, "seconds": _NUM},
        {"kind_of": str, "model": str, "tokens": int, "ctx": int, "batch": int, "llm": str, "chunk": int,
         "chunks": int, "draft_k": int, "draft": str, "acceptance": _NUM, "tool": str, "cpu_s": _NUM,
         "latency_s": _NUM, "output_tokens": int, "index_docs": int, "k": int, "doc_tokens": int, "embed_dim": int,
         **_PARTITION_ATTRS, **_PREFIX_ATTRS},
        results=(1, None),
        doc="runs op `of` on `device`; its last result is a done token",
    ),
    OpSpec(
        "exec.send",
        {"src": str, "dst": str, "route": str, "bytes": _NUM, "seconds": _NUM, "channel": str},
        {"chunks": int, "latency": _NUM},
        operands=(1, None),
        results=(1, 1),
        doc="starts moving a value from src to dst; result: token",
    ),
    OpSpec(
        "exec.recv",
        {"src": str, "dst": str, "bytes": _NUM, "channel": str},
        operands=(1, None),
        results=(2, 2),
        doc="receives the value on dst: results are the value and a token",
    ),
    OpSpec(
        "exec.convert",
        {"device": str, "from_layout": str, "to_layout": str, "from_dtype": str, "to_dtype": str, "seconds": _NUM},
        operands=(1, None),
        results=(2, 2),
        doc="converts a KV cache's layout or dtype: results are the converted value and a token",
    ),
    OpSpec("exec.await", {}, operands=(1, None), results=(1, 1), doc="joins tokens"),
):
    register(_s)


# Level invariants by `gimlet.level` value, registered by gimletc.ir.levels (imported with the package):
# verify() runs the one the top-level graph names.
LEVEL_CHECKS: dict[str, Callable[[Graph], Any]] = {}


def _check_attr(op: Op, key: str, want: type | tuple[type, ...]) -> None:
    v = op.attrs[key]
    ok = isinstance(v, want) and not (isinstance(v, bool) and want in (int, _NUM))
    if not ok:
        names = want.__name__ if isinstance(want, type) else " or ".join(t.__name__ for t in want)
        raise IRError(f"op @{op.name} ({op.kind}): attribute {key} should be {names}, got {v!r}")


def _count_ok(n: int, bounds: tuple[int, int | None]) -> bool:
    lo, hi = bounds
    return n >= lo and (hi is None or n <= hi)


def verify(
    graph: Graph, _outer: frozenset[str] = frozenset(), _names: set[str] | None = None, _where: str = ""
) -> Graph:
    """Check the invariants; raise IRError naming the op and value that break one. Returns the graph.

    - every op kind is registered and its attributes, operand, result and region counts match its spec
    - op names are unique across the whole graph, nested regions included
    - every value is defined once, before its uses (so the graph is acyclic)
    - sizes are non-negative (checked by Type); numeric attributes `seconds`, `bytes`, token counts >= 0
    - exec ops only use `!async.token` values in their token positions; a region ends with agent.yield
    - the invariants of the graph's `gimlet.level`, if it has one (see gimletc.ir.levels)
    """
    names = _names if _names is not None else set()
    defined: set[str] = set(_outer)
    for a in graph.args:
        if a.name in defined:
            raise IRError(f"{_where}region argument %{a.name} is defined twice")
        defined.add(a.name)
    if _where and graph.attrs:
        raise IRError(f"{_where}a region has attributes ({', '.join(graph.attrs)}); regions carry none")
    for i, op in enumerate(graph.ops):
        if op.kind not in _SPECS:
            raise IRError(f"op @{op.name}: unknown op kind {op.kind!r}")
        s = spec(op.kind)
        if op.name in names:
            raise IRError(f"op name @{op.name} is used twice")
        names.add(op.name)
        for key, want in s.attrs.items():
            if key not in op.attrs:
                raise IRError(f"op @{op.name} ({op.kind}): missing attribute {key}")
            _check_attr(op, key, want)
        allowed = {**s.attrs, **s.optional, **COMMON_OPTIONAL}
        for key in op.attrs:
            if key not in allowed:
                raise IRError(f"op @{op.name} ({op.kind}): unknown attribute {key}")
            _check_attr(op, key, allowed[key])
            v = op.attrs[key]
            if isinstance(v, int | float) and not isinstance(v, bool) and v < 0:
                raise IRError(f"op @{op.name} ({op.kind}): attribute {key} is negative ({v})")
        for what, n, bounds in (
            ("operands", len(op.operands), s.operands),
            ("results", len(op.results), s.results),
            ("regions", len(op.regions), s.regions),
        ):
            if not _count_ok(n, bounds):
                raise IRError(f"op @{op.name} ({op.kind}): {n} {what}, expected {bounds[0]}..{bounds[1] or 'any'}")
        for v in op.operands:
            if v not in defined:
                raise IRError(f"op @{op.name} ({op.kind}) uses %{v} before it is defined (or it is never defined)")
        if s.terminator and i != len(graph.ops) - 1:
            raise IRError(f"op @{op.name} ({op.kind}) must be the last op of its region")
        for r in op.regions:
            if not r.ops or r.ops[-1].kind != "agent.yield":
                raise IRError(f"op @{op.name} ({op.kind}): each region must end with agent.yield")
            verify(r, frozenset(defined), names, f"op @{op.name} ({op.kind}): ")
            if op.kind == "agent.loop" and len(r.args) != len(op.operands):
                raise IRError(
                    f"op @{op.name} (agent.loop): {len(op.operands)} operands for {len(r.args)} body arguments"
                )
            if op.kind == "agent.branch" and len(r.ops[-1].operands) != len(op.results):
                raise IRError(
                    f"op @{op.name} (agent.branch): an arm yields {len(r.ops[-1].operands)} values for "
                    f"{len(op.results)} results"
                )
            if op.kind == "agent.loop":
                y = r.ops[-1]
                if len(y.operands) != len(op.results):
                    raise IRError(
                        f"op @{op.name} (agent.loop): body yields {len(y.operands)} values for {len(op.results)} results"
                    )
        for v in op.results:
            if v.name in defined:
                raise IRError(f"op @{op.name} ({op.kind}) redefines %{v.name}")
            defined.add(v.name)
        if op.dialect == "exec":
            _verify_exec_tokens(graph, op)
    if _names is None and "gimlet.level" in graph.attrs:
        level = graph.attrs["gimlet.level"]
        if level not in LEVEL_CHECKS:
            raise IRError(f"unknown IR level {level!r} (gimlet.level); known: {', '.join(LEVEL_CHECKS)}")
        LEVEL_CHECKS[str(level)](graph)
    return graph


def _verify_exec_tokens(graph: Graph, op: Op) -> None:
    last = op.results[-1] if op.results else None
    if op.kind in ("exec.compute", "exec.send", "exec.recv", "exec.convert", "exec.await"):
        if last is None or last.type.kind != "token":
            raise IRError(f"op @{op.name} ({op.kind}): its last result must be an !async.token")
    if op.kind == "exec.await":
        for v in op.operands:
            t = graph._values.get(v)
            if t is not None and t.type.kind != "token":
                raise IRError(f"op @{op.name} (exec.await): operand %{v} is not an !async.token")
