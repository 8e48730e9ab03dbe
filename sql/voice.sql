-- voice: codes by call, otp_resend and otp_messages.  The dispatcher of the
-- regress server is not configured (no auth_id): rows stay as queued.
SET plivo_otp.resend_interval = 0;

-- otp_send by voice queues a call row: sealed sentence, answer-token digest.
SELECT plivo_otp.otp_send('+15005557001', 'voice') AS vid \gset
SELECT channel, origin, dispatch_state, body IS NOT NULL AS sealed,
	   octet_length(answer_token_digest) AS token_digest_bytes
FROM plivo_otp.messages WHERE verification_id = :'vid';
SELECT channel FROM plivo_otp.verifications WHERE id = :'vid';
-- A second voice send re-delivers the same code.
SELECT plivo_otp.otp_send('+15005557001', 'voice') = :'vid' AS same_verification;
SELECT origin, channel FROM plivo_otp.otp_messages(:'vid');

-- No number to call from: the sender is a sender ID and voice_sender is empty.
ALTER SYSTEM SET plivo_otp.sender = 'MYBRAND';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT current_setting('plivo_otp.sender') AS sender;
SELECT state, message, detail, hint
FROM test.error_of($$SELECT plivo_otp.otp_send('+15005557002', 'voice')$$);
SELECT plivo_otp.otp_send('+15005557002') AS vid2 \gset
SELECT state, message FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L, %L)', :'vid2', 'voice'));
-- An SMS still goes.
SELECT plivo_otp.otp_resend(:'vid2', 'sms') IS NOT NULL AS resent_by_sms;
ALTER SYSTEM RESET plivo_otp.sender;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT current_setting('plivo_otp.sender') = '' AS sender_reset;

-- otp_resend: a new message for the same live code, origin resend.
SELECT plivo_otp.otp_send('+15005557003') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_resend(:'vid') AS mid \gset
SELECT :'mid' <> :'vid' AS new_id,
	   (SELECT verification_id FROM plivo_otp.messages WHERE id = :'mid') = :'vid' AS of_the_code;
-- sms -> voice, then voice -> sms.
SELECT plivo_otp.otp_resend(:'vid', 'voice') AS mid_voice \gset
SELECT channel, origin, answer_token_digest IS NOT NULL AS has_token
FROM plivo_otp.messages WHERE id = :'mid_voice';
SELECT origin, channel, dispatch_state FROM plivo_otp.otp_messages(:'vid');
-- Same verification, same code: no new code was issued.
SELECT count(*) AS verifications FROM plivo_otp.verifications WHERE phone = '+15005557003';
SELECT plivo_otp.otp_check('+15005557003', :'code');

SELECT plivo_otp.otp_send('+15005557004', 'voice') AS vid \gset
SELECT plivo_otp.otp_resend(:'vid', 'sms') AS mid \gset
SELECT channel, origin FROM plivo_otp.messages WHERE id = :'mid';

-- Rolled back: nothing queued.
SELECT plivo_otp.otp_send('+15005557005') AS vid \gset
BEGIN;
SELECT plivo_otp.otp_resend(:'vid', 'voice') IS NOT NULL AS resent;
ROLLBACK;
SELECT count(*) AS messages FROM plivo_otp.messages WHERE verification_id = :'vid';

-- The cool-down applies, with a hint saying when.
SET plivo_otp.resend_interval = 30;
SELECT state, message, detail, hint FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'));
SELECT hint ~ '^Retry in [0-9]+ seconds, at ' AS hint_says_when
FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'), false);
SET plivo_otp.resend_interval = 0;

-- The number's cap counts every message (one so far for this code).
SET plivo_otp.number_max_sends = 3;
SELECT plivo_otp.otp_resend(:'vid') IS NOT NULL AS second_message;
SELECT plivo_otp.otp_resend(:'vid', 'voice') IS NOT NULL AS third_message;
SELECT state, message, detail FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L, %L)', :'vid', 'voice'));
RESET plivo_otp.number_max_sends;

-- The caller's cap, counted with otp_send's under the same key.
SET plivo_otp.caller_max_sends = 2;
SELECT plivo_otp.otp_send('+15005557006', caller_key => 'ip:192.0.2.55') AS vid \gset
SELECT plivo_otp.otp_resend(:'vid', 'sms', 'ip:192.0.2.55') IS NOT NULL AS second_for_caller;
SELECT state, message, detail
FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L, %L, %L)', :'vid', 'sms', 'ip:192.0.2.55'));
SELECT plivo_otp.otp_resend(:'vid', 'sms', 'ip:198.51.100.1') IS NOT NULL AS other_caller;
SELECT count(DISTINCT caller_key_digest) AS caller_digests
FROM plivo_otp.messages WHERE verification_id = :'vid';
RESET plivo_otp.caller_max_sends;

-- The global cap counts resends too.
SET plivo_otp.global_max_sends_per_hour = 1;
SELECT state, message FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'));
RESET plivo_otp.global_max_sends_per_hour;

-- Arguments.
SELECT state, message, hint FROM test.error_of($$SELECT plivo_otp.otp_resend('00000000-0000-0000-0000-000000000000')$$);
SELECT state, message FROM test.error_of($$SELECT plivo_otp.otp_resend(NULL)$$);
SELECT state, message FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L, %L)', :'vid', 'fax'));
SELECT state, message FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L, NULL)', :'vid'));
SELECT state, message FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L, %L, %L)', :'vid', 'sms', ''));

