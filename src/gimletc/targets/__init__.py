"""Targets: what runs a plan's partitions, and the files that carry it.

- `partition`: partitions of an imported model (whole step, layer ranges,
  attention and FFN blocks, streamed-prefill chunks), which partition each
  exec.compute runs, and their ONNX subgraphs;
- `vendors`: the onnxruntime execution provider, IREE backend or vendor
  toolchain of each chip;
- `iree`: IREE import and compile per backend (llvm-cpu, cuda, rocm, vulkan-spirv);
- `dataflow`: the exec-level program as a verified MLIR module;
- `build`: all of the above for a plan, written next to it with digests.

Heavy modules are imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_artifacts", "build_plan_artifacts", "dataflow_module", "extract", "parse_partition"]


def __getattr__(name: str) -> Any:
    if name in ("build_artifacts", "build_plan_artifacts"):
        import gimletc.targets.build as build

        return getattr(build, name)
    if name == "dataflow_module":
        from gimletc.targets.dataflow import dataflow_module

        return dataflow_module
    if name in ("extract", "parse_partition"):
        import gimletc.targets.partition as partition

        return getattr(partition, name)
    raise AttributeError(name)
