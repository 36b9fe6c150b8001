"""What a new user reads: the help texts and headers say what the numbers are, and every file the docs,
the catalog and the examples cite is in a clone of the project (issue 15, item 5)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from _cli import run_cli  # tests/_cli.py

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CHIPS = sorted(p.stem for p in (ROOT / "src/gimletc/hardware/data/chips").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (ROOT / "src/gimletc/hardware/data/clusters").glob("*.yaml"))
# a cited file: a path with a folder, ending in a data or document suffix
CITED = re.compile(r"[\w.-]+(?:/[\w.-]+)+\.(?:json|md|yaml|csv)\b")


def _flat(text: str) -> str:
    """Help text with rich's box characters and line wrapping taken out."""
    return " ".join(re.sub(r"[│╭╮╰╯─┃┏┓┗┛━]", " ", text).split())


def _resolves(cited: str, where: Path) -> bool:
    """A cited path names a file of the repository: from the root, from src/ (a package path), or beside
    the file that cites it."""
    cited = cited.removeprefix("../")
    return any((base / cited).is_file() for base in (ROOT, ROOT / "src", where.parent))


def _tracked_text_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted(EXAMPLES.rglob("*.py")),
             *sorted(EXAMPLES.rglob("*.yaml")), *sorted((ROOT / "src/gimletc/hardware/data").rglob("*.yaml")),
             *sorted((ROOT / "benchmarks").glob("*.py"))]
    return [f for f in files if f.is_file()]


@pytest.mark.parametrize("path", _tracked_text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_cites_the_projects_private_shared_folder(path):
    """`shared/` sat beside the project's first checkout; a clone has no such folder."""
    text = path.read_text()
    assert "shared/" not in text, f"{path.relative_to(ROOT)} cites a file under shared/"
    for cited in CITED.findall(text):
        if cited.startswith(("http", "docs/plan", "build/", "path/to/")) or "/tmp/" in cited:
            continue
        if cited.startswith(("docs/sources/", "src/gimletc/", "gimletc/")):
            assert _resolves(cited, path), f"{path.relative_to(ROOT)} cites {cited}, which is not in the repository"


def test_hardware_sources_are_shipped():
    text = (ROOT / "docs/sources/hardware_sources.md").read_text()
    assert "NVIDIA H200 SXM" in text and "AIConfigurator" in text  # the table and the published results


@pytest.mark.parametrize("name", CHIPS + PRESETS)
def test_hw_show_cites_only_files_a_clone_has(capsys, name):
    for args in (("hw", "show", name), ("hw", "show", name, "--json")):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
        assert "shared/" not in out
        for cited in CITED.findall(out):  # other projects' files (aiconfigurator's systems/...) are cited by project
            if cited.startswith(("docs/", "src/", "gimletc/", "data/")):
                assert _resolves(cited, ROOT), (name, cited)


def test_calibrate_help_names_the_bundled_measurements(capsys):
    code, out, _ = run_cli(capsys, "calibrate", "--help")
    assert code == 0
    text = _flat(out)
    assert "shared/" not in text
    assert "src/gimletc/cost/data/h200_llama_calibration.json" in text
    assert (ROOT / "src/gimletc/cost/data/h200_llama_calibration.json").is_file()


def test_simulate_help_says_how_many_requests_by_default(capsys):
    from gimletc.cli_serving import SIM_REQUESTS

    code, out, _ = run_cli(capsys, "simulate", "--help")
    assert code == 0
    assert f"requests to simulate (default: {SIM_REQUESTS} generated arrivals" in _flat(out)


def test_estimate_table_says_latency_is_the_sum_of_its_parts(capsys):
    """A decode's GEMMs are memory-bound: its compute part is 0 ms beside hundreds of GFLOP. The row says
    the latency is compute-bound plus memory-bound operators plus overhead, and the numbers add up."""
    args = ("estimate", "--model", "llama-3.1-70b", "--chip", "h200", "--phase", "decode", "--batch", "16",
            "--ctx", "4096", "--chips", "2")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    text = _flat(out)
    m = re.search(r"latency = compute-bound ops \+ memory-bound ops \+ overhead "
                  r"([\d.]+) = ([\d.]+) \+ ([\d.]+) \+ ([\d.]+) ms", text)
    assert m, text
    total, *parts = map(float, m.groups())
    d = json.loads(run_cli(capsys, *args, "--json")[1])
    assert total == pytest.approx(d["latency_ms"], abs=6e-4)
    assert parts == pytest.approx([d["compute_ms"], d["memory_ms"], d["overhead_ms"]], abs=6e-4)
    assert total == pytest.approx(sum(parts), abs=2e-3)
    assert parts[0] == 0.0 and d["flops"] > 1e11  # the case the row explains


def test_compile_header_names_the_pipelines_objective(capsys, tmp_path):
    """With place{objective=energy} in the pipeline, the plan, its baseline and the header say energy, not
    the default --objective latency."""
    plan = tmp_path / "p.json"
    code, out, err = run_cli(capsys, "compile", str(EXAMPLES / "rag.py"), "-c", "8x-h100-nvlink", "-o", str(plan),
                             "--pipeline", "expand-llm,place{objective=energy},insert-transfers,schedule,overlap")
    assert code == 0, err
    assert "objective energy" in out and "objective latency" not in out
    d = json.loads(plan.read_text())
    assert d["objective"] == "energy" and d["search"]["objective"] == "energy"
    code, out, _ = run_cli(capsys, "show", str(plan))
    assert code == 0 and "objective energy" in out


def test_pipeline_objective():
    from gimletc.compiler import pipeline_objective

    assert pipeline_objective("expand-llm,place,insert-transfers", "cost") == "cost"
    assert pipeline_objective("expand-llm,place{objective=throughput},insert-transfers", "latency") == "throughput"
