"""Setting engines up before a run: their devices, the models each serves (and the KV memory their
weights leave), and each engine's batching policy and prefix cache. `gimletc.sim.engines` runs them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gimletc.hardware.schema import Chip
from gimletc.sim.batching import BatchPolicy
from gimletc.sim.config import EngineConfig
from gimletc.sim.kv import KVMemory
from gimletc.sim.policies import default_policy, make_policy, prefix_block
from gimletc.sim.state import Engine, ModelQueue
from gimletc.sim.steps import StepCost
from gimletc.sim.workload import Workload

__all__ = ["assign_policies", "index_devices", "link_engines", "load_models"]


def link_engines(engines: Sequence[Engine]) -> None:
    """Each engine's neighbours (the engines sharing a device with it), and whether it is alone on its devices
    or owns them (alone, and no engine's auxiliary devices among them)."""
    aux = {d for e in engines for d in e.aux}
    for e in engines:
        mine = set(e.devs)
        e.near = tuple(o for o in engines if mine & set(o.devs))
        e.alone = len(e.near) == 1
        e.owns = e.alone and not aux.intersection(e.devs)


def index_devices(wl: Workload) -> tuple[list[str], dict[str, int], list[Chip]]:
    """Every device an engine runs on, in engine order (a composite engine's second kind of group,
    `gimletc.sim.roles`, after all primary groups): ids, index by id, and chip."""
    ids: list[str] = []
    index: dict[str, int] = {}
    chips: list[Chip] = []
    for spec in wl.engines:
        for d in spec.devices:
            if d not in index:
                index[d] = len(ids)
                ids.append(d)
                chips.append(spec.chip)
    for spec in wl.engines:
        for d in spec.aux:
            if d not in index:
                index[d] = len(ids)
                ids.append(d)
                chips.append(spec.aux_chip or spec.chip)
    return ids, index, chips


def load_models(engines: list[Engine], engine_models: Sequence, cost: Callable[..., StepCost],
                dev_ids: list[str], dev_chip: list[Chip], mem_fraction: float) -> KVMemory:
    """Each engine's models (their queues and step costs); the KV memory their weights leave."""
    weights = [0.0] * len(dev_ids)
    names: list[set[str]] = [set() for _ in dev_ids]
    for e, models in zip(engines, engine_models, strict=True):
        for name, n, part in models:
            if (name, n, part) in e.mq_by_model:
                continue
            c = cost(name, e.spec.chip, n, part)
            mq = ModelQueue(name, c)
            e.mqs.append(mq)
            e.mq_by_model[(name, n, part)] = mq
            # Serving layouts send a model's tasks to whichever engine of a pool is least loaded,
            # whatever its size: they name the model alone (chips -1).
            e.mq_by_model.setdefault((name, -1, ()), mq)
            for d in e.devs:  # tensor parallel: each chip holds its share of the weights
                weights[d] += c.weight_bytes / e.n
                names[d].add(name)
            if e.aux:
                e.aux_r = getattr(c, "aux_ratio", 0.0)
                for d in e.aux:
                    weights[d] += getattr(c, "aux_weight_bytes", 0.0) / len(e.aux)
                    names[d].add(name)
    return KVMemory(engines, dev_ids, dev_chip, weights, names, mem_fraction)


def assign_policies(engines: Sequence[Engine], ec: EngineConfig, kv: KVMemory, profile_name: str
                    ) -> tuple[str, dict[int, Callable]]:
    """Each engine's batching policy: the simulation's, or an engine's own where its role asks for another
    (one policy object per distinct setting). Prefix caching: the simulation's setting, checked against
    its policy (an error where it has none); each engine then caches with its own policy's block, where
    that policy has a cache. Returns the simulation's policy name and the per-step hooks of the policies
    that listen (SGLang's new-token ratio), by policy object id."""
    name0 = ec.policy or default_policy(profile_name)
    policy = make_policy(name0, ec, kv)
    prefix_block(policy, ec)  # raises where prefix caching is asked of a policy without one
    policies: dict[tuple[str, EngineConfig], BatchPolicy] = {(name0, ec): policy}
    for e in engines:
        eec = e.spec.engine or ec
        name = e.spec.policy or eec.policy or name0
        pol = policies.get((name, eec))
        if pol is None:
            pol = policies[(name, eec)] = make_policy(name, eec, kv)
        e.policy = pol
        e.grows = pol.grows_kv
        block = 0 if pol.prefix_cache is None or ec.prefix_caching is False else prefix_block(pol, eec)
        if block:
            kv.enable_prefix_cache(e, block)
        for mq in e.mqs:
            pol.setup(e, mq)
    decoded = {id(p): p.decoded for p in policies.values() if type(p).decoded is not BatchPolicy.decoded}
    return name0, decoded
