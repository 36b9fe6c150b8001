"""The serving search's answers: the budget bug's regression, mixed chip types within budgets (a
property over generated clusters), the integer program against exhaustive search, roles in the
simulator (speculative pairs, attention/FFN M:N units, attention DP with EP, a role's own batching
policy), --recommend, and --save with its validating loader."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gimletc import AgentGraph
from gimletc.cost.roofline import estimate
from gimletc.errors import ConfigError, GimletError
from gimletc.hardware import Cluster, get_chip, load_cluster
from gimletc.models import get_model
from gimletc.passes.partition import expected_tokens
from gimletc.serving import (
    EngineKind,
    Group,
    ModelServing,
    SearchSettings,
    ServingConfig,
    Speculation,
    Split,
    predict,
    recommend,
    search,
    serving_workload,
)
from gimletc.serving.layout import lower_to_model_level
from gimletc.serving.saved import document_text, load_search_result, search_document
from gimletc.serving.search import _Option, _Perf, _space, best_split, calls_of, solve
from gimletc.sim.arrivals import Arrivals, generate
from gimletc.sim.load import SimConfig, simulate
from gimletc.sim.metrics import SLO
from gimletc.sim.roles import SpecCost
from gimletc.sim.steps import CTX_STEP, PROFILES

from _cli import run_cli

EXAMPLES = Path(__file__).parents[1] / "examples"
H100_A100 = str(EXAMPLES / "scenarios" / "clusters" / "h100_a100.yaml")
GPU_CORSAIR = str(EXAMPLES / "scenarios" / "clusters" / "gpu_corsair.yaml")
H200_X16 = str(EXAMPLES / "scenarios" / "clusters" / "h200_x16.yaml")
SPLITWISE_SLO = SLO(2.0, 0.1)


def one_call(model: str = "llama-3.1-70b", prompt: int = 1500, out: int = 250, **kw) -> object:
    g = AgentGraph("splitwise" if model == "llama-3.1-70b" else "one-call")
    p = g.input("prompt", tokens=prompt)
    r = g.llm("chat", model=model, prompt=[p], output_tokens=out, **kw)
    g.output("reply", [r])
    return g.build()


# ---- mixed chip types within budgets: a property ------------------------------------------------------

GPUS = ("h100-sxm", "a100-sxm-80gb", "h200", "mi300x")


def two_type_cluster(a: str, na: int, b: str, nb: int) -> Cluster:
    def node(name: str, chip: str, n: int) -> dict:
        return {"name": name, "chips": {chip: n}, "host": {"cpu": "xeon-6980p", "memory_bytes": 1e12},
                "fabric": {"kind": "nvlink", "bandwidth": 450e9, "latency": 1e-6},
                "host_link": {"kind": "pcie", "bandwidth": 64e9, "latency": 2e-6}}

    return Cluster.model_validate({"name": "two-types", "nodes": [node("a", a, na), node("b", b, nb)],
                                   "links": [{"between": ["a", "b"], "kind": "rdma", "bandwidth": 50e9,
                                              "latency": 5e-6}]})


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(types=st.permutations(GPUS).map(lambda p: p[:2]), na=st.integers(1, 8), nb=st.integers(1, 8),
       cap=st.one_of(st.none(), st.integers(2, 16)), model=st.sampled_from(["llama-3.1-8b", "llama-3.1-70b"]),
       tpot=st.sampled_from([0.03, 0.1]))
def test_search_reports_a_feasible_mix_whenever_one_exists(types, na, nb, cap, model, tpot):
    a, b = types
    cl = two_type_cluster(a, na, b, nb)
    slo = SLO(2.0, tpot)
    s = SearchSettings(max_chips=cap, modes=("agg", "disagg"))
    budgets = {a: na, b: nb}
    total = min(cap or na + nb, na + nb)
    try:
        cands, _ = predict(one_call(model), cl, slo, s)
    except GimletError:
        cands = []
    for c in cands:  # every candidate, the best first, is feasible
        chips = c.config.chips()
        assert sum(chips.values()) <= total and all(chips[t] <= budgets[t] for t in chips)
    # The oracle, from the search's own per-kind predictions: a mix exists iff an aggregated replica fits on
    # each type together, or a prefill kind on one type fits beside a decode kind on the other.
    g = lower_to_model_level(one_call(model), cl)
    try:
        sp = _space(model, calls_of(g)[model], cl, slo, s, {"agg", "disagg"}, [])
    except GimletError:
        return
    o = sp.options

    def fits(*opts):
        need = {}
        for x in opts:
            for t, n in x.chips:
                need[t] = need.get(t, 0) + n
        return sum(need.values()) <= total and all(need[t] <= budgets[t] for t in need)

    mixed = any(fits(x, y) for x, y in itertools.product(o["agg"], o["agg"]) if x.kind.chip != y.kind.chip) or \
        any(fits(p, d) for p, d in itertools.product(o["prefill"], o["decode"]) if p.kind.chip != d.kind.chip)
    assert mixed == any(c.config.mixed_types for c in cands)
    # And no feasible one-kind-per-role split is lost (the budget bug): every (prefill, decode) pair that fits is there.
    labels = {c.config.label for c in cands}
    for p, d in itertools.product(o["prefill"], o["decode"]):
        if fits(p, d):
            assert any(lab.startswith(f"disagg ") and f"x {p.kind.label} prefill + " in lab and
                       lab.endswith(f"x {d.kind.label} decode") and lab.count(" + ") == 1 for lab in labels), (p, d)


# ---- the integer program against exhaustive search ---------------------------------------------------------


def opt(role: str, chips: dict[str, int], rate: float) -> _Option:
    chip = next(iter(chips))
    return _Option(role, tuple(sorted(chips.items())), rate, _Perf(0.0, True, 1, rate), EngineKind(chip, 1))


@settings(max_examples=40)
@given(st.data())
def test_solve_matches_exhaustive_search(data):
    types = ("x", "y")
    budgets = {t: data.draw(st.integers(1, 6)) for t in types}
    total = data.draw(st.integers(1, 12))
    roles = []
    for role in ("prefill", "decode"):
        n = data.draw(st.integers(1, 3))
        roles.append([opt(role, {data.draw(st.sampled_from(types)): data.draw(st.integers(1, 3))},
                          data.draw(st.floats(0.1, 10))) for _ in range(n)])
    opts = [o for r in roles for o in r]
    best_rate, best_chips = 0.0, 0
    ranges = [range(0, min(total // o.total, budgets[o.chips[0][0]] // o.chips[0][1]) + 1) for o in opts]
    for xs in itertools.product(*ranges):
        need = {t: 0 for t in types}
        for o, x in zip(opts, xs):
            need[o.chips[0][0]] += o.chips[0][1] * x
        if sum(need.values()) > total or any(need[t] > budgets[t] for t in types):
            continue
        i, rate = 0, math.inf
        for r in roles:
            rate = min(rate, sum(o.rate * x for o, x in zip(r, xs[i:i + len(r)])))
            i += len(r)
        chips = sum(need.values())
        if rate > best_rate * (1 + 1e-9) or (abs(rate - best_rate) <= 1e-9 * max(rate, 1e-12) and chips < best_chips):
            best_rate, best_chips = rate, chips
    got = solve(roles, budgets, total)
    if best_rate <= 0:
        assert got is None
        return
    assert got is not None
    rate, counts = got
    assert rate == pytest.approx(best_rate, rel=1e-6)
    chips = sum(o.total * x for r, cs in zip(roles, counts) for o, x in zip(r, cs))
    assert chips == best_chips
    # One option per role: the enumerating split agrees with the program.
    if all(len(r) == 1 for r in roles):
        split = best_split([r[0] for r in roles], budgets, total)
        assert split is not None and split[0] == pytest.approx(best_rate, rel=1e-6)


# ---- roles in the simulator -------------------------------------------------------------------------


def test_speculative_unit_prices_rounds_and_serves_at_the_predicted_tpot():
    """A draft on a Corsair card, the target verifying on an H100: one request alone decodes at the
    round's time over its expected tokens, (k·draft step + verify of k+1 + two transfers) / E."""
    cl = load_cluster(GPU_CORSAIR)
    draft, k, a = "llama-3.2-1b@mxint8", 4, 0.7
    prompt, out = 2000, 300
    g = one_call("gpt-oss-120b", prompt, out)
    ms = ModelServing("gpt-oss-120b", "spec", (Group("verify", EngineKind("h100-sxm", 1), 1),
                                               Group("draft", EngineKind("dmatrix-corsair", 1), 1)),
                      spec=Speculation(draft, k, a))
    cfg = ServingConfig((ms,))
    assert cfg.label == "spec 1x (h100-sxm TP1 verify + dmatrix-corsair TP1 draft llama-3.2-1b@mxint8 k=4)"
    wl = serving_workload(g, cl, cfg)
    (eng,) = wl.engines
    assert eng.devices == ("srv.h100-sxm.0",) and eng.aux == ("srv.dmatrix-corsair.0",)
    res = simulate(wl, Arrivals(np.array([0.0]), "trace", 1.0), SimConfig())
    # The closed form, from the cost model's own estimates at a grid point of the context.
    prof = PROFILES["vllm"]
    part = next(p for _, _, p in wl.engine_models[0])
    link_s = part[-1]
    cost = SpecCost(get_model("gpt-oss-120b"), get_chip("h100-sxm"), 1, prof, get_model(draft),
                    get_chip("dmatrix-corsair"), 1, k, a, link_s)
    ctx = 8 * CTX_STEP
    cost.prefill(1, 512, ctx)
    cost.mixed(512, 0, 1, ctx)  # pricing a mixed step must not leave the target's plain decode in the cache
    d = estimate(get_model(draft), get_chip("dmatrix-corsair"), "decode", 1, 1, ctx, stack="vllm").latency_s
    v = estimate(get_model("gpt-oss-120b"), get_chip("h100-sxm"), "verify", 1, k + 1, ctx, stack="vllm").latency_s
    assert cost.decode(1, ctx)[0] == pytest.approx((k * d + v + link_s) / expected_tokens(k, a), rel=1e-9)
    assert float(res.tpot[0]) == pytest.approx(cost.decode_run(1, prompt, out)[0] / out, rel=1e-9)
    # The draft card works in the pair's iterations: its energy counts, and it holds the draft's weights.
    assert res.utilisation["srv.dmatrix-corsair.0"] > 0
    assert res.engines[0]["policy"] == "vllm"


