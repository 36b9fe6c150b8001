"""SGLang 0.5.21: one `python3 -m sglang.launch_server` per engine group, and sglang-router 0.3.2 in
front of each prefill/decode pair.

Flags are `ServerArgs` fields, each `--field-name` (sglang/srt/server_args.py,
`add_cli_args_from_dataclass` in sglang/srt/arg_groups/arg_utils.py; the fields in
sglang/srt/arg_groups/fields/): `--model-path`, `--served-model-name`, `--host`, `--port`
(serving.py), `--tp-size`, `--pp-size`, `--ep-size` (parallel.py), `--quantization`,
`--kv-cache-dtype` (model.py), `--mem-fraction-static`, `--max-running-requests`,
`--max-prefill-tokens`, `--chunked-prefill-size` (-1 disables chunking; schedule.py),
`--speculative-algorithm STANDALONE` (a separate draft model) with `--speculative-draft-model-path`,
`--speculative-num-steps`, `--speculative-eagle-topk 1` and `--speculative-num-draft-tokens`
(steps + 1 when topk is 1; spec.py and speculative_hook.py), `--disaggregation-mode`,
`--disaggregation-transfer-backend nixl`, `--disaggregation-bootstrap-port` (disagg.py).
Environment: `SGLANG_PP_LAYER_PARTITION` (sglang/srt/distributed/utils.py: layers per stage).
The router: `python3 -m sglang_router.launch_router --pd-disaggregation --prefill URL BOOTSTRAP_PORT
--decode URL --host --port` (sglang_router/router_args.py).

The batching knobs are passed explicitly as the simulator resolved them for SGLang's policy
(max_running_requests also because SGLang lowers it to 48 when speculating unless it is given).
"""

from __future__ import annotations

from gimletc.deploy.common import (
    VERSIONS, Launch, Rendered, add_server, dtype_args, bash_script, gpu_env, host_of, model_path, pool_of, pools, port_of,
    router_port, served_name,
)
from gimletc.deploy.description import Deployment, EngineGroup, hf_repo

__all__ = ["BOOTSTRAP_PORT", "bootstrap_port", "render", "server_args"]

BOOTSTRAP_PORT = 8998  # ServerArgs.disaggregation_bootstrap_port's default


def server_args(g: EngineGroup, notes: list[str], bootstrap_port: int = BOOTSTRAP_PORT) -> list[str]:
    """SGLang server arguments of a group (shared by `sglang.launch_server` and Dynamo's
    `dynamo.sglang`), without the model, host and port; a prefill engine announces `bootstrap_port`."""
    p = g.parallel
    args = ["--served-model-name", served_name(g), "--tp-size", str(p.tp)]
    if p.pp > 1:
        args += ["--pp-size", str(p.pp)]
    if p.ep > 1:
        args += ["--ep-size", str(p.ep)]
    args += dtype_args("sglang", g, notes)
    args += ["--mem-fraction-static", f"{g.mem_fraction:g}"]
    b = g.batching
    if b is not None:
        args += ["--max-running-requests", str(b.max_batch), "--max-prefill-tokens", str(b.max_prefill_tokens),
                 "--chunked-prefill-size", str(b.chunk_tokens if b.chunked else -1)]
    s = g.speculation
    if s is not None:
        args += ["--speculative-algorithm", "STANDALONE",
                 "--speculative-draft-model-path", hf_repo(s.draft_model) or s.draft_model,
                 "--speculative-num-steps", str(s.k), "--speculative-eagle-topk", "1",
                 "--speculative-num-draft-tokens", str(s.k + 1)]
    if g.role in ("prefill", "decode"):
        args += ["--disaggregation-mode", g.role, "--disaggregation-transfer-backend", "nixl"]
        if g.role == "prefill":
            args += ["--disaggregation-bootstrap-port", str(bootstrap_port)]
    return args


