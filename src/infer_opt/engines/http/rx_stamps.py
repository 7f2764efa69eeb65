"""Receive stamps: when the kernel received a stream's bytes, not when Python got to them.

Why. The streaming client measures a server by when each token arrives. Stamping a line when
Python gets to it adds the client's own queueing to every stamp: with 32 streams, 32 chunks
arrive together and are parsed one after another, so the last is stamped milliseconds after
it arrived (bench/checks/client_timing.py measured a p99 of 11 ms). The kernel stamps every
packet it receives; `SO_TIMESTAMPNS` hands that stamp to `recvmsg`, so a chunk's stamp no longer
depends on how busy the client was.

`StampingBackend` is an httpcore network backend: plain TCP sockets on the running asyncio loop
(non-blocking, TCP_NODELAY, `SO_TIMESTAMPNS` where the platform has it). Each read of a
`StampedStream` records `stamp_s`, perf_counter seconds of the newest bytes it returned (for
TCP the kernel reports the stamp of the last segment copied), and `kernel`, whether that is
the kernel's stamp or, where there is none, the time `recvmsg` returned. httpcore reads the
socket only when its HTTP parser needs more bytes, so the bytes that complete a line arrived
in the latest read, and the caller stamps the line with `stamp_s`.

The kernel's stamp is CLOCK_REALTIME. It is turned into the suite's clock (perf_counter) by
the age of the bytes at the read, realtime now minus the stamp, sampled with perf_counter
bracketing the realtime sample: a clock step between two reads then cannot skew a run, and a
stamp that is later than the read or more than `MAX_AGE_S` before it (a step during the read)
is not used (the read time is). TLS is not done here (the caller uses httpcore's own backend
for https, stamped at read): kernel stamps are for the loopback / LAN benchmark path.
"""

from __future__ import annotations

import asyncio
import platform
import select
import socket
import struct
import sys
import time
from collections.abc import Iterable
from typing import Any

import httpcore

MAX_AGE_S = 5.0
# struct timespec: two native longs (tv_sec, tv_nsec).
TIMESPEC = struct.Struct("ll")
# Python's socket module does not name SO_TIMESTAMPNS; 35 is its value (and SCM_TIMESTAMPNS's)
# in asm-generic/socket.h, which these architectures use (sparc, parisc, alpha differ).
_GENERIC_ABI = ("x86_64", "i386", "i686", "aarch64", "arm64", "armv7l", "armv8l", "riscv64",
                "ppc64le", "ppc64", "s390x", "loongarch64")
SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", None) or (
    35 if sys.platform.startswith("linux") and platform.machine() in _GENERIC_ABI else None)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
ANCBUF = socket.CMSG_SPACE(TIMESPEC.size) if SO_TIMESTAMPNS is not None else 0


def supported() -> bool:
    """Whether this platform's asyncio loop can run the backend (readiness callbacks and
    recvmsg: not Windows' proactor loop)."""
    return sys.platform != "win32" and hasattr(socket.socket, "recvmsg")


def kernel_stamp(ancdata: Iterable[tuple[int, int, bytes]], read_s: float,
                 read_realtime_ns: int) -> float | None:
    """The kernel's receive stamp in `recvmsg`'s ancillary data as perf_counter seconds, given
    the read's perf_counter time and realtime (ns) taken together; None when there is no stamp
    or it is later than the read or more than MAX_AGE_S before it."""
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and \
                len(payload) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(payload)
            age_ns = read_realtime_ns - (sec * 1_000_000_000 + nsec)  # integers: no rounding
            if 0 <= age_ns <= MAX_AGE_S * 1e9:
                return read_s - age_ns / 1e9
    return None


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future[None], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(httpcore.ReadTimeout(f"no data for {timeout:g} s"))


class StampedStream(httpcore.AsyncNetworkStream):
    """A connected non-blocking TCP socket; `stamp_s` and `kernel` describe the latest read."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop,
                 kernel_stamps: bool) -> None:
        self._sock, self._loop = sock, loop
        self._ancbuf = ANCBUF if kernel_stamps else 0
        self.stamp_s = time.perf_counter()
        self.kernel = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        sock = self._sock
        while True:
            try:
                data, ancdata, _, _ = sock.recvmsg(max_bytes, self._ancbuf)
                break
            except (BlockingIOError, InterruptedError):
                await self._readable(timeout)
            except OSError as exc:
                raise httpcore.ReadError(str(exc)) from exc
        before = time.perf_counter()
        realtime_ns = time.time_ns()
        read_s = (before + time.perf_counter()) / 2
        stamp = kernel_stamp(ancdata, read_s, realtime_ns) if ancdata else None
        self.stamp_s, self.kernel = (read_s, False) if stamp is None else (stamp, True)
        return data

    async def _readable(self, timeout: float | None) -> None:
        """Wait until the socket has data (or EOF); the reader is removed as soon as it fired,
        so an idle connection costs the loop nothing."""
        fd = self._sock.fileno()
        if fd < 0:
            raise httpcore.ReadError("the connection is closed")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(fd, _wake, fut)
        timer = None if timeout is None else self._loop.call_later(timeout, _expire, fut,
                                                                   timeout)
        try:
            await fut
        finally:
            self._loop.remove_reader(fd)
            if timer is not None:
                timer.cancel()

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            await asyncio.wait_for(self._loop.sock_sendall(self._sock, buffer), timeout)
        except asyncio.TimeoutError as exc:  # before OSError: on 3.11+ it is one
            raise httpcore.WriteTimeout(f"could not send for {timeout:g} s") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._sock.close()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("StampingBackend does not do TLS: use httpcore's "
                                           "own backend for https")

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        if info == "socket":
            return sock
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "is_readable":  # an idle pooled connection the server has closed
            if sock.fileno() < 0:
                return True
            if hasattr(select, "poll"):  # select() cannot take descriptors >= 1024
                poll = select.poll()
                poll.register(sock, select.POLLIN)
                return bool(poll.poll(0))
            return bool(select.select([sock], [], [], 0)[0])
        return None


class StampingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend for plain TCP, giving `StampedStream`s."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                self._connect(loop, host, port, local_address, list(socket_options or ())),
                timeout)
        except asyncio.TimeoutError as exc:  # before OSError: on 3.11+ it is one
            raise httpcore.ConnectTimeout(f"no connection in {timeout:g} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc

    async def _connect(self, loop: asyncio.AbstractEventLoop, host: str, port: int,
                       local_address: str | None, options: list[Any]) -> StampedStream:
        try:  # a numeric address needs no resolver thread
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"no address for {host}:{port}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                kernel = False
                if SO_TIMESTAMPNS is not None:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                        kernel = True
                    except OSError:
                        pass  # stamped at read
                for option in options:
                    sock.setsockopt(*option)
                if local_address:
                    sock.bind((local_address, 0))
                await loop.sock_connect(sock, address)
                return StampedStream(sock, loop, kernel)
            except OSError as exc:
                sock.close()
                error = exc
            except BaseException:
                sock.close()
                raise
        raise error

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
