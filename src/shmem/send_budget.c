/*-------------------------------------------------------------------------
 *
 * send_budget.c
 *	  The count behind plivo_otp.global_max_sends_per_hour: the sends of the
 *	  last hour in shared memory, by second, taken when otp_send runs and
 *	  given back if its transaction or savepoint rolls back.
 *
 * Counting a send before its transaction commits, under one lock, is what
 * makes the cap hold against any mix of concurrent transactions: each send
 * takes its place in the count before it is allowed, whether the sends
 * before it have committed yet or not, and whatever the isolation level.
 * A prepared transaction keeps its places (if it is rolled back later, the
 * count is too high for at most an hour: the cap is never exceeded).
 *
 * The count lives in a ring of one slot per second of the last hour, with a
 * running total; slots that fall out of the hour are emptied as time moves
 * on.  After a server start (or the reinitialisation after a crash) the
 * ring is filled once from the queue of plivo_otp.database, on a primary:
 * the messages committed within the hour.  A clock that steps back keeps
 * every place taken; one that jumps forward ages them out early.
 *
 * Locking: one LWLock ("plivo_otp send budget") guards the ring.  Each
 * backend remembers its own uncommitted places (with the subtransaction
 * that took them) in TopMemoryContext, to give them back on rollback.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

#define WINDOW_SECS 3600

typedef struct SendBudget
{
	LWLock	   *lock;
	bool		loaded;			/* filled from the table since shmem was made */
	int64		head;			/* the latest second accounted for */
	int64		total;			/* sends in (head - WINDOW_SECS, head] */
	int32		count[WINDOW_SECS]; /* sends of second s at s % WINDOW_SECS */
} SendBudget;

/* Places this backend's open transaction took: n sends in second sec. */
typedef struct Reservation
{
	int64		sec;
	SubTransactionId subid;
	int32		n;
} Reservation;

static SendBudget *budget = NULL;
static Reservation *reserved = NULL;
static int	nreserved = 0;
static int	reserved_room = 0;
static bool callbacks_registered = false;

/*
 * Every message counts (re-deliveries too), but a voice fallback the
 * dispatcher refused (never sent, and given back when refused); Unix
 * seconds, converted below.
 */
#define SENDS_LAST_HOUR(filter) \
	"SELECT floor(extract(epoch FROM created_at))::int8, count(*)::int4" \
	" FROM plivo_otp.messages WHERE created_at > $1" filter " GROUP BY 1"

static PlivoOtpStatement sends_last_hour = {
	SENDS_LAST_HOUR(" AND NOT (origin = 'fallback' AND dispatch_state = 'canceled')"),
	1, {TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "messages_created"
};

/* 0.1.0's table, while an upgrade is pending: no origin. */
static PlivoOtpStatement sends_last_hour_v1 = {
	SENDS_LAST_HOUR(""), 1, {TIMESTAMPTZOID}, .forced_plan = true
};

/* Unix seconds to PostgreSQL's (since 2000-01-01), as second_of() counts. */
#define UNIX_TO_PG_SECS(s) \
	((s) - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)

/* A clock that steps back more than this re-anchors the ring at the new time. */
#define CLOCK_BACK_TOLERANCE_SECS 60

void
plivo_otp_budget_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SendBudget)));
	RequestNamedLWLockTranche("plivo_otp send budget", 1);
}

