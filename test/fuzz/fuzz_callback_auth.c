/*-------------------------------------------------------------------------
 *
 * fuzz_callback_auth.c
 *	  libFuzzer target for src/listener/callback_auth.c:
 *	  plivo_otp_authenticate_callback (which signature family counts) and
 *	  plivo_otp_find_param, on top of src/crypto/signature.c.
 *
 * An input is two selector bytes, then up to six lines and a form body:
 *
 *		sel0 sel1 method \n url \n v3-nonce \n v2-nonce \n token \n header \n body
 *
 * (a field the input does not reach is NULL).  The selectors choose, for
 * each of the four signature headers (V3, Ma-V3, V2, Ma-V2), one of: absent,
 * blank, wrong (a correct signature with one character changed), correct,
 * correct after junk in a list, signed over other parameters (V3) or
 * another nonce (V2), signed with another token, or the input's raw header
 * line; and which V2 nonce header
 * the request carries.  The headers are put in a request's header list
 * under names of mixed case and found again with plivo_otp_find_param, as
 * src/api/callback.c does.
 *
 * The verdict is then predicted from the selectors alone (the rule in
 * callback_auth.c's header comment) and compared: any V3 header present
 * means V3 decides, whatever V2 says (no downgrade); else V2 decides; else
 * MISSING.  The nonces returned must be those of the family that decided,
 * and the other family's only as the rule allows.  find_param must return
 * the first match, exactly or ignoring case, and NULL for an absent key.
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
#include <strings.h>

#include "listener/callback_auth.h"

#define FUZZ_MAX_PARAMS 64
#define FUZZ_NFIELDS	6

/* How a signature header is made. */
typedef enum HeaderMode
{
	H_ABSENT,
	H_BLANK,
	H_WRONG,
	H_CORRECT,
	H_LISTED,
	H_OTHER_PARAMS,
	H_OTHER_TOKEN,
	H_RAW
} HeaderMode;

enum
{
	HV3, HMA_V3, HV2, HMA_V2, NHEADERS
};

typedef struct Request
{
	const char *method;
	const char *url;
	const char *v3_nonce;
	const char *v2_nonce;		/* the V2-Nonce header as sent */
	const char *token;
	const char *raw;
	PlivoParam *params;
	int			nparams;
} Request;

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Trap, so libFuzzer records the input, when an invariant does not hold. */
static void
require(bool ok)
{
	if (!ok)
		__builtin_trap();
}

static char *
dup_bytes(const uint8_t *data, size_t len)
{
	char	   *s = malloc(len + 1);

	require(s != NULL);
	if (len > 0)
		memcpy(s, data, len);
	s[len] = '\0';
	return s;
}

static char *
concat(const char *a, const char *b)
{
	size_t		la = strlen(a);
	size_t		lb = strlen(b);
	char	   *s = malloc(la + lb + 1);

	require(s != NULL);
	memcpy(s, a, la);
	memcpy(s + la, b, lb + 1);
	return s;
}

static bool
present(const char *header)
{
	return header != NULL && header[strspn(header, " \t,")] != '\0';
}

static bool
is_v3(int which)
{
	return which == HV3 || which == HMA_V3;
}

/*
 * The signature of the request's family, or of a variant of it; false when
 * it cannot be computed (the URL, nonce or token is unusable).
 */
static bool
sign(const Request *r, int which, HeaderMode mode, char out[PLIVO_OTP_SIG_BUFSIZE])
{
	const char *token = r->token;
	char	   *other_token = NULL;
	bool		ok;

	if (mode == H_OTHER_TOKEN && token != NULL)
		token = other_token = concat(token, "x");
	if (!is_v3(which))
	{
		/* V2 covers no parameters: "other params" is another nonce there */
		char	   *other_nonce = NULL;

		if (mode == H_OTHER_PARAMS && r->v2_nonce != NULL)
			other_nonce = concat(r->v2_nonce, "x");
		ok = plivo_otp_sign_v2(r->url, other_nonce ? other_nonce : r->v2_nonce, token, out);
		free(other_nonce);
	}
	else if (mode == H_OTHER_PARAMS)
	{
		/* one parameter more than the request carries */
		PlivoParam	more[FUZZ_MAX_PARAMS + 1];

		memcpy(more, r->params, sizeof(PlivoParam) * r->nparams);
		more[r->nparams].key = "ForgedExtra";
		more[r->nparams].value = "1";
		ok = plivo_otp_sign_v3(r->method, r->url, more, r->nparams + 1, r->v3_nonce,
							   token, out);
	}
	else
		ok = plivo_otp_sign_v3(r->method, r->url, r->params, r->nparams, r->v3_nonce,
							   token, out);
	free(other_token);
	return ok;
}

