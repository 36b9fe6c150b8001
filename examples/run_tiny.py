"""End to end on a real ONNX model: agent graph + cluster -> plan -> executables -> a real run.

    .venv/bin/python examples/run_tiny.py [BUILD_DIR]

1. `gimletc compile` the agent in examples/tiny_llm/agent.py onto the H200 + MI300X
   cluster, pinning the prefill to an MI300X and the decode to an H200 (their KV
   layouts differ, so the plan converts the cache on the way);
2. `gimletc build` cuts the model into the partitions each compute runs (ONNX
   subgraphs; IREE binaries for llvm-cpu, cuda sm_80 and rocm gfx942), writes the
   dataflow as an MLIR module, and adds the draft model for speculative decoding;
3. `gimletc run --json` executes the plan on this machine (CPU workers stand in for
   the GPUs here), with onnxruntime and then with the IREE llvm-cpu binaries, and
   checks the tokens against the unsplit model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TINY = ROOT / "tiny_llm"


def gimletc(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "gimletc.cli", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"gimletc {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def main(build: Path) -> None:
    build.mkdir(parents=True, exist_ok=True)
    plan = build / "tiny-plan.json"
    gimletc("compile", str(TINY / "agent.py"), "--cluster", str(ROOT / "clusters" / "h200_mi300x.yaml"),
            "--pin", "answer.prefill=mi300x", "--pin", "answer.decode=h200", "-o", str(plan), "--quiet")
    print(gimletc("build", str(plan), "--draft", f"answer={TINY / 'tiny-llama-draft.onnx'}:4").strip())
    for backend in ("onnxruntime", "iree"):
        out = json.loads(gimletc("run", str(plan), "--json", "--backend", backend,
                                 "--tools", f"{TINY / 'tools.py'}:registry", "--trace", str(build / f"trace-{backend}.json")))
        ans = out["llms"]["answer"]
        print(f"{backend}: measured {out['measured_ms']:.2f} ms here, predicted {out['predicted_ms']:.3f} ms on the plan's "
              f"chips; max |split - unsplit| = {out['max_abs_diff']:.2g}; tokens match: {out['tokens_match']}; "
              f"draft tokens accepted {ans['speculative']['accepted']}/{ans['speculative']['drafted']}")
        for name, d in out["devices"].items():
            if d.get("kind") != "link":
                print(f"  {name:22s} {d['chip']:14s} {d['ran_on']:22s} measured {d['measured_ms']:7.3f} ms, "
                      f"predicted {d['predicted_ms']:7.3f} ms")
    print(f"plan, artifacts and traces in {build}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("build/tiny"))
