-- examples/login.sql: a login flow in PL/pgSQL on top of plivo_otp.
--
-- app.start_login(phone) sends a code to a known user; app.login_with_code(phone, code)
-- checks it with plivo_otp.otp_check and, only when it is approved, creates the session
-- row, in the caller's transaction: the approval and the session commit together or not
-- at all.  A failed attempt is the exception: plivo_otp counts it at once, outside the
-- transaction, so rolling back after a wrong code gives an attacker no extra try.
--
-- The first part is what an application would deploy; the second part shows the three
-- cases.  Run it as a superuser on a scratch database whose server preloads plivo_otp
-- (it creates schema app): psql -X -d scratch -f examples/login.sql.  See README.md here.

CREATE EXTENSION IF NOT EXISTS plivo_otp;
CREATE SCHEMA app;

CREATE TABLE app.users (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	phone text NOT NULL UNIQUE		-- E.164, as plivo_otp normalises it
);

CREATE TABLE app.sessions (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	user_id bigint NOT NULL REFERENCES app.users,
	created_at timestamptz NOT NULL DEFAULT now()
);

-- Sends a login code to a known user; NULL (and nothing sent) for an unknown number.
CREATE FUNCTION app.start_login(phone text) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM app.users AS u WHERE u.phone = start_login.phone) THEN
		RETURN NULL;
	END IF;
	RETURN plivo_otp.otp_send(phone, 'sms', 'login');
END
$$;

-- Checks a login code; on approved, and only then, creates the session.  result is
-- otp_check's answer (approved, incorrect, expired, max_attempts, not_found);
-- session_id is NULL unless result is approved.
CREATE FUNCTION app.login_with_code(phone text, code text,
	OUT result text, OUT session_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	uid bigint;
BEGIN
	result := plivo_otp.otp_check(phone, code, 'login');
	IF result <> 'approved' THEN
		RETURN;
	END IF;
	-- Approved: the session is created in the same transaction.  Should this fail
	-- (the user was deleted meanwhile, or the number is not written as stored), the
	-- error rolls the approval back with it and the code stays usable.
	SELECT u.id INTO uid FROM app.users AS u WHERE u.phone = login_with_code.phone;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'login refused: no such user'
			USING ERRCODE = 'no_data_found', HINT = 'Pass the number as app.users stores it (E.164).';
	END IF;
	INSERT INTO app.sessions (user_id) VALUES (uid) RETURNING id INTO session_id;
END
$$;

REVOKE ALL ON FUNCTION app.start_login(text), app.login_with_code(text, text) FROM PUBLIC;

-- ---- The demo

-- Only for this demo: the code the user would read in the SMS.  An operator with the
-- key file can learn it from its digest (the documented digest format; pgcrypto's
-- hmac); an application never can, nor needs to.
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE FUNCTION pg_temp.code_from_sms(vid uuid) RETURNS text
LANGUAGE sql AS $$
	SELECT c
	FROM plivo_otp.verifications AS v,
		hmac('plivo_otp code digest v1'::bytea,
			 pg_read_binary_file(current_setting('plivo_otp.key_file')), 'sha256') AS k,
		generate_series(0, power(10, current_setting('plivo_otp.code_length')::int)::int - 1) AS n,
		lpad(n::text, current_setting('plivo_otp.code_length')::int, '0') AS c
	WHERE v.id = vid
		AND hmac(int4send(16) || uuid_send(vid)
				 || int4send(octet_length(convert_to(v.purpose, 'UTF8')))
				 || convert_to(v.purpose, 'UTF8')
				 || int4send(octet_length(c)) || convert_to(c, 'UTF8'),
				 k, 'sha256') = v.code_digest
	LIMIT 1
$$;

INSERT INTO app.users (phone) VALUES ('+15005557001');
SELECT app.start_login('+15005557001') AS vid \gset
SELECT pg_temp.code_from_sms(:'vid') AS code \gset
-- A wrong code: the right one with its first digit changed.
SELECT overlay(:'code' PLACING ((substr(:'code', 1, 1)::int + 1) % 10)::text FROM 1 FOR 1) AS wrong \gset
SELECT attempts_left AS attempts_before FROM plivo_otp.otp_status(:'vid') \gset

-- 1. A wrong code, and the transaction rolls back: the attempt still counted, no session.
BEGIN;
SELECT result, session_id IS NULL AS no_session FROM app.login_with_code('+15005557001', :'wrong');
ROLLBACK;
SELECT attempts_left = :attempts_before - 1 AS attempt_counted FROM plivo_otp.otp_status(:'vid');
SELECT count(*) AS sessions FROM app.sessions;

-- 2. The right code, and the transaction rolls back: no session, the code still usable.
BEGIN;
SELECT result, session_id IS NOT NULL AS has_session FROM app.login_with_code('+15005557001', :'code');
SELECT count(*) AS sessions_inside FROM app.sessions;
ROLLBACK;
SELECT count(*) AS sessions FROM app.sessions;
SELECT state, attempts_left = :attempts_before - 1 AS attempts_left_unchanged FROM plivo_otp.otp_status(:'vid');

-- 3. The right code, committed: one session, and the code is used up.
SELECT result, session_id IS NOT NULL AS has_session FROM app.login_with_code('+15005557001', :'code');
SELECT count(*) AS sessions, bool_and(user_id = (SELECT id FROM app.users WHERE phone = '+15005557001')) AS for_the_user
FROM app.sessions;
SELECT state FROM plivo_otp.otp_status(:'vid');
SELECT result, session_id IS NULL AS no_session FROM app.login_with_code('+15005557001', :'code');
SELECT count(*) AS sessions FROM app.sessions;

-- 4. An error after the approval (the user was deleted meanwhile) undoes the approval too:
-- the code is still pending.
INSERT INTO app.users (phone) VALUES ('+15005557002');
SELECT app.start_login('+15005557002') AS vid \gset
SELECT pg_temp.code_from_sms(:'vid') AS code \gset
DELETE FROM app.users WHERE phone = '+15005557002';
\set VERBOSITY terse
SELECT * FROM app.login_with_code('+15005557002', :'code');
\set VERBOSITY default
SELECT state FROM plivo_otp.otp_status(:'vid');
SELECT count(*) AS sessions FROM app.sessions;
