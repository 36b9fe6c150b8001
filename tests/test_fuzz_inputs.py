"""Fuzzing every file format gimletc reads: whatever a file holds, the command that reads it
succeeds or prints one line starting `gimletc: error:` and exits 2; never a traceback, never the
CLI's "internal error" line (which means a bug gimletc did not foresee).

Each format is fuzzed from a valid file: Hypothesis walks into it and replaces a value (with
random JSON, a boundary number such as 0, -1, 1e308, 2**63, inf or NaN, or a string), deletes or
adds a key or an item, 1 to 3 times; the result is written as JSON or YAML (with NaN/Infinity
left in where json.dumps puts them). Raw bytes and byte-flipped valid files are tried too.

Formats and the command (or reader) each goes through:
- agent graph YAML/JSON: `gimletc graph FILE`
- cluster YAML: `gimletc hw show FILE`, and a few through `gimletc compile`
- plan JSON: `gimletc show FILE`, and through `gimletc simulate` (the whole plan mutated, or the numbers
  in its compiled IR replaced with boundary values: what the simulator relies on, gimletc.sim.plancheck)
- Hugging Face config.json: `gimletc models show FILE`
- calibration JSON: `gimletc.cost.calibrate.load_calibration`, and a few through `gimletc calibrate`
- `run --inputs` JSON: the reader `gimletc run` uses (gimletc.cli_runtime._read_inputs), and a few through
  `gimletc run` of the tiny ONNX agent's built plan
- arrival traces (CSV and JSON lines): `gimletc.sim.arrivals.load_trace`, and a few through `gimletc simulate`

The examples are derandomised (the same in every run, so CI does not flake) and few enough
that all of them take well under a minute; the readers' own limits (depth, aliases, size) are
tested directly in tests/test_hostile.py.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from _cli import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gimletc.errors import GimletError

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=100, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

GRAPH = yaml.safe_load("""
name: fuzz
tools:
  pytest: {cpu_s: 20.0, output_tokens: 300}
nodes:
  - {op: input, name: request, tokens: 2000}
  - {op: retrieve, name: ctx, query: request, index_docs: 200000, k: 8, doc_tokens: 512, embed_dim: 768}
  - {op: llm, name: plan, model: llama-3.1-8b, prompt: [request, ctx], system_tokens: 150, output_tokens: 80,
     draft: llama-3.2-1b, draft_k: 4, acceptance: 0.7}
  - op: loop
    name: fix
    expected: 3
    max: 8
    carry: [plan]
    body:
      - {op: llm, name: edit, model: llama-3.2-1b, prompt: [fix.args.0, request], output_tokens: 40}
      - {op: tool, name: run_tests, tool: pytest, inputs: [edit]}
    yield: [run_tests]
  - op: branch
    name: route
    probabilities: [0.8, 0.2]
    inputs: [fix]
    arms:
      - nodes: [{op: llm, name: polish, model: llama-3.2-1b, prompt: [fix], output_tokens: 10}]
        yield: [polish]
      - yield: [fix.results.0]
  - {op: code, name: lint, inputs: [fix], cpu_s: 2.0, output_tokens: 50}
  - {op: output, name: answer, inputs: [route, lint]}
