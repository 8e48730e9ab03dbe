-- upgrade: ALTER EXTENSION plivo_otp UPDATE from 0.1.0 (the first release)
-- keeps pending codes and queued messages, the new objects work, and the
-- upgraded catalog is the same as a fresh install of the default version.

-- Every object of the extension, described by what a user relies on.
CREATE FUNCTION test.extension_catalog() RETURNS SETOF text
LANGUAGE sql AS $$
	SELECT format('relation %s %s acl=%s comment=%s', c.relname, c.relkind, c.relacl,
				  obj_description(c.oid, 'pg_class'))
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname IN ('plivo_otp', 'plivo_otp_monitor')
	UNION ALL
	SELECT format('column %s.%s %s notnull=%s default=%s', c.relname, a.attname,
				  format_type(a.atttypid, a.atttypmod), a.attnotnull,
				  pg_get_expr(d.adbin, d.adrelid))
	FROM pg_attribute a
	JOIN pg_class c ON c.oid = a.attrelid
	JOIN pg_namespace n ON n.oid = c.relnamespace
	LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	WHERE n.nspname IN ('plivo_otp', 'plivo_otp_monitor') AND a.attnum > 0 AND NOT a.attisdropped
	UNION ALL
	SELECT format('index %s', pg_get_indexdef(i.indexrelid))
	FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname IN ('plivo_otp', 'plivo_otp_monitor')
	UNION ALL
	SELECT format('constraint %s of %s %s', co.conname, coalesce(co.contypid::regtype::text, co.conrelid::regclass::text),
				  pg_get_constraintdef(co.oid))
	FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
	WHERE n.nspname IN ('plivo_otp', 'plivo_otp_monitor')
	UNION ALL
	SELECT format('domain %s over %s default=%s notnull=%s', t.oid::regtype, format_type(t.typbasetype, t.typtypmod),
				  t.typdefault, t.typnotnull)
	FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
	WHERE n.nspname IN ('plivo_otp', 'plivo_otp_monitor') AND t.typtype = 'd'
	UNION ALL
	SELECT format('function %s returns %s definer=%s config=%s volatile=%s strict=%s acl=%s comment=%s',
				  p.oid::regprocedure, pg_get_function_result(p.oid), p.prosecdef,
				  p.proconfig, p.provolatile, p.proisstrict, p.proacl,
				  obj_description(p.oid, 'pg_proc'))
	FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	WHERE n.nspname IN ('plivo_otp', 'plivo_otp_monitor')
	UNION ALL
	SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid))
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname IN ('plivo_otp', 'plivo_otp_monitor') AND c.relkind = 'v'
	UNION ALL
	SELECT format('schema %s acl=%s comment=%s', nspname, nspacl, obj_description(oid, 'pg_namespace'))
	FROM pg_namespace WHERE nspname IN ('plivo_otp', 'plivo_otp_monitor')
	UNION ALL
	SELECT format('error code %s %s', code, meaning) FROM plivo_otp.plivo_error_codes
$$;

DROP EXTENSION plivo_otp;
CREATE EXTENSION plivo_otp VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'plivo_otp';

-- A code issued under 0.1.0, its message queued.
SELECT plivo_otp.otp_send('+15005559001') AS vid \gset
-- Another, to be replaced after the update (a 0.1.0 code has no seal to re-deliver).
SELECT plivo_otp.otp_send('+15005559002') AS old_vid \gset
SELECT test.learn_code(:'vid') AS code \gset

-- The SMS template this installation set is carried into plivo_otp.templates;
-- the voice template is the built-in one, so it is not.
SET plivo_otp.sms_template = 'Old {code} template';
-- The tables are not rewritten: their columns become domains of the same
-- representation (a rewrite would hold an exclusive lock on a large history).
SELECT pg_relation_filenode('plivo_otp.verifications') AS v_file,
	   pg_relation_filenode('plivo_otp.messages') AS m_file \gset
ALTER EXTENSION plivo_otp UPDATE;
SELECT pg_relation_filenode('plivo_otp.verifications') = :v_file AS verifications_kept,
	   pg_relation_filenode('plivo_otp.messages') = :m_file AS messages_kept;
-- ... and the rules of the old CHECK constraints hold on the upgraded tables.
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.messages SET dispatch_state = 'lost'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.verifications SET channel = 'fax'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.verifications SET code_digest = '\x00'$$);
SELECT state, message FROM test.error_of($$UPDATE plivo_otp.verifications SET state = 'done'$$);
SELECT extversion FROM pg_extension WHERE extname = 'plivo_otp';
RESET plivo_otp.sms_template;
SELECT purpose, locale, channel, body FROM plivo_otp.templates;

-- The queued message is still queued and sealed; the code still verifies.
SELECT dispatch_state, body IS NOT NULL AS sealed
FROM plivo_otp.messages WHERE verification_id = :'vid';
SELECT plivo_otp.otp_check('+15005559001', :'code');

-- A send to the number of the other 0.1.0 code replaces it: the old code and
-- its queued message are canceled, one code is pending.
SELECT plivo_otp.otp_send('+15005559002') <> :'old_vid' AS replaced;
SELECT state, code_sealed IS NULL AS no_seal FROM plivo_otp.verifications WHERE id = :'old_vid';
SELECT dispatch_state, body IS NULL AS wiped FROM plivo_otp.messages WHERE verification_id = :'old_vid';
SELECT count(*) AS pending FROM plivo_otp.verifications WHERE phone = '+15005559002' AND state = 'pending';
SELECT state FROM plivo_otp.otp_status(:'vid');

-- The objects 0.2.0 adds work.
SELECT sends >= 1 AS sends, approved >= 1 AS approved, since <= now() AS since
FROM plivo_otp.api_stats;

-- The upgraded catalog equals a fresh install's.
CREATE TEMP TABLE upgraded AS SELECT * FROM test.extension_catalog() AS d;
DROP EXTENSION plivo_otp;
CREATE EXTENSION plivo_otp;
SELECT extversion FROM pg_extension WHERE extname = 'plivo_otp';
CREATE TEMP TABLE fresh AS SELECT * FROM test.extension_catalog() AS d;
SELECT 'only after the upgrade' AS side, d FROM (TABLE upgraded EXCEPT TABLE fresh) x
UNION ALL
SELECT 'only in a fresh install', d FROM (TABLE fresh EXCEPT TABLE upgraded) y
ORDER BY 1, 2;
SELECT count(*) > 50 AS described FROM fresh;
