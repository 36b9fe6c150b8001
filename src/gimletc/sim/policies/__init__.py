"""Batching policies by name, and the one place a software stack picks its default.

| name | what it models |
|---|---|
| `vllm` | vLLM 0.11's V1 scheduler (`policies/vllm.py`) |
| `sglang` | SGLang 0.4/0.5's scheduler (`policies/sglang.py`) |
| `trtllm` | TensorRT-LLM 1.0's in-flight batching, guaranteed no evict (`policies/trtllm.py`) |
| `prefill-first` | the simulator's own policy before these (`policies/prefill_first.py`) |
"""

from __future__ import annotations

from gimletc.hardware.schema import Chip
from gimletc.models import Model
from gimletc.models.workload import PREFIX_BLOCK
from gimletc.sim.batching import BatchParams, BatchPolicy
from gimletc.sim.config import POLICIES, EngineConfig, SimConfig, SimulationError
from gimletc.sim.kv import KVMemory
from gimletc.sim.policies.prefill_first import ChunkedPrefill, PrefillFirst
from gimletc.sim.policies.sglang import SGLangPolicy
from gimletc.sim.policies.trtllm import TRTLLMPolicy
from gimletc.sim.policies.vllm import VLLMPolicy

__all__ = ["POLICIES", "batch_params", "default_policy", "make_policy", "policy_class", "policy_name", "prefix_block"]

# The serving engine each software stack or profile stands for. The cost model's profiles
# (`gimletc.sim.steps.PROFILES`) are not engines: their step times are PyTorch's ("calibrated",
# "fused") or a generic fused engine's ("fused-engine"), and they are served as vLLM serves,
# the engine most deployments run; an engine stack takes its own engine's policy.
_STACK_POLICY = {
    "reference": "vllm",
    "calibrated": "vllm",
    "fused": "vllm",
    "fused-engine": "vllm",
    "vllm": "vllm",
    "sglang": "sglang",
    "trtllm": "trtllm",
    "tensorrt-llm": "trtllm",
}


def default_policy(stack_or_profile: str) -> str:
    """The batching policy a software stack or cost-model profile serves with by default."""
    return _STACK_POLICY.get(stack_or_profile, "vllm")


def policy_class(name: str, config: EngineConfig | None = None) -> type[BatchPolicy]:
    if name == "prefill-first":
        return ChunkedPrefill if config is not None and config.chunked_prefill else PrefillFirst
    classes: dict[str, type[BatchPolicy]] = {"vllm": VLLMPolicy, "sglang": SGLangPolicy, "trtllm": TRTLLMPolicy}
    if name not in classes:
        raise SimulationError(f"unknown batching policy {name!r}; choose one of {', '.join(POLICIES)}")
    return classes[name]


def policy_name(sim: SimConfig, stack_profile: str = "calibrated") -> str:
    """The policy a simulation runs: the one asked for, else its profile's (else the workload's stack's)."""
    return sim.engine.policy or default_policy(sim.profile.name if sim.profile else stack_profile)


def batch_params(sim: SimConfig, model: Model, chip: Chip, kv_tokens: float, stack_profile: str = "calibrated"
                 ) -> BatchParams:
    """The knobs an engine of `chip` serving `model` with room for `kv_tokens` tokens of KV cache runs with."""
    name = policy_name(sim, stack_profile)
    return policy_class(name, sim.engine).resolve(sim.engine, model, chip, kv_tokens)


def make_policy(name: str, config: EngineConfig, kv: KVMemory) -> BatchPolicy:
    """The policy `name` with `config`'s knobs (unset ones take the policy's defaults)."""
    return policy_class(name, config)(config, kv)


def prefix_block(policy: BatchPolicy, config: EngineConfig) -> int:
    """The prefix cache's block (tokens) the engines run with; 0: no prefix caching. On by default where the
    engine has it on (vLLM 0.11 V1, SGLang's radix cache, TensorRT-LLM's block reuse); `prefix_caching=False`
    turns it off; prefill-first has none."""
    if config.prefix_caching is False:
        return 0
    if policy.prefix_cache is None:
        if config.prefix_caching:
            raise SimulationError(f"the {policy.name} policy has no prefix cache; use vllm, sglang or trtllm")
        return 0
    return PREFIX_BLOCK[policy.prefix_cache]
