"""Loading a plan for running: its exec IR, its artifacts (checked against their sha256), and
what each device's worker needs to run its partitions.

Nothing here executes code from the plan: the IR is parsed and verified, artifacts are read as
bytes and compared with their digests, ONNX files are parsed as protobufs. `load_tools` is the
one place that imports user code, and only the module the caller names.

The result, `LoadedPlan`, is what the interpreter walks; its `devices` are one `DeviceSpec`
per device program: plain data (artifact bytes included), so a worker thread, a worker process
or a Ray actor on another machine builds the same executors from it.
"""

from __future__ import annotations

import functools
import hashlib
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gimletc._io import brief, brief_text
from gimletc.errors import GimletError
from gimletc.hardware import get_chip
from gimletc.hardware.resources import device_of
from gimletc.hardware.schema import Chip
from gimletc.ir import Op, parse_graph, verify
from gimletc.models.onnx import ImportedModel, load_onnx
from gimletc.runtime.values import RunError
from gimletc.targets.partition import MODEL_COMPUTES, Partition, graph_partitions, parse_partition

__all__ = ["BACKENDS", "CALLABLE_KINDS", "DeviceSpec", "LoadedPlan", "PartSpec", "load_tools", "onnx_model"]

BACKENDS = ("onnxruntime", "iree")
CALLABLE_KINDS = ("agent.tool", "agent.retrieve", "agent.code")
_MICRO = re.compile(r"\.m(\d+)$")


@dataclass(frozen=True)
class PartSpec:
    """One partition a device runs: the op, the model's unsplit ONNX (for its tensor names and
    architecture) and the candidate executables (artifact dict, bytes) for the run's backend."""

    op: str
    role: str  # "" for the op's own model, "draft" for a speculative decode's draft
    model: str
    partition: str
    reference: bytes
    artifacts: tuple[tuple[dict[str, Any], bytes], ...]
    draft_k: int | None = None


@dataclass(frozen=True)
class DeviceSpec:
    """Everything one device's worker needs to run its partitions (picklable)."""

    device: str
    chip: str
    backend: str
    parts: tuple[PartSpec, ...]


def onnx_model(data: bytes, a: Mapping[str, Any]) -> ImportedModel:
    """An artifact's bytes as an imported ONNX model (parsed, never executed)."""
    import onnx

    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001
        raise RunError(f"artifact {a['path']}: not an ONNX model ({e})") from None
    return load_onnx(proto, name=str(a["model"]))


