/*-------------------------------------------------------------------------
 *
 * send_locks.c
 *	  The locks that serialise otp_send (and otp_resend, otp_check and the
 *	  dispatcher's voice fallback) per number, idempotency key and caller
 *	  key, and the per-key message counters that come with them.
 *
 * With the 0.2.0 schema, a key's lock is its row of plivo_otp.send_counters,
 * locked until the transaction ends: a row lock lives in the tuple, not in
 * the shared lock table, so a transaction may serialise any number of sends
 * (20,000 otp_send in one transaction need no max_locks_per_transaction).
 * The row's key is 16 bytes of HMAC-SHA256 of the key under the lock-tag
 * key, so the table does not tell which number is being sent to, and no
 * login can reach it (REVOKE) to take the locks and block sends.  Counting a
 * message (plivo_otp_count_send_key) is the same statement as taking the
 * lock: one INSERT ... ON CONFLICT DO UPDATE that moves the key's buckets
 * along and returns them, so a limit costs one index lookup whatever the
 * history.  The counts roll back with the sending transaction.
 *
 * Every wait is bounded by plivo_otp.send_lock_timeout (or the caller's
 * shorter lock_timeout), then a clear 55P03.  A statement that waited for a
 * row locks the row's latest version, whatever the caller's isolation level
 * (the statement runs with READ COMMITTED's rules and the latest snapshot),
 * so it sees what the transaction it waited for committed, as the policy
 * must; the caller's own snapshot is not touched.
 *
 * With the 0.1.0 schema installed (an upgrade pending) the locks are
 * transaction-scoped advisory locks of the same keyed tags, as 0.1.0 took
 * them (with their lock-table limit), and nothing is counted here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

/* The fourth field of our advisory-lock tags ("PL"): no SQL function builds it. */
#define PLIVO_OTP_LOCK_FIELD4 0x504C

/* Bytes of the keyed hash that name a row of plivo_otp.send_counters. */
#define ROW_KEY_LEN 16

/*
 * Take the key's row lock, creating the row on first use.  An existing row
 * is only locked (WHERE false: no new row version).
 */
static PlivoOtpStatement lock_row = {
	"INSERT INTO plivo_otp.send_counters AS c (key, touched_at) VALUES ($1, $2)"
	" ON CONFLICT (key) DO UPDATE SET touched_at = excluded.touched_at WHERE false",
	2, {BYTEAOID, TIMESTAMPTZOID}
};

/* Lock the key's row if it exists (a key never sent to needs no lock). */
static PlivoOtpStatement lock_existing_row = {
	"SELECT 1 FROM plivo_otp.send_counters WHERE key = $1 FOR UPDATE",
	1, {BYTEAOID},
	.forced_plan = true, .indexes = "send_counters_pkey"
};

/* The dispatcher's: never waits. */
static PlivoOtpStatement try_lock_row = {
	"SELECT 1 FROM plivo_otp.send_counters WHERE key = $1 FOR UPDATE SKIP LOCKED",
	1, {BYTEAOID},
	.forced_plan = true, .indexes = "send_counters_pkey"
};

/*
 * Lock the key's row and count one message in it: the bucket of $3 that
 * holds $2 becomes the current one (the previous bucket keeps the count of
 * the one before it, or 0 once it is more than a window old; a clock that
 * went back starts afresh), and the times of the last two messages shift.
 */
#define ROLLED_OVER "c.bucket_start IS NULL OR $2 < c.bucket_start OR $2 >= c.bucket_start + $3"
#define LAPSED "c.bucket_start IS NULL OR $2 < c.bucket_start OR $2 >= c.bucket_start + 2 * $3"
static PlivoOtpStatement count_row = {
	"INSERT INTO plivo_otp.send_counters AS c"
	" (key, bucket_start, bucket_count, previous_count, last_send_at, touched_at)"
	" VALUES ($1, $2, 1, 0, $2, $2)"
	" ON CONFLICT (key) DO UPDATE SET"
	" bucket_start = CASE WHEN " LAPSED " THEN $2"
	"   WHEN $2 >= c.bucket_start + $3 THEN c.bucket_start + $3 ELSE c.bucket_start END,"
	" previous_count = CASE WHEN " LAPSED " THEN 0"
	"   WHEN $2 >= c.bucket_start + $3 THEN c.bucket_count ELSE c.previous_count END,"
	" bucket_count = CASE WHEN " ROLLED_OVER " THEN 1 ELSE c.bucket_count + 1 END,"
	" previous_send_at = c.last_send_at, last_send_at = $2, touched_at = $2"
	" RETURNING bucket_start, bucket_count, previous_count, previous_send_at",
	3, {BYTEAOID, TIMESTAMPTZOID, INTERVALOID}
};

