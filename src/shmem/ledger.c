/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  Shared memory of plivo_otp: the failed-attempt ledger, the dispatcher's
 *	  latch and the counters behind the stats view.
 *
 * The ledger counts failed verification attempts outside any transaction,
 * so a caller that rolls back after a wrong code still used an attempt.  It
 * is a fixed-size shared hash keyed by verification id, guarded by one
 * LWLock (tranche "plivo_otp"): shared mode to read a count, exclusive to
 * add or reclaim entries.  Entries of expired codes are reclaimed when the
 * table fills; a table full of live codes makes verification fail closed.
 *
 * At a clean shutdown the postmaster writes the live entries to
 * pg_stat/plivo_otp_ledger.dat and the next start reads them back (as
 * pg_stat_statements does with its file), so a restart loses no failed
 * attempt; only a crash or a failover loses the rolled-back failures of the
 * codes alive at that moment.
 *
 * A failure that brings a code's count to its max_attempts also notes the
 * code in a small ring of "locked" ids (same lock): the caller may roll
 * back the row's max_attempts state and the seal wipe that goes with it, so
 * the dispatcher's tick drains the ring and wipes those seals itself.  A
 * full ring drops the oldest id (that code's seal then goes when it
 * expires, or at its next refused attempt, which notes it again).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

typedef struct LedgerEntry
{
	pg_uuid_t	id;				/* hash key: the verification */
	int32		failures;
	TimestampTz expires_at;
} LedgerEntry;

/* Codes locked by their failures, waiting for the dispatcher to wipe their seal. */
#define LOCKED_RING_SIZE 256

typedef struct LedgerShared
{
	LWLock	   *lock;			/* guards the hash, full_reported and the ring */
	bool		full_reported;
	int			nlocked;		/* ids in locked[0 .. nlocked) */
	pg_uuid_t	locked[LOCKED_RING_SIZE];
} LedgerShared;

static LedgerShared *shared = NULL;
static HTAB *ledger = NULL;

#define LEDGER_FILE		"pg_stat/plivo_otp_ledger.dat"
#define LEDGER_MAGIC	0x504C4731	/* "PLG1" */

static void ledger_save(int code, Datum arg);
static void ledger_load(void);

void
plivo_otp_ledger_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(LedgerShared)));
	RequestAddinShmemSpace(hash_estimate_size(plivo_otp_max_live_codes, sizeof(LedgerEntry)));
	RequestNamedLWLockTranche("plivo_otp ledger", 1);
}

void
plivo_otp_ledger_shmem_startup(void)
{
	HASHCTL		info;
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("plivo_otp ledger", sizeof(LedgerShared), &found);
	if (!found)
	{
		shared->lock = &(GetNamedLWLockTranche("plivo_otp ledger"))->lock;
		shared->full_reported = false;
		shared->nlocked = 0;
	}
	info.keysize = sizeof(pg_uuid_t);
	info.entrysize = sizeof(LedgerEntry);
	ledger = ShmemInitHash("plivo_otp failed-attempt ledger",
						   plivo_otp_max_live_codes, plivo_otp_max_live_codes,
						   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	LWLockRelease(AddinShmemInitLock);

	/* The postmaster keeps the ledger across clean restarts. */
	if (!IsUnderPostmaster)
	{
		on_shmem_exit(ledger_save, (Datum) 0);
		if (!found)
			ledger_load();
	}
}

/* Read back the entries saved at the last clean shutdown, then drop the file. */
static void
ledger_load(void)
{
	FILE	   *file = AllocateFile(LEDGER_FILE, PG_BINARY_R);
	TimestampTz now = GetCurrentTimestamp();
	uint32		magic;
	int32		count;
	int			loaded = 0;

	if (file == NULL)
		return;
	if (fread(&magic, sizeof(magic), 1, file) == 1 && magic == LEDGER_MAGIC &&
		fread(&count, sizeof(count), 1, file) == 1)
	{
		for (int i = 0; i < count; i++)
		{
			LedgerEntry saved;
			LedgerEntry *entry;
			bool		found;

			if (fread(&saved, sizeof(saved), 1, file) != 1)
				break;
			if (saved.expires_at <= now)
				continue;
			entry = hash_search(ledger, &saved.id, HASH_ENTER_NULL, &found);
			if (entry == NULL)
				break;
			entry->failures = saved.failures;
			entry->expires_at = saved.expires_at;
			loaded++;
		}
	}
	FreeFile(file);
	unlink(LEDGER_FILE);
	if (loaded > 0)
		ereport(LOG,
				(errmsg_plural("plivo_otp: restored the failed attempts of %d live code",
							   "plivo_otp: restored the failed attempts of %d live codes",
							   loaded, loaded)));
}

/* At a clean shutdown (code 0), save the live entries; never after a crash. */
static void
ledger_save(int code, Datum arg)
{
	HASH_SEQ_STATUS status;
	LedgerEntry *entry;
	TimestampTz now = GetCurrentTimestamp();
	FILE	   *file;
	uint32		magic = LEDGER_MAGIC;
	int32		count = 0;
	bool		ok;

	if (code != 0 || ledger == NULL)
		return;
	file = AllocateFile(LEDGER_FILE ".tmp", PG_BINARY_W);
	if (file == NULL)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("plivo_otp: could not write \"%s\": %m", LEDGER_FILE ".tmp")));
		return;
	}
	hash_seq_init(&status, ledger);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (entry->expires_at > now && entry->failures > 0)
			count++;
	ok = fwrite(&magic, sizeof(magic), 1, file) == 1 &&
		fwrite(&count, sizeof(count), 1, file) == 1;
	hash_seq_init(&status, ledger);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (ok && entry->expires_at > now && entry->failures > 0)
			ok = fwrite(entry, sizeof(*entry), 1, file) == 1;
	if (FreeFile(file) != 0)
		ok = false;
	if (ok)
		(void) durable_rename(LEDGER_FILE ".tmp", LEDGER_FILE, LOG);
	else
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("plivo_otp: could not write \"%s\": %m", LEDGER_FILE ".tmp")));
		unlink(LEDGER_FILE ".tmp");
	}
}

