"""kv-reuse: keep a shared prompt prefix's KV cache on the device that computed it, route later calls
there, and price only their new tokens (prefix caching, as serving engines do it).

A prompt is its call's system tokens, then its prompt values in order (`gimletc.agent`). Two prefills
of one model share a prefix when their prompts begin with the same segments: the same system prompt
(`system=` names it; a call that names none has one of its own) and then the same values in the same
order; the prefix ends at the first segment that differs. For every prefill B the pass looks for

- earlier calls A whose prefill always ends before B's starts: A is in B's region or one enclosing it
  (not in a branch arm B is outside of), and A's result reaches B through the graph;
- B's previous iteration, when B sits directly in a loop's body: its leading segments that do not change
  from one iteration to the next (the system prompt, and values defined outside the loop).

An engine keeps a finished request's blocks cached, so A's prefix is on the devices A's prefill ran on,
and on those its KV cache moved to for its decode. B hits it when B's prefill runs there; the engine
takes whole blocks only and computes at least the prompt's last token
(`gimletc.models.workload.cached_prefix_tokens`). Where the prefix is elsewhere, the pass tries moving
B's placement unit onto the devices that hold it (when B is not pinned and the devices' memory holds
it) and moving the KV instead (B's prefill then reads A's KV cache, which `insert-transfers` moves with
an explicit transfer); each is kept only if the plan's objective improves.

Pricing: a hit of h of an n-token prompt is a prefill of n - h tokens after h cached ones (the cost
model: GEMMs over the new tokens, attention over the whole context). In a loop the op's seconds are the
mean over its iterations: the first hits earlier calls' prefixes only, later ones its own too. The KV
the prefix keeps is part of A's (or B's own) KV cache, which placement counts on those devices for the
whole request, so keeping it takes no memory beyond what the plan already holds.

Never worse: the rewrite is kept only if neither the plan's objective nor its latency grows, scored as
the compile driver scores place's choices (the pipeline's passes after this one, then the plan's
metrics; without a driver, `insert-transfers` and `schedule` and the replay); else hits in place only,
else nothing. `PassContext.kv_reuse` records what was reused and the metrics without it.

Every prefill of a whole model for one sequence also gets its prompt's structure (`prompt`,
`prompt_tokens`), which the load simulator's prefix cache reads (`gimletc.sim.kv`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import networkx as nx

from gimletc.analysis.metrics import Metrics, plan_metrics
from gimletc.analysis.runs import runs as expected_runs
from gimletc.hardware.resources import device_of
from gimletc.ir import Graph, Level, Op
from gimletc.models.workload import PREFIX_BLOCK, StackName, cached_prefix_tokens, resolve_stack
from gimletc.passes.costs import model_of, op_memory, op_seconds
from gimletc.passes.manager import Pass, PassContext
from gimletc.passes.results import KVReuseReport, ReuseRecord

__all__ = ["KVReuse", "SYSTEM_PREFIX"]

SYSTEM_PREFIX = "sys:"  # a prompt segment naming a system prompt ("sys:NAME"; "sys:@CALL": a call's own)
_TOL = 1e-12


@dataclass
class _Prefill:
    """One prefill that may reuse or share a prefix, and where it sits in the graph."""

    op: Op
    path: tuple[tuple[str, int], ...]  # (enclosing op, region index), outermost first
    loop: Op | None  # the loop whose body holds it directly (its previous iteration can share its prefix)
    segs: tuple[str, ...]
    ends: tuple[int, ...]  # cumulative tokens at each segment's end
    invariant: int  # leading segments the same in every iteration of `loop`
    sources: list[tuple[_Prefill, int]] = field(default_factory=list)  # (earlier prefill A, shared tokens)

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def tokens(self) -> int:
        return int(self.op.attr("tokens"))


@dataclass(frozen=True)
class _Choice:
    """A rewrite and what it scores."""

    graph: Graph
    records: tuple[ReuseRecord, ...]
    metrics: Metrics


@dataclass(frozen=True)
class KVReuse(Pass):
    """Reuse shared prompt prefixes' KV caches across calls and loop iterations (see the module docstring).

    `enable`: false leaves the graph as it is. `route`: whether calls may be moved to the devices holding a
    prefix, or the prefix's KV moved to them, when that pays; false reuses only where calls already run."""

    name: ClassVar[str] = "kv-reuse"
    requires: ClassVar[tuple[Level, ...]] = ("placed",)
    produces: ClassVar[Level | None] = "placed"
    needs_cluster: ClassVar[bool] = True
    enable: bool = True
    route: bool = True
    stack: StackName | None = None  # none: the compile's stack (PassContext.stack)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        ctx.kv_reuse = None
        if not self.enable:
            return graph
        if any(op.kind == "model.prefill" and op.attr("prompt") is not None for op, _ in graph.walk()):
            return graph  # already annotated (a pipeline running kv-reuse twice): pricing it again would count twice
        stack = resolve_stack(self.stack or ctx.stack)
        prefills = _prefills(graph, ctx)
        plain = _annotate(graph, prefills)
        _find_sources(graph, prefills)
        candidates = [b for b in prefills.values() if b.sources or (b.loop is not None and b.invariant)]
        if not candidates:
            return plain
        planner = _Planner(self, ctx, stack, prefills, plain)
        return planner.choose()

    def score(self, graph: Graph, ctx: PassContext) -> Metrics:
        """The plan's metrics for placed `graph`: the driver's passes after this one, else transfers, schedule
        and the replay. Later passes write their results into a scratch context, not `ctx`."""
        scratch = dataclasses.replace(ctx)
        if ctx.score_rest is not None:
            return ctx.score_rest(graph, scratch, self)
        from gimletc.passes.insert_transfers import InsertTransfers
        from gimletc.passes.schedule import Schedule

        out = Schedule().run(InsertTransfers().run(graph, scratch), scratch)
        return plan_metrics(out, ctx.analyses.timeline(out), ctx.cluster)


