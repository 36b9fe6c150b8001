"""Serving under load: a discrete-event simulation of many requests through a deployment.

What is simulated (docs/serving.md has the full model and its validation):

- Requests arrive by a given process (`gimletc.sim.arrivals`). Each request
  runs its own task graph: the plan's exec graph with every `agent.loop`
  unrolled to a sampled iteration count and every `agent.branch` reduced to a
  sampled arm. Iteration counts are geometric on 1..max, truncated at `max`,
  with the success probability solved so the truncated mean equals the loop's
  `expected` (so the mean work per request equals the compiler's); with
  `loops="mean"` every loop runs round(expected) times instead. A loop or
  branch starts once every value it uses is ready, and each iteration starts
  after the previous one has finished (as in the single-request replay).
- A task starts when all its inputs (data and ordering tokens) are done, then
  queues for its resource:
  * model prefill and decode go to an *engine*: one per placed group of
    accelerators. An engine runs one iteration at a time and holds all of its
    devices while it does; groups that share a device wait for it first come,
    first served (a waiting engine keeps later ones off its devices, so wide
    groups are not starved). Iterations: a prefill step of the queued prompts
    (FIFO, up to `max_prefill_tokens` per step) takes priority; otherwise one
    decode step of the running batch (continuous batching: sequences join
    when admitted and leave when they have produced their tokens, so the
    batch grows and shrinks with the load). A decode step costs the cost
    model's step time at the current batch and mean context. Several models
    on one engine take turns (round robin). With `chunked_prefill`, every
    iteration carries the running decode batch plus up to `chunk_tokens`
    minus the batch of prompt tokens.
  * KV-cache admission: each device may fill `mem_fraction` of its memory;
    the weights of every model placed on it (its tensor-parallel share) come
    first. A prefill reserves its prompt's KV cache (and, when its decode
    runs on the same engine, the output's too, so an admitted request always
    completes); a decode on another engine reserves its own. A request waits
    in FIFO order until its reservation fits. The KV of a prefill whose
    decode is elsewhere is freed once it has been sent.
  * ops the simulator does not batch (draft/verify, attention/FFN blocks)
    run as jobs of their compiled seconds on their engine;
  * tools, code and retrieval take their `seconds` on a host CPU lane (a host
    has its `Host.lanes` lanes, or `host_lanes` if set; FIFO), optionally
    exponentially distributed;
  * transfers hold their link channel for their `seconds`, one at a time per
    channel (FIFO): two transfers on one link serialise;
  * conversions take their seconds without holding a resource.
- Everything is deterministic for a seed: a seeded numpy Generator per
  concern (loop/branch choices, tool times), and an event heap ordered by
  (time, sequence number).

Why a plain event heap and not simpy: simpy runs each process as a Python
generator and every wait as an event object with callbacks, which costs
several microseconds per event; the heap here stores tuples and dispatches
on small integers, and an engine iteration is one event whatever the batch
size (finishing sequences come off a heap keyed by the iteration they finish
in). A run of decode iterations over an unchanging batch is one event too:
its step times sum in closed form, and work arriving meanwhile cuts it after
the iteration in progress (the results equal the step-by-step simulation's;
`SimConfig(fast_forward=False)` runs step by step).
`benchmarks/bench_serving.py` measures the result.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from gimletc.cost import accounting
from gimletc.errors import GimletError
from gimletc.hardware.resources import DEFAULT_HOST_LANES
from gimletc.hardware.schema import Chip
from gimletc.ir import Graph, Op
from gimletc.ir.core import _uses_including_regions
from gimletc.models import Model, get_model
from gimletc.sim.arrivals import Arrivals
from gimletc.sim.steps import PROFILES, SoftwareProfile, StepCost, profile_for_stack

__all__ = [
    "EngineConfig",
    "EngineSpec",
    "HostSpec",
    "LoadResult",
    "SimConfig",
    "SimulationError",
    "TaskSpec",
    "Workload",
    "loop_probability",
    "plan_workload",
    "simulate",
    "simulate_plan",
]

# Task kinds.
ZERO, DELAY, CPU, XFER, PREFILL, DECODE, MARK, ACCEL = range(8)

# Event codes.
_EV_DONE, _EV_CPU, _EV_XFER, _EV_ITER, _EV_MARK = range(5)



class SimulationError(GimletError):
    """The load simulation cannot run as asked (names the engine, model and the number)."""


@dataclass(frozen=True)
class EngineConfig:
    """How each engine batches. Defaults follow vLLM's (max_num_seqs 256, 90% of memory)."""

    max_batch: int = 256  # sequences in a decode batch
    max_prefill_tokens: int = 8192  # prompt tokens per prefill step (a longer prompt still runs alone)
    chunked_prefill: bool = False
    chunk_tokens: int = 2048  # tokens per mixed iteration (decode tokens first, the rest prompt)
    mem_fraction: float = 0.9  # of each chip's memory for weights + KV cache

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_prefill_tokens", "chunk_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise SimulationError(f"engine {name} must be a positive integer; got {v!r}")
        if not 0 < self.mem_fraction <= 1:
            raise SimulationError(f"engine mem_fraction must be in (0, 1]; got {self.mem_fraction!r}")

    def to_dict(self) -> dict:
        return {"max_batch": self.max_batch, "max_prefill_tokens": self.max_prefill_tokens,
                "chunked_prefill": self.chunked_prefill, "chunk_tokens": self.chunk_tokens,
                "mem_fraction": self.mem_fraction}


@dataclass(frozen=True)
class SimConfig:
    engine: EngineConfig = EngineConfig()
    profile: SoftwareProfile | None = None  # None: the stack the plan was compiled for (else "calibrated")
    host_lanes: int | None = None  # CPU lanes of every host; None: each host's own (Host.lanes)
    loops: Literal["geometric", "mean"] = "geometric"
    tool_times: Literal["fixed", "exponential"] = "fixed"
    weight_dtype: str | None = None  # override every model's weight format (e.g. fp8)
    kv_dtype: str | None = None  # override every model's KV-cache format
    record_timeline: bool = False
    timeline_limit: int = 200_000  # iterations/tasks kept in the timeline
    fast_forward: bool = True  # run unchanging decode batches to their next finish in one event

    def __post_init__(self) -> None:
        if self.host_lanes is not None and (not isinstance(self.host_lanes, int) or self.host_lanes < 1):
            raise SimulationError(f"host_lanes must be a positive integer; got {self.host_lanes!r}")
        if self.loops not in ("geometric", "mean"):
            raise SimulationError(f"loops must be 'geometric' or 'mean'; got {self.loops!r}")
        if self.tool_times not in ("fixed", "exponential"):
            raise SimulationError(f"tool_times must be 'fixed' or 'exponential'; got {self.tool_times!r}")

    def model(self, name: str) -> Model:
        m = get_model(name)
        upd = {k: v for k, v in (("weight_dtype", self.weight_dtype), ("kv_dtype", self.kv_dtype)) if v}
        return m.model_copy(update=upd) if upd else m

    def to_dict(self) -> dict:
        return {"engine": self.engine.to_dict(), "profile": self.profile.to_dict() if self.profile else None,
                "host_lanes": self.host_lanes,
                "loops": self.loops, "tool_times": self.tool_times, "weight_dtype": self.weight_dtype,
                "kv_dtype": self.kv_dtype}


# ---- the deployment: engines, pools, hosts, and how ops become tasks -------------------------


@dataclass(frozen=True)
class EngineSpec:
    """A group of accelerators that runs one iteration at a time."""

    id: str
    devices: tuple[str, ...]
    chip: Chip
    node: str = ""


@dataclass(frozen=True)
class HostSpec:
    id: str
    chip: Chip
    sockets: int = 1
    lanes: int = DEFAULT_HOST_LANES


@dataclass(slots=True)
class TaskSpec:
    """One task of a request, before per-request token adjustments."""

    kind: int
    resource: int = -1  # CPU: host; XFER: channel; PREFILL/DECODE/ACCEL: pool (-1 for DECODE: its prefill's engine)
    seconds: float = 0.0
    latency: float = 0.0  # XFER: the part of seconds that does not scale with bytes
    model: str = ""
    chips: int = 1
    tokens: int = 0
    ctx: int = 0
    seqs: int = 1
    llm: str = ""
    chunk: int = -1  # layer-streamed prefill piece i of `chunks`
    chunks: int = 1
    of: str = ""
    kv_xfer: bool = False  # DECODE: move the KV cache from its prefill's engine first (route chosen then)
    part: tuple = ()  # PREFILL/DECODE: (first layer, last layer, block) of a pipeline stage or split; () whole
    is_tool: bool = False  # CPU: a tool/code call whose time may be sampled
    label: str = ""


