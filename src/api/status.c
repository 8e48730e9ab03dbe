/*-------------------------------------------------------------------------
 *
 * status.c
 *	  otp_status() and otp_cancel(): read and end a verification by id.
 *
 * otp_status reports the verification with its latest message.  The phone
 * number is masked, a pending code past its expiry reads as expired, and
 * attempts_left accounts for failures that rolled back (the shared ledger).
 * error_text is the meaning of the latest message's error code: an SMS
 * error, or for a call its hang-up cause.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_status);
PG_FUNCTION_INFO_V1(plivo_otp_cancel);

#define STATUS_COLUMNS 14

#define READ_STATUS(error_text, error_join) \
	"SELECT v.id," \
	"  CASE WHEN v.state = 'pending' AND v.expires_at <= $2 THEN 'expired' ELSE v.state END," \
	"  v.channel, v.phone, v.max_attempts - v.attempts, v.created_at, v.expires_at," \
	"  v.verified_at, m.dispatch_state, m.delivery_status, m.provider_uuid, m.error_code," \
	"  " error_text ", greatest(v.updated_at, m.updated_at), v.max_attempts" \
	" FROM plivo_otp.verifications v" \
	" LEFT JOIN LATERAL (SELECT * FROM plivo_otp.messages" \
	"   WHERE verification_id = v.id ORDER BY created_at DESC LIMIT 1) m ON true" \
	error_join \
	" WHERE v.id = $1"

/* error_text: for a call, the meaning of its hang-up cause (PLIVO_OTP_ERROR_TEXT). */
static PlivoOtpStatement read_status = {
	READ_STATUS(PLIVO_OTP_ERROR_TEXT("m"), ""), 2, {UUIDOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_pkey messages_verification"
};

/* 0.1.0's tables, while an upgrade is pending: SMS only. */
static PlivoOtpStatement read_status_v1 = {
	READ_STATUS("coalesce(ec.meaning, m.last_error)",
				" LEFT JOIN plivo_otp.plivo_error_codes ec ON ec.code = m.error_code"),
	2, {UUIDOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_pkey messages_verification"
};

/* A pending code, canceled by its id, then its unsent messages (as otp_send cancels). */
static PlivoOtpStatement cancel_by_id = {
	"UPDATE plivo_otp.verifications SET state = 'canceled', updated_at = $2, code_sealed = NULL"
	" WHERE id = $1 AND state = 'pending' AND expires_at > $2",
	2, {UUIDOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_pkey"
};

static PlivoOtpStatement cancel_by_id_v1 = {
	"UPDATE plivo_otp.verifications SET state = 'canceled', updated_at = $2"
	" WHERE id = $1 AND state = 'pending' AND expires_at > $2",
	2, {UUIDOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_pkey"
};

/*
 * A code's unsent messages, by its id.  The state is a parameter ('pending')
 * and the plan always generic: no partial index on pending rows can serve
 * it, so stale statistics that call those indexes empty (as after a bulk of
 * deliveries) cannot turn it into a walk of every pending message; what is
 * left is the lookup by key (messages_verification).
 */
static PlivoOtpStatement cancel_unsent = {
	"UPDATE plivo_otp.messages SET dispatch_state = 'canceled', body = NULL, updated_at = $2"
	" WHERE verification_id = $1 AND dispatch_state = $3",
	3, {UUIDOID, TIMESTAMPTZOID, TEXTOID}, NULL, CURSOR_OPT_GENERIC_PLAN,
	.forced_plan = true, .indexes = "messages_verification"
};

/*
 * Cancel the unsent messages of a code this transaction just canceled (SPI
 * connected): otp_cancel's, and otp_send's when a new code replaces one.
 */
void
plivo_otp_cancel_unsent_messages(Datum code_id, TimestampTz now)
{
	Datum		args[3];

	args[0] = code_id;
	args[1] = TimestampTzGetDatum(now);
	args[2] = CStringGetTextDatum("pending");
	plivo_otp_exec(&cancel_unsent, args, NULL, false, 0);
}

Datum
plivo_otp_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	pg_uuid_t  *id = PG_GETARG_UUID_P(0);
	Datum		args[2];
	Datum		values[STATUS_COLUMNS];
	bool		nulls[STATUS_COLUMNS];
	bool		isnull;
	int			max_attempts;
	int			failures;

	plivo_otp_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	plivo_otp_spi_connect();
	args[0] = UUIDPGetDatum(id);
	args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	if (plivo_otp_exec(plivo_otp_schema_is_v2() ? &read_status : &read_status_v1,
					   args, NULL, false, 1) == 1)
	{
		MemoryContext spi_context = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);

		for (int col = 0; col < STATUS_COLUMNS; col++)
			values[col] = plivo_otp_get(0, col + 1, &nulls[col]);

		/* Mask the number; the full number never leaves the tables. */
		values[3] = CStringGetTextDatum(plivo_otp_mask_phone(TextDatumGetCString(values[3])));

		/* Failures that rolled back still used attempts. */
		max_attempts = DatumGetInt32(plivo_otp_get(0, STATUS_COLUMNS + 1, &isnull));
		failures = plivo_otp_ledger_failures(id);
		failures = Max(max_attempts - DatumGetInt32(values[4]), failures);
		values[4] = Int32GetDatum(Max(0, max_attempts - failures));

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextSwitchTo(spi_context);
	}
	SPI_finish();
	return (Datum) 0;
}

Datum
plivo_otp_cancel(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = PG_GETARG_UUID_P(0);
	Datum		args[2];
	bool		canceled;

	plivo_otp_require_preload();
	plivo_otp_spi_connect();
	args[0] = UUIDPGetDatum(id);
	args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	canceled = plivo_otp_exec(plivo_otp_schema_is_v2() ? &cancel_by_id : &cancel_by_id_v1,
							  args, NULL, false, 0) > 0;
	if (canceled)
		plivo_otp_cancel_unsent_messages(args[0], DatumGetTimestampTz(args[1]));
	SPI_finish();
	PG_RETURN_BOOL(canceled);
}
