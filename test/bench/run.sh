#!/usr/bin/env bash
# test/bench/run.sh: plivo_otp's benchmarks (issue 11), each figure printed
# beside a baseline measured in the same run on the same machine, written to
# test/bench/RESULTS.md with plots (drain.png, latency.png).  Not part of
# test/run.sh; a benchmark prints figures, it is not pass/fail (exit 0
# unless it could not run).
#
#   sudo bash test/bench/run.sh                  # every bench (~15 min)
#   sudo bash test/bench/run.sh latency drain    # chosen ones
#   sudo BENCH_QUICK=1 bash test/bench/run.sh    # everything small (smoke check)
#
# latency    commit -> request at the target, p50/p99, 200 commits 20 ms apart;
#            baseline: one HTTP round trip to the same target (wrk, 1 connection)
# drain      a queued backlog drained against the fast and the 50 ms target,
#            max_inflight 10 and 256 (the default): messages/s, dispatcher CPU and
#            WAL per message, each the median of 3 drains (BENCH_DRAIN_REPEAT);
#            baseline: the target's ceiling (wrk); plus the drain.png grid
#            (backlog 1k..50k x max_inflight 10..256)
# bulk       20,000 otp_send in one transaction at the default
#            max_locks_per_transaction: time or the error; baseline: the same
#            loop doing two plain INSERTs into tables shaped like the extension's
# pgbench    otp_send and otp_verify per transaction (pgbench, 1 and 4 clients,
#            synchronous_commit on and off) against two plain INSERTs and an
#            indexed SELECT ... FOR UPDATE + UPDATE in a bench schema
# history    issue, verify and drain rates with 1,000,000 rows of finished
#            history (stale statistics, then after VACUUM ANALYZE) against the
#            mean of the empty tables' rates measured before and after them
# longrun    one connection issuing 100,000 codes: first vs last 10,000, and
#            the last 10,000 vs a new connection's 10,000 right after
# memory     dispatcher RSS before and after 200,000 messages
# callbacks  signed delivery callbacks recorded/s and p99 at 16 connections,
#            against the same client sending them unsigned (403)
# ratelimit  max_requests_per_second 1000 for 20 s: achieved rate, 429s the
#            target would have sent
#
# Settings: every default except max_requests_per_second 10000,
# global_max_sends_per_hour 0, per-number and per-caller caps off,
# resend_interval 0.  The dispatcher is paused (plivo_otp.auth_id = '')
# whenever it is not what is measured.

set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$repo/test/lib.sh"
PACKAGES="$PACKAGES wrk gnuplot-nox"

all="latency drain bulk pgbench history longrun memory callbacks ratelimit"
benches=${*:-$all}
for b in $benches; do
	case " $all " in *" $b "*) ;; *) echo "unknown benchmark: $b (one of: $all)" >&2; exit 2 ;; esac
done

AUTH_ID=MABENCHBENCHBENCH001
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	quick=1; pgb_seconds=2; hist_rows=50000; drain_main=2000; grid_backlogs="500 2000"
	grid_inflight="10 256"; drain_cap=4; bulk_n=2000; long_n=5000; long_part=500
	mem_batches=2; cb_seconds=2; rl_rate=200; rl_seconds=4; wrk_seconds=1; verify_n=300; drain_repeat=1
else
	quick=0; pgb_seconds=15; hist_rows=1000000; drain_main=20000; grid_backlogs="1000 5000 20000 50000"
	grid_inflight="10 32 64 256"; drain_cap=30; bulk_n=20000; long_n=100000; long_part=10000
	mem_batches=4; cb_seconds=10; rl_rate=1000; rl_seconds=20; wrk_seconds=5; verify_n=5000; drain_repeat=3
fi
drain_cap=${BENCH_DRAIN_CAP:-$drain_cap}
drain_repeat=${BENCH_DRAIN_REPEAT:-$drain_repeat}
# A smaller drain grid for a quick A/B of one change (e.g. BENCH_GRID_BACKLOGS=20000).
grid_backlogs=${BENCH_GRID_BACKLOGS:-$grid_backlogs}
grid_inflight=${BENCH_GRID_INFLIGHT:-$grid_inflight}
max_backlog=$drain_main
for n in $grid_backlogs; do [ "$n" -gt "$max_backlog" ] && max_backlog=$n; done
rl_need=$((rl_rate * rl_seconds * 11 / 10))
[ "$rl_need" -gt "$max_backlog" ] && max_backlog=$rl_need

