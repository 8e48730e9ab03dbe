/*-------------------------------------------------------------------------
 *
 * callback_auth.h
 *	  Which Plivo signature a callback must carry, and whether it does.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_CALLBACK_AUTH_H
#define PLIVO_OTP_CALLBACK_AUTH_H

#include "crypto/signature.h"

/* The X-Plivo-Signature-* header values of a request (NULL when absent). */
typedef struct PlivoCallbackHeaders
{
	const char *v3;
	const char *ma_v3;
	const char *v3_nonce;
	const char *v2;
	const char *ma_v2;
	const char *v2_nonce;
} PlivoCallbackHeaders;

extern const char *plivo_otp_find_param(const PlivoParam *params, int nparams,
										const char *key, bool ignore_case);
extern PlivoSigResult plivo_otp_authenticate_callback(const char *method, const char *url,
													  const PlivoParam *params, int nparams,
													  const PlivoCallbackHeaders *headers,
													  const char *token,
													  const char **nonce,
													  const char **other_nonce,
													  bool *body_signed);

#endif							/* PLIVO_OTP_CALLBACK_AUTH_H */
