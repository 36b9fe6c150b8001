"""Each request's own task graph: the plan's graph with every `agent.loop` unrolled to a sampled
iteration count and every `agent.branch` reduced to a sampled arm, flattened into a task DAG.

Iteration counts are geometric on 1..max, truncated at `max`, with the success probability
solved so the truncated mean equals the loop's `expected` (so the mean work per request
equals the compiler's); with `loops="mean"` every loop runs round(expected) times instead.
A partitioning's decode loop (named as its call's decode: speculative rounds, token steps)
always runs round(expected) times: its count is the call's tokens, not a sampled retry count.
A loop or branch starts once every value it uses is ready, and each iteration starts after
the previous one has finished (as in the single-request replay). Templates are built once
per request shape and shared by every request of that shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gimletc.ir import Graph, Op
from gimletc.ir.core import _uses_including_regions
from gimletc.ir.names import call_of_decode
from gimletc.sim.config import SimulationError
from gimletc.sim.limits import MAX_TASKS_PER_REQUEST
from gimletc.sim.workload import DECODE, MARK, PREFILL, XFER, ZERO, Classifier, TaskSpec

__all__ = ["Builder", "Shapes", "Template", "loop_probability", "reference_tokens"]


def loop_probability(expected: float, most: int) -> float:
    """p of a geometric count on 1, 2, ... truncated at `most` whose mean is `expected`.

    E[min(G, m)] = (1 − (1 − p)^m) / p decreases from m (p → 0) to 1 (p = 1);
    solved by bisection. expected >= most gives p = 0 (always `most`)."""
    if expected <= 1.0:
        return 1.0
    if expected >= most:
        return 0.0
    lo, hi = 1e-12, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        mean = (1.0 - (1.0 - mid) ** most) / mid
        if mean > expected:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class Shapes:
    """Samples a request's shape: iteration counts of loops and arms of branches, nested."""

    def __init__(self, graph: Graph, mode: str):
        self.mode = mode
        self._p: dict[str, float] = {}
        self._probs: dict[str, np.ndarray] = {}
        self._size: dict[int, int] = {}  # tasks of a region's own ops (each nested loop or branch: its start)
        for op, _ in graph.walk():
            for r in op.regions:
                self._size[id(r)] = sum(1 for b in r.ops if b.kind != "agent.yield")
            if op.kind == "agent.loop":
                self._p[op.name] = loop_probability(float(op.attr("expected", 1.0)), int(op.attr("max", 1)))
            elif op.kind == "agent.branch":
                probs = np.asarray([float(p) for p in op.attr("probabilities", ())], dtype=float)
                if len(probs) != len(op.regions) or probs.sum() <= 0:
                    raise SimulationError(
                        f"branch @{op.name}: {len(probs)} probabilities for {len(op.regions)} arms (sum {probs.sum():g})")
                self._probs[op.name] = np.cumsum(probs / probs.sum())
        # A loop a partitioning made of an LLM call's decode (speculative rounds, a pipeline's or an
        # attention/FFN split's token steps) counts tokens or rounds, not an agent's retries: it runs its
        # expected count (a request's rounds vary by a few percent around it, not geometrically).
        self.decode_loops = frozenset(op.name for op, _ in graph.walk()
                                      if op.kind == "agent.loop" and call_of_decode(op.name) is not None)
        self.static = not self._p and not self._probs
        for name in self.decode_loops:
            del self._p[name]

    def sample(self, graph: Graph, rng: np.random.Generator) -> tuple:
        """A request's shape. One that would unroll to more than `MAX_TASKS_PER_REQUEST` tasks is a
        SimulationError naming the loop and its draw (gimletc.sim.limits)."""
        self._left = MAX_TASKS_PER_REQUEST - sum(1 for op in graph.ops if op.kind != "agent.yield")
        return self._sample(graph, rng)

    def _sample(self, graph: Graph, rng: np.random.Generator) -> tuple:
        out = []
        for op in graph.ops:
            if op.kind == "agent.loop":
                most = int(op.attr("max", 1))
                expected = float(op.attr("expected", 1.0))
                if self.mode == "mean" or op.name in self.decode_loops:
                    k = min(most, max(1, round(expected)))
                else:
                    p = self._p[op.name]
                    k = most if p <= 0.0 else min(most, int(rng.geometric(p)))
                body = op.regions[0]
                self._left -= k * (self._size[id(body)] + 1)  # each iteration's body and join
                iters = []
                for _ in range(k):
                    if self._left < 0:
                        raise SimulationError(
                            f"loop @{op.name} drew {k:,} iterations ({self.mode}, mean {expected:g}, at most {most:,}): "
                            f"this request would unroll to more than {MAX_TASKS_PER_REQUEST:,} tasks, the most the "
                            "simulator builds for one request: lower the loop's `expected` and `max`")
                    iters.append(self._sample(body, rng))
                out.append((k, tuple(iters)))
            elif op.kind == "agent.branch":
                arm = int(np.searchsorted(self._probs[op.name], rng.random(), side="right"))
                arm = min(arm, len(op.regions) - 1)
                self._left -= self._size[id(op.regions[arm])] + 1
                out.append((arm, self._sample(op.regions[arm], rng)))
        return tuple(out)


