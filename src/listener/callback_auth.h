/*-------------------------------------------------------------------------
 *
 * callback_auth.h
 *	  Which Plivo signature a callback must carry, and whether it does;
 *	  which message a callback URL names.
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

/*
 * Message-status callbacks go to PLIVO_OTP_SMS_STATUS_PATH + "/" + the
 * message's id, its token (PLIVO_OTP_TOKEN_LEN characters, as uuid_out
 * writes it): a V2 signature, which covers only the URL and the nonce,
 * then names the message.  The bare path serves callbacks of messages
 * sent before per-message URLs, with V3 only.
 */
#define PLIVO_OTP_SMS_STATUS_PATH "/plivo/sms-status"
#define PLIVO_OTP_TOKEN_LEN 36

/*
 * A call's answer URL is PLIVO_OTP_VOICE_ANSWER_PATH + "/" + its answer
 * token (crypto/answer_token.c); hang-up callbacks go to
 * PLIVO_OTP_VOICE_STATUS_PATH, optionally + "/" + the message's id.
 */
#define PLIVO_OTP_VOICE_ANSWER_PATH "/plivo/voice-answer"
#define PLIVO_OTP_VOICE_STATUS_PATH "/plivo/voice-status"

extern bool plivo_otp_route_token(const char *path, size_t len, const char *route,
								  char *token);
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
