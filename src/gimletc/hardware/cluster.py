"""Clusters: nodes of accelerators around a host CPU, and the links between them.

A cluster file names chips from the catalog; this module resolves them into
devices with stable ids (`"{node}.{chip}.{i}"` for accelerators,
`"{node}.host"` for a node's host CPU) and says how bytes get from one device
to another: a `Route` of links, each costing latency + bytes / bandwidth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import networkx as nx
from pydantic import Field, SerializerFunctionWrapHandler, ValidationInfo, field_validator, model_serializer, model_validator

from gimletc._io import load
from gimletc.errors import ConfigError, EstimateError, UnknownNameError
from gimletc.hardware.catalog import DATA, chip_catalog
from gimletc.hardware.resources import DEFAULT_HOST_LANES, accelerator_id, host_id
from gimletc.hardware.schema import Chip, LinkKind, _Strict

RouteKind = Literal["local", "direct", "host-bounce", "network"]
DeviceRole = Literal["accelerator", "host"]

# Multi-hop paths between nodes are chosen for a message of this size (about a
# KV-cache block or one layer's activations); a route's time is then computed
# for the real size, so the path does not change with the transfer.
PATH_PROBE_BYTES = 1e6
CLUSTERS = DATA / "clusters"


class Link(_Strict):
    """A point-to-point connection, costing latency + bytes / bandwidth per message."""

    kind: LinkKind
    bandwidth: float = Field(gt=0, description="bytes/s per direction")
    latency: float = Field(ge=0, description="seconds per message")

    def time(self, nbytes: float) -> float:
        return self.latency + nbytes / self.bandwidth


class NodeLink(Link):
    """A link between the hosts (NICs) of two nodes."""

    between: tuple[str, str]


class Host(_Strict):
    """A node's host CPU: a catalog chip of kind cpu, with the node's own memory size."""

    cpu: str
    memory_bytes: float = Field(gt=0, description="host DRAM of the node, bytes (overrides the chip's)")
    sockets: int = Field(1, ge=1, description="CPU packages; they act as one host device")
    lanes: int = Field(DEFAULT_HOST_LANES, ge=1, description="CPU ops (tools, code, retrieval) the host runs at once")

    @field_validator("cpu")
    @classmethod
    def _is_cpu(cls, name: str) -> str:
        chips = chip_catalog()
        if name not in chips:
            raise ValueError(str(UnknownNameError("chip", name, list(chips))))
        if chips[name].kind != "cpu":
            raise ValueError(f"chip {name!r} is a {chips[name].kind}, not a cpu")
        return name

    @model_serializer(mode="wrap")
    def _default_lanes_unwritten(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A host at the default lane count serialises as before the field existed, so the clusters
        # (and the plan digests that hash them) written before it are unchanged.
        data = handler(self)
        if self.lanes == DEFAULT_HOST_LANES:
            data.pop("lanes", None)
        return data


class Node(_Strict):
    """One machine: accelerators (catalog name -> count), its host, and how they connect."""

    # Dots separate the parts of a device id, so a node name may not contain one.
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    chips: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    host: Host
    fabric: Link | None = Field(None, description="all-to-all among this node's accelerators")
    host_link: Link | None = Field(None, description="each accelerator <-> the host CPU")

    @field_validator("chips")
    @classmethod
    def _known_accelerators(cls, chips: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        node = info.data.get("name", "?")
        catalog = chip_catalog()
        for name in chips:
            if name not in catalog:
                raise ValueError(f"node {node}: {UnknownNameError('chip', name, list(catalog))}")
            if catalog[name].kind == "cpu":
                raise ValueError(f"node {node}: chip {name!r} is a cpu; name it as host.cpu")
        return chips

    @model_validator(mode="after")
    def _accelerators_need_host_link(self) -> Node:
        if self.chips and self.host_link is None:
            raise ValueError(f"node {self.name}: has accelerators but no host_link")
        return self


@dataclass(frozen=True)
class Device:
    """One accelerator, or one node's host CPU, as placement and routing see it."""

    id: str
    node: str
    role: DeviceRole
    index: int
    chip: Chip = field(hash=False, repr=False)
    memory_bytes: float = field(repr=False)  # what it may hold: chip capacity, or the node's host DRAM

    @property
    def is_host(self) -> bool:
        return self.role == "host"


