"""Per-target executables for a compiled plan, written next to it with their digests.

For every exec.compute that runs a model imported from ONNX, `build_artifacts`
extracts the ONNX subgraph of the partition it runs (the whole step for a
prefill or decode, a layer group for a streamed prefill chunk, or the
compute's `partition`), names the onnxruntime execution provider of its chip's
vendor, compiles it with IREE where IREE has a backend for the chip (plus
`llvm-cpu`, so the plan also runs on this machine's CPU), and marks it for
the vendor's toolchain on SRAM accelerators. It also copies each model whole
(the unsplit reference the runtime checks the split against), a draft model
for each speculative decode, and writes the dataflow as an MLIR module. A
model with seeded weights (`gimletc.importers.seeded`: generated where it
runs) gets no IREE binary by default, and asking for one is an error: IREE
compiles a model's weights into its binary.

Layout under `out_dir` (paths in the artifact dicts are relative to `relative_to`,
the plan's folder):

    onnx/<model>.<partition>[.<toolchain>].onnx
    iree/<model>.<partition>.<backend>.vmfb
    reference/<model>.onnx
    dataflow.mlir

Artifact dicts (sorted, deterministic): `kind` (onnx | iree | onnx-reference |
mlir-dataflow), `path`, `sha256`, and for executables `op`, `device`, `chip`,
`model`, `partition`, `inputs`, `outputs`, with `ep` (onnx), `toolchain` (SRAM
chips), `backend`, `driver`, `flags`, `entry` (iree) and `role` = draft for a
draft model. Loading the list executes nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import onnx

from gimletc._io import staging_folder, write_atomic
from gimletc.errors import GimletError
from gimletc.hardware import get_chip
from gimletc.hardware.resources import device_of
from gimletc.hardware.schema import Chip
from gimletc.models.onnx import ImportedModel, load_onnx
from gimletc.importers.seeded import seeded_tensors
from gimletc.ir import Graph, parse_graph
from gimletc.ir.names import call_of_decode
import gimletc.targets.iree as iree_mod
from gimletc.targets.partition import MODEL_COMPUTES, Subgraph, extract, graph_partitions, whole
from gimletc.targets.vendors import execution_provider, iree_backend, toolchain

__all__ = ["ArtifactError", "build_artifacts", "build_plan_artifacts", "model_computes", "resolve_model_path"]


class ArtifactError(GimletError):
    """An artifact cannot be built or found: names the op, the model and the file."""


def resolve_model_path(ref: str, base: Path | None = None) -> Path | None:
    """The ONNX file a compute's `model` attribute names, or None for a catalog model."""
    if not str(ref).endswith(".onnx"):
        return None
    p = Path(ref)
    if not p.is_absolute() and base is not None and not p.exists() and (base / p).exists():
        p = base / p
    return p


def model_computes(graph: Graph) -> list[Any]:
    """Every exec.compute that runs a partition of a model, nested ones included, in graph order."""
    return [op for op, _ in graph.walk()
            if op.kind == "exec.compute" and op.attr("kind_of") in MODEL_COMPUTES and op.attr("model")]


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _marked(sub: Subgraph, chain: str) -> bytes:
    """The subgraph's bytes with the vendor toolchain that should compile it recorded in its metadata."""
    m = onnx.ModelProto()
    m.CopyFrom(sub.proto)
    m.metadata_props.add(key="gimletc.toolchain", value=chain)
    return m.SerializeToString(deterministic=True)


