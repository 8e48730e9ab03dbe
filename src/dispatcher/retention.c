/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Purging old rows: verifications and their messages, and delivery
 *	  events, older than plivo_otp.retention, and signature nonces older
 *	  than a day; and, with plivo_otp.redact_after, replacing the phone
 *	  numbers of finished rows older than that with their masked form.
 *
 * Rows are deleted in batches of PURGE_BATCH, one table's batch per short
 * transaction, until every table is caught up or the turn's time budget is
 * spent; the dispatcher then comes back on its next turn, so a
 * backlog of any size drains within seconds while sending goes on between
 * batches.  Rows someone holds locked are skipped (SKIP LOCKED) and purged
 * later.  A verification goes only once its messages are gone, and one
 * with a message still in flight is kept: its outcome is yet to be
 * recorded.
 *
 * Redaction (plivo_otp.redact_after > 0) goes the same way, in batches:
 * a finished verification (not pending) and a finished message (not
 * pending or sending, of a finished verification) get the masked number
 * (plivo_otp.phone_masked, as otp_status shows it) and lose their
 * idempotency key (an application's key may hold the number); a delivery
 * event gets its callback's To masked.  The rows stay, with their states
 * and times.  Rows younger than plivo_otp.number_window and resend_interval
 * are never redacted, whatever redact_after says: the per-number limits
 * count them by number.  Each table has a partial index of its rows not
 * yet masked, so a batch never scans the ones already done.
 *
 * Measured on a busy 2-core machine (load about 10), an idle dispatcher,
 * 1M old verifications with a message each, 1M old delivery events and 1M
 * old nonces: about 27,000 rows a second purged (2.9M rows in about 105 s),
 * where a code leaves about 8 rows (verification, message, three events,
 * three nonces): room for about 3,000 codes a second.  The statements
 * before (an unordered LIMIT, a plan left to the statistics) did about
 * 1,700 rows a second on the same data.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/timestamp.h"

#include "dispatcher.h"

#define PURGE_BATCH 500

/*
 * Nonces are remembered for a day: Plivo retries a callback for minutes, and
 * a replay of an older one finds its event already stored (a duplicate).
 * listener/delivery.c bounds V2 signatures by the same window.
 */
#define NONCE_WINDOW_SECS PLIVO_OTP_NONCE_WINDOW_SECS

/*
 * A verification expires after it was created, so created_at < $1 holds for
 * every old one, and lets the index on created_at find them.
 */
#define OLD_VERIFICATION(v) \
	v ".created_at < $1 AND " v ".expires_at < $1"

/*
 * No plan here depends on the statistics (a backlog committed in bulk,
 * before any ANALYZE, once let the planner hash-join a million messages per
 * batch): every batch takes the oldest rows in the order of its table's
 * index on time (ORDER BY ... LIMIT: that index's range scan), the rows are
 * then changed by primary key (= ANY (ARRAY(...))), and each lookup of a
 * verification's messages is a subquery run per row on its index (OFFSET 0
 * keeps the planner from turning it into a join of whole tables).
 */

/*
 * The messages of the oldest old verifications, but those in flight (their
 * outcome is yet to be recorded: the verification keeps them, and stays).
 */
static PlivoOtpStatement purge_messages = {
	"DELETE FROM plivo_otp.messages WHERE id = ANY (ARRAY("
	" SELECT m.id FROM ("
	"  SELECT v.id FROM plivo_otp.verifications v WHERE " OLD_VERIFICATION("v")
	"  ORDER BY v.created_at LIMIT " CppAsString2(PURGE_BATCH) ") old,"
	" LATERAL (SELECT m.id FROM plivo_otp.messages m WHERE m.verification_id = old.id"
	"   AND m.dispatch_state <> 'sending' OFFSET 0 FOR UPDATE SKIP LOCKED) m))",
	1, {TIMESTAMPTZOID}
};

/*
 * Then the oldest old verifications with no message left: the batch whose
 * messages just went (those with a message still in flight or locked keep
 * it, and stay at the front until it is gone).
 */
static PlivoOtpStatement purge_verifications = {
	"DELETE FROM plivo_otp.verifications WHERE id = ANY (ARRAY("
	" SELECT v.id FROM plivo_otp.verifications v"
	" WHERE " OLD_VERIFICATION("v")
	" AND NOT EXISTS (SELECT 1 FROM plivo_otp.messages m WHERE m.verification_id = v.id OFFSET 0)"
	" ORDER BY v.created_at LIMIT " CppAsString2(PURGE_BATCH) " FOR UPDATE SKIP LOCKED))",
	1, {TIMESTAMPTZOID}
};

static PlivoOtpStatement purge_events = {
	"DELETE FROM plivo_otp.delivery_events WHERE id = ANY (ARRAY("
	" SELECT id FROM plivo_otp.delivery_events WHERE received_at < $1"
	" ORDER BY received_at LIMIT " CppAsString2(PURGE_BATCH) " FOR UPDATE SKIP LOCKED))",
	1, {TIMESTAMPTZOID}
};

static PlivoOtpStatement purge_nonces = {
	"DELETE FROM plivo_otp.callback_nonces WHERE nonce = ANY (ARRAY("
	" SELECT nonce FROM plivo_otp.callback_nonces WHERE seen_at < $1"
	" ORDER BY seen_at LIMIT " CppAsString2(PURGE_BATCH) " FOR UPDATE SKIP LOCKED))",
	1, {TIMESTAMPTZOID}
};

/* Finished verifications older than $1 whose number is not masked yet. */
static PlivoOtpStatement redact_verifications = {
	"UPDATE plivo_otp.verifications"
	" SET phone = plivo_otp.phone_masked(phone), idempotency_key = NULL"
	" WHERE id = ANY (ARRAY("
	"  SELECT id FROM plivo_otp.verifications"
	"  WHERE strpos(phone, '*') = 0 AND created_at < $1 AND state <> 'pending'"
	"  ORDER BY created_at LIMIT " CppAsString2(PURGE_BATCH) " FOR UPDATE SKIP LOCKED))",
	1, {TIMESTAMPTZOID}
};

/* Finished messages of finished verifications, older than $1, not masked yet. */
static PlivoOtpStatement redact_messages = {
	"UPDATE plivo_otp.messages"
	" SET phone = plivo_otp.phone_masked(phone), idempotency_key = NULL"
	" WHERE id = ANY (ARRAY("
	"  SELECT m.id FROM plivo_otp.messages m"
	"  WHERE strpos(m.phone, '*') = 0 AND m.created_at < $1"
	"  AND m.dispatch_state NOT IN ('pending', 'sending')"
	"  AND EXISTS (SELECT 1 FROM plivo_otp.verifications v"
	"    WHERE v.id = m.verification_id AND v.state <> 'pending' OFFSET 0)"
	"  ORDER BY m.created_at LIMIT " CppAsString2(PURGE_BATCH) " FOR UPDATE SKIP LOCKED))",
	1, {TIMESTAMPTZOID}
};

/* Delivery events older than $1 whose callback's To is not masked yet. */
static PlivoOtpStatement redact_events = {
	"UPDATE plivo_otp.delivery_events"
	" SET params = jsonb_set(params, '{To}', to_jsonb(plivo_otp.phone_masked(params ->> 'To')))"
	" WHERE id = ANY (ARRAY("
	"  SELECT id FROM plivo_otp.delivery_events"
	"  WHERE strpos(params ->> 'To', '*') = 0 AND received_at < $1"
	"  ORDER BY received_at LIMIT " CppAsString2(PURGE_BATCH) " FOR UPDATE SKIP LOCKED))",
	1, {TIMESTAMPTZOID}
};

/* In this order: a verification goes once its messages have. */
typedef enum PurgeTable
{
	PURGE_MESSAGES,
	PURGE_VERIFICATIONS,
	PURGE_EVENTS,
	PURGE_NONCES,
	REDACT_VERIFICATIONS,
	REDACT_MESSAGES,
	REDACT_EVENTS,
	PURGE_COUNTERS,
	PURGE_TABLES
} PurgeTable;

static PlivoOtpStatement *const purge_statements[PURGE_TABLES] = {
	[PURGE_MESSAGES] = &purge_messages,
	[PURGE_VERIFICATIONS] = &purge_verifications,
	[PURGE_EVENTS] = &purge_events,
	[PURGE_NONCES] = &purge_nonces,
	[REDACT_VERIFICATIONS] = &redact_verifications,
	[REDACT_MESSAGES] = &redact_messages,
	[REDACT_EVENTS] = &redact_events,
};

/*
 * Rows younger than this are not redacted: redact_after, but never less
 * than the windows of the per-number limits, which count rows by number.
 */
static TimestampTz
redact_cutoff(TimestampTz now)
{
	int64		secs = Max(plivo_otp_redact_after,
						   Max(plivo_otp_number_window, plivo_otp_resend_interval));

	return now - secs * USECS_PER_SEC;
}

/*
 * plivo_otp.send_counters rows (src/api/send_locks.c) idle for longer than
 * any window, cool-down or code lifetime counts over, plus an hour: they
 * count nothing any more.  Found by a scan of the table (an index on
 * touched_at would cost every send an index insertion), so once an hour.
 */
#define COUNTER_PURGE_EVERY_SECS 3600

static TimestampTz
counters_idle_since(TimestampTz now)
{
	int64		secs = Max(Max(plivo_otp_number_window, plivo_otp_caller_window),
						   Max(plivo_otp_resend_interval, plivo_otp_code_ttl));

	return now - (secs + 3600) * USECS_PER_SEC;
}

/* Where a turn's purge is: which tables are caught up, which one is next. */
typedef struct PurgeTurn
{
	bool		caught_up[PURGE_TABLES];
	int			table;
} PurgeTurn;

/* A unit of work: one batch of turn->table. */
static void
purge_batch_work(void *arg)
{
	PurgeTurn  *turn = (PurgeTurn *) arg;
	int			i = turn->table;
	TimestampTz now = GetCurrentTimestamp();
	Datum		cutoff;
	int			n;

	if (i == PURGE_NONCES)
		cutoff = TimestampTzGetDatum(now - NONCE_WINDOW_SECS * USECS_PER_SEC);
	else if (i >= REDACT_VERIFICATIONS)
		cutoff = TimestampTzGetDatum(redact_cutoff(now));
	else
		cutoff = TimestampTzGetDatum(now - (int64) plivo_otp_retention * USECS_PER_SEC);

	/* (0.1.0's tables, while an upgrade is pending, have no plivo_otp.phone_masked) */
	if (i >= REDACT_VERIFICATIONS && !plivo_otp_schema_is_v2())
	{
		turn->caught_up[i] = true;
		return;
	}
	if (i == PURGE_COUNTERS)
		n = plivo_otp_schema_is_v2() ?
			plivo_otp_purge_send_counters(counters_idle_since(now), PURGE_BATCH) : 0;
	else
		n = plivo_otp_exec_forced(purge_statements[i], &cutoff, NULL, 0);
	/* A batch of verifications may keep some (messages locked): only none left is done. */
	if (i == PURGE_MESSAGES || i == PURGE_VERIFICATIONS ? n == 0 : n < PURGE_BATCH)
		turn->caught_up[i] = i != PURGE_VERIFICATIONS || turn->caught_up[PURGE_MESSAGES];
}

/* Is every table caught up with purging?  (Redaction waits: why mask rows about to go.) */
static bool
purged(const PurgeTurn *turn)
{
	for (int i = 0; i < REDACT_VERIFICATIONS; i++)
	{
		if (!turn->caught_up[i])
			return false;
	}
	return true;
}

/*
 * Purge (and redact) in batches, one table's batch per unit of work, until
 * every table is caught up or budget_ms have gone by: no more than one
 * batch's time is ever taken past the budget.  A turn goes on from the
 * table where the last one stopped, so every table gets its batches
 * whatever the budget.  True if rows remain (come back on the next turn);
 * false when caught up, or when a batch failed (it is logged; try again
 * later).
 */
bool
plivo_otp_purge_old_rows(int budget_ms)
{
	static int	next_table = 0;
	static TimestampTz counters_purged_at = 0;
	PurgeTurn	turn = {{false}, 0};
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz deadline = now + (int64) budget_ms * 1000;

	for (int i = REDACT_VERIFICATIONS; i < PURGE_COUNTERS; i++)
		turn.caught_up[i] = plivo_otp_redact_after <= 0;
	turn.caught_up[PURGE_COUNTERS] =
		now - counters_purged_at < (int64) COUNTER_PURGE_EVERY_SECS * USECS_PER_SEC;

	for (;;)
	{
		bool		all = true;

		for (int k = 0; k < PURGE_TABLES; k++)
		{
			int			i = (next_table + k) % PURGE_TABLES;

			if (turn.caught_up[i] || (i >= REDACT_VERIFICATIONS && !purged(&turn)))
				continue;
			turn.table = i;
			if (!plivo_otp_run_work("purging old rows", purge_batch_work, &turn))
				return false;
			if (GetCurrentTimestamp() >= deadline)
			{
				next_table = (i + 1) % PURGE_TABLES;
				return true;
			}
		}
		for (int i = 0; i < PURGE_TABLES; i++)
			all &= turn.caught_up[i];
		if (all)
		{
			if (now - counters_purged_at >= (int64) COUNTER_PURGE_EVERY_SECS * USECS_PER_SEC)
				counters_purged_at = now;
			return false;
		}
	}
}
