-- installed_package: run by test/package.sh, first, in the server started
-- from the scratch root where the Debian package was unpacked.  The library
-- that every backend mapped (shared_preload_libraries) and the extension
-- directory must be the scratch root's, not the system's.
SELECT count(*) AS libraries,
	bool_and(path = (SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR') || '/plivo_otp.so') AS from_pkglibdir,
	bool_and(path NOT LIKE '/usr/%') AS not_the_system_copy
FROM (SELECT DISTINCT substring(l FROM '(/\S+)$') AS path
	  FROM regexp_split_to_table(pg_read_file('/proc/self/maps'), E'\n') AS l
	  WHERE l LIKE '%/plivo_otp.so') AS m;
SELECT setting NOT LIKE '/usr/%' AS share_not_the_system_one,
	(pg_stat_file(setting || '/extension/plivo_otp.control')).size > 0 AS has_control
FROM pg_config WHERE name = 'SHAREDIR';
SELECT name, default_version FROM pg_available_extensions WHERE name = 'plivo_otp';