class _Builder:
    """Writes artifacts under `out_dir` (a staging folder), recording their paths as they will be once
    the staging folder's contents are moved into `final`."""

    def __init__(self, out_dir: Path, rel: Path, backends: tuple[str, ...] | None, cache_dir: Path | None,
                 cpu: str, model_base: Path | None, final: Path | None = None):
        self.out, self.rel, self.backends, self.cache, self.cpu = out_dir, rel, backends, cache_dir, cpu
        self.final = final if final is not None else out_dir
        self.model_base = model_base
        self.artifacts: list[dict[str, Any]] = []
        self.references: dict[str, dict[str, Any]] = {}

    def relpath(self, p: Path) -> str:
        where = self.final / p.relative_to(self.out)
        return Path(os.path.relpath(where.resolve(), self.rel.resolve())).as_posix()

    def imported(self, ref: str, op: str) -> ImportedModel | None:
        path = resolve_model_path(ref, self.model_base)
        if path is None:
            return None
        if not path.is_file():
            raise ArtifactError(f"op {op}: model file {ref} does not exist")
        return load_onnx(path)

    def reference(self, im: ImportedModel) -> None:
        if im.sha256 in self.references or im.path is None:
            return
        data = im.path.read_bytes()
        dest = self.out / "reference" / f"{_slug(im.name)}.onnx"
        _write_bytes(dest, data)
        a = {"kind": "onnx-reference", "model": im.name, "partition": "all", "path": self.relpath(dest),
             "sha256": _sha(data), "inputs": [i.name for i in im.proto.graph.input],
             "outputs": [o.name for o in im.proto.graph.output]}
        self.references[im.sha256] = a
        self.artifacts.append(a)

    def executables(self, im: ImportedModel, op: Any, chip: Chip, device: str, part: Any, role: str | None = None,
                    extra: Mapping[str, Any] | None = None) -> None:
        sub = extract(im, part)
        chain = toolchain(chip)
        data = _marked(sub, chain) if chain else sub.serialized()
        stem = f"{_slug(im.name)}.{part.slug}" + (f".{_slug(chain.split()[0])}" if chain else "")
        dest = self.out / "onnx" / f"{stem}.onnx"
        _write_bytes(dest, data)
        common = {"op": op.name, "device": device, "chip": chip.name, "model": im.name, "partition": str(part),
                  "inputs": list(sub.inputs), "outputs": list(sub.outputs), **(extra or {})}
        if role:
            common["role"] = role
        a: dict[str, Any] = {"kind": "onnx", **common, "path": self.relpath(dest), "sha256": _sha(data),
                             "ep": execution_provider(chip), "weight_bytes": sub.weight_bytes}
        if chain:
            a["toolchain"] = chain
        self.artifacts.append(a)
        wanted = self.backends
        if seeded_tensors(sub.proto):  # weights generated where the model runs: IREE compiles weights in
            if wanted:
                raise ArtifactError(f"op {op.name}: model {im.name} has seeded weights (generated where it runs); "
                                    "IREE compiles a model's weights into its binary: build it with --no-iree")
            wanted = ()
        if wanted is None:
            native = iree_backend(chip)
            wanted = tuple(dict.fromkeys([b for b in (native, "llvm-cpu") if b]))
        for backend in wanted:
            vm = self.out / "iree" / f"{_slug(im.name)}.{part.slug}.{backend}.vmfb"
            comp = iree_mod.compile_onnx(sub.serialized(), backend, vm, name=f"{im.name} {part} (op {op.name})",
                                         entry=sub.proto.graph.name, chip=chip, cache_dir=self.cache, cpu=self.cpu)
            self.artifacts.append({
                "kind": "iree", **common, "backend": backend, "driver": iree_mod.DRIVERS[backend],
                "flags": list(comp.flags), "entry": comp.entry, "path": self.relpath(vm), "sha256": _sha(vm.read_bytes()),
            })


def _chips(device_chips: Mapping[str, str]) -> dict[str, Chip]:
    return {d: get_chip(c) for d, c in device_chips.items()}