@dataclass(frozen=True)
class Route:
    """How bytes travel from `src` to `dst`: the links crossed, in order."""

    src: str
    dst: str
    kind: RouteKind
    hops: tuple[Link, ...]

    def time(self, nbytes: float) -> float:
        """Seconds to move `nbytes`: sum over hops of latency + nbytes / bandwidth (store and forward)."""
        if nbytes < 0:
            raise EstimateError(f"route {self.src} -> {self.dst}: nbytes={nbytes} is negative")
        # fsum is exactly rounded, so the reverse route gives the identical number.
        return math.fsum(h.latency + nbytes / h.bandwidth for h in self.hops)

    @property
    def bandwidth(self) -> float:
        """The slowest hop's bandwidth (inf for a local route)."""
        return min((h.bandwidth for h in self.hops), default=math.inf)

    @property
    def latency(self) -> float:
        return math.fsum(h.latency for h in self.hops)


class Cluster(_Strict):
    """Nodes and the links between them; devices and routes are derived from them."""

    name: str
    nodes: list[Node] = Field(min_length=1)
    links: list[NodeLink] = Field(default_factory=list, description="between nodes, host to host")

    @field_validator("nodes")
    @classmethod
    def _unique_names(cls, nodes: list[Node]) -> list[Node]:
        seen: set[str] = set()
        for n in nodes:
            if n.name in seen:
                raise ValueError(f"two nodes are called {n.name!r}")
            seen.add(n.name)
        return nodes

    @field_validator("links")
    @classmethod
    def _links_join_known_nodes(cls, links: list[NodeLink], info: ValidationInfo) -> list[NodeLink]:
        nodes = info.data.get("nodes")
        if nodes is None:  # the nodes already failed; that error is reported instead
            return links
        names = [n.name for n in nodes]
        pairs: set[frozenset[str]] = set()
        for i, link in enumerate(links):
            a, b = link.between
            for end in (a, b):
                if end not in names:
                    raise ValueError(f"links[{i}] names unknown node {end!r}; nodes: {', '.join(names)}")
            if a == b:
                raise ValueError(f"links[{i}] joins node {a!r} to itself")
            if frozenset((a, b)) in pairs:
                raise ValueError(f"links[{i}] is a second link between {a!r} and {b!r}")
            pairs.add(frozenset((a, b)))
        return links

    # Derived state lives in cached properties: pydantic's equality ignores them.
    _CACHED: ClassVar[tuple[str, ...]] = ("_device_map", "_node_map", "_graph")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Cluster:
        """A copy whose devices and routes follow its own (possibly updated) fields."""
        copied = super().model_copy(update=update, deep=deep)
        for key in self._CACHED:
            copied.__dict__.pop(key, None)
        return copied

    @cached_property
    def _device_map(self) -> dict[str, Device]:
        chips = chip_catalog()
        out: dict[str, Device] = {}
        for node in self.nodes:
            for name, count in node.chips.items():
                chip = chips[name]
                for i in range(count):
                    d = Device(accelerator_id(node.name, name, i), node.name, "accelerator", i, chip, chip.capacity_bytes)
                    out[d.id] = d
            host = Device(host_id(node.name), node.name, "host", 0, chips[node.host.cpu], node.host.memory_bytes)
            out[host.id] = host
        return out

    @cached_property
    def _node_map(self) -> dict[str, tuple[int, Node]]:
        return {n.name: (i, n) for i, n in enumerate(self.nodes)}

    @cached_property
    def _graph(self) -> nx.Graph:
        g = nx.Graph()
        g.add_nodes_from(n.name for n in self.nodes)
        for link in self.links:
            g.add_edge(*link.between, link=link, cost=link.time(PATH_PROBE_BYTES))
        return g

    def devices(self) -> list[Device]:
        """Every device: per node in file order, its accelerators (chips in file order, i from 0), then its host."""
        return list(self._device_map.values())

    def accelerators(self) -> list[Device]:
        return [d for d in self._device_map.values() if not d.is_host]

    def device(self, device_id: str) -> Device:
        """The device with this id; UnknownNameError listing the cluster's devices otherwise."""
        try:
            return self._device_map[device_id]
        except KeyError:
            raise UnknownNameError("device", device_id, list(self._device_map)) from None

    def node(self, name: str) -> Node:
        try:
            return self._node_map[name][1]
        except KeyError:
            raise UnknownNameError("node", name, list(self._node_map)) from None

    def route(self, src: str, dst: str) -> Route:
        """The route bytes take from device `src` to device `dst`.

        Same device: local, no hops. Within a node: over the fabric (direct), over the
        host link once when one end is the host (direct), or through host memory
        (host-bounce: the host link twice). Across nodes: host link out of an
        accelerator, the node links (the direct one if any, else the cheapest path
        for a 1 MB message), host link into an accelerator. ConfigError if the two
        nodes are not connected."""
        a, b = self.device(src), self.device(dst)
        if a.id == b.id:
            return Route(a.id, b.id, "local", ())
        na, nb = self.node(a.node), self.node(b.node)
        if na is nb:
            if a.is_host or b.is_host:
                return Route(a.id, b.id, "direct", (_host_link(na),))
            if na.fabric is not None:
                return Route(a.id, b.id, "direct", (na.fabric,))
            return Route(a.id, b.id, "host-bounce", (_host_link(na), _host_link(na)))
        hops = [] if a.is_host else [_host_link(na)]
        hops += self._node_path(a, b)
        hops += [] if b.is_host else [_host_link(nb)]
        return Route(a.id, b.id, "network", tuple(hops))

    def _node_path(self, a: Device, b: Device) -> list[Link]:
        """Node links from a's node to b's node, the same path both ways."""
        g = self._graph
        if g.has_edge(a.node, b.node):
            return [g.edges[a.node, b.node]["link"]]
        # Search from the node listed first so that b -> a is a -> b reversed.
        first, second = sorted((a.node, b.node), key=lambda n: self._node_map[n][0])
        try:
            path = nx.shortest_path(g, first, second, weight="cost")
        except nx.NetworkXNoPath:
            raise ConfigError(
                f"cluster {self.name}: no route from {a.id} to {b.id}: "
                f"no chain of links joins node {a.node} to node {b.node}"
            ) from None
        if first != a.node:
            path.reverse()
        return [g.edges[u, v]["link"] for u, v in zip(path, path[1:], strict=False)]

    def power_w(self) -> float:
        """Power at TDP of every accelerator and every host CPU socket."""
        chips = chip_catalog()
        return sum(
            sum(chips[c].tdp_w * k for c, k in n.chips.items()) + chips[n.host.cpu].tdp_w * n.host.sockets
            for n in self.nodes
        )

    def summary(self) -> str:
        """A few lines a person can read: nodes, their chips and links, total power."""
        accel = len(self.accelerators())
        sockets = sum(n.host.sockets for n in self.nodes)
        lines = [
            f"cluster {self.name}: {len(self.nodes)} node(s), {accel} accelerator(s), "
            f"{sockets} host socket(s), {self.power_w() / 1e3:.1f} kW at TDP"
        ]
        for n in self.nodes:
            chips = ", ".join(f"{k}x {c}" for c, k in n.chips.items()) or "no accelerators"
            if n.fabric is not None:
                chips += f" over {_link_text(n.fabric)}"
            elif sum(n.chips.values()) > 1:
                chips += " (no fabric: peer copies bounce through the host)"
            cpu = f"{n.host.sockets}x {n.host.cpu}" if n.host.sockets > 1 else n.host.cpu
            line = f"  {n.name}: {chips}; host {cpu}, {n.host.memory_bytes / 1e12:g} TB"
            if n.host_link is not None:
                line += f"; host link {_link_text(n.host_link)}"
            lines.append(line)
        lines += [f"  {a} <-> {b}: {_link_text(link)}" for link in self.links for a, b in [link.between]]
        return "\n".join(lines)


def _host_link(node: Node) -> Link:
    assert node.host_link is not None, "validation guarantees a host_link on nodes with accelerators"
    return node.host_link


def _link_text(link: Link) -> str:
    return f"{link.kind} {link.bandwidth / 1e9:g} GB/s, {link.latency * 1e6:g} us"


def cluster_presets() -> dict[str, Path]:
    """Preset cluster name -> its file."""
    return {f.stem: f for f in sorted(CLUSTERS.glob("*.yaml"))}


def load_cluster(name_or_path: str | Path) -> Cluster:
    """A preset cluster by name, or a cluster from a YAML/JSON file path."""
    key = str(name_or_path)
    presets = cluster_presets()
    if key in presets:
        return load(Cluster, presets[key])
    p = Path(key)
    if p.suffix in {".yaml", ".yml", ".json"} or p.exists():
        return load(Cluster, p)
    raise UnknownNameError("cluster", key, list(presets))
