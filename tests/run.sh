#!/bin/sh
# Installs what the build and the suites need (Debian 12, as root), builds, and runs every suite.
#   tests/run.sh                 # build/ , RelWithDebInfo
#   GALE_SANITIZE=1 tests/run.sh build-asan   # AddressSanitizer + UndefinedBehaviorSanitizer
# The suites run once per loop backend in GALE_BACKENDS (default "epoll uring": every suite on the
# default loop, then again with GALE_LOOP_BACKEND=uring; where io_uring is unavailable that pass
# says so and runs on epoll).
set -eu
cd "$(dirname "$0")/.."
builddir=${1:-build}

pkgs="build-essential cmake pkg-config libhttp-parser-dev libjansson-dev libssl-dev openssl zlib1g-dev liburing-dev check curl python3 nginx python3-websockets python3-tornado"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages:$missing (run as root or install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

sanitize=OFF
[ "${GALE_SANITIZE:-0}" = 1 ] && sanitize=ON
cmake -S . -B "$builddir" -DGALE_SANITIZE=$sanitize -DGALE_ASSERTS=ON >/dev/null
cmake --build "$builddir" -j"$(nproc)"
# Suites bind their own ports (port 0) and may run side by side.
for backend in ${GALE_BACKENDS:-epoll uring}; do
    ran=$(GALE_LOOP_BACKEND=$backend "$builddir/tests/test_loop" --backend)
    echo "== suites with GALE_LOOP_BACKEND=$backend: the loop runs on $ran"
    GALE_LOOP_BACKEND=$backend ctest --test-dir "$builddir" --output-on-failure -j2
done
