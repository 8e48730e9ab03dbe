/*-------------------------------------------------------------------------
 *
 * dispatcher.c
 *	  The dispatcher background worker: drains the outbound queue to
 *	  Plivo's REST API.  This file is its loop, as named steps.
 *
 * One single-threaded event loop waits on its latch (set at commit of any
 * transaction that queued a message, and on SIGHUP/SIGTERM), on libcurl's
 * sockets (one epoll descriptor, see http.c) and on a timeout (the
 * earliest of libcurl's timer, the next retry, the rate limit and a
 * backstop).  Each turn:
 *
 *	wait		for the latch, a socket or the timeout;
 *	interrupts	SIGTERM (stop at once), SIGHUP (reload the settings);
 *	drive		let libcurl make progress, judge finished requests
 *				(outcome.c) and record their outcomes in one short
 *				transaction;
 *	timers		recover rows left in flight (once), expire unsendable
 *				rows and apply late callbacks (every second), purge old
 *				rows (every minute, retention.c);
 *	claim		due rows FOR UPDATE SKIP LOCKED, mark them 'sending',
 *				commit (queue.c); then start their requests, at most
 *				max_inflight at once and max_requests_per_second
 *				(rate_limit.c).
 *
 * No transaction is ever open while waiting on the network.  The worker
 * runs only on a primary (BgWorkerStart_RecoveryFinished); after promotion
 * the postmaster starts it and it carries on from the replicated queue.
 * Before touching the tables each unit of work checks that the extension
 * exists and locks it conditionally (common/worker.c), so DROP EXTENSION
 * never waits on it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "dispatcher.h"

PGDLLEXPORT void plivo_otp_dispatcher_main(Datum main_arg);

/* How long the worker sleeps with nothing to do: a backstop for rows that
 * arrive without a wake-up (restores, prepared transactions). */
#define BACKSTOP_MS 5000
#define EXPIRE_EVERY_MS 1000
#define PURGE_EVERY_MS 60000
/* Due rows that could not be claimed (locked by someone) are looked at again this soon. */
#define LOCKED_RETRY_MS 250

static MemoryContext dispatcher_context;
static MemoryContext loop_context;

static PlivoConfig config;
static bool configured = false;
static bool recovered = false;

static TimestampTz next_due = 0;	/* earliest next_try_at seen, 0 if none */
static TimestampTz next_expire_at = 0;
static TimestampTz next_purge_at = 0;
static TimestampTz next_backstop_at = 0;	/* claim at least this often */

static List *to_start = NIL;	/* requests of the current claim, started once it commits */

static void
clear_dispatcher_state(int code, Datum arg)
{
	plivo_otp_set_dispatcher_latch(NULL);
	plivo_otp_set_dispatcher_inflight(0);
}

/* Why the dispatcher cannot send, or NULL with config filled in. */
static char *
read_dispatch_config(void)
{
	char	   *why = NULL;
	char	   *token;

	if (plivo_otp_auth_id[0] == '\0')
		return "plivo_otp.auth_id is not set.";
	if (plivo_otp_sender[0] == '\0')
		return "plivo_otp.sender is not set.";
	if (!plivo_otp_check_url(plivo_otp_api_url, &config.api_url_loopback, &why))
		return psprintf("plivo_otp.api_url: %s", why);
	if ((token = plivo_otp_read_auth_token(&why)) == NULL)
		return why;

	config.auth_id = pstrdup(plivo_otp_auth_id);
	config.auth_token = token;
	config.api_url = plivo_otp_base_url(plivo_otp_api_url);
	config.sender = pstrdup(plivo_otp_sender);
	config.message_log = pstrdup(plivo_otp_message_log);
	config.request_timeout_ms = plivo_otp_request_timeout;
	if (plivo_otp_public_url[0] != '\0')
		config.callback_url = psprintf("%s/plivo/sms-status",
									   plivo_otp_base_url(plivo_otp_public_url));
	return NULL;
}

