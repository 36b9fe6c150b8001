"""KV-cache memory and admission: each device may fill `mem_fraction` of its memory, the weights
of every model placed on it (its tensor-parallel share) come first, and the rest holds KV caches.

A prefill reserves its prompt's KV cache (and, when its decode runs on the same engine, the
output's too, so an admitted request always completes); a decode on another engine reserves
its own. The KV of a prefill whose decode is elsewhere is freed once it has been sent. Which
request is admitted when is the batching policy's call (`gimletc.sim.batching`); this module
keeps the bytes and says whether a reservation fits.

Policies that grow caches as tokens are made (vLLM, SGLang) reserve a prompt's cache when it is
admitted and one token per running sequence per decode iteration (`grow`); when the next
iteration's tokens do not fit, the policy preempts (`gimletc.sim.policies`). Memory is counted
in bytes, token by token: the engines' 16- or 32-token pages are not modelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gimletc.hardware.schema import Chip
from gimletc.sim.config import SimulationError
from gimletc.sim.state import Engine, Job, Req

__all__ = ["KVMemory"]


class KVMemory:
    """Per-device KV-cache room (`cap`, after weights) and reservations (`used`), in bytes."""

    def __init__(self, engines: Sequence[Engine], dev_ids: Sequence[str], dev_chip: Sequence[Chip],
                 weights: Sequence[float], names: Sequence[set[str]], mem_fraction: float):
        self.engines = engines
        self.cap = [0.0] * len(dev_ids)
        self.used = [0.0] * len(dev_ids)
        for d, dev in enumerate(dev_ids):
            cap = dev_chip[d].capacity_bytes * mem_fraction
            self.cap[d] = cap - weights[d]
            if self.cap[d] <= 0:
                raise SimulationError(
                    f"device {dev}: weights of {', '.join(sorted(names[d]))} take {weights[d] / 1e9:.1f} GB of the "
                    f"{cap / 1e9:.1f} GB usable ({mem_fraction:.0%} of a {dev_chip[d].name}); "
                    "no room for a KV cache")
        # Called for every engine near one that freed memory (the engines set it): it may start now.
        self.wake: Callable[[Engine, float], None] = lambda eng, t: None

    def reserve(self, eng: Engine, need: float, what: str) -> bool:
        """Reserve `need` bytes of KV cache, split evenly over the engine's devices."""
        per = need / eng.n
        used, cap = self.used, self.cap
        if self.fits(eng, need):
            for d in eng.devs:
                used[d] += per
            return True
        room = min(cap[d] for d in eng.devs)
        if per > room:
            raise SimulationError(
                f"{what} needs {need / 1e9:.2f} GB of KV cache on engine {eng.spec.id}, which has "
                f"{room * eng.n / 1e9:.2f} GB left after weights; it can never be admitted")
        return False

    def room(self, eng: Engine) -> float:
        """Bytes the engine could still reserve (its fullest device's room, times its devices)."""
        cap, used = self.cap, self.used
        devs = eng.devs
        room = cap[devs[0]] - used[devs[0]]
        for d in devs:
            r = cap[d] - used[d]
            if r < room:
                room = r
        return room * eng.n

    def fits(self, eng: Engine, need: float) -> bool:
        used, cap = self.used, self.cap
        per = need / eng.n
        for d in eng.devs:
            if used[d] + per > cap[d] + 1e-6:
                return False
        return True

    def grow(self, eng: Engine, amount: float) -> None:
        """Caches grew by `amount` bytes as tokens were made (checked by the policy beforehand)."""
        per = amount / eng.n
        used = self.used
        for d in eng.devs:
            used[d] += per

    def free(self, eng: Engine, amount: float) -> None:
        per = amount / eng.n
        for d in eng.devs:
            v = self.used[d] - per
            self.used[d] = v if v > 1e-6 else 0.0

    def release(self, eng: Engine, amount: float, t: float) -> None:
        """Free `amount` bytes and wake the engines that share a device with `eng`."""
        self.free(eng, amount)
        for o in eng.near:
            self.wake(o, t)

    def admit_prefill(self, eng: Engine, job: Job, what: str) -> bool:
        """Reserve a prefill's KV cache for its request, held until its last user is done."""
        if not self.reserve(eng, job.kv, what):
            return False
        req = job.req
        req.kv_hold[job.task] = (eng.idx, job.kv)
        req.kv_left[job.task] = req.tpl.kv_users[job.task]
        return True

    def user_done(self, req: Req, head: int, t: float, kick: bool = True) -> None:
        """One user of prefill `head`'s KV cache (a transfer, or a decode with its own) is done with it."""
        left = req.kv_left.get(head, 0) - 1
        req.kv_left[head] = left
        if left <= 0:
            hold = req.kv_hold.pop(head, None)
            if hold is not None:
                if kick:
                    self.release(self.engines[hold[0]], hold[1], t)
                else:
                    self.free(self.engines[hold[0]], hold[1])

    def capacity_bytes(self, eng: Engine) -> float:
        return sum(self.cap[d] for d in eng.devs)
