"""Run a deployment plan for real on this machine: `run_plan(plan)`.

A run has four parts, each in its own module:

- `loader`: the plan's exec IR and artifacts, checked against their sha256, and per device a
  `DeviceSpec` (plain data) of the partitions it runs;
- `device`: a device's program (`DeviceProgram`): its partitions' executors (onnxruntime or
  IREE) and the KV caches it keeps between steps; prefill, greedy and speculative decode, split
  steps, draft / verify / rollback, KV conversions;
- `interpreter`: the exec ops in dataflow order, each on its resource's worker thread (a device,
  a CPU lane, a link channel); transfers as real copies; tools as Python callables; loops and
  branches; it records when each op ran;
- `report`: measured next to predicted per op and device, and each LLM call replayed on the
  unsplit model (the plan's reference artifact) with the same prompt: the largest absolute
  difference of the logits that chose each token, and whether the tokens match.

Executors (`executor=`): `local` (default) runs each device program on a thread of this
process; `process` runs each in a worker process of its own; `ray` in a Ray actor per device
(gimletc.runtime.ray_executor). With `process` and `ray` a worker can die alone: the run notices
(`WorkerLost`, within a poll interval of its next wait on that worker), starts a replacement,
and replays the request from its start (the KV caches died with the worker), at most `retries`
times; then it fails with one line naming the device, the op and why. A reported success is
always a complete run of the request on live workers, checked against the unsplit model.

Local workers are threads. onnxruntime and IREE release the GIL while a partition runs and numpy
copies large arrays without it, so workers and copies really run side by side (one core each:
sessions use one intra-op thread); threads share the process, so a "copy to another device" is a
copy into a fresh buffer, not a serialisation, which keeps the measured transfer what it is here:
a memory copy.

Partitions placed on a GPU run on that GPU where this machine has one and the plan has an IREE
binary for it (`backend="iree"`); otherwise every worker is a CPU stand-in for its device, and
the report says so per device.

Loading a plan executes no code from it: artifacts are ONNX and IREE files checked against their
sha256; tools are looked up by name in the mapping the caller passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gimletc.runtime.interpreter import Interpreter
from gimletc.runtime.loader import BACKENDS, CALLABLE_KINDS, LoadedPlan, load_tools
from gimletc.runtime.report import RunReport, build_report, reference_checks
from gimletc.runtime.loader import DeviceSpec
from gimletc.runtime.values import RunError, WorkerLost
from gimletc.runtime.workers import DeviceHandle, InProcessDevice, ProcessDevice

__all__ = ["BACKENDS", "CALLABLE_KINDS", "EXECUTORS", "LocalRuntime", "RunError", "RunReport", "load_tools", "run_plan"]

EXECUTORS = ("local", "process", "ray")


class LocalRuntime:
    """A plan loaded for running: its device programs, tools and request. `run()` executes one request."""

    def __init__(
        self,
        plan: Any,
        plan_dir: Path,
        *,
        backend: str = "onnxruntime",
        tools: Mapping[str, Callable[..., Any]] | None = None,
        inputs: Mapping[str, Any] | None = None,
        loops: Mapping[str, int] | None = None,
        pace_links: float = 0.0,
        check: bool = True,
        executor: str = "local",
        address: str | None = None,
        retries: int = 1,
        timeout_s: float = 600.0,
    ) -> None:
        if executor not in EXECUTORS:
            raise RunError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
        if retries < 0:
            raise RunError(f"retries must be 0 or more; got {retries}")
        self.loaded = LoadedPlan(plan, Path(plan_dir), backend)
        self.tools = dict(tools or {})
        self.loops = dict(loops or {})
        self.pace = float(pace_links)
        self.check = check
        self.executor, self.retries, self.timeout_s = executor, retries, timeout_s
        self.loaded.check_callables(self.tools)
        self.request = self.loaded.request(dict(inputs or {}))
        self.cluster = None
        if executor == "ray":
            from gimletc.runtime.ray_executor import RayCluster

            self.cluster = RayCluster(sorted(self.loaded.devices), address)
        self.devices: dict[str, DeviceHandle] = {}
        try:
            for d, spec in self.loaded.devices.items():
                self.devices[d] = self._start(spec)
        except BaseException:
            self.close()
            raise

    def _start(self, spec: DeviceSpec) -> DeviceHandle:
        """A worker for one device's program, of this runtime's executor."""
        if self.executor == "process":
            return ProcessDevice(spec, self.timeout_s)
        if self.executor == "ray":
            from gimletc.runtime.ray_executor import RayDevice

            return RayDevice(spec, self.timeout_s)
        return InProcessDevice(spec, dict(self.loaded.references))

    def run(self) -> RunReport:
        """Execute one request; a lost worker is replaced and the request replayed, up to `retries` times."""
        notes: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            try:
                for h in self.devices.values():
                    h.forget()
                it = Interpreter(self.loaded, self.devices, self.tools, self.request, self.loops, self.pace,
                                 fetch=self._fetch())
                wall = it.run()
                break
            except WorkerLost as e:
                if attempt > self.retries or e.device not in self.devices:
                    tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                    raise RunError(f"{e}; gave up after {tries}") from None
                notes.append(f"attempt {attempt}: {e}; replayed the request from its prefill on a new worker")
                self.devices[e.device].close()
                self.devices[e.device] = self._start(self.loaded.devices[e.device])
        ld = self.loaded
        if it.moved[0]:
            notes.append(f"{it.moved[0]} transfers ({it.moved[1]} B) moved actor to actor through Ray's object store; "
                         "the driver held only references to them")
        llms = reference_checks(it.book.calls, ld.references, ld.reference_data) if self.check else {}
        return build_report(plan=ld.plan.name, backend=ld.backend, graph=ld.graph, wall_ms=wall, records=it.records,
                            events=it.events, channels=it.channels, chip_of=ld.chip_of, llms=llms, outputs=it.outputs,
                            notes=notes + it.notes, pace=self.pace, executor=self.executor, attempts=attempt)

    def _fetch(self) -> Any:
        if self.executor == "ray":
            from gimletc.runtime.ray_executor import fetch

            return fetch
        return None

    def close(self) -> None:
        """Stop the workers (and a Ray cluster this runtime started)."""
        for h in self.devices.values():
            h.close()
        self.devices = {}
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def run_plan(
    plan: Any,
    *,
    plan_dir: str | Path | None = None,
    backend: str = "onnxruntime",
    tools: Mapping[str, Callable[..., Any]] | None = None,
    inputs: Mapping[str, Any] | None = None,
    loops: Mapping[str, int] | None = None,
    pace_links: float = 0.0,
    check: bool = True,
    executor: str = "local",
    address: str | None = None,
    retries: int = 1,
    timeout_s: float = 600.0,
) -> RunReport:
    """Execute one request of `plan` (a DeploymentPlan or a path to its JSON) on this machine.

    `backend`: `onnxruntime` (the ONNX subgraphs) or `iree` (the compiled binaries: the GPU's
    where this machine has that GPU, else llvm-cpu). `tools`: op name -> callable for tool,
    retrieval and code ops (called with the op's input values; returns its output). `inputs`:
    input op name -> token ids (default: fixed pseudo-random ids per input). `loops`: loop name ->
    iterations, branch name -> arm (default: round(expected), the most probable arm). `pace_links`:
    make each transfer last at least this multiple of its predicted time (0: as fast as memory
    copies here). `check`: replay each LLM call on the unsplit model and compare. `executor`:
    `local` (threads), `process` (a worker process per device) or `ray` (a Ray actor per device;
    `address`: an existing cluster, default a local one for this run). `retries`: how often a lost
    worker is replaced and the request replayed. `timeout_s`: longest wait for one device op."""
    from gimletc.plan import DeploymentPlan, load_plan

    if isinstance(plan, DeploymentPlan):
        base = Path(plan_dir) if plan_dir is not None else Path.cwd()
    else:
        path = Path(plan)
        plan = load_plan(path)
        base = Path(plan_dir) if plan_dir is not None else path.parent
    rt = LocalRuntime(plan, base, backend=backend, tools=tools, inputs=inputs, loops=loops, pace_links=pace_links,
                      check=check, executor=executor, address=address, retries=retries, timeout_s=timeout_s)
    try:
        return rt.run()
    finally:
        rt.close()
