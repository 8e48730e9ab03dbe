# test/bench/pgbench.sh: the SQL-side benches of test/bench/run.sh (sourced
# by it; uses its sql, row, calc, met, reset_live, drain, phone_expr and
# settings): otp_send and otp_verify per transaction against plain SQL on
# tables shaped like the extension's, and the same rates with a large
# finished history.

# pgb SCRIPT CLIENTS SYNCHRONOUS_COMMIT: pgbench for $pgb_seconds; prints tps (nan if it failed).
# The run's WAL per transaction (records, full-page images, bytes) goes to
# stderr: what a commit writes, beside its rate.
pgb() {
	local f=$1 c=$2 s=$3 out tx
	chown postgres: "$f" 2>/dev/null || true
	sql -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
	if ! as_pg env PGOPTIONS="-c synchronous_commit=$s" "$PG_BINDIR/pgbench" -n -h "$dir" -p "$pg_port" \
		-c "$c" -j "$c" -T "$pgb_seconds" -f "$f" postgres > "$f.out" 2>&1; then
		grep -m3 -iE 'error|abort' "$f.out" >&2 || true
	fi
	tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$f.out")
	[ -n "$tx" ] && [ "$tx" -gt 0 ] && echo "    ($(basename "$f") c$c $s: WAL per transaction $(sql -c "SELECT format('%s records, %s full-page images, %s bytes',
			round(wal_records::numeric / $tx, 1), round(wal_fpi::numeric / $tx, 2), round(wal_bytes / $tx)) FROM pg_stat_wal"))" >&2
	out=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$f.out")
	[ -n "$out" ] && printf '%.1f\n' "$out" || echo nan
}

# The bench schema: LIKE ... INCLUDING ALL copies the extension's columns,
# defaults, checks and indexes (partial and unique ones too); the foreign key
# is added by hand.  And the four pgbench scripts.
bench_schema() {
	sql -c "DROP SCHEMA IF EXISTS bench CASCADE; CREATE SCHEMA bench;
		CREATE TABLE bench.verifications (LIKE plivo_otp.verifications INCLUDING ALL);
		CREATE TABLE bench.messages (LIKE plivo_otp.messages INCLUDING ALL);
		ALTER TABLE bench.messages ADD FOREIGN KEY (verification_id)
			REFERENCES bench.verifications (id) ON DELETE CASCADE;
		DROP SEQUENCE IF EXISTS bench_numbers; CREATE SEQUENCE bench_numbers START 4000000;"
	cat > "$dir/send.sql" <<'EOF'
SELECT plivo_otp.otp_send('+1500' || nextval('bench_numbers'));
EOF
	cat > "$dir/send_base.sql" <<'EOF'
WITH v AS (
	INSERT INTO bench.verifications (id, phone, purpose, channel, code_digest, max_attempts, created_at, expires_at, updated_at)
	VALUES (gen_random_uuid(), '+1500' || nextval('bench_numbers'), 'default', 'sms',
			sha256(random()::text::bytea), 5, now(), now() + interval '10 min', now())
	RETURNING id, phone)
INSERT INTO bench.messages (id, verification_id, channel, phone, body, next_try_at, expires_at, created_at, updated_at)
SELECT gen_random_uuid(), v.id, 'sms', v.phone,
	   sha256(random()::text::bytea) || sha256(random()::text::bytea), now(), now() + interval '10 min', now(), now()
FROM v;
EOF
	cat > "$dir/verify.sql" <<EOF
\\set n random(1, $verify_n)
SELECT plivo_otp.otp_verify('+1500' || (5000000 + :n), '000000');
EOF
	cat > "$dir/verify_base.sql" <<EOF
\\set n random(1, $verify_n)
WITH c AS (SELECT id FROM bench.verifications
			WHERE phone = '+1500' || (5000000 + :n) AND purpose = 'default' AND state = 'pending' FOR UPDATE)
UPDATE bench.verifications v SET attempts = v.attempts + 1, updated_at = now() FROM c WHERE v.id = c.id;
EOF
}

# Forget the codes a send run made, in the extension and in bench.
clear_sends() {
	reset_live
	sql -c "TRUNCATE bench.verifications CASCADE"
}

# $verify_n pending codes (100 attempts each) for the verify scripts, copied
# into bench.verifications for the baseline.
prepare_verify() {
	clear_sends
	sql -c "SET plivo_otp.max_attempts = 100" -c "DO \$\$ BEGIN FOR i IN 1..$verify_n LOOP
			PERFORM plivo_otp.otp_send($(phone_expr "3000000 + i"));
			IF i % 1000 = 0 THEN COMMIT; END IF; END LOOP; END \$\$"
	sql -c "INSERT INTO bench.verifications SELECT * FROM plivo_otp.verifications
			WHERE created_at > now() - interval '1 hour'" -c "ANALYZE bench.verifications"
}

