#!/usr/bin/env python3
"""Measure a deployed agent graph the way `gimletc simulate` predicts it.

Written by `gimletc deploy` next to `workload.json` (the plan's request shape: each LLM call's model,
prompt and output tokens, its tools' times, the agent's loops and branches). Requests arrive as a
Poisson process at --rate; each replays the graph: every LLM call is a streamed OpenAI-compatible
request (chat completions, or completions with --api completions) to the endpoint serving it, with
`max_tokens`, `min_tokens` and `ignore_eos` set so it makes exactly the planned output tokens (vLLM,
SGLang and Dynamo's frontend accept the last two); tools, retrieval and code ops wait their planned
time (they are not called: the deployment's CPU workers run your tools; --tool-time zero skips
them); a call waits for what it uses, loops run a geometric number of times with the plan's mean
(the simulator's distribution), branches pick an arm by the plan's probabilities.

It writes one JSON object in the shape of `gimletc simulate --json`, measured instead of predicted:
`ttft_ms`, `tpot_ms`, `e2e_ms` (p50, p90, p99, mean, max), `throughput_tok_s`, `throughput_req_s`,
`slo_attainment` and, with --goodput, `goodput_req_s` (the highest rate at which the SLO share is met,
bisected over real runs as the simulator bisects simulated ones), per LLM call `llms`, and what was
sent. Definitions follow the simulator's: a request's TTFT is from its arrival to the first token of
its first call; a call's TPOT is its time per output token after the first ((last - first token) /
(tokens - 1)), and a request's the worst of its calls'; throughput counts every output token over the
time from the first arrival to the last completion. `gimletc compare PREDICTED.json MEASURED.json`
puts the two side by side.

Needs Python 3.9 or newer and nothing else (standard library only).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import sys
import threading
import time
import urllib.parse
from pathlib import Path

FORMAT = "gimletc-request/1"
# One-token words in the tokenizers of the catalog's models (Llama 3, Qwen3, gpt-oss, DeepSeek):
# a chat prompt of N of them is about N tokens plus the chat template's few.
WORDS = ("the of and to in is for on that with as at by from this be are was it or an not we can all has "
         "more one new data time will use your which their other about any there when some also may each")
WORDS = tuple(WORDS.split())
TOKEN_ID_RANGE = (1000, 32000)  # --api completions: prompts of token ids valid in every catalog tokenizer


# ---- statistics, as the simulator computes them ------------------------------------------------------


def percentiles(values, scale=1e3):
    """p50, p90, p99 (linear interpolation, numpy's default), mean and max of the finite values, times `scale`."""
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    if not v:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}

    def q(p):
        h = (len(v) - 1) * p
        lo = math.floor(h)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (h - lo)

    return {"p50": q(0.5) * scale, "p90": q(0.9) * scale, "p99": q(0.99) * scale,
            "mean": sum(v) / len(v) * scale, "max": v[-1] * scale}


# ---- one streamed request ----------------------------------------------------------------------------


class RequestFailed(Exception):
    pass


