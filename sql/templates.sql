-- templates: plivo_otp.templates by locale and purpose, their checks, the
-- SMS encoding and segments recorded on each message, otp_send's locale.
-- The dispatcher of the regress server is not configured: rows stay queued.
CREATE FUNCTION test.open_body(id uuid, body bytea) RETURNS text
AS 'plivo_otp', 'plivo_otp_open_body_sql' LANGUAGE C STRICT;
-- The text of a verification's latest message, its code replaced by NNNN.
CREATE FUNCTION test.text_of(vid uuid) RETURNS text
LANGUAGE sql AS $$
	SELECT regexp_replace(test.open_body(id, body), '[0-9](, [0-9]){3}|[0-9]{4}', 'NNNN', 'g')
	FROM plivo_otp.messages WHERE verification_id = vid ORDER BY created_at DESC, id LIMIT 1
$$;

-- Segment counting as Plivo does it.
SELECT n, (plivo_otp.sms_segments(repeat('a', n))).* FROM unnest(ARRAY[1, 160, 161, 306, 307]) AS n;
-- An extension character counts two: 159 + euro = 161 septets.
SELECT (plivo_otp.sms_segments(repeat('a', 159) || '€')).*;
SELECT (plivo_otp.sms_segments(repeat('a', 158) || '€')).*;
SELECT (plivo_otp.sms_segments('[x]{y}~^|\')).*;
-- GSM-7's own accented letters stay GSM-7; others make it UCS-2.
SELECT (plivo_otp.sms_segments('é à ñ ü Ç Øß Δ Ω £ ¥ § ¿ ¡')).*;
SELECT n, (plivo_otp.sms_segments('ç' || repeat('a', n - 1))).* FROM unnest(ARRAY[70, 71, 134, 135]) AS n;
-- A character outside the BMP takes two UTF-16 units.
SELECT (plivo_otp.sms_segments(repeat('a', 68) || '😀')).*;
SELECT (plivo_otp.sms_segments(repeat('a', 69) || '😀')).*;
SELECT (plivo_otp.sms_segments('`')).encoding AS backquote;

-- The chain: exact locale, its language, default; purpose before 'default'.
INSERT INTO plivo_otp.templates (purpose, locale, channel, body) VALUES
	('login',   'fr-FR',   'sms', 'login fr-FR {code}'),
	('default', 'fr-FR',   'sms', 'default fr-FR {code}'),
	('login',   'fr',      'sms', 'login fr {code}'),
	('default', 'fr',      'sms', 'default fr {code}'),
	('login',   'default', 'sms', 'login default {code}'),
	('default', 'default', 'sms', 'default default {code}');
SELECT purpose, locale FROM plivo_otp.templates ORDER BY 1, 2;
SELECT test.text_of(plivo_otp.otp_send('+15005568001', 'sms', 'login', locale => 'fr-FR'));
SELECT test.text_of(plivo_otp.otp_send('+15005568002', 'sms', 'other', locale => 'fr-FR'));
SELECT test.text_of(plivo_otp.otp_send('+15005568003', 'sms', 'login', locale => 'fr-CA'));
SELECT test.text_of(plivo_otp.otp_send('+15005568004', 'sms', 'other', locale => 'fr-CA'));
SELECT test.text_of(plivo_otp.otp_send('+15005568005', 'sms', 'login', locale => 'de-DE'));
SELECT test.text_of(plivo_otp.otp_send('+15005568006', 'sms', 'other', locale => 'de'));
SELECT test.text_of(plivo_otp.otp_send('+15005568007', 'sms', 'other'));
-- Case does not matter: the locale is canonicalised (FR-fr is fr-FR).
SELECT test.text_of(plivo_otp.otp_send('+15005568008', 'sms', 'login', locale => 'FR-fr'));
SELECT locale FROM plivo_otp.verifications WHERE phone = '+15005568008';
-- A resend uses the verification's locale.
SELECT plivo_otp.otp_send('+15005568009', 'sms', 'login', locale => 'fr') AS vid \gset
SELECT plivo_otp.otp_resend(:'vid') IS NOT NULL AS resent;
SELECT test.text_of(:'vid');
-- A change is seen by the next send, no restart.
UPDATE plivo_otp.templates SET body = 'nouveau {code}' WHERE purpose = 'login' AND locale = 'fr-FR';
SELECT test.text_of(plivo_otp.otp_send('+15005568010', 'sms', 'login', locale => 'fr-FR'));
SELECT created_at < updated_at AS updated_later FROM plivo_otp.templates
WHERE purpose = 'login' AND locale = 'fr-FR';
-- No row at all: the setting.
DELETE FROM plivo_otp.templates;
SET plivo_otp.sms_template = 'setting {code}';
SELECT test.text_of(plivo_otp.otp_send('+15005568011', 'sms', 'login', locale => 'fr-FR'));
RESET plivo_otp.sms_template;
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005568012', locale => 'not a locale')$$);

-- Placeholders, rendered in one pass: {app}'s text is not expanded again.
SET plivo_otp.app_name = 'Acme {code} & <Co>';
INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', '{app}: {code} ({minutes} min) {code}');
SELECT test.text_of(plivo_otp.otp_send('+15005568013'));
RESET plivo_otp.app_name;
DELETE FROM plivo_otp.templates;

-- Encoding and segments on the message and in otp_messages; api_stats counts them.
SELECT sms_segments AS segments_before FROM plivo_otp.api_stats \gset
INSERT INTO plivo_otp.templates (locale, channel, body) VALUES
	('ru', 'sms', 'Ваш код {code}'),
	('en', 'sms', 'Your code is {code} €');
SELECT plivo_otp.otp_send('+15005568014', locale => 'ru') AS vid \gset
SELECT encoding, segments FROM plivo_otp.otp_messages(:'vid');
SELECT plivo_otp.otp_send('+15005568015', locale => 'en') AS vid \gset
SELECT encoding, segments FROM plivo_otp.messages WHERE verification_id = :'vid';
SET plivo_otp.max_segments = 2;
INSERT INTO plivo_otp.templates (locale, channel, body)
VALUES ('de', 'sms', repeat('x', 157) || ' {code}');
SELECT plivo_otp.otp_send('+15005568016', locale => 'de') AS vid \gset
SELECT encoding, segments FROM plivo_otp.otp_messages(:'vid');
SELECT sms_segments - :segments_before AS segments_counted FROM plivo_otp.api_stats;
RESET plivo_otp.max_segments;
-- A call has neither.
SELECT plivo_otp.otp_send('+15005568017', 'voice') AS vid \gset
SELECT channel, encoding, segments FROM plivo_otp.otp_messages(:'vid');
DELETE FROM plivo_otp.templates;

-- Voice templates carry the Speak language and voice, recorded on the call.
INSERT INTO plivo_otp.templates (locale, channel, body, voice_language, voice_name)
VALUES ('fr-FR', 'voice', 'Votre code est {code}.', 'fr-FR', 'Polly.Celine');
SELECT plivo_otp.otp_send('+15005568018', 'voice', locale => 'fr-FR') AS vid \gset
SELECT test.text_of(:'vid');
SELECT voice_language, voice_name FROM plivo_otp.messages WHERE verification_id = :'vid';
SELECT plivo_otp.otp_send('+15005568019', 'voice') AS vid \gset
SELECT test.text_of(:'vid');
SELECT voice_language, voice_name FROM plivo_otp.messages WHERE verification_id = :'vid';
DELETE FROM plivo_otp.templates;

-- Refused at write, with SQLSTATE and hint.
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', 'no code here')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', '{code} {foo}')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', repeat('x', 150) || ' {code}')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', repeat('ж', 60) || ' {code}')$$);
SET plivo_otp.max_segments = 10;
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', repeat('x', 1600) || ' {code}')$$);
RESET plivo_otp.max_segments;
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body) VALUES ('voice', repeat('x', 4000) || ' {code}')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (locale, channel, body) VALUES ('fr_FR', 'sms', '{code}')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (purpose, channel, body) VALUES ('log in', 'sms', '{code}')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body, voice_name) VALUES ('sms', '{code}', 'WOMAN')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body, voice_name) VALUES ('voice', '{code}', 'Robot')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body, voice_language) VALUES ('voice', '{code}', 'fr FR')$$);
-- An update is checked too.
INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', 'ok {code}');
SELECT * FROM test.error_of($$UPDATE plivo_otp.templates SET body = 'gone'$$);
-- The settings' templates get the same checks.
SELECT * FROM test.error_of($$SET plivo_otp.sms_template = '{code} {foo}'$$);
SELECT state, detail FROM test.error_of(format('SET plivo_otp.sms_template = %L', '{code}' || repeat('y', 160)));
SELECT * FROM test.error_of($$SET plivo_otp.voice_template = 'no code'$$);

-- An application role cannot write (nor read) the templates.
CREATE ROLE otp_tpl_app;
GRANT USAGE ON SCHEMA plivo_otp TO otp_tpl_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA plivo_otp TO otp_tpl_app;
SET ROLE otp_tpl_app;
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', 'evil {code}')$$);
SELECT * FROM test.error_of($$UPDATE plivo_otp.templates SET body = 'evil {code}'$$);
SELECT * FROM test.error_of($$DELETE FROM plivo_otp.templates$$);
SELECT * FROM test.error_of($$SET plivo_otp.app_name = 'evil'$$);
SELECT * FROM test.error_of($$SET plivo_otp.max_segments = 10$$);
RESET ROLE;
SELECT body FROM plivo_otp.templates;
DROP OWNED BY otp_tpl_app;
DROP ROLE otp_tpl_app;
DELETE FROM plivo_otp.templates;

-- pg_dump keeps the rows.
SELECT unnest(extconfig)::regclass AS dumped FROM pg_extension WHERE extname = 'plivo_otp';
