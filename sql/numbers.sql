-- numbers: what libphonenumber knows of a number (issue 10): it must be
-- valid for its region, its region and type are recorded, an SMS to a fixed
-- line is refused, and allowed_countries takes ISO region codes.

-- Send, then read what the verification recorded.
CREATE FUNCTION test.number_of(phone text, channel text DEFAULT 'sms',
	OUT region text, OUT number_type text)
LANGUAGE plpgsql AS $$
DECLARE
	sent uuid := plivo_otp.otp_send(phone, channel);
BEGIN
	SELECT v.region, v.number_type INTO region, number_type
	FROM plivo_otp.verifications v WHERE v.id = sent;
END
$$;

-- Well formed (phone.c accepts them) but not valid numbers for their
-- country: refused with 22023 after the syntax check.  The same national
-- digits 6 12 34 56 78 are a mobile in France and no number in the UK; the
-- +1 area code 555 and a seven-digit "+1234567" exist nowhere.
SELECT input, e.state, e.message, e.detail, e.hint
FROM unnest(ARRAY[
	'+44 6 12 34 56 78',
	'+1 555 555 0100',
	'+1234567'
]) AS input,
LATERAL test.error_of(format('SELECT plivo_otp.otp_send(%L)', input)) e;
SELECT * FROM test.number_of('+33 6 12 34 56 78');

-- Malformed input keeps its old error, before libphonenumber is asked.
SELECT state, message FROM test.error_of($$SELECT plivo_otp.otp_send('+44 7400 123456 x123')$$);

-- The +1 regions told apart, and the type recorded on the verification
-- (a fixed line by voice: see below for SMS).
SELECT input, v.region, v.number_type
FROM unnest(ARRAY[
	'+1 415 555 0100',
	'+1 416 555 0100',
	'+1 876 555 0100',
	'+1 809 555 0100',
	'+44 7400 123456'
]) WITH ORDINALITY AS i(input, n),
LATERAL test.number_of(input) v
ORDER BY n;
SELECT * FROM test.number_of('+44 20 7946 0958', 'voice');
-- A number of no single region (international freephone +800): region NULL.
SELECT region IS NULL AS no_region, number_type FROM test.number_of('+800 1234 5678', 'voice');

-- An SMS to a fixed line is refused (0A000), with a hint to call instead;
-- a fixed line or mobile (as in the US, above) is not refused.
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+44 20 7946 0959')$$);
SELECT state, message FROM test.error_of($$SELECT plivo_otp.otp_send('+49 30 123456', 'sms')$$);
SELECT count(*) AS stored FROM plivo_otp.verifications WHERE phone IN ('+442079460959', '+4930123456');
-- otp_resend by SMS to the fixed line called above: refused the same way.
SELECT id AS landline FROM plivo_otp.verifications WHERE phone = '+442079460958' \gset
SELECT state, message, hint FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L, %L)', :'landline', 'sms'));
-- The setting allows it.
SET plivo_otp.allow_sms_to_fixed_line = on;
SELECT * FROM test.number_of('+44 20 7946 0959');
RESET plivo_otp.allow_sms_to_fixed_line;

-- allowed_countries with ISO region codes: +1 876 is JM, not US.
SET plivo_otp.allowed_countries = 'US,GB';
SELECT region FROM test.number_of('+1 415 555 0103');
SELECT region FROM test.number_of('+44 7400 123457');
SELECT state, message, detail FROM test.error_of($$SELECT plivo_otp.otp_send('+1 876 555 0103')$$);
SELECT state, message, detail FROM test.error_of($$SELECT plivo_otp.otp_send('+1 416 555 0103')$$);
-- A mixed list: a region and a calling-code prefix.
SET plivo_otp.allowed_countries = 'CA, 1876';
SELECT region FROM test.number_of('+1 416 555 0104');
SELECT region FROM test.number_of('+1 876 555 0104');
SELECT state, message FROM test.error_of($$SELECT plivo_otp.otp_send('+1 415 555 0104')$$);
-- A prefix-only list (the 0.1.0 configurations) works as before.
SET plivo_otp.allowed_countries = '1';
SELECT region FROM test.number_of('+1 876 555 0105');
-- A country taken out of the list after a code was sent: its resend is
-- refused too (53400), and queues nothing.
SET plivo_otp.allowed_countries = 'CA';
SELECT id AS jm_code FROM plivo_otp.verifications WHERE phone = '+18765550105' \gset
SELECT state, message, detail FROM test.error_of(format('SELECT plivo_otp.otp_resend(%L)', :'jm_code'));
SELECT count(*) AS messages_of_jm_code FROM plivo_otp.messages WHERE verification_id = :'jm_code';
RESET plivo_otp.allowed_countries;
SELECT plivo_otp.otp_resend(:'jm_code') IS NOT NULL AS resent_once_allowed;

-- The setting's check: region codes must be upper case and real.
SET plivo_otp.allowed_countries = 'UK';
SET plivo_otp.allowed_countries = 'us';
SET plivo_otp.allowed_countries = 'USA';
SET plivo_otp.allowed_countries = 'US,,GB';
SET plivo_otp.allowed_countries = 'US, 44, JM';
SHOW plivo_otp.allowed_countries;
RESET plivo_otp.allowed_countries;

DROP FUNCTION test.number_of(text, text);
