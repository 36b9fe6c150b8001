"""What every engine renderer shares: the engine versions the flags were read from, formats, ports,
hosts, and the launch command of one engine group.

Versions: the flags of each renderer are those of one release, read from its source (the goldens in
tests/golden/deploy/ cite file and version): vLLM 0.31.0, SGLang 0.5.21 (with sglang-router 0.3.2
for prefill/decode routing) and Dynamo 1.6.1, whose `ai-dynamo[vllm]` and `ai-dynamo[sglang]` extras
pin exactly those vLLM and SGLang versions.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gimletc.deploy.description import Deployment, EngineGroup, hf_repo
from gimletc.hardware import get_chip
from gimletc.models import get_model

__all__ = ["VERSIONS", "Launch", "Rendered", "bash_script", "compact_json", "gpu_env", "kv_cache_dtype", "model_path",
           "pool_of", "pools", "quantization", "served_name"]

VERSIONS = {"vllm": "0.31.0", "sglang": "0.5.21", "sglang-router": "0.3.2", "dynamo": "1.6.1"}
BASE_PORT = 8000  # the router / frontend; engines take the ports after it


@dataclass(frozen=True)
class Launch:
    """One engine group's process: where it runs, its environment and its command line."""

    group: str
    node: str | None
    env: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]

    def command(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        return (env + " " if env else "") + shlex.join(self.argv)


@dataclass
class Rendered:
    """What a renderer writes: files (path relative to the output folder -> text), which of them are
    executable, each group's launch, the endpoint each LLM call is served at, and notes."""

    files: dict[str, str] = field(default_factory=dict)
    executables: set[str] = field(default_factory=set)
    launches: list[Launch] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def add_server(r: Rendered, g: EngineGroup, argv: list[str], env: Sequence[tuple[str, str]], title: str,
               where: str, folder: str, notes: list[str]) -> None:
    """One engine server's launch script: `title` (the engine and its version) heads it with the group's
    role, model, calls, where it runs and the notes; written to `folder/<group>.sh`."""
    launch = Launch(g.name, g.node, tuple(env), tuple(argv))
    r.launches.append(launch)
    header = [f"{title}: {g.name} ({g.role}) serving {g.base_model} for call(s) {', '.join(g.calls)}",
              f"run on {where}; {g.parallel.chips}x {g.chip}", *[f"note: {n}" for n in (*g.notes, *notes)]]
    path = f"{folder}/{g.name}.sh"
    r.files[path] = bash_script(launch, header)
    r.executables.add(path)
    r.notes += notes


def served_name(g: EngineGroup) -> str:
    """The name an engine serves its model under (requests name it): the catalog model's name."""
    return g.base_model


def model_path(g: EngineGroup, notes: list[str]) -> str:
    """What the engine loads: the Hugging Face repository the catalog model was read from, else its name."""
    repo = hf_repo(g.model)
    if repo is None:
        notes.append(f"group {g.name}: model {g.base_model} names no Hugging Face repository in the catalog; "
                     "replace it in the command with the checkpoint to serve")
        return g.base_model
    return repo


def _choices(g: EngineGroup) -> tuple[Any, Any]:
    """(the model as deployed, the catalog model it derives from)."""
    m = get_model(g.model)
    base = get_model(g.base_model)
    return m, base


# gimletc weight formats that an engine quantizes to when it loads an unquantized checkpoint.
_ONLINE_QUANT = {"vllm": {"fp8": "fp8"}, "sglang": {"fp8": "fp8"}}
# gimletc KV-cache formats -> the engine's --kv-cache-dtype value.
_KV = {"vllm": {"fp8": "fp8", "bf16": "bfloat16", "fp16": "float16", "nvfp4": "nvfp4"},
       "sglang": {"fp8": "fp8_e4m3", "bf16": "bfloat16", "nvfp4": "nvfp4"}}


def quantization(engine: str, g: EngineGroup, notes: list[str]) -> str | None:
    """The engine's --quantization for the group's weight format, or None (the checkpoint's own)."""
    m, base = _choices(g)
    if m.weight_dtype == base.weight_dtype and m.expert_dtype == base.expert_dtype:
        return None
    q = _ONLINE_QUANT[engine].get(m.weight_dtype)
    if q is None:
        notes.append(f"group {g.name}: the plan serves {g.base_model}'s weights in {m.weight_dtype}; {engine} has no "
                     f"online quantization to it: serve a checkpoint already in {m.weight_dtype}")
    return q


def kv_cache_dtype(engine: str, g: EngineGroup, notes: list[str]) -> str | None:
    m, base = _choices(g)
    if m.kv_dtype == base.kv_dtype:
        return None
    v = _KV[engine].get(m.kv_dtype)
    if v is None:
        notes.append(f"group {g.name}: the plan keeps the KV cache in {m.kv_dtype}; {engine} "
                     f"{VERSIONS[engine]} has no --kv-cache-dtype for it: the engine keeps the checkpoint's format")
    return v


def dtype_args(engine: str, g: EngineGroup, notes: list[str]) -> list[str]:
    """`--quantization` and `--kv-cache-dtype` (the same flag names in vLLM and SGLang) where the group
    needs them, with the engine's own value names."""
    args: list[str] = []
    q = quantization(engine, g, notes)
    if q:
        args += ["--quantization", q]
    kv = kv_cache_dtype(engine, g, notes)
    if kv:
        args += ["--kv-cache-dtype", kv]
    return args


def gpu_env(g: EngineGroup) -> list[tuple[str, str]]:
    """The environment that puts an engine on its devices: their indices on the node (CUDA for NVIDIA,
    HIP for AMD)."""
    if g.node is None or not g.devices:
        return []
    chip = get_chip(g.chip)
    var = "HIP_VISIBLE_DEVICES" if chip.vendor == "amd" else "CUDA_VISIBLE_DEVICES"
    return [(var, ",".join(d.rsplit(".", 1)[1] for d in g.devices))]


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def bash_script(launch: Launch, header: Sequence[str]) -> str:
    """A launch script: comments, then the command (with its environment), one flag per line."""
    lines = ["#!/usr/bin/env bash", *[f"# {h}" if h else "#" for h in header], "set -euo pipefail", ""]
    for k, v in launch.env:
        lines.append(f"export {k}={shlex.quote(v)}")
    if launch.env:
        lines.append("")
    argv = list(launch.argv)
    parts: list[str] = []
    i = 0
    head = []
    while i < len(argv) and not argv[i].startswith("-"):
        head.append(argv[i])
        i += 1
    while i < len(argv) and argv[i] in ("-m",):  # `python3 -m module` stays on the first line
        head += argv[i:i + 2]
        i += 2
        while i < len(argv) and not argv[i].startswith("-"):
            head.append(argv[i])
            i += 1
    while i < len(argv):
        piece = [argv[i]]
        i += 1
        while i < len(argv) and not _flag(argv[i]):
            piece.append(argv[i])
            i += 1
        parts.append(shlex.join(piece))
    body = "exec " + shlex.join(head)
    if parts:
        body += " \\\n    " + " \\\n    ".join(parts)
    lines.append(body)
    return "\n".join(lines) + "\n"


def _flag(arg: str) -> bool:
    return arg.startswith("--") or (len(arg) == 2 and arg[0] == "-" and arg[1].isalpha())


def host_of(g: EngineGroup) -> str:
    """The host name an engine is reached at: its node's name (the cluster file's names stand for the
    machines' addresses), or localhost where the group spans nodes."""
    return g.node or "localhost"


def port_of(d: Deployment, g: EngineGroup) -> int:
    """The port an engine serves on: 8001, 8002, ... in group order (8000 is the Dynamo frontend's)."""
    return BASE_PORT + 1 + list(d.groups).index(g)


def pools(d: Deployment) -> list[list[EngineGroup]]:
    """The deployment's groups by pool (a search result's replicas of one role group), in order; a plan's
    groups are each a pool of their own."""
    out: dict[str, list[EngineGroup]] = {}
    for g in d.groups:
        out.setdefault(g.pool or g.name, []).append(g)
    return list(out.values())


def pool_of(d: Deployment, name: str) -> list[EngineGroup]:
    """The groups of pool `name` (a plan's group: that group alone)."""
    return next(p for p in pools(d) if (p[0].pool or p[0].name) == name)


def router_port(d: Deployment, decode: EngineGroup) -> int:
    """The port of the router in front of a prefill/decode pair: its decode engine's port + 1000."""
    return port_of(d, decode) + 1000