def build_plan_artifacts(
    plan: Any,
    out_dir: str | Path,
    *,
    plan_dir: str | Path | None = None,
    backends: Iterable[str] | None = None,
    drafts: Mapping[str, tuple[str, int]] | None = None,
    graph: Graph | None = None,
    cache_dir: str | Path | None = None,
    cpu: str = "host",
    model_base: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Build the artifacts of a `DeploymentPlan` into `out_dir`; paths relative to `plan_dir` (default: out_dir's parent).

    `backends`: IREE backends to compile every partition for; None (default) means each chip's own
    backend plus `llvm-cpu`; an empty tuple compiles nothing with IREE. `drafts` maps an LLM call
    to (draft ONNX path, tokens drafted per step) for speculative decoding (exec-level plans do not
    carry the draft). `model_base` resolves relative model paths (default: the plan's folder).

    Everything is checked before anything is written (backends, drafts, the folders), and the
    artifacts are built in a staging folder beside `out_dir` whose files are moved into `out_dir`
    once all are built: a build that fails leaves nothing new behind."""
    out = Path(out_dir)
    rel = Path(plan_dir) if plan_dir is not None else out.parent
    g = graph if graph is not None else parse_graph(plan.ir)
    base = Path(model_base) if model_base is not None else rel
    chips = _chips({d.id: d.chip for d in plan.cluster.devices})
    wanted = tuple(backends) if backends is not None else None
    for backend in wanted or ():
        if backend not in iree_mod.BACKENDS:
            raise ArtifactError(f"unknown IREE backend {backend!r}; choose one of {', '.join(iree_mod.BACKENDS)}")
    drafts = dict(drafts or {})
    for llm, (ref, k) in drafts.items():
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ArtifactError(f"draft for {llm}: draft_k = {k!r} tokens drafted per step; it must be an integer >= 1")
        path = resolve_model_path(str(ref), base)
        if path is None:
            raise ArtifactError(f"draft for {llm}: {ref} is not an ONNX file (.onnx); only imported models run")
        if not path.is_file():
            raise ArtifactError(f"draft for {llm}: model file {ref} does not exist" if not path.exists()
                                else f"draft for {llm}: {ref} is not a regular file")
    stage = staging_folder(out, "artifacts folder")
    try:
        arts = _build(plan, g, stage, out, rel, base, chips, wanted, drafts, cache_dir, cpu)
        _move_into(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return arts


def _move_into(stage: Path, out: Path) -> None:
    """Move every file built in `stage` to the same place under `out` (replacing an earlier build's)."""
    for src in sorted(stage.rglob("*")):
        if src.is_dir():
            continue
        dest = out / src.relative_to(stage)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)
        except OSError as e:
            raise ArtifactError(f"artifacts folder {out}: cannot put {dest} in place: {e.strerror or e}") from None


def _build(plan: Any, g: Graph, stage: Path, out: Path, rel: Path, base: Path, chips: dict[str, Chip],
           wanted: tuple[str, ...] | None, drafts: dict[str, tuple[str, int]], cache_dir: str | Path | None,
           cpu: str) -> list[dict[str, Any]]:
    b = _Builder(stage, rel, wanted, Path(cache_dir) if cache_dir is not None else None, cpu, base, final=out)
    def model_of(op: Any) -> Any:
        im = b.imported(str(op.attr("model")), op.name)
        return im.model if im is not None else None

    parts = graph_partitions(g, model_of)
    decodes = {str(op.attr("llm") or call_of_decode(op.name) or op.name) for op in model_computes(g)
               if op.attr("kind_of") == "model.decode" and parts.get(op.name) is not None and parts[op.name].is_whole}
    if set(drafts) - decodes:
        raise ArtifactError(f"--draft names LLM call(s) {', '.join(sorted(set(drafts) - decodes))} with no whole decode "
                            f"in the plan (calls with one: {', '.join(sorted(decodes)) or 'none'})")
    for op in model_computes(g):
        if op.name not in parts:
            continue  # a catalog model: nothing to build
        im = b.imported(str(op.attr("model")), op.name)
        device = str(op.attr("device"))
        chip = chips.get(device_of(device))
        if chip is None:
            raise ArtifactError(f"op {op.name}: device {device} is not in the plan's cluster")
        b.reference(im)
        part = parts[op.name]
        if part is not None:
            b.executables(im, op, chip, device, part)
        if op.attr("kind_of") == "model.decode" and part is not None and part.is_whole:
            llm = str(op.attr("llm") or call_of_decode(op.name) or op.name)
            spec = drafts.pop(llm, None)
            if spec is not None:
                d = b.imported(str(spec[0]), op.name)
                if d is None:
                    raise ArtifactError(f"op {op.name}: draft model {spec[0]} is not an ONNX file; only imported models run")
                if d.model.vocab != im.model.vocab:
                    raise ArtifactError(
                        f"op {op.name}: draft {d.name} has a vocabulary of {d.model.vocab}, target {im.name} of {im.model.vocab}"
                    )
                b.reference(d)
                b.executables(d, op, chip, device, whole(d.layers), role="draft", extra={"draft_k": int(spec[1])})
    from gimletc.targets.dataflow import dataflow_module

    text = dataflow_module(g, b.artifacts, attrs={"gimlet.plan": plan.name, "gimlet.digest": plan.digest})
    dest = stage / "dataflow.mlir"
    write_atomic(dest, text)
    b.artifacts.append({"kind": "mlir-dataflow", "path": b.relpath(dest), "sha256": _sha(text.encode())})
    return sorted(b.artifacts, key=lambda a: (a["kind"], a.get("op", ""), a.get("role", ""), a.get("backend", ""), a["path"]))


def build_artifacts(result: Any, out_dir: str | Path, backends: Iterable[str] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Artifacts of a `CompileResult` (see `build_plan_artifacts` for the options); the caller stores
    them in `result.plan.artifacts`."""
    return build_plan_artifacts(result.plan, out_dir, backends=backends, graph=result.graph, **kwargs)