ensure_packages
# The extension is installed system-wide: queue behind test/run.sh's runs (same lock).
exec 9>/tmp/plivo_otp_test.lock
if ! flock -n 9; then
	log "waiting for another test or bench run (/tmp/plivo_otp_test.lock)"
	flock 9
fi
dir=$(mktemp -d /tmp/plivo_otp_bench.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
targets=()
cleanup() {
	local p
	for p in "${targets[@]}"; do kill "$p" 2>/dev/null || true; done
	stop_all "$dir"
	if [ "${KEEP_BENCH_DIR:-0}" = 1 ]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

build_copy "$repo" "$dir/build"
install_build "$dir/build"
log "building fast_plivo"
as_pg gcc -O2 -Wall -Wextra -Wno-unused-parameter -o "$dir/fast_plivo" "$dir/build/test/bench/fast_plivo.c" \
	-lmicrohttpd -lpthread
as_pg sh -c "umask 077; printf 'token-%s' \"\$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')\" > '$dir/plivo.token'"
BENCH_AUTH="Basic $(printf '%s:%s' "$AUTH_ID" "$(cat "$dir/plivo.token")" | base64 -w0)"
export BENCH_AUTH

# start_target NAME ARGS...: a fast_plivo in the background; sets ${NAME}_port.
start_target() {
	local name=$1
	shift
	rm -f "$dir/$name.port"
	as_pg sh -c "echo \$\$ > '$dir/$name.pid'; exec '$dir/fast_plivo' --port 0 --port-file '$dir/$name.port' \
		--auth-id $AUTH_ID --auth-token-file '$dir/plivo.token' $* > '$dir/$name.log' 2>&1" &
	for _ in $(seq 100); do [ -s "$dir/$name.port" ] && break; sleep 0.05; done
	targets+=("$(cat "$dir/$name.pid")")
	printf -v "${name}_port" '%s' "$(cat "$dir/$name.port")"
}
start_target fast --threads 2
start_target slow --threads 2 --delay-ms 50
# The rate limit bench's target counts the requests above the limit (the 429s Plivo would send).
start_target limited --threads 2 --limit-rps "$rl_rate"
target_url() { echo "http://127.0.0.1:$1"; }
tget() { curl -sf "http://127.0.0.1:$1$2"; }
treset() { curl -sf -X POST "http://127.0.0.1:$1/_reset" >/dev/null; }
tstat() { tget "$1" /_stats | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

pg_port=$(free_port)
listen_port=$(free_port)
# BENCH_PSS=1: pg_stat_statements loaded, and each drain's statements kept in the bench dir.
pss_conf=()
[ "${BENCH_PSS:-0}" = 1 ] && pss_conf=("shared_preload_libraries = 'plivo_otp,pg_stat_statements'"
	"pg_stat_statements.track = all")
start_cluster "$dir" "$pg_port" "${pss_conf[@]}" \
	"plivo_otp.auth_id = ''" \
	"plivo_otp.auth_token_file = '$dir/plivo.token'" \
	"plivo_otp.sender = '14155550000'" \
	"plivo_otp.api_url = 'http://127.0.0.1:$fast_port'" \
	"plivo_otp.max_requests_per_second = 10000" \
	"plivo_otp.global_max_sends_per_hour = 0" \
	"plivo_otp.number_max_sends = 0" \
	"plivo_otp.caller_max_sends = 0" \
	"plivo_otp.resend_interval = 0" \
	"plivo_otp.listen_port = $listen_port" \
	"plivo_otp.public_url = 'http://127.0.0.1:$listen_port'"

sql() { as_pg env PGOPTIONS="-c client_min_messages=warning" "$PG_BINDIR/psql" -X -qAt -v ON_ERROR_STOP=1 -h "$dir" -p "$pg_port" -d postgres "$@"; }
py() { python3 "$dir/build/test/bench/bench.py" "$@"; }
# Arithmetic on figures: a number to 2 decimals, True/False for a comparison, nan if a figure is missing.
calc() { python3 -c "import sys; from math import nan; v = eval(sys.argv[1]); print(v if isinstance(v, (str, bool)) else ('nan' if v != v else f'{v:.2f}'))" "$1" 2>/dev/null || echo nan; }
# A setting, applied by a reload (every one used here is PGC_SIGHUP).
setconf() { sql -c "ALTER SYSTEM SET $1 = '$2'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3; }
pause() { setconf plivo_otp.auth_id ''; }
resume() { setconf plivo_otp.auth_id "$AUTH_ID"; }
use_target() { setconf plivo_otp.api_url "$(target_url "$1")"; }
worker_pid() { sql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'plivo_otp $1'"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Private memory (heap, malloc arenas): what a leak grows.  VmRSS also
# counts the shared buffers the worker touched, which grows to shared_buffers.
rss_kb() { awk '/^RssAnon/ { print $2 }' "/proc/$1/status"; }
vmrss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
# A fresh number for each code: +1500 and seven digits (a test range libphonenumber accepts).
phone_expr() { echo "'+1500' || (2000000 + $1)::text"; }
# Empty the extension's tables except the finished history (created a day ago or more).
reset_live() {
	sql -c "DELETE FROM plivo_otp.verifications WHERE created_at > now() - interval '1 hour'"
}

# One result row: bench, figure, baseline, ratio, target, met?
results=$dir/results.tsv
: > "$results"
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$results"; printf '  %-44s %-30s | baseline %-26s | ratio %-6s | target %s: %s\n' "$@"; }
met() { [ "$(calc "$1")" = "True" ] && echo yes || echo no; }

sql -c "CREATE EXTENSION plivo_otp"
sql -c "SELECT plivo_otp.otp_send($(phone_expr 0))" >/dev/null || {
	echo "otp_send refuses the bench's numbers" >&2; exit 1; }
reset_live
pgver=$(sql -c 'SHOW server_version')
commit=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
git -C "$repo" diff --quiet HEAD -- . ':!test/bench/*.dat' ':!test/bench/*.png' ':!test/bench/RESULTS.md' 2>/dev/null ||
	commit="$commit (with uncommitted changes)"
{
	echo "Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1),"
	echo "$(awk '/MemTotal/ { printf "%.1f GB", $2 / 1048576 }' /proc/meminfo) memory, kernel $(uname -r), PostgreSQL $pgver."
	echo "Commit: $commit.  Run: $(date -u '+%Y-%m-%d %H:%M UTC'), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "(another process using the cores skews every figure), BENCH_QUICK=${BENCH_QUICK:-0}, benches: $benches."
} > "$dir/machine.txt"
cat "$dir/machine.txt"

# ---- the targets' own ceilings (wrk), printed first
wrk_run() {	# PORT CONNECTIONS SECONDS [wrk args]: "rps p50_ms p99_ms"
	local port=$1 conns=$2 secs=$3 out
	shift 3
	out=$(wrk -t"$((conns < 2 ? 1 : 2))" -c"$conns" -d"${secs}s" --latency -s "$dir/build/test/bench/message.lua" "$@" \
		"http://127.0.0.1:$port/v1/Account/$AUTH_ID/Message/" 2>&1)
	echo "$out" > "$dir/wrk.last"
	py wrk-ceiling "$dir/wrk.last"
}
read -r fast_ceiling _ _ <<< "$(wrk_run "$fast_port" 64 "$wrk_seconds")"
read -r slow_ceiling _ _ <<< "$(wrk_run "$slow_port" 256 "$wrk_seconds")"
read -r slow10_ceiling _ _ <<< "$(wrk_run "$slow_port" 10 "$wrk_seconds")"
treset "$fast_port"; treset "$slow_port"
echo "fast_plivo ceiling (wrk -t2 -c64): $fast_ceiling requests/s; 50 ms target: $slow_ceiling/s at 256 connections, $slow10_ceiling/s at 10"

# ---- a saved queue: rows that otp_send made, restored as a backlog at will
# (their bodies are sealed under their own ids, so the copies stay valid)
make_saved_queue() {
	local n=$max_backlog t0 have	# the largest backlog any bench needs, made once
	if [ -n "$(sql -c "SELECT to_regclass('bench_saved_v')")" ]; then
		have=$(sql -c "SELECT count(*) FROM bench_saved_v")
		[ "$have" -ge "$n" ] && return 0
	fi
	log "queueing $n messages with otp_send for the saved backlog"
	pause
	reset_live
	t0=$(date +%s.%N)
	sql -c "DO \$\$ BEGIN FOR i IN 1..$n LOOP
			PERFORM plivo_otp.otp_send($(phone_expr "1000000 + i"));
			IF i % 1000 = 0 THEN COMMIT; END IF;
		END LOOP; END \$\$"
	log "  took $(calc "$(date +%s.%N) - $t0") s"
	sql -c "DROP TABLE IF EXISTS bench_saved_v, bench_saved_m;
		CREATE TABLE bench_saved_v AS SELECT row_number() OVER (ORDER BY created_at, id) AS n, v.*
			FROM plivo_otp.verifications v WHERE created_at > now() - interval '1 hour';
		CREATE TABLE bench_saved_m AS SELECT m.* FROM plivo_otp.messages m
			JOIN bench_saved_v v ON v.id = m.verification_id;
		CREATE INDEX ON bench_saved_v (n); CREATE INDEX ON bench_saved_m (verification_id);"
	reset_live
}
# load_queue N: the first N saved messages pending again, due now, in one
# transaction, with one otp_send (to +15009000000) so that its commit wakes
# the dispatcher the way an application's does: the dispatcher should be
# running (resumed) by then.  Call make_saved_queue N and reset_live first.
load_queue() {
	sql -c "BEGIN;
		INSERT INTO plivo_otp.verifications
			SELECT id, phone, purpose, channel, code_digest, 'pending', 0, max_attempts, idempotency_key,
				   now(), now() + interval '10 min', NULL, now(), code_sealed
			  FROM bench_saved_v WHERE n <= $1;
		INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, body, dispatch_state, tries,
				next_try_at, expires_at, created_at, updated_at, caller_key_digest, idempotency_key)
			SELECT m.id, m.verification_id, m.channel, m.phone, m.body, 'pending', 0,
				   now(), now() + interval '10 min', now(), now(), m.caller_key_digest, m.idempotency_key
			  FROM bench_saved_m m JOIN bench_saved_v v ON v.id = m.verification_id WHERE v.n <= $1;
		SELECT plivo_otp.otp_send($(phone_expr 7000000)) IS NULL;
		COMMIT;" >/dev/null
}
# drain PORT N INFLIGHT: load N, drain with max_inflight INFLIGHT until done or
# $drain_cap seconds; sets d_count d_rate d_cpu_us (dispatcher CPU per message)
# d_wal (WAL bytes per message) d_note.
drain() {
	local port=$1 n=$2 inflight=$3 pid c0 c1 start got w0
	pause
	use_target "$port"
	setconf plivo_otp.max_inflight "$inflight"
	make_saved_queue "$n"
	reset_live
	treset "$port"
	pid=$(worker_pid dispatcher)
	c0=$(cpu_ticks "$pid")
	# BENCH_PERF=1: a perf profile of the dispatcher per drain, kept in the bench dir.
	local perf_pid=
	if [ "${BENCH_PERF:-0}" = 1 ]; then
		perf record -q -g -p "$pid" -o "$dir/perf.drain.$n.$inflight.$port" > /dev/null 2>&1 &
		perf_pid=$!
		sleep 0.5
	fi
	[ "${BENCH_PSS:-0}" = 1 ] && sql -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
		-c "SELECT pg_stat_statements_reset()" >/dev/null
	resume
	start=$(date +%s)
	load_queue "$n"
	w0=$(sql -c "SELECT pg_current_wal_insert_lsn()")
	while :; do
		got=$(tstat "$port" messages)
		[ "$got" -ge "$n" ] && break
		[ $(($(date +%s) - start)) -ge "$drain_cap" ] && break
		sleep 0.1
	done
	c1=$(cpu_ticks "$pid")
	if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
	pause
	[ "${BENCH_PSS:-0}" = 1 ] && sql -F ' | ' -c "SELECT calls, rows, round(total_exec_time::numeric, 1) AS ms,
			round((total_exec_time / calls)::numeric, 3) AS ms_per_call,
			left(regexp_replace(query, '\s+', ' ', 'g'), 100)
		FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12" > "$dir/pss.drain.$n.$inflight.$port.$(date +%s)"
	tget "$port" /_records > "$dir/records"
	read -r d_count _ d_rate <<< "$(py drain "$dir/records")"
	d_cpu_us=$(calc "($c1 - $c0) * 1e6 / $(getconf CLK_TCK) / max($d_count, 1)")
	# WAL written while it drained, from just after the backlog's commit
	# (the claims, outcomes and their index entries; the first claim's may
	# be missed): a figure that does not swing with the machine's load as
	# CPU and rate do.
	d_wal=$(sql -c "SELECT round((pg_current_wal_insert_lsn() - '$w0') / greatest($d_count, 1))")
	d_note=""
	[ "$d_count" -lt "$n" ] && d_note=" (only $d_count of $n in ${drain_cap} s)"
	[ "$(tstat "$port" inflight_max)" -le "$inflight" ] || d_note="$d_note (target saw $(tstat "$port" inflight_max) in flight)"
	return 0
}

# drain_median PORT N INFLIGHT: drain as above, $drain_repeat times, and set
# d_rate d_cpu_us d_wal to the medians (d_spread: "min-max msg/s" of the
# rates).  This machine's speed drifts by 20-30 % within minutes, so one
# drain is one draw; a drain cut short by the cap is not repeated (it
# measures the cap).
drain_median() {
	local rates=() cpus=() wals=() i
	for i in $(seq "$drain_repeat"); do
		drain "$@"
		rates+=("$d_rate") cpus+=("$d_cpu_us") wals+=("$d_wal")
		[ "$d_count" -lt "$2" ] && break
	done
	read -r d_rate d_cpu_us d_wal d_spread <<< "$(python3 -c "
import statistics as s, sys
r, c, w = (list(map(float, a.split())) for a in sys.argv[1:4])
print('%.1f %.2f %.0f' % (s.median(r), s.median(c), s.median(w)),
      '%.0f-%.0f' % (min(r), max(r)) if len(r) > 1 else '-')" "${rates[*]}" "${cpus[*]}" "${wals[*]}")"
}

. "$dir/build/test/bench/pgbench.sh"

run_bench() {
	local bench=$1
	case $bench in
	latency)
		pause
		use_target "$fast_port"
		setconf plivo_otp.max_inflight 256
		reset_live
		resume
		treset "$fast_port"
		: > "$dir/latency.sql"
		for i in $(seq 1 200); do
			echo "SELECT '1500$((2000000 + 500000 + i))', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint FROM (SELECT plivo_otp.otp_send('+1500$((2000000 + 500000 + i))') OFFSET 0) s;" >> "$dir/latency.sql"
			echo "SELECT pg_sleep(0.02) \\g /dev/null" >> "$dir/latency.sql"
		done
		chown postgres: "$dir/latency.sql" 2>/dev/null || true
		# synchronous_commit off in the committing session: the disk's fsync is
		# not the dispatcher's time, and clock_timestamp() just before the
		# commit is then the commit's time (a later statement's would be late
		# by a client round trip, on a busy machine by milliseconds).
		as_pg env PGOPTIONS="-c synchronous_commit=off -c client_min_messages=warning" "$PG_BINDIR/psql" \
			-X -qAt -v ON_ERROR_STOP=1 -h "$dir" -p "$pg_port" -d postgres -F ' ' -f "$dir/latency.sql" > "$dir/latency.sent"
		for _ in $(seq 50); do [ "$(tstat "$fast_port" messages)" -ge 200 ] && break; sleep 0.1; done
		tget "$fast_port" /_records > "$dir/records"
		read -r l_n l_p50 l_p99 _ <<< "$(py latency "$dir/latency.sent" "$dir/records" "$dir/latency.dat")"
		read -r _ b_p50 b_p99 <<< "$(wrk_run "$fast_port" 1 2)"
		sed -i 's/^wrk.*//' "$dir/wrk.last"
		treset "$fast_port"
		pause
		row "latency p50 (commit -> request, $l_n of 200)" "$l_p50 ms" "$b_p50 ms (HTTP round trip, wrk -c1)" \
			"$(calc "$b_p50 / $l_p50")" "<= 1.5 ms" "$(met "$l_p50 <= 1.5")"
		row "latency p99" "$l_p99 ms" "$b_p99 ms" "$(calc "$b_p99 / $l_p99")" "<= 3 ms" "$(met "$l_p99 <= 3")"
		cp "$dir/latency.dat" "$repo/test/bench/latency.dat"
		;;
	drain)
		# 256 is the default max_inflight (10 before 0.2.0): the targets at the
		# default settings are its rows' (>= 5,000/s, and >= 10,000/s at 256).
		for spec in "fast 10 0" "slow 10 0" "fast 256 10000" "slow 256 2500"; do
			read -r which inflight goal <<< "$spec"
			port_var=${which}_port
			drain_median "${!port_var}" "$drain_main" "$inflight"
			if [ "$which" = fast ]; then ceiling=$fast_ceiling; tname="fast target"; else ceiling=$slow_ceiling; tname="50 ms target"; fi
			row "drain $drain_main, $tname, max_inflight $inflight$([ "$inflight" = 256 ] && echo ' (default)')" \
				"$d_rate msg/s$([ "$d_spread" != - ] && echo " (median of $drain_repeat: $d_spread)")$d_note" "$ceiling/s (target ceiling, wrk)" \
				"$(calc "$d_rate / $ceiling")" "$([ "$goal" = 0 ] && echo - || echo ">= $goal/s")" \
				"$([ "$goal" = 0 ] && echo - || met "$d_rate >= $goal")"
			row "  worker CPU per message ($tname, $inflight)" "$d_cpu_us us" "-" "-" \
				"$([ "$which/$inflight" = fast/256 ] && echo '<= 50 us' || echo -)" \
				"$([ "$which/$inflight" = fast/256 ] && met "$d_cpu_us <= 50" || echo -)"
			row "  WAL per message ($tname, $inflight)" "$d_wal bytes" "-" "-" "-" "-"
		done
		echo "# drain rate (messages/s) against backlog size; one block per max_inflight" > "$dir/drain.dat"
		for inflight in $grid_inflight; do
			echo "# max_inflight $inflight" >> "$dir/drain.dat"
			for n in $grid_backlogs; do
				drain "$fast_port" "$n" "$inflight"
				echo "$n $d_rate $d_cpu_us" >> "$dir/drain.dat"
				echo "  backlog $n, max_inflight $inflight: $d_rate msg/s, $d_cpu_us us CPU/message$d_note"
			done
			printf '\n\n' >> "$dir/drain.dat"
		done
		cp "$dir/drain.dat" "$repo/test/bench/drain.dat"
		;;
	bulk)
		pause
		reset_live
		# (the rows the drains left, dead, vacuumed away: the baseline's tables are new)
		settle
		sql -c "DROP TABLE IF EXISTS bench_v, bench_m;
			CREATE TABLE bench_v (LIKE plivo_otp.verifications INCLUDING ALL);
			CREATE TABLE bench_m (LIKE plivo_otp.messages INCLUDING ALL);
			ALTER TABLE bench_m ADD FOREIGN KEY (verification_id) REFERENCES bench_v (id) ON DELETE CASCADE;"
		t0=$(date +%s.%N)
		if err=$(sql -c "DO \$\$ BEGIN FOR i IN 1..$bulk_n LOOP
				PERFORM plivo_otp.otp_send($(phone_expr "3000000 + i")); END LOOP; END \$\$" 2>&1); then
			bulk_s=$(calc "$(date +%s.%N) - $t0")
			bulk_fig="$bulk_s s"
		else
			bulk_s=nan
			bulk_fig="error: $(echo "$err" | grep -m1 ERROR | sed 's/.*ERROR: *//') after $(calc "$(date +%s.%N) - $t0") s"
		fi
		t0=$(date +%s.%N)
		sql -c "DO \$\$ DECLARE vid uuid; BEGIN FOR i IN 1..$bulk_n LOOP
				vid := gen_random_uuid();
				INSERT INTO bench_v (id, phone, purpose, channel, code_digest, max_attempts, created_at, expires_at, updated_at)
				VALUES (vid, $(phone_expr "3000000 + i"), 'default', 'sms', sha256(random()::text::bytea), 5, now(), now() + interval '10 min', now());
				INSERT INTO bench_m (id, verification_id, channel, phone, body, next_try_at, expires_at, created_at, updated_at)
				VALUES (gen_random_uuid(), vid, 'sms', $(phone_expr "3000000 + i"), sha256(random()::text::bytea) || sha256(random()::text::bytea), now(), now() + interval '10 min', now(), now());
			END LOOP; END \$\$"
		base_s=$(calc "$(date +%s.%N) - $t0")
		row "bulk: $bulk_n otp_send in one transaction" "$bulk_fig" "$base_s s (two plain INSERTs each)" \
			"$(calc "$base_s / $bulk_s")" "<= $(calc "$bulk_n / 10000") s" "$(met "$bulk_s <= $bulk_n / 10000")"
		reset_live
		sql -c "DROP TABLE bench_v, bench_m"
		;;
	pgbench)
		pgbench_bench
		;;
	history)
		history_bench
		;;
	longrun)
		pause
		reset_live
		sql -c "DROP SEQUENCE IF EXISTS bench_numbers; CREATE SEQUENCE bench_numbers START 4000000"
		echo "SELECT plivo_otp.otp_send('+1500' || nextval('bench_numbers'));" > "$dir/long.sql"
		chown postgres: "$dir/long.sql" 2>/dev/null || true
		rm -f "$dir"/long_log*
		(cd "$dir" && as_pg "$PG_BINDIR/pgbench" -n -h "$dir" -p "$pg_port" -c 1 -t "$long_n" -l \
			--log-prefix="$dir/long_log" -f "$dir/long.sql" postgres > "$dir/long.out" 2>&1) ||
			{ grep -m3 -i error "$dir/long.out" >&2 || true; }
		read -r lf ll lpct <<< "$(py pgbench-log "$long_part" "$dir"/long_log*)"
		row "longrun: $long_n codes, one connection: last $long_part" "$ll/s ($lpct %)" "$lf/s (first $long_part)" \
			"$(calc "$ll / $lf")" "within 5 %" "$(met "abs($lpct) <= 5")"
		# The same number of calls from a new connection right after: the
		# tables are as the long run left them and the machine runs at about
		# the same speed (it drifts by up to 20 % within minutes here, which
		# alone moves first against last), so what sets the two apart is
		# state the long connection kept.
		(cd "$dir" && as_pg "$PG_BINDIR/pgbench" -n -h "$dir" -p "$pg_port" -c 1 -t "$long_part" \
			-f "$dir/long.sql" postgres > "$dir/long_fresh.out" 2>&1) ||
			{ grep -m3 -i error "$dir/long_fresh.out" >&2 || true; }
		lnew=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$dir/long_fresh.out")
		lnew=$(printf '%.1f' "${lnew:-nan}")
		# (one-sided: a long connection faster than a new one, whose first
		# calls prepare its plans, kept nothing that slows it)
		row "longrun: the same last $long_part against a new connection's $long_part right after" "$ll/s" \
			"$lnew/s (new connection)" "$(calc "$ll / $lnew")" "no slower than 5 %" "$(met "$ll / $lnew >= 0.95")"
		reset_live
		;;
	memory)
		pid=$(worker_pid dispatcher)
		per=$((max_backlog < 50000 ? max_backlog : 50000))
		# One batch first: catalog and plan caches, libcurl's connections and
		# the loop's contexts reach their size; then what grows is a leak.
		drain "$fast_port" "$per" 256
		r0=$(rss_kb "$pid")
		v0=$(vmrss_kb "$pid")
		total=0
		for _ in $(seq "$mem_batches"); do
			drain "$fast_port" "$per" 256
			total=$((total + d_count))
		done
		pid2=$(worker_pid dispatcher)
		r1=$(rss_kb "$pid2")
		v1=$(vmrss_kb "$pid2")
		[ "$pid" = "$pid2" ] || r1="$r1 (dispatcher restarted)"
		row "memory: dispatcher private RSS (RssAnon) after $total more messages" \
			"$(calc "${r1%% *} / 1024") MB (+$(calc "(${r1%% *} - $r0) / 1024") MB)" \
			"$(calc "$r0 / 1024") MB after a first $per" "-" "growth < 5 MB" "$(met "(${r1%% *} - $r0) / 1024 < 5")"
		row "memory: dispatcher VmRSS (with shared buffers touched)" "$(calc "$v1 / 1024") MB (+$(calc "($v1 - $v0) / 1024") MB)" \
			"$(calc "$v0 / 1024") MB" "-" "-" "-"
		;;
	callbacks)
		drain "$fast_port" "$((max_backlog < 20000 ? max_backlog : 20000))" 256
		sql -c "SELECT provider_uuid FROM plivo_otp.messages WHERE provider_uuid IS NOT NULL" > "$dir/uuids"
		cb_n=$((cb_seconds * 12000))
		py callbacks "http://127.0.0.1:$listen_port/plivo/sms-status" "$dir/plivo.token" "$dir/uuids" "$cb_n" "$dir/cb_signed"
		py callbacks "http://127.0.0.1:$listen_port/plivo/sms-status" "$dir/plivo.token" "$dir/uuids" "$cb_n" "$dir/cb_unsigned" --unsigned
		chmod 644 "$dir"/cb_*
		cb_wrk() {
			CB_FILE=$1 CB_PATH=/plivo/sms-status CB_THREADS=2 wrk -t2 -c16 -d"${cb_seconds}s" --latency \
				-s "$dir/build/test/bench/callbacks.lua" "http://127.0.0.1:$listen_port" | grep '^RESULT'
		}
		e0=$(sql -c "SELECT count(*) FROM plivo_otp.delivery_events")
		read -r _ s_req s_dur s_non2xx s_err _ s_p99 <<< "$(cb_wrk "$dir/cb_signed")"
		e1=$(sql -c "SELECT count(*) FROM plivo_otp.delivery_events")
		read -r _ u_req u_dur u_non2xx _ _ u_p99 <<< "$(cb_wrk "$dir/cb_unsigned")"
		cb_rate=$(calc "($e1 - $e0) / ($s_dur / 1e6)")
		u_rate=$(calc "$u_req / ($u_dur / 1e6)")
		row "callbacks: signed, recorded/s (16 connections)" "$cb_rate/s ($s_req sent, $s_non2xx not 2xx, $s_err errors)" \
			"$u_rate/s unsigned ($u_non2xx of $u_req answered 403)" "$(calc "$cb_rate / $u_rate")" ">= 6000/s" "$(met "$cb_rate >= 6000")"
		row "callbacks: p99" "$s_p99 ms" "$u_p99 ms unsigned" "$(calc "$u_p99 / $s_p99")" "<= 10 ms" "$(met "$s_p99 <= 10")"
		;;
	ratelimit)
		pause
		use_target "$limited_port"
		setconf plivo_otp.max_inflight 64
		setconf plivo_otp.max_requests_per_second "$rl_rate"
		make_saved_queue "$rl_need"
		reset_live
		treset "$limited_port"
		resume
		load_queue "$rl_need"
		sleep $((rl_seconds + 2))
		pause
		tget "$limited_port" /_records > "$dir/records"
		read -r _ rl_got rl_peak <<< "$(py window "$dir/records" "$rl_seconds")"
		over=$(tstat "$limited_port" over_limit)
		setconf plivo_otp.max_requests_per_second 10000
		setconf plivo_otp.max_inflight 256
		row "ratelimit: max_requests_per_second $rl_rate, $rl_seconds s" "$rl_got/s (peak second $rl_peak), $over over the limit" \
			"$rl_rate/s (the limit)" "$(calc "$rl_got / $rl_rate")" "within 2 %, no 429" \
			"$(met "abs($rl_got / $rl_rate - 1) <= 0.02 and $over == 0")"
		;;
	esac
}

