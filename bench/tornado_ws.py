#!/usr/bin/python3
"""Tornado's WebSocket echo, the Python peer of bench/ws_bench.sh.

    /usr/bin/python3 bench/tornado_ws.py [PORT]     (default 8882)

GET /ws echoes each message as it came (text as text, binary as binary), without compression
(the benchmark client does not offer it); access logging is off.
"""
import asyncio
import logging
import sys

import tornado.web
import tornado.websocket


class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message(message, binary=isinstance(message, bytes))


async def main(port):
    logging.getLogger("tornado.access").disabled = True
    app = tornado.web.Application([(r"/ws", Echo)], websocket_max_message_size=16 << 20)
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8882))
