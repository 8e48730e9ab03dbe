/*-------------------------------------------------------------------------
 *
 * delivery.c
 *	  Authenticated message-status and call hang-up callbacks become
 *	  delivery events and delivery states, idempotently and monotonically.
 *
 * Used by the listener and by ingest_callback(), inside their transaction
 * (SPI connected).  A callback with a MessageUUID is a message's; one with
 * a CallStatus and no MessageUUID is a call's (see "Calls" below).
 *	0. a request that only V2 authenticated counts only for the message its
 *	   URL names (the token of {public_url}/plivo/sms-status/{token} is the
 *	   message's id), and only while that message is younger than
 *	   PLIVO_OTP_NONCE_WINDOW_SECS.  V2 signs the URL and the nonce, not the
 *	   body, so a V2 signature never presented to us (or presented once its
 *	   nonce is forgotten) would otherwise carry any body naming any
 *	   message.  Refused, recording nothing: V2 on a URL naming no message
 *	   of ours (the bare route among them), a MessageUUID other than the
 *	   one recorded for the URL's message, a message older than the window.
 *	   When the message's UUID is not recorded yet (an early callback), the
 *	   event is held keyed to the message (provider_uuid HELD_PREFIX + its
 *	   id), and becomes an ordinary event once the UUID is recorded, only
 *	   if it names that UUID; otherwise it is dropped;
 *	1. the nonce (and the other family's nonce of a request signed with
 *	   both) is recorded in callback_nonces; a nonce seen before is a
 *	   replay and changes nothing.  It is recorded in the same transaction
 *	   as the event, so a first try that failed does not burn the nonce of
 *	   Plivo's retry;
 *	2. the event is stored, unique on (MessageUUID, Status, Sequence): a
 *	   duplicate changes nothing;
 *	3. the event waits (applied_at NULL) until its message's UUID is known,
 *	   at once if it already is; the message then takes the status if it
 *	   moves forward:
 *	   queued < sent < a final status (delivered, undelivered, failed,
 *	   rejected); one final status replaces another only with a higher
 *	   Sequence.  Plivo's words go to delivery_status, never dispatch_state.
 * One statement applies events in both cases: right after a callback is
 * stored, and when the dispatcher has recorded UUIDs (and every second), for
 * callbacks that beat its commit; held events are settled just before.
 * Only UUIDs that the extension sent ever change a message: an event whose
 * UUID is still unknown (or held for a message whose UUID is)
 * WAITING_EVENT_SECS after it arrived was not an early callback (a UUID
 * never sent, or a message purged since), and the sweep drops it, so such
 * events cannot pile up.
 *
 * Calls.  A call's events are keyed by its RequestUUID (ALegRequestUUID
 * when there is none), the provider_uuid the dispatcher recorded; Plivo
 * signs voice callbacks with V3 only, and only V3 is accepted for them
 * (PLIVO_INGEST_V3_REQUIRED; nothing is recorded, not even the nonce).
 * status is CallStatus, error_code the HangupCauseCode of a final status
 * (without one, last_error its HangupCause), and a final status wipes the
 * call's sealed sentence: no fetch of its script can follow.  The hang-up
 * URL names the message, so a call left 'unknown' adopts the callback's
 * RequestUUID there (plivo_otp_adopt_call_uuid).
 * Calls have no Sequence (every event has -1): in-progress (recorded by
 * voice_answer.c when the call fetched its script) < a final status
 * (completed, busy, failed, timeout, no-answer, canceled), and one final
 * status never replaces another.  The ranks depend on the message's
 * channel, so neither kind of callback can carry the other's words.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "listener.h"

/* An event for a message UUID not recorded within this long is dropped. */
#define WAITING_EVENT_SECS 300

