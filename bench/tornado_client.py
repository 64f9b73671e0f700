"""The same load as bench/client_bench.c through Tornado's AsyncHTTPClient (simple_httpclient).

    python3 bench/tornado_client.py URL [N=10000] [MAX_CLIENTS=50]

All N fetches are started at once; the client's queue keeps MAX_CLIENTS in flight. Prints one
line in client_bench's format.
"""
import sys
import time

from tornado import gen, ioloop
from tornado.httpclient import AsyncHTTPClient


async def main(url, n, max_clients):
    AsyncHTTPClient.configure("tornado.simple_httpclient.SimpleAsyncHTTPClient",
                              max_clients=max_clients)
    client = AsyncHTTPClient()
    t0 = time.monotonic()
    futures = [client.fetch(url, connect_timeout=120, request_timeout=120, raise_error=False)
               for _ in range(n)]
    responses = await gen.multi(futures)
    dt = time.monotonic() - t0
    failed = sum(1 for r in responses if r.code != 200)
    print("tornado-client %d requests, %d in flight: %.0f req/s (%.3f s, %d failed)"
          % (n, max_clients, n / dt, dt, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    url = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    m = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    sys.exit(ioloop.IOLoop.current().run_sync(lambda: main(url, n, m)))
