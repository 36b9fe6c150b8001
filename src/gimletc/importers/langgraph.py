"""LangGraph in: a LangGraph `StateGraph` as a gimletc agent graph.

LangGraph says what runs after what (nodes, edges, conditional edges, cycles)
but not what a node costs, and its dataflow hides in shared state. An
`Annotations` object says the rest: what each node is (an LLM call with its
model and token sizes, a tool with its CPU time, a retrieval, code), the
request's input size, branch probabilities and loop counts.

```python
ann = (Annotations()
       .input("request", tokens=2000)
       .llm("plan", model="gpt-oss-120b", output_tokens=800, reads=["request", "repo_context"])
       .tool("run_tests", tool="pytest", cpu_s=20.0, output_tokens=300)
       .loop("edit", expected=3, max=8, name="fix"))
agent = from_langgraph(builder, ann, name="coding-agent")   # an AgentGraph; agent.build() verifies it
```

How the control flow becomes an agent graph (docs/agent-graphs.md, "LangGraph"):
- edges are dataflow: a node reads the values of the nodes with an edge into
  it (the request's input for a node after START), after the nodes its
  annotation's `reads` names, in that order;
- a conditional edge with two or more destinations is an `agent.branch` from
  its source to the nodes' immediate post-dominator, one arm per destination,
  with the annotated probabilities; an arm yields the value that flows into
  the merge point (the source's own value for an arm that goes there directly);
- a cycle is an `agent.loop` with the annotated expected and maximum
  iteration counts; its header is the one node entered from outside, the
  values flowing into the header from outside are the loop's carried values,
  and the body yields the values that flow back to the header or out of the
  loop. A conditional edge inside the loop whose every destination is the
  header or the loop's exit is the loop's test and adds no branch.

The translation keeps to structured control flow: a loop has one entry and
one exit target, and leaves only by conditional edges; a branch's arms meet
only at its merge point. Anything else is a one-line `GraphError` naming the
node, as is a node without an annotation. `Send` fan-out (map-reduce) is not
modelled. Only the builder's declared structure is read; no node is run.

Tested with langgraph 1.x (`pip install 'gimletc[langgraph]'`); it reads the
builder's `nodes`, `edges`, `waiting_edges` and `branches`, which LangGraph
has kept stable across 0.2-1.x.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from gimletc.agent import AgentGraph, GraphError, Val
from gimletc.errors import ConfigError

__all__ = ["Annotations", "from_langgraph"]

START = "__start__"  # langgraph.constants.START / END, spelled out so this module imports without langgraph
END = "__end__"
_SINK = ("sink",)  # the end of the region being structured: END, a loop's exit or back edge, a merge point


@dataclass(frozen=True)
class _NodeAnn:
    kind: str  # llm | tool | retrieve | code | passthrough
    fields: dict[str, Any]
    reads: tuple[str, ...]


@dataclass(frozen=True)
class _BranchAnn:
    probabilities: dict[str, float]
    name: str | None


@dataclass(frozen=True)
class _LoopAnn:
    expected: float
    max: int
    name: str | None


def _reads(node: str, reads: Any) -> tuple[str, ...]:
    if isinstance(reads, str):
        return (reads,)
    if not isinstance(reads, Sequence) or not all(isinstance(r, str) for r in reads):
        raise GraphError(f"langgraph node {node!r}: reads must be a list of node names, got {reads!r}")
    return tuple(reads)


class Annotations:
    """What LangGraph does not say: each node's kind and size, the input, branch probabilities and
    loop counts. Every method returns the object, so calls chain; annotating a node twice is an error.
    Field values are checked by the `AgentGraph` calls they become, with errors naming the node."""

    def __init__(self) -> None:
        self.nodes: dict[str, _NodeAnn] = {}
        self.branches: dict[str, _BranchAnn] = {}
        self.loops: dict[str, _LoopAnn] = {}
        self.input_name: str | None = None
        self.input_tokens: int | None = None
        self.output_name = "output"

    def _node(self, node: str, kind: str, reads: Any, **fields: Any) -> Annotations:
        if not isinstance(node, str) or not node:
            raise GraphError(f"annotation: node must be a LangGraph node name, got {node!r}")
        if node in self.nodes:
            raise GraphError(f"langgraph node {node!r}: annotated twice ({self.nodes[node].kind} and {kind})")
        self.nodes[node] = _NodeAnn(kind, {k: v for k, v in fields.items() if v is not None}, _reads(node, reads))
        return self

    def input(self, name: str, *, tokens: int) -> Annotations:
        """The request's input (what the graph is invoked with): the value START passes on."""
        self.input_name, self.input_tokens = name, tokens
        return self

    def output(self, name: str) -> Annotations:
        """Name of the `agent.output` op that takes the values flowing into END (default `output`)."""
        self.output_name = name
        return self

    def llm(self, node: str, *, model: str, output_tokens: int, system_tokens: int | None = None,
            system: str | None = None, draft: str | None = None, draft_k: int | None = None,
            acceptance: float | None = None, batch: int | None = None, reads: Sequence[str] = ()) -> Annotations:
        """Node `node` is an LLM call (`AgentGraph.llm`); its prompt is its system prompt (`system` names
        one several calls share), then what it reads, in the order of `reads`."""
        return self._node(node, "llm", reads, model=model, output_tokens=output_tokens, system_tokens=system_tokens,
                          system=system, draft=draft, draft_k=draft_k, acceptance=acceptance, batch=batch)

    def tool(self, node: str, *, output_tokens: int, tool: str | None = None, cpu_s: float | None = None,
             latency_s: float | None = None, reads: Sequence[str] = ()) -> Annotations:
        """Node `node` is a tool call costing `cpu_s` of CPU time or `latency_s` of wall time."""
        return self._node(node, "tool", reads, tool=tool, cpu_s=cpu_s, latency_s=latency_s,
                          output_tokens=output_tokens)

    def retrieve(self, node: str, *, index_docs: int, k: int, doc_tokens: int, embed_dim: int | None = None,
                 reads: Sequence[str] = ()) -> Annotations:
        """Node `node` is a vector retrieval; its query is what it reads."""
        return self._node(node, "retrieve", reads, index_docs=index_docs, k=k, doc_tokens=doc_tokens,
                          embed_dim=embed_dim)

    def code(self, node: str, *, cpu_s: float, output_tokens: int, reads: Sequence[str] = ()) -> Annotations:
        """Node `node` runs code on a CPU for `cpu_s` seconds."""
        return self._node(node, "code", reads, cpu_s=cpu_s, output_tokens=output_tokens)

    def passthrough(self, node: str) -> Annotations:
        """Node `node` costs nothing (formatting, routing): no op; what it reads flows on."""
        return self._node(node, "passthrough", ())

    def branch(self, source: str, *, probabilities: Mapping[str, float], name: str | None = None) -> Annotations:
        """The conditional edge out of `source` (a node, or START): the probability of each
        destination node (END for the graph's end). `name` names the `agent.branch` op
        (default: the routing function's name)."""
        if source in self.branches:
            raise GraphError(f"langgraph node {source!r}: branch annotated twice")
        if not isinstance(probabilities, Mapping) or not probabilities:
            raise GraphError(f"langgraph node {source!r}: branch probabilities must be a non-empty "
                             f"{{destination: probability}} mapping, got {probabilities!r}")
        self.branches[source] = _BranchAnn(dict(probabilities), name)
        return self

    def loop(self, header: str, *, expected: float, max: int, name: str | None = None) -> Annotations:  # noqa: A002
        """The cycle entered at node `header` runs `expected` times on average, `max` at most.
        `name` names the `agent.loop` op (default: `HEADER.loop`)."""
        if header in self.loops:
            raise GraphError(f"langgraph node {header!r}: loop annotated twice")
        self.loops[header] = _LoopAnn(expected, max, name)
        return self