/* The rank of status s for message m: 0 (never applied) to 3 (final). */
#define RANK(s) \
	"CASE WHEN m.channel = 'voice' THEN CASE " s \
	" WHEN 'ringing' THEN 1 WHEN 'in-progress' THEN 1" \
	" WHEN 'completed' THEN 3 WHEN 'busy' THEN 3 WHEN 'failed' THEN 3" \
	" WHEN 'timeout' THEN 3 WHEN 'no-answer' THEN 3 WHEN 'canceled' THEN 3 ELSE 0 END" \
	" ELSE CASE " s " WHEN 'queued' THEN 1 WHEN 'sent' THEN 2" \
	" WHEN 'delivered' THEN 3 WHEN 'undelivered' THEN 3 WHEN 'failed' THEN 3" \
	" WHEN 'rejected' THEN 3 ELSE 0 END END"

/* Does status s with sequence seq move message m forward? */
#define MOVES_FORWARD(s, seq) \
	"(" RANK(s) " > " RANK("m.delivery_status") \
	" OR (" RANK(s) " = 3 AND " RANK("m.delivery_status") " = 3" \
	" AND " seq " > coalesce(m.delivery_sequence, -1)))"

/*
 * Plivo's ErrorCode is kept for an SMS's failures only ("000" means none);
 * a call's HangupCauseCode for its final status.
 */
#define ERROR_CODE_FOR(status, code) \
	"CASE WHEN m.channel = 'voice' THEN CASE WHEN " RANK(status) " = 3" \
	" AND " code " <> '' THEN " code " END" \
	" WHEN " status " IN ('undelivered', 'failed', 'rejected')" \
	" AND " code " NOT IN ('', '000', '0') THEN " code " END"

/*
 * A call's final status without a HangupCauseCode (Plivo documents only
 * HangupCause for the hang-up callback) keeps the cause's name in
 * last_error, which error_text shows when there is no code to look up.
 */
#define CAUSE_NAME(e) \
	"coalesce(nullif(" e ".params->>'HangupCause', ''), nullif(" e ".params->>'HangupCauseName', ''))"
#define CAUSE_FOR(best) \
	"CASE WHEN m.channel = 'voice' AND " RANK(best ".status") " = 3" \
	" AND coalesce(" best ".error_code, '') = '' AND " best ".cause_name IS NOT NULL" \
	" THEN left(" best ".cause_name, 200) ELSE m.last_error END"

/*
 * The provider_uuid of an event held for a message (rule 0): this prefix
 * and the message's id; Plivo's UUIDs never take this form.
 */
#define HELD_PREFIX "message:"
#define HELD_KEY_RE "^" HELD_PREFIX \
	"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