@dataclass
class Template:
    """One request shape's task DAG: per task its spec, successors and pending-input count, and the
    KV-cache bookkeeping of its prefills."""

    spec: list[TaskSpec]
    kind: list[int]
    succ: list[tuple[int, ...]]
    npred: list[int]
    roots: tuple[int, ...]
    marks: list[tuple[int, ...]]  # PREFILL: its pieces in order (itself first); the last one ends the prefill
    head: list[int]  # MARK: its prefill; DECODE: its prefill (for TPOT), or -1
    adopt: list[int]  # PREFILL: the last decode on the same engine that continues its KV cache (frees it), or -1
    adopts: list[int]  # DECODE: the prefill whose KV cache it continues on the same engine, or -1
    kv_users: list[int]  # PREFILL: tasks that free its KV cache when done
    kv_user_of: list[int]  # XFER / DECODE(kv_xfer): the prefill whose KV cache it frees, or -1
    scale_head: list[int]  # XFER: the prefill whose prompt scales its bytes, or -1
    # PREFILL: its prompt as (segment key, end token) pairs: a system prompt's key is its name, a value's the
    # task that made it in this request's shape (an int below 2**32; the engines add the request's own
    # offset, `gimletc.sim.kv.KEY_SPAN`); segments no other prompt can share end it as one `Tail`; () when
    # it has none.
    chain: list[tuple] = field(default_factory=list)
    given: list[int] = field(default_factory=list)  # PREFILL: prompt tokens whose KV cache is sent to it, or 0
    n: int = 0


