"""Hostile and careless inputs (issue 11): each prints one line naming what is wrong, exits 2, leaves
nothing new behind, and none reaches the CLI's "internal error" path.

The cases are one table (`CASES`): a name, a function that makes the files it needs in a fresh
folder and returns the command line, the words the error must contain, and the files that must
not exist afterwards. Device-like targets are a FIFO and a symbolic link made in the temporary
folder, never the real /dev/null or /dev/full (CI runs as root).

Root may write into any folder, so a folder's permissions alone do not make a write fail there;
gimletc therefore checks writability itself: a folder whose mode has no write bit for anyone is
read-only for every user, root included (see gimletc._io.check_output). The read-only case below
makes such a folder and holds whoever runs the test to that, without relying on the OS to refuse.

Memory limits are tested under `resource.setrlimit` in a child process: an alias bomb or an
oversized file is refused by gimletc's own check (its message), not by running out of memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
RAG = str(ROOT / "examples" / "rag.py")
RAG_YAML = (ROOT / "examples" / "graphs" / "rag.yaml").read_text()
GPU = str(ROOT / "examples" / "clusters" / "gpu_only.yaml")
CAL = ROOT / "src" / "gimletc" / "cost" / "data" / "h200_llama_calibration.json"
BINARY = bytes(range(256)) * 2  # invalid UTF-8 from its 0x80 on
DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_YAML = "a: " + "[" * 100_000 + "]" * 100_000 + "\n"
BOMB = "\n".join([
    "name: bomb",
    "nodes:",
    "  - {op: input, name: q, tokens: 10}",
    "  - {op: output, name: o, inputs: [q]}",
    "x: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    *[f"x{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)],
]) + "\n"
SMALL_AND_BIG = textwrap.dedent("""\
    name: small-and-big
    nodes:
      - name: a
        chips: {h100-sxm: 1}
        host: {cpu: xeon-6980p, memory_bytes: 6.4e10}
        host_link: {kind: pcie, bandwidth: 64e9, latency: 2.0e-6}
      - name: b
        chips: {h200: 8}
        host: {cpu: xeon-6980p, memory_bytes: 1.0e12}
        fabric: {kind: nvlink, bandwidth: 450e9, latency: 1.0e-6}
        host_link: {kind: pcie, bandwidth: 64e9, latency: 2.0e-6}
    links:
      - {between: [a, b], kind: rdma, bandwidth: 50e9, latency: 5.0e-6}
    """)

TINY = ROOT / "examples" / "tiny_llm"
TINY_CLUSTER = str(ROOT / "examples" / "clusters" / "h200_mi300x.yaml")
LOOP_1E6 = textwrap.dedent("""\
    name: looper
    tools:
      check: {cpu_s: 0.01, output_tokens: 10}
    nodes:
      - {op: input, name: q, tokens: 50}
      - op: loop
        name: fix
        expected: 1000000
        max: 2000000
        carry: [q]
        body:
          - {op: tool, name: t, tool: check, inputs: [q]}
        yield: t
      - {op: output, name: o, inputs: [fix]}
    """)

_PLAN_CACHE: dict[str, str] = {}
_TINY_DIR: list[tempfile.TemporaryDirectory] = []


def plan_text() -> str:
    """A real plan (rag on gpu_only), compiled once per test session."""
    if "plan" not in _PLAN_CACHE:
        from gimletc.compiler import compile

        _PLAN_CACHE["plan"] = compile(RAG, GPU).plan.to_json()
    return _PLAN_CACHE["plan"]


def tiny_plan(built: bool) -> Path:
    """The tiny ONNX agent's plan (prefill on an MI300X, decode on an H200), compiled once per session;
    `built`: with its artifacts (ONNX only), in a folder of its own that the cases never write to."""
    if not _TINY_DIR:
        from gimletc.compiler import compile
        from gimletc.targets.build import build_artifacts

        _TINY_DIR.append(tempfile.TemporaryDirectory(prefix="gimletc-hostile-"))
        root = Path(_TINY_DIR[0].name)
        r = compile(TINY / "agent.py", TINY_CLUSTER, pins={"answer.prefill": "mi300x", "answer.decode": "h200"},
                    baseline=False)
        r.plan.write(root / "plan.json")
        (root / "built").mkdir()
        arts = build_artifacts(r, root / "built" / "plan.artifacts", backends=(), plan_dir=root / "built")
        r.plan.model_copy(update={"artifacts": arts, "artifact_root": "plan.artifacts"}).write(root / "built" / "plan.json")
    root = Path(_TINY_DIR[0].name)
    return root / "built" / "plan.json" if built else root / "plan.json"


def build_args(d: Path, *extra: str) -> list[str]:
    """`gimletc build` of a copy of the tiny plan in `d` (which a failed build must leave as it was)."""
    shutil.copyfile(tiny_plan(built=False), d / "plan.json")
    return ["build", str(d / "plan.json"), *extra]


def _plan_unchanged(d: Path) -> None:
    assert (d / "plan.json").read_bytes() == tiny_plan(built=False).read_bytes()
    assert not (d / "plan.artifacts").exists() and not list(d.glob(".plan.artifacts.*"))


def run_args(d: Path, *extra: str) -> list[str]:
    if "--tools" not in extra:
        extra = (*extra, "--tools", f"{TINY / 'tools.py'}:registry")
    return ["run", str(tiny_plan(built=True)), *extra]


def tools_file(d: Path, body: str) -> str:
    return f"{write(d, 'tools.py', textwrap.dedent(body))}:registry"


def loop_plan(d: Path) -> str:
    from gimletc.compiler import compile

    path = d / "loop.json"
    compile(write(d, "loop.yaml", LOOP_1E6), GPU, baseline=False).plan.write(path)
    return str(path)


def edited_ir(d: Path, old: str, new: str) -> str:
    def edit(p: dict) -> None:
        assert old in p["ir"], old
        p["ir"] = p["ir"].replace(old, new, 1)

    return edited_plan(d, edit)


def sim_args(plan: str, *extra: str) -> list[str]:
    return ["simulate", plan, "--rate", "1", "-n", "20", *extra]


def edited_plan(d: Path, edit: Callable[[dict], None]) -> str:
    data = json.loads(plan_text())
    edit(data)
    p = d / "edited.json"
    p.write_text(json.dumps(data))
    return str(p)


def write(d: Path, name: str, content: str | bytes) -> str:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


def compile_args(d: Path, *extra: str, graph: str = RAG, out: str | None = None) -> list[str]:
    return ["compile", graph, "-c", GPU, "-o", out if out is not None else str(d / "plan.json"), "-q", *extra]


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]  # makes its files in the folder; returns the command line
    needles: tuple[str, ...]  # words the one error line contains
    absent: tuple[str, ...] = ("plan.json",)  # files (relative to the folder) that must not exist afterwards
    check: Callable[[Path], None] | None = field(default=None)  # more about the folder afterwards


def _fifo(d: Path) -> list[str]:
    os.mkfifo(d / "fifo")
    return compile_args(d, out=str(d / "fifo"))


def _fifo_still_fifo(d: Path) -> None:
    import stat

    assert stat.S_ISFIFO(os.lstat(d / "fifo").st_mode)


def _symlink(d: Path) -> list[str]:
    (d / "target.json").write_text("precious\n")
    (d / "link.json").symlink_to(d / "target.json")
    return compile_args(d, out=str(d / "link.json"))


def _link_intact(d: Path) -> None:
    assert (d / "link.json").is_symlink() and (d / "target.json").read_text() == "precious\n"


def _read_only_dir(d: Path) -> list[str]:
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o555)  # no write bit for anyone: read-only for root too, by gimletc's own check
    return compile_args(d, out=str(ro / "plan.json"))


def _read_only_file(d: Path) -> list[str]:
    p = d / "plan.json"
    p.write_text("keep me\n")
    p.chmod(0o444)
    return compile_args(d, out=str(p))


def _kept(d: Path) -> None:
    assert (d / "plan.json").read_text() == "keep me\n"


def _directory(d: Path) -> list[str]:
    (d / "out").mkdir()
    return compile_args(d, out=str(d / "out"))


def _py(d: Path, body: str) -> str:
    return write(d, "g.py", textwrap.dedent(body))


CASES = [
    # ---- outputs ----------------------------------------------------------------------------
    Case("-o a FIFO", _fifo, ("fifo", "FIFO", "not a regular file"), check=_fifo_still_fifo),
    Case("-o a symlink", _symlink, ("link.json", "symbolic link"), check=_link_intact),
    Case("-o a directory", _directory, ("out", "is a directory")),
    Case("-o empty", lambda d: compile_args(d, out=""), ("path is empty",)),
    Case("-o in a read-only folder", _read_only_dir, ("ro", "read-only"), absent=("ro/plan.json",)),
    Case("-o a read-only file", _read_only_file, ("plan.json", "read-only"), absent=(), check=_kept),
    Case("-o in a missing folder", lambda d: compile_args(d, out=str(d / "nodir" / "p.json")),
         ("folder", "nodir", "does not exist"), absent=("nodir",)),
    Case("--trace in a missing folder leaves no plan", lambda d: compile_args(d, "--trace", str(d / "nodir" / "t.json")),
         ("nodir", "does not exist")),
    Case("--trace at a directory", lambda d: compile_args(d, "--trace", str(d)), ("is a directory",)),
    Case("-o and --trace the same file", lambda d: compile_args(d, "--trace", str(d / "plan.json")),
         ("two outputs", "plan.json")),
    Case("-o - and --trace -", lambda d: compile_args(d, "--trace", "-", out="-"), ("two outputs", "standard output")),
    Case("--plot at a directory", lambda d: ["search", RAG, "-c", GPU, "-n", "10", "--slo-ttft-ms", "1000",
                                             "--plot", str(d)], ("is a directory",)),
    Case("report -o a directory", lambda d: ["report", write(d, "p.json", plan_text()), "-o", str(d)],
         ("is a directory",)),
    Case("opt -o a FIFO", lambda d: (os.mkfifo(d / "f"), ["opt", write(d, "x.mlir", "module {\n}\n"), "-o", str(d / "f")])[1],
         ("FIFO",)),
    # ---- binary and deep files --------------------------------------------------------------
    Case("binary graph (yaml)", lambda d: compile_args(d, graph=write(d, "g.yaml", BINARY)), ("g.yaml", "not UTF-8")),
    Case("binary graph (json)", lambda d: compile_args(d, graph=write(d, "g.json", BINARY)), ("g.json", "not UTF-8")),
    Case("binary plan", lambda d: ["show", write(d, "p.json", BINARY)], ("p.json", "not UTF-8")),
    Case("binary config.json", lambda d: ["models", "show", write(d, "m/config.json", BINARY)],
         ("config.json", "not UTF-8")),
    Case("binary calibration file", lambda d: ["calibrate", write(d, "cal.json", BINARY)], ("cal.json", "not UTF-8")),
    Case("binary cluster", lambda d: compile_args(d) [:3] + [write(d, "c.yaml", BINARY)] + compile_args(d)[4:],
         ("c.yaml", "not UTF-8")),
    Case("graph JSON 100,000 deep", lambda d: compile_args(d, graph=write(d, "g.json", DEEP_JSON)),
         ("g.json", "nested")),
    Case("graph YAML 100,000 deep", lambda d: compile_args(d, graph=write(d, "g.yaml", DEEP_YAML)), ("g.yaml", "nest")),
    Case("plan JSON 100,000 deep", lambda d: ["show", write(d, "p.json", DEEP_JSON)], ("p.json", "nested")),
    Case("YAML alias bomb as a graph", lambda d: ["graph", write(d, "g.yaml", BOMB)], ("g.yaml", "aliases expand")),
    Case("YAML alias bomb as a cluster", lambda d: compile_args(d)[:3] + [write(d, "c.yaml", BOMB)] + compile_args(d)[4:],
         ("c.yaml", "aliases expand")),
    Case("NaN in a JSON graph", lambda d: ["graph", write(d, "g.json", '{"nodes": [{"op": "input", "name": "q", '
                                                                      '"tokens": NaN}]}')], ("g.json", "NaN")),
    Case("a directory as a plan", lambda d: ["show", str(d)], ("is a directory",)),
    Case("calibration architecture with ffn 0", lambda d: ["calibrate", write(d, "cal.json", CAL.read_text().replace(
        '"ffn": 8192', '"ffn": 0', 1))], ("cal.json", "architectures.llama-3.2-1b", "ffn")),
    # ---- numbers and options ----------------------------------------------------------------
    Case("--power-budget inf", lambda d: compile_args(d, "--power-budget", "inf"), ("power budget", "inf")),
    Case("--power-budget nan", lambda d: compile_args(d, "--power-budget", "nan"), ("power budget", "nan")),
    Case("--pin of no op", lambda d: compile_args(d, "--pin", "nosuchop=cpu"), ("nosuchop", "no op")),
    Case("--pin twice", lambda d: compile_args(d, "--pin", "answer=cpu", "--pin", "answer=hgx0"),
         ("answer", "given twice", "cpu", "hgx0")),
    Case("--dump-ir-after no such pass", lambda d: compile_args(d, "--dump-ir-after", "nosuchpass"),
         ("nosuchpass", "no such pass")),
    Case("pipeline without place", lambda d: compile_args(d, "--pipeline", "expand-llm,insert-transfers,schedule"),
         ("insert-transfers", "place")),
    Case("place{exact_limit=-5}", lambda d: compile_args(
        d, "--pipeline", "expand-llm,place{exact_limit=-5},insert-transfers,schedule,overlap"), ("exact_limit=-5",)),
    Case("overlap{chunks=0}", lambda d: compile_args(
        d, "--pipeline", "expand-llm,place,insert-transfers,schedule,overlap{chunks=0}"), ("chunks=0",)),
    Case("10^12 output tokens", lambda d: compile_args(d, graph=write(
        d, "big.yaml", RAG_YAML.replace("output_tokens: 300}", "output_tokens: 1000000000000}"))),
         ("big.yaml", "llm 'answer'", "output_tokens (1000000000000)", "max context")),
    Case("pinned to a device too small", lambda d: [
        "compile", write(d, "g.yaml", RAG_YAML.replace("llama-3.1-8b", "llama-3.1-70b")), "-c",
        write(d, "c.yaml", SMALL_AND_BIG), "--pin", "answer=a.h100-sxm.0", "-o", str(d / "plan.json")],
         ("answer", "a.h100-sxm.0", "142.3 GB", "80.0 GB")),
    Case("search --tp 3", lambda d: ["search", RAG, "-c", GPU, "--tp", "3", "-n", "50", "--slo-ttft-ms", "1000"],
         ("--tp 3", "tp 1/2/4/8")),
    # ---- graph .py files ----------------------------------------------------------------------
    Case("graph .py calls sys.exit(0)", lambda d: compile_args(d, graph=_py(d, "import sys\nsys.exit(0)\n")),
         ("g.py", "sys.exit(0)")),
    Case("graph .py raises KeyboardInterrupt", lambda d: compile_args(d, graph=_py(d, "raise KeyboardInterrupt\n")),
         ("g.py", "KeyboardInterrupt")),
    Case("graph .py hangs", lambda d: compile_args(d, "--load-timeout", "0.5", graph=_py(d, "while True:\n    pass\n")),
         ("g.py", "longer than 0.5 s", "--load-timeout")),
    Case("graph .py sleeps", lambda d: ["graph", _py(d, "import time\ntime.sleep(60)\n"), "--load-timeout", "0.5"],
         ("g.py", "longer than 0.5 s")),
    Case("graph .py swallows Exception", lambda d: compile_args(d, "--load-timeout", "0.5", graph=_py(
        d, "while True:\n    try:\n        pass\n    except Exception:\n        pass\n")), ("longer than 0.5 s",)),
    # ---- edited plans ------------------------------------------------------------------------------
    Case("plan schema version 999", lambda d: ["show", edited_plan(d, lambda p: p.update(schema_version="999"))],
         ("edited.json", "schema_version", "'999'")),
    Case("plan with a negative latency", lambda d: ["show", edited_plan(d, lambda p: p["metrics"].update(latency_ms=-5))],
         ("edited.json", "latency_ms", "-5")),
    Case("plan with a NaN latency", lambda d: ["show", write(d, "nan.json", plan_text().replace(
        '"latency_ms": ', '"latency_ms": NaN, "x": ', 1))], ("nan.json", "NaN")),
    Case("plan with a negative step time", lambda d: ["show", edited_plan(
        d, lambda p: next(iter(p["programs"].values()))[0].update(seconds=-1.0))], ("edited.json", "seconds")),
    Case("plan with garbage ir", lambda d: ["show", edited_plan(d, lambda p: p.update(ir="garbage"))],
         ("edited.json", "ir:", "line 1, column 1")),
    Case("report of a plan with garbage ir", lambda d: ["report", edited_plan(d, lambda p: p.update(ir="garbage")),
                                                        "-o", str(d / "r.html")], ("edited.json", "ir:"),
         absent=("r.html",)),
    # ---- the load simulator -------------------------------------------------------------------------
    Case("simulate --seed -1", lambda d: sim_args(write(d, "p.json", plan_text()), "--seed", "-1"),
         ("--seed", ">= 0", "-1")),
    Case("simulate --rate 1e-300", lambda d: ["simulate", write(d, "p.json", plan_text()), "--rate", "1e-300", "-n", "20"],
         ("20 requests at 1e-300 req/s", "2e+301 s", "at most 1e+09 s")),
    Case("simulate --requests 1000000000", lambda d: ["simulate", write(d, "p.json", plan_text()), "--rate", "1",
                                                      "-n", "1000000000", "--memory-limit", "8"],
         ("p.json", "1,000,000,000 requests", "160.00 GB", "8.00 GB", "--memory-limit")),
    Case("simulate: requests in flight outgrow the memory", lambda d: [
        "simulate", write(d, "p.json", plan_text()), "--rate", "1000", "-n", "20000", "--memory-limit", "0.004"],
         ("requests were in flight", "outpace the deployment", "4.0 MB")),
    Case("simulate --memory-limit 0", lambda d: sim_args(write(d, "p.json", plan_text()), "--memory-limit", "0"),
         ("--memory-limit", "positive")),
    Case("simulate a loop with expected 1e6", lambda d: sim_args(loop_plan(d)),
         ("loop @fix", "2,000,000 iterations", "at most 1,000,000 per request")),
    Case("simulate --timeline at a directory (before running)", lambda d: sim_args(
        write(d, "p.json", plan_text()), "--timeline", str(d)), ("is a directory",)),
    Case("simulate a trace past 1e9 s", lambda d: ["simulate", write(d, "p.json", plan_text()), "--arrival-trace",
                                                   write(d, "t.csv", "arrival_s\n0\n1e300\n")],
         ("t.csv", "line 3", "past the 1e+09 s")),
    Case("simulate a plan with schema version 999", lambda d: sim_args(edited_plan(d, lambda p: p.update(
        schema_version="999"))), ("edited.json", "'999'")),
    Case("simulate a plan with a 1e300 s tool", lambda d: sim_args(edited_ir(
        d, "seconds = 0.15 : f64", "seconds = 1.0e300 : f64")), ("edited.json", "op @rerank", "seconds = 1e+300")),
    Case("simulate a plan whose prompt exceeds the context", lambda d: sim_args(edited_ir(
        d, "tokens = 2700 : i64", "tokens = 1000000000000000 : i64")),
         ("edited.json", "op @answer.prefill", "max context of 131,072")),
    Case("simulate a plan with no cluster devices", lambda d: sim_args(edited_plan(
        d, lambda p: p["cluster"].update(devices=[]))), ("edited.json", "cluster.hosts", "hgx0.host")),
    Case("simulate a plan with a device of an unknown role", lambda d: sim_args(edited_plan(
        d, lambda p: p["cluster"]["devices"][-1].update(role="weird"))), ("edited.json", "role 'weird'")),
    Case("simulate a plan with a device of an unknown chip", lambda d: sim_args(edited_plan(
        d, lambda p: p["cluster"]["devices"][0].update(chip="nosuchchip"))),
         ("edited.json", "cluster.devices[0]", "nosuchchip")),
    # ---- run and build ------------------------------------------------------------------------------
    Case("run --trace at a directory, checked before running", lambda d: run_args(
        d, "--trace", str(d), "--tools", tools_file(d, "def post(x):\n    raise ValueError('ran')\nregistry = {'post': post}\n")),
         ("is a directory",)),
    Case("run --trace in a missing folder", lambda d: run_args(d, "--trace", str(d / "nodir" / "t.json")),
         ("nodir", "does not exist")),
    Case("--tools module raises at import", lambda d: run_args(d, "--tools", tools_file(d, "raise RuntimeError('boom')\n")),
         ("tools.py:registry", "importing", "RuntimeError: boom")),
    Case("--tools module calls sys.exit", lambda d: run_args(d, "--tools", tools_file(d, "import sys\nsys.exit(0)\n")),
         ("tools.py:registry", "sys.exit(0)")),
    Case("--tools factory raises", lambda d: run_args(d, "--tools", tools_file(
        d, "def registry():\n    raise KeyError('made')\n")), ("calling registry()", "KeyError")),
    Case("--tools tool raises at run time", lambda d: run_args(d, "--tools", tools_file(
        d, "def post(x):\n    raise ValueError('tool exploded')\nregistry = {'post': post}\n")),
         ("tools.py:registry", "tool 'post'", "ValueError: tool exploded")),
    Case("--tools tool calls sys.exit", lambda d: run_args(d, "--tools", tools_file(
        d, "import sys\ndef post(x):\n    sys.exit(0)\nregistry = {'post': post}\n")), ("tool 'post'", "sys.exit(0)")),
    Case("--tools names no mapping", lambda d: run_args(d, "--tools", tools_file(d, "registry = {'post': 3}\n")),
         ("mapping of op name to callable",)),
    Case("run --inputs naming no input", lambda d: run_args(d, "--inputs", write(d, "in.json", '{"nosuch": [1]}')),
         ("no input named 'nosuch'", "question")),
    Case("run --inputs with a 23-digit token id", lambda d: run_args(
        d, "--inputs", write(d, "in.json", '{"question": [99999999999999999999999]}')),
         ("in.json", "question", "64-bit integer")),
    Case("build --backend bogus", lambda d: build_args(d, "--backend", "bogus"), ("bogus", "llvm-cpu"),
         absent=(), check=_plan_unchanged),
    Case("build --draft of a missing file", lambda d: build_args(d, "--no-iree", "--draft", "answer=/nope.onnx"),
         ("answer", "/nope.onnx", "does not exist"), absent=(), check=_plan_unchanged),
    Case("build --draft ...:0", lambda d: build_args(d, "--no-iree", "--draft", f"answer={TINY / 'tiny-llama-draft.onnx'}:0"),
         ("K = 0", "at least 1"), absent=(), check=_plan_unchanged),
    Case("build --draft with another vocabulary (fails mid-build)", lambda d: build_args(
        d, "--no-iree", "--draft", f"answer={TINY / 'llama-1b-shape.onnx'}:2"), ("vocabulary of 16384",),
         absent=(), check=_plan_unchanged),
    Case("build -o in a missing folder", lambda d: build_args(d, "--no-iree", "-o", str(d / "nodir" / "p.json")),
         ("nodir", "does not exist"), absent=("nodir",), check=_plan_unchanged),
    Case("build --artifacts in a missing folder", lambda d: build_args(d, "--no-iree", "--artifacts",
                                                                       str(d / "nodir" / "a")),
         ("artifacts folder", "nodir", "does not exist"), absent=("nodir",), check=_plan_unchanged),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_leaves_nothing(capsys, tmp_path, case):
    before = set(tmp_path.rglob("*"))
    args = case.make(tmp_path)
    made = set(tmp_path.rglob("*"))
    try:
        code, out, err = run_cli(capsys, *args)
    finally:
        for p in tmp_path.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)  # let pytest clean up the read-only folder
    assert code == 2, (code, out[-500:], err)
    assert err.startswith("gimletc: error: ") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err, err
    for needle in case.needles:
        assert needle in err, (needle, err)
    for name in case.absent:
        assert not (tmp_path / name).exists(), name
    left = {p for p in set(tmp_path.rglob("*")) - made - before}
    assert not left, f"left behind: {sorted(map(str, left))}"
    if case.check is not None:
        case.check(tmp_path)


# ---- what is accepted, and how ----------------------------------------------------------------------


def test_dash_writes_the_plan_to_stdout_and_the_summary_to_stderr(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compile", RAG, "-c", GPU, "-o", "-")
    assert code == 0
    assert json.loads(out)["name"] == "rag"
    assert "metrics per request" in err and "wrote" not in err
    assert not list(tmp_path.iterdir())


def test_dash_writes_a_report_to_stdout(capsys, tmp_path):
    plan = write(tmp_path, "p.json", plan_text())
    code, out, err = run_cli(capsys, "report", plan, "-o", "-")
    assert code == 0 and out.lstrip().lower().startswith("<!doctype html>") and err == ""


def test_next_write_removes_a_killed_writers_temp_file(capsys, tmp_path):
    """A write killed between creating its temporary file and renaming it leaves `.plan.json.PID.*.tmp`;
    the next write to plan.json removes it when process PID is gone, and keeps a live process's."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    orphan = tmp_path / f".plan.json.{dead_pid}.abc123xy.tmp"
    orphan.write_text('{"half": ')
    live = tmp_path / f".plan.json.{os.getpid()}.zz99zz99.tmp"  # this process is alive: maybe still writing
    live.write_text("{")
    other = tmp_path / f".other.json.{dead_pid}.abc123xy.tmp"  # another target's: not this write's business
    other.write_text("{")
    code, _, err = run_cli(capsys, *compile_args(tmp_path))
    assert code == 0, err
    assert not orphan.exists() and live.exists() and other.exists()
    assert json.loads((tmp_path / "plan.json").read_text())["name"] == "rag"