/* Rows idle since $1 (no lock, no count since): their limits have nothing left to count. */
static PlivoOtpStatement purge_rows = {
	"DELETE FROM plivo_otp.send_counters WHERE ctid = ANY (ARRAY("
	" SELECT ctid FROM plivo_otp.send_counters WHERE touched_at < $1 LIMIT $2"
	" FOR UPDATE SKIP LOCKED))",
	2, {TIMESTAMPTZOID, INT4OID}
};

/* 32 bytes of HMAC-SHA256 of the key under the lock-tag key. */
static void
key_mac(const char *key, uint8 *mac)
{
	plivo_otp_keyed_hash(PLIVO_OTP_KEY_LOCK_TAG, key, strlen(key), mac);
}

/* The key's row in plivo_otp.send_counters: the first ROW_KEY_LEN bytes of its MAC. */
static Datum
row_key(const char *key)
{
	uint8		mac[PLIVO_OTP_DIGEST_LEN];
	bytea	   *b = palloc(VARHDRSZ + ROW_KEY_LEN);

	key_mac(key, mac);
	SET_VARSIZE(b, VARHDRSZ + ROW_KEY_LEN);
	memcpy(VARDATA(b), mac, ROW_KEY_LEN);
	return PointerGetDatum(b);
}

/*
 * The advisory-lock tag of a key (0.1.0's locks): the database, 64 bits of
 * the key's MAC, and a fourth field that no SQL function builds
 * (pg_advisory_lock uses 1 and 2).
 */
static void
lock_tag_of(const char *key, LOCKTAG *tag)
{
	uint8		mac[PLIVO_OTP_DIGEST_LEN];
	uint32		h[2];

	key_mac(key, mac);
	memcpy(h, mac, sizeof(h));
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, h[0], h[1], PLIVO_OTP_LOCK_FIELD4);
}

/* The 55P03 of a wait that timed out: message says for what. */
static void
report_lock_timeout(const char *message, int timeout)
{
	ereport(ERROR,
			(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
			 errmsg_internal("%s", message),
			 errdetail("Its transaction did not end within %d ms.", timeout),
			 errhint("Retry when the other transaction has committed or rolled back."),
			 errhidestmt(true)));
}

/* In a PG_CATCH: the caught ERROR again, unless it is the wait's lock timeout (55P03 then). */
static void
rethrow_unless_lock_timeout(MemoryContext caller, const char *message, int timeout)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(caller);
	edata = CopyErrorData();
	if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
		PG_RE_THROW();
	FlushErrorState();
	report_lock_timeout(message, timeout);
}

/*
 * The wait of a lock statement: at most plivo_otp.send_lock_timeout (or the
 * caller's shorter lock_timeout).
 */
static int
bounded_lock_timeout(void)
{
	if (LockTimeout == 0 || LockTimeout > plivo_otp_send_lock_timeout)
		return plivo_otp_send_lock_timeout;
	return LockTimeout;
}

/*
 * Run a statement that may wait for a key's row: with the latest snapshot,
 * READ COMMITTED's rules for a row updated while it waited (lock its latest
 * version, as a send that waited must see what the other committed), and
 * the bounded wait; a timeout becomes the 55P03 of message.  Returns the
 * rows it processed.  The caller's settings are unchanged afterwards, also
 * after an error.
 */
static int
exec_waiting(PlivoOtpStatement *stmt, Datum *args, const char *message)
{
	int			saved_isolation = XactIsoLevel;
	int			saved_timeout = LockTimeout;
	int			timeout = bounded_lock_timeout();
	MemoryContext caller = CurrentMemoryContext;
	volatile int n = 0;

	LockTimeout = timeout;
	XactIsoLevel = XACT_READ_COMMITTED;
	PG_TRY();
	{
		n = plivo_otp_exec_latest(stmt, args, NULL, 0);
	}
	PG_CATCH();
	{
		XactIsoLevel = saved_isolation;
		LockTimeout = saved_timeout;
		rethrow_unless_lock_timeout(caller, message, timeout);
	}
	PG_END_TRY();
	XactIsoLevel = saved_isolation;
	LockTimeout = saved_timeout;
	return n;
}

