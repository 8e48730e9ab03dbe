/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The dispatcher's statements on the outbound queue (plivo_otp.messages):
 *	  claim due rows, find the next due time, record an outcome, expire rows
 *	  that can no longer be sent, cancel rows whose code is no longer
 *	  pending, wipe the bodies of calls whose code is gone, and recover rows
 *	  a stopped dispatcher left in flight.
 *
 * Every function runs inside a unit of work of common/worker.c (a short
 * transaction, SPI connected).  No statement here waits on a row lock that
 * someone else holds: rows are claimed, expired, canceled and recovered FOR
 * UPDATE SKIP LOCKED (a held row is left for a later turn); a batch of
 * outcomes skips the rows someone holds and names them, so their outcomes
 * wait for a later turn, and a single outcome (the fallback when a batch
 * fails) locks its row FOR UPDATE NOWAIT (a held row fails at once with
 * lock_not_available, and the outcome waits).  Only a row still 'sending'
 * takes an outcome: a row canceled or re-queued meanwhile keeps what it
 * was given.
 *
 * The statements the dispatcher runs on every turn and every second have
 * plans that cannot depend on the statistics (plivo_otp_exec_forced in
 * common/spi.c): a claim costs what it takes, an outcome what it updates, whatever the length of
 * the queue or of the history.
 *
 * The claim tolerates whatever the table's constraints allow: a NULL,
 * garbage or huge body, a number that is not E.164, a past or infinite
 * expiry, any tries (outcome.c and dispatcher.c judge what they return).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "dispatcher.h"

/* Rows a one-second sweep (expiry, orphans) handles at most per tick. */
#define SWEEP_BATCH 1000

/*
 * Due rows of each kind (SMS, calls: each up to its own limit, so that a
 * backlog of one kind never crowds out the other), then the earliest of
 * them up to room (max_inflight's).  The expiry is the earlier of the
 * message's and its code's; tries stops at its maximum rather than
 * overflow; a body larger than any SMS is not fetched (only its size).
 *
 * Each kind is read in the order of its partial index (messages_due_sms,
 * messages_due_voice: (next_try_at, id) of the pending rows), from the key
 * where the previous claim of that kind stopped ($5/$6 for SMS, $7/$8 for
 * calls; -infinity to start from the beginning): the index entries of
 * the rows earlier claims took (dead, or not yet removed by VACUUM) are
 * never walked again, and nothing is sorted, so a claim costs what it
 * takes, whatever the length of the queue.  The plan is forced (see
 * plivo_otp_exec_forced), so stale statistics after a bulk commit cannot
 * turn it into a scan.  The keys of the last row claimed of each kind come
 * back (next_try_at, id, in the order the rows were taken).
 */
#define CLAIM_DUE_OF(name, channel, limit, from_at, from_id) \
	name " AS (" \
	" SELECT m.id, m.next_try_at, least(m.expires_at, v.expires_at) AS expires_at" \
	" FROM plivo_otp.messages m" \
	" JOIN plivo_otp.verifications v ON v.id = m.verification_id AND v.state = 'pending'" \
	" WHERE m.dispatch_state = 'pending' AND m.channel = '" channel "'" \
	" AND m.next_try_at <= $1 AND (m.next_try_at, m.id) >= (" from_at ", " from_id ")" \
	" ORDER BY m.next_try_at, m.id LIMIT " limit " FOR UPDATE OF m SKIP LOCKED)"

#define CLAIM_DUE(sender) \
	"WITH " CLAIM_DUE_OF("sms", "sms", "$2", "$5", "$6") "," \
	CLAIM_DUE_OF("calls", "voice", "$3", "$7", "$8") "," \
	" due AS (SELECT * FROM sms UNION ALL SELECT * FROM calls ORDER BY next_try_at, id LIMIT $4)" \
	" UPDATE plivo_otp.messages m SET dispatch_state = 'sending'," \
	"  tries = CASE WHEN m.tries < 2147483647 THEN m.tries + 1 ELSE m.tries END," \
	"  updated_at = $1" \
	" FROM due WHERE m.id = due.id" \
	" RETURNING m.id, m.phone," \
	"  CASE WHEN octet_length(m.body) <= " CppAsString2(QUEUE_MAX_BODY) " THEN m.body END," \
	"  octet_length(m.body), due.expires_at, m.tries, m.channel = 'voice', " sender "," \
	"  due.next_try_at"

