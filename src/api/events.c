/*-------------------------------------------------------------------------
 *
 * events.c
 *	  The trigger of plivo_otp.messages and plivo_otp.verifications that
 *	  sends NOTIFY plivo_otp_events when a message or a code changes to a
 *	  state an application may wait for.
 *
 * The triggers' WHEN clauses (see the "Events" block of the 0.2.0 script)
 * fire this function only on a real change to one of those states, so the
 * dispatcher's claims, retries and the attempts that leave a code pending
 * cost nothing here.  The notification is queued with Async_Notify in the
 * transaction (or subtransaction) that makes the change: PostgreSQL
 * delivers it at commit, and drops it on rollback.  The payload is one JSON
 * object:
 *
 *	{"verification_id": "...", "message_id": "...", "event": "...",
 *	 "state": "...", "channel": "sms" | "voice"}
 *
 * message_id only for a message's events.  Events of a message:
 * message_accepted, message_refused, message_expired, message_unknown,
 * message_canceled (its dispatch state; state is that state), then
 * message_delivered (SMS delivered, call completed) or message_failed (any
 * other final delivery status; state is Plivo's word).  Events of a code:
 * code_approved, code_expired, code_locked (state max_attempts),
 * code_canceled.  A payload never holds a number or a code: only ids and
 * state words.  plivo_otp.events = off sends none.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_events_notify);

/*
 * Plivo's final delivery statuses: an SMS's (delivered, undelivered, failed,
 * rejected) and a call's (completed, busy, failed, timeout, no-answer,
 * canceled); the triggers' WHEN clause names the same words.
 */
static const char *const final_statuses[] = {
	"delivered", "undelivered", "failed", "rejected",
	"completed", "busy", "timeout", "no-answer", "canceled"
};

static bool
is_final_status(const char *status)
{
	for (int i = 0; i < lengthof(final_statuses); i++)
	{
		if (strcmp(status, final_statuses[i]) == 0)
			return true;
	}
	return false;
}

/* The column of desc named name; an ERROR if the table has none. */
static int
column_number(TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "plivo_otp: events_notify: the table has no column %s", name);
	return attnum;
}

/* The text of column name in tuple, NULL if it is null. */
static char *
text_column(HeapTuple tuple, TupleDesc desc, const char *name)
{
	bool		isnull;
	Datum		value = heap_getattr(tuple, column_number(desc, name), desc, &isnull);

	return isnull ? NULL : TextDatumGetCString(value);
}

/* The uuid in column name of tuple, as text. */
static char *
uuid_column(HeapTuple tuple, TupleDesc desc, const char *name)
{
	bool		isnull;
	Datum		value = heap_getattr(tuple, column_number(desc, name), desc, &isnull);

	return isnull ? NULL : DatumGetCString(DirectFunctionCall1(uuid_out, value));
}

/* Did column name change from old to new? */
static bool
changed(HeapTuple old, HeapTuple new, TupleDesc desc, const char *name)
{
	char	   *before = text_column(old, desc, name);
	char	   *after = text_column(new, desc, name);

	if (before == NULL || after == NULL)
		return before != after;
	return strcmp(before, after) != 0;
}

/* Queue one notification; message_id may be NULL. */
static void
notify(const char *verification_id, const char *message_id, const char *event,
	   const char *state, const char *channel)
{
	StringInfoData payload;

	initStringInfo(&payload);
	appendStringInfoString(&payload, "{\"verification_id\": ");
	escape_json(&payload, verification_id);
	if (message_id != NULL)
	{
		appendStringInfoString(&payload, ", \"message_id\": ");
		escape_json(&payload, message_id);
	}
	appendStringInfoString(&payload, ", \"event\": ");
	escape_json(&payload, event);
	appendStringInfoString(&payload, ", \"state\": ");
	escape_json(&payload, state);
	appendStringInfoString(&payload, ", \"channel\": ");
	escape_json(&payload, channel);
	appendStringInfoChar(&payload, '}');
	Async_Notify(PLIVO_OTP_EVENTS_CHANNEL, payload.data);
	pfree(payload.data);
}

/* A message's dispatch state or final delivery status changed. */
static void
message_events(HeapTuple old, HeapTuple new, TupleDesc desc)
{
	char	   *verification_id = uuid_column(new, desc, "verification_id");
	char	   *message_id = uuid_column(new, desc, "id");
	char	   *channel = text_column(new, desc, "channel");
	char	   *dispatch_state = text_column(new, desc, "dispatch_state");
	char	   *status = text_column(new, desc, "delivery_status");

	/* The WHEN clause let only the states that make an event through. */
	if (changed(old, new, desc, "dispatch_state") &&
		strcmp(dispatch_state, "pending") != 0 && strcmp(dispatch_state, "sending") != 0)
		notify(verification_id, message_id,
			   psprintf("message_%s", dispatch_state), dispatch_state, channel);
	if (status != NULL && changed(old, new, desc, "delivery_status") &&
		is_final_status(status))
		notify(verification_id, message_id,
			   strcmp(status, "delivered") == 0 || strcmp(status, "completed") == 0 ?
			   "message_delivered" : "message_failed",
			   status, channel);
}

/* A code left 'pending' (or moved between final states by hand). */
static void
verification_event(HeapTuple new, TupleDesc desc)
{
	char	   *state = text_column(new, desc, "state");
	const char *event;

	if (strcmp(state, "approved") == 0)
		event = "code_approved";
	else if (strcmp(state, "expired") == 0)
		event = "code_expired";
	else if (strcmp(state, "max_attempts") == 0)
		event = "code_locked";
	else if (strcmp(state, "canceled") == 0)
		event = "code_canceled";
	else
		return;
	notify(uuid_column(new, desc, "id"), NULL, event, state, text_column(new, desc, "channel"));
}

Datum
plivo_otp_events_notify(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "plivo_otp: events_notify runs only as an AFTER UPDATE row trigger with one argument");
	if (!plivo_otp_events)
		return PointerGetDatum(NULL);

	desc = RelationGetDescr(trigdata->tg_relation);
	if (strcmp(trigdata->tg_trigger->tgargs[0], "message") == 0)
		message_events(trigdata->tg_trigtuple, trigdata->tg_newtuple, desc);
	else if (strcmp(trigdata->tg_trigger->tgargs[0], "verification") == 0)
		verification_event(trigdata->tg_newtuple, desc);
	else
		elog(ERROR, "plivo_otp: events_notify: unknown table kind \"%s\"",
			 trigdata->tg_trigger->tgargs[0]);
	return PointerGetDatum(NULL);
}
