/*-------------------------------------------------------------------------
 *
 * phonenumber_shim.cpp
 *	  The only C++ in plivo_otp: libphonenumber behind the plain C API of
 *	  phonenumber_shim.h.
 *
 * Every entry point catches all exceptions and returns a status, so no C++
 * exception ever unwinds into PostgreSQL's C frames, and nothing here calls
 * PostgreSQL (its longjmp-based errors would skip C++ destructors).
 * PhoneNumberUtil is a process-wide singleton built at its first use; the
 * backends and workers are single-threaded, so that first use is safe.
 *
 *-------------------------------------------------------------------------
 */
#include <cstring>
#include <string>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

#include "phonenumber_shim.h"

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

static int
shim_type(PhoneNumberUtil::PhoneNumberType type)
{
	switch (type)
	{
		case PhoneNumberUtil::FIXED_LINE:
			return PHONE_SHIM_TYPE_FIXED_LINE;
		case PhoneNumberUtil::MOBILE:
			return PHONE_SHIM_TYPE_MOBILE;
		case PhoneNumberUtil::FIXED_LINE_OR_MOBILE:
			return PHONE_SHIM_TYPE_FIXED_LINE_OR_MOBILE;
		case PhoneNumberUtil::TOLL_FREE:
			return PHONE_SHIM_TYPE_TOLL_FREE;
		case PhoneNumberUtil::PREMIUM_RATE:
			return PHONE_SHIM_TYPE_PREMIUM_RATE;
		case PhoneNumberUtil::SHARED_COST:
			return PHONE_SHIM_TYPE_SHARED_COST;
		case PhoneNumberUtil::VOIP:
			return PHONE_SHIM_TYPE_VOIP;
		case PhoneNumberUtil::PERSONAL_NUMBER:
			return PHONE_SHIM_TYPE_PERSONAL_NUMBER;
		case PhoneNumberUtil::PAGER:
			return PHONE_SHIM_TYPE_PAGER;
		case PhoneNumberUtil::UAN:
			return PHONE_SHIM_TYPE_UAN;
		case PhoneNumberUtil::VOICEMAIL:
			return PHONE_SHIM_TYPE_VOICEMAIL;
		default:
			return PHONE_SHIM_TYPE_UNKNOWN;
	}
}

extern "C" int
plivo_otp_shim_number_info(const char *e164, int *valid, char *region, int *type)
{
	*valid = 0;
	region[0] = '\0';
	*type = PHONE_SHIM_TYPE_UNKNOWN;
	try
	{
		const PhoneNumberUtil *util = PhoneNumberUtil::GetInstance();
		PhoneNumber number;
		PhoneNumberUtil::PhoneNumberType number_type;
		std::string code;

		/* "ZZ": no default region, the number carries its calling code */
		if (util->Parse(std::string(e164), "ZZ", &number) != PhoneNumberUtil::NO_PARSING_ERROR)
			return PHONE_SHIM_UNPARSABLE;

		/*
		 * Valid means a type other than UNKNOWN: IsValidNumber is the same
		 * test of the same region's patterns (IsValidNumberForRegion), so
		 * asking for the type alone runs those patterns once, not twice.
		 */
		number_type = util->GetNumberType(number);
		*valid = number_type != PhoneNumberUtil::UNKNOWN ? 1 : 0;
		util->GetRegionCodeForNumber(number, &code);
		/* "ZZ" unknown, "001" a non-geographic entity (+800, +882, ...) */
		if (code.size() == 2 && code != "ZZ")
		{
			region[0] = code[0];
			region[1] = code[1];
			region[2] = '\0';
		}
		*type = shim_type(number_type);
		return PHONE_SHIM_OK;
	}
	catch (...)
	{
		*valid = 0;
		region[0] = '\0';
		*type = PHONE_SHIM_TYPE_UNKNOWN;
		return PHONE_SHIM_FAILED;
	}
}

extern "C" int
plivo_otp_shim_region_supported(const char *region)
{
	try
	{
		const PhoneNumberUtil *util = PhoneNumberUtil::GetInstance();

		/* 0 for a region it has no metadata for */
		return util->GetCountryCodeForRegion(std::string(region)) != 0 ? 1 : 0;
	}
	catch (...)
	{
		return -1;
	}
}
