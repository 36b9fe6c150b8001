"""Cost model: hand-checked cases, physical properties, fit checks, and the calibration."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gimletc.cost.calibrate import calibrate, load_calibration
from gimletc.cost.accounting import energy_j
from gimletc.cost.roofline import estimate, min_chips
from gimletc.errors import DoesNotFitError, EstimateError
from gimletc.hardware import chip_catalog, get_chip
from gimletc.models import catalog, get_model

CALIBRATION = Path(__file__).parents[1] / "src/gimletc/cost/data/h200_llama_calibration.json"
MODELS = sorted(catalog())
CHIPS = sorted(chip_catalog())
DENSE = ["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "qwen3-32b"]
SMALL_FITTING = ["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "gpt-oss-20b", "qwen3-32b", "mixtral-8x7b"]


def test_decode_is_memory_bound_and_matches_hand_roofline():
    """8B decode at batch 1 on H200: weights / (bw x eff) + layers x layer overhead, within 5%."""
    m, c = get_model("llama-3.1-8b"), get_chip("h200")
    est = estimate(m, c, "decode", 1, 1, 1024)
    e = c.efficiency
    streamed = m.weight_bytes - m.vocab * m.hidden * 2 + m.hidden * 2  # input table is gathered, not streamed
    kv = m.kv_cache_bytes(1024)
    hand = (streamed + kv) / (c.memory_bw * e.memory) + m.layers * e.layer_overhead_s
    assert est.latency_s == pytest.approx(hand, rel=0.05)
    assert est.ops and all(o.bound == "memory" for o in est.ops if o.kind == "gemm")


def test_long_prefill_is_compute_bound():
    est = estimate(get_model("llama-3.1-8b"), get_chip("h200"), "prefill", 1, 8192, 0)
    assert est.bound == "compute"
    assert est.flops > 2 * 7e9 * 8192


def test_does_not_fit_names_model_chip_and_bytes():
    with pytest.raises(DoesNotFitError) as e:
        estimate(get_model("llama-3.1-405b"), get_chip("h200"), "decode", 1, 1, 1024)
    msg = str(e.value)
    assert "llama-3.1-405b" in msg and "h200" in msg and "GB" in msg and "141.0 GB" in msg
    assert e.value.needed_bytes > e.value.capacity_bytes


def test_splitting_over_chips_makes_it_fit():
    m, c = get_model("llama-3.1-405b"), get_chip("h200")
    n = min_chips(m, c, 1, 1, 1024)
    assert n == math.ceil(estimate(m, c, "decode", 1, 1, 1024, chips=n, check_fit=False).memory.total / c.capacity_bytes)
    est = estimate(m, c, "decode", 1, 1, 1024, chips=n)
    assert est.chips == n and est.overhead_s > 0


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("chip", CHIPS)
def test_every_model_on_every_chip_estimates_or_says_why(model, chip):
    m, c = get_model(model), get_chip(chip)
    try:
        est = estimate(m, c, "decode", 1, 1, 1024)
    except DoesNotFitError as e:
        assert model in str(e) and chip in str(e)
        assert min_chips(m, c, 1, 1, 1024) > 1
        return
    assert est.latency_s > 0 and est.energy_j > 0 and est.bound in ("compute", "memory", "overhead")


def test_bad_arguments_are_typed_errors():
    m, c = get_model("llama-3.2-1b"), get_chip("h200")
    with pytest.raises(EstimateError, match="tokens=4"):
        estimate(m, c, "decode", 1, 4, 0)
    with pytest.raises(EstimateError, match="batch"):
        estimate(m, c, "prefill", 0, 4, 0)
    with pytest.raises(EstimateError, match="phase"):
        estimate(m, c, "train", 1, 4, 0)


def test_sram_resident_weights_stream_faster():
    """A model whose weights fit in SRAM streams them at SRAM bandwidth."""
    corsair = get_chip("dmatrix-corsair")
    m = get_model("llama-3.2-1b")
    est = estimate(m, corsair, "decode", 1, 1, 1024)
    assert est.weights_in_sram == pytest.approx(min(1.0, corsair.sram_bytes / m.weight_bytes))
    no_sram = corsair.model_copy(update={"sram_bytes": 0.0, "sram_bw": 0.0})
    assert estimate(m, no_sram, "decode", 1, 1, 1024).latency_s > est.latency_s


def test_energy_between_idle_and_tdp():
    c = get_chip("h200")
    assert energy_j(c, 0.0, 1.0) == pytest.approx(c.idle_w)
    assert energy_j(c, 5.0, 1.0) == pytest.approx(c.tdp_w)


# ---- properties ------------------------------------------------------------------

phases = st.sampled_from(["prefill", "decode", "verify"])


@st.composite
def step(draw):
    phase = draw(phases)
    tokens = 1 if phase == "decode" else draw(st.integers(1, 4096))
    return (
        draw(st.sampled_from(SMALL_FITTING)),
        draw(st.sampled_from(["h100-sxm", "h200", "b200", "mi300x", "xeon-6980p"])),
        phase,
        draw(st.integers(1, 64)),
        tokens,
        draw(st.integers(0, 8192)),
    )


def _t(model, chip, phase, b, t, c, chip_obj=None):
    return estimate(get_model(model), chip_obj or get_chip(chip), phase, b, t, c, check_fit=False).latency_s


@settings(max_examples=60, deadline=None)
@given(step(), st.integers(1, 64), st.integers(0, 4096), st.integers(0, 2048))
def test_time_never_decreases_with_batch_tokens_or_context(s, db, dc, dt):
    model, chip, phase, b, t, c = s
    base = _t(model, chip, phase, b, t, c)
    assert _t(model, chip, phase, b + db, t, c) >= base * (1 - 1e-12)
    assert _t(model, chip, phase, b, t, c + dc) >= base * (1 - 1e-12)
    if phase != "decode":
        assert _t(model, chip, phase, b, t + dt, c) >= base * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(step(), st.floats(1.0, 10.0), st.sampled_from(["memory_bw", "peak_flops", "sram_bw"]))
def test_more_bandwidth_or_flops_is_never_slower(s, factor, what):
    model, chip, phase, b, t, c = s
    base = get_chip(chip)
    if what == "peak_flops":
        faster = base.model_copy(update={"peak_flops": {k: v * factor for k, v in base.peak_flops.items()}})
    else:
        faster = base.model_copy(update={what: getattr(base, what) * factor})
    assert _t(model, chip, phase, b, t, c, faster) <= _t(model, chip, phase, b, t, c) * (1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(step())
def test_prefill_never_cheaper_than_a_decode_step(s):
    model, chip, _, b, t, c = s
    assert _t(model, chip, "prefill", b, t, c) >= _t(model, chip, "decode", b, 1, c) * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(step())
def test_energy_never_below_idle_energy(s):
    model, chip, phase, b, t, c = s
    ch = get_chip(chip)
    est = estimate(get_model(model), ch, phase, b, t, c, check_fit=False)
    assert est.energy_j >= ch.idle_w * est.latency_s * (1 - 1e-12)
    assert est.energy_j <= ch.tdp_w * est.latency_s * (1 + 1e-12)


# ---- calibration -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fits():
    return {f.chip: f for f in calibrate(CALIBRATION, get_chip("h200"), get_chip("xeon-host-16c"))}


def test_calibration_fits_the_h200_rows(fits):
    gpu = fits["h200"]
    assert len(gpu.rows) == len(load_calibration(CALIBRATION).gpu_steps)
    assert gpu.median_error < 0.10
    assert gpu.max_error < 0.20
    # The fit respects the measured GEMM ceiling (783.7 TFLOP/s of a 989 TFLOP/s peak).
    assert gpu.efficiency.gemm <= 783.7 / 989 + 1e-9


def test_shipped_efficiencies_equal_a_fresh_fit(fits):
    """The catalog holds exactly what `gimletc calibrate --write` produces, not hand-tuned values."""
    for name, fit in fits.items():
        shipped = get_chip(name).efficiency
        for field in fit.params:
            assert getattr(shipped, field) == pytest.approx(getattr(fit.efficiency, field), rel=1e-4), (name, field)
        assert shipped.origin.startswith("fitted")


def test_other_chips_derive_their_efficiency_by_rule():
    h200 = get_chip("h200").efficiency
    for c in chip_catalog().values():
        if c.name in ("h200", "xeon-host-16c"):
            continue
        assert c.efficiency.origin.startswith("derived"), c.name
        if c.kind != "cpu":
            assert c.efficiency.gemm == h200.gemm and c.efficiency.memory == h200.memory
