/* plivo_otp--0.1.0--0.2.0.sql: upgrade the plivo_otp schema from 0.1.0 to 0.2.0 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION plivo_otp UPDATE TO '0.2.0'" to load this file. \quit

-- Rows stuck in 'sending' are recovered by the dispatcher at start, never
-- by a lease: the lease column and its index were never read.
DROP INDEX plivo_otp.messages_sending;
ALTER TABLE plivo_otp.messages DROP COLUMN lease_until;

-- Retrying is decided by the dispatcher's outcome rules, not per error code.
ALTER TABLE plivo_otp.plivo_error_codes DROP COLUMN retry_helps;

-- Which key the codes and the queue were made with (crypto/key_check.c): the
-- key's fingerprint, recorded at first use; any other key file is refused.
CREATE TABLE plivo_otp.key_check (
	only_row		boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	fingerprint		bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
	recorded_at		timestamptz NOT NULL
);
REVOKE ALL ON TABLE plivo_otp.key_check FROM PUBLIC;

-- Re-delivery of a live code (a repeated otp_send re-sends the same code) and
-- caller keys with their own cap.  Every message counts in the limits.
ALTER TABLE plivo_otp.verifications ADD COLUMN code_sealed bytea;
CREATE INDEX verifications_sealed_expiry ON plivo_otp.verifications (expires_at)
	WHERE code_sealed IS NOT NULL;
ALTER TABLE plivo_otp.messages ADD COLUMN caller_key_digest bytea;
ALTER TABLE plivo_otp.messages ADD COLUMN idempotency_key text;
UPDATE plivo_otp.messages m SET idempotency_key = v.idempotency_key
FROM plivo_otp.verifications v WHERE v.id = m.verification_id AND v.idempotency_key IS NOT NULL;
CREATE INDEX messages_phone_created ON plivo_otp.messages (phone, created_at);
CREATE INDEX messages_caller_created ON plivo_otp.messages (caller_key_digest, created_at)
	WHERE caller_key_digest IS NOT NULL;
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
ALTER TABLE plivo_otp.messages ADD COLUMN origin text NOT NULL DEFAULT 'send'
	CHECK (origin IN ('send', 'redeliver', 'fallback', 'resend'));
ALTER TABLE plivo_otp.messages ADD COLUMN answer_token_digest bytea UNIQUE
	CHECK (octet_length(answer_token_digest) = 32);
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
	channel			text NOT NULL CHECK (channel IN ('sms', 'voice')),
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
	channel			text NOT NULL CHECK (channel IN ('sms', 'voice')),
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
ALTER TABLE plivo_otp.messages ADD COLUMN encoding text CHECK (encoding IN ('gsm7', 'ucs2'));
ALTER TABLE plivo_otp.messages ADD COLUMN segments integer CHECK (segments > 0);
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
CREATE INDEX verifications_unredacted ON plivo_otp.verifications (created_at)
	WHERE strpos(phone, '*') = 0;
CREATE INDEX messages_unredacted ON plivo_otp.messages (created_at)
	WHERE strpos(phone, '*') = 0;
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
-- Nothing reads messages_due any more (the claims and plivo_otp.dispatcher_stats
-- read messages_due_sms and messages_due_voice): one index less for otp_send.
DROP INDEX plivo_otp.messages_due;
