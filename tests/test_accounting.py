"""gimletc.cost.accounting, function by function, against numbers worked out by hand.

The oracles (tests/test_oracles.py) check these functions through whole plans; here each one's
promise is checked on its own, with its default arguments, so a change to one that the plans
happen not to reach (a default, a branch no current caller takes) still fails a test.
Catalog figures (pinned by test_oracles.py::test_catalog_figures_the_oracles_assume):
h100-sxm 700 W busy, 90 W idle, 3.0 USD/h; a100-sxm-80gb 400 W, 55 W, 1.8 USD/h;
xeon-host-16c 150 W, 40 W, no price.
"""

from __future__ import annotations

import pytest

from gimletc.cost import accounting
from gimletc.hardware import Cluster, get_chip

H100, A100, XEON = get_chip("h100-sxm"), get_chip("a100-sxm-80gb"), get_chip("xeon-host-16c")


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-12)


def test_energy_is_tdp_while_busy_and_idle_power_for_the_rest_of_the_span():
    # 3 s busy of 5 s: 700 x 3 + 90 x 2 = 2,100 + 180 = 2,280 J per chip.
    assert accounting.energy_j(H100, 3.0, 5.0) == approx(2280.0)
    assert accounting.energy_j(H100, 3.0, 5.0, 2) == approx(4560.0)
    # Busy time is clamped to [0, span]: 7 s busy of 5 s is 5 s at TDP (3,500 J); -1 s is 5 s idle (450 J).
    assert accounting.energy_j(H100, 7.0, 5.0) == approx(3500.0)
    assert accounting.energy_j(H100, -1.0, 5.0) == approx(450.0)
    assert accounting.energy_j(H100, 0.0, 0.0) == 0.0


def test_busy_and_idle_energy_add_up_to_energy():
    # busy: 2 s at 700 W = 1,400 J; 3 chips: 4,200 J. idle: 10 s at 90 W = 900 J; 2 chips: 1,800 J.
    assert accounting.busy_energy_j(H100, 2.0) == approx(1400.0)
    assert accounting.busy_energy_j(H100, 2.0, 3) == approx(4200.0)
    assert accounting.idle_energy_j(H100, 10.0) == approx(900.0)
    assert accounting.idle_energy_j(H100, 10.0, 2) == approx(1800.0)
    # energy over a span = idle energy of the span + what busy time adds above idle:
    # 2 s busy of 10 s on 2 chips: 2 x (700 x 2 + 90 x 8) = 2 x 2,120 = 4,240 J = 1,800 + 2 x (700 - 90) x 2.
    assert accounting.energy_j(H100, 2.0, 10.0, 2) == approx(4240.0)


def test_cost_is_the_price_per_chip_hour_times_busy_time():
    # 2 h of an H100 at 3.0 USD/h = 6.0 USD; 2 chips: 12.0 USD. 30 min of 4 A100s: 4 x 1.8 / 2 = 3.6 USD.
    assert accounting.cost_usd(H100, 7200.0) == approx(6.0)
    assert accounting.cost_usd(H100, 7200.0, 2) == approx(12.0)
    assert accounting.cost_usd(A100, 1800.0, 4) == approx(3.6)
    assert accounting.cost_usd(XEON, 3600.0, 2) == 0.0  # a chip without a price costs nothing
    assert accounting.hourly_usd(A100) == approx(1.8)
    assert accounting.hourly_usd(A100, 4) == approx(7.2)
    assert accounting.hourly_usd(XEON) == 0.0


def test_power_is_tdp_per_chip_or_socket():
    assert accounting.power_w(H100) == 700.0
    assert accounting.power_w(XEON, 2) == 300.0


def test_a_cpu_op_keeps_one_lane_of_its_host_busy():
    assert accounting.lane_share(8) == 0.125
    assert accounting.lane_share(1) == 1.0
    # 2 lane-seconds on a host of 8 lanes keep it busy 0.25 s; on 4 lanes, 0.5 s.
    assert accounting.host_busy_s(2.0, 8) == 0.25
    assert accounting.host_busy_s(2.0, 4) == 0.5


def test_units_and_lanes_come_from_the_host_and_are_one_for_an_accelerator():
    cl = Cluster.model_validate({"name": "acct", "links": [], "nodes": [
        {"name": "n0", "chips": {"h100-sxm": 2},
         "host": {"cpu": "xeon-host-16c", "memory_bytes": 1e12, "sockets": 2, "lanes": 4},
         "host_link": {"kind": "pcie", "bandwidth": 64e9, "latency": 2e-6}}]})
    devices = {d.id: d for d in cl.devices()}
    host, gpu = devices["n0.host"], devices["n0.h100-sxm.1"]
    assert (accounting.units(cl, host), accounting.lanes(cl, host)) == (2, 4)
    assert (accounting.units(cl, gpu), accounting.lanes(cl, gpu)) == (1, 1)
