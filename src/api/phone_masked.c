/*-------------------------------------------------------------------------
 *
 * phone_masked.c
 *	  plivo_otp.phone_masked(text): a phone number in the masked form the
 *	  logs and otp_status show (common/phone.c).  The dispatcher's redaction
 *	  (dispatcher/retention.c) writes it over the numbers of finished rows;
 *	  masking a masked number changes nothing.  A value too short to mask
 *	  (not a number a code was sent to) becomes "*", so that every value
 *	  written holds a '*' and leaves the indexes of rows not yet masked.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_phone_masked);

Datum
plivo_otp_phone_masked(PG_FUNCTION_ARGS)
{
	char	   *masked = plivo_otp_mask_phone(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	PG_RETURN_TEXT_P(cstring_to_text(strchr(masked, '*') != NULL ? masked : "*"));
}
