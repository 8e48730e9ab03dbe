-- signature: every published Plivo signature vector (test/plivo-signature-vectors.json,
-- V2 and V3, valid and invalid) through test.signature_valid().
\set vectors `cat test/plivo-signature-vectors.json`
CREATE TEMP TABLE vectors AS SELECT v FROM jsonb_array_elements(:'vectors'::jsonb) v;
SELECT count(*) AS vectors FROM vectors;

-- Each vector's verdict is the published one.
SELECT (v->>'id')::int AS id, v->>'version' AS version, v->>'method' AS method,
	   (v->>'expect_valid')::boolean AS expected,
	   test.signature_valid(v->>'version', v->>'method', v->>'url',
								 coalesce(v->'params', '{}'), v->>'nonce',
								 v->>'expected_signature', v->>'auth_token') AS verdict
FROM vectors ORDER BY 1;

-- A valid vector fails with another nonce, token, URL or a changed parameter.
SELECT (v->>'id')::int AS id,
	   test.signature_valid(v->>'version', v->>'method', v->>'url', coalesce(v->'params', '{}'),
								 v->>'nonce' || '1', v->>'expected_signature', v->>'auth_token') AS other_nonce,
	   test.signature_valid(v->>'version', v->>'method', v->>'url', coalesce(v->'params', '{}'),
								 v->>'nonce', v->>'expected_signature', v->>'auth_token' || 'x') AS other_token,
	   test.signature_valid(v->>'version', v->>'method', replace(v->>'url', 'https://', 'https://x'),
								 coalesce(v->'params', '{}'), v->>'nonce', v->>'expected_signature',
								 v->>'auth_token') AS other_url,
	   CASE WHEN v->>'version' = 'v3' AND v->'params' <> '{}' THEN
	   test.signature_valid(v->>'version', v->>'method', v->>'url',
								 (SELECT jsonb_object_agg(key, value || 'x') FROM jsonb_each_text(v->'params')),
								 v->>'nonce', v->>'expected_signature', v->>'auth_token') END AS other_params
FROM vectors WHERE (v->>'expect_valid')::boolean ORDER BY 1;

-- An independent V3 implementation (pgcrypto) agrees on a POST callback.
SELECT encode(hmac(convert_to(v->>'url' || '?' ||
		(SELECT string_agg(key || value, '' ORDER BY key COLLATE "C") FROM jsonb_each_text(v->'params'))
		|| '.' || (v->>'nonce'), 'UTF8'), convert_to(v->>'auth_token', 'UTF8'), 'sha256'), 'base64')
	   = v->>'expected_signature' AS pgcrypto_agrees
FROM vectors WHERE v->>'id' = '21';

-- Bad arguments.
SELECT * FROM test.error_of($$SELECT test.signature_valid('v4', 'POST', 'https://a', '{}', '1', 'x', 't')$$);
SELECT * FROM test.error_of($$SELECT test.signature_valid('v3', 'PUT', 'https://a', '{}', '1', 'x', 't')$$);
SELECT * FROM test.error_of($$SELECT test.signature_valid('v3', 'POST', 'https://a', '[]', '1', 'x', 't')$$);
SELECT * FROM test.error_of($$SELECT test.signature_valid('v3', 'POST', 'https://a', '{"a": 1}', '1', 'x', 't')$$);
