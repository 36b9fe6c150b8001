"""The `gimletc` command: outputs, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import run_cli  # tests/_cli.py

HF = Path(__file__).parent / "data" / "hf"


run = run_cli


def test_estimate_json_has_the_documented_fields(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "decode",
                       "--batch", "16", "--ctx", "4096", "--json")
    assert code == 0
    d = json.loads(out)
    for key in ("latency_ms", "flops", "bytes", "bound", "energy_j"):
        assert key in d
    assert d["bound"] in ("compute", "memory", "overhead")
    assert d["latency_ms"] > 0 and d["efficiency_origin"].startswith("fitted")


def test_estimate_accepts_a_hugging_face_config(capsys):
    code, out, _ = run(capsys, "estimate", "--model", str(HF / "llama-3.1-8b" / "config.json"), "--chip", "mi300x",
                       "--phase", "prefill", "--tokens", "2048", "--json")
    assert code == 0 and json.loads(out)["tokens"] == 2048


def test_estimate_output_is_deterministic(capsys):
    args = ("estimate", "--model", "gpt-oss-120b", "--chip", "h100-sxm", "--phase", "verify", "--tokens", "5",
            "--ctx", "2048", "--batch", "8", "--json")
    assert run(capsys, *args)[1] == run(capsys, *args)[1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["estimate", "--model", "nope", "--chip", "h200", "--phase", "decode"], "unknown model 'nope'"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "tpu9", "--phase", "decode"], "unknown chip 'tpu9'"),
        (["estimate", "--model", "llama-3.1-405b", "--chip", "h200", "--phase", "decode"], "150.8 GB"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "prefill"], "--tokens is required"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "decode", "--batch", "-1"], "batch"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "decode", "--tokens", "3"], "tokens=3"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "train"], "--phase"),
        (["estimate", "--model", str(HF / "mamba-130m" / "config.json"), "--chip", "h200", "--phase", "decode"],
         "MambaForCausalLM"),
        (["estimate", "--bogus"], "--bogus"),
        (["models", "show", "nope"], "unknown model"),
        (["hw", "show", "nope"], "unknown chip"),
        (["calibrate", "/nonexistent/file.json"], "/nonexistent/file.json"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, needle):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("gimletc: error: ")
    assert needle in err
    assert "Traceback" not in err + out


def test_listings(capsys):
    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0 and {"llama-3.1-8b", "deepseek-v3"} <= {m["name"] for m in json.loads(out)}
    code, out, _ = run(capsys, "hw", "list", "--json")
    d = json.loads(out)
    assert code == 0 and "h200" in d["chips"] and "mixed-rack" in d["clusters"]
    code, out, _ = run(capsys, "hw", "show", "h200", "--json")
    assert code == 0 and "memory_bw" in json.loads(out)["sources"]
    code, out, _ = run(capsys, "models", "show", "qwen3-32b", "--json")
    assert code == 0 and json.loads(out)["derived"]["params_b"] == pytest.approx(32.76, abs=0.01)


def test_demo_prints_a_table(capsys):
    code, out, _ = run(capsys, "demo", "--batch", "4", "--prompt", "1024")
    assert code == 0 and "llama-3.1-8b" in out and "does not fit" in out and "cost model" in out


def test_installed_entry_point_runs():
    exe = Path(sys.executable).with_name("gimletc")
    r = subprocess.run([str(exe), "estimate", "--model", "llama-3.2-1b", "--chip", "h200", "--phase", "decode",
                        "--ctx", "1024", "--json"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chip"] == "h200"


# ---- compile, show, graph ---------------------------------------------------------------

EXAMPLES = Path(__file__).parents[1] / "examples"
MIXED = str(EXAMPLES / "clusters" / "mixed_rack.yaml")


def test_compile_writes_plan_trace_and_summary(capsys, tmp_path):
    plan, trace = tmp_path / "plan.json", tmp_path / "trace.json"
    code, out, err = run(capsys, "compile", str(EXAMPLES / "coding_agent.py"), "--cluster", MIXED, "-o", str(plan),
                         "--trace", str(trace))
    assert code == 0, err
    d = json.loads(plan.read_text())
    for key in ("digest", "cluster", "placements", "programs", "transfers", "metrics", "critical_path", "baseline",
                "speedup", "energy_ratio"):
        assert key in d
    m = d["metrics"]
    assert m["latency_ms"] > 0 and set(m["ttft_ms"]) == {"plan", "edit", "summary"} and m["energy_j"] > 0
    assert "speedup over the baseline" in out and "critical path" in out
    t = json.loads(trace.read_text())
    names = {e["args"]["name"] for e in t["traceEvents"] if e.get("ph") == "M" and e.get("name") == "thread_name"}
    assert any(n.startswith("gpu0.h100") for n in names) and any("->" in n for n in names)  # device and link tracks
    code, out2, _ = run(capsys, "show", str(plan))
    assert code == 0 and "placements" in out2


def test_compile_is_byte_for_byte_deterministic(capsys, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        assert run(capsys, "compile", str(EXAMPLES / "multi_agent.py"), "-c", MIXED, "-o", str(p), "-q")[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_compile_options(capsys, tmp_path):
    p = tmp_path / "p.json"
    code, _, err = run(capsys, "compile", str(EXAMPLES / "rag.py"), "-c", "8x-h100-nvlink", "-o", str(p), "-q",
                       "--objective", "energy", "--power-budget", "3000", "--pin", "answer=hgx0.h100-sxm.3",
                       "--pipeline", "expand-llm,place,insert-transfers,schedule,overlap", "--no-baseline")
    assert code == 0, err
    d = json.loads(p.read_text())
    assert d["objective"] == "energy" and d["power_budget_w"] == 3000 and d["baseline"] is None
    assert {pl["device"] for pl in d["placements"] if pl["llm"] == "answer"} == {"hgx0.h100-sxm.3"}
    assert d["metrics"]["power_w"] <= 3000


def test_graph_formats(capsys):
    for fmt, needle in (("mermaid", "flowchart TD"), ("dot", "digraph"), ("mlir", '"agent.llm"')):
        code, out, _ = run(capsys, "graph", str(EXAMPLES / "rag.py"), "--format", fmt)
        assert code == 0 and needle in out


BAD_GRAPHS = {
    "cycle.yaml": ("nodes:\n  - {op: input, name: q, tokens: 10}\n"
                   "  - {op: llm, name: a, model: llama-3.1-8b, prompt: [q, b], output_tokens: 5}\n"
                   "  - {op: llm, name: b, model: llama-3.1-8b, prompt: [a], output_tokens: 5}\n"
                   "  - {op: output, name: out, inputs: [b]}\n", "cycle outside a loop: a -> b -> a"),
    "model.yaml": ("nodes:\n  - {op: input, name: q, tokens: 10}\n"
                   "  - {op: llm, name: a, model: gpt-9, prompt: [q], output_tokens: 5}\n"
                   "  - {op: output, name: out, inputs: [a]}\n", "unknown model 'gpt-9'"),
    "tool.yaml": ("nodes:\n  - {op: input, name: q, tokens: 10}\n  - {op: tool, name: t, tool: frob, inputs: [q]}\n"
                  "  - {op: output, name: out, inputs: [t]}\n", "unknown tool 'frob'"),
    "negative.yaml": ("nodes:\n  - {op: input, name: q, tokens: -10}\n  - {op: output, name: out, inputs: [q]}\n",
                      "-10"),
    "malformed.yaml": ("nodes: [\n  - {op: input\n", "malformed YAML"),
    "big.yaml": ("nodes:\n  - {op: input, name: q, tokens: 10}\n"
                 "  - {op: llm, name: a, model: llama-3.1-405b, prompt: [q], output_tokens: 5}\n"
                 "  - {op: output, name: out, inputs: [a]}\n", "llama-3.1-405b"),
}
SMALL_CLUSTER = ("name: small\nnodes:\n  - name: n0\n    chips: {CHIP: 1}\n"
                 "    host: {cpu: xeon-6980p, memory_bytes: 64.0e9}\n"
                 "    host_link: {kind: pcie, bandwidth: 64e9, latency: 2.0e-6}\n")


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
def test_bad_graphs_fail_cleanly_without_a_plan(capsys, tmp_path, case):
    text, needle = BAD_GRAPHS[case]
    g, c, out = tmp_path / case, tmp_path / "cluster.yaml", tmp_path / "plan.json"
    g.write_text(text)
    c.write_text(SMALL_CLUSTER.replace("CHIP", "h100-sxm"))
    code, _, err = run(capsys, "compile", str(g), "-c", str(c), "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == sorted([g, c]) or set(tmp_path.iterdir()) == {g, c}


@pytest.mark.parametrize(
    ("cluster_text", "extra", "needle"),
    [
        (SMALL_CLUSTER.replace("CHIP", "tpu-v9"), [], "unknown chip 'tpu-v9'"),
        (SMALL_CLUSTER.replace("CHIP", "h100-sxm"), ["--power-budget", "100"], "infeasible power budget: 100 W"),
        (SMALL_CLUSTER.replace("CHIP", "h100-sxm") + "bogus: 1\n", [], "bogus"),
    ],
)
def test_bad_clusters_and_budgets_fail_cleanly(capsys, tmp_path, cluster_text, extra, needle):
    c, out = tmp_path / "cluster.yaml", tmp_path / "plan.json"
    c.write_text(cluster_text)
    code, _, err = run(capsys, "compile", str(EXAMPLES / "rag.py"), "-c", str(c), "-o", str(out), *extra)
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not out.exists()


def test_loading_a_plan_validates_and_executes_nothing(capsys, tmp_path):
    p = tmp_path / "evil.json"
    p.write_text(json.dumps({"schema_version": "1", "__class__": "os.system", "name": "x"}))
    code, _, err = run(capsys, "show", str(p))
    assert code == 2 and "evil.json" in err


def test_published_plan_schema_is_current():
    from gimletc.plan import schema_text

    assert (Path(__file__).parents[1] / "docs" / "plan.schema.json").read_text() == schema_text()


SCENARIOS = EXAMPLES / "scenarios"


@pytest.mark.parametrize(
    ("graph", "cluster", "extra"),
    [
        ("speculative.py", "gpu_corsair", []),
        ("splitwise.py", "h100_a100", ["--objective", "throughput"]),
        ("moe_attn_ffn.py", "h200_x16", ["--objective", "throughput", "--pipeline",
                                          "expand-llm,partition-attn-ffn,place,insert-transfers,schedule,overlap"]),
        ("cross_vendor.py", "mi300x_h200", ["--pin", "answer.prefill=mi300x4", "--pin", "answer.decode=h200x4"]),
    ],
)
def test_scenarios_compile_from_the_cli(capsys, tmp_path, graph, cluster, extra):
    out = tmp_path / "plan.json"
    code, _, err = run(capsys, "compile", str(SCENARIOS / graph), "-c", str(SCENARIOS / "clusters" / f"{cluster}.yaml"),
                       "-o", str(out), "-q", "--stack", "fused", "--no-baseline", *extra)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["stack"] == "vllm" and d["partitions"]  # fused is a deprecated alias of the vllm engine stack
    if graph == "cross_vendor.py":
        kv = [t for t in d["transfers"] if t["value"] == "answer.kv"]
        assert kv and kv[0]["convert"]["from_layout"] == "paged-hnd" and kv[0]["chunks"] > 1


def test_show_prints_the_plans_warnings(capsys, tmp_path):
    """A plan that puts a model on a host CPU beside an accelerator says so in `gimletc show`."""
    from gimletc import AgentGraph
    from gimletc.compiler import compile
    from gimletc.hardware import Cluster

    g = AgentGraph("big")
    g.output("o", [g.llm("a", model="llama-3.1-70b", prompt=[g.input("q", tokens=1000)], output_tokens=50)])
    cl = Cluster.model_validate({"name": "one", "links": [], "nodes": [
        {"name": "g", "chips": {"h100-sxm": 1}, "host": {"cpu": "xeon-6980p", "memory_bytes": 1e12},
         "host_link": {"kind": "pcie", "bandwidth": 64e9, "latency": 2e-6}}]})
    plan = compile(g.build(), cl, baseline=False,
                   pipeline="expand-llm,place{partitions=whole},insert-transfers,schedule,overlap").plan
    assert len(plan.warnings) == 1
    path = tmp_path / "plan.json"
    plan.write(path)
    code, out, _ = run(capsys, "show", str(path))
    assert code == 0
    assert f"warning: {plan.warnings[0]}\n" in out  # one line, however wide


def test_a_figure_against_a_zero_baseline_gives_no_ratio():
    """A chip without a price costs nothing: the cost row says so instead of 'infx worse'."""
    from gimletc.cli import _versus

    assert _versus((0.0155, (0.0129, 0.0181)), (0.0, (0.0, 0.0)), True) == "no ratio: the baseline is 0"
    assert _versus((0.0, None), (2.0, None), True) == "no ratio: this plan is 0"
    assert _versus((2.0, None), (1.0, None), True) == "2.00x worse"
    assert _versus((1.0, None), (1.0, None), True) == "same"
