/*-------------------------------------------------------------------------
 *
 * answer_token.c
 *	  The token in a voice call's answer URL
 *	  ({public_url}/plivo/voice-answer/{token}).
 *
 * The token is an HMAC of the message id under a key of its own, so the
 * dispatcher can put it in the Call request without storing it, and nobody
 * without the key file can guess a call's URL (the message id and the
 * verification id never appear in it).  The table keeps only a digest of
 * the token (messages.answer_token_digest, under another key), by which the
 * listener finds the call a fetch names.  It is written like a UUID so that
 * the listener's routes parse it as they parse a message's token.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "plivo_otp.h"

/* The token of message_id's call into out (PLIVO_OTP_ANSWER_TOKEN_LEN + 1 bytes). */
void
plivo_otp_answer_token(const pg_uuid_t *message_id, char *out)
{
	uint8		mac[PLIVO_OTP_DIGEST_LEN];
	pg_uuid_t	token;

	plivo_otp_keyed_hash(PLIVO_OTP_KEY_ANSWER_TOKEN, (const char *) message_id->data,
						 UUID_LEN, mac);
	memcpy(token.data, mac, UUID_LEN);
	plivo_otp_format_uuid(&token, out);
	explicit_bzero(mac, sizeof(mac));
}

/* The stored form of a token: its keyed digest, as a 32-byte bytea. */
bytea *
plivo_otp_answer_token_digest(const char *token)
{
	bytea	   *digest = palloc(VARHDRSZ + PLIVO_OTP_DIGEST_LEN);

	SET_VARSIZE(digest, VARHDRSZ + PLIVO_OTP_DIGEST_LEN);
	plivo_otp_keyed_hash(PLIVO_OTP_KEY_ANSWER_LOOKUP, token, strlen(token),
						 (uint8 *) VARDATA(digest));
	return digest;
}

/*
 * For tests only, not part of the SQL API: the token of a message's call.
 * A test binds it (CREATE FUNCTION ... AS 'plivo_otp', 'plivo_otp_answer_token_sql'),
 * which only a superuser can do, as it does for signature_valid.
 */
PG_FUNCTION_INFO_V1(plivo_otp_answer_token_sql);

Datum
plivo_otp_answer_token_sql(PG_FUNCTION_ARGS)
{
	char		token[PLIVO_OTP_ANSWER_TOKEN_LEN + 1];

	plivo_otp_answer_token(PG_GETARG_UUID_P(0), token);
	PG_RETURN_TEXT_P(cstring_to_text(token));
}