/*
 * The header value for mode (malloc'd, or NULL for absent), and whether a
 * request carrying it should verify by itself.
 */
static char *
make_header(const Request *r, int which, HeaderMode mode, bool *verifies)
{
	char		sig[PLIVO_OTP_SIG_BUFSIZE];
	bool		signable;

	*verifies = false;
	switch (mode)
	{
		case H_ABSENT:
			return NULL;
		case H_BLANK:
			return concat(" ,\t", ", ");
		case H_RAW:
			if (r->raw == NULL)
				return NULL;
			if (is_v3(which))
				*verifies = plivo_otp_check_v3(r->method, r->url, r->params, r->nparams,
											   r->v3_nonce, r->raw, r->token) == PLIVO_SIG_VALID;
			else
				*verifies = plivo_otp_check_v2(r->url, r->v2_nonce, r->raw,
											   r->token) == PLIVO_SIG_VALID;
			return concat(r->raw, "");
		default:
			break;
	}
	signable = sign(r, which, mode, sig);
	if (!signable)
		return concat("x", "");	/* a present header that cannot verify */
	require(strlen(sig) == PLIVO_OTP_SIG_LEN);
	switch (mode)
	{
		case H_WRONG:
			sig[0] = sig[0] == 'A' ? 'B' : 'A';
			return concat(sig, "");
		case H_CORRECT:
			*verifies = true;
			return concat(sig, "");
		case H_LISTED:
			*verifies = true;
			return concat("bogus, ", sig);
		default:
			/* other params, other token: well-formed, must not verify */
			return concat(sig, "");
	}
}

/* The header name with letters in upper or lower case as bits says. */
static char *
mixed_case(const char *name, unsigned bits)
{
	char	   *s = concat(name, "");

	for (size_t i = 0; s[i]; i++)
		if ((bits >> (i % 8)) & 1)
			s[i] = (s[i] >= 'a' && s[i] <= 'z') ? s[i] - 32 :
				(s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i];
	return s;
}

/* find_param: the first exact match, the first match ignoring case, NULL for an absent key. */
static void
check_find_param(const PlivoParam *params, int n)
{
	size_t		total = 1;
	char	   *absent;

	for (int i = 0; i < n; i++)
	{
		int			first = i;
		int			first_ci = i;

		for (int j = 0; j < i; j++)
		{
			if (first == i && strcmp(params[j].key, params[i].key) == 0)
				first = j;
			if (first_ci == i && strcasecmp(params[j].key, params[i].key) == 0)
				first_ci = j;
		}
		require(plivo_otp_find_param(params, n, params[i].key, false) == params[first].value);
		require(plivo_otp_find_param(params, n, params[i].key, true) == params[first_ci].value);
		total += strlen(params[i].key);
	}
	/* longer than any key: matches none */
	absent = malloc(total + 1);
	require(absent != NULL);
	memset(absent, 'k', total);
	absent[total] = '\0';
	require(plivo_otp_find_param(params, n, absent, false) == NULL);
	require(plivo_otp_find_param(params, n, absent, true) == NULL);
	free(absent);
	require(plivo_otp_find_param(NULL, 0, "MessageUUID", false) == NULL);
}

