"""Write docs/scenarios.md, every number in it and the prose around them: `.venv/bin/python examples/scenarios/report.py`.

Each scenario is run the way a user would deploy it: `gimletc.serving.search` under stated SLOs, on the
heterogeneous cluster and on single-hardware clusters of no more accelerator power (clusters/), and the
verdict against the published claim is computed from what the search finds. Nothing here is measured:
the figures are the cost model's step times (vllm stack) run through the load simulator.

The run is bounded and deterministic (seeded Poisson arrivals, a fixed number of requests and simulated
configurations per search), so tests/test_scenarios_doc.py can check that the committed doc is a fresh run.
`--check` exits 1 if docs/scenarios.md differs from a fresh run instead of writing it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gimletc import AgentGraph
from gimletc._io import write_atomic
from gimletc.errors import GimletError
from gimletc.graph_io import load_graph
from gimletc.hardware import load_cluster
from gimletc.hardware import get_chip
from gimletc.serving import SearchSettings, search
from gimletc.serving.search import Evaluation, SearchResult, predict
from gimletc.sim.config import SimConfig
from gimletc.sim.metrics import SLO
from gimletc.sim.steps import StepCost, profile_for_stack
from gimletc.passes.partition import expected_tokens

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
DOC = ROOT / "docs" / "scenarios.md"
CMD = ".venv/bin/python examples/scenarios/report.py"

# Fidelity: every search simulates at most TOP_K configurations (plus the best of each mode and the best
# mix of chip types, as `search` always does), each with REQUESTS Poisson requests (seed 0) and at most
# MAX_EVALS simulations in its goodput bisection; aggregated engines run with chunked prefill only.
TOP_K, MAX_EVALS, SEED = 3, 8, 0
# Poisson requests per simulation, per scenario: enough that the busiest configuration shown holds at most about
# a quarter of them in flight at its goodput rate (each section states its share), so the run reaches a steady state.
REQUESTS = {"splitwise": 1000, "moe": 2000, "speculative": 400, "cross-vendor": 400, "gpt-oss": 400}
SHARE = 0.9  # the share of requests that must meet both targets

# Speculative acceptance, fixed before any scenario was run: the repository's default per-token acceptance
# (docs/serving.md), from Leviathan, Kalman and Matias, "Fast Inference from Transformers via Speculative
# Decoding", ICML 2023, Table 3 (alpha = 0.71 for LaMDA 137B with a 2B LaMDA draft).
ACCEPTANCE = 0.7
EAGLE3 = ((2.4, 2.8), 7)  # accepted tokens per round at 7 drafted, EAGLE-3 heads for gpt-oss-120b (issue 13)


def one_call(name: str, model: str, prompt: int, out: int, draft: str | None = None) -> object:
    g = AgentGraph(name)
    p = g.input("prompt", tokens=prompt)
    kw = {"draft": draft, "acceptance": ACCEPTANCE} if draft else {}
    r = g.llm("chat", model=model, prompt=[p], output_tokens=out, **kw)
    g.output("reply", [r])
    return g.build()


def settings(modes: Sequence[str], requests: int) -> SearchSettings:
    return SearchSettings(requests=requests, seed=SEED, top_k=TOP_K, max_evals=MAX_EVALS, modes=tuple(modes),
                          chunked=(True,), frontier=())


@dataclass
class Cl:
    name: str  # file stem under clusters/

    @property
    def path(self) -> Path:
        """clusters/NAME.yaml, or clusters/search/NAME.yaml: the clusters only the search runs on (not compiled
        into tests/data/plan_manifest.json)."""
        p = HERE / "clusters" / f"{self.name}.yaml"
        return p if p.exists() else HERE / "clusters" / "search" / f"{self.name}.yaml"

    @property
    def chips(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in load_cluster(self.path).devices():
            if d.role != "host":
                out[d.chip.name] = out.get(d.chip.name, 0) + 1
        return out

    @property
    def watts(self) -> float:
        return sum(get_chip(c).tdp_w * n for c, n in self.chips.items())

    def describe(self) -> str:
        parts = " + ".join(f"{n}x {c} ({get_chip(c).tdp_w:.0f} W)" for c, n in sorted(self.chips.items()))
        return f"`{self.path.relative_to(HERE / 'clusters').as_posix()}`: {parts}, {self.watts:,.0f} W"


SEARCHES: list[tuple[str, float]] = []  # (what, seconds), for the closing note on stderr


def run(graph, cl: Cl, slo: SLO, modes: Sequence[str], requests: int) -> SearchResult | None:
    """The search, or None where nothing on the cluster can meet the SLO."""
    t = time.perf_counter()
    try:
        r = search(graph, load_cluster(cl.path), slo, settings(modes, requests))
    except GimletError as e:
        if "no configuration can meet" not in str(e):
            raise
        r = None
    SEARCHES.append((f"{cl.name} ttft {slo.ttft_s} tpot {slo.tpot_s}", time.perf_counter() - t))
    return r


def kw(e: Evaluation | None) -> float:
    """Output tokens/s per kW of the configuration's accelerator TDP, at its goodput rate."""
    return 1e3 * e.per_watt if e is not None else 0.0


