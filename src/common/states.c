/*-------------------------------------------------------------------------
 *
 * states.c
 *	  The names of the state machines' states, one table each: the words
 *	  the columns' domains allow and otp_check answers.
 *
 * C code compares enums; only these tables turn them into the words stored
 * in verifications.state and messages.dispatch_state, so a state cannot be
 * misspelt in one file and not in another.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "plivo_otp.h"

static const char *const dispatch_state_names[] = {
	[PLIVO_OTP_DISPATCH_PENDING] = "pending",
	[PLIVO_OTP_DISPATCH_SENDING] = "sending",
	[PLIVO_OTP_DISPATCH_ACCEPTED] = "accepted",
	[PLIVO_OTP_DISPATCH_REFUSED] = "refused",
	[PLIVO_OTP_DISPATCH_EXPIRED] = "expired",
	[PLIVO_OTP_DISPATCH_UNKNOWN] = "unknown",
	[PLIVO_OTP_DISPATCH_CANCELED] = "canceled",
};

static const char *const verification_state_names[] = {
	[PLIVO_OTP_VERIFICATION_PENDING] = "pending",
	[PLIVO_OTP_VERIFICATION_APPROVED] = "approved",
	[PLIVO_OTP_VERIFICATION_EXPIRED] = "expired",
	[PLIVO_OTP_VERIFICATION_MAX_ATTEMPTS] = "max_attempts",
	[PLIVO_OTP_VERIFICATION_CANCELED] = "canceled",
};

static const char *const check_result_names[] = {
	[PLIVO_OTP_CHECK_APPROVED] = "approved",
	[PLIVO_OTP_CHECK_INCORRECT] = "incorrect",
	[PLIVO_OTP_CHECK_EXPIRED] = "expired",
	[PLIVO_OTP_CHECK_MAX_ATTEMPTS] = "max_attempts",
	[PLIVO_OTP_CHECK_NOT_FOUND] = "not_found",
};

const char *
plivo_otp_dispatch_state_name(PlivoOtpDispatchState state)
{
	Assert(state >= 0 && state < lengthof(dispatch_state_names));
	return dispatch_state_names[state];
}

const char *
plivo_otp_verification_state_name(PlivoOtpVerificationState state)
{
	Assert(state >= 0 && state < lengthof(verification_state_names));
	return verification_state_names[state];
}

/* The state a stored word names; the column's domain allows no other. */
PlivoOtpVerificationState
plivo_otp_verification_state_parse(const char *name)
{
	for (int i = 0; i < lengthof(verification_state_names); i++)
		if (strcmp(name, verification_state_names[i]) == 0)
			return (PlivoOtpVerificationState) i;
	elog(ERROR, "plivo_otp: unknown verification state \"%s\"", name);
	return PLIVO_OTP_VERIFICATION_PENDING;	/* keep compiler quiet */
}

const char *
plivo_otp_check_result_name(PlivoOtpCheckResult result)
{
	Assert(result >= 0 && result < lengthof(check_result_names));
	return check_result_names[result];
}
