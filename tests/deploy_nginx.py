#!/usr/bin/env python3
"""deploy/nginx.conf, run for real: a foreground nginx with that file (paths and the listen port
substituted, nothing else) in front of two `demo --unix-socket ... --xheaders` processes, all in a
temporary directory. Checks:

  a. the client address gale sees through the proxy is the client's (X-Real-IP), not the
     0.0.0.0 a unix socket gives;
  b. nginx keeps its connections to the processes alive: many requests, few connections (the
     gale-side sockets are read from /proc/net/unix after every response);
  c. requests are spread over both processes (both access logs);
  d. SIGTERM to one process under a load of requests loses none: every request is answered 200
     with the right body, the other process takes over, the stopped one exits 0.

Exits 0 on success, 1 on failure, 77 (skipped) when nginx is not installed. Never touches the
system's nginx service or its files. Environment: GALE_BIN_DIR (the demo binary), GALE_SOURCE_DIR.
"""
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
SRC = os.environ.get("GALE_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..")
BIN = os.environ.get("GALE_BIN_DIR") or os.path.join(SRC, "build", "bin")


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wait_until(pred, timeout, what):
    """Polls pred() until it is true or `timeout` seconds pass (then fails naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() > deadline:
            raise Failure("timed out waiting for " + what)
        time.sleep(0.01)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def derive_config(tmp, port):
    """deploy/nginx.conf with its machine-specific parts pointed into `tmp`: every substitution
    must find its text, so the tested file is the documented one."""
    with open(os.path.join(SRC, "deploy", "nginx.conf")) as f:
        conf = f.read()
    temps = "".join(
        "    %s_temp_path %s/%s;\n" % (k, tmp, k) for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    subs = [
        # nginx running as root (CI) switches its workers to `user`; keep them able to reach
        # the sockets, which belong to the user running this test.
        ("user www-data;", "user root;" if os.geteuid() == 0 else ""),
        ("/var/log/nginx/", tmp + "/"),
        ("/run/nginx.pid", tmp + "/nginx.pid"),
        ("/run/gale/", tmp + "/"),
        ("listen 80;", "listen 127.0.0.1:%d;" % port),
        # Temporary files under tmp too, not the packaged /var/lib/nginx.
        ("http {\n", "http {\n" + temps),
    ]
    for old, new in subs:
        check(old in conf, "deploy/nginx.conf no longer contains %r: update tests/deploy_nginx.py" % old)
        conf = conf.replace(old, new)
    code = "\n".join(line.split("#")[0] for line in conf.replace(tmp, "TMP").splitlines())
    check("/var/" not in code and "/run/" not in code and "/etc/" not in code,
          "a system path is left:\n" + code)
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def connect_unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def gale_side_sockets(paths):
    """Inodes of connected sockets bound to `paths`: the connections the gale processes accepted
    (a client's end is unbound; the listening socket is not connected)."""
    found = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path
            if len(fields) >= 8 and fields[7] in paths and fields[5] == "03":
                found.add(fields[6])
    return found


class Gale:
    def __init__(self, tmp, n):
        self.sock = os.path.join(tmp, "gale-%d.sock" % n)
        self.log_path = os.path.join(tmp, "gale-%d.log" % n)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "demo"), "--unix-socket", self.sock, "--xheaders", "--shutdown-timeout", "5"],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        wait_until(lambda: self.proc.poll() is not None or connect_unix(self.sock), 10, "demo on " + self.sock)
        check(self.proc.poll() is None, "demo on %s exited: %s" % (self.sock, self.text()))

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def served(self, pattern):
        return len(re.findall(pattern, self.text()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def request(conn, path):
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read().decode("latin-1")


def run(tmp):
    port = free_port()
    conf = derive_config(tmp, port)
    gales = [Gale(tmp, 1), Gale(tmp, 2)]
    socks = {g.sock for g in gales}
    nginx = subprocess.Popen(
        [NGINX, "-p", tmp + "/", "-c", conf, "-e", os.path.join(tmp, "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: nginx.poll() is not None or can_connect(port), 10, "nginx on port %d" % port)
        check(nginx.poll() is None, "nginx exited %s" % nginx.returncode)

        # a. The client address through the proxy. The client binds 127.0.0.2 when it can, so
        # the answer cannot be a constant that merely happens to match.
        client_ip = "127.0.0.2"
        try:
            probe = socket.socket()
            probe.bind((client_ip, 0))
            probe.close()
        except OSError:
            client_ip = "127.0.0.1"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(client_ip, 0))
        status, body = request(conn, "/ip")
        check((status, body) == (200, client_ip), "GET /ip through nginx: %s %r, want %s" % (status, body, client_ip))
        direct = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        direct.connect(gales[0].sock)
        direct.sendall(b"GET /ip HTTP/1.0\r\nHost: x\r\n\r\n")
        raw = b""
        while True:
            chunk = direct.recv(4096)
            if not chunk:
                break
            raw += chunk
        direct.close()
        check(raw.endswith(b"\r\n\r\n0.0.0.0"), "GET /ip on the unix socket directly: %r" % raw)
        print("a. client address through nginx: %s (directly on the unix socket: 0.0.0.0)" % body)

        # b. Keep-alive to the upstream. After every response no request is in flight, so any
        # connected gale-side socket is one nginx keeps for the next request; without upstream
        # keep-alive there would be none, and a new one per request.
        nreq = 40
        seen = set()
        idle_kept = 0
        for i in range(nreq):
            status, body = request(conn, "/user/%d" % i)
            check((status, body) == (200, "user %d" % i), "GET /user/%d: %s %r" % (i, status, body))
            now = gale_side_sockets(socks)
            seen |= now
            idle_kept += bool(now)
        conn.close()
        print("b. %d requests over %d upstream connections; kept open after %d of %d responses" % (nreq, len(seen), idle_kept, nreq))
        check(idle_kept == nreq, "no upstream connection kept open after %d of %d responses" % (nreq - idle_kept, nreq))
        check(len(seen) <= nreq // 4, "%d upstream connections for %d requests: no keep-alive" % (len(seen), nreq))

        # c. Both processes served some of them (access lines are flushed when a loop idles).
        pat = r"access\] 200 GET /user/\d+ \(%s\)" % re.escape(client_ip)
        wait_until(lambda: sum(g.served(pat) for g in gales) == nreq, 5, "%d access log lines" % nreq)
        counts = [g.served(pat) for g in gales]
        print("c. requests per process: %s" % counts)
        check(all(c > 0 for c in counts), "load not spread: %s" % counts)
        check(all(g.served(r"GET /user/\d+ \(0\.0\.0\.0\)") == 0 for g in gales),
              "a proxied request's access line shows the unix socket's 0.0.0.0, not the client")

        # w. A WebSocket through nginx: the upgrade reaches a process, and a frame comes back.
        ws = socket.create_connection(("127.0.0.1", port), timeout=10)
        ws.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = ws.recv(1)
            check(chunk, "the WebSocket handshake through nginx ended early: %r" % head)
            head += chunk
        check(head.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head,
              "WebSocket handshake through nginx: %r" % head)
        mask = b"\x01\x02\x03\x04"
        ws.sendall(b"\x81\x85" + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(b"hello")))
        echo = b""
        while len(echo) < 7:
            chunk = ws.recv(7 - len(echo))
            check(chunk, "no WebSocket echo through nginx: %r" % echo)
            echo += chunk
        check(echo == b"\x81\x05hello", "WebSocket echo through nginx: %r" % echo)
        ws.close()
        print("w. WebSocket /ws through nginx: 101 and the echo")

        # d. SIGTERM to process 1 while 8 clients each send 60 requests (some of them waiting on
        # a timer, so requests are in flight when the signal lands).
        nthreads, per_thread = 8, 60
        total = nthreads * per_thread
        results, errors = [], []
        lock = threading.Lock()
        done = [0]

        def client(t):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            for i in range(per_thread):
                path = "/delay?ms=5" if i % 3 == 0 else "/user/%d" % (t * 1000 + i)
                want = "waited 5 ms" if i % 3 == 0 else "user %d" % (t * 1000 + i)
                try:
                    r = request(c, path)
                except Exception as e:  # a lost request: the point of the check
                    r = (None, repr(e))
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
                with lock:
                    done[0] += 1
                    if r != (200, want):
                        errors.append((path, r))
                    results.append(r[0])
            c.close()

        before = [g.served(r"access\] ") for g in gales]
        threads = [threading.Thread(target=client, args=(t,)) for t in range(nthreads)]
        for t in threads:
            t.start()
        wait_until(lambda: done[0] >= total // 3, 20, "a third of the load")
        gales[0].proc.send_signal(signal.SIGTERM)
        killed_at = done[0]
        for t in threads:
            t.join(60)
        check(not any(t.is_alive() for t in threads), "load clients did not finish")
        rc1 = gales[0].proc.wait(timeout=15)
        print("d. SIGTERM to process 1 after %d of %d responses; it exited %d" % (killed_at, total, rc1))
        check(not errors, "%d of %d requests failed, e.g. %s" % (len(errors), total, errors[:5]))
        check(len(results) == total and all(s == 200 for s in results), "not every request answered 200")
        check(rc1 == 0, "process 1 exited %d after SIGTERM" % rc1)
        after = [g.served(r"access\] ") for g in gales]
        wait_until(lambda: gales[1].served(r"access\] ") > before[1], 5, "process 2's log")
        after = [g.served(r"access\] ") for g in gales]
        print("   requests per process during the load: %s (all %d answered 200)" % ([a - b for a, b in zip(after, before)], total))
        check(after[0] > before[0], "process 1 served none of the load before it stopped")
        # Process 2 answered everything process 1 did not.
        wait_until(lambda: sum(g.served(r"access\] ") for g in gales) - sum(before) >= total, 5, "every request in the logs")

        # Process 2 alone still serves through nginx.
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        check(request(c, "/") == (200, "Hello, world!"), "GET / after process 1 stopped")
        c.close()
    finally:
        if nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)  # graceful: workers finish and exit
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        for g in gales:
            g.stop()
    rc2 = gales[1].proc.returncode
    check(rc2 == 0, "process 2 exited %d after SIGTERM" % rc2)


def main():
    global NGINX
    NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if not NGINX:
        print("SKIP: nginx is not installed (apt-get install -y nginx); deploy/nginx.conf untested")
        return SKIP
    demo = os.path.join(BIN, "demo")
    if not os.access(demo, os.X_OK):
        print("FAIL: no demo binary at %s (set GALE_BIN_DIR)" % demo)
        return 1
    tmp = tempfile.mkdtemp(prefix="gale-nginx-")
    os.chmod(tmp, 0o755)
    start = time.monotonic()
    try:
        run(tmp)
    except Failure as e:
        print("FAIL:", e)
        for name in ("error.log", "access.log", "gale-1.log", "gale-2.log"):
            p = os.path.join(tmp, name)
            if os.path.exists(p):
                with open(p) as f:
                    lines = f.read().splitlines()
                print("---- %s (last 15 of %d lines)" % (name, len(lines)))
                print("\n".join(lines[-15:]))
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ok: deploy/nginx.conf in front of two gale processes (%.1f s)" % (time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
