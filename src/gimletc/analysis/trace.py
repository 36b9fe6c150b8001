"""Chrome / Perfetto JSON traces of a replay: a track per device, then one per link channel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gimletc._io import write_atomic
from gimletc.analysis.replay import Timeline

__all__ = ["chrome_trace", "write_chrome_trace"]

_PID = 1


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)  # nanosecond resolution keeps the output stable across float noise


def chrome_trace(timeline: Timeline, name: str = "gimletc") -> dict[str, Any]:
    """The timeline in the Chrome trace-event format (loadable by Perfetto and chrome://tracing).

    One process named `name`; one thread per device (sorted), then one per
    channel (sorted), each named by a `thread_name` metadata event; a complete
    (`ph: "X"`) event per op and resource it occupies, `ts`/`dur` in
    microseconds, `cat` the op kind, `args` {of, kind}. Ops that occupy no
    resource (awaits, receives) are not drawn. Events are sorted by track, start,
    longest first (so loop bodies nest inside their loop), then depth and name."""
    resources = sorted(set(timeline.busy) | {r for e in timeline.events for r in e.resources})
    tracks = [r for r in resources if r not in timeline.channels] + [r for r in resources if r in timeline.channels]
    tid = {r: k + 1 for k, r in enumerate(tracks)}
    meta: list[dict[str, Any]] = [{"ph": "M", "pid": _PID, "tid": 0, "name": "process_name", "args": {"name": name}}]
    for r in tracks:
        meta.append({"ph": "M", "pid": _PID, "tid": tid[r], "name": "thread_name", "args": {"name": r}})
        meta.append(
            {"ph": "M", "pid": _PID, "tid": tid[r], "name": "thread_sort_index", "args": {"sort_index": tid[r]}}
        )
    keyed = []
    for e in timeline.events:
        ts, dur = _us(e.start), _us(e.end - e.start)
        for r in e.resources:
            event = {
                "ph": "X",
                "pid": _PID,
                "tid": tid[r],
                "ts": ts,
                "dur": dur,
                "name": e.op,
                "cat": e.kind,
                "args": {"of": e.of, "kind": e.kind},
            }
            keyed.append(((tid[r], ts, -dur, e.depth, e.op), event))
    keyed.sort(key=lambda kv: kv[0])
    return {"traceEvents": meta + [ev for _, ev in keyed], "displayTimeUnit": "ms"}


def write_chrome_trace(timeline: Timeline, path: str | Path, name: str = "gimletc") -> None:
    """Write `chrome_trace(timeline, name)` as JSON to `path` atomically (a failure leaves no half file)."""
    write_atomic(path, json.dumps(chrome_trace(timeline, name), sort_keys=True, separators=(",", ":")) + "\n")
