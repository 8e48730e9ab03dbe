-- callbacks: ingest_callback() checks signatures and nonces like the listener,
-- records delivery events idempotently, and moves delivery states only forward.

-- The auth token lives in a file (here, the default name in the data directory).
-- (Written with mode 0600: the extension refuses a token file others can read.)
SELECT current_setting('data_directory') || '/plivo_otp.token' AS token_file \gset
\setenv TOKEN_FILE :token_file
\! umask 077; printf 'regress-token-0123456789' > "$TOKEN_FILE"


-- Sign a callback as Plivo does (V3, POST), with pgcrypto.
CREATE FUNCTION test.sign_v3_post(url text, params jsonb, nonce text, token text) RETURNS text
LANGUAGE sql AS $$
	SELECT encode(hmac(convert_to(url || '?' ||
		coalesce((SELECT string_agg(key || value, '' ORDER BY key COLLATE "C", value COLLATE "C")
				  FROM jsonb_each_text(params)), '') || '.' || nonce, 'UTF8'),
		convert_to(token, 'UTF8'), 'sha256'), 'base64')
$$;
CREATE FUNCTION test.sign_v2(url text, nonce text, token text) RETURNS text
LANGUAGE sql AS $$
	SELECT encode(hmac(convert_to(url || nonce, 'UTF8'), convert_to(token, 'UTF8'), 'sha256'), 'base64')
$$;
-- A status callback for a message, signed with V3 and a given nonce (for url:
-- by default the bare callback URL of messages sent before per-message URLs).
CREATE FUNCTION test.callback(uuid text, status text, seq int, nonce text,
	error_code text DEFAULT '000', token text DEFAULT 'regress-token-0123456789',
	url text DEFAULT 'https://otp.example.com/plivo/sms-status',
	OUT params jsonb, OUT headers jsonb)
LANGUAGE sql AS $$
	SELECT p, jsonb_build_object('X-Plivo-Signature-V3',
			test.sign_v3_post(url, p, nonce, token),
			'X-Plivo-Signature-V3-Nonce', nonce)
	FROM (SELECT jsonb_build_object('MessageUUID', uuid, 'Status', status, 'Sequence', seq::text,
			'ErrorCode', error_code, 'To', '15005556001', 'From', '14155550000') AS p) s
$$;
-- V2 headers for url, with a nonce.
CREATE FUNCTION test.v2_headers(url text, nonce text) RETURNS jsonb
LANGUAGE sql AS $$
	SELECT jsonb_build_object('X-Plivo-Signature-V2', test.sign_v2(url, nonce, 'regress-token-0123456789'),
		'X-Plivo-Signature-V2-Nonce', nonce)
$$;
CREATE FUNCTION test.ingest(uuid text, status text, seq int, nonce text, error_code text DEFAULT '000')
RETURNS text LANGUAGE sql AS $$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/sms-status', c.params, c.headers)
	FROM test.callback(uuid, status, seq, nonce, error_code) c
$$;

-- A message as the dispatcher leaves it once Plivo accepted it; its own
-- callback URL ends with its id.
SELECT plivo_otp.otp_send('+15005556001') AS vid \gset
UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = 'uuid-0001', body = NULL
WHERE verification_id = :'vid';
SELECT 'https://otp.example.com/plivo/sms-status/' || id AS url1
FROM plivo_otp.messages WHERE verification_id = :'vid' \gset

-- queued, then sent, then delivered.
SELECT test.ingest('uuid-0001', 'queued', 1, '10000000000000000001');
SELECT dispatch_state, delivery_status FROM plivo_otp.otp_status(:'vid');
SELECT test.ingest('uuid-0001', 'sent', 2, '10000000000000000002');
SELECT test.ingest('uuid-0001', 'delivered', 4, '10000000000000000003');
SELECT dispatch_state, delivery_status, error_code FROM plivo_otp.otp_status(:'vid');

-- Late or out of order: sent (3) after delivered changes nothing.
SELECT test.ingest('uuid-0001', 'sent', 3, '10000000000000000004');
SELECT delivery_status FROM plivo_otp.otp_status(:'vid');
-- The same event again under a new nonce is a duplicate: nothing changes.
SELECT test.ingest('uuid-0001', 'delivered', 4, '10000000000000000005');
SELECT count(*) AS events FROM plivo_otp.delivery_events WHERE provider_uuid = 'uuid-0001';

