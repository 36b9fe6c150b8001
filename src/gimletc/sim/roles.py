"""Step costs of engines that are more than one tensor-parallel group: serving roles.

The load simulator batches model steps on engines (`gimletc.sim.engines`); an engine's
`StepCost` says what its prefill, decode and mixed iterations take. The serving search
(`gimletc.serving`) also lays out engines made of two kinds of group, or of one group split
two ways, and these classes price them. Every time comes from the cost model through
`StepCost` (restricted to a block where a group runs only that block); nothing here is fitted.

- `SpecCost`, speculative decoding on a pair of groups: a draft model proposes `k` tokens per
  round on its own group (the engine's *aux* devices), the target verifies the k + 1 positions
  on the engine's devices, and the two exchange the proposed and accepted tokens (`link_s` per
  round). Rounds are synchronous, as vLLM's and SGLang's speculative decoding run them: the
  target waits while the draft proposes. A round yields E = (1 - a^(k+1)) / (1 - a) tokens on
  average at per-token acceptance a; one simulated decode iteration is one expected token, a
  round's time / E, so token counts, KV growth and TPOT stay per token. The target's prefill
  and the draft's run side by side (the longer counts).
- `SplitCost`, attention/FFN disaggregation with M attention groups feeding N FFN groups
  (MegaScale-Infer's M:N): each attention group holds the KV caches of 1/M of the batch and runs
  the attention block (with the embedding, norms and LM head); the FFN groups hold the FFN or
  expert weights, split over all their chips (expert parallelism), and see the tokens of all M
  groups at once, so each expert's weights are read once for M groups' tokens. The batch goes as
  `micro` micro-batches that ping-pong: per layer, the attention side computes micro-batch j + 1
  while the FFN side computes j. Per layer, the attention side needs m·a, the FFN side m·f, each
  direction of the link m·c, and one micro-batch's round trip a + c + f + c; the step is L times
  the largest (a, f, c: one micro-batch's block times and transfer, per layer).
- `DPCost`, attention data parallelism with expert parallelism inside one engine of `tp x dp`
  chips: each of the `dp` ranks runs the attention block for its share of the batch on `tp`
  chips (attention weights replicated per rank, KV caches per rank), and the FFN block runs
  over all `tp x dp` chips for the whole batch (experts sharded over them). One forward pass:
  the two blocks add, with the step's fixed cost once.

Expert parallelism's dispatch and combine are priced as the stack's collective over the same
activations (the all-reduce of a tensor-parallel FFN); the cost model has no all-to-all yet.

Energy: an engine's devices draw power during the operator time of its iterations. A composite
engine's aux devices (the draft group, the FFN groups) are active for `aux_ratio` times the
main devices' operator time, the ratio of the two at the reference batch (`REF_BATCH`).
"""

from __future__ import annotations

from collections.abc import Callable

from gimletc.dtypes import nbytes
from gimletc.hardware.schema import Chip
from gimletc.models import Model, step_workload
from gimletc.passes.partition import expected_tokens
from gimletc.sim.steps import CTX_STEP, SoftwareProfile, StepCost

__all__ = ["REF_BATCH", "ROLE_PARTS", "DPCost", "SpecCost", "SplitCost", "role_cost"]

REF_BATCH = 16  # the decode batch at which an aux group's share of operator time is taken
ROLE_PARTS = ("spec", "split", "dp")  # the first field of a `part` tuple naming a composite engine


