-- storage: the code exists only as a keyed digest, the message only sealed.
SELECT plivo_otp.otp_send('+15005554001') AS vid \gset
SELECT test.learn_code(:'vid') AS code \gset

-- The digest is HMAC-SHA256 bound to id and purpose (test.learn_code found
-- the code by recomputing it), 32 bytes, and is not a plain hash of the code.
SELECT octet_length(code_digest) AS digest_bytes,
	   code_digest <> digest(:'code', 'sha256') AS not_plain_sha256
FROM plivo_otp.verifications WHERE id = :'vid';

-- No column of either row holds the code in clear.
SELECT count(*) AS rows_with_code_in_clear
FROM plivo_otp.verifications v JOIN plivo_otp.messages m ON m.verification_id = v.id
WHERE v.id = :'vid'
  AND (position(convert_to(:'code', 'UTF8') IN m.body) > 0
	   OR position(:'code' IN v::text) > 0
	   OR position(:'code' IN (m.id, m.phone, m.dispatch_state)::text) > 0);

-- The body is nonce (12) + ciphertext of the rendered text + tag (16).
SELECT octet_length(body) - 28
	   = octet_length(replace(replace(current_setting('plivo_otp.sms_template'),
									 '{code}', :'code'), '{minutes}', '10')) AS sealed_length_matches
FROM plivo_otp.messages WHERE verification_id = :'vid';

-- Two sends of the same text never produce the same ciphertext (fresh nonces).
SELECT count(DISTINCT substr(body, 1, 12)) = count(*) AS nonces_unique
FROM plivo_otp.messages WHERE body IS NOT NULL;

-- Codes are uniform: over 30 sends codes differ and their first digit varies.
SET plivo_otp.code_length = 4;
CREATE TEMP TABLE codes AS
SELECT test.learn_code(plivo_otp.otp_send('+1500555' || lpad(n::text, 4, '0'))) AS code
FROM generate_series(1, 30) n;
SELECT count(*) AS codes, count(DISTINCT code) >= 27 AS mostly_distinct,
	   bool_and(code ~ '^[0-9]{4}$') AS all_four_digits
FROM codes;
SELECT count(DISTINCT substr(code, 1, 1)) >= 5 AS first_digit_varies FROM codes;

-- code_length is honoured: a 5-digit code does not match any 4-digit guess.
SET plivo_otp.code_length = 5;
SELECT test.learn_code(plivo_otp.otp_send('+15005554002')) IS NULL AS not_four_digits;
