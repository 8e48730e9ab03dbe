-- setup: the extension, and test-side helpers that later files use.
--
-- test.learn_code() learns a code as an operator with the key file could:
-- it re-derives the digest key from the key file (pgcrypto) and tries every
-- 4-digit code against the stored digest.  This also checks the documented
-- digest format independently of the C code.  Nothing here is shipped.
CREATE EXTENSION plivo_otp;
CREATE EXTENSION pgcrypto;
CREATE SCHEMA test;

-- signature_valid is not shipped as SQL (it takes the auth token as an
-- argument, which could reach the log); the tests bind the library's C
-- function themselves to run every published vector through it.
CREATE FUNCTION test.signature_valid(version text, method text, url text, params jsonb,
									 nonce text, signature text, auth_token text)
RETURNS boolean AS 'plivo_otp', 'plivo_otp_signature_valid' LANGUAGE C IMMUTABLE STRICT;

CREATE FUNCTION test.learn_code(vid uuid) RETURNS text
LANGUAGE sql AS $$
	WITH k AS (
		SELECT hmac('plivo_otp code digest v1'::bytea,
					pg_read_binary_file(current_setting('plivo_otp.key_file')),
					'sha256') AS key),
	v AS (
		SELECT purpose, code_digest FROM plivo_otp.verifications WHERE id = vid)
	SELECT c
	FROM k, v, generate_series(0, 9999) AS n, lpad(n::text, 4, '0') AS c
	WHERE hmac(int4send(16) || uuid_send(vid)
			   || int4send(octet_length(convert_to(v.purpose, 'UTF8')))
			   || convert_to(v.purpose, 'UTF8')
			   || int4send(4) || convert_to(c, 'UTF8'),
			   k.key, 'sha256') = v.code_digest
	LIMIT 1
$$;

-- The error a statement raises, with times in hints made stable.
CREATE FUNCTION test.error_of(cmd text, stable_hint boolean DEFAULT true,
	OUT state text, OUT message text, OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE cmd;
	state := 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
		detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	IF stable_hint THEN
		hint := regexp_replace(hint, 'Retry in [0-9]+ seconds, at .*', 'Retry in N seconds, at T.');
	END IF;
END
$$;

-- A send as an expression that yields only whether it worked.
CREATE FUNCTION test.sends(phone text, purpose text DEFAULT 'default') RETURNS boolean
LANGUAGE sql AS $$ SELECT plivo_otp.otp_send(phone, 'sms', purpose) IS NOT NULL $$;

-- Most tests are about one rule at a time: lift the rate limits here, and
-- let each file set the ones it tests.
ALTER DATABASE contrib_regression SET plivo_otp.resend_interval = 0;
ALTER DATABASE contrib_regression SET plivo_otp.number_max_sends = 0;
ALTER DATABASE contrib_regression SET plivo_otp.global_max_sends_per_hour = 0;
ALTER DATABASE contrib_regression SET plivo_otp.code_length = 4;
