#!/usr/bin/env bash
# test/bench/run.sh: plivo_otp's benchmarks, each printed with a baseline
# measured in the same run on the same machine (not part of test/run.sh).
#
#   sudo bash test/bench/run.sh            # all three
#   sudo bash test/bench/run.sh send       # one of: send dispatch callbacks
#   BENCH_SECONDS=30 BENCH_MESSAGES=5000 sudo bash test/bench/run.sh
#
# send       otp_send per second (pgbench, 2 clients) against two plain INSERTs
#            into tables shaped like the extension's (same columns and indexes),
#            in one statement: the floor of what storing a code can cost
# dispatch   messages per second from commit to 'accepted' at the local Plivo,
#            against the stand-in alone driven by a plain HTTP client
# callbacks  signed delivery callbacks per second recorded by the listener,
#            against the same client sending them unsigned (answered 403 after
#            parsing and checking, with no database work): the ceiling of the
#            client and of HTTP itself

set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$repo/test/lib.sh"

benches=${*:-send dispatch callbacks}
seconds=${BENCH_SECONDS:-10}
messages=${BENCH_MESSAGES:-3000}
AUTH_ID=MABENCHBENCHBENCH001

ensure_packages
dir=$(mktemp -d /tmp/plivo_otp_bench.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
trap 'stop_all "$dir"; rm -rf "$dir"' EXIT

build_copy "$repo" "$dir/build"
install_build "$dir/build"
start_standin "$dir" $AUTH_ID
pg_port=$(free_port)
listen_port=$(free_port)
start_cluster "$dir" "$pg_port" \
	"plivo_otp.auth_id = ''" \
	"plivo_otp.auth_token_file = '$dir/plivo.token'" \
	"plivo_otp.sender = '14155550000'" \
	"plivo_otp.api_url = 'http://127.0.0.1:$STANDIN_PORT'" \
	"plivo_otp.max_requests_per_second = 10000" \
	"plivo_otp.max_inflight = 32" \
	"plivo_otp.listen_port = $listen_port" \
	"plivo_otp.public_url = 'http://127.0.0.1:$listen_port'" \
	"plivo_otp.resend_interval = 0" \
	"plivo_otp.number_max_sends = 0" \
	"plivo_otp.global_max_sends_per_hour = 0" \
	"max_connections = 50"

sql() { as_pg "$PG_BINDIR/psql" -X -qAt -h "$dir" -p "$pg_port" -d postgres "$@"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
json_field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
pgbench_tps() {
	as_pg "$PG_BINDIR/pgbench" -n -h "$dir" -p "$pg_port" -c 2 -j 2 -T "$seconds" -f "$1" postgres \
		> "$1.out" 2>&1 || { grep -m 3 error "$1.out" >&2; return 1; }
	sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$1.out"
}

# The dispatcher sends only once plivo_otp.auth_id is set (the dispatch benchmark does).
sql -c "CREATE EXTENSION plivo_otp"
echo "plivo_otp benchmarks on $(nproc) cores; PostgreSQL $(sql -c 'SHOW server_version')"

for bench in $benches; do
	case $bench in
	send)
		sql -c "CREATE TABLE bench_v (LIKE plivo_otp.verifications INCLUDING ALL);
				CREATE TABLE bench_m (LIKE plivo_otp.messages INCLUDING ALL);
				CREATE SEQUENCE bench_numbers;"
		cat > "$dir/baseline.sql" <<'EOF'
WITH v AS (
	INSERT INTO bench_v (id, phone, purpose, channel, code_digest, max_attempts, created_at, expires_at, updated_at)
	VALUES (gen_random_uuid(), '+1500' || lpad(nextval('bench_numbers')::text, 8, '0'), 'default', 'sms',
			sha256(random()::text::bytea), 5, now(), now() + interval '10 min', now())
	RETURNING id, phone)
INSERT INTO bench_m (id, verification_id, channel, phone, body, next_try_at, expires_at, created_at, updated_at)
SELECT gen_random_uuid(), v.id, 'sms', v.phone,
	   sha256(random()::text::bytea) || sha256(random()::text::bytea), now(), now() + interval '10 min', now(), now()
FROM v;
EOF
		cat > "$dir/send.sql" <<'EOF'
SELECT plivo_otp.otp_send('+1501' || lpad(nextval('bench_numbers')::text, 8, '0'));
EOF
		chown postgres: "$dir"/*.sql 2>/dev/null || true
		base=$(pgbench_tps "$dir/baseline.sql")
		send=$(pgbench_tps "$dir/send.sql")
		echo "send: otp_send $send/s; two plain INSERTs $base/s; cost ratio $(ratio "$base" "$send")x (pgbench -c 2 -T $seconds)"
		sql -c "TRUNCATE plivo_otp.verifications CASCADE; DROP TABLE bench_v, bench_m; DROP SEQUENCE bench_numbers"
		;;
	dispatch)
		alone=$(as_pg python3 "$dir/build/test/bench/load.py" standin "http://127.0.0.1:$STANDIN_PORT" \
			$AUTH_ID "$dir/plivo.token" "$messages" 32)
		sql -c "DO \$\$ BEGIN FOR i IN 1..$messages LOOP
				PERFORM plivo_otp.otp_send('+1501' || lpad(i::text, 8, '0')); END LOOP; END \$\$"
		start=$(date +%s.%N)
		sql -c "ALTER SYSTEM SET plivo_otp.auth_id = '$AUTH_ID'" -c "SELECT pg_reload_conf()" >/dev/null
		until [ "$(sql -c "SELECT count(*) FROM plivo_otp.messages WHERE dispatch_state = 'accepted'")" -ge "$messages" ]; do
			sleep 0.05
		done
		took=$(python3 -c "import sys,time; print(round(time.time() - float(sys.argv[1]), 3))" "$start")
		rate=$(python3 -c "import sys; print(round(int(sys.argv[1]) / float(sys.argv[2]), 1))" "$messages" "$took")
		echo "dispatch: $messages messages accepted in ${took}s (from the reload that configures the dispatcher) = $rate/s (max_inflight 32); stand-in alone $(json_field "$alone" per_second)/s with 32 clients; ratio $(ratio "$rate" "$(json_field "$alone" per_second)")"
		;;
	callbacks)
		if [ "$(sql -c "SELECT count(*) FROM plivo_otp.messages WHERE provider_uuid IS NOT NULL")" -lt 100 ]; then
			echo "callbacks: run with dispatch first (it creates the accepted messages)"
			continue
		fi
		sql -c "SELECT provider_uuid FROM plivo_otp.messages WHERE provider_uuid IS NOT NULL" > "$dir/uuids"
		chown postgres: "$dir/uuids" 2>/dev/null || true
		floor=$(as_pg python3 "$dir/build/test/bench/load.py" callbacks "http://127.0.0.1:$listen_port" \
			"http://127.0.0.1:$listen_port" "$dir/plivo.token" "$dir/uuids" 8 --unsigned)
		real=$(as_pg python3 "$dir/build/test/bench/load.py" callbacks "http://127.0.0.1:$listen_port" \
			"http://127.0.0.1:$listen_port" "$dir/plivo.token" "$dir/uuids" 8)
		delivered=$(sql -c "SELECT count(*) FROM plivo_otp.messages WHERE delivery_status = 'delivered'")
		echo "callbacks: $(json_field "$real" per_second)/s signed and recorded (statuses $(json_field "$real" statuses), $delivered messages delivered); same client, unsigned (403 after parsing and checking, no database work) $(json_field "$floor" per_second)/s; ratio $(ratio "$(json_field "$real" per_second)" "$(json_field "$floor" per_second)")"
		;;
	*)
		echo "unknown benchmark: $bench" >&2
		exit 2
		;;
	esac
done