def test_a_killed_compile_leaves_no_plan_and_the_next_cleans_up(tmp_path):
    """Kill a real `gimletc compile` while it writes (SIGKILL from inside the write): only its hidden
    temporary file stays; the next compile to the same path removes it and writes the plan."""
    out = tmp_path / "plan.json"
    script = textwrap.dedent(f"""
        import os, signal
        import gimletc._io as io
        real = io._stage
        def stage_then_die(p, text):
            real(p, text)
            os.kill(os.getpid(), signal.SIGKILL)
        io._stage = stage_then_die
        from gimletc.cli import main
        main(["compile", {RAG!r}, "-c", {GPU!r}, "-o", {str(out)!r}, "-q", "--no-baseline"])
        """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    assert not out.exists()
    temps = [p.name for p in tmp_path.iterdir()]
    assert len(temps) == 1 and temps[0].startswith(".plan.json.") and temps[0].endswith(".tmp")
    r = subprocess.run([sys.executable, "-m", "gimletc.cli", "compile", RAG, "-c", GPU, "-o", str(out), "-q",
                        "--no-baseline"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_loading_a_python_graph_says_it_runs_code(capsys):
    for cmd in ("compile", "graph"):
        code, out, _ = run_cli(capsys, cmd, "--help")
        text = " ".join(out.split())
        assert code == 0 and "RUNS its code" in text and "--load-timeout" in text


def test_build_moves_a_finished_build_into_place_and_cleans_a_killed_ones(capsys, tmp_path):
    """`build` builds in `.plan.artifacts.PID.X.tmp` and moves the files into plan.artifacts once all are
    built: an earlier build's files are replaced, other files in the folder kept, and a staging folder a
    killed build left behind (its process gone) is removed."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".plan.artifacts.{int(dead.stdout)}.abc123xy.tmp"
    (orphan / "onnx").mkdir(parents=True)
    (orphan / "onnx" / "half.onnx").write_bytes(b"half")
    args = build_args(tmp_path, "--no-iree")
    (tmp_path / "plan.artifacts" / "onnx").mkdir(parents=True)
    (tmp_path / "plan.artifacts" / "notes.txt").write_text("mine\n")
    (tmp_path / "plan.artifacts" / "dataflow.mlir").write_text("stale\n")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert not orphan.exists() and not list(tmp_path.glob(".plan.artifacts.*"))
    assert (tmp_path / "plan.artifacts" / "notes.txt").read_text() == "mine\n"
    assert "builtin.module" in (tmp_path / "plan.artifacts" / "dataflow.mlir").read_text()
    from gimletc.plan import load_plan

    plan = load_plan(tmp_path / "plan.json")
    assert plan.artifact_root == "plan.artifacts"
    for a in plan.artifacts:  # each recorded where it ended up, with its digest
        data = (tmp_path / a["path"]).read_bytes()
        assert a["path"].startswith("plan.artifacts/") and hashlib.sha256(data).hexdigest() == a["sha256"]


def test_draft_k_reaches_the_run(capsys, tmp_path):
    """`--draft answer=DRAFT:2`: the run drafts 2 tokens per step (never more than 2 per target step)."""
    args = build_args(tmp_path, "--no-iree", "--draft", f"answer={TINY / 'tiny-llama-draft.onnx'}:2")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    from gimletc.plan import load_plan

    (draft,) = [a for a in load_plan(tmp_path / "plan.json").artifacts if a.get("role") == "draft" and a["kind"] == "onnx"]
    assert draft["draft_k"] == 2
    code, out, err = run_cli(capsys, "run", str(tmp_path / "plan.json"), "--json", "--tools",
                             f"{TINY / 'tools.py'}:registry")
    assert code == 0, err
    spec = json.loads(out)["llms"]["answer"]["speculative"]
    assert spec["draft_k"] == 2 and 0 < spec["drafted"] <= 2 * spec["target_steps"]
    # An edited plan whose draft artifact says draft_k 0 is refused when loaded for a run (it used to run as 4).
    data = json.loads((tmp_path / "plan.json").read_text())
    next(a for a in data["artifacts"] if a.get("role") == "draft" and a["kind"] == "onnx")["draft_k"] = 0
    (tmp_path / "plan.json").write_text(json.dumps(data))
    code, out, err = run_cli(capsys, "run", str(tmp_path / "plan.json"), "--tools", f"{TINY / 'tools.py'}:registry")
    assert code == 2 and "draft_k = 0" in err and err.count("\n") == 1, err


# ---- the internal-error path ------------------------------------------------------------------------------


def test_an_unforeseen_exception_is_one_line_internal_error(capsys, monkeypatch):
    import gimletc.graph_io

    def broken(*a, **k):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(gimletc.graph_io, "load_graph", broken)
    code, out, err = run_cli(capsys, "graph", RAG)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("gimletc: error: internal error: ZeroDivisionError: planted")
    assert "report it" in err and "--verbose" in err
    code, out, err = run_cli(capsys, "--verbose", "graph", RAG)
    assert code == 2 and "Traceback (most recent call last)" in err and "ZeroDivisionError: planted" in err
    assert err.rstrip().splitlines()[-1].startswith("gimletc: error: internal error: ZeroDivisionError")


# ---- memory limits, under a real memory limit ----------------------------------------------------------------


def _run_limited(args: list[str], extra_mb: int) -> subprocess.CompletedProcess:
    """`gimletc ARGS` in a child whose address space may grow only `extra_mb` MB past what it maps
    after importing gimletc: a refusal must come from gimletc's own check, before memory runs out."""
    code = textwrap.dedent(f"""
        import resource, sys
        import gimletc.cli
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
        limit = mapped + {extra_mb} * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        gimletc.cli.main({args!r})
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_AS") or not Path("/proc/self/statm").exists(),
                    reason="needs RLIMIT_AS and /proc (Linux)")
def test_memory_refusals_hold_under_a_memory_limit(tmp_path):
    # An alias bomb: 9^9 = 387 million items once expanded; refused by counting, in 200 MB.
    bomb = write(tmp_path, "bomb.yaml", BOMB)
    r = _run_limited(["graph", bomb], 200)
    assert r.returncode == 2 and "aliases expand" in r.stderr and "out of memory" not in r.stderr, r.stderr
    # A 600 MB file (sparse: it takes no disk) is refused by its size before it is read, in 100 MB.
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(600 * 2**20)
    r = _run_limited(["show", str(big)], 100)
    assert r.returncode == 2 and "gimletc reads files up to" in r.stderr, r.stderr
    # Without gimletc's limits the same child runs out of memory: the limit is real.
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import resource, yaml
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 200 * 2**20,) * 2)
        try:
            data = yaml.safe_load(open({bomb!r}))
            print(repr(data)[:10**9].count("lol"))
        except MemoryError:
            print("MemoryError")
        """)], capture_output=True, text=True, timeout=300)
    assert "MemoryError" in r.stdout, (r.stdout[-200:], r.stderr[-500:])


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_AS") or not Path("/proc/self/statm").exists(),
                    reason="needs RLIMIT_AS and /proc (Linux)")
