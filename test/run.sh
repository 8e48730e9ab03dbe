#!/usr/bin/env bash
# test/run.sh: build plivo_otp and run every test suite, then clean up.
#
#   bash test/run.sh                   # everything (as root, or sudo bash ...)
#   bash test/run.sh regress tap       # only some suites
#   TAP_FILES=test/t/005_dispatch.pl bash test/run.sh tap
#   KEEP_TEST_DIR=1 bash test/run.sh   # keep the build and logs in /tmp
#
# Suites: regress (pg_regress), isolation (race specs), tap (test/t/*.pl,
# with the local Plivo stand-in), unit (the signature code outside the
# server).  Each suite runs in its own private cluster(s) as the postgres OS
# user, so one failure never hides the others.  The last line is
# "N passed, N failed"; the exit status is non-zero on any failure.

set -u
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$repo/test/lib.sh"

suites=${*:-regress isolation tap unit}
export LANG=C.UTF-8 PG_TEST_TIMEOUT_DEFAULT=${PG_TEST_TIMEOUT_DEFAULT:-60}

ensure_packages || exit 1

# Every run installs the extension into the system's PostgreSQL: two runs at
# once on one machine would swap each other's library.  Take turns.
exec 9>/tmp/plivo_otp_test.lock
if ! flock -n 9; then
	log "waiting for another test run on this machine to finish"
	flock 9
fi

work=$(mktemp -d /tmp/plivo_otp_test.XXXXXX)
chmod 755 "$work"
build="$work/build"

cleanup() {
	# Servers and stand-ins that a failed test left behind all run from $work.
	pkill -f -- "$work" 2>/dev/null
	sleep 0.5
	pkill -9 -f -- "$work" 2>/dev/null
	rm -rf "$work"
}
[ -n "${KEEP_TEST_DIR:-}" ] && echo "keeping $work" >&2 || trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0

# pg_regress and pg_isolation_regress print "test NAME ... ok|FAILED".
count_regress() {
	local out=$1 ok bad
	ok=$(grep -cE '^(test +)?[ ]*[[:alnum:]_]+ +\.\.\. ok' "$out")
	bad=$(grep -cE '^(test +)?[ ]*[[:alnum:]_]+ +\.\.\. (FAILED|failed)' "$out")
	# No summary line means the suite did not run at all.
	grep -qE 'tests? (passed|failed)|of [0-9]+ tests' "$out" || bad=$((bad + 1))
	passed=$((passed + ok))
	failed=$((failed + bad))
	echo "   $ok passed, $bad failed"
}

# prove --verbose prints "ok N" / "not ok N" per assertion; a script that
# dies with no "not ok" still counts as one failure.
count_tap() {
	local out=$1 ok bad died
	ok=$(grep -cE '^ok [0-9]+' "$out")
	bad=$(grep -cE '^not ok [0-9]+' "$out")
	died=$(grep -E '\(Wstat: [0-9]+ .*Failed: 0\)' "$out" | wc -l)
	passed=$((passed + ok))
	failed=$((failed + bad + died))
	echo "   $ok passed, $((bad + died)) failed"
}

show_failure() {
	local f
	for f in "$@"; do
		[ -s "$f" ] || continue
		echo "----- $f"
		head -c 20000 "$f"
	done
}

if ! build_copy "$repo" "$build" || ! install_build "$build"; then
	echo "build failed"
	echo "0 passed, 1 failed"
	exit 1
fi

# The Makefile's REGRESS_OPTS and ISOLATION_OPTS start the private servers.
for suite in $suites; do
	case $suite in
	regress)
		log "pg_regress"
		(cd "$build" && as_pg make -s installcheck ISOLATION= TAP_TESTS=) > "$work/regress.out" 2>&1
		count_regress "$work/regress.out"
		grep -q 'FAILED\|failed\|Error' "$work/regress.out" &&
			show_failure "$work/regress.out" "$build/regression.diffs" "$build"/tmp_instance/log/postmaster.log
		;;
	isolation)
		log "isolation"
		(cd "$build" && as_pg make -s installcheck REGRESS= TAP_TESTS=) > "$work/isolation.out" 2>&1
		count_regress "$work/isolation.out"
		grep -q 'FAILED\|failed\|Error' "$work/isolation.out" &&
			show_failure "$work/isolation.out" "$build/output_iso/regression.diffs"
		;;
	tap)
		log "TAP"
		(cd "$build" && as_pg make -s installcheck REGRESS= ISOLATION= \
			${TAP_FILES:+PROVE_TESTS="$TAP_FILES"} \
			PROVE_FLAGS="--verbose --timer") > "$work/tap.out" 2>&1
		count_tap "$work/tap.out"
		if grep -qE '^not ok|Wstat|Result: FAIL' "$work/tap.out"; then
			grep -E '^(not ok|#)' "$work/tap.out" | head -100
			for f in "$build"/tmp_check/log/*; do
				grep -q -E 'ERROR|FATAL|PANIC|WARNING|plivo_otp' "$f" 2>/dev/null || continue
				echo "----- $f (last lines)"
				tail -n 40 "$f"
			done
		fi
		;;
	unit)
		log "unit (signature code outside the server)"
		if [ -x "$build/test/fuzz/run.sh" ] || [ -f "$build/test/fuzz/run.sh" ]; then
			(cd "$build" && as_pg bash test/fuzz/run.sh "${FUZZ_SECONDS:-20}") > "$work/unit.out" 2>&1
			rc=$?
			line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$work/unit.out" | tail -n 1)
			p=${line%% passed*}
			f=${line#*, }
			f=${f%% failed*}
			p=${p:-0}
			f=${f:-0}
			[ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
			passed=$((passed + p))
			failed=$((failed + f))
			echo "   $p passed, $f failed"
			[ $rc -ne 0 ] && tail -n 60 "$work/unit.out"
		fi
		;;
	*)
		echo "unknown suite: $suite" >&2
		failed=$((failed + 1))
		;;
	esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
