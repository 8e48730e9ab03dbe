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

-- Ids are time-ordered UUIDs (version 7, RFC 9562): the first 48 bits are
-- the Unix time in milliseconds, so new rows go to the right-hand edge of
-- the indexes on them; ids sort in the order they were made (a message's
-- after its code's), and the last 62 bits stay random.
CREATE TEMP TABLE ids AS
SELECT n, plivo_otp.otp_send('+1500556' || lpad(n::text, 4, '0')) AS vid
FROM generate_series(1, 20) n;
SELECT bool_and(substr(v.id::text, 15, 1) = '7') AS version_7,
	   bool_and(substr(v.id::text, 20, 1) IN ('8', '9', 'a', 'b')) AS rfc_variant,
	   bool_and(abs(extract(epoch FROM v.created_at) * 1000
					- ('x' || lpad(replace(substr(v.id::text, 1, 13), '-', ''), 16, '0'))::bit(64)::bigint)
				< 5000) AS starts_with_its_time,
	   count(DISTINCT substr(v.id::text, 25)) = count(*) AS random_tails_differ
FROM ids JOIN plivo_otp.verifications v ON v.id = ids.vid;
SELECT bool_and(vid > prev_vid) AS codes_in_order, bool_and(mid > prev_mid) AS messages_in_order,
	   bool_and(mid > vid) AS message_after_its_code
FROM (SELECT ids.vid, m.id AS mid, lag(ids.vid) OVER w AS prev_vid, lag(m.id) OVER w AS prev_mid
	  FROM ids JOIN plivo_otp.messages m ON m.verification_id = ids.vid
	  WINDOW w AS (ORDER BY n)) s
WHERE prev_vid IS NOT NULL;

-- The stored values keep their rules (domains, checked at every write): a
-- row the code never writes is refused, whichever column carries it.
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.messages SET dispatch_state = 'lost'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.messages SET channel = 'fax'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.messages SET origin = 'manual'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.messages SET encoding = 'latin1'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.messages SET segments = 0$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.messages SET answer_token_digest = '\x0102'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.verifications SET state = 'done'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.verifications SET code_digest = sha256('x') || '\x00'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.send_counters SET key = '\x00'$$);
