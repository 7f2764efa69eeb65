"""Scripted SSE servers on 127.0.0.1 for the HTTP client's tests and timing check.

A script is a list of steps the server writes for every POST: ("status", code), ("line", text)
(an SSE line, written and flushed), ("raw", text) (written and flushed as is: part of a line,
or several), ("sleep", seconds) or ("close",) (drop the connection mid-stream). `sent_s`
records perf_counter when each line was flushed (same clock as the client's in this process).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = tuple[Any, ...]


def data(obj: Any) -> Step:
    return ("line", "data: " + (obj if isinstance(obj, str) else json.dumps(obj)))


def text_chunk(text: str, **extra: Any) -> Step:
    return data({"choices": [{"index": 0, "text": text, "finish_reason": None, **extra}]})


def finish(usage: dict[str, int] | None = None) -> list[Step]:
    out = [data({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})]
    if usage is not None:
        out.append(data({"choices": [], "usage": usage}))
    return out + [data("[DONE]")]


@contextmanager
def scripted_server(script: list[Step]) -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"sent_s": [], "bodies": []}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", 0))
            state["bodies"].append(json.loads(self.rfile.read(n)))
            state.setdefault("auth", []).append(self.headers.get("Authorization"))
            status = next((s[1] for s in script if s[0] == "status"), 200)
            self.send_response(status)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if status >= 400:
                self.wfile.write(b'{"error": {"message": "boom"}}')
                return
            for step in script:
                if step[0] == "sleep":
                    time.sleep(step[1])
                elif step[0] == "line":
                    self.wfile.write(step[1].encode() + b"\n\n")
                    self.wfile.flush()
                    state["sent_s"].append(time.perf_counter())
                elif step[0] == "raw":
                    self.wfile.write(step[1].encode())
                    self.wfile.flush()
                elif step[0] == "close":
                    return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def asgi_in_thread(app: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn in a thread on a free loopback port; yields its /v1 URL."""
    import threading
    import time

    import uvicorn

    from infer_opt.engines.http.launch import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
