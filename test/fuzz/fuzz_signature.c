/*-------------------------------------------------------------------------
 *
 * fuzz_signature.c
 *	  libFuzzer target for src/signature.c.
 *
 * An input is up to five lines followed by a body:
 *
 *		method \n url \n nonce \n token \n header \n body
 *
 * A field that the input does not reach is passed as NULL.  The body goes
 * through plivo_otp_parse_form, and its pairs, with the other fields, through
 * the V2 and V3 sign and check functions.  Besides the sanitizers, the
 * target traps when an invariant breaks:
 *	- parse_form returns -2..max, storage NULL exactly when nothing is
 *	  returned, strings no longer than the body, and the limit is enforced;
 *	- a signature that could be computed is 44 characters and checks VALID,
 *	  alone and after junk in a list; one that could not leaves out empty;
 *	- V2 ignores the query and fragment;
 *	- GET: url + "?" + body without params signs like url with the body's
 *	  pairs as params.
 *
 * Built by run.sh with clang -fsanitize=fuzzer,address,undefined.
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "signature.h"

#define FUZZ_MAX_PARAMS 64
#define FUZZ_NFIELDS	5

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dup_bytes(const uint8_t *data, size_t len);
static char *concat3(const char *a, const char *b, const char *c);
static void require(bool ok);
static bool result_in_range(PlivoSigResult r);
static void fuzz_parse_form(const char *body, size_t len, PlivoParam *params,
							int *nparams, char **storage);
static void fuzz_v2(const char *url, const char *nonce, const char *token,
					const char *header);
static void fuzz_v3(const char *method, const char *url,
					const PlivoParam *params, int nparams, const char *nonce,
					const char *token, const char *header);
static void fuzz_get_equivalence(const char *url, const char *body,
								 size_t bodylen, const PlivoParam *params,
								 int nparams, const char *nonce,
								 const char *token);

/* A NUL-terminated copy of len bytes (truncated at any NUL inside). */
static char *
dup_bytes(const uint8_t *data, size_t len)
{
	char	   *s = malloc(len + 1);

	if (s == NULL)
		abort();
	if (len > 0)
		memcpy(s, data, len);
	s[len] = '\0';
	return s;
}

static char *
concat3(const char *a, const char *b, const char *c)
{
	size_t		la = strlen(a);
	size_t		lb = strlen(b);
	size_t		lc = strlen(c);
	char	   *s = malloc(la + lb + lc + 1);

	if (s == NULL)
		abort();
	memcpy(s, a, la);
	memcpy(s + la, b, lb);
	memcpy(s + la + lb, c, lc + 1);
	return s;
}

/* Trap, so libFuzzer records the input, when an invariant does not hold. */
static void
require(bool ok)
{
	if (!ok)
		__builtin_trap();
}

static bool
result_in_range(PlivoSigResult r)
{
	return r == PLIVO_SIG_VALID || r == PLIVO_SIG_MISSING ||
		r == PLIVO_SIG_MISMATCH || r == PLIVO_SIG_MALFORMED ||
		r == PLIVO_SIG_ERROR;
}

static void
fuzz_parse_form(const char *body, size_t len, PlivoParam *params,
				int *nparams, char **storage)
{
	int			n = plivo_otp_parse_form(body, len, params, FUZZ_MAX_PARAMS,
										 storage);

	require(n >= -2 && n <= FUZZ_MAX_PARAMS);
	require((n > 0) == (*storage != NULL));
	for (int i = 0; i < n; i++)
		require(strlen(params[i].key) + strlen(params[i].value) <= len);
	if (n > 0)
	{
		PlivoParam	fewer[FUZZ_MAX_PARAMS];
		char	   *other = NULL;

		/* one slot short must be refused */
		require(plivo_otp_parse_form(body, len, fewer, n - 1, &other) == -1);
		require(other == NULL);
	}
	*nparams = n;
}