def best(r: SearchResult | None, keep: Callable[[Evaluation], bool] = lambda e: True) -> Evaluation | None:
    if r is None:
        return None
    evs = [e for e in r.evaluations if e.goodput_req_s > 0 and keep(e)]
    e = max(evs, key=lambda e: (e.per_watt, e.config.label), default=None)
    if e is not None:
        REPORTED.append(e)
    return e


REPORTED: list[Evaluation] = []  # every configuration a table shows


WORST: dict[str, Evaluation] = {}  # per scenario, the configuration shown with the most requests in flight


def steady(key: str, mark: int) -> str:
    """The section's steady-state check: its busiest configuration's requests in flight against the run's size."""
    requests = REQUESTS[key]
    shown = REPORTED[mark:]
    if not shown:
        return f"_{requests:,} requests per simulation._"
    w = WORST[key] = max(shown, key=lambda e: (in_flight(e), e.config.label))
    return (f"_{requests:,} requests per simulation; the most in flight at a goodput rate above (rate x mean "
            f"end-to-end, Little's law) is {in_flight(w):,.1f}, {in_flight(w) / requests:.0%} of them._")


def in_flight(e: Evaluation) -> float:
    """Requests in flight at the goodput rate, by Little's law (rate x mean end-to-end seconds)."""
    return e.goodput_req_s * float(e.goodput.best.e2e.mean())


def uses(chip: str) -> Callable[[Evaluation], bool]:
    return lambda e: chip in e.config.chips()


def spec_on(chip: str) -> Callable[[Evaluation], bool]:
    return lambda e: e.config.mode == "spec" and chip in e.config.chips()


def step_ms(model: str, chip: str, batch: int, ctx: int) -> float:
    """One decode step of `model` on one `chip` at `batch` sequences of `ctx` tokens: the cost model (vllm stack)."""
    cost = StepCost(SimConfig().model(model), get_chip(chip), 1, profile_for_stack("vllm"))
    return cost.decode(batch, ctx)[0] * 1e3


def n(x: float, d: int = 0) -> str:
    return f"{x:,.{d}f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else ("-" if a <= 0 else "only this side serves")


def row(what: str, e: Evaluation | None) -> str:
    if e is None:
        return f"| {what} | none meets the SLO | - | - | - | - | - | - |"
    at = e.at_goodput
    e2e = f"{float(e.goodput.best.e2e.mean()):.2f}" if e.goodput.best is not None and len(e.goodput.best.e2e) else "-"
    return (f"| {what} | {e.config.label} | {e.chips} | {n(e.power_w)} | {e.goodput_req_s:.3g} | "
            f"{n(kw(e))} | {at.tok_s_per_user:.0f} | {e2e} |")


HEAD = ["| cluster | best configuration (tok/s per kW) | chips | W | goodput req/s | tok/s per kW | tok/s per user | mean e2e s |",
        "|---|---|---:|---:|---:|---:|---:|---:|"]


def slo_text(slo: SLO) -> str:
    return f"TTFT <= {slo.ttft_s * 1e3:,.0f} ms and TPOT <= {slo.tpot_s * 1e3:g} ms (p90) for {SHARE:.0%} of requests"


# ---- the scenarios --------------------------------------------------------------------------------


