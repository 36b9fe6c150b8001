"""Uncertainty bands end to end: the combination rule on hand-worked graphs, plan-level bands against
held-out measurements, "not distinguishable" where bands overlap and a winner where they do not, and
one `--stack` option (with its deprecated aliases) on every command."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path

import pytest

from _cli import run_cli  # tests/_cli.py
from gimletc.analysis.bands import edge_graph, metric_bands
from gimletc.analysis.replay import replay
from gimletc.compiler import compare
from gimletc.compiler import compile as compile_graph
from gimletc.cost.uncertainty import (
    Band,
    band,
    band_text,
    combine,
    interval_ratio,
    overlaps,
    stated,
    verdict,
    with_band,
)
from gimletc.hardware import get_chip, load_cluster
from gimletc.ir import parse_graph
from gimletc.plan import Interval, load_plan

REPO = Path(__file__).parents[1]
EXAMPLES = REPO / "examples"
GPU_ONLY = str(EXAMPLES / "clusters" / "gpu_only.yaml")
CALIBRATION = REPO / "src" / "gimletc" / "cost" / "data" / "h200_llama_calibration.json"

# q feeds a 10 ms prefill on an H200 and a 9 ms retrieval scan on the host; both feed a 1 ms tool.
FORK = '''module attributes {gimlet.level = "exec", gimlet.name = "fork"} {
  %q, %q.done = "exec.compute"() {device = "n.host", devices = ["n.host#0"], kind_of = "agent.input", of = "q", seconds = 0.0 : f64, sym_name = "q", tokens = 10 : i64} : () -> (!gimlet.tokens<10>, !async.token)
  %kv, %p.done = "exec.compute"(%q) {ctx = 0 : i64, device = "n.h200.0", devices = ["n.h200.0"], kind_of = "model.prefill", llm = "a", model = "llama-3.1-8b", of = "a.prefill", seconds = 0.010 : f64, sym_name = "a.prefill", tokens = 10 : i64} : (!gimlet.tokens<10>) -> (!gimlet.kv<1000>, !async.token)
  %docs, %r.done = "exec.compute"(%q) {device = "n.host", devices = ["n.host#1"], doc_tokens = 10 : i64, index_docs = 10 : i64, k = 1 : i64, kind_of = "agent.retrieve", of = "r", seconds = 0.009 : f64, sym_name = "r"} : (!gimlet.tokens<10>) -> (!gimlet.tokens<10>, !async.token)
  %t, %t.done = "exec.compute"(%kv, %docs) {device = "n.host", devices = ["n.host#2"], kind_of = "agent.tool", latency_s = 0.001 : f64, of = "t", output_tokens = 1 : i64, seconds = 0.001 : f64, sym_name = "t"} : (!gimlet.kv<1000>, !gimlet.tokens<10>) -> (!gimlet.tokens<1>, !async.token)
}
'''
CHIPS = {"n.h200.0": get_chip("h200"), "n.host": get_chip("xeon-host-16c")}


# ---- the combination rule, by hand ----------------------------------------------------------------


def test_combination_rule_by_hand():
    # a chain of 10 ms at +-10% and 30 ms at +-20%: at worst 1 + 6 = 7 ms off 40 ms = 17.5%
    assert combine([(0.010, Band(0.1, "a", True)), (0.030, Band(0.2, "b", True))]).rel == pytest.approx(0.175)
    # a ratio of [90, 110] over [45, 55]
    assert interval_ratio((90.0, 110.0), (45.0, 55.0)) == pytest.approx((90 / 55, 110 / 45))
    assert interval_ratio((1.0, 2.0), (0.0, 1.0))[1] == float("inf")
    assert band_text(100.0, 92.0, 108.0) == "±8%" and band_text(100.0, 90.0, 112.0) == "-10%/+12%"
    assert with_band(6.3, (5.796, 6.804)) == "6.3 ±8%" and with_band(6.3, None) == "6.3"
    assert overlaps((1.0, 2.0), (2.0, 3.0)) and not overlaps((1.0, 1.9), (2.0, 3.0))
    assert verdict((1.0, 1.9), (2.0, 3.0)) == "better" and verdict((2.0, 3.0), (1.0, 1.9)) == "worse"
    assert verdict((1.0, 2.0), (1.5, 3.0)) == "not distinguishable"
    assert verdict((3.0, 4.0), (1.0, 2.0), lower_is_better=False, words=("faster", "slower")) == "faster"


def test_a_plan_total_is_the_replay_at_each_edge_not_the_critical_paths_mean():
    """The prefill (band rp) is critical as predicted; at the high edge the retrieval scan (stated
    +-50%) overtakes it: 9 x 1.5 + 1 = 14.5 ms, more than the nominal critical path's time-weighted
    band would allow (11 + 10 rp ms)."""
    g = parse_graph(FORK)
    rp = band("h200", "vllm", "prefill").rel
    assert rp < 0.35  # so that the scan overtakes the prefill at the high edge
    assert replay(g).makespan == pytest.approx(0.011)
    assert replay(g).critical_path() == ["q", "a.prefill", "t"]
    low, high = (replay(edge_graph(g, CHIPS, "vllm", e)) for e in (-1, 1))
    assert low.makespan == pytest.approx(0.010 * (1 - rp) + 0.001)  # the scan at 4.5 ms stays off the path
    assert high.makespan == pytest.approx(0.009 * 1.5 + 0.001)
    assert high.critical_path() == ["q", "r", "t"]
    assert high.makespan > 0.011 * (1 + combine([(0.010, band("h200", "vllm", "prefill")),
                                                (0.001, Band(0.0, "tool", True))]).rel)


def test_a_chain_is_the_time_weighted_mean_of_its_bands():
    chain = FORK.replace('"exec.compute"(%q) {device = "n.host"', '"exec.compute"(%kv) {device = "n.host"')
    g = parse_graph(chain.replace("} : (!gimlet.tokens<10>) -> (!gimlet.tokens<10>, !async.token)",
                                  "} : (!gimlet.kv<1000>) -> (!gimlet.tokens<10>, !async.token)"))
    b = combine([(0.010, band("h200", "vllm", "prefill")), (0.009, stated("a retrieval scan")),
                 (0.001, Band(0.0, "tool", True))])
    low, high = (replay(edge_graph(g, CHIPS, "vllm", e)).makespan for e in (-1, 1))
    assert replay(g).makespan == pytest.approx(0.020)
    assert (low, high) == pytest.approx((b.low(0.020), b.high(0.020)))


# ---- a compiled plan's bands -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rag_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("bands") / "rag.json"
    plan = compile_graph(str(EXAMPLES / "rag.py"), GPU_ONLY).plan
    plan.write(path)
    return plan, path


def test_plan_bands_hold_every_prediction_and_tpot_takes_the_decode_band(rag_plan):
    plan, _ = rag_plan
    m, b = plan.metrics, plan.metrics.bands
    assert b is not None and plan.baseline is not None and plan.baseline.metrics.bands is not None
    for key in ("latency_ms", "energy_j", "cost_usd", "throughput_rps"):
        iv = getattr(b, key)
        assert iv.lo < getattr(m, key) < iv.hi, key
    decode = next(p for p in plan.placements if p.kind == "model.decode")
    r = band(decode.chip, plan.stack, "decode").rel
    # TPOT is the decode op's time per token: exactly the decode band
    assert (b.tpot_ms["answer"].lo, b.tpot_ms["answer"].hi) == pytest.approx(
        (m.tpot_ms["answer"] * (1 - r), m.tpot_ms["answer"] * (1 + r)))
    # the latency band is no wider than the widest op band on the plan (transfers and the scan: +-50%)
    assert b.latency_ms.hi / m.latency_ms - 1 <= 0.5 and not b.measured  # the scan's band is stated
    cl = load_cluster(GPU_ONLY)
    from gimletc.ir import parse_graph as parse

    again = metric_bands(parse(plan.ir), cl, plan.stack, m.model_copy(update={"bands": None}))
    assert again == b  # the plan's bands are what its IR gives


def test_chains_of_held_out_reference_steps_lie_in_their_combined_band():
    """Requests built from the H200 rows (a prefill, then N decode steps or N verify + N decode steps),
    each step predicted by a fit that did not see it: the measured total lies in the interval the
    combination rule gives in at least 90% of requests."""
    from gimletc.cost.calibrate import calibrate

    rows = calibrate(CALIBRATION, get_chip("h200"), get_chip("xeon-host-16c"))[0].rows
    by = defaultdict(list)
    for r in rows:
        by[r.phase].append(r)
    bands = {k: band("h200", "reference", k) for k in ("prefill", "decode", "verify")}
    inside = total = 0
    for n in (1, 10, 100, 1000):
        for p, d in itertools.product(by["prefill"], by["decode"]):
            parts = [(p, 1), (d, n)]
            chains = [parts] + [[*parts, (v, n)] for v in by["verify"]]
            for chain in chains:
                measured = sum(r.measured_ms * k for r, k in chain)
                predicted = sum(r.loo_predicted_ms * k for r, k in chain)
                b = combine([(r.loo_predicted_ms * k, bands[r.phase]) for r, k in chain])
                inside += b.low(predicted) <= measured <= b.high(predicted)
                total += 1
    assert total == 4 * 3 * 6 * 5 and inside / total >= 0.9


@pytest.fixture(scope="module")
def h200_vllm_checks():
    pytest.importorskip("aiconfigurator_core")
    pytest.importorskip("pandas")
    from gimletc.cost.aiconfigurator import calibrate_engine

    return calibrate_engine("h200_sxm", "vllm").checks


def test_chains_of_held_out_engine_steps_lie_in_their_combined_band(h200_vllm_checks):
    """The same on the vLLM H200 profile's held-out steps (by model and by range, as its bands were
    derived): per held-out model, a prefill then N decode steps; at least 90% inside, dense and MoE."""
    groups = defaultdict(list)
    for c in h200_vllm_checks:
        groups[(c.model, c.tp, c.fold)].append(c)
    for moe in (False, True):
        bp, bd = band("h200", "vllm", "prefill", moe), band("h200", "vllm", "decode", moe)
        inside = total = 0
        for n in (1, 10, 100, 1000):
            for cs in groups.values():
                if cs[0].moe != moe:
                    continue
                for p, d in itertools.product([c for c in cs if c.phase == "prefill"],
                                              [c for c in cs if c.phase == "decode"]):
                    measured = p.measured_ms + n * d.measured_ms
                    predicted = p.predicted_ms + n * d.predicted_ms
                    b = combine([(p.predicted_ms, bp), (n * d.predicted_ms, bd)])
                    inside += b.low(predicted) <= measured <= b.high(predicted)
                    total += 1
        assert total > 100 and inside / total >= 0.9, (moe, inside, total)


# ---- comparisons: "not distinguishable" or a winner -------------------------------------------------


def _scaled(metrics, f: float):
    """`metrics` with every time-like figure (and its band) multiplied by `f`."""
    b = metrics.bands
    iv = lambda x: Interval(lo=x.lo * f, hi=x.hi * f)  # noqa: E731
    bands = b.model_copy(update={"latency_ms": iv(b.latency_ms), "energy_j": iv(b.energy_j)})
    return metrics.model_copy(update={"latency_ms": metrics.latency_ms * f, "energy_j": metrics.energy_j * f,
                                      "bands": bands})


def test_compare_declares_a_winner_only_when_the_bands_do_not_overlap(rag_plan):
    plan, _ = rag_plan
    m = plan.metrics
    same = compare(m, m)
    assert same.latency == "not distinguishable" and same.energy == "not distinguishable"
    assert same.speedup.lo < 1 < same.speedup.hi
    lat = m.bands.latency_ms
    slow = _scaled(m, 2 * lat.hi / lat.lo)  # a baseline whose band starts above twice the plan's top
    won = compare(m, slow)
    assert won.latency == "faster" and won.energy == "less" and won.speedup.lo > 1
    lost = compare(slow, m)
    assert lost.latency == "slower" and lost.energy == "more" and lost.speedup.hi < 1


def test_show_prints_not_distinguishable_when_bands_overlap_and_a_winner_when_not(rag_plan, tmp_path, capsys):
    plan, _ = rag_plan
    near = plan.baseline.model_copy(update={"metrics": _scaled(plan.metrics, 1.05)})  # 5% slower, bands ~10%
    tied = plan.model_copy(update={"baseline": near, "speedup": 1.05, "energy_ratio": 1 / 1.05,
                                   "comparison": compare(plan.metrics, near.metrics)})
    tied.write(tmp_path / "tied.json")
    code, out, _ = run_cli(capsys, "show", str(tmp_path / "tied.json"))
    assert code == 0
    assert "speedup over the baseline: 1.05x" in out and "not distinguishable from the baseline" in out
    lat_row = next(line for line in out.splitlines() if "latency ms" in line)
    assert "not distinguishable" in lat_row and "±" in lat_row
    # each op's time with its band; a tool's time is the graph's own, with none
    r = band(next(p.chip for p in plan.placements if p.kind == "model.decode"), plan.stack, "decode")
    assert f"{r}" in next(line for line in out.splitlines() if "model.decode" in line)
    assert "±" not in next(line for line in out.splitlines() if "agent.tool" in line)

    lat = plan.metrics.bands.latency_ms
    f = 3 * lat.hi / lat.lo
    slow = plan.baseline.model_copy(update={"metrics": _scaled(plan.metrics, f)})
    won = plan.model_copy(update={"baseline": slow, "speedup": f, "energy_ratio": 1 / f,
                                  "comparison": compare(plan.metrics, slow.metrics)})
    won.write(tmp_path / "won.json")
    code, out, _ = run_cli(capsys, "show", str(tmp_path / "won.json"))
    assert code == 0 and "faster than the baseline" in out and "less energy" in out
    lat_row = next(line for line in out.splitlines() if "latency ms" in line)
    assert f"{f:.2f}x better" in lat_row and "not distinguishable" not in lat_row


def test_plans_from_before_bands_still_load_and_show(rag_plan, tmp_path, capsys):
    _, path = rag_plan
    d = json.loads(path.read_text())
    del d["metrics"]["bands"], d["baseline"]["metrics"]["bands"], d["comparison"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    assert load_plan(old).metrics.bands is None
    code, out, _ = run_cli(capsys, "show", str(old))
    assert code == 0 and "speedup over the baseline" in out and "within bands" not in out
    lat_row = next(line for line in out.splitlines() if "latency ms" in line)
    assert "±" not in lat_row and "not distinguishable" not in lat_row


# ---- simulate and search -------------------------------------------------------------------------------

SIM_KEYS = {"name", "requests", "completed", "arrivals", "duration_s", "ttft_ms", "tpot_ms", "e2e_ms",
            "throughput_tok_s", "throughput_req_s", "output_tokens", "energy_j", "energy_per_request_j",
            "energy_per_token_j", "chips", "power_w", "utilisation", "engines", "llms", "events", "heap_events",
            "policy", "preemptions", "recomputed_tokens", "config", "slo", "slo_attainment", "goodput_req_s",
            "goodput", "source", "throughput_tok_s_per_chip", "prefix_cache"}


def test_simulate_json_keeps_its_keys_and_adds_bands_around_each_figure(rag_plan, capsys):
    _, path = rag_plan
    args = ("simulate", str(path), "--rate", "8", "-n", "150", "--slo-ttft-ms", "500", "--slo-tpot-ms", "20", "--json")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    d = json.loads(out)
    assert set(d) == SIM_KEYS | {"bands"}
    b = d["bands"]
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        for p in ("p50", "p90", "p99", "mean", "max"):
            assert b[key][p]["lo"] <= d[key][p] <= b[key][p]["hi"], (key, p)
        assert b[key]["p90"]["lo"] < b[key]["p90"]["hi"]
    for key in ("throughput_tok_s", "energy_per_request_j", "goodput_req_s", "slo_attainment"):
        assert b[key]["lo"] <= d[key] <= b[key]["hi"], key
    assert b["goodput_req_s"]["lo"] < d["goodput_req_s"] < b["goodput_req_s"]["hi"]
    code, out, _ = run_cli(capsys, *args, "--no-bands")
    nobands = json.loads(out)
    assert set(nobands) == SIM_KEYS and {k: v for k, v in d.items() if k != "bands"} == nobands
    code, out, _ = run_cli(capsys, *args[:-1])
    row = next(line for line in out.splitlines() if "TPOT" in line)
    assert "%" in row


def test_search_marks_configurations_within_each_others_bands(capsys):
    """The chunked and unchunked variants of a configuration simulate alike at this load: one ranks
    "=n" after the other (not distinguishable), and --json says so beside every existing key."""
    args = ("search", str(EXAMPLES / "rag.py"), "--cluster", GPU_ONLY, "--slo-ttft-ms", "500", "--slo-tpot-ms", "20",
            "--requests", "60", "--configs", "2", "--max-chips", "1")
    code, out, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert {"slo", "settings", "candidates", "simulated", "evaluations", "top", "pareto", "skipped", "failed",
            "plot"} < set(d)
    for e in d["evaluations"]:
        b = e["bands"]
        assert b["tok_s_per_chip"]["lo"] <= e["tok_s_per_chip"] <= b["tok_s_per_chip"]["hi"]
        assert b["goodput_req_s"]["lo"] < b["goodput_req_s"]["hi"]
    ties = d["not_distinguishable"]["per_chip"]
    assert ties and ties[0]["from_rank"] < ties[0]["rank"]
    assert isinstance(d["pareto_within_bands"], list)
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "=1" in out and "not distinguishable from #n" in out and "%/+" in out


def test_rank_ties_name_the_best_overlapping_configuration():
    from types import SimpleNamespace

    from gimletc.serving.bands import EvaluationBands, rank_ties

    def ev(label):
        return SimpleNamespace(config=SimpleNamespace(label=label))

    def b(lo, hi):
        return EvaluationBands((lo, hi), (lo, hi), (lo, hi), (lo, hi), None, None)

    ranked = [ev("a"), ev("b"), ev("c"), ev("d")]
    bands = {"a": b(90, 110), "b": b(80, 95), "c": b(60, 85), "d": b(10, 20)}
    # b overlaps a; c overlaps b but not a; d overlaps nobody: a winner over it is declared
    assert rank_ties(ranked, "per_chip", bands) == [None, 0, 1, None]


# ---- one --stack option, with the old names kept -----------------------------------------------------


def test_every_command_takes_stack_and_names_its_default(capsys):
    defaults = {"estimate": "reference", "compile": "vllm", "simulate": "vllm", "search": "vllm"}
    for cmd, default in defaults.items():
        code, out, _ = run_cli(capsys, cmd, "--help")
        text = " ".join(out.replace("│", " ").split())  # the help sits in a box
        assert "--stack" in text and "vllm" in text and "reference" in text, cmd
        assert (f"[default: {default}]" in text or f"(default: {default})" in text
                or "compile defaults to vllm" in text), cmd


def test_deprecated_profile_names_map_to_stacks_with_a_one_line_note(rag_plan, capsys):
    _, path = rag_plan
    base = ("simulate", str(path), "--rate", "4", "-n", "60", "--json", "--no-bands")
    for old, new in (("fused-engine", "vllm"), ("fused", "vllm"), ("calibrated", "reference")):
        code, out_old, err = run_cli(capsys, *base, "--profile", old)
        assert code == 0 and err.count("\n") == 1 and "--profile is deprecated" in err and f"--stack {new}" in err
        code, out_new, err_new = run_cli(capsys, *base, "--stack", new)
        assert code == 0 and err_new == "" and out_old == out_new
    code, out, err = run_cli(capsys, "estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "decode",
                             "--stack", "fused", "--json")
    assert code == 0 and err.count("\n") == 1 and "deprecated" in err
    assert json.loads(out)["stack_resolved"] == "vllm"
    sargs = ("search", str(EXAMPLES / "rag.py"), "--cluster", GPU_ONLY, "--slo-ttft-ms", "500", "--requests", "20",
             "--configs", "1", "--max-chips", "1", "--no-bands", "--json")
    code, out_old, err = run_cli(capsys, *sargs, "--profile", "calibrated")
    assert code == 0 and "--profile is deprecated" in err
    code, out_new, _ = run_cli(capsys, *sargs, "--stack", "reference")
    assert out_old == out_new


def test_estimate_defaults_to_the_reference_stack(capsys):
    """One step, as PyTorch runs it, unless told otherwise (docs/cost-model.md, "Software stacks")."""
    args = ("estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "decode", "--json")
    _, out, _ = run_cli(capsys, *args)
    _, explicit, _ = run_cli(capsys, *args, "--stack", "reference")
    _, engine, _ = run_cli(capsys, *args, "--stack", "vllm")
    assert json.loads(out)["stack"] == "reference" and out == explicit and out != engine


@pytest.mark.parametrize("cmd", ["estimate", "compile", "simulate", "search"])
@pytest.mark.parametrize("option", ["--stack", "--profile"])
def test_unknown_stack_or_profile_is_one_line_naming_the_known_ones(cmd, option, rag_plan, capsys):
    _, path = rag_plan
    head = {
        "estimate": ("estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "decode"),
        "compile": ("compile", str(EXAMPLES / "rag.py"), "-c", GPU_ONLY, "-o", str(path.with_name("x.json"))),
        "simulate": ("simulate", str(path), "--rate", "1"),
        "search": ("search", str(EXAMPLES / "rag.py"), "-c", GPU_ONLY, "--slo-ttft-ms", "500"),
    }[cmd]
    if option == "--profile" and cmd in ("estimate", "compile"):
        code, _, err = run_cli(capsys, *head, option, "vllm")
        assert code == 2 and "--profile" in err and err.count("\n") == 1  # no such option there
        return
    code, _, err = run_cli(capsys, *head, option, "tensorrt")
    assert code == 2 and err.count("\n") == 1 and "'tensorrt'" in err
    assert all(s in err for s in ("vllm", "sglang", "trtllm", "reference")), err


def test_stack_and_profile_naming_different_stacks_is_an_error(rag_plan, capsys):
    _, path = rag_plan
    code, _, err = run_cli(capsys, "simulate", str(path), "--rate", "1", "--stack", "vllm", "--profile", "calibrated")
    assert code == 2 and "name different stacks" in err
