"""vLLM 0.31.0: one `vllm serve` per engine group.

Flags (vllm/engine/arg_utils.py `EngineArgs.add_cli_args`; the config classes in vllm/config/):
`vllm serve MODEL` (vllm/entrypoints/cli/serve.py), `--served-model-name`, `--host`, `--port`
(vllm/entrypoints/launchers/cli_args.py), `--tensor-parallel-size`, `--pipeline-parallel-size`,
`--enable-expert-parallel`, `--quantization`, `--kv-cache-dtype`, `--gpu-memory-utilization`,
`--max-num-seqs`, `--max-num-batched-tokens`, `--enable-chunked-prefill` / `--no-enable-chunked-prefill`
(a BooleanOptionalAction), `--speculative-config` (JSON: `method` "draft_model", `model`,
`num_speculative_tokens`; vllm/config/speculative.py) and `--kv-transfer-config` (JSON:
`kv_connector` "NixlConnector", `kv_role` kv_producer | kv_consumer; vllm/config/kv_transfer.py).
Environment: `VLLM_PP_LAYER_PARTITION` (vllm/envs.py: layers per pipeline stage) and
`VLLM_NIXL_SIDE_CHANNEL_PORT` (the NIXL handshake port, one per engine on a host).

The batching knobs are passed explicitly, as the simulator resolved them for vLLM's policy (whose
defaults follow vLLM 0.11; 0.31 changed some, e.g. 16384 batched tokens on GPUs of 160 GiB or more):
the engine then runs the knobs the prediction assumed. vLLM ships no prefill/decode router; a
disaggregated pair needs one in front (the toy proxy in vLLM's repository,
tests/v1/kv_connector/nixl_integration/toy_proxy_server.py, or `--engine dynamo`).
"""

from __future__ import annotations

from gimletc.deploy.common import (
    VERSIONS, Rendered, add_server, dtype_args, compact_json, gpu_env, host_of, model_path, pool_of, pools,
    port_of, router_port, served_name,
)
from gimletc.deploy.description import Deployment, EngineGroup, hf_repo

__all__ = ["engine_args", "env", "env_vars", "render"]

NIXL_SIDE_CHANNEL_PORT = 5600  # vLLM's default; engines sharing a host take the next ones


def engine_args(g: EngineGroup, notes: list[str]) -> list[str]:
    """vLLM engine arguments of a group (shared by `vllm serve` and Dynamo's `dynamo.vllm`), without
    the model, host and port."""
    p = g.parallel
    args = ["--served-model-name", served_name(g), "--tensor-parallel-size", str(p.tp)]
    if p.pp > 1:
        args += ["--pipeline-parallel-size", str(p.pp)]
    if p.ep > 1:
        args += ["--enable-expert-parallel"]
    args += dtype_args("vllm", g, notes)
    args += ["--gpu-memory-utilization", f"{g.mem_fraction:g}"]
    b = g.batching
    if b is not None:
        args += ["--max-num-seqs", str(b.max_batch), "--max-num-batched-tokens", str(b.max_prefill_tokens),
                 "--enable-chunked-prefill" if b.chunked else "--no-enable-chunked-prefill"]
    s = g.speculation
    if s is not None:
        draft = hf_repo(s.draft_model) or s.draft_model
        args += ["--speculative-config",
                 compact_json({"method": "draft_model", "model": draft, "num_speculative_tokens": s.k})]
        _check_draft(g, notes)
    if g.role in ("prefill", "decode"):
        role = "kv_producer" if g.role == "prefill" else "kv_consumer"
        args += ["--kv-transfer-config", compact_json({"kv_connector": "NixlConnector", "kv_role": role})]
    return args


def _check_draft(g: EngineGroup, notes: list[str]) -> None:
    """vLLM's draft_model method proposes token ids of the draft's vocabulary to the target."""
    from gimletc.models import get_model

    s = g.speculation
    assert s is not None
    target, draft = get_model(g.model), get_model(s.draft_model)
    if target.vocab != draft.vocab:
        notes.append(f"group {g.name}: draft {s.draft_model} has a vocabulary of {draft.vocab:,} tokens and target "
                     f"{g.base_model} one of {target.vocab:,}; a draft model must share the target's tokenizer, so "
                     "pick a draft that does before serving this")


def env_vars(g: EngineGroup) -> list[tuple[str, str]]:
    """The group's devices and, for an uneven pipeline, its layers per stage."""
    out = gpu_env(g)
    if g.parallel.layer_split:
        out.append(("VLLM_PP_LAYER_PARTITION", ",".join(map(str, g.parallel.layer_split))))
    return out


def env(d: Deployment, g: EngineGroup) -> list[tuple[str, str]]:
    """`env_vars`, and a NIXL handshake port of its own for each disaggregated engine on a host."""
    out = env_vars(g)
    if g.role in ("prefill", "decode"):
        same_host = [o for o in d.groups if o.role in ("prefill", "decode") and o.node == g.node]
        out.append(("VLLM_NIXL_SIDE_CHANNEL_PORT", str(NIXL_SIDE_CHANNEL_PORT + same_host.index(g))))
    return out


def render(d: Deployment) -> Rendered:
    r = Rendered()
    for g in d.groups:
        notes: list[str] = []
        argv = ["vllm", "serve", model_path(g, notes), "--host", "0.0.0.0", "--port", str(port_of(d, g))]
        argv += engine_args(g, notes)
        where = f"node {g.node}" if g.node else f"nodes of {', '.join(g.devices)} (spans nodes: start vLLM's Ray cluster over them and run this on its head)"
        add_server(r, g, argv, env(d, g), f"vLLM {VERSIONS['vllm']}", where, "vllm", notes)
    for pool in pools(d):
        g = pool[0]
        if g.role == "agg" and len(pool) == 1:
            for c in g.calls:
                r.endpoints[c] = f"http://{host_of(g)}:{port_of(d, g)}"
        elif g.role == "agg":
            for c in g.calls:
                r.endpoints[c] = f"http://localhost:{router_port(d, g)}"
            r.notes.append(f"calls {', '.join(g.calls)}: {len(pool)} vLLM servers of pool {g.pool} ("
                           + ", ".join(f"{host_of(x)}:{port_of(d, x)}" for x in pool) + "); vLLM ships no load balancer, "
                           f"so run one in front on port {router_port(d, g)}, or deploy with --engine dynamo")
        elif g.role == "decode":
            pre = pool_of(d, g.peer) if g.peer is not None else []
            for c in g.calls:
                r.endpoints[c] = f"http://localhost:{router_port(d, g)}"
            r.notes.append(f"calls {', '.join(g.calls)}: prefill {', '.join(x.name for x in pre)} and decode "
                           f"{', '.join(x.name for x in pool)} are separate vLLM servers "
                           f"joined by NIXL; vLLM ships no router, so run one in front on port {router_port(d, g)} (the toy proxy of "
                           "vLLM's repository, tests/v1/kv_connector/nixl_integration/toy_proxy_server.py, or deploy "
                           "with --engine dynamo, whose frontend routes disaggregated requests)")
    return r