static void
fuzz_v2(const char *url, const char *nonce, const char *token,
		const char *header)
{
	char		sig[PLIVO_OTP_SIG_BUFSIZE];
	PlivoSigResult r;

	if (plivo_otp_sign_v2(url, nonce, token, sig))
	{
		char		sig2[PLIVO_OTP_SIG_BUFSIZE];
		char	   *listed = concat3("x, ", sig, " ");

		require(strlen(sig) == PLIVO_OTP_SIG_LEN);
		require(plivo_otp_check_v2(url, nonce, sig, token) == PLIVO_SIG_VALID);
		require(plivo_otp_check_v2(url, nonce, listed, token) ==
				PLIVO_SIG_VALID);
		free(listed);

		/* query and fragment do not count */
		if (strpbrk(url, "?#") == NULL)
		{
			char	   *longer = concat3(url, "?q=1#", "f");

			require(plivo_otp_sign_v2(longer, nonce, token, sig2));
			require(strcmp(sig, sig2) == 0);
			free(longer);
		}
	}
	else
	{
		require(sig[0] == '\0');
		require(plivo_otp_check_v2(url, nonce, "x", token) != PLIVO_SIG_VALID);
	}

	r = plivo_otp_check_v2(url, nonce, header, token);
	require(result_in_range(r));
}

static void
fuzz_v3(const char *method, const char *url, const PlivoParam *params,
		int nparams, const char *nonce, const char *token, const char *header)
{
	char		sig[PLIVO_OTP_SIG_BUFSIZE];
	PlivoSigResult r;

	if (plivo_otp_sign_v3(method, url, params, nparams, nonce, token, sig))
	{
		char	   *listed = concat3("x,", sig, "\t");

		require(strlen(sig) == PLIVO_OTP_SIG_LEN);
		require(plivo_otp_check_v3(method, url, params, nparams, nonce, sig,
								   token) == PLIVO_SIG_VALID);
		require(plivo_otp_check_v3(method, url, params, nparams, nonce,
								   listed, token) == PLIVO_SIG_VALID);
		free(listed);
	}
	else
	{
		require(sig[0] == '\0');
		require(plivo_otp_check_v3(method, url, params, nparams, nonce, "x",
								   token) != PLIVO_SIG_VALID);
	}

	r = plivo_otp_check_v3(method, url, params, nparams, nonce, header, token);
	require(result_in_range(r));
}

/*
 * For GET, the URL as called (configured URL plus the query) and the
 * configured URL with the query's pairs as params must sign alike.
 */
static void
fuzz_get_equivalence(const char *url, const char *body, size_t bodylen,
					 const PlivoParam *params, int nparams, const char *nonce,
					 const char *token)
{
	char		sig1[PLIVO_OTP_SIG_BUFSIZE];
	char		sig2[PLIVO_OTP_SIG_BUFSIZE];
	char	   *full;

	if (url == NULL || nparams < 0 || strpbrk(url, "?#") != NULL ||
		strlen(body) != bodylen || memchr(body, '#', bodylen) != NULL)
		return;
	full = concat3(url, "?", body);
	if (plivo_otp_sign_v3("GET", full, NULL, 0, nonce, token, sig1) &&
		plivo_otp_sign_v3("GET", url, params, nparams, nonce, token, sig2))
		require(strcmp(sig1, sig2) == 0);
	free(full);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *field[FUZZ_NFIELDS] = {NULL, NULL, NULL, NULL, NULL};
	const uint8_t *p = data;
	const uint8_t *end = data + size;
	char	   *body;
	size_t		bodylen;
	PlivoParam	params[FUZZ_MAX_PARAMS];
	char	   *storage = NULL;
	int			nparams;
	char		scratch[PLIVO_OTP_SIG_BUFSIZE];

	for (int i = 0; i < FUZZ_NFIELDS && p < end; i++)
	{
		const uint8_t *nl = memchr(p, '\n', (size_t) (end - p));

		if (nl == NULL)
			break;
		field[i] = dup_bytes(p, (size_t) (nl - p));
		p = nl + 1;
	}
	bodylen = (size_t) (end - p);
	body = dup_bytes(p, bodylen);

	fuzz_parse_form(body, bodylen, params, &nparams, &storage);
	fuzz_v2(field[1], field[2], field[3], field[4]);
	fuzz_v3(field[0], field[1], params, nparams < 0 ? 0 : nparams,
			field[2], field[3], field[4]);
	if (field[0] != NULL && strcmp(field[0], "GET") == 0)
		fuzz_get_equivalence(field[1], body, bodylen, params, nparams,
							 field[2], field[3]);
	/* out of range counts and NULL params must be refused, not crash */
	require(!plivo_otp_sign_v3("POST", field[1], NULL, 1, field[2], field[3],
							   scratch));
	require(!plivo_otp_sign_v3("POST", field[1], params, -1, field[2],
							   field[3], scratch));

	free(storage);
	free(body);
	for (int i = 0; i < FUZZ_NFIELDS; i++)
		free(field[i]);
	return 0;
}
