"""Prepare what the GPU check needs on a GPU machine that has no IREE compiler: plans with their
cuda binaries compiled here, and the wheels that machine lacks.

    .venv/bin/python benchmarks/gpu_bundle.py [OUT]          # default build/gpu-bundle (make gpu-bundle)
    .venv/bin/python benchmarks/gpu_bundle.py OUT --no-wheels  # plans and binaries only

Writes under OUT:

    tiny/plan.json, tiny/plan.artifacts/   the tiny Llama's phase split (prefill on an MI300X, decode on
                                           an H200) built for cuda (sm_80) and llvm-cpu: on an NVIDIA
                                           machine the H200's partitions run on its GPU, the MI300X's on
                                           the CPU (llvm-cpu) as a stand-in
    wheels/                                pydantic (+ pydantic-core, annotated-types, typing-inspection,
                                           typing-extensions), highspy and iree-base-runtime for this
                                           Python, plus the CLI's small dependencies and pytest (with
                                           hypothesis) for the GPU test
    run.sh                                 on the GPU machine: install the wheels, run the GPU runtime test
                                           and benchmarks/gpu_check.py on the bundle

The `iree-base-compiler` wheel (84 MB) is over what travels to the GPU machine (64 MiB), so binaries
are compiled here; everything in OUT comes to well under that (the script prints the total).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "tiny_llm"
CLUSTER = ROOT / "examples" / "clusters" / "h200_mi300x.yaml"
PIPELINE = "expand-llm,partition-phase,place,insert-transfers,schedule,overlap{stream=false}"
PINS = {"chat.prefill": "mi300x", "chat.decode": "h200"}
WHEELS = ["pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "highspy",
          "iree-base-runtime", "typer", "click", "rich", "shellingham", "markdown-it-py", "mdurl", "pygments", "pyyaml",
          "pytest", "pluggy", "iniconfig", "packaging", "hypothesis", "sortedcontainers", "attrs"]

RUN_SH = """#!/usr/bin/env bash
# On the GPU machine, from the repository root: install the carried wheels, then run the GPU checks.
set -euo pipefail
B="$(cd "$(dirname "$0")" && pwd)"
python -m pip install -q --no-index --find-links "$B/wheels" {wheels} || \\
  python -m pip install -q --no-index --no-deps --find-links "$B/wheels" {wheels}
export PYTHONPATH="$PWD/src${{PYTHONPATH:+:$PYTHONPATH}}" GIMLETC_GPU_BUNDLE="$B"
python -m pytest -q -p no:cacheprovider -m gpu tests/test_runtime.py -rs || true
python benchmarks/gpu_check.py "$B/tiny/plan.json" "$@"
"""


def tiny_graph():
    from gimletc import AgentGraph

    g = AgentGraph("chat")
    q = g.input("question", tokens=10)
    g.output("out", [g.llm("chat", model=str(TINY / "tiny-llama.onnx"), prompt=[q], output_tokens=7)])
    return g


def build_plans(out: Path, cache: Path | None = None) -> Path:
    """Compile the tiny phase split and build its cuda and llvm-cpu binaries into `out`/tiny; returns the plan's path."""
    from gimletc.compiler import compile as gcompile
    from gimletc.targets.build import build_artifacts

    r = gcompile(tiny_graph(), CLUSTER, pipeline=PIPELINE, pins=PINS, baseline=False)
    folder = out / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    arts = build_artifacts(r, folder / "plan.artifacts", backends=("cuda", "llvm-cpu"), cache_dir=cache)
    path = folder / "plan.json"
    r.plan.model_copy(update={"artifacts": arts, "artifact_root": "plan.artifacts"}).write(path)
    return path


def download_wheels(out: Path) -> None:
    """This Python's wheels of WHEELS, at the versions installed here, through pip's configured index."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in WHEELS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    dest = out / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(dest), *pins],
                   check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(ROOT / "build" / "gpu-bundle"))
    ap.add_argument("--no-wheels", action="store_true", help="plans and binaries only")
    a = ap.parse_args()
    out = Path(a.out)
    plan = build_plans(out)
    if not a.no_wheels:
        download_wheels(out)
    run = out / "run.sh"
    run.write_text(RUN_SH.format(wheels=" ".join(WHEELS)))
    run.chmod(0o755)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {plan} and {run}; {size / 2**20:.1f} MiB in {out}")
    print(f"on the GPU machine: carry {os.path.relpath(out, ROOT)} and run `bash {os.path.relpath(run, ROOT)}`")


if __name__ == "__main__":
    main()