""")

CLUSTER = yaml.safe_load((ROOT / "examples/clusters/mixed_rack.yaml").read_text())
HF_CONFIG = json.loads((ROOT / "tests/data/hf/llama-3.1-8b/config.json").read_text())
CALIBRATION = json.loads((ROOT / "src/gimletc/cost/data/h200_llama_calibration.json").read_text())
INPUTS = {"question": [1, 2, 3], "context": [4, 5]}
TRACE_ROWS = [{"arrival_s": 0.0, "input_tokens": 100, "output_tokens": 20},
              {"arrival_s": 0.5, "input_tokens": 300, "output_tokens": 10},
              {"arrival_s": 1.25, "input_tokens": 50, "output_tokens": 200}]

BOUNDARY = [0, -1, 1, -0.0, 0.5, 1e-300, 1e308, 2**63, -(2**63), 10**30, math.inf, -math.inf, math.nan, True,
            False, None, "", "x" * 200, "llama-3.1-8b", "cpu", "nvlink", [], {}]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.sampled_from(BOUNDARY))
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=10)


@st.composite
def _mutate_once(draw: Any, data: Any) -> Any:
    """`data` with one value replaced, or one key/item deleted or added, somewhere inside it."""
    if isinstance(data, dict) and data and draw(st.integers(0, 3)) > 0:  # walk in, usually
        key = draw(st.sampled_from(sorted(data, key=str)))
        out = dict(data)
        out[key] = draw(_mutate_once(data[key]))
        return out
    if isinstance(data, list) and data and draw(st.integers(0, 3)) > 0:
        i = draw(st.integers(0, len(data) - 1))
        out = list(data)
        out[i] = draw(_mutate_once(data[i]))
        return out
    action = draw(st.sampled_from(["replace", "boundary", "delete", "add"]))
    if action == "delete" and isinstance(data, dict) and data:
        out = dict(data)
        out.pop(draw(st.sampled_from(sorted(data, key=str))))
        return out
    if action == "delete" and isinstance(data, list) and data:
        out = list(data)
        out.pop(draw(st.integers(0, len(data) - 1)))
        return out
    if action == "add" and isinstance(data, dict):
        return {**data, draw(st.text(max_size=10) | st.sampled_from(sorted(map(str, data)) or ["x"])): draw(json_values)}
    if action == "add" and isinstance(data, list):
        return [*data, draw(json_values | st.sampled_from(data or [0]))]
    if action == "boundary":
        return draw(st.sampled_from(BOUNDARY))
    return draw(json_values)


@st.composite
def mutated(draw: Any, base: Any) -> Any:
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        data = draw(_mutate_once(data))
    return data


def _dump(data: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(data)  # NaN/Infinity appear as such: gimletc must refuse them, in one line
    return yaml.safe_dump(data, default_flow_style=None, sort_keys=False, allow_unicode=True)


@st.composite
def file_bytes(draw: Any, base: Any, as_json: bool) -> bytes:
    """A mutated document, a valid one with bytes flipped or cut, or random bytes."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "flipped", "binary"]))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "flipped":
        raw = bytearray(_dump(base, as_json).encode())
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            raw = raw[: draw(st.integers(0, len(raw)))]
        return bytes(raw)
    return _dump(draw(mutated(base)), as_json).encode("utf-8", "surrogatepass")


def assert_clean(code: int, out: str, err: str) -> None:
    """Success, or exactly one error line and exit 2, and never the internal-error line."""
    assert code in (0, 2), (code, err[-2000:])
    assert "Traceback" not in err and "internal error" not in err, err[-2000:]
    if code == 2:
        assert err.startswith("gimletc: error: ") and err.count("\n") == 1, err[-2000:]


def _write(tmp: Path, name: str, raw: bytes) -> Path:
    p = tmp / name
    p.write_bytes(raw)
    return p


@FUZZ
@given(as_json=st.booleans(), data=st.data())
def test_graph_files(tmp_path, capsys, as_json, data):
    raw = data.draw(file_bytes(GRAPH, as_json))
    path = _write(tmp_path, "g.json" if as_json else "g.yaml", raw)
    assert_clean(*run_cli(capsys, "graph", str(path)))


@FUZZ
@given(data=st.data())
def test_cluster_files(tmp_path, capsys, data):
    path = _write(tmp_path, "c.yaml", data.draw(file_bytes(CLUSTER, as_json=False)))
    assert_clean(*run_cli(capsys, "hw", "show", str(path), "--json"))


