"""NVIDIA Dynamo 1.6.1: the whole deployment as one `DynamoGraphDeployment` (Kubernetes), its CPU
workers as plain Deployments beside it.

The manifest follows the v1beta1 schema Dynamo 1.6.1 writes itself (dynamo/profiler/utils/config.py:
`apiVersion: nvidia.com/v1beta1`, `spec.components[]` with `name`, `type`, `replicas`, `multinode`,
`podTemplate.spec.containers[]` whose `main` container runs the backend) and its own templates
(dynamo/profiler/templates/dgd/{vllm,sglang}/{agg,disagg}.yaml): a `frontend` component running
`python3 -m dynamo.frontend` (the OpenAI-compatible endpoint, port 8000), and one component per
engine group: `type` worker (aggregated), prefill or decode, running `python3 -m dynamo.vllm` (vLLM
engine arguments, `--disaggregation-mode prefill|decode`, and on the prefill side
`--kv-transfer-config` with NixlConnector as kv_producer, which Dynamo requires there:
dynamo/vllm/args.py) or `python3 -m dynamo.sglang` (SGLang server arguments with
`--disaggregation-transfer-backend nixl`), GPUs as `resources.limits["nvidia.com/gpu"]`, and the
runtime images `nvcr.io/nvidia/ai-dynamo/{vllm,sglang}-runtime:1.6.1`.
"""

from __future__ import annotations

from typing import Any

import yaml

from gimletc.deploy import sglang as sglang_mod
from gimletc.deploy import vllm as vllm_mod
from gimletc.deploy.common import VERSIONS, Launch, Rendered, model_path, pools
from gimletc.deploy.description import CPUWorker, Deployment, EngineGroup, k8s_name
from gimletc.hardware import get_chip

__all__ = ["BACKENDS", "manifest", "render"]

BACKENDS = ("vllm", "sglang")
HF_SECRET = "hf-token-secret"  # as Dynamo's templates: a Secret holding HF_TOKEN for gated checkpoints


def _image(backend: str) -> str:
    return f"nvcr.io/nvidia/ai-dynamo/{backend}-runtime:{VERSIONS['dynamo']}"


def _worker_args(g: EngineGroup, backend: str, notes: list[str]) -> list[str]:
    if backend == "vllm":
        args = ["--model", model_path(g, notes)] + vllm_mod.engine_args(g, notes)
        if g.role == "decode":  # Dynamo's decode workers take no --kv-transfer-config (its templates)
            i = args.index("--kv-transfer-config")
            del args[i:i + 2]
        if g.role in ("prefill", "decode"):
            args += ["--disaggregation-mode", g.role]
        return args
    return ["--model-path", model_path(g, notes), "--host", "0.0.0.0"] + sglang_mod.server_args(g, notes)


def _env(g: EngineGroup, backend: str) -> list[dict[str, str]]:
    env = vllm_mod.env_vars(g) if backend == "vllm" else sglang_mod.env(g)
    return [{"name": k, "value": v} for k, v in env if not k.endswith("VISIBLE_DEVICES")]  # Kubernetes assigns GPUs


def _component(g: EngineGroup, backend: str, notes: list[str], replicas: int = 1) -> dict[str, Any]:
    """The component of a pool of `replicas` engines like `g` (Kubernetes places each replica's pod)."""
    n_nodes = max(1, len(g.nodes))
    gpus = g.parallel.chips // n_nodes
    vendor = get_chip(g.chip).vendor
    resource = "amd.com/gpu" if vendor == "amd" else "nvidia.com/gpu"
    container: dict[str, Any] = {
        "name": "main",
        "image": _image(backend),
        "command": ["python3", "-m", f"dynamo.{backend}"],
        "args": _worker_args(g, backend, notes),
        "envFrom": [{"secretRef": {"name": HF_SECRET}}],
        "resources": {"limits": {resource: str(gpus)}},
    }
    env = _env(g, backend)
    if env:
        container["env"] = env
    comp: dict[str, Any] = {"name": g.pool or g.name, "type": "worker" if g.role == "agg" else g.role,
                            "replicas": replicas}
    if n_nodes > 1:
        comp["multinode"] = {"nodeCount": n_nodes}
    comp["podTemplate"] = {"spec": {"containers": [container]}}
    if vendor == "amd":
        notes.append(f"group {g.name}: Dynamo {VERSIONS['dynamo']} publishes its runtime images for NVIDIA GPUs; "
                     f"{g.chip} needs an image of the same backend built for ROCm")
    return comp


