#!/usr/bin/env bash
#
# run.sh
#     The unit suite: the tests of plivo_otp's parsing and signature code
#     outside the server.  The signature unit driver (gcc, warnings as
#     errors, then again under ASan/UBSan), a compile of signature.c with the
#     server's own flags, and a short run of each libFuzzer target under
#     ASan/UBSan:
#
#       fuzz_signature       src/crypto/signature.c: form parser, V2/V3 signatures
#       fuzz_callback_auth   src/listener/callback_auth.c: which signature counts,
#                            plivo_otp_find_param
#       fuzz_phone           src/common/phone.c: normalise, mask, allow-list
#       fuzz_send_response   src/dispatcher/plivo_response.c: Plivo's Send Message
#                            response, with PostgreSQL's JSON lexer (libpgcommon)
#
# Usage: test/fuzz/run.sh [SECONDS [TARGET...]]
#     SECONDS  fuzzing time per target (default 15; 0 runs each target over
#              its seed corpus only)
#     TARGET   only these targets (default all four); the unit driver runs
#              only when no target is named
#
# Environment:
#     VECTORS    the JSON vectors (default test/plivo-signature-vectors.json)
#     CC         compiler for the unit driver (default gcc)
#     FUZZ_CC    compiler for the fuzz targets (default clang-14; test/lib.sh
#                sets the release's: clang-19 on Debian 13)
#     PG_CONFIG  pg_config of the PostgreSQL to build against (server headers
#                and libpgcommon for fuzz_phone and fuzz_send_response;
#                default /usr/lib/postgresql/15/bin/pg_config)
#     BUILD_DIR  where binaries and the working corpora go
#                (default test/fuzz/build, ignored by git)
#     WERROR     set to 0 to let compiler warnings through
#     JOBS       parallel fuzzing jobs per target (default 1)
#
# Each target reads its seeds from test/fuzz/corpus/<target>/ (only read)
# and adds what it finds to BUILD_DIR/corpus/<target>/; a crash, leak,
# sanitizer report, broken invariant or timeout leaves the input in
# BUILD_DIR/<target>-crash-* (or -leak-, -timeout-) and fails the target.
# Reproduce one with: BUILD_DIR/<target> BUILD_DIR/<target>-crash-...
#
# Needs gcc, clang-14 and libclang-rt-14-dev (libFuzzer and the sanitizer
# runtimes), postgresql-server-dev-15, libssl-dev, libcurl4-openssl-dev and
# python3.  Every step counts as one check except the unit driver, which
# counts its own; the last line is "N passed, N failed" and the exit status
# is non-zero on any failure.

set -u

