"""What a serving search simulates and searches over (`SearchSettings`), checked when made."""

from __future__ import annotations

from dataclasses import dataclass

from gimletc.errors import ConfigError
from gimletc.serving.layout import (
    MODES,
)
from gimletc.sim.config import POLICIES, SimConfig

ROLE_POLICY_ROLES = ("agg", "prefill", "decode", "spec", "attn")  # roles whose engines a --role-policy may set


@dataclass(frozen=True)
class SearchSettings:
    """What a search simulates; every figure it reports names these."""

    requests: int = 1000  # per simulation
    seed: int = 0
    top_k: int = 8  # configurations simulated
    rtol: float = 0.05  # bisection stops when hi/lo < 1 + rtol
    max_evals: int = 14  # simulations per bisection
    max_chips: int | None = None  # budget over all chip types (default: the cluster's accelerators)
    tp: tuple[int, ...] | None = None  # tensor-parallel sizes to try (default: powers of two that fit)
    modes: tuple[str, ...] | None = None  # None: agg, disagg, spec where a draft is named, attn-ffn for MoE models
    chunked: tuple[bool, ...] = (False, True)  # aggregated variants
    chips: tuple[str, ...] | None = None  # chip types to use (default: every accelerator type)
    frontier: tuple[float, ...] = (0.25, 0.5, 0.75)  # extra operating points, as fractions of each goodput
    sim: SimConfig = SimConfig()
    dp: tuple[int, ...] | None = None  # attention data-parallel sizes (EP over tp x dp); None: 2, 4, 8 for MoE models
    ratios: tuple[int, ...] = (1, 2, 4, 8)  # attn-ffn: attention engines per FFN engine (M of M:1)
    micro: tuple[int, ...] = (1, 2, 3, 4)  # attn-ffn: ping-pong micro-batches tried
    draft: str | None = None  # spec: the draft model (default: the one the graph's LLM call names)
    acceptance: float | None = None  # spec: per-token acceptance (default: the call's, else DEFAULT_ACCEPTANCE)
    mix: bool = True  # let a role's replicas span chip types
    role_policy: tuple[tuple[str, str], ...] = ()  # (role, batching policy) for that role's engines

    def __post_init__(self) -> None:
        if self.requests < 10:
            raise ConfigError(f"search needs at least 10 requests per simulation; got {self.requests}")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1; got {self.top_k}")
        if self.max_chips is not None and self.max_chips < 1:
            raise ConfigError(f"max_chips must be >= 1; got {self.max_chips}")
        if self.modes is not None:
            bad = [m for m in self.modes if m not in MODES]
            if bad or not self.modes:
                raise ConfigError(f"modes must be a non-empty subset of {', '.join(MODES)}; got {', '.join(self.modes)}")
        for name, vals in (("dp", self.dp or ()), ("ratios", self.ratios), ("micro", self.micro)):
            if any(v < 1 for v in vals):
                raise ConfigError(f"{name} sizes must be >= 1; got {', '.join(map(str, vals))}")
        if self.acceptance is not None and not 0 <= self.acceptance < 1:
            raise ConfigError(f"speculative acceptance must be in [0, 1); got {self.acceptance:g}")
        for role, pol in self.role_policy:
            if role not in ROLE_POLICY_ROLES:
                raise ConfigError(f"role policy: unknown role {role!r}; roles: {', '.join(ROLE_POLICY_ROLES)}")
            if pol not in POLICIES:
                raise ConfigError(f"role policy {role}: unknown batching policy {pol!r}; choose one of "
                                  f"{', '.join(POLICIES)}")

    def policy_of(self, role: str) -> str | None:
        return dict(self.role_policy).get(role)

    def to_dict(self) -> dict:
        return {"requests": self.requests, "seed": self.seed, "top_k": self.top_k, "rtol": self.rtol,
                "max_evals": self.max_evals, "max_chips": self.max_chips,
                "tp": list(self.tp) if self.tp else None, "modes": list(self.modes) if self.modes else None,
                "chunked": list(self.chunked), "chips": list(self.chips) if self.chips else None,
                "frontier": list(self.frontier), "dp": list(self.dp) if self.dp else None,
                "ratios": list(self.ratios), "micro": list(self.micro), "draft": self.draft,
                "acceptance": self.acceptance, "mix": self.mix,
                "role_policy": {r: p for r, p in self.role_policy},
                "arrivals": "poisson", "sim": self.sim.to_dict()}
