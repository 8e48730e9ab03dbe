/*-------------------------------------------------------------------------
 *
 * phone_info.c
 *	  What a number is: valid for its region or not, its region (ISO code)
 *	  and its type (mobile, fixed line, ...), from libphonenumber through
 *	  the C shim (phonenumber_shim.cpp), and whether a region code is one
 *	  libphonenumber knows.
 *
 * The shim only fills buffers and returns a status: the errors are raised
 * here, in C, once no C++ frame is left on the stack.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "plivo_otp.h"

#include "common/phonenumber_shim.h"

static const char *const number_type_names[] = {
	[PLIVO_OTP_NUMBER_UNKNOWN] = "unknown",
	[PLIVO_OTP_NUMBER_MOBILE] = "mobile",
	[PLIVO_OTP_NUMBER_FIXED_LINE] = "fixed_line",
	[PLIVO_OTP_NUMBER_FIXED_LINE_OR_MOBILE] = "fixed_line_or_mobile",
	[PLIVO_OTP_NUMBER_TOLL_FREE] = "toll_free",
	[PLIVO_OTP_NUMBER_PREMIUM_RATE] = "premium_rate",
	[PLIVO_OTP_NUMBER_SHARED_COST] = "shared_cost",
	[PLIVO_OTP_NUMBER_VOIP] = "voip",
	[PLIVO_OTP_NUMBER_PERSONAL] = "personal_number",
	[PLIVO_OTP_NUMBER_PAGER] = "pager",
	[PLIVO_OTP_NUMBER_UAN] = "uan",
	[PLIVO_OTP_NUMBER_VOICEMAIL] = "voicemail"
};

/* The shim's type codes are PlivoOtpNumberType's values. */
StaticAssertDecl(PHONE_SHIM_TYPE_UNKNOWN == PLIVO_OTP_NUMBER_UNKNOWN &&
				 PHONE_SHIM_TYPE_MOBILE == PLIVO_OTP_NUMBER_MOBILE &&
				 PHONE_SHIM_TYPE_FIXED_LINE == PLIVO_OTP_NUMBER_FIXED_LINE &&
				 PHONE_SHIM_TYPE_FIXED_LINE_OR_MOBILE == PLIVO_OTP_NUMBER_FIXED_LINE_OR_MOBILE &&
				 PHONE_SHIM_TYPE_TOLL_FREE == PLIVO_OTP_NUMBER_TOLL_FREE &&
				 PHONE_SHIM_TYPE_PREMIUM_RATE == PLIVO_OTP_NUMBER_PREMIUM_RATE &&
				 PHONE_SHIM_TYPE_SHARED_COST == PLIVO_OTP_NUMBER_SHARED_COST &&
				 PHONE_SHIM_TYPE_VOIP == PLIVO_OTP_NUMBER_VOIP &&
				 PHONE_SHIM_TYPE_PERSONAL_NUMBER == PLIVO_OTP_NUMBER_PERSONAL &&
				 PHONE_SHIM_TYPE_PAGER == PLIVO_OTP_NUMBER_PAGER &&
				 PHONE_SHIM_TYPE_UAN == PLIVO_OTP_NUMBER_UAN &&
				 PHONE_SHIM_TYPE_VOICEMAIL == PLIVO_OTP_NUMBER_VOICEMAIL,
				 "phonenumber_shim.h's type codes must be PlivoOtpNumberType's");

/*
 * Does plivo_otp.allowed_countries, as this process has it now, allow e164?
 * For the dispatcher: a number queued, or a code issued, before the setting
 * was narrowed is not sent to (toll fraud is where it costs most).  No
 * look-up while the setting is empty, as it is by default.
 */
bool
plivo_otp_country_allowed_now(const char *e164)
{
	PlivoOtpPhoneInfo info;

	if (plivo_otp_allow_list_empty(plivo_otp_allowed_countries))
		return true;
	plivo_otp_phone_info(e164, &info);
	return plivo_otp_country_allowed(e164, info.region, plivo_otp_allowed_countries);
}

/*
 * e164 is normalised (phone.c).  A number libphonenumber cannot parse is
 * not valid; an exception inside the library is an ERROR, never a guess.
 */
void
plivo_otp_phone_info(const char *e164, PlivoOtpPhoneInfo *info)
{
	int			valid;
	int			type;
	int			status;

	status = plivo_otp_shim_number_info(e164, &valid, info->region, &type);
	if (status == PHONE_SHIM_FAILED)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("libphonenumber failed to classify a phone number"),
				 errhint("This is most likely an out-of-memory condition; try again."),
				 errhidestmt(true)));
	info->valid = status == PHONE_SHIM_OK && valid != 0;
	info->type = type >= 0 && type < (int) lengthof(number_type_names) ?
		(PlivoOtpNumberType) type : PLIVO_OTP_NUMBER_UNKNOWN;
}

const char *
plivo_otp_number_type_name(PlivoOtpNumberType type)
{
	if ((int) type < 0 || (int) type >= (int) lengthof(number_type_names))
		return "unknown";
	return number_type_names[type];
}

/* Is region (two upper-case letters) a region libphonenumber has numbers for? */
bool
plivo_otp_region_known(const char *region)
{
	return plivo_otp_shim_region_supported(region) == 1;
}