/* 0.1.0's lock: wait for an advisory lock another transaction holds, bounded. */
static void
advisory_lock(const char *key, const char *message)
{
	LOCKTAG		tag;
	int			saved_timeout = LockTimeout;
	int			timeout = bounded_lock_timeout();
	MemoryContext caller = CurrentMemoryContext;

	lock_tag_of(key, &tag);
	if (LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
		return;
	LockTimeout = timeout;
	PG_TRY();
	{
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
	}
	PG_CATCH();
	{
		LockTimeout = saved_timeout;
		rethrow_unless_lock_timeout(caller, message, timeout);
	}
	PG_END_TRY();
	LockTimeout = saved_timeout;
}

/*
 * Serialise work on one key (an idempotency key; with the 0.1.0 schema any
 * key) within this transaction.  Callers take them in one order:
 * idempotency key, caller key, number.  message is the error of a wait that
 * timed out ("code not sent: another send with this idempotency key is
 * still in progress").  SPI is connected; v2 says the 0.2.0 schema is
 * installed.
 */
void
plivo_otp_lock_send_key(const char *key, bool v2, const char *message)
{
	Datum		args[2];

	if (!v2)
	{
		advisory_lock(key, message);
		return;
	}
	args[0] = row_key(key);
	args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	(void) exec_waiting(&lock_row, args, message);
}

/*
 * The number's lock for otp_check, taken before it locks the code's row, as
 * otp_send takes it before it cancels or replaces that row: the two never
 * wait on each other in opposite orders.  A number without a row was never
 * sent to (a row outlives the codes it counted), so there is nothing to
 * serialise with and none is made: checks of unknown numbers leave nothing.
 */
void
plivo_otp_lock_number_for_check(const char *phone, bool v2, const char *message)
{
	Datum		args[1];

	if (!v2)
	{
		advisory_lock(phone, message);
		return;
	}
	args[0] = row_key(phone);
	(void) exec_waiting(&lock_existing_row, args, message);
}

/*
 * The number's lock, only if no one holds it: true when this transaction
 * now holds it.  For the dispatcher (voice fallback; 0.2.0 schema), which
 * never waits on a lock an application holds.  A number without a row is
 * refused too (creating one could wait for an application's first send to
 * it): every code sent with the 0.2.0 schema made its number's row.
 */
bool
plivo_otp_try_lock_send_key(const char *key)
{
	Datum		args[1];

	args[0] = row_key(key);
	return plivo_otp_exec_latest(&try_lock_row, args, NULL, 0) == 1;
}

/*
 * Lock the key's row (0.2.0 schema) and count one message to it in buckets
 * of window_secs; what it counted before this message goes to *count.  The
 * count rolls back with the transaction (or the subtransaction) it is in.
 */
void
plivo_otp_count_send_key(const char *key, int window_secs, TimestampTz now,
						 const char *message, PlivoOtpSendCount *count)
{
	Interval	window = {.time = (int64) window_secs * USECS_PER_SEC,.day = 0,.month = 0};
	Datum		args[3];
	bool		isnull;

	args[0] = row_key(key);
	args[1] = TimestampTzGetDatum(now);
	args[2] = IntervalPGetDatum(&window);
	if (exec_waiting(&count_row, args, message) != 1)
		elog(ERROR, "plivo_otp: a send counter was not updated");
	count->window = (int64) window_secs * USECS_PER_SEC;
	count->bucket_start = DatumGetTimestampTz(plivo_otp_get(0, 1, &isnull));
	count->bucket_count = DatumGetInt32(plivo_otp_get(0, 2, &isnull)) - 1;
	count->previous_count = DatumGetInt32(plivo_otp_get(0, 3, &isnull));
	count->previous_send_at = DatumGetTimestampTz(plivo_otp_get(0, 4, &isnull));
	count->has_previous_send = !isnull;
}

/*
 * Delete up to limit rows of plivo_otp.send_counters idle since before
 * idle_since (SPI connected, 0.2.0 schema): for the dispatcher's purge.
 * The caller picks idle_since older than every window, cool-down and code
 * lifetime.  Returns how many went.  Rows locked now are left alone.
 */
int
plivo_otp_purge_send_counters(TimestampTz idle_since, int limit)
{
	Datum		args[2];

	args[0] = TimestampTzGetDatum(idle_since);
	args[1] = Int32GetDatum(limit);
	return plivo_otp_exec(&purge_rows, args, NULL, false, 0);
}
