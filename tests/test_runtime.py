"""The local runtime: plans compiled for mixed hardware run for real here and compute what the unsplit model computes.

Differential tests: a phase split with a KV handoff across vendors (layout
conversion), a layer pipeline, an attention/FFN split with two micro-batches,
and greedy speculative decoding, each compiled by gimletc's own passes onto the
H200 + MI300X cluster and executed with real copies between worker threads;
each must give the unsplit model's tokens with logits within 1e-4. Models are
the committed tiny Llama of examples/tiny_llm (4 layers; see export.py there).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from gimletc import AgentGraph
from gimletc.compiler import compile as gcompile
from gimletc.plan import load_plan
from gimletc.runtime.kv import KVCache, KVLayoutError, axes_of, to_axes
from gimletc.runtime.local import RunError, load_tools, run_plan
from gimletc.targets.build import build_artifacts

from _cli import run_cli  # tests/_cli.py

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "tiny_llm"
TARGET = TINY / "tiny-llama.onnx"
DRAFT = TINY / "tiny-llama-draft.onnx"
CLUSTER = ROOT / "examples" / "clusters" / "h200_mi300x.yaml"
MI300X, H200 = "mi300x4.mi300x.0", "h200x4.h200.0"
TOL = 1e-4


def _graph(batch: int = 1, draft: bool = False, tool: bool = False) -> AgentGraph:
    g = AgentGraph("chat")
    q = g.input("question", tokens=10)
    kw = {"draft": str(DRAFT), "draft_k": 3} if draft else {}
    a = g.llm("chat", model=str(TARGET), prompt=[q], output_tokens=7, batch=batch, **kw)
    if tool:
        g.tool_spec("rev", latency_s=0.001, output_tokens=7)
        a = g.tool("post", tool="rev", inputs=[a])
    g.output("out", [a])
    return g


PIPELINES = {
    "phase": ("expand-llm,partition-phase,place,insert-transfers,schedule,overlap",
              {"chat.prefill": "mi300x", "chat.decode": "h200"}, {}),
    "layers": ("expand-llm,partition-layers,place,insert-transfers,schedule,overlap",
               {"chat.prefill.s0": "mi300x", "chat.prefill.s1": "h200"}, {}),
    "attn-ffn": ("expand-llm,partition-attn-ffn,place,insert-transfers,schedule,overlap",
                 {"chat.prefill": "mi300x", "chat.attn0.m0": "mi300x", "chat.ffn0.m0": "h200"}, {"batch": 2}),
    "speculative": ("expand-llm,speculative,place,insert-transfers,schedule,overlap",
                    {"chat.prefill": "h200", "chat.draft": "mi300x"}, {"draft": True}),
}


def _plan(tmp: Path, name: str, backends: tuple[str, ...] = (), cache: Path | None = None, stream: bool = True,
          **graph_kw) -> Path:
    pipeline, pins, kw = PIPELINES[name]
    if not stream:
        pipeline = pipeline.replace("overlap", "overlap{stream=false}")
    r = gcompile(_graph(**{**kw, **graph_kw}), CLUSTER, pipeline=pipeline, pins=pins, baseline=False)
    out = tmp / name
    out.mkdir(parents=True, exist_ok=True)
    arts = build_artifacts(r, out / "artifacts", backends=backends, cache_dir=cache)
    plan = r.plan.model_copy(update={"artifacts": arts})
    path = out / "plan.json"
    plan.write(path)
    return path


@pytest.fixture(scope="session")
def iree_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "iree-cache"


@pytest.fixture(scope="session")
def plans(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("plans")
    return {name: _plan(tmp, name) for name in PIPELINES}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_split_plans_compute_what_the_unsplit_model_computes(plans, name):
    r = run_plan(plans[name])
    check = r.llms["chat"]
    assert check.tokens_match, (check.tokens, check.reference_tokens)
    assert r.max_abs_diff <= TOL
    assert len(check.tokens) >= 7
    # The split really ran on both GPUs' stand-ins, with real copies between them.
    used = {d for d, v in r.devices.items() if v.get("kind") == "gpu"}
    assert used == {MI300X, H200}
    links = [v for v in r.devices.values() if v.get("kind") == "link"]
    assert sum(v["bytes"] for v in links) > 0
    assert r.measured_ms > 0 and r.predicted_ms > 0
    assert any("stand" in n for n in r.notes)


def test_phase_split_converts_the_kv_cache_between_vendor_layouts(plans):
    plan = load_plan(plans["phase"])
    assert any(t.convert and t.convert.from_layout == "paged-hnd" and t.convert.to_layout == "paged-nhd" for t in plan.transfers)
    r = run_plan(plans["phase"])
    conv = [o for o in r.ops if o.kind == "exec.convert"]
    assert conv and conv[0].bytes > 0 and conv[0].resource == H200


def test_attention_ffn_split_runs_both_micro_batches(plans):
    r = run_plan(plans["attn-ffn"])
    out = r.outputs["out"][0]
    assert np.asarray(out).shape == (2, 7)  # two sequences, each its own prompt
    assert not np.array_equal(out[0], out[1])
    assert r.llms["chat"].tokens_match


def test_speculative_decoding_gives_the_targets_own_greedy_tokens(plans):
    r = run_plan(plans["speculative"])
    c = r.llms["chat"]
    assert c.tokens_match and c.tokens[:7] == c.reference_tokens[:7]
    spec = c.speculative
    assert spec["drafted"] > 0 and 0 < spec["accepted"] <= spec["drafted"]
    devs = {o.resource for o in r.ops if o.kind == "exec.compute" and o.of in ("chat.draft", "chat.verify")}
    assert devs == {MI300X, H200}


def test_speculative_decoding_with_a_draft_added_at_build_time(tmp_path):
    r = gcompile(_graph(), CLUSTER, pins={"chat": "h200"}, baseline=False)
    arts = build_artifacts(r, tmp_path / "a", backends=(), drafts={"chat": (str(DRAFT), 4)})
    assert any(a.get("role") == "draft" and a["kind"] == "onnx" for a in arts)
    r.plan.model_copy(update={"artifacts": arts}).write(tmp_path / "p.json")
    rep = run_plan(tmp_path / "p.json")
    c = rep.llms["chat"]
    assert c.tokens_match and c.speculative["drafted"] > 0 and rep.max_abs_diff <= TOL


def test_iree_llvm_cpu_binaries_run_the_split(tmp_path, iree_cache):
    path = _plan(tmp_path, "layers", backends=("llvm-cpu",), cache=iree_cache, stream=False)
    r = run_plan(path, backend="iree")
    assert r.llms["chat"].tokens_match and r.max_abs_diff <= TOL
    runners = {x for d in r.devices.values() for x in d.get("runners", [])}
    assert runners and all(x.startswith("iree llvm-cpu (local-sync") for x in runners)


def test_transfers_overlap_compute(plans):
    """Streamed KV chunks (overlap pass) move while the prefill's later layer groups still compute."""
    r = run_plan(plans["phase"], pace_links=200.0)
    sends = [e for e in r.events if e[1] == "exec.send" and ".chunk" in e[0]]
    computes = [e for e in r.events if e[1] == "exec.compute"]
    assert sends
    overlapping = [(s[0], c[0]) for s in sends for c in computes
                   if s[3] != c[3] and s[4] < c[5] and c[4] < s[5] and c[5] - c[4] > 1e-5]
    assert overlapping, "no copy ran while a device computed"


