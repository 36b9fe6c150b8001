"""Run-time state of a load simulation: requests in flight, jobs on engines, each engine's model
queues and running batches, and FIFO pools of CPU lanes and link channels."""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Any

from gimletc.sim.steps import StepCost
from gimletc.sim.template import Template
from gimletc.sim.workload import PREFILL, EngineSpec, TaskSpec

__all__ = ["EV_CPU", "EV_DONE", "EV_ITER", "EV_MARK", "EV_XFER", "Engine", "Job", "ModelQueue", "Pool", "Req",
           "request_tokens"]

# Event codes: the third field of every (time, sequence number, code, a, b) tuple on the event heap.
EV_DONE, EV_CPU, EV_XFER, EV_ITER, EV_MARK = range(5)


class Req:
    """A request in flight: its task graph's progress, KV caches held, and its outcomes so far."""

    __slots__ = ("id", "t0", "tpl", "pending", "left", "d_in", "r_out", "engine", "pf_end", "kv_hold",
                 "kv_left", "ready", "first", "tpot", "out_tokens", "llm_ttft", "llm_tpot")

    def __init__(self, rid: int, t0: float, tpl: Template, d_in: int, r_out: float):
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


def request_tokens(req: Req, s: TaskSpec) -> tuple[int, int]:
    """(prompt tokens, context) of a prefill, or (output tokens, context) of a decode, for this request."""
    if s.kind == PREFILL:
        return max(1, s.tokens + req.d_in), s.ctx
    tokens = s.tokens if req.r_out == 1.0 else max(1, round(s.tokens * req.r_out))
    return tokens, max(0, s.ctx + req.d_in)


class Job:
    """A prefill or decode of one request on an engine.

    `done` counts progress: prompt tokens computed (a prefill under chunked prefill), or, for a
    decode that was preempted and resumed, the tokens it had produced before. A recompute job
    (`resume` set) is the prefill that rebuilds a preempted decode's KV cache: when it ends,
    `resume` rejoins the running batch."""

    __slots__ = ("req", "task", "tokens", "ctx", "seqs", "kv", "seq", "done", "next_mark", "resume", "adm", "out",
                 "counted", "prefix", "koff", "node", "kv_full", "given", "seen", "look", "mq")

    def __init__(self, req: Req, task: int, tokens: int, ctx: int, seqs: int, kv: float, seq: int):
        self.req, self.task, self.tokens, self.ctx, self.seqs, self.kv, self.seq = req, task, tokens, ctx, seqs, kv, seq
        self.done = 0
        self.next_mark = 0
        self.resume: Job | None = None
        self.adm = 0  # when it was admitted (the policy's count, 0 before), for choosing whom to preempt
        self.out = 0  # a prefill: output tokens of the decode that continues its cache here (0: none)
        self.counted = False  # it holds its sequences' place in the running set (`ModelQueue.active`)
        # Prefix caching (`gimletc.sim.kv.PrefixCache`): a prefill's prompt as its template's chain of (segment key,
        # end token),
        # the cached node its prompt starts with (looked up until it is admitted), its KV cache without a hit,
        # and the prompt tokens whose KV cache another engine sent it (a transferred prefix).
        self.prefix: tuple | None = None
        self.koff = 0  # added to a value segment's key: the request's own (see `gimletc.sim.kv.KEY_SPAN`)
        self.node: Any = None
        self.kv_full = kv
        self.given = 0
        self.seen = -1  # the cache's version when it was last looked up
        self.mq: ModelQueue | None = None  # a prompt with a chain: the model queue it is prefilled in
        self.look = False  # it is looked up (it has a prefix another prompt may have cached, or was sent one)


