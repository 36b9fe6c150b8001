"""`gimletc deploy` and `gimletc compare`: engine launch commands checked against goldens written by hand
from each engine's source (tests/golden/deploy/), every emitted flag checked against the engines' own
declarations, the deployment folder written whole or not at all, and the benchmark script run against
a local OpenAI-compatible stand-in server."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gimletc.compiler import compile as compile_graph
from gimletc.deploy.description import DeployError, from_plan
from gimletc.deploy.write import render, write_folder

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "deploy"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cli import run_cli  # noqa: E402
from standin_openai import Pacing, StandIn  # noqa: E402


class Ran:
    def __init__(self, code: int, out: str, err: str):
        self.exit_code, self.stdout, self.stderr, self.output = code, out, err, out + err


def gim(capsys, *args: str) -> Ran:
    return Ran(*run_cli(capsys, *args))


# ---- plans ---------------------------------------------------------------------------------------------


def _plan(graph: str | object, cluster: str, **kw: object):
    return compile_graph(graph if not isinstance(graph, str) else str(ROOT / graph), str(ROOT / cluster), **kw).plan


def disagg_graph():
    """A llama-3.1-8b chat call: 1,500-token prompt, 250 output tokens."""
    from gimletc import AgentGraph

    g = AgentGraph("chat-disagg")
    q = g.input("prompt", tokens=1500)
    r = g.llm("chat", model="llama-3.1-8b", prompt=[q], output_tokens=250)
    g.output("reply", [r])
    return g.build()


@pytest.fixture(scope="module")
def demo_plan():
    return _plan("examples/coding_agent.py", "examples/clusters/mixed_rack.yaml", stack="vllm")


@pytest.fixture(scope="module")
def disagg_plan():
    """Prefill pinned to h100_a100's H100s, decode to its A100s: a disaggregated pair across chip types."""
    return _plan(disagg_graph(), "examples/scenarios/clusters/h100_a100.yaml", stack="vllm",
                 pins={"chat.prefill": "h100-sxm", "chat.decode": "a100-sxm-80gb"})


# ---- goldens -------------------------------------------------------------------------------------------


