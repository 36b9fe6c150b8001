"""What a run reports: per op and per device, measured time next to the cost model's prediction,
and each LLM call's output against the unsplit model's (the differential check)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gimletc.hardware.schema import Chip
from gimletc.models.onnx import ImportedModel
from gimletc.ir import Graph
from gimletc.runtime.executors import OrtExecutor
from gimletc.runtime.llm import ModelPart
from gimletc.runtime.values import jsonable
from gimletc.targets.partition import whole

__all__ = ["LLMCheck", "OpRecord", "RunReport", "build_report", "reference_checks"]

Event = tuple[str, str, str | None, str, float, float, int]


@dataclass
class OpRecord:
    """One exec op as it ran: measured time next to the cost model's prediction."""

    op: str
    kind: str
    of: str | None
    resource: str
    start_ms: float
    end_ms: float
    measured_ms: float  # busy time (summed over steps for a split decode)
    predicted_ms: float
    bytes: int = 0
    runner: str = ""
    runs: int = 1


@dataclass
class LLMCheck:
    """An LLM call's output against the unsplit model's greedy output for the same prompt."""

    llm: str
    model: str
    prompt_tokens: int
    tokens: list[int]
    reference_tokens: list[int]
    tokens_match: bool
    max_abs_diff: float
    speculative: dict[str, Any] | None = None


@dataclass
class RunReport:
    plan: str
    backend: str
    measured_ms: float
    predicted_ms: float
    max_abs_diff: float
    tokens_match: bool
    devices: dict[str, dict[str, Any]]
    ops: list[OpRecord]
    llms: dict[str, LLMCheck]
    outputs: dict[str, Any]
    notes: list[str]
    events: list[Event] = field(default_factory=list, repr=False)
    channels: frozenset[str] = frozenset()
    executor: str = "local"
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what `gimletc run --json` prints)."""
        return {
            "plan": self.plan,
            "backend": self.backend,
            "measured_ms": self.measured_ms,
            "predicted_ms": self.predicted_ms,
            "max_abs_diff": self.max_abs_diff,
            "tokens_match": self.tokens_match,
            "devices": self.devices,
            "llms": {k: asdict(v) for k, v in sorted(self.llms.items())},
            "ops": [asdict(o) for o in self.ops],
            "outputs": {k: jsonable(v) for k, v in sorted(self.outputs.items())},
            "notes": self.notes,
            "executor": self.executor,
            "attempts": self.attempts,
            "source": "measured on this machine; predicted_ms from the plan's cost model and replay",
        }

    def chrome_trace(self) -> dict[str, Any]:
        """The run as a Chrome/Perfetto trace: a track per worker (device, CPU lane) and per link channel."""
        from gimletc.analysis.replay import Event as SimEvent
        from gimletc.analysis.replay import Timeline
        from gimletc.analysis.trace import chrome_trace

        events = tuple(SimEvent(op, kind, of, (res,), start, end, depth) for op, kind, of, res, start, end, depth in self.events)
        busy: dict[str, float] = {}
        for e in events:
            busy[e.resources[0]] = busy.get(e.resources[0], 0.0) + e.duration
        tl = Timeline(events, self.measured_ms / 1e3, busy, self.channels)
        return chrome_trace(tl, f"{self.plan} (measured)")


def predicted_makespan_ms(graph: Graph) -> float:
    """The plan's predicted time for one request: the replay of its exec IR."""
    from gimletc.analysis import replay

    return replay(graph).makespan * 1e3


