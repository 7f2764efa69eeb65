"""The client cannot be what it measures: the streaming client's own timing error.

    .venv/bin/python bench/checks/client_timing.py                 # 1 and 32 streams
    .venv/bin/python bench/checks/client_timing.py --streams 1,8,32 --tokens 128 --interval-ms 5

A null server (this file, `--serve PORT`, a separate process on 127.0.0.1) streams SSE chunks
on a known schedule, one token every `--interval-ms`, and writes into each chunk the
perf_counter time at which it handed the chunk to the socket. The client
(engines/http/client.py, unchanged: one pool, usage counting, stamps) stamps each chunk with the
same clock (CLOCK_MONOTONIC is shared between processes on Linux), so stamp - sent is how late
the client's stamp is: its timing error. With kernel receive stamps (the `stamps` column:
"kernel"; "read" where the platform has none) the client's own parsing is not in it; what is
left is the null server's lateness between taking its time and its send, and the kernel's
delivery of the bytes, which is late when the machine's CPUs are saturated (the client's own
CPU per chunk counts there too).

Printed per concurrency: median and p99 over every chunk of every stream, in ms, whether they
are within the issue's goal (median <= 0.5 ms, p99 <= 2 ms; exit 1 otherwise), and the p99 of
stamp - the time the server's send() returned (the server writes it into the next chunk): with
kernel stamps, when that is close to the p99 the lateness came after the server's send, in the
kernel's delivery, not from the server. Run alone on a quiet machine, outside `make test`: a
loaded machine measures the scheduler, not the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time

MEDIAN_GOAL_MS, P99_GOAL_MS = 0.5, 2.0


# --- the null server ----------------------------------------------------------------------------
async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:  # the readiness probe connects and closes
        writer.close()
        return
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    body = json.loads(await reader.readexactly(length))
    n, interval_s = int(body["max_tokens"]), float(body.get("interval_s", 0.01))
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    start = time.perf_counter()
    returned = 0.0
    for i in range(n):
        delay = start + i * interval_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # The chunk's text: the time it is handed to the socket, and the time the send of the
        # previous chunk returned (perf_counter seconds; the socket sends at once).
        t = time.perf_counter()
        event = {"choices": [{"index": 0, "text": f"{t!r} {returned!r}", "finish_reason": None}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": i + 1,
                           "total_tokens": i + 2}}
        writer.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        returned = time.perf_counter()
        await writer.drain()
    end = {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
    writer.write(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
    await writer.drain()
    writer.close()


async def _serve(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


# --- the measurement ----------------------------------------------------------------------------
def measure(port: int, streams: int, tokens: int, interval_ms: float
            ) -> tuple[list[float], list[float], set[str]]:
    """With `streams` concurrent streams: the client delay of every chunk (ms), the delay from
    the server's send returning to the stamp (ms; every chunk but a stream's last), and how
    the chunks were stamped (`Completion.stamp_source`)."""
    from infer_opt.engines.http.client import Job, run_jobs

    jobs = [Job(i, [1], tokens) for i in range(streams)]
    done = asyncio.run(run_jobs(f"http://127.0.0.1:{port}/v1", jobs, "null", t0=0.0,
                                timeout_s=60 + tokens * interval_ms / 1e3 * 2,
                                extra={"interval_s": interval_ms / 1e3}))
    errors, after_send, sources = [], [], set()
    for c in done:
        if c.error is not None:
            raise SystemExit(f"client_timing: a stream failed: {c.error}")
        # t0 = 0.0: stamps are absolute perf_counter seconds, like the server's.
        sent = [float(text.split()[0]) for text in c.chunk_text]
        returned = [float(text.split()[1]) for text in c.chunk_text[1:]]
        errors += [(stamp - t) * 1e3 for stamp, t in zip(c.chunk_s, sent)]
        after_send += [(stamp - t) * 1e3 for stamp, t in zip(c.chunk_s, returned)]
        sources.add(c.stamp_source)
    return errors, after_send, sources


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--streams", default="1,32", help="comma-separated concurrencies")
    p.add_argument("--tokens", type=int, default=64, help="chunks per stream")
    p.add_argument("--interval-ms", type=float, default=10.0, help="gap between chunks")
    args = p.parse_args()
    if args.serve is not None:
        asyncio.run(_serve(args.serve))
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        ok = True
        print("streams | chunks | stamps | client delay median ms | p99 ms | "
              "goal (<= 0.5 / <= 2 ms) | after send() p99 ms")
        for streams in (int(x) for x in args.streams.split(",")):
            measure(port, streams, 4, args.interval_ms)  # warm-up: imports, first connect
            errs, after_send, sources = measure(port, streams, args.tokens, args.interval_ms)
            med, high = statistics.median(errs), p99(errs)
            good = med <= MEDIAN_GOAL_MS and high <= P99_GOAL_MS
            ok &= good
            print(f"{streams:7d} | {len(errs):6d} | {'/'.join(sorted(sources)):6} | "
                  f"{med:22.3f} | {high:6.3f} | {'met' if good else 'NOT met':23} | "
                  f"{p99(after_send):.3f}")
        return 0 if ok else 1
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