/* The message a token names: its UUID (if recorded), and is it too old for V2? */
static PlivoOtpStatement message_of_token = {
	"SELECT provider_uuid, created_at <= $2 FROM plivo_otp.messages WHERE id = $1::uuid",
	2, {TEXTOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "messages_pkey"
};

/*
 * Held events of messages whose UUID has been recorded: each becomes an
 * ordinary event if its MessageUUID is that UUID, and is dropped if not.
 */
static PlivoOtpStatement settle_held = {
	"WITH held AS ("
	" DELETE FROM plivo_otp.delivery_events e USING plivo_otp.messages m"
	" WHERE e.applied_at IS NULL AND e.provider_uuid LIKE '" HELD_PREFIX "%'"
	" AND m.id = CASE WHEN e.provider_uuid ~ '" HELD_KEY_RE "'"
	"  THEN split_part(e.provider_uuid, ':', 2)::uuid END"
	" AND m.provider_uuid IS NOT NULL"
	" RETURNING m.provider_uuid AS uuid, e.status, e.sequence, e.error_code, e.params,"
	"  e.received_at)"
	" INSERT INTO plivo_otp.delivery_events"
	" (provider_uuid, status, sequence, error_code, params, received_at)"
	" SELECT uuid, status, sequence, error_code, params, received_at FROM held"
	" WHERE params->>'MessageUUID' = uuid"
	" ON CONFLICT (provider_uuid, status, sequence) DO NOTHING",
	0, {InvalidOid},
	/*
	 * Each held event's message by its key: with statistics that saw no
	 * UUID recorded, the planner read every message with a UUID (the
	 * history, through messages_provider_uuid_key) once a second and
	 * matched the held events against them: 515 ms a second beside
	 * 1,000,000 rows (bench history, BENCH_PSS=1).
	 */
	.indexes = "delivery_events_unapplied messages_pkey"
};

/*
 * A call whose Make Call outcome was 'unknown' (no UUID recorded) takes the
 * RequestUUID of a V3-signed request that names it, unless another message
 * has that UUID: Plivo evidently placed it.  A row someone holds is skipped.
 */
static PlivoOtpStatement adopt_call_uuid = {
	"UPDATE plivo_otp.messages SET provider_uuid = $2, dispatch_state = 'accepted',"
	"  accepted_at = coalesce(accepted_at, $3), updated_at = $3"
	" WHERE id = (SELECT id FROM plivo_otp.messages WHERE id = $1 AND channel = 'voice'"
	"  AND provider_uuid IS NULL AND dispatch_state = 'unknown' FOR UPDATE SKIP LOCKED)"
	" AND provider_uuid IS NULL AND dispatch_state = 'unknown'"
	" AND NOT EXISTS (SELECT 1 FROM plivo_otp.messages o WHERE o.provider_uuid = $2)",
	3, {UUIDOID, TEXTOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "messages_pkey messages_provider_uuid_key"
};

static PlivoOtpStatement record_nonce = {
	"INSERT INTO plivo_otp.callback_nonces (nonce, seen_at)"
	" SELECT n, $2 FROM pg_catalog.unnest(ARRAY[$1, $3]) n WHERE n IS NOT NULL"
	" ON CONFLICT DO NOTHING",
	3, {TEXTOID, TIMESTAMPTZOID, TEXTOID}
};

static PlivoOtpStatement record_event = {
	"INSERT INTO plivo_otp.delivery_events"
	" (provider_uuid, status, sequence, error_code, params, received_at)"
	" VALUES ($1, $2, $3, nullif($4, ''), $5::jsonb, $6)"
	" ON CONFLICT (provider_uuid, status, sequence) DO NOTHING",
	6, {TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID}
};

/*
 * Apply waiting events (applied_at NULL) whose message UUID is known: for
 * each message the best of its waiting events, if it moves the message
 * forward.  One statement text serves two plans: for the UUID of a callback
 * just stored ($2, an index lookup), and a sweep of them all (events that
 * beat the dispatcher's commit of their UUID).
 */
#define APPLY_WAITING(filter) \
	"WITH best AS (" \
	" SELECT DISTINCT ON (e.provider_uuid) e.provider_uuid, e.status, e.sequence, e.error_code," \
	"  " CAUSE_NAME("e") " AS cause_name" \
	" FROM plivo_otp.delivery_events e" \
	" JOIN plivo_otp.messages m ON m.provider_uuid = e.provider_uuid" \
	" WHERE e.applied_at IS NULL" filter \
	" ORDER BY e.provider_uuid, " RANK("e.status") " DESC, e.sequence DESC)," \
	" moved AS (" \
	" UPDATE plivo_otp.messages m SET delivery_status = best.status," \
	"  delivery_sequence = best.sequence," \
	"  error_code = " ERROR_CODE_FOR("best.status", "coalesce(best.error_code, '')") "," \
	"  last_error = " CAUSE_FOR("best") "," \
	"  body = CASE WHEN m.channel = 'voice' AND " RANK("best.status") " = 3" \
	"   THEN NULL ELSE m.body END," \
	"  updated_at = $1" \
	" FROM best WHERE m.provider_uuid = best.provider_uuid" \
	"  AND " MOVES_FORWARD("best.status", "best.sequence") ")" \
	" UPDATE plivo_otp.delivery_events e SET applied_at = $1" \
	" FROM plivo_otp.messages m" \
	" WHERE e.applied_at IS NULL" filter " AND m.provider_uuid = e.provider_uuid"

/* (The waiting events first, each one's message by its UUID: never the history.) */
#define APPLY_WAITING_INDEXES "delivery_events_unapplied messages_provider_uuid_key"

static PlivoOtpStatement apply_waiting_for_uuid = {
	APPLY_WAITING(" AND e.provider_uuid = $2"),
	2, {TIMESTAMPTZOID, TEXTOID},
	.indexes = APPLY_WAITING_INDEXES
};

static PlivoOtpStatement apply_all_waiting = {
	APPLY_WAITING(""),
	1, {TIMESTAMPTZOID},
	.indexes = APPLY_WAITING_INDEXES
};

/* Events still waiting for a UUID no message has: not early, never sent. */
static PlivoOtpStatement drop_unknown_waiting = {
	"DELETE FROM plivo_otp.delivery_events WHERE id IN ("
	" SELECT e.id FROM plivo_otp.delivery_events e"
	" WHERE e.applied_at IS NULL AND e.received_at < $1"
	" AND NOT EXISTS (SELECT 1 FROM plivo_otp.messages m WHERE m.provider_uuid = e.provider_uuid)"
	" LIMIT 1000)",
	1, {TIMESTAMPTZOID},
	.indexes = "delivery_events_pkey delivery_events_unapplied messages_provider_uuid_key"
};

/*
 * A batch of V3-signed message-status callbacks (plivo_otp_ingest_batch):
 * one statement each for the nonces, the events and applying them,
 * whatever the batch's size.  Each takes arrays and looks rows up by
 * their unique keys, so no plan depends on the tables' statistics.
 *
 * The nonces: $1 lists every nonce of the batch; a row per position that
 * is the first of its nonce and inserted it (a nonce seen before, or
 * earlier in the batch, returns nothing).
 */
static PlivoOtpStatement record_batch_nonces = {
	"WITH c AS (SELECT n, i FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS c (n, i)),"
	" ins AS (INSERT INTO plivo_otp.callback_nonces (nonce, seen_at)"
	"  SELECT n, $2 FROM c ORDER BY i ON CONFLICT DO NOTHING RETURNING nonce)"
	" SELECT pg_catalog.min(c.i) FROM c JOIN ins ON ins.nonce = c.n GROUP BY c.n",
	2, {TEXTARRAYOID, TIMESTAMPTZOID}
};

/* The events, in arrival order; one stored before (or twice here) is kept once. */
static PlivoOtpStatement record_batch_events = {
	"INSERT INTO plivo_otp.delivery_events"
	" (provider_uuid, status, sequence, error_code, params, received_at)"
	" SELECT u, s, q, nullif(c, ''), p::jsonb, $6"
	" FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]),"
	"  pg_catalog.unnest($3::int8[]), pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::text[]))"
	"  WITH ORDINALITY AS x (u, s, q, c, p, i)"
	" ORDER BY i"
	" ON CONFLICT (provider_uuid, status, sequence) DO NOTHING",
	6, {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID}
};

static PlivoOtpStatement apply_waiting_for_uuids = {
	APPLY_WAITING(" AND e.provider_uuid = ANY ($2)"),
	2, {TIMESTAMPTZOID, TEXTARRAYOID},
	.indexes = APPLY_WAITING_INDEXES
};

/* uuid: one message's events; NULL: every waiting event. */
static int
apply_waiting_events(const char *uuid)
{
	Datum		args[2];

	args[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	if (uuid == NULL)
		return plivo_otp_exec_forced(&apply_all_waiting, args, NULL, 0);
	args[1] = CStringGetTextDatum(uuid);
	return plivo_otp_exec_forced(&apply_waiting_for_uuid, args, NULL, 0);
}

/* The callback's parameters as a JSON object, kept with the event. */
static char *
params_json(const PlivoParam *params, int nparams)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < nparams; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, params[i].key);
		appendStringInfoChar(&buf, ':');
		escape_json(&buf, params[i].value);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* The fields of a message-status callback that its event keeps. */
typedef struct MessageCallback
{
	const char *uuid;			/* MessageUUID */
	const char *status;
	int64		sequence;		/* -1 when absent or not a number */
	const char *error_code;		/* "" when absent */
} MessageCallback;

/* A call's hang-up callback: a CallStatus and no MessageUUID. */
static bool
is_call_callback(const PlivoParam *params, int nparams)
{
	const char *uuid = plivo_otp_find_param(params, nparams, "MessageUUID", false);

	return (uuid == NULL || uuid[0] == '\0') &&
		plivo_otp_find_param(params, nparams, "CallStatus", false) != NULL;
}

/* Read a message-status callback into *cb; false if it is incomplete. */
static bool
read_message_callback(const PlivoParam *params, int nparams, MessageCallback *cb)
{
	const char *sequence_text = plivo_otp_find_param(params, nparams, "Sequence", false);
	const char *error_code = plivo_otp_find_param(params, nparams, "ErrorCode", false);

	cb->uuid = plivo_otp_find_param(params, nparams, "MessageUUID", false);
	cb->status = plivo_otp_find_param(params, nparams, "Status", false);
	cb->sequence = -1;
	cb->error_code = error_code ? error_code : "";
	if (cb->uuid == NULL || cb->uuid[0] == '\0' || cb->status == NULL ||
		cb->status[0] == '\0' || strlen(cb->uuid) > 64 || strlen(cb->status) > 32)
		return false;
	if (sequence_text)
	{
		char	   *end;
		long long	v = strtoll(sequence_text, &end, 10);

		if (*sequence_text != '\0' && *end == '\0' && v >= 0)
			cb->sequence = v;
	}
	return true;
}

/*
 * May a request that only V2 authenticated, for the message token names,
 * record an event for uuid?  (Rule 0.)  PLIVO_INGEST_RECORDED if so, with
 * *held set when the message's UUID is not recorded yet; otherwise why not.
 */
static PlivoIngestResult
check_v2_binding(const char *uuid, const char *token, TimestampTz now, bool *held)
{
	Datum		args[2];
	bool		isnull;
	char	   *recorded;

	*held = false;
	if (token == NULL)
		return PLIVO_INGEST_V2_UNBOUND;
	args[0] = CStringGetTextDatum(token);
	args[1] = TimestampTzGetDatum(now - (int64) PLIVO_OTP_NONCE_WINDOW_SECS * USECS_PER_SEC);
	if (plivo_otp_exec(&message_of_token, args, NULL, true, 1) == 0)
		return PLIVO_INGEST_V2_UNBOUND;
	if (DatumGetBool(plivo_otp_get(0, 2, &isnull)))
		return PLIVO_INGEST_STALE_V2;
	recorded = plivo_otp_get_text(0, 1);
	if (recorded == NULL)
		*held = true;
	else if (strcmp(recorded, uuid) != 0)
		return PLIVO_INGEST_V2_OTHER_MESSAGE;
	return PLIVO_INGEST_RECORDED;
}

/*
 * Record the request's nonces (rule 1); false if any was seen before, and
 * then nothing was recorded.  other_nonce may be NULL.
 */
bool
plivo_otp_record_nonces(const char *nonce, const char *other_nonce)
{
	Datum		args[3];

	args[0] = CStringGetTextDatum(nonce);
	args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	args[2] = other_nonce ? CStringGetTextDatum(other_nonce) : (Datum) 0;
	return plivo_otp_exec(&record_nonce, args, other_nonce ? "   " : "  n", false, 0) ==
		(other_nonce ? 2 : 1);
}

/*
 * Store one event of a call and apply it if its UUID is known (rule 2 and
 * 3); false for a duplicate.  error_code may be NULL.
 */
bool
plivo_otp_record_call_event(const char *uuid, const char *status, const char *error_code,
							const PlivoParam *params, int nparams)
{
	Datum		args[6];

	args[0] = CStringGetTextDatum(uuid);
	args[1] = CStringGetTextDatum(status);
	args[2] = Int64GetDatum(-1);
	args[3] = CStringGetTextDatum(error_code ? error_code : "");
	args[4] = CStringGetTextDatum(params_json(params, nparams));
	args[5] = TimestampTzGetDatum(GetCurrentTimestamp());
	if (plivo_otp_exec(&record_event, args, NULL, false, 0) == 0)
		return false;
	apply_waiting_events(uuid);
	return true;
}

/*
 * Adopt uuid as the provider_uuid of call message_id (a uuid Datum) if its
 * outcome was 'unknown' (see adopt_call_uuid); true if it was adopted.
 */
bool
plivo_otp_adopt_call_uuid(Datum message_id, const char *uuid)
{
	Datum		args[3];

	args[0] = message_id;
	args[1] = CStringGetTextDatum(uuid);
	args[2] = TimestampTzGetDatum(GetCurrentTimestamp());
	return plivo_otp_exec(&adopt_call_uuid, args, NULL, false, 0) > 0;
}

/*
 * A call's hang-up callback (see "Calls" above).  token: the message its
 * URL names ({public_url}/plivo/voice-status/{message id}), or NULL; a call
 * whose outcome was 'unknown' adopts the callback's UUID (V3 signs it), so
 * that an unanswered call placed after all shows its outcome.
 */
static PlivoIngestResult
ingest_call_callback(const PlivoParam *params, int nparams, const char *nonce,
					 const char *other_nonce, bool body_signed, const char *token)
{
	const char *uuid = plivo_otp_find_param(params, nparams, "RequestUUID", false);
	const char *status = plivo_otp_find_param(params, nparams, "CallStatus", false);
	const char *cause = plivo_otp_find_param(params, nparams, "HangupCauseCode", false);

	if (uuid == NULL || uuid[0] == '\0')
		uuid = plivo_otp_find_param(params, nparams, "ALegRequestUUID", false);
	if (uuid == NULL || uuid[0] == '\0' || status == NULL || status[0] == '\0' ||
		strlen(uuid) > 64 || strlen(status) > 32 || (cause && strlen(cause) > 32))
		return PLIVO_INGEST_INCOMPLETE;
	if (!body_signed)
		return PLIVO_INGEST_V3_REQUIRED;
	if (!plivo_otp_record_nonces(nonce, other_nonce))
		return PLIVO_INGEST_REPLAYED;
	if (token != NULL && plivo_otp_schema_is_v2())
		(void) plivo_otp_adopt_call_uuid(DirectFunctionCall1(uuid_in, CStringGetDatum(token)),
										 uuid);
	if (!plivo_otp_record_call_event(uuid, status, cause, params, nparams))
		return PLIVO_INGEST_DUPLICATE;
	return PLIVO_INGEST_RECORDED;
}

/*
 * Record one authenticated callback; see the rules above.  body_signed:
 * the signature that verified covers the parameters (V3), not just the URL
 * and nonce (V2).  token: the message the callback URL names, or NULL.
 */
PlivoIngestResult
plivo_otp_ingest_callback(const PlivoParam *params, int nparams, const char *nonce,
						  const char *other_nonce, bool body_signed, const char *token)
{
	MessageCallback cb;
	TimestampTz now = GetCurrentTimestamp();
	bool		held = false;
	const char *uuid;
	Datum		args[6];

	if (is_call_callback(params, nparams))
		return ingest_call_callback(params, nparams, nonce, other_nonce, body_signed, token);
	if (!read_message_callback(params, nparams, &cb))
		return PLIVO_INGEST_INCOMPLETE;
	uuid = cb.uuid;

	if (!body_signed)
	{
		PlivoIngestResult bound = check_v2_binding(uuid, token, now, &held);

		if (bound != PLIVO_INGEST_RECORDED)
			return bound;
	}

	/* Every nonce the request carries must be new. */
	if (!plivo_otp_record_nonces(nonce, other_nonce))
		return PLIVO_INGEST_REPLAYED;

	args[0] = CStringGetTextDatum(held ? psprintf(HELD_PREFIX "%s", token) : uuid);
	args[1] = CStringGetTextDatum(cb.status);
	args[2] = Int64GetDatum(cb.sequence);
	args[3] = CStringGetTextDatum(cb.error_code);
	args[4] = CStringGetTextDatum(params_json(params, nparams));
	args[5] = TimestampTzGetDatum(now);
	if (plivo_otp_exec(&record_event, args, NULL, false, 0) == 0)
		return PLIVO_INGEST_DUPLICATE;

	/* Stored as waiting; applied now if the message's UUID is known. */
	if (!held)
		apply_waiting_events(uuid);
	return PLIVO_INGEST_RECORDED;
}

/*
 * Execute one of the batch statements with its generic plan, prepared
 * once: their plans are index lookups by unique keys whatever the arrays
 * hold, and a custom plan for each batch would cost more than the batch.
 */
static int
exec_batch_statement(PlivoOtpStatement *stmt, Datum *args)
{
	if (stmt->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(stmt->sql, stmt->nargs, stmt->argtypes,
											  CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "plivo_otp: SPI_prepare_cursor failed: %s",
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "plivo_otp: SPI_keepplan failed");
		stmt->plan = plan;
	}
	return plivo_otp_exec(stmt, args, NULL, false, 0);
}

/* A text[] of n C strings. */
static Datum
text_array(const char **strings, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(strings[i]);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Record the nonces of the batch's items whose result is still RECORDED
 * (rule 1); an item not all of whose nonces were new, seen before or
 * earlier in the batch, becomes REPLAYED.
 */
static void
record_nonces_of_batch(PlivoBatchItem *items, int n, TimestampTz now)
{
	const char **nonces = palloc(sizeof(char *) * n * 2);
	int		   *first = palloc(sizeof(int) * n);	/* position of items[i].nonce */
	bool	   *won;
	int			npos = 0;
	int			rows;
	Datum		args[2];

	for (int i = 0; i < n; i++)
	{
		if (!items[i].done || items[i].result != PLIVO_INGEST_RECORDED)
			continue;
		first[i] = npos;
		nonces[npos++] = items[i].nonce;
		if (items[i].other_nonce)
			nonces[npos++] = items[i].other_nonce;
	}
	if (npos == 0)
		return;
	args[0] = text_array(nonces, npos);
	args[1] = TimestampTzGetDatum(now);
	rows = exec_batch_statement(&record_batch_nonces, args);
	won = palloc0(sizeof(bool) * npos);
	for (int r = 0; r < rows; r++)
	{
		bool		isnull;
		int64		pos = DatumGetInt64(plivo_otp_get(r, 1, &isnull));

		if (!isnull && pos >= 1 && pos <= npos)
			won[pos - 1] = true;
	}
	for (int i = 0; i < n; i++)
	{
		if (!items[i].done || items[i].result != PLIVO_INGEST_RECORDED)
			continue;
		if (!won[first[i]] || (items[i].other_nonce && !won[first[i] + 1]))
			items[i].result = PLIVO_INGEST_REPLAYED;
	}
}

/*
 * Record a batch of authenticated callbacks in the caller's transaction
 * (SPI connected) with at most three statements, whatever its size: the
 * rules above for each item, as plivo_otp_ingest_callback would apply them
 * one after the other in the items' order.  Only V3-signed message-status
 * callbacks are taken (the common case); every other item is left with
 * done false, for the caller to record with plivo_otp_ingest_callback.  An
 * item taken gets done and its result, where PLIVO_INGEST_RECORDED also
 * covers an event stored before (both are answered alike).  After an ERROR
 * the results mean nothing: the caller rolls back and records the items
 * one by one.
 */
void
plivo_otp_ingest_batch(PlivoBatchItem *items, int n)
{
	TimestampTz now = GetCurrentTimestamp();
	int			room = Max(n, 1);
	const char **uuids = palloc(sizeof(char *) * room);
	const char **statuses = palloc(sizeof(char *) * room);
	const char **codes = palloc(sizeof(char *) * room);
	const char **params = palloc(sizeof(char *) * room);
	Datum	   *sequences = palloc(sizeof(Datum) * room);
	MessageCallback *cbs = palloc(sizeof(MessageCallback) * room);
	int			stored = 0;
	Datum		uuid_array;
	Datum		args[6];

	for (int i = 0; i < n; i++)
	{
		PlivoBatchItem *item = &items[i];

		item->done = item->body_signed && item->nonce != NULL &&
			!is_call_callback(item->params, item->nparams);
		if (item->done)
			item->result = read_message_callback(item->params, item->nparams, &cbs[i]) ?
				PLIVO_INGEST_RECORDED : PLIVO_INGEST_INCOMPLETE;
	}
	record_nonces_of_batch(items, n, now);

	/* Rules 2 and 3: store the events, then apply them. */
	for (int i = 0; i < n; i++)
	{
		if (!items[i].done || items[i].result != PLIVO_INGEST_RECORDED)
			continue;
		uuids[stored] = cbs[i].uuid;
		statuses[stored] = cbs[i].status;
		codes[stored] = cbs[i].error_code;
		params[stored] = params_json(items[i].params, items[i].nparams);
		sequences[stored] = Int64GetDatum(cbs[i].sequence);
		stored++;
	}
	if (stored == 0)
		return;
	uuid_array = text_array(uuids, stored);
	args[0] = uuid_array;
	args[1] = text_array(statuses, stored);
	args[2] = PointerGetDatum(construct_array(sequences, stored, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = text_array(codes, stored);
	args[4] = text_array(params, stored);
	args[5] = TimestampTzGetDatum(now);
	(void) exec_batch_statement(&record_batch_events, args);

	/*
	 * The index plan, forced, as the dispatcher runs the same statement: an
	 * ordinary generic plan is left to statistics that are stale right
	 * after a bulk commit, and a hash join would read every message.
	 */
	args[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	args[1] = uuid_array;
	(void) plivo_otp_exec_forced(&apply_waiting_for_uuids, args, NULL, 0);
}

/*
 * Apply the waiting events of these n message UUIDs, just recorded by the
 * dispatcher (callbacks that beat its commit); returns how many.  Events
 * held keyed to a message (not to its UUID) wait for the once-a-second
 * plivo_otp_apply_waiting_events.
 */
int
plivo_otp_apply_waiting_events_for(const char **uuids, int n)
{
	Datum		args[2];

	if (n == 0)
		return 0;
	args[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	args[1] = text_array(uuids, n);
	return plivo_otp_exec_forced(&apply_waiting_for_uuids, args, NULL, 0);
}

/*
 * Settle held events, apply events whose message UUID has been recorded
 * since, and drop those whose UUID was not recorded in time; returns how
 * many were applied.
 */
int
plivo_otp_apply_waiting_events(void)
{
	int			applied;
	Datum		args[1];

	plivo_otp_exec_forced(&settle_held, NULL, NULL, 0);
	applied = apply_waiting_events(NULL);

	args[0] = TimestampTzGetDatum(GetCurrentTimestamp() -
								  (int64) WAITING_EVENT_SECS * USECS_PER_SEC);
	/* (Counted for the listener's health: callbacks for no message of ours.) */
	plivo_otp_activity_add(PLIVO_OTP_ACT_CB_UNKNOWN_UUID,
						   (uint64) plivo_otp_exec_forced(&drop_unknown_waiting, args, NULL, 0));
	return applied;
}