# classify(op) -> the task `op` becomes (the same TaskSpec for every request: treat it as read-only).
Classifier = Callable[[Op], TaskSpec]


@dataclass
class Workload:
    """What a simulation runs: a graph whose ops become tasks, and the resources they run on.

    `pools[i]` lists the engines (indices into `engines`) that serve pool i;
    a task of that pool goes to the one with the fewest outstanding requests.
    `route(src_engine, dst_engine, bytes)` gives (channel name, seconds) for
    KV transfers the deployment decides at run time (disaggregated search
    configurations); plan workloads carry their transfers as ops instead."""

    graph: Graph
    classify: Classifier
    engines: list[EngineSpec]
    pools: list[tuple[int, ...]]
    pool_names: list[str]
    hosts: list[HostSpec]
    engine_models: list[list[tuple[str, int, tuple]]]  # per engine: (model name, chips, part) it serves
    channels: list[str] = field(default_factory=list)
    route: Callable[[int, int, float], tuple[str, float]] | None = None
    name: str = "graph"
    stack_profile: str = "calibrated"  # the profile used when the SimConfig names none
    chips: int = 0  # accelerators used
    power_w: float = 0.0  # their TDP
    price_per_hour: float = 0.0


# ---- loops and branches ----------------------------------------------------------------------


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


class _Shapes:
    """Samples a request's shape: iteration counts of loops and arms of branches, nested."""

    def __init__(self, graph: Graph, mode: str):
        self.mode = mode
        self._p: dict[str, float] = {}
        self._probs: dict[str, np.ndarray] = {}
        for op, _ in graph.walk():
            if op.kind == "agent.loop":
                self._p[op.name] = loop_probability(float(op.attr("expected", 1.0)), int(op.attr("max", 1)))
            elif op.kind == "agent.branch":
                probs = np.asarray([float(p) for p in op.attr("probabilities", ())], dtype=float)
                if len(probs) != len(op.regions) or probs.sum() <= 0:
                    raise SimulationError(
                        f"branch @{op.name}: {len(probs)} probabilities for {len(op.regions)} arms (sum {probs.sum():g})")
                self._probs[op.name] = np.cumsum(probs / probs.sum())
        self.static = not self._p and not self._probs

    def sample(self, graph: Graph, rng: np.random.Generator) -> tuple:
        out = []
        for op in graph.ops:
            if op.kind == "agent.loop":
                most = int(op.attr("max", 1))
                expected = float(op.attr("expected", 1.0))
                if self.mode == "mean":
                    k = min(most, max(1, round(expected)))
                else:
                    p = self._p[op.name]
                    k = most if p <= 0.0 else min(most, int(rng.geometric(p)))
                body = op.regions[0]
                out.append((k, tuple(self.sample(body, rng) for _ in range(k))))
            elif op.kind == "agent.branch":
                arm = int(np.searchsorted(self._probs[op.name], rng.random(), side="right"))
                arm = min(arm, len(op.regions) - 1)
                out.append((arm, self.sample(op.regions[arm], rng)))
        return tuple(out)


# ---- request templates -----------------------------------------------------------------------


@dataclass
class _Template:
    spec: list[TaskSpec]
    kind: list[int]
    succ: list[tuple[int, ...]]
    npred: list[int]
    roots: tuple[int, ...]
    marks: list[tuple[int, ...]]  # PREFILL: its pieces in order (itself first); the last one ends the prefill
    head: list[int]  # MARK: its prefill; DECODE: its prefill (for TPOT), or -1
    adopt: list[int]  # PREFILL: index of a decode on the same engine that adopts its KV cache, or -1
    kv_users: list[int]  # PREFILL: tasks that free its KV cache when done
    kv_user_of: list[int]  # XFER / DECODE(kv_xfer): the prefill whose KV cache it frees, or -1
    scale_head: list[int]  # XFER: the prefill whose prompt scales its bytes, or -1
    n: int = 0


class _Builder:
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

    def build(self, shape: tuple) -> _Template:
        self.spec: list[TaskSpec] = []
        self.preds: list[set[int]] = []
        self.uses: list[tuple[tuple[str, int], ...]] = []  # (value name, producer) per task
        self.head: list[int] = []
        env: dict[str, int] = {}
        self._run(self.graph, shape, env, -1, {}, {})
        return self._finish()

    def _new(self, spec: TaskSpec, preds: set[int], uses: tuple[tuple[str, int], ...] = ()) -> int:
        i = len(self.spec)
        self.spec.append(spec)
        self.preds.append({p for p in preds if p >= 0})
        self.uses.append(uses)
        self.head.append(-1)
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
            elif spec.kind == MARK:
                h = heads.get(spec.of, -1)
                if h < 0:
                    raise SimulationError(f"op @{op.name}: prefill piece {spec.chunk} of {spec.of} has no first piece")
                self.head[i] = h
            elif spec.kind == DECODE:
                self.head[i] = llm_head.get(spec.llm, -1)
        return made

    def _sinks(self, tasks: list[int]) -> set[int]:
        inside = set(tasks)
        used = {p for t in tasks for p in self.preds[t] if p in inside}
        return {t for t in tasks if t not in used} or inside

    def _finish(self) -> _Template:
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

        tpl = _Template(
            spec=[spec[i] for i in keep],
            kind=[spec[i].kind for i in keep],
            succ=[tuple(sorted(new[s] for s in succ_sets[i])) for i in keep],
            npred=[len(preds[i]) for i in keep],
            roots=tuple(new[i] for i in keep if not preds[i]),
            marks=[tuple(new[j] for j in marks[i]) for i in keep],
            head=[m(head[i]) for i in keep],
            adopt=[m(adopt[i]) for i in keep],
            kv_users=[kv_users[i] for i in keep],
            kv_user_of=[m(kv_user_of[i]) for i in keep],
            scale_head=[m(scale_head[i]) for i in keep],
        )
        tpl.n = len(keep)
        return tpl


# ---- run-time state ----------------------------------------------------------------------------


class _Req:
    __slots__ = ("id", "t0", "tpl", "pending", "left", "d_in", "r_out", "engine", "pf_end", "kv_hold",
                 "kv_left", "ready", "first", "tpot", "out_tokens", "llm_ttft", "llm_tpot")

    def __init__(self, rid: int, t0: float, tpl: _Template, d_in: int, r_out: float):
        self.id, self.t0, self.tpl = rid, t0, tpl
        self.pending = list(tpl.npred)
        self.left = tpl.n
        self.d_in, self.r_out = d_in, r_out
        self.engine: dict[int, int] = {}  # prefill task -> engine that ran it
        self.pf_end: dict[int, float] = {}  # prefill task -> end time
        self.kv_hold: dict[int, tuple[int, float]] = {}  # prefill task -> (engine, bytes reserved)
        self.kv_left: dict[int, int] = {}
        self.ready: dict[int, float] = {}  # decode task -> time it became ready
        self.first = math.inf  # first token of the request (end of its first prefill)
        self.tpot = 0.0
        self.out_tokens = 0
        self.llm_ttft: dict[str, float] = {}
        self.llm_tpot: dict[str, float] = {}


class _Job:
    """A prefill or decode of one request on an engine."""

    __slots__ = ("req", "task", "tokens", "ctx", "seqs", "kv", "seq", "done", "next_mark")

    def __init__(self, req: _Req, task: int, tokens: int, ctx: int, seqs: int, kv: float, seq: int):
        self.req, self.task, self.tokens, self.ctx, self.seqs, self.kv, self.seq = req, task, tokens, ctx, seqs, kv, seq
        self.done = 0
        self.next_mark = 0


