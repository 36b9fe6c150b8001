"""Hardware catalog, cluster descriptions and routes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gimletc._io import validate
from gimletc.errors import ConfigError, UnknownNameError
from gimletc.hardware import (
    Chip,
    Cluster,
    chip_catalog,
    chip_file,
    chip_names,
    cluster_presets,
    derive_efficiency,
    get_chip,
    load_chip,
    load_cluster,
    reference_for,
)
from gimletc.hardware.catalog import CHIPS

PCIE = {"kind": "pcie", "bandwidth": 64e9, "latency": 2e-6}
NVLINK = {"kind": "nvlink", "bandwidth": 450e9, "latency": 1e-6}


def rdma(a: str, b: str, bw: float = 50e9, lat: float = 5e-6) -> dict:
    return {"between": [a, b], "kind": "rdma", "bandwidth": bw, "latency": lat}


def node(name: str, chips: dict[str, int] | None = None, fabric: dict | None = None, cpu: str = "xeon-6980p") -> dict:
    n = {"name": name, "chips": chips or {}, "host": {"cpu": cpu, "memory_bytes": 1e12}}
    if chips:
        n["host_link"] = PCIE
    if fabric:
        n["fabric"] = fabric
    return n


def cluster(nodes: list[dict], links: list[dict] = ()) -> Cluster:
    return validate(Cluster, {"name": "t", "nodes": nodes, "links": list(links)}, "test.yaml")


# --- chips -------------------------------------------------------------------------------

EXPECTED = {"h100-sxm", "a100-sxm-80gb", "b200", "mi300x", "mi355x", "gaudi3", "groq-lpu", "cerebras-wse3",
            "dmatrix-corsair", "xeon-6980p", "epyc-9965", "h200", "xeon-host-16c"}  # fmt: skip


def test_catalog_has_every_chip() -> None:
    assert set(chip_names()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_chip_round_trips_and_cites_its_figures(name: str) -> None:
    chip = get_chip(name)
    assert Chip.model_validate(chip.model_dump()) == chip
    assert Chip.model_validate_json(chip.model_dump_json()) == chip
    figures = ["peak_flops", "memory_bytes", "memory_bw", "tdp_w", "idle_w", "compute_units"]
    figures += ["sram_bytes", "sram_bw"] if chip.sram_bytes else []
    figures += ["price_per_hour"] if chip.price_per_hour is not None else []
    assert all(chip.sources.get(f) for f in figures), [f for f in figures if not chip.sources.get(f)]
    assert "idle_w" in chip.estimated  # no vendor publishes idle power
    assert set(chip.dtypes) & set(chip.peak_flops), "at least one computed dtype has a peak"


def test_kv_layouts_separate_vendors() -> None:
    c = chip_catalog()
    assert c["h100-sxm"].kv_layout == c["b200"].kv_layout == "paged-nhd"
    assert c["mi300x"].kv_layout == c["mi355x"].kv_layout == "paged-hnd"
    assert c["dmatrix-corsair"].kv_layout not in {"paged-nhd", "paged-hnd", c["groq-lpu"].kv_layout}


def test_sram_accelerators() -> None:
    groq, dmx, wse = get_chip("groq-lpu"), get_chip("dmatrix-corsair"), get_chip("cerebras-wse3")
    assert (groq.memory_bytes, groq.sram_bytes) == (0, 230e6)
    assert (dmx.sram_bytes, dmx.sram_bw, dmx.memory_bytes, dmx.memory_bw) == (2e9, 150e12, 256e9, 400e9)
    assert wse.sram_bytes == 44e9
    assert {c.kind for c in (groq, dmx, wse)} == {"sram-accelerator"}


@pytest.mark.parametrize(
    ("name", "reference"), [("h100-sxm", "h200"), ("groq-lpu", "h200"), ("epyc-9965", "xeon-host-16c")]
)
def test_derived_efficiency_names_its_reference(name: str, reference: str) -> None:
    chip, ref = get_chip(name), get_chip(reference)
    origin = chip.efficiency.origin
    assert origin.startswith("derived:") and reference in origin and name in origin
    fractions = {"gemm", "attention", "memory", "masked_attention"}
    assert chip.efficiency.model_dump(include=fractions) == ref.efficiency.model_dump(include=fractions)
    overheads = {"layer_overhead_s", "step_overhead_s", "launch_s_per_layer"}
    if chip.kind == "sram-accelerator":  # statically scheduled: no kernel boundaries or host launches
        assert all(getattr(chip.efficiency, f) == 0.0 for f in overheads)
    else:
        assert chip.efficiency.model_dump(include=overheads) == ref.efficiency.model_dump(include=overheads)
    assert derive_efficiency(chip, reference_for(chip)) == chip.efficiency
    assert not get_chip(reference).efficiency.origin.startswith("derived")


def test_unknown_chip_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as e:
        get_chip("h1000")
    with pytest.raises(UnknownNameError):
        chip_file("h1000")
    assert chip_file("b200").name == "b200.yaml"
    assert e.value.known == chip_names()
    assert "h1000" in str(e.value) and "h100-sxm" in str(e.value)


def _chip_file(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((CHIPS / "h100-sxm.yaml").read_text())
    edit(raw)
    path = tmp_path / "my-chip.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_load_chip_derives_efficiency(tmp_path: Path) -> None:
    chip = load_chip(_chip_file(tmp_path, lambda raw: raw.update(name="my-chip")))
    assert "h200" in chip.efficiency.origin and "my-chip" in chip.efficiency.origin


@pytest.mark.parametrize(
    ("edit", "field", "why"),
    [
        (lambda raw: raw.update(clock_ghz=1.98), "clock_ghz", "unknown field"),
        (lambda raw: raw.pop("tdp_w"), "tdp_w", "missing field"),
        (lambda raw: raw.update(memory_bw=-1), "memory_bw", "greater than or equal"),
        (lambda raw: raw["sources"].pop("idle_w"), "idle_w", "no source"),
    ],
)
def test_bad_chip_file_names_file_and_field(tmp_path: Path, edit, field: str, why: str) -> None:
    path = _chip_file(tmp_path, edit)
    with pytest.raises(ConfigError) as e:
        load_chip(path)
    msg = str(e.value)
    assert str(path) in msg and field in msg and why in msg and "\n" not in msg


# --- clusters ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["8x-h100-nvlink", "8x-mi300x", "mixed-rack"])
def test_presets_load(name: str) -> None:
    assert name in cluster_presets()
    c = load_cluster(name)
    assert c == load_cluster(cluster_presets()[name])  # by name or by path
    assert len({d.id for d in c.devices()}) == len(c.devices())
    assert c.name in c.summary()


def test_preset_shapes() -> None:
    h100 = load_cluster("8x-h100-nvlink")
    assert [d.id for d in h100.accelerators()] == [f"hgx0.h100-sxm.{i}" for i in range(8)]
    assert h100.power_w() == 8 * 700 + 2 * 500
    rack = load_cluster("mixed-rack")
    assert [d.id for d in rack.devices() if d.is_host] == ["gpu0.host", "dmx0.host", "cpu0.host"]
    assert rack.device("cpu0.host").chip.name == "epyc-9965"
    assert rack.device("cpu0.host").memory_bytes == 1.5e12


def test_copy_recomputes_devices() -> None:
    c = load_cluster("8x-h100-nvlink")
    assert len(c.devices()) == 9
    smaller = c.model_copy(update={"nodes": [c.nodes[0].model_copy(update={"chips": {"h100-sxm": 2}})]})
    assert [d.id for d in smaller.devices()] == ["hgx0.h100-sxm.0", "hgx0.h100-sxm.1", "hgx0.host"]
    assert len(c.devices()) == 9


def test_unknown_preset_and_device() -> None:
    with pytest.raises(UnknownNameError, match="mixed-rack"):
        load_cluster("no-such-cluster")
    with pytest.raises(UnknownNameError, match="gpu0.h100-sxm.0"):
        load_cluster("mixed-rack").device("gpu0.h100-sxm.9")


def test_cluster_from_json_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(Cluster.model_validate({"name": "j", "nodes": [node("a", {"b200": 2}, NVLINK)]}).model_dump_json())
    assert [d.id for d in load_cluster(path).devices()] == ["a.b200.0", "a.b200.1", "a.host"]


@pytest.mark.parametrize(
    ("nodes", "links", "expect"),
    [
        ([node("a", {"h100-sxm": 1})], [rdma("a", "z")], "unknown node 'z'"),
        ([node("a", {"h100-sxm": 1}, cpu="h100-sxm")], [], "nodes.0.host.cpu"),
        ([node("a", {"h100-sxm": 1}, cpu="h100-sxm")], [], "not a cpu"),
        ([node("a", {"h1000": 2})], [], "node a: unknown chip 'h1000'"),
        ([node("a", {"xeon-6980p": 1})], [], "is a cpu"),
        ([node("a", {"h100-sxm": 0})], [], "nodes.0.chips.h100-sxm"),
        ([node("a"), node("a")], [], "two nodes are called 'a'"),
        ([node("a"), node("b")], [rdma("a", "b"), rdma("b", "a")], "second link"),
        ([node("a.b")], [], "nodes.0.name"),
        ([{**node("a", {"h100-sxm": 1}), "host_link": None}], [], "no host_link"),
        ([{**node("a"), "gpus": 8}], [], "nodes.0.gpus: unknown field"),
    ],
)
def test_bad_cluster_is_config_error(nodes: list[dict], links: list[dict], expect: str) -> None:
    with pytest.raises(ConfigError) as e:
        cluster(nodes, links)
    assert expect in str(e.value) and str(e.value).startswith("test.yaml: ")


def test_bad_cluster_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "nodes": [node("a")], "links": [rdma("a", "q")]}))
    with pytest.raises(ConfigError, match=rf"^{path}: links: .*unknown node 'q'"):
        load_cluster(path)


# --- routes ------------------------------------------------------------------------------

GB = 1e9


def test_route_kinds_and_times() -> None:
    c = load_cluster("mixed-rack")
    local = c.route("gpu0.h100-sxm.0", "gpu0.h100-sxm.0")
    assert (local.kind, local.hops, local.time(GB)) == ("local", (), 0.0)

    direct = c.route("gpu0.h100-sxm.0", "gpu0.h100-sxm.3")
    assert direct.kind == "direct" and direct.time(GB) == pytest.approx(1e-6 + GB / 450e9)

    bounce = c.route("dmx0.dmatrix-corsair.0", "dmx0.dmatrix-corsair.1")
    assert [h.kind for h in bounce.hops] == ["pcie", "pcie"]
    assert bounce.kind == "host-bounce" and bounce.time(GB) == pytest.approx(2 * (2e-6 + GB / 64e9))

    to_host = c.route("gpu0.h100-sxm.2", "gpu0.host")
    assert to_host.kind == "direct" and to_host.time(GB) == pytest.approx(2e-6 + GB / 64e9)

    net = c.route("gpu0.h100-sxm.1", "dmx0.dmatrix-corsair.2")
    assert net.kind == "network" and [h.kind for h in net.hops] == ["pcie", "rdma", "pcie"]
    assert net.time(GB) == pytest.approx(2 * (2e-6 + GB / 64e9) + 5e-6 + GB / 50e9)
    assert net.bandwidth == 50e9

    host_to_gpu = c.route("cpu0.host", "gpu0.h100-sxm.0")
    assert [h.kind for h in host_to_gpu.hops] == ["rdma", "pcie"]


def test_multi_hop_and_unreachable() -> None:
    nodes = [node("a", {"h100-sxm": 2}), node("b"), node("c", {"mi300x": 1}, cpu="epyc-9965"), node("d")]
    c = cluster(nodes, [rdma("a", "b"), rdma("b", "c", bw=25e9, lat=3e-6)])
    r = c.route("a.h100-sxm.1", "c.mi300x.0")
    assert r.kind == "network" and [h.kind for h in r.hops] == ["pcie", "rdma", "rdma", "pcie"]
    assert r.time(GB) == pytest.approx(2 * (2e-6 + GB / 64e9) + 5e-6 + GB / 50e9 + 3e-6 + GB / 25e9)
    assert c.route("a.h100-sxm.0", "a.h100-sxm.1").kind == "host-bounce"  # no fabric
    with pytest.raises(ConfigError, match=r"a\.h100-sxm\.0 to d\.host"):
        c.route("a.h100-sxm.0", "d.host")


def test_direct_link_wins_over_cheaper_multi_hop() -> None:
    c = cluster(
        [node("a"), node("b"), node("c")],
        [rdma("a", "c", bw=1e9, lat=1e-3), rdma("a", "b", bw=100e9), rdma("b", "c", bw=100e9)],
    )
    assert len(c.route("a.host", "c.host").hops) == 1


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    """Small random clusters: mixed chips, optional fabrics, a random subset of node links."""
    kinds = ["h100-sxm", "mi300x", "dmatrix-corsair", "groq-lpu"]
    n = draw(st.integers(1, 4))
    nodes = []
    for i in range(n):
        chips = draw(st.dictionaries(st.sampled_from(kinds), st.integers(1, 3), max_size=2))
        fabric = draw(st.sampled_from([None, NVLINK]))
        nodes.append(node(f"n{i}", chips, fabric, cpu=draw(st.sampled_from(["xeon-6980p", "epyc-9965"]))))
    pairs = [(f"n{i}", f"n{j}") for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    bws = st.floats(1e9, 1e12)
    links = [rdma(a, b, bw=draw(bws), lat=draw(st.floats(0, 1e-4))) for a, b in chosen]
    return cluster(nodes, links)


@settings(max_examples=60, deadline=None)
@given(c=clusters(), data=st.data(), sizes=st.lists(st.floats(0, 1e12), min_size=2, max_size=5))
def test_route_time_monotone_and_symmetric(c: Cluster, data: st.DataObject, sizes: list[float]) -> None:
    ids = [d.id for d in c.devices()]
    a, b = data.draw(st.sampled_from(ids)), data.draw(st.sampled_from(ids))
    try:
        fwd = c.route(a, b)
    except ConfigError as e:
        assert a in str(e) and b in str(e)
        with pytest.raises(ConfigError):
            c.route(b, a)
        return
    back = c.route(b, a)
    assert fwd.kind == back.kind and fwd.hops == back.hops[::-1]
    times = [fwd.time(s) for s in sorted(sizes)]
    assert times == sorted(times)
    assert times == [back.time(s) for s in sorted(sizes)]
    assert all(math.isfinite(t) and t >= 0 for t in times)