class LoadedPlan:
    """A plan's exec IR and artifacts, checked and indexed; builds no executor itself."""

    def __init__(self, plan: Any, plan_dir: Path, backend: str) -> None:
        if backend not in BACKENDS:
            raise RunError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.plan, self.dir, self.backend = plan, Path(plan_dir), backend
        self.root = (self.dir / (getattr(plan, "artifact_root", None) or ".")).resolve()
        if not plan.ir.strip():
            raise RunError(f"plan {plan.name} has no exec IR")
        try:
            self.graph = verify(parse_graph(plan.ir))
        except GimletError as e:
            raise RunError(f"plan {plan.name}: its exec IR does not load: {e}") from None
        self.chips: dict[str, Chip] = {d.id: get_chip(d.chip) for d in plan.cluster.devices}
        self.ops: dict[str, Op] = {op.name: op for op, _ in self.graph.walk()}
        self.producer: dict[str, Op] = {v.name: op for op, _ in self.graph.walk() for v in op.results}
        self._artifacts()
        self.partitions: dict[str, Partition | None] = graph_partitions(self.graph, self._model_of)
        self.devices: dict[str, DeviceSpec] = self._device_specs()
        self.rows: dict[str, tuple[int, int]] = self._micro_rows()

    # ---- artifacts -------------------------------------------------------------------------------
    def read(self, a: Mapping[str, Any]) -> bytes:
        """An artifact's bytes, checked against its sha256 in the plan, from inside the plan's artifact root only."""
        p = (self.dir / str(a["path"])).resolve()  # symlinks resolved: a link out of the root is out
        if not p.is_relative_to(self.root):
            raise RunError(f"artifact {a['path']} (op {a.get('op', '-')}) resolves to {p}, outside the plan's artifact root "
                           f"{self.root}; refusing to read it")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise RunError(f"artifact {a['path']} (op {a.get('op', '-')}): cannot read: {e.strerror or e}; "
                           "run `gimletc build` on the plan first") from None
        if hashlib.sha256(data).hexdigest() != a.get("sha256"):
            raise RunError(f"artifact {a['path']} does not match its sha256 in the plan; rebuild the artifacts")
        return data

    def _artifacts(self) -> None:
        self.by_op: dict[str, list[dict[str, Any]]] = {}
        self.references: dict[str, ImportedModel] = {}
        self.reference_data: dict[str, bytes] = {}
        for a in self.plan.artifacts:
            if a.get("kind") == "onnx-reference":
                data = self.read(a)
                self.references[str(a["model"])] = onnx_model(data, a)
                self.reference_data[str(a["model"])] = data
            elif a.get("op"):
                self.by_op.setdefault(str(a["op"]), []).append(dict(a))
        for op, _ in self.graph.walk():
            if op.kind == "exec.compute" and op.attr("kind_of") in MODEL_COMPUTES and not self.by_op.get(op.name):
                model = str(op.attr("model"))
                if model.endswith(".onnx") and not self.plan.artifacts:
                    raise RunError(f"plan {self.plan.name} has no artifacts; run `gimletc build` on it first")
                if not model.endswith(".onnx"):
                    raise RunError(
                        f"op {op.name} runs model {model}, which has no executable: `gimletc run` executes models "
                        "imported from ONNX (give the agent graph an .onnx model path)"
                    )

    def reference_for(self, model_name: str, op: Op) -> ImportedModel:
        im = self.references.get(model_name)
        if im is None:
            raise RunError(f"op {op.name}: the plan has no reference artifact for model {model_name}")
        return im

    def _model_of(self, op: Op) -> Any:
        """The architecture of the model `op` runs (from its artifacts, else its ONNX file)."""
        model = next((a["model"] for a in self.by_op.get(op.name, []) if a.get("role") != "draft"), None)
        if model is not None:
            return self.reference_for(str(model), op).model
        from gimletc.models import get_model

        return get_model(str(op.attr("model")))

    # ---- what each device runs -------------------------------------------------------------------
    def chip_of(self, resource: str) -> Chip:
        return self.chips[device_of(resource)]

    def _candidates(self, op: Op, arts: list[dict[str, Any]], role: str) -> tuple[tuple[dict[str, Any], bytes], ...]:
        mine = [a for a in arts if a.get("role", "") == role]
        if not mine:
            raise RunError(f"op {op.name}: no artifact in the plan; run `gimletc build` on it first")
        if self.backend == "iree":
            iree = [a for a in mine if a["kind"] == "iree"]
            if not any(a["backend"] == "llvm-cpu" or a["backend"] in ("cuda", "rocm") for a in iree):
                raise RunError(f"op {op.name}: backend iree needs an llvm-cpu (or this machine's GPU) binary; "
                               "build the plan's artifacts with IREE")
            return tuple((a, self.read(a)) for a in iree)
        onnx_art = next((a for a in mine if a["kind"] == "onnx"), None)
        if onnx_art is None:
            raise RunError(f"op {op.name}: no ONNX artifact in the plan")
        return ((onnx_art, self.read(onnx_art)),)

    def _device_specs(self) -> dict[str, DeviceSpec]:
        parts: dict[str, list[PartSpec]] = {}
        for name, part in self.partitions.items():
            if part is None:
                continue
            op = self.ops[name]
            arts = self.by_op.get(name, [])
            main = [a for a in arts if a.get("role") != "draft"]
            if not main:
                raise RunError(f"op {name} ({op.attr('model')}) has no artifacts in the plan; run `gimletc build` on it first")
            model = str(main[0]["model"])
            im = self.reference_for(model, op)
            if parse_partition(str(main[0]["partition"]), im.layers) != part:
                raise RunError(f"op {name}: its artifact runs partition {main[0]['partition']}, but the op runs {part}")
            device = str(op.attr("device"))
            mine = parts.setdefault(device, [])
            mine.append(PartSpec(name, "", model, str(part), self.reference_data[model], self._candidates(op, arts, "")))
            draft = [a for a in arts if a.get("role") == "draft"]
            if draft:
                dmodel = str(draft[0]["model"])
                self.reference_for(dmodel, op)
                k = draft[0].get("draft_k", 4)
                if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                    raise RunError(f"artifact {draft[0]['path']} (op {name}): draft_k = {k!r} tokens drafted per step; "
                                   "it must be an integer >= 1 (rebuild with `gimletc build --draft LLM=DRAFT.onnx:K`)")
                mine.append(PartSpec(name, "draft", dmodel, str(draft[0]["partition"]), self.reference_data[dmodel],
                                     self._candidates(op, arts, "draft"), k))
        for op, _ in self.graph.walk():  # a device that only converts KV caches still has a program
            if op.kind == "exec.convert":
                parts.setdefault(str(op.attr("device")), [])
        return {d: DeviceSpec(d, self.chip_of(d).name, self.backend, tuple(ps)) for d, ps in sorted(parts.items())}

    def _micro_rows(self) -> dict[str, tuple[int, int]]:
        """(first row, rows) of the batch each model step op works on: micro-batch j of an attn-ffn decode."""
        sizes: dict[tuple[str, int], int] = {}
        index: dict[str, int] = {}
        for name in self.partitions:
            op = self.ops[name]
            j = op.attr("microbatch")
            if j is None:
                m = _MICRO.search(name)
                j = int(m.group(1)) if m and op.attr("kind_of") in ("model.attention", "model.ffn") else None
            if j is not None:
                index[name] = int(j)
                sizes[(str(op.attr("llm")), int(j))] = int(op.attr("batch", 1))
        rows: dict[str, tuple[int, int]] = {}
        for name, j in index.items():
            llm = str(self.ops[name].attr("llm"))
            offset = sum(sizes.get((llm, i), 0) for i in range(j))
            rows[name] = (offset, sizes[(llm, j)])
        return rows

    # ---- the request -----------------------------------------------------------------------------
    def check_callables(self, tools: Mapping[str, Callable[..., Any]]) -> None:
        missing = []
        for op, _ in self.graph.walk():
            if op.kind == "exec.compute" and op.attr("kind_of") in CALLABLE_KINDS:
                if str(op.attr("of")) not in tools:
                    missing.append(f"{op.attr('of')} ({op.attr('kind_of')})")
        if missing:
            raise RunError(
                f"no callable registered for {', '.join(missing)}: pass tools={{op name: callable}} "
                "(or `gimletc run --tools module:registry`)"
            )

    def request(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The request's input token ids, made before the run starts: the caller's, else fixed pseudo-random ids.
        (A model reads ids modulo its vocabulary, `gimletc.runtime.calls`.) An input the plan does not
        have, or ids that are not 64-bit integers, is a RunError naming it."""
        names = {str(op.attr("of")) for op, _ in self.graph.walk()
                 if op.kind == "exec.compute" and op.attr("kind_of") == "agent.input"}
        for name in sorted(set(inputs) - names, key=str):
            raise RunError(f"inputs: plan {self.plan.name} has no input named {name!r} (its inputs: "
                           f"{', '.join(sorted(names)) or 'none'})")
        out = {}
        for op, _ in self.graph.walk():
            if op.kind == "exec.compute" and op.attr("kind_of") == "agent.input":
                name = str(op.attr("of"))
                if name in inputs:
                    try:
                        out[op.name] = np.asarray(inputs[name], dtype=np.int64).reshape(-1)
                    except (TypeError, ValueError, OverflowError):
                        raise RunError(f"inputs: {name}: expected a list of token ids (64-bit integers); got "
                                       f"{brief(inputs[name])}") from None
                else:
                    rng = np.random.default_rng(zlib.crc32(name.encode()))
                    out[op.name] = rng.integers(0, 2**31 - 1, size=int(op.attr("tokens", 0)), dtype=np.int64)
        return out


def load_tools(spec: str) -> dict[str, Callable[..., Any]]:
    """Import `module:attribute` or `path/to/file.py:attribute`: a mapping of op name to callable,
    or a function returning one.

    This runs the user's module: the caller asks for it by naming it (`gimletc run --tools`);
    nothing in a plan ever names code to run. Whatever the module does wrong (an exception at
    import, sys.exit, a factory that raises, a tool that raises when the plan calls it) is a
    one-line RunError naming `spec`, the tool and the exception."""
    import importlib
    import importlib.util

    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise RunError(f"--tools takes MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE (a dict of op name -> callable); got {spec!r}")
    what = f"importing {target}"
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise RunError(f"--tools {spec}: {target} does not exist" if not path.exists()
                               else f"--tools {spec}: {target} is not a regular file")
            mod_spec = importlib.util.spec_from_file_location(f"gimletc_tools_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None:
                raise RunError(f"--tools {spec}: {target} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        if not hasattr(module, attr):
            raise RunError(f"--tools {spec}: module {target} has no attribute {attr!r}")
        obj = getattr(module, attr)
        if callable(obj) and not isinstance(obj, Mapping):
            what = f"calling {attr}() of {target}"
            obj = obj()
    except GimletError:
        raise
    except SystemExit as e:
        raise RunError(f"--tools {spec}: {what} called sys.exit({brief(e.code)})") from None
    except (Exception, GeneratorExit) as e:  # noqa: BLE001 - the user's module: anything it raises, in one line
        raise RunError(f"--tools {spec}: {what} raised {type(e).__name__}: {brief_text(str(e))}") from e
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and callable(f) for k, f in obj.items()):
        raise RunError(f"--tools {spec}: expected a mapping of op name to callable; got {brief(obj)}")
    return {name: _tool(spec, name, fn) for name, fn in obj.items()}


def _tool(spec: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, whose failures (sys.exit included: it runs on a worker thread) name the module and the tool."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GimletError:
            raise
        except SystemExit as e:
            raise RunError(f"--tools {spec}: tool {name!r} called sys.exit({brief(e.code)})") from None
        except Exception as e:  # noqa: BLE001 - the user's tool: anything it raises, in one line
            raise RunError(f"--tools {spec}: tool {name!r} raised {type(e).__name__}: {brief_text(str(e))}") from e

    return call
