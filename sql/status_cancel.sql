-- status_cancel: otp_status reports one row per known id; otp_cancel ends a code.
SELECT plivo_otp.otp_send('+15005553001', 'sms', 'login') AS vid \gset
SELECT id = :'vid' AS same_id, state, channel, phone_masked, attempts_left,
	   expires_at - created_at AS lifetime, verified_at, dispatch_state,
	   delivery_status, provider_uuid, error_code, error_text,
	   updated_at >= created_at AS updated_after_created
FROM plivo_otp.otp_status(:'vid');

-- An unknown id: no row.
SELECT count(*) FROM plivo_otp.otp_status('00000000-0000-0000-0000-000000000000');

-- Cancel: the code stops working and its unsent message will never be sent.
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_cancel(:'vid');
SELECT plivo_otp.otp_cancel(:'vid');
SELECT state, dispatch_state FROM plivo_otp.otp_status(:'vid');
SELECT body IS NULL AS body_wiped FROM plivo_otp.messages WHERE verification_id = :'vid';
SELECT plivo_otp.otp_check('+15005553001', :'code', 'login');
SELECT plivo_otp.otp_cancel('00000000-0000-0000-0000-000000000000');

-- The lifetime follows plivo_otp.code_ttl.
SET plivo_otp.code_ttl = '2min';
SELECT expires_at - created_at AS lifetime
FROM plivo_otp.otp_status(plivo_otp.otp_send('+15005553002'));
RESET plivo_otp.code_ttl;

-- No plan depends on the statistics: with statistics taken when no message
-- was pending (as after a bulk of deliveries), then many pending ones, the
-- cancellation of a code's unsent messages (otp_send's and otp_cancel's
-- statement) is a lookup by key, not a walk of every pending message.
UPDATE plivo_otp.messages SET dispatch_state = 'accepted' WHERE dispatch_state = 'pending';
ANALYZE plivo_otp.messages;
SELECT count(plivo_otp.otp_send('+1500555' || (2000 + i)::text)) AS queued
FROM generate_series(1, 300) AS i;
SET plan_cache_mode = force_generic_plan;
PREPARE cancel_unsent(uuid, timestamptz, text) AS
	UPDATE plivo_otp.messages SET dispatch_state = 'canceled', body = NULL, updated_at = $2
	WHERE verification_id = $1 AND dispatch_state = $3;
EXPLAIN (COSTS OFF) EXECUTE cancel_unsent(gen_random_uuid(), now(), 'pending');
PREPARE pending_code(text, text) AS
	SELECT id FROM plivo_otp.verifications
	WHERE phone = $1 AND purpose = $2 AND state = 'pending' FOR UPDATE;
EXPLAIN (COSTS OFF) EXECUTE pending_code('+15005552001', 'default');
DEALLOCATE cancel_unsent;
DEALLOCATE pending_code;
RESET plan_cache_mode;
