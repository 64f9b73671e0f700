#!/bin/bash
# gale on epoll, the same hello on io_uring (GALE_LOOP_BACKEND=uring) and libuv's hello in one
# interleaved, pinned run: bench/http_ab.sh with those three servers (it stops if the uring
# server fell back to epoll). Add the bare epoll floor with BENCH_SERVERS="gale uring uv limit".
#
#     bench/uring_ab.sh [SECONDS] [ROUNDS] [pipe|plain]        (defaults: 3, 9, plain)
BENCH_SERVERS=${BENCH_SERVERS:-gale uring uv} exec "$(dirname "$0")/http_ab.sh" "$@"
