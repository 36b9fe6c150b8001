"""Serving under load: a discrete-event simulation of many requests through a deployment.

`simulate(workload, arrivals, config)` and `simulate_plan(plan, arrivals, config)` are the
entry points; docs/serving.md has the full model and its validation. The simulator is split
along policy and mechanism, as Vidur's is:

- `gimletc.sim.loop`: the event loop (arrivals, the event heap, tasks flowing between
  resources: host CPU lanes, link channels, engines);
- `gimletc.sim.engines`: the engine mechanism (devices, iterations priced by the cost model,
  jobs moving on), with `gimletc.sim.decode_runs` running unchanging decode batches to their
  next finish as one event;
- `gimletc.sim.batching`: the batching-policy interface (`BatchPolicy.next_batch`), and
  `gimletc.sim.policies` the policies: vLLM's, SGLang's and TensorRT-LLM's schedulers, and the
  simulator's own prefill-first one; `default_policy` picks one per software stack;
- `gimletc.sim.kv`: KV-cache memory per device and admission;
- `gimletc.sim.workload` and `gimletc.sim.template`: what runs (engines, pools, links and
  how ops become tasks; each request's unrolled task graph);
- `gimletc.sim.results`: per-request outcomes, utilisation and energy (`LoadResult`);
- `gimletc.sim.config`: `EngineConfig`, `SimConfig`, `SimulationError`.

Why a plain event heap and not simpy: simpy runs each process as a Python generator and
every wait as an event object with callbacks, which costs several microseconds per event;
the heap here stores tuples and dispatches on small integers, and an engine iteration is one
event whatever the batch size (finishing sequences come off a heap keyed by the iteration
they finish in). A run of decode iterations over an unchanging batch is one event too: its
step times sum in closed form, and work arriving meanwhile cuts it after the iteration in
progress (the results equal the step-by-step simulation's; `SimConfig(fast_forward=False)`
runs step by step). `benchmarks/bench_serving.py` measures the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gimletc.cost import accounting
from gimletc.sim.arrivals import Arrivals
from gimletc.sim.config import EngineConfig, SimConfig, SimulationError
from gimletc.sim.loop import Simulator
from gimletc.sim.results import LoadResult
from gimletc.sim.template import loop_probability
from gimletc.sim.workload import (
    ACCEL,
    CPU,
    DECODE,
    DELAY,
    MARK,
    PREFILL,
    XFER,
    ZERO,
    EngineSpec,
    HostSpec,
    TaskSpec,
    Workload,
    plan_workload,
)

__all__ = [
    "ACCEL",
    "CPU",
    "DECODE",
    "DELAY",
    "MARK",
    "PREFILL",
    "XFER",
    "ZERO",
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
    "workload_of_plan",
]


def simulate(workload: Workload, arrivals: Arrivals, config: SimConfig | None = None, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> LoadResult:
    """Run `arrivals` through `workload`; deterministic for a given seed. `progress`, if given, hears
    every tenth of the arrivals of runs of 10,000 requests or more (it changes nothing simulated)."""
    if len(arrivals) == 0:
        raise SimulationError("no requests to simulate")
    return Simulator(workload, arrivals, config or SimConfig(), seed).run(progress)


def simulate_plan(plan: Any, arrivals: Arrivals, config: SimConfig | None = None, seed: int = 0,
                  cluster: Any = None, progress: Callable[[str], None] | None = None) -> LoadResult:
    """Simulate a `DeploymentPlan` (or a path to one) under `arrivals`.

    The plan's `ir` holds its exec-level graph; its `cluster` summary names the
    chips and gives each host's sockets and lanes (a `cluster`, if given, gives them instead)."""
    return simulate(workload_of_plan(plan, cluster), arrivals, config, seed, progress)


def workload_of_plan(plan: Any, cluster: Any = None, source: str | None = None) -> Workload:
    """The workload `simulate_plan` runs for `plan` (a DeploymentPlan or a path to one), once what the
    simulator relies on in it is checked (`gimletc.sim.plancheck`); errors name `source` (default:
    the path, or the plan's name)."""
    from gimletc.hardware import get_chip
    from gimletc.ir import parse_graph
    from gimletc.plan import DeploymentPlan, load_plan
    from gimletc.sim.plancheck import check_plan

    p: DeploymentPlan = plan if isinstance(plan, DeploymentPlan) else load_plan(plan)
    src = source or (f"plan {p.name}" if isinstance(plan, DeploymentPlan) else str(plan))
    if not p.ir.strip():
        raise SimulationError(f"{src}: has no compiled IR (field `ir`); recompile it with this gimletc")
    graph = parse_graph(p.ir)
    check_plan(p, graph, src)
    devices = {d.id: (d.node, get_chip(d.chip), d.role) for d in p.cluster.devices}
    sockets = {h: s.sockets for h, s in p.cluster.hosts.items()}
    lanes = {h: s.lanes for h, s in p.cluster.hosts.items()}
    if cluster is not None:
        for d in cluster.devices():
            if d.role == "host":
                sockets[d.id], lanes[d.id] = accounting.units(cluster, d), accounting.lanes(cluster, d)
    stack = str((p.inputs.get("options") or {}).get("stack") or "reference")
    return plan_workload(graph, devices, p.name, sockets, stack, lanes)
