"""The Ray executor: each device's program in a Ray actor, placed by a Ray resource named after the device.

    gimletc run PLAN --executor ray                  # a local Ray cluster, started and stopped for the run
    gimletc run PLAN --executor ray --address HOST:PORT   # an existing cluster

A plan's device `h200x4.h200.0` runs in an actor that asks for one unit of the custom resource
`h200x4.h200.0`, so it lands on the node that offers it: start each node with the devices it
holds, e.g. `ray start --address HOST:PORT --resources '{"h200x4.h200.0": 1}'`. A local cluster
started here offers every device of the plan. The interpreter (the Ray driver) walks the plan as
the local executor does; each device op is a call on its actor. KV caches and activations a device
produces stay in Ray's object store on that device's node (`ray.put` by its actor): the driver
holds only references (`Remote`), and an `exec.send` is a call on the destination's actor that
pulls the value from the source's store into its own (the transfer, actor to actor) and keeps the
copy. Token ids (small) travel with the answers, so the driver can drive decode loops and prompts;
tools run in the driver, on its CPU-lane threads, and get the values they read fetched.

An actor that dies (its node lost, `ray.kill`) surfaces as `ray.exceptions.ActorDiedError` on the
driver's next wait, which becomes a `WorkerLost` naming the device and the op: the run replaces
the actor and replays the request, up to the retry bound (see `LocalRuntime`).

Ray is an optional dependency (`pip install 'gimletc[ray]'`).
"""

from __future__ import annotations

import os
import tempfile
from functools import cache
from typing import Any

from gimletc.ir import Op
from gimletc.runtime.device import DeviceProgram, Outcome, op_from_wire, op_to_wire
from gimletc.runtime.loader import DeviceSpec
from gimletc.runtime.kv import KVCache
from gimletc.runtime.values import Activations, Remote, RunError, WorkerLost, copy_payload, nbytes

__all__ = ["RayCluster", "RayDevice", "fetch"]


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RunError("--executor ray needs Ray (pip install 'gimletc[ray]')") from None
    return ray


def fetch(value: Any, doing: str = "") -> Any:
    """The value behind a `Remote` (pulled from Ray's object store; parts merged); anything else as it is.

    A value whose holder died is lost with it: `WorkerLost` naming the holder's device."""
    if not isinstance(value, Remote):
        return value
    if value.parts:
        return KVCache.merge([fetch(p, doing) for p in value.parts])
    ray = _ray()
    try:
        return ray.get(value.ref)
    except ray.exceptions.ObjectLostError:
        raise WorkerLost(value.device, doing or "reading a value", "its Ray actor died, and the values it held with it") from None


def _keep(value: Any, device: str) -> Any:
    """A device's result as the interpreter sees it: KV caches and activations stay in this actor's
    object store (a `Remote`), token ids and other small values travel with the answer."""
    if isinstance(value, KVCache | Activations):
        layers = tuple(sorted(value.layers)) if isinstance(value, KVCache) else ()
        return Remote(_ray().put(value), "kv" if isinstance(value, KVCache) else "act", nbytes(value), device, layers)
    return value


class _DeviceActor:
    """The actor behind a `RayDevice`: a `DeviceProgram` built from its spec on the actor's node."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.device = spec.device
        self.error: BaseException | None = None
        try:
            self.program: DeviceProgram | None = DeviceProgram(spec)
        except Exception as e:  # noqa: BLE001 - raised by `runners`, where the driver waits for it
            self.program, self.error = None, e

    def runners(self) -> dict[str, str]:
        if self.program is None:
            raise self.error or RunError("the device program did not load")
        return dict(self.program.runners)

    def execute(self, wire: tuple[Any, ...], data: list[Any], ctx: dict[str, Any]) -> Outcome:
        assert self.program is not None
        op = op_from_wire(wire)
        out = self.program.execute(op, [fetch(x, op.name) for x in data], ctx)
        out.values = {k: _keep(v, self.device) for k, v in out.values.items()}
        if out.chunk_kv is not None:
            out.chunk_kv = _keep(out.chunk_kv, self.device)
        return out

    def receive(self, value: Remote, keep: set[int] | None, doing: str) -> Remote:
        """A transfer to this device: pull `value` (its `keep` layers) into fresh memory here."""
        v = fetch(value, doing)
        return _keep(v.copy(keep) if isinstance(v, KVCache) and keep is not None else copy_payload(v), self.device)

    def forget(self) -> None:
        assert self.program is not None
        self.program.forget()

    def pid(self) -> int:
        return os.getpid()


@cache
def _actor_class() -> Any:
    return _ray().remote(_DeviceActor)


class RayDevice:
    """A device program in a Ray actor on the node that offers the device's resource."""

    def __init__(self, spec: DeviceSpec, timeout_s: float = 600.0) -> None:
        ray = _ray()
        self.device, self.timeout_s = spec.device, timeout_s
        self.actor = _actor_class().options(resources={spec.device: 1}, num_cpus=0, max_restarts=0).remote(spec)
        self.runners: dict[str, str] = self._get(self.actor.runners.remote(), "loading its partitions")
        self._ray = ray

    def _get(self, ref: Any, doing: str) -> Any:
        ray = _ray()
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.kill(self.actor)
            raise WorkerLost(self.device, doing, f"its Ray actor gave no answer in {self.timeout_s:g} s (killed)") from None
        except ray.exceptions.RayActorError as e:
            why = "its Ray actor died" + (" (killed)" if "ray.kill" in str(e) else "")
            raise WorkerLost(self.device, doing, why) from None
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise RunError(f"op {doing} on {self.device}: {' '.join(str(e).split())[:300]}") from None

    def execute(self, op: Op, data: list[Any], ctx: dict[str, Any]) -> Outcome:
        return self._get(self.actor.execute.remote(op_to_wire(op), data, ctx), op.name)

    def receive(self, value: Remote, keep: set[int] | None, doing: str) -> Remote:
        return self._get(self.actor.receive.remote(value, keep, doing), doing)

    def forget(self) -> None:
        self._get(self.actor.forget.remote(), "forgetting its KV caches")

    def pid(self) -> int:
        return int(self._get(self.actor.pid.remote(), "telling its pid"))

    def close(self) -> None:
        try:
            _ray().kill(self.actor)
        except Exception:  # noqa: BLE001 - already gone
            pass


class RayCluster:
    """The Ray cluster a run uses: the one this process is connected to, the one at `address`, or a
    local one started here (and stopped by `close`) that offers every device of the plan."""

    def __init__(self, devices: list[str], address: str | None = None, num_cpus: int = 2) -> None:
        ray = _ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.started = False
        if not ray.is_initialized():
            if address:
                try:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
                except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError and others
                    raise RunError(f"cannot connect to the Ray cluster at {address}: {' '.join(str(e).split())[:200]}") from None
            else:
                tmp = tempfile.mkdtemp(prefix="gimletc-ray-")
                ray.init(num_cpus=num_cpus, resources={d: 1 for d in devices}, include_dashboard=False,
                         _temp_dir=tmp, log_to_driver=False, configure_logging=False)
            self.started = True
        have = ray.cluster_resources()
        missing = [d for d in devices if have.get(d, 0) < 1]
        if missing:
            where = address or "this process is connected to"
            raise RunError(
                f"the Ray cluster {where} offers no resource named {missing[0]} (device of the plan); start a node "
                f"for it with `ray start --address ADDR --resources '{{\"{missing[0]}\": 1}}'`"
            )

    def close(self) -> None:
        if self.started:
            _ray().shutdown()
