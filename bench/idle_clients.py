#!/usr/bin/env python3
"""Idle keep-alive client connections for bench/idle-memory.sh.

Opens connections to 127.0.0.1:PORT in stages (--counts 1000,10000: 1,000 first, then 9,000
more). With --mode spoke each connection sends one complete `GET /` and reads the complete
response (Content-Length or chunked), then stays open and silent; with --mode silent it never
sends a byte; with --mode inflight it sends one `GET /` and waits (the proxy's upstream is
`--blackhole`, which never answers). At most --concurrency connections are being opened (or
have a request in flight) at once, so the proxy needs only that many upstream connections
(inflight aside).

`--blackhole --port PORT` instead runs an upstream that accepts connections, reads what they
send and never answers, until SIGTERM.

After each stage it prints `ready N` on stdout and waits: SIGUSR1 starts the next stage,
SIGTERM (or the end of the last stage's wait) checks every connection and closes them all.
Before exiting it prints `closed_by_peer K` (connections the proxy had closed before the
check; anything above 0 makes the measurement suspect) and `failed F`. Connections are
closed with an RST (SO_LINGER 0), so repeated runs do not fill the port range with
TIME_WAIT sockets.
"""

import argparse
import asyncio
import errno
import signal
import socket
import struct
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle-clients\r\n\r\n"


async def read_response(loop, sock):
    """Reads one HTTP/1.1 response to its end; raises if the peer closes first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            raise ConnectionError("closed before the response head ended")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        while not body.endswith(b"0\r\n\r\n"):
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise ConnectionError("closed inside a chunked body")
            body += chunk
    else:
        length = int(headers.get(b"content-length", b"-1"))
        if length < 0:
            raise ConnectionError("response without a length: the connection cannot stay open")
        while len(body) < length:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise ConnectionError("closed inside the body")
            body += chunk
    if headers.get(b"connection") == b"close":
        raise ConnectionError("the proxy answered Connection: close")


async def open_one(loop, port, mode, limit, socks, failures):
    async with limit:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            if mode in ("spoke", "inflight"):
                await loop.sock_sendall(sock, REQUEST)
            if mode == "spoke":
                await read_response(loop, sock)
        except (OSError, ConnectionError, ValueError) as error:
            failures.append(str(error))
            sock.close()
            return
        socks.append(sock)


def still_open(sock):
    """Whether the proxy has not closed (or reset) the connection; reads nothing it sent."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError as error:
        return error.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    return bool(data)


async def blackhole(port):
    """An upstream that reads every request and never answers."""

    async def swallow(reader, writer):
        while await reader.read(65536):
            pass
        writer.close()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(swallow, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    return 0


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--counts", default="1000,10000", help="cumulative totals, comma-separated")
    parser.add_argument("--mode", choices=("spoke", "silent", "inflight"), default="spoke")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--hold", type=float, default=600.0, help="longest wait per stage, seconds")
    parser.add_argument("--blackhole", action="store_true", help="run the silent upstream instead")
    args = parser.parse_args()
    if args.blackhole:
        return await blackhole(args.port)

    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    limit = asyncio.Semaphore(args.concurrency)
    socks, failures = [], []
    counts = [int(c) for c in args.counts.split(",")]
    for i, total in enumerate(counts):
        await asyncio.gather(
            *(open_one(loop, args.port, args.mode, limit, socks, failures) for _ in range(total - len(socks)))
        )
        if failures:
            print(f"failed {len(failures)} first: {failures[0]}", file=sys.stderr, flush=True)
            break
        print(f"ready {len(socks)}", flush=True)
        go.clear()
        waiters = [asyncio.ensure_future(stop.wait())]
        if i + 1 < len(counts):
            waiters.append(asyncio.ensure_future(go.wait()))
        await asyncio.wait(waiters, timeout=args.hold, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if stop.is_set():
            break
    closed = sum(1 for s in socks if not still_open(s))
    linger = struct.pack("ii", 1, 0)
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.close()
    print(f"closed_by_peer {closed}", flush=True)
    print(f"failed {len(failures)}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