class Builder:
    """Unrolls a graph for one request shape into a flat task DAG."""

    def __init__(self, graph: Graph, classify: Classifier):
        self.graph = graph
        self.classify = classify
        self._types: dict[str, str] = {}
        for op, _ in graph.walk():
            for v in op.results:
                self._types[v.name] = v.type.kind
            for r in op.regions:
                for a in r.args:
                    self._types[a.name] = a.type.kind
        self._specs: dict[str, TaskSpec] = {}

    def build(self, shape: tuple) -> Template:
        self.spec: list[TaskSpec] = []
        self.preds: list[set[int]] = []
        self.uses: list[tuple[tuple[str, int], ...]] = []  # (value name, producer) per task
        self.head: list[int] = []
        self.chain: list[tuple] = []
        env: dict[str, int] = {}
        self._run(self.graph, shape, env, -1, {}, {})
        return self._finish()

    def _new(self, spec: TaskSpec, preds: set[int], uses: tuple[tuple[str, int], ...] = ()) -> int:
        i = len(self.spec)
        self.spec.append(spec)
        self.preds.append({p for p in preds if p >= 0})
        self.uses.append(uses)
        self.head.append(-1)
        self.chain.append(())
        return i

    def _spec(self, op: Op) -> TaskSpec:
        s = self._specs.get(op.name)
        if s is None:
            s = self._specs[op.name] = self.classify(op)
        return s

    def _run(self, g: Graph, shape: tuple, env: dict[str, int], gate: int, heads: dict[str, int],
             llm_head: dict[str, int]) -> list[int]:
        """Create the tasks of `g`; returns their ids. `gate` is a task every root must wait for."""
        made: list[int] = []
        si = 0
        for op in g.ops:
            if op.kind == "agent.yield":
                continue
            if op.regions:
                sub_shape = shape[si]
                si += 1
                start = self._new(TaskSpec(ZERO, label=f"{op.name}.start"),
                                  {env.get(v, -1) for v in _uses_including_regions(op)} | {gate})
                made.append(start)
                if op.kind == "agent.loop":
                    count, iters = sub_shape
                    body = op.regions[0]
                    carried = [env.get(v, -1) for v in op.operands]
                    prev = start
                    for it in range(count):
                        sub = dict(env)
                        for a, p in zip(body.args, carried, strict=False):
                            sub[a.name] = p
                        inner = self._run(body, iters[it], sub, prev, heads, llm_head)
                        made.extend(inner)
                        y = body.ops[-1] if body.ops and body.ops[-1].kind == "agent.yield" else None
                        ys = [sub.get(v, -1) for v in y.operands] if y is not None else []
                        join = self._new(TaskSpec(ZERO, label=f"{op.name}.iter{it}"), self._sinks(inner) | {prev})
                        made.append(join)
                        prev = join
                        carried = [join] * len(body.args) if len(ys) == len(body.args) else carried
                    for r in op.results:
                        env[r.name] = prev
                else:  # agent.branch
                    arm, arm_shape = sub_shape
                    sub = dict(env)
                    inner = self._run(op.regions[arm], arm_shape, sub, start, heads, llm_head)
                    made.extend(inner)
                    join = self._new(TaskSpec(ZERO, label=f"{op.name}.end"), self._sinks(inner) | {start})
                    made.append(join)
                    for r in op.results:
                        env[r.name] = join
                continue
            spec = self._spec(op)
            uses = tuple((v, env.get(v, -1)) for v in op.operands)
            i = self._new(spec, {p for _, p in uses} | {gate}, uses)
            made.append(i)
            for r in op.results:
                env[r.name] = i
            if spec.kind == PREFILL:
                heads[spec.of] = i
                if spec.llm:
                    llm_head[spec.llm] = i
                if spec.prompt:
                    self.chain[i] = _chain(spec, env, i)
            elif spec.kind == MARK:
                h = heads.get(spec.of, -1)
                if h < 0:
                    raise SimulationError(f"op @{op.name}: prefill piece {spec.chunk} of {spec.of} has no first piece")
                self.head[i] = h
            elif spec.kind == DECODE:
                self.head[i] = llm_head.get(spec.llm, -1)
        return made

    def _kv_source(self, p: int, prefill_of: object) -> int:
        """The prefill whose KV cache reaches a task through task `p` (a receive, a send, a conversion)."""
        for _ in range(8):
            if p < 0:
                return -1
            h = prefill_of(p)  # type: ignore[operator]
            if h >= 0:
                return h
            if not self.uses[p]:
                return -1
            p = self.uses[p][0][1]
        return -1

    def _sinks(self, tasks: list[int]) -> set[int]:
        inside = set(tasks)
        used = {p for t in tasks for p in self.preds[t] if p in inside}
        return {t for t in tasks if t not in used} or inside

    def _finish(self) -> Template:
        n = len(self.spec)
        spec, preds, head = self.spec, self.preds, self.head
        marks: list[tuple[int, ...]] = [()] * n
        pieces: dict[int, list[tuple[int, int]]] = {}
        for i, s in enumerate(spec):
            if s.kind == PREFILL:
                pieces.setdefault(i, []).append((max(s.chunk, 0), i))
            elif s.kind == MARK:
                pieces.setdefault(head[i], []).append((s.chunk, i))
        for h, ps in pieces.items():
            marks[h] = tuple(i for _, i in sorted(ps))

        def prefill_of(p: int) -> int:
            if p < 0:
                return -1
            if spec[p].kind == PREFILL:
                return p
            if spec[p].kind == MARK:
                return head[p]
            return -1

        adopt = [-1] * n
        adopts = [-1] * n
        kv_users = [0] * n
        kv_user_of = [-1] * n
        scale_head = [-1] * n
        engine_pool = {i: spec[i].resource for i in range(n) if spec[i].kind == PREFILL}
        for i, s in enumerate(spec):
            if s.kind not in (XFER, DECODE):
                continue
            for v, p in self.uses[i]:
                h = prefill_of(p)
                if h < 0:
                    continue
                if s.kind == XFER:
                    scale_head[i] = h
                if self._types.get(v) != "kv":
                    continue
                if s.kind == DECODE and not s.kv_xfer and (s.resource == -1 or s.resource == engine_pool[h]):
                    adopt[h] = i  # the decode continues on the prefill's engine with its cache
                    adopts[i] = h  # (a per-token decode loop: every iteration does; the last frees it)
                else:
                    kv_user_of[i] = h
                    kv_users[h] += 1
            if s.kind == DECODE and s.kv_xfer and kv_user_of[i] < 0 and head[i] >= 0:
                kv_user_of[i] = head[i]
                kv_users[head[i]] += 1

        # Contract zero-time tasks with one input or one output: fewer tasks per request.
        succ_sets: list[set[int]] = [set() for _ in range(n)]
        for i, ps in enumerate(preds):
            for p in ps:
                succ_sets[p].add(i)
        alive = [True] * n
        for z in range(n):
            if spec[z].kind != ZERO:
                continue
            ins, outs = preds[z], succ_sets[z]
            if len(ins) > 1 and len(outs) > 1:
                continue
            for p in ins:
                succ_sets[p].discard(z)
                succ_sets[p] |= outs
            for s in outs:
                preds[s].discard(z)
                preds[s] |= ins
            alive[z] = False
            preds[z], succ_sets[z] = set(), set()
        keep = [i for i in range(n) if alive[i]]
        new = {old: k for k, old in enumerate(keep)}

        def m(i: int) -> int:
            return new.get(i, -1) if i >= 0 else -1

        given = [0] * n
        for i, s in enumerate(spec):
            if s.kind == PREFILL and self.chain[i]:
                for v, p in self.uses[i]:
                    if self._types.get(v) == "kv":
                        h = self._kv_source(p, prefill_of)
                        if h >= 0 and self.chain[h]:
                            given[i] = max(given[i], _shared(self.chain[i], self.chain[h]))
        chains = _merge_tails(self.chain, spec)

        tpl = Template(
            spec=[spec[i] for i in keep],
            kind=[spec[i].kind for i in keep],
            succ=[tuple(sorted(new[s] for s in succ_sets[i])) for i in keep],
            npred=[len(preds[i]) for i in keep],
            roots=tuple(new[i] for i in keep if not preds[i]),
            marks=[tuple(new[j] for j in marks[i]) for i in keep],
            head=[m(head[i]) for i in keep],
            adopt=[m(adopt[i]) for i in keep],
            adopts=[m(adopts[i]) for i in keep],
            kv_users=[kv_users[i] for i in keep],
            kv_user_of=[m(kv_user_of[i]) for i in keep],
            scale_head=[m(scale_head[i]) for i in keep],
            chain=[chains[i] for i in keep],
            given=[given[i] for i in keep],
        )
        tpl.n = len(keep)
        return tpl




