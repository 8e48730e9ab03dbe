/* plivo_otp--0.1.0--0.2.0.sql: upgrade the plivo_otp schema from 0.1.0 to 0.2.0 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION plivo_otp UPDATE TO '0.2.0'" to load this file. \quit

-- Rows stuck in 'sending' are recovered by the dispatcher at start, never
-- by a lease: the lease column and its index were never read.
DROP INDEX plivo_otp.messages_sending;
ALTER TABLE plivo_otp.messages DROP COLUMN lease_until;

-- The closed sets and fixed lengths of the tables' columns become domains
-- instead of table CHECK constraints: PostgreSQL reads and plans a table's
-- CHECKs again at every INSERT and UPDATE statement, a domain's rules once
-- per backend.  The domains are made without rules, so that moving a column
-- to one (the same representation) and adding a column of one rewrite no
-- table; the old CHECKs go, and the rules are added to the domains at the
-- end of this script (ALTER DOMAIN checks every row stored by then).
-- (Nothing reads messages_due any more: the claims and plivo_otp.dispatcher_stats
-- read messages_due_sms and messages_due_voice, made below.  Dropped first, it is
-- not rebuilt by the type change of dispatch_state, which its predicate names.)
DROP INDEX plivo_otp.messages_due;
CREATE DOMAIN plivo_otp.channel_name AS text;
CREATE DOMAIN plivo_otp.code_state AS text;
CREATE DOMAIN plivo_otp.dispatch_state AS text;
CREATE DOMAIN plivo_otp.message_origin AS text;
CREATE DOMAIN plivo_otp.sms_encoding AS text;
CREATE DOMAIN plivo_otp.segment_count AS integer;
CREATE DOMAIN plivo_otp.sha256_digest AS bytea;
CREATE DOMAIN plivo_otp.counter_key AS bytea;
ALTER TABLE plivo_otp.verifications
	DROP CONSTRAINT verifications_channel_check,
	DROP CONSTRAINT verifications_code_digest_check,
	DROP CONSTRAINT verifications_state_check,
	ALTER COLUMN channel TYPE plivo_otp.channel_name,
	ALTER COLUMN code_digest TYPE plivo_otp.sha256_digest,
	ALTER COLUMN state TYPE plivo_otp.code_state;
ALTER TABLE plivo_otp.messages
	DROP CONSTRAINT messages_channel_check,
	DROP CONSTRAINT messages_dispatch_state_check,
	ALTER COLUMN channel TYPE plivo_otp.channel_name,
	ALTER COLUMN dispatch_state TYPE plivo_otp.dispatch_state;

-- Retrying is decided by the dispatcher's outcome rules, not per error code.
ALTER TABLE plivo_otp.plivo_error_codes DROP COLUMN retry_helps;

-- Which key the codes and the queue were made with (crypto/key_check.c): the
-- key's fingerprint, recorded at first use; any other key file is refused.
CREATE TABLE plivo_otp.key_check (
	only_row		boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	fingerprint		plivo_otp.sha256_digest NOT NULL,
	recorded_at		timestamptz NOT NULL
);
REVOKE ALL ON TABLE plivo_otp.key_check FROM PUBLIC;

-- Re-delivery of a live code (a repeated otp_send re-sends the same code) and
-- caller keys with their own cap.  Every message counts in the limits, through
-- plivo_otp.send_counters, so no index reads messages by number or caller.
ALTER TABLE plivo_otp.verifications ADD COLUMN code_sealed bytea;
CREATE INDEX verifications_sealed_expiry ON plivo_otp.verifications (expires_at)
	WHERE code_sealed IS NOT NULL;
ALTER TABLE plivo_otp.messages ADD COLUMN caller_key_digest bytea;
ALTER TABLE plivo_otp.messages ADD COLUMN idempotency_key text;
UPDATE plivo_otp.messages m SET idempotency_key = v.idempotency_key
FROM plivo_otp.verifications v WHERE v.id = m.verification_id AND v.idempotency_key IS NOT NULL;
CREATE INDEX messages_idempotency ON plivo_otp.messages (idempotency_key)
	WHERE idempotency_key IS NOT NULL;

-- otp_send gains caller_key and locale.  A defaulted argument needs the old signature
-- dropped (calls would be ambiguous); GRANTs on it must be given again.
DROP FUNCTION plivo_otp.otp_send(text, text, text, text);
CREATE FUNCTION plivo_otp.otp_send(phone text,
								   channel text DEFAULT 'sms',
								   purpose text DEFAULT 'default',
								   idempotency_key text DEFAULT NULL,
								   caller_key text DEFAULT NULL,
								   locale text DEFAULT NULL)
RETURNS uuid
AS 'MODULE_PATHNAME', 'plivo_otp_send'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION plivo_otp.otp_send(text, text, text, text, text, text) IS
'issue a code to a phone number (or re-deliver its live code), in the template of its locale and purpose; it is delivered only if the calling transaction commits';
REVOKE ALL ON FUNCTION plivo_otp.otp_send(text, text, text, text, text, text) FROM PUBLIC;

-- signature_valid took the auth token as an argument (so the token could reach
-- the log): it is no longer part of the API; tests create their own.
DROP FUNCTION plivo_otp.signature_valid(text, text, text, jsonb, text, text, text);

COMMENT ON TABLE plivo_otp.verifications IS 'one row per otp_send: the code as a keyed digest, its state and attempts';
COMMENT ON TABLE plivo_otp.messages IS 'outbound queue: one row per delivery attempt, with dispatch state (ours) and delivery status (Plivo''s)';
COMMENT ON TABLE plivo_otp.delivery_events IS 'authenticated Plivo delivery callbacks as received';
COMMENT ON TABLE plivo_otp.callback_nonces IS 'signature nonces already accepted (replay protection)';
COMMENT ON TABLE plivo_otp.plivo_error_codes IS 'Plivo SMS error codes and their meanings, shown by otp_status';
COMMENT ON TABLE plivo_otp.key_check IS 'fingerprint of the key the codes and the queue were made with; another key file is refused';

-- Monitoring: what the SQL API did since the counters started.
CREATE FUNCTION plivo_otp.api_stats(
	OUT sends bigint, OUT refused_sends bigint, OUT approved bigint,
	OUT failed_checks bigint, OUT since timestamptz, OUT sends_last_hour bigint,
	OUT sms_segments bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'plivo_otp_api_stats'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION plivo_otp.api_stats() IS
'codes sent, sends refused by a limit, approved verifications and failed checks since the counters started; sends the global hourly cap counts now; SMS segments queued';
-- Counts activity across every application: monitoring roles only, once granted.
REVOKE ALL ON FUNCTION plivo_otp.api_stats() FROM PUBLIC;

CREATE VIEW plivo_otp.api_stats AS SELECT * FROM plivo_otp.api_stats();
-- Same row as the function: monitoring roles only, once granted.
REVOKE ALL ON plivo_otp.api_stats FROM PUBLIC;
COMMENT ON VIEW plivo_otp.api_stats IS 'one row: what the SQL API did since the counters started (server start or crash recovery)';

-- Voice calls and re-deliveries: where each message came from (one voice
-- fallback per code at most), the digest of a call's answer-URL token
-- (crypto/answer_token.c), when Plivo took it and when a call fetched its
-- script.
ALTER TABLE plivo_otp.messages ADD COLUMN origin plivo_otp.message_origin NOT NULL DEFAULT 'send';
ALTER TABLE plivo_otp.messages ADD COLUMN answer_token_digest plivo_otp.sha256_digest;
-- Partial: only calls have a token, so an SMS writes no entry here (its
-- insert and each of its updates would, for a NULL).
CREATE UNIQUE INDEX messages_answer_token_digest_key ON plivo_otp.messages (answer_token_digest)
	WHERE answer_token_digest IS NOT NULL;
ALTER TABLE plivo_otp.messages ADD COLUMN accepted_at timestamptz;
ALTER TABLE plivo_otp.messages ADD COLUMN answered_at timestamptz;
CREATE UNIQUE INDEX messages_one_fallback ON plivo_otp.messages (verification_id)
	WHERE origin = 'fallback';

-- The voice fallback's candidates (dispatcher/fallback.c): SMS that Plivo
-- accepted and has not reported delivered; a row leaves the index once it is.
CREATE INDEX messages_sms_undelivered ON plivo_otp.messages (expires_at)
	WHERE channel = 'sms' AND dispatch_state = 'accepted'
	AND delivery_status IS DISTINCT FROM 'delivered';
-- The calls whose sealed sentence is kept for the listener: the dispatcher
-- wipes each once its code expired or is no longer pending.
CREATE INDEX messages_call_bodies ON plivo_otp.messages (verification_id)
	WHERE channel = 'voice' AND body IS NOT NULL;

-- Plivo's call hang-up cause codes and what they mean (paraphrased from
-- Plivo's documentation), shown by otp_status as error_text for calls.
CREATE TABLE plivo_otp.plivo_hangup_causes (
	code			text PRIMARY KEY,
	meaning			text NOT NULL
);
INSERT INTO plivo_otp.plivo_hangup_causes VALUES
	('0', 'unknown hang-up cause'),
	('1000', 'call canceled before it was answered'),
	('1010', 'insufficient credit to place the call'),
	('1020', 'simultaneous-call limit of the account reached'),
	('2000', 'invalid destination number'),
	('2010', 'destination out of service'),
	('2020', 'endpoint not registered'),
	('2030', 'destination country barred by voice Geo Permissions'),
	('2040', 'premium-rate destination barred'),
	('2060', 'call loop detected'),
	('4000', 'normal hang-up'),
	('4010', 'end of the call''s XML instructions'),
	('4020', 'normal hang-up (multiparty call)'),
	('4030', 'normal hang-up (multiparty call ended)');
REVOKE ALL ON TABLE plivo_otp.plivo_hangup_causes FROM PUBLIC;
COMMENT ON TABLE plivo_otp.plivo_hangup_causes IS 'Plivo call hang-up cause codes and their meanings, shown by otp_status';

CREATE FUNCTION plivo_otp.otp_resend(verification_id uuid,
									 channel text DEFAULT 'sms',
									 caller_key text DEFAULT NULL)
RETURNS uuid
AS 'MODULE_PATHNAME', 'plivo_otp_resend'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION plivo_otp.otp_resend(uuid, text, text) IS
'deliver a live code again, by sms or voice; returns the new message''s id; it is delivered only if the calling transaction commits';
-- Sends a message and costs money: only roles granted the API.
REVOKE ALL ON FUNCTION plivo_otp.otp_resend(uuid, text, text) FROM PUBLIC;

CREATE FUNCTION plivo_otp.otp_messages(verification_id uuid,
	OUT message_id uuid, OUT channel text, OUT origin text, OUT dispatch_state text,
	OUT delivery_status text, OUT provider_uuid text, OUT error_code text,
	OUT error_text text, OUT tries integer, OUT created_at timestamptz,
	OUT accepted_at timestamptz, OUT answered_at timestamptz, OUT updated_at timestamptz,
	OUT sender text, OUT encoding text, OUT segments integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'plivo_otp_messages'
LANGUAGE C VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION plivo_otp.otp_messages(uuid) IS
'every message (SMS or call) of a verification, oldest first; no row for an unknown id';
-- Shows a verification's deliveries: only roles granted the API.
REVOKE ALL ON FUNCTION plivo_otp.otp_messages(uuid) FROM PUBLIC;

-- ingest_callback takes call hang-up callbacks too.
COMMENT ON FUNCTION plivo_otp.ingest_callback(text, text, jsonb, jsonb) IS
'record a Plivo message-status or call hang-up callback received by the application: same signature and replay checks as the listener; returns recorded or duplicate';

-- Destinations (issue 10), numbers: what libphonenumber says of a code's
-- number when it was sent.  region is its ISO 3166-1 code ('US', 'JM' for
-- +1 876), NULL for a number of no single region (+800); number_type is
-- 'mobile', 'fixed_line', 'fixed_line_or_mobile', 'toll_free', 'voip', ...
-- or 'unknown'.  Both NULL on codes sent before 0.2.0.
ALTER TABLE plivo_otp.verifications
	ADD COLUMN region text,
	ADD COLUMN number_type text;

-- ---- Senders by destination (issue 10) ----
-- Who a message goes out from, by destination and channel: the row whose
-- prefix is the number's ISO region ("GB", "JM") wins, else the row with
-- the longest calling-code prefix of its digits ("1876" before "1"), else
-- plivo_otp.sender (SMS) or the voice caller ID of the settings (calls).
-- The choice is made when a message is queued (src/common/senders.c) and
-- recorded in messages.sender; the dispatcher sends from it.  Only the
-- extension's owner, or a role granted it as the README shows, may write
-- the table; the trigger refuses a prefix or a sender of a form Plivo does
-- not accept for the channel.  pg_dump keeps the rows.
CREATE TABLE plivo_otp.senders (
	prefix			text NOT NULL,	-- ISO region code ('GB') or calling-code prefix ('44', '1876')
	channel			plivo_otp.channel_name NOT NULL,
	sender			text NOT NULL,	-- a number, an alphanumeric sender ID (SMS) or powerpack:<uuid> (SMS)
	note			text,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (prefix, channel)
);
REVOKE ALL ON TABLE plivo_otp.senders FROM PUBLIC;
COMMENT ON TABLE plivo_otp.senders IS 'who messages go out from, by destination region or calling-code prefix and channel; plivo_otp.sender is the fallback';
SELECT pg_catalog.pg_extension_config_dump('plivo_otp.senders', '');

CREATE FUNCTION plivo_otp.senders_check() RETURNS trigger
AS 'MODULE_PATHNAME', 'plivo_otp_senders_check'
LANGUAGE C;
COMMENT ON FUNCTION plivo_otp.senders_check() IS
'trigger of plivo_otp.senders: refuses a malformed prefix or a sender Plivo does not accept for the channel; sets updated_at';
REVOKE ALL ON FUNCTION plivo_otp.senders_check() FROM PUBLIC;
CREATE TRIGGER senders_check BEFORE INSERT OR UPDATE ON plivo_otp.senders
	FOR EACH ROW EXECUTE FUNCTION plivo_otp.senders_check();

-- The sender chosen when the message was queued; NULL on rows queued
-- before (the dispatcher then uses the settings).
ALTER TABLE plivo_otp.messages ADD COLUMN sender text;

-- ==== issue 10, templates: texts by locale and purpose, SMS segments ====
-- The administrator's templates (common/templates.c).  For a code in locale
-- fr-FR and purpose login, the first of: (login, fr-FR), (default, fr-FR),
-- (login, fr), (default, fr), (login, default), (default, default); then the
-- settings plivo_otp.sms_template / voice_template.  Every row is checked
-- by the trigger (plivo_otp.template_check): {code} present, no unknown
-- placeholder, not too long, at most plivo_otp.max_segments SMS segments.
CREATE TABLE plivo_otp.templates (
	purpose			text NOT NULL DEFAULT 'default',	-- otp_send's purpose, or 'default' for every purpose
	locale			text NOT NULL DEFAULT 'default',	-- BCP 47 tag (fr-FR, fr), or 'default'
	channel			plivo_otp.channel_name NOT NULL,
	body			text NOT NULL,		-- {code}, {minutes}, {app}
	voice_language	text,				-- a call's Speak language; NULL: plivo_otp.voice_language
	voice_name		text,				-- a call's Speak voice; NULL: plivo_otp.voice_name
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (purpose, locale, channel)
);
-- Only the extension owner writes templates (they reach every phone).
REVOKE ALL ON TABLE plivo_otp.templates FROM PUBLIC;
COMMENT ON TABLE plivo_otp.templates IS 'texts of the SMS and calls by purpose, locale and channel; checked on write';
-- pg_dump keeps the administrator's rows.
SELECT pg_catalog.pg_extension_config_dump('plivo_otp.templates', '');

CREATE FUNCTION plivo_otp.template_check(purpose text, channel text, locale text, body text,
										 voice_language text, voice_name text)
RETURNS text
AS 'MODULE_PATHNAME', 'plivo_otp_template_check'
LANGUAGE C STABLE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION plivo_otp.template_check(text, text, text, text, text, text) IS
'refuse a template Plivo could not deliver (no {code}, unknown placeholder, too long, too many segments); returns the locale in canonical case';
-- Called by the templates' trigger, as the extension owner.
REVOKE ALL ON FUNCTION plivo_otp.template_check(text, text, text, text, text, text) FROM PUBLIC;

CREATE FUNCTION plivo_otp.templates_check_row()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	NEW.locale := plivo_otp.template_check(NEW.purpose, NEW.channel, NEW.locale, NEW.body,
										   NEW.voice_language, NEW.voice_name);
	NEW.updated_at := now();
	IF TG_OP = 'UPDATE' THEN
		NEW.created_at := OLD.created_at;
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION plivo_otp.templates_check_row() IS 'trigger: every row of plivo_otp.templates is checked when written';
-- A trigger function: nobody calls it.
REVOKE ALL ON FUNCTION plivo_otp.templates_check_row() FROM PUBLIC;
CREATE TRIGGER templates_check_row BEFORE INSERT OR UPDATE ON plivo_otp.templates
	FOR EACH ROW EXECUTE FUNCTION plivo_otp.templates_check_row();

CREATE FUNCTION plivo_otp.sms_segments(body text,
	OUT encoding text, OUT segments integer, OUT characters integer)
RETURNS record
AS 'MODULE_PATHNAME', 'plivo_otp_sms_segments_sql'
LANGUAGE C IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION plivo_otp.sms_segments(text) IS
'how Plivo counts an SMS text: gsm7 (160, then 153 per segment; an extension character counts two) or ucs2 (70, then 67)';
-- A tool for administrators: grant it as wanted.
REVOKE ALL ON FUNCTION plivo_otp.sms_segments(text) FROM PUBLIC;

-- The locale otp_send was given (resends and fallbacks use it); each SMS's
-- encoding and segments; a call's Speak language and voice, from its template.
ALTER TABLE plivo_otp.verifications ADD COLUMN locale text;
ALTER TABLE plivo_otp.messages ADD COLUMN encoding plivo_otp.sms_encoding;
ALTER TABLE plivo_otp.messages ADD COLUMN segments plivo_otp.segment_count;
ALTER TABLE plivo_otp.messages ADD COLUMN voice_language text;
ALTER TABLE plivo_otp.messages ADD COLUMN voice_name text;

-- The templates a 0.1.0 installation set (in this session's settings, so
-- from postgresql.conf, ALTER DATABASE/ROLE or SET) become the default
-- templates, unless they are the built-in ones; one the checks refuse stays
-- only in the setting, with a warning.
DO $$
DECLARE
	t record;
BEGIN
	FOR t IN
		SELECT c AS channel, current_setting('plivo_otp.' || c || '_template', true) AS body,
			   (SELECT boot_val FROM pg_catalog.pg_settings WHERE name = 'plivo_otp.' || c || '_template') AS builtin
		FROM unnest(ARRAY['sms', 'voice']) AS c
	LOOP
		CONTINUE WHEN t.body IS NULL OR t.body IS NOT DISTINCT FROM t.builtin;
		BEGIN
			INSERT INTO plivo_otp.templates (channel, body) VALUES (t.channel, t.body);
		EXCEPTION WHEN invalid_parameter_value OR check_violation THEN
			RAISE WARNING 'plivo_otp.%_template was not copied into plivo_otp.templates: %', t.channel, SQLERRM;
		END;
	END LOOP;
END
$$;

-- ==== issue 12, Events: NOTIFY plivo_otp_events, code expiry, redaction ====
-- NOTIFY plivo_otp_events with a JSON payload when a message is accepted,
-- refused, expired, canceled or left unknown, when Plivo reports a final
-- delivery status, and when a code is approved, expires, locks or is
-- canceled (src/api/events.c).  The trigger runs in the transaction that
-- makes the change, so a listener never sees one that rolled back; its
-- WHEN clause fires it only on a real change to one of those states.
CREATE FUNCTION plivo_otp.events_notify() RETURNS trigger
AS 'MODULE_PATHNAME', 'plivo_otp_events_notify'
LANGUAGE C;
COMMENT ON FUNCTION plivo_otp.events_notify() IS
'trigger of plivo_otp.messages and plivo_otp.verifications: NOTIFY plivo_otp_events of a state change (JSON: verification_id, message_id, event, state, channel; never a number or a code)';
-- A trigger function: nobody calls it.
REVOKE ALL ON FUNCTION plivo_otp.events_notify() FROM PUBLIC;
CREATE TRIGGER messages_events AFTER UPDATE OF dispatch_state, delivery_status ON plivo_otp.messages
	FOR EACH ROW
	WHEN ((OLD.dispatch_state IS DISTINCT FROM NEW.dispatch_state
		   AND NEW.dispatch_state IN ('accepted', 'refused', 'expired', 'unknown', 'canceled'))
		  OR (OLD.delivery_status IS DISTINCT FROM NEW.delivery_status
			  AND NEW.delivery_status IN ('delivered', 'undelivered', 'failed', 'rejected',
										  'completed', 'busy', 'timeout', 'no-answer', 'canceled')))
	EXECUTE FUNCTION plivo_otp.events_notify('message');
CREATE TRIGGER verifications_events AFTER UPDATE OF state ON plivo_otp.verifications
	FOR EACH ROW
	WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state <> 'pending')
	EXECUTE FUNCTION plivo_otp.events_notify('verification');

-- Codes past their expiry are marked 'expired' by the dispatcher every
-- second (src/dispatcher/expiry.c), in batches from this index.
CREATE INDEX verifications_pending_expiry ON plivo_otp.verifications (expires_at)
	WHERE state = 'pending';

-- plivo_otp.redact_after (src/dispatcher/retention.c): numbers of finished
-- rows are replaced by their masked form; these indexes hold the rows whose
-- number is not masked yet, so each batch finds them without a scan.
CREATE FUNCTION plivo_otp.phone_masked(phone text) RETURNS text
AS 'MODULE_PATHNAME', 'plivo_otp_phone_masked'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION plivo_otp.phone_masked(text) IS
'a phone number as the logs and otp_status show it ("+14155550199" -> "+1415*****99"); masking twice changes nothing';
-- Used by the dispatcher's redaction: grant it as wanted.
REVOKE ALL ON FUNCTION plivo_otp.phone_masked(text) FROM PUBLIC;
-- Only finished rows, the ones redaction takes: a code's insert, a
-- message's insert and its claim write no entry here.
CREATE INDEX verifications_unredacted ON plivo_otp.verifications (created_at)
	WHERE strpos(phone, '*') = 0 AND state <> 'pending';
CREATE INDEX messages_unredacted ON plivo_otp.messages (created_at)
	WHERE strpos(phone, '*') = 0 AND dispatch_state NOT IN ('pending', 'sending');
CREATE INDEX delivery_events_unredacted ON plivo_otp.delivery_events (received_at)
	WHERE strpos(params ->> 'To', '*') = 0;

-- Performance: dispatcher (issue 11).  Each kind of message (SMS, calls) is
-- claimed in the order of its own partial index, (next_try_at, id): a claim
-- reads only the rows it takes, starting where the previous claim stopped,
-- whatever the length of the queue or of the history.
CREATE INDEX messages_due_sms ON plivo_otp.messages (next_try_at, id)
	WHERE dispatch_state = 'pending' AND channel = 'sms';
CREATE INDEX messages_due_voice ON plivo_otp.messages (next_try_at, id)
	WHERE dispatch_state = 'pending' AND channel = 'voice';

-- ---- Monitoring views (issue 12) ----
-- Schema plivo_otp_monitor: views that never show a phone number or a code
-- (calling codes and regions only).  The script grants SELECT on the views
-- and EXECUTE on their functions to pg_monitor, but the schema's USAGE to
-- nobody: the administrator turns monitoring on with one statement,
--   GRANT USAGE ON SCHEMA plivo_otp_monitor TO pg_monitor;
-- and members of pg_monitor then read every view (README, Monitoring).
-- The views read the tables with their owner's rights; the tables stay
-- closed to the readers.  Each statement reads a bounded window through an
-- index: verifications_created (codes of the last 24 hours), messages_created
-- below (messages of the last 24 hours) and messages_due_sms/_voice (the queue); the
-- cost follows the rows in the window, not the history.  Counts in shared
-- memory (activity,
-- listener_health, parts of dispatcher_health) start at zero at server
-- start or crash recovery; counting_since says when.
CREATE SCHEMA plivo_otp_monitor;
REVOKE ALL ON SCHEMA plivo_otp_monitor FROM PUBLIC;
COMMENT ON SCHEMA plivo_otp_monitor IS 'monitoring views of plivo_otp (no phone number, no code); GRANT USAGE to pg_monitor to turn on';

CREATE FUNCTION plivo_otp_monitor.activity_counts(
	OUT event text, OUT category text, OUT http_status integer,
	OUT last_5min bigint, OUT last_hour bigint, OUT last_24h bigint,
	OUT since_start bigint, OUT counting_since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'plivo_otp_monitor_activity'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION plivo_otp_monitor.activity_counts() IS
'per-minute counts in shared memory (one-minute buckets, 24 hours; zero at server start): each event in the last 5 minutes, hour, 24 hours, and since start';
-- Counts only, no number: readable by monitoring roles through the schema.
REVOKE ALL ON FUNCTION plivo_otp_monitor.activity_counts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION plivo_otp_monitor.activity_counts() TO pg_monitor;

CREATE FUNCTION plivo_otp_monitor.dispatcher_state(
	OUT in_flight integer, OUT last_error text, OUT last_error_at timestamptz,
	OUT last_accepted_at timestamptz, OUT dispatcher_pid integer,
	OUT counting_since timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'plivo_otp_monitor_dispatcher'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION plivo_otp_monitor.dispatcher_state() IS
'the dispatcher''s state in shared memory: requests in flight, last error (sanitised), when Plivo last took a message, pid';
-- The last error is sanitised (no token, no full number): monitoring roles.
REVOKE ALL ON FUNCTION plivo_otp_monitor.dispatcher_state() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION plivo_otp_monitor.dispatcher_state() TO pg_monitor;

-- Sends, refusals by limit, approvals, failed checks, lock-outs and the
-- dispatcher's outcomes, counted when they happen: a refused send rolls
-- back and leaves no row, so these come from shared memory.  A window is
-- the last N one-minute buckets, the current one included (5 minutes: the
-- last 4 to 5 minutes).  Nothing survives a restart: counting_since.
CREATE VIEW plivo_otp_monitor.activity AS
	SELECT event, category, last_5min, last_hour, last_24h, since_start, counting_since
	FROM plivo_otp_monitor.activity_counts()
	WHERE category <> 'callback';
REVOKE ALL ON plivo_otp_monitor.activity FROM PUBLIC;
GRANT SELECT ON plivo_otp_monitor.activity TO pg_monitor;
COMMENT ON VIEW plivo_otp_monitor.activity IS
'events of the API (sends, refused_sends and refused_* by limit, approved, failed_checks, lockouts) and the dispatcher (plivo_accepted, plivo_refused, retried, ...) in the last 5 min / hour / 24 h, from shared memory: zero after a restart (counting_since)';

-- The listener's answers by outcome: callbacks recorded, and refused by
-- reason, with the HTTP status Plivo got.  Shared memory, like activity.
CREATE VIEW plivo_otp_monitor.listener_health AS
	SELECT event AS outcome, http_status, last_5min, last_hour, last_24h, since_start, counting_since
	FROM plivo_otp_monitor.activity_counts()
	WHERE category = 'callback';
REVOKE ALL ON plivo_otp_monitor.listener_health FROM PUBLIC;
GRANT SELECT ON plivo_otp_monitor.listener_health TO pg_monitor;
COMMENT ON VIEW plivo_otp_monitor.listener_health IS
'the listener''s requests by outcome (recorded, duplicate, bad_signature, replay, malformed, ...) and HTTP status in the last 5 min / hour / 24 h, from shared memory: zero after a restart (counting_since)';

-- The queue (from the table: survives a restart) and the dispatcher (from
-- shared memory: in_flight, last_error, last_accepted_at reset at start).
CREATE VIEW plivo_otp_monitor.dispatcher_health AS
	SELECT q.queue_depth, q.oldest_due_age, q.awaiting_retry, d.in_flight,
		   d.last_error, d.last_error_at, d.last_accepted_at,
		   clock_timestamp() - d.last_accepted_at AS since_last_accepted,
		   d.dispatcher_pid, d.dispatcher_pid IS NOT NULL AS dispatcher_running,
		   d.counting_since
	FROM (SELECT count(*) AS queue_depth,
				 clock_timestamp() - min(next_try_at) FILTER (WHERE next_try_at <= clock_timestamp()) AS oldest_due_age,
				 count(*) FILTER (WHERE tries > 0) AS awaiting_retry
		  FROM plivo_otp.messages WHERE dispatch_state = 'pending') q
	CROSS JOIN plivo_otp_monitor.dispatcher_state() d;
REVOKE ALL ON plivo_otp_monitor.dispatcher_health FROM PUBLIC;
GRANT SELECT ON plivo_otp_monitor.dispatcher_health TO pg_monitor;
COMMENT ON VIEW plivo_otp_monitor.dispatcher_health IS
'queue depth, age of the oldest due message, queued messages awaiting a retry (tried before) from the table; in flight, last error, last message Plivo took and the pid from shared memory (reset at restart)';

-- Delivery outcomes of the messages created in each window, by channel,
-- our dispatch state, Plivo's delivery status and error code, with the
-- code's meaning (plivo_error_codes for SMS, plivo_hangup_causes for
-- calls), and how many of the day's needed more than one try
-- (retried_24h).  From the tables: survives a restart.  messages_created serves
-- the window: without it the messages of the day would be found one code
-- at a time (measured 1.3 s for 33,000 codes among 1,000,000).
CREATE INDEX messages_created ON plivo_otp.messages (created_at);
CREATE VIEW plivo_otp_monitor.delivery_outcomes AS
	SELECT o.channel, o.dispatch_state, o.delivery_status, o.error_code,
		   coalesce(e.meaning, h.meaning) AS error_meaning, o.last_5min, o.last_hour, o.last_24h,
		   o.retried_24h
	FROM (SELECT channel, dispatch_state, delivery_status, error_code,
				 count(*) FILTER (WHERE created_at > now() - interval '5 minutes') AS last_5min,
				 count(*) FILTER (WHERE created_at > now() - interval '1 hour') AS last_hour,
				 count(*) AS last_24h,
				 count(*) FILTER (WHERE tries > 1) AS retried_24h
		  FROM plivo_otp.messages
		  WHERE created_at > now() - interval '24 hours'
		  GROUP BY 1, 2, 3, 4) o
	LEFT JOIN plivo_otp.plivo_error_codes e ON o.channel = 'sms' AND e.code = o.error_code
	LEFT JOIN plivo_otp.plivo_hangup_causes h ON o.channel = 'voice' AND h.code = o.error_code;
REVOKE ALL ON plivo_otp_monitor.delivery_outcomes FROM PUBLIC;
GRANT SELECT ON plivo_otp_monitor.delivery_outcomes TO pg_monitor;
COMMENT ON VIEW plivo_otp_monitor.delivery_outcomes IS
'messages created in the last 5 min / hour / 24 h by channel, dispatch_state, delivery_status and Plivo error code with its meaning; retried_24h: those of the day tried more than once (from the tables)';

-- Conversion (codes approved / codes sent) of the codes issued in the last
-- hour and 24 hours, by calling code (E.164: 1 and 7 are one digit, the
-- 44 two-digit codes of zones 2 to 9 two, every other three) and by
-- region (verifications.region; NULL before 0.2.0 or for a number of no
-- single region).  suspected_pumping, the signature of SMS pumping: at
-- least 50 codes sent in 24 hours under the key and a 24-hour conversion
-- below a third of the overall 24-hour conversion (all keys together).
-- A code still pending counts as sent and not approved.  From the tables.
CREATE VIEW plivo_otp_monitor.conversion AS
	WITH v AS (
		SELECT CASE WHEN substr(phone, 2, 1) IN ('1', '7') THEN substr(phone, 2, 1)
					WHEN substr(phone, 2, 2) = ANY ('{20,27,30,31,32,33,34,36,39,40,41,43,44,45,46,47,48,49,51,52,53,54,55,56,57,58,60,61,62,63,64,65,66,81,82,84,86,90,91,92,93,94,95,98}'::text[])
					THEN substr(phone, 2, 2)
					ELSE substr(phone, 2, 3) END AS calling_code,
			   region, state = 'approved' AS approved,
			   created_at > now() - interval '1 hour' AS last_hour
		FROM plivo_otp.verifications
		WHERE created_at > now() - interval '24 hours'),
	overall AS (
		SELECT count(*) AS sent, count(*) FILTER (WHERE approved) AS approved FROM v),
	g AS (
		SELECT 'calling_code' AS dimension, '+' || calling_code AS key,
			   count(*) FILTER (WHERE last_hour) AS sent_last_hour,
			   count(*) FILTER (WHERE last_hour AND approved) AS approved_last_hour,
			   count(*) AS sent_24h, count(*) FILTER (WHERE approved) AS approved_24h
		FROM v GROUP BY calling_code
		UNION ALL
		SELECT 'region', region,
			   count(*) FILTER (WHERE last_hour), count(*) FILTER (WHERE last_hour AND approved),
			   count(*), count(*) FILTER (WHERE approved)
		FROM v GROUP BY region)
	SELECT g.dimension, g.key, g.sent_last_hour, g.approved_last_hour, g.sent_24h, g.approved_24h,
		   round(g.approved_24h::numeric / g.sent_24h, 3) AS conversion_24h,
		   round(o.approved::numeric / o.sent, 3) AS overall_conversion_24h,
		   g.sent_24h >= 50 AND 3 * g.approved_24h * o.sent < o.approved * g.sent_24h AS suspected_pumping
	FROM g CROSS JOIN overall o;
REVOKE ALL ON plivo_otp_monitor.conversion FROM PUBLIC;
GRANT SELECT ON plivo_otp_monitor.conversion TO pg_monitor;
COMMENT ON VIEW plivo_otp_monitor.conversion IS
'codes sent and approved in the last hour and 24 h by calling code and by region; suspected_pumping: >= 50 codes in 24 h and a conversion below a third of the overall 24 h conversion (from the tables)';

-- ==== Performance: send counters (issue 11) ====
-- One row per number, caller key and idempotency key that otp_send,
-- otp_resend, otp_check or the voice fallback touched, keyed by a keyed
-- digest of it (send_locks.c): nothing here tells which number it is.  The
-- row is the key's lock: a send locks it (INSERT ... ON CONFLICT) until its
-- transaction ends, so sends to one number, caller key or idempotency key
-- are serialised without a lock-table entry each.  A number's or caller
-- key's row also counts its messages (send_policy.c) in two buckets of the
-- limit's window (a sliding estimate: the previous bucket's count weighted
-- by how much of it is still in the window, plus the current one's) and
-- holds the times of its last two messages (the cool-down), so no limit
-- counts rows of history.  The counts change in the sending transaction
-- and roll back with it.  Rows idle for longer than every window and the
-- code lifetime can be deleted (plivo_otp_purge_send_counters).
CREATE TABLE plivo_otp.send_counters (
	key				plivo_otp.counter_key PRIMARY KEY,
	bucket_start	timestamptz,		-- start of the current bucket; NULL: nothing counted yet
	bucket_count	integer NOT NULL DEFAULT 0,
	previous_count	integer NOT NULL DEFAULT 0,	-- the bucket before it
	last_send_at	timestamptz,		-- the latest message counted
	previous_send_at timestamptz,		-- the one before (the cool-down's, read in the same statement)
	touched_at		timestamptz NOT NULL	-- last use of the row, for the purge
) WITH (fillfactor = 50);	-- room on the page for the updates (HOT)
-- Callers never reach it: no login can take these locks to block sends.
REVOKE ALL ON TABLE plivo_otp.send_counters FROM PUBLIC;
COMMENT ON TABLE plivo_otp.send_counters IS 'per-number, per-caller-key and per-idempotency-key locks and message counters of the sending limits, keyed by a keyed digest';

-- Performance: dispatcher, round 2 (issue 11).  The one-second sweeps read
-- only the rows they change: expire_unsendable the pending messages whose
-- expiry is near, earliest first; cancel_orphaned the codes that left
-- 'pending' since its last sweep (a code enters this index only as it
-- finishes, an update that changes an indexed predicate's column anyway),
-- then their messages by messages_verification.
CREATE INDEX messages_pending_expiry ON plivo_otp.messages (expires_at)
	WHERE dispatch_state = 'pending';
CREATE INDEX verifications_finished ON plivo_otp.verifications (updated_at, id)
	WHERE state <> 'pending';

-- Performance: otp_send, round 2 (issue 11).  A backend remembers which
-- channels plivo_otp.templates and plivo_otp.senders have rows for, and
-- skips their look-ups when the answer can only be the settings'
-- (common/table_cache.c).  These statement triggers make every backend
-- forget it once a change commits; ENABLE ALWAYS: also on a logical
-- replica, where the apply worker writes with session_replication_role
-- = replica.
CREATE FUNCTION plivo_otp.config_table_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'plivo_otp_config_table_changed'
LANGUAGE C;
COMMENT ON FUNCTION plivo_otp.config_table_changed() IS
'statement trigger of plivo_otp.templates and plivo_otp.senders: backends re-read which channels have rows once the change commits';
REVOKE ALL ON FUNCTION plivo_otp.config_table_changed() FROM PUBLIC;
CREATE TRIGGER templates_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON plivo_otp.templates
	FOR EACH STATEMENT EXECUTE FUNCTION plivo_otp.config_table_changed();
ALTER TABLE plivo_otp.templates ENABLE ALWAYS TRIGGER templates_changed;
CREATE TRIGGER senders_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON plivo_otp.senders
	FOR EACH STATEMENT EXECUTE FUNCTION plivo_otp.config_table_changed();
ALTER TABLE plivo_otp.senders ENABLE ALWAYS TRIGGER senders_changed;

-- Performance: index writes (issue 11).  provider_uuid is NULL until Plivo
-- took the message: as a partial unique index (the constraint's name kept,
-- the forced plans name it) it holds only the messages that have one, so
-- a message's insert and its claim write one index entry less.
ALTER TABLE plivo_otp.messages DROP CONSTRAINT messages_provider_uuid_key;
CREATE UNIQUE INDEX messages_provider_uuid_key ON plivo_otp.messages (provider_uuid)
	WHERE provider_uuid IS NOT NULL;

-- The domains' rules (see the top of this script), checked against every
-- row now stored.
ALTER DOMAIN plivo_otp.channel_name
	ADD CONSTRAINT channel_name_check CHECK (VALUE IN ('sms', 'voice'));
ALTER DOMAIN plivo_otp.code_state
	ADD CONSTRAINT code_state_check CHECK (VALUE IN ('pending', 'approved', 'expired', 'max_attempts', 'canceled'));
ALTER DOMAIN plivo_otp.dispatch_state
	ADD CONSTRAINT dispatch_state_check
	CHECK (VALUE IN ('pending', 'sending', 'accepted', 'refused', 'expired', 'unknown', 'canceled'));
ALTER DOMAIN plivo_otp.message_origin
	ADD CONSTRAINT message_origin_check CHECK (VALUE IN ('send', 'redeliver', 'fallback', 'resend'));
ALTER DOMAIN plivo_otp.sms_encoding
	ADD CONSTRAINT sms_encoding_check CHECK (VALUE IN ('gsm7', 'ucs2'));
ALTER DOMAIN plivo_otp.segment_count
	ADD CONSTRAINT segment_count_check CHECK (VALUE > 0);
ALTER DOMAIN plivo_otp.sha256_digest
	ADD CONSTRAINT sha256_digest_check CHECK (octet_length(VALUE) = 32);
ALTER DOMAIN plivo_otp.counter_key
	ADD CONSTRAINT counter_key_check CHECK (octet_length(VALUE) = 16);
-- A column's type change dropped its statistics: take them again, so that
-- the first plans after the upgrade see the tables as they are.
ANALYZE plivo_otp.verifications, plivo_otp.messages;
