"""Regression: the serving search lost the feasible mixed split on 2x H100 + 10x A100 (issue 13).

Only APIs the search had before the fix are used, so this file runs, and fails, on the code before it."""

from __future__ import annotations

from pathlib import Path

from gimletc import AgentGraph
from gimletc.hardware import load_cluster
from gimletc.serving import SearchSettings, predict, search
from gimletc.sim.metrics import SLO

H100_A100 = str(Path(__file__).parents[1] / "examples" / "scenarios" / "clusters" / "h100_a100.yaml")


def splitwise():
    g = AgentGraph("splitwise")
    p = g.input("prompt", tokens=1500)
    r = g.llm("chat", model="llama-3.1-70b", prompt=[p], output_tokens=250)
    g.output("reply", [r])
    return g.build()


def test_budget_bug_mixed_split_appears_and_wins():
    """Splitwise's workload (llama-3.1-70b, 1,500-token prompts, 250-token answers, TTFT <= 2 s,
    TPOT <= 100 ms) on 2x H100 + 10x A100. The prefill replicas of an H100-prefill/A100-decode split
    were counted against the shared budget but never against the H100s' own 2 chips, so the best-rate
    split (several H100 prefill replicas) was infeasible, thrown away, and the feasible one lost with it."""
    g, cl = splitwise(), load_cluster(H100_A100)
    slo = SLO(2.0, 0.1)
    want = "disagg 1x h100-sxm TP2 prefill + 1x a100-sxm-80gb TP4 decode"
    cands, _ = predict(g, cl, slo, SearchSettings())
    labels = [c.config.label for c in cands]
    assert want in labels
    assert labels[0] == want  # the best predicted goodput per chip
    for c in cands:
        chips = c.config.chips()
        assert chips.get("h100-sxm", 0) <= 2 and chips.get("a100-sxm-80gb", 0) <= 10
    # Simulated, it wins too: the best goodput per chip of the configurations measured.
    r = search(g, cl, slo, SearchSettings(requests=300, top_k=3, max_evals=10, rtol=0.1))
    assert r.top("per_chip", 1)[0].config.label == want