def splitwise() -> list[str]:
    g = one_call("splitwise", "llama-3.1-70b", 1500, 250)
    slo = SLO(2.0, 0.1, SHARE)
    het, singles = Cl("h100_a100"), [Cl("h100_only"), Cl("a100_x14")]
    N = REQUESTS["splitwise"]
    mark = len(REPORTED)
    rh = best(run(g, het, slo, ("agg", "disagg"), N))
    rs = [(c, best(run(g, c, slo, ("agg", "disagg"), N))) for c in singles]
    c_best, e_best = max(rs, key=lambda ce: kw(ce[1]))
    r = kw(rh) / kw(e_best) if kw(e_best) else 0.0
    out = [
        "## 1. Splitwise: prefill on H100, decode on A100",
        "",
        "**Claim.** Patel et al., \"Splitwise: Efficient Generative LLM Inference Using Phase Splitting\" (ISCA "
        "2024): splitting prefill (H100) from decode (A100) gives 1.4x the throughput at 20% lower cost, or "
        "2.35x the throughput at the same power and cost, against a homogeneous cluster.",
        "",
        f"**Setup.** llama-3.1-70b in bf16, 1,500-token prompts, 250-token answers, {slo_text(slo)}; the search's "
        f"modes `agg` and `disagg`. Heterogeneous: {het.describe()}. Single hardware at no more power: "
        + "; ".join(c.describe() for c in singles) + ".",
        "",
        *HEAD,
        row(het.name, rh),
        *(row(c.name, e) for c, e in rs),
        "",
        steady("splitwise", mark),
        "",
        f"**Verdict.** At the same power the heterogeneous cluster serves {ratio(kw(rh), kw(e_best))} the output "
        f"tokens/s per kW of the best single-hardware cluster ({c_best.name}); Splitwise reports 2.35x. "
        + ("The claim holds here." if r >= 2.35 else
           "The claim does not hold here. " if r < 1.0 else "The direction holds; the size does not. ")
        + ("" if r >= 2.35 else
           f"Why, from the numbers: a bf16 70B model needs at least two 80 GB chips, and the A100's decode "
           f"runs at {n(kw(rs[1][1]))} tok/s per kW on "
           f"A100s alone against {n(kw(rs[0][1]))} on H100s alone: an A100 draws "
           f"{get_chip('a100-sxm-80gb').tdp_w / get_chip('h100-sxm').tdp_w:.2f}x an H100's power for "
           f"{get_chip('a100-sxm-80gb').memory_bw / get_chip('h100-sxm').memory_bw:.2f}x its memory bandwidth, "
           f"so decode on A100s gains little per watt; and the best single-hardware configuration "
           f"({e_best.config.label}) is aggregated with chunked prefill, the vLLM default, which Splitwise's "
           "2023 baseline engines did not have. Per kW counts only the chips a configuration uses."),
        "",
    ]
    return out


def draft_chips(e: Evaluation) -> int:
    """Chips of the configuration's speculative draft engines."""
    return sum(g.chips for m in e.config.models for g in m.groups if g.role == "draft")


def decode_gpus(e: Evaluation) -> int:
    """Chips of the configuration's engines other than its prefill engines."""
    return e.chips - sum(g.chips for m in e.config.models for g in m.groups if g.role == "prefill")


def per_decode_gpu(e: Evaluation | None) -> float:
    """Output tokens/s at the goodput rate per chip that decodes (MegaScale-Infer's per-GPU decode throughput)."""
    return e.goodput_tok_s / decode_gpus(e) if e is not None and decode_gpus(e) else 0.0


