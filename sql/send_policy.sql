-- send_policy: cool-down, per-number cap, allow-list and global cap refuse
-- with 53400, a detail naming the limit and a hint saying when to retry.

-- Cool-down between two codes to one number (any purpose).
SET plivo_otp.resend_interval = '30s';
SELECT test.sends('+15005550001');
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550001')$$);
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550001', 'sms', 'other')$$);
-- Another number is not affected.
SELECT test.sends('+15005550002');
-- The hint's wait is the remaining cool-down.
SELECT (regexp_match(e.hint, 'Retry in ([0-9]+) seconds'))[1]::int BETWEEN 29 AND 30 AS wait_is_remaining_cooldown
FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550001')$$, false) e;
-- The limits read the number's counters (plivo_otp.send_counters), not the
-- messages: editing the history changes nothing.
UPDATE plivo_otp.messages SET created_at = created_at - interval '31 seconds'
WHERE phone = '+15005550001';
SELECT state FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550001')$$);
-- Once the cool-down has passed (the counters' clock moved back), sending works again.
UPDATE plivo_otp.send_counters SET last_send_at = last_send_at - interval '31 seconds',
	bucket_start = bucket_start - interval '31 seconds';
SELECT test.sends('+15005550001');
RESET plivo_otp.resend_interval;

-- At most number_max_sends per number within number_window.
SET plivo_otp.number_max_sends = 3;
SET plivo_otp.number_window = '1h';
SELECT test.sends('+15005550003') FROM generate_series(1, 3);
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550003')$$);
-- The hint's wait is when the window's count falls below the cap.
SELECT (regexp_match(e.hint, 'Retry in ([0-9]+) seconds'))[1]::int BETWEEN 3598 AND 3601 AS wait_is_window
FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550003')$$, false) e;
-- The window slides: a little more than one window after the three, the
-- count is a little under three (the previous bucket, weighted by what is
-- left of it inside the window), which makes room for one more, and no
-- more.  (Every message counts: these three re-delivered one live code.)
UPDATE plivo_otp.send_counters SET bucket_start = bucket_start - interval '61 minutes',
	last_send_at = last_send_at - interval '61 minutes';
SELECT test.sends('+15005550003');
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550003')$$);
-- Two windows later nothing is left of them: three more.
UPDATE plivo_otp.send_counters SET bucket_start = bucket_start - interval '2 hours',
	last_send_at = last_send_at - interval '2 hours';
SELECT test.sends('+15005550003') FROM generate_series(1, 3);
SELECT state FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550003')$$);
RESET plivo_otp.number_max_sends;

-- Allow-list of calling-code prefixes.
SET plivo_otp.allowed_countries = '44, 1876';
SELECT test.sends('+447400900001');
SELECT test.sends('+18765550001');
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550004')$$);
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+18095550001')$$);
RESET plivo_otp.allowed_countries;

-- Global hourly cap across all numbers (counted in shared memory).
SELECT sends_last_hour AS sent_last_hour FROM plivo_otp.api_stats \gset
SELECT set_config('plivo_otp.global_max_sends_per_hour', (:sent_last_hour + 2)::text, false) IS NOT NULL AS cap_set;
SELECT test.sends('+15005550005');
SELECT test.sends('+15005550006');
SELECT state, message, detail ~ '^The server sent [0-9]+ codes within the last hour\.$' AS detail_names_limit, hint
FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550007')$$);
RESET plivo_otp.global_max_sends_per_hour;

-- A refused send leaves nothing behind and nothing queued.
SELECT count(*) AS rows_for_refused FROM plivo_otp.verifications WHERE phone = '+15005550007';

-- A rolled-back send leaves nothing, and does not count against the limits.
SET plivo_otp.resend_interval = '30s';
BEGIN;
SELECT test.sends('+15005550008');
ROLLBACK;
SELECT count(*) AS rows_after_rollback FROM plivo_otp.messages WHERE phone = '+15005550008';
SELECT test.sends('+15005550008');
RESET plivo_otp.resend_interval;

-- The counters name no number: 16 bytes of a keyed digest per number,
-- caller key and idempotency key.
SELECT count(*) > 0 AS counted, bool_and(octet_length(key) = 16) AS keyed_digests
FROM plivo_otp.send_counters;
-- A rolled-back send leaves no count behind (nor a row, for a new number),
-- and a count of an earlier send is not taken back by it.
SELECT count(*) AS counters_before FROM plivo_otp.send_counters \gset
SELECT sum(bucket_count) AS counted_before FROM plivo_otp.send_counters \gset
BEGIN;
SELECT test.sends('+15005550009');
SELECT test.sends('+15005550008');
ROLLBACK;
SELECT count(*) = :counters_before AS no_new_row,
	   sum(bucket_count) = :counted_before AS no_new_count
FROM plivo_otp.send_counters;

-- Sends in one transaction take no lock-table entry each (a row lock lives
-- in the row): 300 sends, to 300 numbers, with keys and caller keys, hold
-- no more locks than one.
BEGIN;
SELECT plivo_otp.otp_send('+15005551000', 'sms', 'default', 'bulk-first', 'caller-first') IS NOT NULL AS sent;
SELECT count(*) AS locks_after_one FROM pg_locks WHERE pid = pg_backend_pid() \gset
SELECT count(plivo_otp.otp_send('+1500555' || (1001 + i)::text, 'sms', 'default',
								'bulk-' || i, 'caller-' || i))
FROM generate_series(0, 299) AS i;
SELECT count(*) <= :locks_after_one AS no_lock_per_send
FROM pg_locks WHERE pid = pg_backend_pid();
ROLLBACK;
