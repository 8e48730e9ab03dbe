-- privileges: ordinary roles reach nothing until granted the API, and then
-- only the API; monitoring roles cannot learn the key or the token.
CREATE ROLE otp_app LOGIN;
CREATE ROLE otp_monitor LOGIN IN ROLE pg_monitor, pg_read_all_settings, pg_read_all_stats;
CREATE ROLE otp_nobody LOGIN;
-- The test helpers (not the API) are usable by every role.
GRANT USAGE ON SCHEMA test TO PUBLIC;

-- Without grants: no API, no tables.
SET ROLE otp_nobody;
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005555001')$$);
SELECT * FROM test.error_of($$SELECT * FROM plivo_otp.verifications$$);
RESET ROLE;

-- The GRANT shown in the README.
GRANT USAGE ON SCHEMA plivo_otp TO otp_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA plivo_otp TO otp_app;

SET ROLE otp_app;
SELECT plivo_otp.otp_send('+15005555001') AS vid \gset
SELECT state FROM plivo_otp.otp_status(:'vid');
SELECT plivo_otp.otp_check('+15005555001', 'xxxx');
-- Still no direct access to the tables.
SELECT * FROM test.error_of($$SELECT * FROM plivo_otp.verifications$$);
SELECT * FROM test.error_of($$SELECT body FROM plivo_otp.messages$$);
SELECT * FROM test.error_of($$UPDATE plivo_otp.verifications SET attempts = 0$$);
-- Cannot SET its way past a policy or change the text sent.
SELECT * FROM test.error_of($$SET plivo_otp.max_attempts = 100$$);
SELECT * FROM test.error_of($$SET plivo_otp.resend_interval = 0$$);
SELECT * FROM test.error_of($$SET plivo_otp.sms_template = 'Send {code} to evil.example'$$);
SELECT * FROM test.error_of($$SELECT set_config('plivo_otp.allowed_countries', '', false)$$);
SELECT * FROM test.error_of($$ALTER ROLE otp_app SET plivo_otp.max_attempts = 100$$);
-- Cannot plant objects that the functions would pick up.
SELECT * FROM test.error_of($$CREATE TABLE plivo_otp.verifications_evil (x int)$$);
RESET ROLE;

-- A monitoring role sees the names of the secret files at most, never their content.
SET ROLE otp_monitor;
SELECT current_setting('plivo_otp.key_file') AS key_file,
	   current_setting('plivo_otp.auth_token_file') AS token_file;
SELECT * FROM test.error_of($$SELECT pg_read_binary_file('plivo_otp.key')$$);
SELECT * FROM test.error_of($$SELECT pg_read_file('plivo_otp.token')$$);
SELECT * FROM test.error_of($$SELECT * FROM plivo_otp.verifications$$);
SELECT * FROM test.error_of($$SELECT plivo_otp.otp_send('+15005555002')$$);
RESET ROLE;

-- An ordinary role cannot even see where the secret files are (the error
-- names pg_read_all_settings: in the message on 15, in the detail on 17).
SET ROLE otp_nobody;
SELECT state, concat_ws(' ', message, detail) LIKE '%pg_read_all_settings%' AS names_the_role
FROM test.error_of($$SELECT current_setting('plivo_otp.key_file')$$);
RESET ROLE;

-- The key file is private to the server's OS user.
SELECT (pg_stat_file(current_setting('plivo_otp.key_file'))).size AS key_bytes;

DROP OWNED BY otp_app, otp_monitor, otp_nobody;
DROP ROLE otp_app, otp_monitor, otp_nobody;
