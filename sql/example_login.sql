-- example_login: examples/login.sql, the PL/pgSQL login flow, run as a test (psql
-- reads this file from standard input, so \i is relative to the build directory).
\i examples/login.sql