def moe() -> list[str]:
    g = one_call("moe", "qwen3-235b-a22b", 2000, 200)
    slo = SLO(3.0, 0.1, SHARE)
    c = Cl("h200_x16")
    N = REQUESTS["moe"]
    mark = len(REPORTED)
    r = run(g, c, slo, ("agg", "disagg", "attn-ffn"), N)
    afd = best(r, lambda e: e.config.mode == "attn-ffn")
    dis = best(r, lambda e: e.config.mode == "disagg")
    other = best(r, lambda e: e.config.mode != "attn-ffn")
    x_dec = per_decode_gpu(afd) / per_decode_gpu(dis) if per_decode_gpu(dis) else 0.0
    sp = afd.config.models[0].split if afd is not None else None
    dec = lambda e: (f"| {e.config.label} | {e.chips} | {decode_gpus(e)} | {e.goodput_req_s:.3g} | "  # noqa: E731
                     f"{n(e.goodput_tok_s / e.chips)} | {n(per_decode_gpu(e))} | {e.at_goodput.tok_s_per_user:.0f} |")
    rows = ["| mode: best configuration | GPUs | decoding GPUs | goodput req/s | tok/s per GPU | tok/s per decoding GPU "
            "| tok/s per user |", "|---|---:|---:|---:|---:|---:|---:|"]
    rows += [dec(e) for e in (afd, dis, other) if e is not None]
    verdict = [f"**Verdict.** Per decoding GPU, MegaScale-Infer's measure, the best attention/FFN configuration "
               f"serves {ratio(per_decode_gpu(afd), per_decode_gpu(dis))} the best disaggregated one (prefill on "
               "separate engines in both); per GPU of the whole deployment, prefill included, it serves "
               f"{ratio(kw(afd), kw(other))} the best configuration without the split ({other.config.label if other else '-'}). "
               "MegaScale-Infer reports up to 1.9x. "]
    if x_dec >= 1.9:
        verdict.append("The claim holds on its own measure. ")
    elif x_dec > 1.0:
        verdict.append("The direction holds on its own measure (a gain per decoding GPU); the published maximum "
                       "is not reached" + (", and counting the prefill GPUs the gain is gone. " if kw(afd) < 1.05 * kw(other)
                                           else ". "))
    else:
        verdict.append("The claim does not hold here. ")
    if afd is not None and sp is not None:
        pre = afd.chips - decode_gpus(afd)
        prefill_of = lambda cfg: [(gr.kind, gr.replicas) for m in cfg.models  # noqa: E731
                                  for gr in m.groups if gr.role == "prefill"]
        cands, _ = predict(g, load_cluster(c.path), slo, settings(("attn-ffn",), N))
        same = [cd for cd in cands if prefill_of(cd.config) == prefill_of(afd.config)]
        ms = sorted({cd.config.models[0].split.attn for cd in same})
        lo_r, hi_r = min(cd.predicted_req_s for cd in same), max(cd.predicted_req_s for cd in same)
        verdict.append(
            f"Why, from the numbers: the best split has M = {sp.attn} attention engine(s) per FFN engine and "
            f"{sp.micro} micro-batches, and {pre} of its {afd.chips} GPUs prefill. Every split the search priced "
            f"with that prefill pool ({len(same)} of them, M = {', '.join(map(str, ms))}) is predicted at "
            f"{lo_r:.3g}-{hi_r:.3g} req/s: "
            + ("the prefill engines, not the decode unit, bound the rate, so a larger M adds attention GPUs the "
               "prefill pool cannot feed, and the experts never see the hundreds of tokens per step that make "
               "M:N pay in MegaScale-Infer's decode-only measurement. " if hi_r <= lo_r * 1.01 else
               "the decode unit sets the rate. ")
            + "MegaScale-Infer's custom M2N communication library is not modelled (the split's transfers are "
            "priced on the cluster's links).")
    return [
        "## 2. Attention/FFN disaggregation of an MoE model (M:N)",
        "",
        "**Claim.** Zhu et al., \"MegaScale-Infer: Serving Mixture-of-Experts at Scale with Disaggregated Expert "
        "Parallelism\" (ByteDance, arXiv 2504.02263, April 2025): up to 1.9x per-GPU decode throughput by "
        "running attention and experts on separate GPU groups, many attention groups feeding the experts (M:N), "
        "with ping-pong micro-batches.",
        "",
        f"**Setup.** qwen3-235b-a22b, 2,000-token prompts, 200-token answers, {slo_text(slo)}, on "
        f"{c.describe()}: the search's modes `agg` and `disagg` (tensor-parallel engines and attention-DP "
        "with expert parallelism) against `attn-ffn` (prefill engines, then units of M attention engines "
        "feeding 1 FFN engine, M and the micro-batch count searched). One chip type: per kW is per GPU here.",
        "",
        *rows,
        "",
        steady("moe", mark),
        "",
        "".join(verdict).rstrip(),
        "",
    ]


def frontier(g, het: Cl, gpu: Cl, draft_chip: str, gpu_chip: str, ttft: float, tpots_ms: Sequence[float],
             N: int) -> tuple[list[str], list[tuple[float, Evaluation | None, Evaluation | None, Evaluation | None]]]:
    """The throughput-vs-interactivity frontier by TPOT target: at each target the best tok/s per kW of the
    speculative configurations with the draft on `draft_chip` (the heterogeneous cluster searched in mode
    `spec`), and of the GPU-only cluster (searched in modes `agg` and `spec`): its best speculative
    configuration (the draft on a GPU) and its best of any mode. Returns the table and (target ms, het,
    GPU spec, GPU any) per target."""
    rows = ["| TPOT target p90 (tok/s per user) | draft on Corsair: best | tok/s per kW | tok/s per user "
            "| GPU-only speculative (draft on GPU): best | tok/s per kW | tok/s per user "
            "| GPU-only, any mode: best | tok/s per kW | shift vs GPU speculative | shift vs GPU any |",
            "|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|"]
    data = []
    lab = lambda e: e.config.label if e is not None else "none meets the SLO"  # noqa: E731
    user = lambda e: f"{e.at_goodput.tok_s_per_user:.0f}" if e is not None else "-"  # noqa: E731
    for t in tpots_ms:
        slo = SLO(ttft, t / 1e3, SHARE)
        h = best(run(g, het, slo, ("spec",), N), spec_on(draft_chip))
        rg = run(g, gpu, slo, ("agg", "spec"), N)
        gs, ga = best(rg, spec_on(gpu_chip)), best(rg)
        rows.append(f"| {t:g} ms ({1e3 / t:,.0f}) | {lab(h)} | {n(kw(h))} | {user(h)} | {lab(gs)} | {n(kw(gs))} | "
                    f"{user(gs)} | {lab(ga)} | {n(kw(ga))} | {ratio(kw(h), kw(gs))} | {ratio(kw(h), kw(ga))} |")
        data.append((t, h, gs, ga))
    return rows, data


