/*-------------------------------------------------------------------------
 *
 * listener.c
 *	  The webhook listener background worker: an HTTP endpoint for Plivo's
 *	  message-status callbacks, voice calls' answer URLs and call hang-up
 *	  callbacks.  This file is its loop, its settings and the recording of
 *	  callbacks.
 *
 * One single-threaded event loop: libmicrohttpd runs without a thread of
 * its own, in epoll mode (server.c), and its epoll descriptor waits in the
 * worker's WaitEventSet beside the latch.  Each turn runs the server, which
 * accepts, reads and judges requests and suspends each authentic callback.
 *
 * After that, the suspended callbacks are recorded together in one short
 * transaction, and only after that transaction has committed are their
 * connections resumed and answered 200.  The V3-signed status callbacks,
 * nearly all of them, take three statements together whatever their number
 * (delivery.c: the nonces, the events, applying them) in one
 * subtransaction; should that fail, each is recorded again in a
 * subtransaction of its own, as every other request is, so that one bad
 * callback cannot fail the others.  One commit and its flush serve the
 * whole batch.  A callback therefore never gets a
 * 200 for an event that was not stored; Plivo retries anything else.  A
 * call's answer is decided in the same transaction (voice_answer.c): its
 * script is sent only once the wipe of its body has committed; an answer
 * that must wait for the dispatcher stays suspended and is decided again
 * in a later batch (server.c holds it).
 *
 * When the address and port are taken (by another server, say), the worker
 * does not exit, which would have the postmaster restart it every second,
 * each time with a log line: it logs once, tries again every
 * LISTEN_RETRY_SECS, and logs again only if the reason changes or every
 * LISTEN_REMIND_SECS while it lasts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <microhttpd.h>

#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "listener.h"

#define LISTEN_RETRY_SECS 2
#define LISTEN_REMIND_SECS 600

PGDLLEXPORT void plivo_otp_listener_main(Datum main_arg);

ListenerConfig plivo_otp_listener_config = {false, NULL, NULL};

/* Decide a call's answer (a subtransaction of the batch). */
static void
answer_call(CallbackRequest *req)
{
	char	   *xml = NULL;

	switch (plivo_otp_voice_answer(req->params, req->nparams, req->nonce, req->other_nonce,
								   req->token, plivo_otp_server_hold_over(req), &xml))
	{
		case PLIVO_VOICE_SCRIPT:
			{
				bool		copied = plivo_otp_server_decide_script(req, xml);

				explicit_bzero(xml, strlen(xml));
				if (!copied)
					ereport(ERROR,
							(errcode(ERRCODE_OUT_OF_MEMORY),
							 errmsg("out of memory")));
			}
			break;
		case PLIVO_VOICE_NO_CODE:
			plivo_otp_server_decide_no_code(req);
			break;
		case PLIVO_VOICE_WAIT:
			req->hold = true;
			break;
	}
}

/* The answer to a callback that was ingested with result. */
static void
decide_ingested(CallbackRequest *req, PlivoIngestResult result)
{
	switch (result)
	{
		case PLIVO_INGEST_RECORDED:
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_RECORDED);
			plivo_otp_server_decide(req, MHD_HTTP_OK, "OK\n");
			break;
		case PLIVO_INGEST_DUPLICATE:
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_DUPLICATE);
			plivo_otp_server_decide(req, MHD_HTTP_OK, "OK\n");
			break;
		case PLIVO_INGEST_REPLAYED:
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_REPLAY);
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN, "nonce already used\n");
			break;
		case PLIVO_INGEST_STALE_V2:
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_V2_REFUSED);
			/* Plivo's retries get the same; only V3 counts for an old message. */
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN,
									"V2 signature too old for this message\n");
			break;
		case PLIVO_INGEST_V2_UNBOUND:
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_V2_REFUSED);
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN,
									"V2 signature counts only on a message's own callback URL\n");
			break;
		case PLIVO_INGEST_V2_OTHER_MESSAGE:
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_V2_REFUSED);
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN,
									"V2 signature is for another message\n");
			break;
		case PLIVO_INGEST_V3_REQUIRED:
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_V3_REQUIRED);
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN,
									"call callbacks must carry a V3 signature\n");
			break;
		case PLIVO_INGEST_INCOMPLETE:
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_INCOMPLETE);
			plivo_otp_server_decide(req, MHD_HTTP_BAD_REQUEST,
									req->route->kind == ROUTE_VOICE_STATUS ?
									"RequestUUID and CallStatus are required\n" :
									"MessageUUID and Status are required\n");
			break;
	}
}

/* Record one callback (a subtransaction of the batch); decide its answer. */
static void
record_callback(void *arg)
{
	CallbackRequest *req = (CallbackRequest *) arg;

	if (req->route->kind == ROUTE_VOICE_ANSWER)
	{
		answer_call(req);
		return;
	}
	decide_ingested(req, plivo_otp_ingest_callback(req->params, req->nparams, req->nonce,
												   req->other_nonce, req->body_signed,
												   req->token[0] ? req->token : NULL));
}