/*
 * The claim's indexes, the only ones its plan may use (forced_plans.c): on
 * tables planned while a page or two (the first sends after a start), a
 * full scan of verifications_one_pending per claimed row cost as little as
 * the look-up by verifications_pkey, and was kept as the queue grew (3.8 ms
 * of dispatcher CPU per message in the benchmark's first drain).
 */
#define CLAIM_ARGS 8, {TIMESTAMPTZOID, INT4OID, INT4OID, INT4OID, \
	TIMESTAMPTZOID, UUIDOID, TIMESTAMPTZOID, UUIDOID}

static PlivoOtpStatement claim_due = {
	CLAIM_DUE("m.sender"), CLAIM_ARGS,
	.indexes = "messages_due_sms messages_due_voice messages_pkey verifications_pkey"
};

/* 0.1.0's table, while an upgrade is pending: no sender recorded. */
static PlivoOtpStatement claim_due_v1 = {
	CLAIM_DUE("NULL::text"), CLAIM_ARGS,
	.indexes = "messages_due_sms messages_due_voice messages_pkey verifications_pkey"
};

/*
 * The earliest next_try_at after $1 of a claimable row of a kind: the same
 * rows as claim_due would take, so an unclaimable row cannot keep us
 * spinning; the first entry of the kind's partial index past $1 whose code
 * is pending.  Run only after a claim from the beginning that did not fill
 * up (dispatcher.c), at $1: that claim saw every row due by then (it took
 * them, or skipped them as locked: those are looked at again by the
 * one-second backstop claim).  Starting at $1 skips the index entries of
 * every row claimed so far (their next_try_at is in the past), which VACUUM
 * has not removed yet: walking them from the start of the index took a
 * third of the dispatcher's time while a backlog drained.
 */
#define EARLIEST_OF(channel) \
	"(SELECT m.next_try_at FROM plivo_otp.messages m" \
	" JOIN plivo_otp.verifications v ON v.id = m.verification_id AND v.state = 'pending'" \
	" WHERE m.dispatch_state = 'pending' AND m.channel = '" channel "' AND m.next_try_at > $1" \
	" ORDER BY m.next_try_at, m.id LIMIT 1)"

static PlivoOtpStatement earliest_due = {
	"SELECT " EARLIEST_OF("sms") ", " EARLIEST_OF("voice"),
	1, {TIMESTAMPTZOID},
	.indexes = "messages_due_sms messages_due_voice verifications_pkey"
};

/*
 * Which outcomes keep a row's sealed body: a row pending again (it is sent
 * later), and a call Plivo took or may have taken (the listener speaks it
 * when the call fetches its script; queue_wipe_call_bodies wipes it once
 * the code expired or is no longer pending).  See outcome.c.
 */
#define KEEPS_BODY(state) \
	"(" state " = 'pending' OR (m.channel = 'voice' AND " state " IN ('accepted', 'unknown')))"

#define STORE_OUTCOME(extra) \
	"WITH target AS (" \
	" SELECT id FROM plivo_otp.messages WHERE id = $1 AND dispatch_state = 'sending'" \
	" FOR UPDATE NOWAIT)" \
	" UPDATE plivo_otp.messages m SET dispatch_state = $2, provider_uuid = $3," \
	" http_status = $4, last_error = $5, next_try_at = coalesce($6, m.next_try_at)," \
	" updated_at = $7," extra \
	" body = CASE WHEN " KEEPS_BODY("$2") " THEN m.body END" \
	" FROM target WHERE m.id = target.id"

