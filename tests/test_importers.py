"""Importing transformers from torch and ONNX: node -> layer/attention/FFN mapping and the architecture.

Models are exported at test time from the seeded tiny Llama (gimletc.importers.tiny)
with both torch exporters: dynamo (scopes in node metadata, an optimiser that
shares nodes across layers) and TorchScript (scopes in node names, Constant
nodes everywhere).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gimletc.models.onnx import ModelImportError, architecture, load_onnx, node_scope, prepare
from gimletc.models import get_model
from gimletc.targets.partition import extract, layer_range

torch = pytest.importorskip("torch")
tiny = pytest.importorskip("gimletc.importers.tiny")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny")
    model = tiny.build(tiny.TinyConfig(name="tiny-test", layers=3, seed=3))
    return {
        "dynamo": tiny.export_onnx(model, d / "dynamo.onnx", exporter="dynamo"),
        "torchscript": tiny.export_onnx(model, d / "torchscript.onnx", exporter="torchscript"),
        "model": model,  # type: ignore[dict-item]
    }


def _torch_step(model, ids, past):
    with torch.no_grad():
        return [t.numpy() for t in model(torch.from_numpy(ids), *[torch.from_numpy(p) for p in past])]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_every_node_maps_to_a_segment_of_its_scope(exported, exporter):
    im = load_onnx(exported[exporter])
    assert im.layers == 3 and len(im.segments) == 8
    counts = im.segment_counts()
    assert all(n > 0 for s, n in counts.items() if s != "embed"), counts
    for n in im.proto.graph.node:
        scope = node_scope(n)
        seg = im.segments[im.node_segment[n.name]]
        if scope and ".mlp" in scope:
            assert seg.endswith(".ffn") and seg.startswith(f"layer{scope.split('layers.')[1].split('.')[0]}")
        if scope and "lm_head" in scope:
            assert seg == "head"
    # tensors only flow forward, so every contiguous range is a valid subgraph
    prod = {o: im.node_segment[n.name] for n in im.proto.graph.node for o in n.output}
    for n in im.proto.graph.node:
        for x in n.input:
            if x in prod:
                assert prod[x] <= im.node_segment[n.name]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_split_steps_match_torch(exported, exporter):
    im = load_onnx(exported[exporter])
    model = exported["model"]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, size=(2, 6), dtype=np.int64)
    past = [rng.standard_normal((2, 2, 4, 16)).astype(np.float32) for _ in range(6)]
    ref = _torch_step(model, ids, past)
    env = {"input_ids": ids, **{f"past.{i // 2}.{'key' if i % 2 == 0 else 'value'}": p for i, p in enumerate(past)}}
    for part in ("embed+attention[0]", "ffn[0]", "layers[1:2]", "attention[2]", "ffn[2]+head"):
        sub = extract(im, part)
        s = ort.InferenceSession(sub.serialized(), providers=["CPUExecutionProvider"])
        env.update(zip([o.name for o in s.get_outputs()], s.run(None, {k: env[k] for k in sub.inputs})))
    names = ["logits"] + [f"present.{i}.{kv}" for i in range(3) for kv in ("key", "value")]
    for name, want in zip(names, ref, strict=True):
        assert np.max(np.abs(env[name] - want)) <= 1e-4, name


def test_the_optimisers_shared_nodes_and_shapes_do_not_pull_caches_across_cuts(exported):
    im = load_onnx(exported["dynamo"])
    # The dynamo exporter computes rotary tables and the causal mask once, in layer 0, for all layers,
    # and reads the cache length from the last layer's cache: layer 1's stage gets tensors, not caches.
    sub = extract(im, layer_range(1, 2, 3))
    assert {x for x in sub.step_inputs if x.startswith("past.")} == {"past.1.key", "past.1.value"}
    assert sub.boundary_inputs  # hidden state plus the shared tables
    first = extract(im, layer_range(0, 1, 3))
    assert {x for x in first.step_inputs if x.startswith("past.")} == {"past.0.key", "past.0.value"}


def test_constants_become_initializers_and_names_are_unique(exported):
    raw = onnx.load(str(exported["torchscript"]))
    assert any(n.op_type == "Constant" for n in raw.graph.node)
    prepared = prepare(raw)
    assert not any(n.op_type == "Constant" for n in prepared.graph.node)
    names = [n.name for n in prepared.graph.node]
    assert len(names) == len(set(names)) and all(names)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_architecture_from_metadata_and_inferred_from_the_graph(exported, exporter, tmp_path):
    m = architecture(exported[exporter])
    assert (m.layers, m.hidden, m.heads, m.kv_heads, m.head_dim, m.ffn, m.vocab) == (3, 64, 4, 2, 16, 128, 256)
    assert m.attention == "gqa" and m.weight_dtype == "fp32"
    raw = onnx.load(str(exported[exporter]))
    del raw.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(raw, str(bare))
    inferred = load_onnx(bare).model
    for field in ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "attention", "tied_embeddings"):
        assert getattr(inferred, field) == getattr(m, field), field


def test_get_model_prices_an_imported_model(exported):
    from gimletc.cost.roofline import estimate
    from gimletc.hardware import get_chip

    m = get_model(str(exported["dynamo"]))
    assert m.name == "tiny-test" and m.params > 0
    assert m.kv_bytes_per_token == 3 * 2 * 2 * 16 * 4  # layers x (K, V) x kv heads x head dim x fp32
    # imported models are found by name too (passes refer to Model.name); the last import of a name wins
    assert get_model("tiny-test").model_dump(exclude={"source"}) == m.model_dump(exclude={"source"})
    assert estimate(m, get_chip("h200"), "decode", 1, 1, 32).latency_s > 0


def test_the_committed_example_model_is_the_seeded_export():
    """examples/tiny_llm/tiny-llama.onnx computes what a fresh build of its config computes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_export", ROOT / "examples" / "tiny_llm" / "export.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = tiny.build(mod.CONFIG)
    path = ROOT / "examples" / "tiny_llm" / "tiny-llama.onnx"
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(meta["gimletc.arch"]) == model.arch()
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 256, size=(1, 7), dtype=np.int64)
    past = [np.zeros((1, 2, 0, 16), np.float32) for _ in range(8)]
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = s.run(None, dict(zip([i.name for i in s.get_inputs()], [ids, *past], strict=True)))
    for a, b in zip(got, _torch_step(model, ids, past), strict=True):
        assert np.max(np.abs(a - b)) <= 1e-4


def test_import_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelImportError, match="bad.onnx"):
        load_onnx(bad)
    with pytest.raises(ModelImportError, match="cannot read"):
        load_onnx(tmp_path / "missing.onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    relu = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g), str(relu))
    with pytest.raises(ModelImportError, match="no integer input for the token ids"):
        load_onnx(relu)
