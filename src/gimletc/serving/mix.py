"""How many of each serving option: the split of a chip budget between roles, and mixes of chip types.

`best_split` and `solve` find the most requests/s every role of a mode serves within each chip
type's budget and the total, then the fewest chips: an exact small integer program (scipy's HiGHS).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from gimletc.errors import GimletError
from gimletc.hardware import get_chip
from gimletc.serving.options import _Option

# ---- budgets: how many of each option -------------------------------------------------------------


def _fits(chips: dict[str, int], budgets: dict[str, int], total: int) -> bool:
    return sum(chips.values()) <= total and all(k <= budgets.get(c, 0) for c, k in chips.items())


def _count_chips(opts: Sequence[_Option], counts: Sequence[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o, x in zip(opts, counts, strict=True):
        for c, n in o.chips:
            out[c] = out.get(c, 0) + n * x
    return out


def best_split(roles: Sequence[_Option], budgets: dict[str, int], total: int) -> tuple[float, tuple[int, ...]] | None:
    """One option per role (one or two roles): the counts with the most requests/s that every role serves,
    each option within its chip types' budgets and all within `total`; ties: fewer chips, then more of
    the first. Exact: every count of the first role is tried."""
    if len(roles) == 1:
        o = roles[0]
        x = min([total // o.total] + [budgets.get(c, 0) // n for c, n in o.chips])
        return (x * o.rate, (x,)) if x >= 1 else None
    if len(roles) != 2:
        raise GimletError("best_split takes one or two roles")
    p, d = roles
    best: tuple[float, int, int, int] | None = None  # rate, -chips, x, y
    x = 1
    while True:
        used = _count_chips((p,), (x,))
        if not _fits(used, budgets, total):
            break
        room = [budgets.get(c, 0) - used.get(c, 0) for c, _ in d.chips]
        y = min([(total - sum(used.values())) // d.total] + [r // n for r, (_, n) in zip(room, d.chips, strict=True)])
        if y >= 1:
            rate = min(x * p.rate, y * d.rate)
            y = min(y, max(1, math.ceil(rate / d.rate - 1e-9)))  # fewer decode replicas when they would idle
            key = (rate, -(x * p.total + y * d.total), x, y)
            if best is None or key[:3] > best[:3]:
                best = key
        x += 1
    if best is None:
        return None
    return best[0], (best[2], best[3])


def solve(roles: Sequence[Sequence[_Option]], budgets: dict[str, int], total: int, need: float | None = None,
          objective: str = "rate") -> tuple[float, list[list[int]]] | None:
    """How many of each option: an integer program over every role's options (scipy's HiGHS).

    objective "rate": the most requests/s R that every role serves (Σ rate·count >= R per role)
    within each chip type's budget and `total`, then the fewest chips at that R; "chips", "power",
    "price": the least of that with R >= `need`. Returns (R, counts per role), or None if infeasible."""
    opts = [o for r in roles for o in r]
    n = len(opts)
    if n == 0:
        return None
    types = sorted({c for o in opts for c, _ in o.chips})
    A: list[list[float]] = []
    lo: list[float] = []
    hi: list[float] = []
    first = 0
    for r in roles:  # Σ rate·x - R >= 0
        a = [0.0] * (n + 1)
        for i, o in enumerate(r):
            a[first + i] = o.rate
        a[n] = -1.0
        first += len(r)
        A.append(a)
        lo.append(0.0)
        hi.append(np.inf)
    for c in types:
        a = [float(dict(o.chips).get(c, 0)) for o in opts] + [0.0]
        A.append(a)
        lo.append(-np.inf)
        hi.append(float(budgets.get(c, 0)))
    A.append([float(o.total) for o in opts] + [0.0])
    lo.append(-np.inf)
    hi.append(float(total))
    ub = [float(min([total // max(1, o.total)] + [budgets.get(c, 0) // k for c, k in o.chips])) for o in opts]
    integrality = np.array([1] * n + [0])

    def weights(what: str) -> list[float]:
        if what == "chips":
            return [float(o.total) for o in opts]
        if what == "power":
            return [sum(get_chip(c).tdp_w * k for c, k in o.chips) for o in opts]
        if what == "price":
            return [sum((get_chip(c).price_per_hour or 0.0) * k for c, k in o.chips) for o in opts]
        raise GimletError(f"unknown objective {what!r}; choose rate, chips, power or price")

    rate_lo = 0.0 if need is None else need

    def split_counts(x: list[int]) -> list[list[int]]:
        out, i = [], 0
        for r in roles:
            out.append(x[i:i + len(r)])
            i += len(r)
        return out

    def achieved(x: list[int]) -> float:
        return min(sum(o.rate * k for o, k in zip(r, cs, strict=True))
                   for r, cs in zip(roles, split_counts(x), strict=True))

    def run(c: list[float], r_lo: float) -> Any:
        bounds = Bounds([0.0] * n + [r_lo], ub + [np.inf])
        with _quiet_stdout():
            return milp(np.array(c), constraints=LinearConstraint(np.array(A), np.array(lo), np.array(hi)),
                        integrality=integrality, bounds=bounds)

    if objective == "rate":
        res = run([0.0] * n + [-1.0], rate_lo)
        if res.status != 0 or res.x is None or res.x[n] <= 0:
            return None
        # The rate the integer counts serve (the solver's R may sit a tolerance above it), then the fewest chips.
        r_best = achieved([int(round(v)) for v in res.x[:n]])
        if r_best <= 0:
            return None
        res = run(weights("chips") + [0.0], r_best * (1 - 1e-7))
    else:
        w = weights(objective)
        if need is None:
            raise GimletError(f"objective {objective} needs a rate to serve")
        # Ties (equal chips, power or price): the one that serves the most.
        res = run(w + [-1e-6], rate_lo)
    if res.status != 0 or res.x is None:
        return None
    x = [int(round(v)) for v in res.x[:n]]
    rate = achieved(x)
    return (rate, split_counts(x)) if rate > 0 else None


_LIBC = ctypes.CDLL(None)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS's MIP solver prints some diagnostics with C's printf, whatever its options say; keep them off
    stdout (which may be carrying --json)."""
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real file behind stdout (captured): nothing to guard
        yield
        return
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            try:
                yield
            finally:
                _LIBC.fflush(None)  # what C buffered goes to /dev/null too
                os.dup2(saved, fd)
    finally:
        os.close(saved)
