/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The dispatcher's statements on the outbound queue (plivo_otp.messages):
 *	  claim due rows, find the next due time, record an outcome, expire rows
 *	  that can no longer be sent, and recover rows left in flight.
 *
 * Every function runs inside a unit of work of common/worker.c (a short
 * transaction, SPI connected).  Rows are claimed FOR UPDATE SKIP LOCKED, so
 * a row an application holds is skipped, never waited for.  Only a row
 * still 'sending' takes an outcome: a row canceled or re-queued meanwhile
 * keeps what it was given.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "dispatcher.h"

static PlivoOtpStatement claim_due = {
	"WITH due AS ("
	" SELECT m.id FROM plivo_otp.messages m"
	" JOIN plivo_otp.verifications v ON v.id = m.verification_id AND v.state = 'pending'"
	" WHERE m.dispatch_state = 'pending' AND m.next_try_at <= $1"
	" ORDER BY m.next_try_at LIMIT $2 FOR UPDATE OF m SKIP LOCKED)"
	" UPDATE plivo_otp.messages m SET dispatch_state = 'sending', tries = tries + 1,"
	"  updated_at = $1"
	" FROM due WHERE m.id = due.id"
	" RETURNING m.id, m.phone, m.body, m.expires_at, m.tries",
	2, {TIMESTAMPTZOID, INT4OID}
};

/* Same rows as claim_due would take, so an unclaimable row cannot keep us spinning. */
static PlivoOtpStatement earliest_due = {
	"SELECT min(m.next_try_at) FROM plivo_otp.messages m"
	" JOIN plivo_otp.verifications v ON v.id = m.verification_id AND v.state = 'pending'"
	" WHERE m.dispatch_state = 'pending'",
	0, {0}
};

static PlivoOtpStatement store_outcome = {
	"UPDATE plivo_otp.messages SET dispatch_state = $2, provider_uuid = $3,"
	" http_status = $4, last_error = $5, next_try_at = coalesce($6, next_try_at),"
	" updated_at = $7,"
	" body = CASE WHEN $2 = 'pending' THEN body END"
	" WHERE id = $1 AND dispatch_state = 'sending'",
	7, {UUIDOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* Codes about to expire are not sent: Plivo takes message_expiry >= 5 s. */
static PlivoOtpStatement expire_unsendable = {
	"UPDATE plivo_otp.messages SET dispatch_state = 'expired', body = NULL,"
	" last_error = 'code expired before it could be sent', updated_at = $1"
	" WHERE dispatch_state = 'pending' AND expires_at <= $2",
	2, {TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* Codes that expired can no longer be re-delivered: wipe their seal. */
static PlivoOtpStatement wipe_expired_codes = {
	"UPDATE plivo_otp.verifications v SET code_sealed = NULL"
	" FROM (SELECT id FROM plivo_otp.verifications"
	"       WHERE code_sealed IS NOT NULL AND expires_at <= $1"
	"       LIMIT 1000 FOR UPDATE SKIP LOCKED) e"
	" WHERE v.id = e.id",
	1, {TIMESTAMPTZOID}
};

/* At start, rows left 'sending' were in flight when a dispatcher stopped. */
static PlivoOtpStatement recover_in_flight = {
	"UPDATE plivo_otp.messages SET dispatch_state = 'unknown', body = NULL,"
	" updated_at = $1,"
	" last_error = 'dispatcher stopped while the request was in flight; not re-sent'"
	" WHERE dispatch_state = 'sending'",
	1, {TIMESTAMPTZOID}
};

/*
 * Claim up to limit due rows: they are 'sending' once the unit of work
 * commits.  *rows (palloc'd in the current context) gets what sending them
 * needs; returns how many.
 */
int
plivo_otp_queue_claim(TimestampTz now, int limit, ClaimedMessage **rows)
{
	Datum		args[2];
	bool		isnull;
	int			n;

	args[0] = TimestampTzGetDatum(now);
	args[1] = Int32GetDatum(limit);
	n = plivo_otp_exec(&claim_due, args, NULL, false, 0);
	*rows = n > 0 ? palloc(n * sizeof(ClaimedMessage)) : NULL;
	for (int i = 0; i < n; i++)
	{
		ClaimedMessage *row = &(*rows)[i];
		Datum		body;

		row->id = *DatumGetUUIDP(plivo_otp_get(i, 1, &isnull));
		row->phone = plivo_otp_get_text(i, 2);
		body = plivo_otp_get(i, 3, &isnull);
		row->body = isnull ? NULL : DatumGetByteaPCopy(body);
		row->expires_at = DatumGetTimestampTz(plivo_otp_get(i, 4, &isnull));
		row->tries = DatumGetInt32(plivo_otp_get(i, 5, &isnull));
	}
	return n;
}

/* The earliest next_try_at of a claimable row, or 0 if there is none. */
TimestampTz
plivo_otp_queue_earliest_due(void)
{
	bool		isnull;
	Datum		d;

	plivo_otp_exec(&earliest_due, NULL, NULL, true, 1);
	d = plivo_otp_get(0, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* Store one outcome on its row, if the row is still 'sending'. */
void
plivo_otp_queue_record(const Outcome *o, TimestampTz now)
{
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	args[0] = UUIDPGetDatum(&o->id);
	args[1] = CStringGetTextDatum(plivo_otp_dispatch_state_name(o->state));
	args[2] = o->provider_uuid ? CStringGetTextDatum(o->provider_uuid) : (Datum) 0;
	nulls[2] = o->provider_uuid ? ' ' : 'n';
	args[3] = Int32GetDatum(o->http_status);
	nulls[3] = o->http_status ? ' ' : 'n';
	args[4] = o->error ? CStringGetTextDatum(o->error) : (Datum) 0;
	nulls[4] = o->error ? ' ' : 'n';
	args[5] = TimestampTzGetDatum(o->next_try_at);
	nulls[5] = o->next_try_at ? ' ' : 'n';
	args[6] = TimestampTzGetDatum(now);
	plivo_otp_exec(&store_outcome, args, nulls, false, 0);
}

/* Mark pending rows whose code expires within Plivo's minimum expiry; returns how many. */
int
plivo_otp_queue_expire_unsendable(TimestampTz now)
{
	Datum		args[2];

	args[0] = TimestampTzGetDatum(now);
	args[1] = TimestampTzGetDatum(now + PLIVO_MIN_MESSAGE_EXPIRY * USECS_PER_SEC);
	return plivo_otp_exec(&expire_unsendable, args, NULL, false, 0);
}

/* Mark rows left 'sending' by a stopped dispatcher as unknown; returns how many. */
int
plivo_otp_queue_recover_in_flight(TimestampTz now)
{
	Datum		args[1];

	args[0] = TimestampTzGetDatum(now);
	return plivo_otp_exec(&recover_in_flight, args, NULL, false, 0);
}

/* Wipe the seal of expired codes (a batch; rows an application holds wait); returns how many. */
int
plivo_otp_queue_wipe_expired_codes(TimestampTz now)
{
	Datum		args[1];

	if (!plivo_otp_schema_is_v2())
		return 0;
	args[0] = TimestampTzGetDatum(now);
	return plivo_otp_exec(&wipe_expired_codes, args, NULL, false, 0);
}
