-- monitoring: the views of plivo_otp_monitor count sends, refusals by
-- limit, approvals, failed checks and lock-outs; show delivery outcomes and
-- conversion by calling code and region with the pumping flag; are readable
-- by pg_monitor once the schema is granted, by nobody else; and never show
-- a phone number.

-- The shared-memory counts before this file (other files counted too).
CREATE TEMP TABLE before AS
	SELECT event, last_5min, last_hour, last_24h, since_start FROM plivo_otp_monitor.activity;
-- What this file added; each window holds it (the file takes less than
-- four minutes) and each window holds the shorter one.  (Not the
-- difference of a window: other files' counts may leave it meanwhile.)
CREATE FUNCTION test.activity_delta() RETURNS TABLE (event text, delta bigint, windows_agree boolean)
LANGUAGE sql AS $$
	SELECT a.event, a.since_start - b.since_start,
		   a.last_5min >= a.since_start - b.since_start AND a.last_hour >= a.last_5min AND
		   a.last_24h >= a.last_hour AND a.since_start >= a.last_24h
	FROM plivo_otp_monitor.activity a JOIN before b USING (event)
	WHERE a.since_start <> b.since_start
	ORDER BY 1
$$;

-- Three codes to three numbers.
SELECT test.sends('+15005556001'), test.sends('+15005556002'), test.sends('+15005556003');
-- Refused by the cool-down, the number's cap, the caller's cap, the
-- global budget, the country list and the fixed-line rule.
SET plivo_otp.resend_interval = '1h';
SELECT state FROM test.error_of($$SELECT plivo_otp.otp_send('+15005556001')$$);
RESET plivo_otp.resend_interval;
SET plivo_otp.number_max_sends = 1;
SET plivo_otp.number_window = '1h';
SELECT state FROM test.error_of($$SELECT plivo_otp.otp_send('+15005556002')$$);
RESET plivo_otp.number_max_sends;
SET plivo_otp.caller_max_sends = 1;
SELECT plivo_otp.otp_send('+15005556004', caller_key => 'monitoring-caller') IS NOT NULL AS sent;
SELECT state FROM test.error_of($$SELECT plivo_otp.otp_send('+15005556005', caller_key => 'monitoring-caller')$$);
RESET plivo_otp.caller_max_sends;
SET plivo_otp.global_max_sends_per_hour = 1;
SELECT state FROM test.error_of($$SELECT plivo_otp.otp_send('+15005556006')$$);
RESET plivo_otp.global_max_sends_per_hour;
SET plivo_otp.allowed_countries = '44';
SELECT state FROM test.error_of($$SELECT plivo_otp.otp_send('+15005556007')$$);
RESET plivo_otp.allowed_countries;
SELECT state FROM test.error_of($$SELECT plivo_otp.otp_send('+44 20 7946 0960')$$);
-- A refused send rolled back: no row, but counted.
SELECT count(*) AS rows_of_refused FROM plivo_otp.verifications
WHERE phone IN ('+15005556005', '+15005556006', '+15005556007', '+442079460960');

-- One approval; two failed checks; a code locked after three.
SELECT id AS vid FROM plivo_otp.verifications WHERE phone = '+15005556001' \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_check('+15005556001', :'code');
SELECT plivo_otp.otp_check('+15005556002', 'xxxx');
SET plivo_otp.max_attempts = 3;
SELECT test.sends('+15005556008');
SELECT plivo_otp.otp_check('+15005556008', 'xxxx') FROM generate_series(1, 3);
-- Locked: a fourth check is no failed check and no second lock-out.
SELECT plivo_otp.otp_check('+15005556008', 'xxxx');
RESET plivo_otp.max_attempts;
-- A check that rolls back still counts (the ledger keeps it too).
BEGIN;
SELECT plivo_otp.otp_check('+15005556003', 'xxxx');
ROLLBACK;

SELECT * FROM test.activity_delta();

-- Delivery outcomes and conversion, on rows made for the purpose (in a
-- transaction that is rolled back, so that only these rows count).
BEGIN;
DELETE FROM plivo_otp.messages;
DELETE FROM plivo_otp.verifications;
CREATE FUNCTION pg_temp.made(phone text, region text, state text, age interval, n int)
RETURNS void LANGUAGE sql AS $$
	INSERT INTO plivo_otp.verifications (id, phone, purpose, channel, code_digest, state,
		max_attempts, created_at, expires_at, updated_at, region)
	SELECT gen_random_uuid(), phone || lpad(i::text, 4, '0'), 'default', 'sms',
		   sha256(i::text::bytea), state, 5, now() - age, now() - age + interval '10 minutes',
		   now() - age, region
	FROM generate_series(1, n) AS i
$$;
-- A good prefix: 60 codes, 45 approved; another, 40 codes, 20 approved.
SELECT pg_temp.made('+4474009', 'GB', 'approved', '2 hours', 45);
SELECT pg_temp.made('+4474008', 'GB', 'expired', '2 hours', 15);
SELECT pg_temp.made('+1201555', 'US', 'approved', '3 minutes', 20);
SELECT pg_temp.made('+1201556', 'US', 'expired', '30 minutes', 20);
-- A pumped prefix: 60 codes to Cameroon, 2 approved (conversion 0.033,
-- under a third of the overall 67 / 180 = 0.372); and a prefix with a bad
-- rate but fewer than 50 codes (not flagged).
SELECT pg_temp.made('+2376500', 'CM', 'expired', '4 hours', 58);
SELECT pg_temp.made('+2376501', 'CM', 'approved', '4 hours', 2);
SELECT pg_temp.made('+3736900', 'MD', 'expired', '4 hours', 20);
-- Outside the 24-hour window: counts nowhere.
SELECT pg_temp.made('+2376502', 'CM', 'approved', '25 hours', 500);
SELECT dimension, key, sent_last_hour, approved_last_hour, sent_24h, approved_24h,
	   conversion_24h, overall_conversion_24h, suspected_pumping
FROM plivo_otp_monitor.conversion ORDER BY dimension, key;

-- Messages: SMS delivered, failed with Plivo's error 30, refused by Plivo;
-- a call that hung up with cause 2000.
INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, dispatch_state,
	delivery_status, error_code, tries, next_try_at, expires_at, created_at, updated_at)
