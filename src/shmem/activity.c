/*-------------------------------------------------------------------------
 *
 * activity.c
 *	  Per-minute counts of what happened (sends, refusals by limit, checks,
 *	  lock-outs, the dispatcher's outcomes, the listener's answers) in
 *	  shared memory, for the monitoring views' time windows.
 *
 * A refused send rolls back, so it leaves no row to count: the events are
 * counted here when they happen, whatever the transaction then does.  The
 * ring holds PLIVO_OTP_ACTIVITY_MINUTES one-minute buckets (24 hours), each
 * stamped with the minute it counts; a bucket is reused, zeroed, when its
 * minute comes round again.  Everything starts at zero when shared memory
 * is created (server start, or the reinitialisation after a crash):
 * nothing here survives a restart, and plivo_otp_activity_since() says
 * since when it counts.
 *
 * No lock: the listener's libmicrohttpd callbacks count too, so this uses
 * only atomics.  The writer that finds a bucket stamped with an older
 * minute claims it (compare-and-swap of the stamp to ACTIVITY_CLAIMED),
 * zeroes it and stamps it with its minute; a writer that finds the bucket
 * claimed waits a few spins for the stamp, then drops its count (a stall
 * of the claimer in those nanoseconds could only lose counts, never block).
 * A reader takes a bucket's counts only if its stamp is the same before
 * and after reading them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

#define ACTIVITY_CLAIMED	PG_UINT64_MAX
#define ACTIVITY_SPINS		1000

typedef struct ActivityBucket
{
	pg_atomic_uint64 minute;	/* minutes since the PostgreSQL epoch, or CLAIMED */
	pg_atomic_uint64 counts[PLIVO_OTP_NUM_ACTIVITIES];
} ActivityBucket;

typedef struct ActivityShared
{
	TimestampTz since;
	pg_atomic_uint64 totals[PLIVO_OTP_NUM_ACTIVITIES];
	ActivityBucket buckets[PLIVO_OTP_ACTIVITY_MINUTES];
} ActivityShared;

static ActivityShared *activity = NULL;

void
plivo_otp_activity_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(ActivityShared)));
}

void
plivo_otp_activity_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	activity = ShmemInitStruct("plivo_otp activity", sizeof(ActivityShared), &found);
	if (!found)
	{
		activity->since = GetCurrentTimestamp();
		for (int i = 0; i < PLIVO_OTP_NUM_ACTIVITIES; i++)
			pg_atomic_init_u64(&activity->totals[i], 0);
		for (int b = 0; b < PLIVO_OTP_ACTIVITY_MINUTES; b++)
		{
			pg_atomic_init_u64(&activity->buckets[b].minute, 0);
			for (int i = 0; i < PLIVO_OTP_NUM_ACTIVITIES; i++)
				pg_atomic_init_u64(&activity->buckets[b].counts[i], 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The minute a time falls in (whole minutes since 2000-01-01). */
static uint64
minute_of(TimestampTz t)
{
	return t > 0 ? (uint64) (t / USECS_PER_MINUTE) : 0;
}

/*
 * The bucket of this minute, claimed and zeroed if it still counted an
 * older one; NULL when another process is claiming it right now.
 */
static ActivityBucket *
current_bucket(uint64 minute)
{
	ActivityBucket *bucket = &activity->buckets[minute % PLIVO_OTP_ACTIVITY_MINUTES];

	for (int spins = 0; spins < ACTIVITY_SPINS; spins++)
	{
		uint64		stamp = pg_atomic_read_u64(&bucket->minute);

		if (stamp == minute)
			return bucket;
		/* A newer stamp: this clock lags another process's; count it there. */
		if (stamp != ACTIVITY_CLAIMED && stamp > minute)
			return bucket;
		if (stamp != ACTIVITY_CLAIMED &&
			pg_atomic_compare_exchange_u64(&bucket->minute, &stamp, ACTIVITY_CLAIMED))
		{
			for (int i = 0; i < PLIVO_OTP_NUM_ACTIVITIES; i++)
				pg_atomic_write_u64(&bucket->counts[i], 0);
			pg_write_barrier();
			pg_atomic_write_u64(&bucket->minute, minute);
			return bucket;
		}
		pg_spin_delay();
	}
	return NULL;
}

/* Count n events of one kind now.  Safe in any thread; never fails. */
void
plivo_otp_activity_add(PlivoOtpActivity event, uint64 n)
{
	ActivityBucket *bucket;

	if (activity == NULL || event < 0 || event >= PLIVO_OTP_NUM_ACTIVITIES || n == 0)
		return;
	pg_atomic_fetch_add_u64(&activity->totals[event], n);
	bucket = current_bucket(minute_of(GetCurrentTimestamp()));
	if (bucket)
		pg_atomic_fetch_add_u64(&bucket->counts[event], n);
}

/*
 * One request of the listener, by outcome: recorded, or refused by reason
 * (one call at each site that decides the answer).  Counted when decided:
 * a callback of a batch whose transaction then fails counts under its
 * outcome and under not_recorded.
 */
void
plivo_otp_listener_count(PlivoOtpActivity outcome)
{
	plivo_otp_activity_add(outcome, 1);
}

/* When the counts started (shared memory created). */
TimestampTz
plivo_otp_activity_since(void)
{
	plivo_otp_require_preload();
	if (activity == NULL)
		elog(ERROR, "plivo_otp: shared memory is not initialised");
	return activity->since;
}

/*
 * The counts of the last `minutes` one-minute buckets up to now's (now's
 * minute included, so the window spans between minutes - 1 and minutes
 * minutes), added into sums (PLIVO_OTP_NUM_ACTIVITIES entries, zeroed by
 * the caller).  minutes is at most PLIVO_OTP_ACTIVITY_MINUTES; 0 adds the
 * totals since the counts started.
 */
void
plivo_otp_activity_sum(TimestampTz now, int minutes, uint64 *sums)
{
	uint64		current = minute_of(now);

	plivo_otp_require_preload();
	if (activity == NULL)
		elog(ERROR, "plivo_otp: shared memory is not initialised");
	Assert(minutes >= 0 && minutes <= PLIVO_OTP_ACTIVITY_MINUTES);
	if (minutes == 0)
	{
		for (int i = 0; i < PLIVO_OTP_NUM_ACTIVITIES; i++)
			sums[i] += pg_atomic_read_u64(&activity->totals[i]);
		return;
	}
	for (int b = 0; b < PLIVO_OTP_ACTIVITY_MINUTES; b++)
	{
		ActivityBucket *bucket = &activity->buckets[b];
		uint64		stamp = pg_atomic_read_u64(&bucket->minute);
		uint64		counts[PLIVO_OTP_NUM_ACTIVITIES];

		/* (A stamp a lagging clock left ahead of now counts as now's.) */
		if (stamp == ACTIVITY_CLAIMED || stamp == 0 || stamp + minutes <= current)
			continue;
		pg_read_barrier();
		for (int i = 0; i < PLIVO_OTP_NUM_ACTIVITIES; i++)
			counts[i] = pg_atomic_read_u64(&bucket->counts[i]);
		pg_read_barrier();
		if (pg_atomic_read_u64(&bucket->minute) != stamp)
			continue;
		for (int i = 0; i < PLIVO_OTP_NUM_ACTIVITIES; i++)
			sums[i] += counts[i];
	}
}
