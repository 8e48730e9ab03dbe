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
-- Once the cool-down has passed, sending works again.
UPDATE plivo_otp.messages SET created_at = created_at - interval '31 seconds'
WHERE phone = '+15005550001';
SELECT test.sends('+15005550001');
RESET plivo_otp.resend_interval;

-- At most number_max_sends per number within number_window.
SET plivo_otp.number_max_sends = 3;
SET plivo_otp.number_window = '1h';
SELECT test.sends('+15005550003') FROM generate_series(1, 3);
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550003')$$);
-- The oldest send leaving the window makes room for one more.  (Every
-- message counts: these three re-delivered one live code.)
UPDATE plivo_otp.messages SET created_at = created_at - interval '2 hours'
WHERE id = (SELECT id FROM plivo_otp.messages WHERE phone = '+15005550003'
			ORDER BY created_at LIMIT 1);
SELECT test.sends('+15005550003');
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005550003')$$);
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