-- A replayed request (same nonce) is refused and changes nothing.
SELECT * FROM test.error_of($$SELECT test.ingest('uuid-0001', 'queued', 9, '10000000000000000001')$$);
SELECT delivery_status FROM plivo_otp.otp_status(:'vid');

-- A body altered after signing is refused, and so is a forged or missing signature.
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/sms-status',
		c.params || '{"Status": "undelivered"}', c.headers)
	FROM test.callback('uuid-0001', 'delivered', 5, '10000000000000000006') c$$);
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/sms-status',
		c.params, c.headers)
	FROM test.callback('uuid-0001', 'failed', 6, '10000000000000000007', '30', 'wrong-token') c$$);
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/sms-status',
		'{"MessageUUID": "uuid-0001", "Status": "failed"}', '{}')$$);
-- Only URLs under plivo_otp.public_url count (a V2 signature covers just URL and nonce,
-- so a callback this account sent elsewhere must not be usable here).
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://evil.example.com/plivo/sms-status',
		c.params, c.headers)
	FROM test.callback('uuid-0001', 'failed', 6, '10000000000000000008') c$$);
-- Under public_url, the path is part of what is signed.
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/other',
		c.params, c.headers)
	FROM test.callback('uuid-0001', 'failed', 6, '10000000000000000017') c$$);
SELECT count(*) AS events_after_refusals FROM plivo_otp.delivery_events WHERE provider_uuid = 'uuid-0001';

-- No downgrade: a wrong V3 signature is not rescued by a valid V2 one.
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/sms-status',
		c.params, c.headers || jsonb_build_object(
			'X-Plivo-Signature-V2', test.sign_v2('https://otp.example.com/plivo/sms-status',
												 '10000000000000000009', 'regress-token-0123456789'),
			'X-Plivo-Signature-V2-Nonce', '10000000000000000009'))
	FROM test.callback('uuid-0001', 'failed', 6, '10000000000000000010', '30', 'wrong-token') c$$);
