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

Prefix caching (`PrefixCache`): an engine keeps the KV of the prompts it has prefilled, as vLLM's
automatic prefix caching, SGLang's radix cache and TensorRT-LLM's block reuse do. A prompt is a
chain of segments (its system prompt, then its values, as the compiler's `kv-reuse` pass records
them; `gimletc.sim.template`), and the cache a tree of them per model. A prompt that starts with a
cached chain prefills only the rest: whole blocks of the engine (`PREFIX_BLOCK`), never its last
token. A finished prefill's new segments move from its request's reservation into the tree; its
request holds (pins) its chain until it frees its KV cache, then the segments stay cached, unpinned.
Unpinned segments count as free room: a reservation that needs their bytes evicts them, least
recently used leaves first (a segment goes only after the segments that extend it). Hits, misses,
evictions and the prompt tokens not prefilled again are counted per engine.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from gimletc.hardware.schema import Chip
from gimletc.sim.config import SimulationError
from gimletc.sim.state import Engine, Job, ModelQueue, Req
from gimletc.sim.template import Tail

__all__ = ["KEY_SPAN", "KVMemory", "PrefixCache", "PrefixNode"]

# A value segment's key in a template is the task that made it; a request's own key is that plus its id
# times KEY_SPAN (a template has fewer tasks), so requests never share a value and keys stay plain ints.
KEY_SPAN = 1 << 32


class PrefixNode:
    """One cached prompt segment: the KV of tokens (parent's end, end] of the chain leading to it."""

    __slots__ = ("key", "parent", "children", "end", "bytes", "refs", "last", "alive")

    def __init__(self, key: Any, parent: PrefixNode | None, end: int, nbytes: float):
        self.key, self.parent, self.end, self.bytes = key, parent, end, nbytes
        self.children: dict[Any, PrefixNode] | None = None  # made when the first child comes
        self.refs = 0  # requests holding it (a chain through it)
        self.last = 0  # when it was last used (a counter: least recently used goes first)
        self.alive = True


class PrefixCache:
    """One engine's cached prompt prefixes: a tree of segments per model, and its counters."""

    def __init__(self, eng: Engine, block: int):
        self.eng, self.block = eng, block
        self.roots: dict[int, PrefixNode] = {}  # per model queue (id)
        self.heap: list[tuple[int, int, PrefixNode]] = []  # (last use, tie, node): candidate leaves to evict
        self.lookups = 0
        self.hits = 0
        self.hit_tokens = 0  # prompt tokens served from cache: prefill not done again
        self.evictions = 0
        self.evicted_tokens = 0
        self.inserted = 0
        self.version = 0  # changes whenever a node joins or leaves the tree (a lookup may then differ)

    def root(self, mq: ModelQueue) -> PrefixNode:
        r = mq.prefix_root
        if r is None:
            r = mq.prefix_root = PrefixNode(None, None, 0, 0.0)
            r.refs = 1  # the root is never evicted
        return r

    def match(self, mq: ModelQueue, chain: tuple, koff: int, tokens: int) -> tuple[PrefixNode | None, int]:
        """The deepest cached node of `chain` (value keys offset by `koff`) and the prompt tokens it saves
        (whole blocks, never the last token of a `tokens`-token prompt); (None, 0) when nothing usable is
        cached."""
        node = mq.prefix_root
        if node is None:
            return None, 0
        found: PrefixNode | None = None
        for key, end in chain:
            ch = node.children
            if ch is None or key.__class__ is Tail:
                break
            nxt = ch.get(key if key.__class__ is str else key + koff)
            if nxt is None or nxt.end != end:
                break
            node = found = nxt
        if found is None:
            return None, 0
        usable = min(found.end, tokens - 1)
        b = self.block
        hit = usable // b * b if b > 1 else usable
        return (found, hit) if hit > 0 else (None, 0)


