/*-------------------------------------------------------------------------
 *
 * resend.c
 *	  otp_resend(): deliver a verification's live code again, by SMS or by
 *	  voice, in the caller's transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_resend);

Datum
plivo_otp_resend(PG_FUNCTION_ARGS)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("otp_resend is not built yet")));
	PG_RETURN_NULL();
}
