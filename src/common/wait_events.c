/*-------------------------------------------------------------------------
 *
 * wait_events.c
 *	  What the plivo_otp workers wait for, as pg_stat_activity shows it.
 *
 * On PostgreSQL 17 and later each wait of a worker has its own named wait
 * event (wait_event_type "Extension", wait_event e.g.
 * "PlivoOtpDispatcherIdle"), registered with WaitEventExtensionNew the
 * first time this process waits on it.  PostgreSQL 15 and 16 can only say
 * "Extension" (PG_WAIT_EXTENSION): there the worker also reports, as its
 * pg_stat_activity.query, a line saying what it waits for; the name is
 * the same as on 17.  The dispatcher and the listener call
 * plivo_otp_wait_event() right before WaitLatch / WaitEventSetWait, on the
 * set plivo_otp_worker_wait_set() made.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "plivo_otp.h"

typedef struct PlivoOtpWaitInfo
{
	const char *name;			/* the wait event's name on 17 */
	const char *activity;		/* pg_stat_activity.query on 15 and 16 */
} PlivoOtpWaitInfo;

/* In the order of PlivoOtpWait. */
static const PlivoOtpWaitInfo wait_info[PLIVO_OTP_NUM_WAITS] = {
	{"PlivoOtpDispatcherIdle",
	"waiting (PlivoOtpDispatcherIdle): for a commit to wake it, a retry or the next timer"},
	{"PlivoOtpDispatcherHttp",
	"waiting (PlivoOtpDispatcherHttp): for Plivo's answers to requests in flight"},
	{"PlivoOtpDispatcherErrorPause",
	"waiting (PlivoOtpDispatcherErrorPause): a pause after an error, before carrying on"},
	{"PlivoOtpListenerIdle",
	"waiting (PlivoOtpListenerIdle): for a callback connection"},
	{"PlivoOtpListenerClients",
	"waiting (PlivoOtpListenerClients): for open callback connections to send their requests"},
	{"PlivoOtpListenerRetry",
	"waiting (PlivoOtpListenerRetry): to try again to listen on its port"},
};

#if PG_VERSION_NUM >= 170000
/* This process's registered ids, 0 until first used. */
static uint32 wait_ids[PLIVO_OTP_NUM_WAITS];
#endif

/*
 * The wait event to pass to WaitLatch / WaitEventSetWait for wait `w`; on
 * 15 and 16 it also reports what the worker waits for as its activity.
 */
uint32
plivo_otp_wait_event(PlivoOtpWait w)
{
	Assert(w >= 0 && w < PLIVO_OTP_NUM_WAITS);
#if PG_VERSION_NUM >= 170000
	if (wait_ids[w] == 0)
		wait_ids[w] = WaitEventExtensionNew(wait_info[w].name);
	return wait_ids[w];
#else
	pgstat_report_activity(STATE_IDLE, wait_info[w].activity);
	return PG_WAIT_EXTENSION;
#endif
}

/*
 * The set a worker waits on all its life: its latch, the postmaster's
 * death and descriptor fd (libcurl's or libmicrohttpd's epoll descriptor)
 * becoming readable.
 */
WaitEventSet *
plivo_otp_worker_wait_set(int fd)
{
	WaitEventSet *set;

#if PG_VERSION_NUM >= 170000
	/* No resource owner: the set lives as long as the process. */
	set = CreateWaitEventSet(NULL, 3);
#else
	set = CreateWaitEventSet(TopMemoryContext, 3);
#endif
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(set, WL_SOCKET_READABLE, fd, NULL, NULL);
	return set;
}
