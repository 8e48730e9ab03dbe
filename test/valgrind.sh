#!/usr/bin/env bash
# test/valgrind.sh: the background workers under valgrind's memcheck, where
# the sanitize suite's ASan cannot reach (uninitialised memory, reads of
# memory that libcurl, libmicrohttpd and OpenSSL malloc'd, syscalls given
# undefined bytes).  A separate command, not part of test/run.sh or CI:
#
#   sudo bash test/valgrind.sh          (about 3 minutes on 2 cores)
#   KEEP_TEST_DIR=1 sudo bash test/valgrind.sh    keep the logs
#
# It builds and installs the extension, starts the local Plivo stand-in
# (signed queued/sent/delivered callbacks for every message) and a cluster
# whose postmaster runs under valgrind --trace-children=yes (each forked
# process gets its own log), then drives both workers: sends through the
# stand-in, a 500 that is retried, signed callbacks to the listener, forged,
# tampered and replayed ones, a reload, a verification with the code from
# the SMS.  It checks that all of that worked, stops the server and reads
# every process's errors: an error counts against plivo_otp when its stack,
# or the origin of the uninitialised value, has a frame in plivo_otp.so; the
# rest (PostgreSQL itself, the libraries) is reported but does not fail.
# PostgreSQL's own suppressions (src/tools/valgrind.supp of a PostgreSQL
# source tree; Debian ships none) are used when VALGRIND_SUPP names the file.
# The last line is "N passed, N failed"; the exit status is non-zero when a
# check failed or plivo_otp code has an error.

set -u
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$repo/test/lib.sh"

AUTH_ID=MAVALGRINDVALGRIND01
export LANG=C.UTF-8

ensure_packages || exit 1
if ! command -v valgrind >/dev/null; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "valgrind is missing. Run as root: apt-get install -y --no-install-recommends valgrind" >&2
		exit 1
	fi
	log "installing valgrind"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends valgrind >/dev/null || exit 1
fi

# Like test/run.sh: the extension is installed into the system's PostgreSQL.
exec 9>/tmp/plivo_otp_test.lock
if ! flock -n 9; then
	log "waiting for another test run on this machine to finish"
	flock 9
fi

