-- voice_callbacks: ingest_callback() takes a call's hang-up callback
-- (RequestUUID, CallStatus) signed with V3 only; the call's delivery_status
-- moves in-progress < final, one final status never replaces another, and
-- otp_status shows the HangupCauseCode with its meaning from
-- plivo_hangup_causes (an SMS keeps plivo_error_codes).  Uses the token file
-- and signing helpers of callbacks.sql.

-- A hang-up callback for call uuid, signed with V3 for the voice-status URL.
CREATE FUNCTION test.hangup(uuid text, status text, cause text, nonce text,
	url text DEFAULT 'https://otp.example.com/plivo/voice-status',
	OUT params jsonb, OUT headers jsonb)
LANGUAGE sql AS $$
	SELECT p, jsonb_build_object('X-Plivo-Signature-V3',
			test.sign_v3_post(url, p, nonce, 'regress-token-0123456789'),
			'X-Plivo-Signature-V3-Nonce', nonce)
	FROM (SELECT jsonb_build_object('CallUUID', 'call-' || uuid, 'RequestUUID', uuid,
			'ALegRequestUUID', uuid, 'CallStatus', status, 'HangupCauseCode', cause,
			'HangupCause', 'NORMAL_CLEARING', 'HangupSource', 'Callee', 'Duration', '7',
			'BillDuration', '60', 'Direction', 'outbound', 'Event', 'Hangup') AS p) s
$$;
CREATE FUNCTION test.ingest_hangup(uuid text, status text, cause text, nonce text)
RETURNS text LANGUAGE sql AS $$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/voice-status',
		c.params, c.headers)
	FROM test.hangup(uuid, status, cause, nonce) c
$$;

-- A call as the dispatcher leaves it once Plivo took it.
SELECT plivo_otp.otp_send('+15005557501', 'voice') AS vid \gset
UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = 'call-req-0001',
	accepted_at = now()
WHERE verification_id = :'vid';

-- Answered (as the listener records it when the call fetched its script), then completed.
SELECT test.ingest_hangup('call-req-0001', 'in-progress', '', '30000000000000000001');
SELECT channel, dispatch_state, delivery_status, error_code, error_text FROM plivo_otp.otp_status(:'vid');
SELECT test.ingest_hangup('call-req-0001', 'completed', '4010', '30000000000000000002');
SELECT delivery_status, error_code, error_text FROM plivo_otp.otp_status(:'vid');
SELECT params->>'HangupSource' AS source, params->>'BillDuration' AS billed, sequence
FROM plivo_otp.delivery_events WHERE provider_uuid = 'call-req-0001' AND status = 'completed';

-- Monotonic and idempotent: a late in-progress, the same final again, another final.
SELECT test.ingest_hangup('call-req-0001', 'in-progress', '', '30000000000000000003');
SELECT test.ingest_hangup('call-req-0001', 'completed', '4010', '30000000000000000004');
SELECT test.ingest_hangup('call-req-0001', 'failed', '2010', '30000000000000000005');
SELECT delivery_status, error_code, error_text FROM plivo_otp.otp_status(:'vid');
SELECT count(*) AS events FROM plivo_otp.delivery_events WHERE provider_uuid = 'call-req-0001';

-- A call not answered: busy, with a cause code.
SELECT plivo_otp.otp_send('+15005557502', 'voice') AS vid2 \gset
UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = 'call-req-0002'
WHERE verification_id = :'vid2';
SELECT test.ingest_hangup('call-req-0002', 'busy', '2000', '30000000000000000006');
SELECT delivery_status, error_code, error_text FROM plivo_otp.otp_status(:'vid2');
-- An in-progress arriving after the final status is kept but moves nothing back.
SELECT test.ingest_hangup('call-req-0002', 'in-progress', '', '30000000000000000013');
SELECT delivery_status, error_code FROM plivo_otp.otp_status(:'vid2');

-- A replay, a V2-only and an unsigned hang-up callback are refused.
SELECT * FROM test.error_of($$SELECT test.ingest_hangup('call-req-0002', 'completed', '4000', '30000000000000000006')$$);
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/voice-status',
		c.params, test.v2_headers('https://otp.example.com/plivo/voice-status', '30000000000000000007'))
	FROM test.hangup('call-req-0002', 'completed', '4000', '30000000000000000007') c$$);
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/voice-status',
		c.params, '{}')
	FROM test.hangup('call-req-0002', 'completed', '4000', '30000000000000000008') c$$);
SELECT delivery_status, error_code FROM plivo_otp.otp_status(:'vid2');
SELECT count(*) AS nonces_burnt FROM plivo_otp.callback_nonces
WHERE nonce IN ('30000000000000000007', '30000000000000000008');

-- Without RequestUUID (nor ALegRequestUUID) it is incomplete.
SELECT * FROM test.error_of($$
	SELECT plivo_otp.ingest_callback('POST', 'https://otp.example.com/plivo/voice-status',
		c.params - 'RequestUUID' - 'ALegRequestUUID', jsonb_build_object('X-Plivo-Signature-V3',
			test.sign_v3_post('https://otp.example.com/plivo/voice-status',
							  c.params - 'RequestUUID' - 'ALegRequestUUID',
							  '30000000000000000009', 'regress-token-0123456789'),
			'X-Plivo-Signature-V3-Nonce', '30000000000000000009'))
	FROM test.hangup('call-req-0002', 'completed', '4000', '30000000000000000009') c$$);

-- A call's words never move an SMS, nor an SMS's a call: the ranks are per channel.
SELECT plivo_otp.otp_send('+15005557503') AS vid3 \gset
UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = 'sms-0003'
WHERE verification_id = :'vid3';
SELECT test.ingest_hangup('sms-0003', 'completed', '4000', '30000000000000000010');
SELECT test.ingest('call-req-0002', 'delivered', 5, '30000000000000000011');
SELECT channel, delivery_status, error_code FROM plivo_otp.otp_status(:'vid3');
SELECT channel, delivery_status, error_code FROM plivo_otp.otp_status(:'vid2');
-- An SMS error code is not read as a hang-up cause, nor the other way round.
SELECT test.ingest('sms-0003', 'undelivered', 6, '30000000000000000012', '2000');
SELECT delivery_status, error_code, error_text FROM plivo_otp.otp_status(:'vid3');

-- ingest_callback's description names both kinds of callback it takes.
SELECT obj_description('plivo_otp.ingest_callback(text, text, jsonb, jsonb)'::regprocedure, 'pg_proc')
	LIKE '%message-status or call hang-up callback%' AS comment_names_calls;
