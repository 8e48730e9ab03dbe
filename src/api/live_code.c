/*-------------------------------------------------------------------------
 *
 * live_code.c
 *	  A verification's live code, opened so it can be delivered again: by
 *	  otp_send's re-delivery, otp_resend and the dispatcher's voice fallback.
 *
 * A code may be delivered again only while it is pending, has enough life
 * left to be read and typed in (plivo_otp_min_redelivery_life), still has
 * an attempt left (counted in its row or, rolled back, in the shared
 * ledger) and its seal opens.  The callers select the row (and lock it);
 * this file holds the rules they share.  The opened code is the caller's to
 * wipe (explicit_bzero) once it was queued.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "plivo_otp.h"

/*
 * A live code with less life left than this (in seconds) is not delivered
 * again: a minute, or half the code's lifetime when that is shorter.
 */
int
plivo_otp_min_redelivery_life(void)
{
	return Min(60, plivo_otp_code_ttl / 2);
}

/*
 * A call is placed (first, again after a retry, by otp_resend, by otp_send's
 * re-delivery or as a fallback) only for a code with more life left than
 * this (in seconds): the callee may answer only when the phone stopped
 * ringing, and must then still hear a live code.
 */
int
plivo_otp_min_call_life(void)
{
	return plivo_otp_ring_timeout + PLIVO_OTP_CALL_LIFE_MARGIN;
}

/* The least life a code must have to be delivered again by channel ("sms", "voice"). */
int
plivo_otp_min_redelivery_life_by(const char *channel)
{
	int			life = plivo_otp_min_redelivery_life();
	int			call_life = plivo_otp_min_call_life();

	if (strcmp(channel, "voice") == 0 && call_life > life)
		return call_life;
	return life;
}

/*
 * Open the sealed code of verification id, whose row holds attempts and
 * max_attempts: NULL, with the code in code (PLIVO_OTP_MAX_CODE_LEN + 1
 * bytes), or why it cannot be delivered again (a sentence for an errdetail
 * or a log line; it never holds the code).  sealed may be NULL.
 */
const char *
plivo_otp_open_live_code(const pg_uuid_t *id, int attempts, int max_attempts,
						 const bytea *sealed, char *code)
{
	int			ledger = plivo_otp_ledger_failures(id);
	char	   *opened;

	if (Max(attempts, ledger) >= max_attempts)
		return "Its attempts are used up.";
	if (sealed == NULL)
		return "The code is no longer stored for re-delivery.";
	opened = plivo_otp_unseal(PLIVO_OTP_KEY_CODE_SEAL, id, sealed);
	if (opened == NULL)
		return "The stored code does not authenticate (was the key file replaced?).";
	if (strlen(opened) > PLIVO_OTP_MAX_CODE_LEN)
	{
		explicit_bzero(opened, strlen(opened));
		return "The stored code is not a code.";
	}
	strlcpy(code, opened, PLIVO_OTP_MAX_CODE_LEN + 1);
	explicit_bzero(opened, strlen(opened));
	return NULL;
}
