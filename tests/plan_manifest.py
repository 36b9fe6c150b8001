"""The manifest of every example plan: (graph, cluster, flags) -> sha256 of the plan's bytes.

Structural changes must keep every example's plan byte-identical; a change that
alters a plan on purpose (a bug fix, a cost-model change) rewrites the manifest
with `.venv/bin/python tests/plan_manifest.py --write` and says why in its commit.
The repository's own path is replaced by `<repo>` before hashing, so a plan that
names a file (the tiny ONNX models) hashes the same in any checkout.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "tests" / "data" / "plan_manifest.json"

GRAPHS = [
    "examples/coding_agent.py",
    "examples/rag.py",
    "examples/multi_agent.py",
    "examples/graphs/rag.yaml",
    "examples/tiny_llm/agent.py",
    "examples/scenarios/speculative.py",
    "examples/scenarios/splitwise.py",
    "examples/scenarios/moe_attn_ffn.py",
    "examples/scenarios/cross_vendor.py",
]
CLUSTERS = ["examples/clusters/gpu_only.yaml", "examples/clusters/mixed_rack.yaml",
            "examples/clusters/h200_mi300x.yaml"]
SCENARIO_CLUSTERS = sorted(str(p.relative_to(REPO)) for p in (REPO / "examples/scenarios/clusters").glob("*.yaml"))
STACKS = ["reference", "fused"]
# Flags beyond the stack, on the demo's graph and cluster: every objective, and each forced partitioning.
FLAGGED = [("examples/coding_agent.py", "examples/clusters/mixed_rack.yaml", "fused", f"objective={o}")
           for o in ("energy", "cost", "throughput")]
FLAGGED += [("examples/scenarios/moe_attn_ffn.py", "examples/scenarios/clusters/h200_x16.yaml", "fused",
             f"pipeline=expand-llm,place{{partitions={k}}},insert-transfers,schedule,overlap")
            for k in ("whole", "phase", "layers", "attn-ffn")]
FLAGGED += [("examples/scenarios/speculative.py", "examples/scenarios/clusters/gpu_corsair.yaml", "fused",
             "pipeline=expand-llm,place{partitions=speculative},insert-transfers,schedule,overlap")]


def cases() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for g in GRAPHS:
        clusters = SCENARIO_CLUSTERS if "/scenarios/" in g else CLUSTERS
        for c in clusters:
            for s in STACKS:
                out.append((g, c, s))
    return out + FLAGGED


def key(case: tuple[str, ...]) -> str:
    g, c, s, *flags = case
    return " | ".join([g, c, f"--stack {s}", *flags])


def plan_digest(case: tuple[str, ...]) -> str:
    """sha256 of the plan's JSON (or of the one-line error when the graph does not fit the cluster)."""
    from gimletc.compiler import compile
    from gimletc.errors import GimletError

    g, c, s, *flags = case
    kwargs = dict(f.split("=", 1) for f in flags)
    try:
        plan = compile(str(REPO / g), str(REPO / c), stack=s, **kwargs).plan
        text = _path_neutral_inputs(plan, REPO / g)
    except GimletError as e:
        text = f"error: {e}"
    text = text.replace(str(REPO), "<repo>")
    return hashlib.sha256(text.encode()).hexdigest()


def _path_neutral_inputs(plan, graph_path: Path, root: str | None = None) -> str:
    """The plan's JSON with its graph digest (and so its inputs digest) taken over the graph text with the
    checkout's path replaced: a graph that names files (the tiny ONNX models) by absolute path otherwise
    hashes differently in every checkout. Mirrors gimletc.compiler.inputs_digest."""
    from gimletc.graph_io import load_graph
    from gimletc.ir.text import print_graph

    text = plan.to_json()
    gtext = print_graph(load_graph(str(graph_path)))
    if str(REPO) not in gtext:
        return text
    neutral = hashlib.sha256(gtext.replace(str(REPO), root or "<repo>").encode()).hexdigest()
    inputs = {**plan.inputs, "graph_sha256": neutral}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return text.replace(plan.inputs["graph_sha256"], neutral).replace(plan.digest, digest)


def main(argv: list[str]) -> int:
    digests = {}
    for case in cases():
        digests[key(case)] = plan_digest(case)
        print(key(case), digests[key(case)][:12], flush=True)
    if "--write" in argv:
        MANIFEST.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
