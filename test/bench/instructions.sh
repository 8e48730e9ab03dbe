#!/usr/bin/env bash
# test/bench/instructions.sh: the CPU instructions one otp_send costs, counted
# by valgrind's callgrind in a single-user server, for a before/after of a
# change.  Timings on a shared VM drift by up to 20 % within minutes; an
# instruction count does not (two runs of the same build agree within 0.5 %).
# Not part of test/run.sh: it prints a figure, it is not a test.
#
#   sudo bash test/bench/instructions.sh          # 1,000 and 2,000 sends (~1 min)
#   sudo N=5000 bash test/bench/instructions.sh
#
# It builds and installs the checkout, makes a throwaway cluster (settings
# as test/bench/run.sh's: caps off), and runs N then 2 N otp_send to new
# numbers in one DO loop under callgrind, counting only inside otp_send;
# the figure is the difference divided by N, so what runs once per process
# (libphonenumber's metadata, the first plans) is not in it.  Compare two
# commits by running it on each.

set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$repo/test/lib.sh"
PACKAGES="$PACKAGES valgrind"
ensure_packages
n=${N:-1000}
# The extension is installed system-wide: queue behind test/run.sh's runs (same lock).
exec 9>/tmp/plivo_otp_test.lock
flock -n 9 || { log "waiting for another test or bench run (/tmp/plivo_otp_test.lock)"; flock 9; }

dir=$(mktemp -d /tmp/plivo_otp_instr.XXXXXX)
chmod 755 "$dir"
chown postgres: "$dir"
trap 'stop_all "$dir"; rm -rf "$dir"' EXIT
build_copy "$repo" "$dir/build" >/dev/null
install_build "$dir/build" >/dev/null

as_pg sh -c "umask 077; printf 'token' > '$dir/plivo.token'"
port=$(free_port)
start_cluster "$dir" "$port" "plivo_otp.auth_id = ''" \
	"plivo_otp.auth_token_file = '$dir/plivo.token'" "plivo_otp.sender = '14155550000'" \
	"plivo_otp.global_max_sends_per_hour = 0" "plivo_otp.number_max_sends = 0" \
	"plivo_otp.caller_max_sends = 0" "plivo_otp.resend_interval = 0"
as_pg "$PG_BINDIR/psql" -X -q -h "$dir" -p "$port" -d postgres -c "CREATE EXTENSION plivo_otp"
as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null

# instructions_of COUNT: instructions inside otp_send for COUNT sends (and one first send).
instructions_of() {
	cat > "$dir/sends.sql" <<EOF
SELECT plivo_otp.otp_send('+15005550100');
TRUNCATE plivo_otp.verifications, plivo_otp.messages, plivo_otp.send_counters;
DO \$\$ BEGIN FOR i IN 1..$1 LOOP PERFORM plivo_otp.otp_send('+1500' || (2000000 + i)::text); END LOOP; END \$\$;
EOF
	chown postgres: "$dir/sends.sql"
	as_pg sh -c "valgrind --tool=callgrind --toggle-collect=plivo_otp_send \
		--callgrind-out-file='$dir/callgrind.out' '$PG_BINDIR/postgres' --single -D '$dir/data' postgres \
		< '$dir/sends.sql'" 2>&1 | sed -n 's/^==[0-9]*== Collected : *//p'
}

log "callgrind: $n and $((2 * n)) otp_send (a few seconds per 1,000)"
one=$(instructions_of "$n")
two=$(instructions_of "$((2 * n))")
[ -n "$one" ] && [ -n "$two" ] || { log "callgrind reported no count (see above)"; exit 1; }
rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] || rev="$rev with uncommitted changes"
printf 'otp_send: %s instructions a send (%s for %s sends, %s for %s; commit %s)\n' \
	"$(( (two - one) / n ))" "$one" "$n" "$two" "$((2 * n))" "$rev"