class SpecCost(StepCost):
    """A draft group and a target group decoding speculatively (see the module docstring)."""

    def __init__(self, target: Model, chip: Chip, chips: int, prof: SoftwareProfile, draft: Model, draft_chip: Chip,
                 draft_chips: int, k: int, acceptance: float, link_s: float):
        super().__init__(target, chip, chips, prof)
        self.target = StepCost(target, chip, chips, prof)  # the target's own steps (this object's caches are per token)
        self.draft = StepCost(draft, draft_chip, draft_chips, prof)
        self.k, self.acceptance, self.link_s = k, acceptance, link_s
        self.per_round = expected_tokens(k, acceptance)
        self._ver: dict[tuple[int, int], tuple[float, float]] = {}
        self.aux_weight_bytes = draft.weight_bytes
        v = self._verify(REF_BATCH, 4)
        d = self.draft._dec_point(REF_BATCH, 4)
        self.aux_ratio = k * d[1] / v[1] if v[1] > 0 else 0.0

    def _verify(self, batch: int, k: int) -> tuple[float, float]:
        key = (batch, k)
        v = self._ver.get(key)
        if v is None:
            ctx = max(0, min(k * CTX_STEP, self._max_ctx - self.k))
            v = self._ver[key] = self._price_work(step_workload(self.model, "verify", batch, self.k + 1, ctx,
                                                                self.profile.stack))
        return v

    def round(self, batch: int, k: int) -> tuple[float, float]:
        """(seconds, the target's operator seconds) of one round at grid point k of the context."""
        d = self.draft._dec_point(batch, k)
        v = self._verify(batch, k)
        return self.k * d[0] + v[0] + self.link_s, v[1]

    def _dec_point(self, batch: int, k: int) -> tuple[float, float]:
        key = (batch, k)
        v = self._dec.get(key)
        if v is None:
            t, b = self.round(batch, k)
            v = self._dec[key] = (t / self.per_round, b / self.per_round)
        return v

    def prefill(self, batch: int, tokens: int, ctx: int = 0) -> tuple[float, float]:
        key = (batch, tokens, ctx)
        v = self._pre.get(key)
        if v is None:
            t, b = self.target.prefill(batch, tokens, ctx)
            d = self.draft.prefill(batch, tokens, ctx)
            v = self._pre[key] = (max(t, d[0]), b)
        return v

    def _mixed_point(self, chunk: int, chunk_ctx: int, batch: int, k: int) -> tuple[float, float]:
        key = (chunk, chunk_ctx, batch, k)
        v = self._mix.get(key)
        if v is None:
            # The target's chunk and decode tokens in one pass, the decode part replaced by a speculative token.
            t, b = self.target._mixed_point(chunk, chunk_ctx, batch, k)
            plain = self.target._dec_point(batch, k)
            spec = self._dec_point(batch, k)
            v = self._mix[key] = (t - plain[0] + spec[0], b - plain[1] + spec[1])
        return v


