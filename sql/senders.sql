-- senders: plivo_otp.senders picks who a message goes out from, by the
-- number's region or its longest calling-code prefix, and by channel; the
-- choice is recorded on the message when it is queued.  The regress
-- dispatcher is not configured: rows stay as queued.  plivo_otp.sender and
-- plivo_otp.voice_sender are empty here, so the fallback is NULL.
--
-- The numbers' regions come from libphonenumber (common/phone_info.c): the
-- sends below match by calling-code prefix only, and the region rule is
-- tested through test.sender_for, which takes the region as an argument.
CREATE FUNCTION test.sender_for(channel text, phone text, region text) RETURNS text
AS 'plivo_otp', 'plivo_otp_sender_for_sql' LANGUAGE C STRICT;

INSERT INTO plivo_otp.senders (prefix, channel, sender, note) VALUES
	('1', 'sms', '+16502530000', 'US long code'),
	('1', 'voice', '+16502530001', 'US voice number'),
	('1876', 'sms', '+18762100000', 'Jamaica'),
	('44', 'sms', 'MyBrand', 'UK alphanumeric sender ID'),
	('44', 'voice', '+442071838750', 'UK voice number'),
	('33', 'sms', 'powerpack:5ec4c8c9-cd74-42b5-9e41-0d7670d6bb46', 'France via a Powerpack'),
	('JM', 'voice', '+18762100001', 'Jamaica by region');
SELECT prefix, channel, sender, updated_at = created_at AS fresh
FROM plivo_otp.senders ORDER BY prefix, channel;

-- The rule: region row first, else the longest prefix, for the channel.
SELECT test.sender_for('sms', '+16502531234', '') AS us_sms,
	   test.sender_for('sms', '+18762101234', '') AS jm_sms_by_prefix,
	   test.sender_for('sms', '+18762101234', 'JM') AS jm_sms_no_region_row,
	   test.sender_for('voice', '+18762101234', 'JM') AS jm_voice_by_region,
	   test.sender_for('voice', '+18762101234', '') AS jm_voice_by_prefix,
	   test.sender_for('voice', '+16502531234', 'US') AS us_voice,
	   test.sender_for('sms', '+447400987656', 'GB') AS gb_sms,
	   test.sender_for('voice', '+447400987656', 'GB') AS gb_voice,
	   test.sender_for('voice', '+33698765432', 'FR') AS fr_voice_none,
	   test.sender_for('sms', '+4915223456789', 'DE') AS de_none;
-- A region row beats even a longer prefix.
INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('JM', 'sms', 'JAMAICA1');
SELECT test.sender_for('sms', '+18762101234', 'JM') AS jm_region_wins,
	   test.sender_for('sms', '+18762101234', '') AS jm_prefix_without_region;
DELETE FROM plivo_otp.senders WHERE prefix = 'JM' AND channel = 'sms';

-- Sends record the choice on the message; otp_messages shows it.
SELECT plivo_otp.otp_send('+16502531234') AS us \gset
SELECT plivo_otp.otp_send('+18762101234') AS jm \gset
SELECT plivo_otp.otp_send('+447400987656') AS gb \gset
SELECT plivo_otp.otp_send('+33698765432') AS fr \gset
SELECT plivo_otp.otp_send('+4915223456789') AS de \gset
SELECT plivo_otp.otp_send('+447400987657', 'voice') AS gb_voice \gset
SELECT v.phone, m.channel, m.sender
FROM plivo_otp.messages m JOIN plivo_otp.verifications v ON v.id = m.verification_id
WHERE v.id IN (:'us', :'jm', :'gb', :'fr', :'de', :'gb_voice') ORDER BY v.phone, m.channel;
SELECT channel, origin, sender FROM plivo_otp.otp_messages(:'gb');
-- otp_resend by voice: the voice row for the same number.
SELECT plivo_otp.otp_resend(:'gb', 'voice') IS NOT NULL AS resent;
SELECT channel, origin, sender FROM plivo_otp.otp_messages(:'gb');

-- A change is seen by the next send, without a reload.
UPDATE plivo_otp.senders SET sender = 'OtherBrand' WHERE prefix = '44' AND channel = 'sms';
SELECT updated_at > created_at AS touched FROM plivo_otp.senders WHERE prefix = '44' AND channel = 'sms';
SELECT plivo_otp.otp_resend(:'gb') IS NOT NULL AS resent;
DELETE FROM plivo_otp.senders WHERE prefix = '1876';
SELECT plivo_otp.otp_resend(:'jm') IS NOT NULL AS resent;
SELECT origin, sender FROM plivo_otp.otp_messages(:'gb') WHERE channel = 'sms';
SELECT origin, sender FROM plivo_otp.otp_messages(:'jm');