/* (Re)read settings and the auth token; say clearly what is missing. */
static void
load_dispatch_config(void)
{
	MemoryContext old = MemoryContextSwitchTo(dispatcher_context);
	char	   *why;

	if (config.auth_token)
		explicit_bzero(config.auth_token, strlen(config.auth_token));
	memset(&config, 0, sizeof(config));
	why = read_dispatch_config();
	configured = why == NULL;
	MemoryContextSwitchTo(old);

	if (configured)
		ereport(LOG,
				(errmsg("plivo_otp dispatcher sends to %s as %s", config.api_url, config.auth_id)));
	else
		ereport(LOG,
				(errmsg("plivo_otp dispatcher is not configured and sends nothing"),
				 errdetail_internal("%s", why),
				 errhint("Queued messages wait until it is configured, or expire.")));
	plivo_otp_rate_reset(GetCurrentTimestamp());
}

/*
 * One claimed row: its request, ready to start once the claim commits, or
 * an outcome saying why it cannot be sent.  Runs inside the claim.
 */
static void
prepare_transfer(const ClaimedMessage *row, TimestampTz now)
{
	int64		life = (row->expires_at - now) / USECS_PER_SEC;
	char	   *text;
	MemoryContext old;
	InflightMessage *m;
	HttpTransfer *t;

	if (life < PLIVO_MIN_MESSAGE_EXPIRY)
	{
		plivo_otp_add_outcome(&row->id, PLIVO_OTP_DISPATCH_EXPIRED, NULL, 0,
							  "code expired before it could be sent", 0);
		return;
	}
	if (row->body == NULL)
	{
		plivo_otp_add_outcome(&row->id, PLIVO_OTP_DISPATCH_REFUSED, NULL, 0,
							  "not sent: the queued row has no message body", 0);
		return;
	}
	text = plivo_otp_unseal(PLIVO_OTP_KEY_QUEUE_BODY, &row->id, row->body);
	if (text == NULL)
	{
		plivo_otp_add_outcome(&row->id, PLIVO_OTP_DISPATCH_REFUSED, NULL, 0,
							  "not sent: the queued body does not authenticate (was the key file replaced?)", 0);
		return;
	}

	old = MemoryContextSwitchTo(dispatcher_context);
	m = palloc(sizeof(InflightMessage));
	m->id = row->id;
	m->expires_at = row->expires_at;
	m->tries = row->tries;
	m->masked_phone = plivo_otp_mask_phone(row->phone);
	PG_TRY();
	{
		t = plivo_otp_message_request(&config, &row->id, row->phone, text,
									  (int) Min(life, PLIVO_MAX_MESSAGE_EXPIRY));
	}
	PG_FINALLY();
	{
		explicit_bzero(text, strlen(text));
	}
	PG_END_TRY();
	t->owner = m;
	to_start = lappend(to_start, t);
	MemoryContextSwitchTo(old);
}

/* The claim's unit of work; arg points to how many rows it may take. */
static void
claim_work(void *arg)
{
	int			limit = *(int *) arg;
	TimestampTz now = GetCurrentTimestamp();
	ClaimedMessage *rows;
	int			n = plivo_otp_queue_claim(now, limit, &rows);

	for (int i = 0; i < n; i++)
		prepare_transfer(&rows[i], now);

	/* When is the next row due?  (Now, if the batch was cut short.) */
	next_due = plivo_otp_queue_earliest_due();
	if (n == 0 && next_due != 0 && next_due <= now)
		next_due = now + LOCKED_RETRY_MS * 1000;
}

/*
 * Start the claimed requests, only now that the claim has committed: a
 * request started inside a claim that then rolled back would be sent, and
 * its row, pending again, claimed and sent a second time.
 */
static void
start_claimed(void)
{
	ListCell   *lc;

	foreach(lc, to_start)
	{
		HttpTransfer *t = (HttpTransfer *) lfirst(lc);

		if (plivo_otp_http_start(t))
			plivo_otp_rate_take();
		else
		{
			/* Nothing left: judged like a connection that failed before sending. */
			t->result = CURLE_FAILED_INIT;
			t->request_sent = false;
			plivo_otp_judge_transfer(t);
			plivo_otp_free_transfer(t);
		}
	}
}

