"""Request arrival processes for the load simulator: Poisson, bursty, constant, or a replayed trace.

Every process is generated at unit rate from a seeded numpy Generator and
then scaled to the asked rate (`Arrivals.at_rate`), so a bisection over rate
sees the same pattern of gaps stretched or squeezed (common random numbers):
attainment then moves smoothly with rate instead of jumping with the samples.

A trace file lists one request per line, as CSV with a header or as JSON
lines, with the arrival time in seconds (`arrival_s`, or `timestamp`) and
optionally the request's `input_tokens` and `output_tokens`; how those token
counts enter an agent graph is described in `gimletc.sim.load`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gimletc.errors import ConfigError, GimletError
from gimletc.sim.limits import MAX_SPAN_S, span_problem

__all__ = ["ARRIVAL_KINDS", "Arrivals", "ArrivalError", "generate", "load_trace"]

ARRIVAL_KINDS = ("poisson", "bursty", "constant")
DEFAULT_BURST_CV = 3.0  # coefficient of variation of the gaps for "bursty"


class ArrivalError(GimletError, ValueError):
    """An arrival process was asked for with a bad rate, count or shape (names the argument and value)."""


@dataclass(frozen=True, eq=False)
class Arrivals:
    """Arrival times (seconds from 0, non-decreasing) and optional per-request token counts.

    `kind` says where they came from; `rate` is the mean arrival rate they were
    generated at (requests/s), or the trace's own mean rate."""

    times: np.ndarray
    kind: str
    rate: float
    input_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    source: str = ""
    _unit: np.ndarray | None = field(default=None, repr=False)  # the same pattern at rate 1

    def __len__(self) -> int:
        return len(self.times)

    def at_rate(self, rate: float) -> Arrivals:
        """The same arrival pattern at another mean rate (gaps scaled by self.rate / rate)."""
        _check_rate(rate)
        unit = self._unit if self._unit is not None else self.times * self.rate
        _check_span(float(unit[-1]) / rate if len(unit) else 0.0, len(unit), rate)
        return Arrivals(unit / rate, self.kind, float(rate), self.input_tokens, self.output_tokens, self.source, unit)

    def head(self, n: int) -> Arrivals:
        """The first `n` requests."""
        cut = lambda a: None if a is None else a[:n]  # noqa: E731
        return Arrivals(self.times[:n], self.kind, self.rate, cut(self.input_tokens), cut(self.output_tokens),
                        self.source, cut(self._unit))

    def describe(self) -> dict:
        return {"kind": self.kind, "rate_req_s": self.rate, "requests": len(self), "source": self.source or None}


def _check_rate(rate: float) -> None:
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
        raise ArrivalError(f"arrival rate must be a positive number of requests/s; got {rate!r}")


def _check_span(last: float, n: int, rate: float) -> None:
    """Arrivals the simulator can time: the last within `gimletc.sim.limits.MAX_SPAN_S`."""
    why = span_problem(last, f"{n:,} requests at {rate:.4g} req/s")
    if why:
        raise ArrivalError(why)


def generate(kind: str, rate: float, n: int, seed: int = 0, cv: float = DEFAULT_BURST_CV) -> Arrivals:
    """`n` arrivals at mean `rate` requests/s.

    - poisson: exponential gaps (a Poisson process);
    - bursty: gamma-distributed gaps with coefficient of variation `cv` > 1
      (shape 1/cv^2): long quiet spells and dense bursts at the same mean rate;
    - constant: evenly spaced, 1/rate apart.
    The first request arrives after one gap, as in a process already running."""
    _check_rate(rate)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ArrivalError(f"number of requests must be a positive integer; got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ArrivalError(f"seed must be an integer >= 0; got {seed!r}")
    _check_span(n / rate, n, rate)  # their mean span, before drawing them
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x61727276]))
    if kind == "poisson":
        gaps = rng.exponential(1.0, n)
    elif kind == "bursty":
        if not (isinstance(cv, (int, float)) and math.isfinite(cv) and cv > 0):
            raise ArrivalError(f"bursty arrivals need a positive coefficient of variation; got cv={cv!r}")
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, 1.0 / shape, n)
    elif kind == "constant":
        gaps = np.ones(n)
    else:
        raise ArrivalError(f"unknown arrival process {kind!r}; choose one of {', '.join(ARRIVAL_KINDS)}")
    unit = np.cumsum(gaps)
    _check_span(float(unit[-1]) / rate, n, rate)
    return Arrivals(unit / rate, kind, float(rate), _unit=unit)


