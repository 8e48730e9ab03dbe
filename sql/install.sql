-- install: what CREATE EXTENSION creates, and that PUBLIC gets none of it.

-- Tables of the schema.
SELECT c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'plivo_otp' AND c.relkind IN ('r', 'v', 'S')
ORDER BY 1;

-- No table, sequence or schema privilege for PUBLIC.
SELECT c.relname, a.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
	 aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
WHERE n.nspname = 'plivo_otp' AND a.grantee = 0;
SELECT has_schema_privilege('public', 'plivo_otp', 'USAGE') AS public_usage;

-- Functions: SECURITY DEFINER, fixed search_path, commented, not executable by PUBLIC.
SELECT p.oid::regprocedure AS function,
	   p.prosecdef, p.proconfig,
	   obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented,
	   has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'plivo_otp'
ORDER BY 1;

-- Every object belongs to the extension, so DROP EXTENSION removes it all.
SELECT count(*) AS objects_outside_extension
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'plivo_otp' AND c.relkind IN ('r', 'S')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
				  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
					AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e');

-- A schema planted in advance makes the install fail instead of being adopted.
DROP EXTENSION plivo_otp;
CREATE SCHEMA plivo_otp;
CREATE EXTENSION plivo_otp;
DROP SCHEMA plivo_otp;
CREATE EXTENSION plivo_otp;