-- A request signed with both families, accepted by V3, cannot be replayed as V2 alone
-- with a rewritten body: its V2 nonce was recorded too.  (V3 on the message's own URL.)
SELECT plivo_otp.ingest_callback('POST', :'url1', c.params,
	c.headers || jsonb_build_object(
		'X-Plivo-Signature-V2', test.sign_v2(:'url1', '10000000000000000015',
											 'regress-token-0123456789'),
		'X-Plivo-Signature-V2-Nonce', '10000000000000000015'))
FROM test.callback('uuid-0001', 'delivered', 8, '10000000000000000016', url => :'url1') c;
SELECT test.v2_headers(:'url1', '10000000000000000015') AS replay_headers \gset
SELECT * FROM test.error_of(format($$
	SELECT plivo_otp.ingest_callback('POST', %L,
		'{"MessageUUID": "uuid-0001", "Status": "failed", "Sequence": "99", "ErrorCode": "30"}',
		%L)$$, :'url1', :'replay_headers'));
SELECT delivery_status, error_code FROM plivo_otp.otp_status(:'vid');

-- V2 alone (it signs only the URL and nonce: TLS protects the body) counts only on
-- a message's own URL, for that message.
SELECT plivo_otp.otp_send('+15005556002') AS vid2 \gset
UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = 'uuid-0002', body = NULL
WHERE verification_id = :'vid2';
SELECT 'https://otp.example.com/plivo/sms-status/' || id AS url2
FROM plivo_otp.messages WHERE verification_id = :'vid2' \gset
SELECT plivo_otp.ingest_callback('POST', :'url2',
	'{"MessageUUID": "uuid-0002", "Status": "undelivered", "Sequence": "2", "ErrorCode": "30"}',
	jsonb_build_object(
		'x-plivo-signature-v2', test.sign_v2(:'url2', '10000000000000000011',
											 'regress-token-0123456789'),
		'x-plivo-signature-v2-nonce', '10000000000000000011'));
-- An undelivered message shows Plivo's ErrorCode and its meaning.
SELECT dispatch_state, delivery_status, error_code, error_text FROM plivo_otp.otp_status(:'vid2');
-- Refused, changing nothing: V2 on the bare URL, V2 on a URL naming no message,
-- and V2 on message 2's URL naming message 1.
SELECT count(*) AS events_before FROM plivo_otp.delivery_events;
SELECT * FROM test.error_of(format($$
	SELECT plivo_otp.ingest_callback('POST', %L,
		'{"MessageUUID": "uuid-0002", "Status": "failed", "Sequence": "9", "ErrorCode": "30"}', %L)$$,
	'https://otp.example.com/plivo/sms-status',
	test.v2_headers('https://otp.example.com/plivo/sms-status', '10000000000000000021')));
SELECT * FROM test.error_of(format($$
	SELECT plivo_otp.ingest_callback('POST', %L,
		'{"MessageUUID": "uuid-0002", "Status": "failed", "Sequence": "9", "ErrorCode": "30"}', %L)$$,
	'https://otp.example.com/plivo/sms-status/00000000-0000-4000-8000-000000000000',
	test.v2_headers('https://otp.example.com/plivo/sms-status/00000000-0000-4000-8000-000000000000',
					'10000000000000000022')));
SELECT * FROM test.error_of(format($$
	SELECT plivo_otp.ingest_callback('POST', %L,
		'{"MessageUUID": "uuid-0001", "Status": "failed", "Sequence": "9", "ErrorCode": "30"}', %L)$$,
	:'url2', test.v2_headers(:'url2', '10000000000000000023')));
SELECT count(*) AS events_after, (SELECT count(*) FROM plivo_otp.callback_nonces
	WHERE nonce IN ('10000000000000000021', '10000000000000000022', '10000000000000000023'))
	AS nonces_burnt FROM plivo_otp.delivery_events;
SELECT delivery_status, error_code FROM plivo_otp.otp_status(:'vid');

-- V2 for a message whose UUID is not recorded yet (an early callback) is held
-- keyed to that message, changing nothing else.
SELECT plivo_otp.otp_send('+15005556003') AS vid3 \gset
SELECT id AS mid3, 'https://otp.example.com/plivo/sms-status/' || id AS url3
FROM plivo_otp.messages WHERE verification_id = :'vid3' \gset
SELECT plivo_otp.ingest_callback('POST', :'url3',
	'{"MessageUUID": "uuid-0001", "Status": "failed", "Sequence": "10", "ErrorCode": "30"}',
	test.v2_headers(:'url3', '10000000000000000024'));
SELECT provider_uuid = 'message:' || :'mid3' AS held_for_message_3, status,
	params->>'MessageUUID' AS names FROM plivo_otp.delivery_events
WHERE params->>'Sequence' = '10';
SELECT delivery_status, error_code FROM plivo_otp.otp_status(:'vid');

-- The main-account header (Ma-V3) is accepted too; several comma-separated signatures are.
SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/sms-status', c.params,
	jsonb_build_object('X-Plivo-Signature-Ma-V3', 'bm90IGl0=,' || (c.headers->>'X-Plivo-Signature-V3'),
					   'X-Plivo-Signature-V3-Nonce', '10000000000000000012'))
FROM test.callback('uuid-0002', 'delivered', 3, '10000000000000000012') c;
SELECT delivery_status, error_code FROM plivo_otp.otp_status(:'vid2');

-- A callback for a UUID not recorded yet is kept, waiting for its message.
SELECT test.ingest('uuid-not-yet', 'delivered', 1, '10000000000000000013');
SELECT status, applied_at IS NULL AS waiting FROM plivo_otp.delivery_events WHERE provider_uuid = 'uuid-not-yet';

-- Bad input.
SELECT * FROM test.error_of($$SELECT plivo_otp.ingest_callback('PUT', 'https://a', '{}', '{}')$$);
SELECT * FROM test.error_of($$SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/sms-status', '[1]', '{}')$$);
SELECT * FROM test.error_of($$SELECT plivo_otp.ingest_callback('POST', NULL, '{}', '{}')$$);
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/sms-status',
		c.params - 'MessageUUID', jsonb_build_object('X-Plivo-Signature-V3',
			test.sign_v3_post('https://otp.example.com/plivo/sms-status', c.params - 'MessageUUID',
							  '10000000000000000014', 'regress-token-0123456789'),
			'X-Plivo-Signature-V3-Nonce', '10000000000000000014'))
	FROM test.callback('uuid-0001', 'failed', 7, '10000000000000000014') c$$);

-- Dispatch state is ours alone: no callback ever changed it.
SELECT DISTINCT dispatch_state FROM plivo_otp.messages WHERE provider_uuid IS NOT NULL;