class ModelQueue:
    """One model's queues and running batch on one engine.

    `active` counts the sequences a policy has admitted and not yet finished (prefilling,
    waiting for their decode, or decoding): what a running-set cap limits. `out_sum` and
    `base_sum` sum the running decodes' final and starting contexts, so Σ remaining tokens is
    `out_sum − ctx_sum`. `g` is the KV-cache bytes one sequence adds per decoded token when the
    policy grows caches as tokens are made (0: the policy reserved them at admission);
    `params` and `state` are the policy's resolved knobs and per-model state."""

    __slots__ = ("name", "cost", "pq", "wait", "run", "iters", "B", "ctx_sum", "active", "out_sum", "base_sum",
                 "g", "params", "state", "prefix_root", "kvb")

    def __init__(self, name: str, cost: StepCost):
        self.name, self.cost = name, cost
        self.pq: deque[Job] = deque()  # prefills waiting (the head may be part-done when chunked)
        self.wait: deque[Job] = deque()  # decodes waiting for admission
        self.run: list[tuple[int, int, Job]] = []  # (finishing iteration, seq, job)
        self.iters = 0
        self.B = 0  # sequences in the running batch
        self.ctx_sum = 0.0  # their context lengths, summed
        self.active = 0
        self.out_sum = 0.0
        self.base_sum = 0.0
        self.g = 0.0
        self.params: Any = None
        self.state: Any = None
        self.prefix_root: Any = None  # its engine's prefix cache for this model (`gimletc.sim.kv.PrefixCache`)
        self.kvb: dict[int, float] = {}  # KV bytes of one sequence by its tokens (`gimletc.sim.kv.KVMemory.kv_bytes`)

    def join(self, job: Job, seq: int) -> None:
        """`job`'s sequences join the running batch, to leave once it has produced its tokens
        (`job.done` of them before, when it resumes after a preemption)."""
        self.B += job.seqs
        self.ctx_sum += (job.ctx + job.done) * job.seqs
        self.out_sum += (job.ctx + job.tokens) * job.seqs
        self.base_sum += job.ctx * job.seqs
        heapq.heappush(self.run, (self.iters + job.tokens - job.done, seq, job))

    def leave(self, entry: tuple[int, int, Job]) -> int:
        """Take a running job out of the batch before it finishes; returns the tokens it has produced."""
        fin, _, job = entry
        made = job.tokens - (fin - self.iters)
        self.run.remove(entry)
        heapq.heapify(self.run)
        self.B -= job.seqs
        self.ctx_sum -= (job.ctx + made) * job.seqs
        self.out_sum -= (job.ctx + job.tokens) * job.seqs
        self.base_sum -= job.ctx * job.seqs
        if self.B == 0:
            self.ctx_sum = self.out_sum = self.base_sum = 0.0
        return made


class Engine:
    """One engine's run-time state: its devices, models, the jobs it owes, and what it has done."""

    __slots__ = ("idx", "spec", "n", "devs", "near", "mqs", "mq_by_model", "busy", "blocked", "rr", "accel",
                 "outstanding", "busy_s", "iters", "batch_sum", "max_batch_seen", "prefill_iters", "epoch", "ff",
                 "preemptions", "recomputed", "aux", "aux_r", "policy", "grows", "alone",
                 "owns", "active_s")

    def __init__(self, idx: int, spec: EngineSpec, devs: tuple[int, ...], aux: tuple[int, ...] = ()):
        self.idx, self.spec, self.n = idx, spec, len(spec.devices)
        self.devs = devs  # device indices
        self.aux = aux  # devices of the engine's second kind of group (a draft group, FFN groups): see sim.roles
        self.aux_r = 0.0  # their operator time per second of the main devices' (the roles' `aux_ratio`)
        self.policy: Any = None  # its batching policy (gimletc.sim.batching.BatchPolicy)
        self.grows = False  # whether that policy grows KV caches token by token
        self.near: tuple[Engine, ...] = ()  # engines sharing a device with this one (itself included)
        self.alone = True  # no other engine shares its devices: nobody else holds them or waits for them
        self.mqs: list[ModelQueue] = []
        self.mq_by_model: dict[tuple[str, int, tuple], ModelQueue] = {}
        self.busy = False  # running an iteration (holding its devices)
        self.blocked = False  # waiting for devices another engine holds
        self.rr = 0
        self.accel: deque[tuple[Req, int, float]] = deque()
        self.outstanding = 0
        self.busy_s = 0.0  # wall seconds with an iteration running
        # Whether only this engine's iterations use its devices (it is alone on them and they are no engine's
        # auxiliary devices): then they are not tracked device by device, and each device's busy seconds are
        # `busy_s`, its operator-busy seconds `active_s` (expanded per device by `results.load_result`).
        self.owns = False
        self.active_s = 0.0
        self.iters = 0
        self.prefill_iters = 0
        self.batch_sum = 0
        self.max_batch_seen = 0
        self.epoch = 0  # iteration events of an older epoch were cut short and are ignored
        self.ff: list | None = None  # a fast-forwarded decode run in progress: [run, contexts, start, timeline row, seconds]
        self.preemptions = 0  # running requests sent back to wait under KV pressure
        self.recomputed = 0  # tokens prefilled again to rebuild their KV caches


def has_work(eng: Engine) -> bool:
    """Whether the engine has a job queued or running."""
    if eng.accel:
        return True
    for mq in eng.mqs:
        if mq.pq or mq.wait or mq.B:
            return True
    return False


class Pool:
    """A FIFO resource of `lanes` servers: a host's CPU lanes, or one link channel."""

    __slots__ = ("lanes", "free", "q", "busy_s")

    def __init__(self, lanes: int):
        self.lanes = lanes
        self.free = lanes
        self.q: deque = deque()
        self.busy_s = 0.0
