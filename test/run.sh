#!/usr/bin/env bash
# test/run.sh: build plivo_otp and run every test suite, then clean up.
#
#   bash test/run.sh                   # everything (as root, or sudo bash ...)
#   bash test/run.sh regress tap       # only some suites
#   TAP_FILES=test/t/005_dispatch.pl bash test/run.sh tap
#   TAP_JOBS=1 bash test/run.sh tap    # TAP files one at a time (default 2 at once:
#                                      # they mostly wait on timers and workers)
#   KEEP_TEST_DIR=1 bash test/run.sh   # keep the build and logs in /tmp
#   SANITIZE_SUITES=tap bash test/run.sh sanitize   # one suite under ASan
#   PG17_SUITES=regress bash test/run.sh pg17        # one suite against PostgreSQL 17
#
# Suites: regress (pg_regress), isolation (race specs), tap (test/t/*.pl,
# with the local Plivo stand-in), unit (signature unit driver and the
# libFuzzer targets outside the server), sanitize (regress, isolation and tap
# again, with the extension built under AddressSanitizer and
# UndefinedBehaviorSanitizer and the ASan runtime preloaded into every
# server; it fails on any sanitizer report or a server process killed by a
# signal other than the tests' own kill -9), package (test/package.sh, as
# root: the Debian package built with dpkg-buildpackage, what it ships, and
# pg_regress against it unpacked into a scratch root; about 45 s), pg17
# (test/pg17.sh, as root: this script again, with $PG17_SUITES, default
# regress isolation tap unit, against Debian 13's own PostgreSQL 17 in a
# Debian 13 root kept in /var/cache/plivo_otp; the first run makes the root
# with debootstrap, about 13 minutes on a busy 2-core machine).
# Each suite runs in its own private cluster(s) as the postgres OS user, so
# one failure never hides the others.  The last line is "N passed, N failed" for the whole run; the exit
# status is non-zero on any failure.

set -u
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$repo/test/lib.sh"

suites=${*:-regress isolation tap unit package sanitize pg17}
export LANG=C.UTF-8 PG_TEST_TIMEOUT_DEFAULT=${PG_TEST_TIMEOUT_DEFAULT:-60}

case " $suites " in *" package "*) PACKAGES="$PACKAGES $PACKAGE_PACKAGES" ;; esac
case " $suites " in *" pg17 "*) PACKAGES="$PACKAGES debootstrap" ;; esac
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

# The pg17 suite's Debian 13 root takes minutes to make on a fresh machine,
# mostly downloading: make it in the background, at the lowest CPU and I/O
# priority, while the other suites run (run_pg17 waits for it).
pg17_prepare=
case " $suites " in
*" pg17 "*)
	if [ "$suites" != pg17 ]; then
		nice -n 19 ionice -c 3 bash "$repo/test/pg17.sh" --prepare "$work/pg17" \
			> "$work/pg17-prepare.log" 2>&1 &
		pg17_prepare=$!
	fi
	;;
esac

cleanup() {
	# Servers and stand-ins that a failed test left behind all run from $work.
	pkill -f -- "$work" 2>/dev/null
	sleep 0.5
	pkill -9 -f -- "$work" 2>/dev/null
	restore_plain_build
	rm -rf "$work"
}
# Never leave the sanitized library installed: a server without the ASan
# runtime preloaded cannot load it.
restore_plain_build() {
	if [ -e "$work/sanitized-installed" ]; then
		install_build "$build" && rm -f "$work/sanitized-installed"
	fi
}
[ -n "${KEEP_TEST_DIR:-}" ] && echo "keeping $work" >&2 && trap restore_plain_build EXIT || trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0

