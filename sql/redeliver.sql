-- redeliver: a repeated otp_send for a number whose code is live re-delivers
-- that same code (an attacker cannot cancel a victim's code by asking for
-- another); every message counts in the limits; caller keys have their own
-- cap; a live code stays sealed only while it can still be used.
SET plivo_otp.resend_interval = 0;
SET plivo_otp.number_max_sends = 3;

SELECT plivo_otp.otp_send('+15005558001', 'sms', 'login') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_send('+15005558001', 'sms', 'login') = :'vid' AS same_verification;
SELECT count(*) AS messages, count(DISTINCT body) AS distinct_bodies
FROM plivo_otp.messages WHERE verification_id = :'vid';
SELECT state, code_sealed IS NOT NULL AS sealed FROM plivo_otp.verifications WHERE id = :'vid';

-- The third message reaches the per-number cap (re-deliveries count).
SELECT plivo_otp.otp_send('+15005558001', 'sms', 'login') = :'vid' AS same_verification;
SELECT state, message, detail FROM test.error_of($$SELECT plivo_otp.otp_send('+15005558001', 'sms', 'login')$$);

-- The first code still verifies, and once approved it is no longer sealed.
SELECT plivo_otp.otp_check('+15005558001', :'code', 'login');
SELECT state, code_sealed IS NULL AS wiped FROM plivo_otp.verifications WHERE id = :'vid';

-- Another purpose is another code.
SELECT plivo_otp.otp_send('+15005558002', 'sms', 'a') <> plivo_otp.otp_send('+15005558002', 'sms', 'b')
	AS distinct_per_purpose;

-- A code with less than a minute left is replaced by a new one.
SELECT plivo_otp.otp_send('+15005558003') AS vid \gset
UPDATE plivo_otp.verifications SET expires_at = now() + interval '30 seconds' WHERE id = :'vid';
SELECT plivo_otp.otp_send('+15005558003') <> :'vid' AS replaced;
SELECT state, code_sealed IS NULL AS wiped FROM plivo_otp.verifications WHERE id = :'vid';

-- A short-lived code is re-delivered too (the margin is half its lifetime).
SET plivo_otp.code_ttl = '40s';
SELECT plivo_otp.otp_send('+15005558006') AS vid \gset
SELECT plivo_otp.otp_send('+15005558006') = :'vid' AS same_verification;
RESET plivo_otp.code_ttl;

-- A code whose attempts are used up (even by checks that rolled back) is
-- replaced, not re-delivered.
SET plivo_otp.max_attempts = 2;
SELECT plivo_otp.otp_send('+15005558007') AS vid \gset
BEGIN; SELECT plivo_otp.otp_check('+15005558007', 'x') AS first_wrong; ROLLBACK;
BEGIN; SELECT plivo_otp.otp_check('+15005558007', 'y') AS second_wrong; ROLLBACK;
SELECT plivo_otp.otp_send('+15005558007') <> :'vid' AS replaced;
RESET plivo_otp.max_attempts;

-- An idempotency key given with a re-delivery answers its retries: one SMS.
SELECT plivo_otp.otp_send('+15005558008') AS vid \gset
SELECT plivo_otp.otp_send('+15005558008', idempotency_key => 'retry-2') = :'vid' AS redelivered;
SELECT plivo_otp.otp_send('+15005558008', idempotency_key => 'retry-2') = :'vid' AS replayed;
SELECT count(*) AS messages FROM plivo_otp.messages WHERE verification_id = :'vid';

-- Canceling wipes the seal.
SELECT plivo_otp.otp_send('+15005558004') AS vid \gset
SELECT plivo_otp.otp_cancel(:'vid');
SELECT state, code_sealed IS NULL AS wiped FROM plivo_otp.verifications WHERE id = :'vid';

-- An expired code's seal is wiped by the dispatcher within a second or two.
SELECT plivo_otp.otp_send('+15005558005') AS vid \gset
UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second' WHERE id = :'vid';
DO $$
BEGIN
	FOR i IN 1..50 LOOP
		EXIT WHEN NOT EXISTS (SELECT 1 FROM plivo_otp.verifications
							  WHERE phone = '+15005558005' AND code_sealed IS NOT NULL);
		PERFORM pg_sleep(0.1);
	END LOOP;
END $$;
SELECT code_sealed IS NULL AS wiped FROM plivo_otp.verifications WHERE id = :'vid';

-- Caller keys: their own cap, stored only as a keyed hash.
SET plivo_otp.caller_max_sends = 2;
SELECT plivo_otp.otp_send('+15005558011', caller_key => 'ip:203.0.113.7') IS NOT NULL AS sent;
SELECT plivo_otp.otp_send('+15005558012', caller_key => 'ip:203.0.113.7') IS NOT NULL AS sent;
SELECT state, message, detail
FROM test.error_of($$SELECT plivo_otp.otp_send('+15005558013', caller_key => 'ip:203.0.113.7')$$);
SELECT plivo_otp.otp_send('+15005558013', caller_key => 'ip:198.51.100.9') IS NOT NULL AS other_caller_sent;
SELECT plivo_otp.otp_send('+15005558014') IS NOT NULL AS no_caller_key_sent;
SELECT count(DISTINCT caller_key_digest) AS callers, min(octet_length(caller_key_digest)) AS digest_bytes,
	   bool_and(position(convert_to('203.0.113.7', 'UTF8') IN caller_key_digest) = 0) AS not_in_clear
FROM plivo_otp.messages WHERE caller_key_digest IS NOT NULL;
SELECT state, message FROM test.error_of($$SELECT plivo_otp.otp_send('+15005558015', caller_key => '')$$);
RESET plivo_otp.caller_max_sends;
RESET plivo_otp.number_max_sends;
RESET plivo_otp.resend_interval;
