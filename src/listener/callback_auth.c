/*-------------------------------------------------------------------------
 *
 * callback_auth.c
 *	  Decide whether a callback is authentic: the rule of which signature
 *	  family counts, on top of signature.c's algorithms.
 *
 * V3 covers the URL, the parameters and the nonce; V2 covers only the URL
 * and the nonce (the body then rests on TLS alone).  So when any V3 header
 * is present, V3 must verify and there is no fall back to V2 (an attacker
 * could otherwise strip V3 to downgrade); V2 is accepted only from a
 * request that carries no V3 header at all.  Either the account header or
 * the main-account ("Ma") header may carry the valid signature.
 *
 * A request accepted by V3 that also carries V2 headers has its V2 nonce
 * recorded as well (*other_nonce): otherwise whoever saw the request could
 * send it once more with the V3 headers stripped, and V2, which does not
 * cover the body, would verify with a nonce never recorded.  *body_signed
 * says which family verified, because a V2 signature stays usable with
 * another body once its nonce is forgotten: delivery.c bounds it in time.
 *
 * Plain C, no server calls: the listener calls it from libmicrohttpd's
 * callback, where nothing may longjmp.
 *
 *-------------------------------------------------------------------------
 */
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "callback_auth.h"

/* The value of the first param named key (HTTP header names: ignore_case), or NULL. */
const char *
plivo_otp_find_param(const PlivoParam *params, int nparams, const char *key, bool ignore_case)
{
	for (int i = 0; i < nparams; i++)
		if ((ignore_case ? strcasecmp(params[i].key, key) : strcmp(params[i].key, key)) == 0)
			return params[i].value;
	return NULL;
}

static bool
present(const char *header)
{
	return header != NULL && header[strspn(header, " \t,")] != '\0';
}

/*
 * PLIVO_SIG_VALID when the request is signed with token; *nonce is then the
 * nonce of the family that verified and *other_nonce the other family's
 * nonce or NULL (both to be recorded against replays), and *body_signed
 * whether the signature covers the parameters (V3) or not (V2).
 */
PlivoSigResult
plivo_otp_authenticate_callback(const char *method, const char *url,
								const PlivoParam *params, int nparams,
								const PlivoCallbackHeaders *h, const char *token,
								const char **nonce, const char **other_nonce,
								bool *body_signed)
{
	PlivoSigResult result = PLIVO_SIG_MISSING;

	*nonce = NULL;
	*other_nonce = NULL;
	*body_signed = false;
	if (present(h->v3) || present(h->ma_v3))
	{
		if (present(h->v3))
			result = plivo_otp_check_v3(method, url, params, nparams, h->v3_nonce, h->v3, token);
		if (result != PLIVO_SIG_VALID && present(h->ma_v3))
			result = plivo_otp_check_v3(method, url, params, nparams, h->v3_nonce, h->ma_v3, token);
		if (result == PLIVO_SIG_VALID)
		{
			*nonce = h->v3_nonce;
			*body_signed = true;
			if ((present(h->v2) || present(h->ma_v2)) && h->v2_nonce != NULL &&
				h->v2_nonce[0] != '\0' && strcmp(h->v2_nonce, h->v3_nonce) != 0)
				*other_nonce = h->v2_nonce;
		}
		return result == PLIVO_SIG_MISSING ? PLIVO_SIG_MISMATCH : result;
	}
	if (present(h->v2) || present(h->ma_v2))
	{
		if (present(h->v2))
			result = plivo_otp_check_v2(url, h->v2_nonce, h->v2, token);
		if (result != PLIVO_SIG_VALID && present(h->ma_v2))
			result = plivo_otp_check_v2(url, h->v2_nonce, h->ma_v2, token);
		if (result == PLIVO_SIG_VALID)
			*nonce = h->v2_nonce;
		return result == PLIVO_SIG_MISSING ? PLIVO_SIG_MISMATCH : result;
	}
	return PLIVO_SIG_MISSING;
}