/* The callbacks of a batch that plivo_otp_ingest_batch may take. */
typedef struct SignedBatch
{
	PlivoBatchItem *items;
	CallbackRequest **reqs;
	int			n;
} SignedBatch;

/* The unit of work of record_signed (a subtransaction of the batch). */
static void
ingest_signed(void *arg)
{
	SignedBatch *b = (SignedBatch *) arg;

	plivo_otp_ingest_batch(b->items, b->n);
}

/*
 * Record the batch's V3-signed status callbacks together, in one
 * subtransaction of a few statements (delivery.c), and decide their
 * answers.  If that fails, nothing of it stays and none is decided: the
 * caller then records each one in a subtransaction of its own, so one bad
 * callback costs the others nothing but time.
 */
static void
record_signed(CallbackRequest *batch)
{
	SignedBatch b = {NULL, NULL, 0};
	int			room = 0;

	for (CallbackRequest *req = batch; req; req = req->next_ready)
		if (req->route->kind == ROUTE_SMS_STATUS && req->body_signed)
			room++;
	if (room == 0)
		return;
	b.items = palloc0(sizeof(PlivoBatchItem) * room);
	b.reqs = palloc(sizeof(CallbackRequest *) * room);
	for (CallbackRequest *req = batch; req; req = req->next_ready)
	{
		PlivoBatchItem *item = &b.items[b.n];

		if (req->route->kind != ROUTE_SMS_STATUS || !req->body_signed)
			continue;
		item->params = req->params;
		item->nparams = req->nparams;
		item->nonce = req->nonce;
		item->other_nonce = req->other_nonce;
		item->body_signed = true;
		b.reqs[b.n++] = req;
	}
	if (!plivo_otp_run_subtransaction(ingest_signed, &b))
		return;
	for (int i = 0; i < b.n; i++)
		if (b.items[i].done)
		{
			decide_ingested(b.reqs[i], b.items[i].result);
			b.reqs[i]->batched = true;
		}
}

/* The unit of work of record_ready: every callback of the batch. */
static void
record_batch(void *arg)
{
	CallbackRequest *batch = (CallbackRequest *) arg;

	for (CallbackRequest *req = batch; req; req = req->next_ready)
	{
		req->hold = false;
		req->batched = false;
	}
	record_signed(batch);
	for (CallbackRequest *req = batch; req; req = req->next_ready)
	{
		if (req->batched)
			continue;
		if (!plivo_otp_run_subtransaction(record_callback, req))
		{
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_NOT_RECORDED);
			plivo_otp_server_decide_failed(req, MHD_HTTP_INTERNAL_SERVER_ERROR,
										   "could not record\n");
		}
	}
}

/* The last batch: how many requests it answered, and how long its transaction took. */
static int	last_batch_size = 0;
static int64 last_batch_us = 0;

/*
 * The clients answered by the last batch usually send their next callback
 * at once, and the first of them to arrive wakes the loop: recorded alone,
 * it would have its own commit, and the rest would wait for that commit's
 * flush and then have one of their own.  So when fewer callbacks are ready
 * than the last batch answered, wait for the others for at most half the
 * time the last batch's transaction took (its flush, mostly), never more
 * than GATHER_MAX_US: a batch then costs one flush however many join it,
 * and a client that does not come back costs the others at most that.
 */
#define GATHER_MAX_US 2000

static void
gather_batch(void)
{
	int			ready = plivo_otp_server_ready_count();
	int64		budget = Min(last_batch_us / 2, GATHER_MAX_US);
	int64		start;

	if (ready == 0 || ready >= last_batch_size || budget <= 0)
		return;
	start = plivo_otp_listener_now_us();
	while (ready < last_batch_size)
	{
		int64		left = budget - (plivo_otp_listener_now_us() - start);

		if (left <= 0 || !plivo_otp_server_wait_us((long) left))
			break;
		plivo_otp_server_run();
		ready = plivo_otp_server_ready_count();
	}
}

/*
 * Record the ready callbacks in one transaction, then resume their
 * connections with the answer.  Runs outside libmicrohttpd's callbacks.
 * False if there were none.
 */
static bool
record_ready(void)
{
	CallbackRequest *batch = plivo_otp_server_take_ready();
	bool		committed;
	int64		start = plivo_otp_listener_now_us();

	if (batch == NULL)
		return false;
	committed = plivo_otp_run_work("recording Plivo callbacks", record_batch, batch);
	last_batch_us = plivo_otp_listener_now_us() - start;
	last_batch_size = 0;
	for (CallbackRequest *req = batch, *next; req; req = next)
	{
		next = req->next_ready;
		/* Nothing counts as recorded unless its transaction committed. */
		if (!committed)
		{
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_NOT_RECORDED);
			plivo_otp_server_decide_failed(req, MHD_HTTP_SERVICE_UNAVAILABLE,
										   "could not record, retry later\n");
		}
		if (req->hold)
			plivo_otp_server_hold(req);
		else
		{
			plivo_otp_server_resume(req);
			last_batch_size++;
		}
	}
	return true;
}