def _peak(data, i: int) -> tuple[float, float] | None:
    """(target ms, shift) where the heterogeneous side's tok/s per kW over column i's peaks, both serving."""
    both = [(t, kw(d[0]) / kw(d[i])) for t, *d in data if kw(d[0]) > 0 and kw(d[i]) > 0]
    return max(both, key=lambda x: (x[1], -x[0]), default=None)


def _only(data, i: int) -> list[float]:
    return [t for t, *d in data if kw(d[0]) > 0 and kw(d[i]) == 0]


def _fastest(evs: Sequence[Evaluation | None]) -> Evaluation | None:
    """The configuration with the most tokens/s per user at its goodput rate."""
    live = [e for e in evs if e is not None]
    return max(live, key=lambda e: (e.at_goodput.tok_s_per_user, e.config.label), default=None)


def speculative_h100() -> list[str]:
    g = one_call("speculative", "gpt-oss-120b", 6096, 800, "llama-3.2-1b@mxint8")
    het, gpu = Cl("gpu_corsair"), Cl("gpus_only")
    KEY = "speculative"
    N = REQUESTS[KEY]
    mark = len(REPORTED)
    rows, data = frontier(g, het, gpu, "dmatrix-corsair", "h100-sxm", 5.0, (20.0, 10.0, 6.0, 5.0, 4.0), N)
    fh = _fastest([d[1] for d in data])
    fg = _fastest([d[2] for d in data])
    fa = _fastest([d[3] for d in data])
    sp = fh.at_goodput.tok_s_per_user / fg.at_goodput.tok_s_per_user if fh and fg else 0.0
    d_g1, d_c1 = step_ms("llama-3.2-1b@mxint8", "h100-sxm", 1, 6500), step_ms("llama-3.2-1b@mxint8", "dmatrix-corsair", 1, 6500)
    t_1 = step_ms("gpt-oss-120b", "h100-sxm", 1, 6500)
    peak = _peak(data, 1)
    lines = [
        "## 3. Speculative decoding with the draft on a d-Matrix Corsair card (H100 verifying)",
        "",
        "**Claim.** Gimlet Labs with d-Matrix, \"Low-Latency Inference with Speculative Decoding on d-Matrix "
        "Corsair and GPU\" (Gimlet Labs blog, March 2026): gpt-oss-120b with a 1.6B draft on Corsair, verified "
        "on a GPU, gives 2-5x end-to-end request speed-ups for interactive configurations (up to 10x for "
        "energy-optimised ones) against the same speculative decoder on GPU at equivalent energy.",
        "",
        f"**Setup.** gpt-oss-120b, 6,096-token prompts (a task and its repository context), 800-token answers, "
        f"llama-3.2-1b@mxint8 as the draft (acceptance {ACCEPTANCE}), TTFT <= 5,000 ms and each TPOT target "
        f"below (p90, {SHARE:.0%} of requests). Heterogeneous: {het.describe()}, searched in mode `spec`. "
        f"GPU-only at about the same power: {gpu.describe()}, searched in modes `agg` and `spec`. The "
        "end-to-end speed-up for interactive use is read as the per-user speed of the most interactive "
        "configuration each side serves within a target, at the power each uses, with its mean end-to-end time.",
        "",
        *rows,
        "",
        steady(KEY, mark),
        "",
        "**Verdict.** "
        + (f"The most interactive Corsair-drafted configuration ({fh.config.label}) runs "
           f"{fh.at_goodput.tok_s_per_user:.0f} tokens/s per user at {n(fh.power_w)} W, mean end-to-end "
           f"{float(fh.goodput.best.e2e.mean()):.2f} s; the GPU-only speculative one ({fg.config.label}) "
           f"{fg.at_goodput.tok_s_per_user:.0f} at {n(fg.power_w)} W, {float(fg.goodput.best.e2e.mean()):.2f} s: "
           f"{sp:.2f}x per user. " if fh and fg else "One side serves none of the targets. ")
        + (f"The fastest GPU-only configuration of any mode ({fa.config.label}) runs "
           f"{fa.at_goodput.tok_s_per_user:.0f}"
           + (", faster per user than the Corsair-drafted pair, without speculation. " if fh and
              fa.at_goodput.tok_s_per_user > fh.at_goodput.tok_s_per_user else ". ") if fa else "")
        + (f"Per kW at equal targets the Corsair draft gains up to {peak[1]:.2f}x over the GPU draft "
           f"(TPOT {peak[0]:g} ms). " if peak else "")
        + ("The claimed 2-5x holds." if sp >= 2.0 else
           "The claimed 2-5x does not hold here. Why, from the numbers (decode steps at 6,500 tokens of context, "
           f"batch 1, one chip, the cost model): a round is k draft steps, then one verify on the H100; a "
           f"gpt-oss-120b step takes {t_1:.2f} ms on an H100 and a llama-3.2-1b@mxint8 draft step {d_g1:.2f} ms "
           f"on an H100 against {d_c1:.3f} ms on Corsair. Moving the draft off the GPU saves at most k x "
           f"{d_g1:.2f} ms of a round of at least {t_1:.2f} ms, and with acceptance {ACCEPTANCE} a round yields "
           f"{expected_tokens(2, ACCEPTANCE):.2f} tokens at k = 2: per-user speed can gain at most about "
           f"{(t_1 + 2 * d_g1) / (t_1 + 2 * d_c1):.2f}x from a free draft at k = 2, far from 2x."),
        "",
    ]
    return lines


