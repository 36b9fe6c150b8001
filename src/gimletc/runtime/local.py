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

Workers are threads. onnxruntime and IREE release the GIL while a partition runs and numpy
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
from gimletc.runtime.values import RunError
from gimletc.runtime.workers import DeviceHandle, InProcessDevice

__all__ = ["BACKENDS", "CALLABLE_KINDS", "LocalRuntime", "RunError", "RunReport", "load_tools", "run_plan"]


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
    ) -> None:
        self.loaded = LoadedPlan(plan, Path(plan_dir), backend)
        self.tools = dict(tools or {})
        self.loops = dict(loops or {})
        self.pace = float(pace_links)
        self.check = check
        models = dict(self.loaded.references)
        self.devices: dict[str, DeviceHandle] = {d: InProcessDevice(s, models) for d, s in self.loaded.devices.items()}
        self.loaded.check_callables(self.tools)
        self.request = self.loaded.request(dict(inputs or {}))

    def run(self) -> RunReport:
        for h in self.devices.values():
            h.forget()
        it = Interpreter(self.loaded, self.devices, self.tools, self.request, self.loops, self.pace)
        wall = it.run()
        ld = self.loaded
        llms = reference_checks(it.book.calls, ld.references, ld.reference_data) if self.check else {}
        return build_report(plan=ld.plan.name, backend=ld.backend, graph=ld.graph, wall_ms=wall, records=it.records,
                            events=it.events, channels=it.channels, chip_of=ld.chip_of, llms=llms, outputs=it.outputs,
                            notes=it.notes, pace=self.pace)


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
) -> RunReport:
    """Execute one request of `plan` (a DeploymentPlan or a path to its JSON) on this machine.

    `backend`: `onnxruntime` (the ONNX subgraphs) or `iree` (the compiled binaries: the GPU's
    where this machine has that GPU, else llvm-cpu). `tools`: op name -> callable for tool,
    retrieval and code ops (called with the op's input values; returns its output). `inputs`:
    input op name -> token ids (default: fixed pseudo-random ids per input). `loops`: loop name ->
    iterations, branch name -> arm (default: round(expected), the most probable arm). `pace_links`:
    make each transfer last at least this multiple of its predicted time (0: as fast as memory
    copies here). `check`: replay each LLM call on the unsplit model and compare."""
    from gimletc.plan import DeploymentPlan, load_plan

    if isinstance(plan, DeploymentPlan):
        base = Path(plan_dir) if plan_dir is not None else Path.cwd()
    else:
        path = Path(plan)
        plan = load_plan(path)
        base = Path(plan_dir) if plan_dir is not None else path.parent
    rt = LocalRuntime(plan, base, backend=backend, tools=tools, inputs=inputs, loops=loops, pace_links=pace_links, check=check)
    return rt.run()
