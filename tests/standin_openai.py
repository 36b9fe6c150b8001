"""A small OpenAI-compatible stand-in server for the deployment benchmark's tests (loopback only).

It serves `POST /v1/chat/completions` and `POST /v1/completions` as streamed server-sent events the
way vLLM and SGLang do (one token per chunk, a usage chunk when `stream_options.include_usage`, then
`data: [DONE]`), with a known pacing: the first token after `prefill_s_per_token x prompt tokens +
base_s`, then one token every `tpot_s`. A chat prompt's tokens are its words (the benchmark builds
chat prompts of one-token words); a completions prompt of token ids has that many. Requests are
served concurrently (one thread each), as an engine batches them, so the timings the benchmark
measures are the pacing's whatever the load. Every request is recorded (`requests`), so a test can
check what the benchmark sent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Pacing:
    base_s: float = 0.002
    prefill_s_per_token: float = 2e-6
    tpot_s: float = 0.004

    def ttft(self, prompt_tokens: int) -> float:
        return self.base_s + self.prefill_s_per_token * prompt_tokens


@dataclass
class StandIn:
    pacing: Pacing = field(default_factory=Pacing)
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                chat = self.path.endswith("/v1/chat/completions")
                if not chat and not self.path.endswith("/v1/completions"):
                    self.send_error(404)
                    return
                standin.requests.append({"path": self.path, "body": body})
                if chat:
                    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                else:
                    p = body.get("prompt")
                    prompt = len(p) if isinstance(p, list) else len(str(p).split())
                n = int(body.get("max_tokens") or 16)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                start = time.perf_counter()

                def chunk(obj: Any) -> None:
                    data = (b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n")
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                for i in range(n):
                    due = start + standin.pacing.ttft(prompt) + i * standin.pacing.tpot_s
                    wait = due - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    choice = ({"index": 0, "delta": {"content": f" t{i}"}, "finish_reason": None} if chat else
                              {"index": 0, "text": f" t{i}", "finish_reason": None})
                    chunk({"id": "standin", "object": "chat.completion.chunk" if chat else "text_completion",
                           "model": body.get("model"), "choices": [choice]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    chunk({"id": "standin", "choices": [], "usage": {
                        "prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}})
                chunk(b"[DONE]")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