# pg_regress and pg_isolation_regress print "test NAME ... ok|FAILED" (15)
# or "ok N - NAME" / "not ok N - NAME" (16 and later, TAP style).
count_regress() {
	local out=$1 ok bad
	ok=$(grep -cE '^(test +)?[ ]*[[:alnum:]_]+ +\.\.\. ok|^ok [0-9]+ +[-+] ' "$out")
	bad=$(grep -cE '^(test +)?[ ]*[[:alnum:]_]+ +\.\.\. (FAILED|failed)|^not ok [0-9]+ +[-+] ' "$out")
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

# The pg17 suite builds in its own root: alone, it needs no build here.
if [ "$suites" = pg17 ]; then
	:
elif ! build_copy "$repo" "$build" || ! install_build "$build"; then
	echo "build failed"
	echo "0 passed, 1 failed"
	exit 1
fi

# The Makefile's REGRESS_OPTS and ISOLATION_OPTS start the private servers.
# Each suite runs in build directory $1 with extra make arguments after it
# (the sanitize suite's bindir=...), and writes its output to $work/$2.out.
run_regress() {
	local dir=$1 out=$work/$2.out
	shift 2
	(cd "$dir" && as_pg make -s installcheck ISOLATION= TAP_TESTS= "$@") > "$out" 2>&1
	count_regress "$out"
	grep -q 'FAILED\|failed\|Error' "$out" &&
		show_failure "$out" "$dir/regression.diffs" "$dir"/tmp_instance/log/postmaster.log
}

run_isolation() {
	local dir=$1 out=$work/$2.out
	shift 2
	(cd "$dir" && as_pg make -s installcheck REGRESS= TAP_TESTS= "$@") > "$out" 2>&1
	count_regress "$out"
	grep -q 'FAILED\|failed\|Error' "$out" &&
		show_failure "$out" "$dir/output_iso/regression.diffs"
}

run_tap() {
	local dir=$1 out=$work/$2.out f
	shift 2
	(cd "$dir" && as_pg make -s installcheck REGRESS= ISOLATION= \
		${TAP_FILES:+PROVE_TESTS="$TAP_FILES"} \
		PROVE_FLAGS="--verbose --timer -j${TAP_JOBS:-2}" "$@") > "$out" 2>&1
	count_tap "$out"
	if grep -qE '^not ok|Wstat|Result: FAIL' "$out"; then
		grep -E '^(not ok|#)' "$out" | head -100
		for f in "$dir"/tmp_check/log/*; do
			grep -q -E 'ERROR|FATAL|PANIC|WARNING|plivo_otp' "$f" 2>/dev/null || continue
			echo "----- $f (last lines)"
			tail -n 40 "$f"
		done
	fi
}

# A script that ends with its own "N passed, N failed" line: output to
# $work/$1.out, the lines matching $2 shown, the totals added.
run_counted() {
	local name=$1 show=$2 rc line p f
	shift 2
	"$@" > "$work/$name.out" 2>&1
	rc=$?
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$work/$name.out" | tail -n 1)
	p=${line%% passed*}
	f=${line#*, }
	f=${f%% failed*}
	p=${p:-0}
	f=${f:-0}
	[ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
	passed=$((passed + p))
	failed=$((failed + f))
	grep -E "$show" "$work/$name.out"
	echo "   $p passed, $f failed"
	[ $rc -ne 0 ] && tail -n 60 "$work/$name.out"
	return 0
}

unit_in_build() {
	(cd "$build" && as_pg bash test/fuzz/run.sh "${FUZZ_SECONDS:-15}")
}
run_unit() {
	run_counted unit '^== |^   ' unit_in_build
}

# As root: dpkg-buildpackage; the script runs the servers as postgres.
run_package() {
	run_counted package '^   (ok|FAILED|test .*FAILED)' bash "$repo/test/package.sh" "$work/package"
}

# As root: the same suites against PostgreSQL 17, in a Debian 13 root; its
# inner run's "N passed, N failed" is added to the totals.
run_pg17() {
	if [ -n "$pg17_prepare" ]; then
		wait "$pg17_prepare" || { echo "   (the background preparation of the root failed:" \
			"the run makes it now)"; tail -n 20 "$work/pg17-prepare.log"; }
		grep -h '^   (pg17 root made' "$work/pg17-prepare.log"
	fi
	run_counted pg17 '^==> |^   |^----- |^(not )?ok [0-9]+ +- ' \
		bash "$repo/test/pg17.sh" "$work/pg17" ${PG17_SUITES:-regress isolation tap unit}
}

# The sanitize suite: build again with $SANITIZE_CFLAGS, install that, and
# run $SANITIZE_SUITES (default: regress isolation tap) with every server
# started through $san/bin (see sanitizer_setup in lib.sh); then the checks.
# The plain build is installed again at the end.
run_sanitize() {
	local san=$work/sanitize bsan=$work/build-sanitize s t0 reports logs
	log "sanitize: the extension under ASan and UBSan"
	if ! build_copy "$repo" "$bsan" "$SANITIZE_CFLAGS" || ! sanitizer_setup "$san" "$bsan"; then
		echo "   sanitize: build failed"
		failed=$((failed + 1))
		return
	fi
	count_check "an ASan report is written to log_path (canary)" \
		sanitizer_canary "$san" "$bsan" heap-overflow 'ERROR: AddressSanitizer: heap-buffer-overflow'
	count_check "a UBSan report reaches stderr, the server log (canary)" \
		sanitizer_canary "$san" "$bsan" shift 'runtime error: shift exponent 32 is too large'
	touch "$work/sanitized-installed"
	if ! install_build "$bsan"; then
		failed=$((failed + 1))
		restore_plain_build
		return
	fi
	for s in ${SANITIZE_SUITES:-regress isolation tap}; do
		t0=$SECONDS
		case $s in
		regress) log "sanitize: pg_regress"; run_regress "$bsan" sanitize-regress bindir="$san/bin" ;;
		isolation) log "sanitize: isolation"; run_isolation "$bsan" sanitize-isolation bindir="$san/bin" ;;
		# ASan and UBSan make the server about three times slower: latency
		# bounds in the TAP files scale by PLIVO_OTP_TEST_SLOWDOWN.
		tap) log "sanitize: TAP"; PLIVO_OTP_TEST_SLOWDOWN=3 run_tap "$bsan" sanitize-tap bindir="$san/bin" ;;
		*) echo "unknown sanitize suite: $s" >&2; failed=$((failed + 1)) ;;
		esac
		echo "   (sanitize $s: $((SECONDS - t0)) s)"
	done
	restore_plain_build

	logs=("$san"/logs/*.log "$bsan"/tmp_check/log/*.log)
	s=$(grep -cE '^postgres |^pg_ctl .*(start|restart)' "$san/starts.log")
	count_check "servers started with the ASan runtime ($s starts)" test "$s" -gt 0
	reports=$( (ls "$san"/reports/asan.* 2>/dev/null; grep -lE 'runtime error:|ERROR: AddressSanitizer' "${logs[@]}" 2>/dev/null) | sort -u)
	count_check "no sanitizer report" test -z "$reports"
	for s in $reports; do
		echo "----- $s"
		grep -E -A 40 'runtime error:|ERROR: AddressSanitizer' "$s" | head -n 80
	done
	# The tests kill with -9 on purpose; any other signal is a crash.
	s=$(grep -hE 'terminated by signal ([0-8]|1[0-9]|[2-9][0-9])\b' "${logs[@]}" 2>/dev/null)
	count_check "no server process killed by a signal (but the tests' kill -9)" test -z "$s"
	[ -n "$s" ] && echo "$s" | head -n 20
	return 0
}

for suite in $suites; do
	t0=$SECONDS
	case $suite in
	regress) log "pg_regress"; run_regress "$build" regress ;;
	isolation) log "isolation"; run_isolation "$build" isolation ;;
	tap) log "TAP"; run_tap "$build" tap ;;
	unit) log "unit (signature unit driver, libFuzzer targets)"; run_unit ;;
	package) log "package (Debian package, pg_regress against it)"; run_package ;;
	sanitize) run_sanitize ;;
	pg17) log "pg17 (the suites again against PostgreSQL 17, in a Debian 13 root)"; run_pg17 ;;
	*)
		echo "unknown suite: $suite" >&2
		failed=$((failed + 1))
		;;
	esac
	echo "   ($suite: $((SECONDS - t0)) s)"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
