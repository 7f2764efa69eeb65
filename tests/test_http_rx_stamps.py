"""Kernel receive stamps (engines/http/rx_stamps.py): the realtime -> perf_counter conversion
on hand-built ancillary data, its fallbacks to the read time, and on Linux that a loopback
stream's chunks carry the kernel's stamps."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

pytest.importorskip("httpcore")

from infer_opt.engines.http import client, rx_stamps  # noqa: E402
from infer_opt.engines.http.client import Job, run_jobs  # noqa: E402
from tests.http_fixtures import data, finish, scripted_server, text_chunk  # noqa: E402

READ_RT_NS = 1_700_000_000_123_456_789  # realtime at the read
READ_S = 1000.0  # perf_counter at the read

needs_stamps = pytest.mark.skipif(rx_stamps.SO_TIMESTAMPNS is None,
                                  reason="SO_TIMESTAMPNS is Linux's")


def cmsg(stamp_ns: int) -> list[tuple[int, int, bytes]]:
    sec, nsec = divmod(stamp_ns, 1_000_000_000)
    return [(socket.SOL_SOCKET, rx_stamps.SCM_TIMESTAMPNS, rx_stamps.TIMESPEC.pack(sec, nsec))]


@needs_stamps
def test_a_kernel_stamp_becomes_perf_counter_seconds_by_its_age_at_the_read() -> None:
    assert rx_stamps.kernel_stamp(cmsg(READ_RT_NS - 1_500_000), READ_S, READ_RT_NS) == \
        pytest.approx(READ_S - 0.0015, abs=1e-9)
    assert rx_stamps.kernel_stamp(cmsg(READ_RT_NS), READ_S, READ_RT_NS) == READ_S
    # 4.9 s old: still used.
    assert rx_stamps.kernel_stamp(cmsg(READ_RT_NS - 4_900_000_000), READ_S, READ_RT_NS) == \
        pytest.approx(READ_S - 4.9, abs=1e-9)


@needs_stamps
@pytest.mark.parametrize("stamp_ns", [READ_RT_NS + 1, READ_RT_NS - 6_000_000_000],
                         ids=["after the read", "6 s before the read"])
def test_an_implausible_kernel_stamp_is_not_used(stamp_ns: int) -> None:
    assert rx_stamps.kernel_stamp(cmsg(stamp_ns), READ_S, READ_RT_NS) is None


def test_no_stamp_without_the_timestamp_message() -> None:
    other = [(socket.SOL_SOCKET, 0x7FFF, b"\0" * rx_stamps.TIMESPEC.size)]
    assert rx_stamps.kernel_stamp(other, READ_S, READ_RT_NS) is None
    assert rx_stamps.kernel_stamp([], READ_S, READ_RT_NS) is None


class FakeSocket:
    """recvmsg returns one byte and the given ancillary data at once."""

    def __init__(self, ancdata: list[tuple[int, int, bytes]]) -> None:
        self.ancdata = ancdata

    def recvmsg(self, max_bytes: int, ancbufsize: int) -> tuple[bytes, Any, int, Any]:
        return b"x", self.ancdata, 0, None


def read_with(ancdata: list[tuple[int, int, bytes]]) -> tuple[float, float, float, bool]:
    """(perf_counter before the read, after it, the stream's stamp, whether kernel)."""
    async def go() -> tuple[float, float, float, bool]:
        sock: Any = FakeSocket(ancdata)
        stream = rx_stamps.StampedStream(sock, asyncio.get_running_loop(), True)
        before = time.perf_counter()
        assert await stream.read(64) == b"x"
        return before, time.perf_counter(), stream.stamp_s, stream.kernel

    return asyncio.run(go())


@needs_stamps
def test_a_read_takes_the_kernel_stamp_else_the_read_time() -> None:
    # Bytes the kernel stamped 2 s before `made`: the stamp is `made` - 2 s on perf_counter
    # (within 1 ms: the two clocks are sampled a few microseconds apart).
    made = time.perf_counter()
    ancdata = cmsg(time.time_ns() - 2_000_000_000)
    made_by = time.perf_counter()
    _, _, stamp, kernel = read_with(ancdata)
    assert kernel and made - 2.001 <= stamp <= made_by - 1.999
    for anc in ([], cmsg(time.time_ns() + 60_000_000_000)):  # no stamp; a stamp in the future
        before, after, stamp, kernel = read_with(anc)
        assert not kernel and before <= stamp <= after


@needs_stamps
def test_loopback_chunks_carry_kernel_stamps(monkeypatch: pytest.MonkeyPatch) -> None:
    processed: list[float] = []
    take = client._take

    def spy(c: Any, event: dict[str, Any], t: float, kernel: bool) -> None:
        processed.append(time.perf_counter())  # when the client got to this chunk
        take(c, event, t, kernel)

    monkeypatch.setattr(client, "_take", spy)
    script = [text_chunk("a", token_ids=[1]), ("sleep", 0.05), text_chunk("b", token_ids=[2]),
              ("sleep", 0.05), text_chunk("c", token_ids=[3]), *finish(None)]
    with scripted_server(script) as srv:
        # t0 = 0: stamps are perf_counter seconds, like `processed`.
        c = asyncio.run(run_jobs(srv["url"], [Job(0, [1], 3)], "m", t0=0.0, timeout_s=20))[0]
    assert c.error is None and c.stamp_source == "kernel" and c.kernel_stamps == 3
    token_processed = processed[:3]  # the token-bearing chunks come first
    assert all(c.sent_s <= s <= p for s, p in zip(c.chunk_s, token_processed))
    assert c.chunk_s == sorted(c.chunk_s)


def test_a_line_takes_the_stamp_of_the_read_that_completed_it() -> None:
    half = 'data: {"choices": [{"index": 0, "text": "a", '
    script = [("raw", half), ("sleep", 0.2), ("raw", '"finish_reason": null}]}\n\n'),
              *finish(None)]
    with scripted_server(script) as srv:
        c = asyncio.run(run_jobs(srv["url"], [Job(0, [1], 1)], "m", timeout_s=20))[0]
    assert c.error is None and c.text == "a"
    assert c.chunk_s[0] - c.sent_s >= 0.2  # the second half came after the pause


def test_crlf_lines_and_several_events_in_one_write() -> None:
    one = data({"choices": [{"index": 0, "text": "a", "finish_reason": None}]})[1]
    two = data({"choices": [{"index": 0, "text": "b", "finish_reason": None}]})[1]
    with scripted_server([("raw", f"{one}\r\n\r\n{two}\r\n\r\n"), *finish(None)]) as srv:
        c = asyncio.run(run_jobs(srv["url"], [Job(0, [1], 2)], "m", timeout_s=20))[0]
    assert c.error is None and c.text == "ab" and c.tokens == 2
    assert c.chunk_s[0] == c.chunk_s[1]  # one write, one read: one stamp


def test_the_row_note_says_how_chunks_were_stamped() -> None:
    assert client.sources_note({"usage", "kernel"}) == (
        "tokens counted from usage; chunks stamped at kernel receive (SO_TIMESTAMPNS)")
    assert client.sources_note({"token_ids", "usage", "read"}) == (
        "tokens counted from token_ids/usage; chunks stamped at read")
    assert client.sources_note({"chunks", "kernel", "read"}).endswith(
        "(SO_TIMESTAMPNS), some at read")
