"""Loading agent graphs from YAML/JSON descriptions and from Python files.

A description lists nodes in any order (see docs/agent-graphs.md):

```yaml
name: rag
tools:
  search_web: {latency_s: 0.8, output_tokens: 600}
nodes:
  - {op: input, name: question, tokens: 200}
  - {op: llm, name: answer, model: llama-3.1-8b, prompt: [question], output_tokens: 300}
  - {op: output, name: out, inputs: [answer]}
```

A node refers to another by its name; inside a loop's `body`, `LOOP.args.I` is
the I-th carried value; after a loop or branch, `NAME.results.I` is its I-th
result (plain `NAME` too when it has exactly one). Each region (the top level,
a loop body, a branch arm) is sorted topologically with networkx, keeping the
file's order where the data allow; a dependency cycle is an error naming it.
Every error is one line naming the file, the node and the field.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import sys
import threading
import time
import uuid
from collections import ChainMap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from gimletc._io import brief, brief_text, read_data
from gimletc.agent import AgentGraph, GraphError, Val
from gimletc.errors import ConfigError, GimletError
from gimletc.ir import Graph, verify
from gimletc.models import catalog

# op -> (required fields, optional fields); every node also has `op` and `name`.
NODE_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "input": (frozenset({"tokens"}), frozenset()),
    "llm": (
        frozenset({"model", "output_tokens"}),
        frozenset({"prompt", "system_tokens", "draft", "draft_k", "acceptance", "batch"}),
    ),
    "tool": (frozenset(), frozenset({"tool", "inputs", "cpu_s", "latency_s", "output_tokens"})),
    "retrieve": (frozenset({"query", "index_docs", "k", "doc_tokens"}), frozenset({"embed_dim"})),
    "code": (frozenset({"cpu_s", "output_tokens"}), frozenset({"inputs"})),
    "loop": (frozenset({"expected", "max", "body", "yield"}), frozenset({"carry"})),
    "branch": (frozenset({"probabilities", "arms"}), frozenset({"inputs"})),
    "output": (frozenset({"inputs"}), frozenset()),
}
REF_FIELDS = ("prompt", "inputs", "query", "carry")  # fields holding node references
TOP_FIELDS = frozenset({"name", "tools", "nodes"})
TOOL_FIELDS = frozenset({"cpu_s", "latency_s", "output_tokens"})
ARM_FIELDS = frozenset({"nodes", "yield"})
_DERIVED = re.compile(r"(?P<base>.+)\.(?P<what>args|results)\.(?P<index>[0-9]+)")


@dataclass(eq=False)
class _Node:
    op: str
    name: str
    fields: dict[str, Any]
    regions: list[list[_Node]] = field(default_factory=list)  # loop: [body]; branch: one per arm
    yields: list[list[str]] = field(default_factory=list)  # one per region

    @property
    def label(self) -> str:
        return f"{self.op} {self.name!r}"

    def refs(self) -> list[str]:
        return [r for f in REF_FIELDS if f in self.fields for r in self.fields[f]]


class _Reader:
    """Parses one description into `_Node`s and emits them through an `AgentGraph`."""

    def __init__(self, source: str, name: str):
        self.source, self.graph_name = source, name
        self.nodes: dict[str, _Node] = {}
        self.region_of: dict[str, int] = {}  # node name -> id of the region listing it
        self.owner: dict[int, _Node | None] = {}  # region id -> the loop/branch holding it (None: top level)

    def error(self, msg: str) -> GraphError:
        return GraphError(f"{self.source}: graph {self.graph_name}: {msg}")

    # ---- parsing ----------------------------------------------------------------------
    def parse_region(self, raw: Any, where: str, owner: _Node | None) -> list[_Node]:
        if not isinstance(raw, list):
            raise self.error(f"{where}: expected a list of nodes, got {type(raw).__name__}")
        rid = len(self.owner)
        self.owner[rid] = owner
        out = [self.parse_node(item, f"{where}[{i}]") for i, item in enumerate(raw)]
        for n in out:
            self.region_of[n.name] = rid
        return out

    def parse_node(self, raw: Any, where: str) -> _Node:
        if not isinstance(raw, dict):
            raise self.error(f"{where}: expected a mapping with `op` and `name`, got {brief(raw)}")
        for key in ("op", "name"):
            if key not in raw:
                raise self.error(f"{where}: missing field {brief(key)}")
        op, name = raw["op"], raw["name"]
        if not isinstance(op, str) or op not in NODE_FIELDS:
            raise self.error(f"{where} ({brief(name)}): op: unknown op {brief(op)}; known: {', '.join(NODE_FIELDS)}")
        if not isinstance(name, str):
            raise self.error(f"{where}: name must be a string, got {brief(name)}")
        label = f"{op} {name!r}"
        required, optional = NODE_FIELDS[op]
        for key in raw:
            if key not in required | optional | {"op", "name"}:
                allowed = ", ".join(sorted(required | optional))
                raise self.error(f"{label}: unknown field {brief(key)}; allowed: {allowed}")
        for key in sorted(required):
            if key not in raw:
                raise self.error(f"{label}: missing field {brief(key)}")
        if name in self.nodes:
            raise self.error(f"{label}: name {name!r} is used by two nodes")
        fields = {k: v for k, v in raw.items() if k not in ("op", "name", "body", "arms", "yield")}
        for key in REF_FIELDS:
            if key in fields:
                fields[key] = self.ref_list(label, key, fields[key])
        node = _Node(op, name, fields)
        self.nodes[name] = node
        if op == "loop":
            node.regions.append(self.parse_region(raw["body"], f"{label}: body", node))
            node.yields.append(self.ref_list(label, "yield", raw["yield"]))
        elif op == "branch":
            arms = raw["arms"]
            if not isinstance(arms, list):
                raise self.error(f"{label}: arms: expected a list of {{nodes, yield}}, got {brief(arms)}")
            for i, arm in enumerate(arms):
                where_arm = f"{label}: arms[{i}]"
                if not isinstance(arm, dict):
                    raise self.error(f"{where_arm}: expected a mapping with `nodes` and `yield`, got {brief(arm)}")
                for key in arm:
                    if key not in ARM_FIELDS:
                        raise self.error(f"{where_arm}: unknown field {brief(key)}; allowed: nodes, yield")
                if "yield" not in arm:
                    raise self.error(f"{where_arm}: missing field 'yield'")
                node.regions.append(self.parse_region(arm.get("nodes", []), f"{where_arm}: nodes", node))
                node.yields.append(self.ref_list(where_arm, "yield", arm["yield"]))
        return node

    def ref_list(self, label: str, key: str, v: Any) -> list[str]:
        items = v if isinstance(v, list) else [v]
        for r in items:
            if not isinstance(r, str):
                raise self.error(f"{label}: {key}: expected a node name or a list of them, got {brief(v)}")
        return items

    # ---- references and order --------------------------------------------------------
    def base(self, ref: str) -> tuple[_Node, str | None] | None:
        """The node a reference points into, and 'args'/'results' for derived names."""
        if ref in self.nodes:
            return self.nodes[ref], None
        m = _DERIVED.fullmatch(ref)
        if m and m["base"] in self.nodes:
            node = self.nodes[m["base"]]
            if node.op == "loop" or (node.op == "branch" and m["what"] == "results"):
                return node, m["what"]
        return None

    def uses(self, node: _Node) -> Iterator[tuple[str, bool]]:
        """Every reference made by `node` (nested=False) or by the nodes and yields inside it (nested=True)."""
        for r in node.refs():
            yield r, False
        for region, ys in zip(node.regions, node.yields, strict=True):
            for inner in region:
                for r, _ in self.uses(inner):
                    yield r, True
            for r in ys:
                yield r, True

    def member(self, n: _Node, rid: int) -> _Node | None:
        """`n`, or the loop/branch enclosing it, that is listed in region `rid` (None if none is)."""
        cur: _Node | None = n
        while cur is not None:
            if self.region_of[cur.name] == rid:
                return cur
            cur = self.owner[self.region_of[cur.name]]
        return None

    def order(self, region: list[_Node]) -> list[_Node]:
        """`region` sorted so each node follows what it uses, file order kept where free."""
        if not region:
            return []
        rid = self.region_of[region[0].name]
        index = {n.name: i for i, n in enumerate(region)}
        dag = nx.DiGraph()
        dag.add_nodes_from(index)
        for n in region:
            for ref, nested in self.uses(n):
                found = self.base(ref)
                if found is None:
                    continue  # an unknown name: reported when the node is emitted
                target, what = found
                src = self.member(target, rid)
                if src is None:
                    continue
                if src is n and (nested or what == "args"):
                    continue  # a body using its own loop's args (or, wrongly, results: reported at emission)
                dag.add_edge(src.name, n.name)
        if not nx.is_directed_acyclic_graph(dag):
            cycle = [u for u, _ in nx.find_cycle(dag)]
            raise self.error(f"cycle outside a loop: {' -> '.join([*cycle, cycle[0]])}")
        return [self.nodes[x] for x in nx.lexicographical_topological_sort(dag, key=index.__getitem__)]

    # ---- emission ----------------------------------------------------------------------
    def resolve(self, env: ChainMap[str, Val], label: str, key: str, refs: list[str]) -> list[Val]:
        out = []
        for r in refs:
            if r in env:
                out.append(env[r])
                continue
            found = self.base(r)
            if found is None:
                raise self.error(f"{label}: {key}: unknown node {r!r}")
            target, what = found
            if what == "args":
                if f"{target.name}.args.0" in env:
                    raise self.error(f"{label}: {key}: {r!r} does not exist: {target.label} carries fewer values")
                raise self.error(f"{label}: {key}: {r!r} is visible only inside the body of {target.label}")
            if target.op in ("loop", "branch") and (what == "results" or r == target.name):
                if f"{target.name}.results.0" in env and what is None:
                    raise self.error(f"{label}: {key}: {target.label} has several results; name one as '{r}.results.0'")
                if f"{target.name}.results.0" in env:
                    raise self.error(f"{label}: {key}: {r!r} does not exist: {target.label} has fewer results")
                raise self.error(
                    f"{label}: {key}: {r!r} is a result of {target.label}, visible only after it, outside its regions"
                )
            owner = self.owner[self.region_of[target.name]]
            where = f"inside {owner.label}" if owner is not None else "later"
            raise self.error(f"{label}: {key}: {r!r} is defined {where} and is not visible here")
        return out

    def emit_region(self, g: AgentGraph, region: list[_Node], env: ChainMap[str, Val]) -> None:
        for n in self.order(region):
            self.emit(g, n, env)

    def emit(self, g: AgentGraph, n: _Node, env: ChainMap[str, Val]) -> None:
        f = dict(n.fields)
        for key in REF_FIELDS:
            if key in f:
                f[key] = self.resolve(env, n.label, key, f[key])
        if n.op == "input":
            env.maps[0][n.name] = g.input(n.name, **f)
        elif n.op == "llm":
            env.maps[0][n.name] = g.llm(n.name, **f)
        elif n.op == "tool":
            env.maps[0][n.name] = g.tool(n.name, **f)
        elif n.op == "retrieve":
            env.maps[0][n.name] = g.retrieve(n.name, **f)
        elif n.op == "code":
            env.maps[0][n.name] = g.code(n.name, **f)
        elif n.op == "output":
            g.output(n.name, f["inputs"])
        elif n.op == "loop":
            with g.loop(n.name, expected=f["expected"], max=f["max"], carry=f.get("carry", [])) as lp:
                body = env.new_child({a.name: a for a in lp.args})
                self.emit_region(g, n.regions[0], body)
                lp.yield_(self.resolve(body, n.label, "yield", n.yields[0]))
            self.bind_results(env, n.name, lp.results)
        else:  # branch
            with g.branch(n.name, probabilities=f["probabilities"], inputs=f.get("inputs", [])) as br:
                for i, (region, ys) in enumerate(zip(n.regions, n.yields, strict=True)):
                    with br.arm():
                        arm = env.new_child()
                        self.emit_region(g, region, arm)
                        br.yield_(self.resolve(arm, f"{n.label}: arms[{i}]", "yield", ys))
            self.bind_results(env, n.name, br.results)

    @staticmethod
    def bind_results(env: ChainMap[str, Val], name: str, results: tuple[Val, ...]) -> None:
        for v in results:
            env.maps[0][v.name] = v
        if len(results) == 1:
            env.maps[0][name] = results[0]


def graph_from_data(
    data: Any, source: str = "<data>", default_name: str = "graph", base_dir: Path | None = None
) -> Graph:
    """The verified agent-level `ir.Graph` described by `data` (parsed YAML/JSON); every error is a
    one-line GraphError naming `source`, the node and the field. Relative model paths (anything
    not in the catalog) resolve against `base_dir` when given."""
    if not isinstance(data, dict):
        raise GraphError(f"{source}: expected a mapping with `name`, `tools` and `nodes`, got {type(data).__name__}")
    for key in data:
        if key not in TOP_FIELDS:
            raise GraphError(f"{source}: unknown field {brief(key)}; allowed: {', '.join(sorted(TOP_FIELDS))}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise GraphError(f"{source}: name: expected a non-empty string, got {brief(name)}")
    if "nodes" not in data:
        raise GraphError(f"{source}: graph {name}: missing field 'nodes'")
    reader = _Reader(source, name)
    top = reader.parse_region(data["nodes"], "nodes", None)
    if base_dir is not None:
        _resolve_model_paths(reader, base_dir)
    try:
        g = AgentGraph(name)
        tools = data.get("tools") or {}
        if not isinstance(tools, dict):
            raise reader.error(f"tools: expected a mapping of tool name -> {{cpu_s or latency_s, output_tokens}}, got {brief(tools)}")
        for tool, spec in tools.items():
            if not isinstance(spec, dict):
                raise reader.error(f"tools: {tool}: expected a mapping, got {brief(spec)}")
            for key in spec:
                if key not in TOOL_FIELDS:
                    allowed = ", ".join(sorted(TOOL_FIELDS))
                    raise reader.error(f"tools: {tool}: unknown field {brief(key)}; allowed: {allowed}")
            if "output_tokens" not in spec:
                raise reader.error(f"tools: {tool}: missing field 'output_tokens'")
            g.tool_spec(str(tool), **spec)
        reader.emit_region(g, top, ChainMap())
        return g.build()
    except GraphError as e:
        msg = str(e)
        raise GraphError(msg if msg.startswith(f"{source}: ") else f"{source}: {msg}") from None


def _resolve_model_paths(reader: _Reader, base_dir: Path) -> None:
    known = catalog()
    for n in reader.nodes.values():
        for key in ("model", "draft"):
            v = n.fields.get(key)
            if isinstance(v, str) and v not in known and not Path(v).is_absolute() and (base_dir / v).exists():
                n.fields[key] = str((base_dir / v).resolve())


DEFAULT_LOAD_TIMEOUT_S = 10.0  # what `gimletc compile/graph --load-timeout` defaults to


def load_graph(path: str | Path, timeout_s: float | None = None) -> Graph:
    """The verified agent-level `ir.Graph` in `path`: a `.yaml`/`.yml`/`.json` description, or a
    `.py` file defining a module-level `graph` (an `AgentGraph` or an `ir.Graph`). Errors are
    one-line ConfigErrors (GraphErrors for the graph itself) naming the file.

    Loading a `.py` file runs it: only load files you trust. `timeout_s` bounds how long running it
    (and building its graph) may take; the limit is kept with SIGALRM, so it applies in the main
    thread only (elsewhere the file runs unbounded), and it interrupts Python code and sleeps, but a
    single long call into C code only when that call returns."""
    p = Path(path)
    if timeout_s is not None and not (isinstance(timeout_s, int | float) and 0 < timeout_s < 1e6):
        raise ConfigError(f"load timeout must be a positive number of seconds below 1e6; got {timeout_s!r}")
    if p.suffix in (".yaml", ".yml", ".json"):
        return graph_from_data(read_data(p), str(p), default_name=p.stem, base_dir=p.parent)
    if p.suffix == ".py":
        return _load_python(p, timeout_s)
    raise ConfigError(f"{p}: unknown graph file type {p.suffix or '(none)'!r}; expected .yaml, .yml, .json or .py")


class _LoadTimeout(BaseException):
    """Raised in the main thread by SIGALRM when a graph file runs past its time limit (a
    BaseException, so the file's own `except Exception` does not swallow it)."""


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    if seconds is None or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _LoadTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:  # someone else's timer was running: give back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-3), interval)


def _load_python(p: Path, timeout_s: float | None = None) -> Graph:
    if not p.is_file():
        raise ConfigError(f"{p}: cannot read: no such file" if not p.exists() else f"{p}: is not a regular file")
    module_name = f"_gimletc_graph_{p.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, p)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{p}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here while it runs
    started = time.monotonic()
    try:
        with _time_limit(timeout_s):
            spec.loader.exec_module(module)
            graph = _built(p, module)
    except _LoadTimeout:
        raise ConfigError(f"{p}: running it took longer than {timeout_s:g} s (--load-timeout); it may hang, or raise "
                          "the limit") from None
    except GraphError as e:
        msg = str(e)
        raise GraphError(msg if msg.startswith(f"{p}: ") else f"{p}: {msg}") from None
    except GimletError:
        raise
    except SystemExit as e:
        raise ConfigError(f"{p}: called sys.exit({brief(e.code)}) while loading; a graph file must define `graph` and "
                          "return, not exit") from None
    except KeyboardInterrupt:
        raise ConfigError(f"{p}: interrupted (KeyboardInterrupt) after {time.monotonic() - started:.1f} s of "
                          "running it") from None
    except (Exception, GeneratorExit) as e:
        raise ConfigError(f"{p}: running it raised {type(e).__name__}: {brief_text(str(e))}") from e
    finally:
        sys.modules.pop(module_name, None)
    return graph


def _built(p: Path, module: Any) -> Graph:
    if not hasattr(module, "graph"):
        raise ConfigError(f"{p}: defines no module-level `graph` (an AgentGraph or a gimletc.ir.Graph)")
    graph = module.graph
    if isinstance(graph, AgentGraph):
        return graph.build()
    if isinstance(graph, Graph):
        return verify(graph)
    raise ConfigError(f"{p}: `graph` is a {type(graph).__name__}, expected an AgentGraph or a gimletc.ir.Graph")