def gpt_oss_b200() -> list[str]:
    g = load_graph(HERE / "gpt_oss_corsair.py")
    het, gpu = Cl("b200_corsair"), Cl("b200_x3")
    KEY = "gpt-oss"
    N = REQUESTS[KEY]
    mark = len(REPORTED)
    rows, data = frontier(g, het, gpu, "dmatrix-corsair", "b200", 2.0, (10.0, 5.0, 4.0, 3.0, 2.5, 2.0), N)
    ps, pa = _peak(data, 1), _peak(data, 2)
    d_g1, d_g32 = step_ms("llama-3.2-1b@mxint8", "b200", 1, 9000), step_ms("llama-3.2-1b@mxint8", "b200", 32, 9000)
    d_c1, d_c32 = (step_ms("llama-3.2-1b@mxint8", "dmatrix-corsair", 1, 9000),
                   step_ms("llama-3.2-1b@mxint8", "dmatrix-corsair", 32, 9000))
    t_1, t_32 = step_ms("gpt-oss-120b", "b200", 1, 9000), step_ms("gpt-oss-120b", "b200", 32, 9000)
    only_s, only_a = _only(data, 1), _only(data, 2)
    lo = [(t, kw(h) / kw(gs)) for t, h, gs, _ in data if kw(h) > 0 and kw(gs) > 0]
    below = [t for t, x in lo if x < 4.0]
    above = [t for t, x in lo if x >= 4.0]
    peak_gs = next((gs for t, _, gs, _ in data if ps and t == ps[0]), None)
    lines = [
        "## 5. gpt-oss-120b, 8K in / 1K out, the draft on Corsair and B200s verifying",
        "",
        "**Claim.** Gimlet Labs, as reported by Chipstrat, \"An Interview with the Gimlet Labs Team About "
        "Heterogeneous Inference for AI Agents\" (2026): d-Matrix Corsair drafting with NVIDIA B200 verifying shifts the throughput-vs-"
        "interactivity Pareto frontier of gpt-oss-120b (8K input, 1K output) about 4x over GPU-only "
        "speculative decoding with the same draft on GPU at equivalent energy.",
        "",
        "**The shift computed here.** Interactivity is the TPOT target (p90; its inverse is tokens/s per "
        "user). At each target the search runs on both clusters; throughput at equivalent energy is output "
        "tokens/s per kW of the accelerators the configuration uses, at its goodput rate (the highest Poisson "
        f"rate at which {SHARE:.0%} of requests meet TTFT <= 2,000 ms and the target). The shift at a target is "
        "the best Corsair-drafted configuration's tokens/s per kW over the GPU-only cluster's best speculative "
        "configuration (the draft on a B200 of its own, as the search pairs engines), and, second, over its "
        "best configuration of any mode (plain decoding included).",
        "",
        f"**Setup.** `gpt_oss_corsair.py`: gpt-oss-120b (MXFP4 experts), 8,192-token prompts, 1,024-token "
        f"answers, llama-3.2-1b@mxint8 as the draft (acceptance {ACCEPTANCE}). Heterogeneous: {het.describe()}, "
        f"searched in mode `spec`. GPU-only at no more power: {gpu.describe()}, searched in modes `agg` and "
        "`spec`.",
        "",
        *rows,
        "",
        steady(KEY, mark),
        "",
        "**Verdict.** "
        + (f"Against GPU-only speculative decoding the shift peaks at {ps[1]:.2f}x (TPOT {ps[0]:g} ms)"
           if ps else "No target is served by both sides")
        + (f"; at {', '.join(f'{t:g}' for t in only_s)} ms only the Corsair-drafted deployment meets the SLO"
           if only_s else "")
        + (f". Against the best GPU-only deployment of any mode it peaks at {pa[1]:.2f}x (TPOT {pa[0]:g} ms)"
           if pa else "")
        + (f"; at {', '.join(f'{t:g}' for t in only_a)} ms nothing GPU-only meets the SLO" if only_a else "")
        + ". The interview reports about 4x. "
        + (f"The claim holds at {', '.join(f'{t:g}' for t in above)} ms" if above else
           "The claim does not hold at any target both sides serve")
        + (f" (and trivially at {', '.join(f'{t:g}' for t in only_s)} ms, where the GPU-only side serves nothing)"
           if above and only_s else "")
        + (f" and not at {', '.join(f'{t:g}' for t in below)} ms, where the shift is below 4x" if below and
           above else "")
        + (f". The GPU-only speculative configurations give their draft a B200 of its own (the search's "
           f"speculative unit; a draft sharing the verifying GPU is not a search role): the one at the peak uses "
           f"{peak_gs.chips - draft_chips(peak_gs)} verifying and {draft_chips(peak_gs)} drafting B200s, and with "
           f"its rounds unchanged on the verifying B200s alone the shift there would be "
           f"{ps[1] * (peak_gs.chips - draft_chips(peak_gs)) / peak_gs.chips:.2f}x, still "
           + ("above" if ps[1] * (peak_gs.chips - draft_chips(peak_gs)) / peak_gs.chips >= 4.0 else "below")
           + " 4x" if ps and peak_gs is not None else "")
        + ". Why, from the numbers (decode steps at 9,000 tokens of context, one chip, the cost model): a round "
        "is k draft steps, then one verify on the B200. At batch 1 a draft step of llama-3.2-1b@mxint8 takes "
        f"{d_g1:.2f} ms on a B200, {d_g1 / t_1:.0%} of a gpt-oss-120b step ({t_1:.2f} ms), and {d_c1:.3f} ms on "
        f"a Corsair card; at batch 32 it takes {d_g32:.2f} ms on the B200 and {d_c32:.2f} ms on Corsair (the "
        "draft's KV cache no longer fits the card's 2 GB SRAM and is read from LPDDR5). The Corsair draft is "
        "nearly free only at small batches, which is where a tight TPOT target puts every configuration; "
        "where the target is loose, the GPU-only side batches many users per B200 and its best configuration "
        "is plain decoding. The shift is a property of the interactivity target, not one number, and it grows "
        "without bound as the GPU-only side nears the tightest target it can meet at all.",
        "",
    ]
    return lines


