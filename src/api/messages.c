/*-------------------------------------------------------------------------
 *
 * messages.c
 *	  otp_messages(): every message (SMS or call) of a verification.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_messages);

Datum
plivo_otp_messages(PG_FUNCTION_ARGS)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("otp_messages is not built yet")));
	PG_RETURN_NULL();
}
