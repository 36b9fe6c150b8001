"""`gimletc report`: the HTML page of a real compiled plan and a real serving search.

Checked in Python (the figures it shows, bands, determinism, no reference
outside the file) and in headless Chromium (Debian's /usr/bin/chromium driven
by Playwright): the page loads from file:// with no console error and no
request but its own, its parts are all there, the timeline zooms, and a
screenshot goes to build/report.png.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest

from gimletc.compiler import compile
from gimletc.graph_io import load_graph
from gimletc.hardware import load_cluster
from gimletc.plan import load_plan
from gimletc.report import load_search, render_report, transfer_overlap
from gimletc.report.charts import Band, metric_band, metric_rows, operating_points
from gimletc.report.graph import flow
from gimletc.serving.search import SearchSettings, search
from gimletc.sim.metrics import SLO

from _cli import run_cli  # tests/_cli.py

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    r = compile(EXAMPLES / "coding_agent.py", EXAMPLES / "clusters" / "mixed_rack.yaml")
    f = tmp_path_factory.mktemp("report") / "plan.json"
    r.plan.write(f)
    return f


@pytest.fixture(scope="module")
def search_file(tmp_path_factory) -> Path:
    g = load_graph(EXAMPLES / "coding_agent.py")
    cl = load_cluster(EXAMPLES / "clusters" / "mixed_rack.yaml")
    res = search(g, cl, SLO(2.0, 0.05), SearchSettings(requests=150, top_k=3, max_evals=8, rtol=0.1))
    f = tmp_path_factory.mktemp("report") / "search.json"
    f.write_text(json.dumps(res.to_dict(), sort_keys=True, indent=2) + "\n")
    return f


@pytest.fixture(scope="module")
def page(plan_file, search_file, tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("report") / "report.html"
    f.write_text(render_report(load_plan(plan_file), load_search(search_file)))
    return f


# ---- what the page says ---------------------------------------------------------------------------


def test_same_plan_same_bytes(plan_file, search_file) -> None:
    p, s = load_plan(plan_file), load_search(search_file)
    a = render_report(p, s)
    assert a == render_report(load_plan(plan_file), load_search(search_file))
    assert a == render_report(json.loads(plan_file.read_text()), s)  # the plan's JSON dict reads the same


def test_self_contained(page) -> None:
    html = page.read_text()
    assert not re.search(r"\b(src|href)\s*=", html)  # no script, style sheet, image or link to fetch
    assert "@import" not in html and not re.search(r"url\((?!#)", html)
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}  # SVG namespace only


def test_graph_view_has_every_placed_op_and_the_loop(plan_file) -> None:
    p = json.loads(plan_file.read_text())
    f = flow(p)
    ops = [r.name for r in f.rows if r.kind == "op"]
    assert sorted(ops) == sorted({pl["op"] for pl in p["placements"]})
    loop = next(i for i, r in enumerate(f.rows) if r.kind == "loop" and r.name == "fix")
    inside = {r.name for r in f.rows[loop + 1:f.rows[loop].end + 1]}
    assert inside == {"edit.prefill", "edit.decode", "run_tests"}
    idx = {r.name: i for i, r in enumerate(f.rows)}
    # the test log goes back to the editor (carried), and the last one comes out of the loop
    carried = f.edges[(idx["run_tests"], idx["edit.prefill"])]
    assert all(h is not None and h.carried for _, h in carried)
    # every transfer of the plan is on some edge, named by its value
    shown = {v for vals in f.edges.values() for v, h in vals if h is not None and not h.carried}
    assert {t["value"] for t in p["transfers"]} <= shown


def test_graph_view_of_a_branch() -> None:
    from gimletc import AgentGraph

    m = "llama-3.1-8b"
    g = AgentGraph("br")
    q = g.input("q", tokens=100)
    c = g.llm("classify", model=m, prompt=[q], output_tokens=5)
    with g.branch("route", probabilities=[0.7, 0.3], inputs=[c]) as br:
        with br.arm():
            br.yield_(g.llm("small", model=m, prompt=[c], output_tokens=100))
        with br.arm():
            br.yield_(g.tool("web", inputs=[c], latency_s=0.5, output_tokens=300))
    g.output("out", [g.llm("polish", model=m, prompt=[br.results[0]], output_tokens=50)])
    p = compile(g, EXAMPLES / "clusters" / "gpu_only.yaml", baseline=False).plan.model_dump(mode="json")
    f = flow(p)
    idx = {r.name: i for i, r in enumerate(f.rows)}
    b = idx["route"]
    assert f.rows[b].kind == "branch" and f.rows[b].end == idx["web"]
    assert [(r.name, r.detail) for r in f.rows if r.kind == "arm"] == [("arm 0", "p = 0.7"), ("arm 1", "p = 0.3")]
    # the branch's result comes from either arm
    assert (idx["small.decode"], idx["polish.prefill"]) in f.edges and (idx["web"], idx["polish.prefill"]) in f.edges
    assert 'class="box-label"' in render_report(p)


def test_metrics_rows_copy_the_plan(plan_file) -> None:
    p = json.loads(plan_file.read_text())
    rows = {r.path: r for r in metric_rows(p)}
    assert rows[("latency_ms",)].plan == p["metrics"]["latency_ms"]
    assert rows[("latency_ms",)].base == p["baseline"]["metrics"]["latency_ms"]
    assert rows[("ttft_ms", "summary")].plan == p["metrics"]["ttft_ms"]["summary"]
    # compile writes each predicted figure's band (metrics.bands, {"lo", "hi"}); power is TDP, not predicted
    lat = p["metrics"]["bands"]["latency_ms"]
    assert rows[("latency_ms",)].plan_band == Band(lat["lo"], lat["hi"])
    base_ttft = p["baseline"]["metrics"]["bands"]["ttft_ms"]["summary"]
    assert rows[("ttft_ms", "summary")].base_band == Band(base_ttft["lo"], base_ttft["hi"])
    assert rows[("power_w",)].plan_band is None
    assert all(r.plan_band is not None for k, r in rows.items() if k != ("power_w",))


def test_bands_are_drawn_where_the_plan_carries_them(plan_file) -> None:
    p = json.loads(plan_file.read_text())
    lat = p["metrics"]["latency_ms"]
    p["metrics"]["bands"] = {"latency_ms": {"rel": 0.08}, "ttft_ms": {"plan": {"lo": 1.0, "hi": 2.0}}}
    p["baseline"]["metrics"]["bands"] = {"latency_ms": 0.08}
    html = render_report(p)
    row = re.search(r'<tr data-metric="latency_ms">.*?</tr>', html).group(0)
    assert row.count("±8%") >= 2 and 'class="band"' in row
    assert "not distinguishable (bands overlap)" in row  # plan and baseline are within 8% of each other
    assert metric_band(p["metrics"], ("latency_ms",), lat) == Band(lat * 0.92, lat * 1.08)
    assert metric_band(p["metrics"], ("ttft_ms", "plan"), 57.0) == Band(1.0, 2.0)
    assert metric_band(p["metrics"], ("energy_j",), 1.0) is None
    q = copy.deepcopy(p)
    q["metrics"]["bands"] = {"latency_ms": {"rel": 0.0001}}
    q["baseline"]["metrics"]["bands"] = {"latency_ms": {"rel": 0.0001}}
    row = re.search(r'<tr data-metric="latency_ms">.*?</tr>', render_report(q)).group(0)
    assert "not distinguishable" not in row


def test_transfer_overlap_on_a_hand_made_timeline() -> None:
    p = {"programs": {
        "a": [{"kind": "exec.compute", "start_ms": 0.0, "end_ms": 10.0}],
        "b": [{"kind": "exec.compute", "start_ms": 5.0, "end_ms": 12.0}],
        "a->b": [{"kind": "exec.send", "start_ms": 8.0, "end_ms": 14.0},  # 4 of its 6 ms under compute
                 {"kind": "exec.send", "start_ms": 20.0, "end_ms": 21.0}],  # none
    }}
    assert transfer_overlap(p) == (7.0, 4.0)


def test_frontier_points_are_the_slo_passing_rates(search_file) -> None:
    s = json.loads(search_file.read_text())
    pts = operating_points(s)
    share = s["slo"]["share"]
    want = sum(1 for e in s["evaluations"] for q in e["goodput"]["points"] if q["attainment"] >= share)
    assert len(pts) == want > 0
    assert all(y > 0 for *_, y in pts)


# ---- the command -------------------------------------------------------------------------------------


def test_cli_writes_the_page(plan_file, search_file, tmp_path, capsys) -> None:
    out = tmp_path / "r.html"
    code, stdout, err = run_cli(capsys, "report", str(plan_file), "-o", str(out), "--search", str(search_file))
    assert code == 0, err
    assert out.read_text() == render_report(load_plan(plan_file), load_search(search_file))


@pytest.mark.parametrize("bad", ["missing", "not-search", "bad-point"])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(plan_file, search_file, tmp_path, capsys, bad) -> None:
    out = tmp_path / "r.html"
    args = ["report", str(plan_file), "-o", str(out)]
    if bad == "missing":
        args[1] = str(tmp_path / "nope.json")
    elif bad == "not-search":
        args += ["--search", str(plan_file)]
    else:
        s = json.loads(search_file.read_text())
        del s["pareto"][0]["tok_s_per_chip"]
        (tmp_path / "s.json").write_text(json.dumps(s))
        args += ["--search", str(tmp_path / "s.json")]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and err.startswith("gimletc: error: ")
    assert {"missing": "nope.json", "not-search": "not a search result", "bad-point": "pareto[0]"}[bad] in err
    assert not out.exists()


# ---- in a real browser ---------------------------------------------------------------------------------

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_page_in_headless_chromium(page, plan_file, search_file) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing: `make test` installs Debian's chromium package")
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    p = json.loads(plan_file.read_text())
    s = json.loads(search_file.read_text())
    steps = sum(len(v) for v in p["programs"].values())
    loops = sum(1 for r in flow(p).rows if r.kind == "loop")
    url = page.resolve().as_uri()
    shot = ROOT / "build" / "report.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            requests: list[str] = []
            tab.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
                   else None)
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(url, wait_until="load")
            assert tab.title() == f"gimletc report: {p['name']}"
            assert tab.locator("#metrics-table tbody tr").count() == len(metric_rows(p))
            assert tab.locator("#graph-svg g.op-row").count() == len({pl["op"] for pl in p["placements"]})
            assert tab.locator("#chip-legend li").count() == len({d["chip"] for d in p["cluster"]["devices"]})
            assert tab.locator("#timeline-svg rect.step").count() == steps + loops
            assert tab.locator("#transfers-table tbody tr").count() == len(p["transfers"])
            assert tab.locator("#frontier-svg circle.pt").count() == len(operating_points(s))
            assert tab.locator("#frontier-svg circle.front-pt").count() == len(s["pareto"])
            tab.screenshot(path=str(shot), full_page=True)
            # zoom: a click on the plan's longest step narrows the window; "show all" restores it
            whole = tab.locator("#timeline-window").inner_text()
            tab.locator('#timeline-svg rect.step[data-op="run_tests"]').first.click()
            assert tab.locator("#timeline-window").inner_text() != whole
            tab.locator("#timeline-reset").click()
            assert tab.locator("#timeline-window").inner_text() == whole
            assert problems == []
            assert requests == [url]
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