# ---- finding prefixes ---------------------------------------------------------------------------------


def _walk(graph: Graph, path: tuple[tuple[str, int], ...] = ()
          ) -> Iterator[tuple[Op, tuple[tuple[str, int], ...], Graph]]:
    """Every op with its region path and the region (graph) holding it."""
    for op in graph.ops:
        yield op, path, graph
        for i, r in enumerate(op.regions):
            yield from _walk(r, (*path, (op.name, i)))


def _defined_in(region: Graph) -> set[str]:
    names = {a.name for a in region.args}
    for op, _ in region.walk():
        names.update(v.name for v in op.results)
        for r in op.regions:
            names.update(a.name for a in r.args)
    return names


def _eligible(op: Op, devices: dict) -> bool:
    """A prefill of a whole model for one sequence, on accelerators (what engines prefix-cache here)."""
    if op.kind != "model.prefill" or op.attr("layers") is not None or int(op.attr("batch", 1)) != 1:
        return False
    dev = op.attr("device")
    d = devices.get(device_of(str(dev))) if dev is not None else None
    return d is not None and d.role != "host"


def _prefills(graph: Graph, ctx: PassContext) -> dict[str, _Prefill]:
    """Eligible prefills in walk order with their prompt segments."""
    values = {}
    for op, _ in graph.walk():
        values.update({v.name: v for v in op.results})
        for r in op.regions:
            values.update({a.name: a for a in r.args})
    values.update({a.name: a for a in graph.args})
    ops = {op.name: op for op, _ in graph.walk()}
    devices = {d.id: d for d in ctx.cluster.devices()} if ctx.cluster is not None else {}
    out: dict[str, _Prefill] = {}
    for op, path, _region in _walk(graph):
        if not _eligible(op, devices):
            continue
        words = [v for v in op.operands if v in values and values[v].type.kind == "tokens"]
        total = int(op.attr("tokens"))
        sys_tokens = total - int(sum(values[v].type.tokens for v in words))
        if sys_tokens < 0:
            continue
        segs: list[str] = []
        ends: list[int] = []
        if sys_tokens > 0:
            system = op.attr("system") or f"@{op.attr('of', op.name)}"
            segs.append(f"{SYSTEM_PREFIX}{system}")
            ends.append(sys_tokens)
        acc = 0.0
        for v in words:
            acc += values[v].type.tokens
            end = sys_tokens + int(acc)
            if ends and end == ends[-1]:
                continue  # an empty value adds nothing to the prompt
            segs.append(v)
            ends.append(end)
        if not segs or ends[-1] != total:
            continue
        loop = None
        invariant = 0
        if path:
            parent = ops[path[-1][0]]
            if parent.kind == "agent.loop":
                loop = parent
                inner = _defined_in(parent.regions[0])
                while invariant < len(segs) and (segs[invariant].startswith(SYSTEM_PREFIX)
                                                  or segs[invariant] not in inner):
                    invariant += 1
        out[op.name] = _Prefill(op, path, loop, tuple(segs), tuple(ends), invariant)
    return out


