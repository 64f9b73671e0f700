#!/usr/bin/python3
"""Misbehaving HTTP clients for bench/soak.sh, bounded in count and time, all on 127.0.0.1.

    bench/misbehave.py PORT SECONDS [--slowloris N] [--resetters N] [--readless N] [--garbage N]

Kinds (each runs N concurrent workers, every one looping until SECONDS have passed):
  slowloris  opens a connection and trickles a request header one byte every 0.5-2 s, forever;
             reconnects when the server closes it (the server's header deadline should).
  resetters  connects, sends part of a request, a whole one, or a whole one and reads part of the
             reply, then closes with SO_LINGER 0 (an RST instead of a FIN).
  readless   sends 64 pipelined requests and never reads, holds the connection 5 s, closes.
  garbage    sends random bytes or malformed requests and waits for the first bytes back; counts
             the status lines (400s expected), connections closed without one, and stalls (neither
             within 10 s).
Prints one summary line per kind at the end: connections made, server closes seen, errors.
"""
import argparse
import asyncio
import os
import random
import socket
import struct
import sys
import time

REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: misbehave\r\n\r\n"
GARBAGE = [
    b"\x00\x01\x02\x03\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"b" * 70000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nHost\r\n\r\n",
]


class Stats:
    def __init__(self):
        self.conns = 0
        self.closed_by_server = 0
        self.statuses = 0
        self.errors = 0
        self.refused = 0
        self.stalled = []  # payloads that got neither a status line nor a close


def reset_close(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def connect(port, st):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        st.refused += 1
        await asyncio.sleep(0.2)
        return None, None
    st.conns += 1
    return r, w


async def slowloris(port, deadline, st):
    while time.monotonic() < deadline:
        r, w = await connect(port, st)
        if not w:
            continue
        data = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"s" * 100000
        try:
            for i in range(len(data)):
                if time.monotonic() >= deadline:
                    break
                w.write(data[i:i + 1])
                await w.drain()
                try:
                    got = await asyncio.wait_for(r.read(4096), random.uniform(0.5, 2.0))
                    if got == b"" or got:
                        st.closed_by_server += 1  # a 408/400 or a close: the server cut it off
                        break
                except asyncio.TimeoutError:
                    pass
        except (ConnectionError, OSError):
            st.closed_by_server += 1
        w.transport.abort()


async def resetter(port, deadline, st):
    while time.monotonic() < deadline:
        r, w = await connect(port, st)
        if not w:
            continue
        mode = random.randrange(3)
        try:
            if mode == 0:
                w.write(REQ[:random.randrange(1, len(REQ))])
            else:
                w.write(REQ * random.randrange(1, 8))
            await w.drain()
            if mode == 2:
                await asyncio.wait_for(r.read(random.randrange(1, 200)), 2.0)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            st.errors += 1
        reset_close(w)
        await asyncio.sleep(random.uniform(0, 0.05))


async def readless(port, deadline, st):
    while time.monotonic() < deadline:
        r, w = await connect(port, st)
        if not w:
            continue
        try:
            w.write(REQ * 64)
            await w.drain()
            await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        except (ConnectionError, OSError):
            st.closed_by_server += 1
        w.transport.abort()


async def garbage(port, deadline, st):
    while time.monotonic() < deadline:
        r, w = await connect(port, st)
        if not w:
            continue
        if random.random() < 0.5:
            payload = random.choice(GARBAGE)
        else:
            payload = os.urandom(random.randrange(1, 4096)) + b"\r\n\r\n"
        try:
            w.write(payload)
            await w.drain()
            # A status line or a close, whichever comes first (a request the server found
            # acceptable may get a keep-alive answer: that is an answer too).
            got = await asyncio.wait_for(r.read(4096), 10.0)
            if got.startswith(b"HTTP/1."):
                st.statuses += 1
            else:
                st.closed_by_server += 1
        except asyncio.TimeoutError:
            st.errors += 1  # neither a status nor a close within 10 s: a stall
            if len(st.stalled) < 3:
                st.stalled.append(payload[:60])
        except (ConnectionError, OSError):
            st.closed_by_server += 1
        w.transport.abort()
        await asyncio.sleep(random.uniform(0, 0.1))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("seconds", type=float)
    ap.add_argument("--slowloris", type=int, default=16)
    ap.add_argument("--resetters", type=int, default=4)
    ap.add_argument("--readless", type=int, default=4)
    ap.add_argument("--garbage", type=int, default=4)
    a = ap.parse_args()
    deadline = time.monotonic() + a.seconds
    kinds = {"slowloris": (slowloris, a.slowloris), "resetters": (resetter, a.resetters),
             "readless": (readless, a.readless), "garbage": (garbage, a.garbage)}
    stats = {k: Stats() for k in kinds}
    tasks = [asyncio.ensure_future(fn(a.port, deadline, stats[k]))
             for k, (fn, n) in kinds.items() for _ in range(n)]
    await asyncio.gather(*tasks, return_exceptions=True)
    for k, s in stats.items():
        print(f"misbehave {k}: connections {s.conns}, server closes {s.closed_by_server}, "
              f"status lines {s.statuses}, refused {s.refused}, errors {s.errors}"
              + (f", stalled on {s.stalled!r}" if s.stalled else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
