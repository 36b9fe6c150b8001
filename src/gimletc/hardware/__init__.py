"""Hardware descriptions: the chip catalog, clusters of nodes and links, and routes between devices."""

from gimletc.hardware.catalog import chip_catalog, chip_file, chip_names, get_chip, load_chip, reference_for
from gimletc.hardware.cluster import Cluster, Device, Host, Link, Node, NodeLink, Route, cluster_presets, load_cluster
from gimletc.hardware.efficiency import derive_efficiency
from gimletc.hardware.schema import Chip, Efficiency

__all__ = [
    "Chip",
    "Cluster",
    "Device",
    "Efficiency",
    "Host",
    "Link",
    "Node",
    "NodeLink",
    "Route",
    "chip_catalog",
    "chip_file",
    "chip_names",
    "cluster_presets",
    "derive_efficiency",
    "get_chip",
    "load_chip",
    "load_cluster",
    "reference_for",
]
