#!/usr/bin/env bash
# test/demo.sh: the main job, end to end, on this machine.
#
#   sudo bash test/demo.sh          build, install, start a throwaway PostgreSQL
#                                   with plivo_otp and a local Plivo stand-in, and
#                                   walk through send -> SMS -> delivery -> verify,
#                                   then a voice code: call -> script -> hang-up -> verify
#   sudo bash test/demo.sh --stop   stop the demo and remove everything it made
#
# The demo keeps running afterwards for exploration: it prints how to connect.
# Everything lives in /tmp/plivo_otp_demo (override with PLIVO_OTP_DEMO_DIR).

set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$repo/test/lib.sh"

demo=${PLIVO_OTP_DEMO_DIR:-/tmp/plivo_otp_demo}
AUTH_ID=MADEMODEMODEMODEMO01

stop_demo() {
	stop_all "$demo"
	rm -rf "$demo"
}

if [ "${1:-}" = "--stop" ]; then
	stop_demo
	echo "demo stopped and removed"
	exit 0
fi

ensure_packages
[ -d "$demo" ] && { log "removing the previous demo"; stop_demo; }
mkdir -p "$demo"
chmod 755 "$demo"
[ "$(id -u)" -eq 0 ] && chown postgres: "$demo"

build_copy "$repo" "$demo/build"
install_build "$demo/build"

log "starting the local Plivo stand-in"
start_standin "$demo" $AUTH_ID --auto-callbacks queued,sent,delivered --callback-interval 0.3
plivo_port=$STANDIN_PORT
pg_port=$(free_port)
listen_port=$(free_port)

log "starting PostgreSQL with plivo_otp (port $pg_port, listener on $listen_port)"
start_cluster "$demo" "$pg_port" \
	"plivo_otp.auth_id = '$AUTH_ID'" \
	"plivo_otp.auth_token_file = '$demo/plivo.token'" \
	"plivo_otp.sender = '14155550000'" \
	"plivo_otp.voice_sender = '14155550001'" \
	"plivo_otp.api_url = 'http://127.0.0.1:$plivo_port'" \
	"plivo_otp.listen_port = $listen_port" \
	"plivo_otp.public_url = 'http://127.0.0.1:$listen_port'"

plivo_get() { python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "http://127.0.0.1:$plivo_port/_control/$1"; }
psql_demo() { as_pg "$PG_BINDIR/psql" -X -h "$demo" -p "$pg_port" -d postgres "$@"; }
show() { printf '\n-- %s\n' "$1"; }

psql_demo -q -c "CREATE EXTENSION plivo_otp"

show "Issue a code (the SMS leaves only because this transaction commits)"
vid=$(psql_demo -qAt -c "SELECT plivo_otp.otp_send('+1 (415) 555-0199', 'sms', 'login')")
echo "otp_send -> $vid"

show "A rolled-back send never leaves the database"
psql_demo -q -c "BEGIN" -c "SELECT plivo_otp.otp_send('+14155550188') IS NOT NULL AS queued" -c "ROLLBACK"

show "The SMS as Plivo (the stand-in) received it"
sms=""
for _ in $(seq 50); do
	sms=$(plivo_get messages |
		python3 -c 'import json,sys; m=[x for x in json.load(sys.stdin) if x["dst"]=="14155550199"]; print(json.dumps(m[-1]) if m else "")')
	[ -n "$sms" ] && break
	sleep 0.1
done
echo "$sms" | python3 -m json.tool
code=$(echo "$sms" | python3 -c 'import json,sys,re; print(re.search(r"(\d{4,10})", json.load(sys.stdin)["text"]).group(1))')
echo "messages to the rolled-back number: $(plivo_get messages | grep -c 14155550188 || true)"

show "Delivery states arrive as signed callbacks (queued, sent, delivered)"
for _ in $(seq 50); do
	st=$(psql_demo -qAt -c "SELECT delivery_status FROM plivo_otp.otp_status('$vid')")
	[ "$st" = delivered ] && break
	sleep 0.1
done
psql_demo -x -c "SELECT * FROM plivo_otp.otp_status('$vid')"
psql_demo -c "SELECT status, sequence, received_at::time(0) FROM plivo_otp.delivery_events ORDER BY id"

