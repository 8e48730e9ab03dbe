-- idempotency: a repeated key while the code lives returns the same id and
-- queues nothing more; it is checked before the cool-down.
SET plivo_otp.resend_interval = '30s';
SELECT plivo_otp.otp_send('+15005552001', 'sms', 'login', 'req-1') AS first \gset
SELECT plivo_otp.otp_send('+15005552001', 'sms', 'login', 'req-1') AS again \gset
SELECT :'first' = :'again' AS same_id;
SELECT count(*) AS messages_queued FROM plivo_otp.messages WHERE phone = '+15005552001';
-- The same number in another format is the same request.
SELECT plivo_otp.otp_send('+1 500 555 2001', 'sms', 'login', 'req-1') = :'first' AS same_id_other_format;

-- Without the key, the cool-down applies.
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005552001', 'sms', 'login')$$);
-- Another key is another request, also under the cool-down.
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005552001', 'sms', 'login', 'req-2')$$);

-- The same key with another number or purpose is an error.
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005552002', 'sms', 'login', 'req-1')$$);
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005552001', 'sms', 'signup', 'req-1')$$);
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005552001', 'sms', 'login', '')$$);

-- Once the code has expired, the key starts a new request.
UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second',
	created_at = created_at - interval '1 hour' WHERE id = :'first';
UPDATE plivo_otp.messages SET created_at = created_at - interval '1 hour'
WHERE verification_id = :'first';
UPDATE plivo_otp.send_counters SET last_send_at = last_send_at - interval '1 hour',
	bucket_start = bucket_start - interval '1 hour';
SELECT plivo_otp.otp_send('+15005552001', 'sms', 'login', 'req-1') <> :'first' AS new_id_after_expiry;
RESET plivo_otp.resend_interval;
