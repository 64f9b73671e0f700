#!/usr/bin/python3
"""Tornado's canonical hello world, the peer gale's hello is compared with.

    /usr/bin/python3 bench/tornado_hello.py [PORT]     (default 8881)

Logging is off (Tornado logs access lines only when logging is configured; nothing here
configures it), so the measurement is the framework, not the log formatter.
"""
import asyncio
import logging
import sys

import tornado.web


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello, world!")


def make_app():
    return tornado.web.Application([(r"/", MainHandler)])


async def main(port):
    logging.getLogger("tornado.access").disabled = True
    app = make_app()
    app.listen(port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8881))