/* The claim step: as many due rows as there is room for, then their requests. */
static void
claim_and_start(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			tokens;
	int			room;
	int			outcomes_before;
	ListCell   *lc;

	tokens = plivo_otp_rate_available(now);	/* (Min evaluates twice) */
	room = Min(plivo_otp_max_inflight - plivo_otp_http_inflight(), tokens);
	if (room <= 0)
		return;
	to_start = NIL;
	outcomes_before = plivo_otp_outcomes_waiting();
	if (plivo_otp_run_work("claiming due messages", claim_work, &room))
		start_claimed();
	else
	{
		foreach(lc, to_start)
			plivo_otp_free_transfer((HttpTransfer *) lfirst(lc));
		/* Outcomes judged inside the rolled-back claim no longer apply. */
		plivo_otp_outcomes_truncate(outcomes_before);
		next_due = 0;			/* the backstop timer tries again */
	}
	list_free(to_start);
	to_start = NIL;
	plivo_otp_set_dispatcher_inflight(plivo_otp_http_inflight());
}

static void
expire_work(void *arg)
{
	static bool fingerprint_recorded = false;
	int			n = plivo_otp_queue_expire_unsendable(GetCurrentTimestamp());

	/* Which key this database's codes are made with (crypto/key_check.c). */
	if (!fingerprint_recorded)
		fingerprint_recorded = plivo_otp_record_key_fingerprint();
	(void) plivo_otp_queue_wipe_expired_codes(GetCurrentTimestamp());

	if (n > 0)
		plivo_otp_count(PLIVO_OTP_COUNTER_EXPIRED, n);

	/* A backstop for callbacks that raced the recording of their UUID. */
	plivo_otp_apply_waiting_events();
}

static void
recover_work(void *arg)
{
	int			n = plivo_otp_queue_recover_in_flight(GetCurrentTimestamp());

	if (n > 0)
	{
		plivo_otp_count(PLIVO_OTP_COUNTER_UNKNOWN, n);
		ereport(LOG,
				(errmsg_plural("plivo_otp dispatcher marked %d message left in flight as unknown",
							   "plivo_otp dispatcher marked %d messages left in flight as unknown",
							   n, n),
				 errdetail("A dispatcher stopped while their requests were in flight; they are not re-sent, so no SMS goes out twice.")));
	}
}

/* Judge the requests that finished, and record their outcomes. */
static void
collect_finished(void)
{
	HttpTransfer *t;

	while ((t = plivo_otp_http_next_done()) != NULL)
	{
		plivo_otp_judge_transfer(t);
		plivo_otp_free_transfer(t);
	}
	plivo_otp_set_dispatcher_inflight(plivo_otp_http_inflight());
	plivo_otp_record_outcomes(&next_due);
}

/* How long to sleep: the earliest of every deadline the loop keeps. */
static long
compute_timeout(TimestampTz now)
{
	long		timeout = BACKSTOP_MS;
	long		curl_ms = plivo_otp_http_timeout_ms();

	if (curl_ms >= 0)
		timeout = Min(timeout, curl_ms);
	if (plivo_otp_outcomes_waiting() > 0)
		timeout = Min(timeout, 100);	/* a failed record is retried soon */
	if (configured && recovered && next_due != 0 &&
		plivo_otp_http_inflight() < plivo_otp_max_inflight)
	{
		/* (At max_inflight, a finishing request wakes us through its socket.) */
		long		due_ms = (long) Max(0, (next_due - now) / 1000);

		timeout = Min(timeout, Max(due_ms, plivo_otp_rate_wait_ms()));
	}
	timeout = Min(timeout, (long) Max(0, (next_expire_at - now) / 1000));
	return timeout;
}

