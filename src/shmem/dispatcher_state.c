/*-------------------------------------------------------------------------
 *
 * dispatcher_state.c
 *	  The dispatcher's shared state: its latch (for the wake-up at commit),
 *	  its pid, requests in flight, its last error, when Plivo last took a
 *	  message, and the counters behind the stats views.
 *
 * No LWLock: the latch pointer and the pid are single stores, the counters
 * and the in-flight count are pg_atomic, and the last error is copied under
 * a spinlock (a short memcpy, nothing that could fail while holding it).
 * Each wake-up also bumps a counter, which the dispatcher compares after
 * every wait: a wake-up that lands while it is busy is never lost, whatever
 * event its wait returned.
 * Counters start at zero when shared memory is created (server start, or
 * the reinitialisation after a crash); counters_since says when.  Each
 * count also goes into the per-minute ring of activity.c, for the
 * monitoring views' time windows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

typedef struct DispatcherShared
{
	Latch	   *latch;			/* NULL while no dispatcher runs */
	pid_t		pid;
	pg_atomic_uint32 inflight;
	pg_atomic_uint64 wakeups;	/* bumped before each SetLatch of a wake-up */
	pg_atomic_uint32 wants_wakes;	/* 0 while it cannot send: no signal then */
	slock_t		error_mutex;	/* guards last_error and last_error_at */
	char		last_error[256];	/* sanitised: no token, no full number */
	TimestampTz last_error_at;
	pg_atomic_uint64 last_accepted_at;	/* a TimestampTz; 0 before the first */
	TimestampTz counters_since;
	pg_atomic_uint64 counters[PLIVO_OTP_NUM_COUNTERS];
} DispatcherShared;

static DispatcherShared *shared = NULL;

void
plivo_otp_state_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(DispatcherShared)));
}

void
plivo_otp_state_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("plivo_otp dispatcher state", sizeof(DispatcherShared), &found);
	if (!found)
	{
		shared->latch = NULL;
		shared->pid = 0;
		pg_atomic_init_u32(&shared->inflight, 0);
		pg_atomic_init_u64(&shared->wakeups, 0);
		pg_atomic_init_u32(&shared->wants_wakes, 0);
		SpinLockInit(&shared->error_mutex);
		shared->last_error[0] = '\0';
		shared->last_error_at = 0;
		pg_atomic_init_u64(&shared->last_accepted_at, 0);
		shared->counters_since = GetCurrentTimestamp();
		for (int i = 0; i < PLIVO_OTP_NUM_COUNTERS; i++)
			pg_atomic_init_u64(&shared->counters[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The ring's first activities are the counters, in their order. */
StaticAssertDecl((int) PLIVO_OTP_ACT_SMS_SEGMENTS == (int) PLIVO_OTP_COUNTER_SMS_SEGMENTS &&
				 (int) PLIVO_OTP_ACT_UNKNOWN == (int) PLIVO_OTP_COUNTER_UNKNOWN &&
				 (int) PLIVO_OTP_ACT_SENDS == (int) PLIVO_OTP_COUNTER_SENDS,
				 "PlivoOtpActivity starts with PlivoOtpCounter");

void
plivo_otp_count(PlivoOtpCounter counter, uint64 n)
{
	if (shared == NULL)
		return;
	pg_atomic_fetch_add_u64(&shared->counters[counter], n);
	if (counter == PLIVO_OTP_COUNTER_ACCEPTED && n > 0)
		pg_atomic_write_u64(&shared->last_accepted_at, (uint64) GetCurrentTimestamp());
	plivo_otp_activity_add((PlivoOtpActivity) counter, n);
}

/* The dispatcher publishes its latch at start and clears it at exit. */
void
plivo_otp_set_dispatcher_latch(Latch *latch)
{
	if (shared)
		shared->latch = latch;
}

/*
 * A committed transaction queued a message.  The signal (a kill(), and the
 * dispatcher's wake-up on the other core) was about 7 % of otp_send's time in
 * a profile, so it is skipped while the dispatcher could not send anyway.
 * The barrier pairs with the one in plivo_otp_set_dispatcher_wants_wakes:
 * either this commit sees the flag set, or the claim that follows setting
 * it sees this commit.
 */
void
plivo_otp_wake_dispatcher(void)
{
	Latch	   *latch;

	if (shared == NULL)
		return;
	pg_memory_barrier();
	if (pg_atomic_read_u32(&shared->wants_wakes) == 0)
		return;
	latch = shared->latch;
	pg_atomic_fetch_add_u64(&shared->wakeups, 1);	/* a full barrier */
	if (latch)
		SetLatch(latch);
}

/*
 * The dispatcher says whether commits should wake it: not while it is not
 * configured.  Once it wants them again it claims at once (what committed
 * meanwhile woke nobody).
 */
void
plivo_otp_set_dispatcher_wants_wakes(bool wants)
{
	if (shared)
		pg_atomic_exchange_u32(&shared->wants_wakes, wants ? 1 : 0);	/* a full barrier */
}

/* How many wake-ups there have been; the dispatcher claims when it moved. */
uint64
plivo_otp_dispatcher_wakeups(void)
{
	return shared ? pg_atomic_read_u64(&shared->wakeups) : 0;
}

void
plivo_otp_set_dispatcher_pid(pid_t pid)
{
	if (shared)
		shared->pid = pid;
}

void
plivo_otp_set_dispatcher_inflight(int n)
{
	if (shared)
		pg_atomic_write_u32(&shared->inflight, (uint32) n);
}

/* The dispatcher's latest error, for the stats view (already sanitised). */
void
plivo_otp_set_last_error(const char *error)
{
	TimestampTz now = GetCurrentTimestamp();

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->error_mutex);
	strlcpy(shared->last_error, error, sizeof(shared->last_error));
	shared->last_error_at = now;
	SpinLockRelease(&shared->error_mutex);
}

/* A snapshot of the dispatcher's state and the counters, for the stats views. */
void
plivo_otp_dispatcher_snapshot(PlivoOtpDispatcherSnapshot *snap)
{
	plivo_otp_require_preload();
	if (shared == NULL)
		elog(ERROR, "plivo_otp: shared memory is not initialised");
	snap->pid = shared->latch ? shared->pid : 0;
	snap->inflight = (int) pg_atomic_read_u32(&shared->inflight);
	SpinLockAcquire(&shared->error_mutex);
	memcpy(snap->last_error, shared->last_error, sizeof(snap->last_error));
	snap->last_error_at = shared->last_error_at;
	SpinLockRelease(&shared->error_mutex);
	snap->last_accepted_at = (TimestampTz) pg_atomic_read_u64(&shared->last_accepted_at);
	snap->counters_since = shared->counters_since;
	for (int i = 0; i < PLIVO_OTP_NUM_COUNTERS; i++)
		snap->counters[i] = pg_atomic_read_u64(&shared->counters[i]);
}