seconds=${1:-15}
case $seconds in
''|*[!0-9]*) echo "usage: $0 [SECONDS [TARGET...]]" >&2; exit 2 ;;
esac
shift $(( $# > 0 ? 1 : 0 ))
all_targets="fuzz_signature fuzz_callback_auth fuzz_phone fuzz_send_response"
targets=${*:-$all_targets}

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
src=$top/src
build=${BUILD_DIR:-$here/build}
vectors=${VECTORS:-$top/test/plivo-signature-vectors.json}
cc=${CC:-gcc}
fuzz_cc=${FUZZ_CC:-clang-14}
pg_config=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

warn="-Wall -Wextra -Wmissing-prototypes -Wdeclaration-after-statement -Werror=vla"
fuzz_warn="-Wall -Wmissing-prototypes -Wdeclaration-after-statement"
if [ "${WERROR:-1}" != 0 ]; then
	warn="$warn -Werror"
	fuzz_warn="$fuzz_warn -Werror"
fi
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

passed=0
failed=0

pass() {
	passed=$((passed + 1))
	echo "   ok: $*"
}

fail() {
	failed=$((failed + 1))
	echo "   FAILED: $*"
}

# Add the "N passed, N failed" line of log $1 to the totals.
add_counts() {
	local line p f
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
	if [ -z "$line" ]; then
		fail "$2 printed no count"
		return
	fi
	p=${line%% passed*}
	f=${line#*, }
	f=${f%% failed*}
	passed=$((passed + p))
	failed=$((failed + f))
	echo "   $2: $line"
}

finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
}

mkdir -p "$build"

if [ -z "${*:-}" ]; then
	if [ ! -f "$vectors" ]; then
		fail "vectors file $vectors not found (set VECTORS=...)"
		finish
	fi
	echo "== signature unit driver ($cc)"
	# --wrap lets the driver fail signature.c's allocations one by one
	wrap="-DSIGNATURE_UNIT_WRAP_MALLOC -Wl,--wrap=malloc -Wl,--wrap=realloc"
	# shellcheck disable=SC2086
	if $cc -std=gnu99 $warn -O2 -I"$src/crypto" $wrap -o "$build/signature_unit" \
		"$here/signature_unit.c" "$src/crypto/signature.c" -lcrypto &&
		python3 "$here/vectors_to_tsv.py" "$vectors" "$build/vectors.tsv"; then
		"$build/signature_unit" "$build/vectors.tsv" > "$build/signature_unit.log" 2>&1 ||
			grep -v '^ok' "$build/signature_unit.log" | tail -n 40
		add_counts "$build/signature_unit.log" "signature_unit"
	else
		fail "signature_unit does not build"
	fi

	echo "== signature unit driver under ASan/UBSan ($fuzz_cc)"
	# shellcheck disable=SC2086
	if $fuzz_cc -std=gnu99 $warn -g -O1 $san -I"$src/crypto" $wrap \
		-o "$build/signature_unit_san" \
		"$here/signature_unit.c" "$src/crypto/signature.c" -lcrypto; then
		"$build/signature_unit_san" "$build/vectors.tsv" > "$build/signature_unit_san.log" 2>&1 ||
			grep -v '^ok' "$build/signature_unit_san.log" | tail -n 40
		add_counts "$build/signature_unit_san.log" "signature_unit_san"
	else
		fail "signature_unit_san does not build"
	fi

	echo "== signature.c with the server's flags ($pg_config)"
	pg_cc=$("$pg_config" --cc)
	pg_cflags=$("$pg_config" --cflags)
	pg_cppflags=$("$pg_config" --cppflags)
	pg_inc=$("$pg_config" --includedir-server)
	# the header must also sit after postgres.h, as the extension includes it
	printf '#include "postgres.h"\n#include "signature.h"\n' > "$build/header_check.c"
	# shellcheck disable=SC2086
	if ! $pg_cc $pg_cflags $pg_cppflags -Werror -I"$src/crypto" -I"$pg_inc" \
		-c "$src/crypto/signature.c" -o "$build/signature_pg.o" ||
		! $pg_cc $pg_cflags $pg_cppflags -Werror -I"$src/crypto" -I"$pg_inc" \
			-c "$build/header_check.c" -o "$build/header_check.o"; then
		fail "signature.c or signature.h does not compile with the server's flags"
	elif nm -g --defined-only "$build/signature_pg.o" | awk '{print $3}' | grep -v '^plivo_otp_'; then
		fail "signature.c exports symbols without the plivo_otp_ prefix"
	else
		pass "signature.c compiles with the server's flags and exports only plivo_otp_*"
	fi
fi

pg_inc=$("$pg_config" --includedir-server)
pg_lib=$("$pg_config" --pkglibdir)
fuzz_flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $fuzz_warn"
# Server headers under clang: PostgreSQL's gnu_printf attribute is gcc's.
pg_fuzz_flags="-I$src -I$pg_inc -Wno-ignored-attributes -DPLIVO_OTP_VERSION=\"fuzz\""

# Compile target $1 into $build/$1; the rest are its sources and libraries.
build_target() {
	local t=$1
	shift
	case $t in
	fuzz_signature)
		# shellcheck disable=SC2086
		$fuzz_cc $fuzz_flags -I"$src/crypto" -o "$build/$t" "$here/$t.c" \
			"$src/crypto/signature.c" -lcrypto ;;
	fuzz_callback_auth)
		# shellcheck disable=SC2086
		$fuzz_cc $fuzz_flags -I"$src" -o "$build/$t" "$here/$t.c" \
			"$src/listener/callback_auth.c" "$src/crypto/signature.c" -lcrypto ;;
	fuzz_phone)
		# shellcheck disable=SC2086
		$fuzz_cc $fuzz_flags $pg_fuzz_flags -o "$build/$t" "$here/$t.c" \
			"$src/common/phone.c" "$here/pg_shims.c" ;;
	fuzz_send_response)
		# pg_shims.o comes before libpgcommon so its palloc family is the one linked
		# shellcheck disable=SC2086
		$fuzz_cc $fuzz_flags $pg_fuzz_flags $(pkg-config --cflags libcurl) -o "$build/$t" \
			"$here/$t.c" "$src/dispatcher/plivo_response.c" "$here/pg_shims.c" \
			"$pg_lib/libpgcommon_shlib.a" "$pg_lib/libpgport_shlib.a" $(pkg-config --libs libcurl) ;;
	*)
		echo "unknown target $t" >&2
		return 1 ;;
	esac
}

# Longest input each target is given, and its dictionary.
max_len() {
	case $1 in
	fuzz_phone) echo 256 ;;
	*) echo 4096 ;;
	esac
}

dict() {
	case $1 in
	fuzz_signature|fuzz_callback_auth) echo "$here/signature.dict" ;;
	*) echo "$here/${1#fuzz_}.dict" ;;
	esac
}

for t in $targets; do
	echo "== $t ($fuzz_cc), $seconds s"
	if ! build_target "$t" > "$build/$t.build.log" 2>&1; then
		cat "$build/$t.build.log"
		fail "$t does not build"
		continue
	fi
	mkdir -p "$build/corpus/$t"
	rm -f "$build/$t"-crash-* "$build/$t"-leak-* "$build/$t"-timeout-* "$build/$t"-oom-*
	# New inputs go to the build corpus; the checked-in seeds are only read.
	# With -max_total_time=0 libFuzzer would fuzz forever: 0 means seeds only.
	if [ "$seconds" -eq 0 ]; then
		run=(-runs=0)
	else
		run=(-max_total_time="$seconds")
	fi
	if [ "${JOBS:-1}" -gt 1 ]; then
		run+=(-jobs="$JOBS" -workers="$JOBS")
	fi
	start=$(date +%s)
	"$build/$t" "${run[@]}" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -dict="$(dict "$t")" -artifact_prefix="$build/$t-" \
		"$build/corpus/$t" "$here/corpus/$t" > "$build/$t.log" 2>&1
	rc=$?
	took=$(( $(date +%s) - start ))
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build/$t.log" | tail -n 1)
	units=$(find "$build/corpus/$t" "$here/corpus/$t" -type f | wc -l)
	if [ $rc -eq 0 ]; then
		pass "$t: ${runs:-?} inputs in $took s, corpus $units"
	else
		grep -E -A 30 'ERROR|runtime error|deadly signal|Test unit written' "$build/$t.log" | head -n 60
		fail "$t (exit $rc): $(ls "$build/$t"-* 2>/dev/null | grep -E -- '-(crash|leak|timeout|oom)-' | head -n 1)"
	fi
done

finish
