/*-------------------------------------------------------------------------
 *
 * senders_trigger.c
 *	  The trigger of plivo_otp.senders: a row is refused unless its prefix
 *	  and its sender are of a form Plivo accepts for its channel
 *	  (common/senders.c), and updated_at is set on every change.  Also the
 *	  test-only C symbol plivo_otp_sender_for_sql(channel, phone, region):
 *	  the table's choice for a region given by the test, so the rule can be
 *	  tested whatever the library knows of regions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_senders_check);
PG_FUNCTION_INFO_V1(plivo_otp_sender_for_sql);

/* The text value of column name of tuple, or NULL (a NOT NULL column refuses that later). */
static char *
column_text(HeapTuple tuple, TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "plivo_otp: plivo_otp.senders has no column %s", name);
	return SPI_getvalue(tuple, desc, attnum);
}

Datum
plivo_otp_senders_check(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	TupleDesc	desc;
	char	   *prefix;
	char	   *channel;
	char	   *sender;
	const char *problem;
	const char *hint;
	int			cols[1];
	Datum		values[1];
	bool		nulls[1] = {false};

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		elog(ERROR, "plivo_otp: senders_check runs only as a BEFORE INSERT OR UPDATE row trigger");
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple : trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);

	prefix = column_text(tuple, desc, "prefix");
	channel = column_text(tuple, desc, "channel");
	sender = column_text(tuple, desc, "sender");
	if (prefix && !plivo_otp_valid_sender_prefix(prefix))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid prefix \"%s\" in plivo_otp.senders", prefix),
				 errdetail("A prefix is an ISO region code of two capital letters or a calling-code prefix of 1 to 15 digits."),
				 errhint("Give a region such as 'GB' or 'JM', or digits without '+' such as '44' or '1876'.")));
	/* (The column's CHECK refuses any other channel.) */
	if (channel && sender && (strcmp(channel, "sms") == 0 || strcmp(channel, "voice") == 0) &&
		(problem = plivo_otp_sender_problem(channel, sender, &hint)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s sender \"%s\" in plivo_otp.senders: %s", channel, sender, problem),
				 errhint("%s", hint)));

	cols[0] = SPI_fnumber(desc, "updated_at");
	if (cols[0] <= 0)
		elog(ERROR, "plivo_otp: plivo_otp.senders has no column updated_at");
	values[0] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, desc, 1, cols, values, nulls));
}

/* Test only: the table's sender for (channel, phone, region), or NULL. */
Datum
plivo_otp_sender_for_sql(PG_FUNCTION_ARGS)
{
	char	   *channel = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *phone = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *region = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *sender;
	text	   *result = NULL;
	MemoryContext caller = CurrentMemoryContext;

	plivo_otp_spi_connect();
	sender = plivo_otp_table_sender(channel, phone, region);
	if (sender)
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		result = cstring_to_text(sender);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(result);
}