# Both sides of a comparison start alike: the rows earlier benches deleted
# vacuumed away (dead index entries slow every insert's unique checks, and
# the baseline's tables are new).  Statistics are left as they are.  (No
# CHECKPOINT: right after one, each first change of a page writes its
# full image, and the extension's indexes, grown by the earlier benches,
# have many more pages than the baseline's new ones.)  The baseline's tables
# are not vacuumed: TRUNCATE made them new, with nothing dead, and a VACUUM
# of an empty table has the planner go by its size at planning time: the
# foreign key's check, planned (and kept) by each pgbench connection while
# the table was a page, then scanned bench.verifications as it grew (the
# extension plans its own check with forced plans: src/common/forced_plans.c).
settle() {
	sql -c "VACUUM plivo_otp.verifications, plivo_otp.messages, plivo_otp.send_counters"
}

pgbench_bench() {
	local c s a b
	pause
	bench_schema
	for c in 1 4; do
		for s in on off; do
			clear_sends
			settle
			a=$(pgb "$dir/send.sql" "$c" "$s")
			clear_sends
			settle
			b=$(pgb "$dir/send_base.sql" "$c" "$s")
			row "otp_send tps, $c client(s), synchronous_commit $s" "$a" "$b (two plain INSERTs)" \
				"$(calc "$a / $b")" ">= 0.8 x" "$(met "$a / $b >= 0.8")"
		done
	done
	prepare_verify
	for c in 1 4; do
		for s in on off; do
			settle
			a=$(pgb "$dir/verify.sql" "$c" "$s")
			settle
			b=$(pgb "$dir/verify_base.sql" "$c" "$s")
			row "otp_verify tps (wrong code), $c client(s), synchronous_commit $s" "$a" \
				"$b (SELECT FOR UPDATE + UPDATE)" "$(calc "$a / $b")" ">= 0.8 x" "$(met "$a / $b >= 0.8")"
		done
	done
	clear_sends
}

# history_phase LABEL: issue, verify (1 client) and drain (max_inflight at
# its default, the median of drain_median's) rates now; sets h_issue h_verify h_drain.  Each rate is taken
# after a CHECKPOINT, in every phase: the history's insert and VACUUM
# ANALYZE leave hundreds of MB of dirty buffers, which the checkpointer
# would otherwise write (and fsync) during the next phase's run.  The rates
# are taken at synchronous_commit off: what grows with the tables is CPU
# and buffers, and a commit's fsync (the same whatever the tables hold, and
# varying by 30 % from one minute to the next on this machine's disk: the
# same code measured 0.72 x and 1.39 x at on) would only hide it.
history_phase() {
	clear_sends
	sql -c "CHECKPOINT"
	h_issue=$(pgb "$dir/send.sql" 1 off)
	prepare_verify
	sql -c "CHECKPOINT"
	h_verify=$(pgb "$dir/verify.sql" 1 off)
	clear_sends
	sql -c "CHECKPOINT"
	drain_median "$fast_port" "$drain_main" 256
	h_drain=$d_rate
	# A drain cut short: what it sent over the whole cap, not the rate of its first burst.
	[ "$d_count" -lt "$drain_main" ] && h_drain=$(calc "$d_count / $drain_cap")
	echo "  $1: otp_send $h_issue tps, otp_verify $h_verify tps, drain $h_drain msg/s$d_note"
}

# empty_phase LABEL: the tables emptied (TRUNCATE, then ANALYZE: the
# statistics see them empty), autovacuum off for them, and history_phase.
empty_phase() {
	sql -c "TRUNCATE plivo_otp.verifications CASCADE"
	sql -c "ANALYZE plivo_otp.verifications" -c "ANALYZE plivo_otp.messages" \
		-c "ALTER TABLE plivo_otp.verifications SET (autovacuum_enabled = false)" \
		-c "ALTER TABLE plivo_otp.messages SET (autovacuum_enabled = false)"
	history_phase "$1"
}