@settings(FUZZ, max_examples=8)
@given(data=st.data())
def test_cluster_files_through_compile(tmp_path, capsys, data):
    """A cluster that loads must also compile or fail in one line (routes, capacities, power)."""
    path = _write(tmp_path, "c.yaml", _dump(data.draw(mutated(CLUSTER)), as_json=False).encode())
    code, out, err = run_cli(capsys, "compile", str(ROOT / "examples/rag.py"), "-c", str(path),
                             "-o", str(tmp_path / "p.json"), "-q", "--no-baseline")
    assert_clean(code, out, err)


@pytest.fixture(scope="module")
def plan_data(tmp_path_factory) -> dict:
    from gimletc.compiler import compile

    return json.loads(compile(ROOT / "examples/rag.py", ROOT / "examples/clusters/mixed_rack.yaml").plan.to_json())


@FUZZ
@given(data=st.data())
def test_plan_files(tmp_path, capsys, plan_data, data):
    path = _write(tmp_path, "p.json", data.draw(file_bytes(plan_data, as_json=True)))
    assert_clean(*run_cli(capsys, "show", str(path)))


@pytest.fixture(scope="module")
def loop_plan_data(tmp_path_factory) -> dict:
    """The fuzz graph (a loop, a branch, a speculative call) compiled onto the mixed rack."""
    from gimletc.compiler import compile

    d = tmp_path_factory.mktemp("plan")
    (d / "g.json").write_text(json.dumps(GRAPH))
    return json.loads(compile(d / "g.json", ROOT / "examples/clusters/mixed_rack.yaml", baseline=False).plan.to_json())


def _simulate(capsys: Any, path: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "simulate", str(path), "--rate", "2", "-n", "10", "--json", *extra)


@settings(FUZZ, max_examples=15)
@given(data=st.data())
def test_plan_files_through_simulate(tmp_path, capsys, loop_plan_data, data):
    path = _write(tmp_path, "p.json", _dump(data.draw(mutated(loop_plan_data)), as_json=True).encode())
    assert_clean(*_simulate(capsys, path))


_IR_NUMBER = re.compile(r"(\b[a-z_]+ = )(-?[0-9][0-9.e+-]*)( : (?:f64|i64))")
IR_BOUNDARY = ["0", "1", "0.0", "1.0e-300", "1.0e+300", "1.0e+308", "4.0e+09", "9223372036854775807", "1000000000000",
               "123456789", "2", "0.5"]


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_plan_ir_numbers_through_simulate(tmp_path, capsys, loop_plan_data, data):
    """Each of 1 to 4 numeric attributes of the compiled IR (seconds, tokens, ctx, bytes, expected, max,
    batch, ...) replaced with a boundary value: the plan loads and simulates, or fails in one line."""
    ir = loop_plan_data["ir"]
    spots = list(_IR_NUMBER.finditer(ir))
    picks = sorted(set(data.draw(st.lists(st.integers(0, len(spots) - 1), min_size=1, max_size=4))), reverse=True)
    for i in picks:
        m = spots[i]
        value = data.draw(st.sampled_from(IR_BOUNDARY))
        if m[3].endswith("f64") and "." not in value and "e" not in value:
            value += ".0"
        if m[3].endswith("i64") and ("." in value or "e" in value):
            value = str(int(float(value))) if float(value) < 2**63 else "9223372036854775807"
        ir = ir[: m.start(2)] + value + ir[m.end(2):]
    plan = {**loop_plan_data, "ir": ir}
    path = _write(tmp_path, "p.json", json.dumps(plan).encode())
    assert_clean(*_simulate(capsys, path))


@FUZZ
@given(data=st.data())
def test_hugging_face_configs(tmp_path, capsys, data):
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    path = _write(d, "config.json", data.draw(file_bytes(HF_CONFIG, as_json=True)))
    assert_clean(*run_cli(capsys, "models", "show", str(path), "--json"))


@FUZZ
@given(data=st.data())
def test_calibration_files(tmp_path, data):
    from gimletc.cost.calibrate import load_calibration

    path = _write(tmp_path, "cal.json", data.draw(file_bytes(CALIBRATION, as_json=True)))
    try:
        load_calibration(path)
    except GimletError as e:
        assert "\n" not in str(e)