def test_attention_ffn_unit_keeps_kv_on_attention_groups_and_feeds_one_ffn_group():
    """An M:N = 4:1 unit on H200s: the KV caches live on the four attention engines' chips only, and a
    batch of B puts B tokens through the FFN engine per step (each expert read once for four groups)."""
    cl = load_cluster(H200_X16)
    model = "qwen3-235b-a22b"
    m = get_model(model)
    g = one_call(model, 2000, 100)
    ms = ModelServing(model, "attn-ffn", (Group("prefill", EngineKind("h200", 4), 1),
                                          Group("attn", EngineKind("h200", 1), 4),
                                          Group("ffn", EngineKind("h200", 4), 1)), split=Split(4, 1, 2))
    cfg = ServingConfig((ms,))
    assert cfg.chips() == {"h200": 12} and ms.units == 1
    wl = serving_workload(g, cl, cfg)
    unit = wl.engines[1]
    assert len(unit.devices) == 4 and len(unit.aux) == 4 and not set(unit.devices) & set(unit.aux)
    res = simulate(wl, generate("poisson", 2.0, 40, seed=0), SimConfig())
    assert res.completed == 40
    e = next(x for x in res.engines if x["id"].endswith("afd0"))
    attn_w = m.stage_weight_bytes(0, m.layers, "attention")
    room = 4 * get_chip("h200").capacity_bytes * 0.9 - 4 * attn_w
    assert e["kv_capacity_gb"] == pytest.approx(room / 1e9, rel=1e-9)
    assert all(res.utilisation[d] > 0 for d in unit.aux)