class _ModelQ:
    """One model's queues and running batch on one engine."""

    __slots__ = ("name", "cost", "pq", "wait", "run", "iters", "B", "ctx_sum", "seqs_done")

    def __init__(self, name: str, cost: StepCost):
        self.name, self.cost = name, cost
        self.pq: deque[_Job] = deque()  # prefills waiting (the head may be part-done when chunked)
        self.wait: deque[_Job] = deque()  # decodes waiting for admission
        self.run: list[tuple[int, int, _Job]] = []  # (finishing iteration, seq, job)
        self.iters = 0
        self.B = 0  # sequences in the running batch
        self.ctx_sum = 0.0  # their context lengths, summed


class _Engine:
    __slots__ = ("idx", "spec", "n", "devs", "near", "mqs", "mq_by_model", "busy", "blocked", "rr", "accel",
                 "outstanding", "busy_s", "iters", "batch_sum", "max_batch_seen", "prefill_iters", "epoch", "ff")

    def __init__(self, idx: int, spec: EngineSpec, devs: tuple[int, ...]):
        self.idx, self.spec, self.n = idx, spec, len(spec.devices)
        self.devs = devs  # device indices
        self.near: tuple[_Engine, ...] = ()  # engines sharing a device with this one (itself included)
        self.mqs: list[_ModelQ] = []
        self.mq_by_model: dict[tuple[str, int, tuple], _ModelQ] = {}
        self.busy = False  # running an iteration (holding its devices)
        self.blocked = False  # waiting for devices another engine holds
        self.rr = 0
        self.accel: deque[tuple[_Req, int, float]] = deque()
        self.outstanding = 0
        self.busy_s = 0.0  # wall seconds with an iteration running
        self.iters = 0
        self.prefill_iters = 0
        self.batch_sum = 0
        self.max_batch_seen = 0
        self.epoch = 0  # iteration events of an older epoch were cut short and are ignored
        self.ff: list | None = None  # a fast-forwarded decode run in progress: [mq, start, k, ctx, batch, timeline row]


class _Pool:
    __slots__ = ("lanes", "free", "q", "busy_s")

    def __init__(self, lanes: int):
        self.lanes = lanes
        self.free = lanes
        self.q: deque = deque()
        self.busy_s = 0.0


# ---- results -----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """Per-request outcomes and per-resource usage of one simulation (times in seconds)."""

    name: str
    arrivals: Arrivals
    arrival: np.ndarray
    ttft: np.ndarray  # first token of the request (end of its first prefill), from arrival; nan if none
    tpot: np.ndarray  # the worst per-call mean time per output token; nan if no decode
    e2e: np.ndarray
    out_tokens: np.ndarray
    llm_ttft: dict[str, np.ndarray]  # per LLM call: its first execution's TTFT (nan where it did not run)
    llm_tpot: dict[str, np.ndarray]
    span: float  # first arrival to last completion
    events: int
    engines: list[dict[str, Any]]
    utilisation: dict[str, float]
    energy_j: float
    chips: int
    power_w: float
    price_per_hour: float
    config: SimConfig
    # (resource, start, end, what, batch, iterations): engine iterations, tasks on hosts, transfers on links
    timeline: list[tuple[str, float, float, str, int, int]] = field(default_factory=list)
    cost_model_calls: int = 0
    heap_events: int = 0  # events taken off the heap (fast-forwarded iterations count once)

    @property
    def completed(self) -> int:
        return int(np.isfinite(self.e2e).sum())

    @property
    def throughput_tok_s(self) -> float:
        return float(self.out_tokens.sum()) / self.span if self.span > 0 else 0.0

    @property
    def throughput_req_s(self) -> float:
        return self.completed / self.span if self.span > 0 else 0.0

    def attainment(self, ttft_s: float | None, tpot_s: float | None) -> float:
        """Share of requests whose TTFT <= ttft_s and TPOT <= tpot_s (None: no limit on that axis)."""
        ok = np.isfinite(self.e2e)
        if ttft_s is not None:
            ok &= ~(self.ttft > ttft_s)  # nan (no LLM call) passes
        if tpot_s is not None:
            ok &= ~(self.tpot > tpot_s)
        return float(ok.mean()) if len(ok) else 0.0


# ---- the simulator -----------------------------------------------------------------------------