SELECT gen_random_uuid(), v.id, x.channel, v.phone, x.dispatch_state, x.delivery_status, x.error_code,
	   1, v.created_at, v.expires_at, v.created_at, v.created_at
FROM (SELECT id, phone, created_at, expires_at, row_number() OVER (ORDER BY phone) AS n
	  FROM plivo_otp.verifications WHERE phone LIKE '+1201555%') v
JOIN (VALUES (1, 'sms', 'accepted', 'delivered', NULL), (2, 'sms', 'accepted', 'failed', '30'),
			 (3, 'sms', 'accepted', 'failed', '30'), (4, 'sms', 'refused', NULL, NULL),
			 (5, 'voice', 'accepted', 'no-answer', '2000'), (6, 'sms', 'pending', NULL, NULL))
	AS x (n, channel, dispatch_state, delivery_status, error_code) ON x.n = v.n;
-- (The one delivered took three tries.)
UPDATE plivo_otp.messages SET tries = 3 WHERE delivery_status = 'delivered';
-- (One older code's message: in the hour and the day, not the 5 minutes.)
INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, dispatch_state,
	delivery_status, error_code, tries, next_try_at, expires_at, created_at, updated_at)
SELECT gen_random_uuid(), id, 'sms', phone, 'accepted', 'failed', '30', 1, created_at, expires_at,
	   created_at, created_at
FROM plivo_otp.verifications WHERE phone LIKE '+1201556%' ORDER BY phone LIMIT 1;
-- (A message of 25 hours ago, Geo Permissions refused: outside every window.)
INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, dispatch_state,
	delivery_status, error_code, tries, next_try_at, expires_at, created_at, updated_at)
SELECT gen_random_uuid(), id, 'sms', phone, 'accepted', 'failed', '450', 1, created_at, expires_at,
	   created_at, created_at
FROM plivo_otp.verifications WHERE phone LIKE '+2376502%' ORDER BY phone LIMIT 1;
SELECT * FROM plivo_otp_monitor.delivery_outcomes ORDER BY 1, 2, 3, 4;
-- The queue: the pending message, tried once, is awaiting its retry.
SELECT queue_depth, awaiting_retry, oldest_due_age > interval '2 minutes' AS due_since_created
FROM plivo_otp_monitor.dispatcher_health;
ROLLBACK;

-- Privileges: nothing without the README's GRANT, then pg_monitor reads
-- every view and a plain role still nothing.
CREATE ROLE mon_watcher IN ROLE pg_monitor;
CREATE ROLE mon_plain;
GRANT USAGE ON SCHEMA test TO PUBLIC;	-- (the helpers, as in privileges)
SET ROLE mon_watcher;
SELECT state, message FROM test.error_of($$SELECT * FROM plivo_otp_monitor.activity$$);
RESET ROLE;
GRANT USAGE ON SCHEMA plivo_otp_monitor TO pg_monitor;
SET ROLE mon_watcher;
SELECT count(*) > 0 AS reads FROM plivo_otp_monitor.activity;
SELECT count(*) > 0 AS reads FROM plivo_otp_monitor.listener_health;
SELECT count(*) = 1 AS reads FROM plivo_otp_monitor.dispatcher_health;
SELECT count(*) > 0 AS reads FROM plivo_otp_monitor.delivery_outcomes;
SELECT count(*) > 0 AS reads FROM plivo_otp_monitor.conversion;
-- Still not the tables behind them.
SELECT state, message FROM test.error_of($$SELECT * FROM plivo_otp.verifications$$);
RESET ROLE;
SET ROLE mon_plain;
SELECT state, message FROM test.error_of($$SELECT * FROM plivo_otp_monitor.activity$$);
SELECT state, message FROM test.error_of($$SELECT * FROM plivo_otp_monitor.conversion$$);
SELECT state, message FROM test.error_of($$SELECT * FROM plivo_otp_monitor.activity_counts()$$);
RESET ROLE;

-- No view shows a phone number (no run of 8 digits; pids and microseconds
-- are shorter), whatever the rows hold.
SELECT v, count(*) > 0 AS has_rows,
	   count(*) FILTER (WHERE t ~ '[0-9]{8}' OR t ~ '15005556') AS with_phone_digits
FROM (SELECT 'activity' AS v, a::text AS t FROM plivo_otp_monitor.activity a
	  UNION ALL SELECT 'listener_health', l::text FROM plivo_otp_monitor.listener_health l
	  UNION ALL SELECT 'dispatcher_health', d::text FROM plivo_otp_monitor.dispatcher_health d
	  UNION ALL SELECT 'delivery_outcomes', o::text FROM plivo_otp_monitor.delivery_outcomes o
	  UNION ALL SELECT 'conversion', c::text FROM plivo_otp_monitor.conversion c) x
GROUP BY v ORDER BY v;

REVOKE USAGE ON SCHEMA plivo_otp_monitor FROM pg_monitor;
DROP ROLE mon_watcher;
DROP ROLE mon_plain;