class SplitCost(StepCost):
    """M attention groups and N FFN groups with ping-pong micro-batches (see the module docstring).

    The engine's devices are the attention groups' (`chips` = M x their tensor-parallel size);
    its aux devices the FFN groups' (`ffn_chips` in all). `link` = (latency s, bandwidth B/s) of
    the route between an attention group and the FFN side."""

    def __init__(self, model: Model, chip: Chip, attn_tp: int, prof: SoftwareProfile, ffn_chip: Chip, ffn_chips: int,
                 groups: int, micro: int, link: tuple[float, float]):
        super().__init__(model, chip, attn_tp * groups, prof)
        L = model.layers
        self.groups, self.micro, self.link = groups, max(1, micro), link
        self.attn = StepCost(model, chip, attn_tp, prof, (0, L, "attention"))
        self.ffn = StepCost(model, ffn_chip, ffn_chips, prof, (0, L, "ffn"))
        self._act_bytes = model.hidden * nbytes(model.act_dtype)
        self.aux_weight_bytes = model.stage_weight_bytes(0, L, "ffn")
        a = self.attn._dec_point(REF_BATCH, 4)
        f = self.ffn._dec_point(REF_BATCH * groups, 4)
        self.aux_ratio = f[1] / a[1] if a[1] > 0 else 0.0

    @property
    def weight_bytes(self) -> float:
        """Every attention group holds the attention block's weights (spread over the engine's devices)."""
        return self.groups * self.model.stage_weight_bytes(0, self.model.layers, "attention")

    def _pipeline(self, a: tuple[float, float], f: tuple[float, float], tokens_per_group: float, m: int
                  ) -> tuple[float, float]:
        L = self.model.layers
        lat, bw = self.link
        c = L * (lat + tokens_per_group * self._act_bytes / bw)  # one micro-batch's transfers, one direction
        t = max(m * a[0], m * f[0], m * c, a[0] + f[0] + 2 * c)
        return t, m * a[1]

    def _split(self, batch: int) -> tuple[int, int, int]:
        """(micro-batches, sequences per attention group and micro-batch, tokens the FFN side sees per micro-batch)."""
        per_group = -(-batch // self.groups)
        m = min(self.micro, per_group)
        b_a = -(-per_group // m)
        return m, b_a, b_a * self.groups

    def _dec_point(self, batch: int, k: int) -> tuple[float, float]:
        key = (batch, k)
        v = self._dec.get(key)
        if v is None:
            m, b_a, b_f = self._split(batch)
            v = self._dec[key] = self._pipeline(self.attn._dec_point(b_a, k), self.ffn._dec_point(b_f, k), b_a, m)
        return v

    def prefill(self, batch: int, tokens: int, ctx: int = 0) -> tuple[float, float]:
        # Prompts spread over the attention groups; no ping-pong (one pass of the attention side, then the FFN side).
        key = (batch, tokens, ctx)
        v = self._pre.get(key)
        if v is None:
            b_a = -(-batch // self.groups)
            a = self.attn.prefill(b_a, tokens, ctx)
            f = self.ffn.prefill(batch, tokens, ctx)
            v = self._pre[key] = self._pipeline(a, f, b_a * tokens, 1)
        return v

    def _mixed_point(self, chunk: int, chunk_ctx: int, batch: int, k: int) -> tuple[float, float]:
        key = (chunk, chunk_ctx, batch, k)
        v = self._mix.get(key)
        if v is None:
            m, b_a, b_f = self._split(batch)
            a = self.attn._mixed_point(chunk, chunk_ctx, b_a, k)
            f = self.ffn._mixed_point(chunk, chunk_ctx, b_f, k)
            v = self._mix[key] = self._pipeline(a, f, b_a + chunk, 1)
        return v


class DPCost(StepCost):
    """Attention data-parallel over `dp` ranks of `tp` chips, experts over all `tp x dp` chips (see the module docstring)."""

    def __init__(self, model: Model, chip: Chip, tp: int, prof: SoftwareProfile, dp: int):
        super().__init__(model, chip, tp * dp, prof)
        L = model.layers
        self.tp, self.dp = tp, dp
        self.attn = StepCost(model, chip, tp, prof, (0, L, "attention"))
        self.ffn = StepCost(model, chip, tp * dp, prof, (0, L, "ffn"))
        # Priced apart, the two blocks each carry a step's fixed cost; one forward pass has it once.
        whole = StepCost(model, chip, tp, prof)
        self._fixed = max(0.0, self.attn.decode(1, 0)[0] + StepCost(model, chip, tp, prof, (0, L, "ffn")).decode(1, 0)[0]
                          - whole.decode(1, 0)[0])
        self._fixed_pre = max(0.0, self.attn.prefill(1, 64)[0]
                              + StepCost(model, chip, tp, prof, (0, L, "ffn")).prefill(1, 64)[0] - whole.prefill(1, 64)[0])

    @property
    def weight_bytes(self) -> float:
        """The attention block's weights once per rank, the FFN's once (spread over the engine's devices)."""
        L = self.model.layers
        return self.dp * self.model.stage_weight_bytes(0, L, "attention") + self.model.stage_weight_bytes(0, L, "ffn")

    def _dec_point(self, batch: int, k: int) -> tuple[float, float]:
        key = (batch, k)
        v = self._dec.get(key)
        if v is None:
            a = self.attn._dec_point(-(-batch // self.dp), k)
            f = self.ffn._dec_point(batch, k)
            v = self._dec[key] = (a[0] + f[0] - self._fixed, a[1] + f[1])
        return v

    def prefill(self, batch: int, tokens: int, ctx: int = 0) -> tuple[float, float]:
        key = (batch, tokens, ctx)
        v = self._pre.get(key)
        if v is None:
            a = self.attn.prefill(-(-batch // self.dp), tokens, ctx)
            f = self.ffn.prefill(batch, tokens, ctx)
            v = self._pre[key] = (a[0] + f[0] - self._fixed_pre, a[1] + f[1])
        return v

    def _mixed_point(self, chunk: int, chunk_ctx: int, batch: int, k: int) -> tuple[float, float]:
        key = (chunk, chunk_ctx, batch, k)
        v = self._mix.get(key)
        if v is None:
            a = self.attn._mixed_point(chunk, chunk_ctx, -(-batch // self.dp), k)
            f = self.ffn._mixed_point(chunk, chunk_ctx, batch, k)
            v = self._mix[key] = (a[0] + f[0] - self._fixed, a[1] + f[1])
        return v


def role_cost(model: Model, chip: Chip, chips: int, prof: SoftwareProfile, part: tuple,
              models: Callable[[str], Model], chips_of: Callable[[str], Chip]) -> StepCost:
    """The composite cost a `part` tuple names (`ROLE_PARTS`); `models(name)` and `chips_of(name)`
    resolve the draft model and the other group's chip.

    - ("spec", draft model, draft chip, draft chips, k, acceptance, link seconds per round)
    - ("split", FFN chip, FFN chips, attention groups, micro-batches, link latency, link bandwidth)
    - ("dp", data-parallel ranks)"""
    kind = part[0]
    if kind == "spec":
        _, draft, dchip, dn, k, a, link_s = part
        return SpecCost(model, chip, chips, prof, models(draft), chips_of(dchip), int(dn), int(k), float(a),
                        float(link_s))
    if kind == "split":
        _, fchip, fn, groups, micro, lat, bw = part
        return SplitCost(model, chip, chips // int(groups), prof, chips_of(fchip), int(fn), int(groups), int(micro),
                         (float(lat), float(bw)))
    if kind == "dp":
        dp = int(part[1])
        return DPCost(model, chip, chips // dp, prof, dp)
    raise ValueError(f"unknown engine role part {part!r}")
