/*-------------------------------------------------------------------------
 *
 * signature_unit.c
 *	  Unit driver for src/signature.c, built without the server.
 *
 * Usage: signature_unit VECTORS.tsv
 *
 * VECTORS.tsv is plivo-signature-vectors.json flattened by
 * vectors_to_tsv.py (run.sh does both).  Every vector is checked: valid
 * ones must verify and sign to expected_signature, invalid ones must be
 * rejected.  Then come the cases the vectors do not cover: form parsing
 * edge cases, the exact signed strings (checked against an HMAC computed
 * here over the string the algorithm should produce), malformed inputs,
 * header lists and very long inputs.
 *
 * Built with -DSIGNATURE_UNIT_WRAP_MALLOC -Wl,--wrap=malloc -Wl,--wrap=realloc
 * (as run.sh does), it also fails each allocation of signature.c in turn
 * and checks that the failure is reported, not mistaken for a verdict;
 * under ASan that also shows that those exits free what they took.
 *
 * Every check counts once; the last line printed is "N passed, N failed"
 * and the exit status is non-zero if anything failed.
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "signature.h"

#define MAX_FIELDS		10
#define MAX_PARAMS		256

static int	n_passed = 0;
static int	n_failed = 0;

static void check(int ok, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
static const char *result_name(PlivoSigResult r);
static int	signature_listed(const char *list, const char *sig);
static void run_vector(char **f, int lineno);
static int	run_vectors(const char *path);
static void reference_sig(const char *token, const char *message,
						  size_t len, char out[PLIVO_OTP_SIG_BUFSIZE]);
static void expect_form(const char *name, const char *data, size_t len,
						int max_params, int expect_n,
						const char *const *expect_kv);
static void test_parse_form(void);
static void expect_v2_message(const char *url, const char *nonce,
							  const char *message);
static void expect_v3_message(const char *method, const char *url,
							  const PlivoParam *params, int nparams,
							  const char *message);
static void test_messages(void);
static void test_malformed(void);
static void test_headers(void);
static void test_long_inputs(void);
static void test_out_of_memory(void);

#ifdef SIGNATURE_UNIT_WRAP_MALLOC
extern void *__real_malloc(size_t size);
extern void *__real_realloc(void *ptr, size_t size);
extern void *__wrap_malloc(size_t size);
extern void *__wrap_realloc(void *ptr, size_t size);
static bool injection_hit(void);
static void inject_failure(long n);

/*
 * Allocations to let through before one fails; -1 lets everything through.
 * Only one allocation fails, so the code under test must unwind from it.
 */
static long alloc_countdown = -1;
static bool alloc_failed = false;

void *
__wrap_malloc(size_t size)
{
	if (alloc_countdown == 0)
	{
		alloc_countdown = -1;
		alloc_failed = true;
		return NULL;
	}
	if (alloc_countdown > 0)
		alloc_countdown--;
	return __real_malloc(size);
}

void *
__wrap_realloc(void *ptr, size_t size)
{
	if (alloc_countdown == 0)
	{
		alloc_countdown = -1;
		alloc_failed = true;
		return NULL;
	}
	if (alloc_countdown > 0)
		alloc_countdown--;
	return __real_realloc(ptr, size);
}

/* Make the n-th allocation from now on fail (0: the next one). */
static void
inject_failure(long n)
{
	alloc_countdown = n;
	alloc_failed = false;
}

/* Did the injected failure happen?  Disarms the injection. */
static bool
injection_hit(void)
{
	bool		hit = alloc_failed;

	alloc_countdown = -1;
	alloc_failed = false;
	return hit;
}
#endif

static const char *test_token = "MY_TEST_AUTH_TOKEN_0123456789";
static const char *test_nonce = "05429567804466091622";

