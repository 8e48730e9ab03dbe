/*-------------------------------------------------------------------------
 *
 * callback_auth.c
 *	  Decide whether a callback is authentic: the rule of which signature
 *	  family counts, on top of signature.c's algorithms; and which message
 *	  a callback URL names.
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
 * says which family verified, because a V2 signature is usable with any
 * body: delivery.c lets it count only for the message its URL names
 * (plivo_otp_route_token), and only while its nonce is remembered.
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

/*
 * Is path (its first len bytes) route, or route + "/" + a token?  A token
 * is a message id as uuid_out writes it (lower-case hex digits, dashes at
 * 8, 13, 18 and 23), so that one message has one URL, the one Plivo signs.
 * True with the token copied to token (PLIVO_OTP_TOKEN_LEN + 1 bytes), or
 * "" for the bare route; false for any other path.
 */
bool
plivo_otp_route_token(const char *path, size_t len, const char *route, char *token)
{
	size_t		rlen = strlen(route);
	const char *t;

	token[0] = '\0';
	if (len < rlen || strncmp(path, route, rlen) != 0)
		return false;
	if (len == rlen)
		return true;
	if (len != rlen + 1 + PLIVO_OTP_TOKEN_LEN || path[rlen] != '/')
		return false;
	t = path + rlen + 1;
	for (int i = 0; i < PLIVO_OTP_TOKEN_LEN; i++)
	{
		bool		dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? t[i] != '-' :
			!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')))
			return false;
	}
	memcpy(token, t, PLIVO_OTP_TOKEN_LEN);
	token[PLIVO_OTP_TOKEN_LEN] = '\0';
	return true;
}

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