@settings(FUZZ, max_examples=6)
@given(data=st.data())
def test_calibration_files_through_the_command(tmp_path, capsys, data):
    path = _write(tmp_path, "cal.json", _dump(data.draw(mutated(CALIBRATION)), as_json=True).encode())
    assert_clean(*run_cli(capsys, "calibrate", str(path)))


@FUZZ
@given(data=st.data())
def test_run_inputs_files(tmp_path, data):
    from gimletc.cli_runtime import _read_inputs

    path = _write(tmp_path, "inputs.json", data.draw(file_bytes(INPUTS, as_json=True)))
    try:
        got = _read_inputs(path)
    except GimletError as e:
        assert "\n" not in str(e)
    else:
        assert all(isinstance(v, list) for v in got.values())


@pytest.fixture(scope="module")
def tiny_built(tmp_path_factory) -> Path:
    """The tiny ONNX agent's plan with its artifacts (ONNX only)."""
    from gimletc.compiler import compile
    from gimletc.targets.build import build_artifacts

    d = tmp_path_factory.mktemp("tiny")
    r = compile(ROOT / "examples/tiny_llm/agent.py", ROOT / "examples/clusters/h200_mi300x.yaml",
                pins={"answer.prefill": "mi300x", "answer.decode": "h200"}, baseline=False)
    arts = build_artifacts(r, d / "plan.artifacts", backends=(), plan_dir=d)
    r.plan.model_copy(update={"artifacts": arts, "artifact_root": "plan.artifacts"}).write(d / "plan.json")
    return d / "plan.json"


@settings(FUZZ, max_examples=10)
@given(data=st.data())
def test_run_inputs_files_through_run(tmp_path, capsys, tiny_built, data):
    path = _write(tmp_path, "inputs.json", data.draw(file_bytes({"question": [1, 2, 3, 250]}, as_json=True)))
    assert_clean(*run_cli(capsys, "run", str(tiny_built), "--json", "--inputs", str(path), "--tools",
                          f"{ROOT / 'examples/tiny_llm/tools.py'}:registry"))


@st.composite
def trace_bytes(draw: Any) -> bytes:
    rows = draw(mutated(TRACE_ROWS))
    kind = draw(st.sampled_from(["csv", "jsonl", "binary"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "jsonl":
        return "\n".join(json.dumps(r) for r in rows).encode() if isinstance(rows, list) else json.dumps(rows).encode()
    if not isinstance(rows, list):
        rows = [rows]
    keys = list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r)) or ["arrival_s"]
    lines = [",".join(map(str, keys))]
    lines += [",".join(str(r.get(k, "")) if isinstance(r, dict) else str(r) for k in keys) for r in rows]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@FUZZ
@given(data=st.data())
def test_arrival_traces(tmp_path, data):
    from gimletc.sim.arrivals import load_trace

    path = _write(tmp_path, "trace.csv", data.draw(trace_bytes()))
    try:
        arr = load_trace(path)
    except GimletError as e:
        assert "\n" not in str(e)
    else:
        assert len(arr.times) >= 1 and all(math.isfinite(t) and t >= 0 for t in arr.times)


@pytest.fixture(scope="module")
def rag_plan(tmp_path_factory) -> Path:
    from gimletc.compiler import compile

    path = tmp_path_factory.mktemp("rag") / "rag.json"
    compile(ROOT / "examples/rag.py", ROOT / "examples/clusters/gpu_only.yaml", baseline=False).plan.write(path)
    return path


@settings(FUZZ, max_examples=12)
@given(data=st.data(), rate=st.sampled_from([None, "1e-300", "1e-9", "3", "1e300"]))
def test_arrival_traces_through_simulate(tmp_path, capsys, rag_plan, data, rate):
    path = _write(tmp_path, "trace.csv", data.draw(trace_bytes()))
    extra = ("--rate", rate) if rate else ()
    assert_clean(*run_cli(capsys, "simulate", str(rag_plan), "--arrival-trace", str(path), "--json", *extra))