# Empty tables (analyzed, autovacuum off for them), then $hist_rows rows of
# finished history inserted straight into the tables (statistics stale: the
# last ANALYZE saw them empty), then after VACUUM ANALYZE, then empty tables
# again.  This machine's speed drifts by up to 20 % within minutes, so each
# history rate is set against the mean of the empty rates before and after
# it, and both are shown.
history_bench() {
	local e_issue e_verify e_drain a_issue a_verify a_drain t0 phase label base rows=""
	pause
	bench_schema
	empty_phase "empty tables"
	e_issue=$h_issue e_verify=$h_verify e_drain=$h_drain
	# The stale phase starts, as the empty one did, with no dead rows of
	# earlier runs (autovacuum is off for the tables): only the history.
	settle
	log "inserting $hist_rows rows of finished history"
	t0=$(date +%s.%N)
	# Codes approved (3 in 4) or expired, sealed code and body wiped, the
	# messages accepted and delivered; created 3 days ago and later, one
	# every 100 ms, to 500,000 numbers (the bench's own among them).  Their
	# ids are made as the extension makes them (src/common/ids.c: version 7,
	# the creation time, then random bits), so the history sits in the
	# indexes on them where it would.
	sql -c "CREATE OR REPLACE FUNCTION bench.id_at(t timestamptz, salt text) RETURNS uuid
			LANGUAGE sql IMMUTABLE AS \$\$
			SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'
					|| substr(md5(salt), 1, 3) || '8' || substr(md5(salt), 4, 15))::uuid \$\$"
	# (the same times in both tables: the ids of a code and its message both come from them)
	base=$(sql -c "SELECT now() - interval '3 days'")
	sql -c "INSERT INTO plivo_otp.verifications (id, phone, purpose, channel, code_digest, state, attempts,
			max_attempts, created_at, expires_at, verified_at, updated_at, code_sealed)
		SELECT bench.id_at(t, i || 'v'), '+1500' || (2000000 + i % 500000),
			   'default', 'sms', sha256(i::text::bytea), CASE WHEN i % 4 = 0 THEN 'expired' ELSE 'approved' END,
			   1, 5, t, t + interval '10 min', CASE WHEN i % 4 = 0 THEN NULL ELSE t + interval '30 s' END,
			   t + interval '30 s', NULL
		  FROM generate_series(1, $hist_rows) i,
			   LATERAL (SELECT '$base'::timestamptz + i * interval '100 ms' AS t) x"
	sql -c "INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, body, dispatch_state, delivery_status,
			delivery_sequence, provider_uuid, tries, next_try_at, expires_at, http_status, created_at, updated_at)
		SELECT bench.id_at(t, i || 'm'), bench.id_at(t, i || 'v'), 'sms', '+1500' || (2000000 + i % 500000),
			   NULL, 'accepted', 'delivered', 3, 'hist-' || i, 1, t, t + interval '10 min', 202, t, t + interval '5 s'
		  FROM generate_series(1, $hist_rows) i,
			   LATERAL (SELECT '$base'::timestamptz + i * interval '100 ms' AS t) x"
	log "  took $(calc "$(date +%s.%N) - $t0") s"
	for phase in stale analyzed; do
		if [ $phase = analyzed ]; then
			sql -c "VACUUM ANALYZE plivo_otp.verifications" -c "VACUUM ANALYZE plivo_otp.messages"
			label="$hist_rows rows, after VACUUM ANALYZE"
		else
			label="$hist_rows rows, stale statistics"
		fi
		history_phase "$label"
		rows="$rows$label|$h_issue|$h_verify|$h_drain
"
	done
	empty_phase "empty tables again"
	a_issue=$h_issue a_verify=$h_verify a_drain=$h_drain
	while IFS='|' read -r label h_issue h_verify h_drain; do
		[ -n "$label" ] || continue
		history_row "$label" "otp_send tps (synchronous_commit off)" "$h_issue" "$e_issue" "$a_issue"
		history_row "$label" "otp_verify tps (synchronous_commit off)" "$h_verify" "$e_verify" "$a_verify"
		history_row "$label" "drain msg/s (max_inflight 256)" "$h_drain" "$e_drain" "$a_drain"
	done <<< "$rows"
	sql -c "TRUNCATE plivo_otp.verifications CASCADE" \
		-c "ALTER TABLE plivo_otp.verifications RESET (autovacuum_enabled)" \
		-c "ALTER TABLE plivo_otp.messages RESET (autovacuum_enabled)"
}

# history_row LABEL WHAT RATE EMPTY_BEFORE EMPTY_AFTER: a history rate against
# the mean of the empty-table rates measured before and after it.
history_row() {
	local mean
	mean=$(calc "($4 + $5) / 2")
	row "history ($1): $2" "$3" "$mean (empty tables: $4 before, $5 after)" \
		"$(calc "$3 / $mean")" "within 10 %" "$(met "$3 / $mean >= 0.9")"
}