def reference_checks(calls: Mapping[str, Any], references: Mapping[str, ImportedModel],
                     reference_data: Mapping[str, bytes]) -> dict[str, LLMCheck]:
    """Each call's tokens and logits against the unsplit model's greedy decode of the same prompts."""
    out: dict[str, LLMCheck] = {}
    for llm, call in sorted(calls.items()):
        data = reference_data.get(call.model)
        if data is None or not call.tokens[0]:
            continue
        im = references[call.model]
        ref = OrtExecutor.load(f"reference {call.model}", data, "CPUExecutionProvider", threads=1)
        part = ModelPart(f"{llm}.reference", im, whole(im.layers), ref, "onnxruntime reference")
        n = max(len(t) for t in call.tokens)
        present, _, logits = part.step(call.prompts, {}, {})
        ref_rows = [logits[:, -1]]
        past = present
        for _ in range(n - 1):
            tok = np.argmax(ref_rows[-1], axis=-1)[:, None]
            present, _, logits = part.step(tok, past, {})
            past = present
            ref_rows.append(logits[:, -1])
        ref_tokens = [[int(np.argmax(r[b])) for r in ref_rows] for b in range(call.batch)]
        diff = 0.0
        match = True
        for b in range(call.batch):
            got = call.tokens[b]
            upto = len(got)
            for i, (x, y) in enumerate(zip(got, ref_tokens[b], strict=False)):
                if x != y:
                    upto, match = i + 1, False
                    break
            for i in range(min(upto, len(call.rows[b]))):
                diff = max(diff, float(np.max(np.abs(call.rows[b][i].astype(np.float64) - ref_rows[i][b].astype(np.float64)))))
        out[llm] = LLMCheck(
            llm, call.model, int(call.prompts.shape[1]),
            [int(t) for seq in call.tokens for t in seq],
            [int(t) for b in range(call.batch) for t in ref_tokens[b][: len(call.tokens[b])]],
            match, diff, call.speculative,
        )
    return out


def device_table(records: Mapping[str, OpRecord], channels: set[str] | frozenset[str],
                 chip_of: Any) -> dict[str, dict[str, Any]]:
    """Per device (measured vs predicted busy time, what ran it) and per link channel (copies, bytes)."""
    devices: dict[str, dict[str, Any]] = {}
    for r in sorted({rec.resource for rec in records.values()} - set(channels)):
        chip: Chip = chip_of(r)
        ops = [rec for rec in records.values() if rec.resource == r]
        runners = sorted({rec.runner for rec in ops if rec.runner})
        gpu_here = any("GPU" in x for x in runners)
        devices[r] = {
            "chip": chip.name,
            "kind": chip.kind,
            "ran_on": "this machine's GPU" if gpu_here else "CPU worker" + (" (stand-in)" if chip.kind != "cpu" else ""),
            "runners": runners,
            "ops": sum(rec.runs for rec in ops),
            "measured_ms": sum(rec.measured_ms for rec in ops),
            "predicted_ms": sum(rec.predicted_ms for rec in ops),
        }
    for ch in sorted(channels):
        ops = [rec for rec in records.values() if rec.resource == ch]
        devices[ch] = {"kind": "link", "transfers": sum(o.runs for o in ops), "bytes": sum(o.bytes for o in ops),
                       "measured_ms": sum(o.measured_ms for o in ops), "predicted_ms": sum(o.predicted_ms for o in ops)}
    return devices


def build_report(*, plan: str, backend: str, graph: Graph, wall_ms: float, records: Mapping[str, OpRecord],
                 events: list[Event], channels: set[str], chip_of: Any, llms: dict[str, LLMCheck], outputs: dict[str, Any],
                 notes: list[str], pace: float, executor: str = "local", attempts: int = 1) -> RunReport:
    devices = device_table(records, channels, chip_of)
    stand_ins = sorted({d["chip"] for d in devices.values() if d.get("kind") in ("gpu", "sram-accelerator")
                        and d["ran_on"].startswith("CPU")})
    notes = list(notes)
    if stand_ins:
        notes.insert(0, f"no {'/'.join(stand_ins)} here: partitions placed on them ran on CPU workers standing in "
                        "for those devices; measured times are this machine's, predictions are for the plan's chips")
    if pace > 0:
        notes.append(f"transfers paced to {pace:g}x their predicted time")
    diffs = [c.max_abs_diff for c in llms.values()]
    return RunReport(
        plan=plan, backend=backend, measured_ms=wall_ms, predicted_ms=predicted_makespan_ms(graph),
        max_abs_diff=max(diffs) if diffs else 0.0, tokens_match=all(c.tokens_match for c in llms.values()),
        devices=devices, ops=sorted(records.values(), key=lambda r: (r.start_ms, r.op)), llms=llms,
        outputs=outputs, notes=notes, events=sorted(events, key=lambda e: (e[4], e[0])),
        channels=frozenset(channels), executor=executor, attempts=attempts,
    )