def cross_vendor() -> list[str]:
    g = one_call("cross-vendor", "llama-3.1-70b", 16000, 500)
    slo = SLO(3.0, 0.05, SHARE)
    het, singles = Cl("mi300x_h200"), [Cl("h200_x8"), Cl("mi300x_x7")]
    N = REQUESTS["cross-vendor"]
    mark = len(REPORTED)
    rh = best(run(g, het, slo, ("agg", "disagg"), N))
    rs = [(c, best(run(g, c, slo, ("agg", "disagg"), N))) for c in singles]
    c_best, e_best = max(rs, key=lambda ce: kw(ce[1]))
    mixed = rh is not None and len(rh.config.chips()) > 1
    return [
        "## 4. Cross-vendor: H200 and MI300X in one deployment",
        "",
        "**Claim.** None published for this pair. The nearest is Zhong et al., \"DistServe: Disaggregating "
        "Prefill and Decoding for Goodput-optimized Large Language Model Serving\" (OSDI 2024): 7.4x more "
        "requests, or a 12.6x tighter SLO, at over 90% SLO attainment, by disaggregating on one GPU type.",
        "",
        f"**Setup.** llama-3.1-70b in bf16, 16,000-token documents, 500-token answers, {slo_text(slo)}; modes "
        f"`agg` and `disagg`. Heterogeneous: {het.describe()}, joined by 50 GB/s RDMA; a KV cache moving "
        "between vendors changes layout (the search does not charge that conversion; `docs/serving.md`). "
        "Single hardware at no more power: " + "; ".join(c.describe() for c in singles) + ".",
        "",
        *HEAD,
        row(het.name, rh),
        *(row(c.name, e) for c, e in rs),
        "",
        steady("cross-vendor", mark),
        "",
        f"**Verdict.** The two-vendor cluster's best configuration "
        + ("mixes the vendors" if mixed else "uses one vendor only")
        + f" and serves {ratio(kw(rh), kw(e_best))} the tokens/s per kW of the best single-vendor cluster "
        f"({c_best.name}). With no published claim there is nothing to confirm; against DistServe's 7.4x, "
        "which compares disaggregated with aggregated serving on one GPU type, not vendors, the search "
        "finds " + ("a gain from mixing vendors" if kw(rh) > kw(e_best) * 1.05 else "no gain from mixing vendors")
        + " at this SLO"
        + (" (the best configuration on every cluster is already disaggregated)."
           if all(e is not None and e.config.mode == "disagg" for e in [rh, *(e for _, e in rs)]) else "."),
        "",
    ]


def eagle_alpha(tokens: float, k: int) -> float:
    """The per-token acceptance a at which a round of k drafts yields `tokens` on average (bisection)."""
    lo, hi = 0.0, 0.999999
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_tokens(k, mid) < tokens else (lo, mid)
    return (lo + hi) / 2


