/*-------------------------------------------------------------------------
 *
 * errors.c
 *	  Errors and texts that could carry a phone number or a code: the
 *	  statement hidden from the server log, foreign error texts sanitised.
 *
 * An SQL function that takes a phone number or a code runs through
 * plivo_otp_hiding_statement(): every error raised while it runs (its own,
 * a lock timeout, a serialization failure, a cancel), whoever raised it,
 * leaves the statement text out of the server log.  Texts from Plivo go
 * through plivo_otp_sanitize_error() before they reach a table or a log.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "utils/elog.h"

#include "plivo_otp.h"

/*
 * Call fn, and if any ERROR escapes it, re-throw it without the statement
 * (which carries the phone number or the code) in the server log, and
 * without the detail of an integrity violation (a unique, not-null or check
 * violation's detail quotes the row or the key values).
 */
Datum
plivo_otp_hiding_statement(PGFunction fn, FunctionCallInfo fcinfo)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		result = (Datum) 0;

	PG_TRY();
	{
		result = fn(fcinfo);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		edata->hide_stmt = true;
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION)
			edata->detail = NULL;
		ReThrowError(edata);
	}
	PG_END_TRY();
	return result;
}

/*
 * Plivo's error texts can quote the destination number: mask long digit
 * runs, drop control characters and cap the length before the text goes to
 * a table or a log.
 */
char *
plivo_otp_sanitize_error(const char *text)
{
	StringInfoData buf;
	const char *p = text;

	initStringInfo(&buf);
	while (*p && buf.len < 200)
	{
		if (isdigit((unsigned char) *p))
		{
			const char *start = p;

			while (isdigit((unsigned char) *p))
				p++;
			if (p - start >= 6)
				appendStringInfo(&buf, "%.4s***", start);
			else
				appendBinaryStringInfo(&buf, start, p - start);
			continue;
		}
		appendStringInfoChar(&buf, iscntrl((unsigned char) *p) ? ' ' : *p);
		p++;
	}
	return buf.data;
}