def _annotate(graph: Graph, prefills: dict[str, _Prefill]) -> Graph:
    """Every eligible prefill with its prompt's segments and their tokens."""

    def tag(op: Op) -> Op:
        p = prefills.get(op.name)
        if p is None or op.kind != "model.prefill":
            return op
        sizes = tuple(e - (p.ends[i - 1] if i else 0) for i, e in enumerate(p.ends))
        return op.with_attrs(prompt=p.segs, prompt_tokens=sizes)

    return graph.map_ops(tag)


def _common(a: _Prefill, b: _Prefill) -> int:
    """Tokens of the longest prefix of segments a's and b's prompts share."""
    n = 0
    for sa, sb, ea, eb in zip(a.segs, b.segs, a.ends, b.ends, strict=False):
        if sa != sb or ea != eb:
            break
        n = ea
    return n


def _find_sources(graph: Graph, prefills: dict[str, _Prefill]) -> None:
    """For each prefill B, the earlier prefills A of the same model that always end before B starts and
    share a prefix with it."""
    regions: dict[tuple[tuple[str, int], ...], Graph] = {(): graph}
    for op, path, _ in _walk(graph):
        for i, r in enumerate(op.regions):
            regions[(*path, (op.name, i))] = r
    ancestors: dict[tuple[tuple[tuple[str, int], ...], str], set[str]] = {}
    dags: dict[tuple[tuple[str, int], ...], nx.DiGraph] = {}

    def before(path: tuple[tuple[str, int], ...], a: str, e: str) -> bool:
        key = (path, e)
        if key not in ancestors:
            if path not in dags:
                dags[path] = regions[path].to_networkx(tokens=False)
            ancestors[key] = nx.ancestors(dags[path], e) if e in dags[path] else set()
        return a in ancestors[key]

    order = list(prefills.values())
    for j, b in enumerate(order):
        model = str(b.op.attr("model"))
        for a in order[:j]:
            if str(a.op.attr("model")) != model or b.path[: len(a.path)] != a.path:
                continue
            shared = _common(a, b)
            if shared <= 0:
                continue
            e = b.name if len(b.path) == len(a.path) else b.path[len(a.path)][0]
            if before(a.path, a.name, e):
                b.sources.append((a, shared))


# ---- applying and pricing -----------------------------------------------------------------------------


def _unit_key(op: Op) -> str:
    """What placement places together with `op` (gimletc.passes.placement.problem's rule)."""
    key = op.attr("unit")
    if key is None and op.kind in ("model.prefill", "model.decode") and op.attr("of") and \
            op.attr("partition") != "phase":
        key = op.attr("of")
    return str(key) if key is not None else op.name


def _devices(op: Op) -> tuple[str, ...]:
    devs = op.attr("devices")
    return tuple(str(d) for d in devs) if devs else ((str(op.attr("device")),) if op.attr("device") else ())