def _evictable(entry: tuple) -> bool:
    n = entry[2]
    if n.__class__ is tuple:
        return True  # a prompt's own tail: nobody else's prompt shares it, it is never held again
    return n.alive and n.refs == 0 and not n.children and n.last == entry[0]


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
        self.ev = [0.0] * len(dev_ids)  # bytes of unpinned cached prefixes (evictable) per device
        # Per engine, the device whose room decides `fits` for all of them (-1: each is checked): an engine alone on
        # devices of equal room reserves, grows, caches and frees the same on each, so they stay equal.
        self.fit_at = [e.devs[0] if e.alone and len({self.cap[d] for d in e.devs}) == 1 else -1
                       for e in engines]
        self.caches: list[PrefixCache | None] = [None] * len(engines)
        self.grow_at = [-1] * len(engines)  # per engine: -1 no prefix cache, else see `enable_prefix_cache`
        self._tick = itertools.count(1)
        self._tie = itertools.count(1)
        # Called for every engine near one that freed memory (the engines set it): it may start now.
        self.wake: Callable[[Engine, float], None] = lambda eng, t: None

    # ---- prefix caches ------------------------------------------------------------------
    # Every cached node's bytes are in `used` on its engine's devices; an unpinned node's also in `ev`.
    def enable_prefix_cache(self, eng: Engine, block: int) -> None:
        """`eng` keeps a prefix cache of `block`-token blocks."""
        self.caches[eng.idx] = PrefixCache(eng, block)
        # Where a decode's growth is checked for evictions (`grow`): an engine alone on its devices holds the
        # same on each, so one of them; one sharing a device, every time.
        self.grow_at[eng.idx] = eng.devs[0] if len(eng.near) == 1 else -2

    def kv_bytes(self, mq: ModelQueue, tokens: int) -> float:
        """KV bytes of one sequence of `tokens` tokens of `mq`'s model (memoised: prompts' segment ends recur)."""
        v = mq.kvb.get(tokens)
        if v is None:
            v = mq.kvb[tokens] = mq.cost.kv_bytes(tokens, 1) if tokens > 0 else 0.0
        return v

    def _ev(self, eng: Engine, node: PrefixNode, sign: float) -> None:
        per = sign * node.bytes / eng.n
        ev = self.ev
        for d in eng.devs:
            ev[d] += per

    def _offer(self, cache: PrefixCache, node: PrefixNode) -> None:
        """Offer an unpinned leaf for eviction."""
        if node.refs == 0 and not node.children and node.alive and node.parent is not None:
            heapq.heappush(cache.heap, (node.last, next(self._tie), node))

    def pin(self, cache: PrefixCache, node: PrefixNode) -> None:
        """A request holds the chain ending at `node` and uses it now."""
        now = next(self._tick)
        n = node
        while n.parent is not None:
            if n.refs == 0:
                self._ev(cache.eng, n, -1.0)
            n.refs += 1
            n.last = now
            n = n.parent

    def unpin(self, cache: PrefixCache, node: PrefixNode) -> None:
        """A request no longer holds the chain ending at `node`: unheld segments become evictable."""
        n = node
        while n.parent is not None:
            n.refs -= 1
            if n.refs == 0:
                self._ev(cache.eng, n, 1.0)
                self._offer(cache, n)
            n = n.parent

    def insert(self, job: Job, hold: list) -> None:
        """Prefill `job` (its prompt's chain `job.prefix`, value keys offset by `job.koff`, prefilled in `job.mq`)
        is done on engine `hold[0]`: its segments not cached yet join the tree, their bytes moving out of `hold`
        ([engine, bytes, held node, ...]), and the request holds its whole chain until it frees its KV cache."""
        cache = self.caches[hold[0]]
        chain = job.prefix
        if cache is None or not chain:
            return
        mq = job.mq
        tokens = job.tokens
        key, end = chain[0]
        if key.__class__ is Tail:  # nothing in it another prompt can share (most prompts): its tail alone
            if end <= tokens:
                nb = mq.kvb.get(end)
                if nb is None:
                    nb = self.kv_bytes(mq, end)
                if nb <= hold[1] + 1e-6:
                    hold[3], hold[4], hold[5] = nb, (nb, end, key.segs), next(self._tick)
                    cache.inserted += key.segs
            return
        koff = job.koff
        node = base = cache.root(mq)
        prev = 0
        now = 0
        for key, end in chain:
            if end > tokens:
                break
            if key.__class__ is Tail:  # the prompt's own tail: cached as one piece, outside the tree (nobody shares it)
                kvb = mq.kvb
                nb = kvb.get(end)
                if nb is None:
                    nb = self.kv_bytes(mq, end)
                if prev:
                    nb -= kvb.get(prev) or self.kv_bytes(mq, prev)
                if nb <= hold[1] + 1e-6:
                    hold[3], hold[4], hold[5] = nb, (nb, end - prev, key.segs), next(self._tick)
                    cache.inserted += key.segs  # counted as the segments it merges
                break
            if key.__class__ is not str:
                key += koff
            ch = node.children
            nxt = ch.get(key) if ch is not None else None
            if nxt is None:
                nb = self.kv_bytes(mq, end) - self.kv_bytes(mq, prev)
                if nb > hold[1] + 1e-6:
                    break
                nxt = PrefixNode(key, node, end, nb)
                if ch is None:
                    ch = node.children = {}
                ch[key] = nxt
                hold[1] -= nb  # still used: the tree holds the bytes now, held by this request
                nxt.refs = 1
                nxt.last = now = now or next(self._tick)
                cache.inserted += 1
                cache.version += 1
            elif nxt.end != end:
                break  # the same value at another length (a request's own token count): not shared
            elif node is base:
                base = nxt
            node = nxt
            prev = end
        if node.parent is None or node is hold[2]:
            return
        if base.parent is not None:
            self.pin(cache, base)  # the part that was cached already (new nodes are held from the start)
        if hold[2] is not None:
            self.unpin(cache, hold[2])
        hold[2] = node

    def drop(self, hold: list, t: float | None = None) -> None:
        """Free a request's hold on a prefill's KV cache ([engine, bytes, held node, its tail's bytes,
        its tail as evicted (bytes, tokens, segments), last use]); with `t`, wake the engines sharing its devices.
        What the prefix cache keeps stays, unpinned."""
        eng = self.engines[hold[0]]
        freed = hold[1]
        cache = self.caches[hold[0]]
        if cache is not None:
            if hold[2] is not None:
                self.unpin(cache, hold[2])
                hold[2] = None
            tail = hold[3]
            if tail:
                freed -= tail
                per = tail / eng.n
                ev = self.ev
                for d in eng.devs:
                    ev[d] += per
                heapq.heappush(cache.heap, (hold[5], next(self._tie), hold[4]))
                hold[3] = 0.0
        if t is None:
            self.free(eng, freed)
        else:
            self.release(eng, freed, t)

    def _evict(self, eng: Engine, per: float) -> None:
        """Evict unpinned cached prefixes, least recently used leaves first, from the engines sharing a
        device with `eng`, until `per` more bytes fit on each of its devices."""
        used, cap, ev = self.used, self.cap, self.ev
        if len(eng.near) == 1:  # its devices are its own: they hold the same, and only its cache is there
            d = eng.devs[0]
            limit = cap[d] + 1e-6 - per
            cache = self.caches[eng.idx]
            if cache is None:
                return
            h = cache.heap
            pop = heapq.heappop
            while used[d] > limit:
                while h:
                    e = h[0]
                    n = e[2]
                    if n.__class__ is tuple or (n.alive and n.refs == 0 and not n.children and n.last == e[0]):
                        break  # `_evictable`, inline
                    pop(h)
                else:
                    return
                n = pop(h)[2]
                if n.__class__ is tuple:  # a prompt's own tail (`_evict_one`, inline: most evictions are tails)
                    per_dev = n[0] / eng.n
                    for d2 in eng.devs:
                        used[d2] -= per_dev
                        ev[d2] -= per_dev
                    cache.evictions += n[2]
                    cache.evicted_tokens += n[1]
                else:
                    self._evict_one(cache, n)
            return
        devs = eng.devs
        while True:
            for d in devs:
                if used[d] + per > cap[d] + 1e-6:
                    break
            else:
                return  # it fits
            best: tuple | None = None
            owner: PrefixCache | None = None
            for o in eng.near:
                c = self.caches[o.idx]
                if c is None:
                    continue
                h = c.heap
                while h and not _evictable(h[0]):
                    heapq.heappop(h)
                if h and (best is None or h[0] < best):  # (last use, unique tie, ...): never compares nodes
                    best, owner = h[0], c
            if best is None or owner is None:
                return
            heapq.heappop(owner.heap)
            self._evict_one(owner, best[2])

    def _evict_one(self, owner: PrefixCache, node: PrefixNode | tuple) -> None:
        """Evict a cached leaf (taken off `owner`'s heap): a node of the tree, or a prompt's own tail."""
        used, ev = self.used, self.ev
        if node.__class__ is tuple:  # a prompt's own tail: (bytes, tokens, segments)
            per_dev = node[0] / owner.eng.n
            for d in owner.eng.devs:
                used[d] -= per_dev
                ev[d] -= per_dev
            owner.evictions += node[2]  # the segments it merges, evicted together
            owner.evicted_tokens += node[1]
            return
        parent = node.parent
        assert parent is not None
        node.alive = False
        del parent.children[node.key]  # type: ignore[union-attr]
        per_dev = node.bytes / owner.eng.n
        for d in owner.eng.devs:
            used[d] -= per_dev
            ev[d] -= per_dev
        owner.evictions += 1
        owner.evicted_tokens += node.end - parent.end
        owner.version += 1
        self._offer(owner, parent)

    def reserve(self, eng: Engine, need: float, what: str) -> bool:
        """Reserve `need` bytes of KV cache, split evenly over the engine's devices (evicting unpinned
        cached prefixes where their room is needed)."""
        per = need / eng.n
        used, cap = self.used, self.cap
        if self.fits(eng, need):
            if self.caches[eng.idx] is not None:
                d0 = eng.devs[0]  # an engine alone on its devices holds the same on each
                if len(eng.near) > 1 or used[d0] + per > cap[d0] + 1e-6:
                    self._evict(eng, per)
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
        """Bytes the engine could still reserve (its fullest device's room, unpinned cached prefixes
        counted as room, times its devices)."""
        cap, used, ev = self.cap, self.used, self.ev
        devs = eng.devs
        d0 = devs[0]
        room = cap[d0] - used[d0] + ev[d0]
        for d in devs:
            r = cap[d] - used[d] + ev[d]
            if r < room:
                room = r
        return room * eng.n

    def fits(self, eng: Engine, need: float) -> bool:
        used, cap, ev = self.used, self.cap, self.ev
        per = need / eng.n
        d0 = self.fit_at[eng.idx]
        if d0 >= 0:
            return not used[d0] - ev[d0] + per > cap[d0] + 1e-6
        for d in eng.devs:
            if used[d] - ev[d] + per > cap[d] + 1e-6:
                return False
        return True

    def grow(self, eng: Engine, amount: float) -> None:
        """Caches grew by `amount` bytes as tokens were made (checked by the policy beforehand)."""
        per = amount / eng.n
        used = self.used
        d0 = self.grow_at[eng.idx]
        if d0 >= 0:
            if used[d0] + per > self.cap[d0] + 1e-6:
                self._evict(eng, per)
        elif d0 == -2:
            self._evict(eng, per)
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
        """Reserve a prefill's KV cache for its request, held until its last user is done; a prompt that
        starts with a cached prefix (`job.node`) holds that prefix from now on."""
        cache = self.caches[eng.idx]
        node = job.node if cache is not None else None
        if node is not None:
            self.pin(cache, node)  # before reserving: the reservation must not evict it
        if not self.reserve(eng, job.kv, what):
            if node is not None:
                self.unpin(cache, node)
            return False
        req = job.req
        req.kv_hold[job.task] = [eng.idx, job.kv, node, 0.0, 0, 0]
        req.kv_left[job.task] = req.tpl.kv_users[job.task]
        if cache is not None and job.prefix:
            cache.lookups += 1
            if node is not None:
                cache.hits += 1
                cache.hit_tokens += job.done
        return True

    def user_done(self, req: Req, head: int, t: float, kick: bool = True) -> None:
        """One user of prefill `head`'s KV cache (a transfer, or a decode with its own) is done with it."""
        left = req.kv_left.get(head, 0) - 1
        req.kv_left[head] = left
        if left <= 0:
            hold = req.kv_hold.pop(head, None)
            if hold is not None:
                self.drop(hold, t if kick else None)

    def capacity_bytes(self, eng: Engine) -> float:
        return sum(self.cap[d] for d in eng.devs)
