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
    VERSIONS, Launch, Rendered, bash_script, gpu_env, host_of, kv_cache_dtype, model_path, port_of, quantization,
    router_port, served_name,
)
from gimletc.deploy.description import Deployment, EngineGroup, hf_repo

__all__ = ["BOOTSTRAP_PORT", "render", "server_args"]

BOOTSTRAP_PORT = 8998  # ServerArgs.disaggregation_bootstrap_port's default


def server_args(g: EngineGroup, notes: list[str]) -> list[str]:
    """SGLang server arguments of a group (shared by `sglang.launch_server` and Dynamo's
    `dynamo.sglang`), without the model, host and port."""
    p = g.parallel
    args = ["--served-model-name", served_name(g), "--tp-size", str(p.tp)]
    if p.pp > 1:
        args += ["--pp-size", str(p.pp)]
    if p.ep > 1:
        args += ["--ep-size", str(p.ep)]
    q = quantization("sglang", g, notes)
    if q:
        args += ["--quantization", q]
    kv = kv_cache_dtype("sglang", g, notes)
    if kv:
        args += ["--kv-cache-dtype", kv]
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
            args += ["--disaggregation-bootstrap-port", str(BOOTSTRAP_PORT)]
    return args


def env(g: EngineGroup) -> list[tuple[str, str]]:
    out = gpu_env(g)
    if g.parallel.layer_split:
        out.append(("SGLANG_PP_LAYER_PARTITION", ",".join(map(str, g.parallel.layer_split))))
    return out


def router(d: Deployment, pre: EngineGroup, dec: EngineGroup) -> Launch:
    """sglang-router in front of a prefill/decode pair, on the prefill's node."""
    return Launch(f"router-{dec.name}", pre.node, (), (
        "python3", "-m", "sglang_router.launch_router", "--pd-disaggregation",
        "--prefill", f"http://{host_of(pre)}:{port_of(d, pre)}", str(BOOTSTRAP_PORT),
        "--decode", f"http://{host_of(dec)}:{port_of(d, dec)}", "--host", "0.0.0.0", "--port", str(router_port(d, dec))))


def render(d: Deployment) -> Rendered:
    r = Rendered()
    for g in d.groups:
        notes: list[str] = []
        argv = ["python3", "-m", "sglang.launch_server", "--model-path", model_path(g, notes), "--host", "0.0.0.0",
                "--port", str(port_of(d, g))]
        argv += server_args(g, notes)
        launch = Launch(g.name, g.node, tuple(env(g)), tuple(argv))
        r.launches.append(launch)
        where = f"node {g.node}" if g.node else f"the nodes of {', '.join(g.devices)} (spans nodes: add --nnodes, --node-rank and --dist-init-addr per node)"
        header = [f"SGLang {VERSIONS['sglang']}: {g.name} ({g.role}) serving {g.base_model} for call(s) {', '.join(g.calls)}",
                  f"run on {where}; {g.parallel.chips}x {g.chip}", *[f"note: {n}" for n in (*g.notes, *notes)]]
        path = f"sglang/{g.name}.sh"
        r.files[path] = bash_script(launch, header)
        r.executables.add(path)
        r.notes += notes
        if g.role == "agg":
            for c in g.calls:
                r.endpoints[c] = f"http://{host_of(g)}:{port_of(d, g)}"
        elif g.role == "decode" and g.peer is not None:
            pre = d.group(g.peer)
            rl = router(d, pre, g)
            r.launches.append(rl)
            path = f"sglang/{rl.group}.sh"
            r.files[path] = bash_script(rl, [
                f"sglang-router {VERSIONS['sglang-router']}: routes calls {', '.join(g.calls)} through prefill "
                f"{pre.name} then decode {g.name} (KV cache over NIXL)", f"run on node {pre.node or 'any'}; "
                "install with `pip install sglang-router`"])
            r.executables.add(path)
            for c in g.calls:
                r.endpoints[c] = f"http://{host_of(pre)}:{router_port(d, g)}"
    return r
