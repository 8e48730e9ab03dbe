/*-------------------------------------------------------------------------
 *
 * destination.c
 *	  Where a code may go: the number must be valid for its region
 *	  (libphonenumber), allowed by plivo_otp.allowed_countries, and an SMS
 *	  must not go to a fixed line unless plivo_otp.allow_sms_to_fixed_line.
 *
 * otp_send applies all three after phone.c's normalisation (so malformed
 * input keeps its "invalid phone number" error), and otp_resend again at
 * each resend: the settings may have changed since the code was sent.  The
 * dispatcher's voice fallback checks the country alone (fallback.c): a call
 * reaches any valid number, fixed lines included.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "plivo_otp.h"

/*
 * The number's region and type into *info, or an ERROR when the number is
 * not valid for its region or not allowed by plivo_otp.allowed_countries.
 */
void
plivo_otp_check_destination(const char *phone, PlivoOtpPhoneInfo *info)
{
	plivo_otp_phone_info(phone, info);
	/* (Not counted as a refused send, like a malformed number.) */
	if (!info->valid)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid phone number: not a valid number for its country"),
				 errdetail("The number %s is well formed, but libphonenumber knows no such number in the country of its calling code.",
						   plivo_otp_mask_phone(phone)),
				 errhint("Check the number's digits and its country calling code."),
				 errhidestmt(true)));
	if (!plivo_otp_country_allowed(phone, info->region, plivo_otp_allowed_countries))
	{
		plivo_otp_count(PLIVO_OTP_COUNTER_REFUSED_SENDS, 1);
		plivo_otp_activity_add(PLIVO_OTP_ACT_REFUSED_COUNTRY, 1);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("code not sent: the number's country is not allowed"),
				 errdetail("The number %s (region %s) matches no prefix or region in plivo_otp.allowed_countries.",
						   plivo_otp_mask_phone(phone),
						   info->region[0] ? info->region : "none"),
				 errhint("Ask the administrator to add its region or calling code to plivo_otp.allowed_countries."),
				 errhidestmt(true)));
	}
}

/* An SMS to a number known to be a fixed line is refused, unless allowed. */
void
plivo_otp_check_channel_for_number(const char *phone, const char *channel,
								   const PlivoOtpPhoneInfo *info)
{
	if (strcmp(channel, "sms") != 0 || info->type != PLIVO_OTP_NUMBER_FIXED_LINE ||
		plivo_otp_allow_sms_to_fixed_line)
		return;
	plivo_otp_count(PLIVO_OTP_COUNTER_REFUSED_SENDS, 1);
	plivo_otp_activity_add(PLIVO_OTP_ACT_REFUSED_FIXED_LINE, 1);
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("code not sent: the number is a fixed line, which cannot receive SMS"),
			 errdetail("The number %s is a fixed-line number; an SMS to it would be billed and never arrive.",
					   plivo_otp_mask_phone(phone)),
			 errhint("Send the code with channel 'voice', or ask the administrator to set plivo_otp.allow_sms_to_fixed_line."),
			 errhidestmt(true)));
}