def manifest(d: Deployment, backend: str = "vllm") -> tuple[dict[str, Any], list[str]]:
    """The DynamoGraphDeployment of `d` with `backend` workers, and notes."""
    if backend not in BACKENDS:
        from gimletc.deploy.description import DeployError

        raise DeployError(f"unknown Dynamo backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    notes: list[str] = []
    frontend = {"name": "Frontend", "type": "frontend", "replicas": 1, "podTemplate": {"spec": {"containers": [{
        "name": "main", "image": _image(backend), "command": ["python3"], "args": ["-m", "dynamo.frontend"],
        "envFrom": [{"secretRef": {"name": HF_SECRET}}]}]}}}
    comps = [frontend] + [_component(p[0], backend, notes, sum(g.replicas for g in p)) for p in pools(d)]
    return ({"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment",
             "metadata": {"name": k8s_name(d.name)}, "spec": {"components": comps}}, notes)


def _cpu_manifest(workers: tuple[CPUWorker, ...], name: str) -> str:
    docs = []
    for w in workers:
        labels = {"app.kubernetes.io/name": w.name, "app.kubernetes.io/part-of": k8s_name(name)}
        ops = ", ".join(f"{op} ({kind}, {secs:.3g} s x {runs:g} per request)" for op, kind, secs, runs in w.ops)
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": w.name, "labels": labels, "annotations": {"gimletc.dev/ops": ops}},
                     "spec": {"replicas": w.lanes, "selector": {"matchLabels": labels}, "template": {
                         "metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "main", "image": "REPLACE-WITH-YOUR-TOOL-IMAGE",
                                                  "resources": {"requests": {"cpu": str(w.cpus_per_worker)},
                                                                "limits": {"cpu": str(w.cpus_per_worker)}}}]}}}})
    return yaml.safe_dump_all(docs, sort_keys=False, width=120)


def render(d: Deployment, backend: str = "vllm") -> Rendered:
    r = Rendered()
    doc, notes = manifest(d, backend)
    header = [f"NVIDIA Dynamo {VERSIONS['dynamo']} ({backend} {VERSIONS[backend]} workers): {d.name}, from {d.source}",
              f"kubectl create secret generic {HF_SECRET} --from-literal=HF_TOKEN=...   # gated checkpoints",
              "kubectl apply -f deployment.yaml; then the frontend serves every model on port 8000",
              *[f"note: {n}" for p in pools(d) for n in p[0].notes], *[f"note: {n}" for n in notes]]
    text = "".join(f"# {h}\n" for h in header) + yaml.safe_dump(doc, sort_keys=False, width=120)
    r.files["dynamo/deployment.yaml"] = text
    r.notes += notes
    for comp, g in zip(doc["spec"]["components"][1:], [p[0] for p in pools(d)], strict=True):
        c = comp["podTemplate"]["spec"]["containers"][0]
        r.launches.append(Launch(g.pool or g.name, g.node, tuple((e["name"], e["value"]) for e in c.get("env", [])),
                                 tuple(c["command"] + c["args"])))
    for g in d.groups:
        if g.role != "prefill":
            for call in g.calls:
                r.endpoints[call] = "http://localhost:8000"
    if d.cpu_workers:
        r.files["dynamo/cpu-workers.yaml"] = (
            "# The plan's tools, retrieval and code ops: one Deployment per host, one single-CPU worker per lane of\n"
            "# that host (the plan runs that many CPU ops at once). The image is yours: it runs your tools.\n"
            + _cpu_manifest(d.cpu_workers, d.name))
    return r