def read_golden(path: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    """[section] -> (env, argv) of a hand-written launch golden (`env NAME=VALUE` lines, then the command)."""
    out: dict[str, tuple[dict[str, str], list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        words = shlex.split(raw, comments=True)
        if not words:
            continue
        if len(words) == 1 and words[0].startswith("[") and words[0].endswith("]"):
            current = words[0][1:-1]
            out[current] = ({}, [])
            continue
        assert current is not None, f"{path}: a line before the first [section]"
        if words[0] == "env":
            k, _, v = words[1].partition("=")
            out[current][0][k] = v
        else:
            out[current][1].extend(words)
    return out


def launches(plan, engine: str):
    d = from_plan(plan, engine)
    return {lc.group: (dict(lc.env), list(lc.argv)) for lc in render(d, engine).launches}


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("case", ["coding_agent", "disagg"])
def test_launches_equal_the_hand_written_goldens(engine, case, demo_plan, disagg_plan):
    plan = demo_plan if case == "coding_agent" else disagg_plan
    want = read_golden(GOLDEN / engine / f"{case}.txt")
    got = launches(plan, engine)
    assert sorted(got) == sorted(want)
    for group, (env, argv) in want.items():
        assert got[group][1] == argv, group
        assert got[group][0] == env, group


@pytest.mark.parametrize("case", ["coding_agent", "disagg"])
def test_dynamo_manifest_equals_the_hand_written_golden(case, demo_plan, disagg_plan):
    plan = demo_plan if case == "coding_agent" else disagg_plan
    r = render(from_plan(plan, "dynamo", "vllm"), "dynamo", "vllm")
    assert yaml.safe_load(r.files["dynamo/deployment.yaml"]) == yaml.safe_load((GOLDEN / "dynamo" / f"{case}.yaml").read_text())


# ---- every flag of every example against the engines' declarations -----------------------------------


def read_flags(path: Path) -> dict[str, list[str]]:
    out = {}
    for raw in path.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if words and words[0].startswith("--"):
            out[words[0]] = words[1:]
    return out


def _check_value(flag: str, kind: list[str], value: str) -> None:
    k = kind[0]
    if k == "str":
        assert value and not value.startswith("--"), (flag, value)
    elif k.startswith("int>="):
        assert int(value) >= int(k[5:]), (flag, value)
    elif k == "float(0,1]":
        assert 0 < float(value) <= 1, (flag, value)
    elif k == "choice":
        assert value in kind[1].split("|"), (flag, value)
    elif k == "json":
        obj = json.loads(value)
        spec = dict(s.split("=", 1) for s in kind[1:])
        assert set(obj) <= set(spec), (flag, sorted(set(obj) - set(spec)))
        for key, v in obj.items():
            sk = spec[key]
            if sk.startswith("choice:"):
                assert v in sk[7:].split("|"), (flag, key, v)
            elif sk.startswith("int>="):
                assert isinstance(v, int) and v >= int(sk[5:]), (flag, key, v)
            else:
                assert isinstance(v, str) and v, (flag, key, v)
    else:
        raise AssertionError(f"unknown kind {k} of {flag}")


def check_argv(argv: list[str], table: dict[str, list[str]]) -> set[str]:
    """Every --flag of `argv` is declared in `table` and takes a value of its kind; returns the flags seen."""
    seen: set[str] = set()
    i = 0
    while i < len(argv) and not argv[i].startswith("--"):
        i += 1
    while i < len(argv):
        flag = argv[i]
        assert flag in table, f"{flag} is not a flag of the engine (tests/golden/deploy/flags)"
        kind = table[flag]
        seen.add(flag)
        if kind[0] == "flag":
            i += 1
            continue
        if kind[0] == "words+":  # one or more values, up to the next flag
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            assert j > i + 1, (flag, "needs at least one value")
            i = j
            continue
        n = int(kind[1]) if kind[0] == "words" else 1
        values = argv[i + 1:i + 1 + n]
        assert len(values) == n and not any(v.startswith("--") for v in values), (flag, values)
        if kind[0] != "words":
            _check_value(flag, kind, values[0])
        i += 1 + n
    return seen


@pytest.fixture(scope="module")
def example_plans(demo_plan, disagg_plan):
    return {
        "demo": demo_plan,
        "disagg": disagg_plan,
        "pipeline": _plan("examples/scenarios/moe_attn_ffn.py", "examples/scenarios/clusters/h200_x16.yaml",
                          pipeline="expand-llm,place{partitions=layers},insert-transfers,schedule,overlap"),
        "attn-ffn": _plan("examples/scenarios/moe_attn_ffn.py", "examples/scenarios/clusters/h200_x16.yaml",
                          pipeline="expand-llm,place{partitions=attn-ffn},insert-transfers,schedule,overlap"),
        "multi-fp8": _plan("examples/multi_agent.py", "examples/clusters/gpu_only.yaml", weight_dtype="fp8", kv_dtype="fp8"),
        "amd": _plan("examples/scenarios/cross_vendor.py", "examples/scenarios/clusters/mi300x_h200.yaml"),
    }


@pytest.mark.parametrize("engine", ["vllm", "sglang", "dynamo-vllm", "dynamo-sglang"])
def test_every_emitted_flag_is_the_engines_own(engine, example_plans):
    eng, _, backend = engine.partition("-")
    table = read_flags(GOLDEN / "flags" / ("vllm-0.31.0.txt" if (backend or eng) == "vllm" else "sglang-0.5.21.txt"))
    seen: set[str] = set()
    for plan in example_plans.values():
        d = from_plan(plan, eng, backend or None)
        for lc in render(d, eng, backend or "vllm").launches:
            seen |= check_argv(list(lc.argv), table)
    # The examples exercise parallelism, formats, batching, speculation and disaggregation.
    if (backend or eng) == "vllm":
        assert {"--pipeline-parallel-size", "--quantization", "--kv-cache-dtype", "--max-num-seqs",
                "--speculative-config", "--kv-transfer-config"} <= seen
    else:
        assert {"--pp-size", "--quantization", "--kv-cache-dtype", "--max-running-requests",
                "--speculative-algorithm", "--disaggregation-mode"} <= seen


def test_flags_checker_rejects_what_no_engine_accepts():
    table = read_flags(GOLDEN / "flags" / "vllm-0.31.0.txt")
    for bad in (["vllm", "serve", "m", "--tp", "4"], ["vllm", "serve", "m", "--kv-cache-dtype", "fp4"],
                ["vllm", "serve", "m", "--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"both"}'],
                ["vllm", "serve", "m", "--gpu-memory-utilization", "1.5"]):
        with pytest.raises(AssertionError):
            check_argv(bad, table)


# ---- what a plan becomes ----------------------------------------------------------------------------


def test_demo_plan_groups_no_engine_parts_and_cpu_workers(demo_plan):
    d = from_plan(demo_plan, "vllm")
    g = {x.name: x for x in d.groups}
    assert set(g) == {"gpt-oss-120b-agg", "gpt-oss-20b-agg"}
    big = g["gpt-oss-120b-agg"]
    assert big.calls == ("edit", "plan") and big.parallel.tp == 4 and big.chip == "h100-sxm"
    assert big.speculation is not None and big.speculation.k == 4 and not big.speculation.colocated
    assert big.speculation.draft_chip == "dmatrix-corsair"
    assert any("drafts with llama-3.2-1b on 2x dmatrix-corsair" in n for n in big.notes)
    assert any("edit (not speculative in the plan) are drafted too" in n for n in big.notes)
    assert any("decodes on 4x dmatrix-corsair" in n for n in g["gpt-oss-20b-agg"].notes)
    none = {n.name: n for n in d.no_engine}
    assert set(none) == {"plan-draft", "summary-decode"}
    assert {n.toolchain for n in none.values()} == {"d-matrix (Aviator SDK)"}
    (w,) = d.cpu_workers
    assert w.host == "gpu0.host" and w.lanes == 8 and {op for op, *_ in w.ops} == {"repo_context", "run_tests"}
    assert dict((op, (k, s, r)) for op, k, s, r in w.ops)["run_tests"] == ("tool", 20.0, 3.0)


def test_uneven_pipeline_keeps_its_layer_split_in_the_engine_environment(example_plans):
    d = from_plan(example_plans["pipeline"], "vllm")
    (g,) = d.groups
    assert g.parallel.pp == 5 and g.parallel.tp == 2 and g.parallel.layer_split == (18, 19, 19, 19, 19)
    (lc,) = render(d, "vllm").launches
    assert dict(lc.env)["VLLM_PP_LAYER_PARTITION"] == "18,19,19,19,19"
    (lc,) = render(from_plan(example_plans["pipeline"], "sglang"), "sglang").launches
    assert dict(lc.env)["SGLANG_PP_LAYER_PARTITION"] == "18,19,19,19,19"


def test_formats_become_quantization_and_kv_cache_flags(example_plans):
    v = launches(example_plans["multi-fp8"], "vllm")
    s = launches(example_plans["multi-fp8"], "sglang")
    for argv in (a for _, a in v.values()):
        assert argv[argv.index("--quantization") + 1] == "fp8" and argv[argv.index("--kv-cache-dtype") + 1] == "fp8"
    for argv in (a for _, a in s.values()):
        assert argv[argv.index("--kv-cache-dtype") + 1] == "fp8_e4m3"


def test_amd_gpus_get_hip_devices(example_plans):
    for env, _ in launches(example_plans["amd"], "vllm").values():
        assert "HIP_VISIBLE_DEVICES" in env and "CUDA_VISIBLE_DEVICES" not in env


def test_request_shape_of_the_coding_agent(demo_plan):
    from gimletc.sim.template import loop_probability

    nodes = {n["id"]: n for n in from_plan(demo_plan, "vllm").request["nodes"]}
    assert list(nodes) == ["repo_context", "plan", "fix", "summary"]
    assert nodes["plan"] | {"after": None} == {"id": "plan", "kind": "llm", "model": "gpt-oss-120b", "input_tokens": 7596,
                                               "output_tokens": 800, "batch": 1, "after": None}
    assert nodes["plan"]["after"] == ["repo_context"]
    fix = nodes["fix"]
    assert fix["p"] == loop_probability(3.0, 8) and fix["max"] == 8 and fix["after"] == ["plan", "repo_context"]
    body = {n["id"]: n for n in fix["body"]}
    assert body["edit"]["output_tokens"] == 400 and body["run_tests"] == {
        "id": "run_tests", "kind": "cpu", "op_kind": "tool", "seconds": 20.0, "after": ["edit"]}
    assert nodes["summary"]["after"] == ["fix", "plan"] and nodes["summary"]["input_tokens"] == 3100


def test_no_engine_parts_carry_build_artifacts_of_onnx_models(capsys, tmp_path):
    """The tiny ONNX Llama pinned to a d-Matrix card: deploy writes what `gimletc build` writes for it."""
    from gimletc.targets.build import build_plan_artifacts

    plan_path = tmp_path / "tiny.json"
    plan = _plan("examples/tiny_llm/agent.py", "examples/clusters/mixed_rack.yaml", pins={"answer.decode": "dmatrix-corsair"})
    plan.write(plan_path)
    assert gim(capsys, *["deploy", str(plan_path), "--engine", "vllm", "-o", str(tmp_path / "dep")]).exit_code == 0
    desc = json.loads((tmp_path / "dep" / "deployment.json").read_text())["deployment"]
    (n,) = desc["no_engine"]
    assert n["toolchain"] == "d-matrix (Aviator SDK)" and n["artifacts"]
    built = build_plan_artifacts(plan, tmp_path / "built", plan_dir=tmp_path, backends=())
    by_op = {a["op"]: a["sha256"] for a in built if a["kind"] == "onnx"}
    for a in n["artifacts"]:
        assert a["toolchain"] == "d-matrix (Aviator SDK)" and a["sha256"] == by_op[a["op"]]
        assert (tmp_path / "dep" / a["path"]).is_file()


# ---- the command and its folder -------------------------------------------------------------------------


def test_cli_deploy_writes_the_folder_and_replaces_only_its_own(capsys, tmp_path, demo_plan):
    plan = tmp_path / "plan.json"
    demo_plan.write(plan)
    out = tmp_path / "dep"
    r = gim(capsys, *["deploy", str(plan), "--engine", "dynamo", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "no engine: summary-decode" in r.output
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", "benchmark/bench.py", "benchmark/workload.json", "deployment.json",
                     "dynamo/cpu-workers.yaml", "dynamo/deployment.yaml"]
    workers = list(yaml.safe_load_all((out / "dynamo/cpu-workers.yaml").read_text()))
    assert [(w["spec"]["replicas"], w["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]) for w in workers] \
        == [(8, {"cpu": "1"})]
    r = gim(capsys, *["deploy", str(plan), "--engine", "vllm", "-o", str(out)])  # an earlier deploy folder: replaced whole
    assert r.exit_code == 0 and not (out / "dynamo").exists() and (out / "vllm" / "gpt-oss-120b-agg.sh").is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    r = gim(capsys, *["deploy", str(plan), "--engine", "vllm", "-o", str(other)])
    assert r.exit_code == 2 and "not an earlier `gimletc deploy` folder" in r.stderr and "Traceback" not in r.output
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_cli_deploy_bad_plan_is_one_line_and_writes_nothing(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = gim(capsys, *["deploy", str(bad), "--engine", "vllm", "-o", str(tmp_path / "dep")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "dep").exists()


def test_unknown_engine_is_a_deploy_error(demo_plan):
    with pytest.raises(DeployError, match="unknown engine 'trtllm'"):
        from_plan(demo_plan, "trtllm")


# ---- a saved serving search as a deployment ----------------------------------------------------------------

SEARCH = ("search", str(ROOT / "examples/rag.py"), "--cluster", str(ROOT / "examples/clusters/gpu_only.yaml"),
          "--slo-ttft-ms", "300", "--slo-tpot-ms", "10", "--requests", "100")
BEST_DISAGG = "disagg 4x h100-sxm TP1 prefill + 2x h100-sxm TP2 decode"  # what the goldens were written for


def _saved(tmp_path_factory, modes: str) -> Path:
    path = tmp_path_factory.mktemp("search") / "search.json"
    code, out, err = run_cli(_NoCapture(), *SEARCH, "--modes", modes, "--save", str(path))
    assert code == 0, err
    return path


class _NoCapture:
    """run_cli's capsys for module fixtures (which cannot take the function-scoped capsys)."""

    def readouterr(self):
        class _C:
            out = err = ""
        return _C()


@pytest.fixture(scope="module")
def saved_disagg(tmp_path_factory):
    """`gimletc search examples/rag.py --cluster gpu_only.yaml --modes disagg --requests 100 --save FILE`."""
    return _saved(tmp_path_factory, "disagg")


@pytest.fixture(scope="module")
def saved_agg(tmp_path_factory):
    return _saved(tmp_path_factory, "agg")


def search_deployment(path: Path, engine: str, rank: int | None = None, policy: str | None = None):
    from gimletc.deploy.search import from_search
    from gimletc.serving.saved import load_search_result

    return from_search(load_search_result(path), str(path), engine, rank, policy)


def test_saved_disagg_search_ranks_first_the_configuration_the_goldens_describe(saved_disagg):
    doc = json.loads(saved_disagg.read_text())
    assert doc["configurations"][0]["rank"] == 1 and doc["configurations"][0]["label"] == BEST_DISAGG, \
        "the search's best configuration moved: rewrite tests/golden/deploy/*/search_disagg.* by hand for the new one"


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_search_launches_equal_the_hand_written_goldens(engine, saved_disagg):
    d = search_deployment(saved_disagg, engine)
    got = {lc.group: (dict(lc.env), list(lc.argv)) for lc in render(d, engine).launches}
    want = read_golden(GOLDEN / engine / "search_disagg.txt")
    assert sorted(got) == sorted(want)
    for group, (env, argv) in want.items():
        assert got[group][1] == argv, group
        assert got[group][0] == env, group


def test_search_dynamo_manifest_equals_the_hand_written_golden(saved_disagg):
    r = render(search_deployment(saved_disagg, "dynamo", policy="vllm"), "dynamo", "vllm")
    assert yaml.safe_load(r.files["dynamo/deployment.yaml"]) == \
        yaml.safe_load((GOLDEN / "dynamo" / "search_disagg.yaml").read_text())


@pytest.mark.parametrize("engine", ["vllm", "sglang", "dynamo-vllm", "dynamo-sglang"])
def test_every_flag_of_every_saved_configuration_is_the_engines_own(engine, saved_disagg, saved_agg):
    """Each configuration of both saved searches (aggregated pools behind a router, disaggregated pools of
    several sizes), every launch's flags against the engine's declarations."""
    eng, _, backend = engine.partition("-")
    table = read_flags(GOLDEN / "flags" / ("vllm-0.31.0.txt" if (backend or eng) == "vllm" else "sglang-0.5.21.txt"))
    seen: set[str] = set()
    for path in (saved_disagg, saved_agg):
        for c in json.loads(path.read_text())["configurations"]:
            d = search_deployment(path, eng, c["rank"], backend or None)
            for lc in render(d, eng, backend or "vllm").launches:
                seen |= check_argv(list(lc.argv), table)
    if eng == "sglang":
        assert {"--worker-urls", "--pd-disaggregation", "--disaggregation-bootstrap-port"} <= seen


def test_aggregated_pool_gets_a_router_and_dynamo_replicas(saved_agg):
    doc = json.loads(saved_agg.read_text())
    best = doc["configurations"][0]
    group = best["models"][0]["groups"][0]
    assert group["role"] == "agg" and group["replicas"] > 1
    d = search_deployment(saved_agg, "sglang")
    r = render(d, "sglang")
    router = next(lc for lc in r.launches if lc.group.startswith("router-"))
    urls = list(router.argv[router.argv.index("--worker-urls") + 1:router.argv.index("--host")])
    assert len(urls) == group["replicas"] == len({lc.group for lc in r.launches} - {router.group})
    assert r.endpoints["answer"].endswith(f":{router.argv[-1]}")
    devices = [tuple(e["devices"]) for e in group["engines"]]
    assert [g.devices for g in d.groups] == devices  # each server on the devices the search placed it on
    comp = yaml.safe_load(render(search_deployment(saved_agg, "dynamo"), "dynamo").files["dynamo/deployment.yaml"])
    workers = comp["spec"]["components"][1:]
    assert [(w["type"], w["replicas"]) for w in workers] == [("worker", group["replicas"])]
    assert workers[0]["podTemplate"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": str(group["tp"])}


def test_speculative_search_drafts_on_the_targets_gpus_and_lists_the_sram_draft(tmp_path_factory):
    """A speculative unit (verify on an H100, draft on a Corsair card): the engine gets the draft model and
    the saved k, says it drafts on its own GPU, and the Corsair draft is a part no engine runs."""
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    code, _, err = run_cli(_NoCapture(), "search", str(ROOT / "examples/scenarios/speculative.py"), "--cluster",
                           str(ROOT / "examples/scenarios/clusters/gpu_corsair.yaml"), "--slo-ttft-ms", "5000",
                           "--slo-tpot-ms", "20", "--modes", "spec", "--requests", "30", "--save", str(path))
    assert code == 0, err
    best = json.loads(path.read_text())["configurations"][0]["models"][0]
    assert best["mode"] == "spec"
    d = search_deployment(path, "sglang")
    (g,) = d.groups
    assert g.role == "agg" and g.speculation is not None and not g.speculation.colocated
    assert (g.speculation.draft_model, g.speculation.k) == (best["spec"]["draft"], best["spec"]["k"])
    assert any("drafts on its own" in n for n in g.notes)
    (n,) = d.no_engine
    assert n.role == "draft" and n.chip == "dmatrix-corsair" and n.toolchain
    argv = list(render(d, "sglang").launches[0].argv)
    assert argv[argv.index("--speculative-num-steps") + 1] == str(best["spec"]["k"])
    check_argv(argv, read_flags(GOLDEN / "flags" / "sglang-0.5.21.txt"))


def test_cli_deploys_a_saved_search_with_its_own_prediction(capsys, tmp_path, saved_disagg):
    out = tmp_path / "dep"
    r = gim(capsys, "deploy", str(saved_disagg), "--engine", "sglang", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "router-llama-3-1-8b-decode" in r.stdout
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert "benchmark/predicted.json" in files and "sglang/router-llama-3-1-8b-decode.sh" in files
    doc = json.loads(saved_disagg.read_text())
    sim = doc["configurations"][0]["simulated"]
    pred = json.loads((out / "benchmark/predicted.json").read_text())
    assert pred["ttft_ms"]["p90"] == sim["ttft_p90_ms"] and pred["throughput_tok_s"] == sim["tok_s"]
    shape = json.loads((out / "benchmark/workload.json").read_text())
    call = doc["workload"]["llama-3.1-8b"]["calls"][0]
    assert [(n["id"], n["input_tokens"], n["output_tokens"]) for n in shape["nodes"]] == \
        [("answer", call["prompt_tokens"] + call["context_tokens"], call["output_tokens"])]
    readme = (out / "README.md").read_text()
    assert f"--rate {sim['rate_req_s']!r} --requests 100 --slo-ttft-ms 300 --slo-tpot-ms 10" in readme
    # compare reads the search's prediction (a measurement made of its own figures lies on them)
    measured = dict(pred, source="measured: hand-made", ttft_ms={"p90": pred["ttft_ms"]["p90"] * 1.1})
    (tmp_path / "m.json").write_text(json.dumps(measured))
    r = gim(capsys, "compare", str(out / "benchmark/predicted.json"), str(tmp_path / "m.json"), "--json")
    assert r.exit_code == 0, r.output
    rows = {row["figure"]: row for row in json.loads(r.stdout)["rows"]}
    assert rows["TTFT p90 ms"]["error"] == pytest.approx(0.1) and json.loads(r.stdout)["warnings"] == []
    # --config picks another rank; a rank the file lacks, or --config with a plan, is one line
    r = gim(capsys, "deploy", str(saved_disagg), "--engine", "vllm", "-o", str(tmp_path / "d2"), "--config", "2")
    assert r.exit_code == 0 and doc["configurations"][1]["label"] in (tmp_path / "d2/README.md").read_text()
    r = gim(capsys, "deploy", str(saved_disagg), "--engine", "vllm", "-o", str(tmp_path / "d3"), "--config", "99")
    assert r.exit_code == 2 and "no configuration of rank 99" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d3").exists()


def test_deploy_config_option_needs_a_saved_search(capsys, tmp_path, disagg_plan):
    plan = tmp_path / "plan.json"
    disagg_plan.write(plan)
    r = gim(capsys, "deploy", str(plan), "--engine", "vllm", "-o", str(tmp_path / "d"), "--config", "1")
    assert r.exit_code == 2 and "is a plan, not a saved search result" in r.stderr
    assert not (tmp_path / "d").exists()


# ---- the benchmark against a stand-in server, and compare ------------------------------------------------


def bench_graph():
    from gimletc import AgentGraph

    g = AgentGraph("bench-small")
    q = g.input("question", tokens=200)
    a = g.llm("ask", model="llama-3.1-8b", prompt=[q], output_tokens=20)
    g.tool_spec("lookup", cpu_s=0.05, output_tokens=50)
    t = g.tool("lookup_call", tool="lookup", inputs=[a])
    with g.loop("refine", expected=2, max=3, carry=[t]) as lp:
        r = g.llm("revise", model="llama-3.1-8b", prompt=[lp.args[0], q], output_tokens=10)
        lp.yield_(r)
    g.output("out", [lp.results[0]])
    return g.build()


@pytest.fixture(scope="module")
def bench_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    plan = _plan(bench_graph(), "examples/clusters/gpu_only.yaml")
    plan.write(tmp / "plan.json")
    d = from_plan(plan, "vllm")
    write_folder(tmp / "dep", d, "vllm", render(d, "vllm"), plan=plan, plan_path=tmp / "plan.json")
    return tmp


def run_bench(folder: Path, url: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = folder / f"measured-{abs(hash(args))}.json"
    p = subprocess.run([sys.executable, str(folder / "dep" / "benchmark" / "bench.py"), "--base-url", url, "--out", str(out),
                        *args], capture_output=True, text=True, timeout=120, cwd=folder)
    return p, (json.loads(out.read_text()) if out.exists() else {})


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_benchmark_measures_the_stand_in_servers_pacing(api, bench_folder):
    pace = Pacing(base_s=0.002, prefill_s_per_token=2e-5, tpot_s=0.004)
    server = StandIn(pace).start()
    try:
        p, m = run_bench(bench_folder, server.url, "--rate", "5", "--requests", "12", "--api", api)
    finally:
        server.stop()
    assert p.returncode == 0, p.stderr
    assert m["requests"] == m["completed"] == 12 and m["failed"] == 0
    assert m["source"].startswith("measured")
    # Every call asked for exactly its planned output, from the model the engine serves.
    bodies = [r["body"] for r in server.requests]
    assert {b["model"] for b in bodies} == {"llama-3.1-8b"}
    assert sorted({b["max_tokens"] for b in bodies}) == [10, 20] and all(b["ignore_eos"] and b["stream"] for b in bodies)
    asks = [b for b in bodies if b["max_tokens"] == 20]
    assert len(asks) == 12  # one `ask` per request; `revise` 1-3 times each
    assert 12 <= len(bodies) - len(asks) <= 36
    if api == "completions":
        assert m["prompt_tokens_p50"] == {"ask": 200, "revise": 250}
    # Timings: the stand-in's pacing, plus at most a loopback round trip's slack.
    tpot = m["tpot_ms"]
    assert pace.tpot_s * 1e3 * 0.95 <= tpot["p50"] <= pace.tpot_s * 1e3 * 1.5
    ttft_ask = pace.ttft(200) * 1e3
    assert ttft_ask <= m["ttft_ms"]["p50"] <= ttft_ask + 40
    # End to end: ask, the 50 ms tool, at least one revise (2.5 ms + 9 tokens).
    floor = ttft_ask + 19 * 4 + 50 + pace.ttft(250) * 1e3 + 9 * 4
    assert floor <= m["e2e_ms"]["p50"] and m["e2e_ms"]["max"] < 5000
    assert m["throughput_tok_s"] > 0 and set(m["llms"]) == {"ask", "revise"}


def test_benchmark_goodput_bisects_the_rate_over_real_runs(bench_folder):
    server = StandIn(Pacing(tpot_s=0.004)).start()
    try:
        # TPOT 4 ms always misses a 3 ms SLO: the rate halves on every run and the goodput is 0.
        p, m = run_bench(bench_folder, server.url, "--rate", "20", "--requests", "4", "--tool-time", "zero",
                         "--slo-tpot-ms", "3", "--goodput", "--goodput-max-evals", "3")
        assert p.returncode == 0, p.stderr
        assert m["goodput_req_s"] == 0 and [pt["rate_req_s"] for pt in m["goodput"]["points"]] == [5.0, 10.0, 20.0]
        assert all(pt["attainment"] == 0 for pt in m["goodput"]["points"])
        # A loose SLO holds at every rate tried: the rate doubles each run.
        p, m = run_bench(bench_folder, server.url, "--rate", "20", "--requests", "4", "--tool-time", "zero",
                         "--slo-tpot-ms", "100", "--goodput", "--goodput-max-evals", "3")
        assert m["goodput_req_s"] == 80.0 and m["slo_attainment"] == 1.0
    finally:
        server.stop()


def test_compare_reads_the_benchmark_and_the_simulation(capsys, bench_folder, tmp_path):
    server = StandIn(Pacing()).start()
    try:
        p, _ = run_bench(bench_folder, server.url, "--rate", "4", "--requests", "8", "--seed", "3")
    finally:
        server.stop()
    assert p.returncode == 0, p.stderr
    measured = next(bench_folder.glob("measured-*.json"))
    sim = gim(capsys, *["simulate", str(bench_folder / "plan.json"), "--rate", "4", "--requests", "8", "--json"])
    assert sim.exit_code == 0, sim.output
    predicted = tmp_path / "predicted.json"
    predicted.write_text(sim.stdout)
    r = gim(capsys, *["compare", str(predicted), str(measured), "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["figure"]: row for row in json.loads(r.stdout)["rows"]}
    pred = json.loads(predicted.read_text())
    meas = json.loads(measured.read_text())
    row = rows["TPOT p50 ms"]
    assert row["predicted"] == pred["tpot_ms"]["p50"] and row["measured"] == meas["tpot_ms"]["p50"]
    assert (row["lo"], row["hi"]) == (pred["bands"]["tpot_ms"]["p50"]["lo"], pred["bands"]["tpot_ms"]["p50"]["hi"])
    for row in rows.values():  # each verdict follows from its numbers
        if row["verdict"] in ("within band", "below band", "above band"):
            inside = row["lo"] <= row["measured"] <= row["hi"]
            assert (row["verdict"] == "within band") == inside
    assert rows["goodput req/s"]["verdict"] == "not predicted"  # no SLO: neither side has a goodput
    text = gim(capsys, *["compare", str(predicted), str(measured)])
    assert text.exit_code == 0 and "measured figures lie within the prediction's band" in text.stdout


def test_compare_verdicts_on_hand_made_figures(tmp_path):
    from gimletc.deploy.compare import compare, workload_mismatches

    pct = lambda v: {"p50": v, "p90": v * 1.5, "p99": v * 2}  # noqa: E731
    band = lambda v: {"p50": {"lo": v * 0.9, "hi": v * 1.1}, "p90": {"lo": v * 1.2, "hi": v * 1.3},  # noqa: E731
                      "p99": {"lo": v * 2, "hi": v * 2}}
    pred = {"source": "predicted: ...", "name": "g", "arrivals": {"rate_req_s": 2.0, "requests": 10},
            "ttft_ms": pct(100.0), "tpot_ms": pct(10.0), "e2e_ms": pct(1000.0), "throughput_tok_s": 50.0,
            "goodput_req_s": None,
            "bands": {"ttft_ms": band(100.0), "tpot_ms": band(10.0), "e2e_ms": band(1000.0),
                      "throughput_tok_s": {"lo": 40.0, "hi": 60.0}}}
    meas = {"source": "measured: ...", "name": "g", "arrivals": {"rate_req_s": 2.0, "requests": 10},
            "ttft_ms": {"p50": 105.0, "p90": 160.0, "p99": 200.0}, "tpot_ms": {"p50": 8.0, "p90": 15.0, "p99": None},
            "e2e_ms": pct(1000.0), "throughput_tok_s": 61.0, "goodput_req_s": 1.0, "failed": 0}
    rows = {r.figure: r for r in compare(pred, meas)}
    assert rows["TTFT p50 ms"].verdict == "within band" and math.isclose(rows["TTFT p50 ms"].error, 0.05)
    assert rows["TTFT p90 ms"].verdict == "above band"  # 160 > 130
    assert rows["TTFT p99 ms"].verdict == "within band"  # a zero-width band holding the value
    assert rows["TPOT p50 ms"].verdict == "below band" and rows["TPOT p99 ms"].verdict == "not measured"
    assert rows["output tokens/s"].verdict == "above band" and rows["goodput req/s"].verdict == "not predicted"
    del pred["bands"]
    assert {r.verdict for r in compare(pred, meas) if r.measured is not None and r.predicted is not None} == {"no band"}
    assert workload_mismatches(pred, meas) == []
    meas2 = {**meas, "arrivals": {"rate_req_s": 3.0, "requests": 10}, "failed": 2, "errors": ["HTTP 500"]}
    msgs = workload_mismatches(pred, meas2)
    assert any("arrival rate" in m for m in msgs) and any("2 measured request(s) failed" in m for m in msgs)


def test_compare_refuses_swapped_or_foreign_files(capsys, tmp_path):
    pred = tmp_path / "p.json"
    meas = tmp_path / "m.json"
    pred.write_text(json.dumps({"source": "predicted: x", "ttft_ms": {}}))
    meas.write_text(json.dumps({"source": "measured: x", "ttft_ms": {}}))
    r = gim(capsys, *["compare", str(meas), str(pred)])
    assert r.exit_code == 2 and "give the prediction" in r.stderr
    meas.write_text("[1, 2]")
    r = gim(capsys, *["compare", str(pred), str(meas)])
    assert r.exit_code == 2 and "not a benchmark result" in r.stderr