class _Planner:
    """Chooses routes (which prefills move, which get their prefix's KV moved) and prices the result."""

    def __init__(self, pass_: KVReuse, ctx: PassContext, stack: str, prefills: dict[str, _Prefill], plain: Graph):
        self.p, self.ctx, self.stack = pass_, ctx, stack
        self.block = PREFIX_BLOCK[stack]
        self.prefills = prefills
        self.plain = plain
        self.devs = {d.id: d for d in ctx.cluster.devices()}
        self.runs = expected_runs(plain)

    # -- the search --
    def choose(self) -> Graph:
        without = self.p.score(self.plain, self.ctx)
        local = self.apply({})
        best = local
        if self.p.route:
            for b in self.prefills.values():
                for route in self.routes(best.graph, b):
                    trial_routes = {**self.routes_of(best), b.name: route}
                    cand = self.apply(trial_routes)
                    if self.better(cand.metrics, best.metrics):
                        best = cand
        kept = "all" if best is not local else "local"
        if best is not local and not self.no_worse(best.metrics, without):
            best, kept = local, "local"
        if not best.records or not self.no_worse(best.metrics, without):
            self.report((), "none", without, without)
            return self.plain
        self.report(best.records, kept, best.metrics, without)
        return best.graph

    def better(self, a: Metrics, b: Metrics) -> bool:
        obj = self.ctx.objective
        return a.objective(obj) < b.objective(obj) - _TOL * abs(b.objective(obj)) and \
            a.latency_ms <= b.latency_ms * (1 + _TOL)

    def no_worse(self, a: Metrics, b: Metrics) -> bool:
        obj = self.ctx.objective
        return a.objective(obj) <= b.objective(obj) + _TOL * abs(b.objective(obj)) and \
            a.latency_ms <= b.latency_ms * (1 + _TOL)

    def report(self, records: tuple[ReuseRecord, ...], kept: str, m: Metrics, without: Metrics) -> None:
        self.ctx.kv_reuse = KVReuseReport(
            reused=records, kept=kept, scoring="plan" if self.ctx.score_rest is not None else "replay",
            latency_s=m.latency_ms / 1e3, energy_j=m.energy_j,
            latency_s_without=without.latency_ms / 1e3, energy_j_without=without.energy_j,
            ttft_s_without=tuple((r.llm, without.ttft_ms[r.llm] / 1e3) for r in records if r.llm in without.ttft_ms))

    # -- routes --
    @staticmethod
    def routes_of(choice: _Choice) -> dict[str, tuple[str, str, tuple[str, ...]]]:
        return {r.op: (r.route, r.sources[0], r.devices) for r in choice.records if r.route != "local"}

    def holders(self, graph: Graph, a: _Prefill) -> set[tuple[str, ...]]:
        """Device groups holding a's prompt KV: where its prefill ran, and where its KV cache moved."""
        ops = {op.name: op for op, _ in graph.walk()}
        pre = ops[a.name]
        out = {_devices(pre)}
        kv = [v.name for v in pre.results if v.type.kind == "kv"]
        for op, _ in graph.walk():
            if op.kind.startswith("model.") and op.name != a.name and any(v in op.operands for v in kv):
                out.add(_devices(op))
        return out

    def routes(self, graph: Graph, b: _Prefill) -> list[tuple[str, str, tuple[str, ...]]]:
        """Ways to bring b's best earlier prefix to it that beat what it gets where it runs."""
        ops = {op.name: op for op, _ in graph.walk()}
        here = _devices(ops[b.name])
        local = max((self.hit(s, b.tokens) for a, s in b.sources if here in self.holders(graph, a)), default=0)
        out: list[tuple[str, str, tuple[str, ...]]] = []
        for a, shared in sorted(b.sources, key=lambda x: -x[1]):
            if self.hit(shared, b.tokens) <= local:
                break
            a_devs = _devices(ops[a.name])
            if self.movable(graph, b):
                out.append(("moved", a.name, a_devs))
            if a_devs[0] != here[0]:  # an explicit transfer (insert-transfers moves values between primary devices)
                out.append(("transfer", a.name, here))
            break
        return out

    def movable(self, graph: Graph, b: _Prefill) -> bool:
        pins = self.ctx.pins
        key = _unit_key(b.op)
        for op, _ in graph.walk():
            if op.attr("device") is None or _unit_key(op) != key:
                continue
            if op.attr("pinned") or any(k in pins for k in (op.name, op.attr("unit"), op.attr("of")) if k):
                return False
        return True

    def hit(self, shared: int, prompt: int) -> int:
        return cached_prefix_tokens(shared, prompt, self.block)

    # -- applying --
    def apply(self, routes: dict[str, tuple[str, str, tuple[str, ...]]]) -> _Choice:
        """The plain graph with `routes` applied (moves, transferred KV), every hit priced; and its score."""
        g = self.plain
        for b_name, (how, a_name, devs) in routes.items():
            if how == "moved":
                g = self.move(g, self.prefills[b_name], devs)
            elif how == "transfer":
                kv = next(v.name for v in self.prefills[a_name].op.results if v.type.kind == "kv")
                g = g.map_ops(lambda op, b=b_name, kv=kv: op.with_operands((*op.operands, kv)) if op.name == b else op)
        if any(how == "moved" for how, _, _ in routes.values()) and not self.fits(g):
            return _Choice(g, (), _WORST)
        g, records = self.price(g, routes)
        return _Choice(g, records, self.p.score(g, self.ctx))

    def move(self, g: Graph, b: _Prefill, devs: tuple[str, ...]) -> Graph:
        """g with b's placement unit on `devs`, each of its ops priced there."""
        key = _unit_key(b.op)
        chip = self.devs[devs[0]].chip

        def place(op: Op) -> Op:
            if op.attr("device") is None or _unit_key(op) != key:
                return op
            return op.with_attrs(device=devs[0], devices=devs, seconds=op_seconds(op, chip, len(devs), self.stack))

        return g.map_ops(place)

    def fits(self, g: Graph) -> bool:
        """Whether every device holds what g places on it (placement's rule: weights once per model and
        device, each unit's KV cache; a tensor-parallel group's share per device)."""
        units: dict[str, list[Op]] = {}
        for op, _ in g.walk():
            if op.kind.startswith("model.") and op.attr("device") is not None:
                units.setdefault(_unit_key(op), []).append(op)
        weights: dict[str, dict[str, float]] = {}
        mem: dict[str, float] = {}
        for ops in units.values():
            devs = _devices(ops[0])
            kv: dict[str, float] = {}
            for op in ops:
                key, w, k = op_memory(op)
                if key:
                    for d in devs:
                        weights.setdefault(d, {})[key] = w / len(devs)
                    kv[key] = max(kv.get(key, 0.0), k)
            for d in devs:
                mem[d] = mem.get(d, 0.0) + sum(kv.values()) / len(devs)
        for d, m in mem.items():
            dev = self.devs.get(device_of(d))
            if dev is not None and m + sum(weights.get(d, {}).values()) > dev.memory_bytes * (1 + 1e-9):
                return False
        return True

    def price(self, g: Graph, routes: dict[str, tuple[str, str, tuple[str, ...]]]
              ) -> tuple[Graph, tuple[ReuseRecord, ...]]:
        """Every prefill's hits where it now runs, its seconds the mean over its runs; the records."""
        ops = {op.name: op for op, _ in g.walk()}
        holders = {name: self.holders(g, a) for name, a in self.prefills.items()}
        updates: dict[str, Op] = {}
        records: list[ReuseRecord] = []
        for b in self.prefills.values():
            op = ops[b.name]
            here = _devices(op)
            route = routes.get(b.name)
            first, from_first = 0, ""
            for a, shared in b.sources:
                ok = here in holders[a.name] or (route is not None and route[0] == "transfer" and route[1] == a.name)
                h = self.hit(shared, b.tokens) if ok else 0
                if h > first:
                    first, from_first = h, a.name
            later, from_later = first, from_first
            if b.loop is not None and b.invariant:
                own = self.hit(b.ends[b.invariant - 1], b.tokens)
                if own > later:
                    later, from_later = own, b.name
            if later <= 0:
                continue
            full = float(op.attr("seconds"))
            chip = self.devs[device_of(here[0])].chip
            ratio = full / op_seconds(op, chip, len(here), self.stack) if full > 0 else 1.0

            def secs(h: int, op: Op = op, chip=chip, n=len(here), ratio=ratio, full=full) -> float:  # noqa: ANN001
                if h <= 0:
                    return full
                return ratio * op_seconds(op.with_attrs(tokens=int(op.attr("tokens")) - h, ctx=h), chip, n, self.stack)

            if b.loop is not None:
                e = float(b.loop.attr("expected"))
                mean = (secs(first) + (e - 1.0) * secs(later)) / e
            else:
                mean, later = secs(first), first
            sources = tuple(dict.fromkeys(s for s in (from_first, from_later) if s))
            how = route[0] if route is not None else "local"
            updates[b.name] = op.with_attrs(
                seconds=mean, kv_reuse=how, cached_first=first, cached_later=later, cached_from=sources)
            model = model_of(op)
            records.append(ReuseRecord(
                op=b.name, llm=str(op.attr("of", b.name)), model=str(op.attr("model")), devices=here,
                prompt_tokens=b.tokens, cached_first=first, cached_later=later, sources=sources, route=how,
                runs=self.runs.get(b.name, 1.0), seconds=mean, seconds_without=full,
                kv_bytes=model.kv_cache_bytes(max(first, later), 1)))
        out = g.map_ops(lambda op: updates.get(op.name, op) if op.kind == "model.prefill" else op)
        return out, tuple(records)


_WORST = Metrics(latency_ms=float("inf"), ttft_ms={}, tpot_ms={}, energy_j=float("inf"), power_w=0.0,
                 cost_usd=float("inf"), throughput_rps=0.0, utilisation={})