def test_a_cache_in_the_wrong_layout_is_an_error_not_wrong_numbers():
    k = np.arange(1 * 2 * 4 * 5, dtype=np.float32).reshape(1, 2, 4, 5)  # [b, h, s, d]
    kv = KVCache("m", {0: (to_axes(k, "bhsd", axes_of("paged-hnd")), k)}, "paged-hnd", "fp32", 4)
    back = kv.in_step_layout(0, np.dtype(np.float32))[0]
    assert np.array_equal(back, k)
    nhd = to_axes(k, "bhsd", axes_of("paged-nhd"))
    assert nhd.shape == (1, 4, 2, 5) and np.array_equal(to_axes(nhd, "bshd", "bhsd"), k)
    from gimletc.hardware import get_chip
    from gimletc.ir import Op
    from gimletc.runtime.device import step_kv

    with pytest.raises(KVLayoutError, match="paged-nhd"):
        step_kv(kv, None, get_chip("h200"), Op("exec.compute", "x", attrs={"of": "x", "device": "d", "seconds": 0.0}))


def test_tools_are_callables_looked_up_by_op_name(tmp_path):
    r = gcompile(_graph(tool=True), CLUSTER, baseline=False)
    r.plan.model_copy(update={"artifacts": build_artifacts(r, tmp_path / "a", backends=())}).write(tmp_path / "p.json")
    with pytest.raises(RunError, match="no callable registered for post"):
        run_plan(tmp_path / "p.json")
    rep = run_plan(tmp_path / "p.json", tools={"post": lambda ids: np.asarray(ids)[::-1]})
    assert list(rep.outputs["out"][0]) == rep.llms["chat"].tokens[:7][::-1]
    tools = load_tools(f"{TINY / 'tools.py'}:registry")
    assert set(tools) == {"post"}
    with pytest.raises(RunError, match="MODULE:ATTRIBUTE"):
        load_tools("nonsense")


