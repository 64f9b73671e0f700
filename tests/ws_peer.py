#!/usr/bin/python3
"""WebSocket peers for the interop suite (tests/test_ws_interop.c), on Debian's python3-websockets
and python3-tornado.

    ws_peer.py client-websockets URL [deflate|plain]   drive an echo endpoint, exit 0 when right
    ws_peer.py client-tornado URL [deflate|plain]
    ws_peer.py server-websockets [deflate|plain]       echo server; prints "PORT <n>" when ready
    ws_peer.py server-tornado [deflate|plain]

A client sends text (ASCII, multi-byte UTF-8, empty) and binary messages at every length
boundary (125/126/127, 65535/65536, 1 MiB), checks each echo byte for byte and type for type,
pings, then closes with 1000 and checks the close code it gets back. Exit status 77: the library
is missing (the suite reports the test skipped).
"""
import asyncio
import sys

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20]


def messages():
    yield "hello"
    yield ""
    yield "κόσμε 😀 " * 100
    for n in SIZES:
        yield bytes((i * 7 + 1) & 0xFF for i in range(n))
    yield "x" * 70000


def fail(why):
    print("FAIL: " + why, flush=True)
    sys.exit(1)


async def client_websockets(url, deflate):
    import websockets

    async with websockets.connect(
        url, compression="deflate" if deflate else None, max_size=None, ping_interval=None
    ) as ws:
        agreed = [e.name for e in ws.extensions]
        if deflate != ("permessage-deflate" in agreed):
            fail("extensions agreed: %r" % agreed)
        for m in messages():
            await ws.send(m)
            got = await ws.recv()
            if type(got) is not type(m) or got != m:
                fail("echo of a %s message of %d" % (type(m).__name__, len(m)))
        pong = await ws.ping(b"ping-data")
        await asyncio.wait_for(pong, 5)
        await ws.close(1000, "bye")
        if ws.close_code != 1000:
            fail("close code %r" % ws.close_code)


async def client_tornado(url, deflate):
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(
        url, compression_options={} if deflate else None, max_message_size=1 << 30
    )
    if deflate != (ws.protocol._compressor is not None):
        fail("compression negotiated: %r" % (ws.protocol._compressor is not None))
    for m in messages():
        await ws.write_message(m, binary=isinstance(m, bytes))
        got = await ws.read_message()
        if type(got) is not type(m) or got != m:
            fail("echo of a %s message of %d" % (type(m).__name__, len(m)))
    ws.close(1000, "bye")
    while await ws.read_message() is not None:
        pass
    if ws.close_code != 1000:
        fail("close code %r" % ws.close_code)


async def server_websockets(deflate):
    import websockets

    async def echo(ws, path=None):
        try:
            async for m in ws:
                await ws.send(m)
        except websockets.ConnectionClosed:
            pass

    async with websockets.serve(
        echo, "127.0.0.1", 0, compression="deflate" if deflate else None, max_size=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print("PORT %d" % port, flush=True)
        await asyncio.Future()


async def server_tornado(deflate):
    import tornado.web
    import tornado.websocket

    class Echo(tornado.websocket.WebSocketHandler):
        def get_compression_options(self):
            return {} if deflate else None

        def on_message(self, m):
            self.write_message(m, binary=isinstance(m, bytes))

    app = tornado.web.Application([("/ws", Echo)], websocket_max_message_size=1 << 30)
    server = app.listen(0, "127.0.0.1")
    port = list(server._sockets.values())[0].getsockname()[1]
    print("PORT %d" % port, flush=True)
    await asyncio.Future()


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    role, args = sys.argv[1], sys.argv[2:]
    try:
        if role.endswith("websockets"):
            import websockets  # noqa: F401
        else:
            import tornado  # noqa: F401
    except ImportError:
        return 77
    if role.startswith("client-"):
        deflate = len(args) < 2 or args[1] == "deflate"
        fn = client_websockets if role == "client-websockets" else client_tornado
        asyncio.run(asyncio.wait_for(fn(args[0], deflate), 60))
        print("OK", flush=True)
        return 0
    deflate = not args or args[0] == "deflate"
    fn = server_websockets if role == "server-websockets" else server_tornado
    asyncio.run(fn(deflate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
