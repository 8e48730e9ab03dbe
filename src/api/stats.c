/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  plivo_otp.dispatcher_stats(): the state of the outbound queue and of
 *	  the dispatcher, for monitoring.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_dispatcher_stats);
PG_FUNCTION_INFO_V1(plivo_otp_api_stats);

#define STATS_COLUMNS 11
#define API_STATS_COLUMNS 7

/*
 * The queue: each kind from its own partial index of pending rows
 * (messages_due_sms, messages_due_voice: (next_try_at, id)), read alone.
 */
#define QUEUE_OF(channel) \
	"SELECT count(*) AS n, min(next_try_at) FILTER (WHERE next_try_at <= $1) AS due" \
	" FROM plivo_otp.messages WHERE dispatch_state = 'pending' AND channel = '" channel "'"

static PlivoOtpStatement queue_state = {
	"SELECT sum(n)::bigint, $1 - min(due) FROM (" QUEUE_OF("sms") " UNION ALL " QUEUE_OF("voice") ") q",
	1, {TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "messages_due_sms messages_due_voice"
};

Datum
plivo_otp_dispatcher_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[STATS_COLUMNS];
	bool		nulls[STATS_COLUMNS] = {0};
	PlivoOtpDispatcherSnapshot snap;
	Datum		args[1];
	bool		isnull;
	Datum		age;

	plivo_otp_require_preload();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "plivo_otp: return type must be a row type");
	plivo_otp_dispatcher_snapshot(&snap);

	plivo_otp_spi_connect();
	args[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	plivo_otp_exec(&queue_state, args, NULL, true, 1);
	values[0] = Int64GetDatum(DatumGetInt64(plivo_otp_get(0, 1, &isnull)));
	age = plivo_otp_get(0, 2, &nulls[1]);
	values[1] = nulls[1] ? (Datum) 0 : SPI_datumTransfer(age, false, sizeof(Interval));
	SPI_finish();

	values[2] = Int32GetDatum(snap.inflight);
	values[3] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_ACCEPTED]);
	values[4] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_RETRIED]);
	values[5] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_REFUSED]);
	values[6] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_EXPIRED]);
	values[7] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_UNKNOWN]);
	values[8] = CStringGetTextDatum(snap.last_error);
	nulls[8] = snap.last_error[0] == '\0';
	values[9] = TimestampTzGetDatum(snap.last_error_at);
	nulls[9] = snap.last_error_at == 0;
	values[10] = Int32GetDatum(snap.pid);
	nulls[10] = snap.pid == 0;

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * Sends, refused sends, approvals and failed checks since counters_since,
 * the sends the global hourly cap counts now, and the SMS segments queued
 * (common/outbound.c: what the texts are billed as).
 */
Datum
plivo_otp_api_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[API_STATS_COLUMNS];
	bool		nulls[API_STATS_COLUMNS] = {0};
	PlivoOtpDispatcherSnapshot snap;

	plivo_otp_require_preload();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "plivo_otp: return type must be a row type");
	plivo_otp_dispatcher_snapshot(&snap);
	values[0] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_SENDS]);
	values[1] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_REFUSED_SENDS]);
	values[2] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_VERIFY_APPROVED]);
	values[3] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_VERIFY_FAILED]);
	values[4] = TimestampTzGetDatum(snap.counters_since);
	plivo_otp_spi_connect();
	values[5] = Int64GetDatum(plivo_otp_budget_count(GetCurrentTimestamp()));
	SPI_finish();
	values[6] = Int64GetDatum((int64) snap.counters[PLIVO_OTP_COUNTER_SMS_SEGMENTS]);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