def stream(url, api, model, input_tokens, output_tokens, rng, timeout, api_key):
    """Send one streamed request; returns (seconds to the first token, seconds to the last, output tokens,
    prompt tokens the server counted or None), times from the moment the request was sent."""
    u = urllib.parse.urlsplit(url)
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(u.hostname, u.port or (443 if u.scheme == "https" else 80), timeout=timeout)
    base = u.path.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    body = {"model": model, "max_tokens": output_tokens, "min_tokens": output_tokens, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.0}
    if api == "chat":
        path = base + "/chat/completions"
        body["messages"] = [{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(input_tokens))}]
    else:
        path = base + "/completions"
        body["prompt"] = [rng.randrange(*TOKEN_ID_RANGE) for _ in range(input_tokens)]
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    t0 = time.perf_counter()
    first = last = None
    chunks = 0
    usage = None
    try:
        conn.request("POST", path, json.dumps(body), headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RequestFailed(f"{url}{path[len(u.path.rstrip('/')):]}: HTTP {resp.status}: "
                                f"{resp.read(300).decode(errors='replace').strip()}")
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            obj = json.loads(data)
            if obj.get("usage"):
                usage = obj["usage"]
            for choice in obj.get("choices") or ():
                text = (choice.get("delta") or {}).get("content") if api == "chat" else choice.get("text")
                if text:
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    last = now
                    chunks += 1
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise RequestFailed(f"{url}: {type(e).__name__}: {e}") from None
    finally:
        conn.close()
    if first is None:
        raise RequestFailed(f"{url}: the stream carried no tokens")
    tokens = int(usage["completion_tokens"]) if usage and usage.get("completion_tokens") else chunks
    prompt = int(usage["prompt_tokens"]) if usage and usage.get("prompt_tokens") is not None else None
    return first - t0, last - t0, tokens, prompt


# ---- one request of the agent graph -------------------------------------------------------------------


class Request:
    """One request: replays the graph's nodes, recording each call's first token and time per token."""

    def __init__(self, index, arrival, bench):
        self.index, self.arrival, self.b = index, arrival, bench
        self.rng = random.Random(bench.args.seed * 1_000_003 + index)
        self.lock = threading.Lock()
        self.t0 = None
        self.end = None
        self.first = math.inf  # seconds from arrival to the first token of any call
        self.tpot = -math.inf
        self.out_tokens = 0
        self.calls = {}  # call -> (ttft s, tpot s) of its first execution
        self.prompts = {}  # call -> prompt tokens the server counted (first execution)
        self.error = None

    def run(self):
        self.t0 = time.perf_counter()
        try:
            self.level(self.b.shape["nodes"])
        except RequestFailed as e:
            self.error = str(e)
        self.end = time.perf_counter()

    def level(self, nodes):
        ids = {n["id"] for n in nodes}
        done, started, failures = set(), set(), []
        cond = threading.Condition()

        def work(node):
            try:
                self.node(node)
            except RequestFailed as e:
                failures.append(e)
            except Exception as e:  # a bug or a malformed workload: report it, never hang the level
                failures.append(RequestFailed(f"{node.get('id')}: {type(e).__name__}: {e}"))
            finally:
                with cond:
                    done.add(node["id"])
                    cond.notify_all()

        with cond:
            while len(done) < len(nodes):
                if failures:
                    break
                for n in nodes:
                    if n["id"] not in started and all(a in done or a not in ids for a in n.get("after", ())):
                        started.add(n["id"])
                        threading.Thread(target=work, args=(n,), daemon=True).start()
                if len(done) < len(nodes):
                    cond.wait()
            while len(done) < len(started):  # let what was started finish before failing the level
                cond.wait()
        if failures:
            raise failures[0]

    def node(self, n):
        kind = n["kind"]
        if kind == "llm":
            self.llm(n)
        elif kind == "cpu":
            if self.b.args.tool_time == "planned" and n.get("seconds", 0) > 0:
                time.sleep(float(n["seconds"]))
        elif kind == "loop":
            for _ in range(self.iterations(n)):
                self.level(n["body"])
        elif kind == "branch":
            probs = [float(p) for p in n["probabilities"]]
            x, acc, arm = self.rng.random() * sum(probs), 0.0, len(probs) - 1
            for i, p in enumerate(probs):
                acc += p
                if x < acc:
                    arm = i
                    break
            self.level(n["arms"][arm])
        else:
            raise RequestFailed(f"node {n.get('id')}: unknown kind {kind!r}")

    def iterations(self, n):
        most = int(n["max"])
        if self.b.args.loops == "mean":
            return min(most, max(1, round(float(n["expected"]))))
        p = float(n["p"])
        if p >= 1.0:
            return 1
        if p <= 0.0:
            return most
        k = 1
        while k < most and self.rng.random() >= p:
            k += 1
        return k

    def llm(self, n):
        call, seqs = n["id"], max(1, int(n.get("batch", 1)))
        url = self.b.endpoint(call)
        model = self.b.served.get(n["model"], n["model"])
        start = time.perf_counter()
        results, errors = [], []
        seeds = [self.rng.randrange(1 << 30) for _ in range(seqs)]

        def one(seed):
            try:
                results.append(stream(url, self.b.args.api, model, int(n["input_tokens"]), int(n["output_tokens"]),
                                      random.Random(seed), self.b.args.timeout, self.b.api_key))
            except RequestFailed as e:
                errors.append(e)

        threads = [threading.Thread(target=one, args=(s,), daemon=True) for s in seeds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RequestFailed(f"call {call}: {errors[0]}")
        # The batch's prefill ends when its last sequence's first token exists (the simulator's job of
        # `batch` sequences); its time per token is the worst sequence's.
        first = start + max(r[0] for r in results)
        per_token = max(((r[1] - r[0]) / (r[2] - 1)) if r[2] > 1 else 0.0 for r in results)
        ttft = first - self.t0
        with self.lock:
            self.first = min(self.first, ttft)
            self.tpot = max(self.tpot, per_token)
            self.out_tokens += sum(r[2] for r in results)
            if call not in self.calls:
                self.calls[call] = (ttft, per_token)
                counted = [r[3] for r in results if r[3] is not None]
                if counted:
                    self.prompts[call] = max(counted)


# ---- a run at one rate, and the goodput bisection ------------------------------------------------------


class Bench:
    def __init__(self, args, shape):
        self.args, self.shape = args, shape
        self.served = shape.get("served_models", {})
        self.endpoints = dict(shape.get("endpoints", {}))
        for spec in args.endpoint or ():
            call, sep, url = spec.partition("=")
            if not sep:
                raise SystemExit(f"bench: --endpoint takes CALL=URL; got {spec!r}")
            self.endpoints[call] = url
        self.api_key = args.api_key or os.environ.get("OPENAI_API_KEY", "")

    def endpoint(self, call):
        if self.args.base_url:
            return self.args.base_url
        if call not in self.endpoints:
            raise RequestFailed(f"call {call}: no endpoint (give --base-url URL or --endpoint {call}=URL)")
        return self.endpoints[call]

    def arrivals(self, rate):
        rng = random.Random(self.args.seed)
        t, out = 0.0, []
        for _ in range(self.args.requests):
            t += rng.expovariate(rate) if self.args.arrivals == "poisson" else 1.0 / rate
            out.append(t)  # the first request arrives after one gap, as in gimletc.sim.arrivals
        return out

    def run(self, rate):
        times = self.arrivals(rate)
        reqs = [Request(i, t, self) for i, t in enumerate(times)]
        threads = []
        t_start = time.perf_counter()
        for r in reqs:
            delay = r.arrival - (time.perf_counter() - t_start)
            if delay > 0:
                time.sleep(delay)
            th = threading.Thread(target=r.run, daemon=True)
            th.start()
            threads.append(th)
        for th in threads:
            th.join()
        # Times from the start of the arrival process (time 0); a request's from its own arrival.
        for r in reqs:
            r.t_arr = t_start + r.arrival
        return reqs, t_start

    def attainment(self, reqs):
        ok = 0
        for r in reqs:
            if r.error is not None:
                continue
            first = (r.t0 - r.t_arr) + r.first if math.isfinite(r.first) else None
            tpot = r.tpot if math.isfinite(r.tpot) else None
            if self.args.slo_ttft_ms is not None and first is not None and first * 1e3 > self.args.slo_ttft_ms:
                continue
            if self.args.slo_tpot_ms is not None and tpot is not None and tpot * 1e3 > self.args.slo_tpot_ms:
                continue
            ok += 1
        return ok / len(reqs) if reqs else 0.0


def summary(bench, reqs, t_start, rate):
    args = bench.args
    ok = [r for r in reqs if r.error is None]
    ttft = [(r.t0 - r.t_arr) + r.first for r in ok if math.isfinite(r.first)]
    tpot = [r.tpot for r in ok if math.isfinite(r.tpot) and r.tpot > -math.inf]
    e2e = [r.end - r.t_arr for r in ok]
    span = max((r.end for r in ok), default=t_start) - t_start
    tokens = sum(r.out_tokens for r in ok)
    calls = sorted({c for r in ok for c in r.calls})
    prompts = {}
    for c in calls:
        counted = sorted(r.prompts[c] for r in ok if c in r.prompts)
        if counted:
            prompts[c] = counted[len(counted) // 2]
    slo = None
    if args.slo_ttft_ms is not None or args.slo_tpot_ms is not None:
        slo = {"ttft_ms": args.slo_ttft_ms, "tpot_ms": args.slo_tpot_ms, "share": args.slo_share}
    return {
        "name": bench.shape.get("name"),
        "requests": len(reqs),
        "completed": len(ok),
        "failed": len(reqs) - len(ok),
        "errors": sorted({r.error for r in reqs if r.error})[:5],
        "arrivals": {"kind": args.arrivals, "rate_req_s": rate, "requests": len(reqs), "seed": args.seed},
        "duration_s": span,
        "ttft_ms": percentiles(ttft),
        "tpot_ms": percentiles(tpot),
        "e2e_ms": percentiles(e2e),
        "throughput_tok_s": tokens / span if span > 0 else 0.0,
        "throughput_req_s": len(ok) / span if span > 0 else 0.0,
        "output_tokens": tokens,
        "llms": {c: {"ttft_ms": percentiles([r.calls[c][0] + (r.t0 - r.t_arr) for r in ok if c in r.calls]),
                     "tpot_ms": percentiles([r.calls[c][1] for r in ok if c in r.calls])} for c in calls},
        "prompt_tokens_p50": prompts,
        "slo": slo,
        "slo_attainment": bench.attainment(reqs) if slo else None,
        "goodput_req_s": None,
        "goodput": None,
        "api": args.api,
        "tool_time": args.tool_time,
        "source": "measured: gimletc benchmark client (streamed OpenAI-compatible requests against the deployment)",
    }


def goodput(bench, start_rate, progress):
    """The simulator's bisection (gimletc.sim.metrics.goodput) over real runs: double the rate while the SLO
    share is met (halve while it is not) to bracket it, then bisect geometrically."""
    args, share = bench.args, bench.args.slo_share
    points, cache = [], {}

    def ok(rate):
        if rate not in cache:
            reqs, _ = bench.run(rate)
            a = bench.attainment(reqs)
            cache[rate] = a
            points.append({"rate_req_s": rate, "attainment": a})
            progress(f"goodput: {rate:.4g} req/s -> {a:.1%} within the SLO")
        return cache[rate] >= share

    lo = hi = None
    r = start_rate
    if ok(r):
        lo = r
        while len(points) < args.goodput_max_evals:
            r *= 2
            if ok(r):
                lo = r
            else:
                hi = r
                break
    else:
        hi = r
        while len(points) < args.goodput_max_evals and r > start_rate * 2.0 ** -12:
            r /= 2
            if ok(r):
                lo = r
                break
            hi = r
    if lo is not None and hi is not None:
        while hi / lo > 1 + args.goodput_rtol and len(points) < args.goodput_max_evals:
            mid = math.sqrt(lo * hi)
            if ok(mid):
                lo = mid
            else:
                hi = mid
    return (lo or 0.0), sorted(points, key=lambda p: p["rate_req_s"])


def main(argv=None):
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default=str(here / "workload.json"), help="the request shape (default: beside this script)")
    ap.add_argument("--rate", type=float, required=True, help="mean arrival rate, requests/s")
    ap.add_argument("--requests", "-n", type=int, default=100, help="requests to send (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arrivals", choices=("poisson", "constant"), default="poisson")
    ap.add_argument("--base-url", help="one endpoint for every call (e.g. Dynamo's frontend, http://localhost:8000)")
    ap.add_argument("--endpoint", action="append", help="CALL=URL: where one LLM call is served (repeatable)")
    ap.add_argument("--api", choices=("chat", "completions"), default="chat",
                    help="chat: /v1/chat/completions with a prompt of words; completions: /v1/completions with token ids "
                         "(exact prompt lengths)")
    ap.add_argument("--api-key", help="bearer token (default: $OPENAI_API_KEY)")
    ap.add_argument("--slo-ttft-ms", type=float)
    ap.add_argument("--slo-tpot-ms", type=float)
    ap.add_argument("--slo-share", type=float, default=0.9)
    ap.add_argument("--goodput", action="store_true", help="with an SLO: bisect the rate for the goodput (several runs)")
    ap.add_argument("--goodput-max-evals", type=int, default=8)
    ap.add_argument("--goodput-rtol", type=float, default=0.1)
    ap.add_argument("--tool-time", choices=("planned", "zero"), default="planned",
                    help="tools, retrieval and code: wait their planned time (as the simulator does), or not at all")
    ap.add_argument("--loops", choices=("geometric", "mean"), default="geometric")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds one streamed request may take")
    ap.add_argument("--out", "-o", help="write the JSON here (default: standard output)")
    args = ap.parse_args(argv)
    if not (args.rate > 0 and math.isfinite(args.rate)) or args.requests < 1:
        ap.error("--rate must be a positive number and --requests a positive integer")
    if args.goodput and args.slo_ttft_ms is None and args.slo_tpot_ms is None:
        ap.error("--goodput needs --slo-ttft-ms, --slo-tpot-ms or both")
    shape = json.loads(Path(args.workload).read_text())
    if shape.get("format") != FORMAT:
        ap.error(f"{args.workload}: not a gimletc request shape ({FORMAT})")
    bench = Bench(args, shape)

    def progress(msg):
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    progress(f"{args.requests} requests of {shape.get('name')} at {args.rate:g} req/s ({args.arrivals}, seed {args.seed})")
    reqs, t_start = bench.run(args.rate)
    d = summary(bench, reqs, t_start, args.rate)
    if args.goodput:
        rate, points = goodput(bench, args.rate, progress)
        d["goodput_req_s"] = rate
        d["goodput"] = {"goodput_req_s": rate, "slo": d["slo"], "evaluations": len(points), "points": points}
    text = json.dumps(d, indent=2, sort_keys=True) + "\n"
    if args.out:
        tmp = Path(args.out).with_name(f".{Path(args.out).name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)
        progress(f"wrote {args.out}: {d['completed']}/{d['requests']} completed, TTFT p50 {d['ttft_ms']['p50']} ms")
    else:
        sys.stdout.write(text)
    return 0 if d["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
