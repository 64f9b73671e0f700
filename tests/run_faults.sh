#!/bin/sh
# Builds the library with the fault-injection seam (build-fault/, -DGALE_FAULT_INJECTION=ON) and
# runs every suite under transparent faults: short counts, EAGAIN and EINTR on recv and send,
# EAGAIN, EINTR and EMFILE on accept; once per loop backend in GALE_BACKENDS (default "epoll
# uring"; GALE_FAULT_URING_SKIP, a ctest -E regex, leaves suites out of the uring pass).
# None of them may change what a peer sees, so every suite must pass as in a normal build. Faults that end a connection (ECONNRESET, ENOMEM) are covered by
# tests/test_fault.c with targeted plans.
#   tests/run_faults.sh [builddir]          # seeds 1 and 2
#   GALE_FAULT_SEEDS="7 8 9" tests/run_faults.sh
#   GALE_BACKENDS=uring tests/run_faults.sh
#   GALE_FAULTS="recv:short=0.5" tests/run_faults.sh   # another plan
#   GALE_SANITIZE=1 tests/run_faults.sh build-fault-asan
set -eu
cd "$(dirname "$0")/.."
builddir=${1:-build-fault}
sanitize=OFF
[ "${GALE_SANITIZE:-0}" = 1 ] && sanitize=ON
plan=${GALE_FAULTS:-"recv:eagain=0.1,eintr=0.05,short=0.25;send:eagain=0.1,eintr=0.05,short=0.3;\
accept:eagain=0.1,eintr=0.05,emfile=0.02"}

cmake -S . -B "$builddir" -DCMAKE_BUILD_TYPE=Debug -DGALE_FAULT_INJECTION=ON \
    -DGALE_SANITIZE=$sanitize >/dev/null
cmake --build "$builddir" -j2
status=0
for backend in ${GALE_BACKENDS:-epoll uring}; do
    # On io_uring the faults reach the operations too: receives and sends just before their
    # submission, accepts at their completions (core/loop_uring_fault.c, net/tcpserver_uring.c).
    ran=$(GALE_LOOP_BACKEND=$backend "$builddir/tests/test_loop" --backend)
    select=""
    [ "$backend" = uring ] && [ -n "${GALE_FAULT_URING_SKIP:-}" ] && select="-E $GALE_FAULT_URING_SKIP"
    for seed in ${GALE_FAULT_SEEDS:-1 2}; do
        echo "== GALE_LOOP_BACKEND=$backend (the loop runs on $ran) GALE_FAULTS=\"$plan\" GALE_FAULT_SEED=$seed"
        GALE_LOOP_BACKEND=$backend GALE_FAULTS="$plan" GALE_FAULT_SEED=$seed \
            ctest --test-dir "$builddir" --output-on-failure -j2 $select || status=1
    done
done
exit $status