show "Refusals: a wrong code uses an attempt; a resend inside the cool-down is refused"
psql_demo -c "SELECT plivo_otp.otp_check('+14155550199', '000000', 'login') AS wrong_code"
psql_demo -c "SELECT attempts_left FROM plivo_otp.otp_status('$vid')"
psql_demo -c "SELECT plivo_otp.otp_send('+14155550199', 'sms', 'login')" 2>&1 | sed 's/^/  /' || true
psql_demo -c "SELECT plivo_otp.otp_send('415-555-0199')" 2>&1 | sed 's/^/  /' || true

show "Verify the code from the SMS: approved once, then used up"
psql_demo -c "SELECT plivo_otp.otp_check('+14155550199', '$code', 'login') AS first_try"
psql_demo -c "SELECT plivo_otp.otp_check('+14155550199', '$code', 'login') AS second_try"

show "What the tables hold: a digest and a wiped body, never the code"
psql_demo -c "SELECT v.state, encode(substr(v.code_digest, 1, 8), 'hex') || '...' AS code_digest, m.body IS NULL AS body_wiped, m.dispatch_state, m.delivery_status FROM plivo_otp.verifications v JOIN plivo_otp.messages m ON m.verification_id = v.id WHERE v.id = '$vid'"

show "A voice code: Plivo (the stand-in) places the call and fetches its script"
vvid=$(psql_demo -qAt -c "SELECT plivo_otp.otp_send('+14155550177', 'voice', 'login')")
echo "otp_send(..., 'voice') -> $vvid"
call=""
for _ in $(seq 100); do
	call=$(plivo_get calls |
		python3 -c 'import json,sys; c=[x for x in json.load(sys.stdin) if x["to"]=="14155550177" and x.get("answer")]; print(json.dumps(c[-1]) if c else "")')
	[ -n "$call" ] && break
	sleep 0.1
done
# The Call request, and the script the answer URL served (digits masked here;
# the stand-in's own record at /_control/calls has them).
echo "$call" | python3 -c '
import json, re, sys
c = json.load(sys.stdin)
mask = lambda t: re.sub(r"(<Speak[^>]*>)(.*?)(</Speak>)", lambda m: m.group(1) + re.sub(r"\d", "#", m.group(2)) + m.group(3), t)
print("Call request:", json.dumps({k: c.get(k) for k in ("from", "to", "answer_url", "hangup_url", "ring_timeout", "time_limit", "machine_detection")}, indent=2))
print("answer URL fetched (signed V3) ->", c["answer"]["status"])
print("spoken script:", mask(c["answer"]["body"]))'
vcode=$(echo "$call" | python3 -c 'import json,sys,re; c=json.load(sys.stdin); print("".join(re.findall(r"\d", c["answer"]["speak"][0]["text"])))')

show "The hang-up callback records how the call ended"
for _ in $(seq 100); do
	st=$(psql_demo -qAt -c "SELECT delivery_status FROM plivo_otp.otp_status('$vvid')")
	[ "$st" = completed ] && break
	sleep 0.1
done
psql_demo -c "SELECT channel, origin, dispatch_state, delivery_status, error_code, error_text, answered_at IS NOT NULL AS answered FROM plivo_otp.otp_messages('$vvid')"

show "A second fetch of the same answer URL gets no code"
echo "$call" | python3 -c 'import json,sys; print(json.dumps({"request_uuid": json.load(sys.stdin)["request_uuid"]}))' |
	python3 -c 'import sys,urllib.request; r=urllib.request.Request(sys.argv[1], data=sys.stdin.read().encode(), headers={"Content-Type": "application/json"}); print(__import__("json").load(urllib.request.urlopen(r))["body"])' "http://127.0.0.1:$plivo_port/_control/call_fetch"

show "Verify the code the call read"
psql_demo -c "SELECT plivo_otp.otp_check('+14155550177', '$vcode', 'login') AS spoken_code"

show "The dispatcher"
psql_demo -x -c "SELECT * FROM plivo_otp.dispatcher_stats"

cat <<EOF

The demo keeps running. Explore it with:
  $( [ "$(id -u)" -eq 0 ] && echo "runuser -u postgres -- " )$PG_BINDIR/psql -h $demo -p $pg_port -d postgres
  (the local Plivo's record of what it received: http://127.0.0.1:$plivo_port/_control/messages)
Stop and remove it with:
  bash $repo/test/demo.sh --stop
EOF
