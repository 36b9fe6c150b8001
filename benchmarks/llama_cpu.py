"""Measured vs predicted per device on this machine's CPU, for a Llama-3.2-1B-shaped model split across two CPUs.

    .venv/bin/python benchmarks/llama_cpu.py [--repeats 3] [--executor local|process] [--write-docs]

Compiles one LLM call (128 prompt tokens, 16 generated) on examples/tiny_llm/llama-1b-shape.onnx
(Llama-3.2-1B's layer shapes, 2 layers, vocabulary cut to 16,384; its 720 MiB of weights are
generated from their seed by each worker) onto examples/tiny_llm/cpus.yaml, prefill on one CPU host
and decode on the other (the phase split), with the `reference` stack; builds the ONNX partitions;
runs the request once to warm up and `--repeats` more times; prints each device's median busy time
next to the plan's prediction, and the split-vs-unsplit check. The prediction is the compiled plan's,
never refitted on these runs. `--write-docs` puts the table into docs/runtime.md (between the
`llama-cpu` markers). Needs about 5 GB of memory (weights generated three times: two devices and the
unsplit reference) and a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "tiny_llm" / "llama-1b-shape.onnx"
CLUSTER = ROOT / "examples" / "tiny_llm" / "cpus.yaml"
DOCS = ROOT / "docs" / "runtime.md"
PIPELINE = "expand-llm,partition-phase,place,insert-transfers,schedule"
PINS = {"chat.prefill": "cpu0", "chat.decode": "cpu1"}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--executor", default="local", choices=("local", "process"))
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()

    from gimletc import AgentGraph
    from gimletc.compiler import compile as gcompile
    from gimletc.runtime.local import LocalRuntime
    from gimletc.targets.build import build_artifacts

    g = AgentGraph("llama-cpu")
    q = g.input("question", tokens=128)
    g.output("out", [g.llm("chat", model=str(MODEL), prompt=[q], output_tokens=16)])
    r = gcompile(g, CLUSTER, pipeline=PIPELINE, pins=PINS, baseline=False, stack="reference")
    tmp = Path(tempfile.mkdtemp(prefix="gimletc-llama-"))
    arts = build_artifacts(r, tmp / "plan.artifacts", backends=())
    plan = r.plan.model_copy(update={"artifacts": arts, "artifact_root": "plan.artifacts"})
    plan.write(tmp / "plan.json")
    rt = LocalRuntime(plan, tmp, executor=a.executor, check=False)
    try:
        rt.run()  # warm-up
        reports = [rt.run() for _ in range(max(1, a.repeats))]
        rt.check = True
        checked = rt.run()
    finally:
        rt.close()
    rows = []
    for name, d in reports[-1].devices.items():
        if d.get("kind") == "link" or not d.get("runners"):
            continue  # links, and CPU lanes that only ran the input and output ops
        measured = statistics.median(x.devices[name]["measured_ms"] for x in reports)
        rows.append((name, d["chip"], ", ".join(o.of or o.op for o in reports[-1].ops if o.resource == name and o.runner),
                     measured, d["predicted_ms"]))
    c = checked.llms["chat"]
    cpu = _cpu_name()
    lines = [
        f"| device | chip (predicted for) | runs | measured ms (median of {len(reports)}) | predicted ms | measured / predicted |",
        "|---|---|---|---|---|---|",
    ]
    for name, chip, ops, measured, pred in rows:
        ratio = f"{measured / pred:.1f}x" if pred > 0 else "-"
        lines.append(f"| {name} | {chip} | {ops} | {measured:.1f} | {pred:.2f} | {ratio} |")
    wall = statistics.median(x.measured_ms for x in reports)
    lines += [
        "",
        f"Request: measured {wall:.0f} ms (median), predicted {reports[-1].predicted_ms:.1f} ms; split vs unsplit: "
        f"max |logits diff| {c.max_abs_diff:.2g}, tokens match: {c.tokens_match}. Measured on this machine "
        f"({os.cpu_count()} cores, {cpu}), `--executor {a.executor}`, one onnxruntime thread per device; "
        f"`.venv/bin/python benchmarks/llama_cpu.py --repeats {a.repeats}{' --executor ' + a.executor if a.executor != 'local' else ''}`.",
    ]
    table = "\n".join(lines)
    print(table)
    if a.write_docs:
        text = DOCS.read_text()
        block = f"<!-- llama-cpu:begin -->\n{table}\n<!-- llama-cpu:end -->"
        new, n = re.subn(r"<!-- llama-cpu:begin -->.*?<!-- llama-cpu:end -->", lambda _: block, text, flags=re.S)
        if n != 1:
            print("docs/runtime.md has no llama-cpu markers", file=sys.stderr)
            return 1
        DOCS.write_text(new)
        print(f"wrote the table into {DOCS}")
    return 0 if c.tokens_match else 1


if __name__ == "__main__":
    sys.exit(main())
