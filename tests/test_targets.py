"""Targets: partitions and their ONNX subgraphs, IREE binaries per backend, the dataflow MLIR module, artifacts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gimletc import AgentGraph
from gimletc.compiler import compile as gcompile
from gimletc.hardware import get_chip
from gimletc.models.onnx import load_onnx
from gimletc.ir import parse_graph
from gimletc.targets.build import build_artifacts
from gimletc.targets.dataflow import DataflowError, dataflow_module, roundtrip
from gimletc.targets.iree import compile_onnx, flags_for
from gimletc.targets.partition import (
    Partition,
    PartitionError,
    attention_block,
    chunk_partition,
    extract,
    ffn_block,
    layer_range,
    parse_partition,
    partition_of,
    whole,
)
from gimletc.targets.vendors import execution_provider, iree_backend, toolchain

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "examples" / "tiny_llm" / "tiny-llama.onnx"
CLUSTER = ROOT / "examples" / "clusters" / "h200_mi300x.yaml"
L = 4


@pytest.fixture(scope="session")
def iree_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "iree-cache"


@pytest.fixture(scope="module")
def model():
    return load_onnx(TARGET)


# ---- partitions ----------------------------------------------------------------------------------


def test_partition_text_round_trips():
    for p in [whole(L), layer_range(0, 2, L), layer_range(2, 4, L), layer_range(1, 3, L), attention_block(2, L),
              ffn_block(0, L), Partition(0, 2, L), Partition(8, 10, L)]:
        assert parse_partition(str(p), L) == p
    assert str(layer_range(0, L, L)) == "all"
    assert parse_partition("embed+attention[0]", L) == Partition(0, 2, L)
    assert parse_partition("ffn[3]+head", L) == Partition(8, 10, L)
    assert parse_partition("layer1.attention+layer1.ffn", L) == layer_range(1, 2, L)
    with pytest.raises(PartitionError, match="not contiguous"):
        parse_partition("embed+ffn[0]", L)
    with pytest.raises(PartitionError, match="cannot read"):
        parse_partition("layers(0:1)", L)
    with pytest.raises(PartitionError, match="outside"):
        layer_range(2, 9, L)


def test_streamed_chunks_cover_the_model_once():
    for k in (1, 2, 3, 8):
        parts = [p for p in (chunk_partition(i, k, L) for i in range(k)) if p is not None]
        segs = [s for p in parts for s in p.segments]
        assert segs == list(range(2 * L + 2))
    stage = layer_range(2, 4, L)
    parts = [p for p in (chunk_partition(i, 8, L, stage) for i in range(8)) if p is not None]
    assert [s for p in parts for s in p.segments] == list(stage.segments)


def test_which_partition_each_compute_runs():
    assert partition_of({"kind_of": "model.prefill"}, L) == whole(L)
    assert partition_of({"kind_of": "model.prefill", "layers": (0, 2)}, L) == layer_range(0, 2, L)
    assert partition_of({"kind_of": "model.attention", "layers": (0, 1)}, L) == Partition(0, 2, L)
    assert partition_of({"kind_of": "model.ffn", "layers": (3, 4)}, L) == Partition(8, 10, L)
    assert partition_of({"kind_of": "model.ffn"}, L, name="chat.ffn1.m0") == ffn_block(1, L)
    assert partition_of({"kind_of": "model.decode"}, L, {0: (0, 1), 1: (1, 4)}, "chat.decode.s1") == layer_range(1, 4, L)
    assert partition_of({"kind_of": "model.prefill", "chunk": 1, "chunks": 8}, L) == layer_range(0, 1, L).__class__(1, 3, L)
    assert partition_of({"kind_of": "model.prefill", "chunk": 2, "chunks": 8}, 2) is None  # more chunks than layers


def _feeds(im, batch=1, tokens=5):
    rng = np.random.default_rng(1)
    f = {im.token_input: rng.integers(0, im.model.vocab, size=(batch, tokens), dtype=np.int64)}
    for b in im.kv:
        f[b.past_key] = f[b.past_value] = np.zeros((batch, im.model.kv_heads, 0, im.model.head_dim), np.float32)
    return f


def _run_chain(im, parts, feeds):
    env = dict(feeds)
    for p in parts:
        sub = extract(im, p)
        s = ort.InferenceSession(sub.serialized(), providers=["CPUExecutionProvider"])
        env.update(zip([o.name for o in s.get_outputs()], s.run(None, {k: env[k] for k in sub.inputs})))
    return env


@pytest.mark.parametrize("split", [
    ["all"],
    ["layers[0:1]", "layers[1:3]", "layers[3:4]"],
    ["embed+attention[0]", "ffn[0]", "attention[1]", "ffn[1]", "attention[2]", "ffn[2]", "attention[3]", "ffn[3]+head"],
    ["embed", "attention[0]+ffn[0]", "layers[1:4]"],
])
def test_a_chain_of_subgraphs_computes_the_whole_step(model, split):
    whole_sess = ort.InferenceSession(model.path.read_bytes(), providers=["CPUExecutionProvider"])
    feeds = _feeds(model, batch=2)
    ref = dict(zip([o.name for o in whole_sess.get_outputs()], whole_sess.run(None, feeds)))
    got = _run_chain(model, split, feeds)
    for name, value in ref.items():
        assert np.max(np.abs(got[name] - value)) <= 1e-4, name


def test_subgraphs_read_only_their_own_layers_cache(model):
    for i in range(L):
        sub = extract(model, layer_range(i, i + 1, L))
        kv_in = {x for x in sub.step_inputs if x.startswith("past.")}
        assert kv_in == {f"past.{i}.key", f"past.{i}.value"}
        assert len({extract(model, p).proto.graph.name for p in ("all", "embed", "head", str(layer_range(i, i + 1, L)))}) == 4
    sub = extract(model, "head")
    assert not any(n.op_type in ("Constant", "Identity") for n in sub.proto.graph.node)
    assert sub.weight_bytes > 0


# ---- vendors, IREE -------------------------------------------------------------------------------


def test_each_vendor_gets_its_provider_backend_or_toolchain():
    assert execution_provider(get_chip("h200")) == "CUDAExecutionProvider" and iree_backend(get_chip("h200")) == "cuda"
    assert execution_provider(get_chip("mi300x")) == "MIGraphXExecutionProvider" and iree_backend(get_chip("mi300x")) == "rocm"
    assert execution_provider(get_chip("xeon-6980p")) == "CPUExecutionProvider" and iree_backend(get_chip("epyc-9965")) == "llvm-cpu"
    for sram in ("dmatrix-corsair", "groq-lpu", "cerebras-wse3"):
        c = get_chip(sram)
        assert execution_provider(c) is None and iree_backend(c) is None and toolchain(c)
    assert "--iree-cuda-target=sm_80" in flags_for("cuda")
    assert "--iree-rocm-target=gfx942" in flags_for("rocm", get_chip("mi300x"))
    assert "--iree-rocm-target=gfx950" in flags_for("rocm", get_chip("mi355x"))


@pytest.mark.parametrize("backend", ["cuda", "rocm", "vulkan-spirv"])
def test_gpu_binaries_compile_here(model, backend, tmp_path, iree_cache):
    sub = extract(model, "head")
    out = compile_onnx(sub.serialized(), backend, tmp_path / f"head.{backend}.vmfb", name="head", entry=sub.proto.graph.name,
                       chip=get_chip("mi300x") if backend == "rocm" else None, cache_dir=iree_cache)
    data = out.path.read_bytes()
    assert len(data) > 1000 and out.backend == backend
    again = compile_onnx(sub.serialized(), backend, tmp_path / "again.vmfb", name="head", entry=sub.proto.graph.name,
                         chip=get_chip("mi300x") if backend == "rocm" else None, cache_dir=iree_cache)
    assert again.cached and again.path.read_bytes() == data


def test_llvm_cpu_binary_matches_onnxruntime(model, tmp_path, iree_cache):
    from gimletc.runtime.executors import IreeExecutor, OrtExecutor

    sub = extract(model, "layers[1:3]")
    out = compile_onnx(sub.serialized(), "llvm-cpu", tmp_path / "mid.vmfb", name="mid", entry=sub.proto.graph.name,
                       cache_dir=iree_cache)
    ire = IreeExecutor.load("mid", out.path, sub.proto.graph.name, sub.inputs, sub.outputs, "local-sync")
    ortx = OrtExecutor.load("mid", sub.serialized())
    feeds = _run_chain(model, ["layers[0:1]"], _feeds(model, tokens=6))
    a, b = ire(feeds), ortx(feeds)
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape and np.max(np.abs(a[k] - b[k])) <= 1e-4


# ---- the dataflow module and the artifacts ---------------------------------------------------------


def _compiled():
    g = AgentGraph("chat")
    q = g.input("q", tokens=9)
    g.output("o", [g.llm("chat", model=str(TARGET), prompt=[q], output_tokens=4)])
    return gcompile(g, CLUSTER, pipeline="expand-llm,partition-phase,place,insert-transfers,schedule,overlap{stream=false}",
                    pins={"chat.prefill": "mi300x", "chat.decode": "h200"}, baseline=False)


def test_the_dataflow_module_is_verified_and_round_trips():
    from iree.compiler import ir

    r = _compiled()
    text = dataflow_module(r.graph, attrs={"gimlet.plan": "chat"})
    ctx = ir.Context()
    ctx.allow_unregistered_dialects = True
    m = ir.Module.parse(text, ctx)
    ops = [o.operation for o in m.body.operations]
    assert [o.name for o in ops] == [op.kind for op in r.graph.ops]
    names = [o.attributes["sym_name"].value for o in ops]
    assert names == [op.name for op in r.graph.ops]
    kinds = {o.name for o in ops}
    assert {"exec.compute", "exec.send", "exec.recv", "exec.convert"} <= kinds
    assert "!async.token" in text and "!gimlet.kv<" in text
    with pytest.raises(DataflowError):
        roundtrip(text.replace('"builtin.module"() ({', '"builtin.module"() ({ %x = '))


def test_build_writes_every_artifact_with_its_digest(tmp_path, iree_cache):
    r = _compiled()
    arts = build_artifacts(r, tmp_path / "plan.artifacts", cache_dir=iree_cache)
    by_kind: dict[str, list[dict]] = {}
    for a in arts:
        by_kind.setdefault(a["kind"], []).append(a)
        p = tmp_path / a["path"]
        assert not Path(a["path"]).is_absolute() and p.is_file()
        assert hashlib.sha256(p.read_bytes()).hexdigest() == a["sha256"]
    assert set(by_kind) == {"onnx", "iree", "onnx-reference", "mlir-dataflow"}
    backends = {(a["device"].split(".")[0], a["backend"]) for a in by_kind["iree"]}
    assert {("mi300x4", "rocm"), ("mi300x4", "llvm-cpu"), ("h200x4", "cuda"), ("h200x4", "llvm-cpu")} <= backends
    eps = {a["chip"]: a["ep"] for a in by_kind["onnx"]}
    assert eps == {"mi300x": "MIGraphXExecutionProvider", "h200": "CUDAExecutionProvider"}
    mlir = (tmp_path / by_kind["mlir-dataflow"][0]["path"]).read_text()
    assert "executables = {" in mlir and ".vmfb" in mlir
    # the same plan builds the same bytes
    again = build_artifacts(r, tmp_path / "plan.artifacts", cache_dir=iree_cache)
    assert [a["sha256"] for a in again] == [a["sha256"] for a in arts]
    assert parse_graph(r.plan.ir) == r.graph


def test_sram_partitions_are_marked_for_their_vendor_toolchain(tmp_path):
    g = AgentGraph("chat")
    q = g.input("q", tokens=9)
    g.output("o", [g.llm("chat", model=str(TARGET), prompt=[q], output_tokens=4)])
    r = gcompile(g, "mixed-rack", pipeline="expand-llm,partition-phase,place,insert-transfers,schedule,overlap",
                 pins={"chat.decode": "dmatrix-corsair", "chat.prefill": "h100-sxm"}, baseline=False)
    arts = build_artifacts(r, tmp_path / "a", backends=())
    dm = [a for a in arts if a["kind"] == "onnx" and a["chip"] == "dmatrix-corsair"]
    assert dm and dm[0]["ep"] is None and dm[0]["toolchain"].startswith("d-matrix")
    m = onnx.load(str(tmp_path / dm[0]["path"]))
    assert {p.key: p.value for p in m.metadata_props}["gimletc.toolchain"].startswith("d-matrix")