# Each bench in a subshell under set -e: one that cannot run is reported and
# the others still run.
for bench in $benches; do
	echo "== $bench"
	set +e
	(set -e; run_bench "$bench")
	rc=$?
	set -e
	if [ $rc -ne 0 ]; then
		echo "  $bench could not run (exit $rc); see above"
		row "$bench" "could not run (exit $rc)" "-" "-" "-" "-"
		pause || true
	fi
done

# ---- RESULTS.md and the plots
py results "$results" "$dir/machine.txt" "$dir/RESULTS.md"
cp "$dir/RESULTS.md" "$repo/test/bench/RESULTS.md"
plot_png() {	# OUTPUT TITLE XLABEL YLABEL EXTRA-SETTINGS PLOT-CLAUSES
	gnuplot -e "set terminal png size 800,500 noenhanced; set output '$1'; set title '$2'; set xlabel '$3';
		set ylabel '$4'; set grid; set key left top; $5 plot $6" || log "gnuplot could not draw $1"
}
if [ -s "$repo/test/bench/drain.dat" ]; then
	clauses="" i=0
	for inflight in $(sed -n 's/^# max_inflight //p' "$repo/test/bench/drain.dat"); do
		clauses="$clauses${clauses:+, }'$repo/test/bench/drain.dat' index $i using 1:2 with linespoints lw 2 title 'max_inflight $inflight'"
		i=$((i + 1))
	done
	plot_png "$repo/test/bench/drain.png" "plivo_otp: drain rate against backlog size (fast target)" \
		"backlog (messages queued in one transaction)" "messages/s" "set logscale x;" "$clauses"
fi
if [ -s "$repo/test/bench/latency.dat" ]; then
	plot_png "$repo/test/bench/latency.png" "plivo_otp: commit -> request at the target (200 commits 20 ms apart)" \
		"ms" "fraction of requests at or below" "" \
		"'$repo/test/bench/latency.dat' using 1:2 with steps lw 2 title 'commit -> request'"
fi
echo "wrote test/bench/RESULTS.md"