static PlivoOtpStatement store_outcome = {
	STORE_OUTCOME(" accepted_at = CASE WHEN $2 = 'accepted' THEN $7 ELSE m.accepted_at END,"),
	7, {UUIDOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
	.indexes = "messages_pkey"
};

/* 0.1.0's table, while an upgrade is pending: no accepted_at. */
static PlivoOtpStatement store_outcome_v1 = {
	STORE_OUTCOME(""),
	7, {UUIDOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
	.indexes = "messages_pkey"
};

/*
 * A batch of outcomes in one statement: the arrays $1..$6 are the rows'
 * ids, states, provider UUIDs, HTTP statuses, errors and retry times, $7
 * is now.  Only a row still 'sending' takes its outcome; a row someone
 * holds locked is skipped (never waited for) and its id returned, so that
 * its outcome waits for a later turn; an outcome whose row is gone or no
 * longer 'sending' is done.  The skipped ones are found with NOT IN, a
 * hashed subplan (target's ids are never NULL): with hash and merge joins
 * forced off, NOT EXISTS became a nested loop over target for each outcome,
 * 1.8 ms of a 12 ms batch of 256.
 */
#define STORE_OUTCOMES(extra) \
	"WITH o AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::integer[]," \
	"  $5::text[], $6::timestamptz[]) AS o(id, state, provider_uuid, http_status, error, next_try_at))," \
	" target AS (SELECT m.id, m.dispatch_state AS was, o.state, o.provider_uuid, o.http_status," \
	"  o.error, o.next_try_at FROM o JOIN plivo_otp.messages m ON m.id = o.id" \
	"  FOR UPDATE OF m SKIP LOCKED)," \
	" stored AS (UPDATE plivo_otp.messages m SET dispatch_state = t.state," \
	"  provider_uuid = t.provider_uuid, http_status = t.http_status, last_error = t.error," \
	"  next_try_at = coalesce(t.next_try_at, m.next_try_at), updated_at = $7," extra \
	"  body = CASE WHEN " KEEPS_BODY("t.state") " THEN m.body END" \
	"  FROM target t WHERE m.id = t.id AND t.was = 'sending' RETURNING m.id)" \
	" SELECT o.id FROM o WHERE o.id NOT IN (SELECT t.id FROM target t)" \
	" AND EXISTS (SELECT 1 FROM plivo_otp.messages m WHERE m.id = o.id)"

#define STORE_OUTCOMES_ARGS 7, {UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, \
	TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID}

static PlivoOtpStatement store_outcomes = {
	STORE_OUTCOMES(" accepted_at = CASE WHEN t.state = 'accepted' THEN $7 ELSE m.accepted_at END,"),
	STORE_OUTCOMES_ARGS,
	.indexes = "messages_pkey"
};

/* 0.1.0's table, while an upgrade is pending: no accepted_at. */
static PlivoOtpStatement store_outcomes_v1 = {
	STORE_OUTCOMES(""), STORE_OUTCOMES_ARGS,
	.indexes = "messages_pkey"
};

/* When an outcome cannot be stored: the least that keeps the at-most-once rule. */
static PlivoOtpStatement store_failure = {
	"WITH target AS ("
	" SELECT id FROM plivo_otp.messages WHERE id = $1 AND dispatch_state = 'sending'"
	" FOR UPDATE NOWAIT)"
	" UPDATE plivo_otp.messages m SET dispatch_state = 'unknown',"
	" body = CASE WHEN " KEEPS_BODY("'unknown'") " THEN m.body END,"
	" last_error = $2, updated_at = $3"
	" FROM target WHERE m.id = target.id",
	3, {UUIDOID, TEXTOID, TIMESTAMPTZOID}
};

/*
 * Codes about to expire are not sent: Plivo takes message_expiry >= 5 s.
 * A message carries its code's expiry (common/outbound.c and the fallback
 * copy the verification's, which never changes), so the rows are read from
 * messages_pending_expiry, earliest first, a batch a tick: the cost follows
 * the rows that expire, not the length of the queue.  (A code that ended
 * earlier than that leaves 'pending': cancel_orphaned's; the claim checks
 * both expiries anyway.)
 */
static PlivoOtpStatement expire_unsendable = {
	"WITH gone AS ("
	" SELECT m.id FROM plivo_otp.messages m"
	" WHERE m.dispatch_state = 'pending' AND m.expires_at <= $2"
	" ORDER BY m.expires_at LIMIT " CppAsString2(SWEEP_BATCH)
	" FOR UPDATE SKIP LOCKED)"
	" UPDATE plivo_otp.messages m SET dispatch_state = 'expired', body = NULL,"
	" last_error = 'code expired before it could be sent', updated_at = $1"
	" FROM gone WHERE m.id = gone.id",
	2, {TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/*
 * Codes that expired, or have too little life left to be delivered again
 * ($1 = now + plivo_otp_min_redelivery_life()), can no longer be
 * re-delivered: wipe their seal.
 */
static PlivoOtpStatement wipe_expired_codes = {
	"UPDATE plivo_otp.verifications v SET code_sealed = NULL"
	" FROM (SELECT id FROM plivo_otp.verifications"
	"       WHERE code_sealed IS NOT NULL AND expires_at <= $1"
	"       LIMIT 1000 FOR UPDATE SKIP LOCKED) e"
	" WHERE v.id = e.id",
	1, {TIMESTAMPTZOID}
};

/*
 * Codes the ledger noted as locked by their failures ($1): wipe their seal,
 * and return the ids still sealed that someone holds locked (the caller
 * notes them again for a later tick).  The SELECT sees the rows as before
 * the UPDATE, so the wiped ones are taken out by name.
 */
static PlivoOtpStatement wipe_locked_codes = {
	"WITH wiped AS ("
	" UPDATE plivo_otp.verifications v SET code_sealed = NULL"
	" FROM (SELECT id FROM plivo_otp.verifications"
	"       WHERE id = ANY ($1) AND code_sealed IS NOT NULL"
	"       FOR UPDATE SKIP LOCKED) l"
	" WHERE v.id = l.id RETURNING v.id)"
	" SELECT id FROM plivo_otp.verifications"
	" WHERE id = ANY ($1) AND code_sealed IS NOT NULL"
	" AND id NOT IN (SELECT id FROM wiped)",
	1, {UUIDARRAYOID}
};

/*
 * A call's body, kept for the listener, no longer has a use once its code
 * expired or is no longer pending: wipe it (a batch; rows someone holds
 * wait for a later tick).  Rows still pending or in flight are left to
 * expire_unsendable, cancel_orphaned and their outcome.
 */
static PlivoOtpStatement wipe_call_bodies = {
	"UPDATE plivo_otp.messages m SET body = NULL, updated_at = $1"
	" FROM (SELECT m.id FROM plivo_otp.messages m"
	"       JOIN plivo_otp.verifications v ON v.id = m.verification_id"
	"       WHERE m.channel = 'voice' AND m.body IS NOT NULL"
	"       AND m.dispatch_state NOT IN ('pending', 'sending')"
	"       AND (v.state <> 'pending' OR least(m.expires_at, v.expires_at) <= $1)"
	"       LIMIT 1000 FOR UPDATE OF m SKIP LOCKED) w"
	" WHERE m.id = w.id",
	1, {TIMESTAMPTZOID}
};

/*
 * A queued message whose code was approved, ran out of attempts, ... is
 * never sent (the claim takes only rows of pending codes; this gives the
 * others their final state).  Read from the verification side: the codes
 * that left 'pending' from ($2, $3) on, in the order of
 * verifications_finished (updated_at, id), a batch a tick, then their
 * pending messages by messages_verification; the cost follows the codes
 * that finished, not the length of the queue.  Returns the codes read, in
 * order (the caller keeps the last as where the next sweep starts).
 * (Cancellations by otp_send and otp_cancel take their messages along.)
 * The messages' state is tested in a form that no partial index of the
 * pending rows matches: with statistics that saw no pending row, a scan of
 * all of them (messages_pending_expiry) would look cheaper than a look-up
 * per code, and cost what the queue holds; messages_verification is then
 * the only index.  The messages are read per code (LATERAL): joined, the
 * planner read the whole of messages_verification (every message of the
 * history, 15 ms a second with 21,000 rows) and matched it against the
 * batch, because it believed almost none of them pending.
 */
#define CANCEL_ORPHANED(from) \
	"WITH changed AS (" \
	" SELECT id, state, updated_at FROM plivo_otp.verifications" \
	" WHERE state <> 'pending' AND " from \
	" ORDER BY updated_at, id LIMIT " CppAsString2(SWEEP_BATCH) ")," \
	" orphan AS (" \
	" SELECT m.id, c.state FROM changed c," \
	" LATERAL (SELECT m.id FROM plivo_otp.messages m WHERE m.verification_id = c.id" \
	"  AND coalesce(m.dispatch_state, '') = 'pending' FOR UPDATE SKIP LOCKED) m)," \
	" canceled AS (" \
	" UPDATE plivo_otp.messages m SET dispatch_state = 'canceled', body = NULL," \
	" last_error = 'not sent: the code is no longer pending (' || orphan.state || ')'," \
	" updated_at = $1" \
	" FROM orphan WHERE m.id = orphan.id)" \
	" SELECT updated_at, id FROM changed"

static PlivoOtpStatement cancel_orphaned = {
	CANCEL_ORPHANED("(updated_at, id) > ($2, $3)"),
	3, {TIMESTAMPTZOID, TIMESTAMPTZOID, UUIDOID}
};

/*
 * The backstop, every ORPHAN_FULL_SWEEP_SECS: every pending message of a
 * code no longer pending (a code whose transaction committed long after
 * its updated_at, a message someone held locked during the sweep).  This
 * one reads the whole queue; once a minute, not every second.
 */
static PlivoOtpStatement cancel_orphaned_all = {
	"WITH orphan AS ("
	" SELECT m.id, v.state FROM plivo_otp.messages m"
	" JOIN plivo_otp.verifications v ON v.id = m.verification_id"
	" WHERE m.dispatch_state = 'pending' AND v.state <> 'pending'"
	" FOR UPDATE OF m SKIP LOCKED)"
	" UPDATE plivo_otp.messages m SET dispatch_state = 'canceled', body = NULL,"
	" last_error = 'not sent: the code is no longer pending (' || orphan.state || ')',"
	" updated_at = $1"
	" FROM orphan WHERE m.id = orphan.id",
	1, {TIMESTAMPTZOID}
};

static PlivoOtpStatement find_sending = {
	"SELECT id FROM plivo_otp.messages WHERE dispatch_state = 'sending'",
	0, {0}
};

static PlivoOtpStatement still_sending = {
	"SELECT id FROM plivo_otp.messages WHERE id = ANY ($1) AND dispatch_state = 'sending'",
	1, {UUIDARRAYOID}
};

static PlivoOtpStatement recover_stale = {
	"WITH stale AS ("
	" SELECT id FROM plivo_otp.messages WHERE id = ANY ($2) AND dispatch_state = 'sending'"
	" FOR UPDATE SKIP LOCKED)"
	" UPDATE plivo_otp.messages m SET dispatch_state = 'unknown',"
	" body = CASE WHEN " KEEPS_BODY("'unknown'") " THEN m.body END, updated_at = $1,"
	" last_error = 'dispatcher stopped while the request was in flight; not re-sent'"
	" FROM stale WHERE m.id = stale.id",
	2, {TIMESTAMPTZOID, UUIDARRAYOID}
};

/*
 * Rows that a stopped dispatcher left 'sending', still to be marked
 * unknown (in stale_context: they outlive units of work).
 */
static MemoryContext stale_context = NULL;
static pg_uuid_t *stale = NULL;
static int	nstale = 0;

/* a < b in the order of the claim's indexes: (next_try_at, id) */
static bool
key_before(const QueueKey *a, TimestampTz at, const pg_uuid_t *id)
{
	if (a->next_try_at != at)
		return a->next_try_at < at;
	return memcmp(a->id.data, id->data, UUID_LEN) < 0;
}

/*
 * Claim due rows, at most limits[kind] of each kind (PlivoOtpRateKind) and
 * room in all, each kind from the key from[kind] on (from the beginning
 * when it is not set): they are 'sending' once the unit of work commits.
 * last[kind] gets the key of the last row claimed of each kind (not set if
 * none), claimed[kind] how many; *rows (palloc'd in the current context)
 * gets what sending them needs; returns how many.
 */
int
plivo_otp_queue_claim(TimestampTz now, const int *limits, int room, const QueueKey *from,
					  QueueKey *last, int *claimed, ClaimedMessage **rows)
{
	Datum		args[8];
	pg_uuid_t	nil;
	bool		isnull;
	int			n;

	memset(&nil, 0, sizeof(nil));
	args[0] = TimestampTzGetDatum(now);
	args[1] = Int32GetDatum(limits[PLIVO_OTP_RATE_MESSAGES]);
	args[2] = Int32GetDatum(limits[PLIVO_OTP_RATE_CALLS]);
	args[3] = Int32GetDatum(room);
	for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
	{
		const QueueKey *f = &from[kind];

		args[4 + 2 * kind] = TimestampTzGetDatum(f->set ? f->next_try_at : DT_NOBEGIN);
		args[5 + 2 * kind] = UUIDPGetDatum(f->set ? &f->id : &nil);
		last[kind].set = false;
		claimed[kind] = 0;
	}
	n = plivo_otp_exec_forced(plivo_otp_schema_is_v2() ? &claim_due : &claim_due_v1, args, NULL, 0);
	*rows = n > 0 ? palloc(n * sizeof(ClaimedMessage)) : NULL;
	for (int i = 0; i < n; i++)
	{
		ClaimedMessage *row = &(*rows)[i];
		Datum		body = plivo_otp_get(i, 3, &isnull);
		TimestampTz at;
		QueueKey   *k;

		row->body = isnull ? NULL : DatumGetByteaPCopy(body);
		(void) plivo_otp_get(i, 4, &isnull);
		row->body_too_large = row->body == NULL && !isnull;
		row->id = *DatumGetUUIDP(plivo_otp_get(i, 1, &isnull));
		row->phone = plivo_otp_get_text(i, 2);
		row->expires_at = DatumGetTimestampTz(plivo_otp_get(i, 5, &isnull));
		row->tries = DatumGetInt32(plivo_otp_get(i, 6, &isnull));
		row->voice = DatumGetBool(plivo_otp_get(i, 7, &isnull));
		row->sender = plivo_otp_get_text(i, 8);
		at = DatumGetTimestampTz(plivo_otp_get(i, 9, &isnull));
		k = &last[PLIVO_OTP_RATE_OF(row->voice)];
		claimed[PLIVO_OTP_RATE_OF(row->voice)]++;
		if (!k->set || key_before(k, at, &row->id))
		{
			k->set = true;
			k->next_try_at = at;
			k->id = row->id;
		}
		plivo_otp_queue_forget_stale(&row->id);
	}
	return n;
}

/* The earliest next_try_at after `after` of a claimable row of each kind into due[kind], 0 if none. */
void
plivo_otp_queue_earliest_due(TimestampTz after, TimestampTz *due)
{
	bool		isnull;
	Datum		d;
	Datum		arg = TimestampTzGetDatum(after);

	/* Not read-only: read-only SPI keeps the unit's first snapshot, in which
	 * the rows this claim just took are still pending and due. */
	plivo_otp_exec_forced(&earliest_due, &arg, NULL, 1);
	for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
	{
		d = plivo_otp_get(0, kind + 1, &isnull);
		/* (-infinity, or the epoch itself, would read as "none") */
		due[kind] = isnull ? 0 : Max(DatumGetTimestampTz(d), 1);
	}
}

/*
 * Store one outcome on its row, if the row is still 'sending'.  A row that
 * someone holds locked raises lock_not_available: the caller keeps the
 * outcome for a later turn.
 */
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
	plivo_otp_exec_forced(plivo_otp_schema_is_v2() ? &store_outcome : &store_outcome_v1,
						  args, nulls, 0);
}

/* A one-dimensional array of n elements of type elemtype, with NULLs. */
static Datum
array_of(Datum *elems, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

/*
 * Store outcomes o[0 .. n) on their rows, those still 'sending', in one
 * statement.  waiting[i] is set for an outcome whose row someone holds
 * locked (it waits for a later turn); the others are done.  An outcome its
 * row refuses (a trigger, a constraint) fails the whole statement: the
 * caller then stores them one by one (plivo_otp_queue_record).
 */
void
plivo_otp_queue_record_batch(Outcome *const *o, int n, TimestampTz now, bool *waiting)
{
	Datum	   *v = palloc(6 * n * sizeof(Datum));
	bool	   *isnull = palloc0(6 * n * sizeof(bool));
	Datum		args[7];
	bool		null;
	int			left;

	for (int i = 0; i < n; i++)
	{
		v[i] = UUIDPGetDatum(&o[i]->id);
		v[n + i] = CStringGetTextDatum(plivo_otp_dispatch_state_name(o[i]->state));
		isnull[2 * n + i] = o[i]->provider_uuid == NULL;
		v[2 * n + i] = o[i]->provider_uuid ? CStringGetTextDatum(o[i]->provider_uuid) : (Datum) 0;
		isnull[3 * n + i] = o[i]->http_status == 0;
		v[3 * n + i] = Int32GetDatum(o[i]->http_status);
		isnull[4 * n + i] = o[i]->error == NULL;
		v[4 * n + i] = o[i]->error ? CStringGetTextDatum(o[i]->error) : (Datum) 0;
		isnull[5 * n + i] = o[i]->next_try_at == 0;
		v[5 * n + i] = TimestampTzGetDatum(o[i]->next_try_at);
		waiting[i] = false;
	}
	args[0] = array_of(v, isnull, n, UUIDOID);
	args[1] = array_of(v + n, isnull + n, n, TEXTOID);
	args[2] = array_of(v + 2 * n, isnull + 2 * n, n, TEXTOID);
	args[3] = array_of(v + 3 * n, isnull + 3 * n, n, INT4OID);
	args[4] = array_of(v + 4 * n, isnull + 4 * n, n, TEXTOID);
	args[5] = array_of(v + 5 * n, isnull + 5 * n, n, TIMESTAMPTZOID);
	args[6] = TimestampTzGetDatum(now);
	left = plivo_otp_exec_forced(plivo_otp_schema_is_v2() ? &store_outcomes : &store_outcomes_v1,
							  args, NULL, 0);
	for (int r = 0; r < left; r++)
	{
		pg_uuid_t  *id = DatumGetUUIDP(plivo_otp_get(r, 1, &null));

		for (int i = 0; i < n; i++)
		{
			if (memcmp(id, &o[i]->id, sizeof(pg_uuid_t)) == 0)
				waiting[i] = true;
		}
	}
}

/* An outcome that could not be stored: the row becomes unknown, saying why. */
void
plivo_otp_queue_record_failure(const pg_uuid_t *id, const char *why, TimestampTz now)
{
	Datum		args[3];

	args[0] = UUIDPGetDatum(id);
	args[1] = CStringGetTextDatum(why);
	args[2] = TimestampTzGetDatum(now);
	plivo_otp_exec_forced(&store_failure, args, NULL, 0);
}

/* Mark pending rows whose code expires within Plivo's minimum expiry; returns how many. */
int
plivo_otp_queue_expire_unsendable(TimestampTz now)
{
	Datum		args[2];

	args[0] = TimestampTzGetDatum(now);
	args[1] = TimestampTzGetDatum(now + PLIVO_MIN_MESSAGE_EXPIRY * USECS_PER_SEC);
	return plivo_otp_exec_forced(&expire_unsendable, args, NULL, 0);
}

/*
 * How far back a sweep of the orphans starts again from the previous one's
 * time: a code's updated_at is its transaction's time, which can precede
 * the commit.
 */
#define ORPHAN_SWEEP_MARGIN_SECS 2
#define ORPHAN_FULL_SWEEP_SECS 60

/*
 * Cancel pending rows whose code is no longer pending: the codes that
 * finished since the last sweep, all the queue's once a minute.
 */
void
plivo_otp_queue_cancel_orphaned(TimestampTz now)
{
	/* where the sweep goes on from: a full batch's last code, else a time */
	static TimestampTz from_at = DT_NOBEGIN;
	static pg_uuid_t from_id;
	static TimestampTz full_sweep_at = 0;
	Datum		args[3];
	int			n;

	args[0] = TimestampTzGetDatum(now);
	if (now >= full_sweep_at)
	{
		(void) plivo_otp_exec_forced(&cancel_orphaned_all, args, NULL, 0);
		full_sweep_at = now + ORPHAN_FULL_SWEEP_SECS * USECS_PER_SEC;
		from_at = now - ORPHAN_SWEEP_MARGIN_SECS * USECS_PER_SEC;
		memset(&from_id, 0, sizeof(from_id));
		return;
	}
	args[1] = TimestampTzGetDatum(from_at);
	args[2] = UUIDPGetDatum(&from_id);
	n = plivo_otp_exec_forced(&cancel_orphaned, args, NULL, 0);
	if (n == SWEEP_BATCH)
	{
		bool		isnull;

		from_at = DatumGetTimestampTz(plivo_otp_get(n - 1, 1, &isnull));
		memcpy(&from_id, DatumGetUUIDP(plivo_otp_get(n - 1, 2, &isnull)), sizeof(pg_uuid_t));
	}
	else
	{
		from_at = now - ORPHAN_SWEEP_MARGIN_SECS * USECS_PER_SEC;
		memset(&from_id, 0, sizeof(from_id));
	}
}

/* ---- rows left in flight by a stopped dispatcher ---- */

static Datum
uuid_array(const pg_uuid_t *ids, int n)
{
	Datum	   *elems = palloc(Max(n, 1) * sizeof(Datum));

	for (int i = 0; i < n; i++)
		elems[i] = UUIDPGetDatum(&ids[i]);
	return PointerGetDatum(construct_array(elems, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

/* The stale list becomes the ids of the last SPI result, but for skip[0..nskip). */
static void
keep_result_ids(const pg_uuid_t *skip, int nskip)
{
	int			n = (int) SPI_processed;
	pg_uuid_t  *kept = n > 0 ? MemoryContextAlloc(stale_context, n * sizeof(pg_uuid_t)) : NULL;
	int			k = 0;
	bool		isnull;

	for (int i = 0; i < n; i++)
	{
		pg_uuid_t  *id = DatumGetUUIDP(plivo_otp_get(i, 1, &isnull));
		bool		skipped = false;

		for (int j = 0; j < nskip && !skipped; j++)
			skipped = memcmp(id, &skip[j], sizeof(pg_uuid_t)) == 0;
		if (!skipped)
			kept[k++] = *id;
	}
	if (stale)
		pfree(stale);
	stale = kept;
	nstale = k;
}

/*
 * At start, before the first claim: remember the rows left 'sending' (a
 * stopped dispatcher had them in flight).  plivo_otp_queue_recover_stale
 * marks them.
 */
void
plivo_otp_queue_find_stale(MemoryContext context)
{
	stale_context = context;
	plivo_otp_exec_forced(&find_sending, NULL, NULL, 0);
	keep_result_ids(NULL, 0);
}

/* A row this dispatcher claimed is its own, whatever it was before. */
void
plivo_otp_queue_forget_stale(const pg_uuid_t *id)
{
	for (int i = 0; i < nstale; i++)
	{
		if (memcmp(&stale[i], id, sizeof(pg_uuid_t)) == 0)
		{
			stale[i] = stale[--nstale];
			return;
		}
	}
}

int
plivo_otp_queue_stale_left(void)
{
	return nstale;
}

typedef struct RecoverArgs
{
	Datum		args[2];		/* now, the ids */
	int			marked;
} RecoverArgs;

static void
recover_listed(void *arg)
{
	RecoverArgs *r = (RecoverArgs *) arg;

	r->marked += plivo_otp_exec_forced(&recover_stale, r->args, NULL, 0);
}

/*
 * Mark the remembered stale rows unknown, those no one holds locked;
 * returns how many.  A row that cannot be updated at all (a failing
 * trigger, say) is logged and given up, so it cannot stall the others.
 */
int
plivo_otp_queue_recover_stale(TimestampTz now)
{
	RecoverArgs r = {{TimestampTzGetDatum(now), uuid_array(stale, nstale)}, 0};
	pg_uuid_t  *failed = palloc(Max(nstale, 1) * sizeof(pg_uuid_t));
	int			nfailed = 0;
	ErrorData  *error;
	Datum		ids;

	if (!plivo_otp_try_subtransaction(recover_listed, &r, &error))
	{
		FreeErrorData(error);
		r.marked = 0;
		for (int i = 0; i < nstale; i++)	/* one at a time, to find the culprit */
		{
			r.args[1] = uuid_array(&stale[i], 1);
			if (plivo_otp_try_subtransaction(recover_listed, &r, &error))
				continue;
			ereport(LOG,
					(errmsg("plivo_otp dispatcher could not mark message %s as unknown",
							DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&stale[i])))),
					 errdetail_internal("%s", plivo_otp_sanitize_error(error->message))));
			failed[nfailed++] = stale[i];
		}
	}
	ids = uuid_array(stale, nstale);
	plivo_otp_exec_forced(&still_sending, &ids, NULL, 0);	/* (sees the marks above) */
	keep_result_ids(failed, nfailed);
	return r.marked;
}

/*
 * Wipe the seal of codes that expired or can no longer be re-delivered (a
 * batch; rows an application holds wait); returns how many.
 */
int
plivo_otp_queue_wipe_expired_codes(TimestampTz now)
{
	Datum		args[1];

	if (!plivo_otp_schema_is_v2())
		return 0;
	args[0] = TimestampTzGetDatum(now + (int64) plivo_otp_min_redelivery_life() * USECS_PER_SEC);
	return plivo_otp_exec_forced(&wipe_expired_codes, args, NULL, 0);
}

/* How many locked codes one tick takes from the ledger. */
#define LOCKED_BATCH 64

/*
 * Wipe the seal of the codes the ledger noted as locked by their failures
 * (rolled back or not); ids someone holds locked are noted again.
 */
void
plivo_otp_queue_wipe_locked_codes(void)
{
	pg_uuid_t	ids[LOCKED_BATCH];
	int			n;
	Datum		args[1];
	bool		isnull;
	int			left;

	if (!plivo_otp_schema_is_v2())
		return;
	n = plivo_otp_ledger_take_locked(ids, LOCKED_BATCH);
	if (n == 0)
		return;
	args[0] = uuid_array(ids, n);
	PG_TRY();
	{
		left = plivo_otp_exec_forced(&wipe_locked_codes, args, NULL, 0);
	}
	PG_CATCH();
	{
		for (int i = 0; i < n; i++)
			plivo_otp_ledger_note_locked(&ids[i]);
		PG_RE_THROW();
	}
	PG_END_TRY();
	for (int i = 0; i < left; i++)
		plivo_otp_ledger_note_locked(DatumGetUUIDP(plivo_otp_get(i, 1, &isnull)));
}

/* Wipe the bodies of calls whose code expired or is no longer pending (a batch); returns how many. */
int
plivo_otp_queue_wipe_call_bodies(TimestampTz now)
{
	Datum		args[1];

	args[0] = TimestampTzGetDatum(now);
	return plivo_otp_exec_forced(&wipe_call_bodies, args, NULL, 0);
}