def env(g: EngineGroup) -> list[tuple[str, str]]:
    out = gpu_env(g)
    if g.parallel.layer_split:
        out.append(("SGLANG_PP_LAYER_PARTITION", ",".join(map(str, g.parallel.layer_split))))
    return out


def bootstrap_port(d: Deployment, g: EngineGroup) -> int:
    """A prefill engine's bootstrap port: the default, then the next ones for further prefill engines on its
    host (each listens on its own)."""
    same_host = [o for o in d.groups if o.role == "prefill" and o.node == g.node]
    return BOOTSTRAP_PORT + same_host.index(g)


def router(d: Deployment, pre: list[EngineGroup], dec: list[EngineGroup]) -> Launch:
    """sglang-router in front of prefill/decode pools (each server named once), on the first prefill's node."""
    argv = ["python3", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
    for p in pre:
        argv += ["--prefill", f"http://{host_of(p)}:{port_of(d, p)}", str(bootstrap_port(d, p))]
    for g in dec:
        argv += ["--decode", f"http://{host_of(g)}:{port_of(d, g)}"]
    argv += ["--host", "0.0.0.0", "--port", str(router_port(d, dec[0]))]
    return Launch(f"router-{dec[0].pool or dec[0].name}", pre[0].node, (), tuple(argv))


def balancer(d: Deployment, pool: list[EngineGroup]) -> Launch:
    """sglang-router in front of an aggregated pool's servers (its regular mode: --worker-urls)."""
    g = pool[0]
    return Launch(f"router-{g.pool or g.name}", g.node, (), (
        "python3", "-m", "sglang_router.launch_router", "--worker-urls",
        *[f"http://{host_of(x)}:{port_of(d, x)}" for x in pool], "--host", "0.0.0.0", "--port", str(router_port(d, g))))


def render(d: Deployment) -> Rendered:
    r = Rendered()
    for g in d.groups:
        notes: list[str] = []
        argv = ["python3", "-m", "sglang.launch_server", "--model-path", model_path(g, notes), "--host", "0.0.0.0",
                "--port", str(port_of(d, g))]
        argv += server_args(g, notes, bootstrap_port(d, g) if g.role == "prefill" else BOOTSTRAP_PORT)
        where = f"node {g.node}" if g.node else f"the nodes of {', '.join(g.devices)} (spans nodes: add --nnodes, --node-rank and --dist-init-addr per node)"
        add_server(r, g, argv, env(g), f"SGLang {VERSIONS['sglang']}", where, "sglang", notes)
    for pool in pools(d):
        g = pool[0]
        if g.role == "agg" and len(pool) == 1:
            for c in g.calls:
                r.endpoints[c] = f"http://{host_of(g)}:{port_of(d, g)}"
        elif g.role == "agg":
            rl = balancer(d, pool)
            _router_script(r, rl, [f"sglang-router {VERSIONS['sglang-router']}: balances calls {', '.join(g.calls)} over "
                                   f"the {len(pool)} servers of pool {g.pool}", f"run on node {g.node or 'any'}; "
                                   "install with `pip install sglang-router`"])
            for c in g.calls:
                r.endpoints[c] = f"http://{host_of(g)}:{router_port(d, g)}"
        elif g.role == "decode" and g.peer is not None:
            pre = pool_of(d, g.peer)
            rl = router(d, pre, pool)
            _router_script(r, rl, [
                f"sglang-router {VERSIONS['sglang-router']}: routes calls {', '.join(g.calls)} through prefill "
                f"{', '.join(x.name for x in pre)} then decode {', '.join(x.name for x in pool)} (KV cache over NIXL)",
                f"run on node {pre[0].node or 'any'}; install with `pip install sglang-router`"])
            for c in g.calls:
                r.endpoints[c] = f"http://{host_of(pre[0])}:{router_port(d, g)}"
    return r


def _router_script(r: Rendered, rl: Launch, header: list[str]) -> None:
    r.launches.append(rl)
    path = f"sglang/{rl.group}.sh"
    r.files[path] = bash_script(rl, header)
    r.executables.add(path)