/* Record one check; print the message only when it fails. */
static void
check(int ok, const char *fmt,...)
{
	va_list		ap;

	if (ok)
	{
		n_passed++;
		return;
	}
	n_failed++;
	fputs("FAIL: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
}

static const char *
result_name(PlivoSigResult r)
{
	switch (r)
	{
		case PLIVO_SIG_VALID:
			return "VALID";
		case PLIVO_SIG_MISSING:
			return "MISSING";
		case PLIVO_SIG_MISMATCH:
			return "MISMATCH";
		case PLIVO_SIG_MALFORMED:
			return "MALFORMED";
		case PLIVO_SIG_ERROR:
			return "ERROR";
	}
	return "?";
}

/* Is sig one of the comma-separated entries of list? */
static int
signature_listed(const char *list, const char *sig)
{
	size_t		siglen = strlen(sig);
	const char *p = list;

	for (;;)
	{
		const char *comma = strchr(p, ',');
		size_t		n = comma ? (size_t) (comma - p) : strlen(p);

		if (n == siglen && memcmp(p, sig, n) == 0)
			return 1;
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
}

/*
 * Check one vector: f holds the fields id, version, method, url, nonce,
 * token, expected_signature, expect_valid, nparams, params.
 */
static void
run_vector(char **f, int lineno)
{
	const char *id = f[0];
	int			is_v3 = strcmp(f[1], "v3") == 0;
	const char *method = f[2];
	const char *url = f[3];
	const char *nonce = f[4];
	const char *token = f[5];
	const char *expected = f[6];
	int			expect_valid = strcmp(f[7], "1") == 0;
	int			nexpected = atoi(f[8]);
	PlivoParam	params[MAX_PARAMS];
	char	   *storage = NULL;
	int			n;
	char		sig[PLIVO_OTP_SIG_BUFSIZE];
	int			signed_ok;
	PlivoSigResult r;
	size_t		altlen = strlen(nonce) + 2;
	char	   *altnonce = malloc(altlen);

	if (!is_v3 && strcmp(f[1], "v2") != 0)
	{
		check(0, "line %d: vector %s: unknown version \"%s\"", lineno, id, f[1]);
		free(altnonce);
		return;
	}

	n = plivo_otp_parse_form(f[9], strlen(f[9]), params, MAX_PARAMS, &storage);
	check(n == nexpected, "vector %s: parse_form gave %d params, expected %d",
		  id, n, nexpected);
	if (n < 0)
		n = 0;

	if (is_v3)
	{
		signed_ok = plivo_otp_sign_v3(method, url, params, n, nonce, token, sig);
		r = plivo_otp_check_v3(method, url, params, n, nonce, expected, token);
	}
	else
	{
		signed_ok = plivo_otp_sign_v2(url, nonce, token, sig);
		r = plivo_otp_check_v2(url, nonce, expected, token);
	}
	check(signed_ok, "vector %s: sign failed", id);

	if (expect_valid)
	{
		check(r == PLIVO_SIG_VALID, "vector %s: check gave %s, expected VALID",
			  id, result_name(r));
		check(signed_ok && signature_listed(expected, sig),
			  "vector %s: computed %s, expected %s", id, sig, expected);

		/* the same request with another nonce must be rejected */
		snprintf(altnonce, altlen, "%s0", nonce);
		if (is_v3)
			r = plivo_otp_check_v3(method, url, params, n, altnonce, expected,
								   token);
		else
			r = plivo_otp_check_v2(url, altnonce, expected, token);
		check(r == PLIVO_SIG_MISMATCH,
			  "vector %s: altered nonce gave %s, expected MISMATCH",
			  id, result_name(r));
	}
	else
	{
		check(r == PLIVO_SIG_MISMATCH,
			  "vector %s: check gave %s, expected MISMATCH", id, result_name(r));
		check(signed_ok && !signature_listed(expected, sig),
			  "vector %s: invalid vector's signature was reproduced", id);
	}

	free(altnonce);
	free(storage);
}

/* Read and check every vector of a file; returns the number checked. */
static int
run_vectors(const char *path)
{
	FILE	   *fp = fopen(path, "r");
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		len;
	int			lineno = 0;
	int			count = 0;

	if (fp == NULL)
	{
		perror(path);
		check(0, "cannot open vectors file %s", path);
		return 0;
	}
	while ((len = getline(&line, &cap, fp)) != -1)
	{
		char	   *f[MAX_FIELDS];
		int			nf = 0;
		char	   *p = line;

		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		if ((size_t) len != strlen(line))
		{
			check(0, "line %d: NUL byte in the vectors file", lineno);
			continue;
		}
		for (;;)
		{
			char	   *tab = strchr(p, '\t');

			if (nf == MAX_FIELDS)
				break;
			f[nf++] = p;
			if (tab == NULL)
			{
				p = NULL;
				break;
			}
			*tab = '\0';
			p = tab + 1;
		}
		if (nf != MAX_FIELDS || p != NULL)
		{
			check(0, "line %d: expected %d tab-separated fields", lineno,
				  MAX_FIELDS);
			continue;
		}
		run_vector(f, lineno);
		count++;
	}
	free(line);
	fclose(fp);
	check(count > 0, "no vectors in %s", path);
	return count;
}

/* Base64(HMAC-SHA256(token, message)) computed here, independently. */
static void
reference_sig(const char *token, const char *message, size_t len,
			  char out[PLIVO_OTP_SIG_BUFSIZE])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	out[0] = '\0';
	if (HMAC(EVP_sha256(), token, (int) strlen(token),
			 (const unsigned char *) message, len, md, &mdlen) != NULL)
		EVP_EncodeBlock((unsigned char *) out, md, (int) mdlen);
}

/*
 * Parse data and compare with the expected count and, on success, the
 * expected keys and values (expect_kv alternates key, value).
 */
static void
expect_form(const char *name, const char *data, size_t len, int max_params,
			int expect_n, const char *const *expect_kv)
{
	PlivoParam	params[16];
	char	   *storage = (char *) "not touched";
	int			n;

	n = plivo_otp_parse_form(data, len, params, max_params, &storage);
	check(n == expect_n, "parse_form %s: returned %d, expected %d",
		  name, n, expect_n);
	if (n <= 0)
		check(storage == NULL, "parse_form %s: storage not NULL", name);
	for (int i = 0; i < n && n == expect_n; i++)
	{
		check(strcmp(params[i].key, expect_kv[2 * i]) == 0 &&
			  strcmp(params[i].value, expect_kv[2 * i + 1]) == 0,
			  "parse_form %s: pair %d is \"%s\"=\"%s\", expected \"%s\"=\"%s\"",
			  name, i, params[i].key, params[i].value,
			  expect_kv[2 * i], expect_kv[2 * i + 1]);
	}
	if (n > 0)
		free(storage);
}

static void
test_parse_form(void)
{
	static const char *const simple[] = {"a", "1", "b", "2"};
	static const char *const plus[] = {"a b", "c d", "x", "1+1 "};
	static const char *const empty[] = {"a", "", "b", "", "", "v", "", ""};
	static const char *const repeated[] = {"k", "2", "k", "1", "k", ""};
	static const char *const escapes[] = {"AB", "\xe2\x82\xac", "%", "&=+"};
	static const char *const eqs[] = {"a", "b=c"};
	static const char *const rawbytes[] = {"T", "C\xc3\xb3" "digo 1"};
	char		nul_raw[] = "a=1\0b=2";
	PlivoParam	one[1];
	char	   *storage = NULL;

	expect_form("simple", "a=1&b=2", 7, 16, 2, simple);
	expect_form("plus", "a+b=c+d&x=1%2B1+", 16, 16, 2, plus);
	expect_form("empty values", "a=&b&=v&=", 9, 16, 4, empty);
	expect_form("repeated keys", "k=2&k=1&k=", 10, 16, 3, repeated);
	expect_form("escapes", "%41%42=%e2%82%AC&%25=%26%3D%2b", 30, 16, 2,
				escapes);
	expect_form("second =", "a=b=c", 5, 16, 1, eqs);
	expect_form("raw UTF-8", "T=C\xc3\xb3" "digo+1", 11, 16, 1, rawbytes);
	expect_form("empty pieces", "&&a=1&&b=2&", 11, 16, 2, simple);
	expect_form("only separators", "&&&", 3, 16, 0, NULL);
	expect_form("empty input", "", 0, 16, 0, NULL);
	expect_form("length limits input", "a=1&b=2&c=3", 7, 16, 2, simple);
	expect_form("exactly max", "a=1&b=2", 7, 2, 2, simple);
	expect_form("over max", "a=1&b=2", 7, 1, -1, NULL);
	expect_form("max 0", "a=1", 3, 0, -1, NULL);
	expect_form("bad escape %zz", "a=%zz", 5, 16, -1, NULL);
	expect_form("bad escape %4", "a=%4", 4, 16, -1, NULL);
	expect_form("bad escape %", "a=%", 3, 16, -1, NULL);
	expect_form("bad escape in key", "%g1=1", 5, 16, -1, NULL);
	expect_form("bad escape after good pair", "a=1&b=%", 7, 16, -1, NULL);
	expect_form("decoded NUL", "a=%00", 5, 16, -1, NULL);
	expect_form("raw NUL", nul_raw, 7, 16, -1, NULL);
	expect_form("negative max", "a=1", 3, -1, -1, NULL);

	check(plivo_otp_parse_form("a=1", 3, one, 1, NULL) == -1,
		  "parse_form: NULL storage accepted");
	check(plivo_otp_parse_form(NULL, 3, one, 1, &storage) == -1,
		  "parse_form: NULL data accepted");
	check(plivo_otp_parse_form(NULL, 0, one, 1, &storage) == 0,
		  "parse_form: NULL empty data rejected");
	check(plivo_otp_parse_form("a=1", 3, NULL, 1, &storage) == -1,
		  "parse_form: NULL params accepted");
}

/* sign_v2(url, nonce) must equal the HMAC of message. */
static void
expect_v2_message(const char *url, const char *nonce, const char *message)
{
	char		sig[PLIVO_OTP_SIG_BUFSIZE];
	char		ref[PLIVO_OTP_SIG_BUFSIZE];

	reference_sig(test_token, message, strlen(message), ref);
	check(plivo_otp_sign_v2(url, nonce, test_token, sig) &&
		  strcmp(sig, ref) == 0,
		  "v2 %s: does not sign \"%s\"", url, message);
}

/* sign_v3 must equal the HMAC of message (which ends with the nonce). */
static void
expect_v3_message(const char *method, const char *url,
				  const PlivoParam *params, int nparams, const char *message)
{
	char		sig[PLIVO_OTP_SIG_BUFSIZE];
	char		ref[PLIVO_OTP_SIG_BUFSIZE];

	reference_sig(test_token, message, strlen(message), ref);
	check(plivo_otp_sign_v3(method, url, params, nparams, test_nonce,
							test_token, sig) &&
		  strcmp(sig, ref) == 0,
		  "v3 %s %s: does not sign \"%s\"", method, url, message);
}

/* The signed strings, byte for byte. */
static void
test_messages(void)
{
	static const PlivoParam mixed[] = {{"a", "x"}, {"B", "y"}};
	static const PlivoParam k1[] = {{"k", "1"}};
	static const PlivoParam multi[] = {{"a", "2"}, {"a", "1"}, {"a", "10"}};
	static const PlivoParam blank[] = {{"To", "1"}, {"PowerpackUUID", ""}};
	static const PlivoParam order[] = {
		{"\xc3\xa9", "4"}, {"b", "3"}, {"_", "2"}, {"B", "1"}
	};
	static const PlivoParam a1[] = {{"a", "1"}};
	static const PlivoParam sms[] = {
		{"Status", "sent"},
		{"MessageUUID", "0936ec98-7c4c-11e5-9b2c-22000ac01b8a"}
	};
	char		sig1[PLIVO_OTP_SIG_BUFSIZE];
	char		sig2[PLIVO_OTP_SIG_BUFSIZE];
	char		sig3[PLIVO_OTP_SIG_BUFSIZE];

	/* V2: query and fragment dropped, scheme folded, port and slash kept */
	expect_v2_message("HTTPS://Example.com:8443/p/?x=1#frag", "n",
					  "https://Example.com:8443/p/n");
	expect_v2_message("https://h", "123", "https://h123");
	expect_v2_message("https://h?x#y", "1", "https://h1");
	expect_v2_message("https://[::1]:8443/a%20b", "1",
					  "https://[::1]:8443/a%20b1");
	expect_v2_message("https://u:p@h/x", "", "https://u:p@h/x");

	/* V3 POST: URL pairs sorted, then ".", then params without separators */
	expect_v3_message("POST", "https://e.com/h?b=2&a=1#frag", mixed, 2,
					  "https://e.com/h?a=1&b=2.Byax.05429567804466091622");
	/* GET: URL pairs and params merged, duplicates kept, sorted by value */
	expect_v3_message("GET", "https://e.com/h?k=2", k1, 1,
					  "https://e.com/h?k=1&k=2.05429567804466091622");
	/* empty query: no '?' */
	expect_v3_message("GET", "https://e.com/h?", NULL, 0,
					  "https://e.com/h.05429567804466091622");
	expect_v3_message("POST", "https://e.com/h?#x", NULL, 0,
					  "https://e.com/h.05429567804466091622");
	/* query decoded: %20 and + are spaces; blank values and bare keys */
	expect_v3_message("GET", "https://e.com/h?q=a%20b+c&e=&&f", NULL, 0,
					  "https://e.com/h?e=&f=&q=a b c.05429567804466091622");
	expect_v3_message("POST", "https://e.com/h?q=%2B%26", a1, 1,
					  "https://e.com/h?q=+&.a1.05429567804466091622");
	/* values of one key sorted as strings */
	expect_v3_message("POST", "https://e.com/h", multi, 3,
					  "https://e.com/h?a1a10a2.05429567804466091622");
	/* an empty value leaves the key alone */
	expect_v3_message("POST", "https://e.com/h", blank, 2,
					  "https://e.com/h?PowerpackUUIDTo1.05429567804466091622");
	/* raw byte order: upper case, '_', lower case, then non-ASCII */
	expect_v3_message("POST", "https://e.com/h", order, 4,
					  "https://e.com/h?B1_2b3\xc3\xa9" "4.05429567804466091622");
	expect_v3_message("GET", "https://e.com/h", order, 4,
					  "https://e.com/h?B=1&_=2&b=3&\xc3\xa9=4.05429567804466091622");
	/* '?' inside the fragment is not a query */
	expect_v3_message("POST", "https://e.com/h#x?y=1", NULL, 0,
					  "https://e.com/h.05429567804466091622");
	/* no path; port kept */
	expect_v3_message("GET", "https://e.com?a=1", NULL, 0,
					  "https://e.com?a=1.05429567804466091622");
	expect_v3_message("POST", "HTTP://e.com:8080", a1, 1,
					  "http://e.com:8080?a1.05429567804466091622");
	/* POST, no params, query only */
	expect_v3_message("POST", "https://e.com/h?b=2&a=1", NULL, 0,
					  "https://e.com/h?a=1&b=2.05429567804466091622");

	/* GET: full request URL == configured URL + Plivo's params (vector 23) */
	check(plivo_otp_sign_v3("GET",
							"https://example.com/plivo/sms-status?tenant=acme"
							"&Status=sent&MessageUUID=0936ec98-7c4c-11e5-9b2c-22000ac01b8a",
							NULL, 0, "11111111111111111111", test_token, sig1) &&
		  plivo_otp_sign_v3("GET",
							"https://example.com/plivo/sms-status?tenant=acme",
							sms, 2, "11111111111111111111", test_token, sig2) &&
		  strcmp(sig1, sig2) == 0 &&
		  strcmp(sig1, "oruQj/Odz799+L+i5Ikf8Pe0q9divc+2+XJG9nf9l+k=") == 0,
		  "v3 GET: full request URL and configured URL + params differ");

	/* POST: the order of params does not matter */
	{
		PlivoParam	rev[4];

		for (int i = 0; i < 4; i++)
			rev[i] = order[3 - i];
		check(plivo_otp_sign_v3("POST", "https://e.com/h", order, 4, "1",
								test_token, sig1) &&
			  plivo_otp_sign_v3("POST", "https://e.com/h", rev, 4, "1",
								test_token, sig2) &&
			  strcmp(sig1, sig2) == 0,
			  "v3 POST: param order changes the signature");
	}

	/* GET and POST of the same inputs differ; so do V2 and V3 */
	check(plivo_otp_sign_v3("GET", "https://e.com/h", a1, 1, "1", test_token,
							sig1) &&
		  plivo_otp_sign_v3("POST", "https://e.com/h", a1, 1, "1", test_token,
							sig2) &&
		  plivo_otp_sign_v2("https://e.com/h", "1", test_token, sig3) &&
		  strcmp(sig1, sig2) != 0 && strcmp(sig1, sig3) != 0 &&
		  strcmp(sig2, sig3) != 0,
		  "GET, POST and V2 signatures collide");
}

/* Inputs that must be refused. */
static void
test_malformed(void)
{
	static const char *const bad_urls[] = {
		"", "answer.url", "https://", "https:///path", "://h", "1ab://h",
		"https:/h", "https:h", "https://h/ p", "https://h/\tp", "https:// h",
		"https://h/p\x7f", " https://h", "https://h\n", "https://[::1/p",
		"https://::1]/p", "ht_tp://h", "-http://h"
	};
	static const char *const bad_queries[] = {
		"https://e.com/h?a=%zz", "https://e.com/h?a=%0", "https://e.com/h?a=%00",
		"https://e.com/h?%=1", "https://e.com/h?a=1&b=%#x"
	};
	static const char *const bad_methods[] = {"PUT", "get", "Post", "", "GET "};
	static const PlivoParam a1[] = {{"a", "1"}};
	static const PlivoParam nullkey[] = {{NULL, "1"}};
	static const PlivoParam nullvalue[] = {{"a", NULL}};
	char		sig[PLIVO_OTP_SIG_BUFSIZE];
	size_t		i;

	for (i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++)
	{
		strcpy(sig, "x");
		check(!plivo_otp_sign_v2(bad_urls[i], "1", test_token, sig) &&
			  sig[0] == '\0',
			  "v2: malformed URL \"%s\" accepted", bad_urls[i]);
		check(!plivo_otp_sign_v3("POST", bad_urls[i], a1, 1, "1", test_token,
								 sig),
			  "v3: malformed URL \"%s\" accepted", bad_urls[i]);
		check(plivo_otp_check_v2(bad_urls[i], "1",
								 "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=",
								 test_token) == PLIVO_SIG_MALFORMED,
			  "check_v2: malformed URL \"%s\" not MALFORMED", bad_urls[i]);
	}
	for (i = 0; i < sizeof(bad_queries) / sizeof(bad_queries[0]); i++)
	{
		check(!plivo_otp_sign_v3("GET", bad_queries[i], NULL, 0, "1",
								 test_token, sig),
			  "v3: bad query \"%s\" accepted", bad_queries[i]);
		/* V2 does not look at the query */
		check(plivo_otp_sign_v2(bad_queries[i], "1", test_token, sig),
			  "v2: URL \"%s\" refused for its query", bad_queries[i]);
	}
	for (i = 0; i < sizeof(bad_methods) / sizeof(bad_methods[0]); i++)
		check(!plivo_otp_sign_v3(bad_methods[i], "https://e.com/h", a1, 1,
								 "1", test_token, sig),
			  "v3: method \"%s\" accepted", bad_methods[i]);

	check(!plivo_otp_sign_v3(NULL, "https://e.com/h", a1, 1, "1", test_token,
							 sig), "v3: NULL method accepted");
	check(!plivo_otp_sign_v3("POST", NULL, a1, 1, "1", test_token, sig),
		  "v3: NULL url accepted");
	check(!plivo_otp_sign_v3("POST", "https://e.com/h", a1, -1, "1",
							 test_token, sig), "v3: nparams -1 accepted");
	check(!plivo_otp_sign_v3("POST", "https://e.com/h", NULL, 1, "1",
							 test_token, sig), "v3: NULL params accepted");
	check(!plivo_otp_sign_v3("POST", "https://e.com/h", nullkey, 1, "1",
							 test_token, sig), "v3: NULL key accepted");
	check(!plivo_otp_sign_v3("POST", "https://e.com/h", nullvalue, 1, "1",
							 test_token, sig), "v3: NULL value accepted");
	check(!plivo_otp_sign_v3("POST", "https://e.com/h", a1, 1, NULL,
							 test_token, sig), "v3: NULL nonce accepted");
	check(!plivo_otp_sign_v3("POST", "https://e.com/h", a1, 1, "1", NULL,
							 sig), "v3: NULL token accepted");
	check(!plivo_otp_sign_v3("POST", "https://e.com/h", a1, 1, "1", "", sig),
		  "v3: empty token accepted");
	check(!plivo_otp_sign_v2("https://e.com/h", NULL, test_token, sig),
		  "v2: NULL nonce accepted");
	check(!plivo_otp_sign_v2("https://e.com/h", "1", NULL, sig),
		  "v2: NULL token accepted");
	check(!plivo_otp_sign_v2("https://e.com/h", "1", "", sig),
		  "v2: empty token accepted");
	check(!plivo_otp_sign_v2(NULL, "1", test_token, sig),
		  "v2: NULL url accepted");
	check(plivo_otp_sign_v2("https://[::1]:8443/h", "1", test_token, sig),
		  "v2: IPv6 host refused");
}

/* Header lists and the order in which results are decided. */
static void
test_headers(void)
{
	const char *url = "https://answer.url";
	const char *good = "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=";
	const char *token = "my_auth_token";
	static const PlivoParam a1[] = {{"a", "1"}};
	char		v3sig[PLIVO_OTP_SIG_BUFSIZE];
	char		header[256];
	PlivoSigResult r;

	static const struct
	{
		const char *header;
		PlivoSigResult expect;
	}			cases[] = {
		{NULL, PLIVO_SIG_MISSING},
		{"", PLIVO_SIG_MISSING},
		{" , ,\t", PLIVO_SIG_MISSING},
		{"garbage", PLIVO_SIG_MISMATCH},
		{"ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=", PLIVO_SIG_VALID},
		{"  ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=\t", PLIVO_SIG_VALID},
		{"x, ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc= ,y", PLIVO_SIG_VALID},
		{",,ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=,,", PLIVO_SIG_VALID},
		{"ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXd=", PLIVO_SIG_MISMATCH},
		{"ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc", PLIVO_SIG_MISMATCH},
		{"ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc==", PLIVO_SIG_MISMATCH},
		{"EHV3IKHLYSWBXC1SY8INM0QGOQYDYSHWUOKJSX7FSXC=", PLIVO_SIG_MISMATCH},
		{"ehV3IKhLysWBxC1sy8I Nm0qGoQYdYsHwuoKjsX7FsXc=", PLIVO_SIG_MISMATCH},
		{"ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=;", PLIVO_SIG_MISMATCH},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		r = plivo_otp_check_v2(url, "12345", cases[i].header, token);
		check(r == cases[i].expect, "check_v2 header \"%s\": %s, expected %s",
			  cases[i].header ? cases[i].header : "(null)",
			  result_name(r), result_name(cases[i].expect));
	}

	/* a missing header wins over everything else */
	check(plivo_otp_check_v2("not a url", NULL, NULL, "") == PLIVO_SIG_MISSING,
		  "check_v2: missing header not reported first");
	check(plivo_otp_check_v3("PUT", "x", NULL, -1, NULL, " ", NULL) ==
		  PLIVO_SIG_MISSING, "check_v3: missing header not reported first");
	/* then inputs that cannot be processed */
	check(plivo_otp_check_v2(url, NULL, good, token) == PLIVO_SIG_MALFORMED,
		  "check_v2: NULL nonce not MALFORMED");
	check(plivo_otp_check_v2(url, "12345", good, "") == PLIVO_SIG_MALFORMED,
		  "check_v2: empty token not MALFORMED");
	check(plivo_otp_check_v2(url, "12345", good, NULL) == PLIVO_SIG_MALFORMED,
		  "check_v2: NULL token not MALFORMED");
	check(plivo_otp_check_v3("PUT", url, a1, 1, "1", good, token) ==
		  PLIVO_SIG_MALFORMED, "check_v3: bad method not MALFORMED");
	check(plivo_otp_check_v3("GET", "https://e.com/?a=%", a1, 1, "1", good,
							 token) == PLIVO_SIG_MALFORMED,
		  "check_v3: bad URL query not MALFORMED");

	/* V3 round trip, alone and in a list */
	check(plivo_otp_sign_v3("POST", url, a1, 1, "1", token, v3sig),
		  "sign_v3 round trip failed");
	check(plivo_otp_check_v3("POST", url, a1, 1, "1", v3sig, token) ==
		  PLIVO_SIG_VALID, "check_v3: own signature refused");
	snprintf(header, sizeof(header), "%s, %s", good, v3sig);
	check(plivo_otp_check_v3("POST", url, a1, 1, "1", header, token) ==
		  PLIVO_SIG_VALID, "check_v3: own signature refused in a list");
	check(plivo_otp_check_v3("GET", url, a1, 1, "1", header, token) ==
		  PLIVO_SIG_MISMATCH, "check_v3: POST signature accepted for GET");
	check(plivo_otp_check_v3("POST", url, a1, 1, "1", header, "other") ==
		  PLIVO_SIG_MISMATCH, "check_v3: accepted under another token");
	/* a V2 signature is no V3 signature */
	check(plivo_otp_check_v3("POST", url, NULL, 0, "12345", good, token) ==
		  PLIVO_SIG_MISMATCH, "check_v3: V2 signature accepted");
}

/* Large inputs: no overflow, exact results, limits enforced. */
static void
test_long_inputs(void)
{
	const int	nparams = 20000;
	const size_t pathlen = 1000000;
	size_t		urlcap = pathlen + 64;
	char	   *url = malloc(urlcap);
	PlivoParam *params = calloc((size_t) nparams, sizeof(PlivoParam));
	char	   *names = malloc((size_t) nparams * 8);
	size_t		msgcap = pathlen + (size_t) nparams * 16 + 64;
	char	   *message = malloc(msgcap);
	size_t		formcap = (size_t) nparams * 16 + 1;
	char	   *form = malloc(formcap);
	size_t		headercap = 3000000;
	char	   *header = malloc(headercap);
	PlivoParam *parsed = calloc((size_t) nparams, sizeof(PlivoParam));
	char	   *storage = NULL;
	char		sig[PLIVO_OTP_SIG_BUFSIZE];
	char		ref[PLIVO_OTP_SIG_BUFSIZE];
	size_t		len;
	size_t		pos;
	int			n;

	if (!url || !params || !names || !message || !form || !header || !parsed)
	{
		check(0, "long inputs: out of memory in the driver");
		goto done;
	}

	/* a 1 MB path */
	len = (size_t) snprintf(url, urlcap, "https://e.com/");
	memset(url + len, 'p', pathlen);
	url[len + pathlen] = '\0';

	/* params named in descending order, so sorting has work to do */
	for (int i = 0; i < nparams; i++)
	{
		snprintf(names + 8 * i, 8, "k%05d", nparams - 1 - i);
		params[i].key = names + 8 * i;
		params[i].value = "v";
	}
	pos = (size_t) snprintf(message, msgcap, "%s?", url);
	for (int i = 0; i < nparams; i++)
		pos += (size_t) snprintf(message + pos, msgcap - pos, "%sk%05d=v",
								 i > 0 ? "&" : "", i);
	pos += (size_t) snprintf(message + pos, msgcap - pos, ".1");
	reference_sig(test_token, message, pos, ref);
	check(plivo_otp_sign_v3("GET", url, params, nparams, "1", test_token, sig)
		  && strcmp(sig, ref) == 0, "long GET: wrong signature");

	/* the same pairs as the URL's own query */
	pos = strlen(url);
	url = realloc(url, pos + (size_t) nparams * 16 + 2);
	if (url == NULL)
	{
		check(0, "long inputs: out of memory in the driver");
		goto done;
	}
	url[pos++] = '?';
	for (int i = 0; i < nparams; i++)
		pos += (size_t) sprintf(url + pos, "%sk%05d=v", i > 0 ? "&" : "",
								nparams - 1 - i);
	check(plivo_otp_sign_v3("GET", url, NULL, 0, "1", test_token, sig) &&
		  strcmp(sig, ref) == 0, "long GET query: wrong signature");

	/* a header of 1 MB of junk entries, then the right one */
	pos = 0;
	while (pos < 1000000)
		pos += (size_t) snprintf(header + pos, headercap - pos,
								 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,");
	snprintf(header + pos, headercap - pos, " %s ", ref);
	check(plivo_otp_check_v3("GET", url, NULL, 0, "1", header, test_token) ==
		  PLIVO_SIG_VALID, "long header: valid entry not found");
	header[pos] = '\0';
	check(plivo_otp_check_v3("GET", url, NULL, 0, "1", header, test_token) ==
		  PLIVO_SIG_MISMATCH, "long header: junk accepted");

	/* a form body of nparams pairs: exactly at the limit, then over it */
	pos = 0;
	for (int i = 0; i < nparams; i++)
		pos += (size_t) snprintf(form + pos, formcap - pos, "%sk%05d=v%%2B",
								 i > 0 ? "&" : "", i);
	n = plivo_otp_parse_form(form, pos, parsed, nparams, &storage);
	check(n == nparams && strcmp(parsed[nparams - 1].key, "k19999") == 0 &&
		  strcmp(parsed[nparams - 1].value, "v+") == 0,
		  "long form: parse_form returned %d", n);
	free(storage);
	storage = NULL;
	n = plivo_otp_parse_form(form, pos, parsed, nparams - 1, &storage);
	check(n == -1 && storage == NULL, "long form: limit not enforced (%d)", n);

done:
	free(url);
	free(params);
	free(names);
	free(message);
	free(form);
	free(header);
	free(parsed);
}

/*
 * Fail each allocation of sign_v3, check_v3, sign_v2 and parse_form in turn,
 * until a call makes fewer allocations than the position that would fail.
 */
static void
test_out_of_memory(void)
{
#ifdef SIGNATURE_UNIT_WRAP_MALLOC
	static const PlivoParam params[] = {{"b", "2"}, {"a", "1"}, {"a", "0"}};
	char		url[1200];
	char		sig[PLIVO_OTP_SIG_BUFSIZE];
	char		ref[PLIVO_OTP_SIG_BUFSIZE];
	const char *form = "a=1&b=%2B&c";
	PlivoParam	parsed[8];
	char	   *storage;
	long		n;
	bool		ok;
	PlivoSigResult r;
	int			count;

	/* a long path makes the message buffer grow several times */
	strcpy(url, "https://e.com/");
	memset(url + 14, 'p', 1000);
	strcpy(url + 1014, "?z=1&y=%20");
	check(plivo_otp_sign_v3("POST", url, params, 3, "1", test_token, ref),
		  "oom: reference signature failed");

	for (n = 0;; n++)
	{
		strcpy(sig, "x");
		inject_failure(n);
		ok = plivo_otp_sign_v3("POST", url, params, 3, "1", test_token, sig);
		if (!injection_hit())
		{
			check(ok && strcmp(sig, ref) == 0 && n >= 4,
				  "oom sign_v3: wrong result after %ld allocations", n);
			break;
		}
		check(!ok && sig[0] == '\0',
			  "oom sign_v3: allocation %ld failed unnoticed", n);
	}
	for (n = 0;; n++)
	{
		inject_failure(n);
		r = plivo_otp_check_v3("POST", url, params, 3, "1", ref, test_token);
		if (!injection_hit())
		{
			check(r == PLIVO_SIG_VALID, "oom check_v3: %s after %ld allocations",
				  result_name(r), n);
			break;
		}
		check(r == PLIVO_SIG_ERROR, "oom check_v3: allocation %ld gave %s",
			  n, result_name(r));
	}
	for (n = 0;; n++)
	{
		inject_failure(n);
		ok = plivo_otp_sign_v2(url, "1", test_token, sig);
		if (!injection_hit())
		{
			check(ok, "oom sign_v2: failed after %ld allocations", n);
			break;
		}
		check(!ok, "oom sign_v2: allocation %ld failed unnoticed", n);
		inject_failure(n);
		r = plivo_otp_check_v2(url, "1", "x", test_token);
		check(injection_hit() && r == PLIVO_SIG_ERROR,
			  "oom check_v2: allocation %ld gave %s", n, result_name(r));
	}

	inject_failure(0);
	storage = (char *) "not touched";
	count = plivo_otp_parse_form(form, strlen(form), parsed, 8, &storage);
	check(injection_hit() && count == -2 && storage == NULL,
		  "oom parse_form: returned %d", count);
	count = plivo_otp_parse_form(form, strlen(form), parsed, 8, &storage);
	check(count == 3, "parse_form after oom: returned %d", count);
	free(storage);
#else
	printf("allocation failures not tested (build without --wrap=malloc)\n");
#endif
}

int
main(int argc, char **argv)
{
	int			nvectors;

	if (argc != 2)
	{
		fprintf(stderr, "usage: %s VECTORS.tsv\n"
				"  (make VECTORS.tsv with vectors_to_tsv.py, or use run.sh)\n",
				argv[0]);
		return 2;
	}

	nvectors = run_vectors(argv[1]);
	printf("vectors: %d checked\n", nvectors);
	test_parse_form();
	test_messages();
	test_malformed();
	test_headers();
	test_long_inputs();
	test_out_of_memory();

	printf("%d passed, %d failed\n", n_passed, n_failed);
	return n_failed == 0 ? 0 : 1;
}