def test_split_cost_reads_experts_once_for_all_attention_groups():
    from gimletc.sim.roles import SplitCost

    m, chip = get_model("qwen3-235b-a22b"), get_chip("h200")
    prof = PROFILES["vllm"]
    one = SplitCost(m, chip, 1, prof, chip, 4, 4, 1, (5e-6, 400e9))
    # m = 1 micro-batch: the step is the attention side for B/4 sequences, then the FFN side for B tokens,
    # plus the transfers both ways (none overlap with a single micro-batch).
    B, ctx = 64, 4 * CTX_STEP
    a = one.attn.decode(B // 4, ctx)[0]
    f = one.ffn.decode(B, ctx)[0]
    c = m.layers * (5e-6 + (B // 4) * m.hidden * 2 / 400e9)
    assert one.decode(B, ctx)[0] == pytest.approx(a + f + 2 * c, rel=1e-9)
    # Four FFN passes over B/4 tokens each (today's 1:1 split, per group) read the experts four times.
    assert 4 * one.ffn.decode(B // 4, ctx)[0] > 1.5 * f


def test_attention_dp_with_expert_parallelism_splits_weights_and_batch():
    from gimletc.sim.roles import DPCost

    m, chip = get_model("qwen3-235b-a22b"), get_chip("h200")
    c = DPCost(m, chip, 1, PROFILES["vllm"], 8)
    attn = m.stage_weight_bytes(0, m.layers, "attention")
    assert c.weight_bytes / 8 == pytest.approx(attn + (m.weight_bytes - attn) / 8, rel=1e-9)
    k = EngineKind("h200", 1, 8)
    assert (k.chips, k.ep, k.label) == (8, 8, "h200 TP1 DP8 EP8")
    # Each rank attends over its eighth of the batch.
    assert c.decode(64, 1024)[0] < c.attn.decode(64, 1024)[0] + c.ffn.decode(64, 1024)[0]


def test_each_role_runs_its_own_batching_policy():
    g, cl = one_call("llama-3.1-8b", 1000, 100), load_cluster(H100_A100)
    ms = ModelServing("llama-3.1-8b", "disagg", (Group("prefill", EngineKind("h100-sxm", 1), 1, "sglang"),
                                                 Group("prefill", EngineKind("a100-sxm-80gb", 1), 1, "sglang"),
                                                 Group("decode", EngineKind("a100-sxm-80gb", 2), 1, "trtllm")))
    cfg = ServingConfig((ms,))
    assert cfg.label == "disagg 1x h100-sxm TP1 + 1x a100-sxm-80gb TP1 prefill + 1x a100-sxm-80gb TP2 decode"
    res = simulate(serving_workload(g, cl, cfg), generate("poisson", 4.0, 200, seed=0), SimConfig())
    pol = {e["id"]: e["policy"] for e in res.engines}
    assert pol == {"llama-3.1-8b/prefill0": "sglang", "llama-3.1-8b/prefill1": "sglang",
                   "llama-3.1-8b/decode0": "trtllm"}
    assert res.completed == 200
    busy = {e["id"]: e["iterations"] for e in res.engines}
    assert busy["llama-3.1-8b/prefill0"] > 0 and busy["llama-3.1-8b/prefill1"] > 0  # one pool, both types serve


def test_bad_configurations_are_one_line_errors():
    k = EngineKind("h100-sxm", 1)
    with pytest.raises(ConfigError, match="needs a draft group"):
        ModelServing("m", "spec", (Group("verify", k, 1),), spec=Speculation("d", 2, 0.7))
    with pytest.raises(ConfigError, match="no decode role"):
        ModelServing("m", "agg", (Group("agg", k, 1), Group("decode", k, 1)))
    with pytest.raises(ConfigError, match="whole units"):
        ModelServing("m", "attn-ffn", (Group("prefill", k, 1), Group("attn", k, 3), Group("ffn", k, 1)),
                     split=Split(2, 1, 2))
    with pytest.raises(ConfigError, match="unknown batching policy"):
        Group("decode", k, 1, "tgi")


# ---- recommend ----------------------------------------------------------------------------------------------


def test_recommend_finds_the_fewest_chips_that_serve_the_rate():
    g, cl = one_call(), load_cluster(H100_A100)
    rec = recommend(g, cl, SPLITWISE_SLO, 3.0, SearchSettings(requests=200))
    fewest = rec.picks["chips"]
    assert fewest.goodput.points[0].attainment >= 0.9 and fewest.goodput.rate == 3.0
    assert fewest.predicted_req_s >= 3.0
    # No configuration with fewer chips is predicted to serve 3 req/s: every candidate the search predicts
    # with fewer chips serves less.
    cands, _ = predict(g, cl, SPLITWISE_SLO, SearchSettings())
    assert all(c.predicted_req_s < 3.0 for c in cands if c.config.total_chips < fewest.chips)
    assert rec.picks["power"].power_w <= fewest.power_w
    with pytest.raises(GimletError, match="serves 500 req/s"):
        recommend(g, cl, SPLITWISE_SLO, 500.0, SearchSettings(requests=50))


# ---- save and load --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    g, cl = one_call(), load_cluster(H100_A100)
    r = search(g, cl, SPLITWISE_SLO, SearchSettings(requests=150, top_k=2, max_evals=8, rtol=0.2))
    path = tmp_path_factory.mktemp("saved") / "search.json"
    path.write_text(document_text(search_document(r, g, cl)))
    return r, g, cl, path


def test_saved_search_round_trips_and_is_deterministic(saved):
    r, g, cl, path = saved
    doc = load_search_result(path)
    assert [c.label for c in doc.configs()] == [e.config.label for e in r.top("per_chip", len(r.evaluations))]
    assert doc.configs()[0] == r.top("per_chip", 1)[0].config
    assert doc_text_again(r, g, cl) == path.read_text()
    d = json.loads(path.read_text())
    assert (d["format"], d["version"], d["kind"]) == ("gimletc-search", 1, "search")
    first = d["configurations"][0]
    assert first["models"][0]["groups"][0]["engines"][0]["devices"]
    assert first["predicted"]["source"].startswith("cost model") and first["simulated"]["source"].startswith("load")
    assert d["workload"]["llama-3.1-70b"]["calls"][0]["prompt_tokens"] == 1500
    assert d["slo"] == {"ttft_ms": 2000.0, "tpot_ms": 100.0, "share": 0.9}


def doc_text_again(r, g, cl) -> str:
    return document_text(search_document(r, g, cl))


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d.update(version=2), "saved search version 2"),
    (lambda d: d.update(format="plan"), "not a saved search result"),
    (lambda d: d.update(extra=1), "extra: unknown field"),
    (lambda d: d["configurations"][0].update(chips={"h100-sxm": 99}), "are not what its groups use"),
    (lambda d: d["configurations"][0]["models"][0]["groups"][0].update(role="verify"), "configurations[0]"),
    (lambda d: d["configurations"][0]["models"][0]["groups"][0].update(tp=0), "tp"),
    (lambda d: d["configurations"][0]["models"][0]["groups"][0].update(chip="tpu-v9"), "tpu-v9"),
])
def test_bad_saved_files_are_one_line_errors(saved, tmp_path, capsys, edit, needle):
    _, _, _, path = saved
    d = json.loads(path.read_text())
    edit(d)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(ConfigError) as e:
        load_search_result(bad)
    assert needle in str(e.value) and "\n" not in str(e.value) and str(bad) in str(e.value)
    code, _, err = run_cli(capsys, "search", "--load", str(bad))
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_cli_save_load_and_recommend(capsys, tmp_path, saved):
    _, _, _, path = saved
    code, out, err = run_cli(capsys, "search", "--load", str(path))
    assert code == 0, err
    assert "saved configurations" in out and "per_chip" in out
    code, out, err = run_cli(capsys, "search", "--load", str(path), "--json")
    assert code == 0 and out == path.read_text()
    rec = tmp_path / "rec.json"
    code, out, err = run_cli(capsys, "search", str(EXAMPLES / "rag.py"), "-c", H100_A100, "--slo-ttft-ms", "2000",
                             "--slo-tpot-ms", "100", "-n", "100", "--recommend", "--rate", "1", "--save", str(rec))
    assert code == 0, err
    assert "least hardware for 1 req/s" in out and rec.exists()
    assert load_search_result(rec).kind == "recommend"
    for args, needle in (
        (["--rate", "2"], "--recommend and --rate go together"),
        (["--recommend"], "--recommend and --rate go together"),
        (["--modes", "agg,pipeline"], "--modes takes a comma-separated subset"),
        (["--role-policy", "decode"], "--role-policy takes ROLE=POLICY"),
        (["--role-policy", "decode=tgi"], "unknown batching policy 'tgi'"),
        (["--acceptance", "1.5"], "--acceptance must be in [0, 1)"),
        (["--draft", "no-such-model"], "no-such-model"),
    ):
        target = tmp_path / "nothing.json"
        code, _, err = run_cli(capsys, "search", str(EXAMPLES / "rag.py"), "-c", H100_A100, "--slo-tpot-ms", "100",
                               "--save", str(target), *args)
        assert code == 2 and needle in err and err.count("\n") == 1, (args, err)
        assert not target.exists()


def test_published_schema_is_current():
    from gimletc.serving.saved import saved_schema_text

    assert (Path(__file__).parents[1] / "docs" / "search.schema.json").read_text() == saved_schema_text()