static void
require_shared(void)
{
	plivo_otp_require_preload();
	if (shared == NULL || ledger == NULL)
		elog(ERROR, "plivo_otp: shared memory is not initialised");
}

/* Failed attempts recorded for a verification (0 if none). */
int
plivo_otp_ledger_failures(const pg_uuid_t *id)
{
	LedgerEntry *entry;
	int			failures = 0;

	require_shared();
	LWLockAcquire(shared->lock, LW_SHARED);
	entry = hash_search(ledger, id, HASH_FIND, NULL);
	if (entry)
		failures = entry->failures;
	LWLockRelease(shared->lock);
	return failures;
}

/* Drop entries of expired codes; caller holds the lock exclusively. */
static long
reclaim_expired(TimestampTz now)
{
	HASH_SEQ_STATUS status;
	LedgerEntry *entry;
	long		removed = 0;

	hash_seq_init(&status, ledger);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->expires_at <= now)
		{
			hash_search(ledger, &entry->id, HASH_REMOVE, NULL);
			removed++;
		}
	}
	return removed;
}

/*
 * Find or create the entry of a verification; the caller holds the lock
 * exclusively.  A ledger full of live codes is an ERROR (after the lock is
 * released): verification fails closed rather than leave failures uncounted.
 */
static LedgerEntry *
ledger_entry(const pg_uuid_t *id, TimestampTz expires_at)
{
	LedgerEntry *entry;
	bool		found;

	entry = hash_search(ledger, id, HASH_ENTER_NULL, &found);
	if (entry == NULL && reclaim_expired(GetCurrentTimestamp()) > 0)
		entry = hash_search(ledger, id, HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		bool		report = !shared->full_reported;

		shared->full_reported = true;
		LWLockRelease(shared->lock);
		if (report)
			ereport(LOG,
					(errmsg("plivo_otp: the failed-attempt ledger is full of live codes; verifications are refused"),
					 errhint("Raise plivo_otp.max_live_codes.")));
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("cannot verify codes now: too many live codes"),
				 errdetail("The failed-attempt ledger holds plivo_otp.max_live_codes = %d live codes.",
						   plivo_otp_max_live_codes),
				 errhint("Retry when codes expire, or raise plivo_otp.max_live_codes."),
				 errhidestmt(true)));
	}
	if (!found)
	{
		entry->failures = 0;
		entry->expires_at = expires_at;
		shared->full_reported = false;
	}
	return entry;
}

/*
 * Add `failures` (0 or 1) to a verification's count and return the new
 * count, creating the entry if needed.  Called with 0 before a code is
 * compared, so a full ledger refuses right and wrong codes alike (the
 * refusal tells an attacker nothing); called with 1 for a failed attempt,
 * which then counts at once and for good, whatever the caller's
 * transaction does.
 */
int
plivo_otp_ledger_add(const pg_uuid_t *id, TimestampTz expires_at, int failures)
{
	int			total;

	require_shared();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	total = (ledger_entry(id, expires_at)->failures += failures);
	LWLockRelease(shared->lock);
	return total;
}

/*
 * Note that verification id is locked by its failures (its count reached
 * max_attempts): the dispatcher wipes its seal (plivo_otp_ledger_take_locked).
 * An id already noted is not noted twice; a full ring drops its oldest.
 */
void
plivo_otp_ledger_note_locked(const pg_uuid_t *id)
{
	require_shared();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < shared->nlocked; i++)
	{
		if (memcmp(&shared->locked[i], id, sizeof(pg_uuid_t)) == 0)
		{
			LWLockRelease(shared->lock);
			return;
		}
	}
	if (shared->nlocked == LOCKED_RING_SIZE)
	{
		memmove(&shared->locked[0], &shared->locked[1],
				(LOCKED_RING_SIZE - 1) * sizeof(pg_uuid_t));
		shared->nlocked--;
	}
	shared->locked[shared->nlocked++] = *id;
	LWLockRelease(shared->lock);
}

/*
 * Move up to max noted ids into ids (the caller's array) and forget them;
 * returns how many.  Ids whose seal could not be wiped yet are noted again
 * by the caller.
 */
int
plivo_otp_ledger_take_locked(pg_uuid_t *ids, int max)
{
	int			n;

	require_shared();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	n = Min(shared->nlocked, max);
	memcpy(ids, shared->locked, n * sizeof(pg_uuid_t));
	memmove(&shared->locked[0], &shared->locked[n],
			(shared->nlocked - n) * sizeof(pg_uuid_t));
	shared->nlocked -= n;
	LWLockRelease(shared->lock);
	return n;
}