-- A code that can no longer be delivered: 55000, issue a new one.
SELECT plivo_otp.otp_send('+15005557010') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_check('+15005557010', :'code');
SELECT state, message, detail, hint FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'));

SELECT plivo_otp.otp_send('+15005557011') AS vid \gset
SELECT plivo_otp.otp_cancel(:'vid');
SELECT state, message FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L, %L)', :'vid', 'voice'));

SELECT plivo_otp.otp_send('+15005557012') AS vid \gset
UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second' WHERE id = :'vid';
SELECT state, message FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'));

SELECT plivo_otp.otp_send('+15005557013') AS vid \gset
UPDATE plivo_otp.verifications SET expires_at = now() + interval '30 seconds' WHERE id = :'vid';
SELECT state, message, detail FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'));

-- Attempts used up by checks that rolled back (the shared ledger).
SET plivo_otp.max_attempts = 2;
SELECT plivo_otp.otp_send('+15005557014') AS vid \gset
BEGIN; SELECT plivo_otp.otp_check('+15005557014', 'x') AS first_wrong; ROLLBACK;
BEGIN; SELECT plivo_otp.otp_check('+15005557014', 'y') AS second_wrong; ROLLBACK;
SELECT state, message, detail FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'));
RESET plivo_otp.max_attempts;

-- Locked in its row.
SET plivo_otp.max_attempts = 1;
SELECT plivo_otp.otp_send('+15005557015') AS vid \gset
SELECT plivo_otp.otp_check('+15005557015', 'x');
SELECT state, message FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'));
RESET plivo_otp.max_attempts;

-- No seal (wiped): it cannot be delivered again.
SELECT plivo_otp.otp_send('+15005557016') AS vid \gset
UPDATE plivo_otp.verifications SET code_sealed = NULL WHERE id = :'vid';
SELECT state, message, detail FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'));
-- A refused resend queues nothing.
SELECT count(*) AS messages FROM plivo_otp.messages WHERE verification_id = :'vid';

-- otp_messages: oldest first, no phone number, error meanings per channel.
SELECT plivo_otp.otp_send('+15005557020') AS vid \gset
SELECT plivo_otp.otp_resend(:'vid', 'voice') AS mid_voice \gset
UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = 'sms-uuid-1',
	delivery_status = 'undelivered', error_code = '30', accepted_at = created_at
WHERE verification_id = :'vid' AND channel = 'sms';
UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = 'call-uuid-1',
	delivery_status = 'completed', error_code = '4000', accepted_at = created_at,
	answered_at = created_at
WHERE id = :'mid_voice';
SELECT message_id = :'mid_voice' AS is_the_call, channel, origin, dispatch_state,
	   delivery_status, provider_uuid, error_code, error_text, tries,
	   accepted_at IS NOT NULL AS accepted, answered_at IS NOT NULL AS answered,
	   updated_at >= created_at AS updated_after_created
FROM plivo_otp.otp_messages(:'vid');
-- otp_status: the latest message (the call) with its hang-up cause's meaning.
SELECT channel, delivery_status, error_code, error_text FROM plivo_otp.otp_status(:'vid');
-- An SMS error code is not read as a hang-up cause, nor the reverse.
UPDATE plivo_otp.messages SET error_code = '10' WHERE id = :'mid_voice';
SELECT error_code, error_text FROM plivo_otp.otp_status(:'vid');
UPDATE plivo_otp.messages SET error_code = NULL, last_error = 'not sent: example' WHERE id = :'mid_voice';
SELECT error_code, error_text FROM plivo_otp.otp_status(:'vid');
-- No column carries the number.
SELECT count(*) AS columns_with_phone
FROM plivo_otp.otp_messages(:'vid') AS m, LATERAL jsonb_each_text(to_jsonb(m)) AS kv
WHERE kv.value LIKE '%5005557020%';
SELECT count(*) FROM plivo_otp.otp_messages('00000000-0000-0000-0000-000000000000');

-- Privileges: PUBLIC cannot run them; a role granted the API can.
CREATE ROLE otp_voice_nobody;
CREATE ROLE otp_voice_app;
GRANT USAGE ON SCHEMA plivo_otp TO otp_voice_app, otp_voice_nobody;
GRANT EXECUTE ON FUNCTION plivo_otp.otp_resend(uuid, text, text),
	plivo_otp.otp_messages(uuid) TO otp_voice_app;
SET ROLE otp_voice_nobody;
SELECT state, message FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'vid'));
SELECT state, message FROM test.error_of(format('SELECT * FROM plivo_otp.otp_messages(%L)', :'vid'));
RESET ROLE;
SET ROLE otp_voice_app;
SELECT count(*) AS messages FROM plivo_otp.otp_messages(:'vid');
SELECT plivo_otp.otp_resend(:'vid') IS NOT NULL AS resent;
RESET ROLE;
REVOKE ALL ON SCHEMA plivo_otp FROM otp_voice_app, otp_voice_nobody;
REVOKE ALL ON FUNCTION plivo_otp.otp_resend(uuid, text, text),
	plivo_otp.otp_messages(uuid) FROM otp_voice_app;
DROP ROLE otp_voice_nobody;
DROP ROLE otp_voice_app;
RESET plivo_otp.resend_interval;
