/*-------------------------------------------------------------------------
 *
 * messages.c
 *	  otp_messages(): every message (SMS or call) of a verification, oldest
 *	  first, for an application or an operator to see how a code went out.
 *
 * No phone number and no body leaves: a row says which channel, where it
 * came from (send, redeliver, resend, fallback), our dispatch state,
 * Plivo's delivery status and the meaning of its error code for its
 * channel (PLIVO_OTP_ERROR_TEXT), the sender it went out from
 * (common/senders.c), and for an SMS its encoding (gsm7 or ucs2) and
 * segments.  An unknown id gives no row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_messages);

#define MESSAGES_COLUMNS 16

static PlivoOtpStatement list_messages = {
	"SELECT m.id, m.channel, m.origin, m.dispatch_state, m.delivery_status,"
	"  m.provider_uuid, m.error_code, " PLIVO_OTP_ERROR_TEXT("m") ", m.tries,"
	"  m.created_at, m.accepted_at, m.answered_at, m.updated_at, m.sender, m.encoding, m.segments"
	" FROM plivo_otp.messages m WHERE m.verification_id = $1"
	" ORDER BY m.created_at, m.id",
	1, {UUIDOID},
	.forced_plan = true, .indexes = "messages_verification"
};

Datum
plivo_otp_messages(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		args[1];
	Datum		values[MESSAGES_COLUMNS];
	bool		nulls[MESSAGES_COLUMNS];
	int			n;
	MemoryContext spi_context;

	plivo_otp_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	plivo_otp_spi_connect();
	args[0] = UUIDPGetDatum(PG_GETARG_UUID_P(0));
	n = plivo_otp_exec(&list_messages, args, NULL, true, 0);
	spi_context = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	for (int row = 0; row < n; row++)
	{
		for (int col = 0; col < MESSAGES_COLUMNS; col++)
			values[col] = plivo_otp_get(row, col + 1, &nulls[col]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	MemoryContextSwitchTo(spi_context);
	SPI_finish();
	return (Datum) 0;
}
