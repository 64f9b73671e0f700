#!/usr/bin/python3
"""Drives apps/demo with Python's http.client, a client gale did not write, over one keep-alive
connection where HTTP allows it.

    /usr/bin/python3 tests/demo_client.py PORT

Prints one line per check and "checks passed: N"; exits 1 on the first failure. Run by
tests/test_demo.c (test_demo_python_http_client_interop).
"""
import http.client
import sys


def main(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    passed = 0

    def check(name, cond, detail=""):
        nonlocal passed
        if not cond:
            print("FAIL %s %s" % (name, detail))
            sys.exit(1)
        passed += 1
        print("ok %s" % name)

    def get(method, path, body=None, headers=None):
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp, resp.read()

    resp, body = get("GET", "/")
    check("root", resp.status == 200 and body == b"Hello, world!", (resp.status, body))

    resp, body = get("GET", "/user/31337")
    check("user", resp.status == 200 and body == b"user 31337", (resp.status, body))

    resp, body = get("GET", "/greet?name=%E2%9C%93+ok")
    check("greet", resp.status == 200 and body == "Hello, \u2713 ok!".encode(), (resp.status, body))

    payload = bytes(range(256)) * 64
    resp, body = get("POST", "/echo", payload, {"Content-Type": "application/x-bytes"})
    check("echo", resp.status == 200 and body == payload
          and resp.getheader("Content-Type") == "application/x-bytes",
          (resp.status, len(body), resp.getheader("Content-Type")))

    # http.client sends an iterable body with Transfer-Encoding: chunked.
    resp, body = get("PUT", "/echo", iter([b"py", b"thon", b" chunked"]))
    check("echo chunked", resp.status == 200 and body == b"python chunked"
          and resp.getheader("Content-Type") == "application/octet-stream",
          (resp.status, body, resp.getheader("Content-Type")))

    resp, body = get("GET", "/stream?chunks=5")
    want = b"".join(b"chunk %d\n" % i for i in range(1, 6))
    check("stream", resp.status == 200 and resp.chunked and body == want, (resp.status, body))

    resp, body = get("HEAD", "/greet?name=x")
    check("head", resp.status == 200 and body == b""
          and resp.getheader("Content-Length") == str(len(b"Hello, x!")),
          (resp.status, body, resp.getheader("Content-Length")))

    resp, body = get("GET", "/redirect?to=/user/2")
    check("redirect", resp.status == 302 and resp.getheader("Location") == "/user/2",
          (resp.status, resp.getheader("Location")))

    resp, body = get("GET", "/header/X-Py", headers={"X-Py": "snake"})
    check("header", resp.status == 200 and body == b"snake", (resp.status, body))

    resp, body = get("GET", "/status/404")
    check("status", resp.status == 404 and resp.reason == "Not Found" and body == b"status 404",
          (resp.status, resp.reason, body))

    conn.close()
    print("checks passed: %d" % passed)


if __name__ == "__main__":
    main(int(sys.argv[1]))