work=$(mktemp -d /tmp/plivo_otp_valgrind.XXXXXX)
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
cleanup() {
	stop_all "$work"
	pkill -f -- "$work" 2>/dev/null
	sleep 0.5
	pkill -9 -f -- "$work" 2>/dev/null
	[ -n "${KEEP_TEST_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -n "${KEEP_TEST_DIR:-}" ] && echo "keeping $work" >&2

passed=0
failed=0
build_copy "$repo" "$work/build" || exit 1
install_build "$work/build" || exit 1

log "starting the local Plivo stand-in"
start_standin "$work" $AUTH_ID --auto-callbacks queued,sent,delivered --callback-interval 0.5 \
	--callback-signature both
plivo=http://127.0.0.1:$STANDIN_PORT
pg_port=$(free_port)
listen_port=$(free_port)

as_pg "$PG_BINDIR/initdb" -D "$work/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null || exit 1
cat >> "$work/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$work'
port = $pg_port
shared_preload_libraries = 'plivo_otp'
plivo_otp.database = 'postgres'
plivo_otp.auth_id = '$AUTH_ID'
plivo_otp.auth_token_file = '$work/plivo.token'
plivo_otp.sender = '14155550000'
plivo_otp.api_url = '$plivo'
plivo_otp.listen_port = $listen_port
plivo_otp.public_url = 'http://127.0.0.1:$listen_port'
# valgrind makes everything 20-50 times slower
plivo_otp.request_timeout = '60s'
huge_pages = off
max_connections = 20
EOF

supp=()
if [ -n "${VALGRIND_SUPP:-}" ]; then
	[ -r "$VALGRIND_SUPP" ] || { echo "VALGRIND_SUPP=$VALGRIND_SUPP is not readable" >&2; exit 1; }
	supp=(--suppressions="$VALGRIND_SUPP")
fi
mkdir -p "$work/valgrind"
[ "$(id -u)" -eq 0 ] && chown postgres: "$work/valgrind"
log "starting the postmaster under valgrind (port $pg_port, listener on $listen_port)"
as_pg sh -c "nohup valgrind --tool=memcheck --trace-children=yes --track-origins=yes \
	--read-var-info=yes --num-callers=40 --leak-check=no --error-limit=no --fullpath-after= \
	--error-markers=VGERROR-BEGIN,VGERROR-END ${supp[*]} \
	--log-file='$work/valgrind/%p.log' \
	'$PG_BINDIR/postgres' -D '$work/data' > '$work/postgres.log' 2>&1 &"

psql_vg() { as_pg "$PG_BINDIR/psql" -X -qAt -h "$work" -p "$pg_port" -d postgres -v ON_ERROR_STOP=1 "$@"; }
plivo_get() { python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "$plivo/_control/$1"; }
plivo_post() {
	python3 -c 'import sys,urllib.request
r = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(r).read().decode())' "$plivo/_control/$1" "$2"
}
# Poll a SQL boolean for up to $1 seconds.
wait_sql() {
	local secs=$1 sql=$2 i
	for i in $(seq $((secs * 2))); do
		[ "$(psql_vg -c "$sql" 2>/dev/null)" = t ] && return 0
		sleep 0.5
	done
	return 1
}
# The HTTP status a callback through the stand-in got (JSON request $1).
callback_status() {
	plivo_post callback "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'
}

started=$(date +%s)
for _ in $(seq 240); do
	as_pg "$PG_BINDIR/pg_isready" -q -h "$work" -p "$pg_port" && break
	sleep 0.5
done
count_check "the server started under valgrind" as_pg "$PG_BINDIR/pg_isready" -q -h "$work" -p "$pg_port"
psql_vg -c "CREATE EXTENSION plivo_otp" || exit 1
count_check "both workers run" wait_sql 120 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN ('plivo_otp dispatcher', 'plivo_otp listener')"
workers=$(psql_vg -c "SELECT string_agg(backend_type || '=' || pid, ' ') FROM pg_stat_activity WHERE backend_type LIKE 'plivo_otp %'")
echo "   workers: $workers"

log "sends through the stand-in, delivery callbacks to the listener"
plivo_post behave '{"mode": "500", "count": 1}' >/dev/null
vids=()
for n in 0101 0102 0103 0104 0105; do
	vids+=("$(psql_vg -c "SELECT plivo_otp.otp_send('+1 415 555 $n', 'sms', 'login')")")
done
in_list=$(printf "'%s'," "${vids[@]}")
in_list=${in_list%,}
count_check "5 messages accepted by Plivo (one after a 500)" \
	wait_sql 180 "SELECT count(*) = 5 FROM plivo_otp.messages WHERE verification_id IN ($in_list) AND dispatch_state = 'accepted'"
count_check "5 delivered, from signed callbacks" \
	wait_sql 180 "SELECT count(*) = 5 FROM plivo_otp.messages WHERE verification_id IN ($in_list) AND delivery_status = 'delivered'"

log "forged, tampered and replayed callbacks"
uuid=$(psql_vg -c "SELECT provider_uuid FROM plivo_otp.messages WHERE verification_id = '${vids[0]}'")
count_check "a callback signed with the wrong token is refused (403)" \
	test "$(callback_status "{\"message_uuid\": \"$uuid\", \"status\": \"failed\", \"signature\": \"bad\"}")" = 403
count_check "an unsigned callback is refused (403)" \
	test "$(callback_status "{\"message_uuid\": \"$uuid\", \"status\": \"failed\", \"signature\": \"none\"}")" = 403
count_check "a tampered callback is refused (403)" \
	test "$(callback_status "{\"message_uuid\": \"$uuid\", \"status\": \"sent\", \"tamper\": {\"Status\": \"failed\"}}")" = 403
replay=$(plivo_post callback "{\"message_uuid\": \"$uuid\", \"status\": \"delivered\", \"sequence\": 9}")
count_check "a V2-signed callback is recorded (200)" \
	test "$(plivo_post callback "{\"message_uuid\": \"$uuid\", \"status\": \"delivered\", \"sequence\": 10, \"signature\": \"v2\"}" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = 200
count_check "a replayed callback is refused (403)" \
	test "$(plivo_post replay "$replay" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = 403
count_check "a forged status never reached the message" \
	wait_sql 10 "SELECT delivery_status = 'delivered' FROM plivo_otp.messages WHERE verification_id = '${vids[0]}'"

log "reload, verify with the code from the SMS"
psql_vg -c "SELECT pg_reload_conf()" >/dev/null
code=$(plivo_get messages | python3 -c 'import json,re,sys
m = [x for x in json.load(sys.stdin) if x["dst"] == "14155550101"]
print(re.search(r"(\d{6})", m[-1]["text"]).group(1))')
count_check "a wrong code is refused" test "$(psql_vg -c "SELECT plivo_otp.otp_verify('+14155550101', '000000', 'login')")" = f
count_check "the code from the SMS verifies" test "$(psql_vg -c "SELECT plivo_otp.otp_verify('+14155550101', '$code', 'login')")" = t
vid=$(psql_vg -c "SELECT plivo_otp.otp_send('+1 415 555 0106', 'sms', 'login')")
count_check "a send after the reload is accepted" \
	wait_sql 120 "SELECT dispatch_state = 'accepted' FROM plivo_otp.messages WHERE verification_id = '$vid'"

log "stopping the server (valgrind writes its summaries)"
as_pg "$PG_BINDIR/pg_ctl" -D "$work/data" -m fast -w -t 300 stop >/dev/null
count_check "the server stopped cleanly" grep -q "database system is shut down" "$work/postgres.log"
echo "   workload under valgrind: $(( $(date +%s) - started )) s"

# Each log is one process.  Split it into errors (between the markers); an
# error is plivo_otp's when the first frame of its stack outside glibc is in
# plivo_otp's code, or when the origin of the value or block (after the
# allocator's frames) is: a frame with a path under the build's src/
# (--fullpath-after=) or in plivo_otp.so.  Errors that only pass through
# plivo_otp on the way into PostgreSQL (a worker's InitPostgres writing the
# relcache init file) are PostgreSQL's.
read -r procs total ours others < <(python3 - "$work/valgrind" "$work/valgrind-ours.txt" "$work/build/src/" <<'EOF'
import glob, re, sys
logdir, ours_file, build_src = sys.argv[1], sys.argv[2], sys.argv[3]
FRAME = re.compile(r"^\s+(?:at|by) 0x[0-9A-F]+: (\S+) \((.*)\)$")
GLIBC = re.compile(r"^(?:in )?/(?:usr/)?lib(?:64)?/(?:x86_64-linux-gnu/)?(?:libc|ld-linux)|"
                   r"vgpreload|^[a-z_]+/(?:\.\./|\./)")
ALLOC = {"???", "palloc", "palloc0", "palloc_extended", "repalloc", "pstrdup", "pnstrdup",
         "MemoryContextAlloc", "MemoryContextAllocZero", "MemoryContextAllocExtended",
         "MemoryContextAllocZeroAligned", "malloc", "calloc", "realloc"}

def ours(where):
    return build_src in where or "plivo_otp.so" in where

def frames(lines):
    return [m.groups() for m in map(FRAME.match, lines) if m]

def classify(block):
    lines = [re.sub(r"^==\d+== ?", "", l) for l in block.splitlines()]
    split = next((k for k, l in enumerate(lines)
                  if re.match(r"\s*(Address 0x|Uninitialised value was created|Block was alloc)", l)),
                 len(lines))
    main = [f for f in frames(lines[:split]) if not GLIBC.search(f[1])]
    if main and ours(main[0][1]):
        return True
    origin = [f for f in frames(lines[split:])
              if not GLIBC.search(f[1]) and not (f[0] in ALLOC and not ours(f[1]))]
    return bool(origin) and ours(origin[0][1])

procs = total = mine = 0
kept = []
for path in sorted(glob.glob(logdir + "/*.log")):
    text = open(path, errors="replace").read()
    procs += 1
    for block in re.findall(r"VGERROR-BEGIN\n(.*?)VGERROR-END", text, re.S):
        total += 1
        if classify(block):
            mine += 1
            kept.append(f"--- {path}\n{block}")
open(ours_file, "w").write("\n".join(kept))
print(procs, total, mine, total - mine)
EOF
)
echo "   valgrind: $procs processes, $total errors: $ours in plivo_otp code, $others elsewhere"
count_check "valgrind traced the server's processes" test "${procs:-0}" -gt 3
count_check "no valgrind error in plivo_otp code" test "${ours:-1}" -eq 0
if [ "${ours:-0}" -gt 0 ]; then
	head -c 20000 "$work/valgrind-ours.txt"
fi
if [ "${others:-0}" -gt 0 ]; then
	echo "   (errors elsewhere, by kind:)"
	grep -h -A1 'VGERROR-BEGIN' "$work"/valgrind/*.log | grep -vE 'VGERROR-BEGIN|^--' |
		sed 's/^==[0-9]*== //' | sort | uniq -c | sort -rn | head -n 10
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