/* Connect, set up memory, libcurl and shared state; the set to wait on. */
static WaitEventSet *
dispatcher_init(void)
{
	WaitEventSet *wait_set;

	plivo_otp_worker_connect("plivo_otp dispatcher");

	dispatcher_context = AllocSetContextCreate(TopMemoryContext, "plivo_otp dispatcher",
											   ALLOCSET_DEFAULT_SIZES);
	plivo_otp_outcomes_init(dispatcher_context);
	/* Whatever a turn of the loop allocates lives until the next turn. */
	loop_context = AllocSetContextCreate(dispatcher_context, "plivo_otp dispatcher loop",
										 ALLOCSET_DEFAULT_SIZES);
	plivo_otp_http_init();
	plivo_otp_set_dispatcher_latch(MyLatch);
	plivo_otp_set_dispatcher_pid(MyProcPid);
	before_shmem_exit(clear_dispatcher_state, (Datum) 0);

	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, plivo_otp_http_epoll_fd(), NULL, NULL);

	ereport(LOG, (errmsg("plivo_otp dispatcher started")));
	load_dispatch_config();
	return wait_set;
}

/* Sleep until the latch, libcurl's descriptor or the next deadline. */
static void
wait_for_events(WaitEventSet *wait_set, bool *latch_set, bool *socket_ready)
{
	WaitEvent	events[3];
	int			n;

	n = WaitEventSetWait(wait_set, compute_timeout(GetCurrentTimestamp()), events,
						 lengthof(events), PG_WAIT_EXTENSION);
	*latch_set = false;
	*socket_ready = false;
	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_SOCKET_READABLE)
			*socket_ready = true;
		if (events[i].events & WL_LATCH_SET)
			*latch_set = true;
	}
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* SIGTERM: stop at once; SIGHUP: reload. */
static void
handle_interrupts(void)
{
	if (ShutdownRequestPending)
	{
		plivo_otp_http_abort_all(plivo_otp_abandon_transfer);
		plivo_otp_record_outcomes(&next_due);

		/*
		 * Exit code 1, not 0: the postmaster unregisters a background worker
		 * that exits with 0, so pg_terminate_backend would stop dispatching
		 * until the next server restart.  At server shutdown the postmaster
		 * restarts nothing anyway.
		 */
		proc_exit(1);
	}
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		load_dispatch_config();
	}
}

/* Recovery once at start, expiry every second, purging every minute. */
static void
run_timers(TimestampTz now)
{
	if (!recovered)
		recovered = plivo_otp_run_work("recovering messages left in flight", recover_work, NULL);
	if (now >= next_expire_at)
	{
		plivo_otp_run_work("expiring unsendable messages", expire_work, NULL);
		next_expire_at = now + EXPIRE_EVERY_MS * 1000;
	}
	if (now >= next_purge_at)
	{
		plivo_otp_run_work("purging old verifications", plivo_otp_purge_old_rows, NULL);
		next_purge_at = now + PURGE_EVERY_MS * 1000;
	}
}

/*
 * Look for work only with a reason to: a commit set the latch, a row is
 * due (a retry, or rows left when a batch was cut short), or the backstop
 * for rows queued without a wake-up (prepared transactions, restores).
 * Socket events of running requests alone start no transaction.
 */
static bool
should_claim(bool latch_set, TimestampTz now)
{
	return configured && recovered &&
		(latch_set || (next_due != 0 && next_due <= now) || now >= next_backstop_at);
}

void
plivo_otp_dispatcher_main(Datum main_arg)
{
	WaitEventSet *wait_set = dispatcher_init();

	for (;;)
	{
		bool		latch_set;
		bool		socket_ready;
		TimestampTz now;

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);

		wait_for_events(wait_set, &latch_set, &socket_ready);
		handle_interrupts();

		plivo_otp_http_drive(socket_ready);
		collect_finished();

		now = GetCurrentTimestamp();
		run_timers(now);
		if (should_claim(latch_set, now))
		{
			next_backstop_at = now + BACKSTOP_MS * 1000;
			claim_and_start();
			/* Rows found expired or unsendable while claiming. */
			plivo_otp_record_outcomes(&next_due);
		}
	}
}