@dataclass(frozen=True)
class _Cond:
    """A conditional edge: its routing function's name and its destinations, in declaration order."""

    name: str
    dests: tuple[str, ...]


@dataclass
class _Level:
    """One level of structure (the top, or a loop's body): a DAG over its nodes and collapsed inner
    loops (`("loop", header)`), with edges leaving the level sent to `_SINK`."""

    dag: nx.DiGraph
    loops: dict[tuple[str, str], frozenset[str]]  # ("loop", header) -> its nodes
    ipdom: dict[Any, Any] = field(default_factory=dict)


def _builder(graph: Any) -> Any:
    try:
        from langgraph.graph import StateGraph
    except ImportError:
        raise ConfigError("importing a LangGraph graph needs the langgraph package: "
                          "pip install 'gimletc[langgraph]'") from None
    builder = getattr(graph, "builder", graph)  # a CompiledStateGraph keeps its StateGraph as .builder
    if not isinstance(builder, StateGraph):
        raise ConfigError(f"expected a langgraph StateGraph or its compiled graph, got {type(graph).__name__}")
    return builder


class _Importer:
    def __init__(self, builder: Any, ann: Annotations, name: str):
        self.ann = ann
        self.g = AgentGraph(name)
        self.nodes = [n for n, spec in builder.nodes.items() if not getattr(spec, "is_error_handler", False)]
        self.index = {START: -1, **{n: i for i, n in enumerate(self.nodes)}, END: len(self.nodes)}
        self.succ: dict[str, list[str]] = {n: [] for n in (START, *self.nodes)}
        self.conds: dict[str, _Cond] = {}
        self._read_structure(builder)
        self.scopes: list[dict[Any, list[Val]]] = [{}]
        self.branch_of: dict[Any, tuple[Any, tuple[Val, ...]]] = {}  # source -> (merge point, results)
        self.used_branches: set[str] = set()
        self.loops_seen: set[str] = set()
        self.entry_names: dict[str, tuple[str, ...]] = {}  # loop header -> names whose value it gets as carried

    # ---- the control-flow graph --------------------------------------------------------------------
    def _err(self, msg: str) -> GraphError:
        return GraphError(f"graph {self.g.name}: {msg}")

    def _known(self, n: str, where: str) -> str:
        if n not in self.index:
            raise self._err(f"{where} names unknown node {n!r}; nodes: {', '.join(self.nodes)}")
        return n

    def _read_structure(self, builder: Any) -> None:
        edges = set(builder.edges) | {(s, e) for starts, e in builder.waiting_edges for s in starts}
        for s, e in sorted(edges, key=lambda se: (self.index.get(se[0], -2), self.index.get(se[1], -2), se)):
            self._known(s, f"an edge into {e!r}")
            self._known(e, f"an edge from {s!r}")
            if e not in self.succ[s]:
                self.succ[s].append(e)
        for source, specs in builder.branches.items():
            self._known(source, "a conditional edge")
            for cname, spec in specs.items():
                dests = tuple(dict.fromkeys(spec.ends.values())) if spec.ends else None
                self._add_cond(source, str(cname), dests)
        for n in self.nodes:
            ends = getattr(builder.nodes[n], "ends", None)
            if ends:  # routing by Command(goto=...) with declared destinations
                self._add_cond(n, f"{n}.goto", tuple(dict.fromkeys(ends.values() if isinstance(ends, dict) else ends)))

    def _add_cond(self, source: str, cname: str, dests: tuple[str, ...] | None) -> None:
        if source in self.conds:
            raise self._err(f"langgraph node {source!r} has two conditional edges ({self.conds[source].name!r} and "
                            f"{cname!r}); gimletc imports one per node")
        if dests is None:
            a = self.ann.branches.get(source)
            if a is None:
                raise self._err(f"conditional edge {cname!r} from {source!r} declares no destinations: give it a "
                                "path_map or a Literal return type, or name them in Annotations.branch")
            dests = tuple(a.probabilities)
        for d in dests:
            self._known(d, f"conditional edge {cname!r} from {source!r}")
        self.conds[source] = _Cond(cname, dests)
        for d in dests:
            if d not in self.succ[source]:
                self.succ[source].append(d)

    def _key(self, n: Any) -> int:
        return self.index[n[1]] if isinstance(n, tuple) and n[0] == "loop" else self.index.get(n, len(self.index))

    def _level(self, members: set[str], header: str | None) -> _Level:
        """The DAG of one level: `members` with the inner cycles collapsed; edges into `header` (the back
        edges of the loop whose body this is) and out of `members` go to the sink."""
        inner = nx.DiGraph()
        inner.add_nodes_from(sorted(members, key=self._key))
        for u in sorted(members, key=self._key):
            for v in self.succ[u]:
                if v in members and v != header:
                    inner.add_edge(u, v)
        comp: dict[str, Any] = {n: n for n in members}
        loops: dict[tuple[str, str], frozenset[str]] = {}
        for scc in nx.strongly_connected_components(inner):
            if len(scc) == 1 and not inner.has_edge(next(iter(scc)), next(iter(scc))):
                continue
            cyc = sorted(scc, key=self._key)
            entries = [n for n in cyc if any(p not in scc for p in inner.predecessors(n))]
            if len(entries) != 1:
                raise self._err(f"the cycle through {', '.join(map(repr, cyc))} is entered at "
                                f"{' and '.join(map(repr, entries)) or 'no node'}; gimletc needs one entry (a loop header)")
            h = entries[0]
            key = ("loop", h)
            loops[key] = frozenset(scc)
            for n in scc:
                comp[n] = key
        dag = nx.DiGraph()
        dag.add_nodes_from(sorted(set(comp.values()), key=self._key))
        dag.add_node(_SINK)
        for u in sorted(members, key=self._key):
            targets = [comp[v] if v in members and v != header else _SINK for v in self.succ[u]]
            if not targets:  # a node with no outgoing edge ends the run, as an edge to END does
                targets = [_SINK]
            for t in targets:
                if t != comp[u]:
                    dag.add_edge(comp[u], t)
        for key, body in loops.items():
            for u in sorted(body, key=self._key):
                cond = self.conds.get(u)
                for v in self.succ[u]:
                    if v not in body and (cond is None or v not in cond.dests):
                        raise self._err(f"node {u!r} in the loop at {key[1]!r} has a plain edge to {v!r} outside it "
                                        f"({v!r} would run on every iteration); leave the loop by a conditional edge")
            outs = sorted(dag.successors(key), key=self._key)
            if not outs:
                raise self._err(f"the loop at {key[1]!r} has no exit")
            if len(outs) > 1:
                end = "END" if header is None else f"the end of the body of the loop at {header!r}"
                names = [t[1] if isinstance(t, tuple) and t[0] == "loop" else end if t == _SINK else t for t in outs]
                raise self._err(f"the loop at {key[1]!r} leaves to {' and '.join(map(repr, names))}; "
                                "gimletc needs one exit target")
        try:
            ipdom = nx.immediate_dominators(dag.reverse(copy=True), _SINK)
        except nx.NetworkXError as e:  # pragma: no cover - every node reaches the sink by construction
            raise self._err(f"cannot structure the graph: {e}") from None
        return _Level(dag, loops, ipdom)

    # ---- values ----------------------------------------------------------------------------------
    def _bind(self, key: Any, vals: Sequence[Val]) -> None:
        self.scopes[-1][key] = list(vals)

    def _lookup(self, key: Any) -> list[Val] | None:
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        return None

    def _edge_value(self, p: Any, x: Any) -> list[Val]:
        """The values flowing along the edge p -> x: a branch's results where the edge is one of p's
        branch arms going straight to its merge point x, else p's values."""
        br = self.branch_of.get(p)
        if br is not None and br[0] == x:
            return list(br[1])
        vals = self._lookup(p)
        if vals is None:  # pragma: no cover - predecessors come first in topological order
            raise self._err(f"internal: no value for {p!r} flowing into {x!r}")
        return vals

    @staticmethod
    def _dedupe(vals: Sequence[Val]) -> list[Val]:
        seen: set[int] = set()
        out = []
        for v in vals:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    def _inflow(self, level: _Level, x: Any, region: set[Any] | None = None) -> list[Val]:
        preds = sorted(level.dag.predecessors(x), key=self._key)
        if region is not None:
            preds = [p for p in preds if p in region]
        return self._dedupe([v for p in preds for v in self._edge_value(p, x)])

    # ---- emitting ------------------------------------------------------------------------------------
    def run(self) -> AgentGraph:
        a = self.ann
        if a.input_name is None:
            raise self._err("no input annotation: say what START passes on with Annotations.input(name, tokens=...)")
        unknown = sorted(set(a.nodes) - set(self.nodes))
        if unknown:
            raise self._err(f"annotation for unknown node {unknown[0]!r}; nodes: {', '.join(self.nodes)}")
        for key in (*a.branches, *a.loops):
            if key != START:
                self._known(key, "an annotation")
        reach = nx.descendants(nx.DiGraph([(u, v) for u, vs in self.succ.items() for v in vs]), START) \
            if any(self.succ.values()) else set()
        for n in self.nodes:
            if n not in reach:
                raise self._err(f"langgraph node {n!r} is not reachable from START")
        members = {START, *self.nodes}
        level = self._level(members, None)
        self._emit(level, members | set(level.loops), None)
        out = self._inflow(level, _SINK)
        if not out:
            raise self._err("no value flows into END: add an edge to END")
        self.g.output(a.output_name, out)
        for source in a.branches:
            if source not in self.used_branches:
                why = (f"its conditional edge is the test of the loop it is in (annotate the loop instead)"
                       if source in self.conds else "it has no conditional edge")
                raise self._err(f"branch annotation for {source!r} is not used: {why}")
        missing = sorted(set(a.loops) - self.loops_seen, key=self._key)
        if missing:
            raise self._err(f"loop annotation for {missing[0]!r} is not used: it is not the entry of a cycle")
        return self.g

    def _emit(self, level: _Level, region: set[Any], header_of_body: tuple[str, list[Val]] | None) -> None:
        """Emit the units of `region` (nodes and collapsed loops of `level`) in topological order,
        node-declaration order breaking ties; a branch source's arms are emitted inside its branch."""
        sub = level.dag.subgraph([n for n in region if n in level.dag and n != _SINK])
        done: set[Any] = set()
        for x in nx.lexicographical_topological_sort(sub, key=lambda n: (self._key(n), str(n))):
            if x in done:
                continue
            if isinstance(x, tuple):
                self._emit_loop(level, x)
            else:
                self._emit_node(level, x, header_of_body)
            done |= self._maybe_branch(level, x)

    def _emit_node(self, level: _Level, n: str, header: tuple[str, list[Val]] | None) -> None:
        g, a = self.g, self.ann
        if n == START:
            self._bind(START, [g.input(a.input_name or "", tokens=a.input_tokens)])  # type: ignore[arg-type]
            self._bind(a.input_name, self.scopes[-1][START])
            return
        spec = a.nodes.get(n)
        if spec is None:
            raise self._err(f"langgraph node {n!r} has no annotation: say what it is with Annotations.llm, tool, "
                            "retrieve, code or passthrough")
        is_header = header is not None and header[0] == n
        reads: list[Val] = []
        for r in spec.reads:
            got = header[1] if is_header and r in self.entry_names.get(n, ()) else self._lookup(r)  # type: ignore[index]
            if got is None:
                if r not in self.index and r != a.input_name:
                    raise self._err(f"langgraph node {n!r} reads unknown node {r!r}")
                raise self._err(f"langgraph node {n!r} reads {r!r}, which is not available there (it runs later, "
                                "or only inside a loop or branch arm that does not pass it on)")
            reads += got
        flow = header[1] if is_header else self._inflow(level, n)  # type: ignore[index]
        vals = self._dedupe([*reads, *flow])
        f = spec.fields
        if spec.kind == "passthrough":
            self._bind(n, vals)
            return
        if spec.kind == "llm":
            v = g.llm(n, prompt=vals, **f)
        elif spec.kind == "tool":
            v = g.tool(n, inputs=vals, **f)
        elif spec.kind == "retrieve":
            v = g.retrieve(n, query=vals, **f)
        else:
            v = g.code(n, inputs=vals, **f)
        self._bind(n, [v])

    def _maybe_branch(self, level: _Level, u: Any) -> set[Any]:
        """If `u`'s conditional edge chooses between two or more places at this level, emit its branch
        (the arms' nodes inside it); returns the nodes the arms took."""
        cond = self.conds.get(u) if isinstance(u, str) else None
        if cond is None:
            return set()
        dag = level.dag
        mapped: dict[Any, list[str]] = {}
        for d in cond.dests:
            t = next((k for k, body in level.loops.items() if d in body), d if d in dag and d != u else _SINK)
            if t not in dag.succ[u]:  # an edge into an enclosing loop's header: the back edge, to the sink
                t = _SINK
            mapped.setdefault(t, []).append(d)
        if len(mapped) < 2:
            return set()  # one place to go (e.g. a loop's test: back to the header or out): no choice to model
        a = self.ann.branches.get(u)
        if a is None:
            raise self._err(f"conditional edge {cond.name!r} from {u!r} has no probabilities: annotate it with "
                            f"Annotations.branch({u!r}, probabilities={{{', '.join(repr(d) + ': ...' for d in cond.dests)}}})")
        self.used_branches.add(u)
        extra = sorted(set(a.probabilities) - set(cond.dests))
        missing = [d for d in cond.dests if d not in a.probabilities]
        if extra or missing:
            what = f"names {extra[0]!r}, not a destination" if extra else f"has no probability for {missing[0]!r}"
            raise self._err(f"branch annotation for {u!r} {what}; destinations: {', '.join(cond.dests)}")
        merge = level.ipdom[u]
        arms: list[tuple[Any, set[Any], float]] = []
        for t, names in mapped.items():
            nodes: set[Any] = set()
            if t != merge:
                stack = [t]
                while stack:
                    x = stack.pop()
                    if x in nodes or x == merge:
                        continue
                    nodes.add(x)
                    stack.extend(dag.successors(x))
            p = math.fsum(float(a.probabilities[d]) for d in names)
            arms.append((t, nodes, p))
        for i, (t, nodes, _) in enumerate(arms):
            for x in nodes:
                for p in dag.predecessors(x):
                    if p not in nodes and not (x == t and p == u):
                        shown = p[1] if isinstance(p, tuple) else p
                        where = x[1] if isinstance(x, tuple) else x
                        raise self._err(f"the branch at {u!r} is not structured: {where!r} is reached from its arm "
                                        f"to {mapped[t][0]!r} and from {shown!r} outside that arm")
        name = a.name or cond.name
        src = self._lookup(u) or []
        with self.g.branch(name, probabilities=[p for _, _, p in arms], inputs=src) as br:
            yields = []
            for t, nodes, _ in arms:
                with br.arm():
                    if nodes:
                        self.scopes.append({})
                        self._emit(level, nodes, None)
                        y = self._inflow(level, merge, nodes)
                        yields.append((y, dict(self.scopes.pop())))
                    else:
                        y = list(src)
                        yields.append((y, {}))
                    br.yield_(y)
        results = br.results
        self.branch_of[u] = (merge, results)
        for y, scope in yields:  # a node whose value an arm passed on now means the branch's result
            for j, v in enumerate(y):
                for key, vals in scope.items():
                    if vals == [v]:
                        self._bind(key, [results[j]])
        return set().union(*(nodes for _, nodes, _ in arms))

    def _emit_loop(self, level: _Level, key: tuple[str, str]) -> None:
        h = key[1]
        body = level.loops[key]
        a = self.ann.loops.get(h)
        if a is None:
            cyc = ", ".join(repr(n) for n in sorted(body, key=self._key))
            raise self._err(f"the cycle through {cyc} has no loop annotation: give its header's expected count with "
                            f"Annotations.loop({h!r}, expected=..., max=...)")
        self.loops_seen.add(h)
        entry = sorted(level.dag.predecessors(key), key=self._key)
        self.entry_names[h] = tuple(p for p in entry if isinstance(p, str)) + tuple(u for u in body if h in self.succ[u])
        init = self._inflow(level, key)
        inner = self._level(set(body), h)
        with self.g.loop(a.name or f"{h}.loop", expected=a.expected, max=a.max, carry=init) as lp:
            self.scopes.append({})
            for u in body:
                if h in self.succ[u]:
                    self._bind(u, list(lp.args))  # before it runs in an iteration, a back edge's source is last round's
            self._emit(inner, set(body) | set(inner.loops), (h, list(lp.args)))
            y = self._inflow(inner, _SINK)
            scope = self.scopes.pop()
            lp.yield_(y)
        results = lp.results
        self._bind(key, list(results))
        for j, v in enumerate(y):
            for k, vals in scope.items():
                if vals == [v]:
                    self._bind(k, [results[j]])


def from_langgraph(graph: Any, annotations: Annotations, *, name: str | None = None) -> AgentGraph:
    """The agent graph of a LangGraph `StateGraph` (or its compiled graph) under `annotations`.

    Returns the `AgentGraph` builder; `.build()` gives the verified `ir.Graph`. `name` defaults to
    the compiled graph's name when it has one other than LangGraph's default."""
    builder = _builder(graph)
    if not isinstance(annotations, Annotations):
        raise ConfigError(f"annotations must be a gimletc.importers.langgraph.Annotations, got {type(annotations).__name__}")
    if name is None:
        given = getattr(graph, "name", None)
        name = given if isinstance(given, str) and given and given != "LangGraph" else "langgraph"
    return _Importer(builder, annotations, name).run()