def document() -> str:
    (e_lo, e_hi), ek = EAGLE3
    body = [*splitwise(), *moe(), *speculative_h100(), *cross_vendor(), *gpt_oss_b200()]
    parts = [
        "# Scenarios: published heterogeneous-serving results, searched under SLOs",
        "",
        f"_Written in full by `{CMD}`; do not edit by hand. `tests/test_scenarios_doc.py` checks that this file "
        "is a fresh run._",
        "",
        "Each scenario is deployed as a user would deploy it: `gimletc search` (`gimletc.serving.search`) finds "
        "the serving configuration (modes, roles, chip types, replica counts, tensor-parallel sizes, "
        "speculative k) with the most goodput within a TTFT and a TPOT target, on the heterogeneous cluster "
        "of the published claim and on single-hardware clusters of no more accelerator power "
        "(`examples/scenarios/clusters/`, power from each chip's TDP in the catalog, which cites the vendor's "
        "figure). Every number is a **prediction**: the cost model's step times for the vLLM stack "
        "(`docs/cost-model.md`) run through the load simulator (`docs/serving.md`); none is measured.",
        "",
        f"**Fidelity.** Each search simulates its {TOP_K} most promising configurations (plus the best of each "
        f"mode and the best mix of chip types), {min(REQUESTS.values()):,} to {max(REQUESTS.values()):,} Poisson "
        f"requests per simulation (seed {SEED}), at "
        f"most {MAX_EVALS} simulations per goodput bisection (stopping at 5% between rates); aggregated engines "
        "run with chunked prefill only. A goodput from a finite run means something only if the run reaches a "
        "steady state, so each scenario simulates enough requests that its busiest configuration holds at most "
        f"{max(in_flight(e) / REQUESTS[k] for k, e in WORST.items()):.0%} of them in flight (each section says). "
        "This keeps the whole document a test-sized computation; a "
        f"`gimletc search` with its defaults (1,000 requests, 8 configurations) is the finer answer. The ranking "
        "metric is **output tokens/s per kW**: output tokens/s at the goodput rate over the TDP of the chips "
        "the configuration uses (a configuration may leave some of a cluster's chips idle).",
        "",
        f"**Speculative acceptance**, fixed at {ACCEPTANCE} per drafted token before any scenario was run and "
        "not varied: the repository's default (`docs/serving.md`), from Leviathan, Kalman and Matias, \"Fast "
        "Inference from Transformers via Speculative Decoding\" (ICML 2023), Table 3: alpha = 0.71 for LaMDA "
        "137B drafted by a 2B LaMDA model (0.57-0.61 with a 100M draft). A draft on another chip is a standalone "
        "small model; EAGLE heads, which read the target's hidden states, cannot run there. A round of k drafts "
        "yields (1 - a^(k+1)) / (1 - a) tokens on average: "
        + ", ".join(f"k = {k}: {expected_tokens(k, ACCEPTANCE):.2f}" for k in (1, 2, 3, 4, 7))
        + f" at a = {ACCEPTANCE}. By the same conversion the {e_lo}-{e_hi} tokens per round that EAGLE-3 heads "
        f"accept for gpt-oss-120b at {ek} drafted are a = {eagle_alpha(e_lo, ek):.2f}-{eagle_alpha(e_hi, ek):.2f}. "
        "The draft model is llama-3.2-1b stored as MXINT8 (1.27 GB: it fits Corsair's 2 GB SRAM), standing "
        "in for the published 1.6B draft's size; the search's speculative unit is synchronous (the target "
        "waits while the draft proposes) and prices a draft on a GPU on a GPU of its own.",
        "",
        "Regenerate every figure:",
        "",
        f"    {CMD}",
        "",
        "One scenario by hand, e.g. the fifth at its 5 ms target:",
        "",
        "    .venv/bin/gimletc search examples/scenarios/gpt_oss_corsair.py \\",
        "        -c examples/scenarios/clusters/search/b200_corsair.yaml --slo-ttft-ms 2000 --slo-tpot-ms 5 \\",
        f"        --modes spec -n {REQUESTS['gpt-oss']} --configs {TOP_K}",
        "",
    ]
    parts += body
    return "\n".join(parts).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/scenarios.md differs from a fresh run")
    args = ap.parse_args()
    t = time.perf_counter()
    text = document()
    for what, s in SEARCHES:
        print(f"{s:6.1f} s  {what}", file=sys.stderr)
    print(f"{len(SEARCHES)} searches in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    if args.check:
        if DOC.read_text() != text:
            sys.exit(f"{DOC} differs from a fresh run of {CMD}")
        return
    write_atomic(DOC, text)


if __name__ == "__main__":
    main()
