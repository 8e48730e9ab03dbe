/*-------------------------------------------------------------------------
 *
 * phonenumber_shim.h
 *	  A plain C interface to Google's libphonenumber (C++), for
 *	  phone_info.c and the allowed_countries check.
 *
 * The shim takes and fills plain C buffers only and returns status codes:
 * it never calls PostgreSQL (no palloc, elog or ereport while a C++ frame
 * is on the stack) and catches every C++ exception inside.  Callers decide
 * how to report a failure.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PHONENUMBER_SHIM_H
#define PHONENUMBER_SHIM_H

#ifdef __cplusplus
extern "C"
{
#endif

/* What a shim call returns. */
#define PHONE_SHIM_OK			0
#define PHONE_SHIM_UNPARSABLE	1	/* libphonenumber could not parse the number */
#define PHONE_SHIM_FAILED		2	/* an exception (out of memory, ...) */

/*
 * A number's type, as libphonenumber's PhoneNumberUtil::PhoneNumberType;
 * the values are PlivoOtpNumberType's (phone_info.c asserts it).
 */
#define PHONE_SHIM_TYPE_UNKNOWN					0
#define PHONE_SHIM_TYPE_MOBILE					1
#define PHONE_SHIM_TYPE_FIXED_LINE				2
#define PHONE_SHIM_TYPE_FIXED_LINE_OR_MOBILE	3
#define PHONE_SHIM_TYPE_TOLL_FREE				4
#define PHONE_SHIM_TYPE_PREMIUM_RATE			5
#define PHONE_SHIM_TYPE_SHARED_COST				6
#define PHONE_SHIM_TYPE_VOIP					7
#define PHONE_SHIM_TYPE_PERSONAL_NUMBER			8
#define PHONE_SHIM_TYPE_PAGER					9
#define PHONE_SHIM_TYPE_UAN						10
#define PHONE_SHIM_TYPE_VOICEMAIL				11

/*
 * What libphonenumber knows of e164 ("+" and digits): *valid (1 when the
 * number is valid for its region), region (3 bytes: an ISO 3166-1 alpha-2
 * code, or "" when the number belongs to no single region, such as +800)
 * and *type (PHONE_SHIM_TYPE_*).  On any status but PHONE_SHIM_OK the
 * outputs are invalid, "" and unknown.
 */
extern int	plivo_otp_shim_number_info(const char *e164, int *valid, char *region,
									   int *type);

/*
 * Is region (two upper-case letters) one libphonenumber has metadata for?
 * 1 yes, 0 no, -1 on an exception.
 */
extern int	plivo_otp_shim_region_supported(const char *region);

#ifdef __cplusplus
}
#endif

#endif							/* PHONENUMBER_SHIM_H */
