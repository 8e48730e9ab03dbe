-- verify: the rules of otp_check and otp_verify.
SET plivo_otp.max_attempts = 3;

-- The right code is approved once; the code is single use.
SELECT plivo_otp.otp_send('+15005551001') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_check('+15005551001', :'code');
SELECT plivo_otp.otp_check('+15005551001', :'code');
SELECT state, attempts_left, verified_at IS NOT NULL AS verified FROM plivo_otp.otp_status(:'vid');

-- Any format of the number reaches the same code.
SELECT plivo_otp.otp_send('+15005551002') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_verify('001 (500) 555-1002', :'code');

-- Wrong, malformed and NULL codes are failed attempts, never errors.
SELECT plivo_otp.otp_send('+15005551003') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_check('+15005551003', 'abcd');
SELECT attempts_left FROM plivo_otp.otp_status(:'vid');
SELECT plivo_otp.otp_check('+15005551003', NULL);
SELECT attempts_left FROM plivo_otp.otp_status(:'vid');
SELECT plivo_otp.otp_check('+15005551003', repeat('9', 1000));
-- The cap is reached: even the right code is refused now.
SELECT state, attempts_left FROM plivo_otp.otp_status(:'vid');
SELECT plivo_otp.otp_check('+15005551003', :'code');
SELECT plivo_otp.otp_verify('+15005551003', :'code');

-- A wrong code that differs from the right one by one digit.
SELECT plivo_otp.otp_send('+15005551004') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_check('+15005551004',
	overlay(:'code' placing ((substr(:'code', 1, 1)::int + 1) % 10)::text from 1 for 1));
SELECT plivo_otp.otp_check('+15005551004', :'code');

-- The purpose is part of the code: a code for 'login' does not approve 'reset'.
SELECT plivo_otp.otp_send('+15005551005', 'sms', 'login') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT plivo_otp.otp_check('+15005551005', :'code', 'reset');
SELECT plivo_otp.otp_check('+15005551005', :'code', 'login');

-- An expired code is refused even when right.
SELECT plivo_otp.otp_send('+15005551006') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second' WHERE id = :'vid';
SELECT state FROM plivo_otp.otp_status(:'vid');
SELECT plivo_otp.otp_check('+15005551006', :'code');

-- A new send replaces a code about to expire: the old one no longer works.
SELECT plivo_otp.otp_send('+15005551007') AS old_vid \gset
SELECT test.learn_code(:'old_vid') AS old_code \gset
UPDATE plivo_otp.verifications SET expires_at = now() + interval '30 seconds' WHERE id = :'old_vid';
SELECT plivo_otp.otp_send('+15005551007') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
SELECT state FROM plivo_otp.otp_status(:'old_vid');
SELECT plivo_otp.otp_check('+15005551007', :'old_code') IN ('incorrect', 'approved') AS old_code_is_just_a_guess;
SELECT plivo_otp.otp_check('+15005551007', :'code') = 'approved'
	OR :'old_code' = :'code' AS new_code_works;

-- Unknown number or purpose.
SELECT plivo_otp.otp_check('+15005551999', '1234');
SELECT plivo_otp.otp_check('+15005551001', '1234', 'never-sent');

-- A rolled-back approval leaves the code usable.
SELECT plivo_otp.otp_send('+15005551008') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
BEGIN;
SELECT plivo_otp.otp_verify('+15005551008', :'code');
ROLLBACK;
SELECT plivo_otp.otp_verify('+15005551008', :'code');

-- Failed attempts survive the caller's rollback (the shared ledger).
SELECT plivo_otp.otp_send('+15005551009') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset
BEGIN;
SELECT plivo_otp.otp_verify('+15005551009', 'xxxx');
ROLLBACK;
BEGIN;
SELECT plivo_otp.otp_verify('+15005551009', 'xxxx');
ROLLBACK;
SELECT attempts, state FROM plivo_otp.verifications WHERE id = :'vid';
SELECT attempts_left FROM plivo_otp.otp_status(:'vid');
BEGIN;
SELECT plivo_otp.otp_verify('+15005551009', 'xxxx');
ROLLBACK;
SELECT plivo_otp.otp_check('+15005551009', :'code');

-- Bad arguments that are not the code are errors.
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_check('not a number', '1234')$$);
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_check('+15005551001', '1234', '')$$);
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_check('+15005551001', '1234', NULL)$$);
