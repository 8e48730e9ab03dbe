/*-------------------------------------------------------------------------
 *
 * send_locks.c
 *	  The transaction-scoped locks that serialise otp_send (and otp_resend,
 *	  otp_check and the dispatcher's voice fallback) per number, idempotency
 *	  key and caller key.
 *
 * The tags are advisory-lock tags that no SQL function can build (their
 * fourth field is one pg_advisory_lock never uses), keyed with a key
 * derived from the secret, so no login can take them to block sends, and
 * pg_locks does not tell which number is being sent to.  Every wait for
 * one is bounded by plivo_otp.send_lock_timeout (or the caller's shorter
 * lock_timeout), then a clear 55P03.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/guc.h"

#include "plivo_otp.h"

/* The fourth field of our advisory-lock tags ("PL"): no SQL function builds it. */
#define PLIVO_OTP_LOCK_FIELD4 0x504C

/*
 * The advisory-lock tag of a key: the database, 64 bits of HMAC-SHA256 of
 * the key under the lock-tag key, and a fourth field that no SQL function
 * builds (pg_advisory_lock uses 1 and 2).  So no login can take our locks
 * to block sends, and pg_locks does not tell which number is being sent to.
 */
static void
lock_tag_of(const char *key, LOCKTAG *tag)
{
	uint8		mac[PLIVO_OTP_DIGEST_LEN];
	uint32		h[2];

	plivo_otp_keyed_hash(PLIVO_OTP_KEY_LOCK_TAG, key, strlen(key), mac);
	memcpy(h, mac, sizeof(h));
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, h[0], h[1], PLIVO_OTP_LOCK_FIELD4);
}

/*
 * Wait for a lock another transaction holds, at most
 * plivo_otp.send_lock_timeout (or the caller's shorter lock_timeout).
 */
static void
wait_for_lock(const LOCKTAG *tag, const char *message)
{
	int			nest = NewGUCNestLevel();
	MemoryContext caller = CurrentMemoryContext;

	if (LockTimeout == 0 || LockTimeout > plivo_otp_send_lock_timeout)
		(void) set_config_option("lock_timeout", psprintf("%d", plivo_otp_send_lock_timeout),
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	PG_TRY();
	{
		(void) LockAcquire(tag, ExclusiveLock, false, false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg_internal("%s", message),
				 errdetail("Its transaction did not end within %d ms.", LockTimeout),
				 errhint("Retry when the other transaction has committed or rolled back."),
				 errhidestmt(true)));
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nest);
}

/*
 * Serialise work on one key (a number, an idempotency key, a caller key)
 * within this transaction.  Callers take them in one order: idempotency
 * key, caller key, number.  message is the error of a wait that timed out
 * ("code not sent: another send to this number is still in progress").
 * otp_check takes the number's lock too, before it locks the code's row,
 * as otp_send does: the two never wait on each other in opposite orders.
 */
void
plivo_otp_lock_send_key(const char *key, const char *message)
{
	LOCKTAG		tag;

	lock_tag_of(key, &tag);
	if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		wait_for_lock(&tag, message);
}

/*
 * The same lock, only if no one holds it: true when this transaction now
 * holds it.  For the dispatcher (voice fallback), which never waits on a
 * lock an application holds.
 */
bool
plivo_otp_try_lock_send_key(const char *key)
{
	LOCKTAG		tag;

	lock_tag_of(key, &tag);
	return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}