_TIME_KEYS = ("arrival_s", "timestamp", "time_s", "t")


def load_trace(path: str | Path) -> Arrivals:
    """Read a trace of arrivals (CSV with a header, or JSON lines); errors name the file and line."""
    from gimletc._io import read_text

    p = Path(path)
    text = read_text(p, "trace file")  # bounded, UTF-8, a regular file (or a pipe)
    rows: list[tuple[int, dict]] = []
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if first.lstrip().startswith("{"):
        for i, ln in enumerate(lines, 1):
            if not ln.strip():
                continue
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}: line {i}: malformed JSON: {e.msg}") from None
            except (RecursionError, ValueError):  # nested too deeply; an integer of over 4,300 digits
                raise ConfigError(f"{p}: line {i}: not a flat JSON object of numbers") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{p}: line {i}: expected an object per line")
            rows.append((i, obj))
    else:
        reader = csv.DictReader(lines)
        try:
            for i, row in enumerate(reader, 2):
                rows.append((i, row))
        except csv.Error as e:
            raise ConfigError(f"{p}: line {reader.line_num}: malformed CSV: {e}") from None
    if not rows:
        raise ConfigError(f"{p}: no requests in the trace")
    keys = rows[0][1].keys()
    tkey = next((k for k in _TIME_KEYS if k in keys), None)
    if tkey is None:
        raise ConfigError(f"{p}: no arrival time column; expected one of {', '.join(_TIME_KEYS)}")
    has_in, has_out = "input_tokens" in keys, "output_tokens" in keys
    times, ins, outs = [], [], []
    prev = -math.inf
    for i, row in rows:
        t = _number(p, i, tkey, row.get(tkey), float)
        if t < 0:
            raise ConfigError(f"{p}: line {i}: {tkey}={t} is negative")
        if t < prev:
            raise ConfigError(f"{p}: line {i}: {tkey}={t} is earlier than the line before ({prev}); sort the trace")
        if span_problem(t, ""):
            raise ConfigError(f"{p}: line {i}: {tkey}={t:g} s is past the {MAX_SPAN_S:.0e} s of simulated time "
                              "the simulator runs (gimletc.sim.limits)")
        prev = t
        times.append(t)
        if has_in:
            v = _number(p, i, "input_tokens", row.get("input_tokens"), int)
            if v < 1:
                raise ConfigError(f"{p}: line {i}: input_tokens={v} must be >= 1")
            ins.append(v)
        if has_out:
            v = _number(p, i, "output_tokens", row.get("output_tokens"), int)
            if v < 1:
                raise ConfigError(f"{p}: line {i}: output_tokens={v} must be >= 1")
            outs.append(v)
    arr = np.asarray(times, dtype=float)
    span = arr[-1] - (arr[0] if len(arr) > 1 else 0.0)
    rate = (len(arr) - 1) / span if len(arr) > 1 and span > 0 else 1.0
    return Arrivals(
        arr, "trace", float(rate),
        np.asarray(ins, dtype=np.int64) if has_in else None,
        np.asarray(outs, dtype=np.int64) if has_out else None,
        str(p),
    )


MAX_TRACE_TOKENS = 10**9  # per request: more than any model's context


def _number(p: Path, line: int, key: str, raw: object, kind: type) -> float:
    shown = repr(raw) if len(repr(raw)) <= 60 else repr(raw)[:57] + "..."
    try:
        v = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{p}: line {line}: {key}={shown} is not a number") from None
    if not math.isfinite(v):
        raise ConfigError(f"{p}: line {line}: {key}={shown} is not finite")
    if kind is int:
        if abs(v) > MAX_TRACE_TOKENS:
            raise ConfigError(f"{p}: line {line}: {key}={shown} is more than {MAX_TRACE_TOKENS:.0e} tokens")
        return int(v)
    return v