static void
check_authenticate(const Request *r, unsigned sel)
{
	static const char *const names[NHEADERS] = {
		"X-Plivo-Signature-V3", "X-Plivo-Signature-Ma-V3",
		"X-Plivo-Signature-V2", "X-Plivo-Signature-Ma-V2"
	};
	char	   *value[NHEADERS];
	bool		verifies[NHEADERS];
	PlivoParam	headers[NHEADERS + 2];
	char	   *hname[NHEADERS + 2];
	int			nheaders = 0;
	PlivoCallbackHeaders h;
	const char *nonce = (const char *) 1;
	const char *other = (const char *) 1;
	bool		body_signed = true;
	PlivoSigResult result;
	bool		v3_present;
	bool		v2_present;
	Request		req = *r;

	/* which V2-Nonce header the request carries: none, its own, the V3 one's, empty */
	switch ((sel >> 12) & 3)
	{
		case 0:
			req.v2_nonce = NULL;
			break;
		case 1:
			break;
		case 2:
			req.v2_nonce = r->v3_nonce;
			break;
		case 3:
			req.v2_nonce = "";
			break;
	}
	for (int i = 0; i < NHEADERS; i++)
	{
		value[i] = make_header(&req, i, (HeaderMode) ((sel >> (3 * i)) & 7), &verifies[i]);
		if (value[i] != NULL)
		{
			hname[nheaders] = mixed_case(names[i], sel >> 8);
			headers[nheaders].key = hname[nheaders];
			headers[nheaders].value = value[i];
			nheaders++;
		}
	}
	if (req.v3_nonce != NULL)
	{
		hname[nheaders] = mixed_case("X-Plivo-Signature-V3-Nonce", sel);
		headers[nheaders].key = hname[nheaders];
		headers[nheaders++].value = req.v3_nonce;
	}
	if (req.v2_nonce != NULL)
	{
		hname[nheaders] = mixed_case("X-Plivo-Signature-V2-Nonce", sel >> 4);
		headers[nheaders].key = hname[nheaders];
		headers[nheaders++].value = req.v2_nonce;
	}
	check_find_param(headers, nheaders);

	/* as src/api/callback.c reads them */
	h.v3 = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-V3", true);
	h.ma_v3 = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-Ma-V3", true);
	h.v3_nonce = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-V3-Nonce", true);
	h.v2 = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-V2", true);
	h.ma_v2 = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-Ma-V2", true);
	h.v2_nonce = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-V2-Nonce", true);
	require(h.v3 == value[HV3] && h.ma_v3 == value[HMA_V3]);
	require(h.v2 == value[HV2] && h.ma_v2 == value[HMA_V2]);
	require(h.v3_nonce == req.v3_nonce && h.v2_nonce == req.v2_nonce);

	result = plivo_otp_authenticate_callback(req.method, req.url, req.params, req.nparams,
											 &h, req.token, &nonce, &other, &body_signed);
	v3_present = present(value[HV3]) || present(value[HMA_V3]);
	v2_present = present(value[HV2]) || present(value[HMA_V2]);
	if (v3_present)
	{
		bool		valid = (present(value[HV3]) && verifies[HV3]) ||
			(present(value[HMA_V3]) && verifies[HMA_V3]);

		require((result == PLIVO_SIG_VALID) == valid);
		require(result != PLIVO_SIG_MISSING);
		if (valid)
		{
			bool		other_expected = v2_present && req.v2_nonce != NULL &&
				req.v2_nonce[0] != '\0' && strcmp(req.v2_nonce, req.v3_nonce) != 0;

			require(nonce == req.v3_nonce);
			require(other == (other_expected ? req.v2_nonce : NULL));
			require(body_signed);	/* V3 covers the body */
		}
	}
	else if (v2_present)
	{
		bool		valid = (present(value[HV2]) && verifies[HV2]) ||
			(present(value[HMA_V2]) && verifies[HMA_V2]);

		require((result == PLIVO_SIG_VALID) == valid);
		require(result != PLIVO_SIG_MISSING);
		if (valid)
			require(nonce == req.v2_nonce && other == NULL && !body_signed);
	}
	else
		require(result == PLIVO_SIG_MISSING);
	if (result != PLIVO_SIG_VALID)
		require(nonce == NULL && other == NULL);
	require(result == PLIVO_SIG_VALID || result == PLIVO_SIG_MISSING ||
			result == PLIVO_SIG_MISMATCH || result == PLIVO_SIG_MALFORMED ||
			result == PLIVO_SIG_ERROR);

	for (int i = 0; i < nheaders; i++)
		free(hname[i]);
	for (int i = 0; i < NHEADERS; i++)
		free(value[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *field[FUZZ_NFIELDS] = {NULL, NULL, NULL, NULL, NULL, NULL};
	const uint8_t *p = data;
	const uint8_t *end = data + size;
	PlivoParam	params[FUZZ_MAX_PARAMS];
	char	   *storage = NULL;
	char	   *body;
	int			n;
	unsigned	sel;
	Request		r;

	if (size < 2)
		return 0;
	sel = data[0] | (data[1] << 8);
	p += 2;
	for (int i = 0; i < FUZZ_NFIELDS && p < end; i++)
	{
		const uint8_t *nl = memchr(p, '\n', (size_t) (end - p));

		if (nl == NULL)
			break;
		field[i] = dup_bytes(p, (size_t) (nl - p));
		p = nl + 1;
	}
	body = dup_bytes(p, (size_t) (end - p));
	n = plivo_otp_parse_form(body, strlen(body), params, FUZZ_MAX_PARAMS, &storage);
	if (n < 0)
		n = 0;
	check_find_param(params, n);

	r.method = field[0];
	r.url = field[1];
	r.v3_nonce = field[2];
	r.v2_nonce = field[3];
	r.token = field[4];
	r.raw = field[5];
	r.params = params;
	r.nparams = n;
	check_authenticate(&r, sel);

	free(storage);
	free(body);
	for (int i = 0; i < FUZZ_NFIELDS; i++)
		free(field[i]);
	return 0;
}