def test_simulator_memory_refusals_hold_under_a_memory_limit(tmp_path):
    """`simulate` estimates its memory before it allocates any and refuses what would not fit; under an
    address-space limit, the limit is what is left under it, whatever the machine has."""
    plan = write(tmp_path, "p.json", plan_text())
    # 10^9 requests: 160 GB of per-request results; refused before the arrivals are drawn, in 200 MB.
    r = _run_limited(["simulate", plan, "--rate", "1", "-n", "1000000000"], 200)
    assert r.returncode == 2 and "1,000,000,000 requests needs about 160.00 GB" in r.stderr, r.stderr
    assert "RLIMIT_AS" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    # 5 million fit this machine but not 200 MB: refused by the same estimate, naming the limit it came from.
    r = _run_limited(["simulate", plan, "--rate", "1", "-n", "5000000"], 200)
    assert r.returncode == 2 and "5,000,000 requests needs about 800" in r.stderr and "RLIMIT_AS" in r.stderr, r.stderr
    # With the estimate's limit overridden, the same child runs out of memory: the refusal is real.
    r = _run_limited(["simulate", plan, "--rate", "1", "-n", "5000000", "--memory-limit", "1000"], 200)
    assert r.returncode == 2 and "ran out of memory" in r.stderr, r.stderr


def test_a_long_compile_reports_progress_off_a_terminal(capsys, tmp_path):
    """From 2,000 ops, compile says what it is doing on stderr even when stderr is not a terminal."""
    nodes = [{"op": "input", "name": "q", "tokens": 10}]
    nodes += [{"op": "tool", "name": f"t{i}", "inputs": [nodes[-1]["name"] if i == 0 else f"t{i - 1}"],
               "cpu_s": 0.01, "output_tokens": 5} for i in range(2000)]
    nodes.append({"op": "output", "name": "o", "inputs": ["t1999"]})
    graph = write(tmp_path, "long.json", json.dumps({"name": "long", "nodes": nodes}))
    code, out, err = run_cli(capsys, "compile", graph, "-c", GPU, "-o", str(tmp_path / "p.json"), "--no-baseline")
    assert code == 0, err
    lines = err.splitlines()
    assert "loaded" in lines[0] and "2002 ops" in lines[0]
    for step in ("place done in", "schedule done in", "plan: replaying", "wrote"):
        assert any(step in ln for ln in lines), step
    code, out, err = run_cli(capsys, "compile", graph, "-c", GPU, "-o", str(tmp_path / "p.json"), "--no-baseline", "-q")
    assert code == 0 and err == ""
