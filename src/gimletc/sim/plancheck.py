"""What the load simulator relies on in a plan, checked before it builds anything from it.

`gimletc.plan.load_plan` already checks a plan file's schema, its quantities and its IR (parsed
and verified: no NaN, no negative attribute). The simulator relies on more: every device an op
names is in the plan's cluster with a known chip and a role it can price, a step's seconds are
within the time it can simulate, a model step's tokens fit its model's context, a loop's mean
lies in 1..max, a branch's probabilities are numbers that sum to more than 0. `check_plan`
checks those and names the plan, the op and the field, so an edited plan fails in one line
instead of deep inside a run (or worse, runs and reports nonsense).
"""

from __future__ import annotations

import math
from typing import Any

from gimletc.errors import GimletError
from gimletc.hardware.resources import device_of
from gimletc.ir import Graph
from gimletc.sim.config import SimulationError
from gimletc.sim.limits import MAX_SPAN_S

__all__ = ["check_plan"]

_ROLES = ("accelerator", "host")
_TIMES = ("seconds", "latency", "latency_s", "cpu_s")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_plan(plan: Any, graph: Graph, source: str) -> None:
    """Refuse (SimulationError naming `source`, the op or device, and the field) what the simulator
    cannot run faithfully in `plan` (a DeploymentPlan) and its parsed `graph`."""
    from gimletc.hardware import get_chip
    from gimletc.models import get_model

    def fail(msg: str) -> None:
        raise SimulationError(f"{source}: {msg}")

    ids = set()
    for i, d in enumerate(plan.cluster.devices):
        where = f"cluster.devices[{i}] ({d.id})"
        if d.role not in _ROLES:
            fail(f"{where}: role {d.role!r} is not one the simulator prices ({', '.join(_ROLES)})")
        try:
            get_chip(d.chip)
        except GimletError as e:
            fail(f"{where}: chip: {e}")
        ids.add(d.id)
    for h in plan.cluster.hosts:
        if h not in ids:
            fail(f"cluster.hosts: {h!r} is not a device of the cluster")
    models: dict[str, Any] = {}
    for op, _ in graph.walk():
        at = f"op @{op.name}"
        for key in _TIMES:
            v = op.attrs.get(key)
            if v is not None and (not _number(v) or not 0 <= v <= MAX_SPAN_S):
                fail(f"{at}: {key} = {v!r} is not a time in 0..{MAX_SPAN_S:.0e} s (the longest the simulator runs)")
        for key in ("device", "devices"):
            v = op.attrs.get(key)
            for d in (v if isinstance(v, tuple) else (v,) if v is not None else ()):
                if not isinstance(d, str) or device_of(d) not in ids:
                    fail(f"{at}: {key}: {d!r} is not a device of the plan's cluster (cluster.devices)")
        kind = op.attr("kind_of") if op.kind == "exec.compute" else op.kind
        if kind in ("model.prefill", "model.decode"):
            tokens, ctx, batch = op.attr("tokens", 1), op.attr("ctx", 0), op.attr("batch", 1)
            for key, v, low in (("tokens", tokens, 1), ("ctx", ctx, 0), ("batch", batch, 1)):
                if not isinstance(v, int) or isinstance(v, bool) or v < low:
                    fail(f"{at}: {key} = {v!r} is not an integer >= {low}")
            chunks, chunk = op.attr("chunks", 1), op.attr("chunk")
            if not isinstance(chunks, int) or chunks < 1 or (chunk is not None and not (
                    isinstance(chunk, int) and 0 <= chunk < chunks)):
                fail(f"{at}: chunk {chunk!r} of {chunks!r} chunks is not a piece 0..chunks-1 of at least one")
            name = str(op.attr("model"))
            if name not in models:
                try:
                    models[name] = get_model(name)
                except GimletError as e:
                    fail(f"{at}: model: {e}")
            m = models[name]
            if m.max_context is not None and ctx + tokens > m.max_context:
                fail(f"{at}: ctx ({ctx:,}) + tokens ({tokens:,}) = {ctx + tokens:,} exceed {m.name}'s max context "
                     f"of {m.max_context:,} tokens")
        elif op.kind == "agent.loop":
            expected, most = op.attr("expected"), op.attr("max")
            if not isinstance(most, int) or isinstance(most, bool) or most < 1:
                fail(f"{at}: max = {most!r} is not an integer >= 1")
            if not _number(expected) or not math.isfinite(expected) or not 1 <= expected <= most:
                fail(f"{at}: expected = {expected!r} is not a mean number of iterations in 1..max ({most})")
        elif op.kind == "agent.branch":
            probs = op.attr("probabilities", ())
            if (not isinstance(probs, tuple) or len(probs) != len(op.regions)
                    or not all(_number(p) and math.isfinite(p) and p >= 0 for p in probs) or not sum(probs) > 0):
                fail(f"{at}: probabilities = {probs!r} are not {len(op.regions)} numbers >= 0 (one per arm) that sum "
                     "to more than 0")