def test_artifacts_are_checked_against_their_digests(plans, tmp_path):
    plan = load_plan(plans["phase"])
    onnx_art = next(a for a in plan.artifacts if a["kind"] == "onnx")
    path = plans["phase"].parent / onnx_art["path"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == onnx_art["sha256"]
    bad = plan.model_copy(update={"artifacts": [dict(a, sha256="0" * 64) if a is onnx_art else a for a in plan.artifacts]})
    bad.write(plans["phase"].parent / "tampered.json")
    with pytest.raises(RunError, match="does not match its sha256"):
        run_plan(plans["phase"].parent / "tampered.json")


def test_artifacts_outside_the_plans_artifact_root_are_refused_even_with_their_digest(plans, tmp_path):
    import os

    plan = load_plan(plans["phase"])
    folder = tmp_path / "deep" / "er" / "plan"
    folder.mkdir(parents=True)
    secret = tmp_path / "secret.txt"  # stands for /etc/passwd: outside, readable, its digest known to the forger
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    for a in plan.artifacts:  # the plan's own artifacts, copied next to the forged plan
        dest = folder / a["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((plans["phase"].parent / a["path"]).read_bytes())
    ref = next(a for a in plan.artifacts if a["kind"] == "onnx-reference")
    escape = os.path.relpath(secret, folder)  # ../../../secret.txt
    assert escape.startswith("../")
    forged = plan.model_copy(update={"artifacts": [dict(a, path=escape, sha256=digest) if a is ref else a for a in plan.artifacts]})
    forged.write(folder / "forged.json")
    with pytest.raises(RunError, match=r"resolves to .*secret\.txt, outside the plan's artifact root"):
        run_plan(folder / "forged.json")
    # A symlink inside the folder that points out of it is refused too.
    link = folder / "artifacts" / "link.onnx"
    link.symlink_to(secret)
    linked = plan.model_copy(update={"artifacts": [dict(a, path="artifacts/link.onnx", sha256=digest) if a is ref else a
                                                   for a in plan.artifacts]})
    linked.write(folder / "linked.json")
    with pytest.raises(RunError, match="outside the plan's artifact root"):
        run_plan(folder / "linked.json")
    # A recorded root narrower than the plan's folder confines the artifacts to it.
    narrow = plan.model_copy(update={"artifact_root": "artifacts/onnx"})
    narrow.write(folder / "narrow.json")
    with pytest.raises(RunError, match="outside the plan's artifact root"):
        run_plan(folder / "narrow.json")
    plan.model_copy(update={"artifact_root": "artifacts"}).write(folder / "ok.json")
    assert run_plan(folder / "ok.json").tokens_match


def test_catalog_models_have_no_executable(tmp_path):
    g = AgentGraph("big")
    q = g.input("q", tokens=10)
    g.output("o", [g.llm("a", model="llama-3.1-8b", prompt=[q], output_tokens=4)])
    r = gcompile(g, CLUSTER, baseline=False)
    r.plan.write(tmp_path / "p.json")
    with pytest.raises(RunError, match="llama-3.1-8b, which has no executable"):
        run_plan(tmp_path / "p.json")


_cli = run_cli


def test_cli_build_and_run(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    code, _, err = _cli(capsys, "compile", str(TINY / "agent.py"), "--cluster", str(CLUSTER), "--pin", "answer.prefill=mi300x",
                        "--pin", "answer.decode=h200", "-o", str(plan), "--quiet", "--no-baseline")
    assert code == 0, err
    code, _, err = _cli(capsys, "run", str(plan), "--json")
    assert code == 2 and err.startswith("gimletc: error:") and "gimletc build" in err and err.count("\n") == 1
    code, out, err = _cli(capsys, "build", str(plan), "--no-iree", "--draft", f"answer={DRAFT}:4")
    assert code == 0, err
    assert load_plan(plan).artifact_root == "plan.artifacts"
    trace = tmp_path / "trace.json"
    code, out, err = _cli(capsys, "run", str(plan), "--json", "--tools", f"{TINY / 'tools.py'}:registry", "--trace", str(trace))
    assert code == 0, err
    d = json.loads(out)
    for key in ("max_abs_diff", "measured_ms", "predicted_ms", "devices", "llms", "tokens_match"):
        assert key in d
    assert d["max_abs_diff"] <= TOL and d["tokens_match"]
    assert d["devices"][H200]["ran_on"] == "CPU worker (stand-in)" and d["devices"][H200]["predicted_ms"] > 0
    t = json.loads(trace.read_text())
    assert {e["args"]["name"] for e in t["traceEvents"] if e.get("name") == "thread_name"} >= {MI300X, H200}
    code, out, _ = _cli(capsys, "run", str(plan), "--tools", f"{TINY / 'tools.py'}:registry")
    assert code == 0 and "tokens match" in out
    code, out, err = _cli(capsys, "run", str(plan), "--json", "--executor", "process", "--tools", f"{TINY / 'tools.py'}:registry")
    assert code == 0, err
    d2 = json.loads(out)
    assert d2["executor"] == "process" and d2["attempts"] == 1 and d2["tokens_match"] and set(d2) >= set(d)
    code, _, err = _cli(capsys, "run", str(plan), "--address", "127.0.0.1:1")
    assert code == 2 and "--executor ray" in err and err.count("\n") == 1
    code, _, err = _cli(capsys, "run", str(plan), "--tools", "no_such_module:x")
    assert code == 2 and "no_such_module" in err and err.count("\n") == 1


# ---- executors: worker processes and Ray actors; a worker that dies ------------------------------


def _two_call_plan(tmp: Path) -> Path:
    """Two LLM calls with a tool between them, each split prefill (MI300X) / decode (H200): the tool
    runs after the first call's decode, so a worker it kills dies mid-run, holding that call's KV cache."""
    g = AgentGraph("two")
    q = g.input("question", tokens=10)
    a = g.llm("a", model=str(TARGET), prompt=[q], output_tokens=5)
    g.tool_spec("mid", latency_s=0.001, output_tokens=5)
    m = g.tool("mid", tool="mid", inputs=[a])
    b = g.llm("b", model=str(TARGET), prompt=[m], output_tokens=5)
    g.output("out", [b])
    pins = {"a.prefill": "mi300x", "a.decode": "h200", "b.prefill": "mi300x", "b.decode": "h200"}
    r = gcompile(g, CLUSTER, pipeline="expand-llm,partition-phase,place,insert-transfers,schedule", pins=pins, baseline=False)
    tmp.mkdir(parents=True, exist_ok=True)
    arts = build_artifacts(r, tmp / "artifacts", backends=())
    path = tmp / "plan.json"
    r.plan.model_copy(update={"artifacts": arts}).write(path)
    return path


def _killing_tool(kill, times: int):
    """A `mid` tool that kills the H200's worker on its first `times` calls, then passes its input on."""
    calls = []

    def mid(ids):
        calls.append(1)
        if len(calls) <= times:
            kill()
        return np.asarray(ids)

    return mid, calls


def _faults(tmp_path, executor: str, kill_of, why: str) -> None:
    from gimletc.runtime.local import LocalRuntime

    path = _two_call_plan(tmp_path)
    plan = load_plan(path)
    holder: dict[str, LocalRuntime] = {}
    # Killed once: the run notices, replaces the worker, replays the request, and reports a checked success.
    tool, calls = _killing_tool(lambda: kill_of(holder["rt"]), 1)
    rt = holder["rt"] = LocalRuntime(plan, path.parent, executor=executor, tools={"mid": tool}, retries=1)
    try:
        r = rt.run()
    finally:
        rt.close()
    assert r.attempts == 2 and len(calls) == 2
    assert r.tokens_match and r.max_abs_diff <= TOL and set(r.llms) == {"a", "b"}
    assert any("attempt 1" in n and H200 in n for n in r.notes)
    # Killed on every attempt: one line naming the device, the op and why, after the bound.
    tool, calls = _killing_tool(lambda: kill_of(holder["rt"]), 99)
    rt = holder["rt"] = LocalRuntime(plan, path.parent, executor=executor, tools={"mid": tool}, retries=1)
    try:
        with pytest.raises(RunError) as err:
            rt.run()
    finally:
        rt.close()
    msg = str(err.value)
    import re

    # An op of the second call on the H200 (the first is the conversion of b's KV cache; with Ray, whose
    # kill is asynchronous, possibly a later one).
    assert "\n" not in msg and re.fullmatch(rf"device {re.escape(H200)} was lost while running op (\S*\.)?b\.\S+: "
                                            rf"{why}; gave up after 2 attempts", msg), msg
    assert len(calls) == 2


def test_process_workers_compute_what_the_unsplit_model_computes(plans):
    for name in ("phase", "speculative"):
        r = run_plan(plans[name], executor="process")
        c = r.llms["chat"]
        assert c.tokens_match and r.max_abs_diff <= TOL, name
        assert r.executor == "process" and r.attempts == 1


def test_a_killed_worker_process_is_replaced_or_named(tmp_path):
    import os
    import signal

    _faults(tmp_path, "process", lambda rt: os.kill(rt.devices[H200].pid, signal.SIGKILL),
            "its process was killed by SIGKILL")
    with pytest.raises(RunError, match="unknown executor"):
        run_plan(tmp_path / "plan.json", executor="threads")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster offering the two GPUs' resources (a short temp folder: Ray's socket paths are limited)."""
    ray = pytest.importorskip("ray")
    import os
    import shutil
    import tempfile

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    tmp = tempfile.mkdtemp(prefix="gimletc-ray-")
    ray.init(num_cpus=2, resources={MI300X: 1, H200: 1}, include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def test_ray_actors_compute_what_the_unsplit_model_computes(ray_cluster, plans):
    for name in sorted(PIPELINES):
        r = run_plan(plans[name], executor="ray")
        c = r.llms["chat"]
        assert c.tokens_match and r.max_abs_diff <= TOL, name
        assert r.executor == "ray"
        if name == "speculative":
            assert c.tokens[:7] == c.reference_tokens[:7] and c.speculative["drafted"] > 0
        used = {d for d, v in r.devices.items() if v.get("kind") == "gpu"}
        assert used == {MI300X, H200}
        assert json.loads(json.dumps(r.chrome_trace()))["traceEvents"]
        # The KV cache (or a stage's activations) went from the MI300X's actor to the H200's, not through the
        # driver (speculative decoding moves only token ids between its devices).
        moved = any("moved actor to actor through Ray's object store" in n for n in r.notes)
        assert moved == (name != "speculative"), (name, r.notes)


def test_a_killed_ray_actor_is_replaced_or_named(ray_cluster, tmp_path):
    _faults(tmp_path, "ray", lambda rt: ray_cluster.kill(rt.devices[H200].actor), r"its Ray actor died \(killed\)")


def test_a_ray_cluster_without_the_plans_devices_is_refused(ray_cluster, tmp_path):
    from gimletc.runtime.ray_executor import RayCluster

    with pytest.raises(RunError, match="offers no resource named gb200"):
        RayCluster(["gb200.0"])


def _gpu_plan(tmp_path: Path, iree_cache: Path) -> Path:
    """The GPU test's plan: built here with cuda binaries where IREE's compiler is installed, else the
    prebuilt bundle (benchmarks/gpu_bundle.py; $GIMLETC_GPU_BUNDLE or build/gpu-bundle)."""
    import os

    from gimletc.targets.iree import iree_available

    if iree_available():
        return _plan(tmp_path, "phase", backends=("cuda", "llvm-cpu"), cache=iree_cache, stream=False)
    bundle = Path(os.environ.get("GIMLETC_GPU_BUNDLE", ROOT / "build" / "gpu-bundle"))
    path = bundle / "tiny" / "plan.json"
    if not path.is_file():
        pytest.skip(f"no IREE compiler here and no prebuilt GPU bundle at {bundle} (benchmarks/gpu_bundle.py makes one)")
    return path


@pytest.mark.gpu
def test_a_gpu_partition_runs_on_the_gpu(tmp_path, iree_cache):
    from gimletc.runtime.executors import gpu_drivers

    if "cuda" not in gpu_drivers():
        pytest.skip("no NVIDIA GPU with a CUDA driver on this machine")
    path = _gpu_plan(tmp_path, iree_cache)
    for executor in ("local", "process"):  # worker threads, and worker processes, each bind the GPU's context
        r = run_plan(path, backend="iree", executor=executor)
        assert r.devices[H200]["ran_on"] == "this machine's GPU", executor
        assert r.llms["chat"].tokens_match and r.max_abs_diff <= TOL, executor


def test_the_gpu_bundle_is_built_here_and_runs_on_the_cpu(tmp_path, iree_cache):
    """The part of the GPU bundle that runs here: cuda (and llvm-cpu) binaries compiled, recorded with their
    digests under the plan's artifact root; without a GPU the same plan runs its llvm-cpu binaries."""
    import importlib.util

    from gimletc.runtime.executors import gpu_drivers
    from gimletc.targets.iree import iree_available

    if not iree_available():
        pytest.skip("IREE's compiler is not installed")
    spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "benchmarks" / "gpu_bundle.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = mod.build_plans(tmp_path / "bundle", cache=iree_cache)
    plan = load_plan(path)
    cuda = [a for a in plan.artifacts if a["kind"] == "iree" and a["backend"] == "cuda"]
    assert H200 in {a["device"] for a in cuda} and plan.artifact_root == "plan.artifacts"
    for a in cuda:
        data = (path.parent / a["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == a["sha256"] and a["driver"] == "cuda" and "sm_80" in " ".join(a["flags"])
    if "cuda" not in gpu_drivers():
        r = run_plan(path, backend="iree")
        assert r.devices[H200]["ran_on"] == "CPU worker (stand-in)" and r.llms["chat"].tokens_match


def test_gpu_context_binding_names_the_driver_where_there_is_no_gpu():
    from gimletc.runtime import gpu_context
    from gimletc.runtime.executors import gpu_drivers

    assert gpu_context.bind("local-sync") is False and not gpu_context.needs_binding("vulkan")
    if "cuda" in gpu_drivers():
        pytest.skip("this machine has a CUDA GPU: the GPU test binds for real")
    with pytest.raises(gpu_context.GpuContextError, match=r"^cuda: "):
        gpu_context.bind("cuda")


def test_seeded_weights_are_generated_where_the_model_runs(tmp_path):
    """A model whose weights are seeded (dropped from the file, regenerated by each worker) splits,
    runs and matches its unsplit self; IREE, which compiles weights in, refuses it."""
    import onnx

    from gimletc.importers.seeded import seed_weights, seeded_tensors
    from gimletc.targets.build import ArtifactError

    m = onnx.load(str(TARGET))
    dropped = seed_weights(m, 7, min_bytes=4096)
    path = tmp_path / "seeded-tiny.onnx"
    onnx.save(m, str(path))
    assert dropped > 0.8 * TARGET.stat().st_size and path.stat().st_size < TARGET.stat().st_size / 4
    g = AgentGraph("chat")
    q = g.input("question", tokens=10)
    g.output("out", [g.llm("chat", model=str(path), prompt=[q], output_tokens=7)])
    pipeline, pins, _ = PIPELINES["phase"]
    r = gcompile(g, CLUSTER, pipeline=pipeline, pins=pins, baseline=False)
    arts = build_artifacts(r, tmp_path / "artifacts", backends=())
    subgraphs = [a for a in arts if a["kind"] == "onnx"]
    assert subgraphs and all(seeded_tensors(onnx.load(str(tmp_path / a["path"]), load_external_data=False))
                             for a in subgraphs)
    assert sum((tmp_path / a["path"]).stat().st_size for a in arts) < TARGET.stat().st_size
    r.plan.model_copy(update={"artifacts": arts}).write(tmp_path / "plan.json")
    rep = run_plan(tmp_path / "plan.json")
    assert rep.tokens_match and rep.max_abs_diff <= TOL and len(rep.llms["chat"].tokens) >= 7
    with pytest.raises(ArtifactError, match="seeded weights"):
        build_artifacts(r, tmp_path / "iree", backends=("llvm-cpu",))