def _chain(spec: TaskSpec, env: dict[str, int], task: int) -> tuple:
    """A prefill's prompt as (key, end token) pairs: system prompts by name, values by the task that made them."""
    out = []
    end = 0
    for seg, n in zip(spec.prompt, spec.prompt_tokens, strict=False):
        end += int(n)
        if seg.startswith("sys:"):
            key: object = seg
        else:
            src = env.get(seg)
            key = src if src is not None and src >= 0 else (1 << 31) + task  # unknown: matches nothing else
        out.append((key, end))
    return tuple(out)


def _merge_tails(chains: list[tuple], spec: list[TaskSpec]) -> list[tuple]:
    """Each chain with the segments no other prompt can share merged into one tail, keyed `Tail`. A value's key
    is this request's own, so beyond the leading system prompts only another prompt of the same model in
    the same request can share a segment; a cache keeps the rest as one piece that nobody looks up (what it
    holds and frees is the same; there are fewer pieces to keep)."""
    by_model: dict[str, list[int]] = {}
    for i, c in enumerate(chains):
        if c:
            by_model.setdefault(spec[i].model, []).append(i)
    out = list(chains)
    for idx in by_model.values():
        for i in idx:
            c = chains[i]
            depth = 0
            while depth < len(c) and isinstance(c[depth][0], str):
                depth += 1  # system prompts: other requests send them too
            for j in idx:
                if j != i:
                    k = 0
                    other = chains[j]
                    while k < len(c) and k < len(other) and c[k] == other[k]:
                        k += 1
                    depth = max(depth, k)
            if depth < len(c):
                out[i] = (*c[:depth], (Tail(len(c) - depth), c[-1][1]))
    return out


class Tail:
    """The key of a prompt's merged tail (`_merge_tails`): the segments no other prompt can share, `segs` of
    them, cached as one piece outside the tree."""

    __slots__ = ("segs",)

    def __init__(self, segs: int):
        self.segs = segs

    def __repr__(self) -> str:
        return f"Tail({self.segs})"


def _shared(a: tuple, b: tuple) -> int:
    """Tokens of the longest common prefix of two chains."""
    n = 0
    for (ka, ea), (kb, eb) in zip(a, b, strict=False):
        if ka != kb or ea != eb:
            break
        n = ea
    return n


def reference_tokens(graph: Graph) -> tuple[int, int]:
    """(input tokens, output tokens of the last LLM call) of the graph: what a trace's per-request
    token counts are measured against."""
    ins = 0
    last_out = 0
    for op, _ in graph.walk():
        k = op.attr("kind_of", op.kind)
        if k == "agent.input":
            ins += int(op.attr("tokens", 0))
        elif k == "model.decode":
            last_out = int(op.attr("tokens", 0)) or last_out
    return ins, last_out
