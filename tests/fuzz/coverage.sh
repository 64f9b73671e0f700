#!/bin/sh
# Line and branch coverage of the library reached by the fuzz corpora: builds the replay
# executables with clang source-based coverage, replays tests/fuzz/corpus/<target> plus the corpus
# a fuzzing run grew ($FUZZ_BUILD_DIR/fuzz-corpus/<target>, default build-fuzz), and prints
# llvm-cov's report for the files each target exercises.
#
#   tests/fuzz/coverage.sh [TARGET...]      targets: form iostream http chunked client tls
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
targets=${*:-form iostream http chunked client tls}
build=${BUILD_DIR:-$src/build-fuzzcov}
grown=${FUZZ_BUILD_DIR:-$src/build-fuzz}/fuzz-corpus
profdata=$(command -v llvm-profdata-14 || command -v llvm-profdata)
cov=$(command -v llvm-cov-14 || command -v llvm-cov)

CC=${CC:-clang} cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS="-fprofile-instr-generate -fcoverage-mapping" \
    -DCMAKE_EXE_LINKER_FLAGS="-fprofile-instr-generate" >/dev/null
for t in $targets; do
    cmake --build "$build" -j2 --target "fuzz_${t}_replay" >/dev/null
    dirs="$here/corpus/$t"
    [ -d "$grown/$t" ] && dirs="$dirs $grown/$t"
    rm -f "$build/$t.profraw"
    # shellcheck disable=SC2086
    LLVM_PROFILE_FILE="$build/$t.profraw" \
        "$build/tests/fuzz/fuzz_${t}_replay" $dirs >/dev/null
    "$profdata" merge -o "$build/$t.profdata" "$build/$t.profraw"
    case $t in
    form) files="http/form.c" ;;
    iostream) files="net/iostream.c core/buffer.c" ;;
    http | chunked) files="http/httpserver.c http/web.c http/form.c net/iostream.c" ;;
    client) files="http/httpclient.c net/iostream.c net/tcpclient.c" ;;
    tls) files="net/tls.c net/iostream_tls.c net/iostream.c" ;;
    *) files= ;;
    esac
    echo "== $t"
    # shellcheck disable=SC2086
    "$cov" report "$build/tests/fuzz/fuzz_${t}_replay" -instr-profile="$build/$t.profdata" \
        $(for f in $files; do printf '%s ' "$src/$f"; done) | sed "s|$src/||"
done
