#!/bin/sh
#
# run.sh
#     Build and run the tests of src/crypto/signature.c without the server: the
#     unit driver (gcc, warnings as errors, then again under ASan/UBSan),
#     a compile of signature.c with the server's own flags, and the libFuzzer
#     target under ASan/UBSan.
#
# Usage: test/fuzz/run.sh [SECONDS]      (fuzzing time, default 30; 0 skips)
#
# Environment:
#     VECTORS    the JSON vectors (default test/plivo-signature-vectors.json)
#     CC         compiler for the unit driver (default gcc)
#     FUZZ_CC    compiler for the fuzz target (default clang-14)
#     PG_CONFIG  pg_config for the server-flags compile (skipped if absent)
#     BUILD_DIR  where binaries and the working corpus go
#                (default test/fuzz/build, ignored by git)
#     WERROR     set to 0 to let compiler warnings through
#
# Needs gcc, clang-14 and libclang-rt-14-dev (libFuzzer and the sanitizer
# runtimes), libssl-dev and python3.  Exits non-zero on any failure.

set -eu

seconds=${1:-30}
case $seconds in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
src=$top/src
build=${BUILD_DIR:-$here/build}
vectors=${VECTORS:-$top/test/plivo-signature-vectors.json}
cc=${CC:-gcc}
fuzz_cc=${FUZZ_CC:-clang-14}
pg_config=${PG_CONFIG:-pg_config}

warn="-Wall -Wextra -Wmissing-prototypes -Wdeclaration-after-statement -Werror=vla"
if [ "${WERROR:-1}" != 0 ]; then
    warn="$warn -Werror"
fi

if [ ! -f "$vectors" ]; then
    echo "run.sh: vectors file $vectors not found (set VECTORS=...)" >&2
    exit 2
fi

mkdir -p "$build/corpus"

echo "== unit driver ($cc)"
# --wrap lets the driver fail signature.c's allocations one by one
wrap="-DSIGNATURE_UNIT_WRAP_MALLOC -Wl,--wrap=malloc -Wl,--wrap=realloc"
# shellcheck disable=SC2086
$cc -std=gnu99 $warn -O2 -I"$src/crypto" $wrap -o "$build/signature_unit" \
    "$here/signature_unit.c" "$src/crypto/signature.c" -lcrypto
python3 "$here/vectors_to_tsv.py" "$vectors" "$build/vectors.tsv"
"$build/signature_unit" "$build/vectors.tsv"

echo "== unit driver under ASan/UBSan ($fuzz_cc)"
# shellcheck disable=SC2086
$fuzz_cc -std=gnu99 $warn -g -O1 -fsanitize=address,undefined \
    -fno-sanitize-recover=all -fno-omit-frame-pointer -I"$src/crypto" $wrap \
    -o "$build/signature_unit_san" \
    "$here/signature_unit.c" "$src/crypto/signature.c" -lcrypto
if ! "$build/signature_unit_san" "$build/vectors.tsv" \
    >"$build/signature_unit_san.log" 2>&1; then
    cat "$build/signature_unit_san.log"
    exit 1
fi
tail -n 1 "$build/signature_unit_san.log"

if command -v "$pg_config" >/dev/null 2>&1; then
    echo "== signature.c with the server's flags ($pg_config)"
    pg_cc=$("$pg_config" --cc)
    pg_cflags=$("$pg_config" --cflags)
    pg_cppflags=$("$pg_config" --cppflags)
    pg_inc=$("$pg_config" --includedir-server)
    # shellcheck disable=SC2086
    $pg_cc $pg_cflags $pg_cppflags -Werror -I"$src/crypto" -I"$pg_inc" \
        -c "$src/crypto/signature.c" -o "$build/signature_pg.o"
    # the header must also sit after postgres.h, as the extension includes it
    printf '#include "postgres.h"\n#include "signature.h"\n' \
        >"$build/header_check.c"
    # shellcheck disable=SC2086
    $pg_cc $pg_cflags $pg_cppflags -Werror -I"$src/crypto" -I"$pg_inc" \
        -c "$build/header_check.c" -o "$build/header_check.o"
    # nothing but plivo_otp_* may be exported
    if nm -g --defined-only "$build/signature_pg.o" | awk '{print $3}' |
        grep -v '^plivo_otp_'; then
        echo "run.sh: symbols without the plivo_otp_ prefix" >&2
        exit 1
    fi
else
    echo "== $pg_config not found: server-flags compile skipped"
fi

if [ "$seconds" -eq 0 ]; then
    exit 0
fi

echo "== fuzz target ($fuzz_cc), $seconds s"
$fuzz_cc -g -O1 -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=all -I"$src/crypto" -o "$build/fuzz_signature" \
    "$here/fuzz_signature.c" "$src/crypto/signature.c" -lcrypto
# New inputs go to the build corpus; the checked-in seeds are only read.
# A crash, leak, sanitizer report or timeout makes libFuzzer exit non-zero.
"$build/fuzz_signature" -max_total_time="$seconds" -max_len=4096 \
    -timeout=10 -print_final_stats=1 \
    -dict="$here/signature.dict" -artifact_prefix="$build/" \
    "$build/corpus" "$here/corpus"
