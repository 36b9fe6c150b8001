"""Names of the resources ops occupy: devices, the CPU lanes of a host, and link channels.

Every such name is built and parsed here, so the convention has one owner:

- an accelerator: `"{node}.{chip}.{i}"`; a node's host CPU: `"{node}.host"`;
- one lane of a host (a CPU op runs on one lane; a host runs `Host.lanes` of them
  at once): `"{host}#{i}"`;
- a link channel an `exec.send` occupies: `"{src}->{dst}"`.
"""

from __future__ import annotations

DEFAULT_HOST_LANES = 8  # concurrent CPU ops per host (tools are single-threaded; hosts have many cores)
LANE_SEP = "#"
CHANNEL_SEP = "->"


def accelerator_id(node: str, chip: str, index: int) -> str:
    return f"{node}.{chip}.{index}"


def node_of_accelerator(device: str) -> str:
    """The node of an accelerator id (`accelerator_id`'s inverse for the node)."""
    return device.rsplit(".", 2)[0]


def host_id(node: str) -> str:
    return f"{node}.host"


def lane_id(host: str, index: int) -> str:
    """Lane `index` of host `host`."""
    return f"{host}{LANE_SEP}{index}"


def host_lane_ids(host: str, lanes: int) -> tuple[str, ...]:
    """Every lane of a host that runs `lanes` CPU ops at once, in index order."""
    return tuple(lane_id(host, i) for i in range(lanes))


def is_lane(resource: str) -> bool:
    return LANE_SEP in resource


def device_of(resource: str) -> str:
    """The device a resource belongs to: a lane's host, or the device itself."""
    return resource.split(LANE_SEP, 1)[0]


def channel_id(src: str, dst: str) -> str:
    """The channel a transfer from device `src` to device `dst` occupies."""
    return f"{src}{CHANNEL_SEP}{dst}"