void
plivo_otp_budget_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	budget = ShmemInitStruct("plivo_otp send budget", sizeof(SendBudget), &found);
	if (!found)
	{
		memset(budget, 0, sizeof(SendBudget));
		budget->lock = &(GetNamedLWLockTranche("plivo_otp send budget"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

static int64
second_of(TimestampTz t)
{
	return (int64) (t / USECS_PER_SEC);
}

/* The ring slot of second s (also for a clock before 2000: s < 0). */
static int
slot(int64 s)
{
	return (int) (((s % WINDOW_SECS) + WINDOW_SECS) % WINDOW_SECS);
}

/* Empty the slots that fell out of the hour up to now; caller holds the lock. */
static void
advance_to(int64 now)
{
	int64		from = Max(budget->head + 1, now - WINDOW_SECS + 1);

	if (now <= budget->head)
	{
		/*
		 * The clock went back.  A little: count on at head.  Much: keep the
		 * total, as if every counted send had happened now (never fewer
		 * places taken, and they age out an hour from the new time).
		 */
		if (budget->head - now > CLOCK_BACK_TOLERANCE_SECS)
		{
			memset(budget->count, 0, sizeof(budget->count));
			budget->count[slot(now)] = (int32) Min(budget->total, PG_INT32_MAX);
			budget->head = now;
		}
		return;
	}
	if (budget->head == 0 || now - budget->head >= WINDOW_SECS)
	{
		memset(budget->count, 0, sizeof(budget->count));
		budget->total = 0;
	}
	else
		for (int64 s = from; s <= now; s++)
		{
			budget->total -= budget->count[slot(s)];
			budget->count[slot(s)] = 0;
		}
	budget->head = now;
}

/* When the oldest send still counted leaves the hour; caller holds the lock. */
static TimestampTz
oldest_leaves_at(void)
{
	for (int64 s = budget->head - WINDOW_SECS + 1; s <= budget->head; s++)
		if (budget->count[slot(s)] > 0)
			return (TimestampTz) (s + WINDOW_SECS + 1) * USECS_PER_SEC;
	return (TimestampTz) (budget->head + 1) * USECS_PER_SEC;
}

/* Only the queue of plivo_otp.database, on a primary, tells the sends of the hour. */
static bool
can_load(void)
{
	static int	in_dispatch_database = -1;

	if (in_dispatch_database < 0)
	{
		char	   *here = get_database_name(MyDatabaseId);

		in_dispatch_database = here != NULL && strcmp(here, plivo_otp_database) == 0;
	}
	return in_dispatch_database && !RecoveryInProgress();
}

/*
 * Fill the ring from the table once.  Runs the query before taking the
 * lock (SPI connected by the caller); the first backend to take it fills.
 */
static void
load_once(TimestampTz now)
{
	Datum		args[1];
	int			n;
	bool		isnull;

	if (budget->loaded || !can_load())
		return;
	args[0] = TimestampTzGetDatum(now - (int64) WINDOW_SECS * USECS_PER_SEC);
	n = plivo_otp_exec_latest(plivo_otp_schema_is_v2() ? &sends_last_hour : &sends_last_hour_v1,
							  args, NULL, 0);
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	if (!budget->loaded)
	{
		advance_to(second_of(now));
		for (int i = 0; i < n; i++)
		{
			int64		sec = UNIX_TO_PG_SECS(DatumGetInt64(plivo_otp_get(i, 1, &isnull)));
			int32		cnt = DatumGetInt32(plivo_otp_get(i, 2, &isnull));

			if (sec > budget->head - WINDOW_SECS && sec <= budget->head)
			{
				budget->count[slot(sec)] += cnt;
				budget->total += cnt;
			}
		}
		budget->loaded = true;
	}
	LWLockRelease(budget->lock);
}

/* Room for one more reservation, made before a place is taken. */
static void
ensure_room(void)
{
	if (nreserved < reserved_room)
		return;
	reserved_room = Max(16, reserved_room * 2);
	reserved = reserved == NULL ?
		MemoryContextAlloc(TopMemoryContext, reserved_room * sizeof(Reservation)) :
		repalloc(reserved, reserved_room * sizeof(Reservation));
}

static void
remember(int64 sec)
{
	SubTransactionId subid = GetCurrentSubTransactionId();

	if (nreserved > 0 && reserved[nreserved - 1].sec == sec &&
		reserved[nreserved - 1].subid == subid)
	{
		reserved[nreserved - 1].n++;
		return;
	}
	reserved[nreserved].sec = sec;
	reserved[nreserved].subid = subid;
	reserved[nreserved].n = 1;
	nreserved++;
}

/* Give back the places taken from index `from` on; they rolled back. */
static void
give_back(int from)
{
	if (budget == NULL || from >= nreserved)
		return;
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	for (int i = from; i < nreserved; i++)
	{
		int64		sec = reserved[i].sec;

		/* A slot that left the hour was emptied already. */
		if (sec > budget->head - WINDOW_SECS && sec <= budget->head)
		{
			budget->count[slot(sec)] -= reserved[i].n;
			budget->total -= reserved[i].n;
		}
	}
	LWLockRelease(budget->lock);
	nreserved = from;
}

static void
budget_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			give_back(0);
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			nreserved = 0;		/* they stay counted */
			break;
		default:
			break;
	}
}

/*
 * A savepoint rolled back gives back its places and its children's (they
 * come after it); one released hands them to its parent.
 */
static void
budget_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		int			from = nreserved;

		while (from > 0 && reserved[from - 1].subid >= mySubid)
			from--;
		give_back(from);
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (int i = nreserved - 1; i >= 0 && reserved[i].subid >= mySubid; i--)
			reserved[i].subid = parentSubid;
	}
}

/*
 * Take a place for one send within cap sends per hour.  False, with
 * *retry_at set to when a place frees up, if the cap is reached.  SPI must
 * be connected (the first call after a start reads the table).
 */
bool
plivo_otp_budget_take(int cap, TimestampTz now, TimestampTz *retry_at)
{
	int64		sec = second_of(now);
	bool		allowed;

	if (budget == NULL)
		elog(ERROR, "plivo_otp: shared memory is not initialised");
	if (!callbacks_registered)
	{
		RegisterXactCallback(budget_xact_callback, NULL);
		RegisterSubXactCallback(budget_subxact_callback, NULL);
		callbacks_registered = true;
	}
	load_once(now);
	ensure_room();

	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	advance_to(sec);
	sec = budget->head;
	allowed = budget->total < cap;
	if (allowed)
	{
		budget->count[slot(sec)]++;
		budget->total++;
	}
	else
		*retry_at = oldest_leaves_at();
	LWLockRelease(budget->lock);

	if (allowed)
		remember(sec);
	return allowed;
}

/* Sends counted within the last hour (committed, prepared, or in progress). */
int64
plivo_otp_budget_count(TimestampTz now)
{
	int64		total;

	if (budget == NULL)
		elog(ERROR, "plivo_otp: shared memory is not initialised");
	load_once(now);
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	advance_to(second_of(now));
	total = budget->total;
	LWLockRelease(budget->lock);
	return total;
}