-- With only a sender ID in the settings, a call goes where a voice row
-- serves the number, and is refused elsewhere.
ALTER SYSTEM SET plivo_otp.sender = 'MYBRAND';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT current_setting('plivo_otp.sender') AS sender;
SELECT plivo_otp.otp_send('+447400987659', 'voice') AS gb_call \gset
SELECT channel, sender FROM plivo_otp.otp_messages(:'gb_call');
SELECT state, message, detail, hint
FROM test.error_of($$SELECT plivo_otp.otp_send('+4915223456780', 'voice')$$);
SELECT count(*) AS queued FROM plivo_otp.messages WHERE phone = '+4915223456780';
-- An SMS no row serves now records the setting.
SELECT plivo_otp.otp_send('+4915223456781') AS de_sms \gset
SELECT channel, sender FROM plivo_otp.otp_messages(:'de_sms');
ALTER SYSTEM RESET plivo_otp.sender;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT current_setting('plivo_otp.sender') = '' AS sender_reset;

-- Refused at insert or update, with SQLSTATE and hint.
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('49', 'voice', 'MyBrand')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('49', 'voice', 'powerpack:5ec4c8c9-cd74-42b5-9e41-0d7670d6bb46')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('49', 'voice', '+49 30 1234567')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('49', 'sms', 'AB')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('49', 'sms', 'MyBrandIsLong')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('49', 'sms', 'My-Brand')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('49', 'sms', '1234567890123456')$$);
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('49', 'sms', 'powerpack:not-a-uuid')$$);
SELECT * FROM test.error_of($$UPDATE plivo_otp.senders SET sender = 'MyBrand' WHERE prefix = '44' AND channel = 'voice'$$);
SELECT sender FROM plivo_otp.senders WHERE prefix = '44' AND channel = 'voice';
-- Malformed prefixes, an unknown channel.
SELECT prefix, (test.error_of(format('INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES (%L, %L, %L)',
								 prefix, 'sms', '+4930123456'))).*
FROM unnest(ARRAY['+49', 'de', '0049', 'D', '', '1234567890123456', 'DEU', '4 9']) AS prefix;
SELECT state, message FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('49', 'fax', '+4930123456')$$);
-- Accepted: a sender ID of 3 and of 11 characters, numbers with and without '+'.
INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES
	('49', 'sms', 'ABC'), ('491', 'sms', 'ABCDEFGHIJK'), ('49', 'voice', '4930123456'), ('1868', 'sms', '+18682000000');
SELECT count(*) AS senders FROM plivo_otp.senders;

-- An application role with the API (the README's GRANT) cannot read or
-- write the table; a role granted it as the README shows can.
CREATE ROLE otp_app_s;
CREATE ROLE otp_admin_s;
GRANT USAGE ON SCHEMA plivo_otp TO otp_app_s, otp_admin_s;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA plivo_otp TO otp_app_s;
GRANT SELECT, INSERT, UPDATE, DELETE ON plivo_otp.senders TO otp_admin_s;
SET ROLE otp_app_s;
SELECT plivo_otp.otp_send('+447400987658') IS NOT NULL AS app_can_send;
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('7', 'sms', 'Evil')$$);
SELECT * FROM test.error_of($$UPDATE plivo_otp.senders SET sender = 'Evil'$$);
SELECT * FROM test.error_of($$DELETE FROM plivo_otp.senders$$);
SELECT * FROM test.error_of($$SELECT * FROM plivo_otp.senders$$);
SELECT * FROM test.error_of($$ALTER TABLE plivo_otp.senders DISABLE TRIGGER senders_check$$);
RESET ROLE;
SET ROLE otp_admin_s;
INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('7', 'sms', 'Admin');
SELECT * FROM test.error_of($$INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('7', 'voice', 'Admin')$$);
RESET ROLE;
SELECT sender FROM plivo_otp.messages
WHERE verification_id = (SELECT id FROM plivo_otp.verifications WHERE phone = '+447400987658');

-- The table's rows are kept by pg_dump (test/t/026_senders.pl restores one).
SELECT c.relname, x.extcondition
FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(cfg, extcondition)
JOIN pg_class c ON c.oid = x.cfg
WHERE e.extname = 'plivo_otp'
ORDER BY c.relname;

DELETE FROM plivo_otp.senders;
REVOKE ALL ON plivo_otp.senders FROM otp_admin_s;
DROP OWNED BY otp_app_s, otp_admin_s;
DROP ROLE otp_app_s, otp_admin_s;
