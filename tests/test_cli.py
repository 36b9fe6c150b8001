"""The `gimletc` command: outputs, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gimletc.cli import main

HF = Path(__file__).parent / "data" / "hf"


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_estimate_json_has_the_documented_fields(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "decode",
                       "--batch", "16", "--ctx", "4096", "--json")
    assert code == 0
    d = json.loads(out)
    for key in ("latency_ms", "flops", "bytes", "bound", "energy_j"):
        assert key in d
    assert d["bound"] in ("compute", "memory", "overhead")
    assert d["latency_ms"] > 0 and d["efficiency_origin"].startswith("fitted")


def test_estimate_accepts_a_hugging_face_config(capsys):
    code, out, _ = run(capsys, "estimate", "--model", str(HF / "llama-3.1-8b" / "config.json"), "--chip", "mi300x",
                       "--phase", "prefill", "--tokens", "2048", "--json")
    assert code == 0 and json.loads(out)["tokens"] == 2048


def test_estimate_output_is_deterministic(capsys):
    args = ("estimate", "--model", "gpt-oss-120b", "--chip", "h100-sxm", "--phase", "verify", "--tokens", "5",
            "--ctx", "2048", "--batch", "8", "--json")
    assert run(capsys, *args)[1] == run(capsys, *args)[1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["estimate", "--model", "nope", "--chip", "h200", "--phase", "decode"], "unknown model 'nope'"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "tpu9", "--phase", "decode"], "unknown chip 'tpu9'"),
        (["estimate", "--model", "llama-3.1-405b", "--chip", "h200", "--phase", "decode"], "141.0 GB"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "prefill"], "--tokens is required"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "decode", "--batch", "-1"], "batch"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "decode", "--tokens", "3"], "tokens=3"),
        (["estimate", "--model", "llama-3.1-8b", "--chip", "h200", "--phase", "train"], "--phase"),
        (["estimate", "--model", str(HF / "mamba-130m" / "config.json"), "--chip", "h200", "--phase", "decode"],
         "MambaForCausalLM"),
        (["estimate", "--bogus"], "--bogus"),
        (["models", "show", "nope"], "unknown model"),
        (["hw", "show", "nope"], "unknown chip"),
        (["calibrate", "/nonexistent/file.json"], "/nonexistent/file.json"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, needle):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("gimletc: error: ")
    assert needle in err
    assert "Traceback" not in err + out


def test_listings(capsys):
    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0 and {"llama-3.1-8b", "deepseek-v3"} <= {m["name"] for m in json.loads(out)}
    code, out, _ = run(capsys, "hw", "list", "--json")
    d = json.loads(out)
    assert code == 0 and "h200" in d["chips"] and "mixed-rack" in d["clusters"]
    code, out, _ = run(capsys, "hw", "show", "h200", "--json")
    assert code == 0 and "memory_bw" in json.loads(out)["sources"]
    code, out, _ = run(capsys, "models", "show", "qwen3-32b", "--json")
    assert code == 0 and json.loads(out)["derived"]["params_b"] == pytest.approx(32.76, abs=0.01)


def test_demo_prints_a_table(capsys):
    code, out, _ = run(capsys, "demo", "--batch", "4", "--prompt", "1024")
    assert code == 0 and "llama-3.1-8b" in out and "does not fit" in out and "cost model" in out


def test_installed_entry_point_runs():
    exe = Path(sys.executable).with_name("gimletc")
    r = subprocess.run([str(exe), "estimate", "--model", "llama-3.2-1b", "--chip", "h200", "--phase", "decode",
                        "--ctx", "1024", "--json"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chip"] == "h200"