/* (Re)read the public URL and the auth token; say what is missing. */
static void
load_listener_config(void)
{
	ListenerConfig *c = &plivo_otp_listener_config;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char	   *why = NULL;

	if (c->auth_token)
	{
		explicit_bzero(c->auth_token, strlen(c->auth_token));
		pfree(c->auth_token);
		c->auth_token = NULL;
	}
	if (c->public_base)
		pfree(c->public_base);
	c->public_base = plivo_otp_base_url(plivo_otp_public_url);
	if (c->public_base[0] == '\0')
		why = "plivo_otp.public_url is not set.";
	else
		c->auth_token = plivo_otp_read_auth_token(&why);
	MemoryContextSwitchTo(old);

	c->configured = c->auth_token != NULL && why == NULL;
	if (!c->configured)
		ereport(LOG,
				(errmsg("plivo_otp listener answers 503 to every callback"),
				 errdetail_internal("%s", why),
				 errhint("Set plivo_otp.public_url to the URL at which Plivo reaches this listener, and the auth token file.")));
}

/* Act on SIGTERM (exit) and SIGHUP (reload the settings). */
static void
handle_signals(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ShutdownRequestPending)
		proc_exit(1);			/* 0 would unregister the worker: see dispatcher.c */
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		load_listener_config();
	}
}

/* Start the server, waiting for the address and port as long as it takes. */
static void
start_server(void)
{
	char		why[256];
	char		logged[256] = "";
	TimestampTz logged_at = 0;
	int			err;

	while (!plivo_otp_server_start(why, sizeof(why), &err))
	{
		TimestampTz now = GetCurrentTimestamp();

		if (strcmp(why, logged) != 0 ||
			TimestampDifferenceExceeds(logged_at, now, LISTEN_REMIND_SECS * 1000))
		{
			ereport(LOG,
					(errcode(err == EADDRINUSE ? ERRCODE_OBJECT_IN_USE :
							 ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("plivo_otp listener cannot listen on %s port %d: %s",
							plivo_otp_listen_address, plivo_otp_listen_port, why),
					 errdetail("It accepts no callbacks until it can; it tries again every %d seconds.",
							   LISTEN_RETRY_SECS),
					 err == EADDRINUSE ?
					 errhint("Another process is using this address and port: stop it, or set plivo_otp.listen_port to a free port and restart the server.") :
					 errhint("Check plivo_otp.listen_address and plivo_otp.listen_port, then restart the server.")));
			strlcpy(logged, why, sizeof(logged));
			logged_at = now;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LISTEN_RETRY_SECS * 1000L,
						 plivo_otp_wait_event(PLIVO_OTP_WAIT_LISTENER_RETRY));
		ResetLatch(MyLatch);
		handle_signals();
	}
}

/* Connect, read the settings, start the server; the set to wait on. */
static WaitEventSet *
listener_init(void)
{
	WaitEventSet *wait_set;

	plivo_otp_worker_connect("plivo_otp listener");
	load_listener_config();
	start_server();

	wait_set = plivo_otp_worker_wait_set(plivo_otp_server_epoll_fd());

	ereport(LOG,
			(errmsg("plivo_otp listener accepts callbacks on %s port %d for %s%s",
					plivo_otp_listen_address, plivo_otp_listen_port,
					plivo_otp_listener_config.public_base, plivo_otp_server_first_path())));
	return wait_set;
}

void
plivo_otp_listener_main(Datum main_arg)
{
	WaitEventSet *wait_set = listener_init();
	MemoryContext loop_context = AllocSetContextCreate(TopMemoryContext,
													   "plivo_otp listener loop",
													   ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		WaitEvent	events[3];

		/* Whatever a turn of the loop allocates lives until the next turn. */
		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		(void) WaitEventSetWait(wait_set, plivo_otp_server_timeout_ms(), events,
								lengthof(events),
								plivo_otp_wait_event(plivo_otp_connections_open() > 0 ?
													 PLIVO_OTP_WAIT_LISTENER_CLIENTS :
													 PLIVO_OTP_WAIT_LISTENER_IDLE));
		ResetLatch(MyLatch);
		if (ShutdownRequestPending)
			plivo_otp_server_stop();
		handle_signals();

		/* Accept, read and judge; then record the batch and answer it. */
		plivo_otp_server_run();
		gather_batch();
		if (record_ready())
			plivo_otp_server_run();	/* send the answers */
	}
}