class _Sim:
    def __init__(self, wl: Workload, arrivals: Arrivals, cfg: SimConfig, seed: int):
        self.wl, self.arr, self.cfg = wl, arrivals, cfg
        self.profile = cfg.profile or PROFILES[wl.stack_profile]
        ss = np.random.SeedSequence([int(seed), 0x6C6F6164])
        s_shape, s_tool = ss.spawn(2)
        self.rng_shape = np.random.default_rng(s_shape)
        self.rng_tool = np.random.default_rng(s_tool)
        self.shapes = _Shapes(wl.graph, cfg.loops)
        self.builder = _Builder(wl.graph, wl.classify)
        self.templates: dict[tuple, _Template] = {}
        self.heap: list[tuple] = []
        self.seq = 0
        self.events = 0  # arrivals, task and iteration ends (each fast-forwarded iteration counts)
        self.heap_events = 0
        self.ec = cfg.engine
        # Devices: every engine's iteration holds all of its devices; KV memory is kept per device.
        self.dev_ids: list[str] = []
        dev_idx: dict[str, int] = {}
        self.dev_chip: list[Chip] = []
        for spec in wl.engines:
            for d in spec.devices:
                if d not in dev_idx:
                    dev_idx[d] = len(self.dev_ids)
                    self.dev_ids.append(d)
                    self.dev_chip.append(spec.chip)
        nd = len(self.dev_ids)
        self.dev_holder = [-1] * nd
        self.dev_nblocked = [0] * nd
        self.dev_cap = [0.0] * nd
        self.dev_used = [0.0] * nd
        self.dev_busy_s = [0.0] * nd
        self.dev_active_s = [0.0] * nd
        self.blocked: list[_Engine] = []  # engines waiting for devices, first come first served
        self.engines = [_Engine(i, s, tuple(dev_idx[d] for d in s.devices)) for i, s in enumerate(wl.engines)]
        for e in self.engines:
            mine = set(e.devs)
            e.near = tuple(o for o in self.engines if mine & set(o.devs))
        self.pools = [tuple(p) for p in wl.pools]
        self.pool_rr = [0] * len(self.pools)
        self.hosts = [_Pool(cfg.host_lanes or h.lanes) for h in wl.hosts]
        self.channel_names = list(wl.channels)  # plus those a deployment's routes open while running
        self.channel_ids: dict[str, int] = {c: i for i, c in enumerate(self.channel_names)}
        self.channels = [_Pool(1) for _ in self.channel_names]
        self.costs: dict[tuple[str, str, int], StepCost] = {}
        self.timeline: list[tuple[str, float, float, str, int, int]] = []
        self.record = cfg.record_timeline
        self._setup_engines()
        # reference token counts for traces
        self.ref_in, self.ref_out = self._reference_tokens()

    # -- setup --
    def _cost(self, model: str, chip: Chip, n: int, part: tuple = ()) -> StepCost:
        key = (model, chip.name, n, part)
        c = self.costs.get(key)
        if c is None:
            c = self.costs[key] = StepCost(self.cfg.model(model), chip, n, self.profile, part)
        return c

    def _setup_engines(self) -> None:
        weights = [0.0] * len(self.dev_ids)
        names: list[set[str]] = [set() for _ in self.dev_ids]
        for e, models in zip(self.engines, self.wl.engine_models, strict=True):
            for name, n, part in models:
                if (name, n, part) in e.mq_by_model:
                    continue
                cost = self._cost(name, e.spec.chip, n, part)
                mq = _ModelQ(name, cost)
                e.mqs.append(mq)
                e.mq_by_model[(name, n, part)] = mq
                for d in e.devs:  # tensor parallel: each chip holds its share of the weights
                    weights[d] += cost.weight_bytes / e.n
                    names[d].add(name)
        for d, dev in enumerate(self.dev_ids):
            cap = self.dev_chip[d].capacity_bytes * self.ec.mem_fraction
            self.dev_cap[d] = cap - weights[d]
            if self.dev_cap[d] <= 0:
                raise SimulationError(
                    f"device {dev}: weights of {', '.join(sorted(names[d]))} take {weights[d] / 1e9:.1f} GB of the "
                    f"{cap / 1e9:.1f} GB usable ({self.ec.mem_fraction:.0%} of a {self.dev_chip[d].name}); "
                    "no room for a KV cache")

    def _reference_tokens(self) -> tuple[int, int]:
        ins = 0
        last_out = 0
        for op, _ in self.wl.graph.walk():
            k = op.attr("kind_of", op.kind)
            if k == "agent.input":
                ins += int(op.attr("tokens", 0))
            elif k == "model.decode":
                last_out = int(op.attr("tokens", 0)) or last_out
        return ins, last_out

    # -- events --
    def _push(self, t: float, code: int, a: Any, b: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, code, a, b))

    def run(self, progress: Callable[[str], None] | None = None) -> LoadResult:
        arr = self.arr
        n = len(arr)
        step = max(1, n // 10)
        next_report = step if progress is not None and n >= 10_000 else n + 1
        times = arr.times
        ins = arr.input_tokens
        outs = arr.output_tokens
        self.res_ttft = np.full(n, np.nan)
        self.res_tpot = np.full(n, np.nan)
        self.res_e2e = np.full(n, np.nan)
        self.res_out = np.zeros(n, dtype=np.int64)
        self.res_llm_ttft: dict[str, np.ndarray] = {}
        self.res_llm_tpot: dict[str, np.ndarray] = {}
        heap = self.heap
        i = 0
        t = 0.0
        static_tpl = None
        if self.shapes.static:
            static_tpl = self._template(())
        while i < n or heap:
            if i < n and (not heap or times[i] <= heap[0][0]):
                t = float(times[i])
                d_in = int(ins[i]) - self.ref_in if ins is not None else 0
                r_out = float(outs[i]) / self.ref_out if outs is not None and self.ref_out > 0 else 1.0
                tpl = static_tpl if static_tpl is not None else self._template(
                    self.shapes.sample(self.wl.graph, self.rng_shape))
                req = _Req(i, t, tpl, d_in, r_out)
                self.events += 1
                i += 1
                if i >= next_report:
                    next_report += step
                    progress(f"  {i:,} of {n:,} requests arrived by t = {t:,.1f} s; {self.events:,} events")  # type: ignore[misc]
                self._start(req, tpl.roots, t)
                continue
            t, _, code, a, b = heapq.heappop(heap)
            self.events += 1
            self.heap_events += 1
            if code == _EV_DONE:
                self._complete(a, b, t)
            elif code == _EV_ITER:
                if b[0] != a.epoch:
                    self.events -= 1  # a run that was cut short: not an event
                    continue
                self._iter_done(a, b[1], t)
            elif code == _EV_CPU:
                req, task, hp = a
                pool = self.hosts[hp]
                if pool.q:
                    r2, t2, s2 = pool.q.popleft()
                    self._run_cpu(r2, t2, hp, s2, t)
                else:
                    pool.free += 1
                self._complete(req, task, t)
            elif code == _EV_XFER:
                req, task, ch, then = a
                pool = self.channels[ch]
                if pool.q:
                    r2, t2, s2, then2 = pool.q.popleft()
                    self._run_xfer(r2, t2, ch, s2, then2, t)
                else:
                    pool.free += 1
                if then is None:
                    self._complete(req, task, t)
                else:
                    then(t)
            elif code == _EV_MARK:
                self._mark_done(a, b, t)
        return self._result(t)

    def _template(self, shape: tuple) -> _Template:
        tpl = self.templates.get(shape)
        if tpl is None:
            tpl = self.templates[shape] = self.builder.build(shape)
        return tpl

    # -- task flow --
    def _start(self, req: _Req, tasks: Sequence[int], t: float) -> None:
        for task in tasks:
            self._dispatch(req, task, t)

    def _complete(self, req: _Req, task: int, t: float) -> None:
        stack = [task]
        tpl = req.tpl
        succ, pending = tpl.succ, req.pending
        while stack:
            x = stack.pop()
            req.left -= 1
            u = tpl.kv_user_of[x]
            if u >= 0 and tpl.kind[x] == XFER:
                self._kv_user_done(req, u, t)
            for s in succ[x]:
                pending[s] -= 1
                if pending[s] == 0:
                    if tpl.kind[s] == ZERO:
                        stack.append(s)
                    else:
                        self._dispatch(req, s, t)
        if req.left == 0:
            self._finish_request(req, t)

    def _dispatch(self, req: _Req, task: int, t: float) -> None:
        tpl = req.tpl
        k = tpl.kind[task]
        s = tpl.spec[task]
        if k == ZERO:
            self._complete(req, task, t)
        elif k == DELAY:
            self._push(t + s.seconds, _EV_DONE, req, task)
        elif k == CPU:
            secs = s.seconds
            if s.is_tool and self.cfg.tool_times == "exponential":
                secs = secs * float(self.rng_tool.exponential())
            pool = self.hosts[s.resource]
            if pool.free > 0:
                pool.free -= 1
                self._run_cpu(req, task, s.resource, secs, t)
            else:
                pool.q.append((req, task, secs))
        elif k == XFER:
            secs = s.seconds
            h = tpl.scale_head[task]
            if h >= 0 and req.d_in:
                ps = tpl.spec[h]
                base = ps.ctx + ps.tokens
                secs = s.latency + (s.seconds - s.latency) * max(1, base + req.d_in) / max(1, base)
            self._transfer(req, task, s.resource, secs, None, t)
        elif k == PREFILL:
            self._enqueue_prefill(req, task, s, t)
        elif k == DECODE:
            self._enqueue_decode(req, task, s, t)
        elif k == MARK:
            pass  # completed by its prefill's engine
        elif k == ACCEL:
            e = self._pick(s.resource)
            eng = self.engines[e]
            eng.accel.append((req, task, s.seconds))
            eng.outstanding += 1
            self._kick(eng, t)
        else:  # pragma: no cover
            raise SimulationError(f"unknown task kind {k}")

    def _run_cpu(self, req: _Req, task: int, host: int, secs: float, t: float) -> None:
        self.hosts[host].busy_s += secs
        if self.record and len(self.timeline) < self.cfg.timeline_limit:
            self.timeline.append((self.wl.hosts[host].id, t, t + secs, req.tpl.spec[task].label, 1, 1))
        self._push(t + secs, _EV_CPU, (req, task, host))

    def _run_xfer(self, req: _Req, task: int, ch: int, secs: float, then: Any, t: float) -> None:
        self.channels[ch].busy_s += secs
        if self.record and len(self.timeline) < self.cfg.timeline_limit:
            self.timeline.append((self.channel_names[ch], t, t + secs, "transfer", 1, 1))
        self._push(t + secs, _EV_XFER, (req, task, ch, then))

    def _transfer(self, req: _Req, task: int, ch: int, secs: float, then: Callable[[float], None] | None,
                  t: float) -> None:
        pool = self.channels[ch]
        if pool.free > 0:
            pool.free -= 1
            self._run_xfer(req, task, ch, secs, then, t)
        else:
            pool.q.append((req, task, secs, then))

    def _channel(self, name: str) -> int:
        c = self.channel_ids.get(name)
        if c is None:
            c = self.channel_ids[name] = len(self.channels)
            self.channels.append(_Pool(1))
            self.channel_names.append(name)
        return c

    def _pick(self, pool: int) -> int:
        """The engine of `pool` with the fewest outstanding jobs; ties rotate."""
        engines = self.pools[pool]
        if len(engines) == 1:
            return engines[0]
        k = len(engines)
        start = self.pool_rr[pool]
        best, best_load = -1, math.inf
        for j in range(k):
            e = engines[(start + j) % k]
            load = self.engines[e].outstanding
            if load < best_load:
                best, best_load = e, load
        self.pool_rr[pool] = (start + 1) % k
        return best

    # -- KV accounting --
    def _reserve(self, eng: _Engine, need: float, what: str) -> bool:
        """Reserve `need` bytes of KV cache, split evenly over the engine's devices."""
        per = need / eng.n
        used, cap = self.dev_used, self.dev_cap
        if all(used[d] + per <= cap[d] + 1e-6 for d in eng.devs):
            for d in eng.devs:
                used[d] += per
            return True
        room = min(cap[d] for d in eng.devs)
        if per > room:
            raise SimulationError(
                f"{what} needs {need / 1e9:.2f} GB of KV cache on engine {eng.spec.id}, which has "
                f"{room * eng.n / 1e9:.2f} GB left after weights; it can never be admitted")
        return False

    def _free(self, eng: _Engine, amount: float) -> None:
        per = amount / eng.n
        for d in eng.devs:
            v = self.dev_used[d] - per
            self.dev_used[d] = v if v > 1e-6 else 0.0

    def _release(self, eng: _Engine, amount: float, t: float) -> None:
        self._free(eng, amount)
        for o in eng.near:
            self._kick(o, t)

    def _kv_user_done(self, req: _Req, head: int, t: float, kick: bool = True) -> None:
        left = req.kv_left.get(head, 0) - 1
        req.kv_left[head] = left
        if left <= 0:
            hold = req.kv_hold.pop(head, None)
            if hold is not None:
                if kick:
                    self._release(self.engines[hold[0]], hold[1], t)
                else:
                    self._free(self.engines[hold[0]], hold[1])

    # -- engines --
    def _tokens(self, req: _Req, s: TaskSpec) -> tuple[int, int]:
        """(prompt tokens, context) of a prefill, or (output tokens, context) of a decode, for this request."""
        if s.kind == PREFILL:
            return max(1, s.tokens + req.d_in), s.ctx
        tokens = s.tokens if req.r_out == 1.0 else max(1, round(s.tokens * req.r_out))
        return tokens, max(0, s.ctx + req.d_in)

    def _enqueue_prefill(self, req: _Req, task: int, s: TaskSpec, t: float) -> None:
        e = self._pick(s.resource)
        eng = self.engines[e]
        mq = eng.mq_by_model[(s.model, s.chips, s.part)]
        tokens, ctx = self._tokens(req, s)
        tpl = req.tpl
        kv_tokens = ctx + tokens
        d = tpl.adopt[task]
        if d >= 0:
            out, _ = self._tokens(req, tpl.spec[d])
            kv_tokens += out
        kv = mq.cost.kv_bytes(kv_tokens, s.seqs)
        req.engine[task] = e
        self.seq += 1
        mq.pq.append(_Job(req, task, tokens, ctx, s.seqs, kv, self.seq))
        eng.outstanding += 1
        self._kick(eng, t)

    def _enqueue_decode(self, req: _Req, task: int, s: TaskSpec, t: float) -> None:
        tpl = req.tpl
        h = tpl.head[task]
        req.ready[task] = t
        src = req.engine.get(h, -1) if h >= 0 else -1
        if s.resource < 0:
            if src < 0:
                raise SimulationError(f"decode {s.of or s.label}: runs where its prefill ran, but has none")
            e = src
        else:
            e = self._pick(s.resource)
        eng = self.engines[e]
        mq = eng.mq_by_model[(s.model, s.chips, s.part)]
        tokens, ctx = self._tokens(req, s)
        adopted = h >= 0 and tpl.adopt[h] == task
        kv = 0.0 if adopted else mq.cost.kv_bytes(ctx + tokens, s.seqs)
        self.seq += 1
        job = _Job(req, task, tokens, ctx, s.seqs, kv, self.seq)
        eng.outstanding += 1
        if s.kv_xfer and src >= 0 and src != e and self.wl.route is not None:
            nbytes = self.engines[src].mq_by_model[(s.model, s.chips, s.part)].cost.kv_bytes(ctx, s.seqs) \
                if (s.model, s.chips, s.part) in self.engines[src].mq_by_model else mq.cost.kv_bytes(ctx, s.seqs)
            name, secs = self.wl.route(src, e, nbytes)
            ch = self._channel(name)

            def arrived(t2: float, job: _Job = job, eng: _Engine = eng, mq: _ModelQ = mq) -> None:
                if tpl.kv_user_of[task] >= 0:
                    self._kv_user_done(req, tpl.kv_user_of[task], t2)
                mq.wait.append(job)
                self._kick(eng, t2)

            self._transfer(req, task, ch, secs, arrived, t)
            return
        if s.kv_xfer and tpl.kv_user_of[task] >= 0:
            self._kv_user_done(req, tpl.kv_user_of[task], t)
        mq.wait.append(job)
        self._kick(eng, t)

    def _queued(self, eng: _Engine) -> bool:
        """Whether any job waits for the engine (running batches aside)."""
        if eng.accel:
            return True
        for mq in eng.mqs:
            if mq.pq or mq.wait:
                return True
        return False

    def _contended(self, eng: _Engine) -> bool:
        return any(self.dev_nblocked[d] for d in eng.devs)

    def _has_work(self, eng: _Engine) -> bool:
        if eng.accel:
            return True
        return any(mq.pq or mq.wait or mq.B for mq in eng.mqs)

    def _kick(self, eng: _Engine, t: float) -> None:
        """Start the engine's next iteration if it has work and its devices are free (else queue for them)."""
        if eng.busy:
            if eng.ff is not None and (self._queued(eng) or self._contended(eng)):
                self._cut(eng, t)
            return
        if eng.blocked or not self._has_work(eng):
            return
        holder, nblocked = self.dev_holder, self.dev_nblocked
        if any(holder[d] >= 0 or nblocked[d] for d in eng.devs):
            eng.blocked = True
            self.blocked.append(eng)
            for d in eng.devs:
                nblocked[d] += 1
            for d in eng.devs:
                h = holder[d]
                if h >= 0 and self.engines[h].ff is not None:
                    self._cut(self.engines[h], t)
            return
        self._try_start(eng, t)

    def _serve_blocked(self, t: float) -> None:
        """Give freed devices to waiting engines in arrival order; an engine still waiting keeps
        later ones off all of its devices, so a wide engine is never starved by narrow ones."""
        reserved: set[int] = set()
        holder = self.dev_holder
        for eng in list(self.blocked):
            if any(holder[d] >= 0 or d in reserved for d in eng.devs):
                reserved.update(eng.devs)
                continue
            self.blocked.remove(eng)
            eng.blocked = False
            for d in eng.devs:
                self.dev_nblocked[d] -= 1
            self._try_start(eng, t)

    def _try_start(self, eng: _Engine, t: float) -> None:
        if eng.accel:
            req, task, secs = eng.accel.popleft()
            self._begin(eng, t, secs, secs, 0, ("accel", req, task), "job")
            return
        if self.ec.chunked_prefill:
            self._kick_chunked(eng, t)
            return
        # Prefill first (FIFO across models by arrival at the engine).
        best = None
        for mq in eng.mqs:
            if mq.pq and (best is None or mq.pq[0].seq < best.pq[0].seq):
                best = mq
        if best is not None:
            batch: list[_Job] = []
            total = 0
            seqs = 0
            pq = best.pq
            while pq:
                job = pq[0]
                if batch and total + job.tokens * job.seqs > self.ec.max_prefill_tokens:
                    break
                if not self._reserve(eng, job.kv, f"{best.name} prefill of {job.tokens} tokens"):
                    break
                pq.popleft()
                req = job.req
                req.kv_hold[job.task] = (eng.idx, job.kv)
                req.kv_left[job.task] = req.tpl.kv_users[job.task]
                batch.append(job)
                total += job.tokens * job.seqs
                seqs += job.seqs
            if batch:
                mean_tokens = max(1, round(total / seqs))
                ctx = max(j.ctx for j in batch)
                secs, busy = best.cost.prefill(seqs, mean_tokens, ctx)
                self._begin(eng, t, secs, busy, 0, ("prefill", best, batch), "prefill", best.cost.chips, seqs)
                return
        # Decode: models take turns.
        k = len(eng.mqs)
        for j in range(k):
            mq = eng.mqs[(eng.rr + j) % k]
            self._admit(eng, mq)
            if mq.B > 0:
                self._start_decode(eng, j, t)
                return

    def _start_decode(self, eng: _Engine, j: int, t: float) -> None:
        """Decode: the model `j` turns after the engine's round-robin pointer runs one iteration.

        With nothing queued for the engine or its devices, the run of iterations up to the next
        finishing sequence goes as one event instead: the running models take turns (one
        iteration each per cycle, in round-robin order) for F − 1 full cycles and, in cycle F,
        up to the first model with a finishing sequence. Step times sum in closed form
        (`StepCost.decode_run`); `_cut` stops the run early when work arrives."""
        k = len(eng.mqs)
        if not self.cfg.fast_forward or self._queued(eng) or self._contended(eng):
            idx = (eng.rr + j) % k
            eng.rr = (idx + 1) % k
            run = [(idx, eng.mqs[idx], 1)]
        else:
            act = [(i, eng.mqs[i]) for i in ((eng.rr + x) % k for x in range(j, k)) if eng.mqs[i].B > 0]
            F, star = min((mq.run[0][0] - mq.iters, slot) for slot, (_, mq) in enumerate(act))
            run = [(i, mq, F if slot <= star else F - 1) for slot, (i, mq) in enumerate(act)]
            run = [r for r in run if r[2] > 0]
            eng.rr = (act[star][0] + 1) % k
        ctx = [mq.ctx_sum / mq.B for _, mq, _ in run]
        secs = busy = 0.0
        for (_, mq, n), c in zip(run, ctx, strict=True):
            a, b = mq.cost.decode(mq.B, c) if n == 1 else mq.cost.decode_run(mq.B, c, n)
            secs += a
            busy += b
        iters = sum(n for _, _, n in run)
        B = sum(mq.B for _, mq, _ in run)
        what = ("decode", [(mq, n) for _, mq, n in run])
        row = self._begin(eng, t, secs, busy, 0, what, "decode", None, B, iters)
        eng.batch_sum += sum(mq.B * n for _, mq, n in run)
        eng.max_batch_seen = max(eng.max_batch_seen, max(mq.B for _, mq, _ in run))
        if iters > 1:
            eng.ff = [run, ctx, t, row]

    def _cut(self, eng: _Engine, t: float) -> None:
        """Stop a fast-forwarded run after the iteration in progress at `t`."""
        run, ctx, t0, row = eng.ff
        eng.ff = None
        dt = t - t0

        def after(cycles: int) -> tuple[float, float]:  # time and busy time of the first `cycles` cycles
            a = b = 0.0
            for (_, mq, n), c in zip(run, ctx, strict=True):
                m = min(n, cycles)
                if m:
                    x, y = mq.cost.decode_run(mq.B, c, m)
                    a += x
                    b += y
            return a, b

        F = max(n for _, _, n in run)
        lo, hi = 0, F  # after(lo) <= dt < after(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if after(mid)[0] <= dt:
                lo = mid
            else:
                hi = mid
        # Cycle lo + 1 is in progress: find the slot running at dt.
        acc = after(lo)[0]
        cut = len(run) - 1
        for slot, ((_, mq, n), c) in enumerate(zip(run, ctx, strict=True)):
            if n > lo:
                acc += mq.cost.decode(mq.B, c + lo)[0]
                if acc > dt:
                    cut = slot
                    break
        new = [(i, mq, (lo + 1 if slot <= cut else lo) if n > lo else n) for slot, (i, mq, n) in enumerate(run)]
        if all(a[2] == b[2] for a, b in zip(new, run, strict=True)):
            return
        old_s, old_b = after(F)
        run2 = new
        secs = busy = 0.0
        for (_, mq, n), c in zip(run2, ctx, strict=True):
            if n:
                x, y = mq.cost.decode_run(mq.B, c, n)
                secs += x
                busy += y
        dropped = sum(a[2] - b[2] for a, b in zip(run, run2, strict=True))
        eng.busy_s -= old_s - secs
        for d in eng.devs:
            self.dev_busy_s[d] -= old_s - secs
            self.dev_active_s[d] -= old_b - busy
        eng.iters -= dropped
        eng.batch_sum -= sum(mq.B * (a[2] - b[2]) for a, b in zip(run, run2, strict=True) for mq in (a[1],))
        eng.rr = (run2[cut][0] + 1) % len(eng.mqs)
        if row is not None:
            r = self.timeline[row]
            self.timeline[row] = (r[0], r[1], t0 + secs, r[3], r[4], r[5] - dropped)
        eng.epoch += 1
        self._push(t0 + secs, _EV_ITER, eng, (eng.epoch, ("decode", [(mq, n) for _, mq, n in run2 if n])))

    def _admit(self, eng: _Engine, mq: _ModelQ) -> None:
        wait = mq.wait
        cap = self.ec.max_batch
        while wait and mq.B + wait[0].seqs <= max(cap, wait[0].seqs if mq.B == 0 else cap):
            job = wait[0]
            if job.kv > 0 and not self._reserve(eng, job.kv, f"{mq.name} decode at context {job.ctx}"):
                break
            wait.popleft()
            req = job.req
            u = req.tpl.kv_user_of[job.task]
            if u >= 0 and not req.tpl.spec[job.task].kv_xfer:
                self._kv_user_done(req, u, 0.0, kick=False)  # it has its own cache now
            mq.B += job.seqs
            mq.ctx_sum += job.ctx * job.seqs
            self.seq += 1
            heapq.heappush(mq.run, (mq.iters + job.tokens, self.seq, job))

    def _kick_chunked(self, eng: _Engine, t: float) -> None:
        k = len(eng.mqs)
        budget_total = self.ec.chunk_tokens
        for j in range(k):
            mq = eng.mqs[(eng.rr + j) % k]
            self._admit(eng, mq)
            budget = max(0, budget_total - mq.B)
            parts: list[tuple[_Job, int]] = []
            chunk_ctx = 0
            idx = 0
            while budget > 0 and idx < len(mq.pq):
                job = mq.pq[idx]
                if job.done == 0 and job.next_mark == 0 and job.task not in job.req.kv_hold:
                    if not self._reserve(eng, job.kv, f"{mq.name} prefill of {job.tokens} tokens"):
                        break
                    req = job.req
                    req.kv_hold[job.task] = (eng.idx, job.kv)
                    req.kv_left[job.task] = req.tpl.kv_users[job.task]
                total = job.tokens * job.seqs
                take = min(budget, total - job.done)
                if not parts:
                    chunk_ctx = job.ctx + job.done // max(1, job.seqs)
                parts.append((job, take))
                budget -= take
                idx += 1
            c = sum(p[1] for p in parts)
            if c == 0 and mq.B == 0:
                continue
            if c == 0:
                self._start_decode(eng, j, t)
                return
            eng.rr = (eng.rr + j + 1) % k
            ctx_mean = mq.ctx_sum / mq.B if mq.B else 0.0
            secs, busy = mq.cost.mixed(c, chunk_ctx, mq.B, ctx_mean)
            kind = "mixed" if c and mq.B else ("prefill" if c else "decode")
            self._begin(eng, t, secs, busy, mq.B, ("chunked", mq, parts), kind, mq.cost.chips, mq.B + len(parts))
            return

    def _begin(self, eng: _Engine, t: float, secs: float, busy: float, batch: int, what: tuple, label: str,
               chips: int | None = None, shown: int = 0, iters: int = 1) -> int | None:
        """Start `iters` iterations (one unless fast-forwarded); returns their timeline row, if recorded."""
        eng.busy = True
        eng.busy_s += secs
        for d in eng.devs:
            self.dev_holder[d] = eng.idx
            self.dev_busy_s[d] += secs
            self.dev_active_s[d] += busy
        eng.iters += iters
        if batch:
            eng.batch_sum += batch * iters
            if batch > eng.max_batch_seen:
                eng.max_batch_seen = batch
        row = None
        if self.record and len(self.timeline) < self.cfg.timeline_limit:
            row = len(self.timeline)
            self.timeline.append((eng.spec.id, t, t + secs, label, shown, iters))
        if what[0] == "prefill":
            eng.prefill_iters += 1
            # Layer-streamed prefills finish piece by piece; the last piece ends with the step.
            for job in what[2]:
                marks = job.req.tpl.marks[job.task]
                k = len(marks)
                for m_i, m in enumerate(marks):
                    self._push(t + secs if m_i == k - 1 else t + secs * (m_i + 1) / k, _EV_MARK, job, m)
        self._push(t + secs, _EV_ITER, eng, (eng.epoch, what))
        return row

    def _iter_done(self, eng: _Engine, what: tuple, t: float) -> None:
        # The engine stays busy while this iteration's results flow on: tasks that become
        # ready here may queue on it, but only the kick at the end starts its next iteration.
        kind = what[0]
        if kind == "accel":
            _, req, task = what
            eng.outstanding -= 1
            self._complete(req, task, t)
        elif kind == "prefill":
            for job in what[2]:
                eng.outstanding -= 1
        elif kind == "decode":
            eng.ff = None
            self.events += sum(n for _, n in what[1]) - 1  # the fast-forwarded iterations
            for mq, n in what[1]:
                self._decode_step(eng, mq, t, n)
        else:  # chunked
            mq, parts = what[1], what[2]
            had_decode = mq.B > 0
            for job, take in parts:
                job.done += take
                total = job.tokens * job.seqs
                marks = job.req.tpl.marks[job.task]
                k = len(marks)
                while job.next_mark < k and job.done * k >= total * (job.next_mark + 1):
                    m = marks[job.next_mark]
                    job.next_mark += 1
                    self._mark_done(job, m, t, chunked=True)
                if job.done >= total:
                    mq.pq.remove(job)
                    eng.outstanding -= 1
            if had_decode:
                self._decode_step(eng, mq, t)
        eng.busy = False
        for d in eng.devs:
            self.dev_holder[d] = -1
        if self.blocked:
            self._serve_blocked(t)
        for o in eng.near:  # itself last among equals: waiting engines were served first
            if o is not eng:
                self._kick(o, t)
        self._kick(eng, t)

    def _decode_step(self, eng: _Engine, mq: _ModelQ, t: float, k: int = 1) -> None:
        mq.iters += k
        mq.ctx_sum += mq.B * k
        run = mq.run
        while run and run[0][0] <= mq.iters:
            _, _, job = heapq.heappop(run)
            mq.B -= job.seqs
            mq.ctx_sum -= (job.ctx + job.tokens) * job.seqs
            eng.outstanding -= 1
            req, task = job.req, job.task
            tpl = req.tpl
            h = tpl.head[task]
            start = req.pf_end.get(h, req.ready.get(task, t)) if h >= 0 else req.ready.get(task, t)
            tpot = (t - start) / job.tokens
            req.out_tokens += job.tokens * job.seqs
            if tpot > req.tpot:
                req.tpot = tpot
            llm = tpl.spec[task].llm
            if llm and llm not in req.llm_tpot:
                req.llm_tpot[llm] = tpot
            if job.kv > 0:
                self._free(eng, job.kv)
            if h >= 0 and tpl.adopt[h] == task:
                hold = req.kv_hold.pop(h, None)
                if hold is not None:
                    self._free(self.engines[hold[0]], hold[1])
            self._complete(req, task, t)
        if mq.B == 0:
            mq.ctx_sum = 0.0

    def _mark_done(self, job: _Job, m: int, t: float, chunked: bool = False) -> None:
        req = job.req
        tpl = req.tpl
        marks = tpl.marks[job.task]
        if m == marks[-1]:
            # The prefill is over: its first token exists.
            req.pf_end[job.task] = t
            ttft = t - req.t0
            if ttft < req.first:
                req.first = ttft
            llm = tpl.spec[job.task].llm
            if llm and llm not in req.llm_ttft:
                req.llm_ttft[llm] = ttft
            if tpl.kv_users[job.task] == 0 and tpl.adopt[job.task] < 0:
                hold = req.kv_hold.pop(job.task, None)
                if hold is not None:
                    self._release(self.engines[hold[0]], hold[1], t)
        self._complete(req, m, t)

    def _finish_request(self, req: _Req, t: float) -> None:
        i = req.id
        self.res_e2e[i] = t - req.t0
        if req.first < math.inf:
            self.res_ttft[i] = req.first
        if req.out_tokens:
            self.res_tpot[i] = req.tpot
        self.res_out[i] = req.out_tokens
        n = len(self.arr)
        for llm, v in req.llm_ttft.items():
            arr = self.res_llm_ttft.get(llm)
            if arr is None:
                arr = self.res_llm_ttft[llm] = np.full(n, np.nan)
            arr[i] = v
        for llm, v in req.llm_tpot.items():
            arr = self.res_llm_tpot.get(llm)
            if arr is None:
                arr = self.res_llm_tpot[llm] = np.full(n, np.nan)
            arr[i] = v
        for h, (e, b) in list(req.kv_hold.items()):  # nothing should be left; free defensively
            self._release(self.engines[e], b, t)
        req.kv_hold.clear()

    # -- results --
    def _result(self, t_end: float) -> LoadResult:
        arr = self.arr
        if np.isnan(self.res_e2e).any():
            stuck = int(np.isnan(self.res_e2e).sum())
            raise SimulationError(f"{stuck} of {len(arr)} requests never finished (a task waits on nothing?)")
        span = t_end  # from time 0, where the arrival process starts, to the last completion
        util: dict[str, float] = {}
        energy = 0.0
        engines = []
        for d, dev in enumerate(self.dev_ids):
            chip = self.dev_chip[d]
            util[dev] = self.dev_busy_s[d] / span if span > 0 else 0.0
            energy += accounting.energy_j(chip, self.dev_active_s[d], span)
        for e in self.engines:
            chip = e.spec.chip
            u = e.busy_s / span if span > 0 else 0.0
            engines.append({
                "id": e.spec.id,
                "devices": list(e.spec.devices),
                "chip": chip.name,
                "models": sorted({m.name for m in e.mqs}),
                "iterations": e.iters,
                "prefill_iterations": e.prefill_iters,
                "mean_decode_batch": (e.batch_sum / (e.iters - e.prefill_iters)) if e.iters > e.prefill_iters else 0.0,
                "max_decode_batch": e.max_batch_seen,
                "busy_s": e.busy_s,
                "utilisation": u,
                "kv_capacity_gb": sum(self.dev_cap[d] for d in e.devs) / 1e9,
            })
        for h, pool in zip(self.wl.hosts, self.hosts, strict=True):
            busy = accounting.host_busy_s(pool.busy_s, pool.lanes)
            util[h.id] = busy / span if span > 0 else 0.0
            if pool.busy_s > 0:
                energy += accounting.energy_j(h.chip, busy, span, h.sockets)
        for name, pool in zip(self.channel_names, self.channels, strict=True):
            util[name] = pool.busy_s / span if span > 0 else 0.0
        return LoadResult(
            name=self.wl.name,
            arrivals=arr,
            arrival=np.asarray(arr.times, dtype=float),
            ttft=self.res_ttft,
            tpot=self.res_tpot,
            e2e=self.res_e2e,
            out_tokens=self.res_out,
            llm_ttft=dict(sorted(self.res_llm_ttft.items())),
            llm_tpot=dict(sorted(self.res_llm_tpot.items())),
            span=span,
            events=self.events,
            engines=engines,
            utilisation=dict(sorted(util.items())),
            energy_j=energy,
            chips=self.wl.chips,
            power_w=self.wl.power_w,
            price_per_hour=self.wl.price_per_hour,
            config=self.cfg,
            timeline=self.timeline,
            cost_model_calls=sum(c.calls for c in self.costs.values()),
            heap_events=self.heap_events,
        )


def simulate(workload: Workload, arrivals: Arrivals, config: SimConfig | None = None, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> LoadResult:
    """Run `arrivals` through `workload`; deterministic for a given seed. `progress`, if given, hears
    every tenth of the arrivals of runs of 10,000 requests or more (it changes nothing simulated)."""
    if len(arrivals) == 0:
        raise SimulationError("no requests to simulate")
    return _Sim(workload, arrivals, config or SimConfig(), seed).run(progress)


# ---- plans -------------------------------------------------------------------------------------


def _host_of(resource: str) -> str:
    return resource.split("#", 1)[0]


def plan_workload(graph: Graph, devices: Mapping[str, tuple[str, Chip, str]], name: str = "graph",
                  sockets: Mapping[str, int] | None = None, stack: str = "reference",
                  lanes: Mapping[str, int] | None = None) -> Workload:
    """A workload that runs a compiled exec-level graph as placed.

    `devices` maps each device id to (node, chip, role: "accelerator" or "host").
    Every group of accelerators an op is placed on becomes an engine (groups that
    share a device take turns on it); every host becomes a CPU pool; every
    channel a link."""
    sockets, lanes = sockets or {}, lanes or {}

    def devs_of(op: Op) -> tuple[str, ...]:
        ds = op.attr("devices")
        if isinstance(ds, tuple) and ds:
            return tuple(dict.fromkeys(_host_of(str(d)) for d in ds))
        d = op.attr("device")
        return (_host_of(str(d)),) if isinstance(d, str) else ()

    def is_host(d: str) -> bool:
        info = devices.get(d)
        if info is None:
            raise SimulationError(f"device {d!r} of the plan's graph is not in its cluster")
        return info[2] == "host"

    # One engine per placed group of accelerators; groups that share a device take turns on it.
    order = {d: i for i, d in enumerate(devices)}
    group_idx: dict[tuple[str, ...], int] = {}
    engines: list[EngineSpec] = []
    for op, _ in graph.walk():
        if op.kind != "exec.compute":
            continue
        ds = devs_of(op)
        if not ds or all(is_host(d) for d in ds):
            continue
        accel = tuple(sorted((d for d in ds if not is_host(d)), key=order.__getitem__))
        if accel in group_idx:
            continue
        kinds = {devices[d][1].name for d in accel}
        if len(kinds) > 1:
            raise SimulationError(f"op @{op.name}: runs on different chips at once ({', '.join(sorted(kinds))})")
        group_idx[accel] = len(engines)
        engines.append(EngineSpec("+".join(accel), accel, devices[accel[0]][1], devices[accel[0]][0]))
    pools = [(i,) for i in range(len(engines))]
    hosts_ids = [d for d, info in devices.items() if info[2] == "host"]
    host_idx = {h: i for i, h in enumerate(hosts_ids)}
    hosts = [HostSpec(h, devices[h][1], sockets.get(h, 1), lanes.get(h, DEFAULT_HOST_LANES)) for h in hosts_ids]
    channels: list[str] = []
    chan_idx: dict[str, int] = {}
    engine_models: list[list[tuple[str, int, tuple]]] = [[] for _ in engines]
    prof = profile_for_stack(stack)
    whole: dict[tuple[str, str, int], StepCost] = {}

    def scaled_part(op: Op, ko: str, chip: Chip, n: int) -> tuple:
        """() when the op's compiled seconds are the whole model's; else ("scaled", time ratio, KV ratio)."""
        secs = float(op.attr("seconds", 0.0)) * int(op.attr("chunks", 1))
        if secs <= 0:
            return ()
        key = (str(op.attr("model")), chip.name, n)
        cost = whole.get(key)
        if cost is None:
            cost = whole[key] = StepCost(get_model(key[0]), chip, n, prof)
        seqs, tokens, ctx = int(op.attr("batch", 1)), int(op.attr("tokens", 1)), int(op.attr("ctx", 0))
        if ko == "model.prefill":
            mine = cost.prefill(seqs, tokens, ctx)[0]
        else:
            mine = tokens * cost.decode(seqs, ctx + tokens // 2)[0]
        ratio = secs / mine if mine > 0 else 1.0
        if abs(ratio - 1.0) <= 1e-3:
            return ()
        kv_ratio = ratio
        kv_res = [v for v in op.results if v.type.kind == "kv"]
        if ko == "model.prefill" and kv_res:
            full = cost.kv_bytes(ctx + tokens, seqs)
            kv_ratio = kv_res[0].type.nbytes / full if full > 0 else ratio
        return ("scaled", round(ratio, 9), round(min(1.0, kv_ratio), 9))

    def engine_for(ds: tuple[str, ...]) -> int:
        return group_idx[tuple(sorted((d for d in ds if not is_host(d)), key=order.__getitem__))]

    def classify(op: Op) -> TaskSpec:
        k = op.kind
        if k == "exec.compute":
            ko = str(op.attr("kind_of", ""))
            ds = devs_of(op)
            secs = float(op.attr("seconds", 0.0))
            label = str(op.attr("of", op.name))
            if ko in ("model.prefill", "model.decode"):
                e = engine_for(ds)
                n = len([d for d in ds if not is_host(d)])
                layers = op.attr("layers")
                if layers is not None or op.attr("block") is not None:
                    m = get_model(str(op.attr("model")))
                    a, b = (int(layers[0]), int(layers[1])) if layers is not None else (0, m.layers)
                    block = op.attr("block")
                    part: tuple = (a, b, str(block) if block is not None else None)
                else:
                    part = scaled_part(op, ko, engines[e].chip, n)
                spec = TaskSpec(
                    PREFILL if ko == "model.prefill" else DECODE,
                    resource=e, model=str(op.attr("model")), chips=n, tokens=int(op.attr("tokens", 1)),
                    ctx=int(op.attr("ctx", 0)), seqs=int(op.attr("batch", 1)), llm=str(op.attr("llm", "") or ""),
                    of=label, label=label, part=part,
                )
                if ko == "model.prefill" and op.attr("chunk") is not None:
                    spec.chunk, spec.chunks = int(op.attr("chunk")), int(op.attr("chunks", 1))
                    if spec.chunk > 0:
                        spec.kind = MARK
                return spec
            if secs <= 0:
                return TaskSpec(ZERO, label=label)
            if ds and all(is_host(d) for d in ds):
                return TaskSpec(CPU, resource=host_idx[ds[0]], seconds=secs,
                                is_tool=ko in ("agent.tool", "agent.code"), label=label)
            if ds:
                return TaskSpec(ACCEL, resource=engine_for(ds), seconds=secs, label=label)
            return TaskSpec(DELAY, seconds=secs, label=label)
        if k == "exec.send":
            ch = str(op.attr("channel", f"{op.attr('src')}->{op.attr('dst')}"))
            if ch not in chan_idx:
                chan_idx[ch] = len(channels)
                channels.append(ch)
            return TaskSpec(XFER, resource=chan_idx[ch], seconds=float(op.attr("seconds", 0.0)),
                            latency=float(op.attr("latency", 0.0)), label=op.name)
        if k == "exec.convert":
            secs = float(op.attr("seconds", 0.0))
            return TaskSpec(DELAY if secs > 0 else ZERO, seconds=secs, label=op.name)
        secs = float(op.attr("seconds", 0.0)) if isinstance(op.attr("seconds"), (int, float)) else 0.0
        return TaskSpec(DELAY if secs > 0 else ZERO, seconds=secs, label=op.name)

    # Classify every op once now: it fills the channel table and each engine's models.
    for op, _ in graph.walk():
        if op.regions or op.kind == "agent.yield":
            continue
        s = classify(op)
        if s.kind in (PREFILL, DECODE, MARK):
            pair = (s.model, s.chips, s.part)
            if pair not in engine_models[s.resource]:
                engine_models[s.resource].append(pair)
    specs = {op.name: classify(op) for op, _ in graph.walk() if not op.regions and op.kind != "agent.yield"}

    def cached(op: Op) -> TaskSpec:
        return specs[op.name]

    used = sorted({d for e in engines for d in e.devices})
    power = sum(accounting.power_w(devices[d][1]) for d in used)
    price = sum(accounting.hourly_usd(devices[d][1]) for d in used)
    return Workload(graph, cached, engines, pools, [e.id for e in engines], hosts, engine_models, channels,
                    None, name, prof.name, len(used), power, price)


def simulate_plan(plan: Any, arrivals: Arrivals, config: SimConfig | None = None, seed: int = 0,
                  cluster: Any = None, progress: Callable[[str], None] | None = None) -> LoadResult:
    """Simulate a `DeploymentPlan` (or a path to one) under `arrivals`.

    The plan's `ir` holds its exec-level graph; its `cluster` summary names the
    chips and gives each host's sockets and lanes (a `cluster`, if given, gives them instead)."""
    from gimletc.hardware import get_chip
    from gimletc.ir import parse_graph
    from gimletc.plan import DeploymentPlan, load_plan

    p: DeploymentPlan = plan if isinstance(plan, DeploymentPlan) else load_plan(plan)
    if not p.ir.strip():
        raise SimulationError(f"plan {p.name}: has no compiled IR (field `ir`); recompile it with this gimletc")
    graph = parse_graph(p.ir)
    devices = {d.id: (d.node, get_chip(d.chip), d.role) for d in p.cluster.devices}
    sockets = {h: s.sockets for h, s in p.cluster.hosts.items()}
    lanes = {h: s.lanes for h, s in p.cluster.hosts.items()}
    if cluster is not None:
        for d in cluster.devices():
            if d.role == "host":
                sockets[d.id], lanes[d.id] = accounting.units(cluster, d), accounting.lanes(cluster, d)
    stack = str((p.inputs.get("options") or {}).get("stack") or "reference")
    return simulate(plan_workload(graph, devices, p.name, sockets, stack, lanes), arrivals, config, seed, progress)
