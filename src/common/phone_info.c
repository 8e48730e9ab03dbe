/*-------------------------------------------------------------------------
 *
 * phone_info.c
 *	  What a number is: its region (ISO code) and type (mobile, fixed line,
 *	  ...).  Placeholder until libphonenumber is wired in (issue 10): every
 *	  number is valid, of unknown region and type.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "plivo_otp.h"

void
plivo_otp_phone_info(const char *e164, PlivoOtpPhoneInfo *info)
{
	info->valid = true;
	info->region[0] = '\0';
	info->type = PLIVO_OTP_NUMBER_UNKNOWN;
}

const char *
plivo_otp_number_type_name(PlivoOtpNumberType type)
{
	return "unknown";
}
