"""Targets: what runs a plan's partitions, and the files that carry it.

- `partition`: partitions of an imported model (whole step, layer ranges,
  attention and FFN blocks, streamed-prefill chunks) and their ONNX subgraphs;
- `vendors`: the onnxruntime execution provider, IREE backend or vendor
  toolchain of each chip;
- `iree`: IREE import and compile per backend (llvm-cpu, cuda, rocm, vulkan-spirv);
- `dataflow`: the exec-level program as a verified MLIR module;
- `split`: rewrite a compiled exec graph so an LLM call's phases run as
  partitions on several devices (pipeline stages, attention/FFN);
- `build`: all of the above for a plan, written next to it with digests.

Heavy modules are imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_artifacts", "build_plan_artifacts", "dataflow_module", "extract", "parse_partition", "split_llm"]


def __getattr__(name: str) -> Any:
    if name in ("build_artifacts", "build_plan_artifacts"):
        from gimletc.targets import build

        return getattr(build, name)
    if name == "dataflow_module":
        from gimletc.targets.dataflow import dataflow_module

        return dataflow_module
    if name in ("extract", "parse_partition"):
        from gimletc.targets import partition

        return getattr(partition, name)
    if name == "split_llm":
        from gimletc.targets.split import split_llm

        return split_llm
    raise AttributeError(name)
