-- phone: numbers are normalised to E.164 or refused with 22023.
SELECT input, s.phone_masked
FROM unnest(ARRAY[
	'+14155550100',
	'+1 (415) 555-0101',
	'0044 7400 123458',
	'  +44.7400.123459  ',
	'+(44) 7400 123460',
	'+4915123456789'
]) AS input,
LATERAL plivo_otp.otp_status(plivo_otp.otp_send(input)) s;

-- Refused: no international prefix, letters, too short or long, bad separators, NULL.
SELECT input, e.state, e.message, e.hint
FROM unnest(ARRAY[
	'4155550100',
	'0155550100',
	'+1415555010a',
	'+1-415-CALL-NOW',
	'+123456',
	'+1234567890123456',
	'+0123456789',
	'+1--415-555-0100',
	'+1 415 555 0100-',
	'',
	'+',
	'+1415555 0100; DROP TABLE x'
]) AS input,
LATERAL test.error_of(format('SELECT plivo_otp.otp_send(%L)', input)) e;
SELECT * FROM test.error_of('SELECT plivo_otp.otp_send(NULL)');

-- The same number in two formats is one number: the second send re-delivers
-- the first's live code.
SELECT plivo_otp.otp_send('+1 415 555 0102') AS first \gset
SELECT plivo_otp.otp_send('001-415-555-0102') AS second \gset
SELECT :'first' = :'second' AS same_verification,
	   (plivo_otp.otp_status(:'first')).state AS state,
	   (SELECT count(*) FROM plivo_otp.messages WHERE verification_id = :'first') AS messages;

-- The stored number is E.164; the status only ever shows it masked.
SELECT phone FROM plivo_otp.verifications WHERE id = :'second';
SELECT phone_masked FROM plivo_otp.otp_status(:'second');
